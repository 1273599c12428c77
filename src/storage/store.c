/* store.c — the BDB environment behind raftfs's Raft state: open/recover, close, error
 * translation, hardstate and stats. Never commits synchronously on behalf of other modules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "rassert.h"
#include "rcrc32.h"
#include "store_int.h"

/* Memory is the budget that matters (a node idles at <= 10 MiB): a small cache is enough
 * because the log is written once, read back rarely and scanned only at boot. */
#define STORE_CACHE_BYTES (4u << 20)
#define STORE_LOG_BUF_BYTES (512u << 10)
/* BDB wants log files >= 4x the buffer. A 64 MiB payload is logged page by page (overflow
 * pages), so no single log record comes near this size. */
#define STORE_LOG_FILE_BYTES (16u << 20)
#define STORE_LOCKS_MAX 20000
#define STORE_PAYLOAD_PAGE_BYTES 16384 /* version-1 payload.db (read only) */

const double store_fsync_bucket_le_us[STORE_FSYNC_BUCKETS] = {
    50, 100, 200, 300, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 500000, 1000000};

int store_bdb_err(int ret, const char *what, char *msg, size_t msg_len)
{
    ASSERT(ret != 0);
    int code;
    switch (ret) {
    case DB_NOTFOUND:
    case DB_KEYEMPTY:
        code = ERR_NOTFOUND;
        break;
    case DB_RUNRECOVERY:
    case DB_VERIFY_BAD:
        code = ERR_CORRUPT;
        break;
    case ENOSPC:
        code = ERR_NOSPACE;
        break;
    case ENOMEM:
        code = ERR_NOMEM;
        break;
    default:
        code = ERR_IO;
    }
    if (code != ERR_NOTFOUND) LOG_ERROR("storage: %s: %s (%d)", what, db_strerror(ret), ret);
    if (msg && msg_len) snprintf(msg, msg_len, "%s: %s", what, db_strerror(ret));
    return code;
}

uint32_t store_crc(const void *data, size_t len)
{
    return rcrc32(0, data, len);
}

static void store_errcall_cb(const DB_ENV *env, const char *pfx, const char *msg)
{
    (void)env;
    (void)pfx;
    LOG_WARN("storage: bdb: %s", msg);
}

static int store_env_config(DB_ENV *e)
{
    e->set_errcall(e, store_errcall_cb);
    int ret = e->set_cachesize(e, 0, STORE_CACHE_BYTES, 1);
    if (ret == 0) ret = e->set_lg_bsize(e, STORE_LOG_BUF_BYTES);
    if (ret == 0) ret = e->set_lg_max(e, STORE_LOG_FILE_BYTES);
    /* Run the detector on every conflict: a deadlock returns DB_LOCK_DEADLOCK to one
     * transaction (the writer retries) instead of hanging a thread. */
    if (ret == 0) ret = e->set_lk_detect(e, DB_LOCK_DEFAULT);
    if (ret == 0) ret = e->set_lk_max_locks(e, STORE_LOCKS_MAX);
    if (ret == 0) ret = e->set_lk_max_objects(e, STORE_LOCKS_MAX);
    if (ret == 0) ret = e->log_set_config(e, DB_LOG_AUTO_REMOVE, 1);
    return ret;
}

/* BDB sleeps whole seconds where it waits for other threads: memp_sync (every checkpoint, on
 * the writer thread) before each new pass over dirty buffers another thread held exclusively
 * -- the file store's apply latches pages all the time on the loop thread --, and memp_alloc
 * when the cache is full of busy buffers. Each such second stalled every commit, so every
 * client write (seen as ~1 s p99 spikes under load, the writer found in __os_yield under
 * __memp_sync_int). Waiting at most this long and retrying serves the same purpose. */
#define STORE_YIELD_MAX_US 10000

uint64_t store_yield_us(unsigned long secs, unsigned long usecs)
{
    uint64_t us = (uint64_t)secs * 1000000u + usecs;
    return us > STORE_YIELD_MAX_US ? STORE_YIELD_MAX_US : us;
}

