/* transfer.c — leadership transfer (thesis 3.10). (Stub; implemented next.) */
#include "err.h"
#include "raft_int.h"

int raft_transfer_leadership(struct raft *r, raft_id to)
{
    (void)r;
    (void)to;
    return ERR_INVALID;
}
