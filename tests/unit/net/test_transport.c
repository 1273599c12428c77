/* test_transport.c — real transports on one libev loop over 127.0.0.1 ephemeral ports:
 * delivery, forwarding, handshake refusals, hostile bytes, reconnects and queue caps.
 * Every wait polls a condition with a deadline (ev_run ONCE + a waking timer), never sleeps. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "codec.h"
#include "err.h"
#include "log.h"
#include "transport.h"

struct tnode {
    struct transport *t;
    const char *cluster;
    const char *name;
    raft_id id;
    raft_id accept[4]; /* ids accept_peer() lets in */
    int n_msgs;
    raft_id count_from; /* n_from counts the messages from this id */
    int n_from;
    struct raft_msg last; /* scalars of the last message (entries dropped) */
    uint32_t last_n_entries;
    uint32_t last_entry_len;
    uint8_t last_entry_byte;
    uint64_t next_ctx; /* ordering check for the burst test */
    bool in_order;
    int n_fwd_req;
    raft_id fwd_from;
    uint64_t fwd_id;
    uint8_t fwd_op;
    uint32_t fwd_len;
    int n_fwd_resp;
    struct codec_fwd_resp resp;
    struct tstream *stream; /* snapshot stream this node sends or receives (test_snap_*) */
    int n_link_down;
    raft_id link_down_peer;
};

/* One snapshot stream from a to b, flow-controlled as the node does it: at most
 * STREAM_WINDOW chunks unacknowledged, refilled on each ack. */
#define STREAM_CHUNK CODEC_SNAP_CHUNK_MAX
#define STREAM_WINDOW 4
struct tstream {
    struct tnode *from, *to;
    uint64_t session;
    uint64_t total;
    uint64_t sent, acked;     /* sender */
    uint64_t received;        /* receiver: bytes in order so far */
    bool bad;                 /* receiver saw a gap, a wrong byte or a wrong sender */
    bool done;                /* receiver saw the last chunk */
    int send_errors;          /* sender: transport_send_snap_chunk failures */
    size_t max_queued_chunks; /* sender: most bytes unacknowledged, in chunks */
};

static uint8_t stream_byte(uint64_t off)
{
    return (uint8_t)(off * 131 + (off >> 9));
}

static void stream_fill(struct tstream *s)
{
    while (s->sent < s->total && s->sent - s->acked < STREAM_WINDOW * (uint64_t)STREAM_CHUNK) {
        uint64_t left = s->total - s->sent;
        uint32_t len = left < STREAM_CHUNK ? (uint32_t)left : STREAM_CHUNK;
        struct raft_blob *b = raft_blob_new(len);
        for (uint32_t i = 0; i < len; i++)
            b->data[i] = stream_byte(s->sent + i);
        struct codec_snap_chunk c = {.session = s->session,
                                     .term = 3,
                                     .index = 77,
                                     .offset = s->sent,
                                     .last = s->sent + len == s->total};
        int rv = transport_send_snap_chunk(s->from->t, s->to->id, &c, b);
        raft_blob_unref(b);
        if (rv) {
            s->send_errors++;
            return;
        }
        s->sent += len;
        size_t q = (size_t)((s->sent - s->acked + STREAM_CHUNK - 1) / STREAM_CHUNK);
        if (q > s->max_queued_chunks) s->max_queued_chunks = q;
    }
}

static void tn_on_snap_chunk(void *ctx, raft_id from, const struct codec_snap_chunk *c)
{
    struct tnode *n = ctx;
    struct tstream *s = n->stream;
    if (!s) return;
    if (from != s->from->id || c->session != s->session || c->offset != s->received ||
        c->index != 77 || c->term != 3)
        s->bad = true;
    for (uint32_t i = 0; i < c->len && !s->bad; i++)
        if (c->bytes[i] != stream_byte(c->offset + i)) s->bad = true;
    s->received += c->len;
    s->done = c->last;
    struct codec_snap_ack a = {.session = c->session,
                               .term = 3,
                               .offset = s->received,
                               .status = c->last ? CODEC_SNAP_INSTALLED : CODEC_SNAP_OK,
                               .index = c->last ? 77 : 0};
    CHECK_EQ_U(transport_send_snap_ack(n->t, from, &a), 0);
}

static void tn_on_snap_ack(void *ctx, raft_id from, const struct codec_snap_ack *a)
{
    struct tnode *n = ctx;
    struct tstream *s = n->stream;
    if (!s) return;
    if (from != s->to->id || a->session != s->session || a->offset > s->sent) s->bad = true;
    if (a->offset > s->acked) s->acked = a->offset;
    stream_fill(s);
}

static void tn_on_link_down(void *ctx, raft_id peer)
{
    struct tnode *n = ctx;
    n->n_link_down++;
    n->link_down_peer = peer;
}

static struct ev_loop *loop;

