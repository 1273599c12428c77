/* store_snap.c — the snapshot point in meta.db and the deletion of the log prefix it makes
 * obsolete (compaction), in bounded chunks. Invariant kept at every commit: the entries after
 * the durable snapshot point are contiguous; entries <= it are garbage, skipped by the load
 * and deleted here, whenever (crash-safe: any prefix of the deletions may be lost). */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "rassert.h"
#include "store_int.h"

#define STORE_SNAP_VERSION 1
#define STORE_SNAP_HDR 24         /* version, 3 zero bytes, conf len, index, term */
#define STORE_SNAP_CONF_MAX 16384 /* an encoded configuration is ~2.4 KiB at most */
#define STORE_SNAP_RETRIES 8
static const char store_snap_key[] = "snapshot";

/* Layout: version u8 | 0 u8[3] | conf len u32 | index u64 | term u64 | conf | CRC-32 u32 of
 * everything before it. Little-endian like the hardstate. */
int store_snap_put(struct store *s, DB_TXN *txn, raft_index index, raft_term term,
                   const struct raft_blob *conf)
{
    ASSERT(conf && conf->len <= STORE_SNAP_CONF_MAX);
    uint8_t v[STORE_SNAP_HDR + STORE_SNAP_CONF_MAX + 4];
    memset(v, 0, STORE_SNAP_HDR);
    v[0] = STORE_SNAP_VERSION;
    store_put_le(v + 4, conf->len, 4);
    store_put_le(v + 8, index, 8);
    store_put_le(v + 16, term, 8);
    memcpy(v + STORE_SNAP_HDR, conf->data, conf->len);
    size_t n = STORE_SNAP_HDR + conf->len;
    store_put_le(v + n, store_crc(v, n), 4);
    DBT key = {.data = (void *)store_snap_key, .size = sizeof store_snap_key - 1};
    DBT val = {.data = v, .size = (uint32_t)(n + 4)};
    return s->meta->put(s->meta, txn, &key, &val, 0);
}

static int store_snap_bad(char *msg, size_t msg_len, const char *why)
{
    if (msg && msg_len) snprintf(msg, msg_len, "meta.db snapshot: %s", why);
    return ERR_CORRUPT;
}

int store_snap_read(struct store *s, bool *found, raft_index *index, raft_term *term,
                    struct raft_configuration *conf_out, char *msg, size_t msg_len)
{
    *found = false;
    *index = 0;
    *term = 0;
    uint8_t v[STORE_SNAP_HDR + STORE_SNAP_CONF_MAX + 4];
    DBT key = {.data = (void *)store_snap_key, .size = sizeof store_snap_key - 1};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    int ret = s->meta->get(s->meta, NULL, &key, &val, 0);
    if (ret == DB_NOTFOUND) return 0;
    if (ret == DB_BUFFER_SMALL) return store_snap_bad(msg, msg_len, "oversized record");
    if (ret) return store_bdb_err(ret, "meta.db get snapshot", msg, msg_len);
    if (val.size < STORE_SNAP_HDR + 4) return store_snap_bad(msg, msg_len, "short record");
    uint32_t clen = (uint32_t)store_get_le(v + 4, 4);
    if (clen > STORE_SNAP_CONF_MAX || val.size != STORE_SNAP_HDR + clen + 4)
        return store_snap_bad(msg, msg_len, "bad size");
    if (store_get_le(v + val.size - 4, 4) != store_crc(v, val.size - 4))
        return store_snap_bad(msg, msg_len, "checksum mismatch");
    if (v[0] != STORE_SNAP_VERSION || v[1] || v[2] || v[3])
        return store_snap_bad(msg, msg_len, "unknown version");
    raft_index idx = store_get_le(v + 8, 8);
    raft_term t = store_get_le(v + 16, 8);
    if (idx == 0 || t == 0) return store_snap_bad(msg, msg_len, "zero index or term");
    if (conf_out && raft_configuration_decode(v + STORE_SNAP_HDR, clen, conf_out) != 0)
        return store_snap_bad(msg, msg_len, "configuration does not decode");
    *found = true;
    *index = idx;
    *term = t;
    return 0;
}

/* Deletes the entry at cursor c; a version-1 header's payload record too. *len: the BDB
 * payload bytes deleted, by the header's length, unverified (the record is garbage anyway; a
 * wrong length only skews the budget). A version-2 payload stays in its segment until the
 * whole segment is dropped: deleting its header is all the transaction logs. */
static int store_del_at(struct store *s, DB_TXN *txn, DBC *c, DBT *key, const DBT *val,
                        uint64_t *len)
{
    *len = 0;
    if (val->size == STORE_HDR_V1_BYTES && s->payload) {
        *len = store_get_le((const uint8_t *)val->data + 8, 4);
        int ret = s->payload->del(s->payload, txn, key, 0);
        if (ret && ret != DB_NOTFOUND) return ret; /* empty payloads have no record */
    }
    return c->del(c, 0);
}

int store_compact_front(struct store *s, DB_TXN *txn, raft_index upto, uint64_t max_n,
                        uint64_t max_bytes, bool *more, uint64_t *n, uint64_t *bytes)
{
    *more = false;
    *n = 0;
    *bytes = 0;
    DBC *c = NULL;
    int ret = s->log->cursor(s->log, txn, &c, 0);
    if (ret) return ret;
    uint8_t k[8], v[STORE_HDR_BYTES];
    DBT key = {.data = k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    /* DB_RMW: take write locks at once (no read->write upgrade that could deadlock). */
    uint32_t op = DB_FIRST;
    while ((ret = c->get(c, &key, &val, op | DB_RMW)) == 0) {
        op = DB_NEXT;
        if (key.size != sizeof k || store_key_index(k) > upto) break;
        if (*n >= max_n || *bytes >= max_bytes) {
            *more = true;
            break;
        }
        uint64_t len = 0;
        ret = store_del_at(s, txn, c, &key, &val, &len);
        if (ret) break;
        (*n)++;
        *bytes += len;
    }
    int cret = c->close(c);
    if (ret == DB_NOTFOUND || ret == DB_BUFFER_SMALL) ret = 0; /* end, or a non-entry key */
    return ret ? ret : cret;
}

static bool store_snap_retryable(int ret)
{
    return ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED;
}

int store_compact_step(struct store *s)
{
    int ret = 0;
    for (int attempt = 0; attempt < STORE_SNAP_RETRIES; attempt++) {
        DB_TXN *txn = NULL;
        ret = s->env->txn_begin(s->env, NULL, &txn, 0);
        if (ret) break;
        bool more = false;
        uint64_t n = 0, bytes = 0;
        ret = store_compact_front(s, txn, s->pos.snap_index, s->compact_chunk,
                                  STORE_COMPACT_CHUNK_BYTES, &more, &n, &bytes);
        if (ret) {
            txn->abort(txn);
            if (store_snap_retryable(ret)) continue;
            break;
        }
        ret = txn->commit(txn, DB_TXN_NOSYNC);
        if (ret) break;
        s->pos.compact_pending = more;
        store_pos_publish(s, n);
        /* Committed without a flush: a crash may bring these headers back, but they are
         * below the durable snapshot point and never read, so their segments may go now. */
        if (n) store_seg_drop_compacted(s);
        return 0;
    }
    return store_bdb_err(ret, "deleting compacted log entries", NULL, 0);
}

void store_pos_publish(struct store *s, uint64_t compacted)
{
    pthread_mutex_lock(&s->stats_mu);
    s->pub_snap_index = s->pos.snap_index;
    s->pub_snap_term = s->pos.snap_term;
    s->stats.entries_compacted += compacted;
    pthread_mutex_unlock(&s->stats_mu);
}

int store_snapshot_info(struct store *s, raft_index *index, raft_term *term)
{
    ASSERT(s && index && term);
    pthread_mutex_lock(&s->stats_mu);
    *index = s->pub_snap_index;
    *term = s->pub_snap_term;
    pthread_mutex_unlock(&s->stats_mu);
    return 0;
}

void store_set_compact_chunk(struct store *s, uint32_t entries)
{
    ASSERT(!s->writer_running);
    s->compact_chunk = entries ? entries : STORE_COMPACT_CHUNK;
}
