/* fsm_snap_write.c — the receiver side of InstallSnapshot: parses an untrusted stream in any
 * chunking, checks everything (lengths before buffering, CRCs, order, paths, sizes, SHA-256s)
 * and stages files under raft/snap-in/files/ and metadata in fsm_snapin_*.db. Never touches
 * files/ or the live tables; memory is the hasher's FSS_HASH_SLOTS record buffers.
 *
 * Content is hashed on the hasher's thread (fsm_snap_hasher.h), pipelined with this one:
 * a DATA record's header is CRC-checked here (its content is not: the file's SHA-256 checks
 * it, fsm_snap_fmt.h), its write started (from the hasher's buffer it is in)
 * and the same buffer queued for hashing. A file's metadata is staged at its end before its
 * digest is known; nothing staged is installed before fsm_snap_writer_finish, and the END
 * record (also finish) waits for every digest: a mismatch fails the stream there at the
 * latest (earlier: at the next put after the thread found it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsm_snap_int.h"
#include "log.h"
#include "rassert.h"

#define FSS_TXN_OPS 512 /* staged puts per BDB transaction */
/* Staged files are written with O_DIRECT: bulk data nobody reads before the install, and on
 * these VMs copying it into the page cache costs ~1.3-1.8 s of CPU per GiB (plus writeback)
 * against ~0.2 s for direct I/O. Buffers, file offsets and lengths must be multiples of the
 * logical block size; 4096 covers every common device. A file's unaligned tail, or a file
 * system without O_DIRECT, falls back to buffered writes (syncfs at the install covers both). */
/* No file in a snapshot can be bigger than a command body (a blob's u32 length). */
#define FSS_FILE_MAX UINT32_MAX

/* Fails the writer for good (the first error sticks); seq names the record at fault. */
static int wr_fail_at(struct fsm_snap_writer *w, uint64_t seq, int rv, const char *why)
{
    if (!w->error) {
        w->error = rv;
        snprintf(w->why, sizeof w->why, "%s", why);
        if (rv == ERR_CORRUPT)
            LOG_WARN("fsm: snapshot stream rejected (record %llu): %s", (unsigned long long)seq,
                     why);
        else
            LOG_ERROR("fsm: staging a snapshot: %s: %s", why, err_str(rv));
    }
    return w->error;
}

static int wr_fail(struct fsm_snap_writer *w, int rv, const char *why)
{
    return wr_fail_at(w, w->seq, rv, why);
}

bool fsm_snap_test_inline_hash;

#define WR_SHA_MISMATCH "file content does not match its SHA-256"

/* The hasher's verdict so far (wait: on everything submitted). */
static int wr_hash_check(struct fsm_snap_writer *w, bool wait)
{
    uint64_t seq;
    bool bad = wait ? fss_hasher_drain(w->hasher, &seq) : fss_hasher_failed(w->hasher, &seq);
    return bad ? wr_fail_at(w, seq, ERR_CORRUPT, WR_SHA_MISMATCH) : w->error;
}

static uint64_t wr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void wr_aio_reuse(struct fsm_snap_writer *w, uint64_t sub);

/* The record buffer (taken from the hasher when none is held: may wait for it, and for the
 * write of its previous payload). */
static uint8_t *wr_buf(struct fsm_snap_writer *w)
{
    if (!w->buf) {
        if (w->n_sub >= FSS_HASH_SLOTS) wr_aio_reuse(w, w->n_sub - FSS_HASH_SLOTS);
        uint64_t t0 = wr_now_ns();
        w->buf = fss_hasher_buf(w->hasher);
        w->wait_hash_ns += wr_now_ns() - t0;
    }
    return w->buf;
}

static int wr_errno(int e)
{
    return e == ENOSPC || e == EDQUOT ? ERR_NOSPACE : ERR_IO;
}

/* The staging transaction, begun on first use and committed every FSS_TXN_OPS puts. */
static int wr_txn(struct fsm_snap_writer *w, DB_TXN **txn)
{
    if (w->txn && w->txn_ops >= FSS_TXN_OPS) {
        int rv = fsm_snap_writer_flush(w);
        if (rv) return rv;
    }
    if (!w->txn) {
        int rv = fsm_db_begin(&w->db, &w->txn);
        if (rv) return rv;
    }
    w->txn_ops++;
    *txn = w->txn;
    return 0;
}

int fsm_snap_writer_flush(struct fsm_snap_writer *w)
{
    if (!w->txn) return 0;
    int rv = fsm_db_commit(w->txn, false);
    w->txn = NULL;
    w->txn_ops = 0;
    return rv;
}

/* Resolves path for a *at() call in the staged tree (fsm_path_at). Returns an errno. */
static int wr_at(struct fsm_snap_writer *w, const char *path, size_t len, int *dirfd,
                 const char **leaf, int *tmp_fd)
{
    return fsm_path_at(w->stage_fd, path, len, dirfd, leaf, tmp_fd);
}

