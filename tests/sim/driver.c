/* driver.c — what happens to the cluster, step by step: seeded run parameters, faults
 * (partitions, crashes, restarts) until they heal, client proposals and ReadIndex reads,
 * membership changes, and the liveness checks once the faults have healed. */
#include "sim.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ULL(x) ((unsigned long long)(x))

static unsigned sim_pick(struct sim *s, const unsigned *choices, unsigned n)
{
    return choices[sim_rng_below(&s->rng, n)];
}

static void sim_driver_faults_params(struct sim *s, struct sim_params *p)
{
    if (sim_rng_chance(&s->rng, 100)) return; /* a calm run: no faults at all */
    p->loss_pm = sim_rng_chance(&s->rng, 600) ? (uint32_t)sim_rng_range(&s->rng, 5, 150) : 0;
    p->dup_pm = sim_rng_chance(&s->rng, 400) ? (uint32_t)sim_rng_range(&s->rng, 5, 100) : 0;
    p->reorder_pm = sim_rng_chance(&s->rng, 500) ? (uint32_t)sim_rng_range(&s->rng, 5, 100) : 0;
    p->delay_max = p->delay_min + (unsigned)sim_rng_range(&s->rng, 0, 25);
    p->partition_pm = sim_rng_chance(&s->rng, 600) ? (uint32_t)sim_rng_range(&s->rng, 5, 40) : 0;
    p->crash_pm = sim_rng_chance(&s->rng, 600) ? (uint32_t)sim_rng_range(&s->rng, 3, 25) : 0;
    static const unsigned disk[] = {0, 3, 10, 30};
    p->disk_max = sim_pick(s, disk, 4);
    if (sim_rng_chance(&s->frng, 500))
        p->queue_drop_pm = (uint32_t)sim_rng_range(&s->frng, 300, 1000);
}

static void sim_driver_params(struct sim *s)
{
    struct sim_params *p = &s->p;
    sim_rng_seed(&s->frng, sim_mix(s->o.seed ^ 0x71756575652d6472ull));
    p->n_target = s->o.nodes ? s->o.nodes : (s->o.seed % 2 ? 3 : 5);
    p->membership = s->o.seed % 3 == 0;
    unsigned mode = (unsigned)sim_rng_below(&s->rng, 10);
    p->prevote = mode != 1 && mode != 3;
    p->check_quorum = mode != 2 && mode != 3;
    p->heartbeat = (unsigned)sim_rng_range(&s->rng, 1, 3);
    p->election_min = (unsigned)sim_rng_range(&s->rng, 8, 12);
    p->election_max = p->election_min + (unsigned)sim_rng_range(&s->rng, 5, 12);
    static const unsigned ents[] = {1, 2, 4, 16, 64}, bytes[] = {64, 512, 1u << 20};
    static const unsigned infl[] = {1, 2, 4, 8}, cache[] = {64, 1024, 1u << 20};
    p->max_append_entries = sim_pick(s, ents, 5);
    p->max_append_bytes = sim_pick(s, bytes, 3);
    p->max_inflight = sim_pick(s, infl, 4);
    /* Keep replication able to outrun the proposals (a liveness run, not a load test). */
    unsigned per_msg = p->max_append_entries < p->max_append_bytes / 64 ? p->max_append_entries
                                                                        : p->max_append_bytes / 64;
    while (p->max_inflight * per_msg < 4)
        p->max_inflight *= 2;
    p->cache_bytes_max = sim_pick(s, cache, 3);
    p->lazy_boot = sim_rng_chance(&s->rng, 500);
    p->delay_min = (unsigned)sim_rng_range(&s->rng, 1, 3);
    p->delay_max = p->delay_min + 2;
    sim_driver_faults_params(s, p);
    p->propose_pm = (uint32_t)sim_rng_range(&s->rng, 100, 400);
    p->read_pm = (uint32_t)sim_rng_range(&s->rng, 50, 300);
    p->end_step = s->o.steps;
    p->heal_step = s->o.steps * 3 / 5;
    p->member_stop_step = s->o.steps / 2;
}

/* Membership plan: grow 1 -> n_target, then churn (remove the leader, or shrink to 1 and
 * grow again with fresh nodes). Returns the number of node slots the plan uses. */
