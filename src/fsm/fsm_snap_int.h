/* fsm_snap_int.h — internal: the snapshot writer's state, shared by the writer
 * (fsm_snap_write.c) and the install (fsm_snap_install.c). */
#ifndef RAFTFS_FSM_SNAP_INT_H
#define RAFTFS_FSM_SNAP_INT_H

#include <linux/aio_abi.h>
#include <sys/uio.h>

#include "fsm_int.h"
#include "fsm_sha256.h"
#include "fsm_snap_fmt.h"
#include "fsm_snap_hasher.h"
#include "fsm_snap_spare.h"

#define FSS_AIO_GROUP 4 /* consecutive DATA payloads of a file per write (1 MiB) */
#define FSS_AIO_DEPTH 3 /* writes in flight at most */
/* A hasher buffer is handed out again FSS_HASH_SLOTS submissions later: by then its write is
 * waited for (wr_buf, by submission number: every DATA payload is submitted, also those that
 * start no AIO write: a skipped file's, and writes done synchronously because no fd could be
 * dup'ed or io_submit refused), and it cannot be in the group still being gathered. */
_Static_assert((FSS_AIO_DEPTH + 1) * FSS_AIO_GROUP <= FSS_HASH_SLOTS,
               "a buffer is reused only after its write");

#define FSS_STAGE_DIR "raft/snap-in"   /* under node_dir: the staging area */
#define FSS_STAGE_TABLES "fsm_snapin_" /* staged BDB tables, in the environment's home */

struct fsm_snap_writer {
    struct fsm *f;
    int error;                 /* sticky: every later call returns it */
    char why[128];             /* what the first error was about (logged; tests read it) */
    bool finished;             /* the END record was accepted */
    char stage[PATH_MAX];      /* node_dir/raft/snap-in */
    int stage_fd;              /* its files/ subdirectory: the staged tree */
    int stage_dir_fd;          /* stage itself: where spares are made */
    struct fss_spares *spares; /* empty files made ahead (NULL: none) */
    uint64_t spares_used;      /* staged files that were spares renamed into place */
    struct fsm_db db;          /* staged meta, dedup, dedupidx */
    DB_TXN *txn;               /* staged puts, committed in batches (NOSYNC) */
    unsigned txn_ops;
    /* Record parser: header bytes, then payload + CRC into buf: the hasher's current record
     * buffer (FSS_DIO_ALIGN-aligned, so a DATA payload in it can be written with O_DIRECT);
     * NULL until a record needs it (taking one may wait for the hasher). A DATA payload is
     * written from it and submitted for hashing, and buf moves on to the next buffer. */
    uint64_t seq;
    uint8_t hdr[FSS_REC_HDR];
    size_t hdr_got;
    uint8_t *buf;
    size_t need, got;
    struct fss_hasher *hasher; /* SHA-256 of every DATA payload, off the caller's thread */
    /* DATA payloads are written with O_DIRECT straight from the hasher's buffers they are
     * in: up to FSS_AIO_GROUP consecutive payloads of a file gathered into one write (a
     * PWRITEV of their buffers: fewer, larger requests, and ext4 converts a write's unwritten
     * extent once per request), at most FSS_AIO_DEPTH writes in flight (Linux native AIO:
     * io_submit from this thread straight to the block layer; glibc's POSIX AIO woke a helper
     * thread per write, and under CPU contention its scheduling showed as disk waits). A group
     * goes out when full, at its file's last payload, or before a buffered write. Write k owns
     * aio_fd[k % FSS_AIO_DEPTH], a dup of its file's fd (closed when it is done, so a file's
     * end does not wait for its writes, and a misaligned or short one can be redone
     * synchronously). Waited for: to reuse a buffer (wr_buf), before a buffered write, at END
     * and at free. The context is the fsm's (f->snap_aio), shared by its writers one at a
     * time. */
    aio_context_t aio_ctx;               /* 0: none, every write is synchronous */
    const struct fss_aio_test *test_aio; /* fsm_snap_test_aio when opened */
    struct iocb aio[FSS_AIO_DEPTH];
    struct iovec aio_iov[FSS_AIO_DEPTH][FSS_AIO_GROUP];
    uint64_t aio_first[FSS_AIO_DEPTH]; /* hasher submission number of its first payload */
    bool aio_busy[FSS_AIO_DEPTH];      /* submitted, not yet waited for */
    bool aio_done[FSS_AIO_DEPTH];      /* its completion was reaped into aio_res */
    int64_t aio_res[FSS_AIO_DEPTH];
    int aio_fd[FSS_AIO_DEPTH];        /* -1: none */
    uint64_t aio_file[FSS_AIO_DEPTH]; /* n_files when issued: whose file description */
    unsigned aio_next;
    struct iovec grp[FSS_AIO_GROUP]; /* the group being gathered (current file) */
    unsigned grp_n;
    uint64_t grp_off, grp_first; /* its file offset and first submission number */
    uint64_t n_sub;              /* DATA payloads submitted to the hasher so far */
    uint64_t n_writes;           /* writes of gathered groups (tests) */
    /* Stream state. */
    bool have_hdr, in_dedup;
    struct fsm_snap_meta meta;
    raft_index max_index; /* largest index of any file or dedup record */
    raft_index last_dedup;
    uint64_t n_files, n_dedup, bytes;
    /* Where the caller's time went (logged at finish): waiting for a record buffer (the
     * hasher behind) and for writes in flight (the disk behind), and inside put in all. */
    uint64_t wait_hash_ns, wait_disk_ns, put_ns;
    /* The file being received (path is also the last path, for the order check). */
    bool have_path, in_file, skip;
    char path[FSPATH_MAX + 1];
    size_t path_len;
    int fd;
    bool fd_direct; /* fd's description is O_DIRECT (cleared with it: wr_buffered) */
    bool no_direct; /* the file system refused O_DIRECT once: buffered from then on */
    uint64_t size, written;
    raft_index findex;
    uint8_t want_sha[FSM_SHA256_LEN];
};

