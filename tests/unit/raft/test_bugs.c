/* test_bugs.c — the simulator's planted bugs: built against raft_bugs_lib (EXPECT_BUGS) each
 * cfg.bugs bit must change behaviour; built against the production raft_lib the same bits
 * must change nothing. */
#include "harness.h"

#ifdef EXPECT_BUGS
#define BUGGY 1
#else
#define BUGGY 0
#endif

static void set_bugs(struct tc *tc, uint32_t bugs)
{
    for (int i = 0; i < tc->count; i++)
        tc->n[i].cfg.bugs = bugs;
}

/* Node 1 leads term 3 with an uncommitted term-2 entry at index 2; returns after follower
 * 2 acknowledged index 2 only. */
static raft_index old_term_ack(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc.n[0].cfg.prevote = false;
    raft_term terms[] = {1, 2};
    tc_set_log(&tc, 1, terms, 2, 2, 3);
    tc_start_all(&tc);
    tc_win_by_hand(&tc, 1, 2);
    tc_ready_all(&tc);
    tc_drop_net(&tc);
    struct raft_msg a = tc_msg(RAFT_MSG_APPEND_RESP, 2, 1, 3, 2, 0);
    raft_step(tc_raft(&tc, 1), &a);
    raft_index c = tc_status(&tc, 1).commit_index;
    tc_free(&tc);
    return c;
}

static void test_bug_commit_old_term(void)
{
    CHECK_EQ_U(old_term_ack(0), 0);
    CHECK_EQ_U(old_term_ack(RAFT_BUG_COMMIT_OLD_TERM), BUGGY ? 2 : 0);
}

static size_t votes_granted(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc_start_all(&tc);
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 2, 0, 0);
    raft_step(tc_raft(&tc, 1), &m);
    m = tc_msg(RAFT_MSG_VOTE, 3, 1, 2, 0, 0);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    size_t n = 0;
    for (size_t i = 0; i < tc.n_net; i++)
        n += tc.net[i].type == RAFT_MSG_VOTE_RESP && !tc.net[i].reject;
    tc_free(&tc);
    return n;
}

static void test_bug_double_vote(void)
{
    CHECK_EQ_U(votes_granted(0), 1);
    CHECK_EQ_U(votes_granted(RAFT_BUG_DOUBLE_VOTE), BUGGY ? 2 : 1);
}

static size_t vote_resp_before_persist(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc_start_all(&tc);
    tc_node(&tc, 1)->manual_persist = true;
    struct raft_msg m = tc_msg(RAFT_MSG_VOTE, 2, 1, 2, 0, 0);
    raft_step(tc_raft(&tc, 1), &m);
    tc_ready_all(&tc);
    size_t n = tc_count_net(&tc, RAFT_MSG_VOTE_RESP, 2);
    tc_free(&tc);
    return n;
}

static void test_bug_vote_not_persisted(void)
{
    CHECK_EQ_U(vote_resp_before_persist(0), 0);
    CHECK_EQ_U(vote_resp_before_persist(RAFT_BUG_VOTE_NOT_PERSISTED), BUGGY ? 1 : 0);
}

static size_t read_without_round(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc_cluster(&tc, 3);
    raft_read_index(tc_raft(&tc, 1), 1);
    tc_ready_all(&tc);
    size_t n = tc_node(&tc, 1)->n_reads;
    tc_free(&tc);
    return n;
}

static void test_bug_read_no_confirm(void)
{
    CHECK_EQ_U(read_without_round(0), 0);
    CHECK_EQ_U(read_without_round(RAFT_BUG_READ_NO_CONFIRM), BUGGY ? 1 : 0);
}

static int change_before_noop(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc.n[0].cfg.prevote = false;
    raft_term terms[] = {1};
    tc_set_log(&tc, 1, terms, 1, 1, 3);
    tc_node(&tc, 1)->boot_commit = 1; /* the configuration is committed */
    tc_start_all(&tc);
    tc_win_by_hand(&tc, 1, 2);
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = 4;
    int rv = raft_add_member(tc_raft(&tc, 1), &m, NULL);
    tc_free(&tc);
    return rv;
}

static void test_bug_config_before_noop(void)
{
    CHECK_EQ_U(change_before_noop(0), ERR_BUSY);
    CHECK_EQ_U(change_before_noop(RAFT_BUG_CONFIG_BEFORE_NOOP), BUGGY ? 0 : ERR_BUSY);
}

/* A follower asked whether a snapshot at its own commit index is acceptable. */
static bool old_snapshot_acceptable(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc_cluster(&tc, 3);
    raft_index idx;
    tc_propose(&tc, 1, "x", &idx);
    tc_flush(&tc);
    struct raft_status st = tc_status(&tc, 2);
    bool ok = raft_snapshot_acceptable(tc_raft(&tc, 2), st.term, st.commit_index);
    tc_free(&tc);
    return ok;
}

static void test_bug_snapshot_old(void)
{
    CHECK(!old_snapshot_acceptable(0));
    CHECK_EQ_U(old_snapshot_acceptable(RAFT_BUG_SNAPSHOT_OLD), BUGGY ? 1 : 0);
}

/* A follower asked for a transfer vote by a candidate whose log is behind its own. */
static bool stale_transfer_vote_granted(uint32_t bugs)
{
    struct tc tc;
    tc_init(&tc, 3);
    set_bugs(&tc, bugs);
    tc_cluster(&tc, 3);
    raft_index idx;
    tc_propose(&tc, 1, "x", &idx);
    tc_flush(&tc);
    struct raft_status st = tc_status(&tc, 2);
    struct raft_msg v = tc_msg(RAFT_MSG_VOTE, 3, 2, st.term + 1, 1, 1);
    v.transfer = true;
    raft_step(tc_raft(&tc, 2), &v);
    bool granted = tc_status(&tc, 2).vote == 3;
    tc_free(&tc);
    return granted;
}

static void test_bug_transfer_any_log(void)
{
    CHECK(!stale_transfer_vote_granted(0));
    CHECK_EQ_U(stale_transfer_vote_granted(RAFT_BUG_TRANSFER_ANY_LOG), BUGGY ? 1 : 0);
}

int main(void)
{
    RUN(test_bug_commit_old_term);
    RUN(test_bug_double_vote);
    RUN(test_bug_vote_not_persisted);
    RUN(test_bug_read_no_confirm);
    RUN(test_bug_config_before_noop);
    RUN(test_bug_snapshot_old);
    RUN(test_bug_transfer_any_log);
    return check_report();
}
