/* fsm_db.c — the file store's BDB tables: per-path metadata, the bounded request-id dedup
 * table and the applied/checkpoint indexes. Translates BDB codes to ERR_*; never touches
 * files/ and never commits synchronously except when asked (the checkpoint). */
#include "fsm_db.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "fsm_be.h"
#include "fspath.h"
#include "log.h"
#include "rassert.h"

#define FSM_META_LEN (8 + FSM_SHA256_LEN + 8)
#define FSM_DEDUP_LEN (8 + 1 + 1 + 8 + FSM_SHA256_LEN)

static int db_rc(int ret, const char *what)
{
    if (ret == 0) return 0;
    if (ret == DB_NOTFOUND || ret == DB_KEYEMPTY) return ERR_NOTFOUND;
    LOG_ERROR("fsm: BDB %s: %s", what, db_strerror(ret));
    if (ret == ENOSPC) return ERR_NOSPACE;
    return ret == DB_RUNRECOVERY ? ERR_CORRUPT : ERR_IO;
}

static void db_dbt(DBT *t, const void *p, size_t len)
{
    memset(t, 0, sizeof *t);
    t->data = (void *)p;
    t->size = (u_int32_t)len;
}

/* A get into a caller buffer of exactly len bytes (DB_THREAD needs USERMEM). */
static int db_get(DB *db, DB_TXN *txn, const void *k, size_t klen, void *v, size_t len)
{
    DBT key, val;
    db_dbt(&key, k, klen);
    db_dbt(&val, v, 0);
    val.ulen = (u_int32_t)len;
    val.flags = DB_DBT_USERMEM;
    int ret = db->get(db, txn, &key, &val, 0);
    if (ret == DB_BUFFER_SMALL || (ret == 0 && val.size != len)) {
        LOG_ERROR("fsm: BDB record of unexpected size %u", val.size);
        return ERR_CORRUPT;
    }
    return db_rc(ret, "get");
}

static int db_put(DB *db, DB_TXN *txn, const void *k, size_t klen, const void *v, size_t len)
{
    DBT key, val;
    db_dbt(&key, k, klen);
    db_dbt(&val, v, len);
    return db_rc(db->put(db, txn, &key, &val, 0), "put");
}

static int db_del(DB *db, DB_TXN *txn, const void *k, size_t klen)
{
    DBT key;
    db_dbt(&key, k, klen);
    int rv = db_rc(db->del(db, txn, &key, 0), "del");
    return rv == ERR_NOTFOUND ? 0 : rv;
}

static int db_open_one(DB_ENV *env, const char *file, DB **out, char *err, size_t err_len)
{
    DB *db = NULL;
    int ret = db_create(&db, env, 0);
    if (ret == 0)
        ret = db->set_flags(db, DB_CHKSUM); /* torn or rotten pages are detected, not used */
    if (ret == 0)
        ret =
            db->open(db, NULL, file, NULL, DB_BTREE, DB_CREATE | DB_THREAD | DB_AUTO_COMMIT, 0644);
    if (ret) {
        snprintf(err, err_len, "opening %s: %s", file, db_strerror(ret));
        if (db) db->close(db, 0);
        return ret == ENOSPC ? ERR_NOSPACE : ERR_IO;
    }
    *out = db;
    return 0;
}

int fsm_db_open_tables(struct fsm_db *d, DB_ENV *env, const char *prefix, char *err, size_t err_len)
{
    const char *names[] = {"meta.db", "dedup.db", "dedupidx.db"};
    DB **dbs[] = {&d->meta, &d->dedup, &d->dedupidx};
    d->env = env;
    for (size_t i = 0; i < 3; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s%s", prefix, names[i]);
        int rv = db_open_one(env, file, dbs[i], err, err_len);
        if (rv) {
            fsm_db_close_tables(d);
            return rv;
        }
    }
    return 0;
}

void fsm_db_close_tables(struct fsm_db *d)
{
    DB **dbs[] = {&d->meta, &d->dedup, &d->dedupidx};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        if (*dbs[i]) (*dbs[i])->close(*dbs[i], 0);
        *dbs[i] = NULL;
    }
}

