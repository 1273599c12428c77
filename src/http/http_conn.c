/* http_conn.c — bookkeeping of client connections: counts for /metrics and a deadline for
 * receiving a request's headers, so a client that trickles them (slowloris) or sits idle is
 * cut off even though every byte it sends resets libmicrohttpd's own idle timeout. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "http_internal.h"
#include "log.h"

/* A connection: since = when it was accepted or its last request ended (its headers are
 * due by since + header_timeout_s unless a request is in progress). */
struct http_conn {
    struct http_conn *prev, *next;
    struct MHD_Connection *conn;
    ev_tstamp since;
    bool busy; /* a request's headers arrived and it has not ended yet */
    bool cut;  /* shut down by the deadline: libmicrohttpd closes it on its next read */
};

static void http_conn_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http_server *s = w->data;
    (void)revents;
    ev_tstamp now = ev_now(loop);
    bool cut_any = false;
    for (struct http_conn *c = s->conns; c; c = c->next) {
        if (c->busy || c->cut || now - c->since < s->header_timeout_s) continue;
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!fd) continue;
        /* libmicrohttpd cannot close a connection on request: shut the socket down under it
         * and let it see the end of the stream. */
        shutdown(fd->connect_fd, SHUT_RDWR);
        c->cut = true;
        cut_any = true;
        s->stats.connections_cut++;
    }
    if (cut_any) {
        LOG_DEBUG("http: cut connections that sent no complete request in %.1f s",
                  s->header_timeout_s);
        http_server_kick(s);
    }
    if (!s->conns) ev_timer_stop(loop, w);
}

void http_conn_init(struct http_server *s)
{
    s->header_timeout_s = HTTP_HEADER_TIMEOUT_S;
    ev_init(&s->sweep, http_conn_sweep_cb);
    s->sweep.data = s;
    s->sweep.repeat = 1.0;
}

void http_conn_close(struct http_server *s)
{
    ev_timer_stop(s->loop, &s->sweep);
}

void http_set_header_timeout(struct http_server *s, double seconds)
{
    s->header_timeout_s = seconds;
    s->sweep.repeat = seconds / 4 < 1.0 ? seconds / 4 : 1.0;
    if (ev_is_active(&s->sweep)) ev_timer_again(s->loop, &s->sweep);
}

void http_conn_notify(struct http_server *s, struct MHD_Connection *conn, void **socket_ctx,
                      bool started)
{
    struct http_conn *c = *socket_ctx;
    if (started) {
        s->stats.connections++;
        s->stats.open_connections++;
        c = calloc(1, sizeof *c);
        *socket_ctx = c;
        if (!c) return; /* tracked by counts only: no deadline for this one */
        c->conn = conn;
        c->since = ev_now(s->loop);
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        if (!ev_is_active(&s->sweep)) ev_timer_again(s->loop, &s->sweep);
        return;
    }
    if (s->stats.open_connections > 0) s->stats.open_connections--;
    if (!c) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
    *socket_ctx = NULL;
}

void http_conn_busy(struct http_server *s, struct MHD_Connection *conn, bool busy)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct http_conn *c = ci ? ci->socket_context : NULL;
    if (!c) return;
    c->busy = busy;
    if (!busy) c->since = ev_now(s->loop);
}

/* Appends one formatted piece to buf (capacity cap) at *len, counting what did not fit. */
static void http_stats_put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void http_stats_put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*len < cap ? buf + *len : NULL, *len < cap ? cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

static void http_stats_metric(char *buf, size_t cap, size_t *len, const char *name,
                              const char *type, const char *help, unsigned long long v)
{
    http_stats_put(buf, cap, len,
                   "# HELP raftfs_http_%s %s\n# TYPE raftfs_http_%s %s\n"
                   "raftfs_http_%s %llu\n",
                   name, help, name, type, name, v);
}

size_t http_stats_prometheus(const struct http_server *s, char *buf, size_t cap)
{
    const struct http_stats *st = &s->stats;
    size_t len = 0;
    if (cap) buf[0] = '\0';
    http_stats_metric(buf, cap, &len, "requests_total", "counter", "Client requests received.",
                      st->requests);
    http_stats_put(buf, cap, &len,
                   "# HELP raftfs_http_responses_total Responses by status.\n"
                   "# TYPE raftfs_http_responses_total counter\n");
    for (size_t i = 0; i < HTTP_STATS_N_CODES; i++)
        http_stats_put(buf, cap, &len, "raftfs_http_responses_total{code=\"%u\"} %llu\n",
                       http_stats_codes[i], (unsigned long long)st->responses[i]);
    http_stats_put(buf, cap, &len, "raftfs_http_responses_total{code=\"other\"} %llu\n",
                   (unsigned long long)st->responses_other);
    http_stats_metric(buf, cap, &len, "bytes_in_total", "counter", "Request body bytes received.",
                      st->bytes_in);
    http_stats_metric(buf, cap, &len, "bytes_out_total", "counter", "Response body bytes sent.",
                      st->bytes_out);
    http_stats_metric(buf, cap, &len, "connections_total", "counter",
                      "Client connections accepted.", st->connections);
    http_stats_metric(buf, cap, &len, "connections_cut_total", "counter",
                      "Connections closed for missing the header deadline.", st->connections_cut);
    http_stats_metric(buf, cap, &len, "open_connections", "gauge", "Open client connections.",
                      st->open_connections);
    http_stats_metric(buf, cap, &len, "pending_requests", "gauge",
                      "Requests waiting for the node (commit, apply or read index).", st->pending);
    return len;
}
