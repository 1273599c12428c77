/* node.c — one simulated node: a raft core, its disk (durable state plus a FIFO of writes in
 * flight, completed after a seeded latency) and the ready-batch loop of raft.h. A crash keeps
 * only what a completed write made durable; nothing here ever peeks into the core's memory. */
#include "sim.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

raft_index sim_d_last(const struct sim_node *n)
{
    return n->d_off + n->d_n;
}

const struct raft_entry *sim_d_entry(const struct sim_node *n, raft_index idx)
{
    if (idx <= n->d_off || idx > sim_d_last(n)) return NULL;
    return &n->d_log[idx - n->d_off - 1];
}

raft_term sim_d_term(const struct sim_node *n, raft_index idx)
{
    if (idx == n->d_off) return n->d_off_term;
    const struct raft_entry *e = sim_d_entry(n, idx);
    return e ? e->term : 0;
}

/* cfg.fetch: payloads are served from the durable log only (never a compacted entry). */
static int sim_node_fetch_cb(void *ctx, raft_index index, struct raft_blob **out)
{
    struct sim_node *n = ctx;
    const struct raft_entry *e = sim_d_entry(n, index);
    if (!e || !e->data) {
        sim_fail(n->sim, "Fetch contract", "n%llu fetched index %llu; durable log holds %llu..%llu",
                 (unsigned long long)n->id, (unsigned long long)index,
                 (unsigned long long)n->d_off + 1, (unsigned long long)sim_d_last(n));
        return ERR_NOTFOUND;
    }
    *out = raft_blob_ref(e->data);
    return 0;
}

static void sim_node_trace_cb(void *ctx, const char *line)
{
    struct sim_node *n = ctx;
    sim_trace(n->sim, "n%llu: %s", (unsigned long long)n->id, line);
}

static void sim_node_config(struct sim *s, struct sim_node *n, struct raft_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->id = n->id;
    cfg->heartbeat_ticks = s->p.heartbeat;
    cfg->election_ticks_min = s->p.election_min;
    cfg->election_ticks_max = s->p.election_max;
    cfg->seed = sim_rng_next(&s->rng);
    cfg->max_append_entries = s->p.max_append_entries;
    cfg->max_append_bytes = s->p.max_append_bytes;
    cfg->max_inflight = s->p.max_inflight;
    cfg->cache_bytes_max = s->p.cache_bytes_max;
    cfg->snapshot_timeout_ticks = s->p.snap_timeout_ticks;
    cfg->prevote = s->p.prevote;
    cfg->check_quorum = s->p.check_quorum;
    cfg->bugs = s->o.bugs;
    cfg->fetch = sim_node_fetch_cb;
    cfg->trace = s->o.tracing ? sim_node_trace_cb : NULL;
    cfg->ctx = n;
}

/* (Re)starts n from its durable state, as a process restart would. */
void sim_node_boot(struct sim *s, struct sim_node *n)
{
    struct raft_config cfg;
    sim_node_config(s, n, &cfg);
    sim_snap_boot_repair(s, n);
    struct raft_boot boot = {.term = n->d_term,
                             .vote = n->d_vote,
                             .commit = n->d_commit,
                             .applied = n->d_sm_n,
                             .snapshot_index = n->d_off,
                             .snapshot_term = n->d_off_term,
                             .snapshot_conf = n->d_off ? &n->d_off_conf : NULL};
    struct raft_entry *be = NULL;
    if (n->d_n) {
        be = malloc(n->d_n * sizeof *be);
        if (!be) abort();
        memcpy(be, n->d_log, n->d_n * sizeof *be);
        for (size_t i = 0; i < n->d_n && s->p.lazy_boot; i++)
            if (be[i].type == RAFT_ENTRY_NORMAL) be[i].data = NULL; /* left to cfg.fetch */
        boot.entries = be;
        boot.n_entries = n->d_n;
    }
    bool empty = !n->d_n && !n->d_term && !n->d_vote && !n->d_off;
    n->sim = s;
    int rc = raft_new(&cfg, empty ? NULL : &boot, &n->r);
    free(be);
    if (rc != 0) {
        n->r = NULL;
        sim_fail(s, "Boot", "raft_new(n%llu) from its durable state failed: %s",
                 (unsigned long long)n->id, err_str(rc));
        return;
    }
    n->started = n->up = true;
    n->incarnation++;
    n->tick_interval = SIM_TICK - 1 + (unsigned)sim_rng_below(&s->rng, 3);
    /* The volatile mirror: the state machine's entries, then the log beyond them. */
    n->log = sim_grow(n->log, &n->log_cap, n->d_sm_n + 1, sizeof *n->log);
    if (n->d_sm_n) memcpy(n->log, n->d_sm, n->d_sm_n * sizeof *n->log);
    n->log_n = n->d_sm_n;
    for (raft_index i = n->d_off + 1; i <= sim_d_last(n); i++) {
        const struct raft_entry *e = sim_d_entry(n, i);
        if (i > n->d_sm_n)
            sim_check_mirror_push(s, n, e);
        else if (n->d_sm[i - 1].term != e->term)
            sim_fail(s, "Boot", "n%llu: durable entry %llu has term %llu, its state machine %llu",
                     (unsigned long long)n->id, (unsigned long long)i, (unsigned long long)e->term,
                     (unsigned long long)n->d_sm[i - 1].term);
    }
    n->applied = n->d_sm_n;
    n->n_reads = 0;
    n->last_persist_seq = 0;
    raft_status(n->r, &n->obs);
    sim_trace(s, "boot n%llu (incarnation %u): term %llu vote %llu commit %llu log %zu",
              (unsigned long long)n->id, n->incarnation, (unsigned long long)n->d_term,
              (unsigned long long)n->d_vote, (unsigned long long)n->d_commit, n->d_n);
    sim_check_boot(s, n);
    sim_schedule(s, s->now + 1 + sim_rng_below(&s->rng, n->tick_interval), SIM_EV_TICK,
                 (uint8_t)(n->id - 1), n->incarnation, NULL);
    sim_node_drain(s, n);
}

