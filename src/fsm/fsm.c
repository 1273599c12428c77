/* fsm.c — the replicated file store: applies committed entries in log order (BDB metadata +
 * files/), serves reads, and checkpoints. Outcomes come from BDB state only, never from what
 * is in files/, so every node and every replay computes the same ones (see fsm.h). */
#include "fsm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsm_db.h"
#include "fsm_files.h"
#include "fsm_int.h"
#include "fsm_sha256.h"
#include "jitter.h"
#include "fspath.h"
#include "log.h"
#include "rassert.h"

static uint64_t fsm_now_us(void);

static void *fsm_ckpt_main(void *arg)
{
    struct fsm *f = arg;
    uint64_t rng = jitter_seed(fsm_now_us() ^ (uint64_t)getpid(), (uintptr_t)f);
    pthread_mutex_lock(&f->thr_lock);
    while (!f->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        /* interval_ms on average, anywhere in [0.5, 1.5) of it (jitter.h: nodes started
         * together must not syncfs in step; 64-connection runs had most commit stalls over
         * 10 ms on whole seconds, every node flushing at once). */
        uint64_t wait_ms = jitter_between(&rng, f->interval_ms / 2, f->interval_ms * 3ull / 2 + 1);
        uint64_t ns = (uint64_t)ts.tv_nsec + wait_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        while (!f->stop && !f->kick)
            if (pthread_cond_timedwait(&f->thr_cond, &f->thr_lock, &ts) != 0) break; /* timed out */
        if (f->stop) break;
        f->kick = false;
        pthread_mutex_unlock(&f->thr_lock);
        int rv = fsm_checkpoint_sync(f);
        if (rv) LOG_WARN("file store checkpoint failed: %s", err_str(rv));
        pthread_mutex_lock(&f->thr_lock);
    }
    pthread_mutex_unlock(&f->thr_lock);
    return NULL;
}

static void fsm_free(struct fsm *f)
{
    pthread_mutex_destroy(&f->ckpt_lock);
    pthread_mutex_destroy(&f->thr_lock);
    pthread_mutex_destroy(&f->trash_lock);
    pthread_cond_destroy(&f->thr_cond);
    free(f);
}

int fsm_open(DB_ENV *env, const char *node_dir, struct fsm **out, char *err, size_t err_len)
{
    struct fsm_options o = {.spare_target = FSM_SPARE_TARGET, .checkpoint_interval_ms = 1000};
    return fsm_open_opts(env, node_dir, &o, out, err, err_len);
}

int fsm_open_opts(DB_ENV *env, const char *node_dir, const struct fsm_options *opts,
                  struct fsm **out, char *err, size_t err_len)
{
    ASSERT(env && node_dir && opts && out && err && err_len > 0);
    err[0] = '\0';
    *out = NULL;
    struct fsm *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, err_len, "out of memory");
        return ERR_NOMEM;
    }
    pthread_mutex_init(&f->ckpt_lock, NULL);
    pthread_mutex_init(&f->thr_lock, NULL);
    pthread_cond_init(&f->thr_cond, NULL);
    pthread_mutex_init(&f->trash_lock, NULL);
    raft_index a = 0, c = 0;
    int rv = 0;
    if (snprintf(f->node_dir, sizeof f->node_dir, "%s", node_dir) >= (int)sizeof f->node_dir) {
        snprintf(err, err_len, "node dir path too long: %s", node_dir);
        rv = ERR_INVALID;
    }
    if (rv == 0) rv = fsm_db_open(&f->db, env, err, err_len);
    /* A snapshot install cut short by a crash is finished before files/ is opened. */
    if (rv == 0) rv = fsm_snap_recover(f, err, err_len);
    if (rv == 0) rv = fsm_db_get_index(f->db.state, NULL, "applied", &a);
    if (rv == 0) rv = fsm_db_get_index(f->db.ckpt, NULL, "checkpoint", &c);
    if (rv == 0 && !err[0])
        rv = fsm_files_open(&f->ff, node_dir, opts->spare_target, err, err_len);
    else if (rv && !err[0])
        snprintf(err, err_len, "reading the file store's state: %s", err_str(rv));
    f->interval_ms = opts->checkpoint_interval_ms;
    if (rv == 0 && f->interval_ms > 0 && pthread_create(&f->ckpt_thread, NULL, fsm_ckpt_main, f)) {
        snprintf(err, err_len, "cannot start the checkpoint thread");
        fsm_files_close(&f->ff);
        rv = ERR_NOMEM;
    }
    if (rv) {
        fsm_snap_shutdown(f);
        fsm_db_close(&f->db);
        fsm_free(f);
        return rv;
    }
    /* C <= A always holds (the WAL is sequential); min() is the safe side if it did not. */
    raft_index start = c < a ? c : a;
    f->bdb_applied = a;
    atomic_store(&f->applied, start);
    atomic_store(&f->checkpointed, start);
    LOG_INFO("file store: metadata at index %llu, checkpoint %llu: replay from %llu",
             (unsigned long long)a, (unsigned long long)c, (unsigned long long)start + 1);
    *out = f;
    return 0;
}

