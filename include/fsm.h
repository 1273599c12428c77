/* fsm.h — the replicated file store: applies committed PUT/DELETE commands, in log order, to
 * data/nodeN/files/ and keeps per-file metadata and request-id dedup in Berkeley DB. It never
 * writes anything outside node_dir, never fsyncs on the apply path, and never blocks on Raft.
 *
 * Layout under node_dir: files/ (the replicated files, nothing else), spare/ (spare inodes and
 * inodes on their way out, in 16 shard directories spare/0..f so each stays one ext4 block;
 * never visible to clients), trash/ (directories being removed).
 * BDB databases fsm_meta.db, fsm_dedup.db, fsm_dedupidx.db, fsm_state.db, fsm_ckpt.db live in
 * the caller's transactional environment.
 *
 * ---- Crash convergence (why replay from fsm_applied() always ends in the committed state) ----
 * Two durable indexes exist:
 *  A (fsm_state.db "applied"): the BDB state (metadata + dedup) is exactly the state after entry
 *    A. The NORMAL entries of one fsm_apply_batch() beyond A are one BDB transaction (their
 *    meta and dedup, and A = the last of them), committed with DB_TXN_NOSYNC: BDB may lose a
 *    suffix of those transactions, never a part of one. fsm_applied() moves only after the
 *    commit, so a checkpoint never covers a batch that could still abort.
 *  C (fsm_ckpt.db "checkpoint"): fsm_checkpoint() reads the applied index i, syncfs()es the
 *    file system, and only then writes C = i with a synchronous commit. So every file content
 *    produced by entries <= C is durable, and since the BDB log is sequential, A >= C.
 * fsm_open() returns fsm_applied() = min(C, A) as the replay start; the node feeds every
 * committed entry after it. Entries <= A are "redone" (files only; BDB already holds their
 * effect): a PUT rewrites its path only when A's metadata says that entry wrote the path's
 * current content; a DELETE removes its path only when A's metadata says the path is absent.
 * Entries > A are applied normally; every outcome (created, ERR_NOTFOUND, duplicate) is
 * computed from BDB metadata — never from what happens to be in files/ — so it is the same on
 * every node and on every replay. Files touched after C are rewritten by the replay; files not
 * touched after C were made durable by C's syncfs. A write lands in files/ through
 * renameat2() of a fully written spare, so a reader sees the old or the new file, never a mix.
 * The log must keep every entry after fsm_checkpointed() (compaction must not pass it).
 *
 * ---- Inodes (TESTBED.md: creating one costs ~0.8 ms here) ----
 * An overwrite no larger than the file (up to 64 KiB) is written into the file's own inode
 * when no other open file description of it exists (a write lease, F_SETLEASE, is granted
 * only then; while we hold it any other open waits for us): no reader can see it happen, and
 * no rename is needed. The lease stays on the file's cached fd between overwrites and a
 * thread of the store releases it as soon as another open breaks it (src/fsm/fsm_fdc.h):
 * such an open waits microseconds; a non-blocking one fails once with EWOULDBLOCK. If the
 * store does not release it in time (process stopped, thread starved), the kernel lets the
 * opener in after /proc/sys/fs/lease-break-time seconds (0: never): the lease is therefore
 * trusted only for half of that after it was last confirmed, then checked (F_GETLEASE) before
 * the next write in place. Limit: one write in place (<= 64 KiB into allocated blocks) that
 * itself lasts longer than lease-break-time cannot be protected (logged). Any other
 * overwrite writes into a pooled spare inode and swaps it with the target (RENAME_EXCHANGE);
 * the old inode becomes a spare. DELETE moves the inode into the pool too.
 * An inode that may be open elsewhere (a reader's fd from fsm_open_read, or any other process)
 * is never recycled: before reuse we take a write lease (F_SETLEASE), which the kernel refuses
 * while any other open file description of the inode exists; such an inode is unlinked and
 * lives on, unchanged, until its readers close it.
 *
 * Costs (tests/bench/fsm_bench.c, this VM): an overwrite applies in ~25 us of CPU (~15 us in
 * place) and creates
 * no inode; a new path ~0.1-0.5 ms, mostly the inode, which the spare thread usually makes
 * ahead of time. A body is written on the apply path: a 64 MiB PUT holds the caller's thread
 * for ~0.2-0.5 s.
 *
 * Threads: every call is made from one thread (the node's loop); fsm_checkpoint_sync() may also
 * run on another thread. Internally two optional threads pre-create spare inodes and take
 * periodic checkpoints (struct fsm_options); a third releases broken write leases. */
