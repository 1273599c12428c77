/* blob.c — reference-counted payloads shared by the core, storage, transport and HTTP.
 * Thread-safe reference counting only; never copies or inspects the bytes. */
#include <stdatomic.h>
#include <stdlib.h>

#include "raft.h"
#include "rassert.h"

struct raft_blob *raft_blob_new(uint32_t len)
{
    struct raft_blob *b = malloc(sizeof *b + len);
    if (!b) return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    return b;
}

struct raft_blob *raft_blob_ref(struct raft_blob *b)
{
    if (b) {
        uint32_t before = atomic_fetch_add(&b->refs, 1);
        ASSERT(before > 0);
    }
    return b;
}

void raft_blob_unref(struct raft_blob *b)
{
    if (!b) return;
    uint32_t before = atomic_fetch_sub(&b->refs, 1);
    ASSERT(before > 0);
    if (before == 1) free(b);
}
