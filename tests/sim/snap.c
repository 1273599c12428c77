/* snap.c — snapshots, log compaction and leadership transfer in the simulator (issue 5).
 * The model state machine of a node is its applied log prefix (the mirror entries 1..applied,
 * each with its prefix digest): a snapshot at S is a copy of the sender's entries 1..S, as a
 * node streams its file store. Compaction checkpoints the state machine first (the file store
 * is durable before the log prefix goes). A stream takes a seeded time, may fail or arrive as
 * a late stale copy; the receiver installs atomically (a crash before delivery leaves the old
 * state; a crash right after install, before the core's reset is durable, is repaired at boot
 * as raftnode does). Decisions draw from their own stream (srng). */
#include "sim.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>

#define ULL(x) ((unsigned long long)(x))

void sim_snap_params(struct sim *s)
{
    struct sim_params *p = &s->p;
    struct sim_rng *g = &s->srng;
    sim_rng_seed(g, sim_mix(s->o.seed ^ 0x736e617073686f74ull));
    if (s->o.no_snap) return;
    if (sim_rng_chance(g, 750)) {
        static const unsigned trailing[] = {0, 1, 4, 16, 64};
        p->compact_pm = (uint32_t)sim_rng_range(g, 5, 150);
        p->compact_trailing = trailing[sim_rng_below(g, 5)];
        p->snap_delay_max = (unsigned)sim_rng_range(g, 1, 40) * SIM_TICK;
        p->snap_fail_pm = sim_rng_chance(g, 500) ? (uint32_t)sim_rng_range(g, 10, 300) : 0;
        p->snap_report_loss_pm = sim_rng_chance(g, 300) ? (uint32_t)sim_rng_range(g, 10, 300) : 0;
        p->snap_stale_pm = sim_rng_chance(g, 300) ? (uint32_t)sim_rng_range(g, 50, 500) : 0;
        if (p->snap_report_loss_pm)
            p->snap_timeout_ticks = (unsigned)sim_rng_range(g, 2, 6) * p->election_max;
    }
    if (sim_rng_chance(g, 500)) p->transfer_pm = (uint32_t)sim_rng_range(g, 3, 40);
    p->transfer_stop_step = p->heal_step > 60 ? p->heal_step - 60 : 0;
    sim_trace(s,
              "snapshots: compaction %u per mille keeping <=%u, streams <=%u units, fail %u, "
              "report loss %u, stale copies %u per mille, timeout %u ticks; transfers %u per mille",
              p->compact_pm, p->compact_trailing, p->snap_delay_max, p->snap_fail_pm,
              p->snap_report_loss_pm, p->snap_stale_pm, p->snap_timeout_ticks, p->transfer_pm);
}

static struct sim_node *sim_snap_random_up(struct sim *s)
{
    struct sim_node *c[SIM_MAX_NODES];
    unsigned k = 0;
    for (unsigned i = 0; i < s->n_slots; i++)
        if (s->nodes[i].up) c[k++] = &s->nodes[i];
    return k ? c[sim_rng_below(&s->srng, k)] : NULL;
}

/* The state machine becomes durable at n's applied index (the file store's checkpoint). */
static void sim_snap_checkpoint(struct sim_node *n, const struct sim_mentry *from, size_t count)
{
    n->d_sm = sim_grow(n->d_sm, &n->d_sm_cap, count + 1, sizeof *n->d_sm);
    if (count) memcpy(n->d_sm, from, count * sizeof *n->d_sm);
    n->d_sm_n = count;
}

static void sim_snap_compact(struct sim *s, struct sim_node *n)
{
    raft_index applied = n->applied, off = n->obs.snapshot_index;
    raft_index trailing = sim_rng_range(&s->srng, 0, s->p.compact_trailing);
    if (applied <= off + trailing) return;
    raft_index k = applied - trailing;
    for (unsigned i = 0; i < s->n_slots; i++) /* the log stays from S+1 while streaming S */
        if (n->snap_out[i] && n->snap_out_index[i] < k) k = n->snap_out_index[i];
    if (k <= off) return;
    sim_snap_checkpoint(n, n->log, (size_t)applied);
    int rc = raft_compact(n->r, k);
    sim_trace(s, "n%llu compacts up to %llu (applied %llu, snapshot %llu): %s", ULL(n->id), ULL(k),
              ULL(applied), ULL(off), err_str(rc));
    if (rc != 0)
        sim_fail(s, "Compact contract", "n%llu: raft_compact(%llu) with applied %llu: %s",
                 ULL(n->id), ULL(k), ULL(applied), err_str(rc));
    int bad = raft_compact(n->r, applied + 1);
    if (bad != ERR_INVALID)
        sim_fail(s, "Compact contract", "n%llu: raft_compact beyond applied: %s", ULL(n->id),
                 err_str(bad));
    s->st.compactions++;
    sim_node_drain(s, n);
}

