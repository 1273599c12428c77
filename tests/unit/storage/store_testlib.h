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

/* A configuration derived from seed (1-5 members, some learners, some info bytes). */
static inline void st_conf(uint64_t seed, struct raft_configuration *c)
{
    memset(c, 0, sizeof *c);
    c->n = (uint32_t)(seed % 5) + 1;
    for (uint32_t i = 0; i < c->n; i++) {
        struct raft_member *m = &c->members[i];
        m->id = seed * 10 + i + 1;
        m->voter = i == 0 || (seed + i) % 2;
        m->info_len = (uint16_t)((seed + i) % 40);
        for (uint16_t j = 0; j < m->info_len; j++)
            m->info[j] = (uint8_t)(seed * 31 + i * 7 + j);
    }
}

/* raft_configuration_encode(st_conf(seed)): a new blob reference. */
static inline struct raft_blob *st_conf_blob(uint64_t seed)
{
    struct raft_configuration c;
    st_conf(seed, &c);
    struct raft_blob *b = NULL;
    if (raft_configuration_encode(&c, &b)) abort();
    return b;
}

/* c equals st_conf(seed). */
static inline int st_conf_ok(const struct raft_configuration *c, uint64_t seed)
{
    struct raft_configuration want;
    st_conf(seed, &want);
    if (!c || c->n != want.n) return 0;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_member *a = &c->members[i], *b = &want.members[i];
        if (a->id != b->id || a->voter != b->voter || a->info_len != b->info_len ||
            memcmp(a->info, b->info, a->info_len) != 0)
            return 0;
    }
    return 1;
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

/* A fresh mkdtemp dir named /tmp/raftfs-<what>-XXXXXX in buf (aborts on failure). */
static inline const char *st_tmpdir(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "/tmp/raftfs-%s-XXXXXX", what);
    if (!mkdtemp(buf)) abort();
    return buf;
}

/* store_open that must succeed: a failure prints BDB's reason and fails the test binary. */
static inline struct store *st_open(const char *dir)
{
    char err[256] = "";
    struct store *s = NULL;
    int rv = store_open(dir, &s, err, sizeof err);
    if (rv) {
        fprintf(stderr, "store_open %s: %s\n", dir, err);
        abort();
    }
    return s;
}

#endif
