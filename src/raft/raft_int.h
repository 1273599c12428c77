/* raft_int.h — the core's private state and the functions its files share. Pure: nothing
 * here may touch the clock, files, sockets, rand() or global state. */
#ifndef RAFTFS_RAFT_INT_H
#define RAFTFS_RAFT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define RAFT__INFLIGHT_MAX 1024        /* cap on cfg.max_inflight */
#define RAFT__MSGS_MAX 4096            /* pending outbound messages; past it new ones are dropped */
#define RAFT__READS_MAX 4096           /* pending ReadIndex requests on a leader */
#define RAFT__COMMITTED_MAX 1024       /* entries handed out per ready batch */
#define RAFT__APPEND_ENTRIES_MAX 65536 /* inbound entries per message (bigger is malformed) */
#define RAFT__PROGRESS_MAX (RAFT_MAX_NODES + 1) /* members plus one being removed */

/* One in-memory log entry; its index is implicit (position + offset + 1). */
struct raft_lentry {
    raft_term term;
    uint8_t type;           /* enum raft_entry_type */
    bool absent;            /* payload dropped (or never loaded): fetch it through cfg.fetch */
    struct raft_blob *data; /* one reference owned by the log, or NULL */
};

/* The in-memory log: every entry's term and type; payloads only while cached. */
struct raft_log {
    struct raft_lentry *v;
    size_t n;
    size_t cap;
    raft_index offset;     /* snapshot index (0 until snapshots exist) */
    raft_term offset_term; /* term at offset */
    uint64_t bytes_held;   /* payload bytes referenced by v[] */
    raft_index evict_next; /* entries below it hold no evictable payload */
};

void raft_log_init(struct raft_log *l, raft_index offset, raft_term offset_term);
void raft_log_close(struct raft_log *l);
raft_index raft_log_last(const struct raft_log *l);
/* Term at idx; offset_term at the offset; 0 outside the log. */
raft_term raft_log_term(const struct raft_log *l, raft_index idx);
/* Borrowed; NULL outside (offset, last]. */
const struct raft_lentry *raft_log_get(const struct raft_log *l, raft_index idx);
/* Appends at last+1; takes ownership of one reference to data (also on error). */
int raft_log_append(struct raft_log *l, raft_term term, uint8_t type, struct raft_blob *data,
                    bool absent);
/* Drops entries >= from (from > offset). */
void raft_log_truncate(struct raft_log *l, raft_index from);
/* Drops entries <= upto (offset < upto <= last): upto becomes the offset. */
void raft_log_compact(struct raft_log *l, raft_index upto);
/* Drops every entry; the log restarts after (offset, offset_term). */
void raft_log_reset(struct raft_log *l, raft_index offset, raft_term offset_term);
/* Drops cached NORMAL payloads at indexes <= upto, oldest first, while more than max bytes
 * are held. */
void raft_log_evict(struct raft_log *l, raft_index upto, uint64_t max_bytes);

/* Entries from outside (boot log, AppendEntries): contiguous from first, terms non-decreasing
 * within [min_term, max_term], known types, CONFIG payloads that decode. */
bool raft_entries_well_formed(const struct raft_entry *v, size_t n, raft_index first,
                              raft_term min_term, raft_term max_term);

/* A growable array of outbound messages; each owns its entries array and one blob ref per
 * entry. */
struct raft_msgbuf {
    struct raft_msg *v;
    size_t n;
    size_t cap;
};

void raft_msgbuf_clear(struct raft_msgbuf *b);
void raft_msgbuf_free(struct raft_msgbuf *b);

/* PROBE: one append at a time until the peer's position is known. REPLICATE: pipelined.
 * SNAPSHOT: the peer needs compacted entries; the caller streams it a snapshot (no appends,
 * heartbeats only) until raft_report_snapshot(), an APPEND_RESP at or past pending_snapshot,
 * or a timeout. */
enum raft_progress_state { RAFT_PR_PROBE = 0, RAFT_PR_REPLICATE, RAFT_PR_SNAPSHOT };

