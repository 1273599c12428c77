/* transport.h — Raft peer networking over TCP on one libev loop. Never blocks the loop (one
 * exception: resolving a peer address that is a host name, see transport_set_peer) and never
 * trusts a byte it receives: bad input closes that one connection, nothing else.
 *
 * Each node dials every peer and sends its own frames on that outbound connection (HELLO
 * first); inbound connections only receive. So there is no connection race to resolve. */
#ifndef RAFTFS_TRANSPORT_H
#define RAFTFS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "raft.h"

struct ev_loop;
struct transport;

#define TRANSPORT_MAX_PEERS 32           /* outbound peers (config nodes + members) */
#define TRANSPORT_MAX_INBOUND 64         /* inbound connections; more are accepted and closed */
#define TRANSPORT_QUEUE_BYTES (8u << 20) /* per-peer queue: sends fail once this is reached */
#define TRANSPORT_REF_MIN_BYTES 4096     /* entry payloads this large are queued by reference */

/* Callbacks run on the loop. They may call transport_send* but never transport_free. */
struct transport_ops {
    /* One decoded message from peer m->from (checked against the HELLO), borrowed for the
     * call. */
    void (*on_msg)(void *ctx, const struct raft_msg *m);
    /* A forwarded client request; the callee owns one reference to payload (never NULL). */
    void (*on_fwd_req)(void *ctx, raft_id from, uint64_t fwd_id, uint8_t op,
                       struct raft_blob *payload);
    /* The leader's answer to our transport_send_fwd_req; leader_name may be "". */
    void (*on_fwd_resp)(void *ctx, uint64_t fwd_id, int err, raft_index index, raft_term term,
                        const char *leader_name);
    /* HELLO check for an inbound connection (the cluster name is checked already). */
    bool (*accept_peer)(void *ctx, raft_id id, const char *name);
    /* Optional (NULL: such frames are dropped). A snapshot stream chunk or ack from peer
     * `from` (the sender named in its HELLO); c->bytes is borrowed for the call. */
    void (*on_snap_chunk)(void *ctx, raft_id from, const struct codec_snap_chunk *c);
    void (*on_snap_ack)(void *ctx, raft_id from, const struct codec_snap_ack *a);
    /* Optional. A link with peer went away: our outbound link failed (frames queued on it are
     * dropped) or its inbound connection closed. Streams riding on it have lost bytes. */
    void (*on_link_down)(void *ctx, raft_id peer);
};

struct transport_stats {
    uint64_t bytes_in;        /* read from inbound connections */
    uint64_t bytes_out;       /* written to outbound connections */
    uint64_t frames_in;       /* frames delivered to the ops */
    uint64_t frames_out;      /* frames written completely */
    uint64_t dropped_busy;    /* sends refused with ERR_BUSY (queue full) */
    uint64_t dropped_unsent;  /* queued frames discarded when a link failed */
    uint64_t rejected_conns;  /* inbound connections refused: handshake, limit, timeout */
    uint64_t proto_errors;    /* inbound connections closed for a bad frame */
    uint64_t accept_pauses;   /* listener paused after accept() ran out of descriptors */
    uint64_t snap_chunks_in;  /* SNAP_CHUNK frames delivered */
    uint64_t snap_chunks_out; /* SNAP_CHUNK frames queued */
    uint32_t connected_peers; /* outbound links up now */
    uint32_t inbound_conns;   /* inbound connections open now */
};

/* Listens on listen_addr ("host:port", "[v6]:port"; port 0 picks a free one, see
 * transport_port). cluster, self_name: at most 255 bytes. ops and ctx are borrowed for the
 * transport's life. On error writes a message into err: ERR_INVALID (bad argument or
 * address), ERR_IO (socket, bind, listen), ERR_NOMEM. */
int transport_new(struct ev_loop *loop, const char *cluster, const char *self_name, raft_id self_id,
                  const char *listen_addr, const struct transport_ops *ops, void *ctx,
                  struct transport **out, char *err, size_t err_len);
/* Closes every connection and drops every queued frame (and its blob references). NULL-safe. */
void transport_free(struct transport *t);
/* The bound listening port. */
uint16_t transport_port(const struct transport *t);

/* Adds a peer or updates its name/address (a new address drops the old link and its queue
 * and dials at once). Our own id is ignored. The address is resolved on every dial attempt:
 * numeric addresses never block; a host name goes through getaddrinfo() on the loop.
 * ERR_INVALID (id 0, strings too long), ERR_TOOBIG (TRANSPORT_MAX_PEERS reached). */
int transport_set_peer(struct transport *t, raft_id id, const char *name, const char *addr);
/* Drops the peer's link and queue. Unknown ids are ignored. */
void transport_remove_peer(struct transport *t, raft_id id);

/* Queues m for m->to; never blocks. Entry payloads of TRANSPORT_REF_MIN_BYTES or more are
 * queued by reference. ERR_NOTFOUND (unknown peer), ERR_BUSY (the peer's queue is full: the
 * message is dropped and Raft retries), ERR_INVALID / ERR_TOOBIG (cannot be encoded),
 * ERR_NOMEM. Messages queued while the link is down are sent once it connects, or dropped
 * if the attempt fails. */
int transport_send(struct transport *t, const struct raft_msg *m);
/* Takes ownership of one reference to payload (NULL: empty), even on error. Errors as
 * transport_send. */
int transport_send_fwd_req(struct transport *t, raft_id to, uint64_t fwd_id, uint8_t op,
                           struct raft_blob *payload);
/* leader_name may be NULL or "". Errors as transport_send. */
int transport_send_fwd_resp(struct transport *t, raft_id to, uint64_t fwd_id, int err,
                            raft_index index, raft_term term, const char *leader_name);

/* A snapshot chunk for `to`; its bytes come from data (borrowed: the queue takes its own
 * reference; NULL: none). Chunks bypass nothing: the caller keeps only a few in flight per
 * stream (flow control by acks), so the peer's queue stays open to heartbeats. Errors as
 * transport_send (ERR_BUSY: nothing queued, retry later). */
int transport_send_snap_chunk(struct transport *t, raft_id to, const struct codec_snap_chunk *c,
                              struct raft_blob *data);
int transport_send_snap_ack(struct transport *t, raft_id to, const struct codec_snap_ack *a);
/* The outbound link to id is up (frames queued now go out without waiting for a dial). */
bool transport_peer_connected(const struct transport *t, raft_id id);

void transport_stats(const struct transport *t, struct transport_stats *out);

#endif
