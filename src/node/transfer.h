/* transfer.h — leadership transfer on the node side (the core's raft_transfer_leadership does
 * the Raft part): POST /v1/cluster/transfer requests, forwarded to the leader like the other
 * cluster operations and answered once the target leads, and the leader's hand-over before a
 * graceful stop (SIGTERM), so a rolling restart refuses no write for long. Also runs the
 * leader's re-add of a member whose address changed (members.c). */
#ifndef RAFTFS_NODE_TRANSFER_H
#define RAFTFS_NODE_TRANSFER_H

#include <stdbool.h>
#include <stdint.h>

#include "node.h"

struct http_req;

/* POST /v1/cluster/transfer {"id"}: 200 {"leader","term"} once `id` leads; 404 not a member;
 * 409 a learner, already the leader, or another transfer is running; 504 when leadership did
 * not move within about two election timeouts (the old leader then keeps serving). */
void node_transfer_request(struct node *n, struct http_req *req, const char *id);
/* Leader side, local or forwarded (CODEC_FWD_TRANSFER): starts a transfer to `to`.
 * 0, ERR_NOTLEADER, ERR_INVALID (to is self or a learner), ERR_NOTFOUND, ERR_BUSY. */
int node_transfer_start(struct node *n, raft_id to);
/* The leader's answer to one of our forwarded transfers; false when fwd_id is not ours. */
bool node_transfer_on_fwd_resp(struct node *n, uint64_t fwd_id, int err);
/* The voter a leader hands over to (0: none). */
raft_id node_transfer_pick(struct node *n);
/* SIGTERM/SIGINT. true: this node is the leader and hands leadership to another voter first;
 * it stops by itself once leadership moved and its pending requests drained, or after about
 * one election timeout. false: stop now (not a leader, no other voter, or a second signal). */
bool node_transfer_on_stop_signal(struct node *n);
/* The node is stopping: answers every pending transfer request with 503. */
void node_transfer_fail_all(struct node *n);

/* Keeps the module's timer running (10 ms) while anything above or a re-add is pending. */
void node_transfer_kick(struct node *n);

/* members.c: after the removal of member m->id (entry at remove_index) the leader adds m
 * (new addresses) back as a learner, retrying while the removal is uncommitted. */
void node_member_readd_later(struct node *n, const struct raft_member *m);
/* Leader: a join for an existing member. Same addresses: ERR_EXISTS. New ones: removes it
 * (*index: the removal entry) and adds it back as a learner soon after. The leader's own
 * addresses: it hands leadership over and answers ERR_NOTLEADER (the join is retried on the
 * next leader). ERR_BUSY while another re-add is pending, raft_remove_member's errors. */
int node_member_readdress(struct node *n, const struct raft_member *m, raft_index *index);
/* Leader: removes member id. Its own removal is handed to the next leader: it transfers
 * leadership and answers ERR_NOTLEADER (the caller retries there), so the cluster is not left
 * without a leader for an election timeout; only if that transfer was abandoned does it
 * remove itself (and step down once that commits). raft_remove_member's errors. */
int node_member_remove(struct node *n, raft_id id, raft_index *index);
/* Called from the transfer module's timer; true while a re-add is pending. */
bool node_member_readd_tick(struct node *n);

#endif
