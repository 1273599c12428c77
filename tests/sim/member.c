/* member.c — membership changes driven through the leader (add as learner, wait for the
 * promotion, remove any member including the leader, retry on ERR_BUSY), what the driver
 * learns from each newly committed entry, and the liveness checks once faults have healed. */
#include "sim.h"

#include "err.h"

#include <stdio.h>
#include <string.h>

#define ULL(x) ((unsigned long long)(x))
#define SIM_LIVE_LEADER_STEPS 200 /* a stable leader this soon after healing */
#define SIM_LIVE_COMMIT_STEPS 60  /* a proposal to it commits this soon */
#define SIM_LIVE_MEMBER_STEPS 300 /* a membership change in flight completes this soon */
#define SIM_MOP_RETRY_STEPS 60    /* resubmit a change that has not committed by then */
#define SIM_STALL_BEATS 3         /* RAFT_STALL_BEATS (src/raft/raft_int.h) */
#define SIM_CATCHUP_SLACK 30      /* steps of round trips (<= 4 steps each once healed) */

static bool sim_mop_done(const struct sim *s, const struct sim_mop *op)
{
    const struct raft_member *m = raft_configuration_find(&s->gconf, op->id);
    if (op->kind == SIM_MOP_ADD) return m && m->voter;
    return op->id && !m;
}

/* REMOVE picks a voter other than the leader, REMOVE_LEADER the leader. 0 when none. */
static raft_id sim_mop_target(struct sim *s, const struct sim_mop *op, const struct sim_node *l)
{
    if (op->kind == SIM_MOP_REMOVE_LEADER) return l->id;
    raft_id c[RAFT_MAX_NODES];
    unsigned k = 0;
    for (uint32_t i = 0; i < s->gconf.n; i++)
        if (s->gconf.members[i].voter && s->gconf.members[i].id != l->id)
            c[k++] = s->gconf.members[i].id;
    return k ? c[sim_rng_below(&s->rng, k)] : 0;
}

static void sim_mop_next(struct sim *s, const char *why)
{
    const struct sim_mop *op = &s->mops[s->mop_i];
    sim_trace(s, "membership: %s n%llu %s", op->kind == SIM_MOP_ADD ? "add" : "remove", ULL(op->id),
              why);
    s->mop_i++;
    s->mop_submitted = false;
    s->mop_next_try = s->step + (unsigned)sim_rng_range(&s->rng, 3, 30);
}

static void sim_mop_submit(struct sim *s, struct sim_mop *op, struct sim_node *l)
{
    raft_index idx = 0;
    int rc;
    if (op->kind == SIM_MOP_ADD) {
        struct sim_node *n = &s->nodes[op->id - 1];
        if (!n->started) sim_node_boot(s, n);
        struct raft_member m;
        sim_driver_member(&m, op->id, false);
        rc = raft_add_member(l->r, &m, &idx);
    } else {
        rc = raft_remove_member(l->r, op->id, &idx);
    }
    sim_trace(s, "membership: n%llu %s n%llu: %s (index %llu)", ULL(l->id),
              op->kind == SIM_MOP_ADD ? "adds" : "removes", ULL(op->id), err_str(rc), ULL(idx));
    if (rc == 0 || rc == ERR_EXISTS || rc == ERR_NOTFOUND) {
        s->mop_submitted = true;
        s->mop_step = s->step;
    } else if (rc == ERR_INVALID) {
        sim_mop_next(s, "refused as invalid: skipped");
    } else {
        s->mop_next_try = s->step + 2; /* ERR_BUSY, ERR_NOTLEADER: retry */
    }
    sim_node_drain(s, l);
}

