/* raft_blob_fallback.c — raft_blob_new/ref/unref with the contract of include/raft.h, for
 * the fuzz targets (built by clang straight from sources, without the Raft core) and for the
 * net unit tests while the core is not in the tree. Never linked together with raft_lib. */
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
    if (b) atomic_fetch_add(&b->refs, 1);
    return b;
}

void raft_blob_unref(struct raft_blob *b)
{
    if (!b) return;
    uint32_t before = atomic_fetch_sub(&b->refs, 1);
    ASSERT(before > 0);
    if (before == 1) free(b);
}
