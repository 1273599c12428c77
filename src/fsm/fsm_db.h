/* fsm_db.h — internal: the file store's Berkeley DB tables (metadata, dedup, indexes). Knows
 * nothing of files/. Every function takes the caller's transaction (NULL: autocommit read). */
#ifndef RAFTFS_FSM_DB_H
#define RAFTFS_FSM_DB_H

#include <stddef.h>
#include <stdint.h>

#include "fsm.h"

struct fsm_db {
    DB_ENV *env;
    DB *meta;     /* path bytes -> meta record */
    DB *dedup;    /* request id -> dedup record (index + outcome) */
    DB *dedupidx; /* big-endian index -> request id: prunes dedup in index order */
    DB *state;    /* "applied" -> big-endian index (A, in every apply transaction) */
    DB *ckpt;     /* "checkpoint" -> big-endian index (C, written by fsm_checkpoint only) */
};

int fsm_db_open(struct fsm_db *d, DB_ENV *env, char *err, size_t err_len);
void fsm_db_close(struct fsm_db *d);

int fsm_db_begin(struct fsm_db *d, DB_TXN **txn);
/* Commits (sync: durably, else DB_TXN_NOSYNC); aborts on failure. */
int fsm_db_commit(DB_TXN *txn, bool sync);
void fsm_db_abort(DB_TXN *txn);

/* Index under key in db (state or ckpt); 0 when absent. */
int fsm_db_get_index(DB *db, DB_TXN *txn, const char *key, raft_index *out);
int fsm_db_put_index(DB *db, DB_TXN *txn, const char *key, raft_index v);

int fsm_db_meta_get(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    struct fsm_meta *out);
int fsm_db_meta_put(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    const struct fsm_meta *m);
int fsm_db_meta_del(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len);
/* ERR_EXISTS when a proper prefix component of path is a file, or path is the directory of
 * some file ("path/..." exists); 0 otherwise. */
int fsm_db_meta_conflict(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len);
int fsm_db_meta_list(struct fsm_db *d, const char *prefix,
                     int (*cb)(void *ctx, const char *path, const struct fsm_meta *m), void *ctx);

/* The outcome recorded for req_id: 0 with *res filled (res->index = the original entry),
 * ERR_NOTFOUND when none. */
int fsm_db_dedup_get(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id, struct fsm_result *res);
/* Records res as the outcome of req_id at res->index and prunes ids older than the window. */
int fsm_db_dedup_put(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id,
                     const struct fsm_result *res);

#endif
