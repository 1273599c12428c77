/* test_compact.c — unit tests of the store's snapshot point and log compaction on a real BDB
 * environment in mkdtemp dirs: compaction then load, carried-over (partial) deletions, a
 * snapshot install job (compact + truncate + entries), store_reset_sync, a corrupt snapshot
 * record, and the environment's size staying bounded under sustained write + compaction. */
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include "check.h"
#include "err.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_seg_set_max */

static char tmpl_dir[64];

static const char *tdir(void)
{
    return st_tmpdir(tmpl_dir, sizeof tmpl_dir, "compact");
}

#define topen st_open

/* Appends n NORMAL entries from first in term, len bytes each, durably. */
static void append(struct store *s, raft_index first, size_t n, raft_term term, uint32_t len)
{
    struct store_write w;
    st_job(&w, 0, first, n, term, len);
    CHECK(store_write_sync(s, &w) == 0);
}

/* A compaction job to (to, term) with st_conf(to) as its configuration, no entries. */
static void compact_job(struct store_write *w, raft_index to, raft_term term)
{
    st_job(w, 0, 0, 0, 0, 0);
    w->compact_to = to;
    w->snap_term = term;
    w->snap_conf = st_conf_blob(to);
}

/* Records in one of the store's DBs, read through the BDB API (leftovers included). */
static size_t count_records(struct store *s, const char *file)
{
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->open(db, NULL, file, NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0);
    DB_BTREE_STAT *st = NULL;
    CHECK(db->stat(db, NULL, &st, 0) == 0);
    size_t n = st ? st->bt_nkeys : 0;
    free(st);
    db->close(db, 0);
    return n;
}

/* Payload segment files in dir: how many, their total size and the highest sequence
 * number (segments ever created, as none is reused). */
static size_t count_segs_seq(const char *dir, uint64_t *bytes, uint64_t *max_seq)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    uint64_t sum = 0, top = 0;
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        struct stat sb;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (strncmp(de->d_name, "seg-", 4) == 0 && stat(path, &sb) == 0) {
            n++;
            sum += (uint64_t)sb.st_size;
            uint64_t seq = strtoull(de->d_name + 4, NULL, 16);
            if (seq > top) top = seq;
        }
    }
    if (d) closedir(d);
    if (bytes) *bytes = sum;
    if (max_seq) *max_seq = top;
    return n;
}

static size_t count_segs(const char *dir, uint64_t *bytes)
{
    return count_segs_seq(dir, bytes, NULL);
}

/* Loads and checks: snapshot (snap, sterm, st_conf(snap)), entries snap+1..last all in term
 * (payloads of len bytes, verified by fetch), nothing fetchable at or below snap. */
static void expect_state(struct store *s, raft_index snap, raft_term sterm, raft_index last,
                         raft_term term, uint32_t len)
{
    struct raft_boot b;
    int rv = store_load(s, &b);
    if (rv) fprintf(stderr, "load: %s: %s\n", err_str(rv), store_errmsg(s));
    CHECK(rv == 0);
    CHECK_EQ_U(b.snapshot_index, snap);
    CHECK_EQ_U(b.snapshot_term, sterm);
    CHECK(snap ? st_conf_ok(b.snapshot_conf, snap) : b.snapshot_conf == NULL);
    CHECK_EQ_U(b.n_entries, last - snap);
    for (size_t i = 0; i < b.n_entries; i++) {
        CHECK_EQ_U(b.entries[i].index, snap + 1 + i);
        CHECK_EQ_U(b.entries[i].term, term);
    }
    store_boot_free(&b);
    CHECK(b.snapshot_conf == NULL && b.snapshot_index == 0);
    for (raft_index i = snap + 1; i <= last; i++) {
        struct raft_blob *p = NULL;
        CHECK(store_fetch(s, i, &p) == 0);
        CHECK(st_blob_ok(p, i, term, len));
        raft_blob_unref(p);
    }
    raft_index si = 99;
    raft_term st = 99;
    CHECK(store_snapshot_info(s, &si, &st) == 0);
    CHECK(si == snap && st == sterm);
}

/* Entry index is deleted for good (not merely skipped). */
static int gone(struct store *s, raft_index index)
{
    struct raft_blob *p = NULL;
    int rv = store_fetch(s, index, &p);
    raft_blob_unref(p);
    return rv == ERR_NOTFOUND;
}