static int store_yield(u_long secs, u_long usecs)
{
    uint64_t us = store_yield_us(secs, usecs);
    if (us == 0) return sched_yield();
    struct timespec ts = {0, (long)us * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

static int store_env_open(struct store *s, const char *dir, char *err, size_t err_len)
{
    db_env_set_func_yield(store_yield); /* process-wide, idempotent */
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "mkdir %s: %s", dir, strerror(errno));
        return errno == ENOSPC ? ERR_NOSPACE : ERR_IO;
    }
    int ret = db_env_create(&s->env, 0);
    if (ret) return store_bdb_err(ret, "db_env_create", err, err_len);
    ret = store_env_config(s->env);
    if (ret) return store_bdb_err(ret, "configuring the environment", err, err_len);
    /* DB_PRIVATE: one process uses the environment, so its regions live in our heap (no
     * __db.* files to keep in sync) and recovery runs on every open. */
    uint32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_LOCK | DB_INIT_MPOOL |
                     DB_THREAD | DB_RECOVER | DB_PRIVATE;
    ret = s->env->open(s->env, dir, flags, 0600);
    if (ret) {
        char what[128];
        snprintf(what, sizeof what, "opening the environment in %.80s", dir);
        return store_bdb_err(ret, what, err, err_len);
    }
    s->env_open = true;
    return 0;
}

/* create false: *out stays NULL (and 0 is returned) when file does not exist. */
static int store_db_open(struct store *s, const char *file, uint32_t page_bytes, bool create,
                         DB **out, char *err, size_t err_len)
{
    DB *db = NULL;
    int ret = db_create(&db, s->env, 0);
    if (ret == 0) ret = db->set_flags(db, DB_CHKSUM);
    if (ret == 0 && page_bytes) ret = db->set_pagesize(db, page_bytes);
    /* DB_READ_UNCOMMITTED lets store_fetch read past the writer's page locks. */
    if (ret == 0)
        ret = db->open(db, NULL, file, NULL, DB_BTREE,
                       (create ? DB_CREATE : 0) | DB_AUTO_COMMIT | DB_THREAD | DB_READ_UNCOMMITTED,
                       0600);
    if (ret == ENOENT && !create) {
        db->close(db, 0);
        return 0;
    }
    if (ret) {
        if (db) db->close(db, 0);
        char what[64];
        snprintf(what, sizeof what, "opening %s", file);
        return store_bdb_err(ret, what, err, err_len);
    }
    *out = db;
    return 0;
}

/* The first (DB_FIRST) or last (DB_LAST) key of log.db: *index 0 when empty. */
static int store_edge_key(struct store *s, uint32_t op, raft_index *index, char *err,
                          size_t err_len)
{
    DBC *c = NULL;
    int ret = s->log->cursor(s->log, NULL, &c, 0);
    if (ret) return store_bdb_err(ret, "log cursor", err, err_len);
    uint8_t k[8];
    DBT key = {.data = k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL};
    ret = c->get(c, &key, &val, op);
    c->close(c);
    *index = 0;
    if (ret == DB_NOTFOUND) return 0;
    if (ret == 0 && key.size != sizeof k) ret = DB_BUFFER_SMALL;
    if (ret == DB_BUFFER_SMALL) {
        snprintf(err, err_len, "log.db: a key of bad size");
        return ERR_CORRUPT;
    }
    if (ret) return store_bdb_err(ret, "reading a log.db edge key", err, err_len);
    *index = store_key_index(k);
    return 0;
}

/* payload.db of a version-1 store: kept open only while it holds payloads (log.db may still
 * name them); a store created since version 2 has none. */
static int store_open_v1_payloads(struct store *s, char *err, size_t err_len)
{
    int rv =
        store_db_open(s, "payload.db", STORE_PAYLOAD_PAGE_BYTES, false, &s->payload, err, err_len);
    if (rv || !s->payload) return rv;
    DBC *c = NULL;
    int ret = s->payload->cursor(s->payload, NULL, &c, 0);
    if (ret) return store_bdb_err(ret, "payload.db cursor", err, err_len);
    DBT key = {.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL};
    DBT val = {.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL};
    ret = c->get(c, &key, &val, DB_FIRST);
    c->close(c);
    if (ret == DB_NOTFOUND) {
        s->payload->close(s->payload, 0);
        s->payload = NULL;
        return 0;
    }
    return ret ? store_bdb_err(ret, "reading payload.db", err, err_len) : 0;
}

/* Where the durable log stands, so the first write can be checked against it. */
static int store_find_pos(struct store *s, char *err, size_t err_len)
{
    struct store_pos *p = &s->pos;
    memset(p, 0, sizeof *p);
    bool found;
    raft_index first = 0, last = 0;
    int rv = store_snap_read(s, &found, &p->snap_index, &p->snap_term, NULL, err, err_len);
    if (rv == 0) rv = store_edge_key(s, DB_FIRST, &first, err, err_len);
    if (rv == 0) rv = store_edge_key(s, DB_LAST, &last, err, err_len);
    if (rv) return rv;
    p->last_index = last > p->snap_index ? last : p->snap_index;
    p->compact_pending = first && first <= p->snap_index;
    store_pos_publish(s, 0);
    return 0;
}

