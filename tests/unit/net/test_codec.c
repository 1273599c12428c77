/* test_codec.c — codec round trips for every frame type and field, and every kind of bad
 * input: truncation at each byte, corrupt checksums, bad headers, giant lengths, lying counts. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "codec.h"
#include "err.h"

static struct raft_blob *blob_of(const char *s, size_t n)
{
    struct raft_blob *b = raft_blob_new((uint32_t)n);
    for (size_t i = 0; i < n; i++)
        b->data[i] = s ? (uint8_t)s[i % strlen(s)] : (uint8_t)(i * 7);
    return b;
}

static bool blob_eq(const struct raft_blob *a, const struct raft_blob *b)
{
    if (!a || !b) return a == b;
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static bool msg_eq(const struct raft_msg *a, const struct raft_msg *b)
{
    if (a->type != b->type || a->from != b->from || a->to != b->to || a->term != b->term ||
        a->index != b->index || a->log_term != b->log_term || a->commit != b->commit ||
        a->hint != b->hint || a->reject != b->reject || a->transfer != b->transfer ||
        a->ctx != b->ctx || a->n_entries != b->n_entries)
        return false;
    for (uint32_t i = 0; i < a->n_entries; i++) {
        const struct raft_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->term != y->term || x->index != y->index || x->type != y->type ||
            !blob_eq(x->data, y->data))
            return false;
    }
    return true;
}

/* Parses buf as exactly one frame of the given type; returns the payload or NULL. */
static const uint8_t *one_frame(const struct codec_buf *b, uint8_t type, size_t *len)
{
    struct codec_frame_hdr h;
    size_t need = 1;
    int rv = codec_frame_parse(b->data, b->len, CODEC_MAX_FRAME_BYTES, &h, &need);
    CHECK_EQ_U(rv, 0);
    CHECK_EQ_U(need, 0);
    CHECK_EQ_U(h.type, type);
    CHECK_EQ_U(h.version, CODEC_VERSION);
    CHECK_EQ_U(CODEC_HDR_BYTES + h.len, b->len);
    if (rv || need || h.type != type) return NULL;
    *len = h.len;
    return b->data + CODEC_HDR_BYTES;
}

static struct raft_msg sample_msg(uint8_t type, struct raft_entry *ents, uint32_t n)
{
    struct raft_msg m = {.type = type,
                         .from = 0x1122334455667788ull,
                         .to = 0x8877665544332211ull,
                         .term = 1000u + type,
                         .index = UINT64_MAX - type,
                         .log_term = 77,
                         .commit = 1ull << 40,
                         .hint = 3,
                         .reject = type % 2,
                         .transfer = type == RAFT_MSG_VOTE,
                         .ctx = 0xdeadbeefcafef00dull,
                         .n_entries = n,
                         .entries = ents};
    return m;
}

static void test_msg_round_trip_every_type(void)
{
    for (uint8_t type = 1; type < RAFT_MSG__COUNT; type++) {
        struct raft_msg m = sample_msg(type, NULL, 0), d;
        struct codec_buf b;
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
        size_t len = 0;
        const uint8_t *p = one_frame(&b, CODEC_RAFT, &len);
        CHECK(p && codec_decode_msg(p, len, &d) == 0 && msg_eq(&m, &d));
        if (p) codec_msg_free(&d);
        codec_buf_free(&b);
    }
}

static void test_msg_entries_round_trip(void)
{
    struct raft_entry e[5] = {
        {.term = 1, .index = 10, .type = RAFT_ENTRY_NOOP, .data = NULL},
        {.term = 2, .index = 11, .type = RAFT_ENTRY_NORMAL, .data = blob_of(NULL, 0)},
        {.term = 2, .index = 12, .type = RAFT_ENTRY_NORMAL, .data = blob_of("abc", 3)},
        {.term = 3, .index = 13, .type = RAFT_ENTRY_CONFIG, .data = blob_of(NULL, 100000)},
        {.term = UINT64_MAX, .index = UINT64_MAX, .type = 255, .data = blob_of("x", 1)},
    };
    struct raft_msg m = sample_msg(RAFT_MSG_APPEND, e, 5), d;
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
    size_t len = 0;
    const uint8_t *p = one_frame(&b, CODEC_RAFT, &len);
    CHECK(p && codec_decode_msg(p, len, &d) == 0);
    if (p) {
        CHECK(msg_eq(&m, &d));
        CHECK(d.entries[0].data == NULL);                                /* NULL stays NULL */
        CHECK(d.entries[1].data != NULL && d.entries[1].data->len == 0); /* empty stays empty */
        CHECK(d.entries[3].data != e[3].data);                           /* fresh blobs */
        codec_msg_free(&d);
        CHECK(d.entries == NULL && d.n_entries == 0);
    }
    for (int i = 0; i < 5; i++)
        raft_blob_unref(e[i].data);
    codec_buf_free(&b);
}