int fsm_db_open(struct fsm_db *d, DB_ENV *env, char *err, size_t err_len)
{
    memset(d, 0, sizeof *d);
    d->env = env;
    int rv = fsm_db_open_tables(d, env, "fsm_", err, err_len);
    if (rv == 0) rv = db_open_one(env, "fsm_state.db", &d->state, err, err_len);
    if (rv == 0) rv = db_open_one(env, "fsm_ckpt.db", &d->ckpt, err, err_len);
    if (rv) fsm_db_close(d);
    return rv;
}

void fsm_db_close(struct fsm_db *d)
{
    fsm_db_close_tables(d);
    DB **dbs[] = {&d->state, &d->ckpt};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        if (*dbs[i]) (*dbs[i])->close(*dbs[i], 0);
        *dbs[i] = NULL;
    }
}

int fsm_db_remove_tables(DB_ENV *env, DB_TXN *txn, const char *prefix)
{
    const char *names[] = {"meta.db", "dedup.db", "dedupidx.db"};
    for (size_t i = 0; i < 3; i++) {
        char file[64];
        snprintf(file, sizeof file, "%s%s", prefix, names[i]);
        int ret = env->dbremove(env, txn, file, NULL, txn ? 0 : DB_AUTO_COMMIT);
        if (ret && ret != ENOENT) return db_rc(ret, "dbremove");
    }
    return 0;
}

int fsm_db_rename_tables(DB_ENV *env, DB_TXN *txn, const char *from, const char *to)
{
    const char *names[] = {"meta.db", "dedup.db", "dedupidx.db"};
    for (size_t i = 0; i < 3; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "%s%s", from, names[i]);
        snprintf(b, sizeof b, "%s%s", to, names[i]);
        int ret = env->dbrename(env, txn, a, NULL, b, 0);
        if (ret) return db_rc(ret, "dbrename");
    }
    return 0;
}

int fsm_db_begin(struct fsm_db *d, DB_TXN **txn)
{
    return db_rc(d->env->txn_begin(d->env, NULL, txn, 0), "txn_begin");
}

int fsm_db_commit(DB_TXN *txn, bool sync)
{
    return db_rc(txn->commit(txn, sync ? DB_TXN_SYNC : DB_TXN_NOSYNC), "commit");
}

void fsm_db_abort(DB_TXN *txn)
{
    int ret = txn->abort(txn);
    if (ret) LOG_ERROR("fsm: BDB abort: %s", db_strerror(ret));
}

int fsm_db_get_index(DB *db, DB_TXN *txn, const char *key, raft_index *out)
{
    uint8_t v[8];
    int rv = db_get(db, txn, key, strlen(key), v, sizeof v);
    *out = rv == 0 ? fsm_be_get64(v) : 0;
    return rv == ERR_NOTFOUND ? 0 : rv;
}

int fsm_db_put_index(DB *db, DB_TXN *txn, const char *key, raft_index v)
{
    uint8_t b[8];
    fsm_be_put64(b, v);
    return db_put(db, txn, key, strlen(key), b, sizeof b);
}

int fsm_db_get_var(DB *db, DB_TXN *txn, const char *key, void *buf, size_t cap, size_t *len)
{
    DBT k, val;
    db_dbt(&k, key, strlen(key));
    db_dbt(&val, buf, 0);
    val.ulen = (u_int32_t)cap;
    val.flags = DB_DBT_USERMEM;
    int ret = db->get(db, txn, &k, &val, 0);
    if (ret == DB_BUFFER_SMALL) return ERR_CORRUPT;
    *len = val.size;
    return db_rc(ret, "get");
}

int fsm_db_put_var(DB *db, DB_TXN *txn, const char *key, const void *v, size_t len)
{
    return db_put(db, txn, key, strlen(key), v, len);
}

static void db_meta_decode(const uint8_t *v, struct fsm_meta *m)
{
    m->size = fsm_be_get64(v);
    memcpy(m->sha256, v + 8, FSM_SHA256_LEN);
    m->index = fsm_be_get64(v + 8 + FSM_SHA256_LEN);
}

