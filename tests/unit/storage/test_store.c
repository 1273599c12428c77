/* test_store.c — unit tests of src/storage on a real BDB environment in a mkdtemp dir:
 * round trips, truncation, hardstate, reopen, corruption, the group-commit writer. */
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "err.h"
#include "store_testlib.h"
#include "../../../src/storage/store_int.h" /* store_yield_us */

static char tmpl_dir[64];

static const char *tdir(void)
{
    return st_tmpdir(tmpl_dir, sizeof tmpl_dir, "store");
}

#define topen st_open

static void put_one(struct store *s, raft_index idx, raft_term term, uint8_t type, uint32_t len)
{
    struct store_write w;
    st_job(&w, 0, idx, 1, term, len);
    w.entries[0].type = type;
    if (len == 0) {
        raft_blob_unref(w.entries[0].data);
        w.entries[0].data = NULL;
    }
    CHECK(store_write_sync(s, &w) == 0);
}

static void test_roundtrip(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    put_one(s, 1, 1, RAFT_ENTRY_CONFIG, 300);
    put_one(s, 2, 1, RAFT_ENTRY_NOOP, 0);
    struct store_write w;
    st_job(&w, 0, 3, 8, 2, 1024);
    raft_blob_unref(w.entries[7].data);
    w.entries[7].data = st_blob(10, 2, 100000);
    w.hardstate_changed = true;
    w.term = 2;
    w.vote = 7;
    w.commit = 4;
    CHECK(store_write_sync(s, &w) == 0);
    CHECK(w.entries == NULL);
    store_close(s);

    s = topen(dir);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, 10);
    CHECK_EQ_U(b.term, 2);
    CHECK_EQ_U(b.vote, 7);
    CHECK_EQ_U(b.commit, 4);
    for (size_t i = 0; i < b.n_entries; i++)
        CHECK_EQ_U(b.entries[i].index, i + 1);
    CHECK(b.entries[0].type == RAFT_ENTRY_CONFIG && st_blob_ok(b.entries[0].data, 1, 1, 300));
    CHECK(b.entries[1].type == RAFT_ENTRY_NOOP && b.entries[1].data == NULL);
    CHECK(b.entries[2].type == RAFT_ENTRY_NORMAL && b.entries[2].data == NULL);
    CHECK_EQ_U(b.entries[9].term, 2);
    store_boot_free(&b);
    CHECK(b.entries == NULL);
    for (raft_index i = 3; i <= 10; i++) {
        struct raft_blob *p = NULL;
        CHECK(store_fetch(s, i, &p) == 0);
        CHECK(st_blob_ok(p, i, 2, i == 10 ? 100000 : 1024));
        raft_blob_unref(p);
    }
    struct raft_blob *p = NULL;
    CHECK(store_fetch(s, 2, &p) == 0 && p && p->len == 0);
    raft_blob_unref(p);
    CHECK(store_fetch(s, 0, &p) == ERR_NOTFOUND && p == NULL);
    CHECK(store_fetch(s, 11, &p) == ERR_NOTFOUND && p == NULL);
    store_close(s);
    st_rmtree(dir);
}

static void expect_log(struct store *s, size_t n, const raft_term *terms)
{
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, n);
    for (size_t i = 0; i < b.n_entries && i < n; i++) {
        CHECK_EQ_U(b.entries[i].term, terms[i]);
        struct raft_blob *p = NULL;
        CHECK(store_fetch(s, i + 1, &p) == 0);
        CHECK(st_blob_ok(p, i + 1, terms[i], 64));
        raft_blob_unref(p);
    }
    store_boot_free(&b);
    struct raft_blob *p = NULL;
    CHECK(store_fetch(s, n + 1, &p) == ERR_NOTFOUND);
}