/* mkdir -p of path's parents in the staged tree (only ever directories we made). */
static int wr_mkparents(struct fsm_snap_writer *w, const char *path, size_t len)
{
    char buf[PATH_MAX];
    for (size_t i = 0; i < len && i < sizeof buf; i++) {
        if (path[i] != '/') continue;
        memcpy(buf, path, i);
        buf[i] = '\0';
        if (mkdirat(w->stage_fd, buf, 0755) != 0 && errno != EEXIST) return errno;
    }
    return 0;
}

/* Allocates the new file's blocks (w->size) before its writes: ext4 runs O_DIRECT writes
 * that extend a file, or fill holes, one at a time under the inode's lock (and synchronously
 * when queued), but writes into allocated (unwritten) extents concurrently. Also gives the
 * file one contiguous extent. Optional: a file system without fallocate just goes on. */
static int wr_preallocate(struct fsm_snap_writer *w)
{
    if (w->size == 0 || fallocate(w->fd, 0, 0, (off_t)w->size) == 0) return 0;
    return errno == ENOSPC || errno == EDQUOT || errno == EIO ? errno : 0;
}

/* Puts the file at dirfd/leaf: the spare `spare` renamed there (never over an existing name,
 * like O_EXCL), or a new file when spare is NULL. Opens it for writing into w->fd; an errno. */
static int wr_place(struct fsm_snap_writer *w, const char *spare, int dirfd, const char *leaf)
{
    int fl = O_WRONLY | O_NOFOLLOW | O_CLOEXEC;
    if (spare) {
        if (renameat2(w->stage_dir_fd, spare, dirfd, leaf, RENAME_NOREPLACE) != 0) return errno;
    } else {
        fl |= O_CREAT | O_EXCL;
    }
    w->fd = openat(dirfd, leaf, fl | (w->no_direct ? 0 : O_DIRECT), 0644);
    if (w->fd < 0 && errno == EINVAL && !w->no_direct) {
        LOG_INFO("fsm: snapshot staging: no O_DIRECT here, writing through the cache");
        w->no_direct = true;
        w->fd = openat(dirfd, leaf, fl, 0644);
    }
    w->fd_direct = w->fd >= 0 && !w->no_direct;
    if (w->fd < 0) return errno;
    return wr_preallocate(w);
}

/* A new file at path in the staged tree (validated, sorted, conflict-free): a spare renamed
 * into place when one is ready (fsm_snap_spare.h), else created here. */
static int wr_create(struct fsm_snap_writer *w, const char *path, size_t len)
{
    char spare_buf[FSS_SPARE_NAME_MAX];
    const char *spare = fss_spares_take(w->spares, spare_buf) ? spare_buf : NULL;
    if (spare) w->spares_used++;
    int e = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int dirfd, tmp_fd;
        const char *leaf;
        e = wr_at(w, path, len, &dirfd, &leaf, &tmp_fd);
        if (e == 0) e = wr_place(w, spare, dirfd, leaf);
        if (tmp_fd >= 0) close(tmp_fd);
        if (e != ENOENT || attempt > 0) break;
        e = wr_mkparents(w, path, len);
        if (e) break;
    }
    if (e) return wr_fail(w, wr_errno(e), "creating a staged file");
    return 0;
}

/* Removes the staged file at path (a copy caught before the sender deleted it). */
static int wr_unlink(struct fsm_snap_writer *w, const char *path, size_t len)
{
    int dirfd, tmp_fd;
    const char *leaf;
    int e = wr_at(w, path, len, &dirfd, &leaf, &tmp_fd);
    if (e == 0 && unlinkat(dirfd, leaf, 0) != 0) e = errno;
    if (tmp_fd >= 0) close(tmp_fd);
    return e ? wr_fail(w, wr_errno(e), "removing a staged file") : 0;
}

/* A staged file that is a proper prefix of path conflicts with it: at most one of them
 * existed at any moment at the sender, and the one with the lower index was deleted there
 * inside the window. Keep the newer: drop the staged one, or skip the new one. */
static int wr_resolve_conflict(struct fsm_snap_writer *w, const char *path, size_t len,
                               raft_index index)
{
    for (;;) {
        size_t plen;
        struct fsm_meta m;
        DB_TXN *txn;
        int rv = wr_txn(w, &txn);
        if (rv == 0) rv = fsm_db_meta_prefix_file(&w->db, txn, path, len, &plen, &m);
        if (rv == ERR_NOTFOUND) return 0;
        if (rv) return wr_fail(w, rv, "staged metadata");
        if (m.index == index) return wr_fail(w, ERR_CORRUPT, "two files of one index");
        if (m.index > index) {
            w->skip = true;
            return 0;
        }
        rv = fsm_db_meta_del(&w->db, txn, path, plen);
        if (rv) return wr_fail(w, rv, "staged metadata");
        char prefix[FSPATH_MAX + 1];
        memcpy(prefix, path, plen);
        prefix[plen] = '\0';
        rv = wr_unlink(w, prefix, plen);
        if (rv) return rv;
    }
}