int store_open(const char *dir, struct store **out, char *err, size_t err_len)
{
    ASSERT(dir && out && err);
    *out = NULL;
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return ERR_NOMEM;
    }
    pthread_mutex_init(&s->stats_mu, NULL);
    s->segs.dirfd = -1;
    pthread_rwlock_init(&s->segs.lock, NULL);
    pthread_mutex_init(&s->segs.sync_mu, NULL);
    pthread_cond_init(&s->segs.sync_cv, NULL);
    s->compact_chunk = STORE_COMPACT_CHUNK;
    int rv = store_env_open(s, dir, err, err_len);
    if (rv == 0) rv = store_db_open(s, "log.db", 0, true, &s->log, err, err_len);
    if (rv == 0) rv = store_open_v1_payloads(s, err, err_len);
    if (rv == 0) rv = store_db_open(s, "meta.db", 0, true, &s->meta, err, err_len);
    if (rv == 0) rv = store_seg_open(s, dir, err, err_len);
    if (rv == 0) rv = store_seg_recover(s, err, err_len);
    if (rv == 0) rv = store_find_pos(s, err, err_len);
    if (rv) {
        store_close(s);
        return rv;
    }
    *out = s;
    return 0;
}

/* Whether every log record is on disk. Closing a DB_PRIVATE environment writes all dirty cache
 * pages to their database files after BDB has shut its log down, so without the write-ahead
 * check (__env_refresh in BDB 5.3): when the log cannot be written (a full disk), pages
 * changed by transactions whose records never reached the log would land anyway -- over
 * allocated blocks, which a full disk still accepts --, and the next open's recovery could
 * undo only the part of such a transaction that its log names. A file-store batch came back
 * torn that way: its applied index and request id without its metadata, so the replay took
 * the entry as applied and a committed file was lost (test_log_full_close). */
static bool store_log_flushed(struct store *s)
{
    int ret = s->env->log_flush(s->env, NULL);
    if (ret == 0) return true;
    LOG_ERROR("storage: the log cannot be written (%s): closing without writing anything more "
              "(the next open recovers from the log on disk)",
              db_strerror(ret));
    return false;
}

void store_close(struct store *s)
{
    if (!s) return;
    ASSERT(!s->writer_running);
    bool logged = !s->env_open || store_log_flushed(s);
    /* DB_NOFLUSH: BDB skips that last flush and every read or write after it (os.h's
     * LAST_PANIC_CHECK_BEFORE_IO): the files keep what the log on disk covers. */
    if (!logged) s->env->set_flags(s->env, DB_NOFLUSH, 1);
    DB **dbs[] = {&s->log, &s->payload, &s->meta};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        if (*dbs[i]) (*dbs[i])->close(*dbs[i], logged ? 0 : DB_NOSYNC);
        *dbs[i] = NULL;
    }
    store_seg_close(s);
    pthread_rwlock_destroy(&s->segs.lock);
    pthread_mutex_destroy(&s->segs.sync_mu);
    pthread_cond_destroy(&s->segs.sync_cv);
    if (s->env) {
        /* A checkpoint on the way out keeps the next start's recovery short. */
        if (logged && s->env_open && s->env->txn_checkpoint(s->env, 0, 0, 0) != 0)
            LOG_WARN("storage: final checkpoint failed");
        s->env->close(s->env, 0);
    }
    pthread_mutex_destroy(&s->stats_mu);
    free(s);
}

DB_ENV *store_env(struct store *s)
{
    ASSERT(s && s->env);
    return s->env;
}

const char *store_errmsg(const struct store *s)
{
    return s->errmsg;
}

void store_set_commit_hook(struct store *s, int (*fn)(void *ctx), void *ctx)
{
    ASSERT(!s->writer_running);
    s->commit_hook = fn;
    s->commit_hook_ctx = ctx;
}

void store_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->stats_mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->stats_mu);
}

void store_checkpoint(struct store *s, uint32_t min_kbytes)
{
    int ret = s->env->txn_checkpoint(s->env, min_kbytes, 0, 0);
    if (ret) {
        store_bdb_err(ret, "txn_checkpoint", NULL, 0);
        return;
    }
    pthread_mutex_lock(&s->stats_mu);
    s->stats.checkpoints++;
    pthread_mutex_unlock(&s->stats_mu);
}

uint64_t store_log_bytes_since_ckpt(struct store *s)
{
    DB_LOG_STAT *st = NULL;
    if (s->env->log_stat(s->env, &st, 0) != 0 || !st) return 0;
    uint64_t n = (uint64_t)st->st_wc_mbytes * (1u << 20) + st->st_wc_bytes;
    free(st);
    return n;
}
