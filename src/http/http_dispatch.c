/* http_dispatch.c — hands a fully received, validated request to the backend and suspends its
 * connection until the backend replies. Parses the cluster routes' JSON bodies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"
#include "fsm.h"
#include "http_internal.h"
#include "rassert.h"

/* Builds the PUT command of a chunked upload: the one extra copy of the body. */
static enum MHD_Result http_dispatch_chunked_cmd(struct http_req *req, bool *ok)
{
    uint8_t req_id[FSM_REQ_ID_LEN];
    *ok = false;
    if (fsm_req_id_new(req_id))
        return http_fail_now(req, 503, "no_entropy", "cannot draw a request id");
    int rv = fsm_cmd_put_alloc(req_id, req->path, strlen(req->path), req->body_got, &req->cmd,
                               &req->body);
    if (rv == ERR_TOOBIG) return http_fail_now(req, 413, "too_large", "body too large");
    if (rv) return http_fail_now(req, 503, "no_memory", "cannot hold the body: %s", err_str(rv));
    if (req->body_got) memcpy(req->body, req->buf, req->body_got);
    free(req->buf);
    req->buf = NULL;
    req->buf_cap = 0;
    *ok = true;
    return MHD_YES;
}

/* One required, non-empty string member of a JSON object. */
static const char *http_dispatch_field(json_t *obj, const char *name, char *err, size_t err_len)
{
    json_t *v = json_object_get(obj, name);
    if (!v) {
        snprintf(err, err_len, "missing field \"%s\"", name);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, err_len, "field \"%s\" must be a non-empty string", name);
        return NULL;
    }
    return json_string_value(v);
}

/* Parses the cluster route's body into obj and checks its fields; NULL after a 400. */
static json_t *http_dispatch_json(struct http_req *req, const char *fields[3], enum MHD_Result *rv)
{
    json_error_t jerr;
    char err[256];
    json_t *obj = json_loadb((const char *)req->buf, req->body_got, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        *rv = http_fail_now(req, 400, "bad_json", "malformed JSON at line %d, column %d: %s",
                            jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        *rv = http_fail_now(req, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    size_t want = req->route == HTTP_ROUTE_JOIN ? 3 : 1;
    static const char *names[3] = {"id", "raft", "http"};
    for (size_t i = 0; i < want; i++) {
        fields[i] = http_dispatch_field(obj, names[i], err, sizeof err);
        if (!fields[i]) {
            json_decref(obj);
            *rv = http_fail_now(req, 400, "bad_json", "%s", err);
            return NULL;
        }
    }
    return obj;
}

/* Calls the backend for req's route. Strings stay valid for the call only. */
static void http_dispatch_call(struct http_req *req, const char *method, const char *f[3])
{
    const struct http_backend *b = req->s->b;
    void *ctx = req->s->ctx;
    struct raft_blob *cmd = req->cmd;
    switch (req->route) {
    case HTTP_ROUTE_FILE:
        if (!strcmp(method, "PUT")) {
            req->cmd = NULL; /* the backend owns it now */
            req->body = NULL;
            b->put(ctx, req, req->path, cmd);
        } else if (!strcmp(method, "DELETE")) {
            b->del(ctx, req, req->path);
        } else {
            b->get(ctx, req, req->path, req->stale);
        }
        break;
    case HTTP_ROUTE_LIST:
        b->list(ctx, req, req->path, req->stale);
        break;
    case HTTP_ROUTE_STATUS:
        b->status(ctx, req);
        break;
    case HTTP_ROUTE_METRICS:
        b->metrics(ctx, req);
        break;
    case HTTP_ROUTE_JOIN:
        b->join(ctx, req, f[0], f[1], f[2]);
        break;
    case HTTP_ROUTE_REMOVE:
        b->remove(ctx, req, f[0]);
        break;
    case HTTP_ROUTE_TRANSFER:
        b->transfer(ctx, req, f[0]);
        break;
    default:
        ASSERT(!"unroutable request reached the backend");
    }
}

/* The backend either replied already (queue it now) or will later (suspend until then). */
static enum MHD_Result http_dispatch_backend(struct http_req *req, const char *method,
                                             const char *f[3])
{
    struct http_server *s = req->s;
    req->waiting = true;
    req->in_handler = true;
    http_dispatch_call(req, method, f);
    req->in_handler = false;
    if (!req->waiting) {
        struct MHD_Response *r = req->resp;
        req->resp = NULL;
        return http_reply_now(req, req->status, r);
    }
    req->suspended = true;
    req->prev = NULL;
    req->next = s->pending;
    if (s->pending) s->pending->prev = req;
    s->pending = req;
    s->stats.pending++;
    MHD_suspend_connection(req->conn);
    return MHD_YES;
}

enum MHD_Result http_route_finish(struct http_req *req, const char *method)
{
    enum MHD_Result rv = MHD_YES;
    const char *f[3] = {NULL, NULL, NULL};
    json_t *obj = NULL;
    bool ok = true;
    if (req->too_large)
        return http_fail_now(req, 413, "too_large", "body exceeds the %llu-byte limit",
                             (unsigned long long)(req->route == HTTP_ROUTE_FILE
                                                      ? req->s->max_body_bytes
                                                      : HTTP_JSON_BODY_MAX));
    if (req->route == HTTP_ROUTE_FILE && req->chunked) rv = http_dispatch_chunked_cmd(req, &ok);
    if (req->route == HTTP_ROUTE_JOIN || req->route == HTTP_ROUTE_REMOVE ||
        req->route == HTTP_ROUTE_TRANSFER) {
        obj = http_dispatch_json(req, f, &rv);
        ok = obj != NULL;
    }
    if (!ok) return rv;
    rv = http_dispatch_backend(req, method, f);
    json_decref(obj);
    return rv;
}
