/* test_replication.c — log replication rules (Raft §5.3, Figure 2 AppendEntries, Figure 8),
 * the persistence contract, pipelining, batching, backtracking and payload eviction. */
#include "harness.h"

/* An APPEND from leader `from` carrying entries of `terms` starting after prev. */
static struct raft_msg app(raft_id from, raft_id to, raft_term term, raft_index prev,
                           raft_term prev_term, raft_index commit, struct raft_entry *e,
                           const raft_term *terms, uint32_t n)
{
    struct raft_msg m = tc_msg(RAFT_MSG_APPEND, from, to, term, prev, prev_term);
    m.commit = commit;
    for (uint32_t i = 0; i < n; i++)
        e[i] = (struct raft_entry){terms[i], prev + 1 + i, RAFT_ENTRY_NORMAL, NULL};
    m.entries = n ? e : NULL;
    m.n_entries = n;
    return m;
}

static void test_append_conflicting_suffix_truncated(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 2, 2, 2};
    tc_set_log(&tc, 2, terms, 5, 2, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    raft_term nt[] = {3, 3};
    struct raft_msg m = app(1, 2, 3, 2, 1, 0, e, nt, 2);
    CHECK_EQ_U(raft_step(tc_raft(&tc, 2), &m), 0);
    tc_ready_all(&tc);
    struct tnode *t = tc_node(&tc, 2);
    CHECK_EQ_U(t->n_log, 4);
    CHECK_EQ_U(t->log[2].term, 3);
    CHECK_EQ_U(t->log[3].term, 3);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 4);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 1);
    CHECK(resp && !resp->reject && resp->index == 4);
    tc_free(&tc);
}

static void test_append_matching_entries_not_truncated(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 2, 2, 2};
    tc_set_log(&tc, 2, terms, 5, 2, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    raft_term nt[] = {2};
    /* A delayed, shorter append must not cut the longer log. */
    struct raft_msg m = app(1, 2, 2, 2, 1, 0, e, nt, 1);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 5);
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, 5);
    tc_free(&tc);
}

static void test_committed_entries_never_truncated(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 2, 2};
    tc_set_log(&tc, 2, terms, 4, 2, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    struct raft_msg m = app(1, 2, 2, 4, 2, 3, e, NULL, 0);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, 3);
    tc_drop_net(&tc);
    /* An append whose prev lies below commit: answered with commit, log untouched. */
    raft_term nt[] = {3};
    m = app(3, 2, 3, 1, 1, 3, e, nt, 1);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 4);
    CHECK_EQ_U(tc_node(&tc, 2)->log[1].term, 1);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 3);
    CHECK(resp && !resp->reject && resp->index == 3);
    tc_free(&tc);
}

static void test_commit_index_never_moves_back(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 1, 1};
    tc_set_log(&tc, 2, terms, 4, 1, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    struct raft_msg m = app(1, 2, 1, 4, 1, 4, e, NULL, 0);
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, 4);
    m = app(1, 2, 1, 4, 1, 2, e, NULL, 0);
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, 4);
    tc_free(&tc);
}

static void test_follower_commit_is_min_of_leader_commit_and_last_new_entry(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1, 1, 1, 1, 1};
    tc_set_log(&tc, 2, terms, 6, 1, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    /* Leader commit 9, but this append only vouches for the log up to index 3. */
    struct raft_msg m = app(1, 2, 1, 3, 1, 9, e, NULL, 0);
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, 3);
    tc_free(&tc);
}

static void test_stale_leader_append_rejected(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1};
    tc_set_log(&tc, 2, terms, 2, 5, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    raft_term nt[] = {4};
    struct raft_msg m = app(1, 2, 4, 2, 1, 0, e, nt, 1);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 2);
    CHECK_EQ_U(tc_status(&tc, 2).leader, 0);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 1);
    CHECK(resp && resp->reject && resp->term == 5);
    tc_free(&tc);
}

static void test_consistency_check_rejects_missing_prev(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 1};
    tc_set_log(&tc, 2, terms, 2, 1, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    raft_term nt[] = {1};
    struct raft_msg m = app(1, 2, 1, 5, 1, 0, e, nt, 1);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 1);
    CHECK(resp && resp->reject && resp->index == 5 && resp->hint == 2);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 2);
    tc_free(&tc);
}