static unsigned sim_driver_plan(struct sim *s)
{
    unsigned n = s->p.n_target, fresh = n + 1;
    for (unsigned id = 2; id <= n; id++)
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, id};
    switch (sim_rng_below(&s->rng, 4)) {
    case 1:
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_REMOVE_LEADER, 0};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, fresh++};
        break;
    case 2:
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_REMOVE, 0};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_REMOVE_LEADER, 0};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, fresh++};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, fresh++};
        break;
    case 3: /* down to one voter and back to three */
        for (unsigned i = 1; i < n; i++)
            s->mops[s->mop_n++] = (struct sim_mop){
                sim_rng_chance(&s->rng, 300) ? SIM_MOP_REMOVE_LEADER : SIM_MOP_REMOVE, 0};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, fresh++};
        s->mops[s->mop_n++] = (struct sim_mop){SIM_MOP_ADD, fresh++};
        break;
    default:
        break;
    }
    return fresh - 1;
}

void sim_driver_member(struct raft_member *m, raft_id id, bool voter)
{
    memset(m, 0, sizeof *m);
    m->id = id;
    m->voter = voter;
    m->info_len = (uint16_t)snprintf((char *)m->info, sizeof m->info, "n%llu", ULL(id));
}

static void sim_driver_bootstrap(struct sim *s, struct sim_node *n, unsigned voters)
{
    struct raft_configuration c = {.n = voters};
    for (unsigned i = 0; i < voters; i++)
        sim_driver_member(&c.members[i], i + 1, true);
    if (!n->up) return;
    int rc = raft_bootstrap(n->r, &c);
    sim_trace(s, "bootstrap n%llu with %u voters: %s", ULL(n->id), voters, err_str(rc));
    if (rc != 0) sim_fail(s, "Boot", "raft_bootstrap(n%llu) failed: %s", ULL(n->id), err_str(rc));
    s->gconf = c;
    sim_node_drain(s, n);
}

/* Restarts n from its disk. A node whose bootstrap write never became durable comes back
 * empty and is bootstrapped again, as raftsup does for a first node with an empty state. */
static void sim_driver_restart(struct sim *s, struct sim_node *n)
{
    bool empty = !n->d_n && !n->d_term && !n->d_off;
    sim_node_boot(s, n);
    if (!empty || s->failed || !n->up) return;
    if (!s->p.membership)
        sim_driver_bootstrap(s, n, s->p.n_target);
    else if (n->id == 1 && s->gcommit == 0)
        sim_driver_bootstrap(s, n, 1);
}

void sim_driver_init(struct sim *s)
{
    sim_driver_params(s);
    sim_snap_params(s);
    const struct sim_params *p = &s->p;
    for (unsigned i = 0; i < SIM_MAX_NODES; i++) {
        s->nodes[i].id = i + 1;
        s->nodes[i].sim = s;
    }
    s->next_payload = 1;
    s->n_slots = p->membership ? sim_driver_plan(s) : p->n_target;
    sim_trace(s,
              "seed %llu: %u nodes, %s, prevote %d, check_quorum %d, heartbeat %u, election "
              "%u-%u, append %u/%uB x%u, cache %lluB, lazy boot %d, loss %u dup %u reorder %u "
              "per mille, delay %u-%u, partitions %u crashes %u queue drops %u per mille, disk "
              "<=%u, steps %u",
              ULL(s->o.seed), p->n_target, p->membership ? "membership" : "static", p->prevote,
              p->check_quorum, p->heartbeat, p->election_min, p->election_max,
              p->max_append_entries, p->max_append_bytes, p->max_inflight, ULL(p->cache_bytes_max),
              p->lazy_boot, p->loss_pm, p->dup_pm, p->reorder_pm, p->delay_min, p->delay_max,
              p->partition_pm, p->crash_pm, p->queue_drop_pm, p->disk_max, p->end_step);
    for (unsigned i = 0; i < p->n_target && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        sim_node_boot(s, n);
        if (!p->membership)
            sim_driver_bootstrap(s, n, p->n_target);
        else if (i == 0)
            sim_driver_bootstrap(s, n, 1);
    }
    sim_schedule(s, SIM_TICK, SIM_EV_DRIVER, 0, 0, NULL);
}

