/* test_fsm_snap_aio.c — the snapshot receiver's native-AIO write path against a fake device
 * (fsm_snap_test_aio): a submitted write reads its buffers only when it is reaped (as an
 * O_DIRECT AIO write may: the device DMAs from user memory at any time before completion),
 * and a test can make a dup fail (EMFILE), a submission fail (EAGAIN), a completion fail or
 * come back short, or run with no AIO context. Every case installs and compares content. */
#include <dirent.h>
#include <errno.h>
#include <zlib.h>

#include "fsm_tenv.h"

#include "../../../src/fsm/fsm_snap_int.h"

#define BLK 4096 /* an aligned DATA payload */

/* ---- the fake device ---- */

struct fake_io {
    int fd;
    struct iovec iov[FSS_AIO_GROUP];
    unsigned n;
    int64_t off;
    uint64_t data;
    int k;       /* submission number */
    bool direct; /* its description was O_DIRECT when submitted */
};

static struct {
    struct fake_io pend[2 * FSS_AIO_DEPTH];
    int npend;
    int dup_ok, submit_ok; /* dups / submissions that succeed (-1: all); later ones fail */
    int dups, dup_fails, submits, submit_fails, executed;
    int mixed;       /* writes executed after their description's O_DIRECT flag changed */
    int odd_k;       /* this submission completes oddly: */
    int64_t odd_res; /* < 0: fails with it (nothing written) */
    size_t odd_len;  /* > 0: only its first odd_len bytes are written (a short write) */
    int bad_calls;   /* getevents with nothing in flight (the writer would wait forever) */
} fk;

static void fake_reset(void)
{
    memset(&fk, 0, sizeof fk);
    fk.dup_ok = fk.submit_ok = fk.odd_k = -1;
}

static bool fd_direct(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_DIRECT) != 0;
}

static int fake_dup(int fd)
{
    if (fk.dup_ok >= 0 && fk.dups >= fk.dup_ok) {
        fk.dup_fails++;
        errno = EMFILE;
        return -1;
    }
    fk.dups++;
    return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

static long fake_submit(struct iocb *a)
{
    if (fk.submit_ok >= 0 && fk.submits >= fk.submit_ok) {
        fk.submit_fails++;
        errno = EAGAIN;
        return -1;
    }
    CHECK(fk.npend < (int)(sizeof fk.pend / sizeof fk.pend[0]));
    CHECK_EQ_U(a->aio_lio_opcode, IOCB_CMD_PWRITEV);
    struct fake_io *p = &fk.pend[fk.npend++];
    p->fd = (int)a->aio_fildes;
    p->n = (unsigned)a->aio_nbytes;
    memcpy(p->iov, (const void *)(uintptr_t)a->aio_buf, p->n * sizeof p->iov[0]);
    p->off = a->aio_offset;
    p->data = a->aio_data;
    p->k = fk.submits++;
    p->direct = fd_direct(p->fd);
    return 1;
}

/* The first len bytes of p's buffers at its offset, through a description of its own
 * (buffered, so any length goes): the part of a short write that made it. */
static int64_t fake_write_part(const struct fake_io *p, size_t len)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", p->fd);
    int fd = open(proc, O_WRONLY | O_CLOEXEC);
    uint8_t *tmp = malloc(len);
    size_t got = 0;
    for (unsigned i = 0; i < p->n && got < len; i++) {
        size_t n = p->iov[i].iov_len < len - got ? p->iov[i].iov_len : len - got;
        memcpy(tmp + got, p->iov[i].iov_base, n);
        got += n;
    }
    ssize_t w = fd >= 0 ? pwrite(fd, tmp, len, p->off) : -1;
    free(tmp);
    if (fd >= 0) close(fd);
    return w;
}

/* Runs the oldest write now: its buffers are read here, at reap time. */
static int64_t fake_execute(const struct fake_io *p)
{
    fk.executed++;
    if (fd_direct(p->fd) != p->direct) fk.mixed++;
    if (p->k == fk.odd_k && fk.odd_res < 0) return fk.odd_res;
    if (p->k == fk.odd_k && fk.odd_len) return fake_write_part(p, fk.odd_len);
    ssize_t w = pwritev(p->fd, p->iov, (int)p->n, p->off);
    return w < 0 ? -errno : w;
}

