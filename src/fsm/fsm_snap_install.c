/* fsm_snap_install.c — installs a staged snapshot atomically (fsm.h, "The install"),
 * finishes an install cut short by a crash, and removes replaced trees in the background. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fsm_snap_int.h"
#include "log.h"
#include "rassert.h"

#define SNAP_KEY "snapshot"
#define SNAP_REC_FIXED (1 + 1 + 8 * 5 + 4)
#define SNAP_REC_VERSION 1

/* ---- The install record (fsm_state.db "snapshot") ------------------------------------------ */

static int snap_rec_put(struct fsm *f, DB_TXN *txn, const struct fsm_snap_rec *r,
                        const struct raft_blob *conf)
{
    uint32_t clen = conf ? conf->len : 0;
    uint8_t *v = malloc(SNAP_REC_FIXED + clen);
    if (!v) return ERR_NOMEM;
    v[0] = SNAP_REC_VERSION;
    v[1] = r->pending ? 1 : 0;
    fsm_be_put64(v + 2, r->index);
    fsm_be_put64(v + 10, r->index_end);
    fsm_be_put64(v + 18, r->term);
    fsm_be_put64(v + 26, r->ino);
    fsm_be_put64(v + 34, r->dev);
    fss_put32(v + 42, clen);
    if (clen) memcpy(v + SNAP_REC_FIXED, conf->data, clen);
    int rv = fsm_db_put_var(f->db.state, txn, SNAP_KEY, v, SNAP_REC_FIXED + clen);
    free(v);
    return rv;
}

/* Reads the record; *conf (when not NULL) gets the configuration (NULL when empty). */
static int snap_rec_get(struct fsm *f, struct fsm_snap_rec *r, struct raft_blob **conf)
{
    memset(r, 0, sizeof *r);
    if (conf) *conf = NULL;
    size_t cap = SNAP_REC_FIXED + FSS_CONF_MAX, len = 0;
    uint8_t *v = malloc(cap);
    if (!v) return ERR_NOMEM;
    int rv = fsm_db_get_var(f->db.state, NULL, SNAP_KEY, v, cap, &len);
    if (rv == 0 && (len < SNAP_REC_FIXED || v[0] != SNAP_REC_VERSION ||
                    fss_get32(v + 42) != len - SNAP_REC_FIXED))
        rv = ERR_CORRUPT;
    if (rv == 0) {
        r->present = true;
        r->pending = v[1] != 0;
        r->index = fsm_be_get64(v + 2);
        r->index_end = fsm_be_get64(v + 10);
        r->term = fsm_be_get64(v + 18);
        r->ino = fsm_be_get64(v + 26);
        r->dev = fsm_be_get64(v + 34);
        uint32_t clen = fss_get32(v + 42);
        if (conf && clen) {
            *conf = raft_blob_new(clen);
            if (*conf)
                memcpy((*conf)->data, v + SNAP_REC_FIXED, clen);
            else
                rv = ERR_NOMEM;
        }
    }
    free(v);
    return rv;
}

int fsm_snap_info(struct fsm *f, struct fsm_snap_meta *out)
{
    ASSERT(f && out);
    memset(out, 0, sizeof *out);
    struct fsm_snap_rec r;
    int rv = snap_rec_get(f, &r, &out->conf);
    if (rv) return rv;
    out->index = r.index;
    out->term = r.term;
    out->index_end = r.index_end;
    return 0;
}

void fsm_snap_test_stop_after(struct fsm *f, int step)
{
    f->install_stop_after = step;
}

/* ---- trash/: replaced trees, removed by a background thread -------------------------------- */

/* Removes every "snap-*" entry of trash/ (fsm_open removes the rest, and these too when
 * this thread was stopped). */
