/* writer.c — the group-commit storage thread: the loop queues jobs, the thread writes every
 * queued job in one transaction with one fsync and reports completions through ev_async.
 * The loop thread must never wait here for the disk; the writer never calls done_cb itself.
 * A second thread, the flusher, takes the BDB checkpoints and trickles the cache when the
 * writer asks: a checkpoint (memp_sync of the dirty pages, an fsync per DB file) took 15-35 ms
 * under load, several times a second, and every commit of the node waited behind it on the
 * writer thread (with two of three nodes in one at once, no write could commit). BDB runs
 * txn_checkpoint and memp_trickle concurrently with transactions in a DB_THREAD environment. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "jitter.h"
#include "lathist.h"
#include "log.h"
#include "rassert.h"
#include "store_int.h"

/* Checkpoint after about this much BDB log (each time a random amount in [3/4, 5/4) of it,
 * jitter.h: the nodes log the same entries, so a fixed amount had all three checkpoint at the
 * same moment)... */
#define WRITER_CKPT_BYTES (8u << 20)
/* ...and past this much, wait for the checkpoint before the next batch: the flusher lagging
 * behind a fast writer must not let the log files pile up (rare: a checkpoint takes tens of
 * ms, 4 MiB of log take longer than that even at 64 connections). */
#define WRITER_CKPT_MAX_BYTES (12u << 20)
#define WRITER_CKPT_IDLE_S 10 /* ...or this long after a write, so logs get removed */
#define WRITER_WAKE_S 1       /* idle wake-up to consider a checkpoint */
#define WRITER_CLEAN_PCT 20   /* cache share memp_trickle keeps clean */
#define WRITER_TRICKLE_MS                                                                          \
    100 /* at most this often: a trickle scans and sorts the whole                                 \
           cache (it was ~20% of a follower's CPU when run after                                   \
           every batch under load) */

struct store_writer {
    struct store *s;
    struct ev_loop *loop;
    ev_async async; /* the thread pokes the loop when completions are ready */
    void (*done_cb)(void *ctx, uint64_t seq, int err);
    void *ctx;
    pthread_t thread;
    pthread_t flusher;
    pthread_mutex_t fmu; /* guards the flusher's requests */
    pthread_cond_t fcv;
    bool f_ckpt, f_trickle, f_stop;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int64_t last_trickle_ms;           /* writer thread only */
    struct store_job *q_head, *q_tail; /* submitted, not yet taken by the thread */
    struct store_job *d_head, *d_tail; /* written (or failed), not yet reported */
    bool stop;
    /* The thread waits on cv for work and nobody has signalled it since: only then does a
     * submit signal, and it does so after unlocking mu, so the woken thread does not wake
     * into a mutex still held (a futex wait and a second wake per batch otherwise). */
    bool idle;
    /* Thread-private: */
    int failed; /* sticky first error */
    time_t last_write, last_ckpt;
    uint64_t ckpt_at; /* this time's checkpoint threshold (log bytes) */
    uint64_t rng;     /* jitter.h state for ckpt_at */
    /* Any thread reads (store_writer_hists): */
    struct lathist batch_hist;  /* one batch: transaction, commit and fsync */
    struct lathist ckpt_hist;   /* one BDB checkpoint (on the flusher thread) */
    uint64_t slow_batch_log_us; /* writer thread: when a slow batch was last logged */
    uint64_t slow_ckpt_log_us;  /* whoever checkpoints (never two at once): same */
};

/* Takes up to STORE_BATCH_JOBS_MAX jobs or about STORE_BATCH_BYTES_MAX payload bytes (at
 * least one job) off the queue. Called with mu held. */
