/* fsm_tenv.h — helpers of the file-store tests: a store on a real BDB environment in a
 * mkdtemp directory, commands, and a dump of the whole observable state. A test with its own
 * command and dump helpers (test_fsm.c: results out of put/del) defines FSM_TENV_ENV_ONLY
 * first and takes just the environment, so both kinds of test set the store up one way. */
#ifndef RAFTFS_FSM_TENV_H
#define RAFTFS_FSM_TENV_H

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"

struct tenv {
    char dir[64];      /* node dir (mkdtemp) */
    char env_dir[128]; /* dir/raft: the BDB environment */
    DB_ENV *env;
    struct fsm *f;
    bool threads; /* fsm_open's defaults (spare and checkpoint threads) */
};

static inline int tenv_rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline DB_ENV *tenv_env_open(const char *dir)
{
    DB_ENV *env = NULL;
    mkdir(dir, 0755);
    if (db_env_create(&env, 0) != 0) return NULL;
    u_int32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_MPOOL | DB_INIT_LOCK |
                      DB_THREAD | DB_RECOVER;
    if (env->open(env, dir, flags, 0644) != 0) {
        env->close(env, 0);
        return NULL;
    }
    return env;
}

/* Opens the store; the open's result. Without threads (the default) inode counts and
 * checkpoints stay deterministic. */
static inline int t_open_rv(struct tenv *t)
{
    char err[256];
    t->env = tenv_env_open(t->env_dir);
    CHECK(t->env != NULL);
    struct fsm_options o = {0};
    int rv = t->threads ? fsm_open(t->env, t->dir, &t->f, err, sizeof err)
                        : fsm_open_opts(t->env, t->dir, &o, &t->f, err, sizeof err);
    if (rv) fprintf(stderr, "fsm_open: %s\n", err);
    return rv;
}

static inline void t_open(struct tenv *t)
{
    CHECK_EQ_U(t_open_rv(t), 0);
}

static inline void t_close(struct tenv *t)
{
    fsm_close(t->f);
    t->f = NULL;
    if (t->env) t->env->close(t->env, 0);
    t->env = NULL;
}

static inline void t_init_opts(struct tenv *t, bool threads)
{
    memset(t, 0, sizeof *t);
    t->threads = threads;
    snprintf(t->dir, sizeof t->dir, "/tmp/fsm-test-XXXXXX");
    CHECK(mkdtemp(t->dir) != NULL);
    snprintf(t->env_dir, sizeof t->env_dir, "%s/raft", t->dir);
    t_open(t);
}

static inline void t_init(struct tenv *t)
{
    t_init_opts(t, false);
}

