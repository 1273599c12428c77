/* test_random.c — a quick randomized property check of the core on the unit-test harness
 * (the full simulator is tests/sim): random ticks, message loss/duplication/reordering,
 * slow disks, crashes that lose unpersisted writes, proposals, reads and membership changes.
 * After every step: invariants, Election Safety and State Machine Safety. */
#include <stdio.h>

#include "harness.h"

#define RT_NODES 5
#define RT_TERMS 4096

struct rt {
    struct tc tc;
    uint64_t rng;
    raft_id leader_of_term[RT_TERMS];
    raft_term applied_term[TC_APPLIED_MAX];   /* first term seen applied at each index */
    raft_index max_commit;                    /* highest commit index any node ever had */
    raft_term committed_term[TC_APPLIED_MAX]; /* term of each index once seen committed */
    raft_index read_min[1024];                /* by read id: max_commit when it was asked */
    uint64_t n_read_ids;
    size_t reads_seen[RT_NODES + 1];
    bool failed;
};

static uint64_t rt_rand(struct rt *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rt_check(struct rt *s, uint64_t seed, int step)
{
    for (raft_id id = 1; id <= RT_NODES; id++) {
        struct tnode *t = tc_node(&s->tc, id);
        if (t->down) continue;
        raft_check_invariants(t->r);
        struct raft_status st = tc_status(&s->tc, id);
        if (st.commit_index > s->max_commit) s->max_commit = st.commit_index;
        /* A committed entry never changes (checked on the durable logs). */
        raft_index upto = st.commit_index < st.stable_index ? st.commit_index : st.stable_index;
        for (raft_index i = 1; i <= upto && i < TC_APPLIED_MAX; i++) {
            raft_term *g = &s->committed_term[i];
            if (*g == 0) *g = t->log[i - 1].term;
            if (*g != t->log[i - 1].term && !s->failed) {
                fprintf(stderr, "seed %llu step %d: committed index %llu changed term\n",
                        (unsigned long long)seed, step, (unsigned long long)i);
                s->failed = true;
            }
        }
        for (; s->reads_seen[id] < t->n_reads; s->reads_seen[id]++) {
            const struct raft_read_state *rs = &t->reads[s->reads_seen[id]];
            if (rs->failed || rs->id == 0 || rs->id > s->n_read_ids) continue;
            if (rs->index < s->read_min[rs->id - 1] && !s->failed) {
                fprintf(stderr,
                        "seed %llu step %d: read %llu answered at %llu, but %llu was "
                        "committed before it began\n",
                        (unsigned long long)seed, step, (unsigned long long)rs->id,
                        (unsigned long long)rs->index, (unsigned long long)s->read_min[rs->id - 1]);
                s->failed = true;
            }
        }
        if (st.role == RAFT_LEADER && st.term < RT_TERMS) {
            raft_id *l = &s->leader_of_term[st.term];
            if (*l && *l != id && !s->failed) {
                fprintf(stderr, "seed %llu step %d: two leaders in term %llu\n",
                        (unsigned long long)seed, step, (unsigned long long)st.term);
                s->failed = true;
            }
            *l = id;
        }
        for (raft_index i = 1; i <= t->applied && i < TC_APPLIED_MAX; i++) {
            raft_term *g = &s->applied_term[i];
            if (*g == 0) *g = t->applied_terms[i];
            if (*g != t->applied_terms[i] && !s->failed) {
                fprintf(stderr,
                        "seed %llu step %d: node %llu applied term %llu at %llu, "
                        "another applied %llu\n",
                        (unsigned long long)seed, step, (unsigned long long)id,
                        (unsigned long long)t->applied_terms[i], (unsigned long long)i,
                        (unsigned long long)*g);
                s->failed = true;
            }
        }
    }
}

static raft_id rt_leader(struct rt *s)
{
    for (raft_id id = 1; id <= RT_NODES; id++)
        if (!tc_node(&s->tc, id)->down && tc_role(&s->tc, id) == RAFT_LEADER) return id;
    return 0;
}

static void rt_deliver_one(struct rt *s)
{
    struct tc *tc = &s->tc;
    if (tc->n_net == 0) return;
    size_t i = (size_t)(rt_rand(s) % tc->n_net);
    struct raft_msg m = tc->net[i];
    uint64_t fate = rt_rand(s) % 100;
    if (fate < 90 && !tc_node(tc, m.to)->down && m.to <= RT_NODES) raft_step(tc_raft(tc, m.to), &m);
    if (fate >= 95 && tc->n_net < 4000) /* duplicated: stays queued */
        return;
    tc_msg_free(&m);
    tc->net[i] = tc->net[--tc->n_net];
}

static void rt_membership(struct rt *s, raft_id leader)
{
    struct raft *r = tc_raft(&s->tc, leader);
    raft_id id = 1 + rt_rand(s) % RT_NODES;
    if (raft_configuration_find(raft_configuration(r), id)) {
        raft_remove_member(r, id, NULL);
        return;
    }
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = id;
    raft_add_member(r, &m, NULL);
}

static void rt_step(struct rt *s)
{
    struct tc *tc = &s->tc;
    raft_id id = 1 + rt_rand(s) % RT_NODES;
    struct tnode *t = tc_node(tc, id);
    uint64_t a = rt_rand(s) % 100;
    if (t->down) {
        if (a < 5) tc_start(tc, id);
        return;
    }
    if (a < 20)
        raft_tick(t->r);
    else if (a < 55)
        rt_deliver_one(s);
    else if (a < 75) {
        if (raft_has_ready(t->r)) tc_ready(tc, id);
    } else if (a < 88)
        tc_persist(tc, id);
    else if (a < 93) {
        raft_id l = rt_leader(s);
        if (l) tc_propose(tc, l, "v", NULL);
    } else if (a < 95) {
        /* Linearizability: the answer must cover everything committed before the ask. */
        if (s->n_read_ids < 1024 && raft_read_index(t->r, s->n_read_ids + 1) == 0) {
            s->read_min[s->n_read_ids] = s->max_commit;
            s->n_read_ids++;
        }
    } else if (a < 96) {
        raft_id l = rt_leader(s);
        if (l) rt_membership(s, l);
    } else if (a < 97 && rt_rand(s) % 4 == 0) {
        tc_stop(tc, id); /* crash: unpersisted writes are lost */
    }
}

/* Liveness: once every node is up and the network is reliable, a leader appears and a new
 * proposal is applied within a bounded number of ticks. */
static bool rt_heal(struct rt *s)
{
    struct tc *tc = &s->tc;
    for (raft_id id = 1; id <= RT_NODES; id++) {
        if (tc_node(tc, id)->down) tc_start(tc, id);
        tc_node(tc, id)->manual_persist = false;
    }
    raft_index want = 0;
    raft_term want_term = 0;
    raft_id l = 0;
    for (int round = 0; round < 400; round++) {
        for (raft_id id = 1; id <= RT_NODES; id++)
            raft_tick(tc_raft(tc, id));
        tc_flush(tc);
        rt_check(s, 0, -1);
        l = rt_leader(s);
        if (!l) continue;
        /* Proposed again under a new leader: the earlier one may have been truncated. */
        raft_term t = tc_status(tc, l).term;
        if ((want == 0 || want_term != t) && tc_propose(tc, l, "final", &want) == 0) want_term = t;
        if (want && want_term == t && tc_node(tc, l)->applied >= want) return true;
    }
    return false;
}

static void rt_trace_cb(void *ctx, const char *line)
{
    struct tnode *t = ctx;
    fprintf(stderr, "  n%llu: %s\n", (unsigned long long)t->cfg.id, line);
}

static bool rt_verbose;
static uint32_t rt_bugs; /* RAFT_RANDOM_BUGS: planted bugs (a core built with them) */

static bool rt_run(uint64_t seed, int steps)
{
    static struct rt s;
    memset(&s, 0, sizeof s);
    s.rng = seed;
    tc_init(&s.tc, RT_NODES);
    for (int i = 0; i < RT_NODES; i++) {
        s.tc.n[i].cfg.seed = seed * 31 + (uint64_t)i;
        s.tc.n[i].cfg.prevote = seed % 3 != 0;
        s.tc.n[i].cfg.check_quorum = seed % 5 != 0;
        s.tc.n[i].cfg.max_inflight = 1 + (uint32_t)(seed % 4);
        s.tc.n[i].cfg.max_append_entries = 1 + (uint32_t)(seed % 7);
        s.tc.n[i].cfg.cache_bytes_max = seed % 2 ? 0 : 1u << 20;
        s.tc.n[i].manual_persist = true;
        s.tc.n[i].cfg.bugs = rt_bugs;
        if (rt_verbose) s.tc.n[i].cfg.trace = rt_trace_cb;
    }
    tc_start_all(&s.tc);
    struct raft_configuration c;
    tc_conf(&c, 3, 0);
    raft_bootstrap(tc_raft(&s.tc, 1), &c);
    tc_ready(&s.tc, 1);
    tc_persist(&s.tc, 1); /* a lost bootstrap would leave nobody to elect */
    for (int i = 0; i < steps && !s.failed; i++) {
        rt_step(&s);
        rt_check(&s, seed, i);
        if (tc_node(&s.tc, 1)->n_log > TC_APPLIED_MAX - 64) break;
    }
    bool live = rt_heal(&s);
    if (!live) fprintf(stderr, "seed %llu: no progress after healing\n", (unsigned long long)seed);
    for (raft_id id = 1; id <= RT_NODES && rt_verbose; id++) {
        struct tnode *t = tc_node(&s.tc, id);
        if (t->down) {
            fprintf(stderr, "n%llu down\n", (unsigned long long)id);
            continue;
        }
        struct raft_status st = tc_status(&s.tc, id);
        fprintf(stderr,
                "n%llu %s term %llu leader %llu commit %llu applied %llu last %llu stable "
                "%llu pending %zu voter %d\n",
                (unsigned long long)id, raft_role_str(st.role), (unsigned long long)st.term,
                (unsigned long long)st.leader, (unsigned long long)st.commit_index,
                (unsigned long long)t->applied, (unsigned long long)st.last_index,
                (unsigned long long)st.stable_index, t->n_pending, st.voter);
    }
    raft_index applied = 0;
    while (applied + 1 < TC_APPLIED_MAX && s.applied_term[applied + 1])
        applied++;
    tc_free(&s.tc);
    if (applied < 3)
        fprintf(stderr, "seed %llu: only %llu entries applied\n", (unsigned long long)seed,
                (unsigned long long)applied);
    return !s.failed && live;
}

static void test_random_clusters_keep_safety(void)
{
    int ok = 0, seeds = 200;
    const char *env = getenv("RAFT_RANDOM_SEEDS");
    if (env) seeds = atoi(env);
    if (getenv("RAFT_RANDOM_BUGS"))
        rt_bugs = (uint32_t)strtoul(getenv("RAFT_RANDOM_BUGS"), NULL, 0);
    const char *one = getenv("RAFT_RANDOM_SEED"); /* replay one seed with a trace */
    if (one) {
        rt_verbose = true;
        CHECK(rt_run(strtoull(one, NULL, 10), 4000));
        return;
    }
    for (int seed = 1; seed <= seeds; seed++) {
        bool good = rt_run((uint64_t)seed, 4000);
        if (!good) fprintf(stderr, "seed %d: failed or made no progress\n", seed);
        ok += good;
    }
    CHECK_EQ_U(ok, seeds);
}

int main(void)
{
    RUN(test_random_clusters_keep_safety);
    return check_report();
}