/* The file's last byte was written (or its write queued): close it (the writes in flight
 * hold their own fds; their errors stick in w->error when waited for) and stage its
 * metadata. Its content is checked by the hasher (an empty one's here). */
static int wr_file_done(struct fsm_snap_writer *w)
{
    w->in_file = false;
    if (w->error) return w->error;
    if (w->fd >= 0) {
        int e = close(w->fd) != 0 ? errno : 0;
        w->fd = -1;
        if (e) return wr_fail(w, wr_errno(e), "closing a staged file");
    }
    if (w->skip) return 0;
    struct fsm_meta m = {.size = w->size, .index = w->findex};
    memcpy(m.sha256, w->want_sha, FSM_SHA256_LEN);
    DB_TXN *txn;
    int rv = wr_txn(w, &txn);
    if (rv == 0) rv = fsm_db_meta_put(&w->db, txn, w->path, w->path_len, &m);
    return rv ? wr_fail(w, rv, "staged metadata") : 0;
}

static bool wr_path_after(const struct fsm_snap_writer *w, const char *p, size_t len)
{
    if (!w->have_path) return true;
    size_t n = len < w->path_len ? len : w->path_len;
    int c = memcmp(w->path, p, n);
    return c < 0 || (c == 0 && len > w->path_len);
}

static int wr_rec_file(struct fsm_snap_writer *w, const uint8_t *p, size_t len)
{
    if (w->in_file || w->in_dedup || len < FSS_FILE_FIXED)
        return wr_fail(w, ERR_CORRUPT, "misplaced or short FILE record");
    raft_index index = fsm_be_get64(p);
    uint64_t size = fsm_be_get64(p + 8);
    size_t plen = ((size_t)p[16 + FSM_SHA256_LEN] << 8) | p[17 + FSM_SHA256_LEN];
    const char *path = (const char *)p + FSS_FILE_FIXED;
    if (plen != len - FSS_FILE_FIXED || fspath_validate(path, plen, NULL, 0) != 0)
        return wr_fail(w, ERR_CORRUPT, "bad path");
    if (!wr_path_after(w, path, plen)) return wr_fail(w, ERR_CORRUPT, "paths out of order");
    if (index == 0 || size > FSS_FILE_MAX) return wr_fail(w, ERR_CORRUPT, "bad file size or index");
    memcpy(w->path, path, plen);
    w->path[plen] = '\0';
    w->path_len = plen;
    w->have_path = true;
    w->in_file = true;
    w->skip = false;
    w->findex = index;
    w->size = size;
    w->written = 0;
    memcpy(w->want_sha, p + 16, FSM_SHA256_LEN);
    if (size == 0) {
        uint8_t sha[FSM_SHA256_LEN];
        fsm_sha256((const uint8_t *)"", 0, sha);
        if (memcmp(sha, w->want_sha, FSM_SHA256_LEN) != 0)
            return wr_fail(w, ERR_CORRUPT, WR_SHA_MISMATCH);
    }
    if (index > w->max_index) w->max_index = index;
    w->n_files++;
    int rv = wr_resolve_conflict(w, w->path, plen, index);
    if (rv == 0 && !w->skip) rv = wr_create(w, w->path, plen);
    if (rv == 0 && size == 0) rv = wr_file_done(w);
    return rv;
}

static int wr_aio_wait(struct fsm_snap_writer *w);

/* Drops O_DIRECT from fd's open file description, shared by every dup of file number `file`
 * (n_files when it was received): the rest of that file goes through the page cache.
 * Buffered and direct writes of one file must not overlap in time, so every write in flight
 * is waited for first (rare: an unaligned tail, a short write, a device that wants a larger
 * alignment). w->fd_direct follows the description when it is the current file's. */
static int wr_buffered(struct fsm_snap_writer *w, int fd, uint64_t file)
{
    if (wr_aio_wait(w)) return w->error;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
        return wr_fail(w, wr_errno(errno), "clearing O_DIRECT");
    if (file == w->n_files && w->fd >= 0) w->fd_direct = false;
    return 0;
}

/* How many of the n bytes at p (file offset off) can go out with O_DIRECT: whole blocks
 * from an aligned buffer at an aligned offset; 0 when the rest must be buffered. */
static size_t wr_direct_len(const uint8_t *p, uint64_t off, size_t n)
{
    if ((uintptr_t)p % FSS_DIO_ALIGN || off % FSS_DIO_ALIGN) return 0;
    return n - n % FSS_DIO_ALIGN;
}

/* Writes p[0..len) at offset pos of fd, a dup of file number `file`'s fd (O_DIRECT while
 * *direct), synchronously. */
