/* test_snapshot.c — log compaction, the snapshot point as of any index, the leader asking for
 * a snapshot stream (once; again after a failed report or a timeout), the follower's install
 * (stale refused, matching suffix kept, other logs discarded), boot from a snapshot point and
 * bad inputs. */
#include "harness.h"

static void propose_n(struct tc *tc, raft_id leader, int n)
{
    for (int i = 0; i < n; i++) {
        raft_index idx;
        CHECK_EQ_U(tc_propose(tc, leader, "v", &idx), 0);
    }
    tc_flush(tc);
}

static void settle(struct tc *tc, raft_id leader, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        tc_tick(tc, leader, 1);
        tc_flush(tc);
    }
}

/* The ready batch of one node kept aside (manual persistence) for inspection. */
static struct tc_write *next_write(struct tc *tc, raft_id id)
{
    struct tnode *t = tc_node(tc, id);
    t->manual_persist = true;
    size_t before = t->n_pending;
    tc_ready(tc, id);
    CHECK_EQ_U(t->n_pending, before + 1);
    return &t->pending[t->n_pending - 1];
}

static void test_compact_drops_prefix_and_hands_out_the_snapshot_point(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    propose_n(&tc, 1, 10);
    struct raft_status st = tc_status(&tc, 1);
    CHECK_EQ_U(st.applied_index, st.last_index);
    raft_index k = st.applied_index - 2;
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 1), k), 0);
    st = tc_status(&tc, 1);
    CHECK_EQ_U(st.snapshot_index, k);
    CHECK_EQ_U(st.snapshot_term, st.term);
    struct tc_write *w = next_write(&tc, 1);
    CHECK(w->seq != 0);
    CHECK_EQ_U(w->compact_to, k);
    CHECK_EQ_U(w->snap_term, st.term);
    CHECK(!w->reset);
    CHECK_EQ_U(w->snap_conf.n, 3);
    tc_persist(&tc, 1);
    CHECK_EQ_U(tc_node(&tc, 1)->snap_index, k);
    /* Replication goes on above the snapshot point. */
    tc_node(&tc, 1)->manual_persist = false;
    propose_n(&tc, 1, 3);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, tc_status(&tc, 1).last_index);
    CHECK_EQ_U(tc_status(&tc, 1).commit_index, tc_status(&tc, 1).last_index);
    tc_free(&tc);
}

static void test_compact_bad_inputs(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    propose_n(&tc, 1, 4);
    struct raft *r = tc_raft(&tc, 1);
    raft_index applied = tc_status(&tc, 1).applied_index;
    CHECK_EQ_U(raft_compact(r, applied + 1), ERR_INVALID); /* beyond applied */
    CHECK_EQ_U(raft_compact(r, 0), ERR_INVALID);
    CHECK_EQ_U(raft_compact(r, 3), 0);
    CHECK_EQ_U(raft_compact(r, 3), ERR_INVALID); /* not above the snapshot point */
    CHECK_EQ_U(raft_compact(r, 2), ERR_INVALID);
    CHECK_EQ_U(tc_status(&tc, 1).snapshot_index, 3);
    /* A follower compacts its own log too, within its own applied index. */
    raft_index f = tc_status(&tc, 2).applied_index;
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 2), f + 1), ERR_INVALID);
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 2), f), 0);
    tc_free(&tc);
}

