/* test_fsm_cmd.c — the command codec: round trips, and every malformed input (truncation at
 * each byte, trailing bytes, bad version/op/lengths/paths) refused with ERR_CORRUPT. */
#include <stdlib.h>
#include <string.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"

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

int main(void)
{
    RUN(test_cmd_put_round_trip);
    RUN(test_cmd_delete_round_trip);
    RUN(test_cmd_encode_refuses_bad_paths);
    RUN(test_cmd_truncated_and_extended);
    RUN(test_cmd_corrupt_fields);
    return check_report();
}