static void test_compact_load(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    append(s, 1, 100, 1, 64);
    struct store_write w;
    compact_job(&w, 60, 1);
    CHECK(store_write_sync(s, &w) == 0);
    CHECK(w.snap_conf == NULL); /* the store took the reference */
    expect_state(s, 60, 1, 100, 1, 64);
    CHECK_EQ_U(count_records(s, "log.db"), 40);
    store_seg_reap_wait(s);
    CHECK_EQ_U(count_segs(dir, NULL), 1); /* the current segment stays */
    CHECK(gone(s, 1) && gone(s, 60) && !gone(s, 61));
    store_close(s);
    s = topen(dir);
    expect_state(s, 60, 1, 100, 1, 64);
    /* A compaction together with appends, in one job; then appends continue. */
    st_job(&w, 0, 101, 5, 1, 64);
    w.compact_to = 100;
    w.snap_term = 1;
    w.snap_conf = st_conf_blob(100);
    CHECK(store_write_sync(s, &w) == 0);
    append(s, 106, 2, 1, 64);
    expect_state(s, 100, 1, 107, 1, 64);
    /* Compacting everything: an empty log continues after the snapshot point. */
    compact_job(&w, 107, 1);
    CHECK(store_write_sync(s, &w) == 0);
    expect_state(s, 107, 1, 107, 1, 64);
    struct store_stats st;
    store_stats(s, &st);
    CHECK_EQ_U(st.entries_compacted, 40 + 7); /* counted since this open */
    store_close(s);
    s = topen(dir);
    expect_state(s, 107, 1, 107, 1, 64);
    append(s, 108, 3, 2, 64);
    expect_state(s, 107, 1, 110, 2, 64);
    store_close(s);
    st_rmtree(dir);
}

/* A follower's snapshot install in one job: compaction (to a point inside, then beyond, the
 * log), truncation of the rest, new entries and a hardstate. */
static void test_install_job(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    append(s, 1, 50, 1, 64);
    struct store_write w;
    st_job(&w, 0, 31, 5, 2, 64);
    w.compact_to = 30;
    w.snap_term = 2;
    w.snap_conf = st_conf_blob(30);
    w.truncate_from = 31;
    w.hardstate_changed = true;
    w.term = 2;
    w.vote = 3;
    w.commit = 30;
    CHECK(store_write_sync(s, &w) == 0);
    expect_state(s, 30, 2, 35, 2, 64);
    /* Beyond the log's end: everything goes, the log restarts after the point. */
    st_job(&w, 0, 501, 3, 3, 64);
    w.compact_to = 500;
    w.snap_term = 3;
    w.snap_conf = st_conf_blob(500);
    w.truncate_from = 501;
    CHECK(store_write_sync(s, &w) == 0);
    store_close(s);
    s = topen(dir);
    expect_state(s, 500, 3, 503, 3, 64);
    CHECK_EQ_U(count_records(s, "log.db"), 3);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK(b.term == 2 && b.vote == 3 && b.commit == 30);
    store_boot_free(&b);
    /* Keeping the suffix: a compaction inside the log without truncation (fig. 13). */
    compact_job(&w, 502, 3);
    CHECK(store_write_sync(s, &w) == 0);
    expect_state(s, 502, 3, 503, 3, 64);
    store_close(s);
    st_rmtree(dir);
}

/* Deletions bounded per transaction: the rest stays behind (skipped by the load, also after
 * a reopen), shrinks with every batch, and the idle writer finishes it. */
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

static int wait_done(struct ev_loop *loop, struct done_count *d, size_t n)
{
    uint64_t until = st_now_us() + 60000000;
    while (d->n < n && st_now_us() < until)
        ev_run(loop, EVRUN_ONCE);
    return d->n >= n;
}

