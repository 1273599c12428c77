/* http_route.c — routing and validation of one request: method, path, query, body size and
 * JSON shape. A request that fails here never reaches the backend. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"
#include "fsm.h"
#include "fspath.h"
#include "http_internal.h"
#include "rassert.h"

#define HTTP_FILES_PREFIX "/v1/files/"
#define HTTP_DISCARD_MAX (8u << 20) /* bytes read past a streaming limit before closing */

static const struct {
    const char *url;
    enum http_route route;
} http_routes[] = {
    {"/v1/files", HTTP_ROUTE_LIST},
    {"/v1/status", HTTP_ROUTE_STATUS},
    {"/v1/cluster/join", HTTP_ROUTE_JOIN},
    {"/v1/cluster/remove", HTTP_ROUTE_REMOVE},
    {"/v1/cluster/transfer", HTTP_ROUTE_TRANSFER},
    {"/metrics", HTTP_ROUTE_METRICS},
};

const char *http_route_allow(enum http_route route)
{
    switch (route) {
    case HTTP_ROUTE_FILE:
        return "GET, HEAD, PUT, DELETE";
    case HTTP_ROUTE_JOIN:
    case HTTP_ROUTE_REMOVE:
    case HTTP_ROUTE_TRANSFER:
        return "POST";
    default:
        return "GET, HEAD";
    }
}

static bool http_route_method_ok(enum http_route route, const char *method)
{
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    switch (route) {
    case HTTP_ROUTE_FILE:
        return get || !strcmp(method, "PUT") || !strcmp(method, "DELETE");
    case HTTP_ROUTE_JOIN:
    case HTTP_ROUTE_REMOVE:
    case HTTP_ROUTE_TRANSFER:
        return !strcmp(method, "POST");
    default:
        return get;
    }
}

static enum http_route http_route_find(const char *url)
{
    if (!strncmp(url, HTTP_FILES_PREFIX, strlen(HTTP_FILES_PREFIX))) return HTTP_ROUTE_FILE;
    for (size_t i = 0; i < sizeof http_routes / sizeof http_routes[0]; i++)
        if (!strcmp(url, http_routes[i].url)) return http_routes[i].route;
    return HTTP_ROUTE_NONE;
}

/* Decodes raw into a new req->path and validates it as a file path (or, for a list prefix, as
 * the path it names once a trailing '/' is dropped; "" lists everything). */
static enum MHD_Result http_route_path(struct http_req *req, const char *raw, size_t raw_len,
                                       bool prefix, bool *ok)
{
    char why[128] = "";
    size_t len = 0;
    *ok = false;
    /* Decoding never lengthens: raw_len + 1 bytes hold any path, and HTTP_PATH_MAX + 2 tell
     * an over-long one. Sized to the request, not the limit (a 4 KiB malloc per request was
     * the allocator's slow path). */
    size_t cap = (raw_len < HTTP_PATH_MAX + 1 ? raw_len : HTTP_PATH_MAX + 1) + 1;
    req->path = malloc(cap);
    if (!req->path) return http_fail_now(req, 503, "no_memory", "out of memory");
    int rv = http_path_decode(raw, raw_len, req->path, cap, &len);
    if (rv == ERR_TOOBIG || (rv == 0 && len > HTTP_PATH_MAX))
        return http_fail_now(req, 400, "bad_path", "path longer than %d bytes", HTTP_PATH_MAX);
    if (rv) return http_fail_now(req, 400, "bad_path", "bad percent-encoding in path (or NUL)");
    size_t check_len = len;
    if (prefix && check_len > 0 && req->path[check_len - 1] == '/') check_len--;
    if ((!prefix || check_len > 0) && fspath_validate(req->path, check_len, why, sizeof why) != 0)
        return http_fail_now(req, 400, "bad_path", "bad path: %s", why);
    if (!http_utf8_valid(req->path, len))
        return http_fail_now(req, 400, "bad_path", "bad path: not valid UTF-8");
    *ok = true;
    return MHD_YES;
}

/* ?stale=true|false (also 1|0); anything else is a 400. */
static enum MHD_Result http_route_stale(struct http_req *req, bool *ok)
{
    const char *v = NULL;
    size_t vlen = 0;
    *ok = true;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, "stale", 5, &v, &vlen) !=
        MHD_YES)
        return MHD_YES; /* absent */
    if (v && (!strcmp(v, "false") || !strcmp(v, "0"))) return MHD_YES;
    if (!v || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "")) {
        req->stale = true;
        return MHD_YES;
    }
    *ok = false;
    return http_fail_now(req, 400, "bad_query", "stale must be true or false");
}

/* Content-Length as a number; -1 when absent; -2 when malformed. */
static int64_t http_route_content_length(struct http_req *req)
{
    const char *v =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!v) return -1;
    if (*v < '0' || *v > '9' || strlen(v) > 18) return -2;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    return errno || *end ? -2 : (int64_t)n;
}

/* PUT: refuse an oversized Content-Length before reading a byte, else build the command now
 * so the body lands directly in it. Without Content-Length (chunked) the body grows in a
 * buffer up to the limit and is copied into the command at the end (one extra copy). */