/* Drives the Figure 8 case message by message: a follower acknowledging the old-term entry
 * alone does not commit it. */
static void test_previous_term_entry_not_committed_by_counting(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1, 2};
    tc_set_log(&tc, 1, terms, 2, 2, 3);
    tc_start_all(&tc);
    tc_node(&tc, 1)->cfg.prevote = false;
    /* Become candidate of term 3 and collect the votes by hand. */
    tc_win_by_hand(&tc, 1, 2);
    CHECK_EQ_U(tc_status(&tc, 1).term, 3);
    tc_ready_all(&tc);
    tc_drop_net(&tc);
    /* Follower 2 acknowledges index 2 (term 2) only. */
    struct raft_msg a = tc_msg(RAFT_MSG_APPEND_RESP, 2, 1, 3, 2, 0);
    raft_step(tc_raft(&tc, 1), &a);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, 0);
    /* Then the no-op of term 3 at index 3: both commit. */
    a.index = 3;
    raft_step(tc_raft(&tc, 1), &a);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, 3);
    tc_free(&tc);
}

static void test_leader_does_not_count_unpersisted_own_entries(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc.cut[1][3] = true; /* only follower 2 takes part */
    tc_node(&tc, 1)->manual_persist = true;
    raft_index idx = 0;
    CHECK_EQ_U(tc_propose(&tc, 1, "v", &idx), 0);
    tc_flush(&tc);
    /* Follower 2 has it durably, the leader's own write is pending: 1 of 3 is not enough. */
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, idx);
    CHECK(tc_status(&tc, 1).commit_index < idx);
    CHECK(tc_status(&tc, 1).stable_index < idx);
    while (tc_persist(&tc, 1))
        ;
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    CHECK_EQ_U(tc_node(&tc, 1)->applied, idx);
    tc_free(&tc);
}

static void test_leader_sends_entries_before_own_write_completes(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    tc_node(&tc, 1)->manual_persist = true;
    raft_index idx = 0;
    tc_propose(&tc, 1, "v", &idx);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_APPEND, 0), 2);
    /* Two followers acknowledging commits it even though the leader has not persisted. */
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    CHECK(tc_node(&tc, 1)->applied < idx); /* but it applies only what it persisted */
    while (tc_persist(&tc, 1))
        ;
    tc_flush(&tc);
    CHECK_EQ_U(tc_node(&tc, 1)->applied, idx);
    tc_free(&tc);
}

static void test_follower_applies_only_persisted_entries(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    tc_set_log(&tc, 2, terms, 1, 1, 3);
    tc_start_all(&tc);
    tc_node(&tc, 2)->manual_persist = true;
    struct raft_entry e[4];
    raft_term nt[] = {1, 1};
    struct raft_msg m = app(1, 2, 1, 1, 1, 3, e, nt, 2);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, 3);
    CHECK_EQ_U(tc_node(&tc, 2)->applied, 1);
    CHECK_EQ_U(tc.n_net, 0); /* the ack waits for the write */
    tc_persist(&tc, 2);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_node(&tc, 2)->applied, 3);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_APPEND_RESP, 1), 1);
    tc_free(&tc);
}

static void test_persisted_write_overtaken_by_truncation_does_not_advance_stable(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term terms[] = {1};
    tc_set_log(&tc, 2, terms, 1, 2, 3);
    tc_start_all(&tc);
    tc_node(&tc, 2)->manual_persist = true;
    struct raft_entry e[4];
    raft_term old[] = {1, 1, 1};
    struct raft_msg m = app(1, 2, 2, 1, 1, 0, e, old, 3);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc); /* write 1: entries 2..4 of term 1 */
    raft_term newer[] = {3};
    m = app(3, 2, 3, 1, 1, 0, e, newer, 1);
    raft_step(tc_raft(&tc, 2), &m);
    CHECK_EQ_U(tc_status(&tc, 2).last_index, 2);
    CHECK_EQ_U(tc_status(&tc, 2).stable_index, 1);
    tc_ready_all(&tc); /* write 2: truncate from 2, entry 2 of term 3 */
    tc_persist(&tc, 2);
    CHECK_EQ_U(tc_status(&tc, 2).stable_index, 1); /* write 1's entries are gone */
    tc_persist(&tc, 2);
    CHECK_EQ_U(tc_status(&tc, 2).stable_index, 2);
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, 2);
    CHECK_EQ_U(tc_node(&tc, 2)->log[1].term, 3);
    tc_free(&tc);
}