static int wr_pwrite_fd(struct fsm_snap_writer *w, int fd, uint64_t file, bool *direct,
                        const uint8_t *p, size_t len, uint64_t pos)
{
    for (size_t off = 0; off < len;) {
        size_t n = len - off;
        if (*direct) {
            size_t d = wr_direct_len(p + off, pos + off, n);
            if (d == 0 && wr_buffered(w, fd, file)) return w->error;
            *direct = d != 0;
            if (d) n = d;
        }
        ssize_t k = pwrite(fd, p + off, n, (off_t)(pos + off));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EINVAL && *direct) {
            /* The device wants a larger alignment: go buffered for this file. */
            if (wr_buffered(w, fd, file)) return w->error;
            *direct = false;
            continue;
        }
        if (k <= 0) return wr_fail(w, wr_errno(k < 0 ? errno : ENOSPC), "writing a staged file");
        off += (size_t)k;
    }
    return 0;
}

/* The current file's bytes p[0..len) at pos, synchronously. */
static int wr_pwrite(struct fsm_snap_writer *w, const uint8_t *p, size_t len, uint64_t pos)
{
    return wr_pwrite_fd(w, w->fd, w->n_files, &w->fd_direct, p, len, pos);
}

const struct fss_aio_test *fsm_snap_test_aio;

/* The native-AIO calls (or a test's, fsm_snap_test_aio). */
static long wr_io_getevents(struct fsm_snap_writer *w, long min, long max, struct io_event *ev)
{
    if (w->test_aio && w->test_aio->getevents) return w->test_aio->getevents(min, max, ev);
    return syscall(SYS_io_getevents, w->aio_ctx, min, max, ev, NULL);
}

static long wr_io_submit(struct fsm_snap_writer *w, struct iocb *a)
{
    if (w->test_aio && w->test_aio->submit) return w->test_aio->submit(a);
    struct iocb *list[1] = {a};
    return syscall(SYS_io_submit, w->aio_ctx, 1L, list);
}

static int wr_dup(struct fsm_snap_writer *w, int fd)
{
    if (w->test_aio && w->test_aio->dup) return w->test_aio->dup(fd);
    return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* The fsm's AIO context, set up by its first writer (io_destroy costs an RCU grace period,
 * so it lives until fsm_close). 0 when the kernel has none to give (EAGAIN: fs.aio-max-nr;
 * the next writer tries again): synchronous writes. */
static aio_context_t wr_aio_ctx(struct fsm *f)
{
    if (f->snap_aio == 0) {
        aio_context_t ctx = 0;
        if (syscall(SYS_io_setup, (unsigned)FSS_AIO_DEPTH, &ctx) != 0) {
            LOG_DEBUG("fsm: snapshot staging: no native AIO (%s): synchronous writes",
                      strerror(errno));
            return 0;
        }
        f->snap_aio = ctx;
    }
    return f->snap_aio;
}

void fsm_snap_aio_close(struct fsm *f)
{
    ASSERT(!f->writer_open);
    if (f->snap_aio) syscall(SYS_io_destroy, (aio_context_t)f->snap_aio);
    f->snap_aio = 0;
}

/* io_getevents failed (it cannot, short of a bug): io_destroy waits for every write in flight
 * (their buffers are free again), and the next writer sets up a new context. */
static void wr_aio_ctx_lost(struct fsm_snap_writer *w)
{
    if (w->aio_ctx && w->aio_ctx == w->f->snap_aio) { /* not a test's stand-in */
        syscall(SYS_io_destroy, w->aio_ctx);
        w->f->snap_aio = 0;
    }
    w->aio_ctx = 0;
}

/* Reaps completions until write i's is in (others' are kept for their own waits). On an
 * impossible failure of io_getevents, io_destroy waits for every write in flight and they
 * all count as failed (their buffers are free again either way). */
static void wr_aio_reap(struct fsm_snap_writer *w, unsigned i)
{
    while (w->aio_busy[i] && !w->aio_done[i]) {
        struct io_event ev[FSS_AIO_DEPTH];
        long n = wr_io_getevents(w, 1, FSS_AIO_DEPTH, ev);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            LOG_ERROR("fsm: snapshot staging: io_getevents: %s", strerror(errno));
            wr_aio_ctx_lost(w);
            for (unsigned k = 0; k < FSS_AIO_DEPTH; k++)
                if (w->aio_busy[k] && !w->aio_done[k]) {
                    w->aio_done[k] = true;
                    w->aio_res[k] = -EIO;
                }
            return;
        }
        for (long k = 0; k < n; k++) {
            unsigned j = (unsigned)ev[k].data;
            ASSERT(j < FSS_AIO_DEPTH && w->aio_busy[j]);
            w->aio_done[j] = true;
            w->aio_res[j] = ev[k].res;
        }
    }
}

static void wr_aio_close(struct fsm_snap_writer *w, unsigned i)
{
    if (w->aio_fd[i] >= 0) close(w->aio_fd[i]);
    w->aio_fd[i] = -1;
    w->aio_busy[i] = w->aio_done[i] = false;
}