static void tn_on_msg(void *ctx, const struct raft_msg *m)
{
    struct tnode *n = ctx;
    n->n_msgs++;
    n->n_from += m->from == n->count_from;
    n->last = *m;
    n->last.entries = NULL;
    n->last_n_entries = m->n_entries;
    n->last_entry_len = m->n_entries && m->entries[0].data ? m->entries[0].data->len : 0;
    n->last_entry_byte = n->last_entry_len ? m->entries[0].data->data[n->last_entry_len - 1] : 0;
    if (m->ctx != n->next_ctx) n->in_order = false;
    n->next_ctx = m->ctx + 1;
}

static void tn_on_fwd_req(void *ctx, raft_id from, uint64_t fwd_id, uint8_t op,
                          struct raft_blob *payload)
{
    struct tnode *n = ctx;
    n->n_fwd_req++;
    n->fwd_from = from;
    n->fwd_id = fwd_id;
    n->fwd_op = op;
    n->fwd_len = payload->len;
    raft_blob_unref(payload);
}

static void tn_on_fwd_resp(void *ctx, uint64_t fwd_id, int err, raft_index index, raft_term term,
                           const char *leader_name)
{
    struct tnode *n = ctx;
    n->n_fwd_resp++;
    n->resp.fwd_id = fwd_id;
    n->resp.err = (uint32_t)err;
    n->resp.index = index;
    n->resp.term = term;
    strcpy(n->resp.leader_name, leader_name);
}

static bool tn_accept(void *ctx, raft_id id, const char *name)
{
    struct tnode *n = ctx;
    (void)name;
    for (int i = 0; i < 4; i++)
        if (n->accept[i] == id) return true;
    return false;
}

static const struct transport_ops tn_ops = {
    .on_msg = tn_on_msg,
    .on_fwd_req = tn_on_fwd_req,
    .on_fwd_resp = tn_on_fwd_resp,
    .accept_peer = tn_accept,
    .on_snap_chunk = tn_on_snap_chunk,
    .on_snap_ack = tn_on_snap_ack,
    .on_link_down = tn_on_link_down,
};

static void tn_start(struct tnode *n, const char *addr)
{
    char err[256] = "";
    n->in_order = true;
    int rv = transport_new(loop, n->cluster ? n->cluster : "test", n->name, n->id, addr, &tn_ops, n,
                           &n->t, err, sizeof err);
    CHECK_EQ_U(rv, 0);
    if (rv) fprintf(stderr, "transport_new: %s\n", err);
}

static void tn_addr(struct tnode *n, char *buf, size_t len)
{
    snprintf(buf, len, "127.0.0.1:%u", (unsigned)transport_port(n->t));
}

/* a dials b. */
static void tn_link(struct tnode *a, struct tnode *b)
{
    char addr[64];
    tn_addr(b, addr, sizeof addr);
    CHECK_EQ_U(transport_set_peer(a->t, b->id, b->name, addr), 0);
}

static void wake_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* Runs the loop until cond holds or secs pass; the expression's value afterwards. */
#define WAIT_FOR(cond, secs)                                                                       \
    ({                                                                                             \
        ev_timer wake_;                                                                            \
        ev_timer_init(&wake_, wake_cb, 0.01, 0.01);                                                \
        ev_timer_start(loop, &wake_);                                                              \
        ev_tstamp deadline_ = ev_time() + (secs);                                                  \
        while (!(cond) && ev_time() < deadline_)                                                   \
            ev_run(loop, EVRUN_ONCE);                                                              \
        ev_timer_stop(loop, &wake_);                                                               \
        (cond);                                                                                    \
    })

static struct raft_msg msg(uint8_t type, raft_id from, raft_id to, uint64_t ctx)
{
    struct raft_msg m = {.type = type,
                         .from = from,
                         .to = to,
                         .term = 7,
                         .index = 8,
                         .log_term = 6,
                         .commit = 5,
                         .ctx = ctx};
    return m;
}

static struct transport_stats stats(struct tnode *n)
{
    struct transport_stats s;
    transport_stats(n->t, &s);
    return s;
}

