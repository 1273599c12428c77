/* election.c — roles and elections: randomized timers, PreVote, votes (Raft §5.2, §5.4.1;
 * thesis §9.6 PreVote, §6.2 CheckQuorum and leader stickiness). No I/O: messages are queued
 * through ready.c. */
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

void raft_election_reset_timer(struct raft *r)
{
    unsigned span = r->cfg.election_ticks_max - r->cfg.election_ticks_min + 1;
    r->election_elapsed = 0;
    r->election_timeout = r->cfg.election_ticks_min + (unsigned)(raft_rand(r) % span);
}

static void raft_set_term(struct raft *r, raft_term term)
{
    ASSERT(term >= r->term);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->hs_dirty = true;
    }
}

static void raft_tally_reset(struct raft *r)
{
    r->n_granted = 0;
    r->n_refused = 0;
}

void raft_become_follower(struct raft *r, raft_term term, raft_id leader, const char *why)
{
    enum raft_role was = r->role;
    raft_set_term(r, term);
    if (was == RAFT_LEADER) {
        raft_reads_fail_all(r);
        r->n_prs = 0;
        r->transferee = 0;
        raft_tracef(r, "stepped down at term %llu: %s", (unsigned long long)r->term, why);
    }
    r->role = RAFT_FOLLOWER;
    if (r->leader != leader && leader)
        raft_tracef(r, "following leader %llx at term %llu", (unsigned long long)leader,
                    (unsigned long long)r->term);
    r->leader = leader;
    raft_tally_reset(r);
    raft_election_reset_timer(r);
}

static void raft_become_leader(struct raft *r)
{
    ASSERT(r->role == RAFT_CANDIDATE);
    r->role = RAFT_LEADER;
    r->leader = r->cfg.id;
    r->heartbeat_elapsed = 0;
    r->quorum_elapsed = 0;
    raft_tally_reset(r);
    raft_progress_reset_all(r);
    raft_tracef(r, "became leader at term %llu", (unsigned long long)r->term);
    /* Raft §8: a no-op of the new term lets the leader learn what is committed. */
    if (raft_append_entry(r, r->term, RAFT_ENTRY_NOOP, NULL, false)) {
        raft_fail(r, "out of memory appending the leader's no-op");
        return;
    }
    r->bcast_pending = true;
    raft_maybe_commit(r);
}

/* Counts a vote (or prevote) answer from a voter of the latest configuration. */
static void raft_tally(struct raft *r, raft_id from, bool granted)
{
    if (!raft_conf_is_voter(&r->conf, from)) return;
    for (uint32_t i = 0; i < r->n_granted; i++)
        if (r->granted[i] == from) return;
    for (uint32_t i = 0; i < r->n_refused; i++)
        if (r->refused[i] == from) return;
    if (granted && r->n_granted < RAFT_MAX_NODES)
        r->granted[r->n_granted++] = from;
    else if (!granted && r->n_refused < RAFT_MAX_NODES)
        r->refused[r->n_refused++] = from;
}

static void raft_campaign_send(struct raft *r, uint8_t type, raft_term term, bool transfer)
{
    raft_index last = raft_log_last(&r->log);
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct raft_member *m = &r->conf.members[i];
        if (!m->voter || m->id == r->cfg.id) continue;
        struct raft_msg msg;
        memset(&msg, 0, sizeof msg);
        msg.type = type;
        msg.to = m->id;
        msg.term = term;
        msg.index = last;
        msg.log_term = raft_log_term(&r->log, last);
        msg.transfer = transfer;
        raft_send_after_persist(r, &msg);
    }
}

static void raft_check_tally(struct raft *r);

static void raft_become_candidate(struct raft *r, bool transfer)
{
    raft_set_term(r, r->term + 1);
    r->vote = r->cfg.id;
    r->hs_dirty = true;
    r->role = RAFT_CANDIDATE;
    r->leader = 0;
    raft_tally_reset(r);
    raft_election_reset_timer(r);
    raft_tracef(r, "campaigning at term %llu", (unsigned long long)r->term);
    /* Its own vote counts once durable (raft_election_on_persisted): a single voter that
     * crashed before that could otherwise lead twice in one term. */
    raft_campaign_send(r, RAFT_MSG_VOTE, r->term, transfer);
}

void raft_election_on_persisted(struct raft *r)
{
    ASSERT(r->role == RAFT_CANDIDATE);
    if (r->durable_term != r->term || r->durable_vote != r->cfg.id) return;
    raft_tally(r, r->cfg.id, true);
    raft_check_tally(r);
}

static void raft_become_precandidate(struct raft *r)
{
    r->role = RAFT_PRECANDIDATE;
    r->leader = 0;
    raft_tally_reset(r);
    raft_election_reset_timer(r);
    raft_tracef(r, "pre-campaigning for term %llu", (unsigned long long)r->term + 1);
    raft_tally(r, r->cfg.id, true);
    raft_campaign_send(r, RAFT_MSG_PREVOTE, r->term + 1, false);
    raft_check_tally(r);
}

static void raft_check_tally(struct raft *r)
{
    uint32_t q = raft_quorum(r);
    if (r->n_granted >= q) {
        if (r->role == RAFT_PRECANDIDATE)
            raft_become_candidate(r, false);
        else if (r->role == RAFT_CANDIDATE)
            raft_become_leader(r);
    } else if (r->n_refused >= q) {
        raft_become_follower(r, r->term, 0, "election lost");
    }
}

/* Who may campaign: a voter of its own latest configuration; and (thesis §4.2.2, Figure 4.6)
 * a node whose own removal is appended but not known committed, since the remaining members
 * may need it to commit that removal (it never counts its own vote then). Learners and nodes
 * whose removal is committed never campaign. */
