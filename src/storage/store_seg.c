/* store_seg.c — Raft entry payloads in append-only segment files beside the BDB environment
 * (key-value separation: BDB keeps the small headers, the bytes never pass through its log,
 * its pages or its checkpoints). See store_int.h for the invariants.
 *
 * Durability rule (a batch is acknowledged only when both halves are durable): the batch's
 * payloads are written first, then the current segment's fdatasync runs on the syncer thread
 * while the writing thread commits the BDB transaction with DB_TXN_SYNC; the batch completes
 * when both returned. The transaction records the segment position that was durable before
 * the batch ("segsync" in meta.db). A crash between the two syncs can leave headers durable
 * without their payload, but only for that last batch, whose entries all lie at or beyond
 * the recorded position: store_seg_recover checks exactly those at open and cuts the log at
 * the first one whose payload is missing or fails its CRC (never acknowledged, so Raft lets
 * it go like an entry whose transaction was lost). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "rassert.h"
#include "store_int.h"

#define SEG_PREFIX "seg-"
#define SEG_SUFFIX ".dat"
#define SEG_IOV_MAX 1024
#define SEG_DURABLE_BYTES 20 /* seg u64 | off u64 | CRC-32 u32 */
/* Zeros written ahead when fewer than SEG_PREP_LOW prepared bytes are left after the end: an
 * appending fdatasync must commit the file's new size to the ext4 journal (a second journal
 * commit beside BDB's, in series with it); overwriting written blocks needs only the data
 * and a cache flush. One appending sync per SEG_PREP_STEP. */
#define SEG_PREP_LOW (256u << 10)
#define SEG_PREP_STEP (1u << 20)
static const char seg_durable_key[] = "segsync";

static int seg_errno_code(int e)
{
    return e == ENOSPC ? ERR_NOSPACE : e == ENOMEM ? ERR_NOMEM : ERR_IO;
}

static int seg_writev(int fd, struct iovec *iov, int n, uint64_t *off);
static void seg_reaper_join(struct store_segs *g);

static void seg_name(uint64_t seq, char *buf, size_t len)
{
    snprintf(buf, len, SEG_PREFIX "%016llx" SEG_SUFFIX, (unsigned long long)seq);
}

