/* http_server.c — libmicrohttpd driven from the node's libev loop in external epoll mode: one
 * ev_io on MHD's epoll fd plus one ev_timer from MHD_get_timeout(). No threads, never blocks. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "http_internal.h"
#include "log.h"
#include "rassert.h"

const unsigned http_stats_codes[HTTP_STATS_N_CODES] = {
#define HTTP_CODE_ITEM_(c) c,
    HTTP_STATS_CODES(HTTP_CODE_ITEM_)
#undef HTTP_CODE_ITEM_
};

/* Re-arms the timer from MHD's own idea of its next deadline (connection timeouts). */
static void http_server_rearm(struct http_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    ev_timer_stop(s->loop, &s->timer);
    if (MHD_get_timeout(s->d, &ms) == MHD_YES) {
        ev_timer_set(&s->timer, (ev_tstamp)ms / 1000.0, 0.);
        ev_timer_start(s->loop, &s->timer);
    }
}

static void http_server_run(struct http_server *s)
{
    ASSERT(!s->running);
    uint32_t open_before = s->stats.open_connections;
    s->running = true;
    MHD_run(s->d);
    s->running = false;
    http_server_rearm(s);
    /* At the connection limit libmicrohttpd takes its listening socket out of its epoll set,
     * and puts it back only at the start of a later MHD_run once connections have closed.
     * If those closes were the last events, nothing would call MHD_run again and clients
     * queued in the listen backlog would wait for an unrelated timeout (seen in
     * test_exhaustion's connection flood): after any close, run once more. */
    if (s->stats.open_connections < open_before) http_server_kick(s);
}

static void http_server_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    http_server_run(w->data);
}

static void http_server_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    http_server_run(w->data);
}

void http_server_kick(struct http_server *s)
{
    /* A resumed connection is only picked up by the next MHD_run (microhttpd.h on
     * MHD_resume_connection in external mode); a zero timer runs it after this callback. */
    ev_timer_stop(s->loop, &s->timer);
    ev_timer_set(&s->timer, 0., 0.);
    ev_timer_start(s->loop, &s->timer);
}

static enum MHD_Result http_server_handler_cb(void *cls, struct MHD_Connection *conn,
                                              const char *url, const char *method,
                                              const char *version, const char *upload_data,
                                              size_t *upload_data_size, void **req_cls)
{
    struct http_server *s = cls;
    struct http_req *req = *req_cls;
    (void)version;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) return MHD_NO; /* MHD closes the connection */
        req->s = s;
        req->conn = conn;
        *req_cls = req;
        s->stats.requests++;
        http_conn_busy(s, conn, true);
        return http_route_begin(req, url, method);
    }
    if (req->done || req->waiting) {
        /* A response is queued (or coming): drop any further body bytes. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) return http_route_body(req, upload_data, upload_data_size);
    return http_route_finish(req, method);
}

static void http_server_completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
                                     enum MHD_RequestTerminationCode toe)
{
    struct http_req *req = *req_cls;
    (void)cls;
    (void)conn;
    if (!req) return;
    *req_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        LOG_DEBUG("http: request ended early (%d)", (int)toe);
    if (req->waiting) {
        /* The backend still holds req: its reply will find conn == NULL and free req. */
        ASSERT(!req->suspended);
        req->conn = NULL;
        req->s = NULL;
        return;
    }
    http_req_free(req);
}

static void http_server_conn_cb(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                                enum MHD_ConnectionNotificationCode code)
{
    http_conn_notify(cls, conn, socket_ctx, code == MHD_CONNECTION_NOTIFY_STARTED);
}

static void http_server_log_cb(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    vsnprintf(s->last_log, sizeof s->last_log, fmt, ap);
    size_t n = strlen(s->last_log);
    while (n > 0 && s->last_log[n - 1] == '\n')
        s->last_log[--n] = '\0';
    LOG_DEBUG("http: libmicrohttpd: %s", s->last_log);
}

/* The query values and the URL reach us undecoded: http_path_decode does it, so that an
 * encoded NUL or a bad escape is refused instead of silently truncating the string. */