void sim_driver_membership(struct sim *s)
{
    if (!s->p.membership || s->mop_i >= s->mop_n) return;
    struct sim_mop *op = &s->mops[s->mop_i];
    if ((s->mop_submitted || op->kind == SIM_MOP_ADD) && sim_mop_done(s, op)) {
        s->st.membership_done++;
        if (op->kind != SIM_MOP_ADD && s->healed) {
            struct sim_node *gone = &s->nodes[op->id - 1];
            sim_node_crash(s, gone); /* as an operator stops a removed node */
            gone->retired = true;
        }
        sim_mop_next(s, "committed");
        return;
    }
    if (!s->mop_submitted && s->step >= s->p.member_stop_step) {
        s->mop_i = s->mop_n; /* the rest of the plan is dropped */
        return;
    }
    if (s->mop_submitted && s->step < s->mop_step + SIM_MOP_RETRY_STEPS) return;
    if (s->step < s->mop_next_try) return;
    struct sim_node *l = sim_driver_leader(s);
    if (!l) return;
    if (!s->mop_submitted && op->kind != SIM_MOP_ADD) op->id = sim_mop_target(s, op, l);
    if (op->kind != SIM_MOP_ADD && !op->id) {
        sim_mop_next(s, "has no target: skipped");
        return;
    }
    sim_mop_submit(s, op, l);
}

/* Called once per newly committed index (the first time any node applies it). */
void sim_driver_committed(struct sim *s, raft_index index, const struct raft_entry *e)
{
    s->st.committed++;
    if (e->type == RAFT_ENTRY_NORMAL && e->data && e->data->len >= 8) {
        uint64_t id = 0;
        for (int i = 7; i >= 0; i--)
            id = (id << 8) | e->data->data[i];
        if (id == 0 || id >= s->next_payload)
            sim_fail(s, "Payload", "committed payload #%llu was never proposed", ULL(id));
        s->payload_at = sim_grow(s->payload_at, &s->payload_cap, id + 1, sizeof *s->payload_at);
        if (s->payload_at[id])
            sim_fail(s, "State Machine Safety", "payload #%llu committed twice: at %llu and %llu",
                     ULL(id), ULL(s->payload_at[id]), ULL(index));
        s->payload_at[id] = index;
    } else if (e->type == RAFT_ENTRY_CONFIG && e->data) {
        if (raft_configuration_decode(e->data->data, e->data->len, &s->gconf) != 0)
            sim_fail(s, "Payload", "committed config entry %llu does not decode", ULL(index));
        char buf[160] = "";
        size_t k = 0;
        for (uint32_t i = 0; i < s->gconf.n && k < sizeof buf - 16; i++)
            k += (size_t)snprintf(buf + k, sizeof buf - k, " n%llu%s", ULL(s->gconf.members[i].id),
                                  s->gconf.members[i].voter ? "" : "(learner)");
        sim_trace(s, "committed config at %llu:%s", ULL(index), buf);
    }
    for (unsigned i = 0; i < s->n_probes; i++) {
        struct sim_probe *p = &s->probes[i];
        if (!p->done && p->index == index && p->term == e->term) p->done = true;
    }
}

static void sim_driver_probe(struct sim *s, struct sim_node *l)
{
    raft_index idx = 0;
    raft_term term = 0;
    int rc = sim_driver_propose_to(s, l, &idx, &term);
    if (rc != 0) {
        sim_fail(s, "Liveness", "stable leader n%llu refused a proposal after healing: %s",
                 ULL(l->id), err_str(rc));
        return;
    }
    s->probes[s->n_probes++] = (struct sim_probe){idx, term, s->step, idx <= s->gcommit};
}

/* Members the leader must bring up to date: live, in the committed configuration and in the
 * leader's latest one (a removal it appended may drop a peer before we learn it committed). */
static bool sim_catchup_member(const struct sim *s, const struct sim_node *n,
                               const struct sim_node *l)
{
    if (!n->up || n->retired || n == l) return false;
    if (!raft_configuration_find(&s->gconf, n->id)) return false;
    return raft_configuration_find(raft_configuration(l->r), n->id) != NULL;
}

/* Every step once a stable leader is known after healing: a member behind the leader's commit
 * index must apply or append something at least every catchup_steps steps. A leader that waits
 * forever for acknowledgements of pipelined appends that were lost fails this (the other
 * members still commit, so the proposal probes alone do not notice). The timers restart when
 * the leader changes. */