/* seq of a segment file name, 0 if name is not one. */
static uint64_t seg_parse(const char *name)
{
    size_t pl = strlen(SEG_PREFIX), sl = strlen(SEG_SUFFIX);
    if (strlen(name) != pl + 16 + sl || strncmp(name, SEG_PREFIX, pl) != 0 ||
        strcmp(name + pl + 16, SEG_SUFFIX) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = pl; i < pl + 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return 0;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

static int seg_push(struct store_segs *g, uint64_t seq, int fd)
{
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 8;
        struct store_seg_file *nf = realloc(g->files, ncap * sizeof *nf);
        if (!nf) return ENOMEM;
        g->files = nf;
        g->cap = ncap;
    }
    size_t i = g->n;
    while (i > 0 && g->files[i - 1].seq > seq) { /* keep sorted (readdir order is random) */
        g->files[i] = g->files[i - 1];
        i--;
    }
    g->files[i] = (struct store_seg_file){.seq = seq, .fd = fd};
    g->n++;
    return 0;
}

/* Creates segment seq (empty), makes its directory entry durable and appends it as the new
 * current segment. An errno. */
static int seg_create(struct store *s, uint64_t seq)
{
    struct store_segs *g = &s->segs;
    char name[64];
    seg_name(seq, name, sizeof name);
    int fd = openat(g->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return errno;
    if (fsync(g->dirfd) != 0) {
        int e = errno;
        close(fd);
        unlinkat(g->dirfd, name, 0);
        return e;
    }
    pthread_rwlock_wrlock(&g->lock);
    int e = seg_push(g, seq, fd);
    pthread_rwlock_unlock(&g->lock);
    if (e) {
        close(fd);
        unlinkat(g->dirfd, name, 0); /* else every later roll fails on the same name */
        return e;
    }
    g->end = 0;
    g->prep_end = 0;
    return 0;
}

static int seg_scan(struct store *s, char *err, size_t err_len)
{
    struct store_segs *g = &s->segs;
    int dfd = dup(g->dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0) close(dfd);
        snprintf(err, err_len, "listing segments: %s", strerror(errno));
        return ERR_IO;
    }
    int e = 0;
    for (struct dirent *de; e == 0 && (de = readdir(d)) != NULL;) {
        uint64_t seq = seg_parse(de->d_name);
        if (seq == 0) continue;
        int fd = openat(g->dirfd, de->d_name, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            e = errno;
            snprintf(err, err_len, "opening %s: %s", de->d_name, strerror(e));
            break;
        }
        if ((e = seg_push(g, seq, fd)) != 0) {
            close(fd);
            snprintf(err, err_len, "out of memory");
        }
    }
    closedir(d);
    return e ? seg_errno_code(e) : 0;
}

void store_seg_set_max(struct store *s, uint64_t bytes)
{
    ASSERT(!s->writer_running);
    s->segs.max_bytes = bytes ? bytes : STORE_SEG_MAX_BYTES;
}

int store_seg_open(struct store *s, const char *dir, char *err, size_t err_len)
{
    struct store_segs *g = &s->segs;
    pthread_mutex_init(&g->reap_mu, NULL);
    pthread_cond_init(&g->reap_cv, NULL);
    g->reap_init = true;
    g->max_bytes = STORE_SEG_MAX_BYTES;
    g->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g->dirfd < 0) {
        snprintf(err, err_len, "opening %s: %s", dir, strerror(errno));
        return ERR_IO;
    }
    int rv = seg_scan(s, err, err_len);
    if (rv) return rv;
    if (g->n == 0) {
        int e = seg_create(s, 1);
        if (e) {
            snprintf(err, err_len, "creating the first segment: %s", strerror(e));
            return seg_errno_code(e);
        }
        return 0;
    }
    /* Bytes of a batch cut short by a crash may sit in the page cache only: sync them so
     * that everything below the end is durable before the next batch records it as such. */
    struct store_seg_file *cur = &g->files[g->n - 1];
    struct stat sb;
    if (fstat(cur->fd, &sb) != 0 || fdatasync(cur->fd) != 0 || fsync(g->dirfd) != 0) {
        snprintf(err, err_len, "syncing the current segment: %s", strerror(errno));
        return ERR_IO;
    }
    g->end = g->prep_end = (uint64_t)sb.st_size; /* store_seg_recover sets the end */
    return 0;
}

int store_seg_prepare(struct store *s)
{
    struct store_segs *g = &s->segs;
    if (g->prep_end >= g->end + SEG_PREP_LOW || g->prep_end >= g->max_bytes) return 0;
    static const uint8_t zeros[64 << 10];
    uint64_t at = g->prep_end > g->end ? g->prep_end : g->end;
    uint64_t to = at + SEG_PREP_STEP < g->max_bytes ? at + SEG_PREP_STEP : g->max_bytes;
    struct iovec iov[SEG_PREP_STEP / sizeof zeros];
    int n = 0;
    for (uint64_t p = at; p < to; p += sizeof zeros)
        iov[n++] = (struct iovec){.iov_base = (void *)zeros,
                                  .iov_len = to - p < sizeof zeros ? to - p : sizeof zeros};
    uint64_t off = at;
    int e = n ? seg_writev(g->files[g->n - 1].fd, iov, n, &off) : 0;
    if (e == 0) g->prep_end = to;
    /* Retried after every batch; on a full disk that is every batch, so said once a streak. */
    if (e && !g->prep_failing)
        LOG_WARN("storage: writing zeros ahead in a segment: %s (batches append meanwhile)",
                 strerror(e));
    g->prep_failing = e != 0;
    return e;
}

static void *seg_syncer(void *arg)
{
    struct store_segs *g = arg;
    pthread_setname_np(pthread_self(), "store-syncer"); /* for top -H, perf sched, gdb */
    pthread_mutex_lock(&g->sync_mu);
    for (;;) {
        while (!g->sync_busy && !g->sync_stop) {
            g->sync_idle = true;
            pthread_cond_wait(&g->sync_cv, &g->sync_mu);
            g->sync_idle = false;
        }
        if (!g->sync_busy) break;
        int fd = g->sync_fd;
        pthread_mutex_unlock(&g->sync_mu);
        int e = fdatasync(fd) == 0 ? 0 : errno;
        pthread_mutex_lock(&g->sync_mu);
        g->sync_err = e;
        g->sync_busy = false;
        bool wake = g->sync_waiting; /* else the writer sees !sync_busy before it would wait */
        pthread_mutex_unlock(&g->sync_mu);
        if (wake) pthread_cond_broadcast(&g->sync_cv);
        pthread_mutex_lock(&g->sync_mu);
    }
    pthread_mutex_unlock(&g->sync_mu);
    return NULL;
}

