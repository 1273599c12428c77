/* test_election.c — leader election rules (Raft §5.2, §5.4.1; thesis §9.6 PreVote, §6.2
 * CheckQuorum), each test named after the rule it checks. */
#include "harness.h"

static void test_bootstrap_single_voter_elects_itself_without_messages(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_start_all(&tc);
    struct raft_configuration c;
    tc_conf(&c, 1, 0);
    CHECK_EQ_U(raft_bootstrap(tc_raft(&tc, 1), &c), 0);
    CHECK_EQ_U(raft_bootstrap(tc_raft(&tc, 1), &c), ERR_EXISTS);
    tc_flush(&tc);
    tc_tick(&tc, 1, 25);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE); /* until its own vote is durable */
    tc_flush(&tc);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    for (int t = 0; t < RAFT_MSG__COUNT; t++)
        CHECK_EQ_U(tc.sent_by_type[t], 0);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(st.last_index, 2); /* config + the leader's no-op */
    CHECK_EQ_U(st.commit_index, 2);
    CHECK_EQ_U(tc_node(&tc, 1)->applied, 2);
    tc_free(&tc);
}

static void test_bootstrap_refuses_config_without_self_voter(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    tc_start_all(&tc);
    struct raft_configuration c;
    tc_conf(&c, 1, 1); /* node 2 is a learner */
    CHECK_EQ_U(raft_bootstrap(tc_raft(&tc, 2), &c), ERR_INVALID);
    tc_free(&tc);
}

static void test_candidate_counts_own_vote_only_once_durable(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc.n[0].cfg.prevote = false;
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 1, 1);
    tc_start_all(&tc);
    tc_node(&tc, 1)->manual_persist = true;
    tc_tick(&tc, 1, 25);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE);
    /* A crash now loses the self-vote of term 2: the restarted node must not have led. */
    tc_stop(&tc, 1);
    tc_start(&tc, 1);
    CHECK_EQ_U(tc_status(&tc, 1).term, 1);
    tc_node(&tc, 1)->manual_persist = true;
    tc_tick(&tc, 1, 25);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE);
    CHECK(tc_persist(&tc, 1));
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    tc_free(&tc);
}

static void test_vote_only_for_up_to_date_log(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 2};
    tc_set_log(&tc, 1, terms, 3, 2, 3);
    tc_start_all(&tc);
    /* Candidate 2's last term is older: refused. */
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 3, 5, 1);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 1), &m), 0);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_VOTE_RESP, 2);
    CHECK(resp && resp->reject);
    CHECK_EQ_U(tc_status(&tc, 1).vote, 0);
    CHECK_EQ_U(tc_status(&tc, 1).term, 3); /* the higher term still wins */
    tc_drop_net(&tc);
    /* Same last term, shorter log: refused. */
    m = tc_msg(RAFT_MSG_VOTE, 3, 1, 3, 2, 2);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    resp = tc_find_net(&tc, RAFT_MSG_VOTE_RESP, 3);
    CHECK(resp && resp->reject);
    tc_drop_net(&tc);
    /* Equal log: granted. */
    m = tc_msg(RAFT_MSG_VOTE, 3, 1, 3, 3, 2);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    resp = tc_find_net(&tc, RAFT_MSG_VOTE_RESP, 3);
    CHECK(resp && !resp->reject);
    CHECK_EQ_U(tc_status(&tc, 1).vote, 3);
    tc_free(&tc);
}

static void test_vote_at_most_once_per_term(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 1, 3);
    tc_start_all(&tc);
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 2, 1, 1);
    raft_step(tc_raft(&tc, 1), &m);
    m = tc_msg(RAFT_MSG_VOTE, 3, 1, 2, 1, 1);
    raft_step(tc_raft(&tc, 1), &m);
    m = tc_msg(RAFT_MSG_VOTE, 2, 1, 2, 1, 1); /* a retry from the same candidate */
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_VOTE_RESP, 0), 3);
    for (size_t i = 0; i < tc.n_net; i++)
        CHECK(tc.net[i].reject == (tc.net[i].to == 3));
    CHECK_EQ_U(tc_status(&tc, 1).vote, 2);
    CHECK_EQ_U(tc_node(&tc, 1)->vote, 2); /* durable */
    tc_free(&tc);
}

static void test_vote_response_only_after_persist(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_start_all(&tc);
    tc_node(&tc, 1)->manual_persist = true;
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 2, 0, 0);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc.n_net, 0);              /* held back with the write */
    CHECK_EQ_U(tc_node(&tc, 1)->vote, 0); /* not durable yet */
    CHECK(tc_persist(&tc, 1));
    CHECK_EQ_U(tc_node(&tc, 1)->vote, 2);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_VOTE_RESP, 2);
    CHECK(resp && !resp->reject);
    tc_free(&tc);
}

