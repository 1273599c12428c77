/* sim.h — internals of raft_sim: a deterministic, single-threaded discrete-event model of
 * raft cores, their disks and the network between them, plus the safety checker. It never
 * reads a real clock, never uses rand() or threads: a run is a pure function of its seed. */
#ifndef RAFTFS_SIM_H
#define RAFTFS_SIM_H

#include "raft.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_NODES 12 /* node slots of one run; node id == slot + 1 */
#define SIM_TICK 10      /* virtual time units per base tick (one driver step) */
#define SIM_TRACE_LINES 256
#define SIM_TRACE_LEN 224

/* ---- PRNG (xoshiro256**, seeded through splitmix64) ---------------------------------------- */
struct sim_rng {
    uint64_t s[4];
};
uint64_t sim_mix(uint64_t x);
void sim_rng_seed(struct sim_rng *g, uint64_t seed);
uint64_t sim_rng_next(struct sim_rng *g);
uint64_t sim_rng_below(struct sim_rng *g, uint64_t n);               /* [0, n); n > 0 */
uint64_t sim_rng_range(struct sim_rng *g, uint64_t lo, uint64_t hi); /* [lo, hi] */
bool sim_rng_chance(struct sim_rng *g, uint32_t permille);

/* ---- Options of one run ------------------------------------------------------------------- */
struct sim_opts {
    uint64_t seed;
    unsigned steps; /* driver steps (base ticks) of the run */
    unsigned nodes; /* 3 or 5; 0: chosen by seed */
    uint32_t bugs;  /* enum raft_bug bits planted in every core */
    bool tracing;   /* keep the trace ring and hash */
    bool verbose;   /* print every trace line */
    bool no_rules;  /* check only the safety properties, not the protocol rules */
    bool no_snap;   /* no compaction, snapshots or transfers (the schedules of older seeds) */
};

/* Per-run parameters, all drawn from the seed. */
struct sim_params {
    unsigned n_target; /* cluster size */
    bool membership;   /* starts from one bootstrapped node and changes membership */
    bool prevote, check_quorum;
    unsigned heartbeat, election_min, election_max;
    uint32_t max_append_entries, max_append_bytes, max_inflight;
    uint64_t cache_bytes_max;
    bool lazy_boot;                       /* restart with NORMAL payloads left to cfg.fetch */
    uint32_t loss_pm, dup_pm, reorder_pm; /* per-message chances, per mille */
    unsigned delay_min, delay_max;        /* network latency, time units */
    uint32_t partition_pm, crash_pm;      /* per-step chance of starting one */
    uint32_t queue_drop_pm; /* chance a crash or a new partition also drops every message in
                               flight on the failed links (a transport drops its queue) */
    unsigned disk_max;      /* storage write latency bound, time units */
    uint32_t propose_pm, read_pm;
    unsigned heal_step, member_stop_step, end_step;
    /* Snapshots (issue 5): per-step chance of a compaction on a random node, entries it keeps
     * below its applied index (0..compact_trailing), stream time bound (time units), chances
     * that a stream fails or that its outcome report is lost (the core's timeout), or that a
     * late stale copy of a stream arrives, per mille. */
    uint32_t compact_pm;
    unsigned compact_trailing;
    unsigned snap_delay_max;
    uint32_t snap_fail_pm, snap_report_loss_pm, snap_stale_pm;
    unsigned snap_timeout_ticks; /* cfg.snapshot_timeout_ticks (0: the core's default) */
    uint32_t transfer_pm;        /* per-step chance the leader hands leadership to a random voter */
    unsigned transfer_stop_step;
};

/* ---- Events ------------------------------------------------------------------------------- */
/* SIM_EV_DROPPED: a delivery cancelled in flight (its message already freed). */
enum sim_event_kind {
    SIM_EV_DRIVER = 1,
    SIM_EV_TICK,
    SIM_EV_PERSIST,
    SIM_EV_DELIVER,
    SIM_EV_DROPPED,
    SIM_EV_SNAP,       /* a snapshot stream completes at its receiver (slot) */
    SIM_EV_SNAP_REPORT /* the stream's outcome reaches its sender (slot) */
};

