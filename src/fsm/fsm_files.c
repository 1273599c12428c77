/* fsm_files.c — lands file contents in files/ with renameat2() of pooled spare inodes, so an
 * overwrite or delete creates no inode. Never writes outside node_dir, never recycles an inode
 * that some other open file description may still read. */
#include "fsm_files.h"

#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "rassert.h"

#define FSM_FILES_NAME_TRIES 1000
/* spare/ is split into this many subdirectories ("0".."f"): every rename into or out of the
 * pool makes ext4 search the spare's directory block by block (ext4_find_entry), and one
 * directory of 1,000+ spares cost ~8% of a follower's CPU per overwrite; a shard of ~64
 * names fits one block. Shards also spread the directory lock the creator thread holds
 * while making an inode (~0.8 ms here) that a rename on the apply path would wait for. */
#define FSM_SPARE_SHARDS 16

static int files_errno(int e)
{
    return e == ENOSPC || e == EDQUOT ? ERR_NOSPACE : ERR_IO;
}

static void files_fresh_name(struct fsm_files *ff, char name[24])
{
    snprintf(name, 24, "s%llu", (unsigned long long)atomic_fetch_add(&ff->next_id, 1));
}

/* A fresh name relative to spare/: "<shard>/s<id>" (at most 23 bytes for any 64-bit id). */
static void files_spare_name(struct fsm_files *ff, char name[24])
{
    unsigned long long id = (unsigned long long)atomic_fetch_add(&ff->next_id, 1);
    snprintf(name, 24, "%x/s%llu", (unsigned)(id % FSM_SPARE_SHARDS), id);
}

/* Queues a chore for the creator thread; false when there is none or the queue is full.
 * Called with ff->lock held. */