static void test_hello_round_trip(void)
{
    struct codec_hello h = {.cluster = "demo", .name = "node1", .id = 42, .addr = "127.0.0.1:8001"},
                       d;
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_hello(&h, &b), 0);
    size_t len = 0;
    const uint8_t *p = one_frame(&b, CODEC_HELLO, &len);
    CHECK(p && codec_decode_hello(p, len, &d) == 0);
    CHECK(strcmp(d.cluster, "demo") == 0 && strcmp(d.name, "node1") == 0 && d.id == 42 &&
          strcmp(d.addr, "127.0.0.1:8001") == 0);
    codec_buf_free(&b);
    /* Required fields: an empty cluster, an empty name or id 0 is refused on decode. */
    struct codec_hello bad[3] = {h, h, h};
    bad[0].cluster[0] = '\0';
    bad[1].name[0] = '\0';
    bad[2].id = 0;
    for (int i = 0; i < 3; i++) {
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_hello(&bad[i], &b), 0);
        p = one_frame(&b, CODEC_HELLO, &len);
        CHECK(p && codec_decode_hello(p, len, &d) == ERR_PROTO);
        codec_buf_free(&b);
    }
    /* A string over the limit cannot be encoded. */
    struct codec_hello big = h;
    memset(big.addr, 'a', CODEC_STR_MAX);
    big.addr[CODEC_STR_MAX] = '\0';
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_hello(&big, &b), 0); /* exactly the maximum is fine */
    codec_buf_free(&b);
}

static void test_fwd_round_trip(void)
{
    for (uint8_t op = CODEC_FWD_PROPOSE; op <= CODEC_FWD_TRANSFER; op++) {
        struct raft_blob *pl = op == CODEC_FWD_JOIN ? NULL : blob_of("payload", 5000u * op);
        struct codec_buf b;
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_fwd_req(900u + op, op, pl, &b), 0);
        size_t len = 0;
        const uint8_t *p = one_frame(&b, CODEC_FWD_REQ, &len);
        struct codec_fwd_req r;
        CHECK(p && codec_decode_fwd_req(p, len, &r) == 0);
        if (p) {
            CHECK(r.fwd_id == 900u + op && r.op == op && r.payload != NULL);
            CHECK(pl ? blob_eq(pl, r.payload) : r.payload->len == 0);
            codec_fwd_req_free(&r);
        }
        raft_blob_unref(pl);
        codec_buf_free(&b);
    }
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_fwd_req(1, 0, NULL, &b), ERR_INVALID);
    CHECK_EQ_U(codec_encode_fwd_req(1, 5, NULL, &b), ERR_INVALID);
    CHECK_EQ_U(b.len, 0);
    const char *names[2] = {"", "node3"};
    for (int i = 0; i < 2; i++) {
        struct codec_fwd_resp r = {.fwd_id = UINT64_MAX,
                                   .err = ERR_NOTLEADER,
                                   .index = 5,
                                   .term = 6},
                              d;
        strcpy(r.leader_name, names[i]);
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_fwd_resp(&r, &b), 0);
        size_t len = 0;
        const uint8_t *p = one_frame(&b, CODEC_FWD_RESP, &len);
        CHECK(p && codec_decode_fwd_resp(p, len, &d) == 0);
        CHECK(d.fwd_id == r.fwd_id && d.err == r.err && d.index == 5 && d.term == 6 &&
              strcmp(d.leader_name, names[i]) == 0);
        codec_buf_free(&b);
    }
}

static bool chunk_eq(const struct codec_snap_chunk *a, const struct codec_snap_chunk *b)
{
    return a->session == b->session && a->term == b->term && a->index == b->index &&
           a->offset == b->offset && a->last == b->last && a->len == b->len &&
           (a->len == 0 || memcmp(a->bytes, b->bytes, a->len) == 0);
}