static void test_carried_over(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    append(s, 1, 1000, 1, 100);
    store_set_compact_chunk(s, 100);
    struct store_write w;
    compact_job(&w, 900, 1);
    CHECK(store_write_sync(s, &w) == 0);
    CHECK_EQ_U(count_records(s, "log.db"), 900); /* one chunk of 100 went */
    expect_state(s, 900, 1, 1000, 1, 100);
    store_close(s);
    s = topen(dir);
    store_set_compact_chunk(s, 100);
    expect_state(s, 900, 1, 1000, 1, 100);
    append(s, 1001, 1, 1, 100); /* every batch deletes a chunk more than it appends */
    CHECK_EQ_U(count_records(s, "log.db"), 900 + 1 - (100 + 1));
    struct ev_loop *loop = ev_loop_new(0);
    struct done_count d = {0};
    struct store_writer *wr = NULL;
    CHECK(store_writer_start(s, loop, done_cb, &d, &wr) == 0);
    uint64_t until = st_now_us() + 20000000;
    struct store_stats st = {0};
    while (st.entries_compacted < 800 && st_now_us() < until) {
        store_stats(s, &st);
        usleep(1000); /* polling the idle writer's progress, with a deadline */
    }
    CHECK_EQ_U(st.entries_compacted, 800); /* 100 went before the reopen */
    /* Jobs after the drain still work. */
    st_job(&w, 1, 1002, 2, 1, 100);
    CHECK(store_writer_submit(wr, &w) == 0);
    CHECK(wait_done(loop, &d, 1) && d.errs == 0);
    store_writer_stop(wr);
    ev_loop_destroy(loop);
    CHECK_EQ_U(count_records(s, "log.db"), 103);
    CHECK(gone(s, 1) && gone(s, 900) && !gone(s, 901));
    expect_state(s, 900, 1, 1003, 1, 100);
    store_close(s);
    st_rmtree(dir);
}

static void test_reset(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    append(s, 1, 500, 1, 64);
    struct store_write w;
    compact_job(&w, 100, 1);
    CHECK(store_write_sync(s, &w) == 0);
    store_set_compact_chunk(s, 64); /* the reset must still delete everything */
    struct raft_blob *c300 = st_conf_blob(300);
    CHECK(store_reset_sync(s, 300, 7, c300) == 0);
    raft_blob_unref(c300);
    expect_state(s, 300, 7, 300, 1, 64);
    CHECK_EQ_U(count_records(s, "log.db"), 0);
    uint64_t seg_bytes = 99;
    store_seg_reap_wait(s);
    CHECK_EQ_U(count_segs(dir, &seg_bytes), 1); /* every segment dropped, a fresh one begun */
    CHECK_EQ_U(seg_bytes, 0);
    append(s, 301, 4, 7, 64);
    store_close(s);
    s = topen(dir);
    expect_state(s, 300, 7, 304, 7, 64);
    /* Back below the current point (the file store's snapshot is older) and beyond it. */
    struct raft_blob *c50 = st_conf_blob(50);
    CHECK(store_reset_sync(s, 50, 8, c50) == 0);
    CHECK(c50->refs == 1); /* borrowed */
    raft_blob_unref(c50);
    expect_state(s, 50, 8, 50, 8, 64);
    struct raft_blob *c9 = st_conf_blob(9000);
    CHECK(store_reset_sync(s, 9000, 9, c9) == 0);
    raft_blob_unref(c9);
    store_close(s);
    s = topen(dir);
    expect_state(s, 9000, 9, 9000, 9, 64);
    append(s, 9001, 2, 9, 64);
    expect_state(s, 9000, 9, 9002, 9, 64);
    store_close(s);
    st_rmtree(dir);
}

/* Writes a snapshot record through the BDB API, bypassing the store: a valid CRC over
 * whatever configuration bytes are given. */
static void put_snap_record(struct store *s, raft_index index, raft_term term, const uint8_t *conf,
                            uint32_t len)
{
    uint8_t v[512] = {1};
    v[4] = (uint8_t)len;
    v[5] = (uint8_t)(len >> 8);
    for (int i = 0; i < 8; i++) {
        v[8 + i] = (uint8_t)(index >> (8 * i));
        v[16 + i] = (uint8_t)(term >> (8 * i));
    }
    memcpy(v + 24, conf, len);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), v, 24 + len);
    for (int i = 0; i < 4; i++)
        v[24 + len + i] = (uint8_t)(crc >> (8 * i));
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->open(db, NULL, "meta.db", NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0);
    DBT key = {.data = "snapshot", .size = 8}, val = {.data = v, .size = 28 + len};
    CHECK(db->put(db, NULL, &key, &val, DB_AUTO_COMMIT) == 0);
    db->close(db, 0);
}

/* Flips one bit of the "snapshot" record at byte at. */
static void poke_snap(struct store *s, size_t at)
{
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->open(db, NULL, "meta.db", NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0);
    DBT key = {.data = "snapshot", .size = 8}, val = {.flags = DB_DBT_MALLOC};
    CHECK(db->get(db, NULL, &key, &val, 0) == 0);
    CHECK(val.size > at);
    if (val.size > at) ((uint8_t *)val.data)[at] ^= 0x08;
    val.flags = 0;
    CHECK(db->put(db, NULL, &key, &val, DB_AUTO_COMMIT) == 0);
    free(val.data);
    db->close(db, 0);
}