/* The snapshot carries the configuration as of its index, not the latest one. */
static void test_snapshot_configuration_as_of_index(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 2); /* nodes 1, 2 voters; node 3 joins later */
    propose_n(&tc, 1, 2);
    raft_index before = tc_status(&tc, 1).applied_index;
    struct raft_member m;
    memset(&m, 0, sizeof m);
    m.id = 3;
    CHECK_EQ_U(raft_add_member(tc_raft(&tc, 1), &m, NULL), 0);
    settle(&tc, 1, 10);
    CHECK_EQ_U(raft_configuration(tc_raft(&tc, 1))->n, 3);
    struct raft_configuration c;
    raft_term t = 0;
    CHECK_EQ_U(raft_snapshot_meta(tc_raft(&tc, 1), before, &t, &c), 0);
    CHECK_EQ_U(c.n, 2);
    CHECK_EQ_U(t, tc_status(&tc, 1).term);
    raft_index commit = tc_status(&tc, 1).commit_index;
    CHECK_EQ_U(raft_snapshot_meta(tc_raft(&tc, 1), commit, NULL, &c), 0);
    CHECK_EQ_U(c.n, 3);
    CHECK_EQ_U(raft_snapshot_meta(tc_raft(&tc, 1), commit + 1, NULL, NULL), ERR_NOTFOUND);
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 1), before), 0);
    CHECK_EQ_U(raft_snapshot_meta(tc_raft(&tc, 1), before - 1, NULL, NULL), ERR_NOTFOUND);
    struct tc_write *w = next_write(&tc, 1);
    CHECK_EQ_U(w->compact_to, before);
    CHECK_EQ_U(w->snap_conf.n, 2); /* as of `before`, without node 3 */
    tc_persist(&tc, 1);
    tc_free(&tc);
}

/* Node 3 misses entries the leader has compacted away. */
static raft_index lagging_follower(struct tc *tc)
{
    tc_init(tc, 3);
    tc_cluster(tc, 3);
    tc->cut[1][3] = tc->cut[3][1] = true;
    propose_n(tc, 1, 20);
    settle(tc, 1, 10);
    raft_index k = tc_status(tc, 1).applied_index - 2;
    CHECK_EQ_U(raft_compact(tc_raft(tc, 1), k), 0);
    tc_flush(tc);
    tc->cut[1][3] = tc->cut[3][1] = false;
    return k;
}

static size_t appends_with_entries_to(struct tc *tc, raft_id to)
{
    size_t n = 0;
    for (size_t i = 0; i < tc->n_net; i++)
        if (tc->net[i].type == RAFT_MSG_APPEND && tc->net[i].to == to && tc->net[i].n_entries) n++;
    return n;
}

/* Ticks the leader; every round checks that no append with entries goes to node 3. */
static void settle_no_appends_to_3(struct tc *tc, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        tc_tick(tc, 1, 1);
        for (int round = 0; round < 50; round++) {
            tc_ready_all(tc);
            CHECK_EQ_U(appends_with_entries_to(tc, 3), 0);
            if (!tc->n_net) break;
            tc_deliver(tc);
        }
    }
}

static void test_leader_asks_once_for_a_snapshot(void)
{
    struct tc tc;
    raft_index k = lagging_follower(&tc);
    settle(&tc, 1, 4); /* heartbeats reach node 3, which rejects: its log is too short */
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    settle_no_appends_to_3(&tc, 20);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1); /* not again while streaming */
    CHECK(tc_status(&tc, 3).commit_index < k);
    CHECK_EQ_U(tc_role(&tc, 3), RAFT_FOLLOWER); /* heartbeats keep it following */
    tc_free(&tc);
}

/* What a node does when its stream to node 3 completes: install, then the leader resumes. */
static raft_index install_on_3(struct tc *tc)
{
    struct raft *l = tc_raft(tc, 1);
    struct raft_status ls = tc_status(tc, 1);
    raft_index s = ls.applied_index;
    raft_term t = 0;
    struct raft_configuration c;
    CHECK_EQ_U(raft_snapshot_meta(l, s, &t, &c), 0);
    struct raft *f = tc_raft(tc, 3);
    CHECK(raft_snapshot_acceptable(f, ls.term, s));
    CHECK_EQ_U(raft_install_snapshot(f, 1, ls.term, s, t, &c), 0);
    tc_node(tc, 3)->applied = s; /* the node's state machine is the snapshot now */
    struct raft_status fs = tc_status(tc, 3);
    CHECK_EQ_U(fs.commit_index, s);
    CHECK_EQ_U(fs.applied_index, s);
    CHECK_EQ_U(fs.snapshot_index, s);
    CHECK_EQ_U(fs.last_index, s);
    struct tc_write *w = next_write(tc, 3);
    CHECK(w->reset);
    CHECK_EQ_U(w->compact_to, s);
    CHECK_EQ_U(w->snap_term, t);
    CHECK_EQ_U(w->trunc, s + 1); /* its short log did not hold entry s: all goes */
    CHECK_EQ_U(w->n_after, 1);
    CHECK_EQ_U(w->after[0].type, RAFT_MSG_APPEND_RESP);
    CHECK_EQ_U(w->after[0].index, s);
    CHECK(!w->after[0].reject);
    CHECK_EQ_U(tc_count_net(tc, RAFT_MSG_APPEND_RESP, 1), 0); /* only once durable */
    tc_persist(tc, 3);
    CHECK_EQ_U(tc_node(tc, 3)->resets, 1);
    tc_node(tc, 3)->manual_persist = false;
    return s;
}

