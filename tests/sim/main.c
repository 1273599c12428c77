/* main.c — raft_sim's command line: runs seeds, replays one, proves planted bugs are caught,
 * checks determinism. On a failure prints the seed, the property and the trace tail.
 * It never uses wall-clock time inside a run (only to report how long the seeds took). */
#include "sim.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIM_DEFAULT_STEPS 1000

struct sim_cli {
    struct sim_opts o;
    uint64_t first, count;
    bool expect_fail, determinism, keep_going;
    const char *regressions;
    const char *expect_prop; /* a liveness bug is caught only by this property */
};

/* prop: the liveness property a liveness bug must break; NULL for a safety bug, which must
 * break a safety property or protocol rule (a liveness failure alone does not count). */
static const struct {
    const char *name;
    uint32_t bit;
    const char *prop;
} sim_bugs[] = {
    {"commit_old_term", RAFT_BUG_COMMIT_OLD_TERM, NULL},
    {"double_vote", RAFT_BUG_DOUBLE_VOTE, NULL},
    {"vote_not_persisted", RAFT_BUG_VOTE_NOT_PERSISTED, NULL},
    {"read_no_confirm", RAFT_BUG_READ_NO_CONFIRM, NULL},
    {"config_before_noop", RAFT_BUG_CONFIG_BEFORE_NOOP, NULL},
    {"no_stall_probe", RAFT_BUG_NO_STALL_PROBE, "Catch-up"},
    {"snapshot_old", RAFT_BUG_SNAPSHOT_OLD, NULL},
    {"transfer_any_log", RAFT_BUG_TRANSFER_ANY_LOG, NULL},
};

static void sim_usage(FILE *f)
{
    fprintf(f,
            "usage: raft_sim [--seeds N] [--first F] [--seed S] [--steps K] [--nodes 3|5]\n"
            "                [--bug NAME] [--expect-fail] [--no-rules] [--determinism]\n"
            "                [--regressions FILE] [-v]\n"
            "  --seeds N        run seeds F..F+N-1 (default F=1, N=100)\n"
            "  --seed S         run one seed (also: env SIM_SEED=S)\n"
            "  --steps K        virtual steps (base ticks) per run (default %d)\n"
            "  --nodes 3|5      cluster size (default: 3 for odd seeds, 5 for even)\n"
            "  --bug NAME       plant a bug: commit_old_term, double_vote,\n"
            "                   vote_not_persisted, read_no_confirm, config_before_noop,\n"
            "                   no_stall_probe, snapshot_old, transfer_any_log\n"
            "  --expect-fail    succeed only if some seed fails (prints the first)\n"
            "  --no-rules       check only the safety properties, not the protocol rules\n"
            "  --no-snap        no compaction, snapshots or transfers (older seeds' schedules)\n"
            "  --determinism    run each seed twice and compare the trace hashes\n"
            "  --regressions F  also run every seed listed in F (one per line, # comments)\n"
            "  -v               print the whole trace\n",
            SIM_DEFAULT_STEPS);
}

static bool sim_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') return false;
    *out = v;
    return true;
}

static int sim_parse_bug(const char *name, struct sim_cli *c)
{
    for (size_t i = 0; i < sizeof sim_bugs / sizeof sim_bugs[0]; i++)
        if (strcmp(name, sim_bugs[i].name) == 0) {
            c->o.bugs |= sim_bugs[i].bit;
            if (sim_bugs[i].prop) c->expect_prop = sim_bugs[i].prop;
            return 0;
        }
    return -1;
}

/* --expect-fail: does a failure of prop show the planted bug? */
static bool sim_caught(const struct sim_cli *c, const char *prop)
{
    if (c->expect_prop && strcmp(prop, c->expect_prop) == 0) return true;
    return strcmp(prop, "Liveness") != 0 && strcmp(prop, "Catch-up") != 0;
}