static void test_exchange_and_forward(void)
{
    struct tnode a = {.name = "node1", .id = 11, .accept = {22}};
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&a, "127.0.0.1:0");
    tn_start(&b, "127.0.0.1:0");
    tn_link(&a, &b);
    tn_link(&b, &a);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b.n_msgs == 1, 5));
    CHECK(b.last.type == RAFT_MSG_VOTE && b.last.from == 11 && b.last.term == 7 &&
          b.last.index == 8 && b.last.log_term == 6 && b.last.commit == 5);
    m = msg(RAFT_MSG_VOTE_RESP, 22, 11, 0);
    m.reject = true;
    CHECK_EQ_U(transport_send(b.t, &m), 0);
    CHECK(WAIT_FOR(a.n_msgs == 1, 5));
    CHECK(a.last.type == RAFT_MSG_VOTE_RESP && a.last.reject);

    /* A 1 MiB entry goes by reference: the queue holds a ref until it is written. */
    struct raft_blob *big = raft_blob_new(1u << 20);
    memset(big->data, 0x5a, big->len);
    struct raft_entry e = {.term = 7, .index = 9, .type = RAFT_ENTRY_NORMAL, .data = big};
    m = msg(RAFT_MSG_APPEND, 11, 22, 1);
    m.n_entries = 1;
    m.entries = &e;
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK_EQ_U(big->refs, 2);
    CHECK(WAIT_FOR(b.n_msgs == 2, 5));
    CHECK(b.last_n_entries == 1 && b.last_entry_len == (1u << 20) && b.last_entry_byte == 0x5a);
    CHECK(WAIT_FOR(big->refs == 1, 5));
    raft_blob_unref(big);

    /* The largest payload a client may send (64 MiB) crosses in one frame. */
    struct raft_blob *huge = raft_blob_new(64u << 20);
    memset(huge->data, 0x33, huge->len);
    e.data = huge;
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b.n_msgs == 3, 20));
    CHECK(b.last_entry_len == (64u << 20) && b.last_entry_byte == 0x33);
    CHECK(WAIT_FOR(huge->refs == 1, 5));
    raft_blob_unref(huge);

    /* A burst arrives complete and in order. */
    b.next_ctx = 2;
    b.in_order = true;
    int before = b.n_msgs;
    for (uint64_t i = 2; i < 2002; i++) {
        m = msg(RAFT_MSG_APPEND, 11, 22, i);
        CHECK_EQ_U(transport_send(a.t, &m), 0);
    }
    CHECK(WAIT_FOR(b.n_msgs == before + 2000, 10));
    CHECK(b.in_order);

    /* Forwarding: follower b asks leader a, a answers. */
    struct raft_blob *pl = raft_blob_new(3000);
    memset(pl->data, 1, pl->len);
    CHECK_EQ_U(transport_send_fwd_req(b.t, 11, 77, CODEC_FWD_PROPOSE, pl), 0);
    CHECK(WAIT_FOR(a.n_fwd_req == 1, 5));
    CHECK(a.fwd_from == 22 && a.fwd_id == 77 && a.fwd_op == CODEC_FWD_PROPOSE && a.fwd_len == 3000);
    CHECK_EQ_U(transport_send_fwd_req(b.t, 11, 78, CODEC_FWD_JOIN, NULL), 0);
    CHECK(WAIT_FOR(a.n_fwd_req == 2, 5));
    CHECK(a.fwd_id == 78 && a.fwd_len == 0);
    CHECK_EQ_U(transport_send_fwd_resp(a.t, 22, 77, ERR_NOTLEADER, 40, 7, "node3"), 0);
    CHECK(WAIT_FOR(b.n_fwd_resp == 1, 5));
    CHECK(b.resp.fwd_id == 77 && b.resp.err == ERR_NOTLEADER && b.resp.index == 40 &&
          b.resp.term == 7 && strcmp(b.resp.leader_name, "node3") == 0);
    CHECK_EQ_U(transport_send_fwd_resp(a.t, 22, 79, 0, 41, 7, NULL), 0);
    CHECK(WAIT_FOR(b.n_fwd_resp == 2, 5));
    CHECK(b.resp.err == 0 && b.resp.leader_name[0] == '\0');

    struct transport_stats s = stats(&a);
    CHECK(s.connected_peers == 1 && s.inbound_conns == 1 && s.bytes_out > (1u << 20) &&
          s.bytes_in > 0 && s.rejected_conns == 0 && s.proto_errors == 0);

    /* Unknown peers, bad arguments, our own id, removal. */
    m = msg(RAFT_MSG_VOTE, 11, 33, 0);
    CHECK_EQ_U(transport_send(a.t, &m), ERR_NOTFOUND);
    CHECK_EQ_U(transport_send_fwd_req(a.t, 33, 1, CODEC_FWD_PROPOSE, raft_blob_new(1)),
               ERR_NOTFOUND);
    CHECK_EQ_U(transport_send_fwd_req(a.t, 22, 1, 99, NULL), ERR_INVALID);
    CHECK_EQ_U(transport_set_peer(a.t, 0, "x", "127.0.0.1:1"), ERR_INVALID);
    CHECK_EQ_U(transport_set_peer(a.t, 11, "node1", "127.0.0.1:1"), 0); /* self: ignored */
    m = msg(RAFT_MSG_VOTE, 11, 11, 0);
    CHECK_EQ_U(transport_send(a.t, &m), ERR_NOTFOUND);
    transport_remove_peer(a.t, 22);
    m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), ERR_NOTFOUND);
    CHECK_EQ_U(stats(&a).connected_peers, 0);
    transport_free(a.t);
    transport_free(b.t);
}