void store_seg_close(struct store *s)
{
    struct store_segs *g = &s->segs;
    if (g->sync_started) {
        pthread_mutex_lock(&g->sync_mu);
        g->sync_stop = true;
        pthread_cond_broadcast(&g->sync_cv);
        pthread_mutex_unlock(&g->sync_mu);
        pthread_join(g->sync_th, NULL);
        g->sync_started = false;
    }
    if (g->reap_init) {
        seg_reaper_join(g);
        pthread_mutex_destroy(&g->reap_mu);
        pthread_cond_destroy(&g->reap_cv);
        g->reap_init = false;
    }
    free(g->trash);
    g->trash = NULL;
    g->trash_n = g->trash_cap = 0;
    for (size_t i = 0; i < g->n; i++)
        close(g->files[i].fd);
    free(g->files);
    free(g->pos);
    g->files = NULL;
    g->pos = NULL;
    g->n = g->cap = g->pos_cap = 0;
    if (g->dirfd >= 0) close(g->dirfd);
    g->dirfd = -1;
}

int store_seg_sync_start(struct store *s)
{
    struct store_segs *g = &s->segs;
    if (!g->sync_started) {
        int e = pthread_create(&g->sync_th, NULL, seg_syncer, g);
        if (e) return e;
        g->sync_started = true;
    }
    pthread_mutex_lock(&g->sync_mu);
    ASSERT(!g->sync_busy);
    g->sync_fd = g->files[g->n - 1].fd;
    g->sync_busy = true;
    bool wake = g->sync_idle; /* else the syncer sees sync_busy before it would sleep */
    pthread_mutex_unlock(&g->sync_mu);
    if (wake) pthread_cond_broadcast(&g->sync_cv);
    return 0;
}

int store_seg_sync_wait(struct store *s)
{
    struct store_segs *g = &s->segs;
    pthread_mutex_lock(&g->sync_mu);
    while (g->sync_busy) {
        g->sync_waiting = true;
        pthread_cond_wait(&g->sync_cv, &g->sync_mu);
        g->sync_waiting = false;
    }
    int e = g->sync_err;
    pthread_mutex_unlock(&g->sync_mu);
    return e;
}

/* ---- reads ---- */

int store_seg_read(struct store *s, struct store_segpos pos, uint32_t len, uint8_t *buf, char *msg,
                   size_t msg_len)
{
    struct store_segs *g = &s->segs;
    pthread_rwlock_rdlock(&g->lock);
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->files[mid].seq < pos.seg)
            lo = mid + 1;
        else
            hi = mid;
    }
    int rv = 0;
    if (lo == g->n || g->files[lo].seq != pos.seg) {
        /* Below every kept segment: dropped by compaction (the entry is gone). */
        rv = g->n && pos.seg < g->files[0].seq ? ERR_NOTFOUND : ERR_CORRUPT;
        snprintf(msg, msg_len, "segment %llu: missing", (unsigned long long)pos.seg);
    }
    for (size_t got = 0; rv == 0 && got < len;) {
        ssize_t r = pread(g->files[lo].fd, buf + got, len - got, (off_t)(pos.off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rv = r == 0 ? ERR_CORRUPT : ERR_IO;
            snprintf(msg, msg_len, "segment %llu at %llu: %s", (unsigned long long)pos.seg,
                     (unsigned long long)(pos.off + got), r == 0 ? "short" : strerror(errno));
        }
        got += r > 0 ? (size_t)r : 0;
    }
    pthread_rwlock_unlock(&g->lock);
    return rv;
}

/* ---- the batch's appends ---- */

/* Writes iov[0..n) at *off of fd, all of it. An errno. */
static int seg_writev(int fd, struct iovec *iov, int n, uint64_t *off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)*off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return EIO;
        *off += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Room for n positions. A batch of many entries (up to STORE_BATCH_ENTRIES_MAX: 1 MiB of
 * positions) does not keep its array: a small one replaces it at the next batch. */