static void sim_snap_transfer(struct sim *s)
{
    struct sim_node *l = sim_driver_leader(s);
    if (!l) return;
    const struct raft_configuration *c = raft_configuration(l->r);
    raft_id cand[RAFT_MAX_NODES];
    unsigned k = 0;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->members[i].voter && c->members[i].id != l->id) cand[k++] = c->members[i].id;
    int self = raft_transfer_leadership(l->r, l->id);
    if (self != ERR_INVALID)
        sim_fail(s, "Transfer contract", "transfer to itself: %s", err_str(self));
    if (!k) return;
    raft_id to = cand[sim_rng_below(&s->srng, k)];
    int rc = raft_transfer_leadership(l->r, to);
    sim_trace(s, "transfer: leader n%llu of term %llu hands over to n%llu: %s", ULL(l->id),
              ULL(l->obs.term), ULL(to), err_str(rc));
    if (rc == 0) {
        s->st.transfers++;
        s->xfer_to = to;
        s->xfer_term = l->obs.term;
    }
    sim_node_drain(s, l);
}

void sim_snap_driver(struct sim *s)
{
    if (s->p.compact_pm && sim_rng_chance(&s->srng, s->p.compact_pm)) {
        struct sim_node *n = sim_snap_random_up(s);
        if (n) sim_snap_compact(s, n);
    }
    if (!s->failed && s->p.transfer_pm && s->step < s->p.transfer_stop_step &&
        sim_rng_chance(&s->srng, s->p.transfer_pm))
        sim_snap_transfer(s);
}

void sim_snap_free(struct sim_snap *sn)
{
    if (!sn) return;
    free(sn->sm);
    free(sn);
}

static struct sim_snap *sim_snap_copy(const struct sim_snap *sn)
{
    struct sim_snap *c = malloc(sizeof *c);
    if (!c) abort();
    *c = *sn;
    c->sm = malloc((size_t)sn->index * sizeof *c->sm);
    if (!c->sm) abort();
    memcpy(c->sm, sn->sm, (size_t)sn->index * sizeof *c->sm);
    return c;
}

/* The leader's core asked for a stream to m->to: the node streams its state machine at its
 * applied index S (>= the core's snapshot index), unless a stream to that peer is running. */
void sim_snap_start(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    if (m->to == 0 || m->to > s->n_slots || m->to == n->id) {
        sim_fail(s, "Snapshot contract", "n%llu asks for a snapshot to n%llu", ULL(n->id),
                 ULL(m->to));
        return;
    }
    unsigned peer = (unsigned)m->to - 1;
    if (n->snap_out[peer]) {
        sim_trace(s, "n%llu: snapshot to n%llu already streaming", ULL(n->id), ULL(m->to));
        return;
    }
    raft_index S = n->applied;
    if (S < m->index || S == 0) {
        sim_fail(s, "Snapshot contract", "n%llu asks for a snapshot at %llu, applied %llu",
                 ULL(n->id), ULL(m->index), ULL(S));
        return;
    }
    struct sim_snap *sn = calloc(1, sizeof *sn);
    if (!sn) abort();
    *sn = (struct sim_snap){.session = ++s->snap_session,
                            .from = n->id,
                            .to = m->to,
                            .from_inc = n->incarnation,
                            .term = m->term,
                            .index = S};
    int rc = raft_snapshot_meta(n->r, S, &sn->index_term, &sn->conf);
    if (rc != 0 || sn->index_term != n->log[S - 1].term) {
        sim_fail(s, "Snapshot contract", "n%llu: raft_snapshot_meta(%llu): %s, term %llu",
                 ULL(n->id), ULL(S), err_str(rc), ULL(sn->index_term));
        free(sn);
        return;
    }
    sn->sm = malloc((size_t)S * sizeof *sn->sm);
    if (!sn->sm) abort();
    memcpy(sn->sm, n->log, (size_t)S * sizeof *sn->sm);
    n->snap_out[peer] = sn->session;
    n->snap_out_index[peer] = S;
    s->st.snapshots_sent++;
    bool fails =
        !s->healed && (s->blocked[n->id - 1][peer] || sim_rng_chance(&s->srng, s->p.snap_fail_pm));
    uint64_t d = s->healed ? sim_rng_range(&s->srng, 1, 3 * SIM_TICK)
                           : sim_rng_range(&s->srng, 1, s->p.snap_delay_max);
    sim_trace(s, "n%llu streams a snapshot at %llu (t%llu) to n%llu: %s in %llu", ULL(n->id),
              ULL(S), ULL(sn->index_term), ULL(m->to), fails ? "fails" : "arrives", ULL(d));
    if (!s->healed && sim_rng_chance(&s->srng, s->p.snap_stale_pm)) {
        struct sim_snap *late = sim_snap_copy(sn);
        late->stale = true;
        sim_schedule_snap(s, s->now + d + sim_rng_range(&s->srng, 20, 300) * SIM_TICK, SIM_EV_SNAP,
                          (uint8_t)peer, late);
    }
    if (fails) {
        sim_schedule_snap(s, s->now + d, SIM_EV_SNAP_REPORT, (uint8_t)(n->id - 1), sn);
        return;
    }
    sim_schedule_snap(s, s->now + d, SIM_EV_SNAP, (uint8_t)peer, sn);
}

