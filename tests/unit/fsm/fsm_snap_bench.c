/* fsm_snap_bench.c — snapshot stream + install throughput, and how long one reader slice
 * holds the loop. Not a test (ninja fsm_snap_bench):
 *   fsm_snap_bench [MiB of data = 256] [file size KiB = 4096] [threads: 1 or 2 = 2] [dir = /tmp]
 * Builds store A (files evicted from the page cache after a syncfs, so the sender reads the
 * disk), streams it into store B through 256 KiB chunks (as the node does), installs, and
 * prints MB/s; with 2 threads the reader and the writer run on their own threads (two nodes),
 * with 1 they alternate on one. Compare with dd if=/dev/zero bs=1M conv=fdatasync. */
#include <pthread.h>
#include <stdatomic.h>

#include "fsm_tenv.h"

#define CHUNK (256u * 1024u)
#define RING 16

struct ring {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint8_t buf[RING][CHUNK];
    size_t len[RING];
    unsigned head, tail; /* produced, consumed */
    bool done;
};

/* Slices are timed on the thread's CPU clock with FSS_BENCH_CPU=1 (what each side costs on a
 * busy machine), else on the wall clock. */
static clockid_t slice_clock = CLOCK_MONOTONIC;

static uint64_t ns_now(void)
{
    struct timespec ts;
    clock_gettime(slice_clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct slices {
    uint64_t n, total_ns, max_ns, over_1ms, over_2ms;
};

static void slice_add(struct slices *s, uint64_t ns)
{
    s->n++;
    s->total_ns += ns;
    if (ns > s->max_ns) s->max_ns = ns;
    s->over_1ms += ns > 1000000;
    s->over_2ms += ns > 2000000;
}

struct job {
    struct fsm_snap_reader *r;
    struct fsm_snap_writer *w;
    struct ring *ring;
    struct slices rd, wr;
};

static void *reader_main(void *arg)
{
    struct job *j = arg;
    struct ring *g = j->ring;
    bool done = false;
    while (!done) {
        pthread_mutex_lock(&g->lock);
        while (g->head - g->tail == RING)
            pthread_cond_wait(&g->cond, &g->lock);
        unsigned slot = g->head % RING;
        pthread_mutex_unlock(&g->lock);
        size_t len;
        uint64_t t0 = ns_now();
        if (fsm_snap_reader_next(j->r, g->buf[slot], CHUNK, &len, &done) != 0) abort();
        slice_add(&j->rd, ns_now() - t0);
        pthread_mutex_lock(&g->lock);
        g->len[slot] = len;
        g->head++;
        g->done = done;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
    }
    return NULL;
}

static void writer_loop(struct job *j)
{
    struct ring *g = j->ring;
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (g->head == g->tail && !g->done)
            pthread_cond_wait(&g->cond, &g->lock);
        if (g->head == g->tail && g->done) {
            pthread_mutex_unlock(&g->lock);
            return;
        }
        unsigned slot = g->tail % RING;
        pthread_mutex_unlock(&g->lock);
        uint64_t t0 = ns_now();
        if (fsm_snap_writer_put(j->w, g->buf[slot], g->len[slot]) != 0) abort();
        slice_add(&j->wr, ns_now() - t0);
        pthread_mutex_lock(&g->lock);
        g->tail++;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
    }
}

static void one_thread(struct job *j)
{
    static uint8_t buf[CHUNK];
    bool done = false;
    while (!done) {
        size_t len;
        uint64_t t0 = ns_now();
        if (fsm_snap_reader_next(j->r, buf, CHUNK, &len, &done) != 0) abort();
        uint64_t t1 = ns_now();
        if (fsm_snap_writer_put(j->w, buf, len) != 0) abort();
        slice_add(&j->rd, t1 - t0);
        slice_add(&j->wr, ns_now() - t1);
    }
}

static int evict_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag != FTW_F) return 0;
    int fd = open(p, O_RDONLY);
    if (fd >= 0) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), close(fd);
    return 0;
}

