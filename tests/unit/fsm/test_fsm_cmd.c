/* test_fsm_cmd.c — the command codec: round trips, and every malformed input (truncation at
 * each byte, trailing bytes, bad version/op/lengths/paths) refused with ERR_CORRUPT. */
#include <stdlib.h>
#include <string.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"
#include "../../../src/fsm/fsm_reqid.h"

static const uint8_t rid[FSM_REQ_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static struct raft_blob *make_put(const char *path, const char *body)
{
    struct raft_blob *b = NULL;
    uint8_t *p = NULL;
    int rv = fsm_cmd_put_alloc(rid, path, strlen(path), strlen(body), &b, &p);
    CHECK_EQ_U(rv, 0);
    if (rv == 0) memcpy(p, body, strlen(body));
    return b;
}

static void test_cmd_put_round_trip(void)
{
    struct raft_blob *b = make_put("dir/file.txt", "hello world");
    struct fsm_cmd c;
    CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), 0);
    CHECK_EQ_U(c.op, FSM_CMD_PUT);
    CHECK(memcmp(c.req_id, rid, sizeof rid) == 0);
    CHECK_EQ_U(c.path_len, 12);
    CHECK(memcmp(c.path, "dir/file.txt", 12) == 0);
    CHECK_EQ_U(c.body_len, 11);
    CHECK(memcmp(c.body, "hello world", 11) == 0);
    raft_blob_unref(b);

    b = make_put("empty", "");
    CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), 0);
    CHECK_EQ_U(c.body_len, 0);
    raft_blob_unref(b);
}

static void test_cmd_delete_round_trip(void)
{
    struct raft_blob *b = NULL;
    CHECK_EQ_U(fsm_cmd_delete(rid, "a/b", 3, &b), 0);
    struct fsm_cmd c;
    CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), 0);
    CHECK_EQ_U(c.op, FSM_CMD_DELETE);
    CHECK_EQ_U(c.path_len, 3);
    CHECK_EQ_U(c.body_len, 0);
    CHECK(c.body == NULL);
    raft_blob_unref(b);
}

static void test_cmd_encode_refuses_bad_paths(void)
{
    struct raft_blob *b = (struct raft_blob *)1;
    uint8_t *p = (uint8_t *)1;
    CHECK_EQ_U(fsm_cmd_put_alloc(rid, "../x", 4, 1, &b, &p), ERR_INVALID);
    CHECK(b == NULL && p == NULL);
    CHECK_EQ_U(fsm_cmd_put_alloc(rid, "/x", 2, 1, &b, &p), ERR_INVALID);
    CHECK_EQ_U(fsm_cmd_delete(rid, "a//b", 4, &b), ERR_INVALID);
    CHECK(b == NULL);
    CHECK_EQ_U(fsm_cmd_put_alloc(rid, "x", 1, (uint64_t)UINT32_MAX, &b, &p), ERR_TOOBIG);
    CHECK_EQ_U(fsm_cmd_put_alloc(rid, "x", 1, 1ull << 40, &b, &p), ERR_TOOBIG);
}

/* Every strict prefix of a valid command, and the command plus one byte, is corrupt. */
static void check_truncations(const struct raft_blob *b)
{
    struct fsm_cmd c;
    for (size_t n = 0; n < b->len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan catches any over-read */
        memcpy(copy, b->data, n);
        CHECK_EQ_U(fsm_cmd_decode(copy, n, &c), ERR_CORRUPT);
        free(copy);
    }
    uint8_t *longer = malloc(b->len + 1);
    memcpy(longer, b->data, b->len);
    longer[b->len] = 0;
    CHECK_EQ_U(fsm_cmd_decode(longer, b->len + 1, &c), ERR_CORRUPT);
    free(longer);
}

static void test_cmd_truncated_and_extended(void)
{
    struct raft_blob *b = make_put("a/b/c", "body bytes");
    check_truncations(b);
    raft_blob_unref(b);
    CHECK_EQ_U(fsm_cmd_delete(rid, "some/path", 9, &b), 0);
    check_truncations(b);
    raft_blob_unref(b);
    struct fsm_cmd c;
    CHECK_EQ_U(fsm_cmd_decode(NULL, 0, &c), ERR_CORRUPT);
}