#define SEG_POS_KEEP 4096

static int seg_pos_reserve(struct store_segs *g, size_t n)
{
    if (g->pos_cap > SEG_POS_KEEP && n <= SEG_POS_KEEP) {
        free(g->pos);
        g->pos = NULL;
        g->pos_cap = 0;
    }
    if (n <= g->pos_cap) return 0;
    size_t ncap = g->pos_cap ? g->pos_cap : 64;
    while (ncap < n)
        ncap *= 2;
    struct store_segpos *np = realloc(g->pos, ncap * sizeof *np);
    if (!np) return ENOMEM;
    g->pos = np;
    g->pos_cap = ncap;
    return 0;
}

/* The old segment is synced before the roll, so that only the current segment can ever hold
 * bytes that are not durable yet (what store_seg_sync_start and store_seg_open sync). */
static int seg_roll(struct store *s)
{
    struct store_segs *g = &s->segs;
    if (fdatasync(g->files[g->n - 1].fd) != 0) {
        /* Sticky like the syncer's failures: after a failed fdatasync the kernel may have
         * dropped the dirty pages, so a retry could "succeed" without the bytes on disk. */
        int e = errno;
        s->broken = e == ENOSPC ? ERR_NOSPACE : ERR_IO;
        return e;
    }
    return seg_create(s, g->files[g->n - 1].seq + 1);
}

struct seg_batch {
    struct iovec iov[SEG_IOV_MAX];
    int n_iov;
    uint64_t at; /* where iov[0] goes in the current segment */
};

static int seg_flush(struct store *s, struct seg_batch *b)
{
    int e = seg_writev(s->segs.files[s->segs.n - 1].fd, b->iov, b->n_iov, &b->at);
    b->n_iov = 0;
    return e;
}

/* Adds one payload (len > 0) to the batch, rolling first when the segment is full. */
static int seg_add(struct store *s, struct seg_batch *b, const struct raft_blob *d,
                   struct store_segpos *pos)
{
    struct store_segs *g = &s->segs;
    int e = 0;
    if (g->end > 0 && g->end + d->len > g->max_bytes) {
        if ((e = seg_flush(s, b)) != 0 || (e = seg_roll(s)) != 0) return e;
        b->at = 0;
    }
    if (b->n_iov == SEG_IOV_MAX && (e = seg_flush(s, b)) != 0) return e;
    *pos = (struct store_segpos){.seg = g->files[g->n - 1].seq, .off = g->end};
    b->iov[b->n_iov++] = (struct iovec){.iov_base = (void *)d->data, .iov_len = d->len};
    g->end += d->len;
    if (g->end > g->prep_end) g->prep_end = g->end;
    return 0;
}

int store_seg_append(struct store *s, struct store_job *jobs, struct store_segpos *durable,
                     uint64_t *wrote)
{
    struct store_segs *g = &s->segs;
    size_t n = 0;
    for (struct store_job *j = jobs; j; j = j->next)
        n += j->w.n_entries;
    *wrote = 0;
    *durable = (struct store_segpos){.seg = g->files[g->n - 1].seq, .off = g->end};
    int e = seg_pos_reserve(g, n);
    if (e) return e;
    static __thread struct seg_batch b; /* 16 KiB of iovecs: off the writer's stack */
    b.n_iov = 0;
    b.at = g->end;
    size_t k = 0;
    for (struct store_job *j = jobs; j && e == 0; j = j->next) {
        for (size_t i = 0; i < j->w.n_entries && e == 0; i++, k++) {
            const struct raft_blob *d = j->w.entries[i].data;
            if (d && d->len) {
                e = seg_add(s, &b, d, &g->pos[k]);
                *wrote += e ? 0 : d->len;
            } else {
                g->pos[k] = (struct store_segpos){.seg = g->files[g->n - 1].seq, .off = g->end};
            }
        }
    }
    if (e == 0 && b.n_iov) e = seg_flush(s, &b);
    if (e) {
        /* Nothing will name these bytes: the next batch overwrites them. A roll in between
         * left the old segment synced and a new empty current one. */
        g->end = g->files[g->n - 1].seq == durable->seg ? durable->off : 0;
        *wrote = 0;
    }
    return e;
}

