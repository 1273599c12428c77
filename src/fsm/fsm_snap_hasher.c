/* fsm_snap_hasher.c — a snapshot receiver's hashing thread (fsm_snap_hasher.h). Counters
 * under lock: `submitted` payloads queued, `hashed` of them done. Item k lives in
 * slot[k % FSS_HASH_SLOTS]; the thread owns `sha` and reads items hashed..submitted-1, the
 * caller writes only item `submitted` (whose slot held item submitted - FSS_HASH_SLOTS, so
 * fss_hasher_buf waits until that one is hashed). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "fsm_sha256.h"
#include "fsm_snap_hasher.h"
#include "rassert.h"

_Static_assert(FSS_HASH_SLOTS >= 2, "the caller's write in flight is from the newest slot");

struct hash_item {
    uint8_t *buf;
    size_t len;
    bool last; /* the file's last payload: compare with want */
    uint8_t want[32];
    uint64_t seq;
};

struct fss_hasher {
    bool threaded;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work; /* submitted moved, or stop: for the thread */
    pthread_cond_t done; /* hashed moved: for the caller */
    bool stop;
    uint64_t submitted, hashed;
    bool bad; /* a file did not match (sticky) */
    uint64_t bad_seq;
    struct hash_item item[FSS_HASH_SLOTS];
    struct fsm_sha256 sha; /* of the file being hashed */
    uint64_t hold_seq;     /* tests (fss_hasher_test_hold_*) */
    unsigned hold_ms;
};

uint64_t fss_hasher_test_hold_seq;
unsigned fss_hasher_test_hold_ms;

/* Hashes one item (thread, or caller when inline); true when its file did not match. */
static bool hash_one(struct fss_hasher *h, const struct hash_item *it)
{
    fsm_sha256_update(&h->sha, it->buf, it->len);
    if (!it->last) return false;
    uint8_t got[32];
    fsm_sha256_final(&h->sha, got);
    fsm_sha256_init(&h->sha);
    return memcmp(got, it->want, sizeof got) != 0;
}

static void *hasher_main(void *arg)
{
    struct fss_hasher *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->stop && h->hashed == h->submitted)
            pthread_cond_wait(&h->work, &h->lock);
        if (h->stop) break;
        const struct hash_item *it = &h->item[h->hashed % FSS_HASH_SLOTS];
        pthread_mutex_unlock(&h->lock);
        if (h->hold_ms && it->seq == h->hold_seq) usleep(h->hold_ms * 1000u);
        bool bad = hash_one(h, it);
        pthread_mutex_lock(&h->lock);
        if (bad && !h->bad) {
            h->bad = true;
            h->bad_seq = it->seq;
        }
        h->hashed++;
        pthread_cond_signal(&h->done);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int fss_hasher_open(size_t slot_bytes, size_t align, bool threaded, struct fss_hasher **out)
{
    *out = NULL;
    struct fss_hasher *h = calloc(1, sizeof *h);
    if (!h) return ERR_NOMEM;
    for (size_t i = 0; i < FSS_HASH_SLOTS; i++) {
        void *p = NULL;
        if (posix_memalign(&p, align, slot_bytes) != 0) {
            fss_hasher_close(h);
            return ERR_NOMEM;
        }
        h->item[i].buf = p;
    }
    fsm_sha256_init(&h->sha);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->done, NULL);
    h->hold_seq = fss_hasher_test_hold_seq;
    h->hold_ms = fss_hasher_test_hold_ms;
    h->threaded = threaded && pthread_create(&h->thread, NULL, hasher_main, h) == 0;
    if (h->threaded) pthread_setname_np(h->thread, "snap-hash");
    *out = h;
    return 0;
}

void fss_hasher_close(struct fss_hasher *h)
{
    if (!h) return;
    if (h->threaded) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        pthread_cond_signal(&h->work);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    if (h->item[FSS_HASH_SLOTS - 1].buf) { /* fully opened: the sync objects exist */
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->work);
        pthread_cond_destroy(&h->done);
    }
    for (size_t i = 0; i < FSS_HASH_SLOTS; i++)
        free(h->item[i].buf);
    free(h);
}

/* Waits until at most `queued` submitted payloads are not hashed yet. */
static void hasher_wait(struct fss_hasher *h, uint64_t queued)
{
    if (!h->threaded) return;
    pthread_mutex_lock(&h->lock);
    while (h->submitted - h->hashed > queued)
        pthread_cond_wait(&h->done, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

uint8_t *fss_hasher_buf(struct fss_hasher *h)
{
    hasher_wait(h, FSS_HASH_SLOTS - 1);
    return h->item[h->submitted % FSS_HASH_SLOTS].buf;
}

void fss_hasher_submit(struct fss_hasher *h, size_t len, const uint8_t want[32], uint64_t seq)
{
    struct hash_item *it = &h->item[h->submitted % FSS_HASH_SLOTS];
    it->len = len;
    it->last = want != NULL;
    if (want) memcpy(it->want, want, sizeof it->want);
    it->seq = seq;
    if (!h->threaded) {
        if (hash_one(h, it) && !h->bad) {
            h->bad = true;
            h->bad_seq = seq;
        }
        h->submitted++;
        h->hashed++;
        return;
    }
    pthread_mutex_lock(&h->lock);
    h->submitted++;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->lock);
}

bool fss_hasher_failed(struct fss_hasher *h, uint64_t *seq)
{
    if (h->threaded) pthread_mutex_lock(&h->lock);
    bool bad = h->bad;
    if (bad) *seq = h->bad_seq;
    if (h->threaded) pthread_mutex_unlock(&h->lock);
    return bad;
}

bool fss_hasher_drain(struct fss_hasher *h, uint64_t *seq)
{
    hasher_wait(h, 0);
    return fss_hasher_failed(h, seq);
}

uint64_t fss_hasher_hashed(struct fss_hasher *h)
{
    if (h->threaded) pthread_mutex_lock(&h->lock);
    uint64_t n = h->hashed;
    if (h->threaded) pthread_mutex_unlock(&h->lock);
    return n;
}

bool fss_hasher_threaded(const struct fss_hasher *h)
{
    return h->threaded;
}
