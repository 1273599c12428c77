/* snapshot.c — log compaction and snapshots (Raft §7, Figure 13). The caller's state machine
 * is the snapshot: the core only keeps the snapshot point (index, term, configuration as of
 * it), forgets entries at or below it, asks its caller to stream the state machine to a peer
 * that needs forgotten entries, and adopts a streamed state on a follower. No I/O. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

/* Configuration as of idx (offset <= idx <= last): the latest CONFIG entry at or below idx,
 * else the snapshot's. *at: the index of the entry it came from. */
static void raft_conf_at(const struct raft *r, raft_index idx, struct raft_configuration *out,
                         raft_index *at)
{
    if (r->conf_index <= idx) {
        *out = r->conf;
        *at = r->conf_index;
        return;
    }
    for (raft_index i = idx; i > r->log.offset; i--) {
        const struct raft_lentry *e = raft_log_get(&r->log, i);
        if (e->type != RAFT_ENTRY_CONFIG) continue;
        int rv = raft_configuration_decode(e->data->data, e->data->len, out);
        ASSERT(rv == 0); /* validated before appending */
        *at = i;
        return;
    }
    *out = r->snap_conf;
    *at = r->snap_conf_index;
}

/* Records c (from entry conf_at) as the configuration of the snapshot point about to be set. */
static int raft_snap_conf_set(struct raft *r, const struct raft_configuration *c,
                              raft_index conf_at)
{
    struct raft_blob *b = NULL;
    int rv = raft_configuration_encode(c, &b);
    if (rv) return rv;
    raft_blob_unref(r->snap_conf_blob);
    r->snap_conf_blob = b;
    r->snap_conf = *c;
    r->snap_conf_index = conf_at;
    r->compact_pending = true;
    return 0;
}

int raft_compact(struct raft *r, raft_index upto)
{
    if (r->failed) return ERR_FAILED;
    if (upto > r->applied || upto <= r->log.offset) return ERR_INVALID;
    /* applied <= stable: every entry dropped here is durable (and in the state machine). */
    struct raft_configuration c;
    raft_index at = 0;
    raft_conf_at(r, upto, &c, &at);
    int rv = raft_snap_conf_set(r, &c, at);
    if (rv) return rv;
    raft_log_compact(&r->log, upto);
    raft_tracef(r, "compacted the log up to %llu (term %llu)", (unsigned long long)upto,
                (unsigned long long)r->log.offset_term);
    return 0;
}

int raft_snapshot_meta(const struct raft *r, raft_index index, raft_term *term_out,
                       struct raft_configuration *conf_out)
{
    if (index < r->log.offset || index > r->commit || index == 0) return ERR_NOTFOUND;
    if (term_out) *term_out = raft_log_term(&r->log, index);
    if (conf_out) {
        raft_index at = 0;
        raft_conf_at(r, index, conf_out, &at);
    }
    return 0;
}

/* ---- Leader side ------------------------------------------------------------------------- */

/* pr needs entries at or below the snapshot index: ask the caller to stream a snapshot. */
void raft_send_snapshot(struct raft *r, struct raft_progress *pr)
{
    ASSERT(pr->next <= r->log.offset);
    pr->state = RAFT_PR_SNAPSHOT;
    pr->pending_snapshot = r->log.offset;
    pr->next = r->log.offset + 1;
    pr->snapshot_ticks = 0;
    pr->probe_sent = false;
    pr->in_count = 0;
    pr->in_head = 0;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_SNAPSHOT;
    m.to = pr->id;
    m.term = r->term;
    m.index = r->log.offset;
    m.log_term = r->log.offset_term;
    raft_tracef(r, "peer %llx needs a snapshot at %llu", (unsigned long long)pr->id,
                (unsigned long long)m.index);
    raft_send_now(r, &m);
}

/* Back to probing from where the peer is known to be (or the snapshot point): the next
 * heartbeat sends the probe, whose rejection asks for a snapshot again if still needed. */
static void raft_snapshot_abort(struct raft *r, struct raft_progress *pr)
{
    pr->state = RAFT_PR_PROBE;
    pr->next = (pr->match > r->log.offset ? pr->match : r->log.offset) + 1;
    pr->probe_sent = true;
}

/* A lost report must not wedge the peer forever. */
void raft_snapshot_tick(struct raft *r)
{
    unsigned limit = r->cfg.snapshot_timeout_ticks;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        if (pr->state != RAFT_PR_SNAPSHOT || ++pr->snapshot_ticks < limit) continue;
        raft_tracef(r, "snapshot to %llx timed out", (unsigned long long)pr->id);
        raft_snapshot_abort(r, pr);
    }
}