static void test_truncate_append(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct store_write w;
    st_job(&w, 0, 1, 10, 1, 64);
    CHECK(store_write_sync(s, &w) == 0);
    st_job(&w, 0, 6, 3, 2, 64); /* explicit truncation of 6..10, then 6..8 */
    w.truncate_from = 6;
    CHECK(store_write_sync(s, &w) == 0);
    raft_term t1[] = {1, 1, 1, 1, 1, 2, 2, 2};
    expect_log(s, 8, t1);
    st_job(&w, 0, 7, 1, 3, 64); /* an append over 7 replaces 7..8 */
    CHECK(store_write_sync(s, &w) == 0);
    raft_term t2[] = {1, 1, 1, 1, 1, 2, 3};
    expect_log(s, 7, t2);
    st_job(&w, 0, 0, 0, 0, 0); /* truncation alone */
    w.truncate_from = 4;
    CHECK(store_write_sync(s, &w) == 0);
    expect_log(s, 3, t2);
    st_job(&w, 0, 0, 0, 0, 0); /* truncating past the end is a no-op */
    w.truncate_from = 50;
    CHECK(store_write_sync(s, &w) == 0);
    store_close(s);
    s = topen(dir);
    expect_log(s, 3, t2);
    st_job(&w, 0, 4, 2, 4, 64); /* the end found at open lets appends continue */
    CHECK(store_write_sync(s, &w) == 0);
    raft_term t3[] = {1, 1, 1, 4, 4};
    expect_log(s, 5, t3);
    store_close(s);
    st_rmtree(dir);
}

static void test_hardstate(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK(b.term == 0 && b.vote == 0 && b.commit == 0 && b.n_entries == 0);
    store_boot_free(&b);
    struct store_write w = {.hardstate_changed = true, .term = 5, .vote = 3, .commit = 0};
    CHECK(store_write_sync(s, &w) == 0);
    w = (struct store_write){.hardstate_changed = false, .term = 9, .vote = 9};
    CHECK(store_write_sync(s, &w) == 0); /* not flagged: not written */
    store_close(s);
    s = topen(dir);
    CHECK(store_load(s, &b) == 0);
    CHECK(b.term == 5 && b.vote == 3);
    store_boot_free(&b);
    store_close(s);
    st_rmtree(dir);
}

/* Rewrites one record through the BDB API, as a bad disk or a bug would leave it. */
static void poke(struct store *s, const char *file, const void *k, size_t klen, size_t at, int del)
{
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->open(db, NULL, file, NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0);
    DBT key = {.data = (void *)k, .size = (u_int32_t)klen};
    DBT val = {.flags = DB_DBT_MALLOC};
    if (del) {
        CHECK(db->del(db, NULL, &key, DB_AUTO_COMMIT) == 0);
    } else {
        CHECK(db->get(db, NULL, &key, &val, 0) == 0);
        CHECK(val.size > at);
        ((uint8_t *)val.data)[at] ^= 0x40;
        val.flags = 0;
        CHECK(db->put(db, NULL, &key, &val, DB_AUTO_COMMIT) == 0);
        free(val.data);
    }
    db->close(db, 0);
}

/* Path of payload segment seq in dir. */
static const char *seg_path(const char *dir, uint64_t seq)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/seg-%016llx.dat", dir, (unsigned long long)seq);
    return path;
}

/* Flips one byte (at) of entry (index, term)'s payload in segment 1, found by its bytes, under
 * the store's feet, as a bad disk would. */
static int seg_flip(const char *dir, raft_index index, raft_term term, size_t at)
{
    FILE *f = fopen(seg_path(dir, 1), "r+b");
    if (!f) return 0;
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    uint8_t pat[32]; /* the bytes after the flipped one: flipping twice restores it */
    for (size_t i = 0; i < sizeof pat; i++)
        pat[i] = st_byte(index, term, at + 1 + i);
    uint8_t *p = memmem(buf, n, pat, sizeof pat);
    int ok = p && p > buf && fseek(f, p - 1 - buf, SEEK_SET) == 0 && fputc(p[-1] ^ 0x10, f) != EOF;
    fclose(f);
    return ok;
}

