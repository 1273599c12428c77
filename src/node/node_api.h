/* node_api.h — the node's HTTP backend: turns validated requests into operations and their
 * outcomes into HTTP answers (api.c). */
#ifndef RAFTFS_NODE_API_H
#define RAFTFS_NODE_API_H

#include "node.h"
#include "ops.h"

struct fsm_result;

/* Answers a write op whose entry was applied here with outcome res; finishes op. */
void node_api_complete(struct node *n, struct node_op *op, const struct fsm_result *res);
/* Answers a write op the leader refused with err; finishes op. */
void node_api_fail_write(struct node *n, struct node_op *op, int err);
/* 0 when this node's disk has room for a write of a cmd_len-byte command, else ERR_NOSPACE
 * (HTTP 507 no_space). */
int node_api_space_check(const struct node *n, size_t cmd_len);
/* Answers a read op from local state (its read index is applied); finishes op. */
void node_api_serve_read(struct node *n, struct node_op *op);
/* Leader side of a forwarded (or local) write: takes ownership of one payload reference. */
int node_api_leader_exec(struct node *n, uint8_t op_code, struct raft_blob *payload,
                         raft_index *index, raft_term *term);
/* JOIN payloads carry the member's info bytes; REMOVE payloads its 8-byte big-endian id. */
int node_member_from_blob(const struct raft_blob *b, struct raft_member *m);
struct raft_blob *node_remove_payload(raft_id id);

#endif
