/* test_fsm_snap.c — snapshots of the file store: stream round trip, fuzzy streams while the
 * sender applies (property test over seeds, with a restart during the window replay), hostile
 * and corrupt streams, crash at every install step, bounded memory, API misuse. */
#include <dirent.h>
#include <sys/wait.h>

#include <zlib.h>

#include "fsm_tenv.h"
/* Internal: the writer's state (spares_used, hasher). */
#include "../../../src/fsm/fsm_snap_int.h"

#define TERM 7
static const char CONF_BYTES[] = "configuration-as-of-S";

static struct raft_blob *conf_blob(void)
{
    struct raft_blob *b = raft_blob_new(sizeof CONF_BYTES - 1);
    memcpy(b->data, CONF_BYTES, sizeof CONF_BYTES - 1);
    return b;
}

/* ---- Streaming helpers ---------------------------------------------------------------------- */

/* Feeds data to w in random pieces; the first error. */
static int feed(struct fsm_snap_writer *w, const uint8_t *data, size_t len, uint64_t *rng)
{
    while (len > 0) {
        size_t n = 1 + rng_next(rng) % (rng_next(rng) % 4 == 0 ? 16 : 300000);
        if (n > len) n = len;
        int rv = fsm_snap_writer_put(w, data, n);
        if (rv) return rv;
        data += n;
        len -= n;
    }
    return 0;
}

/* The whole stream of a (as of its applied index) into memory. */
static uint8_t *stream_bytes(struct fsm *a, size_t *len)
{
    struct raft_blob *conf = conf_blob();
    struct fsm_snap_reader *r = NULL;
    CHECK_EQ_U(fsm_snap_reader_open(a, fsm_applied(a), TERM, conf, &r), 0);
    raft_blob_unref(conf);
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    bool done = false;
    while (r && !done) {
        if (cap - n < 65536) buf = realloc(buf, cap *= 2);
        size_t got = 0;
        int rv = fsm_snap_reader_next(r, buf + n, 65536, &got, &done);
        CHECK_EQ_U(rv, 0);
        if (rv) break;
        n += got;
    }
    fsm_snap_reader_close(r);
    *len = n;
    return buf;
}

/* Streams a into a new writer of b with random reader caps and writer chunks; between reader
 * calls, step(ctx) may apply more to a. Returns the writer, finished into *meta. */
static struct fsm_snap_writer *stream_to(struct fsm *a, struct fsm *b, uint64_t *rng,
                                         void (*step)(void *ctx), void *ctx,
                                         struct fsm_snap_meta *meta)
{
    struct raft_blob *conf = conf_blob();
    struct fsm_snap_reader *r = NULL;
    struct fsm_snap_writer *w = NULL;
    CHECK_EQ_U(fsm_snap_reader_open(a, fsm_applied(a), TERM, conf, &r), 0);
    CHECK_EQ_U(fsm_snap_writer_open(b, &w), 0);
    raft_blob_unref(conf);
    static uint8_t buf[600000];
    bool done = false;
    while (r && w && !done) {
        if (step) step(ctx);
        static const size_t caps[] = {64, 4096, 65536, sizeof buf - 1};
        size_t cap = 1 + rng_next(rng) % caps[rng_next(rng) % 4], len = 0;
        int rv = fsm_snap_reader_next(r, buf, cap, &len, &done);
        CHECK_EQ_U(rv, 0);
        if (rv) break;
        CHECK(len <= cap);
        CHECK_EQ_U(feed(w, buf, len, rng), 0);
    }
    fsm_snap_reader_close(r);
    CHECK_EQ_U(fsm_snap_writer_finish(w, meta), 0);
    return w;
}

static bool same_result(const struct fsm_result *a, const struct fsm_result *b)
{
    return a->status == b->status && a->created == b->created && a->duplicate == b->duplicate &&
           a->size == b->size && a->index == b->index && memcmp(a->sha256, b->sha256, 32) == 0;
}

static void check_same_state(struct tenv *a, struct tenv *b)
{
    char *sa = dump_state(a), *sb = dump_state(b);
    bool same = strcmp(sa, sb) == 0;
    if (!same) fprintf(stderr, "--- sender:\n%s--- receiver:\n%s", sa, sb);
    CHECK(same);
    free(sa);
    free(sb);
}

/* ---- Round trip ------------------------------------------------------------------------------ */

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next(&seed);
}

/* A store with every kind of file: big (3 MiB), empty, nested, the longest path, odd names. */
static raft_index populate(struct fsm *f, raft_index i)
{
    size_t big = 3u << 20;
    uint8_t *body = malloc(big);
    fill(body, big, 42);
    struct raft_entry e = mk_entry(++i, 1000, "big/three-mib", body, big, false);
    CHECK_EQ_U(apply_entry(f, &e, NULL), 0);
    raft_blob_unref(e.data);
    free(body);
    char path[4097];
    for (size_t k = 0; k < 4096; k++)
        path[k] = (k % 201 == 200) ? '/' : 'q';
    path[4096] = '\0';
    CHECK_EQ_U(put(f, ++i, 1001, path, "deep"), 0);
    CHECK_EQ_U(put(f, ++i, 1002, "empty", ""), 0);
    CHECK_EQ_U(put(f, ++i, 1003, "sp ace/new\nline/\xc3\xa9", "odd"), 0);
    char p[64];
    for (unsigned k = 0; k < 300; k++) {
        snprintf(p, sizeof p, "d%u/e%u/f%u", k % 5, k % 11, k);
        CHECK_EQ_U(put(f, ++i, 2000 + k, p, p), 0);
    }
    CHECK_EQ_U(del(f, ++i, 1004, "d0/e0/f0"), 0);
    CHECK_EQ_U(del(f, ++i, 1005, "absent"), 0);
    CHECK_EQ_U(noop(f, ++i), 0);
    return i;
}

