/* transport_in.c — the listener and inbound connections: HELLO check, bounded frame
 * buffering, decode and dispatch to the ops. Any bad byte closes only that connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "err.h"
#include "log.h"
#include "rassert.h"
#include "transport_int.h"

static void transport_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);

static void transport_conn_close(struct transport_conn *c)
{
    struct transport *t = c->t;
    ev_io_stop(t->loop, &c->rio);
    ev_timer_stop(t->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    c->used = false;
    t->stats.inbound_conns--;
}

/* Closes c, which the peer or we gave up on: after the HELLO, streams from that peer lost
 * their bytes in flight, so the owner hears of it. */
static void transport_conn_lost(struct transport_conn *c)
{
    struct transport *t = c->t;
    raft_id peer = c->hello_done ? c->peer_id : 0;
    transport_conn_close(c);
    if (peer && t->ops.on_link_down) t->ops.on_link_down(t->ctx, peer);
}

/* Closes c for a protocol violation or a refused handshake and says why (rate-limited). */
static void transport_conn_reject(struct transport_conn *c, bool handshake, const char *fmt,
                                  const char *arg)
{
    struct transport *t = c->t;
    if (handshake)
        t->stats.rejected_conns++;
    else
        t->stats.proto_errors++;
    if (transport_log_allow(t, &t->in_log)) {
        char msg[512];
        snprintf(msg, sizeof msg, fmt, arg);
        LOG_WARN("net: closing inbound connection from %s%s%s: %s", c->remote,
                 c->peer_name[0] ? " " : "", c->peer_name, msg);
    }
    transport_conn_lost(c);
}

static void transport_conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport_conn *c = TRANSPORT_CONTAINER_OF(w, struct transport_conn, timer);
    transport_conn_reject(c, true, "%s", "no HELLO in time");
}

/* ---- Frame dispatch ---------------------------------------------------------------------- */
static int transport_conn_hello(struct transport_conn *c, const uint8_t *p, size_t len)
{
    struct transport *t = c->t;
    struct codec_hello h;
    if (codec_decode_hello(p, len, &h)) {
        transport_conn_reject(c, true, "%s", "malformed HELLO");
        return -1;
    }
    if (strcmp(h.cluster, t->cluster) != 0) {
        transport_conn_reject(c, true, "HELLO from another cluster \"%s\"", h.cluster);
        return -1;
    }
    if (!t->ops.accept_peer(t->ctx, h.id, h.name)) {
        transport_conn_reject(c, true, "HELLO from unknown node \"%s\"", h.name);
        return -1;
    }
    c->hello_done = true;
    c->peer_id = h.id;
    snprintf(c->peer_name, sizeof c->peer_name, "%s", h.name);
    ev_timer_stop(t->loop, &c->timer);
    /* A peer that redials leaves its old link half-open: the newest one wins. */
    for (size_t i = 0; i < TRANSPORT_MAX_INBOUND; i++) {
        struct transport_conn *o = &t->conns[i];
        if (o != c && o->used && o->hello_done && o->peer_id == h.id) transport_conn_lost(o);
    }
    LOG_INFO("net: inbound link from %s (%s)", h.name, c->remote);
    return 0;
}

static int transport_conn_raft(struct transport_conn *c, const uint8_t *p, size_t len)
{
    struct transport *t = c->t;
    struct raft_msg m;
    if (codec_decode_msg(p, len, &m)) {
        transport_conn_reject(c, false, "%s", "malformed RAFT frame");
        return -1;
    }
    if (m.from != c->peer_id) {
        codec_msg_free(&m);
        transport_conn_reject(c, false, "%s", "RAFT frame from another sender than its HELLO");
        return -1;
    }
    if (m.to == t->self_id)
        t->ops.on_msg(t->ctx, &m);
    else
        LOG_DEBUG("net: dropped a message for %016llx from %s", (unsigned long long)m.to,
                  c->peer_name);
    codec_msg_free(&m);
    return 0;
}

static int transport_conn_fwd(struct transport_conn *c, uint8_t type, const uint8_t *p, size_t len)
{
    struct transport *t = c->t;
    if (type == CODEC_FWD_REQ) {
        struct codec_fwd_req r;
        if (codec_decode_fwd_req(p, len, &r)) {
            transport_conn_reject(c, false, "%s", "malformed FWD_REQ");
            return -1;
        }
        t->ops.on_fwd_req(t->ctx, c->peer_id, r.fwd_id, r.op, r.payload);
        return 0;
    }
    struct codec_fwd_resp r;
    if (codec_decode_fwd_resp(p, len, &r)) {
        transport_conn_reject(c, false, "%s", "malformed FWD_RESP");
        return -1;
    }
    t->ops.on_fwd_resp(t->ctx, r.fwd_id, (int)r.err, r.index, r.term, r.leader_name);
    return 0;
}