static void db_meta_encode(const struct fsm_meta *m, uint8_t *v)
{
    fsm_be_put64(v, m->size);
    memcpy(v + 8, m->sha256, FSM_SHA256_LEN);
    fsm_be_put64(v + 8 + FSM_SHA256_LEN, m->index);
}

int fsm_db_meta_get(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    struct fsm_meta *out)
{
    uint8_t v[FSM_META_LEN];
    int rv = db_get(d->meta, txn, path, len, v, sizeof v);
    if (rv == 0) db_meta_decode(v, out);
    return rv;
}

int fsm_db_meta_put(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                    const struct fsm_meta *m)
{
    uint8_t v[FSM_META_LEN];
    db_meta_encode(m, v);
    return db_put(d->meta, txn, path, len, v, sizeof v);
}

int fsm_db_meta_get_rmw(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                        struct fsm_meta *out, DBC **cur)
{
    *cur = NULL;
    DBC *c = NULL;
    int rv = db_rc(d->meta->cursor(d->meta, txn, &c, 0), "cursor");
    if (rv) return rv;
    DBT key, val;
    uint8_t v[FSM_META_LEN];
    db_dbt(&key, path, len);
    db_dbt(&val, v, 0);
    val.ulen = sizeof v;
    val.flags = DB_DBT_USERMEM;
    int ret = c->get(c, &key, &val, DB_SET | DB_RMW);
    if (ret == DB_BUFFER_SMALL || (ret == 0 && val.size != sizeof v)) {
        LOG_ERROR("fsm: BDB record of unexpected size %u", val.size);
        rv = ERR_CORRUPT;
    } else {
        rv = db_rc(ret, "cursor get");
    }
    if (rv == 0) db_meta_decode(v, out);
    if (rv && rv != ERR_NOTFOUND)
        c->close(c);
    else
        *cur = c;
    return rv;
}

int fsm_db_meta_put_at(DBC *cur, bool found, const char *path, size_t len, const struct fsm_meta *m)
{
    uint8_t v[FSM_META_LEN];
    db_meta_encode(m, v);
    DBT key, val;
    db_dbt(&key, path, len);
    db_dbt(&val, v, sizeof v);
    return db_rc(cur->put(cur, &key, &val, found ? DB_CURRENT : DB_KEYFIRST), "cursor put");
}

void fsm_db_cursor_close(DBC *cur)
{
    if (cur) cur->close(cur);
}

int fsm_db_meta_del(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len)
{
    return db_del(d->meta, txn, path, len);
}

/* A cursor get into caller buffers; val may be NULL (data not read). */
static int db_cursor_get(DBC *c, void *kbuf, size_t *klen, size_t kcap, void *vbuf, size_t vcap,
                         u_int32_t flag)
{
    DBT key, val;
    db_dbt(&key, kbuf, *klen);
    key.ulen = (u_int32_t)kcap;
    key.flags = DB_DBT_USERMEM;
    db_dbt(&val, vbuf, 0);
    val.ulen = (u_int32_t)vcap;
    val.flags = DB_DBT_USERMEM | (vbuf ? 0 : DB_DBT_PARTIAL);
    int ret = c->get(c, &key, &val, flag);
    if (ret == DB_BUFFER_SMALL || (ret == 0 && vbuf && val.size != vcap)) return ERR_CORRUPT;
    *klen = key.size;
    return db_rc(ret, "cursor get");
}

int fsm_db_meta_conflict(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len)
{
    struct fsm_meta m;
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '/') continue;
        int rv = fsm_db_meta_get(d, txn, path, i, &m);
        if (rv != ERR_NOTFOUND) return rv == 0 ? ERR_EXISTS : rv;
    }
    char kbuf[FSPATH_MAX + 2];
    ASSERT(len <= FSPATH_MAX);
    memcpy(kbuf, path, len);
    kbuf[len] = '/';
    size_t klen = len + 1;
    DBC *c = NULL;
    int rv = db_rc(d->meta->cursor(d->meta, txn, &c, 0), "cursor");
    if (rv) return rv;
    rv = db_cursor_get(c, kbuf, &klen, sizeof kbuf, NULL, 0, DB_SET_RANGE);
    if (rv == 0 && klen > len && memcmp(kbuf, path, len) == 0 && kbuf[len] == '/')
        rv = ERR_EXISTS;
    else if (rv == 0 || rv == ERR_NOTFOUND)
        rv = 0;
    c->close(c);
    return rv;
}

