/* fsm_files.h — internal: the file side of the store (files/, the spare-inode pool, trash/).
 * Knows nothing of BDB, commands or outcomes; every operation is idempotent. */
#ifndef RAFTFS_FSM_FILES_H
#define RAFTFS_FSM_FILES_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm.h"
#include "fsm_fdc.h"

/* Spares at most this big keep their blocks when recycled (a same-size overwrite then needs
 * no truncate); bigger ones are truncated so the pool never pins much disk. */
#define FSM_SPARE_KEEP_BYTES (64u * 1024u)

/* Block-freeing work (unlink, truncate) waiting for the creator thread: freeing blocks with
 * online discard can block for milliseconds, so it stays off the apply path. */
#define FSM_CHORES_MAX 1024

struct fsm_chore {
    char name[24]; /* in spare/ */
    bool trim;     /* true: truncate to 0 and pool it; false: unlink */
};

struct fsm_spare {
    int fd;        /* O_RDWR, ours alone */
    uint64_t size; /* current length of the inode's content */
    char name[24]; /* its name in spare/ */
};

struct fsm_files {
    int files_fd; /* node_dir/files: the replicated files */
    int spare_fd; /* node_dir/spare: pooled spare inodes, inodes on their way out */
    int trash_fd; /* node_dir/trash: directories being removed */
    char trash_path[PATH_MAX];
    pthread_mutex_t lock; /* guards pool, n_pool, stop (the creator thread shares them) */
    pthread_cond_t cond;  /* creator: pool below target, or stop */
    struct fsm_spare pool[FSM_SPARES_MAX]; /* open spares, used first */
    size_t n_pool;
    char reserve[FSM_RESERVE_MAX][24]; /* empty spares in spare/, by name, used next */
    size_t n_reserve;
    struct fsm_chore chores[FSM_CHORES_MAX]; /* for the creator thread */
    size_t n_chores;
    unsigned target; /* creator keeps n_pool + n_reserve >= target; 0: no creator thread */
    bool stop;
    pthread_t creator;
    _Atomic uint64_t next_id; /* next fresh name in spare/ or trash/ */
    _Atomic uint64_t created, precreated, recycled, pinned;
    _Atomic uint64_t in_place; /* overwrites written into the file's own inode */
    struct fsm_fdcache fdc;    /* its own lock; fsm_fdc.h */
};

/* path (validated, relative) for a *at() call under root_fd: *dirfd and *leaf to pass on;
 * *tmp_fd, when not -1, is a parent directory opened for a path too long for PATH_MAX and must
 * be closed by the caller after the call. Returns 0 or an errno. */
int fsm_path_at(int root_fd, const char *path, size_t len, int *dirfd, const char **leaf,
                int *tmp_fd);

/* Creates the directories when absent, removes leftovers of a crash, fills the pool from
 * spare/. With target > 0 a thread pre-creates spares (off the apply path) whenever the pool
 * holds fewer than target. ERR_IO with a message. */
int fsm_files_open(struct fsm_files *ff, const char *node_dir, unsigned target, char *err,
                   size_t err_len);
size_t fsm_files_pool_size(struct fsm_files *ff);
void fsm_files_close(struct fsm_files *ff);

/* files/path := body, atomically for readers (path: validated, NUL-terminated, len bytes).
 * Creates parent directories; replaces a non-directory in the way of one, or a directory at
 * path (states only a crash replay can meet). ERR_IO, ERR_NOSPACE. */
int fsm_files_put(struct fsm_files *ff, const char *path, size_t len, const uint8_t *body,
                  uint64_t body_len);
/* files/path is absent afterwards (already absent is fine); empty parent directories are
 * removed. ERR_IO. */
int fsm_files_remove(struct fsm_files *ff, const char *path, size_t len);
/* O_RDONLY fd on files/path, never following a symlink or leaving files/. ERR_NOTFOUND,
 * ERR_BUSY (not a regular file), ERR_IO. */
int fsm_files_open_read(struct fsm_files *ff, const char *path, size_t len, int *fd_out);
/* files_fd follows node_dir/files again (a snapshot install exchanged the directory). */
int fsm_files_reopen_files(struct fsm_files *ff, const char *node_dir);
/* Removes the tree dirfd/name (any depth, any path length, one fd at a time); stops early when
 * *stop becomes true (stop may be NULL). True when it is gone; failures are logged. */
bool fsm_files_rmtree(int dirfd, const char *name, const _Atomic bool *stop);
/* Overwrites in place that found their fd in the cache (no open or close). */
uint64_t fsm_files_fd_cache_hits(const struct fsm_files *ff);
/* Write leases of cached fds released because another open broke them (fsm_fdc.h). */
uint64_t fsm_files_lease_breaks(struct fsm_files *ff);

/* syncfs() of the file system holding files/. ERR_IO. */
int fsm_files_sync(struct fsm_files *ff);

#endif
