/* lathist.h — a fixed-bucket latency histogram for /metrics: any thread adds (relaxed atomics,
 * no lock), any thread reads. Cheap enough for every loop iteration or write batch: one
 * clock_gettime per end point and a handful of compares. The bounds put 15 ms (the 64-connection
 * p99 target) on a bucket edge so a histogram answers "how often is this stage over budget". */
#ifndef RAFTFS_LATHIST_H
#define RAFTFS_LATHIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define LATHIST_BUCKETS 14
/* Upper bounds in µs; n[LATHIST_BUCKETS] counts what is slower than the last one. */
static const uint32_t lathist_le_us[LATHIST_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 15000, 25000, 50000, 100000, 250000, 1000000, 5000000};

struct lathist {
    _Atomic uint64_t n[LATHIST_BUCKETS + 1];
    _Atomic uint64_t sum_us;
    _Atomic uint64_t max_us;
};

static inline uint64_t lathist_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Slow events worth a log line (matched against client latency spikes afterwards): true for
 * us >= min_us at most once per second per *last_us (a caller's own clock of its last line). */
static inline int lathist_slow(uint64_t us, uint64_t min_us, uint64_t *last_us)
{
    if (us < min_us) return 0;
    uint64_t now = lathist_now_us();
    if (*last_us && now - *last_us < 1000000) return 0;
    *last_us = now;
    return 1;
}

static inline void lathist_add(struct lathist *h, uint64_t us)
{
    size_t b = 0;
    while (b < LATHIST_BUCKETS && us > lathist_le_us[b])
        b++;
    atomic_fetch_add_explicit(&h->n[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    while (us > m && !atomic_compare_exchange_weak_explicit(
                         &h->max_us, &m, us, memory_order_relaxed, memory_order_relaxed)) {
    }
}

#endif