int store_seg_put_durable(struct store *s, DB_TXN *txn, struct store_segpos pos)
{
    uint8_t v[SEG_DURABLE_BYTES];
    store_put_le(v, pos.seg, 8);
    store_put_le(v + 8, pos.off, 8);
    store_put_le(v + 16, store_crc(v, 16), 4);
    DBT key = {.data = (void *)seg_durable_key, .size = sizeof seg_durable_key - 1};
    DBT val = {.data = v, .size = sizeof v};
    return s->meta->put(s->meta, txn, &key, &val, 0);
}

/* The "segsync" record ({0, 0} when absent: then every entry is checked). */
static int seg_get_durable(struct store *s, struct store_segpos *pos, char *err, size_t err_len)
{
    uint8_t v[SEG_DURABLE_BYTES];
    DBT key = {.data = (void *)seg_durable_key, .size = sizeof seg_durable_key - 1};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    *pos = (struct store_segpos){0, 0};
    int ret = s->meta->get(s->meta, NULL, &key, &val, 0);
    if (ret == DB_NOTFOUND) return 0;
    if (ret == DB_BUFFER_SMALL || (ret == 0 && val.size != sizeof v) ||
        (ret == 0 && store_get_le(v + 16, 4) != store_crc(v, 16))) {
        snprintf(err, err_len, "meta.db segsync: bad size or checksum");
        return ERR_CORRUPT;
    }
    if (ret) return store_bdb_err(ret, "meta.db get segsync", err, err_len);
    pos->seg = store_get_le(v, 8);
    pos->off = store_get_le(v + 8, 8);
    return 0;
}

/* ---- dropping segments ---- */

/* Closes and unlinks one dropped segment (the close first: the blocks are freed, and
 * discarded, by the unlink of a file nobody holds open). */
static void seg_remove(struct store_segs *g, struct store_seg_file f)
{
    pthread_mutex_lock(&g->reap_mu);
    void (*hook)(void *, uint64_t) = g->reap_hook;
    void *ctx = g->reap_hook_ctx;
    pthread_mutex_unlock(&g->reap_mu);
    if (hook) hook(ctx, f.seq);
    char name[64];
    seg_name(f.seq, name, sizeof name);
    close(f.fd);
    if (unlinkat(g->dirfd, name, 0) != 0)
        LOG_WARN("storage: removing %s: %s", name, strerror(errno));
}

/* The reaper thread: removes trash[] in order; when asked to stop, empties it first. */
static void *seg_reaper(void *arg)
{
    struct store_segs *g = arg;
    pthread_setname_np(pthread_self(), "store-reaper");
    pthread_mutex_lock(&g->reap_mu);
    for (;;) {
        while (g->trash_n == 0 && !g->reap_stop)
            pthread_cond_wait(&g->reap_cv, &g->reap_mu);
        if (g->trash_n == 0) break;
        struct store_seg_file f = g->trash[0];
        memmove(g->trash, g->trash + 1, --g->trash_n * sizeof *g->trash);
        g->reap_busy = true;
        pthread_mutex_unlock(&g->reap_mu);
        seg_remove(g, f);
        pthread_mutex_lock(&g->reap_mu);
        g->reap_busy = false;
        pthread_cond_broadcast(&g->reap_cv); /* store_seg_reap_wait */
    }
    pthread_mutex_unlock(&g->reap_mu);
    return NULL;
}

/* Hands gone[0..n) to the reaper (started on first use). Without memory or a thread they
 * are removed here, as before the reaper existed. */
static void seg_trash(struct store_segs *g, const struct store_seg_file *gone, size_t n)
{
    pthread_mutex_lock(&g->reap_mu);
    bool ok = true;
    if (g->trash_n + n > g->trash_cap) {
        size_t ncap = g->trash_cap ? g->trash_cap : 16;
        while (ncap < g->trash_n + n)
            ncap *= 2;
        struct store_seg_file *nt = realloc(g->trash, ncap * sizeof *nt);
        ok = nt != NULL;
        if (ok) {
            g->trash = nt;
            g->trash_cap = ncap;
        }
    }
    if (ok && !g->reap_started) {
        ok = pthread_create(&g->reap_th, NULL, seg_reaper, g) == 0;
        g->reap_started = ok;
    }
    if (ok) {
        memcpy(g->trash + g->trash_n, gone, n * sizeof *gone);
        g->trash_n += n;
        pthread_cond_broadcast(&g->reap_cv);
    }
    pthread_mutex_unlock(&g->reap_mu);
    for (size_t i = 0; !ok && i < n; i++)
        seg_remove(g, gone[i]);
}

