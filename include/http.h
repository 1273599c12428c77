/* http.h — the client-facing HTTP API of a node (INTERFACES.md "HTTP API"): routing, path and
 * body validation on the node's libev loop with libmicrohttpd. Never does any Raft work: a
 * backend (the node) answers each validated request, possibly much later. */
#ifndef RAFTFS_HTTP_H
#define RAFTFS_HTTP_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define HTTP_PATH_MAX 4096              /* bytes of a decoded file path (INTERFACES.md) */
#define HTTP_JSON_BODY_MAX 65536        /* request bodies of the cluster routes */
#define HTTP_CONNECTIONS_MAX 512        /* open client connections; more are refused */
#define HTTP_CONNECTIONS_PER_IP_MAX 256 /* so one client address cannot take every slot */
#define HTTP_CONNECTION_TIMEOUT_S 30    /* a connection silent this long is closed */
/* A request's headers are due within this time of the connection's start or of the end of its
 * previous request (a trickling client resets the idle timeout, not this one). */
#define HTTP_HEADER_TIMEOUT_S 10.0

struct http_server;
struct http_req; /* one suspended client request; opaque */

/* Each callback gets a request and must eventually call exactly one http_reply_* on it,
 * possibly much later from another loop callback (the client may have gone by then: the
 * reply is then discarded). Strings are borrowed for the duration of the call; paths are
 * percent-decoded and validated (fspath_validate); prefix may be "" (list everything). */
struct http_backend {
    /* cmd: an fsm PUT command (fsm_cmd_put_alloc) holding the body; one reference passed. */
    void (*put)(void *ctx, struct http_req *req, const char *path, struct raft_blob *cmd);
    void (*get)(void *ctx, struct http_req *req, const char *path, bool stale);
    void (*del)(void *ctx, struct http_req *req, const char *path);
    void (*list)(void *ctx, struct http_req *req, const char *prefix, bool stale);
    void (*status)(void *ctx, struct http_req *req);
    void (*join)(void *ctx, struct http_req *req, const char *id, const char *raft_addr,
                 const char *http_addr);
    void (*remove)(void *ctx, struct http_req *req, const char *id);
    void (*transfer)(void *ctx, struct http_req *req, const char *id);
    void (*metrics)(void *ctx, struct http_req *req);
};

/* Counters for /metrics. Status codes outside the table are counted in "other". */
#define HTTP_STATS_CODES(X)                                                                        \
    X(200) X(201) X(204) X(400) X(404) X(405) X(409) X(413) X(500) X(501) X(503) X(507)
#define HTTP_STATS_N_CODES 12

struct http_stats {
    uint64_t requests;                      /* requests whose headers were received */
    uint64_t responses[HTTP_STATS_N_CODES]; /* by code, in HTTP_STATS_CODES order */
    uint64_t responses_other;               /* any other status */
    uint64_t bytes_in;                      /* request body bytes received */
    uint64_t bytes_out;                     /* response body bytes queued */
    uint64_t connections;                   /* accepted since start */
    uint64_t connections_cut;               /* closed for missing the header deadline */
    uint32_t open_connections;              /* now */
    uint32_t pending;                       /* requests waiting for the backend now */
};
extern const unsigned http_stats_codes[HTTP_STATS_N_CODES];

/* Listens on listen_addr ("host:port"; port 0 picks a free one, see http_port) and serves on
 * loop. Bodies of PUT are refused with 413 beyond max_body_bytes. b and ctx are borrowed until
 * http_stop. Returns 0, ERR_INVALID (bad address) or ERR_IO (cannot listen) with a message
 * in err. */
int http_start(struct ev_loop *loop, const char *listen_addr, uint64_t max_body_bytes,
               const struct http_backend *b, void *ctx, struct http_server **out, char *err,
               size_t err_len);
/* Answers 503 to every request still waiting for the backend, closes every connection and
 * frees s. Requests the backend still holds stay valid: replying to them later is a no-op. */
void http_stop(struct http_server *s);
/* Tuning (tests): the header deadline, HTTP_HEADER_TIMEOUT_S by default. */
void http_set_header_timeout(struct http_server *s, double seconds);
/* The bound TCP port. */
uint16_t http_port(const struct http_server *s);
void http_stats(const struct http_server *s, struct http_stats *out);
/* The counters in the Prometheus text format (raftfs_http_*), for GET /metrics: writes at most
 * cap bytes (NUL-terminated when cap > 0) and returns the length the whole text needs, like
 * snprintf. */
size_t http_stats_prometheus(const struct http_server *s, char *buf, size_t cap);

/* Replies: exactly one per request handed to the backend; req is invalid afterwards. */
/* body: stolen (NULL is answered 500 "no_memory"). Content-Type application/json. */
void http_reply_json(struct http_req *req, unsigned status, json_t *body);
/* {"error": <formatted message>, "code": code}; a 503 adds "Retry-After: 1", a 405 an Allow
 * header naming the route's methods. */
void http_reply_error(struct http_req *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 200 with size bytes of fd from offset 0 (fd taken: closed when sent or discarded); headers
 * ETag: "<etag>" and X-Raft-Index. */
void http_reply_fd(struct http_req *req, int fd, uint64_t size, const char *etag, raft_index index);
/* body: copied. */
void http_reply_text(struct http_req *req, unsigned status, const char *content_type,
                     const char *body, size_t len);
void http_reply_empty(struct http_req *req, unsigned status);
/* text: a JSON document (malloc'd, stolen; NULL is answered 500 "no_memory"), sent as is. */
void http_reply_json_text(struct http_req *req, unsigned status, char *text, size_t len);

/* JSON string escaping as jansson's compact dump does it ('"', '\\', control characters; UTF-8
 * passes through): writes at most cap bytes of the escaped s[0..len) to out (NUL-terminated
 * when cap > 0; out may be NULL when cap is 0) and returns the escaped length, like snprintf. */
size_t http_json_escape(const char *s, size_t len, char *out, size_t cap);
/* A file's object, {"path":..,"size":..,"sha256":..,"index":..} and a newline, byte for byte
 * what http_reply_json gives for the same json_pack: malloc'd, its length in *len; NULL when
 * out of memory. */
char *http_json_file(const char *path, uint64_t size, const char sha256_hex[65], uint64_t index,
                     size_t *len);

/* Percent-decodes raw[0..raw_len) into out (capacity out_cap, NUL-terminated) and sets
 * *out_len. ERR_INVALID for a malformed escape or an encoded NUL, ERR_TOOBIG when the result
 * does not fit. A pure function (the fuzz target's entry point). */
int http_path_decode(const char *raw, size_t raw_len, char *out, size_t out_cap, size_t *out_len);

/* Serves one already-connected stream socket fd (taken) as if accepted: the fuzz target feeds
 * raw requests through a socketpair. ERR_BUSY at the connection limit. */
int http_add_connection(struct http_server *s, int fd);

#endif