static void test_snap_chunk_round_trip(void)
{
    struct raft_blob *data = blob_of(NULL, CODEC_SNAP_CHUNK_MAX);
    uint32_t lens[4] = {0, 1, 4095, CODEC_SNAP_CHUNK_MAX};
    for (int i = 0; i < 4; i++) {
        struct codec_snap_chunk c = {.session = UINT64_MAX - (uint64_t)i,
                                     .term = 7,
                                     .index = 1ull << 40,
                                     .offset = (uint64_t)i << 18,
                                     .last = i % 2,
                                     .len = lens[i],
                                     .bytes = data->data},
                                d;
        struct codec_buf b;
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_snap_chunk(&c, &b), 0);
        size_t len = 0;
        const uint8_t *p = one_frame(&b, CODEC_SNAP_CHUNK, &len);
        CHECK(p && codec_decode_snap_chunk(p, len, &d) == 0 && chunk_eq(&c, &d));
        if (p && lens[i]) CHECK(d.bytes >= p && d.bytes + d.len <= p + len); /* a view */
        /* The scatter form (bytes from a blob, referenced when large) is the same frame. */
        struct raft_blob *part = blob_of(NULL, lens[i]);
        memcpy(part->data, data->data, lens[i]);
        struct codec_frame f;
        codec_frame_init(&f, 4096);
        CHECK_EQ_U(codec_frame_snap_chunk(&f, &c, lens[i] ? part : NULL), 0);
        CHECK_EQ_U(f.total, b.len);
        CHECK_EQ_U(part->refs, lens[i] >= 4096 ? 2u : 1u);
        size_t off = 0;
        bool same = true;
        for (size_t k = 0; k < f.n_segs; k++) {
            const struct codec_seg *s = &f.segs[k];
            const uint8_t *sp = s->blob ? s->blob->data : f.inline_bytes.data + s->off;
            same = same && memcmp(sp, b.data + off, s->len) == 0;
            off += s->len;
        }
        CHECK(same && off == b.len);
        codec_frame_free(&f);
        raft_blob_unref(part);
        codec_buf_free(&b);
    }
    /* Over the chunk maximum: refused by both encoders. */
    struct raft_blob *big = blob_of(NULL, CODEC_SNAP_CHUNK_MAX + 1);
    struct codec_snap_chunk c = {.session = 1, .len = big->len, .bytes = big->data};
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_chunk(&c, &b), ERR_TOOBIG);
    struct codec_frame f;
    codec_frame_init(&f, 4096);
    CHECK_EQ_U(codec_frame_snap_chunk(&f, &c, big), ERR_TOOBIG);
    CHECK_EQ_U(big->refs, 1);
    codec_frame_free(&f);
    CHECK_EQ_U(b.len, 0);
    codec_buf_free(&b);
    raft_blob_unref(big);
    raft_blob_unref(data);
}

static void test_snap_ack_round_trip(void)
{
    const char *reasons[3] = {"", "stale term", ""};
    for (uint8_t st = CODEC_SNAP_OK; st <= CODEC_SNAP_INSTALLED; st++) {
        struct codec_snap_ack a = {.session = 99,
                                   .term = 3,
                                   .offset = 1u << 20,
                                   .status = st,
                                   .index = 1234},
                              d;
        strcpy(a.reason, reasons[st]);
        struct codec_buf b;
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_snap_ack(&a, &b), 0);
        size_t len = 0;
        const uint8_t *p = one_frame(&b, CODEC_SNAP_ACK, &len);
        CHECK(p && codec_decode_snap_ack(p, len, &d) == 0);
        CHECK(d.session == 99 && d.term == 3 && d.offset == 1u << 20 && d.status == st &&
              d.index == 1234 && strcmp(d.reason, reasons[st]) == 0);
        codec_buf_free(&b);
    }
    /* A reason is only sent with ABORT; an unknown status cannot be encoded. */
    struct codec_snap_ack a = {.session = 1, .status = CODEC_SNAP_OK}, d;
    strcpy(a.reason, "ignored");
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_ack(&a, &b), 0);
    size_t len = 0;
    const uint8_t *p = one_frame(&b, CODEC_SNAP_ACK, &len);
    CHECK(p && codec_decode_snap_ack(p, len, &d) == 0 && d.reason[0] == '\0');
    codec_buf_free(&b);
    a.status = CODEC_SNAP_INSTALLED + 1;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_ack(&a, &b), ERR_INVALID);
    codec_buf_free(&b);
}