/* Drops every segment with seq < below except the current one: out of files[] under the
 * write lock (a reader holds the read lock from its lookup to the end of its pread, so none
 * still reads one), then to the reaper. */
static void seg_drop_below(struct store *s, uint64_t below)
{
    struct store_segs *g = &s->segs;
    size_t k = 0;
    while (k + 1 < g->n && g->files[k].seq < below)
        k++;
    if (k == 0) return;
    pthread_rwlock_wrlock(&g->lock);
    struct store_seg_file gone[64];
    size_t ng = k < 64 ? k : 64; /* at most 64 per call: the rest go next time */
    memcpy(gone, g->files, ng * sizeof *gone);
    memmove(g->files, g->files + ng, (g->n - ng) * sizeof *g->files);
    g->n -= ng;
    pthread_rwlock_unlock(&g->lock);
    seg_trash(g, gone, ng);
}

void store_seg_set_reap_hook(struct store *s, void (*hook)(void *ctx, uint64_t seq), void *ctx)
{
    pthread_mutex_lock(&s->segs.reap_mu);
    s->segs.reap_hook = hook;
    s->segs.reap_hook_ctx = ctx;
    pthread_mutex_unlock(&s->segs.reap_mu);
}

void store_seg_reap_wait(struct store *s)
{
    struct store_segs *g = &s->segs;
    pthread_mutex_lock(&g->reap_mu);
    while (g->trash_n > 0 || g->reap_busy)
        pthread_cond_wait(&g->reap_cv, &g->reap_mu);
    pthread_mutex_unlock(&g->reap_mu);
}

/* Stops the reaper once trash[] is empty (close completes the pending removals: a few
 * files; whatever a crash leaves is store_seg_recover's). */
static void seg_reaper_join(struct store_segs *g)
{
    if (!g->reap_started) return;
    pthread_mutex_lock(&g->reap_mu);
    g->reap_stop = true;
    pthread_cond_broadcast(&g->reap_cv);
    pthread_mutex_unlock(&g->reap_mu);
    pthread_join(g->reap_th, NULL);
    g->reap_started = false;
    g->reap_stop = false;
}

