/* crash_writer.c — the storage crash test's victim and checker. "run DIR SEED" writes forever
 * through the async writer and prints "ACK seq last_index last_term hs_term vote" after each
 * durable completion; "verify DIR INDEX LAST_TERM HS_TERM" checks a store after a SIGKILL. */
#include <errno.h>

#include "err.h"
#include "store_testlib.h"

#define CW_INFLIGHT_MAX 8

static raft_id cw_vote_of(raft_term t)
{
    return t % 7 + 1;
}

struct cw_state {
    raft_index last;
    raft_term last_term, hs_term;
    uint64_t rng;
};

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
    printf("ACK %llu %llu %llu %llu %llu\n", (unsigned long long)seq, (unsigned long long)a->last,
           (unsigned long long)a->last_term, (unsigned long long)a->hs_term,
           (unsigned long long)cw_vote_of(a->hs_term));
    fflush(stdout);
    cw_q_head = (cw_q_head + 1) % CW_INFLIGHT_MAX;
    cw_q_n--;
}

/* The next job: sometimes a term bump (with a vote), sometimes a truncation of the last
 * entries rewritten in the new term (only when nothing is in flight), always some entries. */
static void cw_next_job(struct cw_state *st, struct store_write *w, uint64_t seq)
{
    uint64_t r = cw_rand(st);
    bool bump = st->hs_term == 0 || r % 15 == 0;
    bool trunc = cw_q_n == 0 && st->last > 3 && r % 40 == 1;
    if (bump || trunc) {
        st->hs_term++;
    }
    /* A truncation rewrites at least what it removes: the log never gets shorter than an
     * acknowledged state even when the truncating write is durable but not acknowledged. */
    size_t n = (trunc ? 3 : 1) + (size_t)(cw_rand(st) % 6);
    raft_index first = trunc ? st->last - 2 : st->last + 1;
    st_job(w, seq, first, 0, 0, 0);
    w->truncate_from = trunc ? first : 0;
    w->hardstate_changed = bump || trunc;
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
    }
    st->last = first + n - 1;
    st->last_term = st->hs_term;
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
    struct cw_state st = {.hs_term = b.term, .rng = seed | 1};
    st.last = b.n_entries ? b.entries[b.n_entries - 1].index : 0;
    st.last_term = b.n_entries ? b.entries[b.n_entries - 1].term : 0;
    store_boot_free(&b);
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

static int cw_verify(const char *dir, raft_index ack_last, raft_term ack_lterm, raft_term ack_hterm)
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
    int bad = 0;
    if (b.n_entries < ack_last)
        bad = cw_fail("acknowledged entry missing", ack_last);
    else if (ack_last && b.entries[ack_last - 1].term < ack_lterm)
        bad = cw_fail("acknowledged entry with an older term", ack_last);
    if (!bad && b.term < ack_hterm) bad = cw_fail("acknowledged term lost", b.term);
    if (!bad && b.term && b.vote != cw_vote_of(b.term))
        bad = cw_fail("vote does not match its term", b.term);
    for (size_t i = 0; !bad && i < b.n_entries; i++) {
        const struct raft_entry *e = &b.entries[i];
        if (e->index != i + 1 || e->term > b.term || (i && e->term < b.entries[i - 1].term))
            bad = cw_fail("bad index or term", e->index);
        /* Every header was verified by the load; payloads: the recent tail and a sample. */
        if (e->index + 3000 < b.n_entries && e->index % 16) continue;
        struct raft_blob *p = NULL;
        if (!bad && store_fetch(s, e->index, &p)) bad = cw_fail("fetch failed", e->index);
        if (!bad && !st_blob_ok(p, e->index, e->term, p->len))
            bad = cw_fail("payload differs", e->index);
        raft_blob_unref(p);
    }
    if (!bad) printf("OK %zu entries, term %llu\n", b.n_entries, (unsigned long long)b.term);
    store_boot_free(&b);
    store_close(s);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "run") == 0)
        return cw_run(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 6 && strcmp(argv[1], "verify") == 0)
        return cw_verify(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
                         strtoull(argv[5], NULL, 10));
    fprintf(stderr, "usage: crash_writer run DIR SEED | verify DIR INDEX LAST_TERM HS_TERM\n");
    return 2;
}