/* The up leader with the highest term (a stale leader may linger in a lower term). */
struct sim_node *sim_driver_leader(struct sim *s)
{
    struct sim_node *best = NULL;
    raft_term max_term = 0;
    for (unsigned i = 0; i < s->n_slots; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->up) continue;
        /* A removed node that has not heard of its removal may run ahead in term. */
        bool member = !s->p.membership || raft_configuration_find(&s->gconf, n->id);
        if (member && n->obs.term > max_term) max_term = n->obs.term;
        if (n->obs.role == RAFT_LEADER && (!best || n->obs.term > best->obs.term)) best = n;
    }
    return best && best->obs.term == max_term ? best : NULL;
}

/* A random up node; leaders_only: among those that believe they lead. */
static struct sim_node *sim_driver_random_node(struct sim *s, bool leaders_only)
{
    struct sim_node *c[SIM_MAX_NODES];
    unsigned k = 0;
    for (unsigned i = 0; i < s->n_slots; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->up && (!leaders_only || n->obs.role == RAFT_LEADER)) c[k++] = n;
    }
    return k ? c[sim_rng_below(&s->rng, k)] : NULL;
}

static void sim_driver_partition(struct sim *s)
{
    unsigned n = s->n_slots, kind = (unsigned)sim_rng_below(&s->rng, 5);
    struct sim_node *l = sim_driver_random_node(s, true);
    unsigned x = l && sim_rng_chance(&s->rng, 500) ? (unsigned)l->id - 1
                                                   : (unsigned)sim_rng_below(&s->rng, n);
    unsigned side[SIM_MAX_NODES];
    for (unsigned i = 0; i < n; i++)
        side[i] = (unsigned)sim_rng_below(&s->rng, 2);
    static const char *const names[] = {"isolate", "split", "no outbound from", "no inbound to",
                                        "random one-way cuts"};
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++) {
            bool b = false;
            if (kind == 0)
                b = i == x || j == x;
            else if (kind == 1)
                b = side[i] != side[j];
            else if (kind == 2)
                b = i == x;
            else if (kind == 3)
                b = j == x;
            else
                b = sim_rng_chance(&s->rng, 300);
            s->blocked[i][j] = b && i != j;
        }
    s->partition_end = s->step + (unsigned)sim_rng_range(&s->rng, 5, 120);
    sim_trace(s, "partition: %s n%u until step %u", names[kind], x + 1, s->partition_end);
    if (!sim_rng_chance(&s->frng, s->p.queue_drop_pm)) return;
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++)
            if (s->blocked[i][j]) k += sim_net_drop_link(s, i, j);
    sim_trace(s, "partition: the cut links dropped their queues (%u messages)", k);
}

/* A crashed process's connections fail: both directions drop what they had queued. */
static void sim_driver_crash_links(struct sim *s, const struct sim_node *v)
{
    if (!sim_rng_chance(&s->frng, s->p.queue_drop_pm)) return;
    unsigned k = 0, x = (unsigned)v->id - 1;
    for (unsigned i = 0; i < s->n_slots; i++)
        if (i != x) k += sim_net_drop_link(s, i, x) + sim_net_drop_link(s, x, i);
    sim_trace(s, "crash: the links of n%llu dropped their queues (%u messages)", ULL(v->id), k);
}

static void sim_driver_faults(struct sim *s)
{
    if (s->partition_end && s->step >= s->partition_end) {
        memset(s->blocked, 0, sizeof s->blocked);
        s->partition_end = 0;
        sim_trace(s, "partition healed");
    } else if (!s->partition_end && sim_rng_chance(&s->rng, s->p.partition_pm)) {
        sim_driver_partition(s);
    }
    if (sim_rng_chance(&s->rng, s->p.crash_pm)) {
        struct sim_node *v = sim_rng_chance(&s->rng, 400) ? sim_driver_random_node(s, true) : NULL;
        if (!v) v = sim_driver_random_node(s, false);
        if (v && !v->retired) {
            v->restart_step = s->step + (unsigned)sim_rng_range(&s->rng, 1, 60);
            sim_node_crash(s, v);
            sim_driver_crash_links(s, v);
        }
    }
    for (unsigned i = 0; i < s->n_slots && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->started && !n->up && !n->retired && n->restart_step <= s->step)
            sim_driver_restart(s, n);
    }
}