static void test_corruption(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    put_one(s, 1, 1, RAFT_ENTRY_CONFIG, 50);
    struct store_write w;
    st_job(&w, 0, 2, 6, 1, 2000);
    w.hardstate_changed = true;
    w.term = 1;
    CHECK(store_write_sync(s, &w) == 0);
    /* A later batch: a bad payload in the last one would count as torn (and be cut at open). */
    put_one(s, 8, 1, RAFT_ENTRY_NORMAL, 10);
    uint8_t k[8] = {0, 0, 0, 0, 0, 0, 0, 3};
    CHECK(seg_flip(dir, 3, 1, 1500)); /* NORMAL payload: caught by fetch, not by load */
    struct raft_blob *p = NULL;
    CHECK(store_fetch(s, 3, &p) == ERR_CORRUPT && p == NULL);
    CHECK(strstr(store_errmsg(s), "checksum") != NULL);
    CHECK(store_fetch(s, 4, &p) == 0);
    raft_blob_unref(p);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    store_boot_free(&b);
    k[7] = 4;
    poke(s, "log.db", k, 8, 2, 0); /* a header's term */
    CHECK(store_fetch(s, 4, &p) == ERR_CORRUPT);
    CHECK(store_load(s, &b) == ERR_CORRUPT && b.entries == NULL);
    poke(s, "log.db", k, 8, 2, 0); /* flip it back */
    CHECK(store_load(s, &b) == 0);
    store_boot_free(&b);
    poke(s, "log.db", k, 8, 25, 0); /* the payload's segment offset, covered by the CRC */
    CHECK(store_fetch(s, 4, &p) == ERR_CORRUPT && p == NULL);
    poke(s, "log.db", k, 8, 25, 0);
    CHECK(seg_flip(dir, 1, 1, 10)); /* CONFIG payloads are verified at load */
    CHECK(store_load(s, &b) == ERR_CORRUPT);
    CHECK(seg_flip(dir, 1, 1, 10)); /* flip it back */
    store_close(s);
    s = topen(dir); /* a bad payload below the durable position is no torn batch: kept */
    CHECK(store_load(s, &b) == 0 && b.n_entries == 8);
    store_boot_free(&b);
    CHECK(store_fetch(s, 3, &p) == ERR_CORRUPT && p == NULL);
    k[7] = 5;
    poke(s, "log.db", k, 8, 0, 1); /* a gap */
    CHECK(store_load(s, &b) == ERR_CORRUPT);
    CHECK(strstr(store_errmsg(s), "gap") != NULL);
    poke(s, "meta.db", "hardstate", 9, 3, 0);
    CHECK(store_load(s, &b) == ERR_CORRUPT);
    store_close(s);
    st_rmtree(dir);
}

/* Payload bytes flipped on disk while the store is closed: it opens, the entry's fetch
 * answers ERR_CORRUPT (never the bad bytes) and the others are intact. */
static void test_corrupt_segment(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct store_write w;
    st_job(&w, 0, 1, 6, 1, 2000);
    CHECK(store_write_sync(s, &w) == 0);
    put_one(s, 7, 1, RAFT_ENTRY_NORMAL, 10); /* 1-6 are not the last batch */
    store_close(s);
    CHECK(seg_flip(dir, 3, 1, 500));
    s = topen(dir);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0 && b.n_entries == 7); /* NORMAL payloads: read lazily */
    store_boot_free(&b);
    for (raft_index i = 1; i <= 6; i++) {
        struct raft_blob *p = NULL;
        int rv = store_fetch(s, i, &p);
        CHECK(i == 3 ? rv == ERR_CORRUPT && p == NULL : rv == 0 && st_blob_ok(p, i, 1, 2000));
        raft_blob_unref(p);
    }
    store_close(s);
    st_rmtree(dir);
}

/* The last batch's headers durable but its payloads not (a crash between the BDB commit and
 * the segment's fdatasync, simulated by cutting the segment while the store is closed): the
 * reopened store drops the entries from the first one without its payload, keeps everything
 * before, and appends after them. Bytes missing below the durable position are corruption,
 * reported, never silently cut. */