static int sim_parse_args(int argc, char **argv, struct sim_cli *c)
{
    uint64_t v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool num = val && sim_parse_u64(val, &v);
        if (strcmp(a, "-v") == 0) {
            c->o.verbose = c->o.tracing = true;
        } else if (strcmp(a, "--expect-fail") == 0) {
            c->expect_fail = true;
        } else if (strcmp(a, "--keep-going") == 0) {
            c->keep_going = true;
        } else if (strcmp(a, "--no-rules") == 0) {
            c->o.no_rules = true;
        } else if (strcmp(a, "--no-snap") == 0) {
            c->o.no_snap = true;
        } else if (strcmp(a, "--determinism") == 0) {
            c->determinism = true;
        } else if (strcmp(a, "--regressions") == 0 && val) {
            c->regressions = val;
            i++;
        } else if (strcmp(a, "--bug") == 0 && val) {
            if (sim_parse_bug(val, c) != 0) return -1;
            i++;
        } else if (!num) {
            return -1;
        } else if (strcmp(a, "--seeds") == 0) {
            c->count = v, i++;
        } else if (strcmp(a, "--first") == 0) {
            c->first = v, i++;
        } else if (strcmp(a, "--seed") == 0) {
            c->first = v, c->count = 1, i++;
        } else if (strcmp(a, "--steps") == 0 && v >= 50 && v <= 10000000) {
            c->o.steps = (unsigned)v, i++;
        } else if (strcmp(a, "--nodes") == 0 && (v == 3 || v == 5)) {
            c->o.nodes = (unsigned)v, i++;
        } else {
            return -1;
        }
    }
    return 0;
}

/* A failed ASSERT (in the core's raft_check_invariants or elsewhere) aborts: say which seed. */
static void sim_abort_handler(int sig)
{
    (void)sig;
    struct sim *s = sim_current;
    if (s) {
        char buf[160];
        int k = snprintf(buf, sizeof buf,
                         "\nraft_sim: aborted in seed %llu (replay: raft_sim --seed %llu -v)\n",
                         (unsigned long long)s->o.seed, (unsigned long long)s->o.seed);
        ssize_t w = write(2, buf, (size_t)k);
        (void)w;
        sim_trace_dump(s, 2, 200);
    }
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
}

static void sim_print_failure(const struct sim_opts *o, const struct sim_result *r)
{
    printf("FAIL seed %llu (%u nodes, %s): %s: %s\n", (unsigned long long)o->seed, r->p.n_target,
           r->p.membership ? "membership" : "static", r->prop, r->msg);
    printf("replay: raft_sim --seed %llu%s%s -v\n", (unsigned long long)o->seed,
           o->nodes == 3   ? " --nodes 3"
           : o->nodes == 5 ? " --nodes 5"
                           : "",
           o->no_rules ? " --no-rules" : "");
}

/* Runs one seed; on failure prints the trace tail (re-running with tracing: runs are
 * deterministic, so the replay is the same run). Returns true when it passed. */
static bool sim_one(const struct sim_cli *c, uint64_t seed, bool quiet, struct sim_stats *tot,
                    char *prop)
{
    struct sim_opts o = c->o;
    o.seed = seed;
    struct sim_result r;
    if (sim_run(&o, &r) != 0) {
        fprintf(stderr, "raft_sim: out of memory\n");
        exit(2);
    }
    tot->events += r.st.events, tot->elections += r.st.elections;
    tot->committed += r.st.committed, tot->reads_served += r.st.reads_served;
    tot->crashes += r.st.crashes, tot->membership_done += r.st.membership_done;
    tot->msgs_sent += r.st.msgs_sent, tot->msgs_dropped += r.st.msgs_dropped;
    tot->compactions += r.st.compactions, tot->snapshots_sent += r.st.snapshots_sent;
    tot->snapshots_installed += r.st.snapshots_installed, tot->transfers += r.st.transfers;
    tot->transfers_done += r.st.transfers_done;
    if (!r.failed) return true;
    if (prop) memcpy(prop, r.prop, sizeof r.prop);
    if (quiet) {
        printf("FAIL seed %llu (%u nodes, %s): %s: %s\n", (unsigned long long)seed, r.p.n_target,
               r.p.membership ? "membership" : "static", r.prop, r.msg);
        return false;
    }
    if (!o.tracing) {
        printf("--- trace of seed %llu (last 200 events) ---\n", (unsigned long long)seed);
        fflush(stdout);
        o.tracing = true;
        struct sim_result r2;
        sim_run(&o, &r2);
        if (!r2.failed || strcmp(r2.prop, r.prop) != 0)
            printf("WARNING: the traced replay did not reproduce the failure (%s)\n",
                   r2.failed ? r2.prop : "passed");
    }
    sim_print_failure(&o, &r);
    return false;
}

