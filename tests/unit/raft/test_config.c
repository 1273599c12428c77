/* test_config.c — configuration encoding: round trips, and every malformed input (they come
 * from disk and the network) refused with ERR_CORRUPT, never a crash. Also blob refcounts. */
#include "harness.h"

static void sample(struct raft_configuration *c)
{
    memset(c, 0, sizeof *c);
    c->n = 3;
    for (uint32_t i = 0; i < 3; i++) {
        c->members[i].id = 0x1000000000000000ull + i;
        c->members[i].voter = i != 2;
        c->members[i].info_len = (uint16_t)(i * 100);
        memset(c->members[i].info, 'a' + (int)i, c->members[i].info_len);
    }
}

static void test_configuration_round_trip(void)
{
    struct raft_configuration c, d;
    sample(&c);
    struct raft_blob *b = NULL;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), 0);
    CHECK_EQ_U(raft_configuration_decode(b->data, b->len, &d), 0);
    CHECK_EQ_U(d.n, 3);
    for (uint32_t i = 0; i < 3; i++) {
        CHECK_EQ_U(d.members[i].id, c.members[i].id);
        CHECK_EQ_U(d.members[i].voter, c.members[i].voter);
        CHECK_EQ_U(d.members[i].info_len, c.members[i].info_len);
        CHECK(memcmp(d.members[i].info, c.members[i].info, c.members[i].info_len) == 0);
    }
    CHECK(raft_configuration_find(&d, c.members[1].id) == &d.members[1]);
    CHECK(raft_configuration_find(&d, 5) == NULL);
    CHECK(raft_configuration_find(&d, 0) == NULL);
    raft_blob_unref(b);
}

static void test_configuration_full_round_trip(void)
{
    struct raft_configuration c, d;
    memset(&c, 0, sizeof c);
    c.n = RAFT_MAX_NODES;
    for (uint32_t i = 0; i < c.n; i++) {
        c.members[i].id = i + 1;
        c.members[i].voter = true;
        c.members[i].info_len = RAFT_MEMBER_INFO_MAX;
    }
    struct raft_blob *b = NULL;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), 0);
    CHECK_EQ_U(raft_configuration_decode(b->data, b->len, &d), 0);
    CHECK_EQ_U(d.n, RAFT_MAX_NODES);
    raft_blob_unref(b);
}

static void test_configuration_encode_refuses_bad_input(void)
{
    struct raft_configuration c;
    struct raft_blob *b = NULL;
    sample(&c);
    c.n = 0;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    sample(&c);
    c.n = RAFT_MAX_NODES + 1;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    sample(&c);
    c.members[1].id = c.members[0].id; /* duplicate */
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    sample(&c);
    c.members[2].id = 0;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    sample(&c);
    c.members[0].voter = c.members[1].voter = false; /* no voter */
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    sample(&c);
    c.members[0].info_len = RAFT_MEMBER_INFO_MAX + 1;
    CHECK_EQ_U(raft_configuration_encode(&c, &b), ERR_INVALID);
    CHECK(b == NULL);
}

static void test_configuration_decode_refuses_corrupt_input(void)
{
    struct raft_configuration c, d;
    sample(&c);
    struct raft_blob *b = NULL;
    raft_configuration_encode(&c, &b);
    uint8_t buf[2048];
    memcpy(buf, b->data, b->len);
    /* Every truncation. */
    for (uint32_t len = 0; len < b->len; len++)
        CHECK_EQ_U(raft_configuration_decode(buf, len, &d), ERR_CORRUPT);
    CHECK_EQ_U(raft_configuration_decode(NULL, 0, &d), ERR_CORRUPT);
    /* A trailing byte. */
    buf[b->len] = 0;
    CHECK_EQ_U(raft_configuration_decode(buf, b->len + 1, &d), ERR_CORRUPT);
    /* Bad version, bad counts, bad voter flag, an info length past the end or the cap. */
    uint8_t t[2048];
    memcpy(t, buf, b->len);
    t[0] = 9;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    memcpy(t, buf, b->len);
    t[1] = 0;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    t[1] = RAFT_MAX_NODES + 1;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    memcpy(t, buf, b->len);
    t[2 + 8] = 2;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    memcpy(t, buf, b->len);
    t[2 + 9] = 0xff;
    t[2 + 10] = 0xff;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    /* Zero id, duplicate id. */
    memcpy(t, buf, b->len);
    memset(t + 2, 0, 8);
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    memcpy(t, buf, b->len);
    size_t second = 2 + 11 + c.members[0].info_len;
    memcpy(t + second, t + 2, 8);
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    /* No voters. */
    memcpy(t, buf, b->len);
    t[2 + 8] = 0;
    t[second + 8] = 0;
    CHECK_EQ_U(raft_configuration_decode(t, b->len, &d), ERR_CORRUPT);
    /* Every single-byte flip either decodes to a valid configuration or is refused. */
    for (uint32_t i = 0; i < b->len; i++) {
        memcpy(t, buf, b->len);
        t[i] ^= 0x5a;
        int rv = raft_configuration_decode(t, b->len, &d);
        CHECK(rv == 0 || rv == ERR_CORRUPT);
    }
    raft_blob_unref(b);
}

static void test_blob_refcount(void)
{
    struct raft_blob *b = raft_blob_new(4);
    CHECK(b != NULL);
    CHECK_EQ_U(b->len, 4);
    CHECK(raft_blob_ref(b) == b);
    CHECK_EQ_U(b->refs, 2);
    raft_blob_unref(b);
    CHECK_EQ_U(b->refs, 1);
    raft_blob_unref(b);
    raft_blob_unref(NULL);
    CHECK(raft_blob_ref(NULL) == NULL);
}

int main(void)
{
    RUN(test_configuration_round_trip);
    RUN(test_configuration_full_round_trip);
    RUN(test_configuration_encode_refuses_bad_input);
    RUN(test_configuration_decode_refuses_corrupt_input);
    RUN(test_blob_refcount);
    return check_report();
}