#ifndef RAFTFS_FSM_H
#define RAFTFS_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <db.h>

#include "raft.h"

#define FSM_REQ_ID_LEN 16
#define FSM_SHA256_LEN 32
#define FSM_DEDUP_WINDOW 100000 /* a request id is remembered for this many log entries */
#define FSM_SPARES_MAX 64       /* spare inodes kept open and ready */
/* More empty spares kept by name only (no fd): a deleted inode is kept rather than unlinked,
 * since on these VMs creating an inode soon after many unlinks is what costs most. */
#define FSM_RESERVE_MAX 4096
/* Spare inodes kept ready by default (open pool + empty reserve), created at low priority:
 * a burst of up to this many new paths pays a rename, not an inode creation (TESTBED.md: a
 * create costs ~50x a rename on these disks). */
#define FSM_SPARE_TARGET 1024

/* ---- Commands (payload of RAFT_ENTRY_NORMAL entries) ----------------------------------------
 * Encoding, version 1, all integers big-endian:
 *   u8 version (=1) | u8 op (1 PUT, 2 DELETE) | u8 req_id[16] | u16 path_len | path bytes
 *   PUT only:       | u64 body_len | body bytes
 * The total must match the payload length exactly; the path must pass fspath_validate(). */
enum fsm_cmd_op { FSM_CMD_PUT = 1, FSM_CMD_DELETE = 2 };

#define FSM_CMD_VERSION 1
#define FSM_CMD_HDR_LEN (1 + 1 + FSM_REQ_ID_LEN + 2)

struct fsm_cmd {
    uint8_t op; /* enum fsm_cmd_op */
    uint8_t req_id[FSM_REQ_ID_LEN];
    const char *path; /* borrowed from the decoded bytes; NOT NUL-terminated */
    size_t path_len;
    const uint8_t *body; /* PUT: borrowed from the decoded bytes */
    uint64_t body_len;
};

/* req_id must be unique per client request (a retry reuses it). Ids that grow over time (e.g.
 * 8 bytes of big-endian microseconds, then 8 random bytes) keep the dedup table's inserts on
 * its hot right edge; fully random ids work, at a few us more per apply once the table
 * outgrows the BDB cache. */
/* A PUT command whose body the caller writes in place (no second copy of the body): on success
 * *out is a new blob (caller owns one reference) and *body_out points at its body_len
 * uninitialised body bytes. ERR_INVALID (bad path), ERR_TOOBIG (does not fit a blob), ERR_NOMEM. */
/* A new request id: 8 bytes of big-endian wall-clock microseconds (made strictly increasing
 * within the process), then 8 random bytes drawn once per process (no system call per id).
 * Unique like a random id, but ids of one period sort together, so the dedup table's inserts
 * and lookups stay on a few hot B-tree pages instead of touching a random page each.
 * ERR_IO when no randomness is available. */
int fsm_req_id_new(uint8_t out[FSM_REQ_ID_LEN]);

int fsm_cmd_put_alloc(const uint8_t req_id[FSM_REQ_ID_LEN], const char *path, size_t path_len,
                      uint64_t body_len, struct raft_blob **out, uint8_t **body_out);
/* A DELETE command; *out as above. ERR_INVALID (bad path), ERR_NOMEM. */
int fsm_cmd_delete(const uint8_t req_id[FSM_REQ_ID_LEN], const char *path, size_t path_len,
                   struct raft_blob **out);
