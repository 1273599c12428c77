/* replication.c — log replication (Raft §5.3, Figure 2 AppendEntries): the leader's
 * per-peer progress with probing, pipelining and batching, the follower's consistency check
 * and truncation, and commitment by counting (Figure 8). No I/O. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

static void raft_progress_init(struct raft *r, struct raft_progress *pr, raft_id id)
{
    raft_index *inflight = pr->inflight;
    memset(pr, 0, sizeof *pr);
    pr->inflight = inflight;
    pr->id = id;
    pr->next = raft_log_last(&r->log) + 1;
    pr->state = RAFT_PR_PROBE;
    pr->recent_active = true; /* a fresh leader gives everyone one check-quorum period */
}

struct raft_progress *raft_progress_find(struct raft *r, raft_id id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id) return &r->prs[i];
    return NULL;
}

/* Brings the peer set in line with the latest configuration: new members get a progress;
 * removed ones are kept until they learnt that their removal committed. */
void raft_progress_sync(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs;) {
        struct raft_progress *pr = &r->prs[i];
        bool gone = !raft_configuration_find(&r->conf, pr->id);
        if (pr->removed && !gone) {
            /* Added back before its old progress was dropped: a new incarnation, perhaps with
             * a wiped log, so the old match proves nothing (heartbeats at it would be rejected
             * and the rejections ignored as stale: it would never catch up). */
            raft_progress_init(r, pr, pr->id);
            i++;
            continue;
        }
        if (gone && !pr->removed) pr->removed_at = r->conf_index;
        pr->removed = gone;
        /* Kept until it was told its removal committed (else, not knowing, it would keep
         * campaigning), or until a newer configuration. */
        bool told = r->commit >= r->conf_index && pr->match >= r->conf_index &&
                    pr->told_commit >= r->conf_index;
        if (pr->removed && (told || pr->removed_at != r->conf_index)) {
            raft_index *keep = pr->inflight;
            *pr = r->prs[r->n_prs - 1];
            r->prs[r->n_prs - 1].inflight = keep;
            r->n_prs--;
            continue;
        }
        i++;
    }
    for (uint32_t i = 0; i < r->conf.n; i++) {
        raft_id id = r->conf.members[i].id;
        if (id == r->cfg.id || raft_progress_find(r, id)) continue;
        ASSERT(r->n_prs < RAFT__PROGRESS_MAX);
        raft_progress_init(r, &r->prs[r->n_prs++], id);
    }
}

void raft_progress_reset_all(struct raft *r)
{
    r->n_prs = 0;
    raft_progress_sync(r);
}

static void raft_inflight_free_upto(struct raft *r, struct raft_progress *pr, raft_index idx)
{
    while (pr->in_count && pr->inflight[pr->in_head] <= idx) {
        pr->in_head = (pr->in_head + 1) % r->cfg.max_inflight;
        pr->in_count--;
    }
}

static void raft_inflight_add(struct raft *r, struct raft_progress *pr, raft_index idx)
{
    ASSERT(pr->in_count < r->cfg.max_inflight);
    pr->inflight[(pr->in_head + pr->in_count) % r->cfg.max_inflight] = idx;
    pr->in_count++;
}

static void raft_append_msg_init(struct raft *r, struct raft_msg *m, raft_id to, raft_index prev)
{
    memset(m, 0, sizeof *m);
    m->type = RAFT_MSG_APPEND;
    m->to = to;
    m->term = r->term;
    m->index = prev;
    m->log_term = raft_log_term(&r->log, prev);
    m->commit = r->commit;
    m->ctx = r->hb_seq;
}

/* Batching: up to max_append_entries entries and max_append_bytes payload bytes (one entry
 * always goes, however big). Returns the number of entries loaded into m. */