static void test_bad_listen_addresses(void)
{
    struct tnode a = {.name = "node1", .id = 11};
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:x", "[::1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        struct transport *t = NULL;
        int rv = transport_new(loop, "test", "node1", 11, bad[i], &tn_ops, &a, &t, err, sizeof err);
        CHECK(rv == ERR_INVALID && t == NULL && err[0]);
    }
    tn_start(&a, "127.0.0.1:0");
    char addr[64], err[256];
    tn_addr(&a, addr, sizeof addr);
    struct transport *t = NULL;
    CHECK_EQ_U(transport_new(loop, "test", "n", 12, addr, &tn_ops, &a, &t, err, sizeof err),
               ERR_IO);
    CHECK_EQ_U(transport_new(loop, "", "n", 12, "127.0.0.1:0", &tn_ops, &a, &t, err, sizeof err),
               ERR_INVALID);
    CHECK_EQ_U(transport_new(loop, "c", "n", 0, "127.0.0.1:0", &tn_ops, &a, &t, err, sizeof err),
               ERR_INVALID);
    transport_free(a.t);
}

/* A dialer of another cluster, and one with an id the acceptor does not know, are refused;
 * nothing they send is delivered; a good peer is unaffected. */
static void test_handshake_refusals(void)
{
    struct tnode b = {.name = "node2", .id = 22, .accept = {11, 33}};
    struct tnode good = {.name = "node1", .id = 11};
    struct tnode other = {.cluster = "other", .name = "node3", .id = 33};
    struct tnode unknown = {.name = "node9", .id = 99};
    tn_start(&b, "127.0.0.1:0");
    tn_start(&good, "127.0.0.1:0");
    tn_start(&other, "127.0.0.1:0");
    tn_start(&unknown, "127.0.0.1:0");
    tn_link(&other, &b);
    tn_link(&unknown, &b);
    tn_link(&good, &b);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 33, 22, 0);
    CHECK_EQ_U(transport_send(other.t, &m), 0);
    m = msg(RAFT_MSG_VOTE, 99, 22, 0);
    CHECK_EQ_U(transport_send(unknown.t, &m), 0);
    m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(good.t, &m), 0);
    /* Both strangers are refused, again after they redial (>= 4 refusals). */
    CHECK(WAIT_FOR(stats(&b).rejected_conns >= 4 && b.n_msgs >= 1, 10));
    CHECK_EQ_U(b.n_msgs, 1);
    CHECK_EQ_U(b.last.from, 11);
    CHECK_EQ_U(stats(&b).inbound_conns, 1);
    transport_free(b.t);
    transport_free(good.t);
    transport_free(other.t);
    transport_free(unknown.t);
}

/* ---- Raw sockets playing a hostile or broken peer ------------------------------------------ */
static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return fd;
}

/* The other side closed: recv sees EOF or a reset. */
static bool raw_closed(int fd)
{
    uint8_t b[64];
    ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void raw_send(int fd, const void *p, size_t n)
{
    CHECK_EQ_U(send(fd, p, n, MSG_NOSIGNAL), n);
}

static void raw_hello(int fd, const char *name, raft_id id)
{
    struct codec_hello h = {.cluster = "test", .id = id, .addr = "127.0.0.1:1"};
    snprintf(h.name, sizeof h.name, "%s", name);
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_hello(&h, &b), 0);
    raw_send(fd, b.data, b.len);
    codec_buf_free(&b);
}

static void raw_msg(int fd, raft_id from, raft_id to, bool corrupt, size_t keep)
{
    struct raft_msg m = msg(RAFT_MSG_APPEND, from, to, 0);
    struct codec_buf b;
    codec_buf_init(&b);
    CHECK_EQ_U(codec_encode_msg(&m, &b), 0);
    if (corrupt) b.data[b.len - 1] ^= 1;
    raw_send(fd, b.data, keep && keep < b.len ? keep : b.len);
    codec_buf_free(&b);
}