static void sim_node_write_free(struct sim_write *w)
{
    for (size_t i = 0; i < w->n_entries; i++)
        raft_blob_unref(w->entries[i].data);
    free(w->entries);
    for (size_t i = 0; i < w->n_msgs; i++)
        sim_msg_release(&w->msgs[i]);
    free(w->msgs);
    free(w->ack_terms);
    memset(w, 0, sizeof *w);
}

/* Power loss: the core's memory, writes in flight and their unsent messages are gone. */
void sim_node_crash(struct sim *s, struct sim_node *n)
{
    if (!n->up) return;
    sim_trace(s, "crash n%llu: %zu writes in flight lost, durable log %zu term %llu vote %llu",
              (unsigned long long)n->id, n->w_n - n->w_head, n->d_n, (unsigned long long)n->d_term,
              (unsigned long long)n->d_vote);
    raft_free(n->r);
    n->r = NULL;
    n->up = false;
    n->incarnation++;
    for (size_t i = n->w_head; i < n->w_n; i++)
        sim_node_write_free(&n->w[i]);
    n->w_head = n->w_n = 0;
    n->w_done_at = 0;
    n->n_reads = 0;
    n->log_n = 0;
    memset(n->snap_out, 0, sizeof n->snap_out);
    n->applied = 0;
    memset(&n->obs, 0, sizeof n->obs);
    s->st.crashes++;
}

static void sim_node_attach_msgs(const struct sim_node *n, struct sim_write *w,
                                 const struct raft_msg *m, size_t count)
{
    if (!count) return;
    struct raft_msg *v = realloc(w->msgs, (w->n_msgs + count) * sizeof *v);
    if (!v) abort();
    w->msgs = v;
    raft_term *t = realloc(w->ack_terms, (w->n_msgs + count) * sizeof *t);
    if (!t) abort();
    w->ack_terms = t;
    for (size_t i = 0; i < count; i++) {
        sim_msg_copy(&m[i], &v[w->n_msgs + i]);
        t[w->n_msgs + i] = sim_check_ack_term(n, &m[i]);
    }
    w->n_msgs += count;
}

/* After-persist messages of a batch without a write of its own depend on the writes already
 * handed out: they leave with the last one (at once when none is in flight), as src/node. */
static void sim_node_after_persist(struct sim *s, struct sim_node *n, const struct raft_ready *rd)
{
    if (n->w_head < n->w_n) {
        sim_node_attach_msgs(n, &n->w[n->w_n - 1], rd->msgs_after_persist,
                             rd->n_msgs_after_persist);
        return;
    }
    for (size_t i = 0; i < rd->n_msgs_after_persist; i++) {
        sim_check_send(s, n, &rd->msgs_after_persist[i], 0);
        sim_net_send(s, &rd->msgs_after_persist[i]);
    }
}