/* Completes exactly `min` writes, oldest first (so a wait for one leaves later ones queued). */
static long fake_getevents(long min, long max, struct io_event *ev)
{
    (void)max;
    if (fk.npend < min) {
        fk.bad_calls++;
        errno = EINVAL;
        return -1;
    }
    for (long k = 0; k < min; k++) {
        ev[k] = (struct io_event){.data = fk.pend[0].data, .res = fake_execute(&fk.pend[0])};
        fk.npend--;
        memmove(fk.pend, fk.pend + 1, (size_t)fk.npend * sizeof fk.pend[0]);
    }
    return min;
}

static const struct fss_aio_test fake_hooks = {
    .dup = fake_dup, .submit = fake_submit, .getevents = fake_getevents};
static const struct fss_aio_test no_ctx_hooks = {
    .no_ctx = true, .dup = fake_dup, .submit = fake_submit, .getevents = fake_getevents};

/* ---- streams ---- */

struct sb {
    uint8_t *buf;
    size_t len, cap;
    uint64_t seq, files, bytes;
};

static void sb_rec(struct sb *b, uint8_t type, const void *payload, size_t len)
{
    if (b->len + len + 9 > b->cap) {
        b->cap = (b->len + len + 9) * 2;
        b->buf = realloc(b->buf, b->cap);
    }
    uint8_t *h = b->buf + b->len, s[8];
    h[0] = (uint8_t)(len >> 24), h[1] = (uint8_t)(len >> 16), h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len, h[4] = type;
    memcpy(h + 5, payload, len);
    for (int i = 0; i < 8; i++)
        s[i] = (uint8_t)(b->seq >> (56 - 8 * i));
    /* Format version 2: a DATA record's CRC leaves its content out (the SHA-256 checks it). */
    uLong c = crc32(crc32(crc32(0L, Z_NULL, 0), s, 8), h, (uInt)(type == 3 ? 5 : 5 + len));
    uint8_t *t = h + 5 + len;
    t[0] = (uint8_t)(c >> 24), t[1] = (uint8_t)(c >> 16), t[2] = (uint8_t)(c >> 8),
    t[3] = (uint8_t)c;
    b->len += 9 + len;
    b->seq++;
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

#define S_INDEX 200

static void sb_hdr(struct sb *b)
{
    uint8_t p[32] = "raftfsnp";
    p[11] = 2; /* format version */
    be64(p + 12, S_INDEX);
    be64(p + 20, 7);
    sb_rec(b, 1, p, 32);
}

/* The content of file `seed`: n bytes, different for every seed and block. */
static uint8_t *body(uint64_t seed, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* A FILE record and its content (body(seed, size)) in DATA records of rec bytes. */
static void sb_file(struct sb *b, uint64_t index, const char *path, uint64_t seed, size_t size,
                    size_t rec)
{
    uint8_t p[4200], *c = body(seed, size);
    size_t plen = strlen(path);
    be64(p, index);
    be64(p + 8, size);
    EVP_Digest(c, size, p + 16, NULL, EVP_sha256(), NULL);
    p[48] = (uint8_t)(plen >> 8), p[49] = (uint8_t)plen;
    memcpy(p + 50, path, plen);
    sb_rec(b, 2, p, 50 + plen);
    for (size_t o = 0; o < size; o += rec)
        sb_rec(b, 3, c + o, size - o < rec ? size - o : rec);
    free(c);
    b->files++;
    b->bytes += size;
}

static void sb_end(struct sb *b)
{
    uint8_t e[32];
    be64(e, S_INDEX), be64(e + 8, b->files), be64(e + 16, 0), be64(e + 24, b->bytes);
    sb_rec(b, 5, e, 32);
}

/* ---- checks ---- */

/* The installed file at path holds exactly body(seed, size). */
static void check_file(struct tenv *t, const char *path, uint64_t seed, size_t size)
{
    uint8_t *want = body(seed, size), *got = malloc(size + 1);
    int fd = -1;
    struct fsm_meta m;
    CHECK_EQ_U(fsm_open_read(t->f, path, &fd, &m), 0);
    ssize_t n = fd >= 0 ? pread(fd, got, size + 1, 0) : -1;
    CHECK_EQ_U(n, size);
    bool same = n == (ssize_t)size && memcmp(got, want, size) == 0;
    if (!same) fprintf(stderr, "  %s: content differs from what was sent\n", path);
    CHECK(same);
    if (fd >= 0) close(fd);
    free(want);
    free(got);
}

/* This process's fds open on regular files under t's directory (directories come and go:
 * a thread of the store's walks trash/ to remove old staging areas whenever it gets to it). */
static int open_fds(const struct tenv *t)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        char link[300], to[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t k = de->d_name[0] == '.' ? -1 : readlink(link, to, sizeof to - 1);
        to[k > 0 ? k : 0] = '\0';
        struct stat st;
        n += k > 0 && strncmp(to, t->dir, strlen(t->dir)) == 0 && stat(link, &st) == 0 &&
             S_ISREG(st.st_mode);
    }
    if (d) closedir(d);
    return n;
}

/* Streams b into a writer of t (fake device: hooks) and installs it: the put/finish result. */
static int stream_install(struct tenv *t, struct sb *b, const struct fss_aio_test *hooks)
{
    fsm_snap_test_aio = hooks;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t->f, &w), 0);
    fsm_snap_test_aio = NULL;
    if (hooks && !hooks->no_ctx) CHECK(w->aio_ctx != 0);
    int rv = fsm_snap_writer_put(w, b->buf, b->len);
    struct fsm_snap_meta m;
    if (rv == 0) rv = fsm_snap_writer_finish(w, &m);
    if (rv == 0) {
        raft_blob_unref(m.conf);
        CHECK_EQ_U(fsm_snap_install(t->f, w), 0);
    } else {
        CHECK_EQ_U(fsm_snap_install(t->f, w), ERR_INVALID); /* refused, and consumed */
    }
    CHECK_EQ_U(fk.npend, 0);
    CHECK_EQ_U(fk.bad_calls, 0);
    return rv;
}

