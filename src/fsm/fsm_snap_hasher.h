/* fsm_snap_hasher.h — internal: a snapshot receiver's SHA-256 checks, on a thread of the
 * writer's own. The receiver still hashes every byte it stages (every installed file is
 * hashed on the node that installs it), but no longer on the loop thread that receives,
 * CRC-checks and writes the stream: SHA-256 was ~60% of that thread's CPU on a catch-up, so
 * with the hashing beside it both cores of a node work on a catch-up.
 *
 * The hasher owns a ring of FSS_HASH_SLOTS record buffers (aligned for O_DIRECT). The caller
 * fills the current one (fss_hasher_buf: waits while every buffer is still queued for
 * hashing), writes it out and submits the DATA payload in it (fss_hasher_submit); the thread
 * hashes payloads in submission order. A submission marked last closes its file: the thread
 * compares the digest with the announced one and, on a mismatch, the hasher fails for good
 * (fss_hasher_failed, fss_hasher_drain), naming the stream record of that file's last DATA.
 * A buffer is handed out again only after its payload was hashed and FSS_HASH_SLOTS - 1
 * later ones were submitted; the hasher knows nothing of writes: the caller waits for the
 * write of a buffer's previous payload itself (fsm_snap_write.c, wr_buf).
 * Without a thread (pthread_create failed, or !threaded) the same calls hash inline. */
#ifndef RAFTFS_FSM_SNAP_HASHER_H
#define RAFTFS_FSM_SNAP_HASHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FSS_HASH_SLOTS 16 /* record buffers: 4 MiB of DATA queued at most */

struct fss_hasher;

/* A hasher with FSS_HASH_SLOTS buffers of slot_bytes each (aligned to align). ERR_NOMEM. */
int fss_hasher_open(size_t slot_bytes, size_t align, bool threaded, struct fss_hasher **out);
/* Stops the thread (after the payload it is hashing; the rest is dropped) and frees
 * everything. NULL is a no-op. */
void fss_hasher_close(struct fss_hasher *h);
/* The buffer to fill next (the same one until fss_hasher_submit); waits while all of them
 * are queued for hashing. */
uint8_t *fss_hasher_buf(struct fss_hasher *h);
/* Queues the first len bytes of that buffer for hashing. want (NULL: more of the same file
 * follows) is the file's announced SHA-256: its last payload; seq names that record. */
void fss_hasher_submit(struct fss_hasher *h, size_t len, const uint8_t want[32], uint64_t seq);
/* A file whose content did not match its SHA-256 was found (*seq: its last DATA record);
 * does not wait. */
bool fss_hasher_failed(struct fss_hasher *h, uint64_t *seq);
/* Waits until everything submitted is hashed and checked; then as fss_hasher_failed. */
bool fss_hasher_drain(struct fss_hasher *h, uint64_t *seq);
/* Tests: a hasher thread started while hold_ms > 0 sleeps that long before hashing the
 * payload of record hold_seq (so the caller gets ahead of it). */
extern uint64_t fss_hasher_test_hold_seq;
extern unsigned fss_hasher_test_hold_ms;
/* Tests: payloads hashed so far, and whether a thread does it. */
uint64_t fss_hasher_hashed(struct fss_hasher *h);
bool fss_hasher_threaded(const struct fss_hasher *h);

#endif