/* Every frame type, encoded back to back into one buffer. */
static void encode_all(struct codec_buf *b, struct raft_blob *big)
{
    struct raft_entry e[2] = {{.term = 1, .index = 1, .type = RAFT_ENTRY_NORMAL, .data = big},
                              {.term = 1, .index = 2, .type = RAFT_ENTRY_NOOP}};
    struct raft_msg m = sample_msg(RAFT_MSG_APPEND, e, 2);
    struct codec_hello h = {.cluster = "c", .name = "n", .id = 1, .addr = "a:1"};
    struct codec_fwd_resp r = {.fwd_id = 1, .leader_name = "x"};
    CHECK_EQ_U(codec_encode_hello(&h, b), 0);
    CHECK_EQ_U(codec_encode_msg(&m, b), 0);
    CHECK_EQ_U(codec_encode_fwd_req(7, CODEC_FWD_PROPOSE, big, b), 0);
    CHECK_EQ_U(codec_encode_fwd_resp(&r, b), 0);
    struct codec_snap_chunk c = {
        .session = 5, .term = 2, .index = 9, .offset = 0, .len = 300, .bytes = big->data};
    struct codec_snap_ack a = {.session = 5, .status = CODEC_SNAP_ABORT, .reason = "why"};
    CHECK_EQ_U(codec_encode_snap_chunk(&c, b), 0);
    CHECK_EQ_U(codec_encode_snap_ack(&a, b), 0);
}

static int decode_any(uint8_t type, const uint8_t *p, size_t len)
{
    struct raft_msg m;
    struct codec_hello h;
    struct codec_fwd_req q;
    struct codec_fwd_resp r;
    struct codec_snap_chunk c;
    struct codec_snap_ack a;
    int rv = ERR_INVALID;
    switch (type) {
    case CODEC_HELLO:
        rv = codec_decode_hello(p, len, &h);
        break;
    case CODEC_RAFT:
        rv = codec_decode_msg(p, len, &m);
        if (!rv) codec_msg_free(&m);
        break;
    case CODEC_FWD_REQ:
        rv = codec_decode_fwd_req(p, len, &q);
        if (!rv) codec_fwd_req_free(&q);
        break;
    case CODEC_FWD_RESP:
        rv = codec_decode_fwd_resp(p, len, &r);
        break;
    case CODEC_SNAP_CHUNK:
        rv = codec_decode_snap_chunk(p, len, &c);
        break;
    case CODEC_SNAP_ACK:
        rv = codec_decode_snap_ack(p, len, &a);
        break;
    }
    return rv;
}

/* Every prefix of every frame: the parser asks for more, never errs, never overreads (a
 * prefix is copied into an exact-size heap block so ASan sees any overread). Every prefix
 * of every payload, and the payload plus a byte, is refused by its decoder. */
static void test_truncation_every_byte(void)
{
    struct raft_blob *big = blob_of("zz", 300);
    struct codec_buf b;
    codec_buf_init(&b);
    encode_all(&b, big);
    size_t off = 0;
    int frames = 0, bad = 0;
    while (off < b.len) {
        struct codec_frame_hdr h;
        size_t need = 0;
        for (size_t n = 0; n < CODEC_HDR_BYTES + 8 && off + n < b.len; n++) {
            uint8_t *cp = malloc(n ? n : 1);
            memcpy(cp, b.data + off, n);
            int rv = codec_frame_parse(cp, n, CODEC_MAX_FRAME_BYTES, &h, &need);
            bad += rv != 0 || need <= n;
            free(cp);
        }
        CHECK_EQ_U(codec_frame_parse(b.data + off, b.len - off, CODEC_MAX_FRAME_BYTES, &h, &need),
                   0);
        CHECK_EQ_U(need, 0);
        const uint8_t *p = b.data + off + CODEC_HDR_BYTES;
        for (size_t n = 0; n < h.len; n++) {
            uint8_t *cp = malloc(n ? n : 1);
            memcpy(cp, p, n);
            bad += decode_any(h.type, cp, n) != ERR_PROTO;
            free(cp);
        }
        uint8_t *longer = malloc(h.len + 1);
        memcpy(longer, p, h.len);
        longer[h.len] = 0;
        bad += decode_any(h.type, longer, h.len + 1) != ERR_PROTO;
        bad += decode_any(h.type, longer, h.len) != 0;
        free(longer);
        off += CODEC_HDR_BYTES + h.len;
        frames++;
    }
    CHECK_EQ_U(frames, 6);
    CHECK_EQ_U(bad, 0);
    codec_buf_free(&b);
    raft_blob_unref(big);
}

