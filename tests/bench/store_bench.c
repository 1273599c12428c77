/* store_bench.c — group-commit benchmark of src/storage: C concurrent submitters (each keeps
 * one 1 KiB entry in flight) for T seconds; prints writes/s, per-write latency and the
 * commit (log fsync) latency, plus a bare write+fdatasync baseline on the same disk.
 * Usage: store_bench [DIR_PARENT [SECONDS]]. A benchmark: it asserts nothing. */
#include <fcntl.h>
#include <sys/stat.h>

#include "err.h"
#include "store_testlib.h"

#define SB_SAMPLES_MAX (1u << 20)

struct sb_run {
    struct store_writer *wr;
    uint64_t *submit_us; /* by seq */
    uint64_t *lat_us;
    size_t n_lat;
    uint64_t next_seq;
    raft_index next_index;
    uint64_t end_us;
    size_t inflight;
    int failed;
    /* What the loop thread feels while the writer commits: a fetch of a durable entry and
     * a file-store-like NOSYNC transaction on another DB, once per completion. */
    struct store *s;
    DB *other;
    uint64_t *fetch_us, *side_us;
    size_t n_fetch, n_side;
};

static int sb_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sb_submit(struct sb_run *r)
{
    struct store_write w;
    uint64_t seq = r->next_seq++;
    st_job(&w, seq, r->next_index++, 1, 1, 1024);
    r->submit_us[seq % SB_SAMPLES_MAX] = st_now_us();
    if (store_writer_submit(r->wr, &w)) r->failed = 1;
    r->inflight++;
}

static void sb_done_cb(void *ctx, uint64_t seq, int err)
{
    struct sb_run *r = ctx;
    r->inflight--;
    if (err) r->failed = 1;
    uint64_t now = st_now_us();
    if (r->n_lat < SB_SAMPLES_MAX) r->lat_us[r->n_lat++] = now - r->submit_us[seq % SB_SAMPLES_MAX];
    if (r->n_fetch < SB_SAMPLES_MAX && seq > 1) {
        struct raft_blob *b = NULL;
        uint64_t t0 = st_now_us();
        if (store_fetch(r->s, 1 + (seq * 7919) % (seq - 1), &b)) r->failed = 1;
        r->fetch_us[r->n_fetch++] = st_now_us() - t0;
        raft_blob_unref(b);
    }
    if (r->n_side < SB_SAMPLES_MAX) {
        uint64_t t0 = st_now_us();
        DB_ENV *env = store_env(r->s);
        DB_TXN *txn = NULL;
        DBT key = {.data = &seq, .size = sizeof seq}, val = {.data = &now, .size = sizeof now};
        if (env->txn_begin(env, NULL, &txn, 0) || r->other->put(r->other, txn, &key, &val, 0) ||
            txn->commit(txn, DB_TXN_NOSYNC))
            r->failed = 1;
        r->side_us[r->n_side++] = st_now_us() - t0;
    }
    if (now < r->end_us && !r->failed) sb_submit(r);
}

static void sb_pct(const char *what, uint64_t *v, size_t n)
{
    if (n == 0) return;
    qsort(v, n, sizeof *v, sb_cmp);
    printf("         %s p50 %.3f ms p99 %.3f ms max %.3f ms (%zu samples)\n", what, v[n / 2] / 1e3,
           v[n * 99 / 100] / 1e3, v[n - 1] / 1e3, n);
}

/* Percentile from the histogram, interpolated inside the bucket. */
static double sb_hist_pct(const struct store_stats *st, double q)
{
    uint64_t total = 0, cum = 0;
    for (size_t i = 0; i <= STORE_FSYNC_BUCKETS; i++)
        total += st->fsync_hist[i];
    double want = q * (double)total;
    for (size_t i = 0; i < STORE_FSYNC_BUCKETS; i++) {
        if ((double)(cum + st->fsync_hist[i]) >= want && st->fsync_hist[i]) {
            double lo = i ? store_fsync_bucket_le_us[i - 1] : 0, hi = store_fsync_bucket_le_us[i];
            return lo + (hi - lo) * (want - (double)cum) / (double)st->fsync_hist[i];
        }
        cum += st->fsync_hist[i];
    }
    return (double)st->fsync_us_max;
}