int fsm_db_meta_list(struct fsm_db *d, const char *prefix,
                     int (*cb)(void *ctx, const char *path, const struct fsm_meta *m), void *ctx)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    if (plen > FSPATH_MAX) return 0; /* no path is that long */
    DBC *c = NULL;
    int rv = db_rc(d->meta->cursor(d->meta, NULL, &c, 0), "cursor");
    if (rv) return rv;
    char kbuf[FSPATH_MAX + 1];
    uint8_t v[FSM_META_LEN];
    if (plen) memcpy(kbuf, prefix, plen);
    u_int32_t flag = plen ? DB_SET_RANGE : DB_FIRST;
    for (;;) {
        size_t klen = plen;
        rv = db_cursor_get(c, kbuf, &klen, FSPATH_MAX, v, sizeof v, flag);
        flag = DB_NEXT;
        if (rv || klen < plen || (plen && memcmp(kbuf, prefix, plen) != 0)) break;
        kbuf[klen] = '\0';
        struct fsm_meta m;
        db_meta_decode(v, &m);
        rv = cb(ctx, kbuf, &m);
        if (rv) break;
    }
    c->close(c);
    return rv == ERR_NOTFOUND ? 0 : rv;
}

int fsm_db_dedup_get(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id, struct fsm_result *res)
{
    uint8_t v[FSM_DEDUP_LEN];
    int rv = db_get(d->dedup, txn, req_id, FSM_REQ_ID_LEN, v, sizeof v);
    if (rv) return rv;
    memset(res, 0, sizeof *res);
    res->index = fsm_be_get64(v);
    res->status = v[8];
    res->created = v[9] != 0;
    res->size = fsm_be_get64(v + 10);
    memcpy(res->sha256, v + 18, FSM_SHA256_LEN);
    return 0;
}

/* Deletes req_id's record if it is still the one made at index (a later apply of the same id
 * moved it): one search, through a cursor on dedup. */
static int db_dedup_forget(struct fsm_db *d, DB_TXN *txn, const uint8_t *rid, raft_index index)
{
    DBC *c = NULL;
    int rv = db_rc(d->dedup->cursor(d->dedup, txn, &c, 0), "cursor");
    if (rv) return rv;
    uint8_t k[FSM_REQ_ID_LEN], v[FSM_DEDUP_LEN];
    memcpy(k, rid, sizeof k);
    size_t klen = sizeof k;
    rv = db_cursor_get(c, k, &klen, sizeof k, v, sizeof v, DB_SET | DB_RMW);
    if (rv == 0 && fsm_be_get64(v) == index) rv = db_rc(c->del(c, 0), "cursor del");
    c->close(c);
    return rv == ERR_NOTFOUND ? 0 : rv;
}

int fsm_db_dedup_prune(struct fsm_db *d, DB_TXN *txn, raft_index index, raft_index keep_from,
                       size_t max)
{
    if (index <= FSM_DEDUP_WINDOW) return 0;
    raft_index floor = index - FSM_DEDUP_WINDOW;
    if (keep_from && keep_from < floor) floor = keep_from;
    DBC *c = NULL;
    int rv = db_rc(d->dedupidx->cursor(d->dedupidx, txn, &c, 0), "cursor");
    u_int32_t flag = DB_FIRST | DB_RMW;
    for (size_t n = 0; rv == 0 && n < max; n++, flag = DB_NEXT | DB_RMW) {
        uint8_t k[8], rid[FSM_REQ_ID_LEN];
        size_t klen = 0;
        rv = db_cursor_get(c, k, &klen, sizeof k, rid, sizeof rid, flag);
        if (rv || klen != 8 || fsm_be_get64(k) >= floor) break;
        rv = db_dedup_forget(d, txn, rid, fsm_be_get64(k));
        if (rv == 0) rv = db_rc(c->del(c, 0), "cursor del");
    }
    if (c) c->close(c);
    return rv == ERR_NOTFOUND ? 0 : rv;
}

