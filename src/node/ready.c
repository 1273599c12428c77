/* ready.c — turns the core's ready batches into durable writes (on the storage thread),
 * sends, applies and client answers. Invariant: a message the core marked "after persist"
 * leaves only once every write handed out before it is durable. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"
#include "log.h"
#include "node.h"
#include "rassert.h"
#include "storage.h"
#include "transport.h"

/* Messages waiting for write `seq` to become durable. */
struct node_outq {
    uint64_t seq;
    size_t n;
    struct raft_msg *msgs; /* deep copies: entries arrays owned, one blob ref each */
    struct node_outq *next;
};

static void ready_msgs_free(struct raft_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < msgs[i].n_entries; j++)
            raft_blob_unref(msgs[i].entries[j].data);
        free(msgs[i].entries);
    }
    free(msgs);
}

/* Deep copy so the messages outlive raft_advance(); blobs are shared by reference. */
static struct raft_msg *ready_msgs_copy(const struct raft_msg *src, size_t n)
{
    struct raft_msg *dst = calloc(n, sizeof *dst);
    if (!dst) return NULL;
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        dst[i].entries = NULL;
        if (src[i].n_entries == 0) continue;
        dst[i].entries = calloc(src[i].n_entries, sizeof *dst[i].entries);
        if (!dst[i].entries) {
            dst[i].n_entries = 0;
            ready_msgs_free(dst, i + 1);
            return NULL;
        }
        for (uint32_t j = 0; j < src[i].n_entries; j++) {
            dst[i].entries[j] = src[i].entries[j];
            raft_blob_ref(dst[i].entries[j].data);
        }
    }
    return dst;
}

static void ready_send(struct node *n, const struct raft_msg *msgs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (msgs[i].type == RAFT_MSG_SNAPSHOT) { /* for us: stream the file store */
            node_snap_on_request(n, &msgs[i]);
            continue;
        }
        int rv = transport_send(n->tr, &msgs[i]);
        if (rv && rv != ERR_BUSY && rv != ERR_NOTFOUND)
            LOG_DEBUG("send to %016llx: %s", (unsigned long long)msgs[i].to, err_str(rv));
    }
}

static void ready_outq_push(struct node *n, uint64_t seq, const struct raft_msg *msgs, size_t count)
{
    struct node_outq *q = calloc(1, sizeof *q);
    struct raft_msg *copy = q ? ready_msgs_copy(msgs, count) : NULL;
    if (!copy) {
        /* Dropping messages is always safe for Raft (they are retried); losing memory is not
         * a reason to send them early. */
        free(q);
        LOG_WARN("out of memory: dropped %zu messages", count);
        return;
    }
    q->seq = seq;
    q->n = count;
    q->msgs = copy;
    if (n->outq_tail)
        n->outq_tail->next = q;
    else
        n->outq_head = q;
    n->outq_tail = q;
}

void node_outq_free_all(struct node *n)
{
    while (n->outq_head) {
        struct node_outq *q = n->outq_head;
        n->outq_head = q->next;
        ready_msgs_free(q->msgs, q->n);
        free(q);
    }
    n->outq_tail = NULL;
}

static int ready_submit(struct node *n, const struct raft_ready *rd)
{
    struct store_write job;
    memset(&job, 0, sizeof job);
    job.seq = rd->persist_seq;
    job.hardstate_changed = rd->hardstate_changed;
    job.term = rd->term;
    job.vote = rd->vote;
    job.commit = rd->commit;
    job.truncate_from = rd->truncate_from;
    if (rd->compact_to) {
        job.compact_to = rd->compact_to;
        job.snap_term = rd->snap_term;
        job.snap_conf = raft_blob_ref(rd->snap_conf_blob);
    }
    if (rd->n_entries) {
        job.entries = calloc(rd->n_entries, sizeof *job.entries);
        if (!job.entries) return ERR_NOMEM;
        for (size_t i = 0; i < rd->n_entries; i++) {
            job.entries[i] = rd->entries[i];
            raft_blob_ref(job.entries[i].data);
        }
        job.n_entries = rd->n_entries;
    }
    node_lat_submitted(n, rd->persist_seq, rd->entries, rd->n_entries);
    int rv = store_writer_submit(n->writer, &job);
    if (rv) return rv;
    ASSERT(rd->persist_seq > n->last_submitted_seq);
    n->last_submitted_seq = rd->persist_seq;
    n->m.persist_batches++;
    return 0;
}

#define READY_APPLY_CHUNK 64 /* entries per file-store transaction (fsm_apply_batch) */

