/* metrics.c — GET /metrics in the Prometheus text format (version 0.0.4). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsm.h"
#include "lathist.h"
#include "http.h"
#include "node.h"
#include "storage.h"
#include "transport.h"

struct metrics_buf {
    char *data;
    size_t len, cap;
    bool oom;
};

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)(n > 0 ? n : 0)) * 2 + 256;
        char *nd = realloc(b->data, cap);
        if (!nd) {
            b->oom = true;
            return;
        }
        b->data = nd;
        b->cap = cap;
    }
}

static void metrics_one(struct metrics_buf *b, const char *name, const char *type, const char *help,
                        unsigned long long value)
{
    metrics_printf(b, "# HELP raftfs_%s %s\n# TYPE raftfs_%s %s\nraftfs_%s %llu\n", name, help,
                   name, type, name, value);
}

/* A lathist as a Prometheus histogram in seconds, plus a _max_seconds gauge (the worst case
 * since start: what a p99 hides and what latency spikes are matched against). */
static void metrics_hist(struct metrics_buf *b, const char *name, const char *help,
                         const struct lathist *h)
{
    metrics_printf(b, "# HELP raftfs_%s %s\n# TYPE raftfs_%s histogram\n", name, help, name);
    unsigned long long cum = 0;
    for (size_t i = 0; i <= LATHIST_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->n[i], memory_order_relaxed);
        if (i < LATHIST_BUCKETS)
            metrics_printf(b, "raftfs_%s_bucket{le=\"%g\"} %llu\n", name, lathist_le_us[i] / 1e6,
                           cum);
        else
            metrics_printf(b, "raftfs_%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
    }
    metrics_printf(b, "raftfs_%s_sum %g\nraftfs_%s_count %llu\n", name,
                   (double)atomic_load(&h->sum_us) / 1e6, name, cum);
    metrics_printf(b,
                   "# HELP raftfs_%s_max Slowest one since start (seconds).\n"
                   "# TYPE raftfs_%s_max gauge\nraftfs_%s_max %g\n",
                   name, name, name, (double)atomic_load(&h->max_us) / 1e6);
}

static void metrics_lat(struct node *n, struct metrics_buf *b)
{
    const struct lathist *batch, *ckpt;
    store_writer_hists(n->writer, &batch, &ckpt);
    metrics_hist(b, "writer_batch_seconds",
                 "Storage thread: one group-commit batch (transaction, commit, fsync).", batch);
    metrics_hist(b, "bdb_checkpoint_seconds",
                 "Storage thread: one BDB checkpoint (no batch is written meanwhile).", ckpt);
    if (!n->lat) return;
    metrics_hist(b, "loop_busy_seconds",
                 "Event loop: one iteration's work, from the poll's return to the next poll.",
                 &n->lat->loop_busy);
    metrics_hist(b, "persist_seconds",
                 "A write handed to the storage thread until its completion reaches the loop.",
                 &n->lat->persist);
    metrics_hist(b, "apply_seconds", "The file store applies of one ready batch.", &n->lat->apply);
    metrics_hist(b, "commit_wait_seconds",
                 "An entry appended on this node until its commit is known here.", &n->lat->commit);
}

static void metrics_raft(struct node *n, struct metrics_buf *b)
{
    struct raft_status st;
    raft_status(n->raft, &st);
    metrics_one(b, "term", "gauge", "Current Raft term.", st.term);
    metrics_printf(b, "# HELP raftfs_state Raft role of this node (1 for the current one).\n"
                      "# TYPE raftfs_state gauge\n");
    for (int r = RAFT_FOLLOWER; r <= RAFT_LEADER; r++)
        metrics_printf(b, "raftfs_state{state=\"%s\"} %d\n", raft_role_str((enum raft_role)r),
                       st.role == (enum raft_role)r);
    metrics_one(b, "commit_index", "gauge", "Highest log index known committed.", st.commit_index);
    metrics_one(b, "applied_index", "gauge", "Highest log index applied to files/.", n->applied);
    metrics_one(b, "last_log_index", "gauge", "Last index in the local log.", st.last_index);
    metrics_one(b, "proposals_total", "counter", "Entries proposed by this node as leader.",
                n->m.proposals);
    metrics_one(b, "proposals_failed_total", "counter", "Client writes refused or lost.",
                n->m.proposals_failed);
    metrics_one(b, "forwarded_total", "counter", "Client writes forwarded to the leader.",
                n->m.forwarded);
    metrics_one(b, "applied_entries_total", "counter", "Entries applied since start.",
                n->m.applied_entries);
    metrics_one(b, "reads_linearizable_total", "counter", "Reads confirmed through ReadIndex.",
                n->m.reads_linearizable);
    metrics_one(b, "reads_stale_total", "counter", "Reads served with ?stale=true.",
                n->m.reads_stale);
    metrics_one(b, "leader_changes_total", "counter", "Leader changes seen.", n->m.leader_changes);
}

