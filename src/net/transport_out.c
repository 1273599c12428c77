/* transport_out.c — outbound links: dial with backoff and jitter, HELLO first, then the
 * peer's bounded frame queue written with sendmsg(MSG_NOSIGNAL) at the end of each loop turn
 * (or when the socket drains, if it was full). Never blocks on a write. */
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "codec.h"
#include "err.h"
#include "log.h"
#include "rassert.h"
#include "transport_int.h"

static void transport_peer_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void transport_peer_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void transport_peer_read_cb(struct ev_loop *loop, ev_io *w, int revents);

static void transport_qframe_free(struct transport_qframe *q)
{
    codec_frame_free(&q->f);
    free(q);
}

/* Drops every queued frame: after a link fails they are stale, and Raft resends. */
static void transport_peer_drop_queue(struct transport_peer *p)
{
    while (p->head) {
        struct transport_qframe *q = p->head;
        p->head = q->next;
        transport_qframe_free(q);
        p->t->stats.dropped_unsent++;
    }
    p->tail = NULL;
    p->queued_bytes = 0;
    p->seg_idx = 0;
    p->seg_off = 0;
}

static void transport_peer_close_fd(struct transport_peer *p)
{
    struct ev_loop *loop = p->t->loop;
    ev_io_stop(loop, &p->rio);
    ev_io_stop(loop, &p->wio);
    ev_timer_stop(loop, &p->timer);
    if (p->state == TRANSPORT_UP) p->t->stats.connected_peers--;
    if (p->flush_due) {
        p->flush_due = false;
        p->t->flush_due--;
    }
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    p->state = TRANSPORT_DOWN;
}

void transport_peer_stop(struct transport_peer *p)
{
    transport_peer_close_fd(p);
    transport_peer_drop_queue(p);
}

/* Quiet logging for a peer that stays unreachable: the 1st, 10th, 100th... failure. */
static bool transport_peer_log_fail(unsigned fails)
{
    while (fails >= 10 && fails % 10 == 0)
        fails /= 10;
    return fails == 1;
}

static void transport_peer_fail(struct transport_peer *p, const char *why)
{
    struct transport *t = p->t;
    bool was_up = p->state == TRANSPORT_UP;
    /* Frames are lost with the link (sent or queued): streams riding on it must know. */
    bool lost = was_up || p->head;
    ev_tstamp now = ev_now(t->loop);
    if (was_up && now - p->up_since >= TRANSPORT_STABLE_S) p->backoff_s = 0;
    p->fails++;
    if (was_up)
        LOG_WARN("net: link to %s (%s) lost: %s", p->name, p->addr, why);
    else if (transport_peer_log_fail(p->fails))
        LOG_WARN("net: cannot reach %s (%s): %s (attempt %u)", p->name, p->addr, why, p->fails);
    else
        LOG_DEBUG("net: cannot reach %s (%s): %s", p->name, p->addr, why);
    transport_peer_stop(p);
    p->backoff_s = p->backoff_s <= 0 ? TRANSPORT_BACKOFF_MIN_S : p->backoff_s * 2;
    if (p->backoff_s > TRANSPORT_BACKOFF_MAX_S) p->backoff_s = TRANSPORT_BACKOFF_MAX_S;
    ev_timer_init(&p->timer, transport_peer_timer_cb, p->backoff_s * transport_jitter(t), 0.);
    ev_timer_start(t->loop, &p->timer);
    if (lost && t->ops.on_link_down) t->ops.on_link_down(t->ctx, p->id);
}

static struct transport_qframe *transport_hello_frame(struct transport *t)
{
    struct transport_qframe *q = malloc(sizeof *q);
    if (!q) return NULL;
    q->next = NULL;
    codec_frame_init(&q->f, SIZE_MAX);
    struct codec_hello h = {.id = t->self_id};
    snprintf(h.cluster, sizeof h.cluster, "%s", t->cluster);
    snprintf(h.name, sizeof h.name, "%s", t->self_name);
    snprintf(h.addr, sizeof h.addr, "%s", t->self_addr);
    if (codec_frame_hello(&q->f, &h)) {
        transport_qframe_free(q);
        return NULL;
    }
    return q;
}

