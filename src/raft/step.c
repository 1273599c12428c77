/* step.c — one inbound message: validation (peers' bytes are input, never trusted to be
 * well formed), the term rules common to every message, and dispatch; plus the invariant
 * checker. No I/O. */
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

static int raft_validate(const struct raft *r, const struct raft_msg *m)
{
    if (!m || m->type < RAFT_MSG_PREVOTE || m->type >= RAFT_MSG__COUNT) return ERR_INVALID;
    /* SNAPSHOT is the core's request to its own caller, never a peer's message. */
    if (m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_SNAPSHOT_RESP) return ERR_INVALID;
    if (m->from == 0 || m->from == r->cfg.id || m->to != r->cfg.id || m->term == 0)
        return ERR_INVALID;
    if (m->type == RAFT_MSG_APPEND) {
        if (m->index > UINT64_MAX - RAFT__APPEND_ENTRIES_MAX - 1) return ERR_INVALID;
        if (m->n_entries > RAFT__APPEND_ENTRIES_MAX ||
            !raft_entries_well_formed(m->entries, m->n_entries, m->index + 1, m->log_term, m->term))
            return ERR_INVALID;
        return 0;
    }
    if (m->n_entries) return ERR_INVALID;
    return 0;
}

/* The term rules of Figure 2 ("if RPC request or response contains term T > currentTerm:
 * set currentTerm = T, convert to follower") with PreVote's and stickiness' exceptions.
 * Returns false when the message is consumed here. */
static bool raft_step_term(struct raft *r, const struct raft_msg *m)
{
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject))
            return true; /* a prevote's term is hypothetical */
        /* A transfer's vote is the leader's own wish: the lease does not apply. */
        if (m->type == RAFT_MSG_VOTE && !m->transfer && r->cfg.check_quorum && raft_in_lease(r)) {
            raft_tracef(r, "ignored vote request from %llx at term %llu: leader is alive",
                        (unsigned long long)m->from, (unsigned long long)m->term);
            return false;
        }
        /* Figure 2 resets the election timer only for a live leader or a granted vote: a
         * candidate that cannot win must not keep better-placed nodes from campaigning. */
        bool keep = m->type == RAFT_MSG_VOTE && r->role != RAFT_LEADER;
        unsigned elapsed = r->election_elapsed, timeout = r->election_timeout;
        raft_become_follower(r, m->term, m->type == RAFT_MSG_APPEND ? m->from : 0,
                             "saw a higher term");
        if (keep) {
            r->election_elapsed = elapsed;
            r->election_timeout = timeout;
        }
        return true;
    }
    if (m->term < r->term) {
        /* Answer requests with our term so a stale leader or candidate steps down. */
        if (m->type == RAFT_MSG_APPEND) {
            raft_send_append_reject_stale(r, m);
        } else if (m->type == RAFT_MSG_PREVOTE) {
            raft_recv_prevote(r, m);
        } else if (m->type == RAFT_MSG_VOTE) {
            struct raft_msg resp;
            memset(&resp, 0, sizeof resp);
            resp.type = RAFT_MSG_VOTE_RESP;
            resp.to = m->from;
            resp.term = r->term;
            resp.reject = true;
            raft_send(r, &resp);
        }
        return false;
    }
    return true;
}