/* Waits until no write is in flight, outcomes dropped (the writer is being freed). */
static void wr_aio_drain(struct fsm_snap_writer *w)
{
    for (unsigned i = 0; i < FSS_AIO_DEPTH; i++) {
        wr_aio_reap(w, i);
        wr_aio_close(w, i);
    }
}

/* Write i's bytes from done on, synchronously through its fd (O_DIRECT while it can: its
 * description may have gone buffered already). */
static void wr_aio_redo(struct fsm_snap_writer *w, unsigned i, size_t done)
{
    const struct iocb *a = &w->aio[i];
    uint64_t pos = (uint64_t)a->aio_offset;
    int fl = fcntl(w->aio_fd[i], F_GETFL);
    if (fl < 0) {
        wr_fail(w, wr_errno(errno), "writing a staged file");
        return;
    }
    bool direct = (fl & O_DIRECT) != 0;
    for (unsigned k = 0; k < a->aio_nbytes && !w->error; k++) {
        const struct iovec *v = &w->aio_iov[i][k];
        size_t skip = done < v->iov_len ? done : v->iov_len;
        done -= skip;
        if (skip < v->iov_len)
            wr_pwrite_fd(w, w->aio_fd[i], w->aio_file[i], &direct,
                         (const uint8_t *)v->iov_base + skip, v->iov_len - skip, pos + skip);
        pos += v->iov_len;
    }
}

static size_t wr_aio_len(const struct fsm_snap_writer *w, unsigned i)
{
    size_t len = 0;
    for (unsigned k = 0; k < w->aio[i].aio_nbytes; k++)
        len += w->aio_iov[i][k].iov_len;
    return len;
}

/* Waits for write i, if in flight, and closes its fd: a short one is finished and one the
 * device refused as misaligned (EINVAL) is redone, synchronously (buffered if need be). */
static int wr_aio_wait_one(struct fsm_snap_writer *w, unsigned i)
{
    if (!w->aio_busy[i]) return w->error;
    uint64_t t0 = wr_now_ns();
    wr_aio_reap(w, i);
    w->wait_disk_ns += wr_now_ns() - t0;
    w->aio_busy[i] = w->aio_done[i] = false; /* done: a redo going buffered waits for the rest */
    int64_t res = w->aio_res[i];
    size_t len = wr_aio_len(w, i), done = res > 0 ? (size_t)res : 0;
    if (!w->error && done != len) {
        if (res < 0 && res != -EINVAL)
            wr_fail(w, wr_errno((int)-res), "writing a staged file");
        else
            wr_aio_redo(w, i, done);
    }
    wr_aio_close(w, i);
    return w->error;
}

/* Waits for every write in flight (each one's outcome; the first error sticks). */
static int wr_aio_wait(struct fsm_snap_writer *w)
{
    for (unsigned i = 0; i < FSS_AIO_DEPTH; i++)
        wr_aio_wait_one(w, i);
    return w->error;
}

/* Waits for the write of hasher submission `sub` (its buffer is about to be reused). */
static void wr_aio_reuse(struct fsm_snap_writer *w, uint64_t sub)
{
    ASSERT(w->grp_n == 0 || w->grp_first > sub);
    for (unsigned i = 0; i < FSS_AIO_DEPTH; i++)
        if (w->aio_busy[i] && w->aio_first[i] <= sub) wr_aio_wait_one(w, i);
}

/* Sends the gathered group (aligned, whole blocks) as one write, after the write issued
 * FSS_AIO_DEPTH before it. Synchronous when the system cannot queue it. */
static int wr_grp_submit(struct fsm_snap_writer *w)
{
    unsigned n = w->grp_n, i = w->aio_next;
    w->grp_n = 0;
    if (n == 0 || wr_aio_wait_one(w, i)) return w->error;
    w->n_writes++;
    struct iocb *a = &w->aio[i];
    memset(a, 0, sizeof *a);
    memcpy(w->aio_iov[i], w->grp, n * sizeof w->grp[0]);
    a->aio_data = i;
    a->aio_lio_opcode = IOCB_CMD_PWRITEV;
    a->aio_buf = (uint64_t)(uintptr_t)w->aio_iov[i];
    a->aio_nbytes = n;
    a->aio_offset = (int64_t)w->grp_off;
    w->aio_file[i] = w->n_files;
    w->aio_fd[i] = w->aio_ctx ? wr_dup(w, w->fd) : -1;
    a->aio_fildes = (uint32_t)w->aio_fd[i];
    /* Synchronous when no fd is left to dup (EMFILE) or the kernel refuses the submission:
     * the group's buffers are still reused only by submission number (wr_buf). */
    if (w->aio_fd[i] < 0 || wr_io_submit(w, a) != 1) {
        if (w->aio_fd[i] < 0) w->aio_fd[i] = w->fd;
        wr_aio_redo(w, i, 0);
        if (w->aio_fd[i] == w->fd) w->aio_fd[i] = -1;
        wr_aio_close(w, i);
        return w->error;
    }
    w->aio_first[i] = w->grp_first;
    w->aio_busy[i] = true;
    w->aio_next = (i + 1) % FSS_AIO_DEPTH;
    return 0;
}

