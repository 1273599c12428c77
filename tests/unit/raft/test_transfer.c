/* test_transfer.c — leadership transfer (thesis 3.10): the target takes over in the next term
 * even though every follower is within its leader lease; a lagging target is caught up
 * first; proposals and membership changes are refused while transferring; a dead target makes
 * the leader give up after an election timeout and resume; bad targets are refused. */
#include "harness.h"

static void settle(struct tc *tc, raft_id leader, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        tc_tick(tc, leader, 1);
        tc_flush(tc);
    }
}

static void test_transfer_to_up_to_date_follower(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_index idx;
    CHECK_EQ_U(tc_propose(&tc, 1, "a", &idx), 0);
    tc_flush(&tc);
    raft_term term = tc_status(&tc, 1).term;
    uint64_t prevotes = tc.sent_by_type[RAFT_MSG_PREVOTE];
    CHECK_EQ_U(raft_transfer_leadership(tc_raft(&tc, 1), 2), 0);
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 2);
    CHECK_EQ_U(tc_propose(&tc, 1, "refused", &idx), ERR_BUSY);
    /* Check-quorum is on and node 3 heard from node 1 just now: only the transfer flag gets
     * node 2 its vote, and node 1's. */
    tc_flush(&tc);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_TIMEOUT_NOW], 1);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_PREVOTE], prevotes);
    CHECK_EQ_U(tc_role(&tc, 2), RAFT_LEADER);
    CHECK_EQ_U(tc_status(&tc, 2).term, term + 1);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_FOLLOWER);
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 0);
    CHECK_EQ_U(tc_status(&tc, 1).leader, 2);
    CHECK_EQ_U(tc_propose(&tc, 2, "b", &idx), 0);
    tc_flush(&tc);
    settle(&tc, 2, 2);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    tc_free(&tc);
}

/* Without the transfer flag, a follower in its lease ignores the vote request. */
static void test_transfer_flag_passes_the_lease(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    struct raft_status st = tc_status(&tc, 3);
    struct raft_msg v =
        tc_msg(RAFT_MSG_VOTE, 2, 3, st.term + 1, st.last_index, tc_status(&tc, 1).term);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 3), &v), 0);
    CHECK_EQ_U(tc_status(&tc, 3).term, st.term); /* ignored */
    v.transfer = true;
    CHECK_EQ_U(raft_step(tc_raft(&tc, 3), &v), 0);
    CHECK_EQ_U(tc_status(&tc, 3).term, st.term + 1);
    CHECK_EQ_U(tc_status(&tc, 3).vote, 2);
    tc_free(&tc);
}

static void test_lagging_target_is_caught_up_first(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[1][3] = true;
    raft_index idx = 0;
    for (int i = 0; i < 5; i++)
        CHECK_EQ_U(tc_propose(&tc, 1, "x", &idx), 0);
    tc_flush(&tc);
    CHECK(tc_status(&tc, 3).last_index < idx);
    CHECK_EQ_U(raft_transfer_leadership(tc_raft(&tc, 1), 3), 0);
    tc_flush(&tc);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_TIMEOUT_NOW], 0); /* not before it has the log */
    tc.cut[1][3] = false;
    settle(&tc, 1, 12);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_TIMEOUT_NOW], 1);
    CHECK_EQ_U(tc_role(&tc, 3), RAFT_LEADER);
    CHECK(tc_status(&tc, 3).last_index > idx); /* its own no-op after everything */
    tc_free(&tc);
}

/* The hand-over target is the voter with the highest match; followers have none. */
static void test_transfer_candidate_prefers_the_longest_log(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[1][2] = true;
    raft_index idx = 0;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_U(tc_propose(&tc, 1, "x", &idx), 0);
    tc_flush(&tc);
    CHECK_EQ_U(raft_transfer_candidate(tc_raft(&tc, 1)), 3);
    CHECK_EQ_U(raft_transfer_candidate(tc_raft(&tc, 2)), 0);
    tc.cut[1][2] = false;
    tc.cut[1][3] = true;
    settle(&tc, 1, 12);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_U(tc_propose(&tc, 1, "y", &idx), 0);
    tc_flush(&tc);
    CHECK_EQ_U(raft_transfer_candidate(tc_raft(&tc, 1)), 2);
    tc_free(&tc);
}