static void test_torn_last_batch(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct store_write w;
    st_job(&w, 0, 1, 5, 1, 1000); /* bytes 0..5000 */
    CHECK(store_write_sync(s, &w) == 0);
    st_job(&w, 0, 6, 5, 1, 1000); /* bytes 5000..10000: the last batch */
    w.hardstate_changed = true;
    w.term = 1;
    w.commit = 10;
    CHECK(store_write_sync(s, &w) == 0);
    store_close(s);
    CHECK(truncate(seg_path(dir, 1), 7 * 1000 + 500) == 0); /* 8 torn, 9-10 missing */
    s = topen(dir);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, 7);
    CHECK_EQ_U(b.commit, 10); /* the core clamps it to the log */
    store_boot_free(&b);
    struct raft_blob *p = NULL;
    for (raft_index i = 1; i <= 7; i++) {
        CHECK(store_fetch(s, i, &p) == 0 && st_blob_ok(p, i, 1, 1000));
        raft_blob_unref(p);
    }
    CHECK(store_fetch(s, 8, &p) == ERR_NOTFOUND && p == NULL);
    st_job(&w, 0, 8, 2, 2, 1000); /* at the segment's end, 7500.. */
    CHECK(store_write_sync(s, &w) == 0);
    store_close(s);
    s = topen(dir);
    raft_term t9[] = {1, 1, 1, 1, 1, 1, 1, 2, 2};
    CHECK(store_load(s, &b) == 0 && b.n_entries == 9);
    for (size_t i = 0; i < b.n_entries && i < 9; i++)
        CHECK_EQ_U(b.entries[i].term, t9[i]);
    store_boot_free(&b);
    for (raft_index i = 8; i <= 9; i++) {
        CHECK(store_fetch(s, i, &p) == 0 && st_blob_ok(p, i, 2, 1000));
        raft_blob_unref(p);
    }
    store_close(s);
    CHECK(truncate(seg_path(dir, 1), 2 * 1000 + 10) == 0); /* into batches 1-2 as well */
    s = topen(dir);
    CHECK(store_load(s, &b) == 0 && b.n_entries == 7); /* 8-9 were the last batch */
    store_boot_free(&b);
    CHECK(store_fetch(s, 2, &p) == 0 && st_blob_ok(p, 2, 1, 1000));
    raft_blob_unref(p);
    CHECK(store_fetch(s, 3, &p) == ERR_CORRUPT && p == NULL);
    store_close(s);
    st_rmtree(dir);
}

/* A version-1 header (payload in payload.db), as the store wrote them before segments. */
static void v1_put(DB *log, DB *pay, raft_index idx, raft_term term, uint8_t type, uint32_t len)
{
    struct raft_blob *b = len ? st_blob(idx, term, len) : NULL;
    uint8_t k[8], v[24] = {0}, buf[28];
    store_key(idx, k);
    store_put_le(v, term, 8);
    store_put_le(v + 8, len, 4);
    v[12] = type;
    v[13] = 1;
    store_put_le(v + 16, store_crc(b ? b->data : NULL, len), 4);
    memcpy(buf, v, 20);
    store_put_le(buf + 20, idx, 8);
    store_put_le(v + 20, store_crc(buf, 28), 4);
    DBT key = {.data = k, .size = 8}, val = {.data = v, .size = 24};
    CHECK(log->put(log, NULL, &key, &val, DB_AUTO_COMMIT) == 0);
    if (b) {
        DBT pval = {.data = b->data, .size = len};
        CHECK(pay->put(pay, NULL, &key, &pval, DB_AUTO_COMMIT) == 0);
    }
    raft_blob_unref(b);
}

static DB *open_db(struct store *s, const char *file, uint32_t flags)
{
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->set_flags(db, DB_CHKSUM) == 0);
    CHECK(db->open(db, NULL, file, NULL, DB_BTREE, flags | DB_AUTO_COMMIT | DB_THREAD, 0600) == 0);
    return db;
}

static size_t db_records(struct store *s, const char *file)
{
    DB *db = open_db(s, file, 0);
    DB_BTREE_STAT *st = NULL;
    CHECK(db->stat(db, NULL, &st, 0) == 0);
    size_t n = st ? st->bt_nkeys : 0;
    free(st);
    db->close(db, 0);
    return n;
}