static void print_slices(const char *what, const struct slices *s)
{
    printf("  %s: %.3f s in %llu calls, mean %.3f ms, max %.3f ms, >1 ms: %llu, >2 ms: %llu\n",
           what, (double)s->total_ns / 1e9, (unsigned long long)s->n, s->n ? (double)s->total_ns / (double)s->n / 1e6 : 0.0,
           (double)s->max_ns / 1e6, (unsigned long long)s->over_1ms,
           (unsigned long long)s->over_2ms);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
    if (getenv("FSS_BENCH_CPU")) slice_clock = CLOCK_THREAD_CPUTIME_ID;
    size_t fkib = argc > 2 ? (size_t)atol(argv[2]) : 4096;
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    const char *base = argc > 4 ? argv[4] : "/tmp";
    if (strlen(base) > 20) return 2; /* tenv.dir holds 64 bytes */
    struct tenv a, b;
    char tmpl[48];
    snprintf(tmpl, sizeof tmpl, "%s/fsm-snap-bench-XXXXXX", base);
    for (struct tenv *t = &a; t; t = t == &a ? &b : NULL) {
        memset(t, 0, sizeof *t);
        snprintf(t->dir, sizeof t->dir, "%s", tmpl);
        if (!mkdtemp(t->dir)) return 1;
        snprintf(t->env_dir, sizeof t->env_dir, "%s/raft", t->dir);
        t_open(t);
    }
    size_t fsize = fkib * 1024, nfiles = mib * 1024 * 1024 / fsize;
    uint8_t *body = malloc(fsize);
    for (size_t i = 0; i < fsize; i++)
        body[i] = (uint8_t)(i * 131 + 7);
    for (size_t k = 0; k < nfiles; k++) {
        char path[64];
        snprintf(path, sizeof path, "d%zu/f%zu", k % 16, k);
        body[0] = (uint8_t)k;
        struct raft_entry e = mk_entry(k + 1, (unsigned)k + 1, path, body, fsize, false);
        if (apply_entry(a.f, &e, NULL) != 0) return 1;
        raft_blob_unref(e.data);
    }
    free(body);
    fsm_checkpoint_sync(a.f);
    char files[200];
    snprintf(files, sizeof files, "%s/files", a.dir);
    nftw(files, evict_cb, 16, FTW_PHYS);
    printf("%zu files of %zu KiB (%zu MiB), %d thread(s), in %s\n", nfiles, fkib, mib, threads,
           base);
    struct job j = {0};
    struct ring *g = calloc(1, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    j.ring = g;
    double t0 = now_s();
    if (fsm_snap_reader_open(a.f, fsm_applied(a.f), 1, NULL, &j.r) ||
        fsm_snap_writer_open(b.f, &j.w))
        return 1;
    if (threads == 2) {
        pthread_t th;
        pthread_create(&th, NULL, reader_main, &j);
        writer_loop(&j);
        pthread_join(th, NULL);
    } else {
        one_thread(&j);
    }
    fsm_snap_reader_close(j.r);
    double t1 = now_s();
    struct fsm_snap_meta m;
    if (fsm_snap_writer_finish(j.w, &m) != 0) return 1;
    if (fsm_snap_install(b.f, j.w) != 0) return 1;
    double t2 = now_s();
    double mb = (double)(nfiles * fsize) / 1e6;
    printf("stream %.2f s, install (syncfs + commit + exchange) %.2f s: %.0f MB/s end to end "
           "(stream alone %.0f MB/s)\n",
           t1 - t0, t2 - t1, mb / (t2 - t0), mb / (t1 - t0));
    print_slices("reader slices (256 KiB)", &j.rd);
    print_slices("writer puts (256 KiB)", &j.wr);
    t_fini(&a);
    t_fini(&b);
    free(g);
    return 0;
}