static void test_snap_round_trip(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    raft_index s = populate(a.f, 0);
    /* B has a history of its own, which the install replaces entirely. */
    CHECK_EQ_U(put(b.f, 1, 1, "old/only-in-b", "old"), 0);
    CHECK_EQ_U(put(b.f, 2, 2, "d1/e1/f1", "stale"), 0);
    uint64_t rng = 7;
    struct fsm_snap_meta m;
    struct fsm_snap_writer *w = stream_to(a.f, b.f, &rng, NULL, NULL, &m);
    CHECK_EQ_U(m.index, s);
    CHECK_EQ_U(m.index_end, s);
    CHECK_EQ_U(m.term, TERM);
    CHECK(m.conf && m.conf->len == sizeof CONF_BYTES - 1 &&
          !memcmp(m.conf->data, CONF_BYTES, m.conf->len));
    raft_blob_unref(m.conf);
    CHECK(!path_exists(&b, "files/big")); /* nothing of files/ changes before the install */
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    CHECK_EQ_U(fsm_applied(b.f), s);
    CHECK_EQ_U(fsm_checkpointed(b.f), s);
    check_same_state(&a, &b);
    /* The 4096-byte path (beyond what one *at() call takes) arrived too. */
    char deep[4097];
    for (size_t k = 0; k < 4096; k++)
        deep[k] = (k % 201 == 200) ? '/' : 'q';
    deep[4096] = '\0';
    int fd = -1;
    struct fsm_meta dm;
    char got[8] = "";
    CHECK_EQ_U(fsm_open_read(b.f, deep, &fd, &dm), 0);
    CHECK(fd >= 0 && pread(fd, got, sizeof got, 0) == 4 && !memcmp(got, "deep", 4));
    if (fd >= 0) close(fd);
    struct fsm_snap_meta info;
    CHECK_EQ_U(fsm_snap_info(b.f, &info), 0);
    CHECK_EQ_U(info.index, s);
    CHECK_EQ_U(info.term, TERM);
    CHECK(info.conf && info.conf->len == sizeof CONF_BYTES - 1);
    raft_blob_unref(info.conf);
    CHECK_EQ_U(fsm_snap_info(a.f, &info), ERR_NOTFOUND);
    /* The dedup table came along: a retry of one of A's requests is a duplicate on B. */
    struct raft_entry e = mk_entry(s + 1, 2005, "d5/e5/f5", (const uint8_t *)"x", 1, false);
    struct fsm_result ra, rb;
    CHECK_EQ_U(apply_entry(a.f, &e, &ra), 0);
    CHECK_EQ_U(apply_entry(b.f, &e, &rb), 0);
    raft_blob_unref(e.data);
    CHECK(rb.duplicate && same_result(&ra, &rb));
    /* Both go on alike, also across a restart of B. */
    CHECK_EQ_U(put(a.f, s + 2, 9, "big/three-mib", "small"), 0);
    CHECK_EQ_U(put(b.f, s + 2, 9, "big/three-mib", "small"), 0);
    t_close(&b);
    t_open(&b);
    CHECK_EQ_U(fsm_applied(b.f), s);
    CHECK_EQ_U(fsm_snap_info(b.f, &info), 0);
    CHECK_EQ_U(info.index, s);
    raft_blob_unref(info.conf);
    for (raft_index i = s + 1; i <= s + 2; i++) {
        e = i == s + 1 ? mk_entry(i, 2005, "d5/e5/f5", (const uint8_t *)"x", 1, false)
                       : mk_entry(i, 9, "big/three-mib", (const uint8_t *)"small", 5, false);
        CHECK_EQ_U(apply_entry(b.f, &e, NULL), 0);
        raft_blob_unref(e.data);
    }
    check_same_state(&a, &b);
    /* The replaced tree and the staging area are cleaned (trash by a thread: poll). */
    double deadline = now_s() + 20;
    while (count_dir(&b, "trash") > 0 && now_s() < deadline)
        usleep(1000);
    CHECK_EQ_U(count_dir(&b, "trash"), 0);
    CHECK(!path_exists(&b, "raft/snap-in"));
    t_fini(&a);
    t_fini(&b);
}

/* Staged files are spares made ahead by the writer's thread, renamed into place (never over a
 * name, into directories made on the way): the install is exactly the sender's state, and
 * nothing of the spares shows in it. */
static void test_snap_spares(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    populate(a.f, 0);
    size_t len;
    uint8_t *stream = stream_bytes(a.f, &len);
    struct fsm_snap_writer *w = NULL;
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    /* All FSS_SPARES made (the thread makes them in order): poll with a deadline. */
    char last[64];
    snprintf(last, sizeof last, "raft/snap-in/s%d/spare-%d", FSS_SPARES - 1, FSS_SPARES - 1);
    double deadline = now_s() + 20;
    while (!path_exists(&b, last) && now_s() < deadline)
        usleep(1000);
    CHECK(path_exists(&b, last));
    uint64_t rng = 3;
    CHECK_EQ_U(feed(w, stream, len, &rng), 0);
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK(w->spares_used >= FSS_SPARES);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    check_same_state(&a, &b);
    free(stream);
    t_fini(&a);
    t_fini(&b);
}

/* ---- Fuzzy streams: the property test ---------------------------------------------------------
 */

#define LOG_MAX 4096

struct fuzzy {
    struct tenv *a;
    uint64_t rng;
    struct raft_entry log[LOG_MAX + 1]; /* log[i]: entry i */
    struct fsm_result res[LOG_MAX + 1];
    raft_index last;
    unsigned next_rid;
    int step_pct; /* chance that a stream step first applies entries to A */
};

static const char *const fz_paths[] = {"a",   "a/b", "a/c",   "a/b/c", "b",   "c/d/e",
                                       "c/d", "c",   "x/y/z", "x",     "x/y", "big"};

static void fz_path(struct fuzzy *z, char *out, size_t cap)
{
    uint64_t r = rng_next(&z->rng) % 32;
    if (r < sizeof fz_paths / sizeof fz_paths[0])
        snprintf(out, cap, "%s", fz_paths[r]);
    else
        snprintf(out, cap, "f%u/g%u", (unsigned)(r % 4), (unsigned)r);
}

/* The next entry: mostly PUTs (some big), DELETEs, NOOPs, retries of recent requests. */
static void fz_entry(struct fuzzy *z, raft_index i, struct raft_entry *e)
{
    uint64_t r = rng_next(&z->rng) % 100;
    char path[64];
    fz_path(z, path, sizeof path);
    if (r < 5) {
        *e = (struct raft_entry){.term = 1, .index = i, .type = RAFT_ENTRY_NOOP};
    } else if (r < 15 && i > 2) { /* a client retry: the same command again */
        raft_index j = i - 1 - rng_next(&z->rng) % (i - 1 < 20 ? i - 1 : 20);
        *e = z->log[j];
        e->index = i;
        e->data = raft_blob_ref(e->data);
    } else if (r < 35) {
        *e = mk_entry(i, z->next_rid++, path, NULL, 0, true);
    } else {
        size_t len = rng_next(&z->rng) % 100;
        if (r > 95) len = 200000 + rng_next(&z->rng) % 400000; /* several DATA records */
        if (r > 97) snprintf(path, sizeof path, "big");
        uint8_t *body = malloc(len + 1);
        fill(body, len, rng_next(&z->rng));
        *e = mk_entry(i, z->next_rid++, path, body, len, false);
        free(body);
    }
}

static void fz_apply(struct fuzzy *z, unsigned n)
{
    for (unsigned k = 0; k < n && z->last < LOG_MAX; k++) {
        raft_index i = ++z->last;
        fz_entry(z, i, &z->log[i]);
        CHECK_EQ_U(apply_entry(z->a->f, &z->log[i], &z->res[i]), 0);
    }
}

static void fz_step(void *ctx)
{
    struct fuzzy *z = ctx;
    if ((int)(rng_next(&z->rng) % 100) < z->step_pct) fz_apply(z, 1 + rng_next(&z->rng) % 4);
}

/* Applies log entries from..to to b, checking each outcome against the sender's. */
static void fz_replay(struct fuzzy *z, struct tenv *b, raft_index from, raft_index to)
{
    for (raft_index i = from; i <= to; i++) {
        struct fsm_result r;
        CHECK_EQ_U(apply_entry(b->f, &z->log[i], &r), 0);
        if (!same_result(&r, &z->res[i])) {
            fprintf(stderr, "entry %llu: outcome differs (status %d/%d dup %d/%d idx %llu/%llu)\n",
                    (unsigned long long)i, r.status, z->res[i].status, r.duplicate,
                    z->res[i].duplicate, (unsigned long long)r.index,
                    (unsigned long long)z->res[i].index);
            CHECK(false);
        }
    }
}