void raft_report_snapshot(struct raft *r, raft_id peer, raft_index index, bool ok)
{
    if (r->failed || r->role != RAFT_LEADER) return;
    struct raft_progress *pr = raft_progress_find(r, peer);
    if (!pr || pr->state != RAFT_PR_SNAPSHOT || index > raft_log_last(&r->log)) return;
    raft_tracef(r, "snapshot at %llu to %llx: %s", (unsigned long long)index,
                (unsigned long long)peer, ok ? "installed" : "failed");
    pr->recent_active = true;
    if (!ok) {
        raft_snapshot_abort(r, pr);
        return;
    }
    bool updated = index > pr->match;
    if (updated) {
        pr->match = index;
        pr->match_ctx = r->hb_seq; /* refusals of earlier rounds are stale */
    }
    pr->state = RAFT_PR_REPLICATE;
    pr->next = pr->match + 1;
    pr->in_count = 0;
    pr->in_head = 0;
    r->bcast_pending = true;
    if (updated) {
        raft_maybe_commit(r);
        if (r->role == RAFT_LEADER) raft_membership_maybe_promote(r);
    }
    if (r->role == RAFT_LEADER) raft_transfer_on_match(r, pr);
}

/* ---- Follower side ----------------------------------------------------------------------- */

bool raft_snapshot_acceptable(const struct raft *r, raft_term term, raft_index index)
{
    if (r->failed || index == 0 || term < r->term) return false;
    if (r->role == RAFT_LEADER && term == r->term) return false;
    if (raft_bug(r, RAFT_BUG_SNAPSHOT_OLD)) return index > r->log.offset;
    return index > r->commit;
}

/* Acknowledgements queued for entries the reset discards would claim what never gets written:
 * they go. (The state up to index is durable in the caller's state machine.) */
static void raft_drop_acks_beyond(struct raft *r, raft_index index)
{
    size_t k = 0;
    for (size_t i = 0; i < r->after.n; i++) {
        struct raft_msg *m = &r->after.v[i];
        if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index > index) {
            ASSERT(m->n_entries == 0);
            continue;
        }
        r->after.v[k++] = *m;
    }
    r->after.n = k;
}

/* Figure 13 step 6-7: a log holding the snapshot's last entry keeps what follows it; any
 * other log is discarded whole. */
static void raft_snapshot_adopt_log(struct raft *r, raft_index index, raft_term index_term,
                                    const struct raft_configuration *conf)
{
    bool keep = index <= raft_log_last(&r->log) && raft_log_term(&r->log, index) == index_term;
    if (keep) {
        raft_log_compact(&r->log, index);
        if (r->stable < index) r->stable = index;
        if (r->persist_from <= index) r->persist_from = index + 1;
    } else {
        raft_log_reset(&r->log, index, index_term);
        r->stable = index;
        r->persist_from = index + 1;
        r->truncate_from = index + 1;
        /* Writes in flight covered entries that are gone: they no longer move stable. */
        for (size_t i = 0; i < r->n_writes; i++)
            r->writes[i].index = 0;
        raft_drop_acks_beyond(r, index);
    }
    if (!keep || r->conf_index <= index) {
        r->conf = *conf;
        r->conf_index = index;
    }
    r->snap_conf_index = index;
    raft_tracef(r, "installed a snapshot at %llu (term %llu), %s the log suffix",
                (unsigned long long)index, (unsigned long long)index_term,
                keep ? "keeping" : "discarding");
}

int raft_install_snapshot(struct raft *r, raft_id from, raft_term term, raft_index index,
                          raft_term index_term, const struct raft_configuration *conf)
{
    if (r->failed) return ERR_FAILED;
    if (from == 0 || from == r->cfg.id || index_term == 0 || index_term > term || !conf)
        return ERR_INVALID;
    if (!raft_snapshot_acceptable(r, term, index)) return ERR_INVALID;
    int rv = raft_snap_conf_set(r, conf, index);
    if (rv) return rv;
    if (term > r->term || r->role != RAFT_FOLLOWER || r->leader != from)
        raft_become_follower(r, term, from, "installed a snapshot");
    r->election_elapsed = 0;
    raft_snapshot_adopt_log(r, index, index_term, conf);
    r->commit = index;
    r->applied = index;
    r->hs_dirty = true;
    r->reset_pending = true;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_RESP;
    m.to = from;
    m.term = r->term;
    m.index = index;
    raft_send_after_persist(r, &m);
    return 0;
}
