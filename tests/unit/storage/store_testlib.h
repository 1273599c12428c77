/* store_testlib.h — helpers shared by the storage tests, the crash driver and the benchmark:
 * deterministic payloads, temp dirs, write jobs. Test code only. */
#ifndef RAFTFS_STORE_TESTLIB_H
#define RAFTFS_STORE_TESTLIB_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"

/* Payload byte i of the entry (index, term): any stale or misplaced byte is caught. */
static inline uint8_t st_byte(raft_index index, raft_term term, size_t i)
{
    uint64_t x = index * 0x9E3779B97F4A7C15ull ^ term * 0xC2B2AE3D27D4EB4Full ^ (i >> 3);
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i & 7)));
}

static inline struct raft_blob *st_blob(raft_index index, raft_term term, uint32_t len)
{
    struct raft_blob *b = raft_blob_new(len);
    if (!b) abort();
    for (uint32_t i = 0; i < len; i++)
        b->data[i] = st_byte(index, term, i);
    return b;
}

static inline int st_blob_ok(const struct raft_blob *b, raft_index index, raft_term term,
                             uint32_t len)
{
    if (!b || b->len != len) return 0;
    for (uint32_t i = 0; i < len; i++)
        if (b->data[i] != st_byte(index, term, i)) return 0;
    return 1;
}

/* A job of n entries from first, all in term, each of len bytes (type NORMAL). */
static inline void st_job(struct store_write *w, uint64_t seq, raft_index first, size_t n,
                          raft_term term, uint32_t len)
{
    memset(w, 0, sizeof *w);
    w->seq = seq;
    w->n_entries = n;
    w->entries = n ? calloc(n, sizeof *w->entries) : NULL;
    for (size_t i = 0; i < n; i++) {
        struct raft_entry *e = &w->entries[i];
        e->index = first + i;
        e->term = term;
        e->type = RAFT_ENTRY_NORMAL;
        e->data = st_blob(e->index, term, len);
    }
}

static inline uint64_t st_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline int st_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static inline void st_rmtree(const char *dir)
{
    nftw(dir, st_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
