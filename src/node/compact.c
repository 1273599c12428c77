/* compact.c — when to drop the log prefix. The file store is the snapshot: an entry may go
 * once its effect is durable in files/ and BDB (fsm_checkpointed()), so compaction copies
 * nothing and costs one bounded deletion on the storage thread. Invariant: the snapshot point
 * K never passes min(checkpointed, applied) - snapshot_trailing, nor the S of an outgoing
 * stream (the follower continues from S+1 through normal appends). */
#include <inttypes.h>

#include "err.h"
#include "fsm.h"
#include "log.h"
#include "node.h"

/* The policy's trigger: enough entries or payload bytes beyond the last snapshot point. */
static bool compact_due(const struct node *n, raft_index snap_index)
{
    const struct config *c = &n->cfg;
    return n->applied - snap_index >= c->snapshot_entries ||
           n->bytes_since_compact >= c->snapshot_bytes;
}

/* The highest point compaction may use now (0: none). */
static raft_index compact_target(const struct node *n)
{
    raft_index k = fsm_checkpointed(n->fsm);
    if (k > n->applied) k = n->applied;
    k = k > n->cfg.snapshot_trailing ? k - n->cfg.snapshot_trailing : 0;
    raft_index floor = node_snap_out_floor(n);
    return k < floor ? k : floor;
}

void node_compact_maybe(struct node *n)
{
    if (n->stopping) return;
    struct raft_status st;
    raft_status(n->raft, &st);
    if (n->applied <= st.snapshot_index || !compact_due(n, st.snapshot_index)) return;
    raft_index k = compact_target(n);
    if (k <= st.snapshot_index) return; /* the checkpoint lags: retried after later applies */
    int rv = raft_compact(n->raft, k);
    if (rv) {
        LOG_DEBUG("snapshot: compaction to %" PRIu64 " refused: %s", k, err_str(rv));
        return;
    }
    n->m.compactions++;
    n->bytes_since_compact = 0;
}

void node_compact_on_ready(struct node *n, const struct raft_ready *rd)
{
    (void)n;
    if (!rd->compact_to) return;
    if (rd->snapshot_reset)
        LOG_INFO("snapshot: raft log reset to the installed snapshot at %" PRIu64 " (term %" PRIu64
                 ")%s",
                 rd->compact_to, rd->snap_term,
                 rd->truncate_from ? ", every later entry discarded" : ", later entries kept");
    else /* the core's trace logs it too */
        LOG_DEBUG("snapshot: log compacted up to %" PRIu64 " (term %" PRIu64 ", %u members)",
                  rd->compact_to, rd->snap_term, rd->snap_conf ? rd->snap_conf->n : 0);
}