static void metrics_snap(struct node *n, struct metrics_buf *b)
{
    struct raft_status st;
    raft_status(n->raft, &st);
    metrics_one(b, "snapshot_index", "gauge", "The log starts after this index (compaction point).",
                st.snapshot_index);
    metrics_one(b, "compactions_total", "counter", "Log compactions (snapshot point moved).",
                n->m.compactions);
    metrics_one(b, "snapshots_sent_total", "counter",
                "Snapshot streams this node sent that the follower installed.",
                n->m.snapshots_sent);
    metrics_one(b, "snapshots_failed_total", "counter", "Outgoing snapshot streams aborted.",
                n->m.snapshots_failed);
    metrics_one(b, "snapshots_received_total", "counter", "Snapshot streams received completely.",
                n->m.snapshots_received);
    metrics_one(b, "snapshots_installed_total", "counter",
                "Snapshots installed into this node's file store.", n->m.snapshots_installed);
    metrics_one(b, "snapshot_bytes_sent_total", "counter", "Snapshot stream bytes sent.",
                n->m.snapshot_bytes_sent);
    metrics_one(b, "snapshot_bytes_received_total", "counter", "Snapshot stream bytes received.",
                n->m.snapshot_bytes_received);
}

static void metrics_store(struct node *n, struct metrics_buf *b)
{
    struct store_stats s;
    store_stats(n->store, &s);
    metrics_one(b, "fsyncs_total", "counter", "Durable log writes (one fsync each).", s.fsyncs);
    metrics_one(b, "persist_batches_total", "counter", "Ready batches handed to storage.",
                n->m.persist_batches);
    metrics_one(b, "log_bytes_written_total", "counter", "Log bytes written.", s.bytes_written);
    metrics_one(b, "log_entries_compacted_total", "counter", "Log entries deleted by compaction.",
                s.entries_compacted);
    metrics_printf(b, "# HELP raftfs_fsync_seconds Latency of one group-commit fsync.\n"
                      "# TYPE raftfs_fsync_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i < STORE_FSYNC_BUCKETS; i++) {
        cum += s.fsync_hist[i];
        metrics_printf(b, "raftfs_fsync_seconds_bucket{le=\"%g\"} %llu\n",
                       store_fsync_bucket_le_us[i] / 1e6, cum);
    }
    cum += s.fsync_hist[STORE_FSYNC_BUCKETS];
    metrics_printf(b, "raftfs_fsync_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    metrics_printf(b, "raftfs_fsync_seconds_sum %g\nraftfs_fsync_seconds_count %llu\n",
                   s.fsync_us_sum / 1e6, cum);
}

static void metrics_fsm(struct node *n, struct metrics_buf *b)
{
    struct fsm_stats s;
    fsm_get_stats(n->fsm, &s);
    metrics_one(b, "fsm_inodes_created_total", "counter",
                "Inodes created on the apply path (the spare pool was empty).", s.inodes_created);
    metrics_one(b, "fsm_inodes_precreated_total", "counter",
                "Spare inodes created ahead by the background thread.", s.inodes_precreated);
    metrics_one(b, "fsm_inodes_recycled_total", "counter",
                "Replaced or deleted inodes kept as spares.", s.inodes_recycled);
    metrics_one(b, "fsm_overwrites_in_place_total", "counter",
                "Overwrites written into the file's own inode (no rename).", s.overwrites_in_place);
    metrics_one(b, "fsm_spare_inodes", "gauge", "Spare inodes ready now.", s.spares);
    metrics_printf(b, "# HELP raftfs_fsm_checkpoint_seconds Duration of one file store "
                      "checkpoint (syncfs and its BDB commit).\n"
                      "# TYPE raftfs_fsm_checkpoint_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i < FSM_CKPT_BUCKETS; i++) {
        cum += s.ckpt_hist[i];
        metrics_printf(b, "raftfs_fsm_checkpoint_seconds_bucket{le=\"%g\"} %llu\n",
                       fsm_ckpt_bucket_le_ms[i] / 1e3, cum);
    }
    cum += s.ckpt_hist[FSM_CKPT_BUCKETS];
    metrics_printf(b, "raftfs_fsm_checkpoint_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    metrics_printf(
        b, "raftfs_fsm_checkpoint_seconds_sum %g\nraftfs_fsm_checkpoint_seconds_count %llu\n",
        s.ckpt_us_sum / 1e6, cum);
}

static void metrics_net(struct node *n, struct metrics_buf *b)
{
    struct transport_stats t;
    transport_stats(n->tr, &t);
    metrics_one(b, "peer_bytes_in_total", "counter", "Bytes received from peers.", t.bytes_in);
    metrics_one(b, "peer_bytes_out_total", "counter", "Bytes sent to peers.", t.bytes_out);
    metrics_one(b, "peer_connections", "gauge", "Connected outbound peer links.",
                t.connected_peers);
}

static void metrics_http(struct node *n, struct metrics_buf *b)
{
    char probe[1];
    size_t need = http_stats_prometheus(n->http, probe, sizeof probe);
    char *text = malloc(need + 1);
    if (!text) {
        b->oom = true;
        return;
    }
    http_stats_prometheus(n->http, text, need + 1);
    metrics_printf(b, "%s", text);
    free(text);
}

void node_metrics_reply(struct node *n, struct http_req *req)
{
    struct metrics_buf b = {0};
    metrics_raft(n, &b);
    metrics_store(n, &b);
    metrics_snap(n, &b);
    metrics_fsm(n, &b);
    metrics_lat(n, &b);
    metrics_net(n, &b);
    metrics_http(n, &b);
    if (b.oom || !b.data) {
        free(b.data);
        http_reply_error(req, 503, "no_memory", "out of memory");
        return;
    }
    http_reply_text(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    free(b.data);
}