/* Writes one DATA record's payload, in buf (hasher submission n_sub - 1), at the current file
 * offset: gathered into the group, sent when it is full or the file ends. */
static int wr_data_out(struct fsm_snap_writer *w, size_t len)
{
    bool aligned = len % FSS_DIO_ALIGN == 0 && w->written % FSS_DIO_ALIGN == 0;
    if (!w->fd_direct || !aligned) {
        /* Buffered and direct writes of one file must not overlap in time. */
        if (wr_grp_submit(w) || wr_aio_wait(w)) return w->error;
        return wr_pwrite(w, w->buf, len, w->written);
    }
    if (w->grp_n == 0) {
        w->grp_off = w->written;
        w->grp_first = w->n_sub - 1;
    }
    w->grp[w->grp_n++] = (struct iovec){.iov_base = w->buf, .iov_len = len};
    if (w->grp_n == FSS_AIO_GROUP || w->written + len == w->size) return wr_grp_submit(w);
    return 0;
}

static int wr_rec_data(struct fsm_snap_writer *w, const uint8_t *p, size_t len)
{
    if (!w->in_file || len == 0 || len > w->size - w->written)
        return wr_fail(w, ERR_CORRUPT, "DATA record beyond its file");
    /* A record that came whole in the caller's bytes is copied into the record buffer, where
     * the hasher and an O_DIRECT write can read it after put returns (much cheaper than the
     * page cache's copy). */
    if (p != w->buf) memcpy(wr_buf(w), p, len);
    bool last = w->written + len == w->size;
    /* Hashing first: the thread starts while this one issues the write. */
    fss_hasher_submit(w->hasher, len, last ? w->want_sha : NULL, w->seq);
    w->n_sub++;
    int rv = w->skip ? 0 : wr_data_out(w, len);
    w->buf = NULL; /* the write in flight and the hasher have it */
    if (rv) return rv;
    w->written += len;
    w->bytes += len;
    return w->written == w->size ? wr_file_done(w) : 0;
}

static bool wr_status_ok(int status)
{
    return status == 0 || status == ERR_NOTFOUND || status == ERR_EXISTS;
}

static int wr_rec_dedup(struct fsm_snap_writer *w, const uint8_t *p, size_t len)
{
    if (w->in_file || len < 2) return wr_fail(w, ERR_CORRUPT, "misplaced DEDUP record");
    size_t n = ((size_t)p[0] << 8) | p[1];
    if (n == 0 || n > FSS_DEDUP_N || len != 2 + n * FSS_DEDUP_ONE)
        return wr_fail(w, ERR_CORRUPT, "bad DEDUP record length");
    w->in_dedup = true;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *q = p + 2 + i * FSS_DEDUP_ONE + FSM_REQ_ID_LEN;
        struct fsm_result res = {.index = fsm_be_get64(q), .status = q[8], .created = q[9]};
        res.size = fsm_be_get64(q + 10);
        memcpy(res.sha256, q + 18, FSM_SHA256_LEN);
        if (res.index <= w->last_dedup || !wr_status_ok(res.status) || q[9] > 1)
            return wr_fail(w, ERR_CORRUPT, "bad dedup record");
        w->last_dedup = res.index;
        if (res.index > w->max_index) w->max_index = res.index;
        DB_TXN *txn;
        int rv = wr_txn(w, &txn);
        if (rv == 0) rv = fsm_db_dedup_put_raw(&w->db, txn, q - FSM_REQ_ID_LEN, &res);
        if (rv) return wr_fail(w, rv, "staged dedup records");
        w->n_dedup++;
    }
    return 0;
}

static int wr_rec_hdr(struct fsm_snap_writer *w, const uint8_t *p, size_t len)
{
    if (len < FSS_HDR_FIXED || memcmp(p, FSS_MAGIC, 8) != 0)
        return wr_fail(w, ERR_CORRUPT, "not a snapshot stream");
    uint32_t version = fss_get32(p + 8);
    if (version != FSS_VERSION) {
        /* Another release's sender: its records may be checked differently (version 1 CRCs
         * DATA content): refused before any of them is parsed. */
        char why[128];
        snprintf(why, sizeof why,
                 "stream format version %u, this node reads only version %u (nodes of "
                 "different releases?)",
                 version, FSS_VERSION);
        return wr_fail(w, ERR_CORRUPT, why);
    }
    uint32_t clen = fss_get32(p + 28);
    if (clen != len - FSS_HDR_FIXED) return wr_fail(w, ERR_CORRUPT, "bad header length");
    w->meta.index = fsm_be_get64(p + 12);
    w->meta.term = fsm_be_get64(p + 20);
    if (clen) {
        w->meta.conf = raft_blob_new(clen);
        if (!w->meta.conf) return wr_fail(w, ERR_NOMEM, "configuration");
        memcpy(w->meta.conf->data, p + FSS_HDR_FIXED, clen);
    }
    w->have_hdr = true;
    return 0;
}

