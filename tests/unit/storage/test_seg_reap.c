/* test_seg_reap.c — segments dropped by compaction are closed and unlinked by the reaper
 * thread, off the writer: commits complete while a removal is stuck (a hook blocks the
 * reaper), removals happen eventually, only of segments below the first kept entry's, and a
 * reader fetching concurrently never finds a kept payload missing. */
#include <dirent.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "err.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_seg_set_max, reap hook, store_hdr_get */

#define ENTRY_LEN 1024u
#define SEG_MAX 4096u /* four entries per segment */
#define DEADLINE_US 10000000u

/* The reaper's hook: counts removals, blocks while the gate is closed. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    size_t entered;
    uint64_t max_seq; /* highest segment the reaper removed */
};

static void gate_hook(void *ctx, uint64_t seq)
{
    struct gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->entered++;
    if (seq > g->max_seq) g->max_seq = seq;
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static size_t gate_entered(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    size_t n = g->entered;
    pthread_mutex_unlock(&g->mu);
    return n;
}

struct done_count {
    size_t n, errs;
};

static void done_cb(void *ctx, uint64_t seq, int err)
{
    (void)seq;
    struct done_count *d = ctx;
    d->n++;
    d->errs += err != 0;
}

/* Runs the loop until n jobs completed or the deadline passed. */
static bool wait_done(struct ev_loop *loop, struct done_count *d, size_t n)
{
    uint64_t until = st_now_us() + DEADLINE_US;
    while (d->n < n && st_now_us() < until)
        ev_run(loop, EVRUN_NOWAIT);
    return d->n >= n;
}

/* Segment files in dir with seq < below (below = UINT64_MAX: all). */
static size_t segs_below(const char *dir, uint64_t below)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d)) != NULL;)
        if (strncmp(de->d_name, "seg-", 4) == 0 && strtoull(de->d_name + 4, NULL, 16) < below) n++;
    if (d) closedir(d);
    return n;
}

/* Fetches every index in [first, last] over and over until stop: a payload must be intact,
 * or gone only when compaction may have taken its entry (at or below the point of the last
 * compaction submitted: fetches read uncommitted, so they may see the deletion before
 * store_snapshot_info does). */
struct reader {
    struct store *s;
    raft_index first;
    _Atomic raft_index last;
    _Atomic raft_index may_go;
    atomic_bool stop;
    size_t reads, bad;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(&r->stop)) {
        for (raft_index i = r->first; i <= atomic_load(&r->last); i++) {
            struct raft_blob *p = NULL;
            int rv = store_fetch(r->s, i, &p);
            bool ok = rv == 0 ? st_blob_ok(p, i, 1, ENTRY_LEN)
                              : rv == ERR_NOTFOUND && i <= atomic_load(&r->may_go);
            if (!ok) {
                fprintf(stderr, "  read %llu: %s\n", (unsigned long long)i, err_str(rv));
                r->bad++;
            }
            raft_blob_unref(p);
            r->reads++;
        }
    }
    return NULL;
}

static void submit_entries(struct store_writer *wr, uint64_t *seq, raft_index *last, int jobs)
{
    for (int j = 0; j < jobs; j++) {
        struct store_write w;
        st_job(&w, ++*seq, *last + 1, 4, 1, ENTRY_LEN);
        *last += 4;
        CHECK(store_writer_submit(wr, &w) == 0);
    }
}

static void submit_compact(struct store_writer *wr, uint64_t *seq, raft_index to)
{
    struct store_write w;
    st_job(&w, ++*seq, 0, 0, 0, 0);
    w.compact_to = to;
    w.snap_term = 1;
    w.snap_conf = st_conf_blob(to);
    CHECK(store_writer_submit(wr, &w) == 0);
}

