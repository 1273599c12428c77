/* test_fsm.c — the file store on a real BDB environment and a real directory (mkdtemp): apply
 * outcomes, inode reuse, dedup, reopen, crash replay convergence, leftovers, reads, listing. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"
/* The store is set up as in the other fsm tests; put/del/dump_state stay this file's own
 * (they hand back fsm_result). */
#define FSM_TENV_ENV_ONLY
#include "fsm_tenv.h"
/* The fd cache test drives the file side directly. */
#include "../../../src/fsm/fsm_int.h"

static int apply_blob(struct fsm *f, raft_index i, struct raft_blob *b, struct fsm_result *res)
{
    struct raft_entry e = {.term = 1, .index = i, .type = RAFT_ENTRY_NORMAL, .data = b};
    int rv = fsm_apply(f, &e, res);
    raft_blob_unref(b);
    return rv;
}

static int put(struct fsm *f, raft_index i, unsigned rn, const char *path, const char *body,
               struct fsm_result *res)
{
    uint8_t rid[FSM_REQ_ID_LEN], *p;
    struct raft_blob *b;
    rid_of(rn, rid);
    int rv = fsm_cmd_put_alloc(rid, path, strlen(path), strlen(body), &b, &p);
    if (rv) return rv;
    memcpy(p, body, strlen(body));
    return apply_blob(f, i, b, res);
}

static int del(struct fsm *f, raft_index i, unsigned rn, const char *path, struct fsm_result *res)
{
    uint8_t rid[FSM_REQ_ID_LEN];
    struct raft_blob *b;
    rid_of(rn, rid);
    int rv = fsm_cmd_delete(rid, path, strlen(path), &b);
    return rv ? rv : apply_blob(f, i, b, res);
}

/* Contents of dir/files/path into buf (NUL-terminated); -1 when absent. */
static ssize_t read_file(const struct tenv *t, const char *path, char *buf, size_t cap)
{
    char full[8300];
    snprintf(full, sizeof full, "%s/files/%s", t->dir, path);
    int fd = open(full, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return n;
}

static bool file_is(const struct tenv *t, const char *path, const char *want)
{
    char buf[4096];
    ssize_t n = read_file(t, path, buf, sizeof buf);
    return n >= 0 && strcmp(buf, want) == 0;
}

static void test_fsm_put_new_replace_delete(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "dir/sub/a.txt", "hello", &r), 0);
    CHECK_EQ_U(r.status, 0);
    CHECK(r.created && !r.duplicate);
    CHECK_EQ_U(r.size, 5);
    CHECK_EQ_U(r.index, 1);
    uint8_t sha[32];
    unsigned n;
    EVP_Digest("hello", 5, sha, &n, EVP_sha256(), NULL);
    CHECK(memcmp(r.sha256, sha, 32) == 0);
    CHECK(file_is(&t, "dir/sub/a.txt", "hello"));
    struct fsm_meta m;
    CHECK_EQ_U(fsm_stat(t.f, "dir/sub/a.txt", &m), 0);
    CHECK_EQ_U(m.size, 5);
    CHECK_EQ_U(m.index, 1);
    CHECK(memcmp(m.sha256, sha, 32) == 0);
    CHECK_EQ_U(fsm_applied(t.f), 1);

    CHECK_EQ_U(put(t.f, 2, 2, "dir/sub/a.txt", "hi", &r), 0);
    CHECK(!r.created && r.status == 0);
    CHECK_EQ_U(r.size, 2);
    CHECK(file_is(&t, "dir/sub/a.txt", "hi"));

    CHECK_EQ_U(del(t.f, 3, 3, "dir/sub/a.txt", &r), 0);
    CHECK_EQ_U(r.status, 0);
    CHECK(!path_exists(&t, "files/dir/sub/a.txt"));
    CHECK(!path_exists(&t, "files/dir")); /* empty parents removed */
    CHECK_EQ_U(fsm_stat(t.f, "dir/sub/a.txt", &m), ERR_NOTFOUND);
    CHECK_EQ_U(del(t.f, 4, 4, "dir/sub/a.txt", &r), 0);
    CHECK_EQ_U(r.status, ERR_NOTFOUND);
    CHECK_EQ_U(fsm_applied(t.f), 4);
    /* Empty bodies, odd but valid names. */
    CHECK_EQ_U(put(t.f, 5, 5, "sp ace/new\nline/\xc3\xa9", "", &r), 0);
    CHECK(r.created && r.size == 0);
    CHECK(file_is(&t, "sp ace/new\nline/\xc3\xa9", ""));
    CHECK_EQ_U(put(t.f, 6, 6, "sp ace/new\nline/\xc3\xa9", "x", &r), 0);
    CHECK_EQ_U(put(t.f, 7, 7, "sp ace/new\nline/\xc3\xa9", "", &r), 0);
    CHECK(!r.created && file_is(&t, "sp ace/new\nline/\xc3\xa9", ""));
    t_fini(&t);
}

static void test_fsm_overwrite_creates_no_inode(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    char body[64];
    CHECK_EQ_U(put(t.f, 1, 1, "f", "v0", &r), 0);
    /* Longer than v0, so not in place: the pool was empty, one more inode; v0's is pooled. */
    CHECK_EQ_U(put(t.f, 2, 2, "f", "v1, longer than every later version", &r), 0);
    struct fsm_stats before, after;
    fsm_get_stats(t.f, &before);
    for (unsigned i = 3; i < 50; i++) {
        snprintf(body, sizeof body, "version %u", i);
        CHECK_EQ_U(put(t.f, i, i, "f", body, &r), 0);
        CHECK(!r.created);
    }
    fsm_get_stats(t.f, &after);
    CHECK_EQ_U(after.inodes_created, before.inodes_created);
    /* Each overwrite either recycled the old inode or wrote into it in place. */
    CHECK(after.inodes_recycled + after.overwrites_in_place >=
          before.inodes_recycled + before.overwrites_in_place + 47);
    CHECK(file_is(&t, "f", "version 49"));
    /* A delete gives its inode to the pool; the next new path reuses it. */
    CHECK_EQ_U(del(t.f, 50, 50, "f", &r), 0);
    CHECK_EQ_U(put(t.f, 51, 51, "g", "new", &r), 0);
    CHECK_EQ_U(put(t.f, 52, 52, "h", "new", &r), 0);
    fsm_get_stats(t.f, &after);
    CHECK_EQ_U(after.inodes_created, before.inodes_created);
    CHECK(r.created);
    t_fini(&t);
}

static ino_t ino_of(struct tenv *t, const char *path)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/files/%s", t->dir, path);
    return stat(p, &st) == 0 ? st.st_ino : 0;
}

/* A non-blocking open of path retried until it gets in (10 s at most, far less than the
 * kernel's lease-break-time of 45 s): -1 when a lease still blocks it then. *blocked counts
 * the tries that met a lease (EWOULDBLOCK). */
static int open_polled(const char *path, unsigned *blocked)
{
    double deadline = now_s() + 10;
    int fd;
    while ((fd = open(path, O_RDONLY | O_NONBLOCK)) < 0 && errno == EWOULDBLOCK &&
           now_s() < deadline) {
        (*blocked)++;
        sched_yield();
    }
    return fd;
}

/* An overwrite that fits the file goes into its own inode when nobody has it open; a longer
 * one, or one while a reader holds the file, swaps in a spare (the reader keeps the old). */
