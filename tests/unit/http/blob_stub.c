/* blob_stub.c — raft_blob_* for the HTTP tests while src/raft (raft_dep) is not built yet. */
#include <stdlib.h>

#include "raft.h"

struct raft_blob *raft_blob_new(uint32_t len)
{
    struct raft_blob *b = malloc(sizeof *b + len);
    if (b) {
        b->refs = 1;
        b->len = len;
    }
    return b;
}

struct raft_blob *raft_blob_ref(struct raft_blob *b)
{
    if (b) b->refs++;
    return b;
}

void raft_blob_unref(struct raft_blob *b)
{
    if (b && --b->refs == 0) free(b);
}