static void transport_peer_up(struct transport_peer *p)
{
    struct transport *t = p->t;
    struct transport_qframe *hello = transport_hello_frame(t);
    if (!hello) {
        transport_peer_fail(p, "out of memory");
        return;
    }
    ev_timer_stop(t->loop, &p->timer);
    /* The dial's write watcher is still active: re-initialising an active watcher corrupts
     * libev's state (seen as a busy loop), so stop it first. */
    ev_io_stop(t->loop, &p->wio);
    /* HELLO goes before anything queued while we were dialing (nothing of which was sent). */
    ASSERT(p->seg_idx == 0 && p->seg_off == 0);
    hello->next = p->head;
    p->head = hello;
    if (!p->tail) p->tail = hello;
    p->queued_bytes += hello->f.total;
    p->state = TRANSPORT_UP;
    p->up_since = ev_now(t->loop);
    t->stats.connected_peers++;
    if (p->fails)
        LOG_INFO("net: connected to %s (%s) after %u failed attempts", p->name, p->addr, p->fails);
    else
        LOG_INFO("net: connected to %s (%s)", p->name, p->addr);
    p->fails = 0;
    ev_io_init(&p->rio, transport_peer_read_cb, p->fd, EV_READ);
    ev_io_start(t->loop, &p->rio);
    ev_io_init(&p->wio, transport_peer_write_cb, p->fd, EV_WRITE);
    ev_io_start(t->loop, &p->wio);
}

static int transport_peer_socket(struct transport_peer *p, const char **why)
{
    char host[CODEC_STR_MAX + 1], port[16];
    if (transport_split_addr(p->addr, host, sizeof host, port, sizeof port)) {
        *why = "bad address";
        return -1;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        *why = gai_strerror(gai);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = strerror(errno);
        freeaddrinfo(ai);
        return -1;
    }
    transport_tune_socket(fd);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno != EINPROGRESS) {
        *why = strerror(errno);
        close(fd);
        return -1;
    }
    return fd;
}

static void transport_peer_dial(struct transport_peer *p)
{
    struct transport *t = p->t;
    const char *why = "?";
    p->fd = transport_peer_socket(p, &why);
    if (p->fd < 0) {
        transport_peer_fail(p, why);
        return;
    }
    p->state = TRANSPORT_CONNECTING;
    ev_io_init(&p->wio, transport_peer_write_cb, p->fd, EV_WRITE);
    ev_io_start(t->loop, &p->wio);
    ev_timer_init(&p->timer, transport_peer_timer_cb, TRANSPORT_CONNECT_TIMEOUT_S, 0.);
    ev_timer_start(t->loop, &p->timer);
}

void transport_peer_start(struct transport_peer *p)
{
    /* Dial from the loop, not inside the caller: set_peer stays free of syscalls. */
    ev_timer_init(&p->timer, transport_peer_timer_cb, 0., 0.);
    ev_timer_start(p->t->loop, &p->timer);
}

static void transport_peer_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport_peer *p = TRANSPORT_CONTAINER_OF(w, struct transport_peer, timer);
    if (p->state == TRANSPORT_CONNECTING)
        transport_peer_fail(p, "connect timed out");
    else if (p->state == TRANSPORT_DOWN)
        transport_peer_dial(p);
}

int transport_peer_enqueue(struct transport_peer *p, struct transport_qframe *q)
{
    /* Refused only once the cap is reached, so a frame of any size (up to the frame max)
     * gets in whenever the queue is below it: a 64 MiB entry is not starved by heartbeats.
     * Big payloads are references to blobs the core holds anyway, so the bytes that are
     * really ours stay near the cap. */
    if (p->queued_bytes >= TRANSPORT_QUEUE_BYTES) {
        transport_qframe_free(q);
        return ERR_BUSY;
    }
    q->next = NULL;
    if (p->tail)
        p->tail->next = q;
    else
        p->head = q;
    p->tail = q;
    p->queued_bytes += q->f.total;
    /* Written at this loop turn's end (transport_flush_cb), with whatever else the turn
     * queued; a peer waiting for EPOLLOUT (wio active) is written from wio instead. */
    if (p->state == TRANSPORT_UP && !ev_is_active(&p->wio) && !p->flush_due) {
        p->flush_due = true;
        p->t->flush_due++;
    }
    return 0;
}