static bool files_chore_locked(struct fsm_files *ff, const char *name, bool trim)
{
    if (ff->target == 0 || ff->n_chores >= FSM_CHORES_MAX) return false;
    struct fsm_chore *c = &ff->chores[ff->n_chores++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->trim = trim;
    pthread_cond_signal(&ff->cond);
    return true;
}

/* False when the pool and the reserve are full. A spare going to the reserve is emptied and
 * closed (rare: the open pool is full). */
static bool files_pool_push(struct fsm_files *ff, const struct fsm_spare *s)
{
    pthread_mutex_lock(&ff->lock);
    bool ok = true, closed = false;
    if (ff->n_pool < FSM_SPARES_MAX) {
        ff->pool[ff->n_pool++] = *s;
    } else if (ff->n_reserve >= FSM_RESERVE_MAX) {
        ok = false;
    } else if (s->size == 0) {
        memcpy(ff->reserve[ff->n_reserve++], s->name, sizeof s->name);
        closed = true;
    } else if (files_chore_locked(ff, s->name, true)) {
        closed = true; /* the thread empties it, then pools it */
    } else if (ftruncate(s->fd, 0) == 0) {
        memcpy(ff->reserve[ff->n_reserve++], s->name, sizeof s->name);
        closed = true;
    } else {
        ok = false;
    }
    pthread_mutex_unlock(&ff->lock);
    if (closed) close(s->fd);
    return ok;
}

/* False when nothing is pooled; wakes the creator when it runs low. */
static bool files_pool_pop(struct fsm_files *ff, struct fsm_spare *out)
{
    pthread_mutex_lock(&ff->lock);
    bool ok = ff->n_pool > 0, reserved = !ok && ff->n_reserve > 0;
    if (ok)
        *out = ff->pool[--ff->n_pool];
    else if (reserved)
        memcpy(out->name, ff->reserve[--ff->n_reserve], sizeof out->name);
    if (ff->n_pool + ff->n_reserve < ff->target) pthread_cond_signal(&ff->cond);
    pthread_mutex_unlock(&ff->lock);
    if (reserved) {
        /* Opening an existing name is cheap; only creating an inode is not. */
        out->fd = openat(ff->spare_fd, out->name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        out->size = 0;
        ok = out->fd >= 0;
    }
    return ok;
}

size_t fsm_files_pool_size(struct fsm_files *ff)
{
    pthread_mutex_lock(&ff->lock);
    size_t n = ff->n_pool + ff->n_reserve;
    pthread_mutex_unlock(&ff->lock);
    return n;
}

/* Resolves path, relative to root_fd, for a *at() call. PATH_MAX counts the NUL, so a
 * 4096-byte path cannot go to the kernel in one piece: then its parent directory is opened
 * first (*tmp_fd, closed by the caller). Returns 0 or an errno. */
int fsm_path_at(int root_fd, const char *path, size_t len, int *dirfd, const char **leaf,
                int *tmp_fd)
{
    *tmp_fd = -1;
    *dirfd = root_fd;
    *leaf = path;
    if (len < PATH_MAX) return 0;
    const char *slash = memrchr(path, '/', len);
    ASSERT(slash); /* a validated path this long has several components */
    char dir[PATH_MAX];
    size_t dlen = (size_t)(slash - path);
    ASSERT(dlen < sizeof dir);
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
    int fd = openat(root_fd, dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno;
    *tmp_fd = *dirfd = fd;
    *leaf = slash + 1;
    return 0;
}

static int files_at(struct fsm_files *ff, const char *path, size_t len, int *dirfd,
                    const char **leaf, int *tmp_fd)
{
    return fsm_path_at(ff->files_fd, path, len, dirfd, leaf, tmp_fd);
}

/* One scan of directory cur: files unlinked, empty directories removed. 1 with the name of
 * a non-empty subdirectory to descend into, 0 when cur is empty, -1 when something cannot
 * be removed. */
static int files_rm_level(int cur, char *sub, size_t sub_cap)
{
    int fd = dup(cur);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int rv = 0;
    for (struct dirent *de; rv == 0 && (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (unlinkat(cur, de->d_name, 0) == 0 || errno == ENOENT) continue;
        if (errno == EISDIR && unlinkat(cur, de->d_name, AT_REMOVEDIR) == 0) continue;
        if (errno == ENOTEMPTY || errno == EEXIST) {
            snprintf(sub, sub_cap, "%s", de->d_name);
            rv = 1;
        } else {
            LOG_WARN("fsm: cannot remove %s: %s", de->d_name, strerror(errno));
            rv = -1;
        }
    }
    closedir(d);
    return rv;
}

bool fsm_files_rmtree(int dirfd, const char *name, const _Atomic bool *stop)
{
    int cur = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cur < 0) return unlinkat(dirfd, name, 0) == 0;
    char sub[256];
    size_t depth = 0;
    bool ok = true;
    while (cur >= 0 && !(stop && atomic_load(stop))) {
        int next = -1, r = files_rm_level(cur, sub, sizeof sub);
        if (r > 0) {
            next = openat(cur, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            depth++;
        } else if (r == 0 && depth > 0) {
            next = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            depth--;
        }
        ok = r >= 0 && (next >= 0 || depth == 0);
        close(cur);
        cur = next;
    }
    if (cur >= 0) close(cur);
    if (!ok || depth != 0 || (stop && atomic_load(stop))) return false;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0) return true;
    LOG_WARN("fsm: cannot remove %s: %s", name, strerror(errno));
    return false;
}

/* Moves name (relative to dirfd) into trash/ and removes the tree; failures are logged and
 * retried at the next open. */
static void files_trash(struct fsm_files *ff, int dirfd, const char *name)
{
    char tname[24];
    files_fresh_name(ff, tname);
    if (renameat(dirfd, name, ff->trash_fd, tname) != 0) {
        LOG_WARN("fsm: cannot move %s to trash: %s", name, strerror(errno));
        return;
    }
    fsm_files_rmtree(ff->trash_fd, tname, NULL);
}

/* True when no open file description other than fd (ours, O_RDWR) references fd's inode: the
 * kernel grants a write lease only then. Any failure counts as "shared" (the safe answer). */
static bool files_unshared(int fd)
{
    if (fcntl(fd, F_SETLEASE, F_WRLCK) != 0) return false;
    fcntl(fd, F_SETLEASE, F_UNLCK);
    return true;
}

/* Hands the unlink of spare/name to the creator thread when there is one and room. */
static void files_unlink_later(struct fsm_files *ff, const char *name)
{
    pthread_mutex_lock(&ff->lock);
    bool queued = files_chore_locked(ff, name, false);
    pthread_mutex_unlock(&ff->lock);
    if (!queued) unlinkat(ff->spare_fd, name, 0);
}

/* spare/name holds an inode nobody in files/ uses any more: keep it as a spare when the pool
 * has room and no reader can see it, otherwise unlink it (readers keep their content). */
static void files_recycle(struct fsm_files *ff, const char *name)
{
    int fd = openat(ff->spare_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == EISDIR)
            files_trash(ff, ff->spare_fd, name);
        else
            unlinkat(ff->spare_fd, name, 0);
        return;
    }
    struct stat st;
    bool keep = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (keep && !files_unshared(fd)) {
        keep = false;
        ff->pinned++;
    }
    struct fsm_spare s = {.fd = fd, .size = keep ? (uint64_t)st.st_size : 0};
    if (keep && s.size > FSM_SPARE_KEEP_BYTES) {
        pthread_mutex_lock(&ff->lock);
        bool queued = files_chore_locked(ff, name, true);
        pthread_mutex_unlock(&ff->lock);
        if (queued) {
            close(fd);
            ff->recycled++;
            return;
        }
        keep = ftruncate(fd, 0) == 0;
        s.size = 0;
    }
    snprintf(s.name, sizeof s.name, "%s", name);
    if (keep && files_pool_push(ff, &s)) {
        ff->recycled++;
        return;
    }
    close(fd);
    files_unlink_later(ff, name);
}

/* A new empty inode in spare/ (the expensive operation). Returns an errno. */
static int files_spare_create(struct fsm_files *ff, struct fsm_spare *out)
{
    for (int i = 0; i < FSM_FILES_NAME_TRIES; i++) {
        files_spare_name(ff, out->name);
        out->fd = openat(ff->spare_fd, out->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (out->fd >= 0) {
            out->size = 0;
            return 0;
        }
        if (errno != EEXIST) break;
    }
    return errno;
}

/* Pops a spare, creating one on the apply path only when the pool is empty. */
static int files_spare_take(struct fsm_files *ff, struct fsm_spare *out)
{
    if (files_pool_pop(ff, out)) return 0;
    int e = files_spare_create(ff, out);
    if (e) {
        LOG_ERROR("fsm: cannot create a spare inode: %s", strerror(e));
        return files_errno(e);
    }
    ff->created++;
    return 0;
}

/* Back into the pool (or gone when full) after a failed put; the spare is still in spare/. */
static void files_spare_return(struct fsm_files *ff, struct fsm_spare *s)
{
    if (files_pool_push(ff, s)) return;
    unlinkat(ff->spare_fd, s->name, 0);
    close(s->fd);
}

/* Runs one chore on the creator thread (any failure ends in an unlink). */
static void files_chore_run(struct fsm_files *ff, const struct fsm_chore *c)
{
    if (c->trim) {
        struct fsm_spare s = {.size = 0};
        memcpy(s.name, c->name, sizeof s.name);
        s.fd = openat(ff->spare_fd, s.name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (s.fd >= 0 && ftruncate(s.fd, 0) == 0 && files_pool_push(ff, &s)) return;
        if (s.fd >= 0) close(s.fd);
    }
    unlinkat(ff->spare_fd, c->name, 0);
}

/* The creator thread: keeps the pool at or above target so new paths rarely pay for an inode
 * on the apply path. Sleeps while the pool is full enough; backs off after a failure. */
static void *files_creator_main(void *arg)
{
    struct fsm_files *ff = arg;
    /* Lowest nice: spares are made mostly from CPU nobody else wants, not at the expense of the
     * loop (when the pool runs dry under load, the apply path creates its own inode). Not
     * SCHED_IDLE: a saturated machine would starve the thread completely. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 19) != 0)
        LOG_DEBUG("fsm: spare-inode thread keeps normal priority");
    pthread_mutex_lock(&ff->lock);
    while (!ff->stop) {
        if (ff->n_chores > 0) {
            struct fsm_chore c = ff->chores[--ff->n_chores];
            pthread_mutex_unlock(&ff->lock);
            files_chore_run(ff, &c);
            pthread_mutex_lock(&ff->lock);
            continue;
        }
        if (ff->n_pool + ff->n_reserve >= ff->target) {
            pthread_cond_wait(&ff->cond, &ff->lock);
            continue;
        }
        pthread_mutex_unlock(&ff->lock);
        struct fsm_spare s;
        int e = files_spare_create(ff, &s);
        if (e == 0 && !files_pool_push(ff, &s)) {
            unlinkat(ff->spare_fd, s.name, 0);
            close(s.fd);
        } else if (e == 0) {
            ff->precreated++;
        }
        pthread_mutex_lock(&ff->lock);
        if (e) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&ff->cond, &ff->lock, &ts);
        }
    }
    pthread_mutex_unlock(&ff->lock);
    return NULL;
}

static int files_write(struct fsm_spare *s, const uint8_t *body, uint64_t len)
{
    uint64_t off = 0;
    while (off < len) {
        size_t chunk = len - off > (1u << 30) ? (1u << 30) : (size_t)(len - off);
        ssize_t n = pwrite(s->fd, body + off, chunk, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : ENOSPC;
            if (off > s->size) s->size = off; /* keeps the next user's truncate honest */
            return files_errno(e);
        }
        off += (uint64_t)n;
    }
    if (off > s->size) s->size = off;
    if (s->size > len) {
        if (ftruncate(s->fd, (off_t)len) != 0) return files_errno(errno);
        s->size = len;
    }
    return 0;
}

/* ---- fd cache (fsm_fdc.h) --------------------------------------------------------------------
 * Invariant: a cached fd's inode is the one at files/<path>, or is linked nowhere (st_nlink 0,
 * which the in-place check refuses). Every rename or unlink of an inode at files/<path> in
 * this process drops <path> first (fsm_files_put before installing a spare,
 * fsm_files_remove, files_mkparents), and a snapshot install's swap of files/ drops them all
 * (fsm_files_reopen_files). Dropping closes the fd, which ends its lease: an inode leaves the
 * cache before it can reach spare/ (where files_recycle's lease test would take our fd for a
 * reader's). */

static void files_fdc_drop(struct fsm_files *ff, const char *path, size_t len)
{
    fdc_lock(&ff->fdc);
    fdc_drop(&ff->fdc, path, len);
    fdc_unlock(&ff->fdc);
}

uint64_t fsm_files_fd_cache_hits(const struct fsm_files *ff)
{
    return ff->fdc.hits;
}

uint64_t fsm_files_lease_breaks(struct fsm_files *ff)
{
    return atomic_load(&ff->fdc.breaks);
}

/* mkdir -p of path's parents; a non-directory in the way is replaced (crash leftovers). */
static int files_mkparents(struct fsm_files *ff, const char *path, size_t len)
{
    char buf[PATH_MAX];
    for (size_t i = 0; i < len && i < sizeof buf; i++) {
        if (path[i] != '/') continue;
        memcpy(buf, path, i);
        buf[i] = '\0';
        if (mkdirat(ff->files_fd, buf, 0755) == 0 || errno != EEXIST) continue;
        struct stat st;
        if (fstatat(ff->files_fd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
            files_fdc_drop(ff, buf, i);
            unlinkat(ff->files_fd, buf, 0);
            if (mkdirat(ff->files_fd, buf, 0755) != 0) return files_errno(errno);
        }
    }
    return 0;
}

/* rename spare/s.name onto files/path: EXCHANGE when path exists (the old inode comes back
 * to spare/ under s.name), else a plain move. Returns an errno; on success *exchanged. */
static int files_install(struct fsm_files *ff, const char *path, size_t len,
                         const struct fsm_spare *s, bool *exchanged)
{
    int dirfd, tmp_fd, e = 0;
    const char *leaf;
    for (int attempt = 0; attempt < 2; attempt++) {
        e = files_at(ff, path, len, &dirfd, &leaf, &tmp_fd);
        if (e == 0) {
            *exchanged = true;
            if (renameat2(ff->spare_fd, s->name, dirfd, leaf, RENAME_EXCHANGE) == 0) break;
            *exchanged = false;
            if (renameat2(ff->spare_fd, s->name, dirfd, leaf, RENAME_NOREPLACE) == 0) break;
            e = errno;
        }
        if (tmp_fd >= 0) close(tmp_fd);
        tmp_fd = -1;
        if ((e != ENOENT && e != ENOTDIR) || attempt > 0) return e;
        int rv = files_mkparents(ff, path, len);
        if (rv) return rv == ERR_NOSPACE ? ENOSPC : EIO;
    }
    if (tmp_fd >= 0) close(tmp_fd);
    return 0;
}

/* Longer overwrites would hold the lease (and an opener) too long; a write in place must also
 * end well within lease-break-time of its lease's confirmation, after which the kernel may let
 * an opener in (fsm_fdc.h): 64 KiB into allocated blocks takes microseconds, barring an I/O
 * stall, which fdc_written logs. */
#define FSM_IN_PLACE_MAX (64u * 1024u)

/* O_RDWR fd on files/path, or -1. */
static int files_open_rw(struct fsm_files *ff, const char *path, size_t len)
{
    int dirfd, tmp_fd;
    const char *leaf;
    if (files_at(ff, path, len, &dirfd, &leaf, &tmp_fd) != 0) return -1;
    int fd = openat(dirfd, leaf, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (tmp_fd >= 0) close(tmp_fd);
    return fd;
}

/* The entry of path, from the cache (*hit) or freshly opened (O_RDWR), or NULL. fdc lock
 * held. */
static struct fsm_fdc_entry *files_fdc_get(struct fsm_files *ff, const char *path, size_t len,
                                           bool *hit)
{
    struct fsm_fdc_entry *e = fdc_take(&ff->fdc, path, len);
    *hit = e != NULL;
    if (e) return e;
    int fd = files_open_rw(ff, path, len);
    return fd < 0 ? NULL : fdc_entry_new(&ff->fdc, path, len, fd);
}

/* Overwrites files/path in place when no reader can tell: the inode is open nowhere else (the
 * kernel grants a write lease only then, and while we hold it any other open of the inode
 * waits until we release it), it has no other name, and the body fits in the file's current
 * size (no block to allocate, so no ENOSPC half-way). The lease is kept after the write and
 * released when something else opens the inode (fsm_fdc.h): the fd cache lock, held from here
 * to the end of the write, keeps that release out of the write. A lease kept since longer than
 * half of lease-break-time is confirmed with F_GETLEASE first (the kernel drops a lease whose
 * break the holder did not answer in time, e.g. while the process was stopped). Saves the
 * rename exchange, the recycling of the old inode and two dirty directory blocks: ~10 us of
 * CPU per 1 KiB overwrite here, and with the lease kept two fcntl()s more. *done false:
 * nothing was changed, the caller uses a spare. Returns an ERR_* when a write in place failed
 * (the file may then be torn: the failure is fatal, replay rewrites it). */
static int files_put_in_place(struct fsm_files *ff, const char *path, size_t len,
                              const uint8_t *body, uint64_t body_len, bool *done)
{
    *done = false;
    if (body_len == 0 || body_len > FSM_IN_PLACE_MAX) return 0; /* truncating to 0 flushes */
    fdc_lock(&ff->fdc);
    bool hit;
    struct fsm_fdc_entry *e = files_fdc_get(ff, path, len, &hit);
    struct stat st;
    int rv = 0;
    bool leased = e && fstat(e->fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
                  (uint64_t)st.st_size >= body_len && fdc_lease(&ff->fdc, e);
    if (leased) {
        struct fsm_spare s = {.fd = e->fd, .size = (uint64_t)st.st_size};
        rv = files_write(&s, body, body_len);
        fdc_written(&ff->fdc, e);
        *done = true;
        ff->in_place++;
        if (hit) ff->fdc.hits++;
    }
    if (leased && rv == 0 && fdc_settle(&ff->fdc, e))
        fdc_put(&ff->fdc, e);
    else
        fdc_entry_free(e); /* the close also ends a lease still held */
    fdc_unlock(&ff->fdc);
    return rv;
}

int fsm_files_put(struct fsm_files *ff, const char *path, size_t len, const uint8_t *body,
                  uint64_t body_len)
{
    bool done = false;
    int rv = files_put_in_place(ff, path, len, body, body_len, &done);
    if (done) return rv;
    struct fsm_spare s;
    rv = files_spare_take(ff, &s);
    if (rv) return rv;
    rv = files_write(&s, body, body_len);
    if (rv) {
        files_spare_return(ff, &s);
        return rv;
    }
    /* The inode at path is about to go to spare/: its fd must not stay open (fd cache). */
    files_fdc_drop(ff, path, len);
    bool exchanged = false;
    int e = files_install(ff, path, len, &s, &exchanged);
    if (e) {
        LOG_ERROR("fsm: cannot install %s: %s", path, strerror(e));
        files_spare_return(ff, &s);
        return files_errno(e);
    }
    /* Its inode now lives at files/path: kept open for a later overwrite in place. */
    if (body_len > 0 && body_len <= FSM_IN_PLACE_MAX) {
        fdc_lock(&ff->fdc);
        fdc_put(&ff->fdc, fdc_entry_new(&ff->fdc, path, len, s.fd));
        fdc_unlock(&ff->fdc);
    } else
        close(s.fd);
    if (exchanged) files_recycle(ff, s.name);
    return 0;
}

/* rmdir of path's parents, deepest first, until one is not empty. */
static void files_rmparents(struct fsm_files *ff, const char *path, size_t len)
{
    char buf[PATH_MAX];
    if (len >= sizeof buf) return; /* such deep paths keep their directories */
    memcpy(buf, path, len);
    buf[len] = '\0';
    for (char *slash = strrchr(buf, '/'); slash; slash = strrchr(buf, '/')) {
        *slash = '\0';
        if (unlinkat(ff->files_fd, buf, AT_REMOVEDIR) != 0) break;
    }
}

int fsm_files_remove(struct fsm_files *ff, const char *path, size_t len)
{
    int dirfd, tmp_fd;
    const char *leaf;
    int e = files_at(ff, path, len, &dirfd, &leaf, &tmp_fd);
    if (e == ENOENT || e == ENOTDIR) return 0;
    if (e) return files_errno(e);
    struct stat st;
    if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode)) {
        /* Absent, or a directory holding other files (never ours to remove). */
        if (tmp_fd >= 0) close(tmp_fd);
        return 0;
    }
    files_fdc_drop(ff, path, len);
    char name[24];
    files_spare_name(ff, name);
    /* Into spare/ rather than unlink: the inode may be recycled, sparing a create later. */
    if (renameat2(dirfd, leaf, ff->spare_fd, name, RENAME_NOREPLACE) == 0)
        files_recycle(ff, name);
    else if (errno != ENOENT && errno != ENOTDIR)
        e = errno;
    if (tmp_fd >= 0) close(tmp_fd);
    if (e) {
        LOG_ERROR("fsm: cannot remove %s: %s", path, strerror(e));
        return files_errno(e);
    }
    files_rmparents(ff, path, len);
    return 0;
}

static int files_openat_beneath(int dirfd, const char *leaf)
{
    struct open_how how = {
        .flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, dirfd, leaf, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) /* kernels before 5.6: O_NOFOLLOW still guards the leaf */
        fd = openat(dirfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    return fd;
}

/* O_RDONLY|O_NONBLOCK open of files/path; an errno on failure. Our own leases: the one on
 * path's cached fd is released first (the opener would only get EWOULDBLOCK: in-process opens
 * never wait for the lease thread), and if the open still meets a lease being broken (an
 * inode cached under another name, never expected) every lease is released and it is tried
 * once more. */
static int files_open_read_fd(struct fsm_files *ff, const char *path, size_t len, int *fd)
{
    fdc_lock(&ff->fdc);
    fdc_unlease(&ff->fdc, path, len);
    fdc_unlock(&ff->fdc);
    int e = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int dirfd, tmp_fd;
        const char *leaf;
        e = files_at(ff, path, len, &dirfd, &leaf, &tmp_fd);
        *fd = e ? -1 : files_openat_beneath(dirfd, leaf);
        if (*fd < 0 && !e) e = errno;
        if (tmp_fd >= 0) close(tmp_fd);
        if (*fd >= 0 || e != EWOULDBLOCK || attempt > 0) break;
        fdc_lock(&ff->fdc);
        fdc_unlease_all(&ff->fdc);
        fdc_unlock(&ff->fdc);
    }
    return *fd >= 0 ? 0 : e;
}

int fsm_files_open_read(struct fsm_files *ff, const char *path, size_t len, int *fd_out)
{
    int fd;
    int e = files_open_read_fd(ff, path, len, &fd);
    if (e) return e == ENOENT || e == ENOTDIR ? ERR_NOTFOUND : e == ELOOP ? ERR_BUSY : ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ERR_BUSY;
    }
    *fd_out = fd;
    return 0;
}

int fsm_files_sync(struct fsm_files *ff)
{
    if (syncfs(ff->files_fd) != 0) {
        LOG_ERROR("fsm: syncfs: %s", strerror(errno));
        return ERR_IO;
    }
    return 0;
}

int fsm_files_reopen_files(struct fsm_files *ff, const char *node_dir)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof p, "%s/files", node_dir) >= sizeof p) return ERR_INVALID;
    fdc_lock(&ff->fdc);
    fdc_clear(&ff->fdc); /* every cached fd is on an inode of the tree swapped out */
    fdc_unlock(&ff->fdc);
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        LOG_ERROR("fsm: open %s: %s", p, strerror(errno));
        return ERR_IO;
    }
    /* dup3 swaps the descriptor in place: the checkpoint thread's syncfs never sees it
     * closed. */
    if (dup3(fd, ff->files_fd, O_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        LOG_ERROR("fsm: dup3: %s", strerror(e));
        return ERR_IO;
    }
    close(fd);
    return 0;
}