static void expect_corrupt(struct store *s, const char *what)
{
    struct raft_boot b;
    CHECK(store_load(s, &b) == ERR_CORRUPT);
    CHECK(b.entries == NULL && b.snapshot_conf == NULL);
    if (!strstr(store_errmsg(s), what))
        fprintf(stderr, "errmsg \"%s\" lacks \"%s\"\n", store_errmsg(s), what);
    CHECK(strstr(store_errmsg(s), what) != NULL);
}

static void test_snap_corrupt(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    append(s, 1, 20, 1, 64);
    struct store_write w;
    compact_job(&w, 10, 1);
    CHECK(store_write_sync(s, &w) == 0);
    size_t at[] = {0, 4, 9, 17, 30, 35};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        poke_snap(s, at[i]); /* the version, length, index, term, conf, CRC */
        expect_corrupt(s, "snapshot");
        poke_snap(s, at[i]);
        expect_state(s, 10, 1, 20, 1, 64);
    }
    store_close(s);
    s = topen(dir);
    /* A good CRC over a configuration that does not decode. */
    const uint8_t junk[] = {1, 0, 9, 9};
    put_snap_record(s, 10, 1, junk, sizeof junk);
    expect_corrupt(s, "configuration");
    struct raft_blob *c = st_conf_blob(10);
    put_snap_record(s, 10, 1, c->data, c->len); /* the same, written by hand: accepted */
    expect_state(s, 10, 1, 20, 1, 64);
    put_snap_record(s, 7, 1, c->data, c->len); /* entries 8..10 are gone: a gap */
    expect_corrupt(s, "gap");
    put_snap_record(s, 10, 2, c->data, c->len); /* entries of term 1 after a term-2 point */
    expect_corrupt(s, "term goes backwards");
    put_snap_record(s, 10, 1, c->data, c->len);
    raft_blob_unref(c);
    expect_state(s, 10, 1, 20, 1, 64);
    poke_snap(s, 3);
    store_close(s);
    char err[256] = "";
    struct store *bad = NULL;
    CHECK(store_open(dir, &bad, err, sizeof err) == ERR_CORRUPT && bad == NULL);
    CHECK(strstr(err, "snapshot") != NULL);
    st_rmtree(dir);
}

/* The worst case for page locks: a full batch of payloads just too small for overflow pages
 * (3 per 16 KiB page) while as many are still to be deleted, in one transaction. */
static void test_full_batch_locks(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    const uint32_t len = 4000;
    const size_t n = STORE_BATCH_BYTES_MAX / len;
    append(s, 1, n, 1, len);
    store_set_compact_chunk(s, 1); /* leave (almost) everything to the next batch */
    struct store_write w;
    compact_job(&w, n, 1);
    CHECK(store_write_sync(s, &w) == 0);
    uint64_t t0 = st_now_us();
    st_job(&w, 0, n + 1, n, 1, len);
    int rv = store_write_sync(s, &w);
    CHECK(rv == 0);
    struct store_stats st;
    store_stats(s, &st);
    fprintf(stderr, "  %zu x %u B appended while %llu deleted in one txn: %.1f s\n", n, len,
            (unsigned long long)st.entries_compacted - 1, (st_now_us() - t0) / 1e6);
    CHECK(st.entries_compacted >= n / 2);
    DB_LOCK_STAT *ls = NULL;
    if (store_env(s)->lock_stat(store_env(s), &ls, 0) == 0 && ls) {
        fprintf(stderr, "  max locks %u, max lock objects %u (limit %u)\n", ls->st_maxnlocks,
                ls->st_maxnobjects, ls->st_maxlocks);
        CHECK(ls->st_maxnlocks < ls->st_maxlocks / 4 * 3); /* room for the file store */
    }
    free(ls);
    store_close(s);
    st_rmtree(dir);
}

/* ---- bounded size ---- */

static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t sum = 0;
    struct dirent *de;
    char path[512];
    while (d && (de = readdir(d)) != NULL) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) sum += (uint64_t)sb.st_size;
    }
    if (d) closedir(d);
    return sum;
}

/* rounds x jobs x n entries of len bytes through the writer; after each round a compaction
 * keeps the last `keep` entries. Returns the largest directory size seen in the first and the
 * second half of the rounds. */