/* Every entry 1..n with its payload, terms as given (CONFIG 1: 100 B, NOOP 2, else 700 B). */
static void expect_v1_log(struct store *s, size_t n, const raft_term *terms)
{
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, n);
    CHECK(b.n_entries && st_blob_ok(b.entries[0].data, 1, 1, 100));
    for (size_t i = 0; i < b.n_entries && i < n; i++)
        CHECK_EQ_U(b.entries[i].term, terms[i]);
    store_boot_free(&b);
    for (raft_index i = 3; i <= n; i++) {
        struct raft_blob *p = NULL;
        CHECK(store_fetch(s, i, &p) == 0 && st_blob_ok(p, i, terms[i - 1], 700));
        raft_blob_unref(p);
    }
}

/* A store written before payload segments (header version 1, payload.db) opens and reads;
 * new entries go to segments after it; truncation and compaction remove version-1 payloads. */
static void test_v1_store(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    DB *log = open_db(s, "log.db", 0), *pay = open_db(s, "payload.db", DB_CREATE);
    v1_put(log, pay, 1, 1, RAFT_ENTRY_CONFIG, 100);
    v1_put(log, pay, 2, 1, RAFT_ENTRY_NOOP, 0);
    for (raft_index i = 3; i <= 20; i++)
        v1_put(log, pay, i, 1, RAFT_ENTRY_NORMAL, 700);
    pay->close(pay, 0);
    log->close(log, 0);
    store_close(s);
    CHECK(unlink(seg_path(dir, 1)) == 0); /* a version-1 directory had no segment */
    s = topen(dir);
    raft_term t[24];
    for (size_t i = 0; i < 24; i++)
        t[i] = 1;
    expect_v1_log(s, 20, t);
    struct store_write w;
    st_job(&w, 0, 21, 3, 2, 700); /* version 2 after version 1 */
    CHECK(store_write_sync(s, &w) == 0);
    t[20] = t[21] = t[22] = 2;
    expect_v1_log(s, 23, t);
    st_job(&w, 0, 18, 2, 3, 700); /* truncation into the version-1 entries */
    w.truncate_from = 18;
    CHECK(store_write_sync(s, &w) == 0);
    t[17] = t[18] = 3;
    expect_v1_log(s, 19, t);
    CHECK_EQ_U(db_records(s, "payload.db"), 16); /* 1, 3..17: 18-20 went with the truncation */
    store_close(s);
    s = topen(dir);
    expect_v1_log(s, 19, t);
    uint8_t k[8] = {0, 0, 0, 0, 0, 0, 0, 5};
    poke(s, "payload.db", k, 8, 100, 0);
    struct raft_blob *p = NULL;
    CHECK(store_fetch(s, 5, &p) == ERR_CORRUPT && p == NULL);
    poke(s, "payload.db", k, 8, 100, 0);
    st_job(&w, 0, 0, 0, 0, 0); /* compaction past every version-1 payload */
    w.compact_to = 18;
    w.snap_term = 3;
    w.snap_conf = st_conf_blob(18);
    CHECK(store_write_sync(s, &w) == 0);
    CHECK_EQ_U(db_records(s, "payload.db"), 0);
    CHECK(store_fetch(s, 19, &p) == 0 && st_blob_ok(p, 19, 3, 700));
    raft_blob_unref(p);
    store_close(s);
    s = topen(dir); /* payload.db empty: not needed any more */
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0 && b.snapshot_index == 18 && b.n_entries == 1);
    store_boot_free(&b);
    CHECK(store_fetch(s, 19, &p) == 0 && st_blob_ok(p, 19, 3, 700));
    raft_blob_unref(p);
    store_close(s);
    st_rmtree(dir);
}

static void test_bad_dir(void)
{
    const char *dir = tdir();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    struct store *s = (struct store *)1;
    snprintf(path, sizeof path, "%s/file/raft", dir); /* under a regular file */
    CHECK(store_open(path, &s, err, sizeof err) == ERR_IO);
    CHECK(s == NULL && err[0] != 0);
    snprintf(path, sizeof path, "%s/missing/raft", dir);
    err[0] = 0;
    CHECK(store_open(path, &s, err, sizeof err) == ERR_IO && err[0] != 0);
    snprintf(path, sizeof path, "%s/file", dir); /* a file, not a directory */
    err[0] = 0;
    CHECK(store_open(path, &s, err, sizeof err) != 0 && err[0] != 0);
    st_rmtree(dir);
}