static void test_corrupt_checksum(void)
{
    struct codec_buf b;
    codec_buf_init(&b);
    struct raft_msg m = sample_msg(RAFT_MSG_VOTE, NULL, 0);
    CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
    struct codec_frame_hdr h;
    size_t need;
    for (size_t i = CODEC_HDR_BYTES; i < b.len; i++) {
        b.data[i] ^= 0x40;
        CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), ERR_CORRUPT);
        b.data[i] ^= 0x40;
    }
    for (size_t i = 8; i < 12; i++) {
        b.data[i] ^= 1;
        CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), ERR_CORRUPT);
        b.data[i] ^= 1;
    }
    CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), 0);
    codec_buf_free(&b);
}

/* The frame checksum is zlib's CRC-32 whichever library computes it (libdeflate when built
 * with it): frames of both builds interoperate during a rolling upgrade. Payloads past 1 KiB
 * (the carry-less-multiply path) and of odd lengths. */
static void test_checksum_is_zlib_crc32(void)
{
    for (size_t n = 0; n < 3000; n += 997) {
        struct raft_entry e = {
            .term = 2, .index = 9, .type = RAFT_ENTRY_NORMAL, .data = blob_of(NULL, n)};
        for (size_t i = 0; i < n; i++)
            e.data->data[i] = (uint8_t)(i * 131 + n);
        struct raft_msg m = sample_msg(RAFT_MSG_APPEND, &e, 1);
        struct codec_buf b;
        codec_buf_init(&b);
        CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
        uLong want =
            crc32_z(crc32(0L, Z_NULL, 0), b.data + CODEC_HDR_BYTES, b.len - CODEC_HDR_BYTES);
        uint32_t got = (uint32_t)b.data[8] << 24 | (uint32_t)b.data[9] << 16 |
                       (uint32_t)b.data[10] << 8 | b.data[11];
        CHECK_EQ_U(got, (uint32_t)want);
        raft_blob_unref(e.data);
        codec_buf_free(&b);
    }
}

/* A SNAP_CHUNK's checksum covers its fixed fields only (the stream bytes carry their own
 * CRCs); the flag saying so is required on SNAP_CHUNK and refused on any other type. */
static void test_snap_chunk_checksum_head(void)
{
    uint8_t bytes[64];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7);
    struct codec_snap_chunk c = {
        .session = 9, .term = 2, .index = 30, .offset = 4096, .len = sizeof bytes, .bytes = bytes};
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_chunk(&c, &b), 0);
    CHECK_EQ_U(b.len, CODEC_HDR_BYTES + CODEC_SNAP_CHUNK_HEAD + sizeof bytes);
    struct codec_frame_hdr h;
    size_t need;
    CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), 0);
    CHECK_EQ_U(h.flags, CODEC_FLAG_CRC_HEAD);
    for (size_t i = CODEC_HDR_BYTES; i < b.len; i++) {
        b.data[i] ^= 0x10;
        int want = i < CODEC_HDR_BYTES + CODEC_SNAP_CHUNK_HEAD ? ERR_CORRUPT : 0;
        CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), want);
        b.data[i] ^= 0x10;
    }
    /* Without the flag (a full-payload checksum, even a right one): refused. */
    b.data[7] = 0;
    uLong crc = crc32_z(crc32(0L, Z_NULL, 0), b.data + CODEC_HDR_BYTES, b.len - CODEC_HDR_BYTES);
    for (int i = 0; i < 4; i++)
        b.data[8 + i] = (uint8_t)(crc >> (24 - 8 * i));
    CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), ERR_PROTO);
    codec_buf_free(&b);
    /* The flag on another type: refused. */
    struct codec_snap_ack a = {.session = 5, .status = CODEC_SNAP_OK};
    CHECK_EQ_U(codec_encode_snap_ack(&a, &b), 0);
    b.data[7] = CODEC_FLAG_CRC_HEAD;
    CHECK_EQ_U(codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need), ERR_PROTO);
    codec_buf_free(&b);
}