static void test_backtracking_hint_skips_a_term(void)
{
    /* Follower 2 holds 20 entries of term 2 that the leader (term 4) never had. */
    struct tc tc;
    tc_init(&tc, 3);
    raft_term lt[8] = {1, 1, 1, 3, 3, 3, 3, 3};
    tc_set_log(&tc, 1, lt, 8, 3, 3);
    raft_term ft[23];
    ft[0] = ft[1] = ft[2] = 1;
    for (int i = 3; i < 23; i++)
        ft[i] = 2;
    tc_set_log(&tc, 2, ft, 23, 3, 3);
    tc_set_log(&tc, 3, lt, 8, 3, 3);
    tc_start_all(&tc);
    tc_elect(&tc, 1);
    tc_flush(&tc);
    /* The follower converged, and within a couple of probes rather than one per entry. */
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, tc_status(&tc, 1).last_index);
    CHECK_EQ_U(tc_node(&tc, 2)->log[4].term, 3);
    CHECK(tc.sent_by_type[RAFT_MSG_APPEND] < 12);
    tc_free(&tc);
}

static void test_reject_hint_from_follower_skips_its_term(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term ft[10] = {1, 1, 2, 2, 2, 2, 2, 2, 2, 2};
    tc_set_log(&tc, 2, ft, 10, 2, 3);
    tc_start_all(&tc);
    struct raft_entry e[4];
    /* Leader's prev (index 12, term 3) is beyond; then (index 9, term 3) conflicts. */
    struct raft_msg m = app(1, 2, 3, 9, 3, 0, e, NULL, 0);
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    const struct raft_msg *resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 1);
    /* Every term-2 entry is newer than nothing the leader has at term <= ... : hint stops
     * at the last index whose term <= 3, i.e. 9 itself (term 2 <= 3). */
    CHECK(resp && resp->reject && resp->hint == 9 && resp->log_term == 2);
    tc_drop_net(&tc);
    m = app(1, 2, 3, 9, 1, 0, e, NULL, 0); /* leader's entry at 9 has term 1 */
    raft_step(tc_raft(&tc, 2), &m);
    tc_ready_all(&tc);
    resp = tc_find_net(&tc, RAFT_MSG_APPEND_RESP, 1);
    CHECK(resp && resp->reject && resp->hint == 2 && resp->log_term == 1);
    tc_free(&tc);
}

static void test_pipelining_window_bound(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    for (int i = 0; i < 2; i++) {
        tc.n[i].cfg.max_inflight = 3;
        tc.n[i].cfg.max_append_entries = 1;
    }
    tc_cluster(&tc, 2);
    tc.cut[1][2] = true; /* nothing arrives, nothing is acknowledged */
    for (int i = 0; i < 10; i++)
        tc_propose(&tc, 1, "p", NULL);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_APPEND, 2), 3);
    for (size_t i = 0; i < tc.n_net; i++)
        CHECK(tc.net[i].n_entries == 1);
    tc_drop_net(&tc);
    tc_propose(&tc, 1, "p", NULL);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_count_net(&tc, RAFT_MSG_APPEND, 2), 0); /* the window is full */
    tc.cut[1][2] = false;
    tc_free(&tc);
}

static void test_pipelining_catches_up_once_acked(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    for (int i = 0; i < 2; i++) {
        tc.n[i].cfg.max_inflight = 2;
        tc.n[i].cfg.max_append_entries = 1;
    }
    tc_cluster(&tc, 2);
    raft_index idx = 0;
    for (int i = 0; i < 10; i++)
        tc_propose(&tc, 1, "p", &idx);
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, idx);
    tc_free(&tc);
}

static size_t count_appends_with_entries(struct tc *tc, raft_id to)
{
    size_t n = 0;
    for (size_t i = 0; i < tc->n_net; i++)
        n += tc->net[i].type == RAFT_MSG_APPEND && tc->net[i].to == to && tc->net[i].n_entries;
    return n;
}