/* Parses untrusted bytes; out borrows from data. ERR_CORRUPT for anything malformed. */
int fsm_cmd_decode(const uint8_t *data, size_t len, struct fsm_cmd *out);

/* ---- The store ------------------------------------------------------------------------------ */
struct fsm_meta {
    uint64_t size;
    uint8_t sha256[FSM_SHA256_LEN];
    raft_index index; /* the entry that wrote this content */
};

struct fsm_result {
    /* 0; ERR_NOTFOUND (DELETE of an absent path); ERR_EXISTS (PUT where a path component is a
     * file, or the path is a directory of other files: HTTP 409). Every node computes the
     * same status for the same entry. */
    int status;
    bool created;   /* PUT: the path did not exist (HTTP 201 rather than 200) */
    bool duplicate; /* the request id was applied before, at `index`: nothing was done now */
    uint64_t size;
    uint8_t sha256[FSM_SHA256_LEN];
    raft_index index; /* the entry that took effect (the original one for a duplicate) */
};

/* Checkpoint durations (syncfs plus the synchronous commit of C), upper bounds in ms. */
#define FSM_CKPT_BUCKETS 10
extern const double fsm_ckpt_bucket_le_ms[FSM_CKPT_BUCKETS];

struct fsm_stats {
    uint64_t inodes_created;      /* spare inodes created on the apply path (the expensive case) */
    uint64_t inodes_precreated;   /* spare inodes created by the background thread */
    uint64_t inodes_recycled;     /* old inodes taken back into the spare pool */
    uint64_t inodes_pinned;       /* old inodes not recycled because they were open elsewhere */
    uint64_t overwrites_in_place; /* overwrites written into the file's own inode (no rename) */
    uint64_t spares;              /* spares in the pool now */
    /* ckpt_hist[i]: checkpoints that took <= fsm_ckpt_bucket_le_ms[i] (and more than the
     * previous bound); ckpt_hist[FSM_CKPT_BUCKETS]: slower than every bound. */
    uint64_t ckpt_hist[FSM_CKPT_BUCKETS + 1];
    uint64_t ckpt_us_sum;
};

struct fsm; /* opaque */

struct fsm_options {
    /* A thread pre-creates spare inodes whenever fewer than this many are pooled, so a new
     * path rarely pays for an inode on the apply path (0: no thread; at most FSM_SPARES_MAX +
     * FSM_RESERVE_MAX). The thread runs at nice 19, so it yields to the apply path. */
    unsigned spare_target;
    /* A thread checkpoints this often when something was applied (0: no thread; checkpoints
     * happen only through fsm_checkpoint). */
    unsigned checkpoint_interval_ms;
};

/* Opens (creating when absent) the store of node_dir with its DBs in env (a transactional
 * environment opened with DB_THREAD by the caller, who keeps it open until fsm_close). Cleans
 * spare/ and trash/ left by a crash. Defaults: spare_target FSM_SPARE_TARGET,
 * checkpoint_interval_ms 1000. ERR_BUSY when another open store uses node_dir (flock);
 * ERR_IO/ERR_NOMEM with a message in err. */
int fsm_open(DB_ENV *env, const char *node_dir, struct fsm **out, char *err, size_t err_len);
int fsm_open_opts(DB_ENV *env, const char *node_dir, const struct fsm_options *opts,
                  struct fsm **out, char *err, size_t err_len);
/* Stops the threads, and with a checkpoint thread takes a last (blocking) checkpoint; then
 * closes the DBs and fds. NULL-safe. */
void fsm_close(struct fsm *f);

/* Applies committed entry e (entries must come in index order, starting after fsm_applied()).
 * NOOP/CONFIG only advance the applied index. Returns 0 with *res filled (res->status tells
 * the outcome), ERR_CORRUPT for an undecodable NORMAL payload (a bug or corruption: the node
 * must stop), ERR_IO/ERR_NOSPACE when the disk or BDB fails (the entry may be half-applied on
 * disk; restarting replays it). Entries at or below the BDB-applied index are redone
 * idempotently (see the header comment) and report their original outcome. */