/* A snapshot frame with a valid checksum whose payload lies. */
static void raw_bad_snap(int fd, bool chunk)
{
    struct codec_buf b;
    codec_buf_init(&b);
    if (chunk) {
        uint8_t bytes[8] = {1, 2, 3};
        struct codec_snap_chunk c = {.session = 0, .len = sizeof bytes, .bytes = bytes};
        CHECK_EQ_U(codec_encode_snap_chunk(&c, &b), 0);
    } else {
        struct codec_snap_ack a = {.session = 5, .status = CODEC_SNAP_OK};
        CHECK_EQ_U(codec_encode_snap_ack(&a, &b), 0);
        b.data[CODEC_HDR_BYTES + 24] = 9; /* the status byte */
        uLong crc =
            crc32(crc32(0L, Z_NULL, 0), b.data + CODEC_HDR_BYTES, (uInt)(b.len - CODEC_HDR_BYTES));
        for (int i = 0; i < 4; i++)
            b.data[8 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    raw_send(fd, b.data, b.len);
    codec_buf_free(&b);
}

enum raw_kind {
    RAW_GARBAGE,
    RAW_GIANT_BEFORE_HELLO,
    RAW_GIANT_AFTER_HELLO,
    RAW_NOT_HELLO_FIRST,
    RAW_TRUNCATED_EOF,
    RAW_BAD_CHECKSUM,
    RAW_SPOOFED_FROM,
    RAW_SECOND_HELLO,
    RAW_BAD_SNAP_CHUNK,
    RAW_BAD_SNAP_ACK,
    RAW_KIND_COUNT
};

static void raw_attack(int fd, enum raw_kind k)
{
    static const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    uint8_t giant[CODEC_HDR_BYTES] = {0xff, 0xff, 0xff, 0x00, CODEC_VERSION, CODEC_RAFT};
    switch (k) {
    case RAW_GARBAGE:
        raw_send(fd, garbage, sizeof garbage - 1);
        break;
    case RAW_GIANT_BEFORE_HELLO:
        raw_send(fd, giant, sizeof giant);
        break;
    case RAW_GIANT_AFTER_HELLO:
        raw_hello(fd, "node1", 11);
        raw_send(fd, giant, sizeof giant);
        break;
    case RAW_NOT_HELLO_FIRST:
        raw_msg(fd, 11, 22, false, 0);
        break;
    case RAW_TRUNCATED_EOF:
        raw_hello(fd, "node1", 11);
        raw_msg(fd, 11, 22, false, 40);
        shutdown(fd, SHUT_WR);
        break;
    case RAW_BAD_CHECKSUM:
        raw_hello(fd, "node1", 11);
        raw_msg(fd, 11, 22, true, 0);
        break;
    case RAW_SPOOFED_FROM:
        raw_hello(fd, "node1", 11);
        raw_msg(fd, 33, 22, false, 0);
        break;
    case RAW_SECOND_HELLO:
        raw_hello(fd, "node1", 11);
        raw_hello(fd, "node1", 11);
        break;
    case RAW_BAD_SNAP_CHUNK: /* a good checksum around a chunk of session 0 */
    case RAW_BAD_SNAP_ACK:   /* a good checksum around an ack with an unknown status */
        raw_hello(fd, "node1", 11);
        raw_bad_snap(fd, k == RAW_BAD_SNAP_CHUNK);
        break;
    default:
        break;
    }
}

/* Each kind of hostile input closes its own connection and is counted; a good peer keeps
 * delivering throughout. */
static void test_hostile_inbound(void)
{
    struct tnode b = {.name = "node2", .id = 22, .accept = {11, 44}};
    struct tnode good = {.name = "node4", .id = 44};
    tn_start(&b, "127.0.0.1:0");
    tn_start(&good, "127.0.0.1:0");
    tn_link(&good, &b);
    for (int k = 0; k < RAW_KIND_COUNT; k++) {
        struct transport_stats before = stats(&b);
        int fd = raw_connect(transport_port(b.t));
        raw_attack(fd, (enum raw_kind)k);
        bool closed = WAIT_FOR(raw_closed(fd), 5);
        CHECK(closed);
        if (!closed) fprintf(stderr, "raw attack %d not closed\n", k);
        struct transport_stats after = stats(&b);
        CHECK_EQ_U(after.rejected_conns + after.proto_errors,
                   before.rejected_conns + before.proto_errors + 1);
        close(fd);
        int got = b.n_msgs;
        struct raft_msg m = msg(RAFT_MSG_VOTE, 44, 22, 0);
        CHECK_EQ_U(transport_send(good.t, &m), 0);
        CHECK(WAIT_FOR(b.n_msgs == got + 1, 5));
        CHECK_EQ_U(b.last.from, 44);
    }
    CHECK(WAIT_FOR(stats(&b).inbound_conns == 1, 5));
    transport_free(b.t);
    transport_free(good.t);
}

/* A peer that floods valid frames as fast as it can does not starve another peer: reads are
 * budgeted per callback, so the good peer's messages keep arriving during the flood. */
static void test_flood_fairness(void)
{
    struct tnode b = {.name = "node2", .id = 22, .accept = {11, 44}, .count_from = 44};
    struct tnode good = {.name = "node4", .id = 44};
    tn_start(&b, "127.0.0.1:0");
    tn_start(&good, "127.0.0.1:0");
    tn_link(&good, &b);
    int fd = raw_connect(transport_port(b.t));
    raw_hello(fd, "node1", 11);
    CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    struct codec_buf burst;
    codec_buf_init(&burst);
    for (int i = 0; i < 1000; i++) {
        struct raft_msg m = msg(RAFT_MSG_APPEND, 11, 22, (uint64_t)i);
        CHECK_EQ_U(codec_encode_msg(&m, &burst), 0);
    }
    size_t flooded = 0, off = 0;
    int sent_good = 0;
    ev_tstamp deadline = ev_time() + 20;
    while (flooded < (64u << 20) && ev_time() < deadline) {
        ssize_t w = send(fd, burst.data + off, burst.len - off, MSG_NOSIGNAL);
        if (w > 0) {
            flooded += (size_t)w;
            off = (off + (size_t)w) % burst.len;
        }
        if (b.n_from == sent_good && sent_good < 50) {
            struct raft_msg m = msg(RAFT_MSG_VOTE, 44, 22, 0);
            sent_good += transport_send(good.t, &m) == 0;
        }
        ev_run(loop, EVRUN_NOWAIT);
    }
    CHECK(flooded >= (64u << 20));
    fprintf(stderr, "flood: %zu bytes, %d flood msgs, %d good msgs\n", flooded, b.n_msgs - b.n_from,
            b.n_from);
    CHECK(b.n_from >= 10); /* served many times while 64 MiB of flood went through */
    CHECK(b.n_msgs - b.n_from > 10000);
    close(fd);
    codec_buf_free(&burst);
    transport_free(b.t);
    transport_free(good.t);
}

/* More inbound connections than the limit: the extra ones are closed at once. */
static void test_inbound_limit(void)
{
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&b, "127.0.0.1:0");
    enum { N = TRANSPORT_MAX_INBOUND + 6 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = raw_connect(transport_port(b.t));
    CHECK(WAIT_FOR(stats(&b).rejected_conns == N - TRANSPORT_MAX_INBOUND, 5));
    CHECK_EQ_U(stats(&b).inbound_conns, TRANSPORT_MAX_INBOUND);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    CHECK(WAIT_FOR(stats(&b).inbound_conns == 0, 5));
    /* Room again: a real peer gets in. */
    struct tnode a = {.name = "node1", .id = 11};
    tn_start(&a, "127.0.0.1:0");
    tn_link(&a, &b);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b.n_msgs == 1, 5));
    transport_free(a.t);
    transport_free(b.t);
}