int fsm_db_dedup_put(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id,
                     const struct fsm_result *res, raft_index keep_from)
{
    int rv = fsm_db_dedup_put_raw(d, txn, req_id, res);
    return rv ? rv : fsm_db_dedup_prune(d, txn, res->index, keep_from, FSM_DEDUP_PRUNE_MAX);
}

int fsm_db_dedup_put_raw(struct fsm_db *d, DB_TXN *txn, const uint8_t *req_id,
                         const struct fsm_result *res)
{
    uint8_t v[FSM_DEDUP_LEN], k[8];
    ASSERT(res->status >= 0 && res->status < 256);
    fsm_be_put64(v, res->index);
    v[8] = (uint8_t)res->status;
    v[9] = res->created ? 1 : 0;
    fsm_be_put64(v + 10, res->size);
    memcpy(v + 18, res->sha256, FSM_SHA256_LEN);
    int rv = db_put(d->dedup, txn, req_id, FSM_REQ_ID_LEN, v, sizeof v);
    fsm_be_put64(k, res->index);
    if (rv == 0) rv = db_put(d->dedupidx, txn, k, sizeof k, req_id, FSM_REQ_ID_LEN);
    return rv;
}

int fsm_db_meta_next(struct fsm_db *d, const char *after, size_t after_len, char *path, size_t *len,
                     struct fsm_meta *m)
{
    DBC *c = NULL;
    int rv = db_rc(d->meta->cursor(d->meta, NULL, &c, 0), "cursor");
    if (rv) return rv;
    /* The smallest key > after is the smallest >= after + "\0" (paths hold no NUL). */
    char kbuf[FSPATH_MAX + 2];
    uint8_t v[FSM_META_LEN];
    ASSERT(after_len <= FSPATH_MAX);
    size_t klen = 0;
    u_int32_t flag = DB_FIRST;
    if (after) {
        memcpy(kbuf, after, after_len);
        kbuf[after_len] = '\0';
        klen = after_len + 1;
        flag = DB_SET_RANGE;
    }
    rv = db_cursor_get(c, kbuf, &klen, sizeof kbuf, v, sizeof v, flag);
    c->close(c);
    if (rv) return rv;
    if (klen == 0 || klen > FSPATH_MAX) return ERR_CORRUPT;
    memcpy(path, kbuf, klen);
    path[klen] = '\0';
    *len = klen;
    db_meta_decode(v, m);
    return 0;
}

int fsm_db_meta_prefix_file(struct fsm_db *d, DB_TXN *txn, const char *path, size_t len,
                            size_t *plen, struct fsm_meta *m)
{
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '/') continue;
        int rv = fsm_db_meta_get(d, txn, path, i, m);
        if (rv != ERR_NOTFOUND) {
            *plen = i;
            return rv;
        }
    }
    return ERR_NOTFOUND;
}

int fsm_db_dedup_walk(struct fsm_db *d, raft_index from, raft_index *index,
                      uint8_t req_id[FSM_REQ_ID_LEN])
{
    DBC *c = NULL;
    int rv = db_rc(d->dedupidx->cursor(d->dedupidx, NULL, &c, 0), "cursor");
    if (rv) return rv;
    uint8_t k[8];
    fsm_be_put64(k, from);
    size_t klen = sizeof k;
    rv = db_cursor_get(c, k, &klen, sizeof k, req_id, FSM_REQ_ID_LEN, DB_SET_RANGE);
    c->close(c);
    if (rv == 0 && klen != sizeof k) rv = ERR_CORRUPT;
    if (rv == 0) *index = fsm_be_get64(k);
    return rv;
}
