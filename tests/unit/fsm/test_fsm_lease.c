/* test_fsm_lease.c — the write leases kept on the file store's cached fds when nobody answers
 * a break in time (fsm_fdc.h): the kernel then lets the opener in by itself, and the store
 * must notice before its next overwrite in place; and the lease thread's exit. The kernel's
 * own timeout (lease-break-time, 45 s, a global sysctl we must not change) is simulated: the
 * lease is dropped behind the cache's back as the kernel does, and the store's clock is moved
 * past the window in which it may trust its flag. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"
#include "fsm_tenv.h"
#include "../../../src/fsm/fsm_int.h"

#define SEC 1000000000LL
#define LEN 4096

static char bodies[3][LEN + 1]; /* 'A', 'B', 'C' x LEN */

static uint64_t in_place(struct tenv *t)
{
    struct fsm_stats s;
    fsm_get_stats(t->f, &s);
    return s.overwrites_in_place;
}

/* lease-break-time as the store sees it: written to dir/lbt and read from there. */
static void set_lbt(struct tenv *t, const char *secs, bool now)
{
    char p[128];
    snprintf(p, sizeof p, "%s/lbt", t->dir);
    FILE *fp = fopen(p, "w");
    CHECK(fp != NULL);
    if (!fp) return;
    fputs(secs, fp);
    fclose(fp);
    if (now) fdc_test_lbt_file(&t->f->ff.fdc, p);
}

/* The cached fd of path (-1 when none); the cache lock is not held after. */
static int cached_fd(struct tenv *t, const char *path)
{
    struct fsm_fdcache *c = &t->f->ff.fdc;
    fdc_lock(c);
    struct fsm_fdc_entry *e = fdc_take(c, path, strlen(path));
    int fd = e ? e->fd : -1;
    fdc_put(c, e);
    fdc_unlock(c);
    return fd;
}

static int kernel_lease(struct tenv *t, const char *path)
{
    int fd = cached_fd(t, path);
    return fd < 0 ? -2 : fcntl(fd, F_GETLEASE);
}

/* What the kernel does when a break is not answered within lease-break-time: downgrades the
 * lease to a read lease (the opener reads) or removes it; the cache's flag stays set. */
static void kernel_times_out(struct tenv *t, const char *path)
{
    int fd = cached_fd(t, path);
    CHECK(fd >= 0);
    if (fd >= 0 && fcntl(fd, F_SETLEASE, F_RDLCK) != 0) CHECK(fcntl(fd, F_SETLEASE, F_UNLCK) == 0);
    CHECK(kernel_lease(t, path) != F_WRLCK);
}

static void close_other_fds(int keep1, int keep2)
{
    for (int fd = 3; fd < 1024; fd++) /* the store's fds stay the parent's alone */
        if (fd != keep1 && fd != keep2) close(fd);
}

/* A reader in another process: opens path (non-blocking: no lease may hold it), reads the first
 * half, reports, waits for the go, reads the second half; exit status 0 when the whole read
 * was one version, 2 when torn, 3 when it could not open. */
static pid_t start_reader(const char *path, int *ready_fd, int *go_fd)
{
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close_other_fds(ready[1], go[0]);
        static char buf[LEN];
        int fd = open(path, O_RDONLY | O_NONBLOCK);
        char x = fd < 0 ? 'e' : 'x';
        if (fd >= 0 && pread(fd, buf, LEN / 2, 0) != LEN / 2) x = 'e';
        if (write(ready[1], &x, 1) != 1 || x == 'e') _exit(3);
        if (read(go[0], &x, 1) != 1) _exit(3);
        if (pread(fd, buf + LEN / 2, LEN / 2, LEN / 2) != LEN / 2) _exit(3);
        for (int i = 1; i < LEN; i++)
            if (buf[i] != buf[0]) _exit(2);
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    *ready_fd = ready[0];
    *go_fd = go[1];
    return pid;
}

