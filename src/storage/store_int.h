/* store_int.h — what store.c, store_log.c and writer.c share inside src/storage: the store
 * object, the record codecs and the batch transaction. Never included outside src/storage. */
#ifndef RAFTFS_STORE_INT_H
#define RAFTFS_STORE_INT_H

#include <pthread.h>

#include "storage.h"

#define STORE_HDR_BYTES 24  /* log.db value */
#define STORE_HS_BYTES 28   /* meta.db "hardstate" value */
#define STORE_REC_VERSION 1 /* header format version */
#define STORE_ERRMSG_BYTES 256

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

struct store {
    DB_ENV *env;
    bool env_open;        /* env->open succeeded */
    DB *log;              /* index -> header */
    DB *payload;          /* index -> payload bytes */
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
    uint32_t payload_crc;
};

/* BDB return code -> ERR_*; logs "what: db_strerror" and copies it to msg when non-NULL. */
int store_bdb_err(int ret, const char *what, char *msg, size_t msg_len);
void store_put_le(uint8_t *p, uint64_t v, int n);
uint64_t store_get_le(const uint8_t *p, int n);
void store_key(raft_index index, uint8_t key[8]);
raft_index store_key_index(const uint8_t key[8]);
void store_hdr_encode(raft_index index, const struct store_hdr *h, uint8_t out[STORE_HDR_BYTES]);
/* ERR_CORRUPT on a bad version, type or header CRC. */
int store_hdr_decode(raft_index index, const uint8_t in[STORE_HDR_BYTES], struct store_hdr *h);
uint32_t store_crc(const void *data, size_t len);
/* Reads the header of index with get_flags (0 or DB_READ_UNCOMMITTED). */
int store_hdr_get(struct store *s, raft_index index, uint32_t get_flags, struct store_hdr *h);
/* Reads and verifies the payload described by h into a new blob (NULL for len 0 when
 * want_empty_blob is false). */
int store_payload_get(struct store *s, raft_index index, const struct store_hdr *h,
                      uint32_t get_flags, bool want_empty_blob, struct raft_blob **out);

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

/* One queued write inside the writer (also used by store_write_sync). */
struct store_job {
    struct store_job *next;
    struct store_write w;
    int err;
};

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
