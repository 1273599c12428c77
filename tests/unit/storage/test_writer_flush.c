/* test_writer_flush.c — BDB checkpoints run beside the group-commit writer, not on it: with
 * every fsync of a DB file (what a checkpoint does, never a commit: commits fsync the log)
 * held at a gate, writes must keep completing. Before the flusher thread a checkpoint ran on
 * the writer thread, and every commit of the node waited behind it. Past 12 MiB of log the
 * writer does wait (bounded log files). Also: the writer's latency histograms count its
 * batches and checkpoints. */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lathist.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_log_bytes_since_ckpt */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_closed;
static int gate_blocked; /* DB file fsyncs waiting at the gate now */

static int is_db_file(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 3) return 0;
    path[n] = '\0';
    return strcmp(path + n - 3, ".db") == 0;
}

/* BDB's fsync (db_env_set_func_fsync, process-wide). */
static int gated_fsync(int fd)
{
    if (is_db_file(fd)) {
        pthread_mutex_lock(&gate_mu);
        gate_blocked++;
        pthread_cond_broadcast(&gate_cv);
        while (gate_closed)
            pthread_cond_wait(&gate_cv, &gate_mu);
        gate_blocked--;
        pthread_mutex_unlock(&gate_mu);
    }
    return fdatasync(fd);
}

static void gate_set(int closed)
{
    pthread_mutex_lock(&gate_mu);
    gate_closed = closed;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static int gate_blocked_now(void)
{
    pthread_mutex_lock(&gate_mu);
    int n = gate_blocked;
    pthread_mutex_unlock(&gate_mu);
    return n;
}

static size_t n_done;

static void done_cb(void *ctx, uint64_t seq, int err)
{
    (void)ctx;
    (void)seq;
    CHECK(err == 0);
    n_done++;
}

/* Runs loop until n completions or the deadline (or, with until_blocked, a gated fsync). */
static int pump(struct ev_loop *loop, size_t n, uint64_t max_us, int until_blocked)
{
    uint64_t until = st_now_us() + max_us;
    while (st_now_us() < until) {
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
        if (until_blocked ? gate_blocked_now() > 0 : n_done >= n) return 1;
        usleep(500);
    }
    return 0;
}

static uint64_t hist_count(const struct lathist *h)
{
    uint64_t c = 0;
    for (size_t b = 0; b <= LATHIST_BUCKETS; b++)
        c += atomic_load(&h->n[b]);
    return c;
}

/* Jobs of many small entries (payloads live in segment files: BDB logs only their headers,
 * about a hundred bytes each), submitted one at a time so each is a batch of its own. */
#define JOB_ENTRIES 2000
#define MAX_JOBS 1000
#define MIB (1u << 20)

static void submit_job(struct store_writer *w, uint64_t *seq, raft_index *idx)
{
    struct store_write job;
    st_job(&job, ++*seq, *idx, JOB_ENTRIES, 1, 16);
    *idx += JOB_ENTRIES;
    CHECK(store_writer_submit(w, &job) == 0);
}

static void test_commits_during_checkpoint(void)
{
    char dirbuf[64];
    const char *dir = st_tmpdir(dirbuf, sizeof dirbuf, "wflush");
    struct store *s = st_open(dir);
    struct ev_loop *loop = ev_loop_new(0);
    struct store_writer *w = NULL;
    CHECK(store_writer_start(s, loop, done_cb, NULL, &w) == 0);

    gate_set(1);
    uint64_t seq = 0;
    raft_index idx = 1;
    size_t want = 0;
    int ok = 1;
    /* Past 6-10 MiB of BDB log the writer asks for a checkpoint: it gets stuck at the gate, and
     * every job meanwhile still completes (the writer never waits for it below 12 MiB). */
    while (ok && gate_blocked_now() == 0 && want < MAX_JOBS) {
        submit_job(w, &seq, &idx);
        ok = pump(loop, ++want, 10000000, 0);
    }
    CHECK(ok);
    CHECK(pump(loop, 0, 10000000, 1));
    uint64_t logged = store_log_bytes_since_ckpt(s);
    CHECK(logged >= 6 * MIB && logged < 12 * MIB); /* asked for at a random 6-10 MiB */
    submit_job(w, &seq, &idx);
    CHECK(pump(loop, ++want, 10000000, 0)); /* a write becomes durable during the checkpoint */
    /* Past 12 MiB the writer does wait for the stuck checkpoint (the log files must not pile
     * up)... */
    bool stuck = false;
    while (!stuck && want < MAX_JOBS) {
        submit_job(w, &seq, &idx);
        stuck = !pump(loop, ++want, 1000000, 0);
    }
    CHECK(stuck);
    CHECK(store_log_bytes_since_ckpt(s) >= 12 * MIB);
    /* ...and goes on once it is done. */
    gate_set(0);
    CHECK(pump(loop, want, 20000000, 0));

    const struct lathist *batch = NULL, *ckpt = NULL;
    store_writer_hists(w, &batch, &ckpt);
    uint64_t until = st_now_us() + 20000000;
    while (hist_count(ckpt) == 0 && st_now_us() < until)
        usleep(1000);
    CHECK(hist_count(ckpt) >= 1);
    CHECK(atomic_load(&ckpt->max_us) > 0);
    struct store_stats st;
    store_stats(s, &st);
    CHECK_EQ_U(hist_count(batch), st.batches);
    CHECK(hist_count(batch) >= want);
    store_writer_stop(w);
    store_close(s);
    ev_loop_destroy(loop);
    st_rmtree(dir);
}

int main(void)
{
    db_env_set_func_fsync(gated_fsync);
    RUN(test_commits_during_checkpoint);
    return check_report();
}