static void sim_node_queue_write(struct sim *s, struct sim_node *n, const struct raft_ready *rd)
{
    if (rd->persist_seq <= n->last_persist_seq)
        sim_fail(s, "Ready contract", "n%llu: persist_seq %llu after %llu",
                 (unsigned long long)n->id, (unsigned long long)rd->persist_seq,
                 (unsigned long long)n->last_persist_seq);
    n->last_persist_seq = rd->persist_seq;
    n->w = sim_grow(n->w, &n->w_cap, n->w_n + 1, sizeof *n->w);
    struct sim_write *w = &n->w[n->w_n++];
    *w = (struct sim_write){.seq = rd->persist_seq,
                            .hardstate_changed = rd->hardstate_changed,
                            .term = rd->term,
                            .vote = rd->vote,
                            .commit = rd->commit,
                            .truncate_from = rd->truncate_from,
                            .compact_to = rd->compact_to,
                            .snap_term = rd->snap_term};
    if (rd->compact_to) w->snap_conf = *rd->snap_conf;
    if (rd->n_entries) {
        w->entries = malloc(rd->n_entries * sizeof *w->entries);
        if (!w->entries) abort();
        for (size_t i = 0; i < rd->n_entries; i++) {
            w->entries[i] = rd->entries[i];
            raft_blob_ref(w->entries[i].data);
        }
        w->n_entries = rd->n_entries;
    }
    sim_node_attach_msgs(n, w, rd->msgs_after_persist, rd->n_msgs_after_persist);
    uint64_t done = s->now + sim_rng_range(&s->rng, 0, s->p.disk_max);
    if (done < n->w_done_at) done = n->w_done_at; /* FIFO: a write never overtakes an earlier one */
    n->w_done_at = done;
    sim_schedule(s, done, SIM_EV_PERSIST, (uint8_t)(n->id - 1), n->incarnation, NULL);
}

static void sim_node_read_states(struct sim *s, struct sim_node *n, const struct raft_ready *rd)
{
    for (size_t i = 0; i < rd->n_reads; i++) {
        const struct raft_read_state *rs = &rd->reads[i];
        sim_trace(s, "n%llu read %llu: %s index %llu", (unsigned long long)n->id,
                  (unsigned long long)rs->id, rs->failed ? "failed" : "ready at",
                  (unsigned long long)rs->index);
        if (rs->failed) continue;
        if (rs->id == 0 || rs->id >= s->rr_n || s->rr[rs->id].slot != n->id - 1) {
            sim_fail(s, "Read contract", "n%llu got a read state for unknown read %llu",
                     (unsigned long long)n->id, (unsigned long long)rs->id);
            continue;
        }
        n->reads = sim_grow(n->reads, &n->reads_cap, n->n_reads + 1, sizeof *n->reads);
        n->reads[n->n_reads++] = (struct sim_pending_read){rs->id, rs->index};
    }
}

static void sim_node_ready(struct sim *s, struct sim_node *n)
{
    struct raft_ready rd;
    struct raft_status st;
    raft_ready(n->r, &rd);
    raft_status(n->r, &st);
    sim_check_log_batch(s, n, &rd, &st);
    sim_check_compact(s, n, &rd);
    if (rd.persist_seq)
        sim_node_queue_write(s, n, &rd);
    else if (rd.n_msgs_after_persist)
        sim_node_after_persist(s, n, &rd);
    for (size_t i = 0; i < rd.n_msgs; i++) {
        sim_check_send(s, n, &rd.msgs[i], 0);
        if (rd.msgs[i].type == RAFT_MSG_SNAPSHOT)
            sim_snap_start(s, n, &rd.msgs[i]); /* the node intercepts it */
        else
            sim_net_send(s, &rd.msgs[i]);
    }
    for (size_t i = 0; i < rd.n_committed; i++)
        sim_check_apply(s, n, &rd.committed[i]);
    sim_node_read_states(s, n, &rd);
    raft_advance(n->r, &rd);
}

/* Serves every pending read whose index is applied: as early as a real node would. */
static void sim_node_serve_reads(struct sim *s, struct sim_node *n)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_reads; i++) {
        if (n->applied >= n->reads[i].index)
            sim_check_read(s, n, &n->reads[i]);
        else
            n->reads[k++] = n->reads[i];
    }
    n->n_reads = k;
}

/* Processes every ready batch, then checks the node. Called after each input to the core. */
void sim_node_drain(struct sim *s, struct sim_node *n)
{
    unsigned guard = 0;
    while (!s->failed && n->up && raft_has_ready(n->r)) {
        sim_node_ready(s, n);
        if (++guard > 10000) {
            sim_fail(s, "Ready contract", "n%llu: ready batches never end",
                     (unsigned long long)n->id);
            return;
        }
    }
    if (s->failed || !n->up) return;
    sim_node_serve_reads(s, n);
    sim_check_node(s, n);
}

void sim_node_tick(struct sim *s, struct sim_node *n)
{
    raft_tick(n->r);
    sim_node_drain(s, n);
    if (n->up)
        sim_schedule(s, s->now + n->tick_interval, SIM_EV_TICK, (uint8_t)(n->id - 1),
                     n->incarnation, NULL);
}

