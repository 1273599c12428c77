/* test_readindex.c — ReadIndex (thesis §6.4): answered only after a heartbeat round
 * acknowledged by a majority, only once an own-term entry is committed, forwarded by
 * followers, and failed when leadership is lost. */
#include "harness.h"

static size_t reads_of(struct tc *tc, raft_id id, uint64_t rid, bool *failed, raft_index *idx)
{
    size_t n = 0;
    struct tnode *t = tc_node(tc, id);
    for (size_t i = 0; i < t->n_reads; i++)
        if (t->reads[i].id == rid) {
            n++;
            if (failed) *failed = t->reads[i].failed;
            if (idx) *idx = t->reads[i].index;
        }
    return n;
}

static void test_readindex_requires_heartbeat_majority(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_index committed = tc_status(&tc, 1).commit_index;
    CHECK_EQ_U(raft_read_index(tc_raft(&tc, 1), 7), 0);
    tc_ready_all(&tc);
    CHECK_EQ_U(reads_of(&tc, 1, 7, NULL, NULL), 0); /* not before the round */
    CHECK(tc_count_net(&tc, RAFT_MSG_APPEND, 0) >= 2);
    tc.cut[2][1] = tc.cut[3][1] = true; /* no acknowledgements */
    tc_flush(&tc);
    CHECK_EQ_U(reads_of(&tc, 1, 7, NULL, NULL), 0);
    tc.cut[2][1] = false; /* one follower + the leader: a majority */
    tc_tick(&tc, 1, 2);
    tc_flush(&tc);
    bool failed = true;
    raft_index idx = 0;
    CHECK_EQ_U(reads_of(&tc, 1, 7, &failed, &idx), 1);
    CHECK(!failed);
    CHECK_EQ_U(idx, committed);
    tc_free(&tc);
}

static void test_readindex_old_acks_do_not_confirm_new_read(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc_tick(&tc, 1, 2); /* a heartbeat round whose acks are already in */
    tc_flush(&tc);
    raft_read_index(tc_raft(&tc, 1), 9);
    tc_ready_all(&tc);
    tc_drop_net(&tc); /* the new round is lost */
    tc_ready_all(&tc);
    CHECK_EQ_U(reads_of(&tc, 1, 9, NULL, NULL), 0);
    tc_tick(&tc, 1, 2);
    tc_flush(&tc);
    CHECK_EQ_U(reads_of(&tc, 1, 9, NULL, NULL), 1);
    tc_free(&tc);
}

static void test_readindex_single_voter_answers_at_once(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    CHECK_EQ_U(raft_read_index(tc_raft(&tc, 1), 3), 0);
    tc_ready_all(&tc);
    raft_index idx = 0;
    CHECK_EQ_U(reads_of(&tc, 1, 3, NULL, &idx), 1);
    CHECK_EQ_U(idx, tc_status(&tc, 1).commit_index);
    tc_free(&tc);
}

static void test_readindex_waits_for_own_term_commit(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1};
    for (raft_id id = 1; id <= 3; id++)
        tc_set_log(&tc, id, terms, 2, 1, 3);
    tc_start_all(&tc);
    tc.cut[2][1] = tc.cut[3][1] = true;
    tc.n[0].cfg.prevote = false;
    /* Win with the votes by hand, acks are cut: the no-op stays uncommitted. */
    tc_win_by_hand(&tc, 1, 2);
    CHECK_EQ_U(raft_read_index(tc_raft(&tc, 1), 5), 0);
    tc_flush(&tc);
    CHECK_EQ_U(reads_of(&tc, 1, 5, NULL, NULL), 0);
    tc.cut[2][1] = tc.cut[3][1] = false;
    tc_tick(&tc, 1, 2);
    tc_flush(&tc);
    raft_index idx = 0;
    CHECK_EQ_U(reads_of(&tc, 1, 5, NULL, &idx), 1);
    CHECK_EQ_U(idx, 3); /* the no-op of its term */
    tc_free(&tc);
}

static void test_readindex_fails_on_leadership_loss(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[2][1] = tc.cut[3][1] = true;
    raft_read_index(tc_raft(&tc, 1), 11);
    tc_flush(&tc);
    struct raft_msg up = tc_msg(RAFT_MSG_APPEND_RESP, 2, 1, 50, 0, 0);
    up.reject = true;
    raft_step(tc_raft(&tc, 1), &up); /* a higher term: it steps down */
    tc_ready_all(&tc);
    bool failed = false;
    CHECK_EQ_U(reads_of(&tc, 1, 11, &failed, NULL), 1);
    CHECK(failed);
    tc_free(&tc);
}

static void test_readindex_forwarded_read_fails_when_leader_steps_down(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[3][1] = true;
    raft_read_index(tc_raft(&tc, 2), 12);
    tc_ready_all(&tc);
    tc_deliver(&tc);     /* the leader has the request */
    tc.cut[2][1] = true; /* and no acknowledgement reaches it */
    tc_flush(&tc);
    struct raft_msg up = tc_msg(RAFT_MSG_APPEND_RESP, 3, 1, 50, 0, 0);
    up.reject = true;
    raft_step(tc_raft(&tc, 1), &up);
    tc_flush(&tc);
    bool failed = false;
    CHECK_EQ_U(reads_of(&tc, 2, 12, &failed, NULL), 1);
    CHECK(failed);
    tc_free(&tc);
}

static void test_readindex_forwarded_by_follower(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    CHECK_EQ_U(raft_read_index(tc_raft(&tc, 2), 21), 0);
    tc_flush(&tc);
    tc_tick(&tc, 1, 2);
    tc_flush(&tc);
    bool failed = true;
    raft_index idx = 0;
    CHECK_EQ_U(reads_of(&tc, 2, 21, &failed, &idx), 1);
    CHECK(!failed);
    CHECK_EQ_U(idx, tc_status(&tc, 1).commit_index);
    tc_free(&tc);
}

static void test_readindex_refused_without_known_leader(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_start_all(&tc);
    CHECK_EQ_U(raft_read_index(tc_raft(&tc, 2), 1), ERR_NOTLEADER);
    /* A non-leader asked directly answers "failed" so the asker retries elsewhere. */
    struct raft_msg m = tc_msg(RAFT_MSG_READINDEX, 3, 2, 1, 0, 0);
    m.ctx = 4;
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_READINDEX_RESP, 3);
    CHECK(resp && resp->reject && resp->ctx == 4);
    tc_free(&tc);
}

int main(void)
{
    RUN(test_readindex_requires_heartbeat_majority);
    RUN(test_readindex_old_acks_do_not_confirm_new_read);
    RUN(test_readindex_single_voter_answers_at_once);
    RUN(test_readindex_waits_for_own_term_commit);
    RUN(test_readindex_fails_on_leadership_loss);
    RUN(test_readindex_forwarded_by_follower);
    RUN(test_readindex_forwarded_read_fails_when_leader_steps_down);
    RUN(test_readindex_refused_without_known_leader);
    return check_report();
}