static void fz_run(uint64_t seed)
{
    struct fuzzy *z = calloc(1, sizeof *z);
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    z->a = &a;
    z->rng = seed * 0x9e3779b97f4a7c15ull + 1;
    z->next_rid = 1;
    z->step_pct = 20 + (int)(rng_next(&z->rng) % 70);
    fz_apply(z, 20 + rng_next(&z->rng) % 60);
    raft_index s = z->last;
    CHECK_EQ_U(put(b.f, 1, 99999, "a/b", "b's own"), 0);
    struct fsm_snap_meta m;
    struct fsm_snap_writer *w = stream_to(a.f, b.f, &z->rng, fz_step, z, &m);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(m.index, s);
    CHECK(m.index_end >= s && m.index_end <= z->last);
    fz_apply(z, rng_next(&z->rng) % 30);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    if (m.index_end > s) { /* B's files may be ahead of S until the window is replayed */
        struct fsm_snap_reader *r = NULL;
        CHECK_EQ_U(fsm_snap_reader_open(b.f, s, TERM, NULL, &r), ERR_BUSY);
    }
    raft_index mid = s + (z->last - s) / 2;
    if (seed % 4 == 1) {
        /* A restart in the middle of the window replay: C is still S (no checkpoint), so the
         * replay starts over at S+1, redoing entries <= A and the window rule beyond. */
        fz_replay(z, &b, s + 1, mid);
        t_close(&b);
        t_open(&b);
        CHECK_EQ_U(fsm_applied(b.f), s);
    } else if (seed % 4 == 3) {
        /* A crash that loses BDB's unsynced commits after the install (files/ ahead of the
         * metadata): the window replay runs again over files it already wrote. */
        char cmd[600];
        t_close(&b);
        snprintf(cmd, sizeof cmd, "cp -a %s %s.bak", b.env_dir, b.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&b);
        fz_replay(z, &b, s + 1, mid);
        t_close(&b);
        snprintf(cmd, sizeof cmd, "rm -rf %s && mv %s.bak %s", b.env_dir, b.env_dir, b.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&b);
        CHECK_EQ_U(fsm_applied(b.f), s);
    }
    fz_replay(z, &b, s + 1, z->last);
    CHECK_EQ_U(fsm_applied(b.f), fsm_applied(a.f));
    check_same_state(&a, &b);
    for (raft_index i = 1; i <= z->last; i++)
        raft_blob_unref(z->log[i].data);
    t_fini(&a);
    t_fini(&b);
    free(z);
}

static void test_snap_fuzzy_property(void)
{
    for (uint64_t seed = 1; seed <= 32; seed++) {
        int before = check_failures;
        fz_run(seed);
        if (check_failures != before)
            fprintf(stderr, "  ... with seed %llu\n", (unsigned long long)seed);
    }
}

/* A dedup record that an entry of the window duplicates is kept at the sender while the
 * stream runs, even when pruning would drop it: else the receiver would apply the retry. */
static void test_snap_dedup_kept_for_window(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    const raft_index W = FSM_DEDUP_WINDOW;
    struct raft_entry orig = mk_entry(5, 1, "p", (const uint8_t *)"original", 8, false);
    CHECK_EQ_U(apply_entry(a.f, &orig, NULL), 0);
    CHECK_EQ_U(noop(a.f, W + 2), 0);
    struct raft_blob *conf = conf_blob();
    struct fsm_snap_reader *r;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_reader_open(a.f, W + 2, TERM, conf, &r), 0);
    raft_blob_unref(conf);
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    static uint8_t buf[4096];
    size_t len;
    bool done;
    /* Header and the file "p" (as of entry 5) first: HDR 9+32+21, FILE 9+51, DATA 9+8. */
    CHECK_EQ_U(fsm_snap_reader_next(r, buf, 62 + 60 + 17, &len, &done), 0);
    CHECK_EQ_U(len, 62 + 60 + 17);
    CHECK(!done);
    CHECK_EQ_U(fsm_snap_writer_put(w, buf, len), 0);
    /* Then the retry of request 1 (a duplicate) and an apply that prunes old records. */
    struct raft_entry log[8];
    struct fsm_result res[8];
    log[4] = orig;
    log[4].index = W + 4;
    log[7] = mk_entry(W + 7, 2, "q", (const uint8_t *)"q", 1, false);
    CHECK_EQ_U(apply_entry(a.f, &log[4], &res[4]), 0);
    CHECK(res[4].duplicate);
    CHECK_EQ_U(apply_entry(a.f, &log[7], &res[7]), 0);
    while (!done) {
        CHECK_EQ_U(fsm_snap_reader_next(r, buf, sizeof buf, &len, &done), 0);
        CHECK_EQ_U(fsm_snap_writer_put(w, buf, len), 0);
    }
    fsm_snap_reader_close(r);
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    CHECK_EQ_U(m.index_end, W + 7);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    for (raft_index i = W + 3; i <= W + 7; i++) {
        struct fsm_result rb;
        if (i == W + 4 || i == W + 7) {
            CHECK_EQ_U(apply_entry(b.f, &log[i - W], &rb), 0);
            CHECK(same_result(&rb, &res[i - W]));
        } else {
            CHECK_EQ_U(noop(b.f, i), 0);
        }
    }
    check_same_state(&a, &b);
    raft_blob_unref(orig.data);
    raft_blob_unref(log[7].data);
    t_fini(&a);
    t_fini(&b);
}

/* Window cases the random runs rarely meet, each with a stream whose file part is read at a
 * chosen moment: the sender's failed outcome replayed (a PUT refused for a conflict that the
 * copy no longer shows), a copy holding two conflicting paths, a DELETE of a path the copy
 * caught before it was re-created. */
static void window_case(int which)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    struct raft_entry log[8] = {0};
    struct fsm_result res[8];
    raft_index s = 1, last = 0;
    log[1] = mk_entry(1, 1, "a", (const uint8_t *)"file a", 6, false);
    if (which == 0) { /* 2: PUT a/b refused (a is a file), 3: DELETE a */
        log[2] = mk_entry(2, 2, "a/b", (const uint8_t *)"b", 1, false);
        log[3] = mk_entry(3, 3, "a", NULL, 0, true);
        last = 3;
    } else if (which == 1) { /* 2: DELETE a, 3: PUT a/b; the copy holds a (1) and a/b (3) */
        log[2] = mk_entry(2, 2, "a", NULL, 0, true);
        log[3] = mk_entry(3, 3, "a/b", (const uint8_t *)"b", 1, false);
        last = 3;
    } else { /* 2: DELETE a, 3: PUT a again, 4: PUT z; the copy holds a (3) */
        log[2] = mk_entry(2, 2, "a", NULL, 0, true);
        log[3] = mk_entry(3, 3, "a", (const uint8_t *)"new a", 5, false);
        log[4] = mk_entry(4, 4, "z", (const uint8_t *)"z", 1, false);
        last = 4;
    }
    CHECK_EQ_U(apply_entry(a.f, &log[1], &res[1]), 0);
    struct fsm_snap_reader *r;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_reader_open(a.f, s, TERM, NULL, &r), 0);
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    static uint8_t buf[1 << 16];
    size_t len;
    bool done = false;
    /* Case 1 reads the header and "a" before the entries, the others read nothing yet. */
    CHECK_EQ_U(fsm_snap_reader_next(r, buf, which == 1 ? 41 + 60 + 15 : 41, &len, &done), 0);
    CHECK_EQ_U(fsm_snap_writer_put(w, buf, len), 0);
    for (raft_index i = 2; i <= last; i++)
        CHECK_EQ_U(apply_entry(a.f, &log[i], &res[i]), 0);
    while (!done) {
        CHECK_EQ_U(fsm_snap_reader_next(r, buf, sizeof buf, &len, &done), 0);
        CHECK_EQ_U(fsm_snap_writer_put(w, buf, len), 0);
    }
    fsm_snap_reader_close(r);
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    CHECK_EQ_U(m.index_end, last);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    char fa[128];
    snprintf(fa, sizeof fa, "%s/files/a", b.dir);
    struct stat st0, st1;
    CHECK(which != 2 || stat(fa, &st0) == 0);
    for (raft_index i = 2; i <= last; i++) {
        struct fsm_result rb;
        CHECK_EQ_U(apply_entry(b.f, &log[i], &rb), 0);
        CHECK(same_result(&rb, &res[i]));
    }
    /* The path rule: the copy holds "a" as of entry 3, so 2 and 3 do not touch it again. */
    CHECK(which != 2 ||
          (stat(fa, &st1) == 0 && st1.st_ino == st0.st_ino &&
           st1.st_ctim.tv_sec == st0.st_ctim.tv_sec && st1.st_ctim.tv_nsec == st0.st_ctim.tv_nsec));
    check_same_state(&a, &b);
    for (raft_index i = 1; i <= last; i++)
        raft_blob_unref(log[i].data);
    t_fini(&a);
    t_fini(&b);
}

