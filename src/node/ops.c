/* ops.c — the life of a client operation on this node: dispatch to the leader (proposing
 * locally when we are it), retries with the same request id (the state machine deduplicates,
 * so a retry never applies a write twice), and completion when the entry or read is ready.
 * Invariant: every op answers its HTTP request exactly once, at the latest at its deadline. */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"
#include "http.h"
#include "log.h"
#include "node_api.h"
#include "rassert.h"
#include "codec.h"
#include "transfer.h"
#include "transport.h"

#define NODE_RECENT 1024 /* outcomes of recently applied entries, by index */

struct node_recent {
    raft_index index;
    raft_term term;
    struct fsm_result res;
};

static struct node_recent node_recent_ring[NODE_RECENT];

struct node_op *node_op_new(struct node *n, enum node_op_kind kind, struct http_req *req,
                            ev_tstamp timeout_s)
{
    struct node_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->kind = kind;
    op->req = req;
    op->deadline = ev_now(n->loop) + timeout_s;
    op->next = n->ops;
    if (n->ops) n->ops->prev = op;
    n->ops = op;
    return op;
}

void node_op_done(struct node *n, struct node_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        n->ops = op->next;
    if (op->next) op->next->prev = op->prev;
    raft_blob_unref(op->cmd);
    free(op);
}

void node_op_fail(struct node *n, struct node_op *op, const char *code, const char *why)
{
    http_reply_error(op->req, 503, code, "%s", why);
    node_op_done(n, op);
}

const void *node_recent_result(struct node *n, raft_index index, raft_term term)
{
    (void)n;
    const struct node_recent *r = &node_recent_ring[index % NODE_RECENT];
    if (r->index != index || r->term != term) return NULL;
    return &r->res;
}

static bool ops_is_write(const struct node_op *op)
{
    return op->kind == OP_PUT || op->kind == OP_DELETE || op->kind == OP_JOIN ||
           op->kind == OP_REMOVE;
}

/* The entry (index, term) now holds op: wait for it, or finish at once if it is already
 * applied here. */
static void ops_wait_apply(struct node *n, struct node_op *op, raft_index index, raft_term term)
{
    op->state = OPS_WAIT_APPLY;
    op->index = index;
    op->term = term;
    if (index > n->applied) return;
    const struct fsm_result *res = node_recent_result(n, index, term);
    if (res)
        node_api_complete(n, op, res);
    else
        node_op_dispatch(n, op); /* lost (overwritten) or too old to tell: retry, deduplicated */
}

static int ops_propose_local(struct node *n, struct node_op *op, raft_index *index, raft_term *term)
{
    switch (op->kind) {
    case OP_PUT:
    case OP_DELETE:
        n->m.proposals++;
        return raft_propose(n->raft, raft_blob_ref(op->cmd), index, term);
    case OP_JOIN: /* as a forwarded join: an existing member with new addresses moves */
        return node_api_leader_exec(n, CODEC_FWD_JOIN, raft_blob_ref(op->cmd), index, term);
    case OP_REMOVE:
        *term = n->term;
        return node_member_remove(n, op->target, index);
    default:
        ASSERT(0);
    }
    return ERR_INVALID;
}

static uint8_t ops_fwd_code(const struct node_op *op)
{
    switch (op->kind) {
    case OP_JOIN:
        return CODEC_FWD_JOIN;
    case OP_REMOVE:
        return CODEC_FWD_REMOVE;
    default:
        return CODEC_FWD_PROPOSE;
    }
}

/* An error from the leader (ours or remote) for a write op. */
static void ops_write_error(struct node *n, struct node_op *op, int err)
{
    /* ERR_BUSY on a file write: the leader is handing leadership over; wait for the next. */
    bool busy_write = err == ERR_BUSY && (op->kind == OP_PUT || op->kind == OP_DELETE);
    if (err == ERR_NOTLEADER || busy_write) {
        op->state = OPS_WAIT_LEADER; /* a new leader will be tried when one is known */
        op->retry_at = ev_now(n->loop) + 0.05;
        return;
    }
    n->m.proposals_failed++;
    node_api_fail_write(n, op, err);
}

static void ops_dispatch_write(struct node *n, struct node_op *op)
{
    if (n->role == RAFT_LEADER) {
        raft_index index = 0;
        raft_term term = 0;
        int rv = ops_propose_local(n, op, &index, &term);
        if (rv)
            ops_write_error(n, op, rv);
        else
            ops_wait_apply(n, op, index, term);
        return;
    }
    if (!n->leader) {
        op->state = OPS_WAIT_LEADER;
        return;
    }
    op->id = ++n->next_op_id;
    op->fwd_to = n->leader;
    op->state = OPS_WAIT_FWD;
    op->retry_at = ev_now(n->loop) + NODE_FWD_RETRY_S;
    n->m.forwarded++;
    uint8_t code = ops_fwd_code(op);
    struct raft_blob *payload = raft_blob_ref(op->cmd);
    if (op->kind == OP_REMOVE) payload = node_remove_payload(op->target);
    int rv = transport_send_fwd_req(n->tr, n->leader, op->id, code, payload);
    if (rv) LOG_DEBUG("forward to leader: %s (will retry)", err_str(rv));
}