static void test_cmd_corrupt_fields(void)
{
    struct raft_blob *b = make_put("ab", "xyz");
    struct fsm_cmd c;
    size_t plen_at = 2 + FSM_REQ_ID_LEN, path_at = FSM_CMD_HDR_LEN, blen_at = path_at + 2;
    struct {
        size_t at;
        uint8_t val;
    } cases[] = {
        {0, 0},         {0, 2},           {1, 0},
        {1, 3},         {1, 0xff},                            /* version, op */
        {plen_at, 1},   {plen_at + 1, 3}, {plen_at + 1, 0},   /* path length */
        {path_at, '/'}, {path_at, 0},     {path_at + 1, '/'}, /* path bytes */
        {blen_at, 1},   {blen_at + 7, 4}, {blen_at + 7, 2},   /* body length */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t saved = b->data[cases[i].at];
        b->data[cases[i].at] = cases[i].val;
        CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), ERR_CORRUPT);
        b->data[cases[i].at] = saved;
    }
    CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), 0);
    /* A path of ".." with consistent lengths is still refused. */
    b->data[path_at] = '.';
    b->data[path_at + 1] = '.';
    CHECK_EQ_U(fsm_cmd_decode(b->data, b->len, &c), ERR_CORRUPT);
    raft_blob_unref(b);
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, FSM_REQ_ID_LEN);
}

/* Every one of n ids differs from every other. */
static void check_all_distinct(uint8_t (*ids)[FSM_REQ_ID_LEN], size_t n)
{
    qsort(ids, n, FSM_REQ_ID_LEN, cmp_id);
    size_t dups = 0;
    for (size_t i = 1; i < n; i++)
        dups += memcmp(ids[i - 1], ids[i], FSM_REQ_ID_LEN) == 0;
    CHECK_EQ_U(dups, 0);
}

/* n ids of g with the clock at now_us + i * step_us (step may be 0 or "negative" via wrap),
 * each strictly greater than the one before. */
static void gen_ids(struct fsm_reqid_gen *g, uint64_t now_us, int64_t step_us,
                    uint8_t (*ids)[FSM_REQ_ID_LEN], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_U(fsm_reqid_next(g, now_us + (uint64_t)((int64_t)i * step_us), ids[i]), 0);
        if (i > 0) CHECK(memcmp(ids[i - 1], ids[i], FSM_REQ_ID_LEN) < 0);
    }
}

/* A burst faster than the clock runs the first half ahead of it; a process restarted (a new
 * generator) inside that lead reuses first halves, and a second node issues the very same
 * ones: only the per-process seed keeps all those ids apart. A clock set back never repeats
 * an id within a process. */
static void test_reqid_unique_across_restarts_and_nodes(void)
{
    enum { N = 20000 };
    uint8_t(*ids)[FSM_REQ_ID_LEN] = calloc(4 * N, FSM_REQ_ID_LEN);
    CHECK(ids != NULL);
    if (!ids) return;
    const uint64_t t0 = 1800000000000000ull;
    struct fsm_reqid_gen before = {0}, after = {0}, other_node = {0}, stepped_back = {0};
    gen_ids(&before, t0, 0, ids, N);            /* 20,000 ids in "one microsecond" */
    gen_ids(&after, t0 + N / 2, 0, ids + N, N); /* restarted 10 us later */
    gen_ids(&other_node, t0, 0, ids + 2 * N, N);
    gen_ids(&stepped_back, t0 + N, -1, ids + 3 * N, N); /* the clock runs backwards */
    CHECK(memcmp(before.seed, after.seed, sizeof before.seed) != 0);
    check_all_distinct(ids, 4 * N);
    free(ids);
}

/* The process's own generator: one seed for all its ids (no getrandom per id), increasing. */
static void test_req_id_new_increases_with_one_seed(void)
{
    uint8_t a[FSM_REQ_ID_LEN], b[FSM_REQ_ID_LEN];
    CHECK_EQ_U(fsm_req_id_new(a), 0);
    for (int i = 0; i < 100000; i++) {
        CHECK_EQ_U(fsm_req_id_new(b), 0);
        if (memcmp(a, b, FSM_REQ_ID_LEN) >= 0 || memcmp(a + 8, b + 8, 8) != 0) {
            CHECK(!"ids must increase and share the process seed");
            break;
        }
        memcpy(a, b, sizeof a);
    }
}

int main(void)
{
    RUN(test_cmd_put_round_trip);
    RUN(test_cmd_delete_round_trip);
    RUN(test_cmd_encode_refuses_bad_paths);
    RUN(test_cmd_truncated_and_extended);
    RUN(test_cmd_corrupt_fields);
    RUN(test_reqid_unique_across_restarts_and_nodes);
    RUN(test_req_id_new_increases_with_one_seed);
    return check_report();
}