static void sb_one(const char *parent, int conc, double secs)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/store-bench-XXXXXX", parent);
    if (!mkdtemp(dir)) abort();
    char err[256];
    struct store *s = NULL;
    if (store_open(dir, &s, err, sizeof err)) {
        fprintf(stderr, "store_open: %s\n", err);
        exit(1);
    }
    struct ev_loop *loop = ev_loop_new(0);
    static struct sb_run r;
    memset(&r, 0, sizeof r);
    r.submit_us = calloc(SB_SAMPLES_MAX, sizeof *r.submit_us);
    r.lat_us = calloc(SB_SAMPLES_MAX, sizeof *r.lat_us);
    r.fetch_us = calloc(SB_SAMPLES_MAX, sizeof *r.fetch_us);
    r.side_us = calloc(SB_SAMPLES_MAX, sizeof *r.side_us);
    r.s = s;
    if (db_create(&r.other, store_env(s), 0) ||
        r.other->open(r.other, NULL, "other.db", NULL, DB_BTREE,
                      DB_CREATE | DB_AUTO_COMMIT | DB_THREAD, 0600))
        exit(1);
    r.next_seq = r.next_index = 1;
    if (store_writer_start(s, loop, sb_done_cb, &r, &r.wr)) exit(1);
    uint64_t t0 = st_now_us();
    r.end_us = t0 + (uint64_t)(secs * 1e6);
    for (int i = 0; i < conc; i++)
        sb_submit(&r);
    while (r.inflight > 0 && !r.failed)
        ev_run(loop, EVRUN_ONCE);
    double el = (double)(st_now_us() - t0) / 1e6;
    struct store_stats st;
    store_stats(s, &st);
    store_writer_stop(r.wr);
    qsort(r.lat_us, r.n_lat, sizeof *r.lat_us, sb_cmp);
    printf("conc %2d: %7.0f writes/s  write p50 %6.3f ms p99 %6.3f ms | %llu commits "
           "(%.1f jobs each)  commit avg %.3f ms p50~%.3f p99~%.3f max %.3f ms\n",
           conc, (double)r.n_lat / el, r.lat_us[r.n_lat / 2] / 1e3,
           r.lat_us[r.n_lat * 99 / 100] / 1e3, (unsigned long long)st.fsyncs,
           (double)st.jobs_written / (double)st.fsyncs, st.fsync_us_sum / (double)st.fsyncs / 1e3,
           sb_hist_pct(&st, 0.5) / 1e3, sb_hist_pct(&st, 0.99) / 1e3,
           (double)st.fsync_us_max / 1e3);
    sb_pct("loop-thread store_fetch:        ", r.fetch_us, r.n_fetch);
    sb_pct("loop-thread NOSYNC txn (fsm-like):", r.side_us, r.n_side);
    ev_loop_destroy(loop);
    r.other->close(r.other, 0);
    store_close(s);
    free(r.submit_us);
    free(r.lat_us);
    free(r.fetch_us);
    free(r.side_us);
    st_rmtree(dir);
}

/* The disk itself: 1 KiB append + fdatasync, as etcd's WAL would do. */
static void sb_disk(const char *parent)
{
    char path[512];
    snprintf(path, sizeof path, "%s/store-bench-fsync-%d", parent, (int)getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) return;
    enum { N = 2000 };
    static uint64_t lat[N];
    char buf[1024];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < N; i++) {
        uint64_t t = st_now_us();
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd)) break;
        lat[i] = st_now_us() - t;
    }
    close(fd);
    unlink(path);
    qsort(lat, N, sizeof *lat, sb_cmp);
    printf("disk: 1 KiB append + fdatasync p50 %.3f ms p99 %.3f ms\n", lat[N / 2] / 1e3,
           lat[N * 99 / 100] / 1e3);
}

int main(int argc, char **argv)
{
    const char *parent = argc > 1 ? argv[1] : ".";
    double secs = argc > 2 ? atof(argv[2]) : 5;
    sb_disk(parent);
    sb_one(parent, 1, secs);
    sb_one(parent, 64, secs);
    return 0;
}
