/* sup_http.h — one HTTP request at a time from raftsup's ev loop (the join helper's and the
 * rolling restart's calls to the nodes). libcurl multi is driven by an ev_timer, so the loop
 * never blocks on a slow or dead node; every request has a deadline and ends in exactly one
 * completion call. */
#ifndef RAFTFS_SUP_HTTP_H
#define RAFTFS_SUP_HTTP_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>

#define SUP_HTTP_BODY_MAX (256 * 1024) /* a larger answer counts as no answer */

struct sup_http;

/* A finished request. code: the HTTP status, 0 when there was no answer (unreachable, timed
 * out, body over SUP_HTTP_BODY_MAX). doc: the body parsed as JSON, NULL when it is not JSON
 * or code is 0; borrowed, freed after the call. The callback may start the next request but
 * must not free the helper. */
typedef void sup_http_done_fn(void *ctx, long code, json_t *doc);

/* timeout_ms bounds the connect and the whole transfer, each. ERR_NOMEM or ERR_IO (curl's
 * global init) on failure. */
int sup_http_new(struct ev_loop *loop, long timeout_ms, sup_http_done_fn *done, void *ctx,
                 struct sup_http **out);
/* Starts GET http://addr/path, or a POST of the JSON text post (copied) when not NULL.
 * ERR_BUSY while a request is in flight, ERR_NOMEM when curl cannot make a handle; no
 * completion call follows a failed start. */
int sup_http_start(struct sup_http *h, const char *addr, const char *path, const char *post);
/* True while a request is in flight (its completion call is still to come). */
bool sup_http_busy(const struct sup_http *h);
/* Drops a request in flight without its completion call. NULL-safe. */
void sup_http_free(struct sup_http *h);

#endif