static enum MHD_Result http_route_put_begin(struct http_req *req)
{
    struct http_server *s = req->s;
    int64_t cl = http_route_content_length(req);
    if (cl == -2) return http_fail_now(req, 400, "bad_request", "malformed Content-Length");
    if (cl >= 0 && (uint64_t)cl > s->max_body_bytes)
        return http_fail_now(req, 413, "too_large",
                             "body of %lld bytes exceeds the %llu-byte limit", (long long)cl,
                             (unsigned long long)s->max_body_bytes);
    if (cl < 0) {
        /* Chunked, or any other framing libmicrohttpd accepts without a length. */
        req->chunked = true;
        return MHD_YES;
    }
    uint8_t req_id[FSM_REQ_ID_LEN];
    if (fsm_req_id_new(req_id))
        return http_fail_now(req, 503, "no_entropy", "cannot draw a request id");
    req->body_len = (uint64_t)cl;
    int rv = fsm_cmd_put_alloc(req_id, req->path, strlen(req->path), req->body_len, &req->cmd,
                               &req->body);
    if (rv == ERR_TOOBIG) return http_fail_now(req, 413, "too_large", "body too large");
    if (rv) return http_fail_now(req, 503, "no_memory", "cannot hold the body: %s", err_str(rv));
    return MHD_YES;
}

/* Other methods: small bodies only (JSON for the cluster routes, nothing elsewhere). */
static enum MHD_Result http_route_small_begin(struct http_req *req)
{
    int64_t cl = http_route_content_length(req);
    if (cl == -2) return http_fail_now(req, 400, "bad_request", "malformed Content-Length");
    if (cl > HTTP_JSON_BODY_MAX)
        return http_fail_now(req, 413, "too_large", "body exceeds %d bytes", HTTP_JSON_BODY_MAX);
    return MHD_YES;
}

enum MHD_Result http_route_begin(struct http_req *req, const char *url, const char *method)
{
    req->route = http_route_find(url);
    if (req->route == HTTP_ROUTE_NONE) return http_fail_now(req, 404, "not_found", "no such route");
    if (!http_route_method_ok(req->route, method))
        return http_fail_now(req, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)",
                             method, http_route_allow(req->route));
    bool ok = true;
    enum MHD_Result rv = MHD_YES;
    if (req->route == HTTP_ROUTE_FILE) {
        const char *raw = url + strlen(HTTP_FILES_PREFIX);
        rv = http_route_path(req, raw, strlen(raw), false, &ok);
    } else if (req->route == HTTP_ROUTE_LIST) {
        const char *raw = NULL;
        size_t raw_len = 0;
        if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, "prefix", 6, &raw,
                                          &raw_len) != MHD_YES ||
            !raw)
            raw = "", raw_len = 0;
        rv = http_route_path(req, raw, raw_len, true, &ok);
    }
    if (ok && (req->route == HTTP_ROUTE_FILE || req->route == HTTP_ROUTE_LIST) &&
        strcmp(method, "PUT") && strcmp(method, "DELETE"))
        rv = http_route_stale(req, &ok);
    if (!ok) return rv;
    if (!strcmp(method, "PUT")) return http_route_put_begin(req);
    return http_route_small_begin(req);
}

/* Grows req->buf to hold need bytes (doubling, capped at limit). */
static int http_route_grow(struct http_req *req, uint64_t need, uint64_t limit)
{
    if (need <= req->buf_cap) return 0;
    uint64_t cap = req->buf_cap ? req->buf_cap : 65536;
    while (cap < need)
        cap *= 2;
    if (cap > limit) cap = limit;
    uint8_t *nb = realloc(req->buf, cap);
    if (!nb) return ERR_NOMEM;
    req->buf = nb;
    req->buf_cap = cap;
    return 0;
}

enum MHD_Result http_route_body(struct http_req *req, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    req->s->stats.bytes_in += n;
    bool put = req->route == HTTP_ROUTE_FILE && (req->cmd || req->chunked);
    if (put && !req->chunked) {
        /* Never past the command's body, whatever the framing claimed. */
        if (req->body_got + n > req->body_len) return MHD_NO;
        memcpy(req->body + req->body_got, data, n);
        req->body_got += n;
        return MHD_YES;
    }
    uint64_t limit = put ? req->s->max_body_bytes : HTTP_JSON_BODY_MAX;
    if (req->body_got + n > limit || req->too_large) {
        /* MHD cannot answer in the middle of an upload: drop what is held, discard the rest
         * and answer 413 at its end; a sender that goes far beyond is cut off. */
        req->too_large = true;
        free(req->buf);
        req->buf = NULL;
        req->buf_cap = 0;
        req->body_got += n;
        return req->body_got - limit > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    bool keep = put || req->route == HTTP_ROUTE_JOIN || req->route == HTTP_ROUTE_REMOVE ||
                req->route == HTTP_ROUTE_TRANSFER;
    if (keep) {
        if (http_route_grow(req, req->body_got + n, limit))
            return http_fail_now(req, 503, "no_memory", "out of memory");
        memcpy(req->buf + req->body_got, data, n);
    }
    req->body_got += n;
    return MHD_YES;
}