static void test_bad_header(void)
{
    struct codec_buf b;
    codec_buf_init(&b);
    struct codec_fwd_resp r = {.fwd_id = 1};
    CHECK_EQ_U(codec_encode_fwd_resp(&r, &b), 0);
    struct codec_frame_hdr h;
    size_t need;
    const uint8_t bytes[][2] = {{4, 0},   {4, 2}, {4, 255}, {5, 0}, {5, CODEC_TYPE__COUNT},
                                {5, 200}, {6, 1}, {7, 1}};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
        uint8_t saved = b.data[bytes[i][0]];
        b.data[bytes[i][0]] = bytes[i][1];
        /* Refused with the header alone, before any payload arrives. */
        CHECK_EQ_U(codec_frame_parse(b.data, CODEC_HDR_BYTES, CODEC_MAX_FRAME_BYTES, &h, &need),
                   ERR_PROTO);
        b.data[bytes[i][0]] = saved;
    }
    codec_buf_free(&b);
}

static void test_giant_length(void)
{
    uint8_t hdr[CODEC_HDR_BYTES] = {0xff, 0xff, 0xff, 0xff, CODEC_VERSION, CODEC_RAFT, 0, 0};
    struct codec_frame_hdr h;
    size_t need = 0;
    CHECK_EQ_U(codec_frame_parse(hdr, sizeof hdr, CODEC_MAX_FRAME_BYTES, &h, &need), ERR_TOOBIG);
    uint32_t lens[3] = {CODEC_MAX_FRAME_BYTES - CODEC_HDR_BYTES + 1,
                        CODEC_MAX_FRAME_BYTES - CODEC_HDR_BYTES, 5000};
    int want[3] = {ERR_TOOBIG, 0, 0};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 4; k++)
            hdr[k] = (uint8_t)(lens[i] >> (24 - 8 * k));
        CHECK_EQ_U(codec_frame_parse(hdr, sizeof hdr, CODEC_MAX_FRAME_BYTES, &h, &need), want[i]);
        if (!want[i]) CHECK_EQ_U(need, CODEC_HDR_BYTES + (size_t)lens[i]);
    }
    /* A smaller limit (before a handshake) applies too. */
    CHECK_EQ_U(codec_frame_parse(hdr, sizeof hdr, 4096, &h, &need), ERR_TOOBIG);
    CHECK_EQ_U(codec_frame_parse(hdr, sizeof hdr, 0, &h, &need), ERR_TOOBIG);
    /* Encoding something over the maximum is refused, without copying it. */
    struct raft_blob *huge = raft_blob_new(CODEC_MAX_FRAME_BYTES);
    CHECK(huge != NULL);
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_fwd_req(1, CODEC_FWD_PROPOSE, huge, &b), ERR_TOOBIG);
    struct codec_frame f;
    codec_frame_init(&f, 1);
    CHECK_EQ_U(codec_frame_fwd_req(&f, 1, CODEC_FWD_PROPOSE, huge), ERR_TOOBIG);
    CHECK_EQ_U(huge->refs, 1);
    codec_frame_free(&f);
    raft_blob_unref(huge);
    CHECK_EQ_U(b.len, 0);
    codec_buf_free(&b);
}

