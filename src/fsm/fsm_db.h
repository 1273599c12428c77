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
/* Only the three tables a snapshot replaces (meta, dedup, dedupidx), in files named
 * prefix + "meta.db" etc. ("fsm_": the live ones). */
int fsm_db_open_tables(struct fsm_db *d, DB_ENV *env, const char *prefix, char *err,
                       size_t err_len);
void fsm_db_close_tables(struct fsm_db *d);
/* Inside txn (NULL: each on its own); absent files are fine. Handles must be closed. */
int fsm_db_remove_tables(DB_ENV *env, DB_TXN *txn, const char *prefix);
int fsm_db_rename_tables(DB_ENV *env, DB_TXN *txn, const char *from, const char *to);

int fsm_db_begin(struct fsm_db *d, DB_TXN **txn);
/* Commits (sync: durably, else DB_TXN_NOSYNC); aborts on failure. */
int fsm_db_commit(DB_TXN *txn, bool sync);
void fsm_db_abort(DB_TXN *txn);

/* Index under key in db (state or ckpt); 0 when absent. */
int fsm_db_get_index(DB *db, DB_TXN *txn, const char *key, raft_index *out);
int fsm_db_put_index(DB *db, DB_TXN *txn, const char *key, raft_index v);

/* A record of at most cap bytes under key; *len its size. ERR_NOTFOUND, ERR_CORRUPT (too big). */
int fsm_db_get_var(DB *db, DB_TXN *txn, const char *key, void *buf, size_t cap, size_t *len);
int fsm_db_put_var(DB *db, DB_TXN *txn, const char *key, const void *v, size_t len);

int fsm_db_meta_get(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    struct fsm_meta *out);
int fsm_db_meta_put(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    const struct fsm_meta *m);
/* A read-modify-write of path's record in txn with one search: fsm_db_meta_get_rmw reads it
 * (0 or ERR_NOTFOUND) through a cursor that takes the write lock at once and is left in *cur,
 * positioned on the record when found; fsm_db_meta_put_at then writes there (found) or
 * inserts. Other errors leave *cur NULL. Close *cur with fsm_db_cursor_close (NULL is fine)
 * before txn ends. */
int fsm_db_meta_get_rmw(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                        struct fsm_meta *out, DBC **cur);
int fsm_db_meta_put_at(DBC *cur, bool found, const char *path, size_t len,
                       const struct fsm_meta *m);
void fsm_db_cursor_close(DBC *cur);
int fsm_db_meta_del(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len);
/* ERR_EXISTS when a proper prefix component of path is a file, or path is the directory of
 * some file ("path/..." exists); 0 otherwise. */
int fsm_db_meta_conflict(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len);
int fsm_db_meta_list(struct fsm_db *d, const char *prefix,
                     int (*cb)(void *ctx, const char *path, const struct fsm_meta *m), void *ctx);

/* The outcome recorded for req_id: 0 with *res filled (res->index = the original entry),
 * ERR_NOTFOUND when none. */
int fsm_db_dedup_get(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id, struct fsm_result *res);
/* Records res as the outcome of req_id at res->index and prunes ids older than the window,
 * never one at an index >= keep_from (0: no such bound). */
int fsm_db_dedup_put(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id,
                     const struct fsm_result *res, raft_index keep_from);
/* Old ids dropped per record added: > 1 so pruning always catches up. */
#define FSM_DEDUP_PRUNE_MAX 8
/* Forgets at most max ids applied before index - FSM_DEDUP_WINDOW (and before keep_from, 0: no
 * such bound), oldest first. Pruning lag changes no outcome (a record outside the window is
 * no duplicate), so a batch of applies may prune once for all its records. */
int fsm_db_dedup_prune(struct fsm_db *d, DB_TXN *txn, raft_index index, raft_index keep_from,
                       size_t max);
/* The same without pruning (a batch of applies, staging a snapshot). */
int fsm_db_dedup_put_raw(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id,
                         const struct fsm_result *res);
/* The first path after `after` (NULL: the first path), NUL-terminated into path (room for
 * FSPATH_MAX + 1 bytes), with its metadata. No cursor outlives the call. ERR_NOTFOUND at the
 * end. */
int fsm_db_meta_next(struct fsm_db *d, const char *after, size_t after_len, char *path, size_t *len,
                     struct fsm_meta *m);
/* The shortest proper prefix of path (ending before a '/') that is a file: *plen and its
 * metadata; ERR_NOTFOUND when none. */
int fsm_db_meta_prefix_file(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                            size_t *plen, struct fsm_meta *m);
/* The first dedup index entry at or after `from`: its index and request id (the id's record
 * may since have moved to a later index). ERR_NOTFOUND at the end. */
int fsm_db_dedup_walk(struct fsm_db *d, raft_index from, raft_index *index,
                      uint8_t req_id[FSM_REQ_ID_LEN]);

#endif