/* accept() failing with EMFILE pauses the listener instead of spinning on the pending
 * connection; once descriptors are free again the waiting connections are accepted. */
static void test_accept_emfile(void)
{
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&b, "127.0.0.1:0");
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int next = dup(0);
    close(next);
    struct rlimit low = {.rlim_cur = (rlim_t)next + 6, .rlim_max = old.rlim_max};
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    /* Clients take every descriptor left; their connections wait in the backlog. */
    int fds[16], n = 0;
    while (n < 16) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) break;
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(transport_port(b.t)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        fds[n++] = fd;
    }
    CHECK(n >= 2 && n <= 6); /* fewer when inherited descriptors sit above the lowest free one */
    unsigned iter0 = ev_iteration(loop);
    WAIT_FOR(false, 0.3);
    unsigned iters = ev_iteration(loop) - iter0;
    CHECK(stats(&b).accept_pauses >= 1);
    CHECK(iters < 200); /* ~30 wake-ups plus a few pauses, not a busy loop */
    CHECK_EQ_U(stats(&b).inbound_conns, 0);
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(WAIT_FOR(stats(&b).inbound_conns == (uint32_t)n, 5));
    for (int i = 0; i < n; i++)
        close(fds[i]);
    CHECK(WAIT_FOR(stats(&b).inbound_conns == 0, 5));
    transport_free(b.t);
}

/* The peer's listener goes away and comes back on the same port: the link heals. */
static void test_reconnect(void)
{
    struct tnode a = {.name = "node1", .id = 11};
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&a, "127.0.0.1:0");
    tn_start(&b, "127.0.0.1:0");
    tn_link(&a, &b);
    char addr[64];
    tn_addr(&b, addr, sizeof addr);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b.n_msgs == 1, 5));
    transport_free(b.t);
    CHECK(WAIT_FOR(stats(&a).connected_peers == 0, 5));
    struct tnode b2 = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&b2, addr);
    /* Messages sent while the link is down may be dropped: keep sending until one lands. */
    ev_tstamp deadline = ev_time() + 10;
    while (b2.n_msgs == 0 && ev_time() < deadline) {
        (void)transport_send(a.t, &m);
        WAIT_FOR(b2.n_msgs > 0, 0.05);
    }
    CHECK(b2.n_msgs > 0);
    CHECK_EQ_U(stats(&a).connected_peers, 1);
    transport_free(a.t);
    transport_free(b2.t);
}

