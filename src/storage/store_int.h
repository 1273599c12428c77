/* store_int.h — what store.c, store_log.c and writer.c share inside src/storage: the store
 * object, the record codecs and the batch transaction. Never included outside src/storage. */
#ifndef RAFTFS_STORE_INT_H
#define RAFTFS_STORE_INT_H

#include <pthread.h>

#include "storage.h"

#define STORE_HDR_BYTES 40    /* log.db value, version 2: payload in a segment file */
#define STORE_HDR_V1_BYTES 24 /* version 1: payload in payload.db (read, never written) */
#define STORE_HS_BYTES 28     /* meta.db "hardstate" value */
#define STORE_REC_VERSION 2   /* header format version written */
#define STORE_ERRMSG_BYTES 256
/* A segment file rolls once it holds this much; a bigger payload gets a segment of its own.
 * Small enough that compaction frees disk space soon (a roll is one extra fdatasync and
 * directory fsync every few seconds at full load), large enough to keep files few. */
#define STORE_SEG_MAX_BYTES (16u << 20)

/* One queued write inside the writer (also used by store_write_sync). */
struct store_job {
    struct store_job *next;
    struct store_write w;
    int err;
};

/* Where the durable log stands, as seen by the writing thread (the writer, or the caller of
 * store_*_sync / store_load before it starts). A batch works on a copy and publishes it
 * only when its transaction commits. */
struct store_pos {
    /* The log's logical end: the last entry, or the snapshot index when no entry follows
     * it. The next append is at last_index + 1. */
    raft_index last_index;
    raft_index snap_index; /* the durable snapshot point (0: none) */
    raft_term snap_term;
    /* Entries <= snap_index may still be on disk (compaction carried over). Cleared when a
     * deletion pass finds none. */
    bool compact_pending;
};

/* Where a payload starts: segment sequence number and byte offset. Ordered (seg, off). */
struct store_segpos {
    uint64_t seg;
    uint64_t off;
};

/* One open segment file (seg-<seq, 16 hex digits>.dat in the store's directory). */
struct store_seg_file {
    uint64_t seq;
    int fd;
};

/* The payload segment files (store_seg.c). Invariants:
 *  - Append-only: bytes are written only at the current (highest-numbered) segment's end and
 *    bytes any header names are never rewritten; a truncated entry's bytes stay until their
 *    segment is dropped. At open the end is where the last log.db header's payload ends
 *    (every header, leftovers and truncated ones a crash brought back included, names a
 *    position before it); what lies beyond (zeros written ahead, an unacknowledged batch's
 *    bytes) is named by no header and gets overwritten.
 *  - Between two batches every byte below the current end is durable (each batch waits for
 *    its fdatasync; store_open syncs the current segment once; a roll syncs the old one and
 *    the directory before the first byte goes to the new one).
 *  - Headers in log.db name non-decreasing positions in index order (appends go at the end,
 *    whose position only grows), so every segment below the first log.db record's holds
 *    only compacted or truncated payloads: that is what compaction drops.
 *  - Sequence numbers are never reused: the highest segment is never removed except by
 *    store_reset_sync, which first creates the next one. */
struct store_segs {
    int dirfd;
    pthread_rwlock_t lock;        /* files[] (readers pread under it; the writing thread
                                     changes it under the write lock, reads it without) */
    struct store_seg_file *files; /* sorted by seq; the last one is the current segment */
    size_t n, cap;
    uint64_t end;       /* the current segment's write end (writing thread only) */
    uint64_t prep_end;  /* bytes of the current segment already written once (zeros ahead
                           of end): overwriting them needs no metadata, so the batch's
                           fdatasync is a data flush, not a journal commit */
    bool prep_failing;  /* the last store_seg_prepare failed (its warning was logged) */
    uint64_t max_bytes; /* roll size: STORE_SEG_MAX_BYTES (tests: store_seg_set_max) */
    /* Positions of the current batch's entries, in submission order (writing thread only). */
    struct store_segpos *pos;
    size_t pos_cap;
    /* The syncer thread: fdatasync of the current segment in parallel with the BDB commit. */
    pthread_t sync_th;
    bool sync_started, sync_stop, sync_busy;
    /* Who sleeps on sync_cv (under sync_mu): a side is signalled only when it sleeps, and
     * after the lock is dropped, so a wake never lands on a mutex still held. */
    bool sync_idle, sync_waiting;
    int sync_fd, sync_err;
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    /* The reaper thread: closes and unlinks the segments compaction dropped. On ext4 mounted
     * with discard an unlink discards the file's blocks synchronously (4-30 ms for 16 MiB),
     * which on the writing thread stalled every commit queued behind it. A segment enters
     * trash[] only after it left files[] under the write lock: no reader is inside a pread
     * on it and none can find it again, and no header names its bytes (the deleting
     * transaction committed first). The reaper unlinks by name, and a name is never made
     * again (sequence numbers are not reused). Removal order and timing are free: a segment
     * still on disk at a crash or close is below the first log.db record's, and
     * store_seg_recover drops it again at the next open. */
    pthread_t reap_th;
    bool reap_init, reap_started, reap_stop, reap_busy;
    struct store_seg_file *trash; /* dropped, not yet closed and unlinked */
    size_t trash_n, trash_cap;
    pthread_mutex_t reap_mu; /* guards reap_stop, reap_busy, trash */
    pthread_cond_t reap_cv;
    void (*reap_hook)(void *ctx, uint64_t seq); /* tests: called before each removal */
    void *reap_hook_ctx;
};