static void *trash_main(void *arg)
{
    struct fsm *f = arg;
    char dir[PATH_MAX];
    if (fsm_snap_path(f, "trash", dir, sizeof dir) != 0) dir[0] = '\0';
    for (bool again = true; again;) {
        again = false;
        DIR *d = dir[0] ? opendir(dir) : NULL;
        for (struct dirent *de; d && (de = readdir(d)) && !atomic_load(&f->trash_stop);) {
            if (strncmp(de->d_name, "snap-", 5) != 0) continue;
            /* Removed: the directory changed while read, read it again. */
            if (fsm_files_rmtree(dirfd(d), de->d_name, &f->trash_stop)) again = true;
        }
        if (d) closedir(d);
        /* A kick while running (a new tree arrived): one more pass, else done. */
        pthread_mutex_lock(&f->trash_lock);
        again = (again || f->trash_again) && !atomic_load(&f->trash_stop);
        f->trash_again = false;
        if (!again) f->trash_running = false; /* decided under the lock a kick takes */
        pthread_mutex_unlock(&f->trash_lock);
    }
    return NULL;
}

/* Never waits for a removal in progress: a running thread just makes one more pass. */
static void trash_kick(struct fsm *f)
{
    pthread_mutex_lock(&f->trash_lock);
    bool running = f->trash_running;
    if (running) f->trash_again = true;
    pthread_mutex_unlock(&f->trash_lock);
    if (running) return;
    if (f->trash_joinable) pthread_join(f->trash_thread, NULL); /* it has finished */
    atomic_store(&f->trash_stop, false);
    f->trash_running = true;
    f->trash_joinable = pthread_create(&f->trash_thread, NULL, trash_main, f) == 0;
    if (!f->trash_joinable) {
        f->trash_running = false;
        LOG_WARN("fsm: no trash thread: trash/ is emptied at the next open");
    }
}

void fsm_snap_shutdown(struct fsm *f)
{
    fsm_snap_aio_close(f);
    if (!f->trash_joinable) return;
    atomic_store(&f->trash_stop, true);
    pthread_join(f->trash_thread, NULL);
    f->trash_joinable = false;
    f->trash_running = false;
}

int fsm_snap_trash(struct fsm *f, const char *path, bool background)
{
    static _Atomic uint64_t seq;
    char trash[PATH_MAX], to[PATH_MAX + 64];
    int rv = fsm_snap_path(f, "trash", trash, sizeof trash);
    if (rv) return rv;
    if (mkdir(trash, 0755) != 0 && errno != EEXIST) return ERR_IO;
    for (int tries = 0; tries < 1000; tries++) {
        snprintf(to, sizeof to, "%s/snap-%d-%llu", trash, (int)getpid(),
                 (unsigned long long)atomic_fetch_add(&seq, 1));
        if (renameat2(AT_FDCWD, path, AT_FDCWD, to, RENAME_NOREPLACE) == 0) {
            if (background) trash_kick(f);
            return 0;
        }
        if (errno == ENOENT) return 0;
        if (errno != EEXIST) break;
    }
    LOG_ERROR("fsm: cannot move %s to trash: %s", path, strerror(errno));
    return ERR_IO;
}

/* ---- Install ----------------------------------------------------------------------------------
 */

static bool snap_stop(struct fsm *f, int step)
{
    if (f->install_stop_after != step) return false;
    f->install_stop_after = 0;
    LOG_WARN("fsm: test hook: snapshot install stops after step %d", step);
    return true;
}

