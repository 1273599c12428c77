/* crash_writer.c — the storage crash test's victim and checker. "run DIR SEED" writes forever
 * through the async writer (appends, truncations, term bumps, compactions and snapshot-install
 * jobs) and prints "ACK seq last_index last_term hs_term vote snap_index" after each durable
 * completion; "verify DIR INDEX LAST_TERM HS_TERM SNAP [tear]" checks a store after a SIGKILL
 * ("tear" first drops the payload bytes a power loss could have taken: see cw_tear). */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#include "err.h"
#include "store_testlib.h"

#define CW_INFLIGHT_MAX 8
#define CW_COMPACT_CHUNK 32 /* small deletion chunks: kills often leave leftovers behind */

static raft_id cw_vote_of(raft_term t)
{
    return t % 7 + 1;
}

struct cw_state {
    raft_index last;
    raft_term last_term, hs_term;
    raft_index snap; /* snapshot point as submitted */
    uint64_t rng;
};

/* Term of every index as submitted (run only): a compaction records its point's term. */
static raft_term *cw_terms;
static size_t cw_terms_cap;
static raft_index cw_acked_last; /* the log end of the newest acknowledged write */

static void cw_set_term(raft_index i, raft_term t)
{
    if (i >= cw_terms_cap) {
        size_t ncap = cw_terms_cap ? cw_terms_cap : 4096;
        while (ncap <= i)
            ncap *= 2;
        cw_terms = realloc(cw_terms, ncap * sizeof *cw_terms);
        if (!cw_terms) abort();
        memset(cw_terms + cw_terms_cap, 0, (ncap - cw_terms_cap) * sizeof *cw_terms);
        cw_terms_cap = ncap;
    }
    cw_terms[i] = t;
}

struct cw_pending {
    uint64_t seq;
    struct cw_state after;
};

static struct cw_pending cw_q[CW_INFLIGHT_MAX];
static size_t cw_q_head, cw_q_n;

static uint64_t cw_rand(struct cw_state *st)
{
    st->rng ^= st->rng << 13;
    st->rng ^= st->rng >> 7;
    st->rng ^= st->rng << 17;
    return st->rng;
}

static void cw_done_cb(void *ctx, uint64_t seq, int err)
{
    (void)ctx;
    if (err) {
        fprintf(stderr, "crash_writer: write %llu failed: %s\n", (unsigned long long)seq,
                err_str(err));
        exit(3);
    }
    if (cw_q_n == 0 || cw_q[cw_q_head].seq != seq) {
        fprintf(stderr, "crash_writer: completion %llu out of order\n", (unsigned long long)seq);
        exit(3);
    }
    const struct cw_state *a = &cw_q[cw_q_head].after;
    printf("ACK %llu %llu %llu %llu %llu %llu\n", (unsigned long long)seq,
           (unsigned long long)a->last, (unsigned long long)a->last_term,
           (unsigned long long)a->hs_term, (unsigned long long)cw_vote_of(a->hs_term),
           (unsigned long long)a->snap);
    cw_acked_last = a->last;
    fflush(stdout);
    cw_q_head = (cw_q_head + 1) % CW_INFLIGHT_MAX;
    cw_q_n--;
}

/* A compaction to a random point in (snap, last acknowledged], carried by job w. */
static void cw_compact(struct cw_state *st, struct store_write *w)
{
    if (cw_acked_last <= st->snap) return;
    raft_index to = st->snap + 1 + cw_rand(st) % (cw_acked_last - st->snap);
    w->compact_to = to;
    w->snap_term = cw_terms[to];
    w->snap_conf = st_conf_blob(to); /* verify checks the configuration by its index */
    st->snap = to;
}

/* The next job: sometimes a term bump (with a vote); sometimes, only when nothing is in
 * flight, a truncation of the last entries rewritten in the new term, or a follower's
 * snapshot install (compact to S >= last-2, possibly past the end, truncate from S+1, new
 * entries from S+1 in the new term); sometimes a compaction behind; always some entries. */