/* A peer that never reads: the queue fills to its cap and sends fail with ERR_BUSY. */
static void test_queue_cap(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    CHECK(bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 4) == 0);
    CHECK(getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
    struct tnode a = {.name = "node1", .id = 11};
    tn_start(&a, "127.0.0.1:0");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    CHECK_EQ_U(transport_set_peer(a.t, 22, "node2", addr), 0);
    struct raft_blob *big = raft_blob_new(1u << 20);
    memset(big->data, 1, big->len);
    struct raft_entry e = {.term = 1, .index = 1, .type = RAFT_ENTRY_NORMAL, .data = big};
    struct raft_msg m = msg(RAFT_MSG_APPEND, 11, 22, 0);
    m.n_entries = 1;
    m.entries = &e;
    /* Without running the loop nothing is written: 8 x 1 MiB frames reach the 8 MiB cap. */
    int sent = 0, rv = 0;
    while (sent < 20 && (rv = transport_send(a.t, &m)) == 0)
        sent++;
    CHECK_EQ_U(rv, ERR_BUSY);
    CHECK_EQ_U(sent, 8);
    CHECK_EQ_U(big->refs, 1u + (unsigned)sent); /* queued by reference */
    CHECK_EQ_U(stats(&a).dropped_busy, 1);
    /* With the loop running and the peer never reading, the kernel's buffers take some of it,
     * then the queue fills again within a deadline. */
    CHECK(WAIT_FOR(stats(&a).connected_peers == 1 && stats(&a).bytes_out > (1u << 20), 5));
    ev_tstamp deadline = ev_time() + 10;
    int more = 0;
    while ((rv = transport_send(a.t, &m)) == 0 && ev_time() < deadline) {
        more++;
        WAIT_FOR(false, 0.001);
    }
    CHECK_EQ_U(rv, ERR_BUSY);
    CHECK(more >= 1);
    transport_free(a.t);
    CHECK_EQ_U(big->refs, 1); /* freeing the transport gives every reference back */
    raft_blob_unref(big);
    close(lfd);
}

/* Heartbeats sent every few ms from a timer while a snapshot streams. */
struct hb {
    ev_timer w;
    struct tnode *from, *to;
    uint64_t seq;
    int send_errors;
    ev_tstamp sent_at[4096];
};

static double hb_max_delay;

static void hb_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct hb *h = (struct hb *)w;
    if (h->seq >= 4096) return;
    struct raft_msg m = msg(RAFT_MSG_APPEND, h->from->id, h->to->id, h->seq);
    h->sent_at[h->seq] = ev_time();
    if (transport_send(h->from->t, &m))
        h->send_errors++;
    else
        h->seq++;
}

/* b measures each heartbeat's delay (ctx = its sequence number). */
static struct hb *hb_active;
static void tn_on_msg_timed(void *ctx, const struct raft_msg *m)
{
    tn_on_msg(ctx, m);
    if (hb_active && m->ctx < hb_active->seq) {
        double d = ev_time() - hb_active->sent_at[m->ctx];
        if (d > hb_max_delay) hb_max_delay = d;
    }
}

/* 192 MiB of snapshot chunks from a to b, a window of 4 chunks refilled on acks, while a also
 * sends a heartbeat every ms: every chunk arrives once, in order and intact; no heartbeat is
 * refused by the queue (chunks never crowd it) and none waits long behind the chunks. */
static void test_snap_stream_with_heartbeats(void)
{
    struct transport_ops ops = tn_ops;
    ops.on_msg = tn_on_msg_timed;
    struct tnode a = {.name = "node1", .id = 11, .accept = {22}};
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    char err[256];
    a.in_order = b.in_order = true;
    CHECK_EQ_U(
        transport_new(loop, "test", a.name, a.id, "127.0.0.1:0", &ops, &a, &a.t, err, sizeof err),
        0);
    CHECK_EQ_U(
        transport_new(loop, "test", b.name, b.id, "127.0.0.1:0", &ops, &b, &b.t, err, sizeof err),
        0);
    tn_link(&a, &b);
    tn_link(&b, &a);
    CHECK(WAIT_FOR(transport_peer_connected(a.t, 22) && transport_peer_connected(b.t, 11), 5));
    struct tstream s = {.from = &a, .to = &b, .session = 1234, .total = (192u << 20) + 12345};
    a.stream = b.stream = &s;
    static struct hb h;
    memset(&h, 0, sizeof h);
    h.from = &a;
    h.to = &b;
    hb_active = &h;
    hb_max_delay = 0;
    ev_timer_init(&h.w, hb_cb, 0.001, 0.001);
    ev_timer_start(loop, &h.w);
    stream_fill(&s);
    CHECK(WAIT_FOR(s.done || s.bad, 60));
    ev_timer_stop(loop, &h.w);
    CHECK(WAIT_FOR(b.n_msgs == (int)h.seq, 5));
    hb_active = NULL;
    fprintf(stderr, "stream: %llu bytes, %llu heartbeats, max heartbeat delay %.1f ms\n",
            (unsigned long long)s.received, (unsigned long long)h.seq, hb_max_delay * 1e3);
    CHECK(!s.bad);
    CHECK_EQ_U(s.received, s.total);
    CHECK(WAIT_FOR(s.acked == s.total, 5));
    CHECK_EQ_U(s.send_errors, 0);
    CHECK(s.max_queued_chunks <= STREAM_WINDOW);
    CHECK_EQ_U(h.send_errors, 0);
    CHECK(h.seq > 10);
    CHECK(b.in_order);
    CHECK(hb_max_delay < 0.25);
    CHECK_EQ_U(stats(&b).snap_chunks_in, (s.total + STREAM_CHUNK - 1) / STREAM_CHUNK);
    CHECK_EQ_U(stats(&a).snap_chunks_out, stats(&b).snap_chunks_in);
    CHECK_EQ_U(a.n_link_down + b.n_link_down, 0);
    transport_free(a.t);
    transport_free(b.t);
}