static void test_fsm_overwrite_in_place(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    struct fsm_stats s0, s1;
    CHECK_EQ_U(put(t.f, 1, 1, "d/f", "0123456789", &r), 0);
    ino_t ino = ino_of(&t, "d/f");
    CHECK(ino != 0);
    fsm_get_stats(t.f, &s0);
    CHECK_EQ_U(put(t.f, 2, 2, "d/f", "abcdefghij", &r), 0); /* same size */
    /* The lease outlives the put (kept for the next overwrite), not another open: a
     * non-blocking open meets it once, then gets in as soon as the store has released it
     * (polled; the kernel itself would let it in only after lease-break-time, 45 s). */
    char full[256];
    snprintf(full, sizeof full, "%s/files/d/f", t.dir);
    unsigned blocked = 0;
    int nb = open_polled(full, &blocked);
    CHECK(nb >= 0);
    CHECK(blocked > 0);
    if (nb >= 0) close(nb);
    CHECK(file_is(&t, "d/f", "abcdefghij") && ino_of(&t, "d/f") == ino);
    CHECK_EQ_U(put(t.f, 3, 3, "d/f", "xyz", &r), 0); /* shorter: truncated */
    CHECK(file_is(&t, "d/f", "xyz") && ino_of(&t, "d/f") == ino && !r.created);
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place + 2);
    CHECK_EQ_U(s1.inodes_recycled, s0.inodes_recycled);
    CHECK_EQ_U(put(t.f, 4, 4, "d/f", "longer than before", &r), 0); /* would grow: spare */
    CHECK(file_is(&t, "d/f", "longer than before") && ino_of(&t, "d/f") != ino);
    ino = ino_of(&t, "d/f");
    /* A reader's open file: never written under it. */
    int fd = -1;
    struct fsm_meta m;
    CHECK_EQ_U(fsm_open_read(t.f, "d/f", &fd, &m), 0);
    CHECK_EQ_U(put(t.f, 5, 5, "d/f", "short, unseen", &r), 0); /* would fit in place */
    CHECK(file_is(&t, "d/f", "short, unseen") && ino_of(&t, "d/f") != ino);
    char buf[64] = "";
    CHECK_EQ_U(pread(fd, buf, sizeof buf - 1, 0), 18);
    CHECK(!strcmp(buf, "longer than before"));
    close(fd);
    /* A second name for the inode (a hard link made outside): not written through. */
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/files/d/f", t.dir);
    snprintf(b, sizeof b, "%s/outside-link", t.dir);
    CHECK(link(a, b) == 0);
    ino = ino_of(&t, "d/f");
    CHECK_EQ_U(put(t.f, 6, 6, "d/f", "via no link", &r), 0); /* would fit in place */
    CHECK(file_is(&t, "d/f", "via no link") && ino_of(&t, "d/f") != ino);
    FILE *fp = fopen(b, "r");
    CHECK(fp && fgets(buf, sizeof buf, fp) && !strcmp(buf, "short, unseen"));
    if (fp) fclose(fp);
    unlink(b);
    /* Empty bodies always take a spare (truncating a file to 0 makes ext4 flush it). */
    fsm_get_stats(t.f, &s0);
    CHECK_EQ_U(put(t.f, 7, 7, "d/f", "", &r), 0);
    CHECK(file_is(&t, "d/f", ""));
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place);
    /* A lease broken by another open would signal SIGIO: the store ignores it. */
    struct sigaction sa;
    CHECK(sigaction(SIGIO, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
    t_fini(&t);
}

/* What the torn-read test's reader saw. */
struct torn_report {
    unsigned reads, torn, errors, stuck;
};

static void on_alarm(int sig)
{
    (void)sig;
}

/* Reads path over and over in a loop (another process: its opens break our write leases)
 * until stop_fd reports EOF; every read must be exactly one of the bodies the writer puts.
 * An open that waits 5 s for a lease (the store must release it at once: the kernel would
 * after 45 s) is interrupted by SIGALRM and counted as stuck. */
static struct torn_report torn_reader(const char *path, int stop_fd, size_t len_ab, size_t len_c)
{
    static char buf[70000];
    struct torn_report r = {0};
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: the open fails, EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    char c;
    while (read(stop_fd, &c, 1) < 0) {
        alarm(5);
        int fd = open(path, O_RDONLY);
        alarm(0);
        if (fd < 0 && errno == EINTR) {
            r.stuck++;
            continue;
        }
        size_t n = 0;
        ssize_t k = 1;
        while (fd >= 0 && n < sizeof buf && (k = read(fd, buf + n, sizeof buf - n)) > 0)
            n += (size_t)k;
        if (fd >= 0) close(fd);
        if (fd < 0 || k < 0) {
            r.errors++;
            continue;
        }
        /* Checked with the file closed, so the writer gets windows to write in place. */
        bool ok = n > 0 && (buf[0] == 'C' ? n == len_c : n == len_ab);
        for (size_t i = 1; ok && i < n; i++)
            ok = buf[i] == buf[0];
        r.reads++;
        r.torn += !ok;
    }
    return r;
}

/* Another process reading a file while the store overwrites it (in place when it can: same
 * size, or shorter with a truncate after the write) never sees a mix of two versions nor a
 * version with the old one's tail: in-place writes happen only under the write lease, which
 * makes the reader's open wait until the write is complete. */
static void test_fsm_in_place_never_torn(void)
{
    enum { LEN_AB = 60000, LEN_C = 50000 };
    struct tenv t;
    t_init(&t);
    static char bodies[3][LEN_AB + 1];
    for (int i = 0; i < 3; i++)
        memset(bodies[i], 'A' + i, i == 2 ? LEN_C : LEN_AB);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "t", bodies[0], &r), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/files/t", t.dir);
    int stop[2], res[2];
    CHECK(pipe(stop) == 0 && pipe(res) == 0);
    fcntl(stop[0], F_SETFL, O_NONBLOCK);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Only the pipes: the store's fds (spares, cached fds) stay the parent's alone. */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != stop[0] && fd != res[1]) close(fd);
        struct torn_report rep = torn_reader(path, stop[0], LEN_AB, LEN_C);
        _exit(write(res[1], &rep, sizeof rep) == sizeof rep ? 0 : 1);
    }
    close(stop[0]);
    close(res[1]);
    struct fsm_stats s0, s1;
    fsm_get_stats(t.f, &s0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned i = 2;
    do { /* A, B (same size), C (shorter): two of three can go in place */
        CHECK_EQ_U(put(t.f, i, i, "t", bodies[(i - 1) % 3], &r), 0);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (++i < 3000 && now.tv_sec - t0.tv_sec < 2);
    fsm_get_stats(t.f, &s1);
    close(stop[1]);
    struct torn_report rep = {0};
    CHECK_EQ_U(read(res[0], &rep, sizeof rep), sizeof rep);
    close(res[0]);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_U(rep.torn, 0);
    CHECK_EQ_U(rep.errors, 0);
    CHECK_EQ_U(rep.stuck, 0);
    CHECK(rep.reads > 10);
    CHECK(s1.overwrites_in_place > s0.overwrites_in_place + 10); /* else the test proves nothing */
    fprintf(stderr, "  %u puts, %llu in place, %u reads\n", i - 2,
            (unsigned long long)(s1.overwrites_in_place - s0.overwrites_in_place), rep.reads);
    t_fini(&t);
}

/* What a child saw opening a leased file. */
struct lease_report {
    int open_errno;   /* 0: it got in */
    unsigned blocked; /* non-blocking tries that met the lease first */
    char body[32];
};

/* In a child (another process): opens path as open_polled does and reads it. */
static void lease_child(const char *path, int res_fd)
{
    for (int fd = 3; fd < 1024; fd++) /* the store's fds stay the parent's alone */
        if (fd != res_fd) close(fd);
    struct lease_report rep = {0};
    int fd = open_polled(path, &rep.blocked);
    rep.open_errno = fd < 0 ? errno : 0;
    if (fd >= 0 && read(fd, rep.body, sizeof rep.body - 1) < 0) rep.open_errno = EIO;
    if (fd >= 0) close(fd);
    _exit(write(res_fd, &rep, sizeof rep) == sizeof rep ? 0 : 1);
}

static struct lease_report lease_open_elsewhere(const char *path)
{
    struct lease_report rep = {.open_errno = -1};
    int res[2];
    CHECK(pipe(res) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) lease_child(path, res[1]);
    close(res[1]);
    CHECK_EQ_U(read(res[0], &rep, sizeof rep), sizeof rep);
    close(res[0]);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return rep;
}

/* After an overwrite in place the cached fd keeps its write lease (another process's
 * non-blocking open meets it), and that open breaks it: the store's lease thread releases it
 * at once, with no apply in between, so the opener gets in (polled, 10 s at most; the kernel
 * would wait 45 s) and reads the whole last version. The next overwrite goes in place again
 * once the other process closed the file. */
static void test_fsm_lease_released_on_break(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    struct fsm_stats s0, s1;
    CHECK_EQ_U(put(t.f, 1, 1, "l/f", "version-1", &r), 0);
    fsm_get_stats(t.f, &s0);
    CHECK_EQ_U(put(t.f, 2, 2, "l/f", "version-2", &r), 0);
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place + 1);
    uint64_t b0 = fsm_files_lease_breaks(&t.f->ff);
    char full[256];
    snprintf(full, sizeof full, "%s/files/l/f", t.dir);
    for (int round = 0; round < 3; round++) {
        struct lease_report rep = lease_open_elsewhere(full);
        CHECK_EQ_U(rep.open_errno, 0);
        CHECK(rep.blocked > 0); /* the lease was still held */
        char want[16];
        snprintf(want, sizeof want, "version-%d", 2 + round);
        CHECK(!strcmp(rep.body, want));
        double deadline = now_s() + 10; /* the count may trail the release */
        while (fsm_files_lease_breaks(&t.f->ff) < b0 + 1 + (uint64_t)round && now_s() < deadline)
            sched_yield();
        CHECK_EQ_U(fsm_files_lease_breaks(&t.f->ff), b0 + 1 + (uint64_t)round);
        fsm_get_stats(t.f, &s0);
        snprintf(want, sizeof want, "version-%d", 3 + round);
        CHECK_EQ_U(put(t.f, 3 + (raft_index)round, 3 + (unsigned)round, "l/f", want, &r), 0);
        fsm_get_stats(t.f, &s1);
        CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place + 1);
    }
    /* This process's own plain open breaks it the same way (it waits for the lease thread). */
    CHECK(file_is(&t, "l/f", "version-5"));
    CHECK_EQ_U(fsm_files_lease_breaks(&t.f->ff), b0 + 4);
    t_fini(&t);
}