static void cw_next_job(struct cw_state *st, struct store_write *w, uint64_t seq)
{
    uint64_t r = cw_rand(st);
    bool bump = st->hs_term == 0 || r % 15 == 0;
    bool idle = cw_q_n == 0 && st->last > st->snap + 3;
    bool trunc = idle && r % 40 == 1;
    bool install = idle && r % 40 == 2;
    if (bump || trunc || install) st->hs_term++;
    st_job(w, seq, 0, 0, 0, 0);
    /* A truncation rewrites at least what it removes: the log never gets shorter than an
     * acknowledged state even when the truncating write is durable but not acknowledged. */
    size_t n = (trunc || install ? 3 : 1) + (size_t)(cw_rand(st) % 6);
    raft_index first = trunc ? st->last - 2 : st->last + 1;
    if (install) {
        raft_index s_at = st->last - 2 + cw_rand(st) % 8;
        w->compact_to = s_at;
        w->snap_term = st->hs_term;
        w->snap_conf = st_conf_blob(s_at);
        st->snap = s_at;
        for (raft_index i = st->last + 1; i <= s_at; i++)
            cw_set_term(i, st->hs_term);
        cw_set_term(s_at, st->hs_term);
        first = s_at + 1;
    } else if (r % 10 == 3) {
        cw_compact(st, w);
    }
    w->truncate_from = trunc || install ? first : 0;
    w->hardstate_changed = bump || trunc || install;
    w->term = st->hs_term;
    w->vote = cw_vote_of(st->hs_term);
    w->commit = st->last / 2;
    w->entries = calloc(n, sizeof *w->entries);
    w->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        uint64_t rl = cw_rand(st);
        uint32_t len = rl % 100 == 0 ? 300000 : (uint32_t)(rl % 3000);
        struct raft_entry *e = &w->entries[i];
        e->index = first + i;
        e->term = st->hs_term;
        e->type = RAFT_ENTRY_NORMAL;
        e->data = st_blob(e->index, e->term, len);
        cw_set_term(e->index, e->term);
    }
    st->last = first + n - 1;
    st->last_term = st->hs_term;
}

/* The node's boot repair: store_reset_sync to a point at or past the log's end (so every
 * acknowledged entry is at or below it), before the writer starts; kills often land in it. */
static int cw_reset(struct store *s, struct cw_state *st)
{
    raft_index to = st->last + cw_rand(st) % 4;
    if (to == 0) return 0;
    struct raft_blob *conf = st_conf_blob(to);
    int rv = store_reset_sync(s, to, st->hs_term, conf);
    raft_blob_unref(conf);
    if (rv) {
        fprintf(stderr, "crash_writer: reset: %s\n", err_str(rv));
        return rv;
    }
    for (raft_index i = st->last + 1; i <= to; i++)
        cw_set_term(i, st->hs_term);
    cw_set_term(to, st->hs_term);
    st->snap = st->last = cw_acked_last = to;
    st->last_term = st->hs_term;
    printf("RESET %llu\n", (unsigned long long)to);
    return 0;
}