/* A snapshot stream: the sender's model state machine at index, as of the stream's start. */
struct sim_snap {
    uint64_t session; /* the sender's session id (a stale copy never reports) */
    raft_id from, to;
    uint32_t from_inc; /* the sender's incarnation: its session dies with it */
    raft_term term;    /* the sender's term (leader) */
    raft_index index;
    raft_term index_term;
    struct raft_configuration conf;
    struct sim_mentry *sm; /* entries 1..index of the sender's state machine (owned) */
    bool ok;               /* SNAP_REPORT: installed */
    bool stale;            /* a late copy: no report */
};

struct sim_event {
    uint64_t time;
    uint64_t seq; /* tie-break: insertion order, so runs are deterministic */
    uint8_t kind;
    uint8_t slot;
    uint32_t incarnation;  /* TICK/PERSIST: ignored when the node restarted since */
    struct raft_msg *msg;  /* DELIVER: an owned deep copy */
    struct sim_snap *snap; /* SNAP, SNAP_REPORT: owned */
};

/* ---- Nodes -------------------------------------------------------------------------------- */
struct sim_write {
    uint64_t seq;
    bool hardstate_changed;
    raft_term term;
    raft_id vote;
    raft_index commit;
    raft_index truncate_from;
    raft_index compact_to; /* the new snapshot point (0: none) */
    raft_term snap_term;
    struct raft_configuration snap_conf;
    struct raft_entry *entries; /* owned array, one blob reference each */
    size_t n_entries;
    struct raft_msg *msgs; /* msgs_after_persist: owned deep copies */
    raft_term *ack_terms;  /* per msg: term of the acknowledged entry when it was queued */
    size_t n_msgs;
};

/* The simulator's mirror of a core's log, rebuilt from the ready batches. */
struct sim_mentry {
    raft_term term;
    uint8_t type;
    uint64_t content; /* NORMAL: payload id; CONFIG: digest; NOOP: 0 */
    uint64_t chain;   /* digest of the whole prefix 1..index */
};

struct sim_pending_read {
    uint64_t id;
    raft_index index;
};

struct sim_node {
    raft_id id;
    bool started; /* ever booted */
    bool up;
    bool retired; /* removed from the cluster and stopped for good */
    uint32_t incarnation;
    unsigned tick_interval;
    unsigned restart_step; /* when down: the driver step that restarts it */
    struct raft *r;
    struct sim *sim;
    /* Durable state: what survives a crash. */
    raft_term d_term;
    raft_id d_vote;
    raft_index d_commit;
    /* The durable raft log: the snapshot point (d_off, d_off_term, d_off_conf) and entries
     * d_off+1.. at d_log[i - d_off - 1]; one blob reference each. */
    raft_index d_off;
    raft_term d_off_term;
    struct raft_configuration d_off_conf;
    struct raft_entry *d_log;
    size_t d_n, d_cap;
    /* The durable state machine (the file store): entries 1..d_sm_n of the applied log,
     * checkpointed when the node compacts, replaced atomically by an install; and the last
     * installed snapshot (boot repair when the core's reset did not reach the disk). */
    struct sim_mentry *d_sm;
    size_t d_sm_n, d_sm_cap;
    raft_index d_inst_index;
    raft_term d_inst_term;
    struct raft_configuration d_inst_conf;
    /* Outgoing snapshot streams, by peer slot (0: none); die with the incarnation. */
    uint64_t snap_out[SIM_MAX_NODES];
    raft_index snap_out_index[SIM_MAX_NODES];
    /* Storage writes handed out and not yet durable, FIFO. */
    struct sim_write *w;
    size_t w_head, w_n, w_cap;
    uint64_t w_done_at; /* completion time of the last queued write */
    uint64_t last_persist_seq;
    /* Volatile state of this incarnation. */
    struct sim_mentry *log;
    size_t log_n, log_cap;
    raft_index applied;
    struct sim_pending_read *reads;
    size_t n_reads, reads_cap;
    struct raft_status obs; /* status after the last input */
    /* Catch-up check after healing: (applied, last index) at cu_step, when it last moved. */
    raft_index cu_applied, cu_last;
    unsigned cu_step;
    /* History over all incarnations: the candidate this node voted for, by term. */
    raft_id *votes;
    size_t votes_cap;
};