static void test_dead_target_aborts_and_leader_resumes(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc_stop(&tc, 3);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(raft_transfer_leadership(tc_raft(&tc, 1), 3), 0);
    raft_index idx;
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = 4;
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), ERR_BUSY);
    /* Still transferring one tick before the election timeout. */
    for (unsigned i = 0; i + 1 < tc.n[0].cfg.election_ticks_max; i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 3);
    CHECK_EQ_U(tc_propose(&tc, 1, "refused", &idx), ERR_BUSY);
    tc_tick(&tc, 1, 1);
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 0);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    CHECK_EQ_U(tc_status(&tc, 1).term, st.term);
    CHECK_EQ_U(tc_propose(&tc, 1, "ok", &idx), 0);
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    tc_free(&tc);
}

static void test_transfer_bad_targets(void)
{
    struct tc tc;
    tc_init(&tc, 4);
    tc_start_all(&tc);
    tc.cut[1][4] = true; /* node 4 stays a learner */
    struct raft_configuration c;
    tc_conf(&c, 3, 1);
    CHECK_EQ_U(raft_bootstrap(tc_raft(&tc, 1), &c), 0);
    tc_flush(&tc);
    tc_elect(&tc, 1);
    tc_flush(&tc);
    struct raft *l = tc_raft(&tc, 1);
    CHECK_EQ_U(raft_transfer_leadership(l, 1), ERR_INVALID);  /* itself */
    CHECK_EQ_U(raft_transfer_leadership(l, 0), ERR_INVALID);  /* none */
    CHECK_EQ_U(raft_transfer_leadership(l, 4), ERR_INVALID);  /* a learner */
    CHECK_EQ_U(raft_transfer_leadership(l, 9), ERR_NOTFOUND); /* not a member */
    CHECK_EQ_U(raft_transfer_leadership(tc_raft(&tc, 2), 3), ERR_NOTLEADER);
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 0);
    tc.cut[1][2] = true; /* keeps the transfer to 2 pending */
    tc_tick(&tc, 1, 1);
    raft_index idx;
    CHECK_EQ_U(tc_propose(&tc, 1, "x", &idx), 0);
    tc_flush(&tc);
    CHECK_EQ_U(raft_transfer_leadership(l, 2), 0);
    CHECK_EQ_U(raft_transfer_leadership(l, 2), 0);        /* the same one: fine */
    CHECK_EQ_U(raft_transfer_leadership(l, 3), ERR_BUSY); /* another one */
    CHECK_EQ_U(tc_status(&tc, 1).transferee, 2);
    tc_free(&tc);
}

/* A TIMEOUT_NOW of an older term (a late duplicate) is ignored. */
static void test_stale_timeout_now_ignored(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    struct raft_status st = tc_status(&tc, 2);
    struct raft_msg m = tc_msg(RAFT_MSG_TIMEOUT_NOW, 1, 2, st.term - 1, st.last_index, 0);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 2), &m), 0);
    CHECK_EQ_U(tc_role(&tc, 2), RAFT_FOLLOWER);
    CHECK_EQ_U(tc_status(&tc, 2).term, st.term);
    /* And the core's own request to its caller is never a peer message. */
    struct raft_msg s = tc_msg(RAFT_MSG_SNAPSHOT, 1, 2, st.term, 5, 1);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 2), &s), ERR_INVALID);
    tc_free(&tc);
}

int main(void)
{
    RUN(test_transfer_to_up_to_date_follower);
    RUN(test_transfer_flag_passes_the_lease);
    RUN(test_lagging_target_is_caught_up_first);
    RUN(test_transfer_candidate_prefers_the_longest_log);
    RUN(test_dead_target_aborts_and_leader_resumes);
    RUN(test_transfer_bad_targets);
    RUN(test_stale_timeout_now_ignored);
    return check_report();
}
