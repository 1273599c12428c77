/* node.h — one raftnode: a libev loop wiring the pure Raft core to durable storage (BDB,
 * written on a storage thread), the peer transport, the file store and the HTTP API.
 * The loop never waits on the disk: persistence completes through ev_async. */
#ifndef RAFTFS_NODE_H
#define RAFTFS_NODE_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "lathist.h"
#include "raft.h"

struct store;
struct store_writer;
struct fsm;
struct transport;
struct http_server;
struct http_req;
struct node_op;
struct node_outq;
struct node_snap;
struct codec_snap_chunk;
struct codec_snap_ack;

/* Counters exported on /metrics. */
struct node_metrics {
    uint64_t proposals;        /* entries proposed on this node as leader */
    uint64_t proposals_failed; /* refused or lost proposals */
    uint64_t forwarded;        /* client writes forwarded to the leader */
    uint64_t applied_entries;
    uint64_t reads_linearizable;
    uint64_t reads_stale;
    uint64_t leader_changes;
    uint64_t persist_batches;
    /* Snapshots and compaction (snap.c, compact.c). */
    uint64_t compactions;         /* raft_compact() calls that moved the snapshot point */
    uint64_t snapshots_sent;      /* outgoing streams the follower installed */
    uint64_t snapshots_failed;    /* outgoing streams aborted (timeout, link loss, refusal) */
    uint64_t snapshots_received;  /* incoming streams received completely */
    uint64_t snapshots_installed; /* incoming streams installed into files/ */
    uint64_t snapshot_bytes_sent;
    uint64_t snapshot_bytes_received;
};

/* Where a write's time goes, for /metrics (lathist.h; loop thread writes, metrics reads). */
#define NODE_LAT_RING 4096 /* entries / write seqs remembered for timing (a power of two) */
struct node_lat {
    struct lathist loop_busy; /* one loop iteration's work: poll returned -> next poll */
    struct lathist persist;   /* a write handed to the storage thread -> its completion here */
    struct lathist apply;     /* one ready batch's file store applies */
    struct lathist commit;    /* an entry appended here -> its commit known here */
    uint64_t iter_start_us;   /* this iteration's poll return (0: not in an iteration) */
    uint64_t slow_log_us;     /* when a slow iteration was last logged */
    uint64_t seq_key[NODE_LAT_RING], seq_us[NODE_LAT_RING]; /* persist seq -> submit time */
    raft_index idx_key[NODE_LAT_RING];                      /* entry index -> append time */
    uint64_t idx_us[NODE_LAT_RING];
};

struct node {
    struct config cfg;
    const struct config_node *self; /* borrowed from cfg */
    raft_id id;
    char node_dir[4200]; /* data_dir/ID */
    struct ev_loop *loop;

    struct store *store;
    struct store_writer *writer;
    struct fsm *fsm;
    struct raft *raft;
    struct transport *tr;
    struct http_server *http;

    ev_timer tick_timer;
    ev_timer op_timer;   /* deadlines and retries of client operations */
    ev_timer ckpt_timer; /* file store checkpoints */
    uint64_t ckpt_rng;   /* jitter.h state: the checkpoint kicks' spread */
    ev_prepare prepare;  /* drains ready batches once per loop iteration */
    ev_prepare lat_end;  /* lowest priority: the iteration's work is done */
    ev_check lat_start;  /* highest priority: poll returned */
    ev_signal sig_term, sig_int;

    struct node_outq *outq_head, *outq_tail; /* after-persist messages by write seq */
    uint64_t last_submitted_seq;
    uint64_t last_persisted_seq;

    struct node_op *ops; /* pending client operations (doubly linked) */
    uint64_t next_op_id; /* read ids and forward ids */

    struct raft_configuration peers_conf; /* the configuration the transport follows */
    bool peers_conf_valid;

    struct node_snap *snap;       /* InstallSnapshot streams (snap.c) */
    uint64_t bytes_since_compact; /* payload bytes applied since the last compaction */

    enum raft_role role;
    raft_id leader;
    raft_term term;
    raft_index applied;
    bool stopping;
    int exit_code;
    struct node_metrics m;
    struct node_lat *lat; /* NULL when out of memory at start (timing is then skipped) */
};