static inline void t_fini(struct tenv *t)
{
    t_close(t);
    nftw(t->dir, tenv_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void rid_of(unsigned n, uint8_t rid[FSM_REQ_ID_LEN])
{
    memset(rid, 0, FSM_REQ_ID_LEN);
    memcpy(rid, &n, sizeof n);
    rid[15] = 0xaa;
}

static inline size_t count_dir(const struct tenv *t, const char *rel)
{
    char full[300];
    snprintf(full, sizeof full, "%s/%s", t->dir, rel);
    DIR *d = opendir(full);
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (d) closedir(d);
    return n;
}

static inline bool path_exists(const struct tenv *t, const char *rel)
{
    char full[8300];
    struct stat st;
    snprintf(full, sizeof full, "%s/%s", t->dir, rel);
    return lstat(full, &st) == 0;
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: the tests' seeded randomness. */
static inline uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

#ifndef FSM_TENV_ENV_ONLY

/* A PUT entry (body of len bytes, byte i = fill + i) or DELETE (body NULL, len 0). */
static inline struct raft_entry mk_entry(raft_index i, unsigned rn, const char *path,
                                         const uint8_t *body, size_t len, bool del)
{
    uint8_t rid[FSM_REQ_ID_LEN], *p;
    struct raft_blob *b = NULL;
    rid_of(rn, rid);
    if (del) {
        CHECK_EQ_U(fsm_cmd_delete(rid, path, strlen(path), &b), 0);
    } else {
        CHECK_EQ_U(fsm_cmd_put_alloc(rid, path, strlen(path), len, &b, &p), 0);
        if (len) memcpy(p, body, len);
    }
    return (struct raft_entry){.term = 1, .index = i, .type = RAFT_ENTRY_NORMAL, .data = b};
}

static inline int apply_entry(struct fsm *f, const struct raft_entry *e, struct fsm_result *res)
{
    struct fsm_result tmp;
    return fsm_apply(f, e, res ? res : &tmp);
}

static inline int put(struct fsm *f, raft_index i, unsigned rn, const char *path, const char *body)
{
    struct raft_entry e = mk_entry(i, rn, path, (const uint8_t *)body, strlen(body), false);
    int rv = apply_entry(f, &e, NULL);
    raft_blob_unref(e.data);
    return rv;
}

static inline int del(struct fsm *f, raft_index i, unsigned rn, const char *path)
{
    struct raft_entry e = mk_entry(i, rn, path, NULL, 0, true);
    int rv = apply_entry(f, &e, NULL);
    raft_blob_unref(e.data);
    return rv;
}

static inline int noop(struct fsm *f, raft_index i)
{
    struct raft_entry e = {.term = 1, .index = i, .type = RAFT_ENTRY_NOOP};
    return apply_entry(f, &e, NULL);
}

/* ---- State dump: metadata, and every directory and regular file under files/ ------------- */

struct dump {
    char *s;
    size_t len, cap;
};

static inline void dump_add(struct dump *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static inline void dump_add(struct dump *d, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->s ? d->s + d->len : NULL, d->s ? d->cap - d->len : 0, fmt, ap);
        va_end(ap);
        if (d->s && (size_t)n < d->cap - d->len) {
            d->len += (size_t)n;
            return;
        }
        d->cap = d->cap * 2 + (size_t)n + 4096;
        d->s = realloc(d->s, d->cap);
        CHECK(d->s != NULL);
    }
}

static inline int dump_meta_cb(void *ctx, const char *path, const struct fsm_meta *m)
{
    dump_add(ctx, "M %s %llu %llu %02x%02x\n", path, (unsigned long long)m->size,
             (unsigned long long)m->index, m->sha256[0], m->sha256[1]);
    return 0;
}

static struct dump *dump_tree_ctx;
static size_t dump_tree_skip;

static inline int dump_tree_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    const char *rel = p + dump_tree_skip;
    if (flag == FTW_D || flag == FTW_DP) {
        dump_add(dump_tree_ctx, "D %s\n", rel);
        return 0;
    }
    if (!S_ISREG(st->st_mode)) {
        dump_add(dump_tree_ctx, "? %s\n", rel);
        return 0;
    }
    int fd = open(p, O_RDONLY);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    static uint8_t buf[1 << 16];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
        EVP_DigestUpdate(c, buf, (size_t)n);
    if (fd >= 0) close(fd);
    uint8_t sha[32];
    unsigned sl;
    EVP_DigestFinal_ex(c, sha, &sl);
    EVP_MD_CTX_free(c);
    dump_add(dump_tree_ctx, "F %s %llu %02x%02x%02x%02x\n", rel, (unsigned long long)st->st_size,
             sha[0], sha[1], sha[2], sha[3]);
    return 0;
}

/* The whole observable state (caller frees). */
static inline char *dump_state(struct tenv *t)
{
    struct dump d = {0};
    dump_add(&d, "state\n");
    fsm_list(t->f, NULL, dump_meta_cb, &d);
    char root[200];
    snprintf(root, sizeof root, "%s/files", t->dir);
    dump_tree_ctx = &d;
    dump_tree_skip = strlen(root);
    nftw(root, dump_tree_cb, 16, FTW_PHYS);
    return d.s;
}

#endif /* FSM_TENV_ENV_ONLY */

#endif