/* Payloads that pass the checksum but lie: each is refused by the decoder. */
static void test_inconsistent_payloads(void)
{
    struct codec_buf b;
    codec_buf_init(&b);
    struct raft_blob *pl = blob_of("q", 10);
    struct raft_entry e = {.term = 1, .index = 1, .type = RAFT_ENTRY_NORMAL, .data = pl};
    struct raft_msg m = sample_msg(RAFT_MSG_APPEND, &e, 1);
    CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
    uint8_t *p = b.data + CODEC_HDR_BYTES;
    size_t len = b.len - CODEC_HDR_BYTES;
    const size_t n_off = 2 + 8 * 8, ent = n_off + 4;
    struct {
        size_t off;
        uint8_t val;
    } lies[] = {
        {0, 0},               /* message type 0 */
        {0, RAFT_MSG__COUNT}, /* unknown message type */
        {1, 0x04},            /* unknown message flag */
        {n_off, 0xff},        /* n_entries 0xff000001 */
        {n_off + 3, 2},       /* two entries, bytes for one */
        {n_off + 3, 0},       /* zero entries, trailing bytes */
        {ent + 16, 0},        /* entry type 0 */
        {ent + 17, 0},        /* no data but a length */
        {ent + 17, 0x03},     /* unknown entry flag */
        {ent + 18, 0x7f},     /* payload length past the end */
        {ent + 21, 11},       /* payload one byte longer than what is left */
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        uint8_t saved = p[lies[i].off];
        p[lies[i].off] = lies[i].val;
        struct raft_msg d;
        CHECK_EQ_U(codec_decode_msg(p, len, &d), ERR_PROTO);
        p[lies[i].off] = saved;
    }
    struct raft_msg d;
    CHECK_EQ_U(codec_decode_msg(p, len, &d), 0);
    codec_msg_free(&d);
    raft_blob_unref(pl);
    codec_buf_free(&b);

    /* FWD_REQ with an unknown op or a length past the end; FWD_RESP with a huge error code;
     * a HELLO string with a NUL inside or a length over the limit. */
    uint8_t fr[13] = {0, 0, 0, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0};
    struct codec_fwd_req q;
    CHECK_EQ_U(codec_decode_fwd_req(fr, sizeof fr, &q), ERR_PROTO);
    fr[8] = 1;
    fr[12] = 1;
    CHECK_EQ_U(codec_decode_fwd_req(fr, sizeof fr, &q), ERR_PROTO);
    uint8_t rs[30] = {0};
    rs[8] = 0xff;
    struct codec_fwd_resp r;
    CHECK_EQ_U(codec_decode_fwd_resp(rs, sizeof rs, &r), ERR_PROTO);
    rs[8] = 0;
    CHECK_EQ_U(codec_decode_fwd_resp(rs, sizeof rs, &r), 0);
    uint8_t hs[] = {0, 2, 'a', 0, 0, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0};
    struct codec_hello h;
    CHECK_EQ_U(codec_decode_hello(hs, sizeof hs, &h), ERR_PROTO);
    hs[3] = 'b';
    CHECK_EQ_U(codec_decode_hello(hs, sizeof hs, &h), 0);
    hs[0] = 1; /* cluster length 258 */
    CHECK_EQ_U(codec_decode_hello(hs, sizeof hs, &h), ERR_PROTO);
}

/* SNAP_CHUNK and SNAP_ACK payloads that pass the checksum but lie. */
static void test_snap_inconsistent(void)
{
    uint8_t bytes[16] = "0123456789abcdef";
    struct codec_snap_chunk c = {.session = 1,
                                 .term = 2,
                                 .index = 3,
                                 .offset = 4,
                                 .len = 16,
                                 .bytes = bytes},
                            d;
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_chunk(&c, &b), 0);
    uint8_t *p = b.data + CODEC_HDR_BYTES;
    size_t len = b.len - CODEC_HDR_BYTES;
    struct {
        size_t off;
        uint8_t val;
    } lies[] = {
        {7, 0},     /* session 0 */
        {24, 0x80}, /* offset beyond 2^63 */
        {32, 0x02}, /* unknown flag */
        {33, 0x01}, /* length over CODEC_SNAP_CHUNK_MAX (and past the end) */
        {36, 17},   /* one byte longer than what is left */
        {36, 15},   /* a trailing byte */
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        uint8_t saved = p[lies[i].off];
        p[lies[i].off] = lies[i].val;
        CHECK_EQ_U(codec_decode_snap_chunk(p, len, &d), ERR_PROTO);
        p[lies[i].off] = saved;
    }
    CHECK_EQ_U(codec_decode_snap_chunk(p, len, &d), 0);
    codec_buf_free(&b);
    /* A chunk header claiming a huge length with few bytes behind it. */
    uint8_t hdr[37] = {0, 0, 0, 0, 0, 0, 0, 1};
    hdr[33] = 0x04; /* len 0x04000000 */
    CHECK_EQ_U(codec_decode_snap_chunk(hdr, sizeof hdr, &d), ERR_PROTO);
    hdr[33] = 0;
    CHECK_EQ_U(codec_decode_snap_chunk(hdr, sizeof hdr, &d), 0);
    /* A chunk over the maximum, bytes and all, is refused too. */
    size_t over = CODEC_SNAP_CHUNK_MAX + 1;
    uint8_t *big = calloc(1, sizeof hdr + over);
    memcpy(big, hdr, sizeof hdr);
    for (int k = 0; k < 4; k++)
        big[33 + k] = (uint8_t)(over >> (24 - 8 * k));
    CHECK_EQ_U(codec_decode_snap_chunk(big, sizeof hdr + over, &d), ERR_PROTO);
    free(big);

    struct codec_snap_ack a = {.session = 1, .status = CODEC_SNAP_ABORT, .reason = "r"}, e;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_snap_ack(&a, &b), 0);
    p = b.data + CODEC_HDR_BYTES;
    len = b.len - CODEC_HDR_BYTES;
    CHECK_EQ_U(codec_decode_snap_ack(p, len, &e), 0);
    p[24] = 3; /* unknown status */
    CHECK_EQ_U(codec_decode_snap_ack(p, len, &e), ERR_PROTO);
    p[24] = CODEC_SNAP_OK; /* a reason with OK */
    CHECK_EQ_U(codec_decode_snap_ack(p, len, &e), ERR_PROTO);
    p[24] = CODEC_SNAP_ABORT;
    p[7] = 0; /* session 0 */
    CHECK_EQ_U(codec_decode_snap_ack(p, len, &e), ERR_PROTO);
    codec_buf_free(&b);
}