/* A read of a file just overwritten in place (a GET, the snapshot reader: an open in this
 * process) gets in at once, with no break for the lease thread to handle: the store releases
 * that path's lease before opening. The reader's fd then keeps the next overwrite out of the
 * inode. Many leased paths, read in turn. */
static void test_fsm_read_leased_file(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    char p[32], body[32];
    raft_index i = 0;
    for (int round = 0; round < 2; round++) {
        for (int k = 0; k < 20; k++) {
            snprintf(p, sizeof p, "r/%d", k);
            snprintf(body, sizeof body, "body-%d-%d", k, round);
            i++;
            CHECK_EQ_U(put(t.f, i, (unsigned)i, p, body, &r), 0);
        }
    }
    struct fsm_stats s0, s1;
    uint64_t b0 = fsm_files_lease_breaks(&t.f->ff);
    for (int k = 0; k < 20; k++) {
        snprintf(p, sizeof p, "r/%d", k);
        snprintf(body, sizeof body, "body-%d-1", k);
        int fd = -1;
        struct fsm_meta m;
        CHECK_EQ_U(fsm_open_read(t.f, p, &fd, &m), 0);
        char got[32] = "";
        CHECK(fd >= 0 && pread(fd, got, sizeof got - 1, 0) == (ssize_t)strlen(body));
        CHECK(!strcmp(got, body) && m.size == strlen(body));
        fsm_get_stats(t.f, &s0);
        snprintf(body, sizeof body, "BODY-%d-2", k);
        i++;
        CHECK_EQ_U(put(t.f, i, (unsigned)i, p, body, &r), 0); /* not under the reader */
        fsm_get_stats(t.f, &s1);
        CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place);
        CHECK(file_is(&t, p, body));
        memset(got, 0, sizeof got);
        CHECK(pread(fd, got, sizeof got - 1, 0) > 0 && got[0] == 'b');
        if (fd >= 0) close(fd);
    }
    CHECK_EQ_U(fsm_files_lease_breaks(&t.f->ff), b0);
    t_fini(&t);
}

/* Streams a's snapshot (as of its applied index) into b and installs it. */
static void snapshot_into(struct fsm *a, struct fsm *b)
{
    struct fsm_snap_reader *rd = NULL;
    struct fsm_snap_writer *w = NULL;
    CHECK_EQ_U(fsm_snap_reader_open(a, fsm_applied(a), 1, NULL, &rd), 0);
    CHECK_EQ_U(fsm_snap_writer_open(b, &w), 0);
    static uint8_t buf[65536];
    bool done = false;
    while (rd && w && !done) {
        size_t len = 0;
        int rv = fsm_snap_reader_next(rd, buf, sizeof buf, &len, &done);
        CHECK_EQ_U(rv, 0);
        if (rv == 0) rv = fsm_snap_writer_put(w, buf, len);
        CHECK_EQ_U(rv, 0);
        if (rv) break;
    }
    fsm_snap_reader_close(rd);
    struct fsm_snap_meta m = {0};
    CHECK_EQ_U(fsm_snap_writer_finish(w, &m), 0);
    raft_blob_unref(m.conf);
    CHECK_EQ_U(m.index, fsm_applied(a));
    CHECK_EQ_U(fsm_snap_install(b, w), 0);
}

/* A snapshot of a store whose files all hold write leases (overwritten in place, fds cached):
 * the reader's opens (this process, O_NONBLOCK) get in without a break, the copy has every
 * file's last version, and overwrites go in place again afterwards. */
static void test_fsm_snapshot_of_leased_files(void)
{
    struct tenv a, b;
    t_init(&a);
    t_init(&b);
    struct fsm_result r;
    char p[32], body[32];
    raft_index i = 0;
    for (int round = 0; round < 4; round++) {
        for (int k = 0; k < 40; k++) {
            snprintf(p, sizeof p, "l%d/f%d", k % 4, k);
            snprintf(body, sizeof body, "v%d-of-%d", round, k);
            i++;
            CHECK_EQ_U(put(a.f, i, (unsigned)i, p, body, &r), 0);
        }
    }
    struct fsm_stats s0, s1;
    fsm_get_stats(a.f, &s0);
    CHECK_EQ_U(s0.overwrites_in_place, 120);
    uint64_t b0 = fsm_files_lease_breaks(&a.f->ff);
    snapshot_into(a.f, b.f);
    CHECK_EQ_U(fsm_files_lease_breaks(&a.f->ff), b0); /* released before each open */
    CHECK_EQ_U(fsm_applied(b.f), i);
    for (int k = 0; k < 40; k++) {
        snprintf(p, sizeof p, "l%d/f%d", k % 4, k);
        snprintf(body, sizeof body, "v3-of-%d", k);
        CHECK(file_is(&b, p, body));
        snprintf(body, sizeof body, "v4-of-%d", k);
        i++;
        CHECK_EQ_U(put(a.f, i, (unsigned)i, p, body, &r), 0);
        CHECK_EQ_U(put(b.f, i, (unsigned)i, p, body, &r), 0); /* b: fds of the new tree */
    }
    fsm_get_stats(a.f, &s1);
    CHECK_EQ_U(s1.overwrites_in_place, s0.overwrites_in_place + 40);
    for (int k = 0; k < 40; k++) {
        snprintf(p, sizeof p, "l%d/f%d", k % 4, k);
        snprintf(body, sizeof body, "v4-of-%d", k);
        CHECK(file_is(&a, p, body) && file_is(&b, p, body));
    }
    t_fini(&a);
    t_fini(&b);
}

