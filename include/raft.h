/* raft.h — the pure Raft core. No sockets, files, clock, threads, rand() or global state:
 * time arrives as raft_tick(), randomness from cfg.seed, and the core tells its caller what
 * to do through raft_ready batches. The same interface serves raftnode and tests/sim.
 *
 * The caller's loop, per batch (see README "The Raft core"):
 *   raft_ready(r, &rd);
 *   1. if rd.persist_seq != 0: hand (hardstate, snapshot point compact_to, truncate_from,
 *      entries) to storage as ONE durable write, in FIFO order with earlier writes; keep
 *      rd.msgs_after_persist with it;
 *   2. send rd.msgs now (they never depend on unpersisted state), except RAFT_MSG_SNAPSHOT,
 *      which asks the caller to stream its state machine (raft_report_snapshot());
 *   3. apply rd.committed in order; answer rd.reads once applied >= read.index;
 *   4. raft_advance(r, &rd);
 *   later, when write persist_seq is durable: send its msgs_after_persist, then call
 *   raft_persisted(r, persist_seq). Acknowledge writes in the order they were handed out.
 * Details the core relies on:
 *   - a batch may carry msgs_after_persist with persist_seq == 0: they wait for every write
 *     handed out before (sent at once when none is pending);
 *   - raft_persisted(r, s) acknowledges every write with seq <= s;
 *   - the views are the core's own copies: inputs (step, tick, persisted, ...) may arrive
 *     between raft_ready() and raft_advance(); raft_ready() twice without raft_advance() is a
 *     programmer error;
 *   - applied_index advances when raft_ready() hands entries out; committed entries are
 *     never beyond the locally durable index.
 */
#ifndef RAFTFS_RAFT_H
#define RAFTFS_RAFT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t raft_term;
typedef uint64_t raft_index;
typedef uint64_t raft_id; /* 0 means "none" */

#define RAFT_MAX_NODES 9         /* members (voters + learners) of one configuration */
#define RAFT_MEMBER_INFO_MAX 256 /* opaque per-member bytes kept for the node (name, addrs) */

/* ---- Reference-counted payloads -----------------------------------------------------------
 * Entry payloads are shared, never copied, between the core, the storage thread, the
 * transport and the HTTP layer: a 64 MiB body is held once. refs is atomic because the
 * storage thread drops its reference on its own thread. */
struct raft_blob {
    _Atomic uint32_t refs;
    uint32_t len;
    uint8_t data[];
};

/* New blob with refs == 1 and uninitialised data; NULL when out of memory. */
struct raft_blob *raft_blob_new(uint32_t len);
/* Takes one more reference; returns b. NULL-safe. */
struct raft_blob *raft_blob_ref(struct raft_blob *b);
/* Drops one reference; frees at zero. NULL-safe. */
void raft_blob_unref(struct raft_blob *b);

/* ---- Log entries --------------------------------------------------------------------------- */
enum raft_entry_type {
    RAFT_ENTRY_NOOP = 1,   /* appended by every new leader; data NULL */
    RAFT_ENTRY_NORMAL = 2, /* a client command; data is opaque to the core */
    RAFT_ENTRY_CONFIG = 3, /* data is raft_configuration_encode() output */
    /* Reserved for the cluster-operations issue: snapshots, leadership transfer. */
};

struct raft_entry {
    raft_term term;
    raft_index index;
    uint8_t type;           /* enum raft_entry_type */
    struct raft_blob *data; /* may be NULL (empty payload) */
};

/* ---- Configuration ------------------------------------------------------------------------- */
struct raft_member {
    raft_id id; /* identity: stable across address changes */
    bool voter; /* false: learner, promoted by the leader once caught up */
    uint16_t info_len;
    uint8_t info[RAFT_MEMBER_INFO_MAX]; /* opaque to the core (raftnode: name + addresses) */
};

struct raft_configuration {
    uint32_t n;
    struct raft_member members[RAFT_MAX_NODES];
};

/* Encodes c into a new blob (caller owns one reference). ERR_INVALID for a bad c. */
int raft_configuration_encode(const struct raft_configuration *c, struct raft_blob **out);
/* ERR_CORRUPT when data is not a well-formed configuration. */
int raft_configuration_decode(const uint8_t *data, size_t len, struct raft_configuration *out);
/* Borrowed pointer into c, or NULL. */
const struct raft_member *raft_configuration_find(const struct raft_configuration *c, raft_id id);