static int sim_determinism(const struct sim_cli *c)
{
    for (uint64_t seed = c->first; seed < c->first + c->count; seed++) {
        struct sim_opts o = c->o;
        o.seed = seed;
        o.tracing = true;
        o.verbose = false;
        struct sim_result a, b;
        sim_run(&o, &a);
        sim_run(&o, &b);
        if (memcmp(a.hash, b.hash, sizeof a.hash) != 0) {
            printf("FAIL seed %llu: two runs of the same seed differ\n", (unsigned long long)seed);
            return 1;
        }
        printf("seed %llu: trace hash %02x%02x%02x%02x%02x%02x%02x%02x (%s)\n",
               (unsigned long long)seed, a.hash[0], a.hash[1], a.hash[2], a.hash[3], a.hash[4],
               a.hash[5], a.hash[6], a.hash[7], a.failed ? "failed" : "passed");
    }
    printf("determinism: %llu seeds, identical traces\n", (unsigned long long)c->count);
    return 0;
}

/* Every "SEED [--nodes N] [--steps K]" line of the file; '#' starts a comment. */
static int sim_regressions(const struct sim_cli *c, struct sim_stats *tot, unsigned *n_out)
{
    FILE *f = fopen(c->regressions, "r");
    if (!f) {
        fprintf(stderr, "raft_sim: %s: %s\n", c->regressions, strerror(errno));
        return 2;
    }
    char line[512];
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *argv[16] = {"raft_sim"};
        int argc = 1;
        for (char *t = strtok(line, " \t\r\n"); t && argc < 15; t = strtok(NULL, " \t\r\n"))
            argv[argc++] = t;
        if (argc == 1) continue;
        struct sim_cli one = *c;
        uint64_t seed;
        if (!sim_parse_u64(argv[1], &seed) || sim_parse_args(argc - 1, argv + 1, &one) != 0) {
            fprintf(stderr, "raft_sim: %s: bad line\n", c->regressions);
            rc = 2;
            break;
        }
        (*n_out)++;
        if (!sim_one(&one, seed, false, tot, NULL)) rc = 1;
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    struct sim_cli c = {.o = {.steps = SIM_DEFAULT_STEPS}, .first = 1, .count = 100};
    if (sim_parse_args(argc, argv, &c) != 0) {
        sim_usage(stderr);
        return 2;
    }
    const char *env = getenv("SIM_SEED");
    uint64_t v;
    if (env && *env && sim_parse_u64(env, &v)) c.first = v, c.count = 1;
    signal(SIGABRT, sim_abort_handler);
    if (c.determinism) return sim_determinism(&c);
    struct sim_stats tot = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned ran = 0;
    int rc = c.regressions ? sim_regressions(&c, &tot, &ran) : 0;
    unsigned failed = 0;
    for (uint64_t seed = c.first; (rc == 0 || c.keep_going) && seed < c.first + c.count;
         seed++, ran++) {
        char prop[64] = "";
        if (sim_one(&c, seed, c.keep_going || c.expect_fail, &tot, prop)) continue;
        failed++;
        if (!c.expect_fail) {
            rc = 1;
            continue;
        }
        /* A planted bug must break a safety property or protocol rule, not just liveness
         * (unless it is a liveness bug, which must break its own property). */
        if (!sim_caught(&c, prop)) continue;
        rc = 1;
        if (!c.keep_going) sim_one(&c, seed, false, &tot, NULL);
        printf("caught: the planted bug fails seed %llu (%s)\n", (unsigned long long)seed, prop);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (failed > 1) printf("%u seeds failed\n", failed);
    printf("%s: %u seeds in %.1f s: %llu events, %llu elections, %llu commits, %llu reads, "
           "%llu crashes, %llu membership changes, %llu/%llu msgs dropped\n",
           rc == 0 ? "ok" : "FAILED", ran, secs, (unsigned long long)tot.events,
           (unsigned long long)tot.elections, (unsigned long long)tot.committed,
           (unsigned long long)tot.reads_served, (unsigned long long)tot.crashes,
           (unsigned long long)tot.membership_done, (unsigned long long)tot.msgs_dropped,
           (unsigned long long)tot.msgs_sent);
    printf("  %llu compactions, %llu snapshots streamed, %llu installed, %llu transfers asked, "
           "%llu completed\n",
           (unsigned long long)tot.compactions, (unsigned long long)tot.snapshots_sent,
           (unsigned long long)tot.snapshots_installed, (unsigned long long)tot.transfers,
           (unsigned long long)tot.transfers_done);
    if (c.expect_fail) {
        if (rc == 0) printf("NOT CAUGHT: no seed failed with the planted bug\n");
        return rc == 1 ? 0 : 1;
    }
    return rc;
}
