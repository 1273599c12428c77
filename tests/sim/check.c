/* check.c — the safety checker: Election Safety, Leader Append-Only, Log Matching, Leader
 * Completeness, State Machine Safety, linearizable reads, monotonic commit, plus the protocol
 * rules behind them (one vote per term, durability before acknowledgement, Figure 8 commit
 * rule, one configuration change at a time). It only observes; it never alters a run. */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

#define ULL(x) ((unsigned long long)(x))

/* Digest of a configuration's members (id and voter flag); 0 when it does not decode. */
uint64_t sim_config_digest(const struct raft_blob *b)
{
    struct raft_configuration c;
    if (!b || raft_configuration_decode(b->data, b->len, &c) != 0) return 0;
    uint64_t h = sim_mix(c.n);
    for (uint32_t i = 0; i < c.n; i++)
        h = sim_mix(h ^ (c.members[i].id * 2 + c.members[i].voter));
    return h ? h : 1;
}

/* Payload id of a NORMAL entry, after checking its bytes are the ones the client proposed. */
static bool sim_check_payload(const struct raft_blob *b, uint64_t *id)
{
    if (!b || b->len < 8) return false;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b->data[i];
    for (uint32_t k = 8; k < b->len; k++)
        if (b->data[k] != (uint8_t)(v * 131 + k)) return false;
    *id = v;
    return true;
}

static struct sim_itslot *sim_check_it_find(struct sim *s, raft_index index, raft_term term)
{
    size_t mask = s->it_cap - 1;
    for (size_t i = sim_mix(index * 0x100000001b3ull ^ term) & mask;; i = (i + 1) & mask) {
        struct sim_itslot *e = &s->it[i];
        if (e->index == 0 || (e->index == index && e->term == term)) return e;
    }
}

static void sim_check_it_grow(struct sim *s)
{
    struct sim_itslot *old = s->it;
    size_t old_cap = s->it_cap;
    s->it_cap = old_cap ? old_cap * 2 : 1024;
    s->it = calloc(s->it_cap, sizeof *s->it);
    if (!s->it) abort();
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].index) *sim_check_it_find(s, old[i].index, old[i].term) = old[i];
    free(old);
}

/* Log Matching over all history: an (index, term) pair always has the same prefix. */
static void sim_check_log_matching(struct sim *s, struct sim_node *n, raft_index index,
                                   raft_term term, uint64_t chain)
{
    if ((s->it_n + 1) * 2 > s->it_cap) sim_check_it_grow(s);
    struct sim_itslot *e = sim_check_it_find(s, index, term);
    if (e->index == 0) {
        *e = (struct sim_itslot){index, term, chain};
        s->it_n++;
    } else if (e->chain != chain) {
        sim_fail(s, "Log Matching",
                 "n%llu has entry (index %llu, term %llu) with a different log prefix than "
                 "another log holding the same (index, term)",
                 ULL(n->id), ULL(index), ULL(term));
    }
}

/* Appends e to n's mirror log, computing its prefix digest. */
void sim_check_mirror_push(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
    uint64_t content = 0;
    if (e->type == RAFT_ENTRY_NORMAL) {
        if (!sim_check_payload(e->data, &content))
            sim_fail(s, "Payload", "n%llu: entry %llu carries a missing or damaged payload",
                     ULL(n->id), ULL(e->index));
    } else if (e->type == RAFT_ENTRY_CONFIG) {
        content = sim_config_digest(e->data);
        if (!content)
            sim_fail(s, "Payload", "n%llu: config entry %llu does not decode", ULL(n->id),
                     ULL(e->index));
    } else if (e->type != RAFT_ENTRY_NOOP) {
        sim_fail(s, "Payload", "n%llu: entry %llu has unknown type %u", ULL(n->id), ULL(e->index),
                 e->type);
    }
    uint64_t prev = n->log_n ? n->log[n->log_n - 1].chain : 0;
    uint64_t chain = sim_mix(prev ^ sim_mix(e->term * 8 + e->type) ^ sim_mix(content + 7));
    n->log = sim_grow(n->log, &n->log_cap, n->log_n + 1, sizeof *n->log);
    n->log[n->log_n++] = (struct sim_mentry){e->term, e->type, content, chain};
    sim_check_log_matching(s, n, e->index, e->term, chain);
}

/* A leader appends a configuration change only once an entry of its own term is committed
 * and the previous change is committed (thesis 4.1 and Ongaro's 2015 single-server fix). */