static struct store_job *writer_take(struct store_writer *w)
{
    struct store_job *head = w->q_head, *last = NULL;
    size_t n = 0, entries = 0;
    uint64_t bytes = 0;
    for (struct store_job *j = head; j; j = j->next) {
        uint64_t jb = 0;
        for (size_t i = 0; i < j->w.n_entries; i++)
            jb += j->w.entries[i].data ? j->w.entries[i].data->len : 0;
        /* A truncating job starts its own batch, so that a long truncation can be cut
         * ahead of the batch's transaction (store_commit_batch). */
        if (n > 0 && (n >= STORE_BATCH_JOBS_MAX || bytes + jb > STORE_BATCH_BYTES_MAX ||
                      entries + j->w.n_entries > STORE_BATCH_ENTRIES_MAX || j->w.truncate_from))
            break;
        entries += j->w.n_entries;
        bytes += jb;
        last = j;
        n++;
    }
    ASSERT(last);
    w->q_head = last->next;
    if (!w->q_head) w->q_tail = NULL;
    last->next = NULL;
    return head;
}

static time_t writer_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void writer_next_ckpt_at(struct store_writer *w)
{
    w->ckpt_at = jitter_between(&w->rng, WRITER_CKPT_BYTES * 3 / 4, WRITER_CKPT_BYTES * 5 / 4);
}

static void writer_ckpt_now(struct store_writer *w)
{
    uint64_t t0 = lathist_now_us();
    store_checkpoint(w->s, 0);
    uint64_t us = lathist_now_us() - t0;
    lathist_add(&w->ckpt_hist, us);
    if (lathist_slow(us, 250000, &w->slow_ckpt_log_us))
        LOG_INFO("storage: slow BDB checkpoint: %.0f ms", (double)us / 1e3);
}

/* The flusher thread: one request of each kind at a time. A checkpoint asked for while one
 * runs is dropped (the writer asks again after its next batch if the log still warrants it),
 * so checkpoints never run back to back on a stale request. fcv carries requests to it and
 * completions back to a writer waiting at WRITER_CKPT_MAX_BYTES. */
static void *writer_flusher(void *arg)
{
    struct store_writer *w = arg;
    pthread_setname_np(pthread_self(), "store-flusher"); /* for top -H, perf, gdb */
    pthread_mutex_lock(&w->fmu);
    for (;;) {
        while (!w->f_ckpt && !w->f_trickle && !w->f_stop)
            pthread_cond_wait(&w->fcv, &w->fmu);
        if (w->f_stop) break;
        bool ckpt = w->f_ckpt, trickle = w->f_trickle;
        pthread_mutex_unlock(&w->fmu);
        int wrote = 0;
        if (trickle) w->s->env->memp_trickle(w->s->env, WRITER_CLEAN_PCT, &wrote);
        if (ckpt) writer_ckpt_now(w);
        pthread_mutex_lock(&w->fmu);
        if (trickle) w->f_trickle = false;
        if (ckpt) w->f_ckpt = false;
        pthread_cond_broadcast(&w->fcv); /* a writer may wait for the checkpoint */
    }
    pthread_mutex_unlock(&w->fmu);
    return NULL;
}

/* By BDB log bytes, not payload bytes: appends log more than their payload, compaction's
 * deletions log the deleted records for undo and the file store logs its own records, and
 * only a checkpoint lets DB_LOG_AUTO_REMOVE drop the files (the environment's size stays
 * bounded by about two log files). */
static void writer_maybe_checkpoint(struct store_writer *w, bool force)
{
    time_t now = writer_now_s();
    uint64_t logged = store_log_bytes_since_ckpt(w->s);
    bool wrote_since = w->last_write >= w->last_ckpt && logged > 0;
    if (!force && logged < w->ckpt_at && !(wrote_since && now - w->last_ckpt >= WRITER_CKPT_IDLE_S))
        return;
    if (w->failed) return;
    w->last_ckpt = now;
    writer_next_ckpt_at(w);
    if (force) { /* stopping: after the flusher's own checkpoint, if one runs */
        pthread_mutex_lock(&w->fmu);
        while (w->f_ckpt)
            pthread_cond_wait(&w->fcv, &w->fmu);
        pthread_mutex_unlock(&w->fmu);
        writer_ckpt_now(w);
        return;
    }
    pthread_mutex_lock(&w->fmu);
    w->f_ckpt = true;
    pthread_cond_broadcast(&w->fcv);
    while (logged >= WRITER_CKPT_MAX_BYTES && w->f_ckpt && !w->f_stop)
        pthread_cond_wait(&w->fcv, &w->fmu);
    pthread_mutex_unlock(&w->fmu);
}