/* A link that goes away mid-stream is reported on both sides: the receiver's inbound
 * connection closes, the sender's outbound link fails. Frames without a handler are
 * dropped quietly. */
static void test_snap_link_down(void)
{
    struct tnode a = {.name = "node1", .id = 11, .accept = {22}};
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&a, "127.0.0.1:0");
    tn_start(&b, "127.0.0.1:0");
    tn_link(&a, &b);
    tn_link(&b, &a);
    struct tstream s = {.from = &a, .to = &b, .session = 9, .total = 64u << 20};
    a.stream = b.stream = &s;
    stream_fill(&s);
    CHECK(WAIT_FOR(s.received > 0, 5));
    /* b's process "dies": a's outbound link to it fails. */
    transport_free(b.t);
    CHECK(WAIT_FOR(a.n_link_down > 0, 10));
    CHECK_EQ_U(a.link_down_peer, 22);
    CHECK(!s.done && !s.bad);
    /* A new b; then a goes away: b hears it from its inbound connection (and its own
     * outbound link). */
    struct tnode b2 = {.name = "node2", .id = 22, .accept = {11}};
    char addr[64];
    tn_start(&b2, "127.0.0.1:0");
    tn_addr(&b2, addr, sizeof addr);
    CHECK_EQ_U(transport_set_peer(a.t, 22, "node2", addr), 0);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b2.n_msgs == 1, 5));
    transport_free(a.t);
    CHECK(WAIT_FOR(b2.n_link_down > 0, 10));
    CHECK_EQ_U(b2.link_down_peer, 11);
    transport_free(b2.t);
}

/* The owner's prepare watcher (the node's ready drain) queues a frame once. */
struct prep_send {
    ev_prepare w;
    struct tnode *from;
    raft_id to;
    bool armed;
};

static void prep_send_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)l;
    (void)revents;
    struct prep_send *p = (struct prep_send *)w;
    if (!p->armed) return;
    p->armed = false;
    struct raft_msg m = msg(RAFT_MSG_APPEND, p->from->id, p->to, 99);
    CHECK_EQ_U(transport_send(p->from->t, &m), 0);
}

/* Frames queued while the loop prepares to poll are written before it polls: nothing else
 * wakes this loop (one guard timer, 2 s), so a frame left for the next turn would arrive only
 * after the guard fired. Also the steady state: an idle link writes with no write watcher. */
static void test_send_from_prepare(void)
{
    struct tnode a = {.name = "node1", .id = 11, .accept = {22}};
    struct tnode b = {.name = "node2", .id = 22, .accept = {11}};
    tn_start(&a, "127.0.0.1:0");
    tn_start(&b, "127.0.0.1:0");
    tn_link(&a, &b);
    struct raft_msg m = msg(RAFT_MSG_VOTE, 11, 22, 0);
    CHECK_EQ_U(transport_send(a.t, &m), 0);
    CHECK(WAIT_FOR(b.n_msgs == 1, 5)); /* link up, HELLO written */
    for (int round = 0; round < 3; round++) {
        struct prep_send ps = {.from = &a, .to = 22, .armed = true};
        ev_prepare_init(&ps.w, prep_send_cb);
        ev_prepare_start(loop, &ps.w);
        ev_timer guard;
        ev_timer_init(&guard, wake_cb, 2.0, 0.);
        ev_timer_start(loop, &guard);
        int before = b.n_msgs;
        ev_tstamp t0 = ev_time();
        while (b.n_msgs == before && ev_time() - t0 < 5)
            ev_run(loop, EVRUN_ONCE);
        double took = ev_time() - t0;
        ev_timer_stop(loop, &guard);
        ev_prepare_stop(loop, &ps.w);
        CHECK_EQ_U(b.n_msgs, before + 1);
        CHECK(b.last.ctx == 99);
        CHECK(took < 1.0);
        if (took >= 1.0) fprintf(stderr, "  round %d: the frame took %.2f s\n", round, took);
    }
    transport_free(a.t);
    transport_free(b.t);
}

int main(void)
{
    log_init("test");
    loop = ev_loop_new(EVFLAG_AUTO);
    RUN(test_exchange_and_forward);
    RUN(test_bad_listen_addresses);
    RUN(test_handshake_refusals);
    RUN(test_hostile_inbound);
    RUN(test_flood_fairness);
    RUN(test_inbound_limit);
    RUN(test_accept_emfile);
    RUN(test_reconnect);
    RUN(test_queue_cap);
    RUN(test_snap_stream_with_heartbeats);
    RUN(test_snap_link_down);
    RUN(test_send_from_prepare);
    ev_loop_destroy(loop);
    return check_report();
}