int fsm_apply(struct fsm *f, const struct raft_entry *e, struct fsm_result *res);
/* Applies es[0..n) (consecutive committed entries, as for fsm_apply) with their metadata in
 * one BDB transaction, res[k] for es[k]: per entry the same outcomes as n fsm_apply calls,
 * at one transaction's cost. On an error nothing of the batch reaches BDB (files/ may be
 * ahead, as after a crash: the node must stop and replay). Keep n modest (<= 64): the
 * transaction holds a lock per page it touches. */
int fsm_apply_batch(struct fsm *f, const struct raft_entry *es, size_t n, struct fsm_result *res);

/* The last applied index (after fsm_open: where replay starts). */
raft_index fsm_applied(struct fsm *f);
/* The last durable checkpoint. */
raft_index fsm_checkpointed(struct fsm *f);
/* Makes the files of every applied entry durable (syncfs), then durably records the applied
 * index as the replay start. syncfs can take hundreds of ms after many writes, so with a
 * checkpoint thread this only wakes the thread and returns at once (safe from the loop);
 * without one it checkpoints now, blocking. ERR_IO. */
int fsm_checkpoint(struct fsm *f);
/* Always the blocking form (any thread): for tests and tools. */
int fsm_checkpoint_sync(struct fsm *f);

/* Metadata of path (NUL-terminated). ERR_NOTFOUND, ERR_INVALID (bad path), ERR_IO. */
int fsm_stat(struct fsm *f, const char *path, struct fsm_meta *out);
/* An O_RDONLY fd (owned by the caller, who closes it) on the current content of path, and its
 * metadata. The fd's content never changes afterwards, whatever is applied later.
 * ERR_NOTFOUND, ERR_INVALID, ERR_BUSY (files/ is ahead of the metadata during crash replay:
 * retry once replay is done), ERR_IO. */
int fsm_open_read(struct fsm *f, const char *path, int *fd_out, struct fsm_meta *meta);
/* Calls cb for every file whose path starts with prefix (bytes; NULL or "" for all), in
 * bytewise path order. A non-zero return from cb stops the walk and is returned. ERR_IO. */
int fsm_list(struct fsm *f, const char *prefix,
             int (*cb)(void *ctx, const char *path, const struct fsm_meta *m), void *ctx);

void fsm_get_stats(struct fsm *f, struct fsm_stats *out);