static int raft_step_append(struct raft *r, const struct raft_msg *m)
{
    if (r->role == RAFT_LEADER) return ERR_PROTO; /* two leaders in one term: a peer is broken */
    if (r->role != RAFT_FOLLOWER || r->leader != m->from)
        raft_become_follower(r, r->term, m->from, "heard from the leader");
    r->election_elapsed = 0;
    return raft_recv_append(r, m);
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    int rv = raft_validate(r, m);
    if (rv) return rv;
    if (r->failed) return ERR_FAILED;
    if (m->type == RAFT_MSG_READINDEX) return raft_recv_readindex(r, m);
    if (m->type == RAFT_MSG_READINDEX_RESP) return raft_recv_readindex_resp(r, m);
    if (!raft_step_term(r, m)) return 0;
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
        return raft_recv_prevote(r, m);
    case RAFT_MSG_VOTE:
        return raft_recv_vote(r, m);
    case RAFT_MSG_PREVOTE_RESP:
    case RAFT_MSG_VOTE_RESP:
        return raft_recv_vote_resp(r, m);
    case RAFT_MSG_APPEND:
        return raft_step_append(r, m);
    case RAFT_MSG_APPEND_RESP:
        return raft_recv_append_resp(r, m);
    case RAFT_MSG_TIMEOUT_NOW:
        return raft_recv_timeout_now(r, m);
    }
    return ERR_INVALID;
}

static void raft_check_log(const struct raft *r)
{
    const struct raft_log *l = &r->log;
    raft_term prev = l->offset_term;
    uint64_t bytes = 0;
    for (size_t i = 0; i < l->n; i++) {
        ASSERT(l->v[i].term >= prev);
        ASSERT(l->v[i].term <= r->term);
        ASSERT(!(l->v[i].absent && l->v[i].data));
        ASSERT(l->v[i].type != RAFT_ENTRY_CONFIG || l->v[i].data);
        bytes += l->v[i].data ? l->v[i].data->len : 0;
        prev = l->v[i].term;
    }
    ASSERT(bytes == l->bytes_held);
}

void raft_check_invariants(const struct raft *r)
{
    raft_index last = raft_log_last(&r->log);
    ASSERT(r->commit <= last);
    ASSERT(r->stable <= last);
    ASSERT(r->applied <= r->commit);
    ASSERT(r->applied <= r->stable);
    ASSERT(r->stable < r->persist_from);
    ASSERT(r->persist_from <= last + 1);
    ASSERT(r->conf_index <= last);
    ASSERT(r->conf_index <= r->log.offset ||
           raft_log_get(&r->log, r->conf_index)->type == RAFT_ENTRY_CONFIG);
    if (r->conf_index <= r->log.offset) ASSERT(raft_conf_equal(&r->conf, &r->snap_conf));
    ASSERT(r->vote == 0 || r->term > 0);
    /* The snapshot point is in the state machine: applied, committed and durable. */
    ASSERT(r->log.offset <= r->applied);
    ASSERT(r->log.offset <= r->stable);
    ASSERT(r->snap_conf_index <= r->log.offset);
    ASSERT(r->log.offset == 0 || (r->snap_conf.n > 0 && r->snap_conf_blob));
    ASSERT(r->log.offset_term <= r->term);
    ASSERT(!r->transferee || r->role == RAFT_LEADER);
    raft_check_log(r);
    if (r->role == RAFT_LEADER) {
        ASSERT(r->leader == r->cfg.id);
        ASSERT(r->vote == r->cfg.id);
        /* A leader is a voter, or it is removing itself and that change is uncommitted. */
        ASSERT(raft_conf_is_voter(&r->conf, r->cfg.id) || r->conf_index > r->commit);
        for (uint32_t i = 0; i < r->n_prs; i++) {
            ASSERT(r->prs[i].match < r->prs[i].next);
            ASSERT(r->prs[i].next <= last + 1);
            ASSERT(r->prs[i].in_count <= r->cfg.max_inflight);
            ASSERT(r->prs[i].state != RAFT_PR_SNAPSHOT || r->prs[i].in_count == 0);
        }
        if (r->transferee) ASSERT(raft_conf_is_voter(&r->conf, r->transferee));
    } else {
        ASSERT(r->n_prs == 0);
        ASSERT(r->n_reads == 0);
    }
    if (r->role == RAFT_CANDIDATE) ASSERT(r->vote == r->cfg.id);
    if (r->role == RAFT_CANDIDATE || r->role == RAFT_PRECANDIDATE) {
        ASSERT(r->leader == 0);
        ASSERT(raft_promotable(r)); /* learners and known-removed nodes never campaign */
    }
}
