/* fsm_fdc.h — internal: the file store's fd cache (fds kept open on recently written
 * files/<path>) and the write leases those fds keep between overwrites in place.
 *
 * Why leases stay held: an overwrite in place is safe only under a write lease (no other open
 * file description of the inode exists, and any new open waits until we let go), and taking
 * and dropping the lease around every write cost two fcntl()s per write (~4 % of a leader's
 * CPU, ~7 % of a follower's). So a cached fd keeps its lease from one overwrite to the next,
 * and lets go only when the kernel breaks it: an open of the inode by anyone else (or a
 * truncate through a path) makes the kernel queue FSM_LEASE_SIG, carrying the fd, to the lease
 * thread, which releases that fd's lease (F_UNLCK) under the cache lock. The opener waits at
 * most for the in-place write in progress (the apply thread holds the lock across it) plus a
 * thread wake-up: microseconds, against the kernel's own limit of
 * /proc/sys/fs/lease-break-time seconds, after which it would drop our lease itself.
 *
 * When the lease is not released in time (the process stopped by SIGSTOP, a debugger or a
 * cgroup freeze, the lease thread starved or gone), the kernel itself downgrades or removes it
 * lease-break-time seconds after the break began, and the opener gets in: `leased` is then
 * stale. So the flag is trusted only for a while after the lease was last confirmed (taken,
 * or F_GETLEASE == F_WRLCK: during a break F_GETLEASE already reports the target type): the
 * kernel can have dropped it only if a break began after that confirmation and
 * lease-break-time has passed since. Within half of lease-break-time of the confirmation
 * (CLOCK_BOOTTIME, which counts while the process is stopped or the machine suspended) an
 * overwrite trusts the flag; beyond, it confirms with F_GETLEASE first (one fcntl per fd per
 * ~22 s at the default 45 s), and when the lease is gone it lets go of what is left and takes
 * a fresh one, which the kernel refuses while the opener has the file open (the overwrite
 * then uses a spare inode). lease-break-time 0 means the kernel never times a lease out (an
 * opener waits until the holder releases it): the flag is then always trustworthy.
 * Changes of lease-break-time: the kernel fixes a break's timeout from the value when the
 * break begins, so a flag confirmed under one value must never be judged by another (10 -> 45
 * while a break begun under 10 is pending: we would trust for 22.5 s a lease gone at 10 s;
 * 45 -> 0: for ever). So (a) a flag is judged only by a value read at most FDC_LBT_CHECK_MS
 * (1 s) ago: the lease thread re-reads it every second, and fdc_lease re-reads it itself when
 * the cached copy is older (a starved lease thread cannot hide a change); (b) any re-read that
 * finds a new value releases every lease, under the lock: they are retaken, confirmed under
 * the new value, at their next writes. Values above INT_MAX/1000 s (the kernel's int product
 * lease_break_time * HZ overflows: openers may get in at once), negative or unreadable ones
 * count as 1 s.
 * Limit: a single overwrite in place that itself lasts longer than lease-break-time (an I/O
 * stall mid-write, the process stopped mid-write) cannot be protected by a lease: a reader
 * let in by the kernel meanwhile may see it half done. Overwrites in place are at most 64 KiB
 * into already allocated blocks; one that took that long is logged (fdc_written).
 *
 * Invariants:
 *  - A cached fd's inode is the one at files/<path>, or is linked nowhere (see fsm_files.c).
 *  - An entry with `leased` held a write lease when last confirmed (`confirmed`), whose break
 *    signal goes to the lease thread (F_SETOWN_EX to its tid, F_SETSIG FSM_LEASE_SIG, both
 *    set before the lease is taken), or is being written under the lock. Entries that could
 *    not be set up so (`owned` false) and every entry when the thread is not running drop the
 *    lease right after their write, as before.
 *  - Every lease is dropped with its fd: eviction, fdc_drop before a rename or unlink of the
 *    inode at files/<path> (so no leased inode ever reaches spare/, where files_recycle's own
 *    lease test would fail on it), fdc_clear at a snapshot install's swap of files/ and at close.
 *  - In-process opens of files/ (GET, the snapshot reader: both through fsm_files_open_read on
 *    the apply thread) first drop the lease of their path (fdc_unlease) and open with
 *    O_NONBLOCK: the process never waits for its own lease.
 *  - FSM_LEASE_SIG is directed at the lease thread only, which blocks every signal; a no-op
 *    handler is installed when the signal had its default action, so a stray one never ends
 *    the process. An overflowing real-time queue makes the kernel send SIGIO instead (to the
 *    same thread, also read through the signalfd): then every leased fd is checked.
 *  - `hold` is true only while the lease thread runs: a thread that must stop (a poll error
 *    other than EINTR/EAGAIN/ENOMEM, which it retries with a backoff, answering breaks
 *    meanwhile; POLLERR/POLLNVAL on its fds) first sets it false and releases every lease,
 *    under the lock.
 *  - Every lease held was confirmed under the current lbt_ms (a change releases them all).
 * Lock order: c->lock is taken alone (never while holding the store's pool lock). */
#ifndef RAFTFS_FSM_FDC_H
#define RAFTFS_FSM_FDC_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The signal a broken lease of a cached fd raises (a real-time one: they queue, each with the
 * fd it concerns). */
#define FSM_LEASE_SIG (SIGRTMIN + 4)