static void sim_check_config_rule(struct sim *s, struct sim_node *n, raft_index idx,
                                  const struct raft_status *st)
{
    raft_index first = idx;
    while (first > 1 && n->log[first - 2].term == st->term)
        first--;
    if (st->commit_index < first && idx != 1)
        sim_fail(s, "Config rule",
                 "leader n%llu appended a config change at %llu in term %llu before "
                 "committing an entry of its term (first own-term entry %llu, commit %llu)",
                 ULL(n->id), ULL(idx), ULL(st->term), ULL(first), ULL(st->commit_index));
    for (raft_index j = idx - 1; j >= 1; j--) {
        if (n->log[j - 1].type != RAFT_ENTRY_CONFIG) continue;
        if (j > st->commit_index)
            sim_fail(s, "Config rule",
                     "leader n%llu appended a config change at %llu while the change at %llu "
                     "is uncommitted (commit %llu)",
                     ULL(n->id), ULL(idx), ULL(j), ULL(st->commit_index));
        break;
    }
}

/* A ready batch's log changes: contiguity, Leader Append-Only, and the mirror update. */
void sim_check_log_batch(struct sim *s, struct sim_node *n, const struct raft_ready *rd,
                         const struct raft_status *st)
{
    if (!rd->persist_seq && (rd->n_entries || rd->truncate_from || rd->hardstate_changed))
        sim_fail(s, "Ready contract", "n%llu: durable changes in a batch without persist_seq",
                 ULL(n->id));
    if (rd->truncate_from) {
        if (rd->truncate_from > n->log_n + 1)
            sim_fail(s, "Ready contract", "n%llu truncates from %llu but its log ends at %zu",
                     ULL(n->id), ULL(rd->truncate_from), n->log_n);
        bool was_leader = n->obs.role == RAFT_LEADER && n->obs.term == st->term;
        if (st->role == RAFT_LEADER || was_leader)
            sim_fail(s, "Leader Append-Only", "leader n%llu of term %llu truncates its log at %llu",
                     ULL(n->id), ULL(st->term), ULL(rd->truncate_from));
        /* The commit index before this input: the same AppendEntries may replace a
         * conflicting suffix and then commit the new entries. */
        if (rd->truncate_from <= n->obs.commit_index)
            sim_fail(s, "Committed entries kept",
                     "n%llu truncates from %llu below its commit index %llu", ULL(n->id),
                     ULL(rd->truncate_from), ULL(n->obs.commit_index));
        if (rd->truncate_from <= n->log_n) n->log_n = rd->truncate_from - 1;
    }
    for (size_t i = 0; i < rd->n_entries && !s->failed; i++) {
        const struct raft_entry *e = &rd->entries[i];
        if (e->index != n->log_n + 1) {
            sim_fail(s, "Ready contract", "n%llu appends entry %llu onto a log ending at %zu",
                     ULL(n->id), ULL(e->index), n->log_n);
            return;
        }
        sim_check_mirror_push(s, n, e);
        if (!s->o.no_rules && e->type == RAFT_ENTRY_CONFIG && st->role == RAFT_LEADER &&
            e->term == st->term)
            sim_check_config_rule(s, n, e->index, st);
    }
}

static void sim_check_vote(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    n->votes = sim_grow(n->votes, &n->votes_cap, m->term + 1, sizeof *n->votes);
    raft_id prev = n->votes[m->term];
    n->votes[m->term] = m->to;
    if (s->o.no_rules) return;
    if (prev && prev != m->to)
        sim_fail(s, "Vote once per term", "n%llu granted its term-%llu vote to n%llu and n%llu",
                 ULL(n->id), ULL(m->term), ULL(prev), ULL(m->to));
    else if (n->d_term != m->term || n->d_vote != m->to)
        sim_fail(s, "Persistence",
                 "n%llu sent its term-%llu vote for n%llu before it was durable (durable term "
                 "%llu, vote %llu)",
                 ULL(n->id), ULL(m->term), ULL(m->to), ULL(n->d_term), ULL(n->d_vote));
}

raft_term sim_check_ack_term(const struct sim_node *n, const struct raft_msg *m)
{
    if (m->type != RAFT_MSG_APPEND_RESP || m->reject || m->index == 0 || m->index > n->log_n)
        return 0;
    return n->log[m->index - 1].term;
}

/* A message leaves n: what it promises must already be durable. An acknowledgement that waited
 * for its write may leave after a newer leader's entries replaced the acknowledged ones in the
 * volatile log: it still tells the truth if the entries it acknowledges are durable now. */