static uint32_t raft_append_load(struct raft *r, struct raft_msg *m, raft_index from)
{
    raft_index last = raft_log_last(&r->log);
    if (from > last) return 0;
    raft_index n = last - from + 1;
    if (n > r->cfg.max_append_entries) n = r->cfg.max_append_entries;
    m->entries = calloc((size_t)n, sizeof *m->entries);
    if (!m->entries) return 0;
    uint64_t bytes = 0;
    uint32_t k = 0;
    for (; k < n; k++) {
        raft_index idx = from + k;
        const struct raft_lentry *e = raft_log_get(&r->log, idx);
        struct raft_blob *b = NULL;
        if (raft_payload(r, idx, &b)) break;
        uint32_t len = b ? b->len : 0;
        if (k > 0 && bytes + len > r->cfg.max_append_bytes) {
            raft_blob_unref(b);
            break;
        }
        bytes += len;
        m->entries[k] = (struct raft_entry){e->term, idx, e->type, b};
    }
    m->n_entries = k;
    if (k == 0) {
        free(m->entries);
        m->entries = NULL;
    }
    return k;
}

/* A follower adopts min(leader commit, last index the append vouched for). */
static void raft_progress_told(struct raft *r, struct raft_progress *pr, raft_index vouched)
{
    raft_index c = r->commit < vouched ? r->commit : vouched;
    pr->sent_commit = r->commit;
    if (c > pr->told_commit) pr->told_commit = c;
}

/* Sends the next append to pr if its state allows; false when nothing was sent. */
static bool raft_send_append(struct raft *r, struct raft_progress *pr)
{
    raft_index last = raft_log_last(&r->log);
    if (pr->state == RAFT_PR_PROBE && pr->probe_sent) return false;
    if (pr->state == RAFT_PR_REPLICATE && (pr->in_count >= r->cfg.max_inflight || pr->next > last))
        return false;
    if (pr->state == RAFT_PR_SNAPSHOT) return false;
    if (pr->next <= r->log.offset) {
        raft_send_snapshot(r, pr);
        return false;
    }
    struct raft_msg m;
    raft_append_msg_init(r, &m, pr->id, pr->next - 1);
    uint32_t k = raft_append_load(r, &m, pr->next);
    if (r->failed) {
        for (uint32_t i = 0; i < m.n_entries; i++)
            raft_blob_unref(m.entries[i].data);
        free(m.entries);
        return false;
    }
    if (pr->state == RAFT_PR_REPLICATE) {
        if (k == 0) return false; /* out of memory: retried on the next ready */
        pr->next += k;
        raft_inflight_add(r, pr, pr->next - 1);
    } else {
        pr->probe_sent = true;
    }
    raft_progress_told(r, pr, m.index + k);
    raft_send_now(r, &m);
    return true;
}

/* A heartbeat: prev at the peer's match index, so it always passes the consistency check and
 * carries a commit index the peer can safely adopt (min(commit, match)). */
static void raft_send_heartbeat(struct raft *r, struct raft_progress *pr)
{
    struct raft_msg m;
    raft_append_msg_init(r, &m, pr->id, pr->match);
    raft_progress_told(r, pr, pr->match);
    raft_send_now(r, &m);
}

/* At each ready: push new entries to every peer (pipelined up to the window) and tell the
 * rest about a newer commit index. */
void raft_repl_flush(struct raft *r)
{
    ASSERT(r->role == RAFT_LEADER);
    for (uint32_t i = 0; i < r->n_prs && !r->failed; i++) {
        struct raft_progress *pr = &r->prs[i];
        bool sent = false;
        while (raft_send_append(r, pr))
            sent = true;
        if (!sent && (r->hb_pending || pr->sent_commit < r->commit)) raft_send_heartbeat(r, pr);
    }
}

/* Pipelined appends that are never acknowledged were lost (a failed link drops its queue, a
 * restarted follower forgets what it had not persisted): with a full window, or with nothing
 * new to send, the leader would wait forever. After RAFT_STALL_BEATS heartbeats without
 * progress, fall back to probing from the peer's match index. */
static void raft_repl_check_stall(struct raft_progress *pr)
{
    if (pr->state != RAFT_PR_REPLICATE || pr->in_count == 0 || pr->match != pr->stall_match) {
        pr->stall_match = pr->match;
        pr->stall_beats = 0;
        return;
    }
    if (++pr->stall_beats < RAFT_STALL_BEATS) return;
    pr->state = RAFT_PR_PROBE;
    pr->next = pr->match + 1;
    pr->probe_sent = false;
    pr->in_count = 0;
    pr->in_head = 0;
    pr->stall_beats = 0;
}

