/* fsm_fdc.c — the fd cache and its held write leases (design and invariants: fsm_fdc.h). */
#include "fsm_fdc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The oldest cached lease-break-time a flag is judged by: the lease thread re-reads it this
 * often, and the apply thread itself when the lease thread is late (its smallest non-zero
 * value is 1 s). */
#define FDC_LBT_CHECK_MS 1000
/* Backoff of the lease thread after a transient poll error (doubling up to the max). */
#define FDC_RETRY_MIN_MS 1
#define FDC_RETRY_MAX_MS 1000
#define FDC_LBT_PROC "/proc/sys/fs/lease-break-time"
#define FDC_THREAD_STACK (64u * 1024u)

static uint64_t fdc_hash(const char *path, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)path[i]) * 1099511628211ull;
    return h;
}

void fdc_lock(struct fsm_fdcache *c)
{
    pthread_mutex_lock(&c->lock);
}

void fdc_unlock(struct fsm_fdcache *c)
{
    pthread_mutex_unlock(&c->lock);
}

/* Unhooks e from its chain, the recency list and by_fd. */
static void fdc_detach(struct fsm_fdcache *c, struct fsm_fdc_entry *e)
{
    struct fsm_fdc_entry **pp = &c->buckets[e->hash & (c->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    c->by_fd[e->fd] = NULL;
    c->n--;
}

struct fsm_fdc_entry *fdc_take(struct fsm_fdcache *c, const char *path, size_t len)
{
    if (c->n == 0) return NULL;
    uint64_t h = fdc_hash(path, len);
    struct fsm_fdc_entry *e = c->buckets[h & (c->n_buckets - 1)];
    while (e && (e->hash != h || e->len != len || memcmp(e->path, path, len) != 0))
        e = e->hnext;
    if (e) fdc_detach(c, e);
    return e;
}

void fdc_entry_free(struct fsm_fdc_entry *e)
{
    if (!e) return;
    close(e->fd); /* also ends its lease: the fd is the description's only reference */
    free(e);
}

void fdc_drop(struct fsm_fdcache *c, const char *path, size_t len)
{
    fdc_entry_free(fdc_take(c, path, len));
}

struct fsm_fdc_entry *fdc_entry_new(struct fsm_fdcache *c, const char *path, size_t len, int fd)
{
    struct fsm_fdc_entry *e = c->cap > 0 ? malloc(sizeof *e + len) : NULL;
    if (!e) {
        close(fd);
        return NULL;
    }
    memset(e, 0, sizeof *e);
    e->hash = fdc_hash(path, len);
    e->fd = fd;
    e->len = len;
    memcpy(e->path, path, len);
    return e;
}

/* by_fd has a slot for fd. */
static bool fdc_by_fd_fit(struct fsm_fdcache *c, int fd)
{
    if ((size_t)fd < c->by_fd_cap) return true;
    size_t cap = c->by_fd_cap ? c->by_fd_cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    struct fsm_fdc_entry **p = realloc(c->by_fd, cap * sizeof *p);
    if (!p) return false;
    memset(p + c->by_fd_cap, 0, (cap - c->by_fd_cap) * sizeof *p);
    c->by_fd = p;
    c->by_fd_cap = cap;
    return true;
}

void fdc_put(struct fsm_fdcache *c, struct fsm_fdc_entry *e)
{
    if (!e) return;
    if (c->cap == 0 || e->fd < 0 || !fdc_by_fd_fit(c, e->fd)) {
        fdc_entry_free(e);
        return;
    }
    if (c->n >= c->cap) { /* the least recently written path leaves */
        struct fsm_fdc_entry *old = c->tail;
        fdc_detach(c, old);
        fdc_entry_free(old);
    }
    struct fsm_fdc_entry **b = &c->buckets[e->hash & (c->n_buckets - 1)];
    e->hnext = *b;
    *b = e;
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
    c->by_fd[e->fd] = e;
    c->n++;
}

void fdc_clear(struct fsm_fdcache *c)
{
    while (c->head) {
        struct fsm_fdc_entry *e = c->head;
        fdc_detach(c, e);
        fdc_entry_free(e);
    }
}

int64_t fdc_now(const struct fsm_fdcache *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec +
           atomic_load_explicit(&c->test_clock_ns, memory_order_relaxed);
}

static bool fdc_lbt_refresh(struct fsm_fdcache *c);

/* The flag of a lease confirmed at `confirmed` may be trusted at `now`: no break begun since
 * can have timed out yet (with half of lease-break-time to spare; 0: never times out). */
static bool fdc_trusted(const struct fsm_fdcache *c, int64_t confirmed, int64_t now)
{
    int64_t lbt = atomic_load_explicit(&c->lbt_ms, memory_order_relaxed);
    return lbt == 0 || now - confirmed < lbt * 1000000 / 2;
}

/* Takes a fresh lease on e (confirmed at now). */
static bool fdc_lease_fresh(struct fsm_fdcache *c, struct fsm_fdc_entry *e, int64_t now)
{
    if (c->hold && !e->owned) {
        /* Set before the lease: taking one sets the owner (to the whole process) only when
         * the description has none yet. */
        struct f_owner_ex o = {.type = F_OWNER_TID, .pid = c->tid};
        e->owned = fcntl(e->fd, F_SETOWN_EX, &o) == 0 && fcntl(e->fd, F_SETSIG, FSM_LEASE_SIG) == 0;
    }
    if (fcntl(e->fd, F_SETLEASE, F_WRLCK) != 0) return false;
    e->leased = true;
    e->confirmed = now;
    return true;
}

static bool fdc_release(struct fsm_fdc_entry *e);

bool fdc_lease(struct fsm_fdcache *c, struct fsm_fdc_entry *e)
{
    int64_t now = fdc_now(c); /* before any fcntl: a break can only begin after it */
    /* A flag is judged only by a value at most FDC_LBT_CHECK_MS old (a starved lease thread
     * must not hide a change); a change released every cached lease, e (out of the cache) too. */
    if (now - c->lbt_read_at > (int64_t)FDC_LBT_CHECK_MS * 1000000 && fdc_lbt_refresh(c) &&
        e->leased)
        fdc_release(e);
    if (e->leased) {
        if (fdc_trusted(c, e->confirmed, now)) return true;
        c->checks++;
        if (fcntl(e->fd, F_GETLEASE) == F_WRLCK) {
            e->confirmed = now;
            return true;
        }
        /* Broken and timed out by the kernel (or being broken): whoever opened the inode may
         * be reading it. Let go of what is left (a read lease, or nothing: then F_UNLCK fails,
         * harmlessly); the fresh lease below is refused while that open lasts. */
        c->lapsed++;
        fdc_release(e);
    }
    return fdc_lease_fresh(c, e, now);
}

void fdc_written(struct fsm_fdcache *c, const struct fsm_fdc_entry *e)
{
    int64_t lbt = atomic_load_explicit(&c->lbt_ms, memory_order_relaxed);
    int64_t took = fdc_now(c) - e->confirmed;
    if (lbt > 0 && took >= lbt * 1000000)
        LOG_WARN("fsm: a write in place of %.*s ended %lld ms after its lease was confirmed "
                 "(lease-break-time %lld ms): a reader may have seen it half done",
                 (int)e->len, e->path, (long long)(took / 1000000), (long long)lbt);
}

/* F_UNLCK also clears the description's owner and signal (lease_modify: f_delown, signum 0):
 * the next lease needs both set again. */
static bool fdc_release(struct fsm_fdc_entry *e)
{
    e->leased = false;
    e->owned = false;
    return fcntl(e->fd, F_SETLEASE, F_UNLCK) == 0;
}

bool fdc_settle(struct fsm_fdcache *c, struct fsm_fdc_entry *e)
{
    if (c->hold && e->owned) return true;
    return fdc_release(e);
}

void fdc_unlease(struct fsm_fdcache *c, const char *path, size_t len)
{
    struct fsm_fdc_entry *e = fdc_take(c, path, len);
    if (!e) return;
    if (e->leased && !fdc_release(e)) {
        fdc_entry_free(e);
        return;
    }
    fdc_put(c, e);
}

void fdc_unlease_all(struct fsm_fdcache *c)
{
    for (struct fsm_fdc_entry *e = c->head; e; e = e->next)
        if (e->leased) fdc_release(e);
}

/* ---- the lease thread --------------------------------------------------------------------- */

/* lease-break-time in ms, read from path. 1 s (the smallest non-zero value, the safe guess)
 * when it cannot be read or is negative, and when above INT_MAX/1000 s: the kernel's int
 * product lease_break_time * HZ then overflows, and an opener may get in at once. */
static int64_t fdc_lbt_read(const char *path)
{
    FILE *fp = fopen(path, "re");
    long long v = -1;
    char buf[32];
    if (fp) {
        char *end = buf;
        errno = 0;
        if (fgets(buf, sizeof buf, fp)) v = strtoll(buf, &end, 10);
        if (end == buf || errno != 0) v = -1;
        fclose(fp);
    }
    if (v < 0 || v > INT_MAX / 1000) v = 1;
    return (int64_t)v * 1000;
}

/* Re-reads lease-break-time (c->lock held); true when it changed. The kernel fixes a break's
 * timeout from the value when the break begins, so a lease confirmed under the old value must
 * not be judged by the new one: a change releases every cached lease (retaken, confirmed under
 * the new value, at their next writes). */
static bool fdc_lbt_refresh(struct fsm_fdcache *c)
{
    c->lbt_read_at = fdc_now(c); /* before the read: the value is at least this fresh */
    int64_t v = fdc_lbt_read(c->lbt_path[0] ? c->lbt_path : FDC_LBT_PROC);
    int64_t old = atomic_load(&c->lbt_ms);
    if (v == old) return false;
    atomic_store(&c->lbt_ms, v);
    fdc_unlease_all(c);
    LOG_INFO("fsm: lease-break-time now %lld ms (was %lld): kept leases released", (long long)v,
             (long long)old);
    return true;
}

void fdc_test_lbt_file(struct fsm_fdcache *c, const char *path)
{
    pthread_mutex_lock(&c->lock);
    snprintf(c->lbt_path, sizeof c->lbt_path, "%s", path);
    fdc_lbt_refresh(c);
    pthread_mutex_unlock(&c->lock);
}

/* A break of fd's lease: released, when fd is still cached and leased. (A signal may name an
 * fd closed and reused since: that entry's lease is released too, which costs only a fresh
 * lease at its next write.) */
static void fdc_broken_fd(struct fsm_fdcache *c, int fd)
{
    struct fsm_fdc_entry *e = fd >= 0 && (size_t)fd < c->by_fd_cap ? c->by_fd[fd] : NULL;
    if (!e || !e->leased) return;
    atomic_fetch_add(&c->breaks, 1); /* first: whoever gets in sees the count */
    fdc_release(e);
}

/* A break whose fd is unknown (SIGIO: the real-time queue overflowed): every lease being
 * broken is released (F_GETLEASE reports F_UNLCK for those). */
static void fdc_broken_any(struct fsm_fdcache *c)
{
    for (struct fsm_fdc_entry *e = c->head; e; e = e->next) {
        if (e->leased && fcntl(e->fd, F_GETLEASE) != F_WRLCK) {
            atomic_fetch_add(&c->breaks, 1);
            fdc_release(e);
        }
    }
}

static void fdc_drain(struct fsm_fdcache *c)
{
    struct signalfd_siginfo si[16];
    ssize_t n;
    while ((n = read(c->sig_fd, si, sizeof si)) > 0) {
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            if ((int)si[i].ssi_signo == FSM_LEASE_SIG)
                fdc_broken_fd(c, (int)si[i].ssi_fd);
            else
                fdc_broken_any(c);
        }
        pthread_mutex_unlock(&c->lock);
    }
}

static int64_t fdc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll() of the thread's fds until the lease-break-time deadline (tests may make it fail). */
static int fdc_poll(struct fsm_fdcache *c, struct pollfd p[2], int64_t deadline)
{
    if (atomic_load_explicit(&c->test_poll_fails, memory_order_relaxed) > 0) {
        errno = atomic_load(&c->test_poll_errno);
        atomic_fetch_sub(&c->test_poll_fails, 1);
        return -1;
    }
    short r = atomic_exchange(&c->test_poll_revents, 0);
    if (r) {
        p[0].revents = r;
        p[1].revents = 0;
        return 1;
    }
    int64_t wait = deadline - fdc_mono_ms();
    return poll(p, 2, wait < 0 ? 0 : (int)wait);
}

/* The thread stops for good: no lease may outlive it (nobody would release it on a break). */
static void fdc_thread_gone(struct fsm_fdcache *c)
{
    pthread_mutex_lock(&c->lock);
    c->hold = false;
    fdc_unlease_all(c);
    pthread_mutex_unlock(&c->lock);
    atomic_store(&c->thread_done, true);
}

static void *fdc_lease_main(void *arg)
{
    struct fsm_fdcache *c = arg;
    pthread_mutex_lock(&c->lock);
    c->tid = gettid();
    pthread_cond_signal(&c->started);
    pthread_mutex_unlock(&c->lock);
    struct pollfd p[2] = {{.fd = c->sig_fd, .events = POLLIN},
                          {.fd = c->stop_fd, .events = POLLIN}};
    int64_t lbt_at = fdc_mono_ms() + FDC_LBT_CHECK_MS;
    int retry_ms = FDC_RETRY_MIN_MS;
    for (;;) {
        int n = fdc_poll(c, p, lbt_at);
        if (n < 0 && errno != EINTR && errno != EAGAIN && errno != ENOMEM) {
            LOG_ERROR("fsm: lease thread: poll: %s (leases now taken per write)", strerror(errno));
            break;
        }
        if (n < 0 && errno != EINTR) { /* transient: back off */
            poll(NULL, 0, retry_ms);
            retry_ms = retry_ms * 2 > FDC_RETRY_MAX_MS ? FDC_RETRY_MAX_MS : retry_ms * 2;
            fdc_drain(c); /* non-blocking: breaks are answered while poll keeps failing */
        }
        if (n >= 0) retry_ms = FDC_RETRY_MIN_MS;
        if (n > 0 && ((p[0].revents | p[1].revents) & (POLLERR | POLLNVAL))) {
            LOG_ERROR("fsm: lease thread: poll error on its fds (leases now taken per write)");
            break; /* would spin: the condition stays */
        }
        if (n > 0 && p[1].revents) break;
        if (n > 0 && p[0].revents) fdc_drain(c);
        if (fdc_mono_ms() >= lbt_at) {
            pthread_mutex_lock(&c->lock);
            if (!atomic_load(&c->test_lbt_starved)) fdc_lbt_refresh(c);
            pthread_mutex_unlock(&c->lock);
            lbt_at = fdc_mono_ms() + FDC_LBT_CHECK_MS;
        }
    }
    fdc_thread_gone(c);
    return NULL;
}

/* A lease signal that reaches a thread other than the lease thread (never expected) must not
 * end the process: with its default action it would. */
static void fdc_stray_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
}

