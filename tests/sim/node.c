/* node.c — one simulated node: a raft core, its disk (durable state plus a FIFO of writes in
 * flight, completed after a seeded latency) and the ready-batch loop of raft.h. A crash keeps
 * only what a completed write made durable; nothing here ever peeks into the core's memory. */
#include "sim.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cfg.fetch: payloads are served from the durable log only. */
static int sim_node_fetch_cb(void *ctx, raft_index index, struct raft_blob **out)
{
    struct sim_node *n = ctx;
    if (index == 0 || index > n->d_n || !n->d_log[index - 1].data) {
        sim_fail(n->sim, "Fetch contract", "n%llu fetched index %llu; durable log ends at %zu",
                 (unsigned long long)n->id, (unsigned long long)index, n->d_n);
        return ERR_NOTFOUND;
    }
    *out = raft_blob_ref(n->d_log[index - 1].data);
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
    struct raft_boot boot = {.term = n->d_term, .vote = n->d_vote, .commit = n->d_commit};
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
    bool empty = !n->d_n && !n->d_term && !n->d_vote;
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
    n->log_n = 0;
    for (size_t i = 0; i < n->d_n; i++)
        sim_check_mirror_push(s, n, &n->d_log[i]);
    n->applied = 0;
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
                            .truncate_from = rd->truncate_from};
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
    if (rd.persist_seq)
        sim_node_queue_write(s, n, &rd);
    else if (rd.n_msgs_after_persist)
        sim_node_after_persist(s, n, &rd);
    for (size_t i = 0; i < rd.n_msgs; i++) {
        sim_check_send(s, n, &rd.msgs[i], 0);
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
    if (w->truncate_from) {
        for (size_t i = w->truncate_from - 1; i < n->d_n; i++)
            raft_blob_unref(n->d_log[i].data);
        if (w->truncate_from - 1 < n->d_n) n->d_n = w->truncate_from - 1;
    }
    n->d_log = sim_grow(n->d_log, &n->d_cap, n->d_n + w->n_entries, sizeof *n->d_log);
    for (size_t i = 0; i < w->n_entries; i++) {
        if (w->entries[i].index != n->d_n + 1) {
            sim_fail(s, "Ready contract", "n%llu: write of entry %llu onto a log ending at %zu",
                     (unsigned long long)n->id, (unsigned long long)w->entries[i].index, n->d_n);
            raft_blob_unref(w->entries[i].data);
            continue;
        }
        n->d_log[n->d_n++] = w->entries[i]; /* takes over the reference */
    }
    w->n_entries = 0;
    if (n->d_commit > n->d_n)
        sim_fail(s, "Durability", "n%llu: durable commit %llu beyond its durable log %zu",
                 (unsigned long long)n->id, (unsigned long long)n->d_commit, n->d_n);
}

/* The head write is durable: apply it to the disk image, release its messages, tell the core. */
void sim_node_persist_done(struct sim *s, struct sim_node *n)
{
    if (n->w_head >= n->w_n) return;
    struct sim_write *w = &n->w[n->w_head++];
    uint64_t seq = w->seq;
    sim_trace(s, "n%llu persisted #%llu: term %llu vote %llu commit %llu trunc %llu +%zu -> %zu",
              (unsigned long long)n->id, (unsigned long long)seq, (unsigned long long)w->term,
              (unsigned long long)w->vote, (unsigned long long)w->commit,
              (unsigned long long)w->truncate_from, w->n_entries,
              w->truncate_from ? w->truncate_from - 1 + w->n_entries : n->d_n + w->n_entries);
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
    free(n->log);
    free(n->reads);
    free(n->votes);
    memset(n, 0, sizeof *n);
}