/* The node's atomic install, then the core's. The mirror follows Figure 13 as the core must. */
static bool sim_snap_install(struct sim *s, struct sim_node *t, const struct sim_snap *sn)
{
    raft_index S = sn->index;
    if (!raft_snapshot_acceptable(t->r, sn->term, S)) {
        sim_trace(s, "n%llu refuses the snapshot at %llu (term %llu; its term %llu commit %llu)",
                  ULL(t->id), ULL(S), ULL(sn->term), ULL(t->obs.term), ULL(t->obs.commit_index));
        return false;
    }
    if (S <= t->applied) {
        sim_fail(s, "State Machine Safety",
                 "n%llu installs a snapshot at %llu over its applied state at %llu", ULL(t->id),
                 ULL(S), ULL(t->applied));
        return false;
    }
    if (S > s->gcommit || s->committed[S].chain != sn->sm[S - 1].chain) {
        sim_fail(s, "State Machine Safety",
                 "n%llu installs a snapshot at %llu that is not the committed state", ULL(t->id),
                 ULL(S));
        return false;
    }
    sim_snap_checkpoint(t, sn->sm, (size_t)S);
    t->d_inst_index = S;
    t->d_inst_term = sn->index_term;
    t->d_inst_conf = sn->conf;
    bool keep = t->log_n >= S && t->log[S - 1].term == sn->index_term;
    if (keep && t->log[S - 1].chain != sn->sm[S - 1].chain)
        sim_fail(s, "Log Matching", "n%llu: entry %llu of term %llu has another prefix", ULL(t->id),
                 ULL(S), ULL(sn->index_term));
    t->log = sim_grow(t->log, &t->log_cap, (size_t)S + 1, sizeof *t->log);
    memcpy(t->log, sn->sm, (size_t)S * sizeof *t->log);
    if (!keep) t->log_n = (size_t)S;
    t->applied = S;
    int rc = raft_install_snapshot(t->r, sn->from, sn->term, S, sn->index_term, &sn->conf);
    sim_trace(s, "n%llu installs the snapshot at %llu from n%llu (%s the log suffix): %s",
              ULL(t->id), ULL(S), ULL(sn->from), keep ? "keeps" : "drops", err_str(rc));
    if (rc != 0) {
        sim_fail(s, "Snapshot contract", "n%llu: raft_install_snapshot after acceptable: %s",
                 ULL(t->id), err_str(rc));
        return false;
    }
    s->st.snapshots_installed++;
    if (!s->healed && sim_rng_chance(&s->srng, 100)) {
        /* Power loss right after the file store's install: the core's reset is not durable. */
        t->restart_step = s->step + (unsigned)sim_rng_range(&s->srng, 1, 20);
        sim_node_crash(s, t);
        return true;
    }
    sim_node_drain(s, t);
    return true;
}

