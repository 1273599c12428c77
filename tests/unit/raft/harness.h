/* harness.h — a tiny in-memory cluster for the Raft core's unit tests: each node has a
 * simulated durable store (only what a completed write held survives a restart), writes
 * complete at once or on demand, and messages are shuttled by hand with optional cuts.
 * Deterministic; no clock, threads or sockets. */
#ifndef RAFTFS_TEST_RAFT_HARNESS_H
#define RAFTFS_TEST_RAFT_HARNESS_H

#include <stdlib.h>
#include <string.h>

#include "../../check.h"
#include "err.h"
#include "raft.h"

#define TC_MAX 5
#define TC_READS_MAX 64
#define TC_APPLIED_MAX 4096

struct tc_write {
    uint64_t seq;
    bool hs;
    raft_term term;
    raft_id vote;
    raft_index trunc;
    raft_index compact_to;
    raft_term snap_term;
    struct raft_configuration snap_conf;
    bool reset;
    struct raft_entry *entries;
    size_t n_entries;
    struct raft_msg *after;
    size_t n_after;
};

struct tnode {
    struct raft *r;
    struct raft_config cfg;
    bool manual_persist; /* writes wait for tc_persist() */
    bool down;
    struct tc_write pending[64];
    size_t n_pending;
    /* Durable state. */
    raft_term term;
    raft_id vote;
    raft_index boot_commit;  /* handed to raft_new as the commit lower bound */
    raft_index boot_applied; /* handed to raft_new as applied */
    /* The durable snapshot point; log[i - 1] stays indexed by i (entries <= snap_index are
     * empty placeholders). */
    raft_index snap_index;
    raft_term snap_term;
    struct raft_configuration snap_conf;
    int resets; /* snapshot_reset writes completed */
    struct raft_entry log[TC_APPLIED_MAX];
    size_t n_log;
    /* What the node applied and read. */
    raft_index applied;
    raft_term applied_terms[TC_APPLIED_MAX];
    struct raft_read_state reads[TC_READS_MAX];
    size_t n_reads;
    int fetch_calls;
    raft_index fail_fetch_from; /* non-zero: fetching this index or later fails */
};

struct tc {
    struct tnode n[TC_MAX];
    int count;
    struct raft_msg net[4096];
    size_t n_net;
    bool cut[TC_MAX + 1][TC_MAX + 1]; /* by id: drop messages from i to j */
    uint64_t sent_by_type[RAFT_MSG__COUNT];
};

static inline struct raft_blob *tc_blob(const char *s)
{
    size_t len = strlen(s);
    struct raft_blob *b = raft_blob_new((uint32_t)len);
    memcpy(b->data, s, len);
    return b;
}

static inline void tc_msg_copy(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    dst->entries = NULL;
    if (src->n_entries) {
        dst->entries = calloc(src->n_entries, sizeof *dst->entries);
        for (uint32_t i = 0; i < src->n_entries; i++) {
            dst->entries[i] = src->entries[i];
            raft_blob_ref(dst->entries[i].data);
        }
    }
}