static void churn(const char *dir, int rounds, int jobs, size_t n, uint32_t len, size_t keep,
                  uint64_t seg_max, uint64_t *max_first, uint64_t *max_second)
{
    struct store *s = topen(dir);
    store_seg_set_max(s, seg_max);
    size_t max_segs = 0;
    struct ev_loop *loop = ev_loop_new(0);
    struct done_count d = {0};
    struct store_writer *wr = NULL;
    CHECK(store_writer_start(s, loop, done_cb, &d, &wr) == 0);
    raft_index last = 0;
    uint64_t seq = 0;
    *max_first = *max_second = 0;
    for (int r = 0; r < rounds; r++) {
        struct store_write w;
        for (int j = 0; j < jobs; j++) {
            st_job(&w, ++seq, last + 1, n, 1, len);
            last += n;
            CHECK(store_writer_submit(wr, &w) == 0);
        }
        compact_job(&w, last - keep, 1);
        w.seq = ++seq;
        CHECK(store_writer_submit(wr, &w) == 0);
        CHECK(wait_done(loop, &d, seq));
        store_seg_reap_wait(s); /* removals run behind the writer */
        uint64_t sz = dir_bytes(dir);
        size_t segs = count_segs(dir, NULL);
        if (segs > max_segs) max_segs = segs;
        if (getenv("STORE_SIZE_DEBUG")) {
            struct store_stats st;
            store_stats(s, &st);
            fprintf(stderr, "round %d: %.1f MiB, %llu compacted, %llu ckpts:", r, sz / 1048576.0,
                    (unsigned long long)st.entries_compacted, (unsigned long long)st.checkpoints);
            DIR *dd = opendir(dir);
            for (struct dirent *de; dd && (de = readdir(dd)) != NULL;) {
                struct stat sb;
                char path[512];
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
                    fprintf(stderr, " %s=%.1f", de->d_name, sb.st_size / 1048576.0);
            }
            if (dd) closedir(dd);
            fprintf(stderr, "\n");
        }
        uint64_t *m = r < rounds / 2 ? max_first : max_second;
        if (sz > *m) *m = sz;
    }
    CHECK_EQ_U(d.errs, 0);
    /* Segments roll and are dropped once compacted: a current one, the one holding the
     * kept entries, one being filled past them. */
    uint64_t written = (uint64_t)rounds * (uint64_t)jobs * n * len, top = 0;
    count_segs_seq(dir, NULL, &top);
    fprintf(stderr, "  %llu MiB through %llu segments of %llu KiB: at most %zu files at once\n",
            (unsigned long long)(written >> 20), (unsigned long long)top,
            (unsigned long long)(seg_max >> 10), max_segs);
    CHECK(top >= written / seg_max / 2); /* they did roll */
    CHECK(max_segs <= 3 + (keep * len) / seg_max);
    store_writer_stop(wr);
    ev_loop_destroy(loop);
    expect_state(s, last - keep, 1, last, 1, len);
    store_close(s);
}

/* 200k small entries in 20 rounds: without compaction (or segment drops) the payloads alone
 * would pass 50 MB, and without log removal the BDB log files would pass 100 MB. */
static void test_size_small(void)
{
    const char *dir = tdir();
    uint64_t t0 = st_now_us(), a, b;
    churn(dir, 20, 10, 1000, 256, 1024, 2u << 20, &a, &b);
    fprintf(stderr, "  200k x 256 B: max %.1f MiB (first half), %.1f MiB (second), %.1f s\n",
            a / 1048576.0, b / 1048576.0, (st_now_us() - t0) / 1e6);
    CHECK(b <= (48u << 20));
    CHECK(b <= a + (16u << 20)); /* stops growing: at most one more BDB log file */
    st_rmtree(dir);
}

/* A few large payloads per round: their segments must go once compacted. */
static void test_size_large(void)
{
    const char *dir = tdir();
    uint64_t t0 = st_now_us(), a, b;
    churn(dir, 12, 4, 1, 2u << 20, 1, 4u << 20, &a, &b);
    fprintf(stderr, "  48 x 2 MiB: max %.1f MiB (first half), %.1f MiB (second), %.1f s\n",
            a / 1048576.0, b / 1048576.0, (st_now_us() - t0) / 1e6);
    CHECK(b <= (56u << 20));
    CHECK(b <= a + (16u << 20));
    st_rmtree(dir);
}

int main(void)
{
    RUN(test_compact_load);
    RUN(test_install_job);
    RUN(test_carried_over);
    RUN(test_reset);
    RUN(test_snap_corrupt);
    RUN(test_full_batch_locks);
    RUN(test_size_small);
    RUN(test_size_large);
    return check_report();
}