static void test_snap_window_cases(void)
{
    for (int k = 0; k < 3; k++)
        window_case(k);
}

/* ---- Hostile and corrupt streams ---------------------------------------------------------------
 */

/* Builds streams record by record with valid framing (so the writer's checks behind the CRC
 * are what is tested). */
struct sb {
    uint8_t buf[1 << 16];
    size_t len;
    uint64_t seq;
};

/* Record `seq` (type, payload) at dst: its length. */
static size_t rec_put(uint8_t *dst, uint64_t seq, uint8_t type, const void *payload, size_t len)
{
    uint8_t *h = dst, s[8];
    h[0] = (uint8_t)(len >> 24), h[1] = (uint8_t)(len >> 16), h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len, h[4] = type;
    memcpy(h + 5, payload, len);
    for (int i = 0; i < 8; i++)
        s[i] = (uint8_t)(seq >> (56 - 8 * i));
    /* Format version 2: a DATA record's CRC leaves its content out (the SHA-256 checks it). */
    uLong c = crc32(crc32(crc32(0L, Z_NULL, 0), s, 8), h, (uInt)(type == 3 ? 5 : 5 + len));
    uint8_t *t = h + 5 + len;
    t[0] = (uint8_t)(c >> 24), t[1] = (uint8_t)(c >> 16), t[2] = (uint8_t)(c >> 8),
    t[3] = (uint8_t)c;
    return 9 + len;
}

static void sb_rec(struct sb *b, uint8_t type, const void *payload, size_t len)
{
    b->len += rec_put(b->buf + b->len, b->seq++, type, payload, len);
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void sb_hdr(struct sb *b, uint64_t s)
{
    uint8_t p[32] = "raftfsnp";
    p[11] = 2; /* format version */
    be64(p + 12, s);
    be64(p + 20, TERM);
    sb_rec(b, 1, p, 32);
}

/* A FILE record and the DATA of body; the SHA-256 is of sha_of (NULL: body). */
static void sb_file(struct sb *b, uint64_t index, const char *path, const char *body,
                    const char *sha_of, uint64_t size_override)
{
    uint8_t p[4200];
    size_t plen = strlen(path), blen = strlen(body);
    be64(p, index);
    be64(p + 8, size_override ? size_override : blen);
    sha_of = sha_of ? sha_of : body;
    EVP_Digest(sha_of, strlen(sha_of), p + 16, NULL, EVP_sha256(), NULL);
    p[48] = (uint8_t)(plen >> 8), p[49] = (uint8_t)plen;
    memcpy(p + 50, path, plen);
    sb_rec(b, 2, p, 50 + plen);
    if (blen) sb_rec(b, 3, body, blen);
}

static void sb_end(struct sb *b, uint64_t s_end, uint64_t files, uint64_t dedup, uint64_t bytes)
{
    uint8_t p[32];
    be64(p, s_end), be64(p + 8, files), be64(p + 16, dedup), be64(p + 24, bytes);
    sb_rec(b, 5, p, 32);
}

/* Feeds a stream to a new writer of t, in random pieces: the result of put/finish. The store
 * and its files/ must stay untouched. */
static int try_stream_why(struct tenv *t, const uint8_t *data, size_t len, uint64_t seed, char *why,
                          size_t why_cap)
{
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
    uint64_t rng = seed;
    int rv = feed(w, data, len, &rng);
    struct fsm_snap_meta m;
    if (rv == 0) rv = fsm_snap_writer_finish(w, &m);
    if (rv == 0) raft_blob_unref(m.conf);
    if (why) snprintf(why, why_cap, "%s", w->why);
    if (rv)
        CHECK_EQ_U(fsm_snap_install(t->f, w), ERR_INVALID); /* refused, and consumed */
    else
        fsm_snap_writer_abort(w);
    return rv;
}

static int try_stream(struct tenv *t, const uint8_t *data, size_t len, uint64_t seed)
{
    return try_stream_why(t, data, len, seed, NULL, 0);
}

/* DATA records of any length at any offset (another sender may cut files differently): the
 * writer's O_DIRECT writes need whole aligned blocks, so unaligned records, tails and
 * offsets take the buffered path; the content must come out exactly. */
static void test_snap_odd_records(void)
{
    struct tenv t;
    t_init(&t);
    struct sb *b = calloc(1, sizeof *b);
    static char one[8192 + 1000 + 8192 + 1], two[12288 + 5 + 1];
    fill((uint8_t *)one, sizeof one - 1, 3);
    fill((uint8_t *)two, sizeof two - 1, 4);
    for (size_t i = 0; i < sizeof one - 1; i++)
        one[i] = (char)('a' + (uint8_t)one[i] % 26); /* sb_file-style strings: no NUL */
    for (size_t i = 0; i < sizeof two - 1; i++)
        two[i] = (char)('a' + (uint8_t)two[i] % 26);
    /* "one": aligned 8 KiB, 1000 bytes, then 8 KiB at an unaligned offset. */
    static const size_t cuts_one[] = {8192, 1000, 8192}, cuts_two[] = {12288, 5};
    const struct {
        const char *path, *body;
        const size_t *cuts;
        size_t n;
    } files[] = {{"one", one, cuts_one, 3}, {"two", two, cuts_two, 2}};
    sb_hdr(b, 10);
    uint64_t bytes = 0;
    for (size_t k = 0; k < 2; k++) {
        uint8_t p[64];
        size_t blen = strlen(files[k].body);
        be64(p, 3 + k);
        be64(p + 8, blen);
        EVP_Digest(files[k].body, blen, p + 16, NULL, EVP_sha256(), NULL);
        p[48] = 0, p[49] = 3;
        memcpy(p + 50, files[k].path, 3);
        sb_rec(b, 2, p, 53);
        for (size_t c = 0, off = 0; c < files[k].n; off += files[k].cuts[c++])
            sb_rec(b, 3, files[k].body + off, files[k].cuts[c]);
        bytes += blen;
    }
    sb_end(b, 10, 2, 0, bytes);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        struct fsm_snap_writer *w;
        CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
        uint64_t rng = seed;
        CHECK_EQ_U(feed(w, b->buf, b->len, &rng), 0);
        struct fsm_snap_meta m;
        CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
        raft_blob_unref(m.conf);
        if (seed < 3) {
            fsm_snap_writer_abort(w);
            continue;
        }
        CHECK_EQ_U(fsm_snap_install(t.f, w), 0);
    }
    for (size_t k = 0; k < 2; k++) {
        size_t blen = strlen(files[k].body);
        char *got = calloc(1, blen + 1);
        int fd = -1;
        struct fsm_meta fm;
        CHECK_EQ_U(fsm_open_read(t.f, files[k].path, &fd, &fm), 0);
        CHECK(fd >= 0 && pread(fd, got, blen + 1, 0) == (ssize_t)blen);
        CHECK(memcmp(got, files[k].body, blen) == 0);
        if (fd >= 0) close(fd);
        free(got);
    }
    free(b);
    t_close(&t);
}