static inline void tc_msg_free(struct raft_msg *m)
{
    for (uint32_t i = 0; i < m->n_entries; i++)
        raft_blob_unref(m->entries[i].data);
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

static inline int tc_fetch_cb(void *ctx, raft_index index, struct raft_blob **out)
{
    struct tnode *t = ctx;
    t->fetch_calls++;
    if (t->fail_fetch_from && index >= t->fail_fetch_from) return ERR_IO;
    if (index <= t->snap_index || index > t->n_log) return ERR_NOTFOUND;
    *out = raft_blob_ref(t->log[index - 1].data);
    return 0;
}

static inline void tc_default_cfg(struct raft_config *c, raft_id id)
{
    memset(c, 0, sizeof *c);
    c->id = id;
    c->heartbeat_ticks = 2;
    c->election_ticks_min = 10;
    c->election_ticks_max = 20;
    c->seed = 42 + id;
    c->max_append_entries = 64;
    c->max_append_bytes = 1u << 20;
    c->max_inflight = 4;
    c->cache_bytes_max = 1u << 20;
    c->prevote = true;
    c->check_quorum = true;
}

static inline struct tnode *tc_node(struct tc *tc, raft_id id)
{
    return &tc->n[id - 1];
}

static inline struct raft *tc_raft(struct tc *tc, raft_id id)
{
    return tc->n[id - 1].r;
}

/* Builds the boot state from the node's durable store and starts a core. */
static inline void tc_start(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    t->cfg.fetch = tc_fetch_cb;
    t->cfg.ctx = t;
    struct raft_boot boot;
    memset(&boot, 0, sizeof boot);
    boot.term = t->term;
    boot.vote = t->vote;
    boot.commit = t->boot_commit;
    boot.applied = t->boot_applied;
    boot.snapshot_index = t->snap_index;
    boot.snapshot_term = t->snap_term;
    boot.snapshot_conf = t->snap_index ? &t->snap_conf : NULL;
    boot.entries = t->log + t->snap_index;
    boot.n_entries = t->n_log - t->snap_index;
    int rv = raft_new(&t->cfg, &boot, &t->r);
    CHECK_EQ_U(rv, 0);
    t->applied = t->boot_applied > t->snap_index ? t->boot_applied : t->snap_index;
    t->down = false;
}

/* count nodes with ids 1..count; cfg tweaks by the caller through tc->n[i].cfg first. */
static inline void tc_init(struct tc *tc, int count)
{
    memset(tc, 0, sizeof *tc);
    tc->count = count;
    for (int i = 0; i < count; i++)
        tc_default_cfg(&tc->n[i].cfg, (raft_id)(i + 1));
}

static inline void tc_start_all(struct tc *tc)
{
    for (int i = 0; i < tc->count; i++)
        tc_start(tc, (raft_id)(i + 1));
}

static inline void tc_net_push(struct tc *tc, const struct raft_msg *m)
{
    if (tc->n_net >= sizeof tc->net / sizeof tc->net[0]) return;
    tc->sent_by_type[m->type]++;
    tc_msg_copy(&tc->net[tc->n_net++], m);
}

static inline void tc_write_apply(struct tnode *t, struct tc_write *w)
{
    if (w->hs) {
        t->term = w->term;
        t->vote = w->vote;
    }
    if (w->compact_to) {
        CHECK(w->compact_to > t->snap_index);
        for (size_t i = 0; i < w->compact_to; i++) {
            if (i < t->n_log) raft_blob_unref(t->log[i].data);
            memset(&t->log[i], 0, sizeof t->log[i]);
        }
        if (t->n_log < w->compact_to) t->n_log = w->compact_to;
        t->snap_index = w->compact_to;
        t->snap_term = w->snap_term;
        t->snap_conf = w->snap_conf;
        t->resets += w->reset;
    }
    if (w->trunc) {
        while (t->n_log >= w->trunc) {
            raft_blob_unref(t->log[t->n_log - 1].data);
            t->n_log--;
        }
    }
    for (size_t i = 0; i < w->n_entries; i++) {
        struct raft_entry *e = &w->entries[i];
        while (t->n_log >= e->index) {
            raft_blob_unref(t->log[t->n_log - 1].data);
            t->n_log--;
        }
        CHECK_EQ_U(e->index, t->n_log + 1);
        t->log[t->n_log++] = *e; /* takes the write's reference */
    }
    free(w->entries);
    w->entries = NULL;
    w->n_entries = 0;
}

/* Completes node id's oldest pending write: durable, then its messages leave. */
static inline bool tc_persist(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    if (t->n_pending == 0) return false;
    struct tc_write w = t->pending[0];
    memmove(t->pending, t->pending + 1, (t->n_pending - 1) * sizeof *t->pending);
    t->n_pending--;
    tc_write_apply(t, &w);
    for (size_t i = 0; i < w.n_after; i++) {
        tc_net_push(tc, &w.after[i]);
        tc_msg_free(&w.after[i]);
    }
    free(w.after);
    raft_persisted(t->r, w.seq);
    return true;
}

static inline void tc_pending_add_after(struct tc_write *w, const struct raft_msg *m, size_t n)
{
    w->after = realloc(w->after, (w->n_after + n) * sizeof *w->after);
    for (size_t i = 0; i < n; i++)
        tc_msg_copy(&w->after[w->n_after++], &m[i]);
}

static inline void tc_record_committed(struct tnode *t, const struct raft_ready *rd)
{
    for (size_t i = 0; i < rd->n_committed; i++) {
        const struct raft_entry *e = &rd->committed[i];
        CHECK_EQ_U(e->index, t->applied + 1);
        CHECK(e->index <= t->n_log); /* applied entries are durable */
        if (e->index < TC_APPLIED_MAX) t->applied_terms[e->index] = e->term;
        t->applied = e->index;
    }
    for (size_t i = 0; i < rd->n_reads && t->n_reads < TC_READS_MAX; i++)
        t->reads[t->n_reads++] = rd->reads[i];
}

/* One ready batch of node id, handled as the node's loop would (include/raft.h). */
static inline void tc_ready(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    struct raft_ready rd;
    raft_ready(t->r, &rd);
    if (rd.persist_seq) {
        struct tc_write *w = &t->pending[t->n_pending++];
        memset(w, 0, sizeof *w);
        w->seq = rd.persist_seq;
        w->hs = rd.hardstate_changed;
        w->term = rd.term;
        w->vote = rd.vote;
        w->trunc = rd.truncate_from;
        w->compact_to = rd.compact_to;
        w->snap_term = rd.snap_term;
        if (rd.compact_to) w->snap_conf = *rd.snap_conf;
        w->reset = rd.snapshot_reset;
        w->n_entries = rd.n_entries;
        w->entries = calloc(rd.n_entries + 1, sizeof *w->entries);
        for (size_t i = 0; i < rd.n_entries; i++) {
            w->entries[i] = rd.entries[i];
            raft_blob_ref(w->entries[i].data);
        }
        tc_pending_add_after(w, rd.msgs_after_persist, rd.n_msgs_after_persist);
    } else if (rd.n_msgs_after_persist) {
        if (t->n_pending)
            tc_pending_add_after(&t->pending[t->n_pending - 1], rd.msgs_after_persist,
                                 rd.n_msgs_after_persist);
        else
            for (size_t i = 0; i < rd.n_msgs_after_persist; i++)
                tc_net_push(tc, &rd.msgs_after_persist[i]);
    }
    for (size_t i = 0; i < rd.n_msgs; i++)
        tc_net_push(tc, &rd.msgs[i]);
    tc_record_committed(t, &rd);
    raft_advance(t->r, &rd);
    if (!t->manual_persist)
        while (tc_persist(tc, id))
            ;
    raft_check_invariants(t->r);
}

static inline void tc_ready_all(struct tc *tc)
{
    for (int round = 0; round < 100; round++) {
        bool any = false;
        for (int i = 0; i < tc->count; i++) {
            struct tnode *t = &tc->n[i];
            if (!t->down && t->r && raft_has_ready(t->r)) {
                tc_ready(tc, (raft_id)(i + 1));
                any = true;
            }
        }
        if (!any) return;
    }
}

/* Delivers every queued message once (cut links and down nodes drop them). */
static inline size_t tc_deliver(struct tc *tc)
{
    size_t n = tc->n_net;
    struct raft_msg *batch = malloc((n + 1) * sizeof *batch);
    memcpy(batch, tc->net, n * sizeof *batch);
    tc->n_net = 0;
    for (size_t i = 0; i < n; i++) {
        struct raft_msg *m = &batch[i];
        if (m->to >= 1 && m->to <= (raft_id)tc->count && !tc->cut[m->from][m->to] &&
            !tc_node(tc, m->to)->down) {
            raft_step(tc_raft(tc, m->to), m);
            raft_check_invariants(tc_raft(tc, m->to));
        }
        tc_msg_free(m);
    }
    free(batch);
    return n;
}

/* Runs ready/deliver rounds until the cluster is quiet (bounded). */
static inline void tc_flush(struct tc *tc)
{
    for (int round = 0; round < 200; round++) {
        tc_ready_all(tc);
        if (tc->n_net == 0) return;
        tc_deliver(tc);
    }
}

static inline void tc_drop_net(struct tc *tc)
{
    for (size_t i = 0; i < tc->n_net; i++)
        tc_msg_free(&tc->net[i]);
    tc->n_net = 0;
}

static inline void tc_tick(struct tc *tc, raft_id id, int k)
{
    for (int i = 0; i < k; i++) {
        raft_tick(tc_raft(tc, id));
        raft_check_invariants(tc_raft(tc, id));
    }
}

static inline enum raft_role tc_role(struct tc *tc, raft_id id)
{
    struct raft_status st;
    raft_status(tc_raft(tc, id), &st);
    return st.role;
}

static inline struct raft_status tc_status(struct tc *tc, raft_id id)
{
    struct raft_status st;
    raft_status(tc_raft(tc, id), &st);
    return st;
}

/* Ticks node id (alone) until it campaigns, then lets the cluster settle. */
static inline void tc_elect(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    for (unsigned i = 0; i <= t->cfg.election_ticks_max * 3 && tc_role(tc, id) != RAFT_LEADER;
         i++) {
        raft_tick(t->r);
        tc_flush(tc);
    }
    CHECK_EQ_U(tc_role(tc, id), RAFT_LEADER);
}

/* Ticks everyone but the leader past the lease so prevotes can be granted. */
static inline void tc_age_followers(struct tc *tc, raft_id except, int k)
{
    for (int i = 0; i < tc->count; i++)
        if ((raft_id)(i + 1) != except && !tc->n[i].down)
            for (int j = 0; j < k; j++)
                raft_tick(tc->n[i].r);
}

static inline void tc_conf(struct raft_configuration *c, int voters, int learners)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < voters + learners; i++) {
        c->members[i].id = (raft_id)(i + 1);
        c->members[i].voter = i < voters;
        c->members[i].info_len = 1;
        c->members[i].info[0] = (uint8_t)('a' + i);
    }
    c->n = (uint32_t)(voters + learners);
}

