/* net.c — the simulated network: deep-copied messages with delivery times, and the seeded
 * faults (loss, duplication, delay/reordering, symmetric and one-way partitions). It never
 * delivers to a node that is down, and never shares a message buffer with a core. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const sim_msg_names[RAFT_MSG__COUNT] = {
    [RAFT_MSG_PREVOTE] = "PREVOTE",
    [RAFT_MSG_PREVOTE_RESP] = "PREVOTE_RESP",
    [RAFT_MSG_VOTE] = "VOTE",
    [RAFT_MSG_VOTE_RESP] = "VOTE_RESP",
    [RAFT_MSG_APPEND] = "APPEND",
    [RAFT_MSG_APPEND_RESP] = "APPEND_RESP",
    [RAFT_MSG_READINDEX] = "READINDEX",
    [RAFT_MSG_READINDEX_RESP] = "READINDEX_RESP",
    [RAFT_MSG_SNAPSHOT] = "SNAPSHOT",
    [RAFT_MSG_SNAPSHOT_RESP] = "SNAPSHOT_RESP",
    [RAFT_MSG_TIMEOUT_NOW] = "TIMEOUT_NOW",
};

const char *sim_msg_type_str(uint8_t type)
{
    if (type < RAFT_MSG__COUNT && sim_msg_names[type]) return sim_msg_names[type];
    return "?";
}

/* Copies m into `into` (or a new allocation when NULL) with its own entry array and one
 * reference per payload. Returns the copy; aborts on out of memory (a test tool). */
struct raft_msg *sim_msg_copy(const struct raft_msg *m, struct raft_msg *into)
{
    struct raft_msg *c = into ? into : malloc(sizeof *c);
    if (!c) abort();
    *c = *m;
    c->entries = NULL;
    if (m->n_entries) {
        c->entries = malloc(m->n_entries * sizeof *c->entries);
        if (!c->entries) abort();
        for (uint32_t i = 0; i < m->n_entries; i++) {
            c->entries[i] = m->entries[i];
            raft_blob_ref(c->entries[i].data);
        }
    }
    return c;
}

/* Drops the payload references and the entry array of a copy (not the struct itself). */
void sim_msg_release(struct raft_msg *m)
{
    for (uint32_t i = 0; i < m->n_entries; i++)
        raft_blob_unref(m->entries[i].data);
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

void sim_msg_describe(const struct raft_msg *m, char *buf, size_t len)
{
    int k = snprintf(buf, len, "%s %llu->%llu t%llu i%llu lt%llu", sim_msg_type_str(m->type),
                     (unsigned long long)m->from, (unsigned long long)m->to,
                     (unsigned long long)m->term, (unsigned long long)m->index,
                     (unsigned long long)m->log_term);
    if (k < 0 || (size_t)k >= len) return;
    switch (m->type) {
    case RAFT_MSG_APPEND:
        snprintf(buf + k, len - (size_t)k, " c%llu n%u ctx%llu", (unsigned long long)m->commit,
                 m->n_entries, (unsigned long long)m->ctx);
        break;
    case RAFT_MSG_APPEND_RESP:
        snprintf(buf + k, len - (size_t)k, "%s h%llu ctx%llu", m->reject ? " REJECT" : " ok",
                 (unsigned long long)m->hint, (unsigned long long)m->ctx);
        break;
    case RAFT_MSG_PREVOTE_RESP:
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_READINDEX_RESP:
        snprintf(buf + k, len - (size_t)k, "%s ctx%llu", m->reject ? " REJECT" : " granted/ok",
                 (unsigned long long)m->ctx);
        break;
    case RAFT_MSG_READINDEX:
        snprintf(buf + k, len - (size_t)k, " ctx%llu", (unsigned long long)m->ctx);
        break;
    case RAFT_MSG_VOTE:
        if (m->transfer) snprintf(buf + k, len - (size_t)k, " (transfer)");
        break;
    default:
        break;
    }
}

static unsigned sim_net_delay(struct sim *s)
{
    unsigned d = (unsigned)sim_rng_range(&s->rng, s->p.delay_min, s->p.delay_max);
    if (!s->healed && sim_rng_chance(&s->rng, s->p.reorder_pm))
        d += (unsigned)sim_rng_range(&s->rng, 5 * SIM_TICK / 2, 8 * SIM_TICK);
    return d;
}

/* A message leaves node m->from now: faults decide whether, when and how often it arrives. */
void sim_net_send(struct sim *s, const struct raft_msg *m)
{
    char desc[160];
    s->st.msgs_sent++;
    if (s->o.tracing) sim_msg_describe(m, desc, sizeof desc);
    if (m->to == 0 || m->to > s->n_slots || m->from == 0 || m->from > s->n_slots) {
        sim_fail(s, "Message contract", "message with a bad address (from %llu to %llu)",
                 (unsigned long long)m->from, (unsigned long long)m->to);
        return;
    }
    unsigned from = (unsigned)m->from - 1, to = (unsigned)m->to - 1;
    const char *why = NULL;
    if (s->blocked[from][to])
        why = "partitioned";
    else if (!s->healed && sim_rng_chance(&s->rng, s->p.loss_pm))
        why = "lost";
    if (why) {
        s->st.msgs_dropped++;
        if (s->o.tracing) sim_trace(s, "  send %s: %s", desc, why);
        return;
    }
    unsigned copies = 1 + (!s->healed && sim_rng_chance(&s->rng, s->p.dup_pm));
    for (unsigned c = 0; c < copies; c++) {
        unsigned d = sim_net_delay(s);
        sim_schedule(s, s->now + d, SIM_EV_DELIVER, (uint8_t)to, 0, sim_msg_copy(m, NULL));
        if (s->o.tracing) sim_trace(s, "  send %s (+%u%s)", desc, d, c ? ", duplicate" : "");
    }
}

/* Delivery event: a partition that started while the message was in flight drops it too. */
void sim_net_deliver(struct sim *s, struct raft_msg *m)
{
    struct sim_node *n = &s->nodes[m->to - 1];
    char desc[160];
    if (s->o.tracing) sim_msg_describe(m, desc, sizeof desc);
    if (!n->up || s->blocked[m->from - 1][m->to - 1]) {
        if (s->o.tracing) sim_trace(s, "drop %s: %s", desc, n->up ? "partitioned" : "node down");
        s->st.msgs_dropped++;
    } else {
        if (s->o.tracing) sim_trace(s, "recv %s", desc);
        int rc = raft_step(n->r, m);
        if (rc != 0)
            sim_fail(s, "Message contract", "n%llu refused a core's message (%s): rc=%d",
                     (unsigned long long)n->id, sim_msg_type_str(m->type), rc);
        sim_node_drain(s, n);
    }
    sim_msg_release(m);
    free(m);
}

unsigned sim_net_drop_link(struct sim *s, unsigned from, unsigned to)
{
    unsigned k = 0;
    for (size_t i = 0; i < s->heap_n; i++) {
        struct sim_event *ev = &s->heap[i];
        if (ev->kind != SIM_EV_DELIVER || ev->msg->from != from + 1 || ev->msg->to != to + 1)
            continue;
        sim_msg_release(ev->msg);
        free(ev->msg);
        ev->msg = NULL;
        ev->kind = SIM_EV_DROPPED; /* the heap orders by (time, seq) only: still a heap */
        s->st.msgs_dropped++;
        k++;
    }
    return k;
}