/* ---- tests ---- */

/* A skipped file's DATA records (an older file under a newer staged one: wr_resolve_conflict)
 * go to the hasher but start no write: they must not refill the buffer of a write still in
 * flight. "a"'s one aligned write stays queued on the fake device until END reaps it. */
static void test_reuse_after_skipped_file(void)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, BLK, BLK);                    /* one aligned DATA: in flight */
    sb_file(&b, 120, "b", 2, 0, BLK);                      /* staged "b" */
    sb_file(&b, 110, "b/c", 3, FSS_HASH_SLOTS * BLK, BLK); /* older: skipped, 16 DATA */
    sb_end(&b);
    CHECK_EQ_U(stream_install(&t, &b, &fake_hooks), 0);
    CHECK_EQ_U(fk.submits, 1); /* only "a" was written through AIO */
    check_file(&t, "a", 1, BLK);
    check_file(&t, "b", 2, 0);
    free(b.buf);
    t_fini(&t);
}

/* Writes done synchronously because no fd could be dup'ed (EMFILE) or io_submit refused
 * them: their records go to the hasher like any other, so "a"'s buffer, with its write in
 * flight, would be next in line after 16 of them. */
static void reuse_after_sync(bool emfile)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    if (emfile)
        fk.dup_ok = 1;
    else
        fk.submit_ok = 1;
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, BLK, BLK);
    sb_file(&b, 151, "d", 4, 2 * FSS_HASH_SLOTS * BLK, BLK);
    sb_end(&b);
    CHECK_EQ_U(stream_install(&t, &b, &fake_hooks), 0);
    CHECK_EQ_U(fk.submits, 1);
    CHECK(emfile ? fk.dup_fails > 0 : fk.submit_fails > 0); /* the fallback ran */
    check_file(&t, "a", 1, BLK);
    check_file(&t, "d", 4, 2 * FSS_HASH_SLOTS * BLK);
    free(b.buf);
    t_fini(&t);
}

