/* storage.h — raftfs's durable Raft state on Berkeley DB 5.3: the log, term/vote/commit, and a
 * group-commit writer thread. Never blocks the loop thread on the disk: only the writer
 * thread (or store_write_sync, before the writer starts) commits with a log fsync.
 *
 * Layout, in one transactional environment in DIR (data/nodeN/raft/):
 *   log.db      btree: big-endian u64 index -> 40-byte header, version 2 (term, payload
 *               length, type, payload CRC-32, segment number and offset of the payload,
 *               header CRC-32 over the header and the index). Version-1 headers (24 bytes,
 *               payload in payload.db) of an older store are still read, truncated and
 *               compacted; payload.db is opened only while it holds payloads.
 *   seg-<16 hex digits>.dat  the payload bytes, appended back to back (key-value separation:
 *               they never pass through BDB's log, pages or checkpoints). A segment rolls at
 *               16 MiB (a bigger payload gets one of its own); compaction deletes headers and
 *               then unlinks every segment older than the one the first remaining header
 *               names; store_reset_sync starts a new segment and unlinks the others.
 *   meta.db     btree: "hardstate" -> term, vote, commit + CRC-32;
 *               "snapshot" -> the snapshot point: index, term, encoded configuration as of
 *               index, CRC-32 (absent until the first compaction). The log holds the entries
 *               after it: snapshot index + 1 .. last, contiguous;
 *               "segsync" -> the segment position durable before the last batch + CRC-32.
 * Durability: a batch is acknowledged once its payloads (the segment's fdatasync, on a syncer
 * thread) and its transaction (DB_TXN_SYNC, in parallel) are both durable. A crash between
 * the two can leave the last batch's headers without their payload: store_open checks every
 * entry at or beyond "segsync" and cuts the log at the first payload missing or failing its
 * CRC (never acknowledged). Reads (store_fetch, store_load) verify every payload's CRC.
 * Compaction (log prefix deletion) is bounded per transaction: a write records the snapshot
 * point and deletes at most a chunk (STORE_COMPACT_CHUNK entries / STORE_COMPACT_CHUNK_BYTES)
 * of the entries <= it in its own transaction; the writer deletes the rest in later batches
 * and, while idle, in small transactions of its own. Leftover entries <= the snapshot index
 * (after a crash, or still queued for deletion) are never loaded or counted.
 * Freed BDB pages are reused by later appends (the files stop growing once compaction keeps
 * up) and old BDB log files are removed after each checkpoint (DB_LOG_AUTO_REMOVE).
 * Every DB has BDB page checksums (DB_CHKSUM); every read of a header, payload or hardstate
 * verifies its own CRC-32 (zlib) and answers ERR_CORRUPT on a mismatch.
 *
 * Threads and lock order. The environment is opened DB_THREAD, with the deadlock detector
 * on every conflict (DB_LOCK_DEFAULT). The writer thread's transactions touch only log.db,
 * payload.db and meta.db; other users of store_env() (the file store) must keep their own
 * DBs and never touch these three, so no transaction ever holds locks in both sets and no
 * cycle can form. store_fetch() reads with DB_READ_UNCOMMITTED (no read locks; the writer
 * downgrades its page locks to "was written" after each put), so it never waits for the
 * writer's fsync. Other users should commit with DB_TXN_NOSYNC on the loop thread: their
 * records reach the disk with the writer's next synchronous commit or checkpoint.
 * Never call into the store while holding a transaction of your own on these DBs.
 */
#ifndef RAFTFS_STORAGE_H
#define RAFTFS_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <db.h>
#include <ev.h>

#include "raft.h"

struct store; /* opaque */

/* Opens (creating DIR and the DBs if missing, running recovery) the environment in dir.
 * err gets a human-readable reason with BDB's db_strerror text. ERR_IO, ERR_CORRUPT (recovery
 * impossible), ERR_NOSPACE, ERR_NOMEM. */
int store_open(const char *dir, struct store **out, char *err, size_t err_len);
/* Closes the DBs and the environment. The writer must be stopped first. NULL-safe. */
void store_close(struct store *s);
/* Borrowed; valid until store_close(). For other modules' own DBs (see lock order above). */
DB_ENV *store_env(struct store *s);
/* The reason for the last error of a call made on the loop thread (borrowed). */
const char *store_errmsg(const struct store *s);