/* The scatter frame references big payloads (no copy) and its bytes equal the contiguous
 * encoding; freeing it gives the references back. */
static void test_scatter_frame(void)
{
    struct raft_blob *small = blob_of("s", 100), *big = blob_of("B", 10000);
    struct raft_entry e[3] = {{.term = 1, .index = 1, .type = 2, .data = big},
                              {.term = 1, .index = 2, .type = 2, .data = small},
                              {.term = 1, .index = 3, .type = 2, .data = big}};
    struct raft_msg m = sample_msg(RAFT_MSG_APPEND, e, 3);
    struct codec_frame f;
    codec_frame_init(&f, 4096);
    CHECK_EQ_U(codec_frame_msg(&f, &m), 0);
    CHECK_EQ_U(big->refs, 3);
    CHECK_EQ_U(small->refs, 1);
    CHECK_EQ_U(f.n_segs, 4); /* inline, big, inline (small is copied), big */
    struct codec_buf flat, ref;
    codec_buf_init(&flat);
    codec_buf_init(&ref);
    for (size_t i = 0; i < f.n_segs; i++) {
        const struct codec_seg *s = &f.segs[i];
        codec_buf_reserve(&flat, s->len);
        memcpy(flat.data + flat.len, s->blob ? s->blob->data : f.inline_bytes.data + s->off,
               s->len);
        flat.len += s->len;
    }
    CHECK_EQ_U(flat.len, f.total);
    CHECK_EQ_U(codec_encode_msg(&m, &ref), 0);
    CHECK(flat.len == ref.len && memcmp(flat.data, ref.data, ref.len) == 0);
    codec_frame_free(&f);
    CHECK_EQ_U(big->refs, 1);
    codec_buf_free(&flat);
    codec_buf_free(&ref);
    raft_blob_unref(big);
    raft_blob_unref(small);
    /* Bad arguments to the encoders. */
    struct raft_msg bad = sample_msg(0, NULL, 0);
    codec_frame_init(&f, 4096);
    CHECK_EQ_U(codec_frame_msg(&f, &bad), ERR_INVALID);
    bad = sample_msg(RAFT_MSG_APPEND, NULL, 2);
    CHECK_EQ_U(codec_frame_msg(&f, &bad), ERR_INVALID);
    codec_frame_free(&f);
}

int main(void)
{
    RUN(test_msg_round_trip_every_type);
    RUN(test_msg_entries_round_trip);
    RUN(test_hello_round_trip);
    RUN(test_fwd_round_trip);
    RUN(test_snap_chunk_round_trip);
    RUN(test_snap_ack_round_trip);
    RUN(test_snap_inconsistent);
    RUN(test_truncation_every_byte);
    RUN(test_corrupt_checksum);
    RUN(test_checksum_is_zlib_crc32);
    RUN(test_snap_chunk_checksum_head);
    RUN(test_bad_header);
    RUN(test_giant_length);
    RUN(test_inconsistent_payloads);
    RUN(test_scatter_frame);
    return check_report();
}