static void test_snap_hostile_streams(void)
{
    struct tenv t;
    t_init(&t);
    CHECK_EQ_U(put(t.f, 1, 1, "mine", "keep me"), 0);
    char *before = dump_state(&t);
    struct sb *b = calloc(1, sizeof *b);
    const char *bad_paths[] = {"../x", "/etc/passwd", "a/../../x", "a//b", "a/", ".", "", "a/./b"};
    for (size_t k = 0; k < sizeof bad_paths / sizeof bad_paths[0]; k++) {
        memset(b, 0, sizeof *b);
        sb_hdr(b, 10);
        sb_file(b, 3, bad_paths[k], "evil", NULL, 0);
        sb_end(b, 10, 1, 0, 4);
        CHECK_EQ_U(try_stream(&t, b->buf, b->len, k), ERR_CORRUPT);
    }
    /* A NUL inside a path. */
    memset(b, 0, sizeof *b);
    sb_hdr(b, 10);
    uint8_t p[64] = {0};
    be64(p, 3);
    EVP_Digest("", 0, p + 16, NULL, EVP_sha256(), NULL);
    p[49] = 3;
    memcpy(p + 50, "a\0b", 3);
    sb_rec(b, 2, p, 53);
    CHECK_EQ_U(try_stream(&t, b->buf, b->len, 1), ERR_CORRUPT);
    /* A valid stream, then each thing wrong with it. */
    struct {
        const char *what;
        int kind;
    } cases[] = {{"valid", 0},
                 {"wrong sha", 1},
                 {"size beyond data", 2},
                 {"out of order", 3},
                 {"same path twice", 4},
                 {"no header", 5},
                 {"two headers", 6},
                 {"end counts", 7},
                 {"end before S", 8},
                 {"bytes after end", 9},
                 {"no end", 10},
                 {"index 0", 11},
                 {"huge length", 12},
                 {"unknown type", 13},
                 {"index beyond end", 14},
                 {"window too wide", 15},
                 {"DATA without FILE", 16},
                 {"bad dedup status", 17}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int c = cases[k].kind;
        memset(b, 0, sizeof *b);
        if (c != 5) sb_hdr(b, 10);
        if (c == 6) sb_hdr(b, 10);
        sb_file(b, c == 11 ? 0 : 3, c == 3 ? "z" : "x", "one", c == 1 ? "onf" : NULL, 0);
        sb_file(b, c == 14 ? 11 : 4, c == 4 ? "x" : "y", "two", NULL, c == 2 ? 10 : 0);
        if (c == 16) sb_rec(b, 3, "zz", 2);
        if (c == 17) {
            uint8_t d[2 + 66] = {0, 1};
            be64(d + 2 + 16, 9);
            d[2 + 24] = 200;
            sb_rec(b, 4, d, sizeof d);
        }
        if (c == 12) {
            uint8_t h[9] = {0xff, 0xff, 0xff, 0xf0, 3};
            memcpy(b->buf + b->len, h, 9);
            b->len += 9;
        }
        if (c == 13) sb_rec(b, 9, "x", 1);
        if (c != 10)
            sb_end(b, c == 8 ? 9 : c == 15 ? 10 + FSM_DEDUP_WINDOW + 1 : 10, c == 7 ? 3 : 2, 0, 6);
        if (c == 9) b->buf[b->len++] = 0;
        int want = c == 0 ? 0 : ERR_CORRUPT;
        int got = try_stream(&t, b->buf, b->len, k);
        if (got != want) fprintf(stderr, "case %s: %d\n", cases[k].what, got);
        CHECK_EQ_U(got, want);
    }
    /* Garbage. */
    uint8_t junk[5000];
    for (uint64_t s = 1; s <= 20; s++) {
        fill(junk, sizeof junk, s);
        CHECK_EQ_U(try_stream(&t, junk, 1 + s * 200, s), ERR_CORRUPT);
    }
    char *after = dump_state(&t);
    CHECK(strcmp(before, after) == 0);
    CHECK_EQ_U(fsm_applied(t.f), 1);
    free(after);
    free(before);
    free(b);
    t_fini(&t);
}

#define WHY_SHA "file content does not match its SHA-256"
#define WHY_CRC "CRC mismatch"

/* The type of the record whose payload holds byte i of stream s (0: i is in no payload, but
 * in a record's header or CRC). */
static uint8_t payload_type_at(const uint8_t *s, size_t len, size_t i)
{
    for (size_t off = 0; off + 5 <= len;) {
        size_t plen = ((size_t)s[off] << 24) | ((size_t)s[off + 1] << 16) |
                      ((size_t)s[off + 2] << 8) | s[off + 3];
        if (i >= off + 5 && i < off + 5 + plen) return s[off + 4];
        off += 5 + plen + 4;
    }
    return 0;
}

/* Every single flipped byte and every truncation of a real stream is refused: a flipped
 * content byte (DATA payload, which no CRC covers: format version 2) by the file's SHA-256,
 * a flipped byte of any other record's payload by its CRC. */
static void test_snap_flip_and_truncate(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    CHECK_EQ_U(put(a.f, 1, 1, "f1", "first file"), 0);
    CHECK_EQ_U(put(a.f, 2, 2, "d/f2", "second"), 0);
    CHECK_EQ_U(put(a.f, 3, 3, "d/e", ""), 0);
    CHECK_EQ_U(del(a.f, 4, 4, "nothing"), 0);
    CHECK_EQ_U(put(b.f, 1, 1, "b-only", "b"), 0);
    char *before = dump_state(&b);
    size_t len;
    uint8_t *s = stream_bytes(a.f, &len);
    CHECK(len > 100 && len < 2000);
    CHECK_EQ_U(try_stream(&b, s, len, 1), 0);
    CHECK_EQ_U(s[5 + 11], 2); /* the reader writes format version 2 */
    size_t n_data = 0, n_other = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t type = payload_type_at(s, len, i);
        char why[128];
        s[i] ^= (uint8_t)(1u << (i % 8));
        CHECK_EQ_U(try_stream_why(&b, s, len, i, why, sizeof why), ERR_CORRUPT);
        if (type == 3) {
            n_data++;
            if (strcmp(why, WHY_SHA) != 0) fprintf(stderr, "DATA byte %zu: %s\n", i, why);
            CHECK(strcmp(why, WHY_SHA) == 0);
        } else if (type != 0) {
            n_other++;
            if (strcmp(why, WHY_CRC) != 0) fprintf(stderr, "byte %zu: %s\n", i, why);
            CHECK(strcmp(why, WHY_CRC) == 0);
        }
        s[i] ^= (uint8_t)(1u << (i % 8));
        CHECK_EQ_U(try_stream(&b, s, i, i), ERR_CORRUPT);
    }
    CHECK_EQ_U(n_data, strlen("first file") + strlen("second"));
    CHECK(n_other > 100);
    char *after = dump_state(&b);
    CHECK(strcmp(before, after) == 0);
    free(before);
    free(after);
    free(s);
    t_fini(&a);
    t_fini(&b);
}