static void sim_driver_catchup(struct sim *s, const struct sim_node *l)
{
    bool reset = !l || l->id != s->cu_leader || l->obs.term != s->cu_term;
    s->cu_leader = l ? l->id : 0;
    s->cu_term = l ? l->obs.term : 0;
    for (unsigned i = 0; i < s->n_slots && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        bool lagging = l && sim_catchup_member(s, n, l) && n->applied < l->obs.commit_index;
        if (reset || !lagging || n->applied != n->cu_applied || n->log_n != n->cu_last) {
            n->cu_applied = n->applied;
            n->cu_last = n->log_n;
            n->cu_step = s->step;
        } else if (s->step - n->cu_step > s->catchup_steps) {
            sim_fail(s, "Catch-up",
                     "member n%llu stuck at applied %llu (log %zu) for %u steps while leader "
                     "n%llu of term %llu has commit %llu",
                     ULL(n->id), ULL(n->applied), n->log_n, s->step - n->cu_step, ULL(l->id),
                     ULL(l->obs.term), ULL(l->obs.commit_index));
        }
    }
}

/* The last step: proposals stopped long ago, so every member has converged on the leader's
 * commit index, which covers what was committed when the first stable leader was seen. */
static void sim_driver_converged(struct sim *s, const struct sim_node *l)
{
    if (!l) {
        sim_fail(s, "Catch-up", "no stable leader at the end of the run");
        return;
    }
    for (unsigned i = 0; i < s->n_slots && !s->failed; i++) {
        const struct sim_node *n = &s->nodes[i];
        if (!sim_catchup_member(s, n, l)) continue;
        if (n->applied < s->cu_target || n->obs.commit_index != l->obs.commit_index ||
            n->applied != n->obs.commit_index)
            sim_fail(s, "Catch-up",
                     "at the end member n%llu has commit %llu, applied %llu; leader n%llu has "
                     "commit %llu (%llu was committed when healed)",
                     ULL(n->id), ULL(n->obs.commit_index), ULL(n->applied), ULL(l->id),
                     ULL(l->obs.commit_index), ULL(s->cu_target));
    }
}

/* After the faults heal: a stable leader soon, then a quiet spell in which lagging members
 * must catch up with no new entries, then every proposal to the leader committed soon, and
 * every member converged at the end. */
void sim_driver_liveness(struct sim *s)
{
    struct sim_node *l = sim_driver_leader(s);
    bool stable = l && l->obs.voter;
    if (!s->leader_step) {
        if (stable) {
            s->leader_step = s->step;
            /* The leader notices lost appends after SIM_STALL_BEATS + 1 heartbeats, probes,
             * backtracks: a few round trips. */
            s->catchup_steps = 2 * (SIM_STALL_BEATS + 2) * s->p.heartbeat + SIM_CATCHUP_SLACK;
            s->quiet_steps = s->catchup_steps + 10;
            s->cu_target = s->gcommit > l->obs.commit_index ? s->gcommit : l->obs.commit_index;
            sim_trace(s, "liveness: leader n%llu %u steps after healing; members must reach %llu",
                      ULL(l->id), s->step - s->p.heal_step, ULL(s->cu_target));
            sim_driver_catchup(s, l);
        } else if (s->step > s->p.heal_step + SIM_LIVE_LEADER_STEPS) {
            sim_fail(s, "Liveness", "no stable leader %u steps after the faults healed",
                     SIM_LIVE_LEADER_STEPS);
        }
        return;
    }
    if (s->mop_submitted && s->step > s->p.heal_step + SIM_LIVE_MEMBER_STEPS)
        sim_fail(s, "Liveness", "membership change of n%llu not committed %u steps after healing",
                 ULL(s->mops[s->mop_i].id), SIM_LIVE_MEMBER_STEPS);
    for (unsigned i = 0; i < s->n_probes && !s->failed; i++) {
        const struct sim_probe *p = &s->probes[i];
        if (!p->done && s->step > p->step + SIM_LIVE_COMMIT_STEPS)
            sim_fail(s, "Liveness",
                     "proposal (%llu, t%llu) to the leader not committed in %u steps",
                     ULL(p->index), ULL(p->term), SIM_LIVE_COMMIT_STEPS);
    }
    sim_driver_catchup(s, stable ? l : NULL);
    if (!s->failed && s->step == s->p.end_step) sim_driver_converged(s, stable ? l : NULL);
    if (!s->failed && stable && !s->mop_submitted && s->step % 4 == 0 &&
        s->step >= s->leader_step + s->quiet_steps &&
        s->step + SIM_LIVE_COMMIT_STEPS < s->p.end_step &&
        s->n_probes < sizeof s->probes / sizeof s->probes[0])
        sim_driver_probe(s, l);
}
