/* fsm_snap_read.c — the sender side of InstallSnapshot: a stream over the live file store,
 * produced in slices on the caller's thread (the same thread that applies, so nothing moves
 * inside one call). Memory is one record buffer: the walks resume by key (no cursor outlives a
 * call) and only the current file's fd is open. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsm_int.h"
#include "fsm_snap_fmt.h"
#include "log.h"
#include "rassert.h"

/* One call stops producing records after this long (it finishes the record it is on, and a
 * disk read it waits for can stretch it: the sender hints read-ahead to keep that rare). */
#define FSS_SLICE_NS 500000u
/* Dedup index entries read per cursor (one cursor per batch, closed before returning). */
#define FSS_WALK_BATCH 64

enum reader_phase { RP_HDR, RP_FILES, RP_DEDUP, RP_END, RP_DONE };

struct fsm_snap_reader {
    struct fsm *f;
    struct fsm_snap_reader *next; /* f->readers list */
    uint64_t epoch;               /* f->epoch at open: an install makes the reader stale */
    raft_index index;             /* S */
    raft_term term;
    struct raft_blob *conf;
    enum reader_phase phase;
    uint64_t seq; /* sequence number of the next record */
    /* The record being handed out: rec[rec_off..rec_len). */
    uint8_t *rec;
    size_t rec_len, rec_off;
    /* Files: the last path sent (the walk resumes after it) and the file being sent. */
    bool have_last;
    size_t last_len;
    char last[FSPATH_MAX + 1];
    int fd;
    uint64_t size, sent;
    /* Dedup: the next index to walk from, and the entries of the DEDUP record being built. */
    raft_index dedup_from;
    unsigned dedup_n;
    raft_index index_end; /* S_end, fixed when the dedup walk reaches the end */
    uint64_t n_files, n_dedup, bytes;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The smallest S among open readers: dedup records from S+1-W on are kept for them. */
static void reader_min_update(struct fsm *f)
{
    raft_index m = 0;
    for (struct fsm_snap_reader *r = f->readers; r; r = r->next)
        if (m == 0 || r->index < m) m = r->index;
    f->reader_min = m ? m : 0;
    if (f->readers && m == 0) f->reader_min = 1; /* S == 0: keep everything */
}

int fsm_snap_reader_open(struct fsm *f, raft_index index, raft_term term,
                         const struct raft_blob *conf, struct fsm_snap_reader **out)
{
    ASSERT(f && out);
    *out = NULL;
    if (index != fsm_applied(f)) return ERR_INVALID;
    /* A crash replay still running (files/ may be ahead of the metadata), or the window of
     * our own last install not replayed yet (files may be ahead of the applied index). */
    if (f->bdb_applied > index || (f->snap.present && index < f->snap.index_end)) return ERR_BUSY;
    if (conf && conf->len > FSS_CONF_MAX) return ERR_TOOBIG;
    struct fsm_snap_reader *r = calloc(1, sizeof *r);
    uint8_t *rec = malloc(FSS_REC_HDR + FSS_PAYLOAD_MAX + FSS_REC_CRC);
    if (!r || !rec) {
        free(r);
        free(rec);
        return ERR_NOMEM;
    }
    r->f = f;
    r->epoch = f->epoch;
    r->index = index;
    r->term = term;
    r->conf = conf ? raft_blob_ref((struct raft_blob *)conf) : NULL;
    r->rec = rec;
    r->fd = -1;
    r->dedup_from = index + 1 > FSM_DEDUP_WINDOW ? index + 1 - FSM_DEDUP_WINDOW : 1;
    r->next = f->readers;
    f->readers = r;
    reader_min_update(f);
    *out = r;
    return 0;
}

void fsm_snap_reader_close(struct fsm_snap_reader *r)
{
    if (!r) return;
    struct fsm *f = r->f;
    for (struct fsm_snap_reader **p = &f->readers; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    reader_min_update(f);
    if (r->fd >= 0) close(r->fd);
    raft_blob_unref(r->conf);
    free(r->rec);
    free(r);
}

raft_index fsm_snap_reader_index(const struct fsm_snap_reader *r)
{
    return r->index;
}

/* Seals rec as a record of `type` with a payload of len bytes (already at rec + 5). */
static void reader_seal(struct fsm_snap_reader *r, uint8_t type, size_t len)
{
    fss_put32(r->rec, (uint32_t)len);
    r->rec[4] = type;
    uint32_t crc = fss_crc(r->seq++, r->rec, r->rec + FSS_REC_HDR, len);
    fss_put32(r->rec + FSS_REC_HDR + len, crc);
    r->rec_len = FSS_REC_HDR + len + FSS_REC_CRC;
    r->rec_off = 0;
}

static void reader_hdr(struct fsm_snap_reader *r)
{
    uint8_t *p = r->rec + FSS_REC_HDR;
    uint32_t clen = r->conf ? r->conf->len : 0;
    memcpy(p, FSS_MAGIC, 8);
    fss_put32(p + 8, FSS_VERSION);
    fsm_be_put64(p + 12, r->index);
    fsm_be_put64(p + 20, r->term);
    fss_put32(p + 28, clen);
    if (clen) memcpy(p + FSS_HDR_FIXED, r->conf->data, clen);
    reader_seal(r, FSS_HDR, FSS_HDR_FIXED + clen);
    r->phase = RP_FILES;
}

/* The next DATA record of the current file. */
static int reader_data(struct fsm_snap_reader *r)
{
    uint64_t left = r->size - r->sent;
    size_t want = left < FSS_DATA_MAX ? (size_t)left : FSS_DATA_MAX;
    uint8_t *p = r->rec + FSS_REC_HDR;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(r->fd, p + got, want - got, (off_t)(r->sent + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            LOG_ERROR("fsm: snapshot: reading %s: %s", r->last, n ? strerror(errno) : "short file");
            return ERR_IO;
        }
        got += (size_t)n;
    }
    reader_seal(r, FSS_DATA, want);
    /* Asks the kernel to read ahead, so the next slices find the data in memory instead of
     * waiting for the disk on the caller's loop. */
    if ((r->sent / FSS_DATA_MAX) % 4 == 0 && r->sent + want < r->size)
        posix_fadvise(r->fd, (off_t)(r->sent + want), 4 * FSS_DATA_MAX, POSIX_FADV_WILLNEED);
    r->sent += want;
    r->bytes += want;
    if (r->sent == r->size) {
        close(r->fd);
        r->fd = -1;
    }
    return 0;
}

/* The FILE record of the next path, with its fd open for the DATA records. */
static int reader_file(struct fsm_snap_reader *r)
{
    char path[FSPATH_MAX + 1];
    size_t len;
    struct fsm_meta m;
    int rv =
        fsm_db_meta_next(&r->f->db, r->have_last ? r->last : NULL, r->last_len, path, &len, &m);
    if (rv == ERR_NOTFOUND) {
        r->phase = RP_DEDUP;
        return 0;
    }
    if (rv) return rv;
    int fd = -1;
    rv = fsm_open_read(r->f, path, &fd, &m);
    if (rv) {
        LOG_WARN("fsm: snapshot: cannot read %s: %s", path, err_str(rv));
        return rv == ERR_NOTFOUND ? ERR_IO : rv;
    }
    memcpy(r->last, path, len + 1);
    r->last_len = len;
    r->have_last = true;
    uint8_t *p = r->rec + FSS_REC_HDR;
    fsm_be_put64(p, m.index);
    fsm_be_put64(p + 8, m.size);
    memcpy(p + 16, m.sha256, FSM_SHA256_LEN);
    p[16 + FSM_SHA256_LEN] = (uint8_t)(len >> 8);
    p[17 + FSM_SHA256_LEN] = (uint8_t)len;
    memcpy(p + FSS_FILE_FIXED, path, len);
    reader_seal(r, FSS_FILE, FSS_FILE_FIXED + len);
    r->n_files++;
    r->size = m.size;
    r->sent = 0;
    if (m.size == 0)
        close(fd);
    else
        r->fd = fd;
    if (m.size > 0) posix_fadvise(fd, 0, 4 * FSS_DATA_MAX, POSIX_FADV_WILLNEED);
    return 0;
}

static void reader_dedup_seal(struct fsm_snap_reader *r)
{
    uint8_t *p = r->rec + FSS_REC_HDR;
    p[0] = (uint8_t)(r->dedup_n >> 8);
    p[1] = (uint8_t)r->dedup_n;
    reader_seal(r, FSS_DEDUP, 2 + (size_t)r->dedup_n * FSS_DEDUP_ONE);
    r->dedup_n = 0;
}

static void reader_dedup_add(struct fsm_snap_reader *r, const uint8_t *rid,
                             const struct fsm_result *res)
{
    uint8_t *p = r->rec + FSS_REC_HDR + 2 + (size_t)r->dedup_n * FSS_DEDUP_ONE;
    memcpy(p, rid, FSM_REQ_ID_LEN);
    p += FSM_REQ_ID_LEN;
    fsm_be_put64(p, res->index);
    p[8] = (uint8_t)res->status;
    p[9] = res->created ? 1 : 0;
    fsm_be_put64(p + 10, res->size);
    memcpy(p + 18, res->sha256, FSM_SHA256_LEN);
    r->dedup_n++;
    r->n_dedup++;
}

/* One batch of the dedup walk (index order, from dedup_from). A record is sent at the index
 * it is recorded at now; an index entry whose id has since moved on is skipped (the id is
 * sent at its newer index). At the end, S_end is fixed: nothing applied later is read. */
static int reader_dedup(struct fsm_snap_reader *r)
{
    for (int k = 0; k < FSS_WALK_BATCH && r->dedup_n < FSS_DEDUP_N; k++) {
        raft_index idx;
        uint8_t rid[FSM_REQ_ID_LEN];
        int rv = fsm_db_dedup_walk(&r->f->db, r->dedup_from, &idx, rid);
        if (rv == ERR_NOTFOUND) {
            r->index_end = fsm_applied(r->f);
            r->phase = RP_END;
            break;
        }
        if (rv) return rv;
        r->dedup_from = idx + 1;
        struct fsm_result res;
        rv = fsm_db_dedup_get(&r->f->db, NULL, rid, &res);
        if (rv == ERR_NOTFOUND) continue;
        if (rv) return rv;
        if (res.index == idx) reader_dedup_add(r, rid, &res);
    }
    if (r->dedup_n == FSS_DEDUP_N || (r->phase == RP_END && r->dedup_n > 0)) reader_dedup_seal(r);
    return 0;
}

static void reader_end(struct fsm_snap_reader *r)
{
    uint8_t *p = r->rec + FSS_REC_HDR;
    fsm_be_put64(p, r->index_end);
    fsm_be_put64(p + 8, r->n_files);
    fsm_be_put64(p + 16, r->n_dedup);
    fsm_be_put64(p + 24, r->bytes);
    reader_seal(r, FSS_END, FSS_END_LEN);
    r->phase = RP_DONE;
    LOG_INFO("fsm: snapshot stream (%llu, %llu]: %llu files, %llu bytes, %llu dedup records",
             (unsigned long long)r->index, (unsigned long long)r->index_end,
             (unsigned long long)r->n_files, (unsigned long long)r->bytes,
             (unsigned long long)r->n_dedup);
}

/* Produces the next record into rec (or part of a DEDUP record: rec stays empty). */
static int reader_step(struct fsm_snap_reader *r)
{
    switch (r->phase) {
    case RP_HDR:
        reader_hdr(r);
        return 0;
    case RP_FILES:
        return r->fd >= 0 ? reader_data(r) : reader_file(r);
    case RP_DEDUP:
        return reader_dedup(r);
    case RP_END:
        reader_end(r);
        return 0;
    case RP_DONE:
        return 0;
    }
    return ERR_INVALID;
}

int fsm_snap_reader_next(struct fsm_snap_reader *r, uint8_t *buf, size_t cap, size_t *len,
                         bool *done)
{
    ASSERT(r && (buf || cap == 0) && len && done);
    *len = 0;
    *done = false;
    struct fsm *f = r->f;
    if (r->epoch != f->epoch) return ERR_BUSY; /* an install replaced the store */
    /* The receiver's window rule needs S_end - S <= the dedup window (fsm.h). */
    if (r->phase != RP_DONE && fsm_applied(f) - r->index > FSM_DEDUP_WINDOW) return ERR_TIMEOUT;
    uint64_t deadline = mono_ns() + FSS_SLICE_NS;
    bool first = true;
    while (*len < cap) {
        if (r->rec_off < r->rec_len) {
            size_t n = r->rec_len - r->rec_off;
            if (n > cap - *len) n = cap - *len;
            memcpy(buf + *len, r->rec + r->rec_off, n);
            r->rec_off += n;
            *len += n;
            continue;
        }
        if (r->phase == RP_DONE) break;
        if (!first && mono_ns() > deadline) break;
        first = false;
        int rv = reader_step(r);
        if (rv) return rv;
    }
    *done = r->phase == RP_DONE && r->rec_off == r->rec_len;
    return 0;
}
