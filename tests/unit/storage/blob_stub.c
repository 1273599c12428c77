/* blob_stub.c — raft_blob_* for the storage tests and tools while the Raft core is not built
 * (linked only when raft_dep is absent); the contract of include/raft.h. */
#include <stdlib.h>

#include "raft.h"

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
    if (b) atomic_fetch_add(&b->refs, 1);
    return b;
}

void raft_blob_unref(struct raft_blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}
