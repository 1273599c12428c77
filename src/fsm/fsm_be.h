/* fsm_be.h — internal: big-endian integers for the file store's encodings (commands, BDB
 * records). Byte-exact on every host; never reads or writes past the 8 bytes given. */
#ifndef RAFTFS_FSM_BE_H
#define RAFTFS_FSM_BE_H

#include <stdint.h>

static inline void fsm_be_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline uint64_t fsm_be_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif
