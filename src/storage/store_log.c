/* store_log.c — the Raft log and hardstate records in BDB: codecs with CRC-32, boot load,
 * lazy payload fetch, and one batch transaction. Never returns unverified bytes. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "rassert.h"
#include "store_int.h"

#define STORE_DEADLOCK_RETRIES 8
#define STORE_TRIM_CHUNK 1024 /* entries deleted per transaction by store_trim_tail */
static const char store_hs_key[] = "hardstate";

void store_put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t store_get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void store_key(raft_index index, uint8_t key[8])
{
    for (int i = 0; i < 8; i++)
        key[i] = (uint8_t)(index >> (56 - 8 * i));
}

raft_index store_key_index(const uint8_t key[8])
{
    raft_index v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | key[i];
    return v;
}

/* The header CRC also covers the index, so a record under the wrong key is caught. */
static uint32_t store_hdr_crc(raft_index index, const uint8_t *hdr, size_t n)
{
    uint8_t buf[STORE_HDR_BYTES + 8];
    memcpy(buf, hdr, n);
    store_put_le(buf + n, index, 8);
    return store_crc(buf, n + 8);
}

/* Version 2 (40 bytes): term u64 | len u32 | type u8 | version u8 | 0 u16 | payload crc u32 |
 * segment u64 | offset u64 | hdr crc u32 (over the 36 bytes before it and the index).
 * Version 1 (24 bytes, payload in payload.db) had no segment and offset: its CRC sits at 20. */
void store_hdr_encode(raft_index index, const struct store_hdr *h, uint8_t out[STORE_HDR_BYTES])
{
    memset(out, 0, STORE_HDR_BYTES);
    store_put_le(out, h->term, 8);
    store_put_le(out + 8, h->len, 4);
    out[12] = h->type;
    out[13] = STORE_REC_VERSION;
    store_put_le(out + 16, h->payload_crc, 4);
    store_put_le(out + 20, h->pos.seg, 8);
    store_put_le(out + 28, h->pos.off, 8);
    store_put_le(out + 36, store_hdr_crc(index, out, 36), 4);
}

int store_hdr_decode(raft_index index, const uint8_t *in, size_t len, struct store_hdr *h)
{
    uint8_t version = len == STORE_HDR_BYTES ? 2 : len == STORE_HDR_V1_BYTES ? 1 : 0;
    if (version == 0) return ERR_CORRUPT;
    size_t crc_at = len - 4;
    if (store_get_le(in + crc_at, 4) != store_hdr_crc(index, in, crc_at)) return ERR_CORRUPT;
    if (in[13] != version || in[14] || in[15]) return ERR_CORRUPT;
    h->term = store_get_le(in, 8);
    h->len = (uint32_t)store_get_le(in + 8, 4);
    h->type = in[12];
    h->version = version;
    h->payload_crc = (uint32_t)store_get_le(in + 16, 4);
    h->pos.seg = version == 2 ? store_get_le(in + 20, 8) : 0;
    h->pos.off = version == 2 ? store_get_le(in + 28, 8) : 0;
    if (h->type < RAFT_ENTRY_NOOP || h->type > RAFT_ENTRY_CONFIG || h->term == 0)
        return ERR_CORRUPT;
    return 0;
}

int store_hdr_get(struct store *s, raft_index index, uint32_t get_flags, struct store_hdr *h)
{
    uint8_t k[8], v[STORE_HDR_BYTES];
    store_key(index, k);
    DBT key = {.data = k, .size = sizeof k};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    int ret = s->log->get(s->log, NULL, &key, &val, get_flags);
    if (ret == DB_BUFFER_SMALL) {
        snprintf(s->errmsg, sizeof s->errmsg, "log.db idx %llu: bad header size",
                 (unsigned long long)index);
        return ERR_CORRUPT;
    }
    if (ret) return store_bdb_err(ret, "log.db get", s->errmsg, sizeof s->errmsg);
    int rv = store_hdr_decode(index, v, val.size, h);
    if (rv)
        snprintf(s->errmsg, sizeof s->errmsg, "log.db idx %llu: header checksum mismatch",
                 (unsigned long long)index);
    return rv;
}

/* A version-1 payload, from payload.db. */
static int store_payload_read_v1(struct store *s, raft_index index, uint32_t get_flags,
                                 struct raft_blob *b)
{
    if (!s->payload) {
        snprintf(s->errmsg, sizeof s->errmsg, "payload.db idx %llu: no payload.db",
                 (unsigned long long)index);
        return ERR_CORRUPT;
    }
    uint8_t k[8];
    store_key(index, k);
    DBT key = {.data = k, .size = sizeof k};
    DBT val = {.data = b->data, .ulen = b->len, .flags = DB_DBT_USERMEM};
    int ret = s->payload->get(s->payload, NULL, &key, &val, get_flags);
    if (ret == DB_BUFFER_SMALL || ret == DB_NOTFOUND || (ret == 0 && val.size != b->len)) {
        snprintf(s->errmsg, sizeof s->errmsg, "payload.db idx %llu: missing or wrong size",
                 (unsigned long long)index);
        return ERR_CORRUPT;
    }
    return ret ? store_bdb_err(ret, "payload.db get", s->errmsg, sizeof s->errmsg) : 0;
}

int store_payload_get(struct store *s, raft_index index, const struct store_hdr *h,
                      uint32_t get_flags, bool want_empty_blob, struct raft_blob **out)
{
    *out = NULL;
    if (h->len == 0 && !want_empty_blob)
        return h->payload_crc == store_crc(NULL, 0) ? 0 : ERR_CORRUPT;
    struct raft_blob *b = raft_blob_new(h->len);
    if (!b) return ERR_NOMEM;
    int rv = 0;
    if (h->len && h->version == 1)
        rv = store_payload_read_v1(s, index, get_flags, b);
    else if (h->len)
        rv = store_seg_read(s, h->pos, h->len, b->data, s->errmsg, sizeof s->errmsg);
    /* Verified before anyone sees it: a torn or flipped segment byte never leaves here. */
    if (rv == 0 && store_crc(b->data, b->len) != h->payload_crc) {
        snprintf(s->errmsg, sizeof s->errmsg, "payload of idx %llu: checksum mismatch",
                 (unsigned long long)index);
        rv = ERR_CORRUPT;
    }
    if (rv) {
        raft_blob_unref(b);
        return rv;
    }
    *out = b;
    return 0;
}

int store_fetch(struct store *s, raft_index index, struct raft_blob **out)
{
    ASSERT(s && out);
    *out = NULL;
    if (index == 0) return ERR_NOTFOUND;
    struct store_hdr h;
    int rv = store_hdr_get(s, index, DB_READ_UNCOMMITTED, &h);
    if (rv == 0) rv = store_payload_get(s, index, &h, DB_READ_UNCOMMITTED, true, out);
    return rv;
}

/* ---- hardstate ---- */

static int store_hs_load(struct store *s, struct raft_boot *boot)
{
    uint8_t v[STORE_HS_BYTES];
    DBT key = {.data = (void *)store_hs_key, .size = sizeof store_hs_key - 1};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    int ret = s->meta->get(s->meta, NULL, &key, &val, 0);
    if (ret == DB_NOTFOUND) return 0;
    if (ret == DB_BUFFER_SMALL || (ret == 0 && val.size != sizeof v) ||
        (ret == 0 && store_get_le(v + 24, 4) != store_crc(v, 24))) {
        snprintf(s->errmsg, sizeof s->errmsg, "meta.db hardstate: bad size or checksum");
        return ERR_CORRUPT;
    }
    if (ret) return store_bdb_err(ret, "meta.db get", s->errmsg, sizeof s->errmsg);
    boot->term = store_get_le(v, 8);
    boot->vote = store_get_le(v + 8, 8);
    boot->commit = store_get_le(v + 16, 8);
    return 0;
}

static int store_hs_put(struct store *s, DB_TXN *txn, const struct store_write *w)
{
    uint8_t v[STORE_HS_BYTES];
    store_put_le(v, w->term, 8);
    store_put_le(v + 8, w->vote, 8);
    store_put_le(v + 16, w->commit, 8);
    store_put_le(v + 24, store_crc(v, 24), 4);
    DBT key = {.data = (void *)store_hs_key, .size = sizeof store_hs_key - 1};
    DBT val = {.data = v, .size = sizeof v};
    return s->meta->put(s->meta, txn, &key, &val, 0);
}

/* ---- boot load ---- */

static int store_boot_push(struct raft_entry **arr, size_t *n, size_t *cap,
                           const struct raft_entry *e)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        struct raft_entry *na = realloc(*arr, ncap * sizeof *na);
        if (!na) return ERR_NOMEM;
        *arr = na;
        *cap = ncap;
    }
    (*arr)[(*n)++] = *e;
    return 0;
}

/* One log.db record at cursor position: checks order and checksum, loads small payloads. */
static int store_load_one(struct store *s, const uint8_t *k, const DBT *key, const uint8_t *v,
                          const DBT *val, struct raft_entry *e, raft_index expect)
{
    if (key->size != 8 || (val->size != STORE_HDR_BYTES && val->size != STORE_HDR_V1_BYTES)) {
        snprintf(s->errmsg, sizeof s->errmsg, "log.db: record of bad size after idx %llu",
                 (unsigned long long)(expect - 1));
        return ERR_CORRUPT;
    }
    raft_index index = store_key_index(k);
    if (index != expect) {
        snprintf(s->errmsg, sizeof s->errmsg, "log.db: gap, idx %llu where %llu was expected",
                 (unsigned long long)index, (unsigned long long)expect);
        return ERR_CORRUPT;
    }
    struct store_hdr h;
    if (store_hdr_decode(index, v, val->size, &h)) {
        snprintf(s->errmsg, sizeof s->errmsg, "log.db idx %llu: header checksum mismatch",
                 (unsigned long long)index);
        return ERR_CORRUPT;
    }
    memset(e, 0, sizeof *e);
    e->index = index;
    e->term = h.term;
    e->type = h.type;
    if (h.type == RAFT_ENTRY_NORMAL) return 0;
    return store_payload_get(s, index, &h, 0, false, &e->data);
}

/* Scans log.db from from (the entry after the snapshot point; leftovers before it are
 * skipped) to its end: every entry must follow the previous one, terms never go down. */
static int store_load_log(struct store *s, raft_index from, raft_term min_term,
                          struct raft_entry **arr, size_t *n)
{
    size_t cap = 0;
    DBC *c = NULL;
    int ret = s->log->cursor(s->log, NULL, &c, 0);
    if (ret) return store_bdb_err(ret, "log.db cursor", s->errmsg, sizeof s->errmsg);
    uint8_t k[8], v[STORE_HDR_BYTES];
    store_key(from, k);
    DBT key = {.data = k, .size = sizeof k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    int rv = 0;
    raft_term prev_term = min_term;
    uint32_t op = DB_SET_RANGE;
    while (rv == 0 && (ret = c->get(c, &key, &val, op)) == 0) {
        op = DB_NEXT;
        struct raft_entry e;
        rv = store_load_one(s, k, &key, v, &val, &e, from + *n);
        if (rv == 0 && e.term < prev_term) {
            snprintf(s->errmsg, sizeof s->errmsg, "log.db idx %llu: term goes backwards",
                     (unsigned long long)e.index);
            rv = ERR_CORRUPT;
        }
        if (rv == 0 && (rv = store_boot_push(arr, n, &cap, &e)) != 0) raft_blob_unref(e.data);
        prev_term = e.term;
    }
    c->close(c);
    if (rv == 0 && ret == DB_BUFFER_SMALL) {
        snprintf(s->errmsg, sizeof s->errmsg, "log.db: oversized record");
        rv = ERR_CORRUPT;
    } else if (rv == 0 && ret != DB_NOTFOUND) {
        rv = store_bdb_err(ret, "log.db scan", s->errmsg, sizeof s->errmsg);
    }
    return rv;
}

/* The snapshot point into boot (snapshot_conf malloc'd) and s->pos. */
static int store_load_snap(struct store *s, struct raft_boot *boot)
{
    struct raft_configuration *conf = malloc(sizeof *conf);
    if (!conf) return ERR_NOMEM;
    bool found;
    raft_index index;
    raft_term term;
    int rv = store_snap_read(s, &found, &index, &term, conf, s->errmsg, sizeof s->errmsg);
    if (rv || !found) {
        free(conf);
        return rv;
    }
    boot->snapshot_index = index;
    boot->snapshot_term = term;
    boot->snapshot_conf = conf;
    return 0;
}

int store_load(struct store *s, struct raft_boot *boot)
{
    ASSERT(s && boot);
    ASSERT(!s->writer_running);
    memset(boot, 0, sizeof *boot);
    int rv = store_hs_load(s, boot);
    if (rv == 0) rv = store_load_snap(s, boot);
    struct raft_entry *arr = NULL;
    size_t n = 0;
    if (rv == 0) rv = store_load_log(s, boot->snapshot_index + 1, boot->snapshot_term, &arr, &n);
    boot->entries = arr;
    boot->n_entries = n;
    if (rv) {
        store_boot_free(boot);
        return rv;
    }
    /* compact_pending stays as store_open found it (leftovers are not scanned here). */
    s->pos.snap_index = boot->snapshot_index;
    s->pos.snap_term = boot->snapshot_term;
    s->pos.last_index = n ? arr[n - 1].index : boot->snapshot_index;
    store_pos_publish(s, 0);
    return 0;
}

void store_boot_free(struct raft_boot *boot)
{
    struct raft_entry *arr = (struct raft_entry *)boot->entries;
    for (size_t i = 0; i < boot->n_entries; i++)
        raft_blob_unref(arr[i].data);
    free(arr);
    free((void *)boot->snapshot_conf);
    memset(boot, 0, sizeof *boot);
}

/* ---- one batch transaction ---- */

static bool store_retryable(int ret)
{
    return ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED;
}

int store_truncate_db(DB *db, DB_TXN *txn, raft_index from)
{
    DBC *c = NULL;
    int ret = db->cursor(db, txn, &c, 0);
    if (ret) return ret;
    uint8_t k[8];
    store_key(from, k);
    DBT key = {.data = k, .size = sizeof k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL}; /* keys only */
    ret = c->get(c, &key, &val, DB_SET_RANGE);
    while (ret == 0) {
        ret = c->del(c, 0);
        if (ret == 0) ret = c->get(c, &key, &val, DB_NEXT);
    }
    int cret = c->close(c);
    if (ret == DB_NOTFOUND) ret = 0;
    return ret ? ret : cret;
}

/* The header of e, naming its payload's place in a segment (written before the txn). */
static int store_put_entry(struct store *s, DB_TXN *txn, const struct raft_entry *e,
                           struct store_segpos pos)
{
    uint8_t k[8], v[STORE_HDR_BYTES];
    store_key(e->index, k);
    struct store_hdr h = {.term = e->term, .type = e->type, .pos = pos};
    h.len = e->data ? e->data->len : 0;
    h.payload_crc = store_crc(e->data ? e->data->data : NULL, h.len);
    store_hdr_encode(e->index, &h, v);
    DBT key = {.data = k, .size = sizeof k};
    DBT val = {.data = v, .size = sizeof v};
    return s->log->put(s->log, txn, &key, &val, 0);
}

/* Deletes entries >= from: headers, and version-1 payloads while payload.db holds any. */
static int store_truncate_log(struct store *s, DB_TXN *txn, raft_index from)
{
    int ret = store_truncate_db(s->log, txn, from);
    if (ret == 0 && s->payload) ret = store_truncate_db(s->payload, txn, from);
    return ret;
}

/* The first durable index job w deletes, explicitly or by overwriting (an append at i
 * replaces the log from i on); 0 for none. */
static raft_index store_job_cut(const struct store_write *w, raft_index last)
{
    raft_index from = w->truncate_from;
    if (w->n_entries && w->entries[0].index <= last && (!from || w->entries[0].index < from))
        from = w->entries[0].index;
    return from && from <= last ? from : 0;
}

/* A long truncation in one transaction needs a lock per page (the lock table runs out) and
 * is slow: cut the tail first, from the end backwards, in small transactions. Each leaves a
 * contiguous log and removes only entries the job deletes anyway (never committed ones, in
 * Raft), so a crash in between is harmless. NOSYNC: the batch's sync commit flushes them. */
static int store_trim_tail(struct store *s, raft_index from)
{
    int ret = 0;
    for (int fails = 0; ret == 0 && s->pos.last_index >= from + STORE_TRIM_CHUNK;) {
        raft_index lo = s->pos.last_index - STORE_TRIM_CHUNK + 1;
        DB_TXN *txn = NULL;
        ret = s->env->txn_begin(s->env, NULL, &txn, 0);
        if (ret) break;
        ret = store_truncate_log(s, txn, lo);
        if (ret) {
            txn->abort(txn);
            if (store_retryable(ret) && ++fails < STORE_DEADLOCK_RETRIES) ret = 0;
            continue;
        }
        ret = txn->commit(txn, DB_TXN_NOSYNC);
        if (ret == 0) s->pos.last_index = lo - 1;
    }
    return ret;
}

/* The snapshot point of job w (step 1 of storage.h's order): entries <= it become garbage;
 * the log's logical end moves up to it when the log was shorter (a snapshot install). */
static void store_apply_compact(const struct store_write *w, struct store_pos *p)
{
    ASSERT(w->snap_conf && w->snap_term > 0);
    ASSERT(w->compact_to >= p->snap_index || w->truncate_from == w->compact_to + 1);
    ASSERT(!w->truncate_from || w->truncate_from > w->compact_to);
    ASSERT(!w->n_entries || w->entries[0].index > w->compact_to);
    p->snap_index = w->compact_to;
    p->snap_term = w->snap_term;
    p->compact_pending = true; /* the deletion pass finds out whether anything is left */
    if (p->last_index < w->compact_to) p->last_index = w->compact_to;
}

/* Compaction, truncation (explicit, or implied by an entry overwriting the log), then the
 * entries. */
static int store_apply_job(struct store *s, DB_TXN *txn, const struct store_write *w,
                           struct store_pos *p, const struct store_segpos **segpos)
{
    ASSERT(w->compact_to || !w->snap_conf);
    if (w->compact_to) store_apply_compact(w, p);
    raft_index from = store_job_cut(w, p->last_index);
    int ret = 0;
    if (from) {
        ASSERT(from > p->snap_index); /* never below the snapshot point */
        ret = store_truncate_log(s, txn, from);
        p->last_index = from - 1;
    }
    for (size_t i = 0; ret == 0 && i < w->n_entries; i++) {
        const struct raft_entry *e = &w->entries[i];
        ASSERT(e->index == p->last_index + 1); /* no gap: the log stays contiguous */
        ASSERT(e->term > 0 && e->term >= p->snap_term);
        ASSERT(e->type >= RAFT_ENTRY_NOOP && e->type <= RAFT_ENTRY_CONFIG);
        ASSERT(i == 0 || e->term >= w->entries[i - 1].term);
        ret = store_put_entry(s, txn, e, *(*segpos)++);
        if (ret == 0) p->last_index = e->index;
    }
    return ret;
}

/* What one batch transaction appends, and deletes besides its truncations. */
struct store_batch_extra {
    struct store_segpos durable; /* the segment end before the batch (durable) */
    uint64_t seg_bytes;          /* payload bytes the batch wrote to segments */
    uint64_t appended, appended_bytes;
    uint64_t compacted, compacted_bytes;
};

/* A bounded share of the carried-over deletions: a chunk more than the batch appends, so
 * that compaction keeps up with any write rate (and its cost grows with the batch's). */
static int store_txn_compact(struct store *s, DB_TXN *txn, struct store_pos *p,
                             struct store_batch_extra *x)
{
    uint64_t max_n = s->compact_chunk + x->appended;
    uint64_t max_bytes = STORE_COMPACT_CHUNK_BYTES + x->appended_bytes;
    /* Within what one batch may append: the page locks of the transaction stay bounded. */
    if (max_n > STORE_BATCH_ENTRIES_MAX) max_n = STORE_BATCH_ENTRIES_MAX;
    if (max_bytes > STORE_BATCH_BYTES_MAX) max_bytes = STORE_BATCH_BYTES_MAX;
    bool more;
    int ret = store_compact_front(s, txn, p->snap_index, max_n, max_bytes, &more, &x->compacted,
                                  &x->compacted_bytes);
    p->compact_pending = more;
    return ret;
}

static int store_txn_fill(struct store *s, DB_TXN *txn, struct store_job *jobs, struct store_pos *p,
                          struct store_batch_extra *x)
{
    const struct store_write *hs = NULL, *snap = NULL;
    const struct store_segpos *segpos = s->segs.pos;
    int ret = 0;
    for (struct store_job *j = jobs; j && ret == 0; j = j->next) {
        ret = store_apply_job(s, txn, &j->w, p, &segpos);
        if (j->w.hardstate_changed) hs = &j->w;
        if (j->w.compact_to) snap = &j->w;
        x->appended += j->w.n_entries;
        for (size_t i = 0; i < j->w.n_entries; i++)
            x->appended_bytes += j->w.entries[i].data ? j->w.entries[i].data->len : 0;
    }
    if (ret == 0 && hs)
        ret = store_hs_put(s, txn, hs); /* only the newest hardstate of the group matters */
    if (ret == 0 && snap)               /* likewise the newest snapshot point */
        ret = store_snap_put(s, txn, snap->compact_to, snap->snap_term, snap->snap_conf);
    /* The position every earlier batch's payloads end before (durable); a crash may leave
     * this batch's headers durable without its payloads, which all lie at or beyond it. */
    if (ret == 0 && x->seg_bytes) ret = store_seg_put_durable(s, txn, x->durable);
    if (ret == 0 && p->compact_pending) ret = store_txn_compact(s, txn, p, x);
    if (ret == 0 && s->commit_hook) ret = s->commit_hook(s->commit_hook_ctx);
    return ret;
}

static uint64_t store_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void store_stats_add(struct store *s, struct store_job *jobs, uint64_t us)
{
    uint64_t nj = 0, ne = 0, nb = 0;
    for (struct store_job *j = jobs; j; j = j->next) {
        nj++;
        ne += j->w.n_entries;
        for (size_t i = 0; i < j->w.n_entries; i++)
            nb += j->w.entries[i].data ? j->w.entries[i].data->len : 0;
    }
    size_t b = 0;
    while (b < STORE_FSYNC_BUCKETS && (double)us > store_fsync_bucket_le_us[b])
        b++;
    pthread_mutex_lock(&s->stats_mu);
    struct store_stats *st = &s->stats;
    st->fsyncs++;
    st->batches++;
    st->jobs_written += nj;
    st->entries_written += ne;
    st->bytes_written += nb;
    st->fsync_hist[b]++;
    st->fsync_us_sum += (double)us;
    if (us > st->fsync_us_max) st->fsync_us_max = us;
    pthread_mutex_unlock(&s->stats_mu);
}

/* The BDB transaction of the batch, retried on deadlock; *x gets what it appended/deleted. */
static int store_txn_run(struct store *s, struct store_job *jobs, struct store_pos *pos,
                         struct store_batch_extra *x)
{
    int ret = 0;
    for (int attempt = 0; attempt < STORE_DEADLOCK_RETRIES; attempt++) {
        *pos = s->pos;
        struct store_batch_extra x0 = *x;
        DB_TXN *txn = NULL;
        ret = s->env->txn_begin(s->env, NULL, &txn, 0);
        if (ret) break;
        ret = store_txn_fill(s, txn, jobs, pos, x);
        if (ret) {
            txn->abort(txn);
            *x = x0;
            if (store_retryable(ret)) continue;
            break;
        }
        return txn->commit(txn, DB_TXN_SYNC); /* the group's one log flush + fsync */
    }
    return ret;
}

/* Durability: the payloads go to the segment first; its fdatasync then runs on the syncer
 * thread while this thread commits the headers with DB_TXN_SYNC; the batch is durable (and
 * returns 0) only when both succeeded. We always wait for the sync, so the next batch starts
 * with every segment byte durable (what it records as its durable position). */
int store_commit_batch(struct store *s, struct store_job *jobs)
{
    ASSERT(jobs);
    if (s->broken) return s->broken;
    /* Only the first job may truncate (the writer starts a new batch at each truncation). */
    raft_index cut = store_job_cut(&jobs->w, s->pos.last_index);
    int ret = cut ? store_trim_tail(s, cut) : 0;
    if (ret) return store_bdb_err(ret, "trimming the log tail", NULL, 0);
    struct store_batch_extra x = {0};
    ret = store_seg_append(s, jobs, &x.durable, &x.seg_bytes);
    if (ret) return store_bdb_err(ret, "writing payloads to a segment", NULL, 0);
    uint64_t t0 = store_now_us();
    int sync_err = x.seg_bytes ? store_seg_sync_start(s) : 0;
    bool syncing = x.seg_bytes && sync_err == 0;
    struct store_pos pos;
    ret = sync_err ? 0 : store_txn_run(s, jobs, &pos, &x);
    if (syncing) sync_err = store_seg_sync_wait(s);
    if (sync_err) {
        /* The headers may be durable without their payload: refuse every later write (a
         * restart's store_seg_recover drops this batch). */
        int rv = store_bdb_err(sync_err, "syncing a payload segment", NULL, 0);
        s->broken = rv;
        return rv;
    }
    if (ret) return store_bdb_err(ret, "writing a log batch", NULL, 0);
    store_stats_add(s, jobs, store_now_us() - t0);
    s->pos = pos;
    store_pos_publish(s, x.compacted);
    if (x.compacted) store_seg_drop_compacted(s);
    /* Zeros ahead of the segment's end: the next batches' fdatasync then overwrites allocated
     * blocks (1 KiB append+fdatasync ~160 -> ~100 us). They take disk space early, so on a
     * filling disk ENOSPC tends to hit the BDB log rather than a segment: store_close must
     * then write no database page (store_log_flushed), which 7a34c17 exposed. */
    (void)store_seg_prepare(s);
    return 0;
}

void store_write_release(struct store_write *w)
{
    for (size_t i = 0; i < w->n_entries; i++)
        raft_blob_unref(w->entries[i].data);
    free(w->entries);
    w->entries = NULL;
    w->n_entries = 0;
    raft_blob_unref(w->snap_conf);
    w->snap_conf = NULL;
}

int store_write_sync(struct store *s, struct store_write *w)
{
    ASSERT(s && w);
    ASSERT(!s->writer_running);
    struct store_job job = {.w = *w};
    int rv = store_commit_batch(s, &job);
    store_write_release(w);
    return rv;
}

int store_reset_sync(struct store *s, raft_index index, raft_term term,
                     const struct raft_blob *conf)
{
    ASSERT(s && conf && index > 0 && term > 0);
    ASSERT(!s->writer_running);
    /* Entries > index go by truncation (cut from the tail in chunks first), entries <=
     * index by compaction: the first chunk in the durable transaction, the rest here. */
    struct store_job job = {.w = {.compact_to = index,
                                  .snap_term = term,
                                  .truncate_from = index + 1,
                                  .snap_conf = raft_blob_ref((struct raft_blob *)conf)}};
    int rv = store_commit_batch(s, &job);
    store_write_release(&job.w);
    while (rv == 0 && s->pos.compact_pending)
        rv = store_compact_step(s);
    /* No header names a segment any more (leftovers a crash may bring back are below the
     * snapshot point, never read): start afresh. */
    if (rv == 0) rv = store_seg_drop_all(s);
    return rv;
}