/* The store keeps an fd on a file it wrote (fd cache): it follows the path through removal
 * and re-creation, a spare installed over it, a parent directory replacing it, and a swap of
 * the whole files/ directory (snapshot install); it never pins a recycled inode. */
static void test_fsm_files_fd_cache(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_files *ff = &t.f->ff;
    struct fsm_result r;
    struct fsm_stats s0, s1;
    fsm_get_stats(t.f, &s0);
    uint64_t h0 = fsm_files_fd_cache_hits(ff);
    CHECK_EQ_U(put(t.f, 1, 1, "c/f", "first", &r), 0); /* new: its spare's fd is kept */
    CHECK_EQ_U(put(t.f, 2, 2, "c/f", "secnd", &r), 0); /* in place through the kept fd */
    CHECK_EQ_U(fsm_files_fd_cache_hits(ff), h0 + 1);
    CHECK_EQ_U(del(t.f, 3, 3, "c/f", &r), 0);
    CHECK_EQ_U(put(t.f, 4, 4, "c/f", "third", &r), 0);
    CHECK_EQ_U(put(t.f, 5, 5, "c/f", "forth", &r), 0);
    CHECK(file_is(&t, "c/f", "forth"));
    CHECK_EQ_U(put(t.f, 6, 6, "c/f", "a longer fifth", &r), 0); /* a spare over it */
    CHECK_EQ_U(put(t.f, 7, 7, "c/f", "sixth", &r), 0);
    CHECK(file_is(&t, "c/f", "sixth"));
    CHECK_EQ_U(put(t.f, 8, 8, "c/f", "", &r), 0); /* never in place: a spare over the kept fd */
    CHECK(file_is(&t, "c/f", ""));
    CHECK_EQ_U(put(t.f, 9, 9, "c/f", "sixth", &r), 0);
    CHECK_EQ_U(put(t.f, 10, 10, "c/f", "sixth", &r), 0);
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.inodes_pinned, s0.inodes_pinned); /* no kept fd followed an inode out */
    CHECK_EQ_U(fsm_files_fd_cache_hits(ff), h0 + 4);

    /* A file in the way of a parent directory (only replay meets that) is replaced. */
    CHECK_EQ_U(fsm_files_put(ff, "x", 1, (const uint8_t *)"file", 4), 0);
    CHECK_EQ_U(fsm_files_put(ff, "x/y", 3, (const uint8_t *)"under", 5), 0);
    CHECK_EQ_U(fsm_files_remove(ff, "x/y", 3), 0);
    CHECK_EQ_U(fsm_files_put(ff, "x", 1, (const uint8_t *)"FILE", 4), 0);
    CHECK(file_is(&t, "x", "FILE"));

    /* files/ swapped for another tree, as a snapshot install does. */
    char files[128], other[128];
    snprintf(files, sizeof files, "%s/files", t.dir);
    snprintf(other, sizeof other, "%s/other", t.dir);
    CHECK(mkdir(other, 0755) == 0);
    char p[160];
    snprintf(p, sizeof p, "%s/c", other);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/c/f", other);
    FILE *fp = fopen(p, "w");
    CHECK(fp && fputs("SNAPSHOT", fp) >= 0);
    if (fp) fclose(fp);
    CHECK(renameat2(AT_FDCWD, other, AT_FDCWD, files, RENAME_EXCHANGE) == 0);
    CHECK_EQ_U(fsm_files_reopen_files(ff, t.dir), 0);
    CHECK_EQ_U(fsm_files_put(ff, "c/f", 3, (const uint8_t *)"after", 5), 0);
    CHECK(file_is(&t, "c/f", "after"));
    char buf[32] = "";
    snprintf(p, sizeof p, "%s/c/f", other); /* the tree swapped out keeps its content */
    fp = fopen(p, "r");
    CHECK(fp && fgets(buf, sizeof buf, fp) && !strcmp(buf, "sixth"));
    if (fp) fclose(fp);
    t_fini(&t);
}

static uint64_t ckpt_count(struct fsm *f)
{
    struct fsm_stats st;
    fsm_get_stats(f, &st);
    uint64_t n = 0;
    for (size_t b = 0; b <= FSM_CKPT_BUCKETS; b++)
        n += st.ckpt_hist[b];
    return n;
}

/* Every checkpoint that syncs lands in the duration histogram; one with nothing new does not. */
static void test_fsm_checkpoint_histogram(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(ckpt_count(t.f), 0);
    CHECK_EQ_U(put(t.f, 1, 1, "a", "x", &r), 0);
    CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
    CHECK_EQ_U(ckpt_count(t.f), 1);
    CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0); /* nothing applied since */
    CHECK_EQ_U(ckpt_count(t.f), 1);
    CHECK_EQ_U(put(t.f, 2, 2, "b", "y", &r), 0);
    CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
    CHECK_EQ_U(ckpt_count(t.f), 2);
    struct fsm_stats st;
    fsm_get_stats(t.f, &st);
    CHECK(st.ckpt_us_sum > 0);
    for (size_t b = 1; b < FSM_CKPT_BUCKETS; b++)
        CHECK(fsm_ckpt_bucket_le_ms[b] > fsm_ckpt_bucket_le_ms[b - 1]);
    t_fini(&t);
}

/* Deleted inodes are kept (open pool, then reserve) and feed later new paths. */
static void test_fsm_delete_then_create_reuses_inodes(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    char path[32];
    raft_index i = 0;
    for (unsigned k = 0; k < 200; k++) {
        snprintf(path, sizeof path, "d%u/f%u", k % 7, k);
        i++;
        CHECK_EQ_U(put(t.f, i, (unsigned)i, path, "0123456789", &r), 0);
    }
    struct fsm_stats s0, s1;
    fsm_get_stats(t.f, &s0);
    for (unsigned k = 0; k < 200; k++) {
        snprintf(path, sizeof path, "d%u/f%u", k % 7, k);
        i++;
        CHECK_EQ_U(del(t.f, i, (unsigned)i, path, &r), 0);
    }
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.spares, s0.spares + 200);
    CHECK_EQ_U(count_dir(&t, "files"), 0);
    for (unsigned k = 0; k < 200; k++) {
        snprintf(path, sizeof path, "e/g%u", k);
        i++;
        CHECK_EQ_U(put(t.f, i, (unsigned)i, path, "abc", &r), 0);
        CHECK(r.created);
    }
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.inodes_created, s0.inodes_created);
    CHECK(file_is(&t, "e/g0", "abc"));
    CHECK(file_is(&t, "e/g199", "abc"));
    t_fini(&t);
}

