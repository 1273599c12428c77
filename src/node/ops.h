/* ops.h — pending client operations of one node: writes waiting for a leader, for the
 * leader's answer to a forward, or for their entry to be applied here; reads waiting for a
 * ReadIndex confirmation and then for the local state machine to catch up. */
#ifndef RAFTFS_NODE_OPS_H
#define RAFTFS_NODE_OPS_H

#include <ev.h>

#include "node.h"

enum node_op_kind { OP_PUT, OP_DELETE, OP_GET, OP_LIST, OP_JOIN, OP_REMOVE };

enum node_op_state {
    OPS_WAIT_LEADER,     /* no leader known: dispatched again when one appears */
    OPS_WAIT_FWD,        /* forwarded to the leader; waiting for (index, term) */
    OPS_WAIT_APPLY,      /* our entry is at (index, term): answer when applied here */
    OPS_WAIT_READ,       /* ReadIndex requested */
    OPS_WAIT_READ_APPLY, /* read index known: answer once applied >= index */
};

struct node_op {
    struct node_op *prev, *next;
    enum node_op_kind kind;
    enum node_op_state state;
    struct http_req *req;
    struct raft_blob *cmd; /* PUT/DELETE command, JOIN member info (kept for retries) */
    raft_id target;        /* REMOVE: the member */
    char path[4097];       /* GET path or LIST prefix */
    uint64_t id;           /* current forward id or read id */
    raft_id fwd_to;        /* the leader we forwarded to */
    raft_index index;
    raft_term term;
    ev_tstamp deadline; /* answer 503 after this */
    ev_tstamp retry_at; /* re-dispatch a forward / read after this */
};

#define NODE_WRITE_TIMEOUT_S 5.0
#define NODE_READ_TIMEOUT_S 3.0
#define NODE_FWD_RETRY_S 1.0

struct node_op *node_op_new(struct node *n, enum node_op_kind kind, struct http_req *req,
                            ev_tstamp timeout_s);
/* Unlinks and frees op (dropping its command reference); op->req must be answered. */
void node_op_done(struct node *n, struct node_op *op);
/* Sends op towards the leader (or proposes it here) according to its kind. */
void node_op_dispatch(struct node *n, struct node_op *op);
/* Answers op's request with 503 + Retry-After and finishes it. */
void node_op_fail(struct node *n, struct node_op *op, const char *code, const char *why);
/* Remembered outcome of a recently applied entry (for answers that arrive late). */
const void *node_recent_result(struct node *n, raft_index index, raft_term term);

#endif