static int transport_conn_snap(struct transport_conn *c, uint8_t type, const uint8_t *p, size_t len)
{
    struct transport *t = c->t;
    if (type == CODEC_SNAP_CHUNK) {
        struct codec_snap_chunk ch;
        if (codec_decode_snap_chunk(p, len, &ch)) {
            transport_conn_reject(c, false, "%s", "malformed SNAP_CHUNK");
            return -1;
        }
        t->stats.snap_chunks_in++;
        if (t->ops.on_snap_chunk) t->ops.on_snap_chunk(t->ctx, c->peer_id, &ch);
        return 0;
    }
    struct codec_snap_ack a;
    if (codec_decode_snap_ack(p, len, &a)) {
        transport_conn_reject(c, false, "%s", "malformed SNAP_ACK");
        return -1;
    }
    if (t->ops.on_snap_ack) t->ops.on_snap_ack(t->ctx, c->peer_id, &a);
    return 0;
}

/* Returns -1 when c was closed. */
static int transport_conn_frame(struct transport_conn *c, const struct codec_frame_hdr *h,
                                const uint8_t *payload)
{
    c->t->stats.frames_in++;
    if (!c->hello_done) {
        if (h->type != CODEC_HELLO) {
            transport_conn_reject(c, true, "first frame is %s, not HELLO", codec_type_str(h->type));
            return -1;
        }
        return transport_conn_hello(c, payload, h->len);
    }
    switch (h->type) {
    case CODEC_RAFT:
        return transport_conn_raft(c, payload, h->len);
    case CODEC_FWD_REQ:
    case CODEC_FWD_RESP:
        return transport_conn_fwd(c, h->type, payload, h->len);
    case CODEC_SNAP_CHUNK:
    case CODEC_SNAP_ACK:
        return transport_conn_snap(c, h->type, payload, h->len);
    default:
        transport_conn_reject(c, false, "unexpected %s frame", codec_type_str(h->type));
        return -1;
    }
}

/* Sizes the buffer for the next read. It grows with the bytes that actually arrived
 * (doubling, up to the frame in progress, whose length was checked against the maximum), so
 * a header announcing 80 MiB costs nothing until the bytes come; it shrinks back once a frame
 * bigger than TRANSPORT_KEEP_BYTES is gone. */
static int transport_conn_buffer(struct transport_conn *c, size_t need)
{
    size_t want = c->len + TRANSPORT_READ_CHUNK;
    if (need > want) {
        size_t grow = c->cap * 2 > want ? c->cap * 2 : want;
        want = grow < need ? grow : need;
    }
    bool shrink = c->cap > TRANSPORT_KEEP_BYTES && want < c->cap / 2;
    if (want <= c->cap && !shrink) return 0;
    uint8_t *b = realloc(c->buf, want);
    if (!b) return ERR_NOMEM;
    c->buf = b;
    c->cap = want;
    return 0;
}

/* Dispatches every whole frame in the buffer and keeps the tail. Returns the bytes the next
 * step needs in total (> c->len), or 0 when c was closed. */
static size_t transport_conn_drain(struct transport_conn *c)
{
    size_t off = 0, need = 0;
    while (true) {
        struct codec_frame_hdr h;
        size_t max = c->hello_done ? CODEC_MAX_FRAME_BYTES : TRANSPORT_HELLO_FRAME_MAX;
        int rv = codec_frame_parse(c->buf + off, c->len - off, max, &h, &need);
        if (rv) {
            transport_conn_reject(c, !c->hello_done, "%s", err_str(rv));
            return 0;
        }
        if (need) break;
        if (transport_conn_frame(c, &h, c->buf + off + CODEC_HDR_BYTES) < 0) return 0;
        off += CODEC_HDR_BYTES + h.len;
    }
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
        /* Give a big frame's buffer back now, not at the next read (which may be far off):
         * its decoded payloads already hold a copy. A failed shrink is harmless. */
        (void)transport_conn_buffer(c, need);
    }
    return need;
}