/* Loads hardstate, the snapshot point and the whole log after it, in index order, into
 * *boot: term/vote/commit, snapshot_index/snapshot_term/snapshot_conf (the decoded
 * configuration as of snapshot_index; NULL and 0/0 when no compaction happened yet) and the
 * entries snapshot_index+1 .. last. NORMAL entries come with data == NULL (fetch them with
 * store_fetch); NOOP/CONFIG entries carry their payload (NULL when empty). boot's memory
 * (entries, snapshot_conf) belongs to the store until store_boot_free(boot). Leftover entries
 * <= snapshot_index are skipped (the writer deletes them later). ERR_CORRUPT on a bad
 * checksum (entry header, CONFIG payload, hardstate, snapshot record), an undecodable
 * snapshot configuration, a gap, a first entry other than snapshot_index+1, or terms going
 * backwards (also below snapshot_term); ERR_IO, ERR_NOMEM. boot->applied is left 0 (the
 * caller's). Call before store_writer_start (again after store_reset_sync). */
int store_load(struct store *s, struct raft_boot *boot);
/* Frees what store_load put in boot and zeroes it. */
void store_boot_free(struct raft_boot *boot);

/* The verified payload of entry index: *out is a new blob reference owned by the caller
 * (len 0 for an empty payload). ERR_NOTFOUND, ERR_CORRUPT, ERR_NOMEM, ERR_IO. Safe on the
 * loop thread while the writer commits; reads uncommitted data, so only fetch entries known
 * to be durable and never truncated (committed ones) and above the snapshot point (an entry
 * at or below it may still answer until its deletion is carried out). */
int store_fetch(struct store *s, raft_index index, struct raft_blob **out);

/* One ready batch to make durable, applied in this order inside ONE transaction:
 *   1. compaction (compact_to != 0): the snapshot point becomes (compact_to, snap_term,
 *      snap_conf) and entries <= compact_to are deleted (a first chunk now, the rest by the
 *      writer later; they are never seen again either way). compact_to may be beyond the
 *      log's end (a follower installing a snapshot): the log then continues at compact_to+1.
 *   2. truncation (truncate_from != 0, or implied by entries[0] overwriting the log): delete
 *      entries >= truncate_from;
 *   3. the entries; then the hardstate (the newest of a group-committed batch).
 * A follower's snapshot install is one job: compact_to = S, truncate_from = S+1 (when its
 * suffix is discarded) and possibly entries from S+1. Rules (ASSERT, programmer errors):
 * entries contiguous, following the log after steps 1-2 without a gap or overlap, terms
 * non-decreasing and >= snap_term; compact_to >= the current snapshot index, or
 * truncate_from == compact_to + 1 (a reset may move the snapshot point back: everything
 * after it goes); truncate_from, when set, > compact_to; snap_conf != NULL iff compact_to. */
struct store_write {
    uint64_t seq;
    bool hardstate_changed;
    raft_term term;
    raft_id vote;
    raft_index commit;
    raft_index truncate_from; /* 0 = none; else delete entries >= this first */
    /* Owned by the job: the array is malloc'd by the caller with one blob reference per
     * entry; the store frees both (also on error). */
    struct raft_entry *entries;
    size_t n_entries;
    raft_index compact_to; /* 0 = none; else the new snapshot point (see above) */
    raft_term snap_term;   /* term of the entry at compact_to */
    /* raft_configuration_encode() of the configuration as of compact_to; the job owns one
     * reference (dropped by the store, also on error). */
    struct raft_blob *snap_conf;
};

/* Writes w in one transaction, durable on return. Takes ownership of w's entries (w itself
 * is borrowed). Not while a writer is running. ERR_IO, ERR_NOSPACE, ERR_CORRUPT, ERR_NOMEM. */
int store_write_sync(struct store *s, struct store_write *w);

/* Boot-time repair, before the writer starts: deletes EVERY entry and records the snapshot
 * point (index, term, conf = encoded configuration as of index; borrowed). For a node whose
 * file store installed a snapshot at index while the core's matching reset never reached
 * this store (a crash in between). Durable on return; call store_load again afterwards.
 * ERR_IO, ERR_NOSPACE, ERR_NOMEM. */
int store_reset_sync(struct store *s, raft_index index, raft_term term,
                     const struct raft_blob *conf);
/* The durable snapshot point (0, 0 when none) as last committed: by store_open/store_load/
 * store_reset_sync/store_write_sync, or by the writer (any thread; a batch's point may show
 * before its done_cb). Always returns 0. */
int store_snapshot_info(struct store *s, raft_index *index, raft_term *term);