/* ---- Checker state ------------------------------------------------------------------------ */
struct sim_committed {
    raft_term term;
    uint64_t chain;
};

struct sim_itslot {
    raft_index index; /* 0: empty */
    raft_term term;
    uint64_t chain;
};

struct sim_leader {
    raft_id id;
    uint32_t incarnation; /* a restarted node is a new process with a new log */
};

struct sim_read_rec {
    uint8_t slot;
    raft_index min_index; /* every write applied anywhere when the read was issued */
};

struct sim_probe {
    raft_index index;
    raft_term term;
    unsigned step;
    bool done;
};

enum sim_mop_kind { SIM_MOP_ADD = 1, SIM_MOP_REMOVE, SIM_MOP_REMOVE_LEADER };

struct sim_mop {
    uint8_t kind;
    raft_id id; /* ADD: the new node; REMOVE*: 0 until resolved */
};

struct sim_stats {
    uint64_t events, msgs_sent, msgs_dropped, elections, committed, reads_served, crashes;
    uint64_t proposals, membership_done;
    uint64_t compactions, snapshots_sent, snapshots_installed, transfers, transfers_done;
};

struct sim {
    struct sim_opts o;
    struct sim_params p;
    struct sim_rng rng;
    /* Fault decisions added after seeds were recorded: a separate stream, so a run without
     * them keeps the schedule (and the regressions their meaning) of the main stream. */
    struct sim_rng frng;
    struct sim_rng srng; /* snapshot and transfer decisions (issue 5): a third stream */
    uint64_t snap_session;
    raft_id xfer_to; /* the last transfer's target and the term it was asked in */
    raft_term xfer_term;
    uint64_t now;
    unsigned step;
    struct sim_event *heap;
    size_t heap_n, heap_cap;
    uint64_t ev_seq;
    struct sim_node nodes[SIM_MAX_NODES];
    unsigned n_slots; /* slots that may ever be used in this run */
    /* network faults */
    bool blocked[SIM_MAX_NODES][SIM_MAX_NODES]; /* [from][to] */
    unsigned partition_end;
    bool healed;
    /* safety checker */
    struct sim_leader *leaders; /* leader of each term, over all history */
    size_t leaders_cap;
    struct sim_itslot *it; /* (index, term) -> prefix digest, over all history */
    size_t it_cap, it_n;
    struct sim_committed *committed; /* 1..gcommit: applied somewhere */
    raft_index gcommit;
    size_t committed_cap;
    struct raft_configuration gconf; /* latest committed configuration */
    /* workload */
    uint64_t next_payload;
    raft_index *payload_at; /* by payload id: the index it committed at */
    size_t payload_cap;
    struct sim_read_rec *rr;
    size_t rr_n, rr_cap;
    struct sim_mop mops[24];
    unsigned mop_n, mop_i;
    bool mop_submitted;
    unsigned mop_step, mop_next_try;
    unsigned next_fresh_id;
    /* liveness */
    unsigned leader_step;   /* step a stable leader was seen after healing (0: not yet) */
    unsigned quiet_steps;   /* no probes this long after leader_step: lagging members must
                               catch up with no new entries to push them */
    unsigned catchup_steps; /* a lagging member must progress at least this often */
    raft_index cu_target;   /* every live member must apply this by the end of the run */
    raft_id cu_leader;      /* the stable leader the catch-up timers run against */
    raft_term cu_term;
    struct sim_probe probes[64];
    unsigned n_probes;
    /* failure */
    bool failed;
    char fail_prop[64];
    char fail_msg[512];
    /* trace */
    char (*ring)[SIM_TRACE_LEN];
    uint64_t ring_n;
    void *hash_ctx; /* EVP_MD_CTX */
    struct sim_stats st;
};

struct sim_result {
    bool failed;
    char prop[64];
    char msg[512];
    uint8_t hash[32];
    struct sim_stats st;
    struct sim_params p;
};

