/* fsm_int.h — internal: the file store's state, shared by the apply path (fsm.c) and the
 * snapshot code (fsm_snap_*.c). Every field is touched only on the caller's thread unless
 * marked otherwise. */
#ifndef RAFTFS_FSM_INT_H
#define RAFTFS_FSM_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "fsm.h"
#include "fsm_db.h"
#include "fsm_files.h"

struct fsm_snap_reader;

/* The last installed snapshot, as recorded in fsm_state.db under "snapshot". */
struct fsm_snap_rec {
    bool present;
    bool pending;         /* the files/ exchange may not have happened yet */
    raft_index index;     /* S */
    raft_index index_end; /* S_end: the fuzzy window is (S, S_end] */
    raft_term term;       /* term of S */
    uint64_t ino, dev;    /* the staged tree's directory, files/ once exchanged */
};

struct fsm {
    struct fsm_db db;
    struct fsm_files ff;
    char node_dir[PATH_MAX];
    _Atomic raft_index applied;      /* last entry applied (files and, when normal, BDB) */
    _Atomic raft_index checkpointed; /* C: durable replay start */
    raft_index bdb_applied;          /* A: BDB holds the effect of every entry <= this */
    pthread_mutex_t ckpt_lock;       /* one checkpoint at a time (and no install meanwhile) */
    /* Checkpoint durations (fsm_stats); atomics: /metrics must not wait for a syncfs. */
    _Atomic uint64_t ckpt_hist[FSM_CKPT_BUCKETS + 1];
    _Atomic uint64_t ckpt_us_sum;
    /* The checkpoint thread (interval_ms > 0). */
    unsigned interval_ms;
    pthread_t ckpt_thread;
    pthread_mutex_t thr_lock; /* guards kick, stop */
    pthread_cond_t thr_cond;
    bool kick, stop;
    /* Snapshots. */
    struct fsm_snap_rec snap; /* the last install; entries in (index, index_end] are the window */
    struct fsm_snap_reader *readers; /* open snapshot readers (a list through their `next`) */
    raft_index
        reader_min;   /* smallest S among open readers, 0 when none (see fsm_dedup_keep_from) */
    uint64_t epoch;   /* bumped by an install: older readers are stale */
    bool writer_open; /* one incoming snapshot at a time */
    /* Native AIO context (aio_context_t) of the snapshot writers, set up by the first one and
     * destroyed at close (io_destroy waits an RCU grace period, ~20-30 ms): 0 when none. A
     * writer drains its writes before it is freed, so none is in flight between writers. */
    unsigned long snap_aio;
    int install_stop_after; /* test hook: 0 off, k: install stops after step k */
    /* Removes old trees moved to trash/ by an install, off the caller's thread. */
    pthread_t trash_thread;
    bool trash_joinable;        /* created and not joined yet (caller's thread only) */
    pthread_mutex_t trash_lock; /* guards trash_running, trash_again */
    bool trash_running, trash_again;
    _Atomic bool trash_stop;
};

/* Dedup records at index >= this are never pruned (an open reader may still need them). */
raft_index fsm_dedup_keep_from(const struct fsm *f);

/* fsm_snap_install.c: called by fsm_open before the files are opened. Loads the install
 * record into f->snap and, when an install was cut short by a crash, finishes it (the BDB
 * side committed: the files/ exchange is redone or confirmed). ERR_IO/ERR_CORRUPT. */
int fsm_snap_recover(struct fsm *f, char *err, size_t err_len);
/* Joins the trash thread and destroys the snapshot writers' AIO context (fsm_close). */
void fsm_snap_shutdown(struct fsm *f);
/* fsm_snap_write.c: destroys f->snap_aio, if any (no writer may be open). */
void fsm_snap_aio_close(struct fsm *f);

#endif
