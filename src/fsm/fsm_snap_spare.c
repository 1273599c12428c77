/* fsm_snap_spare.c — spare files for a snapshot receiver (fsm_snap_spare.h). The ready spares
 * are the names "s<k % FSS_SPARES>/spare-<k>" for k in [taken, made): the thread makes spare
 * `made` while fewer than FSS_SPARES are ready, the caller takes spare `taken`.
 *
 * Each spare's directory is one of FSS_SPARES: a rename locks its source directory, and ext4
 * holds a directory's lock through the whole (slow) inode allocation of a create in it. With
 * one directory the caller's renames waited for the thread's creates (lock_two_directories:
 * ~20% of the receiver's loop thread on a 1 GiB catch-up); with FSS_SPARES of them the thread
 * never creates in the directory of the spare the caller takes next (made - taken < FSS_SPARES
 * while it creates, so made != taken mod FSS_SPARES). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsm_snap_spare.h"
#include "log.h"

struct fss_spares {
    int dirfd;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* taken moved, or stop */
    uint32_t made, taken;
    bool stop;
};

static void spare_name(uint32_t k, char name[FSS_SPARE_NAME_MAX])
{
    snprintf(name, FSS_SPARE_NAME_MAX, "s%u/spare-%u", k % FSS_SPARES, k);
}

/* The spares' directories; false when one cannot be made. */
static bool spare_dirs(int dirfd)
{
    for (unsigned i = 0; i < FSS_SPARES; i++) {
        char d[16];
        snprintf(d, sizeof d, "s%u", i);
        if (mkdirat(dirfd, d, 0755) != 0 && errno != EEXIST) {
            LOG_DEBUG("fsm: snapshot staging: no spare files: %s", strerror(errno));
            return false;
        }
    }
    return true;
}

static void *spares_main(void *arg)
{
    struct fss_spares *s = arg;
    bool ok = spare_dirs(s->dirfd);
    pthread_mutex_lock(&s->lock);
    while (ok) {
        while (!s->stop && s->made - s->taken >= FSS_SPARES)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->stop) break;
        uint32_t k = s->made;
        pthread_mutex_unlock(&s->lock);
        char name[FSS_SPARE_NAME_MAX];
        spare_name(k, name);
        int fd = openat(s->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        int e = errno;
        if (fd >= 0) close(fd);
        pthread_mutex_lock(&s->lock);
        if (fd < 0) {
            /* The caller creates its files itself from now on; it reports real trouble. */
            LOG_DEBUG("fsm: snapshot staging: no more spare files: %s", strerror(e));
            break;
        }
        s->made++;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

struct fss_spares *fss_spares_start(int dirfd)
{
    struct fss_spares *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->dirfd = dirfd;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, spares_main, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        return NULL;
    }
    return s;
}

void fss_spares_stop(struct fss_spares *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

bool fss_spares_take(struct fss_spares *s, char name[FSS_SPARE_NAME_MAX])
{
    if (!s) return false;
    pthread_mutex_lock(&s->lock);
    bool ready = s->made != s->taken;
    if (ready) {
        spare_name(s->taken++, name);
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return ready;
}