/* Asynchronous group-commit writer: a storage thread takes every queued job (at most
 * STORE_BATCH_JOBS_MAX jobs, ~STORE_BATCH_BYTES_MAX payload bytes or STORE_BATCH_ENTRIES_MAX
 * entries; a truncating job starts a new batch), writes them all in ONE transaction with ONE log
 * fsync, then reports each job's seq in submission order on the loop thread (ev_async) through
 * done_cb(ctx, seq, err). On a write error err != 0 for that job and every later one (sticky
 * failure). A second thread (the flusher) takes BDB checkpoints when the writer asks (after 8 MiB
 * of BDB log, or 10 s after a write), which let DB_LOG_AUTO_REMOVE drop old log files and keep
 * recovery short, without holding up commits, and trickles the cache; while no job waits, the
 * writer deletes carried-over compacted entries in small transactions of its own. */
#define STORE_BATCH_JOBS_MAX 1024
#define STORE_BATCH_BYTES_MAX (64u << 20)
#define STORE_BATCH_ENTRIES_MAX 65536 /* bounds the pages (locks) of one transaction */
/* Compaction deletes at most this many entries / payload bytes in one transaction of its own
 * (at least one entry), a few ms of work that a job arriving meanwhile waits for; a batch
 * deletes that much more than it appends (capped at a batch's limits) so deletion keeps up. */
#define STORE_COMPACT_CHUNK 1024
#define STORE_COMPACT_CHUNK_BYTES (4u << 20)
struct store_writer;
/* loop: the loop thread's libev loop (borrowed; must outlive the writer). ERR_NOMEM, ERR_IO. */
int store_writer_start(struct store *s, struct ev_loop *loop,
                       void (*done_cb)(void *ctx, uint64_t seq, int err), void *ctx,
                       struct store_writer **out);
/* Loop thread only. Takes ownership of job's contents: entries and snap_conf (also on error; *job
 * is borrowed and may be reused). Never blocks on the disk. ERR_NOMEM, ERR_SHUTDOWN after stop
 * began. */
int store_writer_submit(struct store_writer *w, struct store_write *job);
/* Loop thread only, never from inside done_cb. Makes every queued job durable, takes a
 * final checkpoint, joins the thread and frees w. Completions not yet reported through
 * done_cb are dropped (the loop is stopping). NULL-safe. */
void store_writer_stop(struct store_writer *w);

/* Latency histograms of the writer (lathist.h; borrowed, valid until store_writer_stop, read
 * from any thread): batch = one batch's transaction with its commit and fsync (the time
 * every job of the batch and everything queued behind it waits), ckpt = one BDB checkpoint
 * (on the writer's flusher thread: batches go on meanwhile). */
struct lathist;
void store_writer_hists(struct store_writer *w, const struct lathist **batch,
                        const struct lathist **ckpt);

/* Testing only: fn(ctx) runs on the writing thread inside each batch's transaction, after
 * its puts and before its commit; a non-zero return (an errno or BDB code) fails the batch as
 * if BDB had returned it. NULL to clear. Set while no writer runs. */
void store_set_commit_hook(struct store *s, int (*fn)(void *ctx), void *ctx);
/* Testing only: compaction deletes at most entries per transaction instead of
 * STORE_COMPACT_CHUNK (0: the default), to exercise carried-over deletions. Set while no
 * writer runs. */
void store_set_compact_chunk(struct store *s, uint32_t entries);

/* Fixed fsync latency buckets (upper bounds, µs) for a Prometheus histogram. */
#define STORE_FSYNC_BUCKETS 14
extern const double store_fsync_bucket_le_us[STORE_FSYNC_BUCKETS];

struct store_stats {
    uint64_t fsyncs;            /* synchronous commits (one log fsync each) */
    uint64_t batches;           /* transactions written (== fsyncs unless one failed) */
    uint64_t jobs_written;      /* store_write jobs made durable */
    uint64_t entries_written;   /* log entries made durable */
    uint64_t bytes_written;     /* payload bytes made durable */
    uint64_t checkpoints;       /* BDB checkpoints taken */
    uint64_t entries_compacted; /* log entries deleted by compaction (leftovers included) */
    /* fsync_hist[i]: commits that took <= store_fsync_bucket_le_us[i] (and more than the
     * previous bound); fsync_hist[STORE_FSYNC_BUCKETS]: slower than every bound. */
    uint64_t fsync_hist[STORE_FSYNC_BUCKETS + 1];
    double fsync_us_sum; /* total commit time, µs */
    uint64_t fsync_us_max;
};
/* Any thread; a consistent snapshot. */
void store_stats(struct store *s, struct store_stats *out);

#endif