static void sim_node_apply_write(struct sim *s, struct sim_node *n, struct sim_write *w)
{
    if (w->hardstate_changed) {
        if (w->commit < n->d_commit)
            sim_fail(s, "Commit monotonic", "n%llu persisted commit %llu after %llu",
                     (unsigned long long)n->id, (unsigned long long)w->commit,
                     (unsigned long long)n->d_commit);
        n->d_term = w->term;
        n->d_vote = w->vote;
        n->d_commit = w->commit;
    }
    if (w->compact_to) {
        /* The snapshot point and the deletion below it: one write. */
        if (w->compact_to <= n->d_off) {
            sim_fail(s, "Ready contract", "n%llu: compaction to %llu at snapshot %llu",
                     (unsigned long long)n->id, (unsigned long long)w->compact_to,
                     (unsigned long long)n->d_off);
            return;
        }
        size_t k = w->compact_to >= sim_d_last(n) ? n->d_n : (size_t)(w->compact_to - n->d_off);
        for (size_t i = 0; i < k; i++)
            raft_blob_unref(n->d_log[i].data);
        if (n->d_n > k) memmove(n->d_log, n->d_log + k, (n->d_n - k) * sizeof *n->d_log);
        n->d_n -= k;
        n->d_off = w->compact_to;
        n->d_off_term = w->snap_term;
        n->d_off_conf = w->snap_conf;
    }
    if (w->truncate_from && w->truncate_from <= sim_d_last(n)) {
        if (w->truncate_from <= n->d_off) {
            sim_fail(s, "Ready contract", "n%llu: truncation from %llu below its snapshot %llu",
                     (unsigned long long)n->id, (unsigned long long)w->truncate_from,
                     (unsigned long long)n->d_off);
            return;
        }
        size_t keep = (size_t)(w->truncate_from - n->d_off - 1);
        for (size_t i = keep; i < n->d_n; i++)
            raft_blob_unref(n->d_log[i].data);
        n->d_n = keep;
    }
    n->d_log = sim_grow(n->d_log, &n->d_cap, n->d_n + w->n_entries, sizeof *n->d_log);
    for (size_t i = 0; i < w->n_entries; i++) {
        if (w->entries[i].index != sim_d_last(n) + 1) {
            sim_fail(s, "Ready contract", "n%llu: write of entry %llu onto a log ending at %llu",
                     (unsigned long long)n->id, (unsigned long long)w->entries[i].index,
                     (unsigned long long)sim_d_last(n));
            raft_blob_unref(w->entries[i].data);
            continue;
        }
        n->d_log[n->d_n++] = w->entries[i]; /* takes over the reference */
    }
    w->n_entries = 0;
    if (n->d_commit > sim_d_last(n))
        sim_fail(s, "Durability", "n%llu: durable commit %llu beyond its durable log %llu",
                 (unsigned long long)n->id, (unsigned long long)n->d_commit,
                 (unsigned long long)sim_d_last(n));
}

/* The head write is durable: apply it to the disk image, release its messages, tell the core. */
void sim_node_persist_done(struct sim *s, struct sim_node *n)
{
    if (n->w_head >= n->w_n) return;
    struct sim_write *w = &n->w[n->w_head++];
    uint64_t seq = w->seq;
    sim_trace(s,
              "n%llu persisted #%llu: term %llu vote %llu commit %llu compact %llu trunc %llu "
              "+%zu -> %llu",
              (unsigned long long)n->id, (unsigned long long)seq, (unsigned long long)w->term,
              (unsigned long long)w->vote, (unsigned long long)w->commit,
              (unsigned long long)w->compact_to, (unsigned long long)w->truncate_from, w->n_entries,
              (unsigned long long)(w->truncate_from ? w->truncate_from - 1 + w->n_entries
                                                    : sim_d_last(n) + w->n_entries));
    sim_node_apply_write(s, n, w);
    for (size_t i = 0; i < w->n_msgs && !s->failed; i++) {
        sim_check_send(s, n, &w->msgs[i], w->ack_terms[i]);
        sim_net_send(s, &w->msgs[i]);
    }
    sim_node_write_free(w);
    if (n->w_head == n->w_n) n->w_head = n->w_n = 0;
    if (s->failed) return;
    raft_persisted(n->r, seq);
    sim_node_drain(s, n);
}

void sim_node_free(struct sim_node *n)
{
    if (n->r) raft_free(n->r);
    n->r = NULL;
    for (size_t i = n->w_head; i < n->w_n; i++)
        sim_node_write_free(&n->w[i]);
    free(n->w);
    for (size_t i = 0; i < n->d_n; i++)
        raft_blob_unref(n->d_log[i].data);
    free(n->d_log);
    free(n->d_sm);
    free(n->log);
    free(n->reads);
    free(n->votes);
    memset(n, 0, sizeof *n);
}
