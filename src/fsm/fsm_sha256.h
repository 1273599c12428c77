/* fsm_sha256.h — internal: SHA-256 of file contents. Uses the CPU's SHA extensions when it has
 * them (x86 SHA-NI: ~3-4x libsodium's portable code here, which bounds how fast a snapshot is
 * received and a big PUT applied), else libsodium. Same digests either way (tested). */
#ifndef RAFTFS_FSM_SHA256_H
#define RAFTFS_FSM_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

struct fsm_sha256 {
    bool hw;
    crypto_hash_sha256_state sodium; /* !hw */
    uint32_t h[8];                   /* hw: the state */
    uint8_t buf[64];                 /* hw: a partial block */
    size_t n;                        /* bytes in buf */
    uint64_t total;                  /* bytes hashed */
};

void fsm_sha256_init(struct fsm_sha256 *c);
void fsm_sha256_update(struct fsm_sha256 *c, const uint8_t *p, size_t len);
void fsm_sha256_final(struct fsm_sha256 *c, uint8_t out[32]);
void fsm_sha256(const uint8_t *p, uint64_t len, uint8_t out[32]);
/* Tests: force the portable path (false) or the default choice (true). */
void fsm_sha256_allow_hw(bool allow);
bool fsm_sha256_hw(void);

#endif