/* ---- Snapshots (InstallSnapshot) -------------------------------------------------------------
 * The file store IS the snapshot: a leader streams its live store to a follower that lacks
 * log entries the leader compacted away. The stream is fuzzy: it starts at S = fsm_applied()
 * and ends at S_end = fsm_applied() when its last record was read, applies go on meanwhile,
 * and every file in it is internally consistent (read through fsm_open_read) but files may
 * come from different indexes in [.., S_end]. The receiver installs it atomically with
 * applied = S; the leader then sends entries S+1.. as usual, and the fuzzy window rule below
 * makes replaying (S, S_end] over the fuzzy copy end in exactly the state at S_end.
 * Format: src/fsm/fsm_snap_fmt.h (records framed with lengths and CRC-32s; a SHA-256 per file).
 *
 * ---- The fuzzy window rule (why the copy converges) ----
 * After an install of (S, S_end], a NORMAL entry k in (S, S_end] is handled so:
 *  - its request id recorded at k itself ("replay", not a duplicate): the stream caught the
 *    sender's outcome of k. The stream's dedup walk ends at S_end, in index order, so it
 *    catches every non-duplicate entry of the window. If that outcome changed the path
 *    (status 0), k is applied again only when the path is absent or its metadata index is
 *    < k; a PUT that now conflicts (ERR_EXISTS) is skipped.
 *  - recorded at an index > k: k was a duplicate at the sender (an id recorded twice inside
 *    the window would need S_end - S > FSM_DEDUP_WINDOW, which the reader refuses: ERR_TIMEOUT
 *    and the writer: ERR_CORRUPT). Recorded at j < k: the usual duplicate test. The sender
 *    keeps every record >= S+1-FSM_DEDUP_WINDOW while a reader is open, so no original a
 *    window entry could duplicate is pruned before it is read.
 *  - otherwise the usual rules, plus the path rule (skip when the path's index is >= k).
 * Why the files converge: every command replaces a whole path (PUT) or removes it (DELETE).
 * For a path p, the stream holds p as of some moment t in [S, S_end] (with index m_p, or
 * absent). Entries on p that succeeded at the sender after t have indexes > m_p and are all
 * re-applied in order; those up to t are <= m_p and skipped (their effect is already in the
 * copy, or was replaced by m_p). So p ends as after the last successful entry on p, i.e. as
 * at S_end. Two paths of the copy may conflict (file "a", caught early, and "a/b", caught
 * after "a" was deleted and "a/b" written): the writer keeps the one with the higher index,
 * since the other was removed at the sender inside the window (its DELETE is replayed on an
 * absent path: no effect). A window PUT that conflicts with a path of the copy is likewise
 * older than that path and removed again before it at the sender. Entries > S_end are normal.
 * ---- Composition with crash replay ----
 * The install sets A = C = S in one synchronous BDB transaction, so after it every rule of
 * "Crash convergence" holds with S as the last checkpoint: window entries <= A after a crash
 * are redone from A's metadata (a window entry that was skipped left the path's index > k,
 * so the redo skips it too), entries in (A, S_end] follow the window rule again (it only
 * reads BDB state, which is exactly the state after A), and (S, S_end] is durable in the
 * install record, so a restart keeps the window.
 * ---- The install (crash-safe) ----
 * 1. syncfs the staged tree (data/nodeN/raft/snap-in/files); 2. ONE synchronous BDB
 * transaction swaps the staged metadata and dedup tables in (dbremove + dbrename), sets
 * A = C = S and records the install (S, S_end, term, configuration, the staged directory's
 * inode, pending); 3. renameat2(RENAME_EXCHANGE) files/ <-> the staged directory; 4. fsync
 * the node directory and clear pending; 5. the old tree goes to trash/ (removed by a
 * background thread). fsm_open finishes a pending install: files/ has the recorded inode
 * (exchanged) or the staged directory still has it (exchange again). Before step 2 commits
 * the old store is intact; from then on the new one is, once the exchange is (re)done.
 * Spare inodes live in spare/ and do not care which tree they go to; readers' fds on old
 * files keep their content. */

struct fsm_snap_meta {
    raft_index index;       /* S: the stream's state machine starts here */
    raft_term term;         /* term of entry S */
    raft_index index_end;   /* S_end: (S, S_end] is the fuzzy window */
    struct raft_blob *conf; /* the configuration as of S (opaque, as given to the reader);
                             * the caller owns one reference (NULL when empty) */
};

struct fsm_snap_reader; /* opaque */
struct fsm_snap_writer; /* opaque */

/* Readers and writers belong to the applying thread; close or abort them before fsm_close.
 *
 * Sender. Opens a stream of the store as of index == fsm_applied(f) (else ERR_INVALID), with
 * term = term of that entry and conf = the configuration as of it (encoded; the reader keeps
 * a reference; at most 64 KiB: ERR_TOOBIG; NULL for none). ERR_BUSY while a crash replay is
 * still running or the window of this store's own last install is not replayed yet (files
 * may be ahead of the applied index: retry once fsm_applied() has caught up), ERR_NOMEM.
 * Keeps dedup records the stream may need until it is closed; the caller must keep its log
 * from index+1 on while the stream runs. Memory: one record buffer (~260 KiB), whatever the
 * store holds. */
int fsm_snap_reader_open(struct fsm *f, raft_index index, raft_term term,
                         const struct raft_blob *conf, struct fsm_snap_reader **out);