/* While no job waits: one small transaction of carried-over compaction deletions. */
static void writer_compact_idle(struct store_writer *w)
{
    int rv = store_compact_step(w->s);
    if (rv && !w->failed) {
        LOG_ERROR("storage: compaction failed (%s); failing every later write", err_str(rv));
        w->failed = rv;
    }
    w->last_write = writer_now_s();
    writer_maybe_checkpoint(w, false);
}

/* Keeps part of the small cache clean, on the flusher thread: otherwise a loop-thread
 * reader or the file store, needing a buffer, may have to write a dirty page itself (and
 * flush the log first, as write-ahead logging requires). */
static void writer_trickle(struct store_writer *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now_ms - w->last_trickle_ms < WRITER_TRICKLE_MS) return;
    w->last_trickle_ms = now_ms;
    if (w->failed) return;
    pthread_mutex_lock(&w->fmu);
    w->f_trickle = true;
    pthread_cond_signal(&w->fcv);
    pthread_mutex_unlock(&w->fmu);
}

/* Writes one batch (or reports the sticky failure) and queues the completions. */
static void writer_run_batch(struct store_writer *w, struct store_job *batch)
{
    uint64_t t0 = lathist_now_us();
    int rv = w->failed ? w->failed : store_commit_batch(w->s, batch);
    uint64_t us = lathist_now_us() - t0;
    lathist_add(&w->batch_hist, us);
    if (lathist_slow(us, 100000, &w->slow_batch_log_us))
        LOG_INFO("storage: slow batch: %.0f ms from seq %llu (every write queued behind it waited)",
                 (double)us / 1e3, (unsigned long long)batch->w.seq);
    if (rv && !w->failed) {
        LOG_ERROR("storage: batch from seq %llu failed (%s); failing every later write",
                  (unsigned long long)batch->w.seq, err_str(rv));
        w->failed = rv;
    }
    struct store_job *tail = batch;
    for (struct store_job *j = batch; j; j = j->next) {
        j->err = rv;
        store_write_release(&j->w); /* drop the blob refs on this thread */
        tail = j;
    }
    w->last_write = writer_now_s();
    pthread_mutex_lock(&w->mu);
    if (w->d_tail)
        w->d_tail->next = batch;
    else
        w->d_head = batch;
    w->d_tail = tail;
    pthread_mutex_unlock(&w->mu);
    ev_async_send(w->loop, &w->async);
}

static void *writer_thread(void *arg)
{
    struct store_writer *w = arg;
    pthread_setname_np(pthread_self(), "store-writer");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q_head && !w->stop) {
            if (w->s->pos.compact_pending && !w->failed) {
                pthread_mutex_unlock(&w->mu);
                writer_compact_idle(w);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += WRITER_WAKE_S;
            w->idle = true;
            int e = pthread_cond_timedwait(&w->cv, &w->mu, &until);
            w->idle = false;
            if (e == ETIMEDOUT) {
                pthread_mutex_unlock(&w->mu);
                writer_maybe_checkpoint(w, false);
                pthread_mutex_lock(&w->mu);
            }
        }
        if (!w->q_head) break; /* stopping and drained */
        struct store_job *batch = writer_take(w);
        pthread_mutex_unlock(&w->mu);
        writer_run_batch(w, batch);
        writer_trickle(w);
        writer_maybe_checkpoint(w, false);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    writer_maybe_checkpoint(w, true);
    return NULL;
}