/* ---- Messages ------------------------------------------------------------------------------ */
enum raft_msg_type {
    RAFT_MSG_PREVOTE = 1,
    RAFT_MSG_PREVOTE_RESP,
    RAFT_MSG_VOTE,
    RAFT_MSG_VOTE_RESP,
    RAFT_MSG_APPEND, /* also the heartbeat (n_entries == 0) */
    RAFT_MSG_APPEND_RESP,
    RAFT_MSG_READINDEX, /* follower -> leader: confirm leadership, tell me the read index */
    RAFT_MSG_READINDEX_RESP,
    /* Leader -> its node only, never sent on the wire nor stepped: "stream a snapshot to
     * `to`" (index = the leader's snapshot index, log_term = its term). See
     * raft_report_snapshot(). */
    RAFT_MSG_SNAPSHOT,
    RAFT_MSG_SNAPSHOT_RESP, /* reserved, unused */
    /* Leader -> transfer target (on the wire): campaign now, skipping PreVote. */
    RAFT_MSG_TIMEOUT_NOW,
    RAFT_MSG__COUNT
};

struct raft_msg {
    uint8_t type; /* enum raft_msg_type */
    raft_id from;
    raft_id to;
    raft_term term; /* sender's term (PREVOTE: the term it would campaign in) */
    /* PREVOTE/VOTE: candidate's last log index. APPEND: prev log index.
     * APPEND_RESP: on success the follower's match index; on reject the rejected prev index.
     * READINDEX_RESP: the read index. */
    raft_index index;
    /* PREVOTE/VOTE: candidate's last log term. APPEND: prev log term.
     * APPEND_RESP reject: term of the follower's entry at hint (0 if none). */
    raft_term log_term;
    raft_index commit; /* APPEND: leader's commit index */
    raft_index hint;   /* APPEND_RESP reject: where the leader should probe next */
    bool reject;       /* *_RESP: true when refused */
    /* APPEND/APPEND_RESP: leader's heartbeat sequence, echoed (confirms ReadIndex).
     * READINDEX/READINDEX_RESP: the caller's read id, echoed. */
    uint64_t ctx;
    /* VOTE: the candidate campaigns because its leader handed leadership over
     * (TIMEOUT_NOW): voters grant despite a live leader's lease. false: ordinary vote. */
    bool transfer;
    uint32_t n_entries;
    struct raft_entry *entries; /* APPEND: borrowed; the core takes its own blob refs */
};

/* ---- Core configuration and boot state ------------------------------------------------------ */
enum raft_role { RAFT_FOLLOWER = 0, RAFT_PRECANDIDATE, RAFT_CANDIDATE, RAFT_LEADER };

/* Planted bugs for the simulator's self-test; honoured only in a core compiled with
 * RAFT_PLANTED_BUGS (tests only), ignored otherwise. */
enum raft_bug {
    RAFT_BUG_COMMIT_OLD_TERM = 1u << 0,    /* commit a previous-term entry by counting */
    RAFT_BUG_DOUBLE_VOTE = 1u << 1,        /* grant two votes in one term */
    RAFT_BUG_VOTE_NOT_PERSISTED = 1u << 2, /* answer a vote before the vote is durable */
    RAFT_BUG_READ_NO_CONFIRM = 1u << 3,    /* serve ReadIndex without a heartbeat round */
    RAFT_BUG_CONFIG_BEFORE_NOOP = 1u << 4, /* config change before an own-term commit */
    RAFT_BUG_NO_STALL_PROBE = 1u << 5,     /* wait forever for lost pipelined appends */
    RAFT_BUG_SNAPSHOT_OLD = 1u << 6,       /* accept a snapshot at or below the commit index */
    RAFT_BUG_TRANSFER_ANY_LOG = 1u << 7,   /* TIMEOUT_NOW before the target has the log, and
                                              a transfer's vote granted to any log */
};

