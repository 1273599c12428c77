/* snapshot.c — log compaction and snapshot installation. (Stubs; implemented next.) */
#include "err.h"
#include "raft_int.h"

int raft_compact(struct raft *r, raft_index upto)
{
    (void)r;
    (void)upto;
    return ERR_INVALID;
}

int raft_snapshot_meta(const struct raft *r, raft_index index, raft_term *term_out,
                       struct raft_configuration *conf_out)
{
    (void)r;
    (void)index;
    (void)term_out;
    (void)conf_out;
    return ERR_NOTFOUND;
}

void raft_report_snapshot(struct raft *r, raft_id peer, raft_index index, bool ok)
{
    (void)r;
    (void)peer;
    (void)index;
    (void)ok;
}

bool raft_snapshot_acceptable(const struct raft *r, raft_term term, raft_index index)
{
    (void)r;
    (void)term;
    (void)index;
    return false;
}

int raft_install_snapshot(struct raft *r, raft_id from, raft_term term, raft_index index,
                          raft_term index_term, const struct raft_configuration *conf)
{
    (void)r;
    (void)from;
    (void)term;
    (void)index;
    (void)index_term;
    (void)conf;
    return ERR_INVALID;
}
