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
 * An overwrite writes into a pooled spare inode and swaps it with the target
 * (RENAME_EXCHANGE); the old inode becomes a spare. DELETE moves the inode into the pool too.
 * An inode that may be open elsewhere (a reader's fd from fsm_open_read, or any other process)
 * is never recycled: before reuse we take a write lease (F_SETLEASE), which the kernel refuses
 * while any other open file description of the inode exists; such an inode is unlinked and
 * lives on, unchanged, until its readers close it.
 *
 * Costs (tests/bench/fsm_bench.c, this VM): an overwrite applies in ~25 us of CPU and creates
 * no inode; a new path ~0.1-0.5 ms, mostly the inode, which the spare thread usually makes
 * ahead of time. A body is written on the apply path: a 64 MiB PUT holds the caller's thread
 * for ~0.2-0.5 s.
 *
 * Threads: every call is made from one thread (the node's loop); fsm_checkpoint_sync() may also
 * run on another thread. Internally two optional threads pre-create spare inodes and take
 * periodic checkpoints (struct fsm_options). */
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
/* A new request id: 8 bytes of big-endian wall-clock microseconds, then 8 random bytes.
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

struct fsm_stats {
    uint64_t inodes_created;    /* spare inodes created on the apply path (the expensive case) */
    uint64_t inodes_precreated; /* spare inodes created by the background thread */
    uint64_t inodes_recycled;   /* old inodes taken back into the spare pool */
    uint64_t inodes_pinned;     /* old inodes not recycled because they were open elsewhere */
    uint64_t spares;            /* spares in the pool now */
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

#endif