struct raft_config {
    raft_id id;
    unsigned heartbeat_ticks;    /* leader sends heartbeats this often (default 5) */
    unsigned election_ticks_min; /* randomized election timeout is drawn from */
    unsigned election_ticks_max; /*   [min, max] ticks (defaults 15, 30) */
    uint64_t seed;               /* the only source of randomness */
    uint32_t max_append_entries; /* entries per AppendEntries (default 64) */
    uint32_t max_append_bytes;   /* payload bytes per AppendEntries (default 1 MiB; one
                                    entry is always sent even if larger) */
    uint32_t max_inflight;       /* pipelined AppendEntries per follower (default 8) */
    uint64_t cache_bytes_max;    /* payload bytes kept in memory for durable, applied
                                    entries before they are dropped and fetched again */
    /* Leader: a peer in snapshot state with no raft_report_snapshot() for this many ticks is
     * probed again (0: RAFT_SNAPSHOT_TIMEOUT_ELECTIONS * election_ticks_max). */
    unsigned snapshot_timeout_ticks;
    bool prevote;      /* default true in raftnode */
    bool check_quorum; /* default true in raftnode */
    uint32_t bugs;     /* enum raft_bug bits (tests only) */
    /* Reads the payload of a durable entry whose payload the core dropped. Synchronous.
     * On success *out is a new reference owned by the core. Any error puts the core into
     * the failed state (raft_failed), after which the caller restarts. */
    int (*fetch)(void *ctx, raft_index index, struct raft_blob **out);
    /* Optional: one human-readable line per notable event (role/term change, vote, ...). */
    void (*trace)(void *ctx, const char *line);
    void *ctx;
};

/* What the caller loaded from its durable state at start. */
struct raft_boot {
    raft_term term;
    raft_id vote;
    raft_index commit; /* a lower bound; may be 0 */
    /* The caller already applied every entry <= applied (0: none or unknown); they are not
     * handed out in ready.committed again. Applied entries were committed, so the commit
     * index starts at least here. ERR_CORRUPT when beyond the last entry. */
    raft_index applied;
    /* The last snapshot point (raft_compact() / raft_install_snapshot(), persisted through
     * ready.compact_to): every entry <= snapshot_index is in the caller's state machine and
     * gone from the log. 0: none. applied is then >= snapshot_index (raised to it if lower). */
    raft_index snapshot_index;
    raft_term snapshot_term; /* term of the entry at snapshot_index */
    /* Configuration as of snapshot_index (the latest one at or below it); borrowed. Required
     * (ERR_CORRUPT) when snapshot_index > 0; ignored when 0. CONFIG entries after
     * snapshot_index override it. */
    const struct raft_configuration *snapshot_conf;
    /* The whole durable log after snapshot_index, in index order. NORMAL entries may have
     * data == NULL (fetched on demand through cfg.fetch); CONFIG entries must carry data.
     * Borrowed: the core takes its own blob references. */
    const struct raft_entry *entries;
    size_t n_entries;
};

/* ---- Ready batches -------------------------------------------------------------------------- */
struct raft_read_state {
    uint64_t id;      /* the id given to raft_read_index() */
    raft_index index; /* serve the read once applied >= index */
    bool failed;      /* leadership was lost (or never confirmed): answer "retry" */
};

struct raft_ready {
    /* Non-zero: this batch needs a durable write (hardstate and/or truncation/entries). */
    uint64_t persist_seq;
    bool hardstate_changed;
    raft_term term;
    raft_id vote;
    raft_index commit;
    raft_index truncate_from; /* non-zero: delete durable entries >= this first */
    const struct raft_entry *entries;
    size_t n_entries;
    const struct raft_msg *msgs; /* may leave now */
    size_t n_msgs;
    const struct raft_msg *msgs_after_persist; /* only once persist_seq is durable */
    size_t n_msgs_after_persist;
    const struct raft_entry *committed; /* apply in order; every one is durable locally */
    size_t n_committed;
    const struct raft_read_state *reads;
    size_t n_reads;
    /* Non-zero: a new snapshot point, part of this batch's durable write (persist_seq != 0):
     * delete durable entries <= compact_to and record (compact_to, snap_term, snap_conf) as the
     * snapshot in the same write. Comes from raft_compact() or raft_install_snapshot(). Order
     * within the write: compact, then truncate_from, then entries. */
    raft_index compact_to;
    raft_term snap_term; /* term of the entry at compact_to */
    /* Configuration as of compact_to, decoded and encoded (raft_configuration_encode form);
     * both borrowed until raft_advance() (take a blob ref to keep the encoded one). NULL when
     * compact_to == 0. */
    const struct raft_configuration *snap_conf;
    struct raft_blob *snap_conf_blob;
    /* The snapshot came from raft_install_snapshot(): the state machine was replaced at
     * compact_to. When the log did not hold a matching entry at compact_to, truncate_from is
     * compact_to + 1 (every durable entry goes); otherwise the suffix after it stays. */
    bool snapshot_reset;
    bool soft_changed; /* role or leader changed since the last batch */
    enum raft_role role;
    raft_id leader;
};