static void test_candidate_requests_votes_only_after_persisting_term(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc.n[0].cfg.prevote = false;
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 1, 3);
    tc_start_all(&tc);
    tc_node(&tc, 1)->manual_persist = true;
    tc_tick(&tc, 1, 25);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_VOTE, 0), 0);
    CHECK(tc_persist(&tc, 1));
    CHECK_EQ_U(tc_node(&tc, 1)->term, 2);
    CHECK_EQ_U(tc_node(&tc, 1)->vote, 1);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_VOTE, 0), 2);
    tc_free(&tc);
}

static void test_higher_term_always_steps_down(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_term t = tc_status(&tc, 1).term;
    struct raft_msg m = tc_msg(RAFT_MSG_APPEND_RESP, 2, 1, t + 5, 0, 0);
    m.reject = true;
    raft_step(tc_raft(&tc, 1), &m);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(st.role, RAFT_FOLLOWER);
    CHECK_EQ_U(st.term, t + 5);
    CHECK_EQ_U(st.vote, 0);
    tc_free(&tc);
}

static void test_refused_vote_does_not_reset_election_timer(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc.n[0].cfg.prevote = false;
    tc.n[0].cfg.election_ticks_min = tc.n[0].cfg.election_ticks_max = 10;
    raft_term terms[] = {1, 1, 1};
    tc_set_log(&tc, 1, terms, 3, 1, 3);
    tc_start_all(&tc);
    tc_tick(&tc, 1, 9);
    /* An outdated candidate's request: refused, and our timer keeps running. */
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 5, 1, 1);
    raft_step(tc_raft(&tc, 1), &m);
    CHECK_EQ_U(tc_status(&tc, 1).term, 5);
    CHECK_EQ_U(tc_status(&tc, 1).vote, 0);
    tc_tick(&tc, 1, 1);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE);
    CHECK_EQ_U(tc_status(&tc, 1).term, 6);
    tc_free(&tc);
}

static void test_granted_vote_resets_election_timer(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc.n[0].cfg.prevote = false;
    tc.n[0].cfg.election_ticks_min = tc.n[0].cfg.election_ticks_max = 10;
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 1, 3);
    tc_start_all(&tc);
    tc_tick(&tc, 1, 9);
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 5, 1, 1);
    raft_step(tc_raft(&tc, 1), &m);
    CHECK_EQ_U(tc_status(&tc, 1).vote, 2);
    tc_tick(&tc, 1, 9);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_FOLLOWER);
    tc_tick(&tc, 1, 1);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_CANDIDATE);
    tc_free(&tc);
}

static void test_stale_term_vote_rejected_with_our_term(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 4, 3);
    tc_start_all(&tc);
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 3, 9, 3);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_VOTE_RESP, 2);
    CHECK(resp && resp->reject && resp->term == 4);
    CHECK_EQ_U(tc_status(&tc, 1).vote, 0);
    tc_free(&tc);
}

static void test_prevote_does_not_bump_term(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    for (raft_id id = 1; id <= 3; id++)
        tc_set_log(&tc, id, terms, 1, 1, 3);
    tc_start_all(&tc);
    tc.cut[1][2] = tc.cut[1][3] = true; /* its prevotes never arrive */
    tc_tick(&tc, 1, 25);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_PRECANDIDATE);
    tc_flush(&tc);
    tc_tick(&tc, 1, 100);
    tc_flush(&tc);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(st.term, 1); /* however often it tries */
    CHECK_EQ_U(st.vote, 0);
    /* A voter answering a prevote keeps its own term and vote. */
    struct raft_msg m = tc_msg(RAFT_MSG_PREVOTE, 1, 2, 2, 1, 1);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_PREVOTE_RESP, 1);
    CHECK(resp && !resp->reject && resp->term == 2);
    CHECK_EQ_U(tc_status(&tc, 2).term, 1);
    CHECK_EQ_U(tc_status(&tc, 2).vote, 0);
    tc_free(&tc);
}

static void test_prevote_denied_while_leader_alive(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_term t = tc_status(&tc, 1).term;
    raft_index last = tc_status(&tc, 2).last_index;
    struct raft_msg m = tc_msg(RAFT_MSG_PREVOTE, 3, 2, t + 1, last, t);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_PREVOTE_RESP, 3);
    CHECK(resp && resp->reject);
    tc_drop_net(&tc);
    /* Silence from the leader for the minimum election timeout: granted. */
    tc_tick(&tc, 2, 9);
    CHECK_EQ_U(tc_role(&tc, 2), RAFT_FOLLOWER);
    tc_tick(&tc, 2, 1);
    tc_drop_net(&tc);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    resp = tc_find_net(&tc, RAFT_MSG_PREVOTE_RESP, 3);
    CHECK(resp && !resp->reject);
    tc_free(&tc);
}

