/* fsm_bench.c — apply rate of the file store alone (no Raft, no HTTP): brand-new paths,
 * overwrites of existing paths, deletes, and the checkpoint. Usage: fsm_bench [N] [SIZE] [DIR].
 * BG=0 turns the spare-creating thread off. A measurement tool, not a test: it asserts nothing. */
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "err.h"
#include "fsm.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of this (the applying) thread, or of the whole process (background too). */
static double bench_cpu(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int bench_rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static raft_index bench_index;
/* BATCH=k in the environment: k entries per fsm_apply_batch (as the node applies a ready
 * batch), default 1. */
#define BENCH_BATCH_MAX 64
static struct raft_entry bench_batch[BENCH_BATCH_MAX];
static size_t bench_batched, bench_batch_max = 1;

static int bench_flush(struct fsm *f)
{
    struct fsm_result res[BENCH_BATCH_MAX];
    int rv = bench_batched ? fsm_apply_batch(f, bench_batch, bench_batched, res) : 0;
    for (size_t k = 0; k < bench_batched; k++) {
        if (rv == 0) rv = res[k].status;
        raft_blob_unref(bench_batch[k].data);
    }
    bench_batched = 0;
    return rv;
}

static int bench_apply(struct fsm *f, uint8_t op, const char *path, size_t size)
{
    uint8_t rid[FSM_REQ_ID_LEN] = {0}, *body;
    raft_index i = ++bench_index;
    for (int k = 0; k < 8; k++)
        rid[k] = (uint8_t)(i >> (56 - 8 * k)); /* time-ordered ids */
    struct raft_blob *b = NULL;
    int rv = op == FSM_CMD_PUT ? fsm_cmd_put_alloc(rid, path, strlen(path), size, &b, &body)
                               : fsm_cmd_delete(rid, path, strlen(path), &b);
    if (rv) return rv;
    if (op == FSM_CMD_PUT) memset(body, (int)(i & 0xff), size);
    bench_batch[bench_batched++] =
        (struct raft_entry){.term = 1, .index = i, .type = RAFT_ENTRY_NORMAL, .data = b};
    return bench_batched < bench_batch_max ? 0 : bench_flush(f);
}

static void bench_report(const char *what, unsigned n, double t0, const double c0[2], struct fsm *f)
{
    double wall = bench_now() - t0, cpu = bench_cpu(RUSAGE_THREAD) - c0[0],
           all = bench_cpu(RUSAGE_SELF) - c0[1];
    struct fsm_stats s;
    fsm_get_stats(f, &s);
    printf("%-26s %6u ops %7.0f ops/s %6.1f us/op wall, cpu %6.1f us/op apply thread %6.1f "
           "process | inodes created: %llu applying, %llu in background\n",
           what, n, n / wall, wall * 1e6 / n, cpu * 1e6 / n, all * 1e6 / n,
           (unsigned long long)s.inodes_created, (unsigned long long)s.inodes_precreated);
}

static int bench_phase(struct fsm *f, const char *what, uint8_t op, const char *fmt, unsigned n,
                       unsigned modulo, size_t size)
{
    char path[64];
    double t0 = bench_now(), c0[2] = {bench_cpu(RUSAGE_THREAD), bench_cpu(RUSAGE_SELF)};
    for (unsigned i = 0; i < n; i++) {
        snprintf(path, sizeof path, fmt, (i % modulo) / 100, i % modulo);
        int rv = bench_apply(f, op, path, size);
        if (rv) {
            fprintf(stderr, "%s: %s\n", what, err_str(rv));
            return 1;
        }
    }
    int rv = bench_flush(f);
    if (rv) {
        fprintf(stderr, "%s: %s\n", what, err_str(rv));
        return 1;
    }
    bench_report(what, n, t0, c0, f);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 5000;
    size_t size = argc > 2 ? (size_t)atoi(argv[2]) : 1024;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/fsm-bench-XXXXXX", argc > 3 ? argv[3] : "/tmp");
    if (n == 0 || !mkdtemp(dir)) return 2;
    char env_dir[300], err[256];
    snprintf(env_dir, sizeof env_dir, "%s/raft", dir);
    mkdir(env_dir, 0755);
    DB_ENV *env = NULL;
    struct fsm *f = NULL;
    /* BG=0 in the environment: no spare-creating thread (every inode on the apply path). */
    const char *bg = getenv("BG"), *batch = getenv("BATCH");
    if (batch && atoi(batch) > 0)
        bench_batch_max =
            (size_t)atoi(batch) < BENCH_BATCH_MAX ? (size_t)atoi(batch) : BENCH_BATCH_MAX;
    struct fsm_options opts = {.spare_target = bg && !strcmp(bg, "0") ? 0 : FSM_SPARES_MAX / 2};
    /* The storage layer's cache (4 MiB): with BDB's 256 KiB default, evicting dirty pages forces
     * log fsyncs. */
    if (db_env_create(&env, 0) || env->set_cachesize(env, 0, 4u << 20, 1) ||
        env->set_lg_bsize(env, 512u << 10) ||
        env->open(env, env_dir,
                  DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_MPOOL | DB_INIT_LOCK | DB_THREAD |
                      DB_RECOVER,
                  0644) ||
        fsm_open_opts(env, dir, &opts, &f, err, sizeof err)) {
        fprintf(stderr, "setup failed: %s\n", err);
        return 1;
    }
    printf("fsm_bench: %u ops per phase, %zu-byte bodies, in %s\n", n, size, dir);
    /* OW_ONLY=1: only the overwrite phases (for profiling the hot path). */
    const char *ow_only = getenv("OW_ONLY");
    bool all = !ow_only || strcmp(ow_only, "1") != 0;
    int rc = 0;
    if (all) rc = bench_phase(f, "new paths (PUT)", FSM_CMD_PUT, "new/%03u/%06u", n, n, size);
    if (rc == 0)
        rc = bench_phase(f, "overwrite 1024 paths (PUT)", FSM_CMD_PUT, "ow/%03u/%06u", n, 1024,
                         size);
    if (rc == 0)
        rc = bench_phase(f, "overwrite again (PUT)", FSM_CMD_PUT, "ow/%03u/%06u", n, 1024, size);
    if (rc == 0 && all)
        rc = bench_phase(f, "delete (DELETE)", FSM_CMD_DELETE, "new/%03u/%06u", n, n, size);
    if (rc == 0 && all)
        rc = bench_phase(f, "new after delete (PUT)", FSM_CMD_PUT, "re/%03u/%06u", n, n, size);
    double t0 = bench_now();
    if (rc == 0 && fsm_checkpoint_sync(f) == 0)
        printf("checkpoint (syncfs + sync commit): %.1f ms\n", (bench_now() - t0) * 1e3);
    fsm_close(f);
    env->close(env, 0);
    nftw(dir, bench_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