/* Another format version is refused at the header, with a log line naming both versions,
 * before any record of it is parsed: a version 1 stream (whose DATA CRCs cover content) and
 * a future one alike. Version 1's HDR record is CRC'd as in version 2, so an old receiver
 * reads a new stream's version and refuses it the same way. */
static void test_snap_version(void)
{
    struct tenv t;
    t_init(&t);
    CHECK_EQ_U(put(t.f, 1, 1, "mine", "keep me"), 0);
    char *before = dump_state(&t);
    struct sb *b = calloc(1, sizeof *b);
    for (uint8_t v = 0; v <= 3; v++) {
        memset(b, 0, sizeof *b);
        sb_hdr(b, 10);
        b->buf[5 + 11] = v;
        /* Re-seal the header record: only its version differs. */
        b->len = 0, b->seq = 0;
        uint8_t p[32];
        memcpy(p, b->buf + 5, 32);
        sb_rec(b, 1, p, 32);
        sb_file(b, 3, "x", "one", NULL, 0);
        sb_end(b, 10, 1, 0, 3);
        char why[128], want[64];
        int rv = try_stream_why(&t, b->buf, b->len, v, why, sizeof why);
        if (v == 2) {
            CHECK_EQ_U(rv, 0);
            continue;
        }
        CHECK_EQ_U(rv, ERR_CORRUPT);
        snprintf(want, sizeof want, "stream format version %u, this node reads only version 2", v);
        if (strncmp(why, want, strlen(want)) != 0) fprintf(stderr, "version %u: %s\n", v, why);
        CHECK(strncmp(why, want, strlen(want)) == 0);
    }
    char *after = dump_state(&t);
    CHECK(strcmp(before, after) == 0);
    free(after);
    free(before);
    free(b);
    t_fini(&t);
}

/* ---- The hashing thread ------------------------------------------------------------------------
 */

#define HS_BYTES (4u << 20) /* per file: 16 full DATA records, more than the hasher's ring */
#define HS_RECS (HS_BYTES / FSS_DATA_MAX)

/* A stream (S = 10) of files "f0".."f<n-1>" (index 3+k) of HS_BYTES each in full DATA
 * records; file `bad` (n: none) announces a SHA-256 its content does not have. *file_end:
 * where file `bad` (or 0) ends; *end_off: where the END record starts. */
static uint8_t *hash_stream(size_t n, size_t bad, size_t *len, size_t *file_end, size_t *end_off)
{
    uint8_t *s = malloc(n * (HS_BYTES + (HS_RECS + 1) * 64) + 256);
    uint8_t *body = malloc(HS_BYTES);
    uint64_t seq = 0;
    size_t off = 0;
    uint8_t h[32] = "raftfsnp";
    h[11] = 2; /* format version */
    be64(h + 12, 10);
    be64(h + 20, TERM);
    off += rec_put(s + off, seq++, 1, h, 32);
    *file_end = 0;
    for (size_t k = 0; k < n; k++) {
        fill(body, HS_BYTES, 100 + k);
        uint8_t p[64] = {0};
        be64(p, 3 + k);
        be64(p + 8, HS_BYTES);
        EVP_Digest(body, HS_BYTES, p + 16, NULL, EVP_sha256(), NULL);
        if (k == bad) p[16 + 31] ^= 1;
        p[49] = 2;
        p[50] = 'f', p[51] = (char)('0' + k);
        off += rec_put(s + off, seq++, 2, p, 52);
        for (size_t r = 0; r < HS_RECS; r++)
            off += rec_put(s + off, seq++, 3, body + r * FSS_DATA_MAX, FSS_DATA_MAX);
        if (k == (bad < n ? bad : 0)) *file_end = off;
    }
    *end_off = off;
    uint8_t e[32];
    be64(e, 10), be64(e + 8, n), be64(e + 16, 0), be64(e + 24, n * HS_BYTES);
    off += rec_put(s + off, seq++, 5, e, 32);
    free(body);
    *len = off;
    return s;
}

/* Threads of this process named "snap-hash" (the hasher's). */
static int hash_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *fp = fopen(path, "r");
        if (!fp) continue;
        if (fgets(comm, sizeof comm, fp) && strcmp(comm, "snap-hash\n") == 0) n++;
        fclose(fp);
    }
    if (d) closedir(d);
    return n;
}

/* A joined thread may linger in /proc for a moment: poll with a deadline. */
static bool hash_threads_gone(void)
{
    double deadline = now_s() + 10;
    while (hash_threads() != 0 && now_s() < deadline)
        usleep(1000);
    return hash_threads() == 0;
}

/* Waits (deadline) until the writer's hasher has hashed n payloads. */
static bool hashed_at_least(struct fsm_snap_writer *w, uint64_t n)
{
    double deadline = now_s() + 20;
    while (fss_hasher_hashed(w->hasher) < n && now_s() < deadline)
        usleep(200);
    return fss_hasher_hashed(w->hasher) >= n;
}

/* A wrong SHA-256 of a multi-record file, found by the hasher, fails the stream at END at the
 * latest (deterministically), and at the next put once the hasher has found it; the stream
 * cut while payloads are queued (mid-file, or right after a file's last DATA) leaves neither
 * a thread nor a buffer (ASan) behind. Threaded and inline hashing alike; the store is
 * unchanged by every refused stream and takes the valid one. */