void raft_repl_heartbeat(struct raft *r)
{
    raft_progress_sync(r);
    /* Every round gets a new sequence number: an answer echoing it is known to be newer than
     * any answer to an earlier round (ReadIndex confirmation; stale-refusal detection). */
    r->hb_seq++;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        if (!raft_bug(r, RAFT_BUG_NO_STALL_PROBE)) raft_repl_check_stall(pr);
        raft_send_heartbeat(r, pr);
        /* A lost probe is retried once per heartbeat interval. */
        if (pr->state == RAFT_PR_PROBE) pr->probe_sent = false;
    }
    r->bcast_pending = true;
}

/* Figure 8: only an entry of the current term is committed by counting replicas; earlier
 * entries commit with it. The leader counts itself only up to its stable index. */
void raft_maybe_commit(struct raft *r)
{
    raft_index match[RAFT_MAX_NODES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct raft_member *m = &r->conf.members[i];
        if (!m->voter) continue;
        if (m->id == r->cfg.id) {
            match[n++] = r->stable;
        } else {
            const struct raft_progress *pr = raft_progress_find(r, m->id);
            match[n++] = pr ? pr->match : 0;
        }
    }
    if (n == 0) return;
    for (uint32_t i = 1; i < n; i++) /* insertion sort, descending */
        for (uint32_t j = i; j > 0 && match[j] > match[j - 1]; j--) {
            raft_index t = match[j];
            match[j] = match[j - 1];
            match[j - 1] = t;
        }
    raft_index q = match[raft_quorum(r) - 1];
    if (q <= r->commit) return;
    if (raft_log_term(&r->log, q) != r->term && !raft_bug(r, RAFT_BUG_COMMIT_OLD_TERM)) return;
    r->commit = q;
    r->bcast_pending = true;
    raft_commit_advanced(r);
}

void raft_commit_advanced(struct raft *r)
{
    if (r->role != RAFT_LEADER) return;
    raft_membership_on_commit(r);
    if (r->role != RAFT_LEADER) return;
    raft_reads_on_own_commit(r);
    raft_membership_maybe_promote(r);
}

static void raft_append_reply(struct raft *r, const struct raft_msg *m, raft_index index,
                              bool reject, raft_index hint, raft_term hint_term)
{
    struct raft_msg resp;
    memset(&resp, 0, sizeof resp);
    resp.type = RAFT_MSG_APPEND_RESP;
    resp.to = m->from;
    resp.term = r->term;
    resp.index = index;
    resp.reject = reject;
    resp.hint = hint;
    resp.log_term = hint_term;
    resp.ctx = m->ctx;
    raft_send(r, &resp);
}

/* A stale leader (lower term) hears our term and steps down. */
void raft_send_append_reject_stale(struct raft *r, const struct raft_msg *m)
{
    raft_append_reply(r, m, m->index, true, 0, 0);
}

/* Fast backtracking: the hint is the last index at or below the rejected prev whose term is
 * no greater than the leader's prev term, so the leader skips a whole term per round trip.
 * Entries at or below commit match the leader, so the scan stops there. */
static void raft_append_reject(struct raft *r, const struct raft_msg *m)
{
    raft_index hint = m->index < raft_log_last(&r->log) ? m->index : raft_log_last(&r->log);
    while (hint > r->commit && raft_log_term(&r->log, hint) > m->log_term)
        hint--;
    raft_append_reply(r, m, m->index, true, hint, raft_log_term(&r->log, hint));
}

/* Figure 2, AppendEntries receiver. The caller made us a follower of m->from in m->term. */
int raft_recv_append(struct raft *r, const struct raft_msg *m)
{
    if (m->index < r->commit) {
        /* Everything up to commit matches the leader already. */
        raft_append_reply(r, m, r->commit, false, 0, 0);
        return 0;
    }
    if (m->index > raft_log_last(&r->log) || raft_log_term(&r->log, m->index) != m->log_term) {
        raft_append_reject(r, m);
        return 0;
    }
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index <= raft_log_last(&r->log)) {
            if (raft_log_term(&r->log, e->index) == e->term) continue;
            raft_truncate_from(r, e->index); /* asserts e->index > commit */
        }
        if (raft_append_entry(r, e->term, e->type, raft_blob_ref(e->data), false)) {
            raft_fail(r, "out of memory appending entries");
            return ERR_NOMEM;
        }
    }
    raft_index new_last = m->index + m->n_entries;
    raft_index c = m->commit < new_last ? m->commit : new_last;
    if (c > r->commit) r->commit = c;
    raft_append_reply(r, m, new_last, false, 0, 0);
    return 0;
}