static void test_large_entry(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct store_write w;
    st_job(&w, 0, 1, 1, 1, 64u << 20);
    CHECK(store_write_sync(s, &w) == 0);
    put_one(s, 2, 1, RAFT_ENTRY_NORMAL, 10);
    store_close(s);
    s = topen(dir);
    struct raft_blob *p = NULL;
    CHECK(store_fetch(s, 1, &p) == 0);
    CHECK(st_blob_ok(p, 1, 1, 64u << 20));
    raft_blob_unref(p);
    store_close(s);
    st_rmtree(dir);
}

/* ---- the writer ---- */

struct done_log {
    uint64_t seqs[4096];
    int errs[4096];
    size_t n;
};

static void done_cb(void *ctx, uint64_t seq, int err)
{
    struct done_log *d = ctx;
    if (d->n < 4096) {
        d->seqs[d->n] = seq;
        d->errs[d->n] = err;
    }
    d->n++;
}

/* A running writer on its own loop, recording completions in d. */
struct wfix {
    struct ev_loop *loop;
    struct store_writer *wr;
    struct done_log d;
};

static struct wfix *wfix_start(struct store *s)
{
    static struct wfix f; /* done_log is large: keep it off the stack */
    memset(&f, 0, sizeof f);
    f.loop = ev_loop_new(0);
    CHECK(store_writer_start(s, f.loop, done_cb, &f.d, &f.wr) == 0);
    return &f;
}

static void wfix_stop(struct wfix *f)
{
    store_writer_stop(f->wr);
    ev_loop_destroy(f->loop);
}

static int run_until(struct ev_loop *loop, struct done_log *d, size_t n, uint64_t max_us)
{
    uint64_t until = st_now_us() + max_us;
    while (d->n < n && st_now_us() < until)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(200);
    return d->n >= n;
}

static void test_group_commit(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct wfix *f = wfix_start(s);
    for (uint64_t i = 1; i <= 300; i++) {
        struct store_write w;
        st_job(&w, i, i, 1, 1 + i / 100, 1024);
        w.hardstate_changed = (i % 100) == 0;
        w.term = 1 + i / 100;
        w.vote = 2;
        CHECK(store_writer_submit(f->wr, &w) == 0);
        CHECK(w.entries == NULL);
    }
    CHECK(run_until(f->loop, &f->d, 300, 20000000));
    for (size_t i = 0; i < f->d.n && i < 300; i++) {
        CHECK_EQ_U(f->d.seqs[i], i + 1);
        CHECK_EQ_U(f->d.errs[i], 0);
    }
    struct store_stats st;
    store_stats(s, &st);
    CHECK_EQ_U(st.jobs_written, 300);
    CHECK_EQ_U(st.entries_written, 300);
    CHECK_EQ_U(st.bytes_written, 300 * 1024);
    CHECK(st.fsyncs < 300);
    CHECK(st.fsyncs >= 1);
    fprintf(stderr, "  300 jobs in %llu fsyncs\n", (unsigned long long)st.fsyncs);
    uint64_t sum = 0;
    for (size_t i = 0; i <= STORE_FSYNC_BUCKETS; i++)
        sum += st.fsync_hist[i];
    CHECK_EQ_U(sum, st.fsyncs);
    /* Jobs queued right before stop are made durable by stop. */
    for (uint64_t i = 301; i <= 310; i++) {
        struct store_write w;
        st_job(&w, i, i, 1, 4, 1024);
        CHECK(store_writer_submit(f->wr, &w) == 0);
    }
    wfix_stop(f);
    store_close(s);
    s = topen(dir);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, 310);
    CHECK_EQ_U(b.term, 4);
    CHECK_EQ_U(b.vote, 2);
    store_boot_free(&b);
    store_close(s);
    st_rmtree(dir);
}

/* A job handed to an idle writer wakes it at once: jobs submitted one at a time, each after
 * the previous one completed, finish in far less than the writer's idle wake-up (1 s) each. A
 * missed signal would leave every job to that timeout (about 20 s in all). */