static void ready_apply(struct node *n, const struct raft_ready *rd)
{
    node_lat_committed(n, rd->committed, rd->n_committed);
    uint64_t t0 = rd->n_committed ? lathist_now_us() : 0;
    size_t i = 0;
    while (i < rd->n_committed && rd->committed[i].index <= fsm_applied(n->fsm))
        n->applied = rd->committed[i++].index; /* replayed after a restart: already in files/ */
    while (i < rd->n_committed && !n->stopping) {
        const struct raft_entry *es = &rd->committed[i];
        size_t cnt = rd->n_committed - i;
        if (cnt > READY_APPLY_CHUNK) cnt = READY_APPLY_CHUNK;
        struct fsm_result res[READY_APPLY_CHUNK];
        int rv = fsm_apply_batch(n->fsm, es, cnt, res);
        if (rv) {
            char why[160];
            snprintf(why, sizeof why, "applying entries %llu-%llu: %s",
                     (unsigned long long)es[0].index, (unsigned long long)es[cnt - 1].index,
                     err_str(rv));
            node_fail(n, why);
            return;
        }
        for (size_t k = 0; k < cnt; k++) {
            n->applied = es[k].index;
            n->m.applied_entries++;
            n->bytes_since_compact += es[k].data ? es[k].data->len : 0;
            node_ops_on_applied(n, &es[k], &res[k]);
        }
        i += cnt;
    }
    if (t0 && n->lat) lathist_add(&n->lat->apply, lathist_now_us() - t0);
}

static void ready_soft_state(struct node *n, const struct raft_ready *rd)
{
    if (rd->hardstate_changed && rd->term != n->term) {
        n->term = rd->term;
        log_set_term(rd->term);
    }
    if (!rd->soft_changed) return;
    bool leader_changed = rd->leader != n->leader;
    if (rd->role != n->role)
        LOG_INFO("role %s -> %s", raft_role_str(n->role), raft_role_str(rd->role));
    n->role = rd->role;
    if (leader_changed) {
        char name[CONFIG_ID_MAX] = "none", http[CONFIG_ADDR_MAX] = "";
        if (rd->leader) node_member_http(n, rd->leader, name, sizeof name, http, sizeof http);
        LOG_INFO("leader is now %s", name);
        n->leader = rd->leader;
        n->m.leader_changes++;
    }
    if (leader_changed || rd->role != RAFT_LEADER) node_ops_on_leader_change(n);
    node_snap_on_role(n);
}

/* One batch, in the order the core's contract requires (include/raft.h). */
static void ready_one(struct node *n)
{
    struct raft_ready rd;
    raft_ready(n->raft, &rd);
    if (rd.persist_seq) {
        int rv = ready_submit(n, &rd);
        if (rv) {
            node_fail(n, "cannot hand a write to the storage thread");
            return;
        }
        if (rd.n_msgs_after_persist)
            ready_outq_push(n, rd.persist_seq, rd.msgs_after_persist, rd.n_msgs_after_persist);
    } else if (rd.n_msgs_after_persist) {
        if (n->last_submitted_seq > n->last_persisted_seq)
            ready_outq_push(n, n->last_submitted_seq, rd.msgs_after_persist,
                            rd.n_msgs_after_persist);
        else
            ready_send(n, rd.msgs_after_persist, rd.n_msgs_after_persist);
    }
    node_compact_on_ready(n, &rd);
    ready_send(n, rd.msgs, rd.n_msgs);
    ready_soft_state(n, &rd);
    ready_apply(n, &rd);
    if (rd.n_committed) node_compact_maybe(n);
    for (size_t i = 0; i < rd.n_reads; i++)
        node_ops_on_read_state(n, &rd.reads[i]);
    raft_advance(n->raft, &rd);
}

void node_ready_drain(struct node *n)
{
    /* Bounded: each batch empties what the core had; a fresh input arrives only from the
     * loop, so a handful of rounds always suffices. */
    for (int round = 0; round < 16 && !n->stopping && raft_has_ready(n->raft); round++)
        ready_one(n);
    if (raft_failed(n->raft)) node_fail(n, "the raft core entered its failed state");
    node_sync_peers(n);
    node_ops_after_apply(n);
}

void node_persist_done_cb(void *ctx, uint64_t seq, int err)
{
    struct node *n = ctx;
    if (err) {
        char why[128];
        snprintf(why, sizeof why, "durable write %llu failed: %s", (unsigned long long)seq,
                 err_str(err));
        node_fail(n, why);
        return;
    }
    ASSERT(seq > n->last_persisted_seq);
    n->last_persisted_seq = seq;
    node_lat_persisted(n, seq);
    while (n->outq_head && n->outq_head->seq <= seq) {
        struct node_outq *q = n->outq_head;
        n->outq_head = q->next;
        if (!n->outq_head) n->outq_tail = NULL;
        ready_send(n, q->msgs, q->n);
        ready_msgs_free(q->msgs, q->n);
        free(q);
    }
    raft_persisted(n->raft, seq);
}
