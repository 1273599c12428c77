/* ready.c — the output side of the core: outbound message queues, log mutations that keep
 * persistence bookkeeping in step, and the ready/persisted handshake with the caller.
 * Never sends or writes anything itself; it only describes what the caller must do. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

static void raft_msg_release(struct raft_msg *m)
{
    for (uint32_t i = 0; i < m->n_entries; i++)
        raft_blob_unref(m->entries[i].data);
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

void raft_msgbuf_clear(struct raft_msgbuf *b)
{
    for (size_t i = 0; i < b->n; i++)
        raft_msg_release(&b->v[i]);
    b->n = 0;
}

void raft_msgbuf_free(struct raft_msgbuf *b)
{
    raft_msgbuf_clear(b);
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* Takes over m's entries. Dropping a message is always safe (Raft retries), so a full
 * queue or no memory drops it rather than failing. */
static void raft_msgbuf_push(struct raft_msgbuf *b, struct raft_msg *m)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct raft_msg *v = b->n < RAFT__MSGS_MAX ? realloc(b->v, cap * sizeof *v) : NULL;
        if (!v) {
            raft_msg_release(m);
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = *m;
    m->entries = NULL;
    m->n_entries = 0;
}

void raft_send_now(struct raft *r, struct raft_msg *m)
{
    m->from = r->cfg.id;
    raft_msgbuf_push(&r->msgs, m);
}

void raft_send_after_persist(struct raft *r, struct raft_msg *m)
{
    m->from = r->cfg.id;
    raft_msgbuf_push(&r->after, m);
}

/* A leader's messages never depend on its own unpersisted state (it counts itself only up
 * to its stable index); everyone else's may. */
void raft_send(struct raft *r, struct raft_msg *m)
{
    if (r->role == RAFT_LEADER)
        raft_send_now(r, m);
    else
        raft_send_after_persist(r, m);
}

void raft_read_out_push(struct raft *r, uint64_t id, raft_index index, bool failed)
{
    if (r->n_read_out == r->cap_read_out) {
        size_t cap = r->cap_read_out ? r->cap_read_out * 2 : 8;
        struct raft_read_state *v = realloc(r->read_out, cap * sizeof *v);
        if (!v) return; /* the caller times the read out */
        r->read_out = v;
        r->cap_read_out = cap;
    }
    struct raft_read_state *s = &r->read_out[r->n_read_out++];
    s->id = id;
    s->index = index;
    s->failed = failed;
}

int raft_append_entry(struct raft *r, raft_term term, uint8_t type, struct raft_blob *data,
                      bool absent)
{
    if (type == RAFT_ENTRY_CONFIG) {
        struct raft_configuration c;
        if (!data || raft_configuration_decode(data->data, data->len, &c)) {
            raft_blob_unref(data);
            return ERR_CORRUPT;
        }
    }
    int rv = raft_log_append(&r->log, term, type, data, absent);
    if (rv) return rv;
    raft_index idx = raft_log_last(&r->log);
    if (type == RAFT_ENTRY_CONFIG) raft_conf_on_append(r, idx, raft_log_get(&r->log, idx)->data);
    return 0;
}

/* Raft §5.3: a conflicting suffix goes; a committed entry never does. */
void raft_truncate_from(struct raft *r, raft_index from)
{
    ASSERT(from > r->commit);
    ASSERT(from <= raft_log_last(&r->log));
    raft_log_truncate(&r->log, from);
    raft_conf_on_truncate(r, from);
    if (r->stable >= from) r->stable = from - 1;
    if (r->persist_from > from) r->persist_from = from;
    if (r->truncate_from == 0 || r->truncate_from > from) r->truncate_from = from;
    raft_tracef(r, "truncated log from index %llu", (unsigned long long)from);
}

int raft_payload(struct raft *r, raft_index idx, struct raft_blob **out)
{
    const struct raft_lentry *e = raft_log_get(&r->log, idx);
    ASSERT(e);
    if (!e->absent) {
        *out = raft_blob_ref(e->data);
        return 0;
    }
    struct raft_blob *b = NULL;
    int rv = r->cfg.fetch ? r->cfg.fetch(r->cfg.ctx, idx, &b) : ERR_NOTFOUND;
    if (rv) {
        raft_fail(r, "fetching an evicted payload failed");
        return rv;
    }
    *out = b;
    return 0;
}

static raft_index raft_apply_limit(const struct raft *r)
{
    return r->commit < r->stable ? r->commit : r->stable;
}

bool raft_has_ready(const struct raft *r)
{
    if (r->failed) return false;
    return r->hs_dirty || r->truncate_from || r->compact_pending ||
           r->persist_from <= raft_log_last(&r->log) || r->msgs.n || r->after.n || r->n_read_out ||
           r->applied < raft_apply_limit(r) || r->bcast_pending || r->hb_pending ||
           r->role != r->rep_role || r->leader != r->rep_leader;
}

static int raft_ready_push_write(struct raft *r, uint64_t seq)
{
    if (r->n_writes == r->cap_writes) {
        size_t cap = r->cap_writes ? r->cap_writes * 2 : 16;
        struct raft_write *v = realloc(r->writes, cap * sizeof *v);
        if (!v) return ERR_NOMEM;
        r->writes = v;
        r->cap_writes = cap;
    }
    raft_index last = raft_log_last(&r->log);
    r->writes[r->n_writes++] =
        (struct raft_write){seq, last, raft_log_term(&r->log, last), r->term, r->vote};
    return 0;
}