/* A running cluster: node 1 bootstraps all `voters` nodes as voters and wins. */
static inline void tc_cluster(struct tc *tc, int voters)
{
    tc_start_all(tc);
    struct raft_configuration c;
    tc_conf(&c, voters, 0);
    CHECK_EQ_U(raft_bootstrap(tc_raft(tc, 1), &c), 0);
    tc_flush(tc);
    tc_elect(tc, 1);
    tc_flush(tc);
}

static inline void tc_stop(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    for (size_t i = 0; i < t->n_pending; i++) {
        struct tc_write *w = &t->pending[i];
        for (size_t j = 0; j < w->n_entries; j++)
            raft_blob_unref(w->entries[j].data);
        free(w->entries);
        for (size_t j = 0; j < w->n_after; j++)
            tc_msg_free(&w->after[j]);
        free(w->after);
    }
    t->n_pending = 0;
    raft_free(t->r);
    t->r = NULL;
    t->down = true;
}

static inline void tc_free(struct tc *tc)
{
    tc_drop_net(tc);
    for (int i = 0; i < tc->count; i++) {
        struct tnode *t = &tc->n[i];
        if (t->r) tc_stop(tc, (raft_id)(i + 1));
        for (size_t j = 0; j < t->n_log; j++)
            raft_blob_unref(t->log[j].data);
        t->n_log = 0;
    }
}