/* node_dir/<rel> into out. ERR_INVALID when too long. */
int fsm_snap_path(const struct fsm *f, const char *rel, char *out, size_t cap);
/* Moves path (a directory, or absent) into trash/ under a fresh "snap-" name; with
 * background, a thread removes it (else the next fsm_files_open does). ERR_IO when it cannot
 * be moved. */
int fsm_snap_trash(struct fsm *f, const char *path, bool background);
/* Commits the writer's open staging transaction, if any. */
int fsm_snap_writer_flush(struct fsm_snap_writer *w);
/* Tests: writers opened while this is set hash on the caller's thread (as before the
 * hasher thread), for A/B runs and to compare both ways. */
extern bool fsm_snap_test_inline_hash;
/* Tests: writers opened while fsm_snap_test_aio is set take their native-AIO calls from it
 * (a NULL member: the real call), so a test can model a device that reads a write's buffers
 * only when it is reaped (as O_DIRECT AIO may), fail a submission or a dup (EMFILE), return
 * short or failed completions, or run without an AIO context. submit and getevents are set
 * together: the writer then uses FSS_AIO_TEST_CTX, not the fsm's context. */
#define FSS_AIO_TEST_CTX ((aio_context_t)1)
struct fss_aio_test {
    bool no_ctx;                    /* no AIO context: every write synchronous */
    int (*dup)(int fd);             /* F_DUPFD_CLOEXEC of fd; -1 and errno on failure */
    long (*submit)(struct iocb *a); /* io_submit of one iocb: 1, or -1 and errno */
    /* io_getevents(min, max, ev) without a timeout: count, or -1 and errno. */
    long (*getevents)(long min, long max, struct io_event *ev);
};
extern const struct fss_aio_test *fsm_snap_test_aio;
/* Frees the writer's memory and fds (staged data stays where it is). */
void fsm_snap_writer_free(struct fsm_snap_writer *w);

#endif