static void test_fsm_duplicate_request_id(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 5, 77, "p", "first", &r), 0);
    CHECK_EQ_U(put(t.f, 6, 78, "p", "second", &r), 0);
    CHECK_EQ_U(put(t.f, 7, 77, "p", "first", &r), 0); /* a retry of 77 */
    CHECK(r.duplicate && r.created);
    CHECK_EQ_U(r.index, 5);
    CHECK_EQ_U(r.size, 5);
    CHECK(file_is(&t, "p", "second"));
    CHECK_EQ_U(del(t.f, 8, 90, "nope", &r), 0);
    CHECK_EQ_U(del(t.f, 9, 90, "nope", &r), 0);
    CHECK(r.duplicate && r.status == ERR_NOTFOUND);
    CHECK_EQ_U(r.index, 8);
    CHECK_EQ_U(fsm_applied(t.f), 9);
    t_fini(&t);
}

static void test_fsm_dedup_window(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "w", "a", &r), 0);
    CHECK_EQ_U(put(t.f, 1 + FSM_DEDUP_WINDOW, 1, "w", "a", &r), 0);
    CHECK(r.duplicate);                                             /* the window is inclusive */
    CHECK_EQ_U(put(t.f, 2 + FSM_DEDUP_WINDOW, 2, "w", "b", &r), 0); /* prunes id 1 */
    CHECK_EQ_U(put(t.f, 3 + FSM_DEDUP_WINDOW, 1, "w", "c", &r), 0);
    CHECK(!r.duplicate && !r.created);
    CHECK(file_is(&t, "w", "c"));
    t_fini(&t);
}

static struct raft_blob *put_blob(unsigned rn, const char *path, const char *body)
{
    uint8_t rid[FSM_REQ_ID_LEN], *p;
    struct raft_blob *b = NULL;
    rid_of(rn, rid);
    if (fsm_cmd_put_alloc(rid, path, strlen(path), strlen(body), &b, &p) == 0)
        memcpy(p, body, strlen(body));
    return b;
}

/* A batch prunes the ids of its transaction once: every record older than the window of its
 * last entry goes, every newer one stays and still catches a retry. */
static void test_fsm_dedup_prune_batch(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r, res[2];
    for (unsigned k = 1; k <= 5; k++)
        CHECK_EQ_U(put(t.f, k, k, "w", "a", &r), 0);
    const raft_index W = FSM_DEDUP_WINDOW;
    struct raft_entry es[2] = {
        {.term = 1, .index = W + 3, .type = RAFT_ENTRY_NORMAL, .data = put_blob(10, "w", "b")},
        {.term = 1, .index = W + 4, .type = RAFT_ENTRY_NORMAL, .data = put_blob(11, "x", "c")},
    };
    CHECK_EQ_U(fsm_apply_batch(t.f, es, 2, res), 0);
    raft_blob_unref(es[0].data);
    raft_blob_unref(es[1].data);
    raft_index first = 0;
    uint8_t rid[FSM_REQ_ID_LEN];
    CHECK_EQ_U(fsm_db_dedup_walk(&t.f->db, 0, &first, rid), 0);
    CHECK_EQ_U(first, 4); /* 1-3 are older than W + 4 - W: gone */
    struct fsm_result old;
    rid_of(3, rid);
    CHECK_EQ_U(fsm_db_dedup_get(&t.f->db, NULL, rid, &old), ERR_NOTFOUND);
    CHECK_EQ_U(put(t.f, W + 5, 5, "w", "d", &r), 0); /* 5 is still inside the window */
    CHECK(r.duplicate);
    CHECK_EQ_U(r.index, 5);
    CHECK(file_is(&t, "w", "b"));
    CHECK(file_is(&t, "x", "c"));
    t_fini(&t);
}

static void test_fsm_conflicting_paths(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "a", "file", &r), 0);
    CHECK_EQ_U(put(t.f, 2, 2, "a/b", "x", &r), 0);
    CHECK_EQ_U(r.status, ERR_EXISTS);
    CHECK_EQ_U(put(t.f, 3, 3, "d/e/f", "x", &r), 0);
    CHECK_EQ_U(put(t.f, 4, 4, "d", "x", &r), 0);
    CHECK_EQ_U(r.status, ERR_EXISTS);
    CHECK_EQ_U(put(t.f, 5, 5, "d/e", "x", &r), 0);
    CHECK_EQ_U(r.status, ERR_EXISTS);
    CHECK_EQ_U(put(t.f, 6, 6, "d.e", "x", &r), 0); /* a sibling sorting next to "d/" */
    CHECK_EQ_U(r.status, 0);
    CHECK(file_is(&t, "a", "file"));
    CHECK(file_is(&t, "d/e/f", "x"));
    t_fini(&t);
}

static void test_fsm_noop_config_and_corrupt(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    struct raft_entry e = {.term = 1, .index = 1, .type = RAFT_ENTRY_NOOP};
    CHECK_EQ_U(fsm_apply(t.f, &e, &r), 0);
    e.index = 2;
    e.type = RAFT_ENTRY_CONFIG;
    CHECK_EQ_U(fsm_apply(t.f, &e, &r), 0);
    CHECK_EQ_U(fsm_applied(t.f), 2);
    struct raft_blob *b = raft_blob_new(3);
    memcpy(b->data, "bad", 3);
    CHECK_EQ_U(apply_blob(t.f, 3, b, &r), ERR_CORRUPT);
    e.index = 3;
    e.type = RAFT_ENTRY_NORMAL;
    e.data = NULL;
    CHECK_EQ_U(fsm_apply(t.f, &e, &r), ERR_CORRUPT);
    CHECK_EQ_U(fsm_applied(t.f), 2);
    t_fini(&t);
}

static void test_fsm_bad_paths_for_reads(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_meta m;
    int fd = -1;
    CHECK_EQ_U(fsm_stat(t.f, "../x", &m), ERR_INVALID);
    CHECK_EQ_U(fsm_stat(t.f, "/etc/passwd", &m), ERR_INVALID);
    CHECK_EQ_U(fsm_open_read(t.f, "a/../../x", &fd, &m), ERR_INVALID);
    CHECK_EQ_U(fsm_open_read(t.f, "", &fd, &m), ERR_INVALID);
    CHECK_EQ_U(fsm_open_read(t.f, NULL, &fd, &m), ERR_INVALID);
    CHECK_EQ_U(fsm_open_read(t.f, "absent", &fd, &m), ERR_NOTFOUND);
    CHECK(fd == -1);
    t_fini(&t);
}

static void test_fsm_read_fd_stable_across_overwrite(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "r", "original content", &r), 0);
    CHECK_EQ_U(put(t.f, 2, 2, "other", "x", &r), 0);
    int fd = -1;
    struct fsm_meta m;
    CHECK_EQ_U(fsm_open_read(t.f, "r", &fd, &m), 0);
    CHECK_EQ_U(m.size, 16);
    struct fsm_stats s0, s1;
    fsm_get_stats(t.f, &s0);
    char body[32];
    for (unsigned i = 3; i < 20; i++) {
        snprintf(body, sizeof body, "overwrite %u", i);
        CHECK_EQ_U(put(t.f, i, i, "r", body, &r), 0);
        CHECK_EQ_U(put(t.f, 100 + i, 100 + i, "other", body, &r), 0);
    }
    CHECK_EQ_U(del(t.f, 200, 200, "r", &r), 0);
    fsm_get_stats(t.f, &s1);
    CHECK_EQ_U(s1.inodes_pinned, s0.inodes_pinned + 1);
    char buf[64] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    CHECK_EQ_U(n, 16);
    CHECK(memcmp(buf, "original content", 16) == 0);
    close(fd);
    t_fini(&t);
}

/* files/ out of step with the metadata (only a crash replay in progress does that): reads
 * answer ERR_BUSY rather than content that does not match its metadata. */