/* Loop thread: reports finished jobs in order. done_cb may submit more jobs. */
static void writer_async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct store_writer *w = a->data;
    pthread_mutex_lock(&w->mu);
    struct store_job *j = w->d_head;
    w->d_head = w->d_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (j) {
        struct store_job *next = j->next;
        w->done_cb(w->ctx, j->w.seq, j->err);
        free(j);
        j = next;
    }
}

static void writer_flusher_join(struct store_writer *w)
{
    pthread_mutex_lock(&w->fmu);
    w->f_stop = true;
    pthread_cond_signal(&w->fcv);
    pthread_mutex_unlock(&w->fmu);
    pthread_join(w->flusher, NULL);
}

static void writer_destroy_sync(struct store_writer *w)
{
    pthread_cond_destroy(&w->fcv);
    pthread_mutex_destroy(&w->fmu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

int store_writer_start(struct store *s, struct ev_loop *loop,
                       void (*done_cb)(void *ctx, uint64_t seq, int err), void *ctx,
                       struct store_writer **out)
{
    ASSERT(s && loop && done_cb && out);
    ASSERT(!s->writer_running);
    struct store_writer *w = calloc(1, sizeof *w);
    if (!w) return ERR_NOMEM;
    w->s = s;
    w->loop = loop;
    w->done_cb = done_cb;
    w->ctx = ctx;
    w->last_ckpt = writer_now_s();
    w->rng = jitter_seed(lathist_now_us() ^ (uint64_t)getpid(), (uintptr_t)w);
    writer_next_ckpt_at(w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_mutex_init(&w->fmu, NULL);
    pthread_cond_init(&w->fcv, NULL);
    ev_async_init(&w->async, writer_async_cb);
    w->async.data = w;
    ev_async_start(loop, &w->async);
    s->writer_running = true;
    int e = pthread_create(&w->flusher, NULL, writer_flusher, w);
    if (e == 0) {
        e = pthread_create(&w->thread, NULL, writer_thread, w);
        if (e) writer_flusher_join(w);
    }
    if (e) {
        LOG_ERROR("storage: pthread_create: %s", strerror(e));
        s->writer_running = false;
        ev_async_stop(loop, &w->async);
        writer_destroy_sync(w);
        free(w);
        return ERR_IO;
    }
    *out = w;
    return 0;
}

int store_writer_submit(struct store_writer *w, struct store_write *job)
{
    ASSERT(w && job);
    struct store_job *j = malloc(sizeof *j);
    if (!j) {
        store_write_release(job);
        return ERR_NOMEM;
    }
    j->next = NULL;
    j->w = *job;
    j->err = 0;
    job->entries = NULL; /* ownership moved to the queue */
    job->n_entries = 0;
    job->snap_conf = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        store_write_release(&j->w);
        free(j);
        return ERR_SHUTDOWN;
    }
    if (w->q_tail)
        w->q_tail->next = j;
    else
        w->q_head = j;
    w->q_tail = j;
    bool wake = w->idle;
    w->idle = false; /* later submits before it runs need no signal of their own */
    pthread_mutex_unlock(&w->mu);
    if (wake) pthread_cond_signal(&w->cv); /* w outlives this: only stop frees it */
    return 0;
}

void store_writer_hists(struct store_writer *w, const struct lathist **batch,
                        const struct lathist **ckpt)
{
    *batch = &w->batch_hist;
    *ckpt = &w->ckpt_hist;
}

void store_writer_stop(struct store_writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL); /* its last act: a checkpoint of its own */
    writer_flusher_join(w);
    ev_async_stop(w->loop, &w->async);
    for (struct store_job *j = w->d_head; j;) {
        struct store_job *next = j->next;
        free(j);
        j = next;
    }
    w->s->writer_running = false;
    writer_destroy_sync(w);
    free(w);
}