static size_t http_server_unescape_cb(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* "host:port" (IPv6 as "[addr]:port"); port 0 lets the kernel choose. */
static int http_server_resolve(const char *addr, struct sockaddr_storage *ss, char *err,
                               size_t err_len)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t hlen = colon ? (size_t)(colon - addr) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof host || colon[1] == '\0') {
        snprintf(err, err_len, "bad listen address '%s' (want host:port)", addr);
        return ERR_INVALID;
    }
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    int rv = getaddrinfo(host, colon + 1, &hints, &res);
    if (rv) {
        snprintf(err, err_len, "bad listen address '%s': %s", addr, gai_strerror(rv));
        return ERR_INVALID;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static struct MHD_Daemon *http_server_daemon(struct http_server *s,
                                             const struct sockaddr_storage *ss)
{
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss->ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, http_server_handler_cb, s, MHD_OPTION_SOCK_ADDR, ss,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTIONS_PER_IP_MAX,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, http_server_completed_cb,
        s, MHD_OPTION_NOTIFY_CONNECTION, http_server_conn_cb, s, MHD_OPTION_EXTERNAL_LOGGER,
        http_server_log_cb, s, MHD_OPTION_UNESCAPE_CALLBACK, http_server_unescape_cb, s,
        MHD_OPTION_END);
}

int http_start(struct ev_loop *loop, const char *listen_addr, uint64_t max_body_bytes,
               const struct http_backend *b, void *ctx, struct http_server **out, char *err,
               size_t err_len)
{
    struct sockaddr_storage ss = {0};
    int rv = http_server_resolve(listen_addr, &ss, err, err_len);
    if (rv) return rv;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return ERR_NOMEM;
    }
    s->loop = loop;
    s->b = b;
    s->ctx = ctx;
    s->max_body_bytes = max_body_bytes;
    http_conn_init(s);
    s->d = http_server_daemon(s, &ss);
    const union MHD_DaemonInfo *ep =
        s->d ? MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    const union MHD_DaemonInfo *port =
        s->d ? MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!ep || !port) {
        snprintf(err, err_len, "cannot listen on %s: %s", listen_addr,
                 s->last_log[0] ? s->last_log : strerror(errno));
        if (s->d) MHD_stop_daemon(s->d);
        free(s);
        return ERR_IO;
    }
    s->port = port->port;
    ev_io_init(&s->io, http_server_io_cb, ep->epoll_fd, EV_READ);
    s->io.data = s;
    ev_io_start(loop, &s->io);
    ev_timer_init(&s->timer, http_server_timer_cb, 0., 0.);
    s->timer.data = s;
    http_server_rearm(s);
    *out = s;
    return 0;
}

void http_stop(struct http_server *s)
{
    if (!s) return;
    ASSERT(!s->running);
    /* MHD must not be stopped with suspended connections: answer them first. The backend
     * still owes its reply; it will find the request orphaned and discard it. */
    struct http_req *orphans = s->pending;
    s->pending = NULL;
    for (struct http_req *req = orphans; req; req = req->next) {
        req->suspended = false;
        struct MHD_Response *r =
            http_error_response(req, 503, "shutting_down", "the node is shutting down");
        if (r) {
            MHD_queue_response(req->conn, 503, r);
            MHD_destroy_response(r);
        }
        MHD_resume_connection(req->conn);
    }
    ev_io_stop(s->loop, &s->io);
    ev_timer_stop(s->loop, &s->timer);
    MHD_stop_daemon(s->d); /* runs the completion callback for every connection it had */
    /* Whether or not it did for these, none may point at the daemon or at s any more. The
     * backend cannot reply in between, so every one of them is still allocated. */
    for (struct http_req *req = orphans, *next; req; req = next) {
        next = req->next;
        req->prev = req->next = NULL;
        req->conn = NULL;
        req->s = NULL;
    }
    http_conn_close(s);
    free(s);
}

uint16_t http_port(const struct http_server *s)
{
    return s->port;
}

void http_stats(const struct http_server *s, struct http_stats *out)
{
    *out = s->stats;
}

int http_add_connection(struct http_server *s, int fd)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (MHD_add_connection(s->d, fd, (const struct sockaddr *)&sin, sizeof sin) != MHD_YES)
        return ERR_BUSY; /* MHD closed fd */
    http_server_kick(s);
    return 0;
}