void store_seg_drop_compacted(struct store *s)
{
    if (s->segs.n < 2) return;
    DBC *c = NULL;
    if (s->log->cursor(s->log, NULL, &c, 0) != 0) return;
    uint8_t k[8], v[STORE_HDR_BYTES];
    DBT key = {.data = k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    int ret = c->get(c, &key, &val, DB_FIRST);
    c->close(c);
    struct store_hdr h;
    if (ret == DB_NOTFOUND)
        seg_drop_below(s, UINT64_MAX);
    else if (ret == 0 && key.size == sizeof k &&
             store_hdr_decode(store_key_index(k), v, val.size, &h) == 0 && h.version == 2)
        seg_drop_below(s, h.pos.seg);
    /* A version-1 first record names no segment: nothing older than it can exist. */
}

int store_seg_drop_all(struct store *s)
{
    struct store_segs *g = &s->segs;
    int e = seg_create(s, g->files[g->n - 1].seq + 1);
    if (e) return store_bdb_err(e, "creating a segment", NULL, 0);
    while (g->n > 1)
        seg_drop_below(s, UINT64_MAX);
    return 0;
}

/* ---- recovery at open ---- */

static bool seg_pos_lt(struct store_segpos a, struct store_segpos b)
{
    return a.seg < b.seg || (a.seg == b.seg && a.off < b.off);
}

/* 0: intact; -1: torn (missing, short or bad CRC); else ERR_IO/ERR_NOMEM (open fails). */
static int seg_payload_check(struct store *s, const struct store_hdr *h)
{
    if (h->len == 0) return 0;
    uint8_t *buf = malloc(h->len);
    if (!buf) return ERR_NOMEM;
    char msg[128];
    int rv = store_seg_read(s, h->pos, h->len, buf, msg, sizeof msg);
    if (rv == 0)
        rv = store_crc(buf, h->len) == h->payload_crc ? 0 : -1;
    else if (rv == ERR_CORRUPT || rv == ERR_NOTFOUND)
        rv = -1;
    free(buf);
    return rv;
}

/* Walks log.db back from its end over the entries beyond the snapshot point that lie at or
 * after the durable position: *cut gets the lowest index whose payload is bad (0: none). */
static int seg_find_torn(struct store *s, raft_index snap, struct store_segpos durable,
                         raft_index *cut)
{
    *cut = 0;
    DBC *c = NULL;
    int ret = s->log->cursor(s->log, NULL, &c, 0);
    if (ret) return ret;
    uint8_t k[8], v[STORE_HDR_BYTES];
    DBT key = {.data = k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    uint32_t op = DB_LAST;
    while ((ret = c->get(c, &key, &val, op)) == 0) {
        op = DB_PREV;
        if (key.size != sizeof k) break;
        raft_index index = store_key_index(k);
        struct store_hdr h;
        /* A bad header is store_load's to report; a version-1 one predates every segment. */
        if (index <= snap || store_hdr_decode(index, v, val.size, &h) != 0 || h.version != 2 ||
            seg_pos_lt(h.pos, durable))
            break;
        int chk = seg_payload_check(s, &h);
        if (chk < 0) *cut = index;
        if (chk > 0) {
            c->close(c);
            return chk == ERR_NOMEM ? ENOMEM : EIO;
        }
    }
    c->close(c);
    return ret == DB_NOTFOUND || ret == DB_BUFFER_SMALL ? 0 : ret;
}

/* The current segment's end: after the payload of the last log.db header when that one lies
 * in it (headers name non-decreasing positions), else 0. A BDB return code. */
static int seg_find_end(struct store *s)
{
    struct store_segs *g = &s->segs;
    DBC *c = NULL;
    int ret = s->log->cursor(s->log, NULL, &c, 0);
    if (ret) return ret;
    uint8_t k[8], v[STORE_HDR_BYTES];
    DBT key = {.data = k, .ulen = sizeof k, .flags = DB_DBT_USERMEM};
    DBT val = {.data = v, .ulen = sizeof v, .flags = DB_DBT_USERMEM};
    ret = c->get(c, &key, &val, DB_LAST);
    c->close(c);
    struct store_hdr h;
    g->end = 0;
    if (ret == 0 && key.size == sizeof k &&
        store_hdr_decode(store_key_index(k), v, val.size, &h) == 0 && h.version == 2 &&
        h.pos.seg == g->files[g->n - 1].seq)
        g->end = h.pos.off + h.len;
    /* A bad last header is store_load's to report; appending after it stays harmless. */
    return ret == DB_NOTFOUND || ret == DB_BUFFER_SMALL ? 0 : ret;
}

static int seg_cut_log(struct store *s, raft_index from)
{
    DB_TXN *txn = NULL;
    int ret = s->env->txn_begin(s->env, NULL, &txn, 0);
    if (ret) return ret;
    ret = store_truncate_db(s->log, txn, from);
    if (ret) {
        txn->abort(txn);
        return ret;
    }
    return txn->commit(txn, DB_TXN_SYNC);
}

int store_seg_recover(struct store *s, char *err, size_t err_len)
{
    struct store_segpos durable;
    bool found;
    raft_index snap;
    raft_term sterm;
    int rv = seg_get_durable(s, &durable, err, err_len);
    if (rv == 0) rv = store_snap_read(s, &found, &snap, &sterm, NULL, err, err_len);
    if (rv) return rv;
    raft_index cut = 0;
    int ret = seg_find_torn(s, snap, durable, &cut);
    if (ret == 0 && cut) {
        LOG_WARN("storage: entries from %llu have no intact payload (a last batch cut short "
                 "by a crash, never acknowledged): dropping them",
                 (unsigned long long)cut);
        ret = seg_cut_log(s, cut);
    }
    if (ret == 0) ret = seg_find_end(s);
    if (ret) return store_bdb_err(ret, "checking the last batch's payloads", err, err_len);
    store_seg_drop_compacted(s); /* leftovers of a crash between a deletion and its drop */
    return 0;
}