static void raft_append_resp_reject(struct raft *r, struct raft_progress *pr,
                                    const struct raft_msg *m)
{
    if (m->index <= pr->match) {
        /* Usually stale: that prefix is known to match. But within our term a follower's
         * matching prefix only shrinks if it lost durable state (its disk was wiped): a refusal
         * of an append sent in a later heartbeat round than the answer that set match, showing
         * a shorter log, says exactly that. Forget the match and probe again — always safe,
         * since match only ever raises the commit index, which never decreases. (A late,
         * reordered refusal can look the same; it costs one probe.) Without this a wiped,
         * idle follower would stay empty forever. */
        if (!(m->ctx > pr->match_ctx && m->hint < pr->match)) return;
        raft_tracef(r, "%llx answered with a log shorter than its match %llu: lost its state?",
                    (unsigned long long)pr->id, (unsigned long long)pr->match);
        pr->match = 0;
    }
    if (pr->state == RAFT_PR_SNAPSHOT) return; /* a snapshot is on its way */
    if (pr->state == RAFT_PR_PROBE && m->index != pr->next - 1)
        return; /* answer to an older probe */
    raft_index j = m->hint < raft_log_last(&r->log) ? m->hint : raft_log_last(&r->log);
    while (j > pr->match && raft_log_term(&r->log, j) > m->log_term)
        j--;
    raft_index next = j + 1;
    if (next >= m->index) next = m->index; /* always move back past the rejected prev */
    if (next < pr->match + 1) next = pr->match + 1;
    pr->next = next;
    pr->state = RAFT_PR_PROBE;
    pr->probe_sent = false;
    pr->in_count = 0;
    pr->in_head = 0;
}

static void raft_append_resp_ok(struct raft *r, struct raft_progress *pr, const struct raft_msg *m)
{
    bool updated = m->index > pr->match;
    if (updated) {
        pr->match = m->index;
        pr->match_ctx = m->ctx;
    }
    if (pr->state == RAFT_PR_SNAPSHOT) {
        /* The peer got there (the installed snapshot, or appends that were in flight). */
        if (pr->match >= pr->pending_snapshot) {
            pr->state = RAFT_PR_REPLICATE;
            pr->next = pr->match + 1;
            pr->in_count = 0;
            pr->in_head = 0;
        } else if (pr->next <= pr->match) {
            pr->next = pr->match + 1;
        }
    } else if (pr->state == RAFT_PR_PROBE) {
        /* The probe (or a newer append) landed: switch to pipelining from match. */
        if (updated || m->index + 1 >= pr->next) {
            pr->state = RAFT_PR_REPLICATE;
            pr->next = pr->match + 1;
            pr->in_count = 0;
            pr->in_head = 0;
        }
        pr->probe_sent = false;
    } else {
        if (pr->next < m->index + 1) pr->next = m->index + 1;
        raft_inflight_free_upto(r, pr, m->index);
    }
    if (updated) {
        raft_maybe_commit(r);
        if (r->role == RAFT_LEADER) raft_membership_maybe_promote(r);
    }
    if (r->role == RAFT_LEADER) raft_transfer_on_match(r, pr);
}

int raft_recv_append_resp(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_LEADER) return 0;
    struct raft_progress *pr = raft_progress_find(r, m->from);
    if (!pr) return 0;
    if (m->index > raft_log_last(&r->log)) return ERR_PROTO; /* claims entries we never had */
    pr->recent_active = true;
    if (m->ctx > pr->acked_ctx && m->ctx <= r->hb_seq) pr->acked_ctx = m->ctx;
    if (m->reject)
        raft_append_resp_reject(r, pr, m);
    else
        raft_append_resp_ok(r, pr, m);
    if (r->role != RAFT_LEADER) return 0;
    r->bcast_pending = true;
    raft_reads_check(r);
    return 0;
}