static int wait_status(pid_t pid)
{
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* F1: the kernel has let a reader in past our lease (we did not answer the break in time):
 * the next overwrite must not go in place, though the cache still thinks it holds the lease.
 * The store notices because the lease was confirmed longer ago than half of lease-break-time
 * (clock moved on), checks it (F_GETLEASE), and its fresh lease is refused while the reader
 * has the file open: the overwrite swaps in a spare and the reader sees one version only. */
static void test_lapsed_lease_not_written_in_place(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    set_lbt(&t, "45\n", true);
    CHECK_EQ_U(put(t.f, 1, 1, "f", bodies[0]), 0);
    uint64_t n0 = in_place(&t);
    CHECK_EQ_U(put(t.f, 2, 2, "f", bodies[1]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 1);
    CHECK_EQ_U(kernel_lease(&t, "f"), F_WRLCK); /* kept for the next overwrite */
    kernel_times_out(&t, "f");
    char path[256];
    snprintf(path, sizeof path, "%s/files/f", t.dir);
    int ready, go;
    pid_t pid = start_reader(path, &ready, &go);
    char x = 0;
    CHECK(read(ready, &x, 1) == 1 && x == 'x'); /* in, and half way through */
    c->test_clock_ns += 23 * SEC;               /* 45 s / 2 since the lease was taken */
    uint64_t lapsed0 = c->lapsed;
    CHECK_EQ_U(put(t.f, 3, 3, "f", bodies[2]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 1); /* a spare, not the reader's inode */
    CHECK_EQ_U(c->lapsed, lapsed0 + 1);
    CHECK(write(go, "g", 1) == 1);
    CHECK_EQ_U(wait_status(pid), 0); /* 2: torn */
    close(ready);
    close(go);
    /* The reader gone, the new inode is overwritten in place again under a fresh lease. */
    CHECK_EQ_U(put(t.f, 4, 4, "f", bodies[0]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 2);
    CHECK_EQ_U(kernel_lease(&t, "f"), F_WRLCK);
    t_fini(&t);
}

/* The flag is trusted for half of lease-break-time after the lease was confirmed (no fcntl
 * per write), then confirmed once with F_GETLEASE; lease-break-time 0 (the kernel never times
 * a lease out) trusts it for ever and still writes in place. */
#define PUT_G(k)                                                                                   \
    do {                                                                                           \
        CHECK_EQ_U(put(t.f, i, (unsigned)i, "g", bodies[k]), 0);                                   \
        i++;                                                                                       \
    } while (0)

static void test_lease_checked_only_past_window(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    set_lbt(&t, "45\n", true);
    CHECK_EQ_U(put(t.f, 1, 1, "g", bodies[0]), 0);
    uint64_t n0 = in_place(&t);
    raft_index i = 2;
    for (int k = 0; k < 5; k++, i++)
        CHECK_EQ_U(put(t.f, i, (unsigned)i, "g", bodies[k % 2]), 0);
    CHECK_EQ_U(c->checks, 0);
    c->test_clock_ns += 22 * SEC; /* still within 22.5 s */
    PUT_G(1);
    CHECK_EQ_U(c->checks, 0);
    c->test_clock_ns += 1 * SEC; /* past it: checked once, still held, confirmed again */
    PUT_G(0);
    PUT_G(1);
    CHECK_EQ_U(c->checks, 1);
    CHECK_EQ_U(c->lapsed, 0);
    set_lbt(&t, "0\n", true);
    c->test_clock_ns += 1000000 * SEC;
    PUT_G(0);
    CHECK_EQ_U(c->checks, 1);
    set_lbt(&t, "1\n", true); /* a change: released, retaken at the next write */
    PUT_G(1);
    CHECK_EQ_U(c->checks, 1);
    c->test_clock_ns += 1 * SEC; /* past 0.5 s: checked */
    PUT_G(0);
    CHECK_EQ_U(c->checks, 2);
    CHECK_EQ_U(in_place(&t), n0 + (i - 2));
    t_fini(&t);
}

/* Another process's single non-blocking open of path: its errno (0: it got in). */
static int open_once_elsewhere(const char *path)
{
    int res[2];
    CHECK(pipe(res) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close_other_fds(res[1], -1);
        int fd = open(path, O_RDONLY | O_NONBLOCK);
        int e = fd < 0 ? errno : 0;
        _exit(write(res[1], &e, sizeof e) == sizeof e ? 0 : 1);
    }
    close(res[1]);
    int e = -1;
    CHECK_EQ_U(read(res[0], &e, sizeof e), sizeof e);
    close(res[0]);
    CHECK_EQ_U(wait_status(pid), 0);
    return e;
}

static bool wait_until_bool(_Atomic bool *b)
{
    double deadline = now_s() + 10;
    while (!atomic_load(b) && now_s() < deadline)
        sched_yield();
    return atomic_load(b);
}

/* name written twice (the second overwrite goes in place): its cached fd keeps the lease. */
static void leased_file(struct tenv *t, const char *name)
{
    CHECK_EQ_U(put(t->f, 1, 1, name, bodies[0]), 0);
    CHECK_EQ_U(put(t->f, 2, 2, name, bodies[1]), 0);
    CHECK_EQ_U(kernel_lease(t, name), F_WRLCK);
}

/* F2: transient poll errors are retried (the thread goes on releasing broken leases); a fatal
 * one ends the thread, which first stops keeping leases and releases them all: an outside open
 * then gets in at once, and later overwrites in place take and drop a lease each. */
static void test_lease_thread_exit_releases_leases(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    char path[256];
    snprintf(path, sizeof path, "%s/files/h", t.dir);
    leased_file(&t, "h");
    atomic_store(&c->test_poll_errno, ENOMEM);
    atomic_store(&c->test_poll_fails, 3);
    double deadline = now_s() + 10;
    while (atomic_load(&c->test_poll_fails) > 0 && now_s() < deadline)
        sched_yield();
    CHECK_EQ_U(atomic_load(&c->test_poll_fails), 0);
    /* Still running: a break is answered (the opener is let in, polled, long before 45 s). */
    uint64_t b0 = atomic_load(&c->breaks);
    deadline = now_s() + 10;
    int e;
    while ((e = open_once_elsewhere(path)) == EWOULDBLOCK && now_s() < deadline)
        sched_yield();
    CHECK_EQ_U(e, 0);
    CHECK(atomic_load(&c->breaks) > b0);
    CHECK(!atomic_load(&c->thread_done));
    CHECK_EQ_U(put(t.f, 3, 3, "h", bodies[0]), 0);
    CHECK_EQ_U(kernel_lease(&t, "h"), F_WRLCK);
    /* A fatal error: the thread goes, and no lease stays behind it. */
    atomic_store(&c->test_poll_errno, EBADF);
    atomic_store(&c->test_poll_fails, 1);
    CHECK(wait_until_bool(&c->thread_done));
    fdc_lock(c);
    CHECK(!c->hold);
    fdc_unlock(c);
    CHECK_EQ_U(kernel_lease(&t, "h"), F_UNLCK);
    CHECK_EQ_U(open_once_elsewhere(path), 0);
    uint64_t n0 = in_place(&t);
    CHECK_EQ_U(put(t.f, 4, 4, "h", bodies[1]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 1);
    CHECK_EQ_U(kernel_lease(&t, "h"), F_UNLCK); /* dropped after the write */
    CHECK_EQ_U(open_once_elsewhere(path), 0);
    t_fini(&t);
}

/* While poll keeps failing transiently, breaks are still answered (drained at each retry):
 * an outside open gets in long before the kernel's lease-break-time. */
static void test_breaks_answered_while_poll_fails(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    char path[256];
    snprintf(path, sizeof path, "%s/files/r", t.dir);
    leased_file(&t, "r");
    atomic_store(&c->test_poll_errno, EAGAIN);
    atomic_store(&c->test_poll_fails, 1000000);
    double deadline = now_s() + 10; /* first, the thread is in its failing loop */
    while (atomic_load(&c->test_poll_fails) == 1000000 && now_s() < deadline)
        sched_yield();
    CHECK(atomic_load(&c->test_poll_fails) < 1000000);
    deadline = now_s() + 10;
    int e;
    while ((e = open_once_elsewhere(path)) == EWOULDBLOCK && now_s() < deadline)
        sched_yield();
    CHECK_EQ_U(e, 0);
    CHECK(atomic_load(&c->test_poll_fails) > 0); /* answered while still failing */
    atomic_store(&c->test_poll_fails, 0);
    CHECK(!atomic_load(&c->thread_done));
    t_fini(&t);
}

/* POLLNVAL (or POLLERR) on the thread's fds ends it like a fatal poll error (it used to try
 * a read and poll again, spinning): no lease stays behind it. */
static void test_poll_nval_ends_thread(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    leased_file(&t, "n");
    atomic_store(&c->test_poll_revents, POLLNVAL);
    CHECK(wait_until_bool(&c->thread_done));
    fdc_lock(c);
    CHECK(!c->hold);
    fdc_unlock(c);
    CHECK_EQ_U(kernel_lease(&t, "n"), F_UNLCK);
    t_fini(&t);
}

/* F4: lease-break-time is re-read on a deadline (about every second), not only after seconds
 * of silence. */
static void test_lbt_reread(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    set_lbt(&t, "7\n", true);
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 7000);
    set_lbt(&t, "9\n", false);
    double deadline = now_s() + 3;
    while (atomic_load(&c->lbt_ms) != 9000 && now_s() < deadline)
        sched_yield();
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 9000);
    set_lbt(&t, "garbage\n", false); /* unreadable: the smallest non-zero value, 1 s */
    deadline = now_s() + 3;
    while (atomic_load(&c->lbt_ms) != 1000 && now_s() < deadline)
        sched_yield();
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 1000);
    t_fini(&t);
}

/* lease-break-time changes while a break of a kept lease is pending (the kernel timed it out
 * under the value in force when it began): the lease confirmed at 0 with `from` is timed out
 * (a reader gets in), the value becomes `to` and the clock moves by `secs`; the next overwrite
 * must not go in place under the reader (which sees one version: 2 = torn). With
 * `starved`, the lease thread no longer re-reads the value: the apply thread must see the
 * change itself. */
static void lbt_change_case(const char *from, const char *to, int64_t secs, bool starved)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    set_lbt(&t, from, true);
    atomic_store(&c->test_lbt_starved, starved);
    CHECK_EQ_U(put(t.f, 1, 1, "v", bodies[0]), 0);
    uint64_t n0 = in_place(&t);
    CHECK_EQ_U(put(t.f, 2, 2, "v", bodies[1]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 1);
    CHECK_EQ_U(kernel_lease(&t, "v"), F_WRLCK);
    kernel_times_out(&t, "v");
    char path[256];
    snprintf(path, sizeof path, "%s/files/v", t.dir);
    int ready, go;
    pid_t pid = start_reader(path, &ready, &go);
    char x = 0;
    CHECK(read(ready, &x, 1) == 1 && x == 'x');
    set_lbt(&t, to, !starved); /* starved: only the file changes */
    c->test_clock_ns += secs * SEC;
    CHECK_EQ_U(put(t.f, 3, 3, "v", bodies[2]), 0);
    CHECK_EQ_U(in_place(&t), n0 + 1); /* a spare, not the reader's inode */
    CHECK(write(go, "g", 1) == 1);
    CHECK_EQ_U(wait_status(pid), 0); /* 2: torn */
    close(ready);
    close(go);
    CHECK_EQ_U(put(t.f, 4, 4, "v", bodies[0]), 0); /* reader gone: in place again */
    CHECK_EQ_U(in_place(&t), n0 + 2);
    t_fini(&t);
}

/* 10 -> 45 twelve seconds after the confirmation: the kernel timed the break out at 10 s, 45
 * would trust the flag for 22.5 s. */
static void test_lbt_raised_releases(void)
{
    lbt_change_case("10\n", "45\n", 12, false);
}

/* 45 -> 0 after 46 s: 0 would trust the flag for ever. */
static void test_lbt_zeroed_releases(void)
{
    lbt_change_case("45\n", "0\n", 46, false);
}

/* Changes while the lease thread does not re-read: the apply thread re-reads a value older
 * than a second itself (45 -> 1: 2 s would still be trusted under 45), and a change releases
 * the lease of the entry it is writing, out of the cache meanwhile (10 -> 45). */
static void test_lbt_change_seen_by_apply_thread(void)
{
    lbt_change_case("45\n", "1\n", 2, true);
    lbt_change_case("10\n", "45\n", 12, true);
}

/* A value whose kernel product lease_break_time * HZ overflows int counts as 1 s. */
static void test_lbt_clamped(void)
{
    struct tenv t;
    t_init(&t);
    struct fsm_fdcache *c = &t.f->ff.fdc;
    set_lbt(&t, "3000000\n", true);
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 1000);
    set_lbt(&t, "2147483\n", true); /* INT_MAX / 1000: kept */
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 2147483000);
    set_lbt(&t, "99999999999999999999999\n", true);
    CHECK_EQ_U(atomic_load(&c->lbt_ms), 1000);
    t_fini(&t);
}

int main(void)
{
    for (int i = 0; i < 3; i++)
        memset(bodies[i], 'A' + i, LEN);
    RUN(test_lapsed_lease_not_written_in_place);
    RUN(test_lease_checked_only_past_window);
    RUN(test_lease_thread_exit_releases_leases);
    RUN(test_lbt_reread);
    RUN(test_breaks_answered_while_poll_fails);
    RUN(test_poll_nval_ends_thread);
    RUN(test_lbt_raised_releases);
    RUN(test_lbt_zeroed_releases);
    RUN(test_lbt_change_seen_by_apply_thread);
    RUN(test_lbt_clamped);
    return check_report();
}