static void test_install_then_replication_resumes(void)
{
    struct tc tc;
    lagging_follower(&tc);
    settle(&tc, 1, 4);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    raft_index s = install_on_3(&tc);
    tc_flush(&tc); /* the APPEND_RESP(s) moves the leader's progress past the snapshot */
    raft_report_snapshot(tc_raft(&tc, 1), 3, s, true);
    propose_n(&tc, 1, 3);
    settle(&tc, 1, 4);
    struct raft_status ls = tc_status(&tc, 1), fs = tc_status(&tc, 3);
    CHECK_EQ_U(fs.last_index, ls.last_index);
    CHECK_EQ_U(fs.commit_index, ls.commit_index);
    CHECK_EQ_U(tc_node(&tc, 3)->applied, ls.commit_index);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    tc_free(&tc);
}

/* The report alone (the follower's APPEND_RESP lost) also resumes replication. */
static void test_report_ok_resumes_replication(void)
{
    struct tc tc;
    lagging_follower(&tc);
    settle(&tc, 1, 4);
    raft_index s = install_on_3(&tc);
    tc_drop_net(&tc);
    raft_report_snapshot(tc_raft(&tc, 1), 3, s, true);
    propose_n(&tc, 1, 2);
    settle(&tc, 1, 4);
    CHECK_EQ_U(tc_status(&tc, 3).commit_index, tc_status(&tc, 1).commit_index);
    tc_free(&tc);
}

static void test_failed_stream_asks_again_after_a_probe(void)
{
    struct tc tc;
    lagging_follower(&tc);
    settle(&tc, 1, 4);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    raft_report_snapshot(tc_raft(&tc, 1), 3, tc_status(&tc, 1).applied_index, false);
    tc_ready_all(&tc);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1); /* not at once: the next probe first */
    settle(&tc, 1, 6);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 2);
    /* Reports for an unknown peer, or a peer not in snapshot state, are ignored. */
    raft_report_snapshot(tc_raft(&tc, 1), 9, 5, true);
    raft_report_snapshot(tc_raft(&tc, 1), 2, 5, false);
    raft_report_snapshot(tc_raft(&tc, 2), 3, 5, true); /* not the leader */
    settle(&tc, 1, 2);
    CHECK_EQ_U(tc_role(&tc, 1), RAFT_LEADER);
    tc_free(&tc);
}

static void test_lost_report_times_out(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc.n[0].cfg.snapshot_timeout_ticks = 30;
    tc_cluster(&tc, 3);
    tc.cut[1][3] = tc.cut[3][1] = true;
    propose_n(&tc, 1, 8);
    settle(&tc, 1, 10);
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 1), tc_status(&tc, 1).applied_index), 0);
    tc.cut[1][3] = tc.cut[3][1] = false;
    settle(&tc, 1, 4);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    settle(&tc, 1, 20);
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 1);
    settle(&tc, 1, 12); /* 30 ticks since the request: probe, then ask again */
    CHECK_EQ_U(tc.sent_by_type[RAFT_MSG_SNAPSHOT], 2);
    tc_free(&tc);
}