static void test_probe_mode_sends_one_append_until_answered(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    raft_term lt[] = {1, 3, 3};
    tc_set_log(&tc, 1, lt, 3, 3, 3);
    tc_set_log(&tc, 3, lt, 3, 3, 3);
    raft_term ft[] = {1, 2, 2, 2, 2};
    tc_set_log(&tc, 2, ft, 5, 3, 3);
    tc_start_all(&tc);
    tc.cut[1][2] = tc.cut[2][1] = true;
    tc_elect(&tc, 1); /* with node 3's vote; the first probe to 2 was lost */
    for (int i = 0; i < 5; i++)
        tc_propose(&tc, 1, "p", NULL);
    tc_ready_all(&tc);
    CHECK_EQ_U(count_appends_with_entries(&tc, 2), 0); /* a probe is outstanding */
    tc_drop_net(&tc);
    tc_tick(&tc, 1, 2); /* heartbeat: a lost probe is retried, once */
    tc_ready_all(&tc);
    CHECK_EQ_U(count_appends_with_entries(&tc, 2), 1);
    const struct raft_msg *probe = NULL;
    for (size_t i = 0; i < tc.n_net; i++)
        if (tc.net[i].type == RAFT_MSG_APPEND && tc.net[i].to == 2 && tc.net[i].n_entries)
            probe = &tc.net[i];
    CHECK(probe && probe->index == 3 && probe->log_term == 3);
    tc.cut[1][2] = tc.cut[2][1] = false;
    tc_flush(&tc);
    /* Follower 2 rejected (hint 4, term 2): the leader skips term 3 and converges. */
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, tc_status(&tc, 1).last_index);
    CHECK_EQ_U(tc_node(&tc, 2)->log[1].term, 3);
    tc_free(&tc);
}

static void test_batching_limits_entries_and_bytes(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    for (int i = 0; i < 2; i++) {
        tc.n[i].cfg.max_append_entries = 3;
        tc.n[i].cfg.max_append_bytes = 10;
        tc.n[i].cfg.max_inflight = 100;
    }
    tc_cluster(&tc, 2);
    tc.cut[1][2] = true;
    for (int i = 0; i < 7; i++)
        tc_propose(&tc, 1, "ab", NULL);           /* 2 bytes each: the entry cap binds */
    tc_propose(&tc, 1, "0123456789abcdef", NULL); /* larger than a whole message */
    tc_propose(&tc, 1, "0123456", NULL);
    tc_propose(&tc, 1, "0123456", NULL);
    tc_ready_all(&tc);
    uint32_t sizes[16];
    size_t n = 0;
    for (size_t i = 0; i < tc.n_net && n < 16; i++) {
        const struct raft_msg *m = &tc.net[i];
        if (m->type != RAFT_MSG_APPEND || m->n_entries == 0) continue;
        uint64_t bytes = 0;
        for (uint32_t j = 0; j < m->n_entries; j++)
            bytes += m->entries[j].data ? m->entries[j].data->len : 0;
        CHECK(m->n_entries <= 3);
        CHECK(m->n_entries == 1 || bytes <= 10);
        sizes[n++] = m->n_entries;
    }
    CHECK_EQ_U(n, 6); /* 3, 3, 1 (+nothing: 16 bytes alone), 1, 1, 1 */
    CHECK_EQ_U(sizes[0], 3);
    CHECK_EQ_U(sizes[1], 3);
    CHECK_EQ_U(sizes[2], 1);
    CHECK_EQ_U(sizes[3], 1);
    tc_free(&tc);
}