static void test_reuse_after_emfile(void)
{
    reuse_after_sync(true);
}

static void test_reuse_after_submit_failure(void)
{
    reuse_after_sync(false);
}

/* A write that completes with an error fails the stream: nothing installed, no fd left. */
static void failed_completion(int64_t res, int want)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    fk.odd_k = 1;
    fk.odd_res = res;
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, 4 * FSS_AIO_GROUP * BLK, BLK);
    sb_file(&b, 151, "b", 2, BLK, BLK);
    sb_end(&b);
    int fds = open_fds(&t);
    CHECK_EQ_U(stream_install(&t, &b, &fake_hooks), want);
    CHECK_EQ_U(open_fds(&t), fds);
    CHECK(fk.executed >= 2);
    struct fsm_meta m;
    CHECK_EQ_U(fsm_stat(t.f, "a", &m), ERR_NOTFOUND);
    CHECK_EQ_U(fsm_stat(t.f, "b", &m), ERR_NOTFOUND);
    CHECK_EQ_U(count_dir(&t, "files"), 0);
    CHECK(!t.f->writer_open);
    /* The next stream goes through. */
    fake_reset();
    CHECK_EQ_U(stream_install(&t, &b, &fake_hooks), 0);
    check_file(&t, "a", 1, 4 * FSS_AIO_GROUP * BLK);
    free(b.buf);
    t_fini(&t);
}

static void test_failed_completion(void)
{
    failed_completion(-EIO, ERR_IO);
    failed_completion(-ENOSPC, ERR_NOSPACE);
}

/* A short completion is finished synchronously, from where it stopped. Aligned (4 KiB of a
 * 16 KiB write): still O_DIRECT. */
static void test_short_write_aligned(void)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    fk.odd_k = 0;
    fk.odd_len = BLK;
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, 4 * FSS_AIO_GROUP * BLK, BLK);
    sb_end(&b);
    CHECK_EQ_U(stream_install(&t, &b, &fake_hooks), 0);
    CHECK_EQ_U(fk.mixed, 0);
    check_file(&t, "a", 1, 4 * FSS_AIO_GROUP * BLK);
    free(b.buf);
    t_fini(&t);
}

/* A short completion that stopped mid-block is redone buffered: O_DIRECT comes off the
 * file's description, shared by the file's other writes. Those still in flight must finish
 * first (buffered and direct writes of one file never overlap in time: no write may run
 * after its description changed under it), and the writer's fd_direct must follow the
 * description (the file is still being received). */
static void test_short_write_unaligned(void)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    fk.odd_k = 0;
    fk.odd_len = 1000;
    const size_t size = 8 * FSS_AIO_GROUP * BLK; /* 8 writes: the 4th reuses write 0's slot */
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, size, BLK);
    size_t mid = b.len; /* stop before the last group is complete */
    for (size_t k = 0; k < 2; k++)
        mid -= 9 + BLK;
    sb_end(&b);
    fsm_snap_test_aio = &fake_hooks;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    fsm_snap_test_aio = NULL;
    CHECK_EQ_U(fsm_snap_writer_put(w, b.buf, mid), 0);
    CHECK(w->in_file && w->fd >= 0);
    CHECK(fk.executed >= 1);                    /* write 0 was reaped and redone... */
    CHECK(!fd_direct(w->fd));                   /* ...buffered, */
    CHECK_EQ_U(w->fd_direct, fd_direct(w->fd)); /* and the writer knows it */
    CHECK_EQ_U(fk.mixed, 0);                    /* no direct write ran after O_DIRECT went off */
    CHECK_EQ_U(fsm_snap_writer_put(w, b.buf + mid, b.len - mid), 0);
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(t.f, w), 0);
    CHECK_EQ_U(fk.mixed, 0);
    CHECK_EQ_U(fk.npend, 0);
    check_file(&t, "a", 1, size);
    free(b.buf);
    t_fini(&t);
}

/* No AIO context (io_setup refused: fs.aio-max-nr): every write synchronous, the same
 * content, odd records and tails included. */
