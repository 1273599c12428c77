/* readindex.c — linearizable reads without log writes (thesis §6.4): the leader records its
 * commit index, confirms it is still leader with a heartbeat round acknowledged by a
 * majority, then answers. Needs an entry of its own term committed first. No I/O. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

static void raft_read_answer(struct raft *r, const struct raft_read_req *q, bool failed)
{
    if (q->from == r->cfg.id) {
        raft_read_out_push(r, q->id, q->index, failed);
        return;
    }
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_READINDEX_RESP;
    m.to = q->from;
    m.term = r->term;
    m.index = q->index;
    m.ctx = q->id;
    m.reject = failed;
    raft_send(r, &m);
}

/* Reads waiting for the first own-term commit get the commit index and one shared round. */
void raft_reads_on_own_commit(struct raft *r)
{
    if (!raft_own_term_committed(r)) return;
    bool any = false;
    for (size_t i = 0; i < r->n_reads; i++) {
        if (r->reads[i].ctx != 0) continue;
        if (!any) r->hb_seq++;
        any = true;
        r->reads[i].index = r->commit;
        r->reads[i].ctx = r->hb_seq;
    }
    if (any) {
        r->hb_pending = true;
        raft_reads_check(r);
    }
}

static uint32_t raft_reads_acks(const struct raft *r, uint64_t ctx)
{
    uint32_t acks = raft_conf_is_voter(&r->conf, r->cfg.id) ? 1 : 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].acked_ctx >= ctx && raft_conf_is_voter(&r->conf, r->prs[i].id)) acks++;
    return acks;
}

/* Answers, in order, every read whose heartbeat round a majority acknowledged. */
void raft_reads_check(struct raft *r)
{
    if (r->role != RAFT_LEADER) return;
    size_t done = 0;
    while (done < r->n_reads) {
        const struct raft_read_req *q = &r->reads[done];
        if (q->ctx == 0 || raft_reads_acks(r, q->ctx) < raft_quorum(r)) break;
        raft_read_answer(r, q, false);
        done++;
    }
    if (done == 0) return;
    memmove(r->reads, r->reads + done, (r->n_reads - done) * sizeof *r->reads);
    r->n_reads -= done;
}

void raft_reads_fail_all(struct raft *r)
{
    /* Remote askers hear it too, so their callers retry at once instead of timing out. */
    for (size_t i = 0; i < r->n_reads; i++)
        raft_read_answer(r, &r->reads[i], true);
    free(r->reads);
    r->reads = NULL;
    r->n_reads = 0;
}

int raft_reads_enqueue(struct raft *r, uint64_t id, raft_id from)
{
    ASSERT(r->role == RAFT_LEADER);
    struct raft_read_req q = {id, from, r->commit, 0};
    if (raft_bug(r, RAFT_BUG_READ_NO_CONFIRM)) {
        raft_read_answer(r, &q, false);
        return 0;
    }
    if (r->n_reads >= RAFT__READS_MAX) return ERR_BUSY;
    if (r->n_reads % 64 == 0) {
        struct raft_read_req *v = realloc(r->reads, (r->n_reads + 64) * sizeof *v);
        if (!v) return ERR_NOMEM;
        r->reads = v;
    }
    if (raft_own_term_committed(r)) {
        q.ctx = ++r->hb_seq;
        r->hb_pending = true;
    }
    r->reads[r->n_reads++] = q;
    raft_reads_check(r);
    return 0;
}

int raft_read_index(struct raft *r, uint64_t id)
{
    if (r->failed) return ERR_FAILED;
    if (r->role == RAFT_LEADER) return raft_reads_enqueue(r, id, r->cfg.id);
    if (r->role != RAFT_FOLLOWER || r->leader == 0) return ERR_NOTLEADER;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_READINDEX;
    m.to = r->leader;
    m.term = r->term;
    m.ctx = id;
    raft_send(r, &m);
    return 0;
}

int raft_recv_readindex(struct raft *r, const struct raft_msg *m)
{
    if (r->role == RAFT_LEADER && m->term <= r->term && raft_reads_enqueue(r, m->ctx, m->from) == 0)
        return 0;
    struct raft_read_req q = {m->ctx, m->from, 0, 0};
    raft_read_answer(r, &q, true);
    return 0;
}

int raft_recv_readindex_resp(struct raft *r, const struct raft_msg *m)
{
    raft_read_out_push(r, m->ctx, m->index, m->reject);
    return 0;
}