void sim_check_send(struct sim *s, struct sim_node *n, const struct raft_msg *m, raft_term ack_term)
{
    if (m->from != n->id || m->to == n->id)
        sim_fail(s, "Message contract", "n%llu sends a message from %llu to %llu", ULL(n->id),
                 ULL(m->from), ULL(m->to));
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject) sim_check_vote(s, n, m);
    if (s->o.no_rules || m->type != RAFT_MSG_APPEND_RESP || m->reject || m->index == 0) return;
    if (!ack_term) ack_term = sim_check_ack_term(n, m);
    /* Below the durable snapshot point the state machine holds the entries. */
    bool durable = m->index <= sim_d_last(n);
    if (durable && ack_term && m->index >= n->d_off) durable = sim_d_term(n, m->index) == ack_term;
    if (!durable)
        sim_fail(s, "Persistence",
                 "n%llu acknowledged its log up to %llu before it was durable (durable log %llu)",
                 ULL(n->id), ULL(m->index), ULL(sim_d_last(n)));
}

static void sim_check_record_commit(struct sim *s, const struct raft_entry *e, uint64_t chain)
{
    s->committed = sim_grow(s->committed, &s->committed_cap, e->index + 1, sizeof *s->committed);
    s->committed[e->index] = (struct sim_committed){e->term, chain};
    s->gcommit = e->index;
    sim_driver_committed(s, e->index, e);
}

/* n applies e: State Machine Safety (applied sequences are prefixes of one another). */
void sim_check_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
    if (s->failed) return;
    if (e->index != n->applied + 1) {
        sim_fail(s, "State Machine Safety", "n%llu applies %llu after %llu", ULL(n->id),
                 ULL(e->index), ULL(n->applied));
        return;
    }
    if (e->index > n->log_n || n->log[e->index - 1].term != e->term) {
        sim_fail(s, "Apply contract", "n%llu applies (%llu, t%llu), which is not in its log",
                 ULL(n->id), ULL(e->index), ULL(e->term));
        return;
    }
    if (!s->o.no_rules && sim_d_term(n, e->index) != e->term)
        sim_fail(s, "Persistence", "n%llu applies %llu before it is durable locally", ULL(n->id),
                 ULL(e->index));
    uint64_t content = 0;
    if (e->type == RAFT_ENTRY_NORMAL &&
        (!sim_check_payload(e->data, &content) || content != n->log[e->index - 1].content))
        sim_fail(s, "Payload", "n%llu applies entry %llu with a wrong payload", ULL(n->id),
                 ULL(e->index));
    uint64_t chain = n->log[e->index - 1].chain;
    n->applied = e->index;
    if (e->index > s->gcommit) {
        sim_check_record_commit(s, e, chain);
        return;
    }
    const struct sim_committed *c = &s->committed[e->index];
    if (c->term != e->term || c->chain != chain)
        sim_fail(s, "State Machine Safety",
                 "n%llu applies (%llu, t%llu) but (%llu, t%llu) with another prefix was applied "
                 "elsewhere",
                 ULL(n->id), ULL(e->index), ULL(e->term), ULL(e->index), ULL(c->term));
}

static void sim_check_leader(struct sim *s, struct sim_node *n, const struct raft_status *st)
{
    s->leaders = sim_grow(s->leaders, &s->leaders_cap, st->term + 1, sizeof *s->leaders);
    struct sim_leader *l = &s->leaders[st->term];
    if (l->id && l->id != n->id)
        sim_fail(s, "Election Safety", "two leaders in term %llu: n%llu and n%llu", ULL(st->term),
                 ULL(l->id), ULL(n->id));
    else if (l->id && l->incarnation != n->incarnation)
        sim_fail(s, "Election Safety",
                 "n%llu was leader of term %llu twice, before and after a restart", ULL(n->id),
                 ULL(st->term));
    l->id = n->id;
    l->incarnation = n->incarnation;
    bool is_new = !(n->obs.role == RAFT_LEADER && n->obs.term == st->term);
    if (is_new) {
        s->st.elections++;
        if (n->id == s->xfer_to && st->term > s->xfer_term) {
            s->st.transfers_done++;
            s->xfer_to = 0;
        }
        sim_trace(s, "n%llu is leader of term %llu (log %zu, commit %llu)", ULL(n->id),
                  ULL(st->term), n->log_n, ULL(st->commit_index));
        raft_index g = s->gcommit;
        if (g && (n->log_n < g || n->log[g - 1].chain != s->committed[g].chain))
            sim_fail(s, "Leader Completeness",
                     "n%llu became leader of term %llu without committed entry %llu "
                     "(its log ends at %zu)",
                     ULL(n->id), ULL(st->term), ULL(g), n->log_n);
    }
    if (!s->o.no_rules && st->commit_index > n->obs.commit_index &&
        n->log[st->commit_index - 1].term != st->term)
        sim_fail(s, "Commit rule (Figure 8)",
                 "leader n%llu of term %llu advanced its commit index to %llu, an entry of "
                 "term %llu",
                 ULL(n->id), ULL(st->term), ULL(st->commit_index),
                 ULL(n->log[st->commit_index - 1].term));
}