static void test_no_aio_context(void)
{
    struct tenv t;
    t_init(&t);
    fake_reset();
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, 9 * BLK, BLK);
    sb_file(&b, 151, "b", 2, 5 * BLK + 123, 3000); /* unaligned records and tail */
    sb_file(&b, 152, "c", 3, FSS_HASH_SLOTS * 3 * BLK, BLK);
    sb_end(&b);
    fsm_snap_test_aio = &no_ctx_hooks;
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    fsm_snap_test_aio = NULL;
    CHECK_EQ_U(w->aio_ctx, 0);
    CHECK_EQ_U(fsm_snap_writer_put(w, b.buf, b.len), 0);
    CHECK(w->n_writes > 0); /* the gathered groups went out, synchronously */
    struct fsm_snap_meta m;
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(fsm_snap_install(t.f, w), 0);
    CHECK_EQ_U(fk.submits + fk.dups, 0);
    check_file(&t, "a", 1, 9 * BLK);
    check_file(&t, "b", 2, 5 * BLK + 123);
    check_file(&t, "c", 3, FSS_HASH_SLOTS * 3 * BLK);
    free(b.buf);
    t_fini(&t);
}

/* One AIO context per fsm, set up by its first writer and kept (io_destroy waits for an RCU
 * grace period, ~20-30 ms on the node's loop thread): every writer gets the same one. A
 * writer aborted with writes in flight drains them (the fake device has none left), and the
 * next writer, on the real kernel, installs the right content. */
static void test_context_per_fsm(void)
{
    struct tenv t;
    t_init(&t);
    CHECK_EQ_U(t.f->snap_aio, 0); /* none before the first writer */
    struct fsm_snap_writer *w;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    unsigned long ctx = w->aio_ctx;
    if (!ctx) fprintf(stderr, "no native AIO here: the context checks are moot\n");
    CHECK_EQ_U(t.f->snap_aio, ctx);
    fsm_snap_writer_abort(w);
    for (int i = 0; i < 20; i++) {
        CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
        CHECK_EQ_U(w->aio_ctx, ctx);
        fsm_snap_writer_abort(w);
    }
    fake_reset();
    struct sb b = {0};
    sb_hdr(&b);
    sb_file(&b, 150, "a", 1, 3 * FSS_AIO_GROUP * BLK, BLK);
    sb_file(&b, 151, "b", 2, 3 * FSS_AIO_GROUP * BLK, BLK);
    sb_end(&b);
    fsm_snap_test_aio = &fake_hooks;
    CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
    fsm_snap_test_aio = NULL;
    CHECK_EQ_U(fsm_snap_writer_put(w, b.buf, b.len / 2), 0);
    CHECK(fk.npend > 0);
    fsm_snap_writer_abort(w);
    CHECK_EQ_U(fk.npend, 0); /* drained at free */
    CHECK_EQ_U(fk.executed, fk.submits);
    /* Real writes on the shared context, twice (nothing left over from the last writer). */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_U(fsm_snap_writer_open(t.f, &w), 0);
        CHECK_EQ_U(w->aio_ctx, ctx);
        CHECK_EQ_U(fsm_snap_writer_put(w, b.buf, b.len / 2), 0);
        fsm_snap_writer_abort(w);
    }
    fake_reset();
    CHECK_EQ_U(stream_install(&t, &b, NULL), 0);
    CHECK_EQ_U(t.f->snap_aio, ctx);
    check_file(&t, "a", 1, 3 * FSS_AIO_GROUP * BLK);
    check_file(&t, "b", 2, 3 * FSS_AIO_GROUP * BLK);
    free(b.buf);
    t_fini(&t);
}

int main(void)
{
    RUN(test_reuse_after_skipped_file);
    RUN(test_reuse_after_emfile);
    RUN(test_reuse_after_submit_failure);
    RUN(test_failed_completion);
    RUN(test_short_write_aligned);
    RUN(test_short_write_unaligned);
    RUN(test_no_aio_context);
    RUN(test_context_per_fsm);
    return check_report();
}