/* An fd kept open on files/<path> after a write. */
struct fsm_fdc_entry {
    struct fsm_fdc_entry *hnext;       /* hash chain */
    struct fsm_fdc_entry *prev, *next; /* recency list, most recent first */
    uint64_t hash;
    int fd;            /* O_RDWR */
    bool owned;        /* its next lease's break signal goes to the lease thread (until F_UNLCK) */
    bool leased;       /* holds a write lease (see the invariants above) */
    int64_t confirmed; /* CLOCK_BOOTTIME ns (fdc_now) just before the lease was last confirmed */
    size_t len;
    char path[]; /* len bytes */
};

/* At most this many fds are cached, and never more than an eighth of RLIMIT_NOFILE (a build
 * with -DFSM_FDC_MAX=0 caches none, for A/B runs). */
#ifndef FSM_FDC_MAX
#define FSM_FDC_MAX 4096
#endif

struct fsm_fdcache {
    /* Guards everything but the atomics: the apply thread holds it across a whole overwrite in
     * place, the lease thread while it releases a lease. */
    pthread_mutex_t lock;
    struct fsm_fdc_entry **buckets; /* n_buckets (a power of two) chains */
    size_t n_buckets, n, cap;
    struct fsm_fdc_entry *head, *tail;
    struct fsm_fdc_entry **by_fd; /* the entry of cached fd k at [k] (by_fd_cap slots) */
    size_t by_fd_cap;
    uint64_t hits;
    uint64_t checks; /* F_GETLEASE confirmations of leases held past the trusted window */
    uint64_t lapsed; /* of those, leases the kernel had dropped or downgraded */
    /* The lease thread. */
    bool hold; /* running: leases are kept between writes */
    bool joinable;
    pthread_t thread;
    pthread_cond_t started;
    pid_t tid;
    int sig_fd, stop_fd;      /* signalfd (FSM_LEASE_SIG, SIGIO), eventfd */
    _Atomic int64_t lbt_ms;   /* lease-break-time (written under the lock, see fdc_lease) */
    int64_t lbt_read_at;      /* fdc_now when lbt_ms was last read */
    _Atomic uint64_t breaks;  /* leases released because something else opened their inode */
    _Atomic bool thread_done; /* the lease thread has left its loop */
    /* Test hooks (tests only; 0 / empty otherwise). */
    _Atomic int64_t test_clock_ns;    /* added to fdc_now */
    _Atomic bool test_lbt_starved;    /* the lease thread no longer re-reads lease-break-time */
    _Atomic int test_poll_errno;      /* the lease thread's next polls fail with it ... */
    _Atomic unsigned test_poll_fails; /* ... this many times */
    _Atomic short test_poll_revents;  /* the next poll reports these on the signalfd */
    char lbt_path[128];               /* read instead of /proc/sys/fs/lease-break-time */
};

/* Sets the cache up and starts the lease thread (without it, leases are taken per write). */
void fdc_init(struct fsm_fdcache *c);
/* Closes every cached fd (ending its lease), then stops the thread. */
void fdc_fini(struct fsm_fdcache *c);

void fdc_lock(struct fsm_fdcache *c);
void fdc_unlock(struct fsm_fdcache *c);

/* Everything below: with c->lock held. */

/* A new entry for fd on files/path (not cached yet), or NULL with fd closed. */
struct fsm_fdc_entry *fdc_entry_new(struct fsm_fdcache *c, const char *path, size_t len, int fd);
/* Closes the entry's fd (ending any lease) and frees it. */
void fdc_entry_free(struct fsm_fdc_entry *e);
/* The entry of path, out of the cache (the caller owns it), or NULL. */
struct fsm_fdc_entry *fdc_take(struct fsm_fdcache *c, const char *path, size_t len);
/* Caches e (an entry on the inode now at files/path) as the most recent; frees it when it
 * cannot be kept. The least recently written entry may leave (its fd closed). */
void fdc_put(struct fsm_fdcache *c, struct fsm_fdc_entry *e);
/* Closes the cached fd of path, if any. */
void fdc_drop(struct fsm_fdcache *c, const char *path, size_t len);
void fdc_clear(struct fsm_fdcache *c);
/* Makes e hold a write lease (true), or false: the inode is open elsewhere. A lease held since
 * longer than the trusted window is confirmed first (F_GETLEASE); a lapsed one is replaced. */
bool fdc_lease(struct fsm_fdcache *c, struct fsm_fdc_entry *e);
/* After a write in place under e's lease: logs a write that outlasted what its lease can
 * vouch for (lease-break-time since the confirmation). */
void fdc_written(struct fsm_fdcache *c, const struct fsm_fdc_entry *e);
/* After a write under e's lease: keeps the lease when the lease thread will release it on a
 * break, otherwise releases it now. False when the release failed (e must not be cached). */
bool fdc_settle(struct fsm_fdcache *c, struct fsm_fdc_entry *e);
/* Releases the lease of path's cached fd, if it holds one (before an open of path). */
void fdc_unlease(struct fsm_fdcache *c, const char *path, size_t len);
/* Releases every lease held. */
void fdc_unlease_all(struct fsm_fdcache *c);

/* CLOCK_BOOTTIME in ns (plus the test offset). */
int64_t fdc_now(const struct fsm_fdcache *c);
/* Test hook: lease-break-time is read from path (re-read at once, then every second; a
 * changed value releases every lease). */
void fdc_test_lbt_file(struct fsm_fdcache *c, const char *path);

#endif