/* After every input to n: the core's own invariants, then the properties its status shows. */
void sim_check_node(struct sim *s, struct sim_node *n)
{
    raft_check_invariants(n->r);
    struct raft_status st;
    raft_status(n->r, &st);
    if (st.failed) sim_fail(s, "Core failed", "n%llu entered the failed state", ULL(n->id));
    if (st.term < n->obs.term)
        sim_fail(s, "Term monotonic", "n%llu term went from %llu to %llu", ULL(n->id),
                 ULL(n->obs.term), ULL(st.term));
    if (st.commit_index < n->obs.commit_index)
        sim_fail(s, "Commit monotonic", "n%llu commit index went from %llu to %llu", ULL(n->id),
                 ULL(n->obs.commit_index), ULL(st.commit_index));
    if (st.commit_index > n->log_n || st.last_index != n->log_n)
        sim_fail(s, "Status contract", "n%llu: commit %llu, last index %llu, mirror log %zu",
                 ULL(n->id), ULL(st.commit_index), ULL(st.last_index), n->log_n);
    if (!s->failed && st.role == RAFT_LEADER) sim_check_leader(s, n, &st);
    if (st.role != n->obs.role || st.term != n->obs.term)
        sim_trace(s, "n%llu: %s, term %llu, leader %llu", ULL(n->id), raft_role_str(st.role),
                  ULL(st.term), ULL(st.leader));
    n->obs = st;
}

/* Right after a restart: the core holds exactly the durable state, and no more. */
void sim_check_boot(struct sim *s, struct sim_node *n)
{
    const struct raft_status *st = &n->obs;
    /* A snapshot installed before its term was durable raises the term (vote cleared). */
    bool raised = n->d_off_term > n->d_term;
    raft_term term = raised ? n->d_off_term : n->d_term;
    raft_id vote = raised ? 0 : n->d_vote;
    if (st->last_index != sim_d_last(n) || st->term != term || st->vote != vote ||
        st->snapshot_index != n->d_off || st->snapshot_term != n->d_off_term)
        sim_fail(s, "Boot",
                 "n%llu booted with snapshot %llu last %llu term %llu vote %llu from a disk "
                 "with snapshot %llu, last %llu, term %llu, vote %llu",
                 ULL(n->id), ULL(st->snapshot_index), ULL(st->last_index), ULL(st->term),
                 ULL(st->vote), ULL(n->d_off), ULL(sim_d_last(n)), ULL(n->d_term), ULL(n->d_vote));
    if (st->commit_index > sim_d_last(n) || st->applied_index != n->d_sm_n)
        sim_fail(s, "Durability",
                 "n%llu restarted with commit %llu applied %llu; durable log ends at %llu, "
                 "state machine at %zu",
                 ULL(n->id), ULL(st->commit_index), ULL(st->applied_index), ULL(sim_d_last(n)),
                 n->d_sm_n);
}

/* A read served by n must reflect every write applied anywhere before the read was issued. */
void sim_check_read(struct sim *s, struct sim_node *n, const struct sim_pending_read *pr)
{
    const struct sim_read_rec *rec = &s->rr[pr->id];
    s->st.reads_served++;
    sim_trace(s, "n%llu serves read %llu at applied %llu (read index %llu, needs %llu)", ULL(n->id),
              ULL(pr->id), ULL(n->applied), ULL(pr->index), ULL(rec->min_index));
    if (n->applied < rec->min_index)
        sim_fail(s, "Linearizable read",
                 "read %llu on n%llu served at applied index %llu (read index %llu), but entry "
                 "%llu was committed before the read began",
                 ULL(pr->id), ULL(n->id), ULL(n->applied), ULL(pr->index), ULL(rec->min_index));
}

void sim_check_free(struct sim *s)
{
    free(s->it);
    free(s->committed);
    free(s->leaders);
}