static void test_reap_background(void)
{
    char tmpl[64];
    const char *dir = st_tmpdir(tmpl, sizeof tmpl, "reap");
    struct store *s = st_open(dir);
    store_seg_set_max(s, SEG_MAX);
    struct gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    store_seg_set_reap_hook(s, gate_hook, &g);
    struct ev_loop *loop = ev_loop_new(0);
    struct done_count d = {0};
    struct store_writer *wr = NULL;
    CHECK(store_writer_start(s, loop, done_cb, &d, &wr) == 0);
    uint64_t seq = 0;
    raft_index last = 0;
    submit_entries(wr, &seq, &last, 16); /* 64 KiB: about 16 segments */
    CHECK(wait_done(loop, &d, seq));
    size_t before = segs_below(dir, UINT64_MAX);
    CHECK(before >= 12);

    struct reader r = {.s = s, .first = 1};
    atomic_store(&r.last, last);
    pthread_t rth;
    CHECK(pthread_create(&rth, NULL, reader_main, &r) == 0);

    /* Compaction drops the segments below entry 49's; the reaper gets stuck on the first. */
    atomic_store(&r.may_go, 48);
    submit_compact(wr, &seq, 48);
    uint64_t until = st_now_us() + DEADLINE_US;
    while (gate_entered(&g) == 0 && st_now_us() < until)
        ev_run(loop, EVRUN_NOWAIT);
    CHECK(gate_entered(&g) == 1);
    /* The writer does not wait for it: the compaction's batch and later ones complete. */
    CHECK(wait_done(loop, &d, seq));
    submit_entries(wr, &seq, &last, 4);
    atomic_store(&r.may_go, 56);
    submit_compact(wr, &seq, 56);
    submit_entries(wr, &seq, &last, 2);
    CHECK(wait_done(loop, &d, seq));
    atomic_store(&r.last, last);
    CHECK_EQ_U(d.errs, 0);
    CHECK(gate_entered(&g) == 1);
    CHECK(segs_below(dir, UINT64_MAX) >= before - 1); /* nothing else went meanwhile */

    /* Released: every segment below the first kept entry's goes, eventually; no other. */
    struct store_hdr h;
    CHECK(store_hdr_get(s, 57, 0, &h) == 0 && h.version == 2);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    until = st_now_us() + DEADLINE_US;
    while (segs_below(dir, h.pos.seg) > 0 && st_now_us() < until)
        ev_run(loop, EVRUN_NOWAIT);
    CHECK_EQ_U(segs_below(dir, h.pos.seg), 0);
    pthread_mutex_lock(&g.mu);
    CHECK(g.max_seq < h.pos.seg);
    CHECK(g.entered >= h.pos.seg - 2); /* segments 1 .. h.pos.seg - 1, one perhaps empty */
    pthread_mutex_unlock(&g.mu);
    struct raft_blob *p = NULL;
    for (raft_index i = 57; i <= last; i++) {
        CHECK(store_fetch(s, i, &p) == 0 && st_blob_ok(p, i, 1, ENTRY_LEN));
        raft_blob_unref(p);
    }
    atomic_store(&r.stop, true);
    pthread_join(rth, NULL);
    fprintf(stderr, "  %zu concurrent reads, %zu removals\n", r.reads, g.entered);
    CHECK(r.reads > 0);
    CHECK_EQ_U(r.bad, 0);
    store_writer_stop(wr);
    ev_loop_destroy(loop);
    store_close(s);
    s = st_open(dir);
    CHECK(store_fetch(s, 57, &p) == 0 && st_blob_ok(p, 57, 1, ENTRY_LEN));
    raft_blob_unref(p);
    store_close(s);
    st_rmtree(dir);
}

/* Removals still pending at close complete there (or, after a crash, at the next open). */
static void test_reap_close(void)
{
    char tmpl[64];
    const char *dir = st_tmpdir(tmpl, sizeof tmpl, "reapclose");
    struct store *s = st_open(dir);
    store_seg_set_max(s, SEG_MAX);
    for (raft_index i = 1; i <= 40; i += 4) {
        struct store_write w;
        st_job(&w, 0, i, 4, 1, ENTRY_LEN);
        CHECK(store_write_sync(s, &w) == 0);
    }
    struct store_write w;
    st_job(&w, 0, 0, 0, 0, 0);
    w.compact_to = 40;
    w.snap_term = 1;
    w.snap_conf = st_conf_blob(40);
    CHECK(store_write_sync(s, &w) == 0);
    store_close(s);
    CHECK_EQ_U(segs_below(dir, UINT64_MAX), 1); /* the current one */
    st_rmtree(dir);
}

int main(void)
{
    RUN(test_reap_background);
    RUN(test_reap_close);
    return check_report();
}