struct store {
    DB_ENV *env;
    bool env_open; /* env->open succeeded */
    DB *log;       /* index -> header */
    DB *payload;   /* version-1 stores only: index -> payload bytes (NULL when absent
                      or empty at open: no version-1 payload left to read or delete) */
    struct store_segs segs;
    int broken;           /* a segment write or sync failed: every later write fails with this */
    DB *meta;             /* "hardstate" -> term, vote, commit; "snapshot" -> the snapshot point */
    struct store_pos pos; /* writing thread only */
    uint32_t compact_chunk; /* entries per deletion transaction (at least) */
    bool writer_running;
    int (*commit_hook)(void *ctx);
    void *commit_hook_ctx;
    pthread_mutex_t stats_mu; /* guards stats and pub_snap_*: written by the writer */
    struct store_stats stats;
    raft_index pub_snap_index; /* pos.snap_index as of the last commit, for any thread */
    raft_term pub_snap_term;
    char errmsg[STORE_ERRMSG_BYTES]; /* last loop-thread error */
};

/* One decoded log.db header. */
struct store_hdr {
    raft_term term;
    uint32_t len;
    uint8_t type;
    uint8_t version; /* 1: payload in payload.db; 2: at pos in a segment */
    uint32_t payload_crc;
    struct store_segpos pos;
};

/* BDB return code -> ERR_*; logs "what: db_strerror" and copies it to msg when non-NULL. */
int store_bdb_err(int ret, const char *what, char *msg, size_t msg_len);
void store_put_le(uint8_t *p, uint64_t v, int n);
uint64_t store_get_le(const uint8_t *p, int n);
void store_key(raft_index index, uint8_t key[8]);
raft_index store_key_index(const uint8_t key[8]);
/* Always version 2. */
void store_hdr_encode(raft_index index, const struct store_hdr *h, uint8_t out[STORE_HDR_BYTES]);
/* len: STORE_HDR_BYTES or STORE_HDR_V1_BYTES. ERR_CORRUPT on a bad size, version, type or
 * header CRC. */
int store_hdr_decode(raft_index index, const uint8_t *in, size_t len, struct store_hdr *h);
uint32_t store_crc(const void *data, size_t len);
/* Reads the header of index with get_flags (0 or DB_READ_UNCOMMITTED). */
int store_hdr_get(struct store *s, raft_index index, uint32_t get_flags, struct store_hdr *h);
/* Reads and verifies the payload described by h into a new blob (NULL for len 0 when
 * want_empty_blob is false). */
int store_payload_get(struct store *s, raft_index index, const struct store_hdr *h,
                      uint32_t get_flags, bool want_empty_blob, struct raft_blob **out);

/* ---- payload segment files (store_seg.c) ---- */

/* Opens every segment in dir (creating the first one), syncs the current one so that all its
 * bytes count as durable. ERR_IO, ERR_NOMEM. */
int store_seg_open(struct store *s, const char *dir, char *err, size_t err_len);
/* Stops the syncer, closes the files. Safe on a partly opened store. */
void store_seg_close(struct store *s);
/* Reads len bytes at pos into buf: ERR_NOTFOUND when the segment was dropped (below every
 * kept one), ERR_CORRUPT when missing otherwise or short, ERR_IO. Any thread. */
int store_seg_read(struct store *s, struct store_segpos pos, uint32_t len, uint8_t *buf, char *msg,
                   size_t msg_len);
/* Writes every payload of jobs at the current end (rolling as needed) and fills
 * s->segs.pos[] (one per entry, in order; empty payloads get the end position). *durable:
 * the end before the batch (durable, see the invariants); *wrote: payload bytes written.
 * On an error the end goes back (the bytes are garbage to overwrite). An errno. */
int store_seg_append(struct store *s, struct store_job *jobs, struct store_segpos *durable,
                     uint64_t *wrote);
