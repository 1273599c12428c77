/* http_internal.h — the HTTP module's private state, shared by its files (server, routes,
 * replies). Nothing outside src/http includes it. */
#ifndef RAFTFS_HTTP_INTERNAL_H
#define RAFTFS_HTTP_INTERNAL_H

#include <microhttpd.h>

#include "http.h"

enum http_route {
    HTTP_ROUTE_NONE = 0,
    HTTP_ROUTE_FILE,     /* /v1/files/PATH */
    HTTP_ROUTE_LIST,     /* /v1/files */
    HTTP_ROUTE_STATUS,   /* /v1/status */
    HTTP_ROUTE_JOIN,     /* /v1/cluster/join */
    HTTP_ROUTE_REMOVE,   /* /v1/cluster/remove */
    HTTP_ROUTE_TRANSFER, /* /v1/cluster/transfer */
    HTTP_ROUTE_METRICS,  /* /metrics */
};

struct http_server {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    ev_io io;       /* MHD's epoll fd: readable when any of its sockets is ready */
    ev_timer timer; /* MHD_get_timeout(), or 0 to run MHD after a resume */
    ev_timer sweep; /* header deadline checks, while connections exist */
    double header_timeout_s;
    struct http_conn *conns; /* every open connection (http_conn.c) */
    const struct http_backend *b;
    void *ctx;
    uint64_t max_body_bytes;
    uint16_t port;
    bool running;             /* inside MHD_run: never re-enter it */
    struct http_req *pending; /* suspended requests waiting for the backend (list head) */
    struct http_stats stats;
    char last_log[160]; /* MHD's last log line (start-up errors) */
};

/* Invariants: waiting => the backend holds req and owes one reply; suspended => req is in
 * s->pending and its connection is suspended; conn == NULL => MHD is done with the connection
 * (the reply, if any comes, is discarded and req freed). */
struct http_req {
    struct http_server *s;
    struct MHD_Connection *conn;
    struct http_req *prev, *next; /* in s->pending while suspended */
    enum http_route route;
    bool waiting;
    bool in_handler; /* the backend is being called from MHD's handler right now */
    bool suspended;
    bool done;    /* a response was queued: ignore further handler calls */
    bool chunked; /* PUT without Content-Length: body grows in buf */
    bool stale;
    bool too_large;            /* the body went over its limit while streaming: discard, then 413 */
    struct MHD_Response *resp; /* a reply given synchronously, queued when the handler returns */
    unsigned status;
    char *path;            /* decoded path or prefix */
    struct raft_blob *cmd; /* PUT command under construction (body written in place) */
    uint8_t *body;         /* where the body goes: into cmd, or buf */
    uint64_t body_len;     /* expected (Content-Length) */
    uint64_t body_got;
    uint8_t *buf; /* chunked PUT, or a JSON body */
    size_t buf_cap;
};

/* http_route.c */
enum MHD_Result http_route_begin(struct http_req *req, const char *url, const char *method);
enum MHD_Result http_route_body(struct http_req *req, const char *data, size_t *size);
enum MHD_Result http_route_finish(struct http_req *req, const char *method);
const char *http_route_allow(enum http_route route);

/* http_reply.c */
/* Queues resp for req from inside MHD's handler (no backend involved). */
enum MHD_Result http_reply_now(struct http_req *req, unsigned status, struct MHD_Response *resp);
/* A JSON error response ready to queue (NULL when out of memory). */
struct MHD_Response *http_error_response(struct http_req *req, unsigned status, const char *code,
                                         const char *msg);
enum MHD_Result http_fail_now(struct http_req *req, unsigned status, const char *code,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void http_count_status(struct http_server *s, unsigned status);
void http_req_free(struct http_req *req);

/* http_path.c: JSON strings must be UTF-8, and every answer carries the path in JSON. */
bool http_utf8_valid(const char *s, size_t len);
/* Replaces each byte of s that is not part of a well-formed sequence with '?'. */
void http_utf8_sanitize(char *s);

/* http_conn.c */
void http_conn_init(struct http_server *s);
void http_conn_close(struct http_server *s);
void http_conn_notify(struct http_server *s, struct MHD_Connection *conn, void **socket_ctx,
                      bool started);
void http_conn_busy(struct http_server *s, struct MHD_Connection *conn, bool busy);

/* http_server.c */
/* Makes the loop run MHD soon (after a resume). */
void http_server_kick(struct http_server *s);

#endif