static void test_stale_snapshot_refused(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    propose_n(&tc, 1, 5);
    struct raft *f = tc_raft(&tc, 2);
    struct raft_status fs = tc_status(&tc, 2);
    struct raft_configuration c;
    tc_conf(&c, 3, 0);
    CHECK(!raft_snapshot_acceptable(f, fs.term, fs.commit_index));         /* not above commit */
    CHECK(!raft_snapshot_acceptable(f, fs.term, fs.commit_index - 1));     /* older */
    CHECK(!raft_snapshot_acceptable(f, fs.term - 1, fs.commit_index + 5)); /* old term */
    CHECK(raft_snapshot_acceptable(f, fs.term, fs.commit_index + 5));
    CHECK(!raft_snapshot_acceptable(tc_raft(&tc, 1), fs.term, fs.commit_index + 5)); /* leader */
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, fs.commit_index, fs.term, &c), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term - 1, fs.commit_index + 1, 1, &c), ERR_INVALID);
    struct raft_status after = tc_status(&tc, 2);
    CHECK_EQ_U(after.commit_index, fs.commit_index);
    CHECK_EQ_U(after.snapshot_index, 0);
    CHECK_EQ_U(after.last_index, fs.last_index);
    CHECK(!raft_has_ready(f));
    tc_free(&tc);
}

static void test_install_bad_inputs(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    struct raft *f = tc_raft(&tc, 2);
    struct raft_status fs = tc_status(&tc, 2);
    raft_index i = fs.commit_index + 3;
    struct raft_configuration c, empty;
    tc_conf(&c, 3, 0);
    memset(&empty, 0, sizeof empty);
    CHECK_EQ_U(raft_install_snapshot(f, 0, fs.term, i, fs.term, &c), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 2, fs.term, i, fs.term, &c), ERR_INVALID); /* self */
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, i, fs.term + 1, &c), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, i, 0, &c), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, i, fs.term, NULL), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, i, fs.term, &empty), ERR_INVALID);
    CHECK_EQ_U(raft_install_snapshot(f, 1, fs.term, 0, fs.term, &c), ERR_INVALID);
    CHECK_EQ_U(tc_status(&tc, 2).snapshot_index, 0);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, fs.commit_index);
    CHECK(!raft_has_ready(f));
    tc_free(&tc);
}

/* A lone follower with log 1..10 (term 1), commit 3, applied 3. */
static void lone_follower(struct tc *tc, raft_term term)
{
    tc_init(tc, 3);
    raft_term terms[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    tc_set_log(tc, 2, terms, 10, term, 3);
    tc_node(tc, 2)->boot_commit = 3;
    tc_node(tc, 2)->boot_applied = 3;
    tc_start(tc, 2);
}

static void test_install_keeps_matching_suffix(void)
{
    struct tc tc;
    lone_follower(&tc, 1);
    struct raft_configuration c;
    tc_conf(&c, 3, 0);
    CHECK_EQ_U(raft_install_snapshot(tc_raft(&tc, 2), 1, 1, 6, 1, &c), 0);
    tc_node(&tc, 2)->applied = 6;
    struct raft_status st = tc_status(&tc, 2);
    CHECK_EQ_U(st.last_index, 10);
    CHECK_EQ_U(st.snapshot_index, 6);
    CHECK_EQ_U(st.commit_index, 6);
    CHECK_EQ_U(st.leader, 1);
    struct tc_write *w = next_write(&tc, 2);
    CHECK(w->reset);
    CHECK_EQ_U(w->compact_to, 6);
    CHECK_EQ_U(w->trunc, 0);
    CHECK_EQ_U(w->n_entries, 0);
    tc_persist(&tc, 2);
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, 10);
    /* The kept suffix goes on: a heartbeat committing 10 applies 7..10. */
    struct raft_msg hb = tc_msg(RAFT_MSG_APPEND, 1, 2, 1, 10, 1);
    hb.commit = 10;
    CHECK_EQ_U(raft_step(tc_raft(&tc, 2), &hb), 0);
    tc_node(&tc, 2)->manual_persist = false;
    tc_ready_all(&tc);
    CHECK_EQ_U(tc_node(&tc, 2)->applied, 10);
    tc_free(&tc);
}