/* fsync of the node directory: the exchange of files/ is durable before pending is cleared. */
static int snap_sync_node_dir(struct fsm *f)
{
    int fd = open(f->node_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = fd >= 0 && fsync(fd) == 0 ? 0 : ERR_IO;
    if (fd >= 0) close(fd);
    return rv;
}

/* files/ <-> the staged tree (renameat2 RENAME_EXCHANGE). */
static int snap_exchange(struct fsm *f)
{
    char files[PATH_MAX], staged[PATH_MAX];
    if (fsm_snap_path(f, "files", files, sizeof files) ||
        fsm_snap_path(f, FSS_STAGE_DIR "/files", staged, sizeof staged))
        return ERR_INVALID;
    if (renameat2(AT_FDCWD, staged, AT_FDCWD, files, RENAME_EXCHANGE) != 0) {
        LOG_ERROR("fsm: exchanging %s and %s: %s", files, staged, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

static int snap_clear_pending(struct fsm *f, struct raft_blob *conf, bool sync)
{
    struct fsm_snap_rec r = f->snap;
    r.pending = false;
    DB_TXN *txn;
    int rv = fsm_db_begin(&f->db, &txn);
    if (rv) return rv;
    rv = snap_rec_put(f, txn, &r, conf);
    if (rv) {
        fsm_db_abort(txn);
        return rv;
    }
    rv = fsm_db_commit(txn, sync);
    if (rv == 0) f->snap.pending = false;
    return rv;
}

/* Step 2: one synchronous transaction swaps the staged tables in and records the install.
 * *committed tells whether it did (the live tables may still fail to reopen). */
static int snap_commit(struct fsm *f, const struct fsm_snap_rec *r, const struct raft_blob *conf,
                       bool *committed)
{
    DB_TXN *txn;
    fsm_db_close_tables(&f->db);
    int rv = fsm_db_begin(&f->db, &txn);
    if (rv == 0) {
        rv = fsm_db_remove_tables(f->db.env, txn, "fsm_");
        if (rv == 0) rv = fsm_db_rename_tables(f->db.env, txn, FSS_STAGE_TABLES, "fsm_");
        if (rv == 0) rv = fsm_db_put_index(f->db.state, txn, "applied", r->index);
        if (rv == 0) rv = fsm_db_put_index(f->db.ckpt, txn, "checkpoint", r->index);
        if (rv == 0) rv = snap_rec_put(f, txn, r, conf);
        if (rv == 0)
            rv = fsm_db_commit(txn, true);
        else
            fsm_db_abort(txn);
    }
    *committed = rv == 0;
    char err[256] = "";
    int rv2 = fsm_db_open_tables(&f->db, f->db.env, "fsm_", err, sizeof err);
    if (rv2) LOG_ERROR("fsm: reopening the tables after a snapshot install: %s", err);
    return rv ? rv : rv2;
}

/* Steps 1-2; unless *committed, a failure leaves the old store intact. */
static int snap_install_db(struct fsm *f, struct fsm_snap_writer *w, bool *committed)
{
    *committed = false;
    struct stat st;
    if (syncfs(w->stage_fd) != 0 || fstat(w->stage_fd, &st) != 0) {
        LOG_ERROR("fsm: syncing the staged snapshot: %s", strerror(errno));
        return ERR_IO;
    }
    if (snap_stop(f, 1)) return ERR_SHUTDOWN;
    struct fsm_snap_rec r = {.present = true,
                             .pending = true,
                             .index = w->meta.index,
                             .index_end = w->meta.index_end,
                             .term = w->meta.term,
                             .ino = (uint64_t)st.st_ino,
                             .dev = (uint64_t)st.st_dev};
    fsm_db_close_tables(&w->db);
    pthread_mutex_lock(&f->ckpt_lock); /* no checkpoint of the old applied index after this */
    int rv = snap_commit(f, &r, w->meta.conf, committed);
    if (*committed) {
        f->snap = r;
        f->bdb_applied = r.index;
        atomic_store(&f->applied, r.index);
        atomic_store(&f->checkpointed, r.index);
        f->epoch++;
    }
    pthread_mutex_unlock(&f->ckpt_lock);
    return rv;
}

/* Steps 3-5, also run by fsm_open for a pending install (exchanged: the exchange is done). */
static int snap_finish(struct fsm *f, bool exchanged, struct raft_blob *conf, bool opened)
{
    int rv = exchanged ? 0 : snap_exchange(f);
    if (rv == 0 && opened) rv = fsm_files_reopen_files(&f->ff, f->node_dir);
    if (rv) return rv;
    if (snap_stop(f, 3)) return ERR_SHUTDOWN;
    rv = snap_sync_node_dir(f);
    if (rv == 0) rv = snap_clear_pending(f, conf, false);
    if (rv) return rv;
    if (snap_stop(f, 4)) return ERR_SHUTDOWN;
    char stage[PATH_MAX];
    /* At open, fsm_files_open empties trash/ right after this. */
    if (fsm_snap_path(f, FSS_STAGE_DIR, stage, sizeof stage) == 0 &&
        fsm_snap_trash(f, stage, opened) != 0)
        LOG_WARN("fsm: the replaced tree stays in %s until the next open", stage);
    if (snap_stop(f, 5)) return ERR_SHUTDOWN;
    return 0;
}

int fsm_snap_install(struct fsm *f, struct fsm_snap_writer *w)
{
    ASSERT(f && w && w->f == f);
    int rv = 0;
    if (!w->finished || w->error) rv = ERR_INVALID;
    if (rv == 0 && w->meta.index <= fsm_applied(f)) rv = ERR_INVALID;
    if (rv == 0) rv = fsm_snap_writer_flush(w);
    if (rv == 0 && (w->in_file || w->fd >= 0)) rv = ERR_INVALID;
    bool committed = false;
    if (rv == 0) rv = snap_install_db(f, w, &committed);
    if (rv) {
        if (rv == ERR_SHUTDOWN || committed) { /* the hook (as if the process died here), or
                                                * pending: the next open finishes it */
            f->writer_open = false;
            fsm_snap_writer_free(w);
        } else {
            fsm_snap_writer_abort(w);
        }
        return rv;
    }
    if (snap_stop(f, 2)) {
        f->writer_open = false;
        fsm_snap_writer_free(w);
        return ERR_SHUTDOWN;
    }
    struct raft_blob *conf = raft_blob_ref(w->meta.conf);
    f->writer_open = false;
    fsm_snap_writer_free(w);
    rv = snap_finish(f, false, conf, true);
    raft_blob_unref(conf);
    if (rv == 0)
        LOG_INFO("fsm: installed a snapshot at %llu (window to %llu)",
                 (unsigned long long)f->snap.index, (unsigned long long)f->snap.index_end);
    else if (rv != ERR_SHUTDOWN)
        LOG_ERROR("fsm: snapshot install at %llu pending (the next open finishes it): %s",
                  (unsigned long long)f->snap.index, err_str(rv));
    return rv;
}

/* ---- Recovery at open -------------------------------------------------------------------------
 */

static bool snap_is_dir(const char *path, const struct fsm_snap_rec *r)
{
    struct stat st;
    /* The inode number alone: both directories are on one file system, and st_dev may
     * change across reboots on some setups. */
    return stat(path, &st) == 0 && (uint64_t)st.st_ino == r->ino;
}

/* A pending install: the BDB side is committed; make files/ the recorded tree. */
static int snap_recover_pending(struct fsm *f, char *err, size_t err_len)
{
    char files[PATH_MAX], staged[PATH_MAX];
    if (fsm_snap_path(f, "files", files, sizeof files) ||
        fsm_snap_path(f, FSS_STAGE_DIR "/files", staged, sizeof staged))
        return ERR_INVALID;
    bool exchanged = snap_is_dir(files, &f->snap);
    if (!exchanged && !snap_is_dir(staged, &f->snap)) {
        snprintf(err, err_len, "snapshot install at %llu pending but its tree is gone",
                 (unsigned long long)f->snap.index);
        return ERR_CORRUPT;
    }
    struct fsm_snap_rec r;
    struct raft_blob *conf = NULL;
    int rv = snap_rec_get(f, &r, &conf);
    if (rv == 0) rv = snap_finish(f, exchanged, conf, false);
    raft_blob_unref(conf);
    if (rv)
        snprintf(err, err_len, "finishing the snapshot install: %s", err_str(rv));
    else
        LOG_INFO("fsm: finished the snapshot install at %llu", (unsigned long long)r.index);
    return rv;
}

int fsm_snap_recover(struct fsm *f, char *err, size_t err_len)
{
    int rv = snap_rec_get(f, &f->snap, NULL);
    if (rv == ERR_NOTFOUND) {
        memset(&f->snap, 0, sizeof f->snap);
        rv = 0;
    }
    if (rv) {
        snprintf(err, err_len, "reading the snapshot record: %s", err_str(rv));
        return rv;
    }
    if (f->snap.pending) return snap_recover_pending(f, err, err_len);
    /* Not pending: whatever is staged is a leftover of an unfinished transfer. */
    char stage[PATH_MAX];
    rv = fsm_snap_path(f, FSS_STAGE_DIR, stage, sizeof stage);
    if (rv == 0) rv = fsm_db_remove_tables(f->db.env, NULL, FSS_STAGE_TABLES);
    struct stat st;
    if (rv == 0 && stat(stage, &st) == 0) rv = fsm_snap_trash(f, stage, false);
    if (rv) snprintf(err, err_len, "cleaning %s: %s", stage, err_str(rv));
    return rv;
}