static void test_idle_writer_wakes(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct wfix *f = wfix_start(s);
    uint64_t t0 = st_now_us();
    for (uint64_t i = 1; i <= 20; i++) {
        struct store_write w;
        st_job(&w, i, i, 1, 1, 100);
        CHECK(store_writer_submit(f->wr, &w) == 0);
        CHECK(run_until(f->loop, &f->d, i, 5000000));
    }
    uint64_t us = st_now_us() - t0;
    fprintf(stderr, "  20 sequential jobs in %.0f ms\n", (double)us / 1e3);
    CHECK(us < 8000000);
    wfix_stop(f);
    store_close(s);
    st_rmtree(dir);
}

/* Holds the writer inside its transaction (puts done, commit not started) on request. */
struct hold {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, inside, released, fail_at, calls;
};

static int hold_hook(void *ctx)
{
    struct hold *h = ctx;
    pthread_mutex_lock(&h->mu);
    h->calls++;
    int fail = h->fail_at && h->calls >= h->fail_at;
    if (h->armed) {
        h->inside = 1;
        pthread_cond_broadcast(&h->cv);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3; /* bounded: a stuck fetch shows up as a slow one, not a hang */
        while (!h->released && pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0)
            ;
        h->armed = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return fail ? EIO : 0;
}

static void test_fetch_while_writing(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct hold h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    store_set_commit_hook(s, hold_hook, &h);
    struct wfix *f = wfix_start(s);
    struct store_write w;
    st_job(&w, 1, 1, 50, 1, 700);
    CHECK(store_writer_submit(f->wr, &w) == 0);
    CHECK(run_until(f->loop, &f->d, 1, 10000000));
    pthread_mutex_lock(&h.mu);
    h.armed = 1;
    pthread_mutex_unlock(&h.mu);
    /* Same leaf pages as the durable entries, with a truncation (deletes) too. */
    st_job(&w, 2, 46, 10, 2, 700);
    w.truncate_from = 46;
    w.hardstate_changed = true;
    w.term = 2;
    CHECK(store_writer_submit(f->wr, &w) == 0);
    uint64_t until = st_now_us() + 5000000;
    for (int in = 0; !in && st_now_us() < until; usleep(100)) {
        pthread_mutex_lock(&h.mu);
        in = h.inside;
        pthread_mutex_unlock(&h.mu);
    }
    CHECK(h.inside);
    uint64_t t0 = st_now_us();
    for (raft_index i = 1; i <= 45; i++) {
        struct raft_blob *p = NULL;
        CHECK(store_fetch(s, i, &p) == 0);
        CHECK(st_blob_ok(p, i, 1, 700));
        raft_blob_unref(p);
    }
    st_job(&w, 3, 56, 1, 2, 700); /* queuing never waits for the disk or the writer */
    CHECK(store_writer_submit(f->wr, &w) == 0);
    uint64_t took = st_now_us() - t0;
    fprintf(stderr, "  45 fetches + 1 submit during an open write txn: %llu us\n",
            (unsigned long long)took);
    CHECK(took < 1000000); /* the writer holds for 3 s: a blocked fetch would take that */
    pthread_mutex_lock(&h.mu);
    h.released = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    CHECK(run_until(f->loop, &f->d, 3, 10000000));
    CHECK(f->d.errs[1] == 0 && f->d.errs[2] == 0);
    wfix_stop(f);
    store_close(s);
    st_rmtree(dir);
}

static void test_sticky_failure(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct hold h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    h.fail_at = 2;
    store_set_commit_hook(s, hold_hook, &h);
    struct wfix *f = wfix_start(s);
    struct store_write w;
    st_job(&w, 1, 1, 2, 1, 10);
    CHECK(store_writer_submit(f->wr, &w) == 0);
    CHECK(run_until(f->loop, &f->d, 1, 10000000));
    for (uint64_t i = 2; i <= 5; i++) {
        st_job(&w, i, i + 1, 1, 1, 10);
        CHECK(store_writer_submit(f->wr, &w) == 0);
        CHECK(run_until(f->loop, &f->d, i, 10000000));
    }
    CHECK_EQ_U(f->d.n, 5);
    CHECK(f->d.errs[0] == 0);
    for (size_t i = 1; i < 5; i++)
        CHECK(f->d.errs[i] == ERR_IO && f->d.seqs[i] == i + 1);
    wfix_stop(f);
    store_set_commit_hook(s, NULL, NULL);
    struct raft_boot b;
    CHECK(store_load(s, &b) == 0);
    CHECK_EQ_U(b.n_entries, 2); /* the failed batch left nothing behind */
    store_boot_free(&b);
    store_close(s);
    st_rmtree(dir);
}

/* The file store's pattern: its own DB in the env, small NOSYNC txns on the loop thread,
 * while the writer commits. Nothing may deadlock or fail. */
static void test_shared_env(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    DB *db = NULL;
    CHECK(db_create(&db, store_env(s), 0) == 0);
    CHECK(db->open(db, NULL, "other.db", NULL, DB_BTREE, DB_CREATE | DB_AUTO_COMMIT | DB_THREAD,
                   0600) == 0);
    struct wfix *f = wfix_start(s);
    int bad = 0;
    for (uint64_t i = 1; i <= 200; i++) {
        struct store_write w;
        st_job(&w, i, i, 1, 1, 512);
        CHECK(store_writer_submit(f->wr, &w) == 0);
        DB_TXN *txn = NULL;
        uint8_t k[8] = {(uint8_t)i, (uint8_t)(i >> 8)};
        DBT key = {.data = k, .size = 8}, val = {.data = k, .size = 8};
        if (store_env(s)->txn_begin(store_env(s), NULL, &txn, 0) ||
            db->put(db, txn, &key, &val, 0) || txn->commit(txn, DB_TXN_NOSYNC))
            bad++;
        ev_run(f->loop, EVRUN_NOWAIT);
    }
    CHECK(bad == 0);
    CHECK(run_until(f->loop, &f->d, 200, 20000000));
    wfix_stop(f);
    db->close(db, 0);
    store_close(s);
    st_rmtree(dir);
}

/* BDB's own sleeps (a whole second between checkpoint passes over busy buffers) are cut to
 * at most 10 ms; shorter ones and plain yields are kept. */
static void test_yield_capped(void)
{
    CHECK_EQ_U(store_yield_us(1, 0), 10000);
    CHECK_EQ_U(store_yield_us(0, 5000000), 10000); /* not normalised by BDB */
    CHECK_EQ_U(store_yield_us(0, 2500), 2500);
    CHECK_EQ_U(store_yield_us(0, 0), 0);
}

/* Longer than one trim chunk: cut in several transactions ahead of the batch, through the
 * writer, with a truncating job queued between two appends. */
static void test_long_truncation(void)
{
    const char *dir = tdir();
    struct store *s = topen(dir);
    struct store_write w;
    st_job(&w, 0, 1, 5000, 1, 64);
    CHECK(store_write_sync(s, &w) == 0);
    struct wfix *f = wfix_start(s);
    st_job(&w, 1, 5001, 2, 1, 64);
    CHECK(store_writer_submit(f->wr, &w) == 0);
    st_job(&w, 2, 11, 2, 2, 64);
    w.truncate_from = 11;
    CHECK(store_writer_submit(f->wr, &w) == 0);
    st_job(&w, 3, 13, 1, 2, 64);
    CHECK(store_writer_submit(f->wr, &w) == 0);
    CHECK(run_until(f->loop, &f->d, 3, 30000000));
    for (size_t i = 0; i < 3; i++)
        CHECK(f->d.errs[i] == 0 && f->d.seqs[i] == i + 1);
    wfix_stop(f);
    raft_term terms[13] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2};
    expect_log(s, 13, terms);
    store_close(s);
    st_rmtree(dir);
}

int main(void)
{
    RUN(test_roundtrip);
    RUN(test_truncate_append);
    RUN(test_long_truncation);
    RUN(test_hardstate);
    RUN(test_corruption);
    RUN(test_corrupt_segment);
    RUN(test_torn_last_batch);
    RUN(test_v1_store);
    RUN(test_bad_dir);
    RUN(test_large_entry);
    RUN(test_group_commit);
    RUN(test_idle_writer_wakes);
    RUN(test_fetch_while_writing);
    RUN(test_sticky_failure);
    RUN(test_shared_env);
    RUN(test_yield_capped);
    return check_report();
}