/* The leader's view of one peer. */
struct raft_progress {
    raft_id id;
    raft_index match;       /* highest index known durable and matching on the peer */
    uint64_t match_ctx;     /* heartbeat sequence echoed by the answer that last raised match */
    raft_index next;        /* next index to send */
    uint8_t state;          /* enum raft_progress_state */
    bool probe_sent;        /* PROBE: one probe outstanding, wait for its answer */
    bool recent_active;     /* heard from within this check-quorum period */
    bool removed;           /* not in the latest configuration; dropped once that commits */
    raft_index sent_commit; /* commit index last sent to this peer */
    raft_index told_commit; /* highest commit the peer may have adopted (min(commit, prev+n)) */
    raft_index removed_at;  /* conf_index of the configuration that removed it */
    uint64_t acked_ctx;     /* highest heartbeat sequence echoed back (ReadIndex) */
    raft_index *inflight;   /* ring of last indexes of unacknowledged appends */
    uint32_t in_head;
    uint32_t in_count;
    raft_index stall_match;      /* match seen at the last heartbeat while appends were in flight */
    uint32_t stall_beats;        /* heartbeats since then without progress */
    raft_index pending_snapshot; /* SNAPSHOT: the snapshot index asked for */
    unsigned snapshot_ticks;     /* SNAPSHOT: ticks since it was asked for */
};

/* Heartbeat intervals without progress, with appends in flight, before the leader assumes
 * they were lost (a transport drops its queue when a link fails) and probes again. */
#define RAFT_STALL_BEATS 3

/* A durable write handed out and not yet acknowledged: the last (index, term) it covered. */
struct raft_write {
    uint64_t seq;
    raft_index index;
    raft_term term;
    raft_term hs_term; /* the term and vote that are durable once this write is */
    raft_id hs_vote;
};

/* A ReadIndex request waiting on the leader. ctx == 0: waiting for an own-term commit. */
struct raft_read_req {
    uint64_t id;
    raft_id from; /* the asking node; our own id for a local read */
    raft_index index;
    uint64_t ctx;
};

/* What the last raft_ready() handed out; released by raft_advance(). */
struct raft_handed {
    struct raft_entry *entries; /* to persist; one blob ref each */
    size_t n_entries;
    struct raft_msgbuf msgs;
    struct raft_msgbuf after;
    struct raft_entry *committed; /* one blob ref each */
    size_t n_committed;
    struct raft_read_state *reads;
    size_t n_reads;
    struct raft_configuration snap_conf; /* ready.snap_conf */
    struct raft_blob *snap_conf_blob;    /* ready.snap_conf_blob: one ref */
};

struct raft {
    struct raft_config cfg;
    uint64_t rng; /* splitmix64 state */
    bool failed;

    /* Hard state (durable through ready batches). */
    raft_term term;
    raft_id vote;
    raft_term durable_term; /* term and vote as last acknowledged durable */
    raft_id durable_vote;

    /* Soft state. */
    enum raft_role role;
    raft_id leader;
    raft_index commit;  /* never decreases */
    raft_index applied; /* handed out in ready.committed */
    raft_index stable;  /* durable locally */
    struct raft_log log;

    /* Latest configuration (effective once appended) and the index of its entry (at or
     * below log.offset when that entry was compacted away: conf is then snap_conf). */
    struct raft_configuration conf;
    raft_index conf_index;
    /* Configuration as of the snapshot point log.offset (n == 0 when offset == 0), the index
     * of the entry it came from (log.offset when unknown), and its encoding. */
    struct raft_configuration snap_conf;
    raft_index snap_conf_index;
    struct raft_blob *snap_conf_blob;

    /* Timers, in ticks. */
    unsigned election_elapsed; /* since the last valid contact from a leader (or campaign) */
    unsigned election_timeout; /* randomized in [min, max] */
    unsigned heartbeat_elapsed;
    unsigned quorum_elapsed;

    /* Election tally (precandidate/candidate): ids that granted and that refused. */
    raft_id granted[RAFT_MAX_NODES];
    uint32_t n_granted;
    raft_id refused[RAFT_MAX_NODES];
    uint32_t n_refused;

    /* Leader state. */
    struct raft_progress prs[RAFT__PROGRESS_MAX];
    uint32_t n_prs;
    bool bcast_pending; /* new entries or commit to push at the next ready */
    bool hb_pending;    /* a heartbeat round is wanted at the next ready */
    uint64_t hb_seq;    /* heartbeat sequence (ReadIndex confirmation) */
    struct raft_read_req *reads;
    size_t n_reads;
    raft_id transferee;        /* leadership transfer target, 0 if none */
    unsigned transfer_elapsed; /* ticks since the transfer began */

    /* Persistence bookkeeping. */
    bool hs_dirty;            /* term or vote changed since last handed out */
    raft_index persist_from;  /* first index not yet handed out for persistence */
    raft_index truncate_from; /* pending truncation to hand out, 0 if none */
    bool compact_pending;     /* a new snapshot point (log.offset) to hand out */
    bool reset_pending;       /* ... and it came from raft_install_snapshot() */
    uint64_t next_seq;
    struct raft_write *writes; /* FIFO of writes in flight */
    size_t n_writes;
    size_t cap_writes;