static void ops_dispatch_read(struct node *n, struct node_op *op)
{
    op->id = ++n->next_op_id;
    op->retry_at = ev_now(n->loop) + NODE_FWD_RETRY_S;
    int rv = raft_read_index(n->raft, op->id);
    if (rv == ERR_NOTLEADER) {
        op->state = OPS_WAIT_LEADER;
        return;
    }
    if (rv) {
        node_op_fail(n, op, "unavailable", err_str(rv));
        return;
    }
    op->state = OPS_WAIT_READ;
}

void node_op_dispatch(struct node *n, struct node_op *op)
{
    if (n->stopping) {
        node_op_fail(n, op, "shutting_down", "the node is shutting down; retry another node");
        return;
    }
    if (ops_is_write(op))
        ops_dispatch_write(n, op);
    else
        ops_dispatch_read(n, op);
}

void node_ops_on_applied(struct node *n, const struct raft_entry *e, const void *result)
{
    struct node_recent *r = &node_recent_ring[e->index % NODE_RECENT];
    r->index = e->index;
    r->term = e->term;
    memcpy(&r->res, result, sizeof r->res);
    struct node_op *op = n->ops, *next;
    for (; op; op = next) {
        next = op->next;
        if (op->state != OPS_WAIT_APPLY || op->index != e->index) continue;
        if (op->term == e->term)
            node_api_complete(n, op, &r->res);
        else
            node_op_dispatch(n, op); /* another leader's entry took the slot: retry */
    }
}

void node_ops_on_read_state(struct node *n, const struct raft_read_state *rs)
{
    for (struct node_op *op = n->ops; op; op = op->next) {
        if (op->state != OPS_WAIT_READ || op->id != rs->id) continue;
        if (rs->failed) {
            op->state = OPS_WAIT_LEADER;
            op->retry_at = ev_now(n->loop) + 0.02;
        } else {
            op->state = OPS_WAIT_READ_APPLY;
            op->index = rs->index;
        }
        return;
    }
}

void node_ops_after_apply(struct node *n)
{
    struct node_op *op = n->ops, *next;
    for (; op; op = next) {
        next = op->next;
        if (op->state == OPS_WAIT_READ_APPLY && n->applied >= op->index) {
            n->m.reads_linearizable++;
            node_api_serve_read(n, op);
        }
    }
}

void node_ops_on_leader_change(struct node *n)
{
    struct node_op *op = n->ops, *next;
    for (; op; op = next) {
        next = op->next;
        bool lost_fwd =
            (op->state == OPS_WAIT_FWD || op->state == OPS_WAIT_READ) && op->fwd_to != n->leader;
        if (op->state == OPS_WAIT_LEADER || lost_fwd)
            if (n->leader) node_op_dispatch(n, op);
    }
}

void node_ops_fail_all(struct node *n)
{
    node_transfer_fail_all(n);
    while (n->ops)
        node_op_fail(n, n->ops, "shutting_down", "the node is shutting down; retry another node");
}

void node_ops_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct node *n = (struct node *)((char *)w - offsetof(struct node, op_timer));
    ev_tstamp now = ev_now(loop);
    struct node_op *op = n->ops, *next;
    for (; op; op = next) {
        next = op->next;
        if (now >= op->deadline) {
            bool no_leader = n->leader == 0;
            node_op_fail(n, op, no_leader ? "no_leader" : "timeout",
                         no_leader ? "no leader: the cluster has no quorum right now"
                                   : "timed out waiting for the cluster; the write may or may "
                                     "not have been applied");
            continue;
        }
        bool retry = (op->state == OPS_WAIT_FWD || op->state == OPS_WAIT_READ ||
                      op->state == OPS_WAIT_LEADER) &&
                     now >= op->retry_at && n->leader;
        if (retry) node_op_dispatch(n, op);
    }
}

/* ---- Forwarding: the leader's side and the follower's answer ---------------------------- */

void node_fwd_req_cb(void *ctx, raft_id from, uint64_t fwd_id, uint8_t op_code,
                     struct raft_blob *payload)
{
    struct node *n = ctx;
    raft_index index = 0;
    raft_term term = n->term;
    int rv = ERR_NOTLEADER;
    if (n->role == RAFT_LEADER && !n->stopping) {
        rv = node_api_leader_exec(n, op_code, raft_blob_ref(payload), &index, &term);
    }
    raft_blob_unref(payload);
    char name[CONFIG_ID_MAX] = "", http[CONFIG_ADDR_MAX];
    if (n->leader && n->leader != n->id)
        node_member_http(n, n->leader, name, sizeof name, http, sizeof http);
    transport_send_fwd_resp(n->tr, from, fwd_id, rv, index, term, name);
}

void node_fwd_resp_cb(void *ctx, uint64_t fwd_id, int err, raft_index index, raft_term term,
                      const char *leader_name)
{
    struct node *n = ctx;
    (void)leader_name;
    for (struct node_op *op = n->ops; op; op = op->next) {
        if (op->state != OPS_WAIT_FWD || op->id != fwd_id) continue;
        if (err)
            ops_write_error(n, op, err);
        else
            ops_wait_apply(n, op, index, term);
        return;
    }
    node_transfer_on_fwd_resp(n, fwd_id, err);
}