static int wr_rec_end(struct fsm_snap_writer *w, const uint8_t *p, size_t len)
{
    if (w->in_file || len != FSS_END_LEN) return wr_fail(w, ERR_CORRUPT, "misplaced END record");
    raft_index end = fsm_be_get64(p);
    if (end < w->meta.index || end - w->meta.index > FSM_DEDUP_WINDOW || w->max_index > end)
        return wr_fail(w, ERR_CORRUPT, "bad end index");
    if (fsm_be_get64(p + 8) != w->n_files || fsm_be_get64(p + 16) != w->n_dedup ||
        fsm_be_get64(p + 24) != w->bytes)
        return wr_fail(w, ERR_CORRUPT, "counts do not match");
    if (wr_grp_submit(w) || wr_aio_wait(w) || wr_hash_check(w, true)) return w->error;
    w->meta.index_end = end;
    w->finished = true;
    return 0;
}

/* One whole, CRC-checked record. */
static int wr_record(struct fsm_snap_writer *w, uint8_t type, const uint8_t *p, size_t len)
{
    if (!w->have_hdr && type != FSS_HDR) return wr_fail(w, ERR_CORRUPT, "no header");
    switch (type) {
    case FSS_HDR:
        return w->have_hdr ? wr_fail(w, ERR_CORRUPT, "second header") : wr_rec_hdr(w, p, len);
    case FSS_FILE:
        return wr_rec_file(w, p, len);
    case FSS_DATA:
        return wr_rec_data(w, p, len);
    case FSS_DEDUP:
        return wr_rec_dedup(w, p, len);
    case FSS_END:
        return wr_rec_end(w, p, len);
    default:
        return wr_fail(w, ERR_CORRUPT, "unknown record type");
    }
}

/* Checks a record header; the payload + CRC length to expect. */
static int wr_header(struct fsm_snap_writer *w, const uint8_t *h, size_t *need)
{
    size_t len = fss_get32(h);
    if (len > fss_max_payload(h[4])) return wr_fail(w, ERR_CORRUPT, "bad record length or type");
    *need = len + FSS_REC_CRC;
    return 0;
}

/* Payload p[0..len) + CRC after it, for the header h. */
static int wr_checked(struct fsm_snap_writer *w, const uint8_t *h, const uint8_t *p, size_t len)
{
    if (fss_crc(w->seq, h, p, len) != fss_get32(p + len))
        return wr_fail(w, ERR_CORRUPT, "CRC mismatch");
    int rv = wr_record(w, h[4], p, len);
    w->seq++;
    return rv;
}

int fsm_snap_writer_put(struct fsm_snap_writer *w, const uint8_t *data, size_t len)
{
    ASSERT(w && (data || len == 0));
    uint64_t t0 = wr_now_ns();
    wr_hash_check(w, false);
    while (len > 0 && !w->error) {
        if (w->finished) return wr_fail(w, ERR_CORRUPT, "bytes after the end");
        if (w->hdr_got == 0 && len >= FSS_REC_HDR) {
            /* A whole record in the caller's bytes: no copy. */
            size_t need;
            if (wr_header(w, data, &need)) break;
            if (len - FSS_REC_HDR >= need) {
                wr_checked(w, data, data + FSS_REC_HDR, need - FSS_REC_CRC);
                data += FSS_REC_HDR + need;
                len -= FSS_REC_HDR + need;
                continue;
            }
        }
        if (w->hdr_got < FSS_REC_HDR) {
            size_t n = FSS_REC_HDR - w->hdr_got < len ? FSS_REC_HDR - w->hdr_got : len;
            memcpy(w->hdr + w->hdr_got, data, n);
            w->hdr_got += n;
            data += n;
            len -= n;
            if (w->hdr_got == FSS_REC_HDR && wr_header(w, w->hdr, &w->need) == 0) w->got = 0;
            continue;
        }
        size_t n = w->need - w->got < len ? w->need - w->got : len;
        memcpy(wr_buf(w) + w->got, data, n);
        w->got += n;
        data += n;
        len -= n;
        if (w->got == w->need) {
            wr_checked(w, w->hdr, w->buf, w->need - FSS_REC_CRC);
            w->hdr_got = 0;
        }
    }
    if (!w->error) {
        int rv = fsm_snap_writer_flush(w);
        if (rv) wr_fail(w, rv, "staged metadata");
    }
    w->put_ns += wr_now_ns() - t0;
    return w->error;
}

int fsm_snap_path(const struct fsm *f, const char *rel, char *out, size_t cap)
{
    return (size_t)snprintf(out, cap, "%s/%s", f->node_dir, rel) < cap ? 0 : ERR_INVALID;
}

