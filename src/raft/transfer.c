/* transfer.c — leadership transfer (thesis §3.10): the leader stops taking proposals, brings
 * the target's log up to date, then tells it to campaign at once (TIMEOUT_NOW). The target
 * wins the election in the next term (its log is at least as up to date as any), and the old
 * leader steps down on its vote request. Abandoned after an election timeout. No I/O. */
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

static void raft_send_timeout_now(struct raft *r, raft_id to)
{
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_TIMEOUT_NOW;
    m.to = to;
    m.term = r->term;
    m.index = raft_log_last(&r->log);
    raft_tracef(r, "transfer: %llx is up to date, sending TIMEOUT_NOW", (unsigned long long)to);
    raft_send_now(r, &m);
}

int raft_transfer_leadership(struct raft *r, raft_id to)
{
    if (r->failed) return ERR_FAILED;
    if (r->role != RAFT_LEADER) return ERR_NOTLEADER;
    if (to == 0 || to == r->cfg.id) return ERR_INVALID;
    const struct raft_member *m = raft_configuration_find(&r->conf, to);
    if (!m) return ERR_NOTFOUND;
    if (!m->voter) return ERR_INVALID;
    if (r->transferee) return r->transferee == to ? 0 : ERR_BUSY;
    r->transferee = to;
    r->transfer_elapsed = 0;
    raft_tracef(r, "transferring leadership to %llx", (unsigned long long)to);
    struct raft_progress *pr = raft_progress_find(r, to);
    ASSERT(pr);
    raft_transfer_on_match(r, pr);
    r->bcast_pending = true; /* catch it up now */
    return 0;
}

raft_id raft_transfer_candidate(const struct raft *r)
{
    if (r->role != RAFT_LEADER) return 0;
    raft_id best = 0;
    raft_index best_match = 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct raft_member *m = &r->conf.members[i];
        if (!m->voter || m->id == r->cfg.id) continue;
        const struct raft_progress *pr = NULL;
        for (uint32_t k = 0; k < r->n_prs && !pr; k++)
            if (r->prs[k].id == m->id) pr = &r->prs[k];
        if (!pr || !pr->recent_active) continue;
        if (best == 0 || pr->match > best_match) {
            best = m->id;
            best_match = pr->match;
        }
    }
    return best;
}

/* Each acknowledgement from the target while it has the whole log (re)sends TIMEOUT_NOW: a
 * lost one is retried at the next heartbeat round; a late duplicate carries an old term. */
void raft_transfer_on_match(struct raft *r, const struct raft_progress *pr)
{
    if (r->transferee == 0 || pr->id != r->transferee) return;
    if (pr->match != raft_log_last(&r->log) && !raft_bug(r, RAFT_BUG_TRANSFER_ANY_LOG)) return;
    raft_send_timeout_now(r, pr->id);
}

void raft_transfer_tick(struct raft *r)
{
    if (r->transferee == 0) return;
    if (++r->transfer_elapsed < r->cfg.election_ticks_max) return;
    raft_tracef(r, "transfer to %llx abandoned: still leader after an election timeout",
                (unsigned long long)r->transferee);
    r->transferee = 0;
}

/* The target side. The caller applied the term rules: m->term == our term, so m->from is
 * this term's leader. */
int raft_recv_timeout_now(struct raft *r, const struct raft_msg *m)
{
    (void)m;
    raft_campaign_now(r);
    return 0;
}