static void test_fetch_of_evicted_payloads(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    for (int i = 0; i < 3; i++)
        tc.n[i].cfg.cache_bytes_max = 0; /* drop every durable, applied payload */
    tc_start_all(&tc);
    struct raft_configuration c;
    tc_conf(&c, 2, 0);
    raft_bootstrap(tc_raft(&tc, 1), &c);
    tc_flush(&tc);
    tc_elect(&tc, 1);
    raft_index idx = 0;
    tc_propose(&tc, 1, "hello", &idx);
    tc_propose(&tc, 1, "world", &idx);
    tc_flush(&tc);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, idx);
    CHECK_EQ_U(tc_node(&tc, 1)->fetch_calls, 0);
    /* Node 3 joins late: the leader must read the payloads back to send them. */
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = 3;
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), 0);
    tc_flush(&tc);
    for (int i = 0; i < 10; i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    CHECK(tc_node(&tc, 1)->fetch_calls >= 2);
    struct tnode *t3 = tc_node(&tc, 3);
    CHECK(t3->n_log >= idx);
    CHECK(t3->log[idx - 2].data && t3->log[idx - 2].data->len == 5 &&
          memcmp(t3->log[idx - 2].data->data, "hello", 5) == 0);
    CHECK(t3->log[idx - 1].data && memcmp(t3->log[idx - 1].data->data, "world", 5) == 0);
    tc_free(&tc);
}

static void test_fetch_failure_while_replicating_fails_the_core(void)
{
    struct tc tc;
    tc_init(&tc, 2);
    for (int i = 0; i < 2; i++)
        tc.n[i].cfg.cache_bytes_max = 0;
    tc_cluster(&tc, 1);
    raft_index idx = 0;
    for (int i = 0; i < 4; i++)
        tc_propose(&tc, 1, "payload", &idx);
    tc_flush(&tc);
    tc_node(&tc, 1)->fail_fetch_from = idx; /* the disk fails under the last entry */
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = 2;
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), 0);
    for (int i = 0; i < 10 && !raft_failed(tc_raft(&tc, 1)); i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    CHECK(raft_failed(tc_raft(&tc, 1)));
    CHECK(tc_status(&tc, 1).failed);
    tc_free(&tc);
}

static void test_restart_refetches_payloads_to_apply(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    raft_index idx = 0;
    tc_propose(&tc, 1, "abc", &idx);
    tc_flush(&tc);
    tc_stop(&tc, 1);
    /* The durable log comes back without NORMAL payloads: the core fetches them. */
    struct tnode *t = tc_node(&tc, 1);
    struct raft_blob *saved = t->log[idx - 1].data;
    struct raft_entry copy[8];
    memcpy(copy, t->log, t->n_log * sizeof *copy);
    for (size_t i = 0; i < t->n_log; i++)
        if (copy[i].type == RAFT_ENTRY_NORMAL) copy[i].data = NULL;
    struct raft_boot boot;
    memset(&boot, 0, sizeof boot);
    boot.term = t->term;
    boot.vote = t->vote;
    boot.commit = idx;
    boot.entries = copy;
    boot.n_entries = t->n_log;
    t->cfg.fetch = tc_fetch_cb;
    t->cfg.ctx = t;
    CHECK_EQ_U(raft_new(&t->cfg, &boot, &t->r), 0);
    t->down = false;
    t->applied = 0;
    struct raft_ready rd;
    raft_ready(t->r, &rd);
    CHECK_EQ_U(rd.n_committed, idx);
    CHECK(rd.committed[idx - 1].data && rd.committed[idx - 1].data->len == 3);
    CHECK(rd.committed[idx - 1].data == saved);
    CHECK_EQ_U(t->fetch_calls, 1);
    raft_advance(t->r, &rd);
    tc_free(&tc);
}

/* A restart with the caller's applied index hands out only what was not applied yet, and
 * an applied index beyond the durable log is refused as corrupt. */
static void test_restart_skips_entries_already_applied(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    raft_index i1 = 0, i2 = 0;
    tc_propose(&tc, 1, "one", &i1);
    tc_propose(&tc, 1, "two", &i2);
    tc_flush(&tc);
    tc_stop(&tc, 1);
    struct tnode *t = tc_node(&tc, 1);
    struct raft_boot boot;
    memset(&boot, 0, sizeof boot);
    boot.term = t->term;
    boot.vote = t->vote;
    boot.entries = t->log;
    boot.n_entries = t->n_log;
    boot.applied = t->n_log + 1;
    CHECK_EQ_U(raft_new(&t->cfg, &boot, &t->r), ERR_CORRUPT);
    boot.applied = i1; /* commit is 0 on disk: applied alone proves i1 committed */
    CHECK_EQ_U(raft_new(&t->cfg, &boot, &t->r), 0);
    t->down = false;
    t->applied = i1;
    struct raft_status st;
    raft_status(t->r, &st);
    CHECK_EQ_U(st.commit_index, i1);
    CHECK_EQ_U(st.applied_index, i1);
    struct raft_ready rd;
    raft_ready(t->r, &rd);
    for (size_t k = 0; k < rd.n_committed; k++)
        CHECK(rd.committed[k].index > i1);
    raft_advance(t->r, &rd);
    tc_free(&tc);
}