struct raft_status {
    raft_id id;
    enum raft_role role;
    raft_term term;
    raft_id vote;
    raft_id leader; /* 0 when unknown */
    raft_index commit_index;
    raft_index applied_index; /* handed out in ready.committed */
    raft_index last_index;
    raft_index stable_index; /* durable locally */
    bool voter;              /* member and voter in the latest configuration */
    bool member;             /* present in the latest configuration */
    bool failed;
    raft_index snapshot_index; /* the log starts after it (0: no snapshot) */
    raft_term snapshot_term;
    raft_id transferee; /* leader: leadership transfer in progress to it; 0 if none */
};

struct raft; /* opaque */

/* ---- Lifecycle ------------------------------------------------------------------------------ */
/* New core from cfg and the durable boot state (boot may be NULL for an empty node).
 * Returns ERR_NOMEM, ERR_INVALID (bad cfg) or ERR_CORRUPT (bad boot log). */
int raft_new(const struct raft_config *cfg, const struct raft_boot *boot, struct raft **out);
void raft_free(struct raft *r);

/* Empty log only (ERR_EXISTS otherwise): appends a CONFIG entry at index 1 holding conf
 * (which must contain this node as a voter). The node then elects itself. */
int raft_bootstrap(struct raft *r, const struct raft_configuration *conf);

/* ---- Inputs --------------------------------------------------------------------------------- */
void raft_tick(struct raft *r);
/* One decoded inbound message (borrowed). ERR_INVALID for a message that is malformed for
 * its type (it is dropped; the core's state is unchanged). */
int raft_step(struct raft *r, const struct raft_msg *m);

/* Leader only. Takes ownership of one reference to data (even on error). On success the
 * entry is at (*index_out, *term_out): it took effect iff that exact pair is applied.
 * ERR_NOTLEADER (see raft_status().leader for a hint), ERR_BUSY (leader leaving, or handing
 * leadership over: raft_transfer_leadership()). */
int raft_propose(struct raft *r, struct raft_blob *data, raft_index *index_out,
                 raft_term *term_out);

/* Linearizable read. On a leader or a follower that knows a leader; the answer comes as a
 * raft_read_state with this id in a later ready batch (a follower whose request is lost
 * never hears back: callers time out). ERR_NOTLEADER when no leader is known. */
int raft_read_index(struct raft *r, uint64_t id);

/* Leader only; one configuration change in flight at a time. Adds m as a learner (m->voter
 * is ignored); the leader promotes it to voter once it has caught up. ERR_BUSY while a change
 * is uncommitted, no entry of the current term is committed yet or a leadership transfer is
 * in progress; ERR_EXISTS if the id is a
 * member (its info is left unchanged); ERR_NOTLEADER; ERR_INVALID when full. */
int raft_add_member(struct raft *r, const struct raft_member *m, raft_index *index_out);
/* Leader only; any member, the leader included (it steps down once the change commits).
 * ERR_NOTFOUND, ERR_BUSY, ERR_NOTLEADER, ERR_INVALID (would remove the last voter).
 * Learners and removed nodes still answer vote requests (a promotion or removal may be
 * appended elsewhere and not yet known to them); a node whose own removal is appended but
 * not known committed may still campaign (thesis 4.2.2); once it knows, it never does. */
int raft_remove_member(struct raft *r, raft_id id, raft_index *index_out);

/* ---- Snapshots and log compaction -------------------------------------------------------------
 * The caller's state machine is the snapshot: the core only remembers the snapshot point
 * (index, term, configuration) and forgets log entries at or below it. */

/* The caller's state machine has durably applied every entry <= upto (upto <= applied
 * index). Drops entries <= upto from memory, makes (upto, term(upto), configuration as of
 * upto) the snapshot point, and hands the durable deletion out as ready.compact_to.
 * ERR_INVALID when upto > applied index or upto <= the current snapshot index (harmless:
 * nothing changes); ERR_FAILED. */
int raft_compact(struct raft *r, raft_index upto);

/* Term and configuration as of index, for snapshot_index <= index <= commit index (what a
 * snapshot taken at index must carry). ERR_NOTFOUND outside that range. Either out may be
 * NULL. */
int raft_snapshot_meta(const struct raft *r, raft_index index, raft_term *term_out,
                       struct raft_configuration *conf_out);