/* Fills iov from the queue's unsent bytes; returns the count. */
static int transport_peer_iov(struct transport_peer *p, struct iovec *iov)
{
    int n = 0;
    size_t seg = p->seg_idx, off = p->seg_off;
    for (struct transport_qframe *q = p->head; q && n < TRANSPORT_IOV_MAX; q = q->next) {
        for (; seg < q->f.n_segs && n < TRANSPORT_IOV_MAX; seg++, off = 0) {
            const struct codec_seg *s = &q->f.segs[seg];
            uint8_t *base = s->blob ? s->blob->data : q->f.inline_bytes.data + s->off;
            iov[n].iov_base = base + off;
            iov[n].iov_len = s->len - off;
            n++;
        }
        seg = 0;
    }
    return n;
}

/* Advances the write position by n bytes, freeing the frames written completely. */
static void transport_peer_consume(struct transport_peer *p, size_t n)
{
    p->queued_bytes -= n;
    while (n > 0) {
        struct transport_qframe *q = p->head;
        ASSERT(q && p->seg_idx < q->f.n_segs);
        size_t left = q->f.segs[p->seg_idx].len - p->seg_off;
        size_t take = n < left ? n : left;
        n -= take;
        p->seg_off += take;
        if (p->seg_off < q->f.segs[p->seg_idx].len) break;
        p->seg_idx++;
        p->seg_off = 0;
        if (p->seg_idx == q->f.n_segs) {
            p->head = q->next;
            if (!p->head) p->tail = NULL;
            p->seg_idx = 0;
            transport_qframe_free(q);
            p->t->stats.frames_out++;
        }
    }
}

/* Writes the queue until it is empty or the socket is full, and waits for EPOLLOUT (wio) only
 * in the latter case: a loop turn's frames to a peer usually leave in one sendmsg, with no
 * epoll_ctl to arm and disarm a write watcher around it. */
static void transport_peer_flush(struct transport_peer *p)
{
    struct transport *t = p->t;
    struct iovec iov[TRANSPORT_IOV_MAX];
    /* Bounded: a fast socket must not starve the rest of the loop. */
    for (int round = 0; round < 64 && p->head; round++) {
        int n = transport_peer_iov(p, iov);
        size_t want = 0;
        for (int i = 0; i < n; i++)
            want += iov[i].iov_len;
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(p->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            transport_peer_fail(p, strerror(errno));
            return;
        }
        t->stats.bytes_out += (uint64_t)w;
        transport_peer_consume(p, (size_t)w);
        if ((size_t)w < want) break; /* the socket is full: another try would be EAGAIN */
    }
    if (p->head)
        ev_io_start(t->loop, &p->wio);
    else
        ev_io_stop(t->loop, &p->wio);
}

void transport_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport *t = TRANSPORT_CONTAINER_OF(w, struct transport, flush);
    /* A failing link calls on_link_down, whose owner may queue frames for a peer already
     * passed: another pass takes those (bounded; failures are rare). */
    for (int pass = 0; pass < 4 && t->flush_due > 0; pass++) {
        for (size_t i = 0; i < TRANSPORT_MAX_PEERS && t->flush_due > 0; i++) {
            struct transport_peer *p = &t->peers[i];
            if (!p->flush_due) continue;
            p->flush_due = false;
            t->flush_due--;
            if (p->state == TRANSPORT_UP && !ev_is_active(&p->wio)) transport_peer_flush(p);
        }
    }
}

static void transport_peer_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport_peer *p = TRANSPORT_CONTAINER_OF(w, struct transport_peer, wio);
    if (p->state == TRANSPORT_CONNECTING) {
        int so_err = 0;
        socklen_t sl = sizeof so_err;
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &so_err, &sl) < 0) so_err = errno;
        if (so_err) {
            transport_peer_fail(p, strerror(so_err));
            return;
        }
        transport_peer_up(p);
        return;
    }
    transport_peer_flush(p);
}

/* The acceptor never writes on our outbound link: EOF or any byte means it is gone or
 * refused us (wrong cluster, unknown id). */
static void transport_peer_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport_peer *p = TRANSPORT_CONTAINER_OF(w, struct transport_peer, rio);
    uint8_t b[256];
    ssize_t n = recv(p->fd, b, sizeof b, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0)
        transport_peer_fail(p, strerror(errno));
    else if (n == 0)
        transport_peer_fail(p, "closed by peer");
    else
        transport_peer_fail(p, "unexpected bytes from the acceptor");
}