static void test_fsm_read_busy_when_files_disagree(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "z", "abc", &r), 0);
    CHECK_EQ_U(put(t.f, 2, 2, "gone", "abc", &r), 0);
    char p[128];
    snprintf(p, sizeof p, "%s/files/z", t.dir);
    FILE *fp = fopen(p, "w");
    if (fp) fputs("abcdef", fp), fclose(fp);
    snprintf(p, sizeof p, "%s/files/gone", t.dir);
    unlink(p);
    int fd = -1;
    struct fsm_meta m;
    CHECK_EQ_U(fsm_open_read(t.f, "z", &fd, &m), ERR_BUSY);
    CHECK_EQ_U(fsm_open_read(t.f, "gone", &fd, &m), ERR_BUSY);
    CHECK(fd == -1);
    /* The next write of the path puts files/ back in step. */
    CHECK_EQ_U(put(t.f, 3, 3, "gone", "back", &r), 0);
    CHECK(!r.created);
    CHECK_EQ_U(fsm_open_read(t.f, "gone", &fd, &m), 0);
    if (fd >= 0) close(fd);
    t_fini(&t);
}

struct list_ctx {
    char seen[16][64];
    size_t n;
    size_t stop_after;
};

static int list_cb(void *ctx, const char *path, const struct fsm_meta *m)
{
    struct list_ctx *l = ctx;
    (void)m;
    if (l->n < 16) snprintf(l->seen[l->n], sizeof l->seen[0], "%s", path);
    l->n++;
    return l->stop_after && l->n >= l->stop_after ? 42 : 0;
}

static void test_fsm_list_prefix(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    const char *paths[] = {"b/2", "a", "b/1", "c", "b0", "b/3/x"};
    for (unsigned i = 0; i < 6; i++)
        CHECK_EQ_U(put(t.f, i + 1, i + 1, paths[i], "x", &r), 0);
    struct list_ctx l = {0};
    CHECK_EQ_U(fsm_list(t.f, NULL, list_cb, &l), 0);
    CHECK_EQ_U(l.n, 6);
    CHECK(!strcmp(l.seen[0], "a") && !strcmp(l.seen[1], "b/1") && !strcmp(l.seen[3], "b/3/x"));
    CHECK(!strcmp(l.seen[4], "b0") && !strcmp(l.seen[5], "c"));
    memset(&l, 0, sizeof l);
    CHECK_EQ_U(fsm_list(t.f, "b/", list_cb, &l), 0);
    CHECK_EQ_U(l.n, 3);
    memset(&l, 0, sizeof l);
    CHECK_EQ_U(fsm_list(t.f, "zz", list_cb, &l), 0);
    CHECK_EQ_U(l.n, 0);
    memset(&l, 0, sizeof l);
    l.stop_after = 2;
    CHECK_EQ_U(fsm_list(t.f, "", list_cb, &l), 42);
    CHECK_EQ_U(l.n, 2);
    t_fini(&t);
}

static void test_fsm_longest_path(void)
{
    struct tenv t;
    t_init(&t);
    char path[4097];
    for (size_t i = 0; i < 4096; i++)
        path[i] = (i % 201 == 200) ? '/' : 'q';
    path[4096] = '\0';
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, path, "deep", &r), 0);
    CHECK_EQ_U(r.status, 0);
    CHECK_EQ_U(put(t.f, 2, 2, path, "deeper", &r), 0);
    CHECK(!r.created);
    int fd = -1;
    struct fsm_meta m;
    CHECK_EQ_U(fsm_open_read(t.f, path, &fd, &m), 0);
    char buf[16] = "";
    CHECK_EQ_U(pread(fd, buf, sizeof buf, 0), 6);
    CHECK(memcmp(buf, "deeper", 6) == 0);
    if (fd >= 0) close(fd);
    CHECK_EQ_U(del(t.f, 3, 3, path, &r), 0);
    CHECK_EQ_U(r.status, 0);
    CHECK_EQ_U(fsm_open_read(t.f, path, &fd, &m), ERR_NOTFOUND);
    t_fini(&t);
}

