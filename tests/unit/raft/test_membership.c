/* test_membership.c — single-server membership changes (thesis ch. 4): learners, automatic
 * promotion, one change at a time, no change before an own-term commit, removal of the
 * leader, and configuration rollback on truncation. */
#include "harness.h"

static struct raft_member member(raft_id id)
{
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = id;
    m.voter = true; /* ignored: every new member starts as a learner */
    m.info_len = 2;
    m.info[0] = 'n';
    m.info[1] = (uint8_t)('0' + id);
    return m;
}

static bool is_voter(struct tc *tc, raft_id on, raft_id id)
{
    const struct raft_member *m = raft_configuration_find(raft_configuration(tc_raft(tc, on)), id);
    return m && m->voter;
}

static uint32_t raft_conf_voters_count(const struct raft_configuration *c)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n; i++)
        n += c->members[i].voter;
    return n;
}

static void settle(struct tc *tc, raft_id leader, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        tc_tick(tc, leader, 1);
        tc_flush(tc);
    }
}

static void test_learner_does_not_vote_or_count_for_quorum(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    tc_cluster(&tc, 1);
    tc.cut[1][2] = true; /* the learner never catches up, so it is never promoted */
    struct raft_member m = member(2);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), 0);
    tc_flush(&tc);
    raft_index idx = 0;
    CHECK_EQ_U(tc_propose(&tc, 1, "x", &idx), 0);
    tc_flush(&tc);
    /* One voter: commits without the learner. */
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    CHECK(!is_voter(&tc, 1, 2));
    tc_free(&tc);
}

static void test_learner_never_campaigns(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    tc_cluster(&tc, 1);
    tc.cut[1][2] = false;
    struct raft_member m = member(2);
    raft_add_member(tc_raft(&tc, 1), &m, NULL);
    /* Node 2 catches up, but its successful acks are lost: it is never promoted. */
    for (int i = 0; i < 10; i++) {
        tc_tick(&tc, 1, 1);
        tc_ready_all(&tc);
        for (size_t j = 0; j < tc.n_net; j++)
            if (tc.net[j].type == RAFT_MSG_APPEND_RESP && !tc.net[j].reject) tc.net[j].to = 99;
        tc_deliver(&tc);
    }
    tc_ready_all(&tc);
    tc_drop_net(&tc);
    tc_stop(&tc, 1);
    struct raft_status st = tc_status(&tc, 2);
    CHECK(st.member && !st.voter);
    tc_tick(&tc, 2, 200);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_role(&tc, 2), RAFT_FOLLOWER);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_PREVOTE, 0) + tc_count_net(&tc, RAFT_MSG_VOTE, 0), 0);
    tc_free(&tc);
}

static void test_learner_promoted_when_caught_up(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 1);
    for (int i = 0; i < 20; i++)
        tc_propose(&tc, 1, "data", NULL);
    tc_flush(&tc);
    struct raft_member m = member(2);
    raft_index idx = 0;
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, &idx), 0);
    CHECK(!is_voter(&tc, 1, 2));
    settle(&tc, 1, 10);
    CHECK(is_voter(&tc, 1, 2));
    CHECK(is_voter(&tc, 2, 2));
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, tc_status(&tc, 1).last_index);
    /* Now a second one: the quorum is 2 of 2, then 2 of 3. */
    m = member(3);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), 0);
    settle(&tc, 1, 10);
    CHECK(is_voter(&tc, 1, 3));
    CHECK_EQ_U(raft_conf_voters_count(raft_configuration(tc_raft(&tc, 1))), 3);
    tc_free(&tc);
}

static void test_one_config_change_at_a_time(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 1);
    struct raft_member m2 = member(2), m3 = member(3);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m2, NULL), 0);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m3, NULL), ERR_BUSY);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 1), 2, NULL), ERR_BUSY);
    settle(&tc, 1, 10); /* the add and the promotion commit */
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m2, NULL), ERR_EXISTS);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m3, NULL), 0);
    tc_free(&tc);
}

static void test_config_change_refused_before_own_term_commit(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    /* Node 2 takes over in a new term; its no-op is not committed while it cannot reach
     * anyone. */
    tc_age_followers(&tc, 1, 30);
    tc.cut[2][1] = tc.cut[2][3] = true;
    tc_tick(&tc, 2, 30); /* prevote lost in the cut */
    tc_drop_net(&tc);
    tc.cut[2][1] = tc.cut[2][3] = false;
    tc.cut[1][2] = tc.cut[3][2] = false;
    tc_stop(&tc, 1);
    for (int i = 0; i < 60 && tc_role(&tc, 2) != RAFT_LEADER; i++) {
        tc_tick(&tc, 2, 1);
        tc_ready_all(&tc);
        /* Deliver only votes, never append acks, so the no-op stays uncommitted. */
        for (size_t j = 0; j < tc.n_net; j++)
            if (tc.net[j].type == RAFT_MSG_APPEND || tc.net[j].type == RAFT_MSG_APPEND_RESP)
                tc.net[j].to = 99;
        tc_deliver(&tc);
        tc_ready_all(&tc);
        for (size_t j = 0; j < tc.n_net; j++)
            if (tc.net[j].type == RAFT_MSG_APPEND || tc.net[j].type == RAFT_MSG_APPEND_RESP)
                tc.net[j].to = 99;
        tc_deliver(&tc);
    }
    CHECK_EQ_U(tc_role(&tc, 2), RAFT_LEADER);
    struct raft_member m4 = member(4);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 2), &m4, NULL), ERR_BUSY);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 2), 1, NULL), ERR_BUSY);
    tc_flush(&tc); /* acks arrive: the no-op commits */
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 2), 1, NULL), 0);
    tc_free(&tc);
}