    /* Outputs collected since the last raft_ready(). */
    struct raft_msgbuf msgs;
    struct raft_msgbuf after;
    struct raft_read_state *read_out;
    size_t n_read_out;
    size_t cap_read_out;
    enum raft_role rep_role; /* role and leader last reported in a batch */
    raft_id rep_leader;
    bool rep_valid;

    bool handed_out;
    struct raft_handed h;
};

/* Planted bugs (enum raft_bug) exist only in the RAFT_PLANTED_BUGS build; in production the
 * test is a constant false and the buggy branches compile away. */
#ifdef RAFT_PLANTED_BUGS
#define raft_bug(r, bug) (((r)->cfg.bugs & (uint32_t)(bug)) != 0)
#else
#define raft_bug(r, bug) ((void)(r), false)
#endif

/* raft.c */
void raft_tracef(struct raft *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void raft_fail(struct raft *r, const char *why);
uint64_t raft_rand(struct raft *r);

/* ready.c: outbound messages. raft_send queues m (copied; entries moved, not copied) in
 * msgs for a leader and in msgs_after_persist otherwise. */
void raft_send(struct raft *r, struct raft_msg *m);
void raft_send_now(struct raft *r, struct raft_msg *m);
void raft_send_after_persist(struct raft *r, struct raft_msg *m);
void raft_read_out_push(struct raft *r, uint64_t id, raft_index index, bool failed);

/* Log mutations that keep configuration, persistence and stable index in step. */
int raft_append_entry(struct raft *r, raft_term term, uint8_t type, struct raft_blob *data,
                      bool absent);
void raft_truncate_from(struct raft *r, raft_index from);
/* A new reference to the payload of idx (fetched if absent); ERR_* puts the core in failed. */
int raft_payload(struct raft *r, raft_index idx, struct raft_blob **out);

/* snapshot.c */
void raft_snapshot_tick(struct raft *r);
void raft_send_snapshot(struct raft *r, struct raft_progress *pr);

/* transfer.c */
void raft_transfer_tick(struct raft *r);
void raft_transfer_on_match(struct raft *r, const struct raft_progress *pr);
int raft_recv_timeout_now(struct raft *r, const struct raft_msg *m);

/* election.c */
void raft_campaign_now(struct raft *r);
void raft_election_reset_timer(struct raft *r);
void raft_become_follower(struct raft *r, raft_term term, raft_id leader, const char *why);
void raft_tick_election(struct raft *r);
void raft_tick_leader(struct raft *r);
int raft_recv_prevote(struct raft *r, const struct raft_msg *m);
int raft_recv_vote(struct raft *r, const struct raft_msg *m);
int raft_recv_vote_resp(struct raft *r, const struct raft_msg *m);
bool raft_in_lease(const struct raft *r);
bool raft_promotable(const struct raft *r);
void raft_election_on_persisted(struct raft *r);
bool raft_log_up_to_date(const struct raft *r, raft_index last_index, raft_term last_term);

/* replication.c */
void raft_progress_reset_all(struct raft *r);
struct raft_progress *raft_progress_find(struct raft *r, raft_id id);
void raft_progress_sync(struct raft *r);
void raft_repl_flush(struct raft *r);
void raft_repl_heartbeat(struct raft *r);
int raft_recv_append(struct raft *r, const struct raft_msg *m);
int raft_recv_append_resp(struct raft *r, const struct raft_msg *m);
void raft_maybe_commit(struct raft *r);
void raft_commit_advanced(struct raft *r);
void raft_send_append_reject_stale(struct raft *r, const struct raft_msg *m);

/* membership.c */
bool raft_conf_is_voter(const struct raft_configuration *c, raft_id id);
bool raft_conf_equal(const struct raft_configuration *a, const struct raft_configuration *b);
uint32_t raft_conf_voters(const struct raft_configuration *c);
uint32_t raft_quorum(const struct raft *r);
bool raft_own_term_committed(const struct raft *r);
bool raft_change_in_flight(const struct raft *r);
int raft_conf_on_append(struct raft *r, raft_index idx, const struct raft_blob *data);
void raft_conf_on_truncate(struct raft *r, raft_index from);
void raft_membership_on_commit(struct raft *r);
void raft_membership_maybe_promote(struct raft *r);

/* readindex.c */
void raft_reads_on_own_commit(struct raft *r);
void raft_reads_check(struct raft *r);
void raft_reads_fail_all(struct raft *r);
int raft_reads_enqueue(struct raft *r, uint64_t id, raft_id from);
int raft_recv_readindex(struct raft *r, const struct raft_msg *m);
int raft_recv_readindex_resp(struct raft *r, const struct raft_msg *m);

#endif
