/* jitter.h — random spreading of periodic background work (xorshift64; no quality needed).
 * The nodes of a cluster start together and log the same entries: work on a fixed period or
 * at a fixed log size (file store syncfs, BDB checkpoints) then runs on every node at once,
 * every node's commits are slow together and no quorum is fast. Spread, at most one node is
 * usually busy flushing and the other two commit. */
#ifndef RAFTFS_JITTER_H
#define RAFTFS_JITTER_H

#include <stdint.h>

/* A seed that differs between processes and objects (never 0, which xorshift keeps at 0). */
static inline uint64_t jitter_seed(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ull ^ b * 0xC2B2AE3D27D4EB4Full;
    return x ? x : 1;
}

/* Uniform-ish in [lo, hi) (lo when hi <= lo). */
static inline uint64_t jitter_between(uint64_t *state, uint64_t lo, uint64_t hi)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return hi > lo ? lo + x % (hi - lo) : lo;
}

#endif