static int files_opendir(const char *dir, const char *sub, int *fd_out, char *err, size_t err_len)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof p, "%s%s%s", dir, sub ? "/" : "", sub ? sub : "") >= sizeof p) {
        snprintf(err, err_len, "node dir path too long: %s", dir);
        return ERR_INVALID;
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "mkdir %s: %s", p, strerror(errno));
        return ERR_IO;
    }
    *fd_out = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd_out < 0) {
        snprintf(err, err_len, "open %s: %s", p, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

/* Calls fn for every entry of dirfd (a crash leftover), bounded by the directory's size. */
static int files_scan(struct fsm_files *ff, int dirfd, const char *prefix,
                      void (*fn)(struct fsm_files *ff, const char *name))
{
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return ERR_IO;
    }
    char(*names)[256] = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rv = 0;
    /* Names first, then act: changing a directory while reading it may skip entries. */
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            void *p = realloc(names, cap * sizeof *names);
            if (!p) {
                rv = ERR_NOMEM;
                break;
            }
            names = p;
        }
        snprintf(names[n++], sizeof names[0], "%s%s", prefix, de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n && rv == 0; i++)
        fn(ff, names[i]);
    free(names);
    return rv;
}

static void files_scan_spare_cb(struct fsm_files *ff, const char *name)
{
    unsigned long long id;
    const char *leaf = strrchr(name, '/');
    if (sscanf(leaf ? leaf + 1 : name, "s%llu", &id) == 1 && id >= ff->next_id)
        ff->next_id = id + 1;
    files_recycle(ff, name);
}