static void test_partitioned_node_rejoining_does_not_depose_leader(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_term t = tc_status(&tc, 1).term;
    for (raft_id i = 1; i <= 3; i++) {
        tc.cut[3][i] = true;
        tc.cut[i][3] = true;
    }
    for (int i = 0; i < 100; i++) {
        tc_tick(&tc, 1, 1);
        tc_tick(&tc, 2, 1);
        tc_tick(&tc, 3, 1);
        tc_flush(&tc);
    }
    CHECK_EQ_U(tc_status(&tc, 3).term, t); /* prevote kept it from inflating its term */
    memset(tc.cut, 0, sizeof tc.cut);
    for (int i = 0; i < 60; i++) {
        tc_tick(&tc, 1, 1);
        tc_tick(&tc, 2, 1);
        tc_tick(&tc, 3, 1);
        tc_flush(&tc);
    }
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    CHECK_EQ_U(tc_status(&tc, 1).term, t);
    CHECK_EQ_U(tc_status(&tc, 3).leader, 1);
    tc_free(&tc);
}

static void test_leader_stickiness_ignores_vote_requests(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc.n[2].cfg.prevote = false;
    tc_cluster(&tc, 3);
    raft_term t = tc_status(&tc, 1).term;
    raft_index last = tc_status(&tc, 2).last_index;
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 3, 2, t + 1, last, t);
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(tc_status(&tc, 2).term, t);
    CHECK_EQ_U(tc_status(&tc, 2).leader, 1);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 1), &m), ERR_INVALID); /* addressed to node 2 */
    m.to = 1;
    raft_step(tc_raft(&tc, 1), &m);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    CHECK_EQ_U(tc_status(&tc, 1).term, t);
    tc_free(&tc);
}

static void test_check_quorum_step_down(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[2][1] = tc.cut[3][1] = true; /* the leader hears from no one */
    int ticks = 0;
    while (tc_role(&tc, 1) == RAFT_LEADER && ticks < 100) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
        ticks++;
    }
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_FOLLOWER);
    CHECK(ticks <= 2 * 10);
    tc_free(&tc);
}

static void test_leader_keeps_office_while_majority_answers(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[3][1] = true; /* one of two followers is silent */
    for (int i = 0; i < 100; i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    tc_free(&tc);
}

static void test_noop_appended_on_election(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(st.last_index, 2);
    struct tnode *t = tc_node(&tc, 1);
    CHECK_EQ_U(t->log[1].type, RAFT_ENTRY_NOOP);
    CHECK_EQ_U(t->log[1].term, st.term);
    CHECK_EQ_U(st.commit_index, 2);
    /* Every follower has it too. */
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, 2);
    CHECK_EQ_U(tc_node(&tc, 3)->n_log, 2);
    tc_free(&tc);
}

static void test_split_vote_resolves_to_one_leader(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    for (raft_id id = 1; id <= 3; id++) {
        tc.n[id - 1].cfg.prevote = false;
        tc_set_log(&tc, id, terms, 1, 1, 3);
    }
    tc_start_all(&tc);
    for (int i = 0; i < 200; i++) {
        for (raft_id id = 1; id <= 3; id++)
            tc_tick(&tc, id, 1);
        tc_flush(&tc);
    }
    int leaders = 0;
    for (raft_id id = 1; id <= 3; id++)
        leaders += tc_role(&tc, id) == RAFT_LEADER;
    CHECK_EQ_U(leaders, 1);
    tc_free(&tc);
}

static void test_determinism_same_seed_same_history(void)
{
    raft_term final_term[2];
    raft_id final_leader[2];
    for (int run = 0; run < 2; run++) {
        struct tc tc;
        tc_init(&tc, 3);
        raft_term terms[] = {1};
        for (raft_id id = 1; id <= 3; id++)
            tc_set_log(&tc, id, terms, 1, 1, 3);
        tc_start_all(&tc);
        for (int i = 0; i < 300; i++) {
            for (raft_id id = 1; id <= 3; id++)
                tc_tick(&tc, id, 1);
            if (i % 7 == 0) tc_drop_net(&tc);
            tc_flush(&tc);
        }
        final_term[run] = tc_status(&tc, 2).term;
        final_leader[run] = tc_status(&tc, 2).leader;
        tc_free(&tc);
    }
    CHECK_EQ_U(final_term[0], final_term[1]);
    CHECK_EQ_U(final_leader[0], final_leader[1]);
}

