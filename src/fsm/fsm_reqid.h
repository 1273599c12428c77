/* fsm_reqid.h — the request-id generator behind fsm_req_id_new(), exposed so tests can run
 * several "processes" (generators) with a clock of their choosing. */
#ifndef RAFTFS_FSM_REQID_H
#define RAFTFS_FSM_REQID_H

#include <stdbool.h>
#include <stdint.h>

#include "fsm.h"

/* One per process (fsm_req_id_new's is static, so a restart starts a new one). */
struct fsm_reqid_gen {
    uint64_t last;   /* the id's first half last handed out */
    uint8_t seed[8]; /* the id's second half: drawn once, when seeded turns true */
    bool seeded;
};

/* The next id of g for wall-clock time now_us: bytes 0-7 are max(last + 1, now_us) big-endian
 * (strictly increasing within g, and ahead of the clock only while ids come faster than one
 * per microsecond), bytes 8-15 g's seed. The first call draws the seed with getrandom();
 * ERR_IO when that fails (g stays unseeded, a later call tries again). Not thread-safe. */
int fsm_reqid_next(struct fsm_reqid_gen *g, uint64_t now_us, uint8_t out[FSM_REQ_ID_LEN]);

#endif