/* The faults end: the network is clean, every node restarts, and nodes removed from the
 * committed configuration are stopped for good (as an operator would). */
static void sim_driver_heal(struct sim *s)
{
    s->healed = true;
    s->p.delay_max = s->p.delay_min + 2; /* latency spikes are faults too */
    memset(s->blocked, 0, sizeof s->blocked);
    s->partition_end = 0;
    sim_trace(s, "faults healed");
    raft_id adding = 0;
    if (s->mop_submitted && s->mops[s->mop_i].kind == SIM_MOP_ADD) adding = s->mops[s->mop_i].id;
    for (unsigned i = 0; i < s->n_slots && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->started || n->retired) continue;
        if (s->p.membership && !raft_configuration_find(&s->gconf, n->id) && n->id != adding) {
            sim_node_crash(s, n);
            n->retired = true;
            sim_trace(s, "n%llu retired (not a member)", ULL(n->id));
        } else if (!n->up) {
            sim_driver_restart(s, n);
        }
    }
}

static struct raft_blob *sim_driver_payload(struct sim *s)
{
    uint64_t id = s->next_payload++;
    uint32_t len = 8 + (uint32_t)(sim_rng_chance(&s->rng, 50) ? sim_rng_range(&s->rng, 100, 700)
                                                              : sim_rng_range(&s->rng, 0, 40));
    struct raft_blob *b = raft_blob_new(len);
    if (!b) abort();
    for (int i = 0; i < 8; i++)
        b->data[i] = (uint8_t)(id >> (8 * i));
    for (uint32_t k = 8; k < len; k++)
        b->data[k] = (uint8_t)(id * 131 + k);
    return b;
}

int sim_driver_propose_to(struct sim *s, struct sim_node *n, raft_index *idx, raft_term *term)
{
    uint64_t id = s->next_payload;
    struct raft_status st;
    raft_status(n->r, &st);
    int rc = raft_propose(n->r, sim_driver_payload(s), idx, term);
    if (st.transferee && rc != ERR_BUSY)
        sim_fail(s, "Transfer rule", "n%llu took a proposal while handing leadership to n%llu: %s",
                 ULL(n->id), ULL(st.transferee), err_str(rc));
    sim_trace(s, "propose #%llu to n%llu: %s at (%llu, t%llu)", ULL(id), ULL(n->id), err_str(rc),
              ULL(rc ? 0 : *idx), ULL(rc ? 0 : *term));
    if (rc == 0) s->st.proposals++;
    sim_node_drain(s, n);
    return rc;
}

static void sim_driver_read(struct sim *s)
{
    struct sim_node *n = sim_driver_random_node(s, false);
    if (!n) return;
    if (s->rr_n == 0) s->rr_n = 1; /* read ids start at 1 */
    s->rr = sim_grow(s->rr, &s->rr_cap, s->rr_n + 1, sizeof *s->rr);
    uint64_t id = s->rr_n++;
    s->rr[id] = (struct sim_read_rec){(uint8_t)(n->id - 1), s->gcommit};
    int rc = raft_read_index(n->r, id);
    sim_trace(s, "read %llu on n%llu (must see %llu): %s", ULL(id), ULL(n->id), ULL(s->gcommit),
              err_str(rc));
    sim_node_drain(s, n);
}

void sim_driver_step(struct sim *s)
{
    s->step++;
    if (s->step == s->p.heal_step)
        sim_driver_heal(s);
    else if (!s->healed)
        sim_driver_faults(s);
    if (!s->failed) sim_driver_membership(s);
    if (!s->failed) sim_snap_driver(s);
    /* After healing only the liveness probes propose: the backlog must drain. */
    if (!s->failed && !s->healed && sim_rng_chance(&s->rng, s->p.propose_pm)) {
        struct sim_node *l = sim_driver_random_node(s, true);
        raft_index idx;
        raft_term term;
        if (l) sim_driver_propose_to(s, l, &idx, &term);
    }
    if (!s->failed && sim_rng_chance(&s->rng, s->p.read_pm)) sim_driver_read(s);
    if (!s->failed && s->healed) sim_driver_liveness(s);
    sim_schedule(s, s->now + SIM_TICK, SIM_EV_DRIVER, 0, 0, NULL);
}