static void test_malformed_messages_are_refused(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    tc_start_all(&tc);
    struct raft *r = tc_raft(&tc, 1);
    struct raft_msg m = tc_msg(99, 2, 1, 1, 0, 0);
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    m = tc_msg(RAFT_MSG_VOTE, 0, 1, 1, 0, 0);
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    m = tc_msg(RAFT_MSG_VOTE, 1, 1, 1, 0, 0); /* from ourselves */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    m = tc_msg(RAFT_MSG_VOTE, 2, 1, 0, 0, 0); /* term 0 */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    m = tc_msg(RAFT_MSG_SNAPSHOT, 2, 1, 1, 0, 0); /* reserved */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    struct raft_entry e[2] = {{1, 1, RAFT_ENTRY_NORMAL, NULL}, {1, 3, RAFT_ENTRY_NORMAL, NULL}};
    m = tc_msg(RAFT_MSG_APPEND, 2, 1, 1, 0, 0);
    m.entries = e;
    m.n_entries = 2; /* not contiguous */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    e[1].index = 2;
    e[1].term = 5; /* newer than the message's term */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    e[1].term = 1;
    e[1].type = RAFT_ENTRY_CONFIG; /* no payload */
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    e[1].type = 77;
    CHECK_EQ_U(raft_step(r, &m), ERR_INVALID);
    CHECK_EQ_U(tc_status(&tc, 1).term, 0);
    CHECK_EQ_U(tc_status(&tc, 1).last_index, 0);
    CHECK(!raft_has_ready(r));
    tc_free(&tc);
}

static void test_bad_config_refused(void)
{
    struct raft_config c;
    struct raft *r = NULL;
    tc_default_cfg(&c, 0);
    CHECK_EQ_U(raft_new(&c, NULL, &r), ERR_INVALID);
    tc_default_cfg(&c, 1);
    c.election_ticks_min = 30;
    c.election_ticks_max = 20;
    CHECK_EQ_U(raft_new(&c, NULL, &r), ERR_INVALID);
    tc_default_cfg(&c, 1);
    c.heartbeat_ticks = 10;
    CHECK_EQ_U(raft_new(&c, NULL, &r), ERR_INVALID);
    /* A boot log with a gap or a term above the durable term is corrupt. */
    tc_default_cfg(&c, 1);
    struct raft_entry e[2] = {{1, 1, RAFT_ENTRY_NOOP, NULL}, {1, 3, RAFT_ENTRY_NOOP, NULL}};
    struct raft_boot b;
    memset(&b, 0, sizeof b);
    b.term = 1;
    b.entries = e;
    b.n_entries = 2;
    CHECK_EQ_U(raft_new(&c, &b, &r), ERR_CORRUPT);
    e[1].index = 2;
    e[1].term = 2;
    CHECK_EQ_U(raft_new(&c, &b, &r), ERR_CORRUPT);
    e[1].term = 1;
    e[1].type = RAFT_ENTRY_CONFIG;
    CHECK_EQ_U(raft_new(&c, &b, &r), ERR_CORRUPT);
    e[1].type = RAFT_ENTRY_NOOP;
    CHECK_EQ_U(raft_new(&c, &b, &r), 0);
    raft_free(r);
}

int main(void)
{
    RUN(test_bootstrap_single_voter_elects_itself_without_messages);
    RUN(test_bootstrap_refuses_config_without_self_voter);
    RUN(test_candidate_counts_own_vote_only_once_durable);
    RUN(test_vote_only_for_up_to_date_log);
    RUN(test_vote_at_most_once_per_term);
    RUN(test_vote_response_only_after_persist);
    RUN(test_candidate_requests_votes_only_after_persisting_term);
    RUN(test_higher_term_always_steps_down);
    RUN(test_refused_vote_does_not_reset_election_timer);
    RUN(test_granted_vote_resets_election_timer);
    RUN(test_stale_term_vote_rejected_with_our_term);
    RUN(test_prevote_does_not_bump_term);
    RUN(test_prevote_denied_while_leader_alive);
    RUN(test_partitioned_node_rejoining_does_not_depose_leader);
    RUN(test_leader_stickiness_ignores_vote_requests);
    RUN(test_check_quorum_step_down);
    RUN(test_leader_keeps_office_while_majority_answers);
    RUN(test_noop_appended_on_election);
    RUN(test_split_vote_resolves_to_one_leader);
    RUN(test_determinism_same_seed_same_history);
    RUN(test_malformed_messages_are_refused);
    RUN(test_bad_config_refused);
    return check_report();
}