void fsm_close(struct fsm *f)
{
    if (!f) return;
    if (f->interval_ms > 0) {
        pthread_mutex_lock(&f->thr_lock);
        f->stop = true;
        pthread_cond_signal(&f->thr_cond);
        pthread_mutex_unlock(&f->thr_lock);
        pthread_join(f->ckpt_thread, NULL);
        int rv = fsm_checkpoint_sync(f);
        if (rv) LOG_WARN("file store: last checkpoint failed: %s", err_str(rv));
    }
    fsm_snap_shutdown(f);
    fsm_files_close(&f->ff);
    fsm_db_close(&f->db);
    fsm_free(f);
}

raft_index fsm_applied(struct fsm *f)
{
    return atomic_load(&f->applied);
}

raft_index fsm_checkpointed(struct fsm *f)
{
    return atomic_load(&f->checkpointed);
}

int fsm_checkpoint(struct fsm *f)
{
    if (f->interval_ms == 0) return fsm_checkpoint_sync(f);
    pthread_mutex_lock(&f->thr_lock);
    f->kick = true;
    pthread_cond_signal(&f->thr_cond);
    pthread_mutex_unlock(&f->thr_lock);
    return 0;
}

const double fsm_ckpt_bucket_le_ms[FSM_CKPT_BUCKETS] = {1,   5,   10,  25,   50,
                                                        100, 250, 500, 1000, 5000};