/* Leader side. When a peer needs entries at or below the snapshot index, the leader stops
 * sending it appends (heartbeats continue) and emits one RAFT_MSG_SNAPSHOT {to, term, index =
 * snapshot index, log_term} in ready.msgs; the caller streams its state machine (at any index
 * S >= that index whose entries are still in the log, S <= commit) and reports the outcome:
 * ok: the peer installed the state at `index` (S); replication resumes at index + 1.
 * !ok: the stream failed; the next heartbeat probes again and re-emits RAFT_MSG_SNAPSHOT if
 * still needed. Without a report for cfg.snapshot_timeout_ticks ticks (default
 * RAFT_SNAPSHOT_TIMEOUT_ELECTIONS * election_ticks_max) the core assumes failure and re-emits: the
 * caller ignores RAFT_MSG_SNAPSHOT for a peer whose stream is still running. The peer's APPEND_RESP
 * after install has the same effect as a report(ok). Ignored when not leader, unknown peer, or
 * index beyond the log. */
#define RAFT_SNAPSHOT_TIMEOUT_ELECTIONS 20
void raft_report_snapshot(struct raft *r, raft_id peer, raft_index index, bool ok);

/* Follower side: would raft_install_snapshot(term, index) be accepted now? True iff term >=
 * current term, index > commit index, and this node is not the leader of `term`. */
bool raft_snapshot_acceptable(const struct raft *r, raft_term term, raft_index index);

/* The caller just replaced its state machine with a snapshot at index (entry term
 * index_term, configuration conf as of index) streamed by leader `from` in `term`; call in
 * the same loop turn as a true raft_snapshot_acceptable(). The core follows `from` in
 * `term`, sets commit = applied = index, keeps the log suffix after index if it holds
 * (index, index_term) and discards the whole log otherwise (Raft fig. 13), and hands out
 * ready.snapshot_reset with compact_to = index (and truncate_from = index + 1 when
 * discarding) plus an APPEND_RESP(index) to `from` in msgs_after_persist.
 * ERR_INVALID (stale: not acceptable; bad from/index/term/conf; nothing changes), ERR_FAILED.
 * Crash between the state machine's install and that write becoming durable: at boot the
 * caller repairs its log by the same rule before raft_new() — the durable entries after index
 * stay iff the durable log holds (index, index_term), else every entry goes — and records
 * (index, index_term, conf) as the snapshot point. Deleting a matching suffix is NOT safe:
 * those entries may have been acknowledged and counted for commitment. raft_new() raises its
 * term to snapshot_term if the term was not yet durable. */
int raft_install_snapshot(struct raft *r, raft_id from, raft_term term, raft_index index,
                          raft_term index_term, const struct raft_configuration *conf);

/* ---- Leadership transfer (thesis 3.10) ------------------------------------------------------
 * Leader only. The leader refuses proposals and membership changes (ERR_BUSY) while
 * transferring, brings `to` up to date, then sends it RAFT_MSG_TIMEOUT_NOW; `to` campaigns at
 * once (no PreVote; its votes carry msg.transfer so voters ignore the leader lease). Abandoned
 * (the leader resumes) after election_ticks_max ticks without the leader stepping down.
 * ERR_NOTLEADER; ERR_INVALID (to == 0, to == self, to a learner); ERR_NOTFOUND (not a
 * member); ERR_BUSY (a transfer to another node is in progress; to the same: 0); ERR_FAILED. */
int raft_transfer_leadership(struct raft *r, raft_id to);
/* Leader only (0 otherwise): the best target for a hand-over — among the other voters of the
 * latest configuration, one heard from in this check-quorum period with the highest match
 * index (ties: configuration order); 0 when no other voter qualifies. Read-only. */
raft_id raft_transfer_candidate(const struct raft *r);

/* ---- Outputs -------------------------------------------------------------------------------- */
bool raft_has_ready(const struct raft *r);
/* Borrowed views, valid until raft_advance(). */
void raft_ready(struct raft *r, struct raft_ready *rd);
void raft_advance(struct raft *r, const struct raft_ready *rd);
/* The write persist_seq is durable. Called in the order the writes were handed out. */
void raft_persisted(struct raft *r, uint64_t persist_seq);

void raft_status(const struct raft *r, struct raft_status *st);
/* The latest configuration (takes effect once appended); borrowed until the next input. */
const struct raft_configuration *raft_configuration(const struct raft *r);
bool raft_failed(const struct raft *r);
const char *raft_role_str(enum raft_role role);

/* Check every internal invariant (ASSERT on violation); cheap enough for every sim step. */
void raft_check_invariants(const struct raft *r);

#endif
