/* test_log_full_close.c — the BDB log cannot be written (a full disk) and the node closes its
 * stores on the way out, as raftnode does after a failed durable write: a restart that replays
 * the committed entries must end with every one of them applied (test_exhaustion's
 * test_disk_full lost a committed file this way).
 *
 * The mechanism: the file store commits its batches with DB_TXN_NOSYNC, so the last batch's
 * log records may still sit in BDB's log buffer when the log's write fails. Closing a
 * DB_PRIVATE environment shuts the log down first and then writes every dirty cache page to
 * the database files without the write-ahead check; on a full disk those overwrites of
 * allocated pages succeed. The next open's recovery then finds only the part of that batch's
 * log that reached the disk: it undoes what that part names and cannot undo the rest, so the
 * batch survives torn (its applied index and request id without its metadata) and the replay
 * skips the entry as already applied.
 *
 * A full disk is simulated through BDB's write hooks: log-file bytes at or past a cut offset
 * are refused with ENOSPC (a write crossing it is short); database pages are overwritten as
 * usual. Every cut point inside the last batch's log records is tried. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "fsm.h"
#include "storage.h"

#define N_BEFORE 3 /* entries applied and checkpointed before the disk fills */

/* ---- A full disk for the BDB log (process-wide hooks) -------------------------------------- */
static volatile int lf_armed;
static volatile off_t lf_cut; /* log-file bytes at or past this offset cannot be written */

static int lf_is_log(int fd)
{
    char link[64], path[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = '\0';
    const char *base = strrchr(path, '/');
    return base && strncmp(base + 1, "log.0", 5) == 0;
}

/* How many of len bytes at off may be written (0: none, errno ENOSPC). */
static size_t lf_room(int fd, off_t off, size_t len)
{
    if (!lf_armed || !lf_is_log(fd)) return len;
    if (off >= lf_cut) return 0;
    return (size_t)(lf_cut - off) < len ? (size_t)(lf_cut - off) : len;
}

static ssize_t lf_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    size_t n = lf_room(fd, off, len);
    ssize_t w = n || !len ? pwrite(fd, buf, n, off) : -1;
    if (n < len) errno = ENOSPC; /* short or refused: what BDB reports */
    return w;
}

static ssize_t lf_write(int fd, const void *buf, size_t len)
{
    off_t off = lseek(fd, 0, SEEK_CUR);
    size_t n = off < 0 ? len : lf_room(fd, off, len);
    ssize_t w = n || !len ? write(fd, buf, n) : -1;
    if (n < len) errno = ENOSPC;
    return w;
}

/* ---- The scenario -------------------------------------------------------------------------- */
struct lf_node {
    char dir[64];
    char raft[96];
    struct store *s;
    struct fsm *f;
};

static void lf_open(struct lf_node *n)
{
    char err[256];
    int rv = store_open(n->raft, &n->s, err, sizeof err);
    if (rv) fprintf(stderr, "store_open: %s\n", err);
    CHECK_EQ_U(rv, 0);
    struct fsm_options o = {0}; /* no threads: checkpoints only when asked */
    rv = rv ? rv : fsm_open_opts(store_env(n->s), n->dir, &o, &n->f, err, sizeof err);
    if (rv) fprintf(stderr, "fsm_open: %s\n", err);
    CHECK_EQ_U(rv, 0);
}

/* As node_close: the file store first, then the Raft store and its environment. */
static void lf_close(struct lf_node *n)
{
    fsm_close(n->f);
    store_close(n->s);
    n->f = NULL;
    n->s = NULL;
}

static struct raft_entry lf_entry(raft_index i)
{
    uint8_t rid[FSM_REQ_ID_LEN] = {0}, *body = NULL;
    rid[0] = (uint8_t)i;
    rid[15] = 0x5a;
    char path[32];
    snprintf(path, sizeof path, "f/%llu", (unsigned long long)i);
    struct raft_blob *b = NULL;
    CHECK_EQ_U(fsm_cmd_put_alloc(rid, path, strlen(path), 100, &b, &body), 0);
    if (body) memset(body, (int)i, 100);
    return (struct raft_entry){.term = 1, .index = i, .type = RAFT_ENTRY_NORMAL, .data = b};
}

/* Applies entries from..to one batch each (as committed entries reach the file store). */
static int lf_apply(struct fsm *f, raft_index from, raft_index to)
{
    int rv = 0;
    for (raft_index i = from; i <= to && rv == 0; i++) {
        struct raft_entry e = lf_entry(i);
        struct fsm_result res;
        rv = fsm_apply_batch(f, &e, 1, &res);
        raft_blob_unref(e.data);
    }
    return rv;
}