/* Opens everything; err receives a message on failure. */
int node_init(struct node *n, const char *config_path, const char *id, bool bootstrap, char *err,
              size_t err_len);
/* Runs the loop until SIGTERM/SIGINT or a fatal error; returns the exit status. */
int node_run(struct node *n);
void node_close(struct node *n);

/* Fatal storage or core failure: logs, stops the loop; raftsup restarts the process. */
void node_fail(struct node *n, const char *why);

/* ready.c */
void node_ready_drain(struct node *n);
void node_persist_done_cb(void *ctx, uint64_t seq, int err);
void node_outq_free_all(struct node *n);

/* members.c: member info bytes <-> names and addresses; transport peers follow membership. */
int node_member_info(const char *id, const char *raft_addr, const char *http_addr,
                     struct raft_member *m);
int node_member_parse(const struct raft_member *m, char *id, size_t id_len, char *raft_addr,
                      size_t raft_len, char *http_addr, size_t http_len);
void node_sync_peers(struct node *n);
/* The http address of a member by raft id (configuration first, then the config file). */
bool node_member_http(struct node *n, raft_id id, char *name, size_t name_len, char *http,
                      size_t http_len);
bool node_accept_peer_cb(void *ctx, raft_id id, const char *name);

/* client.c: the HTTP backend and request forwarding. */
extern const struct http_backend node_http_backend;
void node_ops_on_applied(struct node *n, const struct raft_entry *e, const void *result);
void node_ops_on_read_state(struct node *n, const struct raft_read_state *rs);
void node_ops_on_leader_change(struct node *n);
void node_ops_after_apply(struct node *n);
void node_ops_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
void node_ops_fail_all(struct node *n);
void node_fwd_req_cb(void *ctx, raft_id from, uint64_t fwd_id, uint8_t op,
                     struct raft_blob *payload);
void node_fwd_resp_cb(void *ctx, uint64_t fwd_id, int err, raft_index index, raft_term term,
                      const char *leader_name);

/* compact.c: the log compaction policy (config snapshot_entries/bytes/trailing). Called
 * after each ready batch's applies; never compacts past a running outgoing stream's S. */
void node_compact_maybe(struct node *n);
/* A ready batch carried a new snapshot point (compact_to != 0): log it. */
void node_compact_on_ready(struct node *n, const struct raft_ready *rd);

/* snap.c: InstallSnapshot streams over the transport (SNAP_CHUNK/SNAP_ACK). */
int node_snap_init(struct node *n);
void node_snap_close(struct node *n);
/* Before raft_new: when the file store installed a snapshot the raft store does not reflect
 * (a crash between the two), reset the raft store to it; then load *boot. */
int node_snap_boot(struct node *n, struct raft_boot *boot, char *err, size_t err_len);
/* The core asked for a stream to m->to (RAFT_MSG_SNAPSHOT, never sent on the wire). */
void node_snap_on_request(struct node *n, const struct raft_msg *m);
/* Role or term changed: outgoing streams of an old leadership stop. */
void node_snap_on_role(struct node *n);
/* The lowest S of the running outgoing streams (UINT64_MAX: none). */
raft_index node_snap_out_floor(const struct node *n);
void node_snap_chunk_cb(void *ctx, raft_id from, const struct codec_snap_chunk *c);
void node_snap_ack_cb(void *ctx, raft_id from, const struct codec_snap_ack *a);
void node_snap_link_down_cb(void *ctx, raft_id peer);

/* lat.c: latency histograms (struct node_lat). Every call is a no-op when n->lat is NULL. */
void node_lat_start(struct node *n);
void node_lat_stop(struct node *n);
/* Write seq with these entries went to the storage thread now. */
void node_lat_submitted(struct node *n, uint64_t seq, const struct raft_entry *es, size_t count);
void node_lat_persisted(struct node *n, uint64_t seq);
/* These entries are known committed now (each counted once). */
void node_lat_committed(struct node *n, const struct raft_entry *es, size_t count);

/* metrics.c */
void node_metrics_reply(struct node *n, struct http_req *req);

#endif
