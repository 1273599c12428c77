/* fsm_snap_hash.c — a snapshot sender's hashing thread (fsm_snap_hash.h). Counters under
 * lock: `submitted` payloads queued, `hashed` of them done; the thread owns `sha` while
 * hashed < submitted, the caller only once they are equal. */
#include <pthread.h>
#include <stdlib.h>

#include "err.h"
#include "fsm_sha256.h"
#include "fsm_snap_hash.h"
#include "rassert.h"

struct fss_hasher {
    bool threaded;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* any change of submitted, hashed or stop */
    bool stop;
    uint64_t submitted, hashed; /* item k is built in slot[k % FSS_HASH_SLOTS] */
    uint8_t *slot[FSS_HASH_SLOTS];
    const uint8_t *p[FSS_HASH_SLOTS]; /* payload of queued item i % FSS_HASH_SLOTS */
    size_t len[FSS_HASH_SLOTS];
    struct fsm_sha256 sha;
};

static void *hasher_main(void *arg)
{
    struct fss_hasher *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->stop && h->hashed == h->submitted)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->stop) break;
        size_t i = h->hashed % FSS_HASH_SLOTS;
        pthread_mutex_unlock(&h->lock);
        fsm_sha256_update(&h->sha, h->p[i], h->len[i]);
        pthread_mutex_lock(&h->lock);
        h->hashed++;
        pthread_cond_broadcast(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int fss_hasher_open(size_t slot_bytes, bool threaded, struct fss_hasher **out)
{
    *out = NULL;
    struct fss_hasher *h = calloc(1, sizeof *h);
    if (!h) return ERR_NOMEM;
    for (size_t i = 0; i < FSS_HASH_SLOTS; i++)
        if (!(h->slot[i] = malloc(slot_bytes))) {
            fss_hasher_close(h);
            return ERR_NOMEM;
        }
    fsm_sha256_init(&h->sha);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->threaded = threaded && pthread_create(&h->thread, NULL, hasher_main, h) == 0;
    *out = h;
    return 0;
}

void fss_hasher_close(struct fss_hasher *h)
{
    if (!h) return;
    if (h->threaded) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->cond);
    }
    for (size_t i = 0; i < FSS_HASH_SLOTS; i++)
        free(h->slot[i]);
    free(h);
}

/* Waits until at most `queued` submitted payloads are not hashed yet. */
static void hasher_wait(struct fss_hasher *h, uint64_t queued)
{
    if (!h->threaded) return;
    pthread_mutex_lock(&h->lock);
    while (h->submitted - h->hashed > queued)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

uint8_t *fss_hasher_slot(struct fss_hasher *h)
{
    /* The next item's buffer last held item submitted - FSS_HASH_SLOTS: it must be hashed
     * (the caller handed that record out long ago). */
    hasher_wait(h, FSS_HASH_SLOTS - 1);
    return h->slot[h->submitted % FSS_HASH_SLOTS];
}

void fss_hasher_submit(struct fss_hasher *h, const uint8_t *p, size_t len)
{
    size_t i = h->submitted % FSS_HASH_SLOTS;
    ASSERT(p >= h->slot[i]);
    if (!h->threaded) {
        fsm_sha256_update(&h->sha, p, len);
        h->submitted++;
        h->hashed++;
        return;
    }
    pthread_mutex_lock(&h->lock);
    h->p[i] = p;
    h->len[i] = len;
    h->submitted++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

void fss_hasher_digest(struct fss_hasher *h, uint8_t out[32])
{
    hasher_wait(h, 0);
    fsm_sha256_final(&h->sha, out);
    fsm_sha256_init(&h->sha);
}