/* run.c */
/* Grows p (cap elements of elem bytes, zero-filled) to hold need elements; aborts on OOM. */
void *sim_grow(void *p, size_t *cap, size_t need, size_t elem);
int sim_run(const struct sim_opts *o, struct sim_result *res);
void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_fail(struct sim *s, const char *prop, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sim_schedule(struct sim *s, uint64_t time, uint8_t kind, uint8_t slot, uint32_t inc,
                  struct raft_msg *msg);
void sim_schedule_snap(struct sim *s, uint64_t time, uint8_t kind, uint8_t slot,
                       struct sim_snap *sn);
void sim_trace_dump(const struct sim *s, int fd, unsigned last);
/* The run in progress (for the abort handler); NULL between runs. */
extern struct sim *sim_current;

/* net.c */
void sim_net_send(struct sim *s, const struct raft_msg *m);
void sim_net_deliver(struct sim *s, struct raft_msg *m);
struct raft_msg *sim_msg_copy(const struct raft_msg *m, struct raft_msg *into);
void sim_msg_release(struct raft_msg *m);
void sim_msg_describe(const struct raft_msg *m, char *buf, size_t len);
const char *sim_msg_type_str(uint8_t type);
/* Drops every message in flight from slot `from` to slot `to`; returns how many. */
unsigned sim_net_drop_link(struct sim *s, unsigned from, unsigned to);

/* node.c */
void sim_node_boot(struct sim *s, struct sim_node *n);
void sim_node_crash(struct sim *s, struct sim_node *n);
void sim_node_drain(struct sim *s, struct sim_node *n);
void sim_node_tick(struct sim *s, struct sim_node *n);
void sim_node_persist_done(struct sim *s, struct sim_node *n);
void sim_node_free(struct sim_node *n);

/* check.c */
uint64_t sim_config_digest(const struct raft_blob *b);
void sim_check_log_batch(struct sim *s, struct sim_node *n, const struct raft_ready *rd,
                         const struct raft_status *st);
void sim_check_mirror_push(struct sim *s, struct sim_node *n, const struct raft_entry *e);
/* ack_term: for an APPEND_RESP queued behind a write, the term its index had in n's log when
 * it was queued (the log may have been truncated since); 0: n's log now. */
raft_term sim_check_ack_term(const struct sim_node *n, const struct raft_msg *m);
void sim_check_send(struct sim *s, struct sim_node *n, const struct raft_msg *m,
                    raft_term ack_term);
void sim_check_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e);
void sim_check_node(struct sim *s, struct sim_node *n);
void sim_check_boot(struct sim *s, struct sim_node *n);
void sim_check_read(struct sim *s, struct sim_node *n, const struct sim_pending_read *pr);
void sim_check_free(struct sim *s);

/* Durable log helpers: the last durable index, and the entry at idx (NULL outside). */
raft_index sim_d_last(const struct sim_node *n);
const struct raft_entry *sim_d_entry(const struct sim_node *n, raft_index idx);
/* Term of durable index idx: d_off_term at the snapshot point, 0 when unknown. */
raft_term sim_d_term(const struct sim_node *n, raft_index idx);

/* snap.c */
void sim_snap_params(struct sim *s);
void sim_snap_start(struct sim *s, struct sim_node *n, const struct raft_msg *m);
void sim_snap_deliver(struct sim *s, struct sim_snap *sn);
void sim_snap_report(struct sim *s, struct sim_snap *sn);
void sim_snap_free(struct sim_snap *sn);
void sim_snap_driver(struct sim *s);
void sim_snap_boot_repair(struct sim *s, struct sim_node *n);
void sim_check_compact(struct sim *s, struct sim_node *n, const struct raft_ready *rd);

/* driver.c */
void sim_driver_init(struct sim *s);
void sim_driver_step(struct sim *s);
void sim_driver_committed(struct sim *s, raft_index index, const struct raft_entry *e);
struct sim_node *sim_driver_leader(struct sim *s);
void sim_driver_member(struct raft_member *m, raft_id id, bool voter);
int sim_driver_propose_to(struct sim *s, struct sim_node *n, raft_index *idx, raft_term *term);

/* member.c */
void sim_driver_membership(struct sim *s);
void sim_driver_liveness(struct sim *s);

#endif
