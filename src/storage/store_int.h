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

struct store {
    DB_ENV *env;
    bool env_open; /* env->open succeeded */
    DB *log;       /* index -> header */
    DB *payload;   /* index -> payload bytes */
    DB *meta;      /* "hardstate" -> term, vote, commit */
    /* The durable log's end, as seen by the writing thread (the writer, or the caller of
     * store_write_sync before it starts). */
    raft_index last_index;
    bool writer_running;
    int (*commit_hook)(void *ctx);
    void *commit_hook_ctx;
    pthread_mutex_t stats_mu; /* guards stats: written by the writer, read by anyone */
    struct store_stats stats;
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

/* One queued write inside the writer (also used by store_write_sync). */
struct store_job {
    struct store_job *next;
    struct store_write w;
    int err;
};

/* Writes jobs (a NULL-terminated list) in one transaction committed with DB_TXN_SYNC,
 * retrying on deadlock; updates s->last_index and the stats. Does not free the jobs. */
int store_commit_batch(struct store *s, struct store_job *jobs);
/* Drops the blob references and the entry array of w. */
void store_write_release(struct store_write *w);
/* txn_checkpoint if at least min_kbytes of log were written since the last one. */
void store_checkpoint(struct store *s, uint32_t min_kbytes);

#endif