static void test_install_discards_conflicting_log(void)
{
    struct tc tc;
    lone_follower(&tc, 1);
    struct raft_configuration c;
    tc_conf(&c, 2, 1);
    /* Entry 6 of the snapshot is of term 2: the local entry 6 (term 1) conflicts. */
    CHECK_EQ_U(raft_install_snapshot(tc_raft(&tc, 2), 3, 2, 6, 2, &c), 0);
    struct raft_status st = tc_status(&tc, 2);
    CHECK_EQ_U(st.last_index, 6);
    CHECK_EQ_U(st.term, 2);
    CHECK_EQ_U(st.leader, 3);
    CHECK_EQ_U(st.snapshot_term, 2);
    CHECK_EQ_U(raft_configuration(tc_raft(&tc, 2))->n, 3);
    CHECK(!raft_configuration(tc_raft(&tc, 2))->members[2].voter);
    struct tc_write *w = next_write(&tc, 2);
    CHECK(w->reset && w->hs);
    CHECK_EQ_U(w->term, 2);
    CHECK_EQ_U(w->compact_to, 6);
    CHECK_EQ_U(w->trunc, 7);
    tc_persist(&tc, 2);
    CHECK_EQ_U(tc_node(&tc, 2)->n_log, 6);
    tc_free(&tc);
}

static void test_boot_from_snapshot_point(void)
{
    struct raft_config cfg;
    tc_default_cfg(&cfg, 1);
    struct raft_configuration c3, c4;
    tc_conf(&c3, 3, 0);
    tc_conf(&c4, 3, 1);
    struct raft_blob *b4 = NULL;
    CHECK_EQ_U(raft_configuration_encode(&c4, &b4), 0);
    struct raft_entry e[5] = {
        {2, 11, RAFT_ENTRY_NORMAL, NULL}, {3, 12, RAFT_ENTRY_CONFIG, b4},
        {3, 13, RAFT_ENTRY_NORMAL, NULL}, {3, 14, RAFT_ENTRY_NOOP, NULL},
        {3, 15, RAFT_ENTRY_NORMAL, NULL},
    };
    struct raft_boot boot = {.term = 3,
                             .vote = 1,
                             .commit = 11,
                             .applied = 12,
                             .snapshot_index = 10,
                             .snapshot_term = 2,
                             .snapshot_conf = &c3,
                             .entries = e,
                             .n_entries = 5};
    struct raft *r = NULL;
    CHECK_EQ_U(raft_new(&cfg, &boot, &r), 0);
    raft_check_invariants(r);
    struct raft_status st;
    raft_status(r, &st);
    CHECK_EQ_U(st.snapshot_index, 10);
    CHECK_EQ_U(st.snapshot_term, 2);
    CHECK_EQ_U(st.last_index, 15);
    CHECK_EQ_U(st.applied_index, 12);
    CHECK_EQ_U(st.commit_index, 12);
    CHECK_EQ_U(st.term, 3);
    CHECK_EQ_U(raft_configuration(r)->n, 4);
    struct raft_configuration got;
    CHECK_EQ_U(raft_snapshot_meta(r, 10, NULL, &got), 0);
    CHECK_EQ_U(got.n, 3);
    CHECK_EQ_U(raft_snapshot_meta(r, 11, NULL, &got), 0);
    CHECK_EQ_U(got.n, 3);
    CHECK_EQ_U(raft_snapshot_meta(r, 12, NULL, &got), 0);
    CHECK_EQ_U(got.n, 4);
    CHECK_EQ_U(raft_compact(r, 13), ERR_INVALID);
    CHECK_EQ_U(raft_compact(r, 11), 0);
    struct raft_ready rd;
    raft_ready(r, &rd);
    CHECK_EQ_U(rd.compact_to, 11);
    CHECK_EQ_U(rd.snap_term, 2);
    CHECK_EQ_U(rd.snap_conf->n, 3);
    CHECK(rd.snap_conf_blob != NULL);
    CHECK_EQ_U(rd.n_committed, 0); /* 11, 12 were applied before the restart */
    raft_advance(r, &rd);
    raft_free(r);
    /* Without the snapshot's configuration, a wrong first index, or applied past the log. */
    struct raft_boot bad = boot;
    bad.snapshot_conf = NULL;
    CHECK_EQ_U(raft_new(&cfg, &bad, &r), ERR_CORRUPT);
    bad = boot;
    bad.snapshot_index = 9;
    CHECK_EQ_U(raft_new(&cfg, &bad, &r), ERR_CORRUPT);
    bad = boot;
    bad.applied = 16;
    CHECK_EQ_U(raft_new(&cfg, &bad, &r), ERR_CORRUPT);
    /* The snapshot installed before its term was durable: the term is raised. */
    bad = boot;
    bad.term = 1;
    bad.n_entries = 0;
    bad.applied = 10;
    r = NULL;
    CHECK_EQ_U(raft_new(&cfg, &bad, &r), 0);
    if (!r) return;
    raft_status(r, &st);
    CHECK_EQ_U(st.term, 2);
    CHECK_EQ_U(st.vote, 0);
    CHECK(raft_has_ready(r));
    raft_free(r);
    raft_blob_unref(b4);
}