/* After a batch: writes zeros ahead of the end (a MiB at a time, up to the roll size) so that
 * the next batches overwrite allocated blocks. An errno, logged once per streak of failures
 * (the batch is already durable; a failure only means later batches append). */
int store_seg_prepare(struct store *s);
/* Starts the current segment's fdatasync on the syncer thread; store_seg_sync_wait waits for
 * it (an errno). Exactly one wait per start, before the next batch writes. */
int store_seg_sync_start(struct store *s);
int store_seg_sync_wait(struct store *s);
/* Puts the "segsync" record (durable segment position before this batch) in txn. */
int store_seg_put_durable(struct store *s, DB_TXN *txn, struct store_segpos pos);
/* Drops every segment below the one the first log.db record names (all but the current
 * one when log.db is empty): out of files[] at once, closed and unlinked later by the
 * reaper thread. Call after the deleting transaction commits. */
void store_seg_drop_compacted(struct store *s);
/* Starts a new current segment and drops every other one (store_reset_sync: no header
 * names any of them any more). An ERR_*. */
int store_seg_drop_all(struct store *s);
/* At open: truncates the log from the first entry beyond the snapshot point, at or after the
 * recorded durable position, whose payload is missing or fails its CRC (a batch whose BDB
 * commit became durable but whose segment sync did not: never acknowledged). ERR_*. */
int store_seg_recover(struct store *s, char *err, size_t err_len);
/* Testing only: segments roll at bytes instead of STORE_SEG_MAX_BYTES (0: the default). */
void store_seg_set_max(struct store *s, uint64_t bytes);
/* Testing only: hook(ctx, seq) runs on the reaper thread before it removes segment seq (a
 * test blocks in it to show that commits do not wait for removals). NULL: none. */
void store_seg_set_reap_hook(struct store *s, void (*hook)(void *ctx, uint64_t seq), void *ctx);
/* Waits until every dropped segment has been closed and unlinked (tests; any thread). */
void store_seg_reap_wait(struct store *s);
/* Deletes every key >= from in db (store_log.c; a BDB return code). */
int store_truncate_db(DB *db, DB_TXN *txn, raft_index from);

/* ---- snapshot point and compaction (store_snap.c) ---- */

/* Reads the "snapshot" record: *found false when absent. ERR_CORRUPT on a bad size, version
 * or CRC (message in msg), ERR_IO. conf_out (may be NULL) gets the decoded configuration,
 * ERR_CORRUPT when it does not decode. */
int store_snap_read(struct store *s, bool *found, raft_index *index, raft_term *term,
                    struct raft_configuration *conf_out, char *msg, size_t msg_len);
/* Puts the "snapshot" record in txn (a BDB return code). */
int store_snap_put(struct store *s, DB_TXN *txn, raft_index index, raft_term term,
                   const struct raft_blob *conf);
/* Deletes, in txn, log and payload records of the first entries <= upto: at most max_n
 * entries or max_bytes payload bytes (at least one entry). *more: entries <= upto may
 * remain. *n, *bytes: what was deleted. A BDB return code. */
int store_compact_front(struct store *s, DB_TXN *txn, raft_index upto, uint64_t max_n,
                        uint64_t max_bytes, bool *more, uint64_t *n, uint64_t *bytes);
/* One deletion transaction of carried-over compaction (writing thread, nothing else in
 * flight), committed without a log flush: losing it in a crash leaves leftovers that are
 * skipped and deleted again. Updates s->pos.compact_pending and the stats. ERR_* (logged). */
int store_compact_step(struct store *s);
/* Publishes s->pos's snapshot point for store_snapshot_info and counts deletions. */
void store_pos_publish(struct store *s, uint64_t compacted);

/* Writes jobs (a NULL-terminated list) in one transaction committed with DB_TXN_SYNC,
 * retrying on deadlock; updates s->pos and the stats. Does not free the jobs. */
int store_commit_batch(struct store *s, struct store_job *jobs);
/* Drops the blob references (entries, snap_conf) and the entry array of w. */
void store_write_release(struct store_write *w);
/* How long store_yield (BDB's replacement for its own sleeps, set by store_open for the whole
 * process) waits when BDB asks for secs + usecs: the same, capped at 10 ms. */
uint64_t store_yield_us(unsigned long secs, unsigned long usecs);
/* txn_checkpoint if at least min_kbytes of log were written since the last one. */
void store_checkpoint(struct store *s, uint32_t min_kbytes);
/* Bytes of BDB log written since the last checkpoint, by anyone (0 when unknown). */
uint64_t store_log_bytes_since_ckpt(struct store *s);

#endif