static void fdc_guard_signal(void)
{
    struct sigaction old;
    if (sigaction(FSM_LEASE_SIG, NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
        old.sa_handler != SIG_DFL)
        return;
    struct sigaction sa = {.sa_sigaction = fdc_stray_signal, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(FSM_LEASE_SIG, &sa, NULL);
}

/* Starts the lease thread with every signal blocked (so the signalfd gets its signals). */
static bool fdc_start(struct fsm_fdcache *c)
{
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, FSM_LEASE_SIG);
    sigaddset(&mine, SIGIO);
    c->sig_fd = signalfd(-1, &mine, SFD_NONBLOCK | SFD_CLOEXEC);
    c->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->sig_fd < 0 || c->stop_fd < 0) return false;
    fdc_guard_signal();
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, FDC_THREAD_STACK);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    bool ok = pthread_create(&c->thread, &attr, fdc_lease_main, c) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (!ok) return false;
    pthread_mutex_lock(&c->lock);
    while (c->tid == 0)
        pthread_cond_wait(&c->started, &c->lock);
    pthread_mutex_unlock(&c->lock);
    return true;
}

void fdc_init(struct fsm_fdcache *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->started, NULL);
    c->sig_fd = c->stop_fd = -1;
    atomic_store(&c->lbt_ms, fdc_lbt_read(FDC_LBT_PROC));
    c->lbt_read_at = fdc_now(c);
    struct rlimit rl;
    size_t cap = FSM_FDC_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 8 < cap)
        cap = (size_t)(rl.rlim_cur / 8); /* most fds stay for connections and the log */
    size_t nb = 16;
    while (nb < cap)
        nb *= 2;
    c->buckets = cap ? calloc(nb, sizeof *c->buckets) : NULL;
    c->n_buckets = c->buckets ? nb : 0;
    c->cap = c->buckets ? cap : 0;
    if (c->cap == 0) return; /* nothing is cached, so no lease is ever kept */
    c->hold = c->joinable = fdc_start(c);
    if (!c->hold) LOG_WARN("fsm: no lease thread: overwrites in place take a lease each");
}

void fdc_fini(struct fsm_fdcache *c)
{
    pthread_mutex_lock(&c->lock);
    fdc_clear(c); /* first: a lease outliving the thread would hold openers for the full
                   * lease-break-time */
    pthread_mutex_unlock(&c->lock);
    if (c->joinable) {
        uint64_t one = 1;
        if (write(c->stop_fd, &one, sizeof one) != sizeof one)
            LOG_ERROR("fsm: cannot stop the lease thread");
        pthread_join(c->thread, NULL);
        c->hold = c->joinable = false;
    }
    if (c->sig_fd >= 0) close(c->sig_fd);
    if (c->stop_fd >= 0) close(c->stop_fd);
    c->sig_fd = c->stop_fd = -1;
    free(c->buckets);
    free(c->by_fd);
    c->buckets = NULL;
    c->by_fd = NULL;
    c->cap = c->n_buckets = c->by_fd_cap = 0;
    pthread_cond_destroy(&c->started);
    pthread_mutex_destroy(&c->lock);
}