/* A compacted follower restarts from its snapshot point and catches up. */
static void test_restart_after_compaction(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    propose_n(&tc, 1, 6);
    raft_index k = tc_status(&tc, 2).applied_index;
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 2), k), 0);
    tc_flush(&tc);
    CHECK_EQ_U(tc_node(&tc, 2)->snap_index, k);
    tc_stop(&tc, 2);
    tc_node(&tc, 2)->boot_applied = k;
    tc_start(&tc, 2);
    CHECK_EQ_U(tc_status(&tc, 2).snapshot_index, k);
    propose_n(&tc, 1, 3);
    settle(&tc, 1, 4);
    CHECK_EQ_U(tc_status(&tc, 2).commit_index, tc_status(&tc, 1).commit_index);
    CHECK_EQ_U(tc_node(&tc, 2)->applied, tc_status(&tc, 1).commit_index);
    tc_free(&tc);
}

/* A follower whose disk is wiped while nothing is written: its refusals carry indexes at or
 * below its old match, which a leader must not dismiss as stale forever (it would stay empty).
 * With the prefix compacted it gets a snapshot; without, the whole log. */
static void wipe(struct tc *tc, raft_id id)
{
    tc_stop(tc, id);
    struct tnode *t = tc_node(tc, id);
    for (size_t i = 0; i < t->n_log; i++)
        raft_blob_unref(t->log[i].data);
    memset(t->log, 0, sizeof t->log);
    t->n_log = 0;
    t->term = 0;
    t->vote = 0;
    t->boot_commit = t->boot_applied = t->applied = 0;
    t->snap_index = 0;
    t->snap_term = 0;
    tc_start(tc, id);
}

static void test_idle_wiped_follower_catches_up(void)
{
    struct tc tc;
    tc_init(&tc, 3);
    tc_cluster(&tc, 3);
    propose_n(&tc, 1, 6);
    settle(&tc, 1, 6);
    raft_index last = tc_status(&tc, 1).last_index;
    CHECK_EQ_U(tc_status(&tc, 3).last_index, last);
    wipe(&tc, 3);
    CHECK_EQ_U(tc_status(&tc, 3).last_index, 0);
    settle(&tc, 1, 30);
    CHECK_EQ_U(tc_status(&tc, 3).last_index, last);
    CHECK_EQ_U(tc_status(&tc, 3).commit_index, tc_status(&tc, 1).commit_index);
    /* Compacted: the wiped follower is sent a snapshot instead. */
    raft_index k = tc_status(&tc, 1).applied_index;
    CHECK_EQ_U(raft_compact(tc_raft(&tc, 1), k), 0);
    tc_flush(&tc);
    uint64_t asked = tc.sent_by_type[RAFT_MSG_SNAPSHOT];
    wipe(&tc, 3);
    settle(&tc, 1, 30);
    CHECK(tc.sent_by_type[RAFT_MSG_SNAPSHOT] > asked);
    tc_free(&tc);
}

int main(void)
{
    RUN(test_compact_drops_prefix_and_hands_out_the_snapshot_point);
    RUN(test_compact_bad_inputs);
    RUN(test_snapshot_configuration_as_of_index);
    RUN(test_leader_asks_once_for_a_snapshot);
    RUN(test_install_then_replication_resumes);
    RUN(test_report_ok_resumes_replication);
    RUN(test_failed_stream_asks_again_after_a_probe);
    RUN(test_lost_report_times_out);
    RUN(test_stale_snapshot_refused);
    RUN(test_install_bad_inputs);
    RUN(test_install_keeps_matching_suffix);
    RUN(test_install_discards_conflicting_log);
    RUN(test_boot_from_snapshot_point);
    RUN(test_restart_after_compaction);
    RUN(test_idle_wiped_follower_catches_up);
    return check_report();
}