static void transport_conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport_conn *c = TRANSPORT_CONTAINER_OF(w, struct transport_conn, rio);
    size_t need = CODEC_HDR_BYTES, budget = TRANSPORT_READ_BUDGET;
    while (budget > 0) {
        if (transport_conn_buffer(c, need)) {
            transport_conn_reject(c, false, "%s", "out of memory for a frame");
            return;
        }
        size_t room = c->cap - c->len;
        ssize_t n = recv(c->fd, c->buf + c->len, room, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (n <= 0) {
            bool partial = n == 0 && c->len > 0;
            if (partial) {
                transport_conn_reject(c, !c->hello_done, "%s", "truncated frame at EOF");
                return;
            }
            if (c->hello_done)
                LOG_INFO("net: inbound link from %s (%s) closed%s%s", c->peer_name, c->remote,
                         n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            transport_conn_lost(c);
            return;
        }
        c->t->stats.bytes_in += (uint64_t)n;
        c->len += (size_t)n;
        budget -= (size_t)n < budget ? (size_t)n : budget;
        need = transport_conn_drain(c);
        if (need == 0) return;
        /* A read that did not fill the buffer took everything the socket had: the next recv
         * would only say EAGAIN (one wasted call per turn). The watcher is level-triggered, so
         * bytes arriving meanwhile wake it again. */
        if ((size_t)n < room) return;
    }
}

/* ---- Listener -------------------------------------------------------------------------------- */
static void transport_conn_open(struct transport *t, int fd, const struct sockaddr_storage *sa)
{
    struct transport_conn *c = NULL;
    for (size_t i = 0; i < TRANSPORT_MAX_INBOUND && !c; i++)
        if (!t->conns[i].used) c = &t->conns[i];
    char remote[64] = "?";
    char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
    if (getnameinfo((const struct sockaddr *)sa, sizeof *sa, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(remote, sizeof remote, "%s:%s", host, port);
    if (!c) {
        t->stats.rejected_conns++;
        if (transport_log_allow(t, &t->in_log))
            LOG_WARN("net: refusing %s: %d inbound connections already", remote,
                     TRANSPORT_MAX_INBOUND);
        close(fd);
        return;
    }
    memset(c, 0, sizeof *c);
    c->t = t;
    c->used = true;
    c->fd = fd;
    snprintf(c->remote, sizeof c->remote, "%s", remote);
    transport_tune_socket(fd);
    t->stats.inbound_conns++;
    ev_io_init(&c->rio, transport_conn_read_cb, fd, EV_READ);
    ev_io_start(t->loop, &c->rio);
    ev_timer_init(&c->timer, transport_conn_timeout_cb, TRANSPORT_HANDSHAKE_TIMEOUT_S, 0.);
    ev_timer_start(t->loop, &c->timer);
}

static void transport_listen_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct transport *t = TRANSPORT_CONTAINER_OF(w, struct transport, ltimer);
    ev_io_start(loop, &t->lio);
}

static void transport_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct transport *t = TRANSPORT_CONTAINER_OF(w, struct transport, lio);
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(t->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            transport_conn_open(t, fd, &sa);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The pending connection stays in the backlog; spinning on it would burn the
             * loop, so pause the listener briefly. */
            if (transport_log_allow(t, &t->in_log))
                LOG_WARN("net: accept: %s; pausing the listener", strerror(errno));
            t->stats.accept_pauses++;
            ev_io_stop(loop, &t->lio);
            ev_timer_set(&t->ltimer, TRANSPORT_EMFILE_PAUSE_S, 0.);
            ev_timer_start(loop, &t->ltimer);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            if (transport_log_allow(t, &t->in_log)) LOG_WARN("net: accept: %s", strerror(errno));
        }
        return;
    }
}

static int transport_bind(struct transport *t, const char *listen_addr, char *err, size_t err_len)
{
    char host[CODEC_STR_MAX + 1], port[16];
    if (transport_split_addr(listen_addr, host, sizeof host, port, sizeof port)) {
        snprintf(err, err_len, "transport: bad listen address \"%s\"", listen_addr);
        return ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        snprintf(err, err_len, "transport: resolve %s: %s", listen_addr, gai_strerror(gai));
        return ERR_INVALID;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        snprintf(err, err_len, "transport: listen on %s: %s", listen_addr, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return ERR_IO;
    }
    freeaddrinfo(ai);
    t->lfd = fd;
    return 0;
}

int transport_listen(struct transport *t, const char *listen_addr, char *err, size_t err_len)
{
    int rv = transport_bind(t, listen_addr, err, err_len);
    if (rv) return rv;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    if (getsockname(t->lfd, (struct sockaddr *)&sa, &sl) == 0)
        t->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    ev_io_init(&t->lio, transport_accept_cb, t->lfd, EV_READ);
    ev_io_start(t->loop, &t->lio);
    ev_timer_init(&t->ltimer, transport_listen_resume_cb, TRANSPORT_EMFILE_PAUSE_S, 0.);
    LOG_INFO("net: listening on %s (port %u)", listen_addr, (unsigned)t->port);
    return 0;
}

void transport_listen_close(struct transport *t)
{
    for (size_t i = 0; i < TRANSPORT_MAX_INBOUND; i++)
        if (t->conns[i].used) transport_conn_close(&t->conns[i]);
    if (t->lfd >= 0) {
        ev_io_stop(t->loop, &t->lio);
        ev_timer_stop(t->loop, &t->ltimer);
        close(t->lfd);
        t->lfd = -1;
    }
}