static void test_change_refused_on_follower(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    struct raft_member m = member(4);
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 2), &m, NULL), ERR_NOTLEADER);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 2), 3, NULL), ERR_NOTLEADER);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 1), 7, NULL), ERR_NOTFOUND);
    tc_free(&tc);
}

static void test_add_member_refuses_bad_members(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    struct raft *r = tc_raft(&tc, 1);
    struct raft_member m = member(0);
    CHECK_EQ_U(raft_add_member(r, &m, NULL), ERR_INVALID);
    CHECK_EQ_U(raft_add_member(r, NULL, NULL), ERR_INVALID);
    m = member(2);
    m.info_len = RAFT_MEMBER_INFO_MAX + 1;
    CHECK_EQ_U(raft_add_member(r, &m, NULL), ERR_INVALID);
    m = member(1);
    CHECK_EQ_U(raft_add_member(r, &m, NULL), ERR_EXISTS);
    /* Fill the configuration (learners that never answer, so never promoted). */
    for (raft_id id = 2; id <= RAFT_MAX_NODES; id++) {
        m = member(id);
        CHECK_EQ_U(raft_add_member(r, &m, NULL), 0);
        tc_flush(&tc);
    }
    CHECK_EQ_U(raft_configuration(r)->n, RAFT_MAX_NODES);
    m = member(RAFT_MAX_NODES + 1);
    CHECK_EQ_U(raft_add_member(r, &m, NULL), ERR_INVALID);
    tc_free(&tc);
}

static void test_last_voter_cannot_be_removed(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 1), 1, NULL), ERR_INVALID);
    tc_free(&tc);
}

static void test_removed_follower_stops_campaigning(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 1), 3, NULL), 0);
    settle(&tc, 1, 5);
    CHECK(!tc_status(&tc, 3).member);
    CHECK(tc_status(&tc, 1).member);
    tc_drop_net(&tc);
    tc.cut[1][3] = true;
    tc_tick(&tc, 3, 200);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_PREVOTE, 0) + tc_count_net(&tc, RAFT_MSG_VOTE, 0), 0);
    tc_free(&tc);
}

static void test_removed_leader_steps_down_after_commit(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc_node(&tc, 1)->manual_persist = false;
    tc.cut[1][2] = tc.cut[1][3] = true; /* hold the removal back */
    raft_index idx = 0;
    CHECK_EQ_U(raft_remove_member(tc_raft(&tc, 1), 1, &idx), 0);
    tc_flush(&tc);
    /* Appended, not committed: still leading a configuration it is not part of. */
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    CHECK(!tc_status(&tc, 1).member);
    CHECK_EQ_U(tc_propose(&tc, 1, "x", NULL), ERR_BUSY);
    tc.cut[1][2] = tc.cut[1][3] = false;
    for (int i = 0; i < 10 && tc_role(&tc, 1) == RAFT_LEADER; i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_FOLLOWER);
    CHECK(tc_status(&tc, 2).commit_index >= idx);
    /* It never campaigns again; the two others elect a leader. */
    tc_tick(&tc, 1, 100);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_PREVOTE, 0), 0);
    raft_id leader = 0;
    for (int i = 0; i < 200 && !leader; i++) {
        tc_tick(&tc, 2, 1);
        tc_tick(&tc, 3, 1);
        tc_flush(&tc);
        leader = tc_role(&tc, 2) == RAFT_LEADER ? 2 : tc_role(&tc, 3) == RAFT_LEADER ? 3 : 0;
    }
    CHECK(leader != 0);
    raft_index i2 = 0;
    if (leader) {
        CHECK_EQ_U(tc_propose(&tc, leader, "y", &i2), 0);
        tc_flush(&tc);
        CHECK_EQ_U(tc_status(&tc, leader).commit_index, i2);
    }
    tc_free(&tc);
}

static void test_config_takes_effect_when_appended_and_reverts_on_truncation(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    tc_set_log(&tc, 2, terms, 1, 2, 3);
    tc_start_all(&tc);
    struct raft_configuration c;
    tc_conf(&c, 2, 0); /* drops node 3 */
    struct raft_blob *b = NULL;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), 0);
    struct raft_entry e = {2, 2, RAFT_ENTRY_CONFIG, b};
    struct raft_msg m = tc_msg(RAFT_MSG_APPEND, 1, 2, 2, 1, 1);
    m.entries = &e;
    m.n_entries = 1;
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(raft_configuration(tc_raft(&tc, 2))->n, 2); /* appended = in effect */
    /* A new leader of term 3 overwrites index 2 with a no-op: back to three members. */
    struct raft_entry e2 = {3, 2, RAFT_ENTRY_NOOP, NULL};
    m = tc_msg(RAFT_MSG_APPEND, 3, 2, 3, 1, 1);
    m.entries = &e2;
    m.n_entries = 1;
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(raft_configuration(tc_raft(&tc, 2))->n, 3);
    raft_blob_unref(b);
    tc_free(&tc);
}

int main(void)
{
    RUN(test_learner_does_not_vote_or_count_for_quorum);
    RUN(test_learner_never_campaigns);
    RUN(test_learner_promoted_when_caught_up);
    RUN(test_one_config_change_at_a_time);
    RUN(test_config_change_refused_before_own_term_commit);
    RUN(test_change_refused_on_follower);
    RUN(test_add_member_refuses_bad_members);
    RUN(test_last_voter_cannot_be_removed);
    RUN(test_removed_follower_stops_campaigning);
    RUN(test_removed_leader_steps_down_after_commit);
    RUN(test_config_takes_effect_when_appended_and_reverts_on_truncation);
    return check_report();
}
