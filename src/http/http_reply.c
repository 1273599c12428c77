/* http_reply.c — the backend's replies: build an MHD response and deliver it to a request that
 * may be inside the handler (synchronous reply), suspended (async) or orphaned (discarded). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_internal.h"
#include "log.h"
#include "rassert.h"

void http_req_free(struct http_req *req)
{
    ASSERT(!req->waiting);
    ASSERT(!req->suspended);
    if (req->resp) MHD_destroy_response(req->resp);
    raft_blob_unref(req->cmd);
    free(req->buf);
    free(req->path);
    free(req);
}

void http_count_status(struct http_server *s, unsigned status)
{
    for (size_t i = 0; i < HTTP_STATS_N_CODES; i++) {
        if (http_stats_codes[i] == status) {
            s->stats.responses[i]++;
            return;
        }
    }
    s->stats.responses_other++;
}

enum MHD_Result http_reply_now(struct http_req *req, unsigned status, struct MHD_Response *resp)
{
    req->done = true;
    if (!resp) return MHD_NO; /* out of memory: MHD closes the connection */
    http_count_status(req->s, status);
    enum MHD_Result rv = MHD_queue_response(req->conn, status, resp);
    MHD_destroy_response(resp);
    return rv;
}

static void http_unlink(struct http_req *req)
{
    struct http_server *s = req->s;
    if (req->prev)
        req->prev->next = req->next;
    else
        s->pending = req->next;
    if (req->next) req->next->prev = req->prev;
    req->prev = req->next = NULL;
    req->suspended = false;
    ASSERT(s->stats.pending > 0);
    s->stats.pending--;
}

/* The single exit of every backend reply. resp may be NULL (out of memory): the connection
 * is then closed without an answer. */
static void http_deliver(struct http_req *req, unsigned status, struct MHD_Response *resp,
                         uint64_t body_len)
{
    ASSERT(req->waiting);
    req->waiting = false;
    if (!req->conn) {
        /* The client went away (or the server stopped) before we could answer. */
        if (resp) MHD_destroy_response(resp);
        http_req_free(req);
        return;
    }
    if (req->in_handler) {
        /* http_route_dispatch queues it once the backend returns. */
        req->resp = resp;
        req->status = status;
        if (resp) req->s->stats.bytes_out += body_len;
        return;
    }
    ASSERT(req->suspended);
    struct http_server *s = req->s;
    http_unlink(req);
    req->done = true;
    if (resp) {
        http_count_status(s, status);
        s->stats.bytes_out += body_len;
        MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
    }
    /* Without a queued response, the resumed handler call closes the connection. */
    MHD_resume_connection(req->conn);
    http_server_kick(s);
}

static struct MHD_Response *http_buffer_response(char *data, size_t len,
                                                 enum MHD_ResponseMemoryMode mode,
                                                 const char *content_type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(data);
        return NULL;
    }
    if (content_type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return r;
}

/* Serialises body (stolen) with a trailing newline, for curl users. */
static struct MHD_Response *http_json_response(json_t *body, size_t *len)
{
    *len = 0;
    if (!body) return NULL;
    size_t n = json_dumpb(body, NULL, 0, JSON_COMPACT);
    char *text = n ? malloc(n + 1) : NULL;
    if (text && json_dumpb(body, text, n, JSON_COMPACT) == n)
        text[n++] = '\n';
    else {
        free(text);
        text = NULL;
    }
    json_decref(body);
    *len = text ? n : 0;
    return text ? http_buffer_response(text, n, MHD_RESPMEM_MUST_FREE, "application/json") : NULL;
}

struct MHD_Response *http_error_response(struct http_req *req, unsigned status, const char *code,
                                         const char *msg)
{
    size_t len;
    struct MHD_Response *r =
        http_json_response(json_pack("{s:s, s:s}", "error", msg, "code", code), &len);
    if (r && status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (r && status == 405) MHD_add_response_header(r, "Allow", http_route_allow(req->route));
    return r;
}

static struct MHD_Response *http_error_vresponse(struct http_req *req, unsigned status,
                                                 const char *code, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    http_utf8_sanitize(msg); /* it may quote a client's bytes; JSON strings are UTF-8 */
    return http_error_response(req, status, code, msg);
}

enum MHD_Result http_fail_now(struct http_req *req, unsigned status, const char *code,
                              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct MHD_Response *r = http_error_vresponse(req, status, code, fmt, ap);
    va_end(ap);
    return http_reply_now(req, status, r);
}

void http_reply_json(struct http_req *req, unsigned status, json_t *body)
{
    size_t len;
    struct MHD_Response *r = http_json_response(body, &len);
    if (!r) {
        http_reply_error(req, 500, "no_memory", "cannot build the answer");
        return;
    }
    http_deliver(req, status, r, len);
}

void http_reply_json_text(struct http_req *req, unsigned status, char *text, size_t len)
{
    if (!text) {
        http_reply_error(req, 500, "no_memory", "cannot build the answer");
        return;
    }
    struct MHD_Response *r =
        http_buffer_response(text, len, MHD_RESPMEM_MUST_FREE, "application/json");
    http_deliver(req, status, r, len);
}

void http_reply_error(struct http_req *req, unsigned status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct MHD_Response *r = http_error_vresponse(req, status, code, fmt, ap);
    va_end(ap);
    http_deliver(req, status, r, 0);
}

void http_reply_fd(struct http_req *req, int fd, uint64_t size, const char *etag, raft_index index)
{
    if (!req->conn) {
        close(fd);
        http_deliver(req, 200, NULL, 0);
        return;
    }
    struct MHD_Response *r = MHD_create_response_from_fd64(size, fd); /* closes fd when freed */
    if (!r) {
        close(fd);
    } else {
        char quoted[160], idx[32];
        snprintf(quoted, sizeof quoted, "\"%s\"", etag ? etag : "");
        snprintf(idx, sizeof idx, "%" PRIu64, (uint64_t)index);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, quoted);
        MHD_add_response_header(r, "X-Raft-Index", idx);
    }
    http_deliver(req, 200, r, size);
}

void http_reply_text(struct http_req *req, unsigned status, const char *content_type,
                     const char *body, size_t len)
{
    struct MHD_Response *r =
        http_buffer_response((char *)body, len, MHD_RESPMEM_MUST_COPY, content_type);
    http_deliver(req, status, r, len);
}

void http_reply_empty(struct http_req *req, unsigned status)
{
    http_deliver(req, status, http_buffer_response(NULL, 0, MHD_RESPMEM_PERSISTENT, NULL), 0);
}