/* The offset where the log ends once flushed. */
static uint32_t lf_log_end(DB_ENV *env)
{
    CHECK_EQ_U(env->log_flush(env, NULL), 0);
    DB_LOG_STAT *st = NULL;
    CHECK_EQ_U(env->log_stat(env, &st, 0), 0);
    uint32_t off = st ? st->st_cur_offset : 0;
    free(st);
    return off;
}

/* Offsets of the log records from `from` on (buffered ones included) into out; their count. */
static size_t lf_records(DB_ENV *env, uint32_t from, uint32_t *out, size_t cap)
{
    DB_LOGC *c = NULL;
    CHECK_EQ_U(env->log_cursor(env, &c, 0), 0);
    size_t n = 0;
    DB_LSN lsn;
    DBT rec;
    memset(&rec, 0, sizeof rec);
    for (int ret = c->get(c, &lsn, &rec, DB_FIRST); ret == 0 && n < cap;
         ret = c->get(c, &lsn, &rec, DB_NEXT))
        if (lsn.offset >= from) out[n++] = lsn.offset;
    c->close(c, 0);
    return n;
}

static int lf_rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void lf_rm(const char *dir)
{
    CHECK_EQ_U(nftw(dir, lf_rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Entries 1..N_BEFORE checkpointed, entry N_BEFORE+1 applied (NOSYNC) with the disk full
 * from log offset cut on (cut_rec: the cut lies `into` bytes after the start of that
 * batch's record cut_rec); then a checkpoint fails and the stores close. After a restart
 * and the replay of entries after fsm_applied(), every entry's file is there. Returns false
 * when cut_rec is past the batch's records (nothing left to try). */
static bool lf_scenario(size_t cut_rec, uint32_t into)
{
    struct lf_node n;
    memset(&n, 0, sizeof n);
    snprintf(n.dir, sizeof n.dir, "/tmp/logfull-XXXXXX");
    CHECK(mkdtemp(n.dir) != NULL);
    snprintf(n.raft, sizeof n.raft, "%s/raft", n.dir);
    lf_open(&n);
    CHECK_EQ_U(lf_apply(n.f, 1, N_BEFORE), 0);
    CHECK_EQ_U(fsm_checkpoint_sync(n.f), 0);
    DB_ENV *env = store_env(n.s);
    uint32_t start = lf_log_end(env);
    CHECK_EQ_U(lf_apply(n.f, N_BEFORE + 1, N_BEFORE + 1), 0); /* into the log buffer only */
    uint32_t recs[64];
    size_t n_recs = lf_records(env, start, recs, 64);
    CHECK(n_recs >= 4); /* meta, dedup, dedupidx, state: at least one record each */
    bool more = cut_rec < n_recs;
    lf_cut = (off_t)(more ? recs[cut_rec] + into : start);
    lf_armed = 1;
    int rv = fsm_checkpoint_sync(n.f); /* its synchronous commit must write the log */
    CHECK(rv == ERR_NOSPACE || rv == ERR_IO);
    lf_close(&n);
    lf_armed = 0;

    lf_open(&n);
    raft_index applied = fsm_applied(n.f);
    CHECK(applied >= N_BEFORE && applied <= N_BEFORE + 1);
    CHECK_EQ_U(lf_apply(n.f, applied + 1, N_BEFORE + 1), 0); /* the node's replay */
    for (raft_index i = 1; i <= N_BEFORE + 1; i++) {
        char path[32];
        snprintf(path, sizeof path, "f/%llu", (unsigned long long)i);
        struct fsm_meta m = {0};
        int st = fsm_stat(n.f, path, &m);
        if (st != 0 || m.index != i)
            fprintf(stderr,
                    "cut at record %zu (+%u of %zu): %s missing after the replay "
                    "(applied %llu at open)\n",
                    cut_rec, into, n_recs, path, (unsigned long long)applied);
        CHECK_EQ_U(st, 0);
        CHECK_EQ_U(m.index, i);
    }
    lf_close(&n);
    lf_rm(n.dir);
    return more;
}

/* Every cut inside the last batch's log: at a record's start and a few bytes into it. */
static void test_log_full_close(void)
{
    for (size_t r = 0;; r++) {
        bool more = lf_scenario(r, 0);
        if (!more) break;
        lf_scenario(r, 9);
    }
}

int main(void)
{
    db_env_set_func_write(lf_write);
    db_env_set_func_pwrite(lf_pwrite);
    RUN(test_log_full_close);
    return check_report();
}