static void test_fsm_leftovers_cleaned_on_open(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "keep", "k", &r), 0);
    t_close(&t);
    char p[300];
    for (int i = 0; i < 80; i++) {
        snprintf(p, sizeof p, "%s/spare/junk%d", t.dir, i);
        FILE *fp = fopen(p, "w");
        if (fp) fputs("half-written", fp), fclose(fp);
    }
    snprintf(p, sizeof p, "%s/spare/dir", t.dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/spare/dir/inner", t.dir);
    fclose(fopen(p, "w"));
    snprintf(p, sizeof p, "%s/trash/s9/a/b", t.dir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && touch %s/f", p, p);
    CHECK_EQ_U(system(cmd), 0);
    t_open(&t);
    struct fsm_stats s;
    fsm_get_stats(t.f, &s);
    CHECK_EQ_U(s.spares, 80);                    /* 64 open, 16 in the reserve: none unlinked */
    CHECK_EQ_U(count_dir(&t, "spare"), 80 + 16); /* the junk, and the 16 shard directories */
    CHECK(!path_exists(&t, "spare/dir"));
    CHECK_EQ_U(count_dir(&t, "trash"), 0);
    CHECK(file_is(&t, "keep", "k"));
    CHECK_EQ_U(count_dir(&t, "files"), 1);
    t_fini(&t);
}

/* ---- Crash replay ------------------------------------------------------------------------- */

/* A workload touching every case: new, overwrite, nested, delete, re-create, duplicate id,
 * conflict, delete of absent, NOOPs. Entry i of the log is ops[i - 1]. */
struct op {
    char kind; /* 'P' put, 'D' delete, 'N' noop */
    unsigned rid;
    const char *path;
    const char *body;
};

static const struct op ops[] = {
    {'N', 0, NULL, NULL},
    {'P', 1, "a", "a1"},
    {'P', 2, "d/x", "x1"},
    {'P', 3, "d/y", "y1"},
    {'P', 4, "a", "a2"},
    {'D', 5, "d/x", NULL},
    {'P', 6, "d/x/z", "z1"},
    {'P', 7, "e/f/g", "g1"},
    {'P', 1, "a", "a1"},
    {'D', 8, "nope", NULL},
    {'N', 0, NULL, NULL},
    {'P', 9, "a", "a3"},
    {'D', 10, "e/f/g", NULL},
    {'P', 11, "e", "e-file"},
    {'P', 12, "d", "conflict"},
    {'P', 13, "d/y", "y2"},
    {'D', 14, "a", NULL},
    {'P', 15, "a", "a4"},
    {'P', 16, "big/one", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
    {'P', 17, "big/one", "b"},
};
#define N_OPS (sizeof ops / sizeof ops[0])

static int apply_op(struct fsm *f, raft_index i, struct fsm_result *r)
{
    const struct op *o = &ops[i - 1];
    if (o->kind == 'P') return put(f, i, o->rid, o->path, o->body, r);
    if (o->kind == 'D') return del(f, i, o->rid, o->path, r);
    struct raft_entry e = {.term = 1, .index = i, .type = RAFT_ENTRY_NOOP};
    return fsm_apply(f, &e, r);
}

static int dump_cb(void *ctx, const char *path, const struct fsm_meta *m)
{
    char *out = ctx;
    size_t len = strlen(out);
    snprintf(out + len, 4096 - len, "%s:%llu:%llu:%02x;", path, (unsigned long long)m->size,
             (unsigned long long)m->index, m->sha256[0]);
    return 0;
}

/* The whole observable state: metadata, and every regular file under files/ with content. */
static void dump_state(struct tenv *t, char *out)
{
    out[0] = '\0';
    fsm_list(t->f, NULL, dump_cb, out);
    char cmd[300];
    snprintf(cmd, sizeof cmd,
             "cd %s/files && find . -type f | sort | while read f; do echo \"$f=$(cat $f)\"; "
             "done",
             t->dir);
    FILE *p = popen(cmd, "r");
    size_t len = strlen(out);
    while (p && len < 8000 && fgets(out + len, (int)(8192 - len), p))
        len = strlen(out);
    if (p) pclose(p);
}

static void reference_run(char *state, struct fsm_result *results)
{
    struct tenv t;
    t_init(&t);
    for (raft_index i = 1; i <= N_OPS; i++)
        CHECK_EQ_U(apply_op(t.f, i, &results[i - 1]), 0);
    dump_state(&t, state);
    t_fini(&t);
}

static bool same_result(const struct fsm_result *a, const struct fsm_result *b)
{
    return a->status == b->status && a->created == b->created && a->duplicate == b->duplicate &&
           a->size == b->size && a->index == b->index && memcmp(a->sha256, b->sha256, 32) == 0;
}

/* Replays from fsm_applied() to the end and compares with the reference. */
static void replay_and_compare(struct tenv *t, const char *ref_state,
                               const struct fsm_result *ref_res)
{
    static char state[8192];
    for (raft_index i = fsm_applied(t->f) + 1; i <= N_OPS; i++) {
        struct fsm_result r;
        CHECK_EQ_U(apply_op(t->f, i, &r), 0);
        if (!same_result(&r, &ref_res[i - 1]))
            fprintf(stderr, "entry %llu: outcome differs\n", (unsigned long long)i);
        CHECK(same_result(&r, &ref_res[i - 1]));
    }
    dump_state(t, state);
    if (strcmp(state, ref_state) != 0)
        fprintf(stderr, "state differs:\n%s\n--- want:\n%s\n", state, ref_state);
    CHECK(strcmp(state, ref_state) == 0);
}

struct junk_ctx {
    struct tenv *t;
    raft_index after;
};

/* Power loss after a checkpoint: a file written after it may hold anything. */
static int junk_cb(void *ctx, const char *path, const struct fsm_meta *m)
{
    struct junk_ctx *j = ctx;
    if (m->index <= j->after) return 0;
    char full[8300];
    snprintf(full, sizeof full, "%s/files/%s", j->t->dir, path);
    FILE *fp = fopen(full, "w");
    CHECK(fp != NULL);
    if (fp) fputs("junk", fp), fclose(fp);
    return 0;
}

/* Checkpoint at k, apply everything, lose what was written after k, reopen: entries k+1.. are
 * redone from BDB's metadata. */
static void test_fsm_replay_after_checkpoint(void)
{
    static char ref[8192];
    struct fsm_result ref_res[N_OPS];
    reference_run(ref, ref_res);
    for (raft_index k = 0; k <= N_OPS; k += 3) {
        struct tenv t;
        t_init(&t);
        for (raft_index i = 1; i <= N_OPS; i++) {
            CHECK_EQ_U(apply_op(t.f, i, &(struct fsm_result){0}), 0);
            if (i == k) CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
        }
        struct junk_ctx j = {&t, k};
        CHECK_EQ_U(fsm_list(t.f, NULL, junk_cb, &j), 0);
        t_close(&t);
        t_open(&t);
        CHECK_EQ_U(fsm_applied(t.f), k);
        replay_and_compare(&t, ref, ref_res);
        t_fini(&t);
    }
}

/* BDB lost its last transactions (process crash with NOSYNC commits) while files/ kept the
 * effects of later entries: replay re-applies them normally and must converge. */
static void test_fsm_replay_bdb_behind_files(void)
{
    static char ref[8192];
    struct fsm_result ref_res[N_OPS];
    reference_run(ref, ref_res);
    for (raft_index k = 0; k < N_OPS; k += 2) {
        struct tenv t;
        t_init(&t);
        for (raft_index i = 1; i <= k; i++)
            CHECK_EQ_U(apply_op(t.f, i, &(struct fsm_result){0}), 0);
        CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
        t_close(&t);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "cp -a %s %s.bak", t.env_dir, t.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&t);
        for (raft_index i = k + 1; i <= N_OPS; i++)
            CHECK_EQ_U(apply_op(t.f, i, &(struct fsm_result){0}), 0);
        t_close(&t);
        snprintf(cmd, sizeof cmd, "rm -rf %s && mv %s.bak %s", t.env_dir, t.env_dir, t.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&t);
        CHECK_EQ_U(fsm_applied(t.f), k);
        replay_and_compare(&t, ref, ref_res);
        t_fini(&t);
    }
}

/* Entry i of ops[] as the node hands it over (the caller unrefs e->data). */
static void op_entry(raft_index i, struct raft_entry *e)
{
    const struct op *o = &ops[i - 1];
    uint8_t rid[FSM_REQ_ID_LEN], *p;
    struct raft_blob *b = NULL;
    rid_of(o->rid, rid);
    *e = (struct raft_entry){.term = 1, .index = i, .type = RAFT_ENTRY_NOOP};
    if (o->kind == 'P') {
        CHECK_EQ_U(fsm_cmd_put_alloc(rid, o->path, strlen(o->path), strlen(o->body), &b, &p), 0);
        memcpy(p, o->body, strlen(o->body));
    } else if (o->kind == 'D') {
        CHECK_EQ_U(fsm_cmd_delete(rid, o->path, strlen(o->path), &b), 0);
    }
    if (b) e->type = RAFT_ENTRY_NORMAL, e->data = b;
}

/* Applies entries from..N_OPS in batches of `chunk`, checking each outcome and the end state
 * against the one-entry-at-a-time reference. */
static void batch_apply_compare(struct tenv *t, raft_index from, size_t chunk, const char *ref,
                                const struct fsm_result *ref_res)
{
    static char state[8192];
    struct raft_entry es[N_OPS];
    struct fsm_result res[N_OPS];
    for (raft_index i = from; i <= N_OPS; i += chunk) {
        size_t n = N_OPS - i + 1 < chunk ? N_OPS - i + 1 : chunk;
        for (size_t k = 0; k < n; k++)
            op_entry(i + k, &es[k]);
        CHECK_EQ_U(fsm_apply_batch(t->f, es, n, res), 0);
        for (size_t k = 0; k < n; k++) {
            CHECK(same_result(&res[k], &ref_res[i + k - 1]));
            raft_blob_unref(es[k].data);
        }
        CHECK_EQ_U(fsm_applied(t->f), i + n - 1);
    }
    dump_state(t, state);
    CHECK(strcmp(state, ref) == 0);
}

/* Entries 1..k in one batch (no outcome checks: the setup of a replay test). */
static void batch_apply_compare_prefix(struct tenv *t, raft_index k)
{
    struct raft_entry es[N_OPS];
    struct fsm_result res[N_OPS];
    for (raft_index i = 1; i <= k; i++)
        op_entry(i, &es[i - 1]);
    CHECK_EQ_U(fsm_apply_batch(t->f, es, k, res), 0);
    for (raft_index i = 1; i <= k; i++)
        raft_blob_unref(es[i - 1].data);
}

/* A batch (one BDB transaction) has exactly the outcomes of its entries applied one by one,
 * whatever the batch size: later entries see earlier ones (duplicates, replaced paths). */
static void test_fsm_batch_matches_single(void)
{
    static char ref[8192];
    struct fsm_result ref_res[N_OPS];
    reference_run(ref, ref_res);
    size_t chunks[] = {1, 2, 3, 7, N_OPS};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        struct tenv t;
        t_init(&t);
        batch_apply_compare(&t, 1, chunks[c], ref, ref_res);
        t_fini(&t);
    }
}

/* Crash with BDB behind files/ (lost NOSYNC commits): one batch spanning the redo part
 * (entries <= A) and new entries converges to the reference state. */