static int cw_run(const char *dir, uint64_t seed)
{
    char err[256];
    struct store *s = NULL;
    if (store_open(dir, &s, err, sizeof err)) {
        fprintf(stderr, "crash_writer: %s\n", err);
        return 2;
    }
    struct raft_boot b;
    if (store_load(s, &b)) {
        fprintf(stderr, "crash_writer: load: %s\n", store_errmsg(s));
        return 2;
    }
    struct cw_state st = {.hs_term = b.term, .snap = b.snapshot_index, .rng = seed | 1};
    st.last = b.n_entries ? b.entries[b.n_entries - 1].index : b.snapshot_index;
    st.last_term = b.n_entries ? b.entries[b.n_entries - 1].term : b.snapshot_term;
    cw_set_term(b.snapshot_index, b.snapshot_term);
    for (size_t i = 0; i < b.n_entries; i++)
        cw_set_term(b.entries[i].index, b.entries[i].term);
    cw_acked_last = st.last; /* durable: loaded */
    store_boot_free(&b);
    store_set_compact_chunk(s, CW_COMPACT_CHUNK);
    if (st.hs_term && seed % 4 == 0 && cw_reset(s, &st)) return 2;
    struct ev_loop *loop = ev_default_loop(0);
    struct store_writer *wr = NULL;
    if (store_writer_start(s, loop, cw_done_cb, NULL, &wr)) return 2;
    printf("READY %llu\n", (unsigned long long)st.last);
    fflush(stdout);
    for (uint64_t seq = 1;;) {
        while (cw_q_n < CW_INFLIGHT_MAX) {
            struct store_write w;
            cw_next_job(&st, &w, seq);
            size_t slot = (cw_q_head + cw_q_n) % CW_INFLIGHT_MAX;
            cw_q[slot] = (struct cw_pending){.seq = seq, .after = st};
            cw_q_n++;
            if (store_writer_submit(wr, &w)) return 3;
            seq++;
            if (cw_q_n == 1 && cw_rand(&st) % 2) break; /* vary the group sizes */
        }
        ev_run(loop, EVRUN_ONCE);
    }
}

static int cw_fail(const char *what, raft_index i)
{
    printf("FAIL %s at index %llu\n", what, (unsigned long long)i);
    return 1;
}

/* Every loaded entry: index snap+1+i, terms non-decreasing and <= the hardstate term; the
 * payload of the recent tail and of a sample is fetched and compared. */
static int cw_verify_entries(struct store *s, const struct raft_boot *b)
{
    raft_index last = b->snapshot_index + b->n_entries;
    for (size_t i = 0; i < b->n_entries; i++) {
        const struct raft_entry *e = &b->entries[i];
        raft_term prev = i ? b->entries[i - 1].term : b->snapshot_term;
        if (e->index != b->snapshot_index + 1 + i || e->term > b->term || e->term < prev)
            return cw_fail("bad index or term", e->index);
        if (e->index + 3000 < last && e->index % 16) continue;
        struct raft_blob *p = NULL;
        if (store_fetch(s, e->index, &p)) return cw_fail("fetch failed", e->index);
        int ok = st_blob_ok(p, e->index, e->term, p->len);
        raft_blob_unref(p);
        if (!ok) return cw_fail("payload differs", e->index);
    }
    return 0;
}

