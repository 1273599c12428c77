/* sup.h — raftsup: one raftnode child per node of the config, restarted with backoff, joined
 * into the cluster by the supervisor, stopped gracefully. Never touches a node's Raft state. */
#ifndef RAFTFS_SUP_H
#define RAFTFS_SUP_H

#include <ev.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

#define SUP_STOP_GRACE_S 5.0 /* SIGTERM -> SIGKILL delay when stopping */
#define SUP_PATH_MAX 4300    /* data_dir (4096) + "/" + id + "/node.pid" */

struct sup;
struct sup_join;
struct sup_roll;

/* One supervised node. Invariant: pid != 0 exactly while `watch` is active. */
struct sup_child {
    struct sup *sup;                /* owner */
    const struct config_node *node; /* borrowed from sup->cfg */
    size_t index;                   /* position in the config; 0 may bootstrap */
    ev_child watch;                 /* the running process */
    ev_timer restart;               /* backoff before the next spawn */
    pid_t pid;                      /* 0 while not running */
    ev_tstamp started_at;           /* ev_now() at the last spawn */
    unsigned backoff_ms;            /* delay before the next restart */
    unsigned starts;                /* spawns so far (1 = first start) */
    bool bootstrap_pending;         /* spawned with --bootstrap, no leader seen since */
    bool rolling;                   /* stopped by a rolling restart: restart at once */
    char dir[SUP_PATH_MAX];         /* DATA/ID */
    char pid_path[SUP_PATH_MAX];    /* DATA/ID/node.pid */
    char log_path[SUP_PATH_MAX];    /* DATA/ID/node.log */
};

struct sup {
    struct ev_loop *loop; /* the default loop (ev_child needs it) */
    struct config cfg;
    char config_path[PATH_MAX]; /* as given: children resolve it against the same cwd */
    char raftnode[PATH_MAX];    /* the binary exec'ed for each node */
    char pid_path[SUP_PATH_MAX];
    int lock_fd; /* flock'ed DATA/raftsup.lock, -1 when not held */
    int log_fd;  /* DATA/raftsup.log, -1 when not open */
    bool stopping;
    ev_signal sig_term, sig_int, sig_hup;
    ev_timer stop_timer; /* SIGKILL the stragglers after SUP_STOP_GRACE_S */
    struct sup_child children[RAFT_MAX_NODES];
    struct sup_join *join; /* owned; NULL when the join helper could not start */
    struct sup_roll *roll; /* owned; NULL when the rolling restart could not be set up */
};

/* Creates DATA/ and DATA/ID/, takes the data_dir lock, writes DATA/raftsup.pid, opens
 * DATA/raftsup.log, kills raftnode processes named by stale pid files. cfg is copied.
 * Returns ERR_BUSY when another raftsup holds the lock, ERR_IO otherwise; err gets a message.
 * sup_close() must be called afterwards in every case. */
int sup_init(struct sup *s, struct ev_loop *loop, const struct config *cfg, const char *config_path,
             const char *raftnode, char *err, size_t err_len);
/* Starts every child, the signal watchers and the join helper. */
int sup_start(struct sup *s);
/* Runs the loop until every child has stopped after SIGTERM/SIGINT. */
void sup_run(struct sup *s);
/* Removes pid files, releases the lock. Children must have stopped. */
void sup_close(struct sup *s);

/* child.c */
void sup_child_init(struct sup_child *c, struct sup *s, size_t index);
/* Forks and execs the node; schedules a retry on failure. */
void sup_child_spawn(struct sup_child *c);
/* Sends sig to a running child (no-op when it is not running). */
void sup_child_signal(struct sup_child *c, int sig);
/* True when DATA/ID/raft is missing or empty. */
bool sup_child_raft_empty(const struct sup_child *c);
/* Kills a raftnode left by an earlier supervisor (named by a stale node.pid), then removes
 * the pid file. */
void sup_child_clear_stale(struct sup_child *c);

/* sup.c: called by child.c when a child exits during stop. */
void sup_child_stopped(struct sup *s);
/* Writes pid to path atomically (temp file + rename). */
int sup_write_pid(const char *path, pid_t pid);

/* join.c: waits for a leader and joins every config node that is not a member yet. */
int sup_join_new(struct sup *s, struct sup_join **out);
/* (Re)starts a pass over the config's nodes; idempotent while a pass is running. */
void sup_join_kick(struct sup_join *j);
void sup_join_free(struct sup_join *j);

/* roll.c: SIGHUP's rolling restart, one node at a time (a stopping leader hands over first),
 * each serving again before the next; followers first, the leader last. */
int sup_roll_new(struct sup *s, struct sup_roll **out);
/* Starts a roll; ignored (logged) while one is running. */
void sup_roll_start(struct sup_roll *r);
/* child.c: child c exited; NULL-safe. */
void sup_roll_child_exited(struct sup_roll *r, struct sup_child *c);
void sup_roll_free(struct sup_roll *r);

#endif
