/* fsm_snap_hash.h — internal: a snapshot sender's SHA-256 of the file it is sending, computed
 * on a thread of its own so the loop thread that reads, frames and sends the stream does not
 * also pay ~0.7 s of CPU per GiB for hashing (both cores of a 2-core node then work on a
 * catch-up: the loop reads and sends, this thread hashes).
 *
 * The hasher owns a ring of record buffers. The caller takes the next free one
 * (fss_hasher_slot: waits while every buffer is still queued for hashing), builds a DATA
 * record in it, and submits the record's payload (fss_hasher_submit); the thread hashes the
 * payloads in submission order while the caller hands the record out. A buffer is reused only
 * after its payload was hashed and the caller moved on to a later record, so both read it and
 * neither writes it meanwhile. fss_hasher_digest waits until everything submitted is hashed
 * and returns the digest of all of it since the last digest. Memory: FSS_HASH_SLOTS buffers.
 * Without a thread (pthread_create failed) the same calls hash inline. */
#ifndef RAFTFS_FSM_SNAP_HASH_H
#define RAFTFS_FSM_SNAP_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FSS_HASH_SLOTS 4

struct fss_hasher;

/* A hasher with FSS_HASH_SLOTS buffers of slot_bytes each; threaded unless that fails or
 * !threaded. ERR_NOMEM. */
int fss_hasher_open(size_t slot_bytes, bool threaded, struct fss_hasher **out);
/* Stops the thread (after the payload it is hashing) and frees everything. NULL is a no-op. */
void fss_hasher_close(struct fss_hasher *h);
/* The buffer to build the next submitted record in (the same one until fss_hasher_submit);
 * waits while all are queued for hashing. */
uint8_t *fss_hasher_slot(struct fss_hasher *h);
/* Queues p[0..len), inside the buffer fss_hasher_slot returns now, for hashing. */
void fss_hasher_submit(struct fss_hasher *h, const uint8_t *p, size_t len);
/* Waits until everything submitted is hashed: the SHA-256 of all of it since the last call
 * (of nothing: the empty digest), and starts over. */
void fss_hasher_digest(struct fss_hasher *h, uint8_t out[32]);

#endif