/* Records still in log.db at or below the snapshot point (carried-over deletions). */
static size_t cw_leftovers(struct store *s, const struct raft_boot *b)
{
    DB *db = NULL;
    size_t n = 0;
    if (db_create(&db, store_env(s), 0) == 0 &&
        db->open(db, NULL, "log.db", NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0) {
        DB_BTREE_STAT *st = NULL;
        if (db->stat(db, NULL, &st, 0) == 0 && st) n = st->bt_nkeys - b->n_entries;
        free(st);
    }
    if (db) db->close(db, 0);
    return n;
}

/* A little-endian u64 at p. */
static uint64_t cw_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Reads key (klen bytes) of file in s's environment into v (up to vlen): its size, 0 if
 * absent. */
static size_t cw_get(struct store *s, const char *file, const void *k, size_t klen, uint8_t *v,
                     size_t vlen)
{
    DB *db = NULL;
    size_t n = 0;
    DBT key = {.data = (void *)k, .size = (u_int32_t)klen};
    DBT val = {.data = v, .ulen = (u_int32_t)vlen, .flags = DB_DBT_USERMEM};
    if (db_create(&db, store_env(s), 0) == 0 &&
        db->open(db, NULL, file, NULL, DB_BTREE, DB_AUTO_COMMIT | DB_THREAD, 0) == 0 &&
        db->get(db, NULL, &key, &val, 0) == 0)
        n = val.size;
    if (db) db->close(db, 0);
    return n;
}

/* Power loss after the SIGKILL: every segment byte that was not yet synced is lost. Those are
 * at or beyond max(the durable position recorded by the last committed batch, the end of
 * the last acknowledged entry's payload): an acknowledged batch was synced, and so was every
 * batch before the last committed one. Cuts the current (highest) segment there. */
static int cw_tear(const char *dir, raft_index ack_last)
{
    struct store *s = NULL;
    char err[256];
    if (store_open(dir, &s, err, sizeof err)) return 0; /* verify reports it */
    uint8_t v[64], k[8];
    uint64_t seg = 0, off = 0;
    if (cw_get(s, "meta.db", "segsync", 7, v, sizeof v) == 20) {
        seg = cw_le64(v);
        off = cw_le64(v + 8);
    }
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(ack_last >> (56 - 8 * i));
    if (ack_last && cw_get(s, "log.db", k, 8, v, sizeof v) == 40) {
        uint64_t aseg = cw_le64(v + 20), aend = cw_le64(v + 28) + (uint32_t)cw_le64(v + 8);
        if (aseg > seg || (aseg == seg && aend > off)) {
            seg = aseg;
            off = aend;
        }
    }
    store_close(s);
    uint64_t cur = 0;
    DIR *d = opendir(dir);
    for (struct dirent *de; d && (de = readdir(d)) != NULL;)
        if (strncmp(de->d_name, "seg-", 4) == 0) {
            uint64_t q = strtoull(de->d_name + 4, NULL, 16);
            cur = q > cur ? q : cur;
        }
    if (d) closedir(d);
    if (cur == 0 || seg > cur) return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/seg-%016llx.dat", dir, (unsigned long long)cur);
    struct stat sb;
    uint64_t to = seg == cur ? off : 0;
    if (stat(path, &sb) != 0 || (uint64_t)sb.st_size <= to) return 0;
    if (truncate(path, (off_t)to) != 0) return 0;
    return 1;
}

static int cw_verify(const char *dir, raft_index ack_last, raft_term ack_lterm, raft_term ack_hterm,
                     raft_index ack_snap)
{
    char err[256];
    struct store *s = NULL;
    if (store_open(dir, &s, err, sizeof err)) {
        printf("FAIL open: %s\n", err);
        return 1;
    }
    struct raft_boot b;
    int rv = store_load(s, &b);
    if (rv) {
        printf("FAIL load: %s: %s\n", err_str(rv), store_errmsg(s));
        return 1;
    }
    raft_index snap = b.snapshot_index, last = snap + b.n_entries;
    int bad = 0;
    if (snap < ack_snap)
        bad = cw_fail("acknowledged snapshot point lost", ack_snap);
    else if (snap && !st_conf_ok(b.snapshot_conf, snap))
        bad = cw_fail("snapshot configuration differs", snap);
    else if (snap && (b.snapshot_term == 0 || b.snapshot_term > b.term))
        bad = cw_fail("bad snapshot term", snap);
    else if (last < ack_last)
        bad = cw_fail("acknowledged entry missing", ack_last);
    else if (ack_last > snap && b.entries[ack_last - snap - 1].term < ack_lterm)
        bad = cw_fail("acknowledged entry with an older term", ack_last);
    if (!bad && b.term < ack_hterm) bad = cw_fail("acknowledged term lost", b.term);
    if (!bad && b.term && b.vote != cw_vote_of(b.term))
        bad = cw_fail("vote does not match its term", b.term);
    if (!bad) bad = cw_verify_entries(s, &b);
    if (!bad)
        printf("OK %zu entries after snapshot %llu (%zu leftovers), term %llu\n", b.n_entries,
               (unsigned long long)snap, cw_leftovers(s, &b), (unsigned long long)b.term);
    store_boot_free(&b);
    store_close(s);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "run") == 0)
        return cw_run(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 8 && strcmp(argv[1], "verify") == 0 && strcmp(argv[7], "tear") == 0)
        printf("torn %d ", cw_tear(argv[2], strtoull(argv[3], NULL, 10)));
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "verify") == 0)
        return cw_verify(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
                         strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10));
    fprintf(stderr,
            "usage: crash_writer run DIR SEED | verify DIR INDEX LAST_TERM HS_TERM SNAP [tear]\n");
    return 2;
}