static void check_hash_paths(struct tenv *t, bool threaded)
{
    fsm_snap_test_inline_hash = !threaded;
    size_t len, fend, eoff;
    /* The last file wrong, the whole stream in one put: END waits for its digest (the
     * thread is held back 0.5 s on that file's last payload, record 3 * 17). */
    uint8_t *bad = hash_stream(3, 2, &len, &fend, &eoff);
    struct fsm_snap_writer *w;
    struct fsm_snap_meta m;
    fss_hasher_test_hold_seq = 3 * (1 + HS_RECS);
    fss_hasher_test_hold_ms = 500;
    CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
    fss_hasher_test_hold_ms = 0;
    CHECK(fss_hasher_threaded(w->hasher) == threaded);
    CHECK_EQ_U(hash_threads(), threaded ? 1 : 0);
    CHECK_EQ_U(fsm_snap_writer_put(w, bad, len), ERR_CORRUPT);
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), ERR_CORRUPT);
    fsm_snap_writer_abort(w);
    CHECK(hash_threads_gone());
    free(bad);
    bad = hash_stream(3, 1, &len, &fend, &eoff);
    /* Found while the stream goes on: the next put fails. */
    CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
    CHECK_EQ_U(fsm_snap_writer_put(w, bad, fend), 0);
    CHECK(hashed_at_least(w, 2 * HS_RECS));
    CHECK_EQ_U(fsm_snap_writer_put(w, bad + fend, 1), ERR_CORRUPT);
    fsm_snap_writer_abort(w);
    free(bad);
    /* A valid stream cut with payloads queued: finish refuses it; abort stops the thread. */
    uint8_t *good = hash_stream(3, 3, &len, &fend, &eoff);
    const size_t cuts[] = {fend / 2, fend, eoff};
    for (size_t c = 0; c < 3; c++) {
        CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
        CHECK_EQ_U(fsm_snap_writer_put(w, good, cuts[c]), 0);
        if (c != 1) CHECK_EQ_U(fsm_snap_writer_finish(w, &m), ERR_CORRUPT);
        fsm_snap_writer_abort(w);
        CHECK(hash_threads_gone());
    }
    /* The valid stream, whole. */
    CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
    uint64_t rng = threaded ? 5 : 6;
    CHECK_EQ_U(feed(w, good, len, &rng), 0);
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fss_hasher_hashed(w->hasher), 3 * HS_RECS);
    CHECK_EQ_U(fsm_snap_install(t->f, w), 0);
    CHECK(hash_threads_gone());
    free(good);
    uint8_t *want = malloc(HS_BYTES), *got = malloc(HS_BYTES + 1);
    fill(want, HS_BYTES, 100 + 2);
    int fd = -1;
    struct fsm_meta fm;
    CHECK_EQ_U(fsm_open_read(t->f, "f2", &fd, &fm), 0);
    CHECK(fd >= 0 && pread(fd, got, HS_BYTES + 1, 0) == (ssize_t)HS_BYTES);
    CHECK(memcmp(got, want, HS_BYTES) == 0);
    if (fd >= 0) close(fd);
    free(want);
    free(got);
    fsm_snap_test_inline_hash = false;
}

/* A flipped byte in the last DATA record of the last file, which no CRC covers, is caught by
 * the file's SHA-256 at END (the hasher held back on that record, so the verdict is END's
 * wait, not an earlier put's): the stream fails and nothing is installed. */
static void test_snap_last_data_flip(void)
{
    struct tenv t;
    t_init(&t);
    CHECK_EQ_U(put(t.f, 1, 1, "mine", "keep me"), 0);
    char *before = dump_state(&t);
    size_t len, fend, eoff;
    uint8_t *s = hash_stream(3, 3, &len, &fend, &eoff);
    s[eoff - 4 - 1] ^= 0x10; /* the last content byte: before the last DATA's CRC */
    struct fsm_snap_writer *w;
    struct fsm_snap_meta m;
    fss_hasher_test_hold_seq = 3 * (1 + HS_RECS);
    fss_hasher_test_hold_ms = 300;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    fss_hasher_test_hold_ms = 0;
    CHECK_EQ_U(fsm_snap_writer_put(w, s, eoff), 0); /* every record before END accepted */
    CHECK_EQ_U(fsm_snap_writer_put(w, s + eoff, len - eoff), ERR_CORRUPT);
    CHECK(strcmp(w->why, WHY_SHA) == 0);
    CHECK(!w->finished);
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), ERR_CORRUPT);
    CHECK_EQ_U(fsm_snap_install(t.f, w), ERR_INVALID); /* refused, and consumed */
    CHECK(hash_threads_gone());
    /* Unflipped, the same stream installs (so the flip is what failed it). */
    s[eoff - 4 - 1] ^= 0x10;
    CHECK_EQ_U(try_stream(&t, s, len, 7), 0);
    char *after = dump_state(&t);
    CHECK(strcmp(before, after) == 0);
    free(after);
    free(before);
    free(s);
    t_fini(&t);
}

/* Staged writes: a new file is preallocated to its announced size before its first DATA
 * (O_DIRECT writes into allocated extents run concurrently on ext4), FSS_AIO_GROUP payloads
 * go out as one write, a file's end leaves its writes in flight (the next file's follow
 * them), END waits for all of them, and the content is right after the install. */
static bool writes_in_flight(const struct fsm_snap_writer *w)
{
    for (unsigned i = 0; i < FSS_AIO_DEPTH; i++)
        if (w->aio_busy[i]) return true;
    return false;
}

static void test_snap_writes_queued(void)
{
    struct tenv t;
    t_init(&t);
    size_t len, fend, eoff;
    uint8_t *s = hash_stream(3, 3, &len, &fend, &eoff);
    size_t first_data = (5 + 32 + 4) + (5 + 52 + 4); /* HDR, then f0's FILE record */
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    CHECK_EQ_U(fsm_snap_writer_put(w, s, first_data), 0);
    char full[8300];
    snprintf(full, sizeof full, "%s/raft/snap-in/files/f0", t.dir);
    struct stat st;
    CHECK(stat(full, &st) == 0 && st.st_size == (off_t)HS_BYTES &&
          (uint64_t)st.st_blocks * 512 >= HS_BYTES);
    CHECK_EQ_U(fsm_snap_writer_put(w, s + first_data, fend - first_data), 0);
    CHECK(!w->in_file && w->fd < 0); /* f0 is complete and closed... */
    if (w->aio_ctx)
        CHECK(writes_in_flight(w)); /* ...with its last writes still queued */
    else
        fprintf(stderr, "no native AIO here: writes are synchronous\n");
    uint64_t rng = 9;
    CHECK_EQ_U(feed(w, s + fend, len - fend, &rng), 0);
    CHECK(!writes_in_flight(w));                          /* END waited for every write */
    CHECK_EQ_U(w->n_writes, 3 * HS_RECS / FSS_AIO_GROUP); /* whole groups of one file */
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(t.f, w), 0);
    uint8_t *want = malloc(HS_BYTES), *got = malloc(HS_BYTES + 1);
    for (unsigned k = 0; k < 3; k++) {
        char path[4] = {'f', (char)('0' + k), 0};
        fill(want, HS_BYTES, 100 + k);
        int fd = -1;
        struct fsm_meta fm;
        CHECK_EQ_U(fsm_open_read(t.f, path, &fd, &fm), 0);
        CHECK(fd >= 0 && pread(fd, got, HS_BYTES + 1, 0) == (ssize_t)HS_BYTES);
        CHECK(memcmp(got, want, HS_BYTES) == 0);
        if (fd >= 0) close(fd);
    }
    free(want);
    free(got);
    free(s);
    t_fini(&t);
}

static void test_snap_hash_thread(void)
{
    for (int threaded = 1; threaded >= 0; threaded--) {
        struct tenv t;
        t_init(&t);
        CHECK_EQ_U(put(t.f, 1, 1, "mine", "keep me"), 0);
        char *before = dump_state(&t);
        check_hash_paths(&t, threaded);
        CHECK_EQ_U(fsm_applied(t.f), 10);
        /* The refused streams left nothing: the installed state is the valid stream's. */
        char *after = dump_state(&t);
        CHECK(strstr(after, "f2") && !strstr(after, "mine") && strcmp(before, after) != 0);
        free(before);
        free(after);
        t_fini(&t);
    }
}

/* ---- Crash at every install step ----------------------------------------------------------------
 */

