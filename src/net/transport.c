/* transport.c — the transport's lifecycle, peer table and send API. Sending only encodes and
 * queues; the bytes leave at the end of the loop turn (transport_out.c), never blocking the
 * caller. */
#include "transport.h"

#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

bool transport_log_allow(struct transport *t, struct transport_ratelimit *rl)
{
    ev_tstamp now = ev_now(t->loop);
    if (now - rl->start >= TRANSPORT_LOG_WINDOW_S) {
        if (rl->suppressed) LOG_WARN("net: %u similar warnings suppressed", rl->suppressed);
        rl->start = now;
        rl->n = 0;
        rl->suppressed = 0;
    }
    if (rl->n < TRANSPORT_LOG_BURST) {
        rl->n++;
        return true;
    }
    rl->suppressed++;
    return false;
}

int transport_split_addr(const char *addr, char *host, size_t host_len, char *port, size_t port_len)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) return ERR_INVALID;
    const char *h = addr;
    size_t hn = (size_t)(colon - addr);
    if (addr[0] == '[') {
        if (colon[-1] != ']' || hn < 3) return ERR_INVALID;
        h++;
        hn -= 2;
    }
    size_t pn = strlen(colon + 1);
    if (hn >= host_len || pn >= port_len || strspn(colon + 1, "0123456789") != pn)
        return ERR_INVALID;
    memcpy(host, h, hn);
    host[hn] = '\0';
    memcpy(port, colon + 1, pn + 1);
    return 0;
}

void transport_tune_socket(int fd)
{
    int one = 1;
    /* Best effort: a socket without these still works, only slower or less watchful. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    /* A peer that vanishes (power loss, partition) is noticed in seconds, not hours: idle
     * links are probed after TRANSPORT_KEEPIDLE_S, and unacknowledged data gives up after
     * TRANSPORT_USER_TIMEOUT_MS, so the link is redialed and its stale queue dropped. */
    int idle = TRANSPORT_KEEPIDLE_S, intvl = TRANSPORT_KEEPINTVL_S, cnt = TRANSPORT_KEEPCNT;
    unsigned user_timeout_ms = TRANSPORT_USER_TIMEOUT_MS;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* A factor in [0.5, 1): spreads reconnects so restarted peers are not hit in lockstep. */
double transport_jitter(struct transport *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return 0.5 + (double)(t->rng >> 11) / (double)(1ull << 53) * 0.5;
}

static bool transport_str_ok(const char *s, bool allow_empty)
{
    if (!s) return allow_empty;
    size_t n = strnlen(s, CODEC_STR_MAX + 1);
    return n <= CODEC_STR_MAX && (allow_empty || n > 0);
}

static int transport_new_check(const char *cluster, const char *self_name, raft_id self_id,
                               const struct transport_ops *ops, char *err, size_t err_len)
{
    if (!transport_str_ok(cluster, false) || !transport_str_ok(self_name, false) || self_id == 0) {
        snprintf(err, err_len, "transport: bad cluster name, node name or id");
        return ERR_INVALID;
    }
    ASSERT(ops && ops->on_msg && ops->on_fwd_req && ops->on_fwd_resp && ops->accept_peer);
    return 0;
}

int transport_new(struct ev_loop *loop, const char *cluster, const char *self_name, raft_id self_id,
                  const char *listen_addr, const struct transport_ops *ops, void *ctx,
                  struct transport **out, char *err, size_t err_len)
{
    *out = NULL;
    int rv = transport_new_check(cluster, self_name, self_id, ops, err, err_len);
    if (rv) return rv;
    if (!transport_str_ok(listen_addr, false)) {
        snprintf(err, err_len, "transport: bad listen address");
        return ERR_INVALID;
    }
    struct transport *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_len, "transport: out of memory");
        return ERR_NOMEM;
    }
    t->loop = loop;
    t->ops = *ops;
    t->ctx = ctx;
    snprintf(t->cluster, sizeof t->cluster, "%s", cluster);
    snprintf(t->self_name, sizeof t->self_name, "%s", self_name);
    snprintf(t->self_addr, sizeof t->self_addr, "%s", listen_addr);
    t->self_id = self_id;
    t->rng = self_id ^ (uint64_t)(ev_time() * 1e6) ^ ((uint64_t)getpid() << 32);
    if (!t->rng) t->rng = 0x9e3779b97f4a7c15ull;
    t->lfd = -1;
    for (size_t i = 0; i < TRANSPORT_MAX_PEERS; i++)
        t->peers[i].fd = -1;
    for (size_t i = 0; i < TRANSPORT_MAX_INBOUND; i++)
        t->conns[i].fd = -1;
    rv = transport_listen(t, listen_addr, err, err_len);
    if (rv) {
        free(t);
        return rv;
    }
    /* After the owner's prepare watchers (priority 0), before a lowest-priority one that
     * marks the end of the loop's work (the node's busy-time histogram). */
    ev_prepare_init(&t->flush, transport_flush_cb);
    ev_set_priority(&t->flush, EV_MINPRI + 1);
    ev_prepare_start(loop, &t->flush);
    *out = t;
    return 0;
}

void transport_free(struct transport *t)
{
    if (!t) return;
    for (size_t i = 0; i < TRANSPORT_MAX_PEERS; i++)
        if (t->peers[i].used) transport_peer_stop(&t->peers[i]);
    ev_prepare_stop(t->loop, &t->flush);
    transport_listen_close(t);
    free(t);
}