/* True for the name of one of spare/'s shard directories. */
static bool files_is_shard(const char *name)
{
    char want[4];
    for (unsigned i = 0; i < FSM_SPARE_SHARDS; i++) {
        snprintf(want, sizeof want, "%x", i);
        if (!strcmp(name, want)) return true;
    }
    return false;
}

/* spare/'s top level: shards are scanned (their entries recycled), anything else is a
 * leftover (from before the shards, or a crash) and is recycled like a spare. */
static void files_scan_spare_top_cb(struct fsm_files *ff, const char *name)
{
    struct stat st;
    if (!files_is_shard(name) || fstatat(ff->spare_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(st.st_mode)) {
        files_scan_spare_cb(ff, name);
        return;
    }
    int fd = openat(ff->spare_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%s/", name);
    if (fd < 0 || files_scan(ff, fd, prefix, files_scan_spare_cb) != 0)
        LOG_WARN("fsm: cannot scan spare/%s", name);
    if (fd >= 0) close(fd);
}

/* Makes spare/'s shard directories (a non-directory in the way is a leftover: removed). */
static int files_make_shards(struct fsm_files *ff, char *err, size_t err_len)
{
    char name[4];
    for (unsigned i = 0; i < FSM_SPARE_SHARDS; i++) {
        snprintf(name, sizeof name, "%x", i);
        struct stat st;
        if (fstatat(ff->spare_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
            unlinkat(ff->spare_fd, name, 0);
        if (mkdirat(ff->spare_fd, name, 0755) != 0 && errno != EEXIST) {
            snprintf(err, err_len, "mkdir spare/%s: %s", name, strerror(errno));
            return files_errno(errno);
        }
    }
    return 0;
}

static void files_scan_trash_cb(struct fsm_files *ff, const char *name)
{
    unsigned long long id;
    if (sscanf(name, "s%llu", &id) == 1 && id >= ff->next_id)
        ff->next_id = id + 1; /* a tree we fail to remove keeps its name taken */
    fsm_files_rmtree(ff->trash_fd, name, NULL);
}

/* A lease broken by another open signals its holder. The leases kept on cached fds signal
 * FSM_LEASE_SIG to the fd cache's lease thread (fsm_fdc.h); the short lease files_recycle
 * takes to test a spare, and an overflowing real-time signal queue, raise SIGIO, whose default
 * action ends the process: ignore it (the lease thread blocks SIGIO and still reads the ones
 * sent to it through its signalfd). A handler the program installed itself is left alone. */
static void files_ignore_sigio(void)
{
    struct sigaction old;
    if (sigaction(SIGIO, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        old.sa_handler == SIG_DFL)
        signal(SIGIO, SIG_IGN);
}

int fsm_files_open(struct fsm_files *ff, const char *node_dir, unsigned target, char *err,
                   size_t err_len)
{
    files_ignore_sigio();
    memset(ff, 0, sizeof *ff);
    fdc_init(&ff->fdc);
    pthread_mutex_init(&ff->lock, NULL);
    pthread_cond_init(&ff->cond, NULL);
    if (err_len > 0) err[0] = '\0';
    ff->files_fd = ff->spare_fd = ff->trash_fd = -1;
    snprintf(ff->trash_path, sizeof ff->trash_path, "%s/trash", node_dir);
    int rv = files_opendir(node_dir, NULL, &ff->files_fd, err, err_len);
    if (rv == 0) {
        close(ff->files_fd);
        ff->files_fd = -1;
        rv = files_opendir(node_dir, "files", &ff->files_fd, err, err_len);
    }
    if (rv == 0) rv = files_opendir(node_dir, "spare", &ff->spare_fd, err, err_len);
    /* Two stores on one directory would recycle each other's inodes: refuse the second. */
    if (rv == 0 && flock(ff->spare_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, err_len, "%s is in use by another process", node_dir);
        rv = ERR_BUSY;
    }
    if (rv == 0) rv = files_opendir(node_dir, "trash", &ff->trash_fd, err, err_len);
    if (rv == 0) rv = files_scan(ff, ff->trash_fd, "", files_scan_trash_cb);
    if (rv == 0) rv = files_make_shards(ff, err, err_len);
    if (rv == 0) rv = files_scan(ff, ff->spare_fd, "", files_scan_spare_top_cb);
    if (rv && !err[0]) snprintf(err, err_len, "cleaning %s: %s", node_dir, err_str(rv));
    ff->target =
        target < FSM_SPARES_MAX + FSM_RESERVE_MAX ? target : FSM_SPARES_MAX + FSM_RESERVE_MAX;
    if (rv == 0 && ff->target > 0 && pthread_create(&ff->creator, NULL, files_creator_main, ff)) {
        snprintf(err, err_len, "cannot start the spare-inode thread");
        ff->target = 0;
        rv = ERR_NOMEM;
    }
    if (rv) fsm_files_close(ff);
    return rv;
}

void fsm_files_close(struct fsm_files *ff)
{
    if (ff->target > 0) {
        pthread_mutex_lock(&ff->lock);
        ff->stop = true;
        pthread_cond_signal(&ff->cond);
        pthread_mutex_unlock(&ff->lock);
        pthread_join(ff->creator, NULL);
        ff->target = 0;
    }
    for (size_t i = 0; i < ff->n_pool; i++)
        close(ff->pool[i].fd);
    ff->n_pool = 0;
    fdc_fini(&ff->fdc);
    int *fds[] = {&ff->files_fd, &ff->spare_fd, &ff->trash_fd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
}