/* Fills buf[0..*len) with the next bytes of the stream, *len <= cap; *done once the whole
 * stream has been handed out (possibly with *len > 0 in that same call). A call does
 * bounded work: it stops producing records after 0.5 ms (the record in progress is
 * finished) or when cap is full, so *len < cap (even 0) does not mean the end; a read the
 * disk is slow to serve can stretch it (measured here, 256 KiB calls: big files mean
 * 0.2-0.4 ms; evicted 8 KiB files mean 1.2 ms, max ~9 ms). Applies may happen between
 * calls. Errors (the stream is then dead: close it): ERR_BUSY (an install replaced this
 * store, or a file is unreadable during crash replay), ERR_TIMEOUT (more than
 * FSM_DEDUP_WINDOW entries were applied since the start: the stream is too slow to be
 * exact), ERR_IO. */
int fsm_snap_reader_next(struct fsm_snap_reader *rd, uint8_t *buf, size_t cap, size_t *len,
                         bool *done);
raft_index fsm_snap_reader_index(const struct fsm_snap_reader *rd);
void fsm_snap_reader_close(struct fsm_snap_reader *rd); /* NULL-safe */

/* Receiver. One writer at a time per store (ERR_BUSY). Cleans the staging area (leftovers go
 * to trash/) and stages files under node_dir/raft/snap-in/files/ and metadata in BDB tables
 * fsm_snapin_*.db; nothing of the live store changes until fsm_snap_install. ERR_IO. */
int fsm_snap_writer_open(struct fsm *f, struct fsm_snap_writer **out);
/* Consumes the next len bytes of the stream (any chunking). Checks every record's length,
 * CRC and order, every path (fspath_validate), every file's size and SHA-256. ERR_CORRUPT
 * for anything malformed or hostile (also bytes after the end), ERR_IO/ERR_NOSPACE; after
 * an error every later call fails the same way: abort the writer. Work is proportional to
 * len (measured here per 256 KiB: ~0.3-0.4 ms of big files; ~3-4 ms of 8 KiB files, where
 * each new inode costs ~0.1 ms): feed smaller pieces to keep a loop turn short. Two paths
 * of the copy that conflict (file "a" and "a/b", caught at different moments) are resolved
 * by keeping the one with the higher index (see the window rule). */
int fsm_snap_writer_put(struct fsm_snap_writer *wr, const uint8_t *data, size_t len);
/* The stream is complete and valid: fills *out (the caller owns out->conf's reference).
 * ERR_CORRUPT when it was cut short, or the earlier error. */
int fsm_snap_writer_finish(struct fsm_snap_writer *wr, struct fsm_snap_meta *out);
/* Drops the staged copy (moved to trash/, removed in the background). NULL-safe. */
void fsm_snap_writer_abort(struct fsm_snap_writer *wr);

/* Installs a finished writer's copy (always consumes wr). Requires out.index >
 * fsm_applied(f) (ERR_INVALID; the store is unchanged). Blocks for the syncfs of the staged
 * files (bulk data: expect ~seconds per GiB) and one synchronous commit. Afterwards
 * fsm_applied() == fsm_checkpointed() == S: feed entries S+1.. (the window rule applies to
 * (S, S_end]). Open readers become stale (ERR_BUSY). Errors before the BDB commit leave the
 * old store (ERR_IO/ERR_NOSPACE); an error after it (ERR_IO) leaves the install pending: the
 * node must stop, and fsm_open finishes the install. */
int fsm_snap_install(struct fsm *f, struct fsm_snap_writer *wr);
/* The last installed snapshot (index, term, conf; index_end = S_end), also after a restart:
 * the node repairs the raft log at boot when the core's reset did not reach the disk.
 * ERR_NOTFOUND when none was ever installed, ERR_IO. */
int fsm_snap_info(struct fsm *f, struct fsm_snap_meta *out);
/* Tests only: the next install stops (returns ERR_SHUTDOWN) right after step `step` (1..5
 * above) as if the process died there; the caller must then close the store or exit. 0: off. */
void fsm_snap_test_stop_after(struct fsm *f, int step);

#endif