bool raft_promotable(const struct raft *r)
{
    if (raft_conf_is_voter(&r->conf, r->cfg.id)) return true;
    return r->conf_index > r->commit && !raft_configuration_find(&r->conf, r->cfg.id) &&
           raft_conf_voters(&r->conf) > 0;
}

/* Only a promotable node campaigns. */
static void raft_campaign(struct raft *r)
{
    /* The timer stays expired, so the lease is over and prevotes/votes are answered. */
    if (!raft_promotable(r)) return;
    if (r->cfg.prevote)
        raft_become_precandidate(r);
    else
        raft_become_candidate(r, false);
}

/* Leadership transfer (thesis 3.10): the leader asked us to take over. No PreVote (the leader
 * is alive, so it would be refused); the votes carry the transfer flag past the lease. */
void raft_campaign_now(struct raft *r)
{
    if (r->role == RAFT_LEADER || !raft_promotable(r)) return;
    raft_tracef(r, "leadership handed over: campaigning now");
    raft_become_candidate(r, true);
}

void raft_tick_election(struct raft *r)
{
    if (r->election_elapsed < r->election_timeout) r->election_elapsed++;
    if (r->election_elapsed >= r->election_timeout) raft_campaign(r);
}

/* CheckQuorum (thesis §6.2): a leader that has not heard from a majority of voters for an
 * election timeout steps down, so a partitioned leader stops serving. */
static void raft_check_quorum(struct raft *r)
{
    uint32_t active = raft_conf_is_voter(&r->conf, r->cfg.id) ? 1 : 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *pr = &r->prs[i];
        if (pr->recent_active && raft_conf_is_voter(&r->conf, pr->id)) active++;
        pr->recent_active = false;
    }
    if (active < raft_quorum(r))
        raft_become_follower(r, r->term, 0, "check quorum: no majority heard from");
}

void raft_tick_leader(struct raft *r)
{
    raft_snapshot_tick(r);
    raft_transfer_tick(r);
    if (r->role != RAFT_LEADER) return;
    if (++r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        raft_repl_heartbeat(r);
    }
    if (++r->quorum_elapsed >= r->cfg.election_ticks_min) {
        r->quorum_elapsed = 0;
        if (r->cfg.check_quorum) raft_check_quorum(r);
    }
}

/* Raft §5.4.1: the candidate's log is at least as up to date as ours. */
bool raft_log_up_to_date(const struct raft *r, raft_index last_index, raft_term last_term)
{
    raft_index my_last = raft_log_last(&r->log);
    raft_term my_term = raft_log_term(&r->log, my_last);
    return last_term > my_term || (last_term == my_term && last_index >= my_last);
}

/* Heard from a live leader within the minimum election timeout (a leader is its own). */
bool raft_in_lease(const struct raft *r)
{
    if (r->role == RAFT_LEADER) return true;
    return r->leader != 0 && r->election_elapsed < r->cfg.election_ticks_min;
}

static void raft_vote_reply(struct raft *r, const struct raft_msg *m, uint8_t type, raft_term term,
                            bool grant)
{
    struct raft_msg resp;
    memset(&resp, 0, sizeof resp);
    resp.type = type;
    resp.to = m->from;
    resp.term = term;
    resp.reject = !grant;
    /* Persistence contract: a vote leaves only once it is durable. */
    if (type == RAFT_MSG_VOTE_RESP && raft_bug(r, RAFT_BUG_VOTE_NOT_PERSISTED))
        raft_send_now(r, &resp);
    else
        raft_send_after_persist(r, &resp);
}

/* PreVote: grant iff the candidate's log is up to date and we have not heard from a leader
 * recently. Never changes our term or vote. */
int raft_recv_prevote(struct raft *r, const struct raft_msg *m)
{
    bool grant =
        m->term > r->term && !raft_in_lease(r) && raft_log_up_to_date(r, m->index, m->log_term);
    raft_vote_reply(r, m, RAFT_MSG_PREVOTE_RESP, grant ? m->term : r->term, grant);
    return 0;
}

/* Raft Figure 2, RequestVote receiver: at most one vote per term, only for an up-to-date
 * log. The caller already moved us to m->term. */
int raft_recv_vote(struct raft *r, const struct raft_msg *m)
{
    ASSERT(m->term == r->term);
    bool free_vote = r->vote == 0 && r->leader == 0;
    if (raft_bug(r, RAFT_BUG_DOUBLE_VOTE) && r->role != RAFT_LEADER && r->vote != r->cfg.id)
        free_vote = true;
    bool up_to_date = raft_log_up_to_date(r, m->index, m->log_term);
    if (m->transfer && raft_bug(r, RAFT_BUG_TRANSFER_ANY_LOG)) up_to_date = true;
    bool grant = (r->vote == m->from || free_vote) && up_to_date;
    if (grant) {
        r->vote = m->from;
        r->hs_dirty = true;
        r->election_elapsed = 0;
        raft_tracef(r, "granted vote to %llx at term %llu", (unsigned long long)m->from,
                    (unsigned long long)r->term);
    }
    raft_vote_reply(r, m, RAFT_MSG_VOTE_RESP, r->term, grant);
    return 0;
}

int raft_recv_vote_resp(struct raft *r, const struct raft_msg *m)
{
    if (m->type == RAFT_MSG_PREVOTE_RESP) {
        if (r->role != RAFT_PRECANDIDATE) return 0;
        if (!m->reject && m->term != r->term + 1)
            return 0; /* a stale grant from an earlier round */
    } else if (r->role != RAFT_CANDIDATE || m->term != r->term) {
        return 0;
    }
    raft_tally(r, m->from, !m->reject);
    raft_check_tally(r);
    return 0;
}