static void test_fsm_batch_replay_spans_redo(void)
{
    static char ref[8192];
    struct fsm_result ref_res[N_OPS];
    reference_run(ref, ref_res);
    for (raft_index k = 0; k < N_OPS; k += 3) {
        struct tenv t;
        t_init(&t);
        if (k > 0) batch_apply_compare_prefix(&t, k);
        CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
        t_close(&t);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "cp -a %s %s.bak", t.env_dir, t.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&t);
        for (raft_index i = k + 1; i <= N_OPS; i++)
            CHECK_EQ_U(apply_op(t.f, i, &(struct fsm_result){0}), 0);
        t_close(&t);
        snprintf(cmd, sizeof cmd, "rm -rf %s && mv %s.bak %s", t.env_dir, t.env_dir, t.env_dir);
        CHECK_EQ_U(system(cmd), 0);
        t_open(&t);
        CHECK_EQ_U(fsm_applied(t.f), k);
        batch_apply_compare(&t, k + 1, N_OPS, ref, ref_res);
        t_fini(&t);
    }
}

/* Reopen keeps metadata, the checkpointed index and the dedup table. */
static void test_fsm_second_open_refused(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm *g = NULL;
    char err[256] = "";
    struct fsm_options o = {0};
    CHECK_EQ_U(fsm_open_opts(t.env, t.dir, &o, &g, err, sizeof err), ERR_BUSY);
    CHECK(g == NULL);
    CHECK(strstr(err, "in use") != NULL);
    t_fini(&t);
}

static void test_fsm_open_bad_node_dir(void)
{
    struct tenv t;
    t_init(&t);
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/plainfile", t.dir);
    fclose(fopen(path, "w"));
    struct fsm *g = (struct fsm *)1;
    struct fsm_options o = {0};
    CHECK_EQ_U(fsm_open_opts(t.env, path, &o, &g, err, sizeof err), ERR_IO);
    CHECK(g == NULL);
    CHECK(strstr(err, "plainfile") != NULL);
    t_fini(&t);
}

static void test_fsm_reopen_keeps_state(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_result r;
    CHECK_EQ_U(put(t.f, 1, 1, "k/v", "value", &r), 0);
    CHECK_EQ_U(put(t.f, 2, 2, "k/w", "w", &r), 0);
    CHECK_EQ_U(fsm_checkpoint_sync(t.f), 0);
    CHECK_EQ_U(fsm_checkpointed(t.f), 2);
    t_close(&t);
    t_open(&t);
    CHECK_EQ_U(fsm_applied(t.f), 2);
    struct fsm_meta m;
    CHECK_EQ_U(fsm_stat(t.f, "k/v", &m), 0);
    CHECK_EQ_U(m.size, 5);
    CHECK_EQ_U(m.index, 1);
    CHECK_EQ_U(put(t.f, 3, 1, "k/v", "value", &r), 0);
    CHECK(r.duplicate && r.created);
    CHECK_EQ_U(r.index, 1);
    t_fini(&t);
}

/* The largest regular file in dir and, one level down, in its subdirectories (spare/'s
 * shards). */
static off_t largest_in(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    off_t max = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        off_t m = st.st_size;
        if (S_ISDIR(st.st_mode)) {
            char sub[400];
            snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
            m = depth > 0 ? largest_in(sub, depth - 1) : 0;
        } else if (!S_ISREG(st.st_mode)) {
            m = 0;
        }
        if (m > max) max = m;
    }
    if (d) closedir(d);
    return max;
}

static off_t largest_spare(const struct tenv *t)
{
    char full[300];
    snprintf(full, sizeof full, "%s/spare", t->dir);
    return largest_in(full, 1);
}

/* With fsm_open's defaults, a thread keeps spares ready (new paths create no inode on the
 * apply path) and another checkpoints on request and at close. */
static void test_fsm_background_threads(void)
{
    struct tenv t;
    t_init_opts(&t, true);
    struct fsm_stats s = {0};
    double deadline = now_s() + 20;
    while (s.spares < FSM_SPARES_MAX / 2 && now_s() < deadline) {
        fsm_get_stats(t.f, &s);
        usleep(1000); /* polling the pool size, bounded by the deadline */
    }
    CHECK(s.spares >= FSM_SPARES_MAX / 2 && s.spares <= FSM_SPARE_TARGET);
    struct fsm_result r;
    char path[32];
    for (unsigned i = 1; i <= 10; i++) {
        snprintf(path, sizeof path, "n/%u", i);
        CHECK_EQ_U(put(t.f, i, i, path, "new", &r), 0);
        CHECK(r.created);
    }
    fsm_get_stats(t.f, &s);
    CHECK_EQ_U(s.inodes_created, 0);
    CHECK(s.inodes_precreated >= FSM_SPARES_MAX / 2);
    double t0 = now_s();
    CHECK_EQ_U(fsm_checkpoint(t.f), 0); /* a request: returns at once */
    CHECK(now_s() - t0 < 0.5);
    deadline = now_s() + 20;
    while (fsm_checkpointed(t.f) != 10 && now_s() < deadline)
        usleep(1000);
    CHECK_EQ_U(fsm_checkpointed(t.f), 10);
    /* A big old inode is emptied by the thread, never on the apply path. */
    static char big[100 * 1024 + 1];
    memset(big, 'b', sizeof big - 1);
    CHECK_EQ_U(put(t.f, 11, 11, "big", big, &r), 0);
    CHECK_EQ_U(put(t.f, 12, 12, "big", "small now", &r), 0);
    deadline = now_s() + 20;
    while (largest_spare(&t) > 64 * 1024 && now_s() < deadline)
        usleep(1000);
    CHECK(largest_spare(&t) <= 64 * 1024);
    CHECK(file_is(&t, "big", "small now"));
    CHECK_EQ_U(put(t.f, 13, 13, "last", "x", &r), 0);
    t_close(&t); /* takes a last checkpoint */
    t.threads = false;
    t_open(&t);
    CHECK_EQ_U(fsm_applied(t.f), 13);
    t_fini(&t);
}

int main(void)
{
    RUN(test_fsm_put_new_replace_delete);
    RUN(test_fsm_overwrite_creates_no_inode);
    RUN(test_fsm_overwrite_in_place);
    RUN(test_fsm_in_place_never_torn);
    RUN(test_fsm_files_fd_cache);
    RUN(test_fsm_lease_released_on_break);
    RUN(test_fsm_read_leased_file);
    RUN(test_fsm_snapshot_of_leased_files);
    RUN(test_fsm_checkpoint_histogram);
    RUN(test_fsm_delete_then_create_reuses_inodes);
    RUN(test_fsm_duplicate_request_id);
    RUN(test_fsm_dedup_window);
    RUN(test_fsm_dedup_prune_batch);
    RUN(test_fsm_conflicting_paths);
    RUN(test_fsm_noop_config_and_corrupt);
    RUN(test_fsm_bad_paths_for_reads);
    RUN(test_fsm_read_fd_stable_across_overwrite);
    RUN(test_fsm_read_busy_when_files_disagree);
    RUN(test_fsm_list_prefix);
    RUN(test_fsm_longest_path);
    RUN(test_fsm_leftovers_cleaned_on_open);
    RUN(test_fsm_reopen_keeps_state);
    RUN(test_fsm_second_open_refused);
    RUN(test_fsm_open_bad_node_dir);
    RUN(test_fsm_replay_after_checkpoint);
    RUN(test_fsm_replay_bdb_behind_files);
    RUN(test_fsm_batch_matches_single);
    RUN(test_fsm_batch_replay_spans_redo);
    RUN(test_fsm_background_threads);
    return check_report();
}