uint16_t transport_port(const struct transport *t)
{
    return t->port;
}

static struct transport_peer *transport_find_peer(struct transport *t, raft_id id)
{
    for (size_t i = 0; i < TRANSPORT_MAX_PEERS; i++)
        if (t->peers[i].used && t->peers[i].id == id) return &t->peers[i];
    return NULL;
}

int transport_set_peer(struct transport *t, raft_id id, const char *name, const char *addr)
{
    if (id == 0 || !transport_str_ok(name, true) || !transport_str_ok(addr, false))
        return ERR_INVALID;
    if (id == t->self_id) return 0;
    struct transport_peer *p = transport_find_peer(t, id);
    if (p) {
        snprintf(p->name, sizeof p->name, "%s", name ? name : "");
        if (strcmp(p->addr, addr) == 0) return 0;
        LOG_INFO("net: peer %s moves to %s", p->name, addr);
        transport_peer_stop(p);
    } else {
        for (size_t i = 0; i < TRANSPORT_MAX_PEERS && !p; i++)
            if (!t->peers[i].used) p = &t->peers[i];
        if (!p) return ERR_TOOBIG;
    }
    memset(p, 0, sizeof *p);
    p->t = t;
    p->used = true;
    p->id = id;
    p->fd = -1;
    snprintf(p->name, sizeof p->name, "%s", name ? name : "");
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    transport_peer_start(p);
    return 0;
}

void transport_remove_peer(struct transport *t, raft_id id)
{
    struct transport_peer *p = transport_find_peer(t, id);
    if (!p) return;
    LOG_INFO("net: peer %s removed", p->name);
    transport_peer_stop(p);
    p->used = false;
}

/* Hands an encoded frame (rv == 0) to the peer's queue; frees it on any error. */
static int transport_queue(struct transport *t, raft_id to, struct transport_qframe *q, int rv)
{
    struct transport_peer *p = rv ? NULL : transport_find_peer(t, to);
    if (!rv && !p) rv = ERR_NOTFOUND;
    if (!rv) {
        rv = transport_peer_enqueue(p, q); /* takes q, also on error */
        q = NULL;
    }
    if (q) {
        codec_frame_free(&q->f);
        free(q);
    }
    if (rv == ERR_BUSY) t->stats.dropped_busy++;
    return rv;
}

static struct transport_qframe *transport_qframe_new(void)
{
    struct transport_qframe *q = malloc(sizeof *q);
    if (q) {
        q->next = NULL;
        codec_frame_init(&q->f, TRANSPORT_REF_MIN_BYTES);
    }
    return q;
}

int transport_send(struct transport *t, const struct raft_msg *m)
{
    struct transport_qframe *q = transport_qframe_new();
    int rv = q ? codec_frame_msg(&q->f, m) : ERR_NOMEM;
    return transport_queue(t, m->to, q, rv);
}

int transport_send_fwd_req(struct transport *t, raft_id to, uint64_t fwd_id, uint8_t op,
                           struct raft_blob *payload)
{
    struct transport_qframe *q = transport_qframe_new();
    int rv = q ? codec_frame_fwd_req(&q->f, fwd_id, op, payload) : ERR_NOMEM;
    raft_blob_unref(payload); /* the frame holds its own reference when it needs one */
    return transport_queue(t, to, q, rv);
}

int transport_send_fwd_resp(struct transport *t, raft_id to, uint64_t fwd_id, int err,
                            raft_index index, raft_term term, const char *leader_name)
{
    if (err < 0 || !transport_str_ok(leader_name, true)) return ERR_INVALID;
    struct codec_fwd_resp r = {
        .fwd_id = fwd_id, .err = (uint32_t)err, .index = index, .term = term};
    snprintf(r.leader_name, sizeof r.leader_name, "%s", leader_name ? leader_name : "");
    struct transport_qframe *q = transport_qframe_new();
    int rv = q ? codec_frame_fwd_resp(&q->f, &r) : ERR_NOMEM;
    return transport_queue(t, to, q, rv);
}

int transport_send_snap_chunk(struct transport *t, raft_id to, const struct codec_snap_chunk *c,
                              struct raft_blob *data)
{
    struct transport_qframe *q = transport_qframe_new();
    int rv = q ? codec_frame_snap_chunk(&q->f, c, data) : ERR_NOMEM;
    rv = transport_queue(t, to, q, rv);
    if (rv == 0) t->stats.snap_chunks_out++;
    return rv;
}

int transport_send_snap_ack(struct transport *t, raft_id to, const struct codec_snap_ack *a)
{
    struct transport_qframe *q = transport_qframe_new();
    int rv = q ? codec_frame_snap_ack(&q->f, a) : ERR_NOMEM;
    return transport_queue(t, to, q, rv);
}

bool transport_peer_connected(const struct transport *t, raft_id id)
{
    for (size_t i = 0; i < TRANSPORT_MAX_PEERS; i++)
        if (t->peers[i].used && t->peers[i].id == id) return t->peers[i].state == TRANSPORT_UP;
    return false;
}

void transport_stats(const struct transport *t, struct transport_stats *out)
{
    *out = t->stats;
}