static void test_fetch_failure_puts_core_in_failed_state(void)
{
    struct tc tc;
    tc_init(&tc, 1);
    tc_cluster(&tc, 1);
    raft_index idx = 0;
    tc_propose(&tc, 1, "abc", &idx);
    tc_flush(&tc);
    tc_stop(&tc, 1);
    struct tnode *t = tc_node(&tc, 1);
    struct raft_entry copy[8];
    memcpy(copy, t->log, t->n_log * sizeof *copy);
    copy[idx - 1].data = NULL;
    struct raft_boot boot;
    memset(&boot, 0, sizeof boot);
    boot.term = t->term;
    boot.commit = idx;
    boot.entries = copy;
    boot.n_entries = idx;
    t->cfg.fetch = NULL; /* nothing can bring the payload back */
    CHECK_EQ_U(raft_new(&t->cfg, &boot, &t->r), 0);
    t->down = false;
    struct raft_ready rd;
    raft_ready(t->r, &rd);
    CHECK(rd.n_committed < idx);
    raft_advance(t->r, &rd);
    CHECK(raft_failed(t->r));
    CHECK(!raft_has_ready(t->r));
    CHECK_EQ_U(raft_propose(t->r, tc_blob("x"), NULL, NULL), ERR_FAILED);
    tc_free(&tc);
}

static void test_propose_refused_on_follower_with_leader_hint(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_index idx = 0;
    CHECK_EQ_U(tc_propose(&tc, 2, "x", &idx), ERR_NOTLEADER);
    CHECK_EQ_U(tc_status(&tc, 2).leader, 1);
    tc_free(&tc);
}

static void test_entries_replicate_and_apply_everywhere(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    raft_index idx = 0;
    for (int i = 0; i < 50; i++)
        CHECK_EQ_U(tc_propose(&tc, 1, "entry", &idx), 0);
    tc_flush(&tc);
    for (int i = 0; i < 4; i++) {
        tc_tick(&tc, 1, 1);
        tc_flush(&tc);
    }
    for (raft_id id = 1; id <= 3; id++) {
        CHECK_EQ_U(tc_node(&tc, id)->applied, idx);
        CHECK_EQ_U(tc_node(&tc, id)->n_log, idx);
    }
    tc_free(&tc);
}

int main(void)
{
    RUN(test_append_conflicting_suffix_truncated);
    RUN(test_append_matching_entries_not_truncated);
    RUN(test_committed_entries_never_truncated);
    RUN(test_commit_index_never_moves_back);
    RUN(test_follower_commit_is_min_of_leader_commit_and_last_new_entry);
    RUN(test_stale_leader_append_rejected);
    RUN(test_consistency_check_rejects_missing_prev);
    RUN(test_previous_term_entry_not_committed_by_counting);
    RUN(test_leader_does_not_count_unpersisted_own_entries);
    RUN(test_leader_sends_entries_before_own_write_completes);
    RUN(test_follower_applies_only_persisted_entries);
    RUN(test_persisted_write_overtaken_by_truncation_does_not_advance_stable);
    RUN(test_backtracking_hint_skips_a_term);
    RUN(test_reject_hint_from_follower_skips_its_term);
    RUN(test_pipelining_window_bound);
    RUN(test_pipelining_catches_up_once_acked);
    RUN(test_probe_mode_sends_one_append_until_answered);
    RUN(test_batching_limits_entries_and_bytes);
    RUN(test_fetch_of_evicted_payloads);
    RUN(test_fetch_failure_while_replicating_fails_the_core);
    RUN(test_restart_refetches_payloads_to_apply);
    RUN(test_restart_skips_entries_already_applied);
    RUN(test_fetch_failure_puts_core_in_failed_state);
    RUN(test_propose_refused_on_follower_with_leader_hint);
    RUN(test_entries_replicate_and_apply_everywhere);
    return check_report();
}