static inline int tc_propose(struct tc *tc, raft_id id, const char *s, raft_index *idx)
{
    raft_term term;
    return raft_propose(tc_raft(tc, id), tc_blob(s), idx, &term);
}

/* Counts messages of a type queued in the net (optionally to one node). */
static inline size_t tc_count_net(struct tc *tc, uint8_t type, raft_id to)
{
    size_t n = 0;
    for (size_t i = 0; i < tc->n_net; i++)
        if (tc->net[i].type == type && (to == 0 || tc->net[i].to == to)) n++;
    return n;
}

/* Gives node id a durable log with these terms (index 1 holds a CONFIG of `voters` voters)
 * and a durable current term, before tc_start. */
static inline void tc_set_log(struct tc *tc, raft_id id, const raft_term *terms, size_t n,
                              raft_term term, int voters)
{
    struct tnode *t = tc_node(tc, id);
    struct raft_configuration c;
    tc_conf(&c, voters, 0);
    for (size_t i = 0; i < n; i++) {
        struct raft_entry *e = &t->log[i];
        e->index = i + 1;
        e->term = terms[i];
        if (i == 0) {
            e->type = RAFT_ENTRY_CONFIG;
            raft_configuration_encode(&c, &e->data);
        } else {
            e->type = RAFT_ENTRY_NORMAL;
            e->data = tc_blob("x");
        }
    }
    t->n_log = n;
    t->term = term;
}

static inline struct raft_msg tc_msg(uint8_t type, raft_id from, raft_id to, raft_term term,
                                     raft_index index, raft_term log_term)
{
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.from = from;
    m.to = to;
    m.term = term;
    m.index = index;
    m.log_term = log_term;
    return m;
}

/* The last queued message of a type (NULL if none). */
static inline const struct raft_msg *tc_find_net(struct tc *tc, uint8_t type, raft_id to)
{
    for (size_t i = tc->n_net; i-- > 0;)
        if (tc->net[i].type == type && (to == 0 || tc->net[i].to == to)) return &tc->net[i];
    return NULL;
}

/* Makes node id leader by hand: it times out, and `voter` grants its prevote and vote (no
 * other message is delivered; whatever it sent is dropped). */
static inline void tc_win_by_hand(struct tc *tc, raft_id id, raft_id voter)
{
    tc_tick(tc, id, 25);
    for (int i = 0; i < 3 && tc_role(tc, id) != RAFT_LEADER; i++) {
        tc_ready_all(tc);
        tc_drop_net(tc);
        struct raft_status st = tc_status(tc, id);
        struct raft_msg v = st.role == RAFT_PRECANDIDATE
                                ? tc_msg(RAFT_MSG_PREVOTE_RESP, voter, id, st.term + 1, 0, 0)
                                : tc_msg(RAFT_MSG_VOTE_RESP, voter, id, st.term, 0, 0);
        raft_step(tc_raft(tc, id), &v);
    }
    CHECK_EQ_U(tc_role(tc, id), RAFT_LEADER);
}

#endif