/* Empties the staging area: old staged tables dropped, an old staged tree to trash/. */
static int wr_clean(struct fsm_snap_writer *w)
{
    struct fsm *f = w->f;
    int rv = fsm_db_remove_tables(f->db.env, NULL, FSS_STAGE_TABLES);
    if (rv == 0) rv = fsm_snap_trash(f, w->stage, true);
    if (rv) return rv;
    char files[PATH_MAX + 8];
    snprintf(files, sizeof files, "%s/files", w->stage);
    if (mkdir(w->stage, 0755) != 0 || mkdir(files, 0755) != 0) {
        LOG_ERROR("fsm: mkdir %s: %s", files, strerror(errno));
        return wr_errno(errno);
    }
    w->stage_fd = open(files, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    w->stage_dir_fd = open(w->stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return w->stage_fd < 0 || w->stage_dir_fd < 0 ? ERR_IO : 0;
}

int fsm_snap_writer_open(struct fsm *f, struct fsm_snap_writer **out)
{
    ASSERT(f && out);
    *out = NULL;
    if (f->writer_open) return ERR_BUSY;
    struct fsm_snap_writer *w = calloc(1, sizeof *w);
    if (!w || fss_hasher_open(FSS_PAYLOAD_MAX + FSS_REC_CRC, FSS_DIO_ALIGN,
                              !fsm_snap_test_inline_hash, &w->hasher) != 0) {
        free(w);
        return ERR_NOMEM;
    }
    w->f = f;
    w->fd = w->stage_fd = w->stage_dir_fd = -1;
    for (int i = 0; i < FSS_AIO_DEPTH; i++)
        w->aio_fd[i] = -1;
    int rv = fsm_snap_path(f, FSS_STAGE_DIR, w->stage, sizeof w->stage);
    if (rv == 0) rv = wr_clean(w);
    char err[256] = "";
    if (rv == 0) rv = fsm_db_open_tables(&w->db, f->db.env, FSS_STAGE_TABLES, err, sizeof err);
    if (rv) {
        if (err[0]) LOG_ERROR("fsm: snapshot staging: %s", err);
        fsm_snap_writer_free(w);
        return rv;
    }
    w->test_aio = fsm_snap_test_aio;
    if (w->test_aio && (w->test_aio->no_ctx || w->test_aio->submit))
        w->aio_ctx = w->test_aio->no_ctx ? 0 : FSS_AIO_TEST_CTX; /* the test's device */
    else
        w->aio_ctx = wr_aio_ctx(f);
    w->spares = fss_spares_start(w->stage_dir_fd);
    f->writer_open = true;
    *out = w;
    return 0;
}

int fsm_snap_writer_finish(struct fsm_snap_writer *w, struct fsm_snap_meta *out)
{
    ASSERT(w && out);
    memset(out, 0, sizeof *out);
    /* No more files come: no spare is made while the install moves the staging area. */
    fss_spares_stop(w->spares);
    w->spares = NULL;
    if (w->error) return w->error;
    if (!w->finished) return wr_fail(w, ERR_CORRUPT, "stream cut short");
    if (wr_hash_check(w, true)) return w->error; /* END waited already: only belt and braces */
    LOG_INFO("fsm: snapshot staged: %llu files, %.1f MiB; %.2f s in put, of it %.2f s waiting "
             "for the hasher and %.2f s for writes",
             (unsigned long long)w->n_files, (double)w->bytes / (1024.0 * 1024.0),
             (double)w->put_ns / 1e9, (double)w->wait_hash_ns / 1e9, (double)w->wait_disk_ns / 1e9);
    int rv = fsm_snap_writer_flush(w);
    if (rv) return wr_fail(w, rv, "staged metadata");
    *out = w->meta;
    out->conf = raft_blob_ref(w->meta.conf);
    return 0;
}

void fsm_snap_writer_free(struct fsm_snap_writer *w)
{
    /* The writes in flight use hasher buffers (and close their fds); the context stays the
     * fsm's, empty. */
    wr_aio_drain(w);
    if (w->txn) fsm_db_abort(w->txn);
    w->txn = NULL;
    fsm_db_close_tables(&w->db);
    if (w->fd >= 0) close(w->fd);
    fss_spares_stop(w->spares); /* before its directory's fd is closed */
    if (w->stage_fd >= 0) close(w->stage_fd);
    if (w->stage_dir_fd >= 0) close(w->stage_dir_fd);
    raft_blob_unref(w->meta.conf);
    fss_hasher_close(w->hasher); /* stops the thread, then frees the buffers */
    free(w);
}

void fsm_snap_writer_abort(struct fsm_snap_writer *w)
{
    if (!w) return;
    struct fsm *f = w->f;
    char stage[PATH_MAX];
    memcpy(stage, w->stage, sizeof stage);
    f->writer_open = false;
    fsm_snap_writer_free(w);
    if (fsm_db_remove_tables(f->db.env, NULL, FSS_STAGE_TABLES) != 0 ||
        fsm_snap_trash(f, stage, true) != 0)
        LOG_WARN("fsm: snapshot staging area not cleaned (next writer or restart retries)");
}