/* Copies (with blob refs) entries [from, to] into a fresh array. */
static struct raft_entry *raft_ready_copy(struct raft *r, raft_index from, raft_index to,
                                          bool fetch, size_t *n_out)
{
    size_t n = (size_t)(to - from + 1);
    struct raft_entry *v = calloc(n, sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        raft_index idx = from + i;
        const struct raft_lentry *e = raft_log_get(&r->log, idx);
        v[i] = (struct raft_entry){e->term, idx, e->type, NULL};
        if (fetch ? raft_payload(r, idx, &v[i].data) : (v[i].data = raft_blob_ref(e->data), 0)) {
            *n_out = i;
            return v;
        }
    }
    *n_out = n;
    return v;
}

static void raft_ready_persist(struct raft *r, struct raft_ready *rd)
{
    raft_index last = raft_log_last(&r->log);
    if (!r->hs_dirty && !r->truncate_from && !r->compact_pending && r->persist_from > last) return;
    if (r->persist_from <= last) {
        r->h.entries = raft_ready_copy(r, r->persist_from, last, false, &r->h.n_entries);
        if (!r->h.entries) {
            raft_fail(r, "out of memory handing out a write");
            return;
        }
    }
    uint64_t seq = r->next_seq + 1;
    if (raft_ready_push_write(r, seq)) {
        raft_fail(r, "out of memory handing out a write");
        return;
    }
    r->next_seq = seq;
    rd->persist_seq = seq;
    rd->hardstate_changed = r->hs_dirty;
    rd->truncate_from = r->truncate_from;
    rd->entries = r->h.entries;
    rd->n_entries = r->h.n_entries;
    if (r->compact_pending) {
        r->h.snap_conf = r->snap_conf;
        r->h.snap_conf_blob = raft_blob_ref(r->snap_conf_blob);
        rd->compact_to = r->log.offset;
        rd->snap_term = r->log.offset_term;
        rd->snap_conf = &r->h.snap_conf;
        rd->snap_conf_blob = r->h.snap_conf_blob;
        rd->snapshot_reset = r->reset_pending;
    }
    r->compact_pending = false;
    r->reset_pending = false;
    r->hs_dirty = false;
    r->truncate_from = 0;
    r->persist_from = last + 1;
}

static void raft_ready_committed(struct raft *r, struct raft_ready *rd)
{
    raft_index limit = raft_apply_limit(r);
    if (r->applied >= limit) return;
    raft_index to = limit;
    if (to - r->applied > RAFT__COMMITTED_MAX) to = r->applied + RAFT__COMMITTED_MAX;
    r->h.committed = raft_ready_copy(r, r->applied + 1, to, true, &r->h.n_committed);
    if (!r->h.committed) {
        raft_fail(r, "out of memory handing out committed entries");
        return;
    }
    r->applied += r->h.n_committed;
    rd->committed = r->h.committed;
    rd->n_committed = r->h.n_committed;
}

void raft_ready(struct raft *r, struct raft_ready *rd)
{
    ASSERT(!r->handed_out);
    memset(rd, 0, sizeof *rd);
    r->handed_out = true;
    if (!r->failed && r->role == RAFT_LEADER) raft_repl_flush(r);
    r->bcast_pending = false;
    r->hb_pending = false;
    if (!r->failed) raft_ready_persist(r, rd);
    rd->term = r->term;
    rd->vote = r->vote;
    rd->commit = r->commit;
    r->h.msgs = r->msgs;
    r->h.after = r->after;
    memset(&r->msgs, 0, sizeof r->msgs);
    memset(&r->after, 0, sizeof r->after);
    rd->msgs = r->h.msgs.v;
    rd->n_msgs = r->h.msgs.n;
    rd->msgs_after_persist = r->h.after.v;
    rd->n_msgs_after_persist = r->h.after.n;
    if (!r->failed) raft_ready_committed(r, rd);
    r->h.reads = r->read_out;
    r->h.n_reads = r->n_read_out;
    r->read_out = NULL;
    r->n_read_out = r->cap_read_out = 0;
    rd->reads = r->h.reads;
    rd->n_reads = r->h.n_reads;
    rd->soft_changed = r->role != r->rep_role || r->leader != r->rep_leader;
    rd->role = r->rep_role = r->role;
    rd->leader = r->rep_leader = r->leader;
}

/* Raft's persistence contract: the stable index moves only over what a completed write
 * covered, and only while the log still holds that exact entry (a later truncation may
 * have replaced it). */
void raft_persisted(struct raft *r, uint64_t persist_seq)
{
    ASSERT(r->n_writes > 0);
    ASSERT(r->writes[0].seq <= persist_seq);
    size_t done = 0;
    while (done < r->n_writes && r->writes[done].seq <= persist_seq) {
        const struct raft_write *w = &r->writes[done++];
        r->durable_term = w->hs_term;
        r->durable_vote = w->hs_vote;
        if (w->index > r->stable && w->index <= raft_log_last(&r->log) &&
            raft_log_term(&r->log, w->index) == w->term)
            r->stable = w->index;
    }
    memmove(r->writes, r->writes + done, (r->n_writes - done) * sizeof *r->writes);
    r->n_writes -= done;
    if (r->failed) return;
    if (r->role == RAFT_LEADER) raft_maybe_commit(r);
    if (r->role == RAFT_CANDIDATE) raft_election_on_persisted(r);
}