void sim_snap_deliver(struct sim *s, struct sim_snap *sn)
{
    struct sim_node *t = &s->nodes[sn->to - 1], *from = &s->nodes[sn->from - 1];
    /* The stream dies with its sender or a cut link. */
    bool alive = from->incarnation == sn->from_inc && !s->blocked[sn->from - 1][sn->to - 1];
    sn->ok = t->up && alive && sim_snap_install(s, t, sn);
    if (sn->stale || s->failed) {
        sim_snap_free(sn);
        return;
    }
    uint64_t d = sim_rng_range(&s->srng, 1, 3 * SIM_TICK);
    sim_schedule_snap(s, s->now + d, SIM_EV_SNAP_REPORT, (uint8_t)(sn->from - 1), sn);
}

/* The stream's outcome reaches its sender's node, which tells its core (unless the report is
 * lost: the core's snapshot timeout must then unwedge the peer). */
void sim_snap_report(struct sim *s, struct sim_snap *sn)
{
    struct sim_node *n = &s->nodes[sn->from - 1];
    unsigned peer = (unsigned)sn->to - 1;
    if (!n->up || n->incarnation != sn->from_inc || n->snap_out[peer] != sn->session) {
        sim_snap_free(sn);
        return;
    }
    n->snap_out[peer] = 0;
    bool lost = !s->healed && s->step + 300 < s->p.heal_step &&
                sim_rng_chance(&s->srng, s->p.snap_report_loss_pm);
    sim_trace(s, "n%llu: snapshot at %llu to n%llu %s%s", ULL(n->id), ULL(sn->index), ULL(sn->to),
              sn->ok ? "installed" : "failed", lost ? " (report lost)" : "");
    if (!lost) {
        raft_report_snapshot(n->r, sn->to, sn->index, sn->ok);
        sim_node_drain(s, n);
    }
    sim_snap_free(sn);
}

/* raftnode's boot repair: the file store installed a snapshot the raft store does not know
 * (a crash before the core's reset write): the log follows Figure 13 — a matching entry at the
 * snapshot index keeps its suffix (entries there may have been acknowledged), any other log
 * goes. */
void sim_snap_boot_repair(struct sim *s, struct sim_node *n)
{
    if (n->d_inst_index <= n->d_off) return;
    raft_index S = n->d_inst_index;
    bool keep = S <= sim_d_last(n) && sim_d_term(n, S) == n->d_inst_term;
    size_t k = keep ? (size_t)(S - n->d_off) : n->d_n;
    for (size_t i = 0; i < k; i++)
        raft_blob_unref(n->d_log[i].data);
    if (n->d_n > k) memmove(n->d_log, n->d_log + k, (n->d_n - k) * sizeof *n->d_log);
    n->d_n -= k;
    n->d_off = S;
    n->d_off_term = n->d_inst_term;
    n->d_off_conf = n->d_inst_conf;
    sim_trace(s, "n%llu boot repair: snapshot %llu installed, raft log %s", ULL(n->id), ULL(S),
              keep ? "suffix kept" : "dropped");
}

/* A compaction or install handed out: the state machine holds it durably, its term is the
 * log's, and its configuration is the latest one at or below it. */
void sim_check_compact(struct sim *s, struct sim_node *n, const struct raft_ready *rd)
{
    if (!rd->compact_to) return;
    raft_index k = rd->compact_to;
    if (!rd->persist_seq || !rd->snap_conf || !rd->snap_conf_blob) {
        sim_fail(s, "Ready contract", "n%llu: compaction to %llu without a write or conf",
                 ULL(n->id), ULL(k));
        return;
    }
    if (k > n->d_sm_n || k > n->applied || k > n->log_n) {
        sim_fail(s, "Snapshot durability",
                 "n%llu compacts to %llu; state machine durable at %zu, applied %llu", ULL(n->id),
                 ULL(k), n->d_sm_n, ULL(n->applied));
        return;
    }
    if (rd->snap_term != n->log[k - 1].term)
        sim_fail(s, "Snapshot contract", "n%llu: snapshot %llu with term %llu, its log says %llu",
                 ULL(n->id), ULL(k), ULL(rd->snap_term), ULL(n->log[k - 1].term));
    uint64_t want = 0;
    for (raft_index i = k; i >= 1 && !want; i--)
        if (n->log[i - 1].type == RAFT_ENTRY_CONFIG) want = n->log[i - 1].content;
    struct raft_blob *enc = NULL;
    if (raft_configuration_encode(rd->snap_conf, &enc) != 0 ||
        sim_config_digest(rd->snap_conf_blob) != want || sim_config_digest(enc) != want)
        sim_fail(s, "Snapshot contract",
                 "n%llu: the configuration of snapshot %llu is not the latest one at or below it",
                 ULL(n->id), ULL(k));
    raft_blob_unref(enc);
}