static void test_snap_install_crash(void)
{
    struct tenv a, b;
    t_init(&a);
    raft_index s = populate(a.f, 0);
    size_t len;
    uint8_t *stream = stream_bytes(a.f, &len);
    char *want_new = dump_state(&a);
    for (int step = 0; step <= 5; step++) {
        t_init(&b);
        CHECK_EQ_U(put(b.f, 1, 1, "old/file", "old content"), 0);
        CHECK_EQ_U(put(b.f, 2, 2, "d1/e1/f1", "stale"), 0);
        CHECK_EQ_U(fsm_checkpoint_sync(b.f), 0);
        char *want_old = dump_state(&b);
        t_close(&b);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            /* The child installs and "dies" right after the step. */
            t_open(&b);
            struct fsm_snap_writer *w;
            uint64_t rng = (uint64_t)step + 1;
            struct fsm_snap_meta m;
            int rv = fsm_snap_writer_open(b.f, &w);
            if (rv == 0) rv = feed(w, stream, len, &rng);
            if (rv == 0) rv = fsm_snap_writer_finish(w, &m);
            if (rv == 0 && step > 0) {
                fsm_snap_test_stop_after(b.f, step);
                rv = fsm_snap_install(b.f, w) == ERR_SHUTDOWN ? 0 : 1;
            }
            _exit(rv);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        t_open(&b);
        char *got = dump_state(&b);
        bool is_new = strcmp(got, want_new) == 0, is_old = strcmp(got, want_old) == 0;
        if (!is_new && !is_old) fprintf(stderr, "step %d: state:\n%s", step, got);
        CHECK(step >= 2 ? is_new : is_old); /* the synchronous commit is step 2 */
        CHECK_EQ_U(fsm_applied(b.f), step >= 2 ? s : 2);
        struct fsm_snap_meta info;
        CHECK_EQ_U(fsm_snap_info(b.f, &info), step >= 2 ? 0 : ERR_NOTFOUND);
        raft_blob_unref(info.conf);
        CHECK(!path_exists(&b, "raft/snap-in"));
        CHECK_EQ_U(count_dir(&b, "trash"), 0);
        /* It works on from there. */
        CHECK_EQ_U(put(b.f, fsm_applied(b.f) + 1, 777, "after", "crash"), 0);
        free(got);
        free(want_old);
        t_fini(&b);
    }
    free(want_new);
    free(stream);
    t_fini(&a);
}

/* ---- Memory, slices and misuse ------------------------------------------------------------------
 */

static long vm_kb(const char *key)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, key, strlen(key))) v = atol(line + strlen(key));
    if (fp) fclose(fp);
    return v;
}

/* A 64 MiB file streams through small slices without memory proportional to it. */
static void test_snap_memory_bounded(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    size_t big = 64u << 20;
    uint8_t *body = malloc(big);
    fill(body, big, 3);
    struct raft_entry e = mk_entry(1, 1, "huge", body, big, false);
    free(body);
    CHECK_EQ_U(apply_entry(a.f, &e, NULL), 0);
    raft_blob_unref(e.data);
    /* Reset the peak RSS (Linux >= 4.0), then stream through 4 KiB slices. */
    FILE *fp = fopen("/proc/self/clear_refs", "w");
    bool reset = fp && fputs("5", fp) >= 0;
    if (fp) fclose(fp);
    long rss0 = vm_kb("VmRSS:");
    struct raft_blob *conf = conf_blob();
    struct fsm_snap_reader *r;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_reader_open(a.f, 1, TERM, conf, &r), 0);
    raft_blob_unref(conf);
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    uint8_t buf[4096];
    bool done = false;
    size_t calls = 0;
    while (!done) {
        size_t len;
        CHECK_EQ_U(fsm_snap_reader_next(r, buf, sizeof buf, &len, &done), 0);
        CHECK_EQ_U(fsm_snap_writer_put(w, buf, len), 0);
        calls++;
    }
    fsm_snap_reader_close(r);
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    long hwm = vm_kb("VmHWM:");
    if (reset) {
        fprintf(stderr, "  64 MiB stream: peak RSS %ld KiB over the start (%zu slices)\n",
                hwm - rss0, calls);
        CHECK(hwm - rss0 < 8 * 1024);
    } else {
        fprintf(stderr, "  (peak RSS cannot be reset here: memory bound not measured)\n");
    }
    check_same_state(&a, &b);
    t_fini(&a);
    t_fini(&b);
}

static void test_snap_misuse(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    CHECK_EQ_U(put(a.f, 1, 1, "x", "1"), 0);
    CHECK_EQ_U(put(a.f, 2, 2, "y", "2"), 0);
    struct fsm_snap_reader *r = NULL;
    CHECK_EQ_U(fsm_snap_reader_open(a.f, 1, TERM, NULL, &r), ERR_INVALID); /* not applied */
    CHECK(r == NULL);
    struct raft_blob *huge = raft_blob_new(65 * 1024);
    CHECK_EQ_U(fsm_snap_reader_open(a.f, 2, TERM, huge, &r), ERR_TOOBIG);
    raft_blob_unref(huge);
    struct fsm_snap_writer *w, *w2;
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w2), ERR_BUSY);
    /* An unfinished writer cannot be installed; B is unchanged. */
    CHECK_EQ_U(fsm_snap_install(b.f, w), ERR_INVALID);
    CHECK_EQ_U(fsm_snap_writer_open(b.f, &w), 0);
    fsm_snap_writer_abort(w);
    /* A snapshot not beyond B's applied index is refused. */
    for (raft_index i = 1; i <= 5; i++)
        CHECK_EQ_U(noop(b.f, i), 0);
    uint64_t rng = 3;
    struct fsm_snap_meta m;
    w = stream_to(a.f, b.f, &rng, NULL, NULL, &m);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(b.f, w), ERR_INVALID);
    CHECK_EQ_U(fsm_applied(b.f), 5);
    CHECK_EQ_U(count_dir(&b, "files"), 0);
    /* A reader of a store that then installs a snapshot goes stale. */
    CHECK_EQ_U(fsm_snap_reader_open(b.f, 5, TERM, NULL, &r), 0);
    struct tenv c;
    t_init(&c);
    for (raft_index i = 1; i <= 9; i++)
        CHECK_EQ_U(put(c.f, i, (unsigned)i, "c", "c"), 0);
    w = stream_to(c.f, b.f, &rng, NULL, NULL, &m);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(b.f, w), 0);
    uint8_t buf[64];
    size_t len;
    bool done;
    CHECK_EQ_U(fsm_snap_reader_next(r, buf, sizeof buf, &len, &done), ERR_BUSY);
    fsm_snap_reader_close(r);
    check_same_state(&c, &b);
    t_fini(&c);
    t_fini(&a);
    t_fini(&b);
}

int main(void)
{
    RUN(test_snap_round_trip);
    RUN(test_snap_spares);
    RUN(test_snap_fuzzy_property);
    RUN(test_snap_dedup_kept_for_window);
    RUN(test_snap_window_cases);
    RUN(test_snap_odd_records);
    RUN(test_snap_hostile_streams);
    RUN(test_snap_flip_and_truncate);
    RUN(test_snap_version);
    RUN(test_snap_install_crash);
    RUN(test_snap_memory_bounded);
    RUN(test_snap_misuse);
    /* After test_snap_install_crash (forks): kept there from when staged writes used glibc's
     * POSIX AIO, whose idle helper threads' bookkeeping a child inherited (native AIO now). */
    RUN(test_snap_hash_thread);
    RUN(test_snap_writes_queued);
    RUN(test_snap_last_data_flip);
    return check_report();
}