static uint64_t fsm_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* One checkpoint's duration into the histogram; a slow one is logged, to be matched with
 * client latency spikes (a syncfs writes back the whole file system, other processes' files
 * included, and the Raft log's fdatasync can wait behind it). */
static void fsm_ckpt_record(struct fsm *f, uint64_t us, raft_index from, raft_index to)
{
    size_t b = 0;
    while (b < FSM_CKPT_BUCKETS && (double)us > fsm_ckpt_bucket_le_ms[b] * 1000.0)
        b++;
    atomic_fetch_add(&f->ckpt_hist[b], 1);
    atomic_fetch_add(&f->ckpt_us_sum, us);
    if (us >= 250000)
        LOG_INFO("file store: slow checkpoint: %.0f ms for entries %llu..%llu", (double)us / 1e3,
                 (unsigned long long)from + 1, (unsigned long long)to);
}

int fsm_checkpoint_sync(struct fsm *f)
{
    pthread_mutex_lock(&f->ckpt_lock);
    /* Read before syncfs: every file write of entries <= i finished before applied became i. */
    raft_index i = atomic_load(&f->applied);
    int rv = 0;
    raft_index c = atomic_load(&f->checkpointed);
    if (i != c) {
        uint64_t t0 = fsm_now_us();
        rv = fsm_files_sync(&f->ff);
        DB_TXN *txn = NULL;
        if (rv == 0) rv = fsm_db_begin(&f->db, &txn);
        if (rv == 0) {
            rv = fsm_db_put_index(f->db.ckpt, txn, "checkpoint", i);
            if (rv == 0)
                rv = fsm_db_commit(txn, true);
            else
                fsm_db_abort(txn);
        }
        if (rv == 0) atomic_store(&f->checkpointed, i);
        fsm_ckpt_record(f, fsm_now_us() - t0, c, i);
    }
    pthread_mutex_unlock(&f->ckpt_lock);
    return rv;
}

/* PUT at index i inside txn: outcome from metadata, then the file, then metadata (read and
 * written through one cursor: one search). */
static int fsm_apply_put_at(struct fsm *f, DB_TXN *txn, DBC *mc, raft_index i,
                            const struct fsm_cmd *c, const char *path, struct fsm_result *res)
{
    int rv;
    /* The metadata never holds a file and a directory of the same name, so only a new path
     * can conflict. */
    if (res->created) {
        rv = fsm_db_meta_conflict(&f->db, txn, path, c->path_len);
        if (rv == ERR_EXISTS) {
            res->status = ERR_EXISTS;
            res->created = false;
            return 0;
        }
        if (rv) return rv;
    }
    struct fsm_meta m = {.size = c->body_len, .index = i};
    fsm_sha256(c->body, c->body_len, m.sha256);
    rv = fsm_files_put(&f->ff, path, c->path_len, c->body, c->body_len);
    if (rv == 0) rv = fsm_db_meta_put_at(mc, !res->created, path, c->path_len, &m);
    res->size = m.size;
    memcpy(res->sha256, m.sha256, FSM_SHA256_LEN);
    return rv;
}

static int fsm_apply_put(struct fsm *f, DB_TXN *txn, raft_index i, const struct fsm_cmd *c,
                         const char *path, struct fsm_result *res)
{
    res->index = i;
    struct fsm_meta m = {0};
    DBC *mc = NULL;
    int rv = fsm_db_meta_get_rmw(&f->db, txn, path, c->path_len, &m, &mc);
    if (rv && rv != ERR_NOTFOUND) return rv;
    res->created = rv == ERR_NOTFOUND;
    rv = fsm_apply_put_at(f, txn, mc, i, c, path, res);
    fsm_db_cursor_close(mc);
    return rv;
}

static int fsm_apply_delete(struct fsm *f, DB_TXN *txn, raft_index i, const struct fsm_cmd *c,
                            const char *path, struct fsm_result *res)
{
    res->index = i;
    struct fsm_meta m;
    int rv = fsm_db_meta_get(&f->db, txn, path, c->path_len, &m);
    if (rv == ERR_NOTFOUND) {
        res->status = ERR_NOTFOUND;
        return 0; /* files/path may exist only ahead of BDB after a crash: replay fixes it */
    }
    if (rv == 0) rv = fsm_files_remove(&f->ff, path, c->path_len);
    if (rv == 0) rv = fsm_db_meta_del(&f->db, txn, path, c->path_len);
    return rv;
}

/* An id recorded at an earlier index inside the window is a duplicate: decided from BDB state
 * and the index alone, so pruning lag changes nothing. */
static bool fsm_is_duplicate(const struct fsm_result *rec, raft_index i)
{
    return rec->index < i && rec->index + FSM_DEDUP_WINDOW >= i;
}

/* A NORMAL entry beyond A, inside the batch's transaction (meta and dedup). */
static int fsm_apply_normal(struct fsm *f, DB_TXN *txn, raft_index i, const struct fsm_cmd *c,
                            const char *path, struct fsm_result *res)
{
    int rv = fsm_db_dedup_get(&f->db, txn, c->req_id, res);
    if (rv == 0 && fsm_is_duplicate(res, i)) {
        res->duplicate = true;
        return 0;
    }
    if (rv && rv != ERR_NOTFOUND) return rv;
    memset(res, 0, sizeof *res);
    rv = c->op == FSM_CMD_PUT ? fsm_apply_put(f, txn, i, c, path, res)
                              : fsm_apply_delete(f, txn, i, c, path, res);
    if (rv == 0) rv = fsm_db_dedup_put_raw(&f->db, txn, c->req_id, res);
    return rv;
}

raft_index fsm_dedup_keep_from(const struct fsm *f)
{
    if (!f->reader_min) return 0;
    return f->reader_min + 1 > FSM_DEDUP_WINDOW ? f->reader_min + 1 - FSM_DEDUP_WINDOW : 1;
}

/* The sender's outcome of window entry i is known: recorded at i (the stream caught it),
 * status 0 means it changed its path there. Done again here only when the stream holds the
 * path as of an earlier entry (or not at all): the path rule. A PUT that now conflicts with a
 * path the stream caught later is superseded by that path (see fsm.h). */
static int fsm_window_replay(struct fsm *f, DB_TXN *txn, raft_index i, const struct fsm_cmd *c,
                             const char *path, const struct fsm_result *rec, bool newer,
                             struct fsm_result *res)
{
    *res = *rec;
    if (rec->status != 0 || newer) return 0;
    struct fsm_result tmp = {0};
    return c->op == FSM_CMD_PUT ? fsm_apply_put(f, txn, i, c, path, &tmp)
                                : fsm_apply_delete(f, txn, i, c, path, &tmp);
}

/* A NORMAL entry in (S, S_end] of the last installed snapshot, beyond A: the fuzzy window
 * rule (fsm.h). */
static int fsm_apply_window(struct fsm *f, DB_TXN *txn, raft_index i, const struct fsm_cmd *c,
                            const char *path, struct fsm_result *res)
{
    struct fsm_result rec;
    int rv = fsm_db_dedup_get(&f->db, txn, c->req_id, &rec);
    if (rv && rv != ERR_NOTFOUND) return rv;
    bool have = rv == 0;
    /* A record from after i: the id was applied again later inside the window, which (with
     * S_end - S <= the dedup window) means entry i itself was a duplicate. */
    if (have && (rec.index > i || fsm_is_duplicate(&rec, i))) {
        *res = rec;
        res->duplicate = true;
        return 0;
    }
    struct fsm_meta m;
    rv = fsm_db_meta_get(&f->db, txn, path, c->path_len, &m);
    if (rv && rv != ERR_NOTFOUND) return rv;
    bool newer = rv == 0 && m.index >= i; /* the stream caught this path as of i or later */
    if (have && rec.index == i) return fsm_window_replay(f, txn, i, c, path, &rec, newer, res);
    memset(res, 0, sizeof *res);
    res->index = i;
    if (newer) {
        /* Not caught by the stream's dedup records (not expected): the path holds i's effect
         * or a later one already. */
        res->size = m.size;
        memcpy(res->sha256, m.sha256, FSM_SHA256_LEN);
        rv = 0;
    } else {
        rv = c->op == FSM_CMD_PUT ? fsm_apply_put(f, txn, i, c, path, res)
                                  : fsm_apply_delete(f, txn, i, c, path, res);
    }
    if (rv == 0) rv = fsm_db_dedup_put_raw(&f->db, txn, c->req_id, res);
    return rv;
}

/* A NORMAL entry at or below A: BDB already holds its effect; only files/ may lag. Redo the
 * file side so it matches A's metadata, which later entries then carry forward. */
static int fsm_apply_redo(struct fsm *f, raft_index i, const struct fsm_cmd *c, const char *path,
                          struct fsm_result *res)
{
    int rv = fsm_db_dedup_get(&f->db, NULL, c->req_id, res);
    if (rv == 0)
        res->duplicate = res->index != i;
    else if (rv == ERR_NOTFOUND)
        res->index = i; /* pruned: nobody can be waiting for an outcome this old */
    else
        return rv;
    struct fsm_meta m;
    rv = fsm_db_meta_get(&f->db, NULL, path, c->path_len, &m);
    if (rv && rv != ERR_NOTFOUND) return rv;
    if (c->op == FSM_CMD_PUT && rv == 0 && m.index == i)
        return fsm_files_put(&f->ff, path, c->path_len, c->body, c->body_len);
    if (c->op == FSM_CMD_DELETE && rv == ERR_NOTFOUND)
        return fsm_files_remove(&f->ff, path, c->path_len);
    return 0;
}

/* One entry; NORMAL entries beyond A join *txn (begun on first use). */
static int fsm_apply_one(struct fsm *f, DB_TXN **txn, const struct raft_entry *e,
                         struct fsm_result *res)
{
    ASSERT(e->index > 0);
    memset(res, 0, sizeof *res);
    res->index = e->index;
    if (e->type != RAFT_ENTRY_NORMAL) return 0;
    struct fsm_cmd c;
    const struct raft_blob *b = e->data;
    int rv = b ? fsm_cmd_decode(b->data, b->len, &c) : ERR_CORRUPT;
    if (rv) {
        LOG_ERROR("fsm: entry %llu: undecodable command", (unsigned long long)e->index);
        return rv;
    }
    char path[FSPATH_MAX + 1];
    memcpy(path, c.path, c.path_len);
    path[c.path_len] = '\0';
    if (e->index <= f->bdb_applied) return fsm_apply_redo(f, e->index, &c, path, res);
    if (!*txn && (rv = fsm_db_begin(&f->db, txn)) != 0) return rv;
    if (f->snap.present && e->index > f->snap.index && e->index <= f->snap.index_end)
        return fsm_apply_window(f, *txn, e->index, &c, path, res);
    return fsm_apply_normal(f, *txn, e->index, &c, path, res);
}

int fsm_apply_batch(struct fsm *f, const struct raft_entry *es, size_t n, struct fsm_result *res)
{
    ASSERT(f && (es || n == 0) && (res || n == 0));
    DB_TXN *txn = NULL;
    raft_index last_normal = 0;
    size_t n_normal = 0; /* entries that joined txn: each recorded its id */
    int rv = 0;
    for (size_t k = 0; k < n && rv == 0; k++) {
        ASSERT(k == 0 || es[k].index > es[k - 1].index);
        rv = fsm_apply_one(f, &txn, &es[k], &res[k]);
        if (rv == 0 && txn && es[k].type == RAFT_ENTRY_NORMAL) {
            last_normal = es[k].index;
            n_normal++;
        }
    }
    if (txn) {
        /* Ids recorded above are pruned once for the batch (one cursor instead of one per
         * entry), as many as pruning per entry would have: nothing of the batch still needs
         * a record older than the window of its last entry. */
        if (rv == 0)
            rv = fsm_db_dedup_prune(&f->db, txn, last_normal, fsm_dedup_keep_from(f),
                                    FSM_DEDUP_PRUNE_MAX * n_normal);
        /* A moves with the metadata of the whole batch, atomically; on any failure nothing
         * of the batch reaches BDB (files/ may be ahead: the replay after the restart fixes
         * it, exactly as after a crash). */
        if (rv == 0) rv = fsm_db_put_index(f->db.state, txn, "applied", last_normal);
        if (rv) {
            fsm_db_abort(txn);
            return rv;
        }
        rv = fsm_db_commit(txn, false);
        if (rv) return rv;
        f->bdb_applied = last_normal;
    }
    /* Advanced only now: a checkpoint must never cover metadata that may still abort. */
    if (rv == 0 && n > 0 && es[n - 1].index > atomic_load(&f->applied))
        atomic_store(&f->applied, es[n - 1].index);
    return rv;
}

int fsm_apply(struct fsm *f, const struct raft_entry *e, struct fsm_result *res)
{
    ASSERT(f && e && res);
    return fsm_apply_batch(f, e, 1, res);
}

static int fsm_path_check(const char *path, size_t *len)
{
    if (!path) return ERR_INVALID;
    *len = strnlen(path, FSPATH_MAX + 1);
    return fspath_validate(path, *len, NULL, 0);
}

int fsm_stat(struct fsm *f, const char *path, struct fsm_meta *out)
{
    size_t len;
    int rv = fsm_path_check(path, &len);
    return rv ? rv : fsm_db_meta_get(&f->db, NULL, path, len, out);
}

int fsm_open_read(struct fsm *f, const char *path, int *fd_out, struct fsm_meta *meta)
{
    size_t len;
    int rv = fsm_path_check(path, &len);
    if (rv == 0) rv = fsm_db_meta_get(&f->db, NULL, path, len, meta);
    int fd = -1;
    bool have_meta = rv == 0;
    if (rv == 0) rv = fsm_files_open_read(&f->ff, path, len, &fd);
    if (rv == ERR_NOTFOUND && have_meta)
        rv = ERR_BUSY; /* metadata without its file: a crash replay is still running */
    if (rv) return rv;
    /* Same thread as apply, so files/path matches its metadata, except while a crash replay
     * still runs (files/ ahead of BDB): the size tells. */
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0 || (uint64_t)size != meta->size || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return ERR_BUSY;
    }
    *fd_out = fd;
    return 0;
}

int fsm_list(struct fsm *f, const char *prefix,
             int (*cb)(void *ctx, const char *path, const struct fsm_meta *m), void *ctx)
{
    ASSERT(f && cb);
    return fsm_db_meta_list(&f->db, prefix, cb, ctx);
}

void fsm_get_stats(struct fsm *f, struct fsm_stats *out)
{
    out->inodes_created = f->ff.created;
    out->inodes_precreated = f->ff.precreated;
    out->inodes_recycled = f->ff.recycled;
    out->inodes_pinned = f->ff.pinned;
    out->overwrites_in_place = f->ff.in_place;
    for (size_t b = 0; b <= FSM_CKPT_BUCKETS; b++)
        out->ckpt_hist[b] = atomic_load(&f->ckpt_hist[b]);
    out->ckpt_us_sum = atomic_load(&f->ckpt_us_sum);
    out->spares = fsm_files_pool_size(&f->ff);
}
