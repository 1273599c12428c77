/* sup_http.c — one async HTTP request on libcurl multi, polled from an ev_timer while it is in
 * flight (raftsup makes a handful of small calls per second at most: polling every 10 ms is
 * simpler than wiring curl's sockets into the loop and costs nothing measurable). */
#include "sup_http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"

#define SUP_HTTP_POLL_S 0.01 /* curl_multi_perform period while a request is in flight */

struct sup_http {
    struct ev_loop *loop;
    long timeout_ms;
    sup_http_done_fn *done;
    void *ctx;
    CURLM *multi;
    CURL *easy;                   /* the request in flight, or NULL */
    struct curl_slist *hdrs;      /* Content-Type of a POST */
    ev_timer poll;                /* runs exactly while easy != NULL */
    char body[SUP_HTTP_BODY_MAX]; /* the answer so far, NUL-terminated */
    size_t body_len;
};

static size_t sup_http_write_cb(char *data, size_t size, size_t n, void *ctx)
{
    struct sup_http *h = ctx;
    size_t len = size * n;
    if (len > sizeof h->body - 1 - h->body_len) return 0; /* too large: curl aborts the transfer */
    memcpy(h->body + h->body_len, data, len);
    h->body_len += len;
    h->body[h->body_len] = '\0';
    return len;
}

/* Detaches and frees the request in flight; the poll timer stops with it. */
static void sup_http_drop(struct sup_http *h)
{
    ev_timer_stop(h->loop, &h->poll);
    if (!h->easy) return;
    curl_multi_remove_handle(h->multi, h->easy);
    curl_easy_cleanup(h->easy);
    h->easy = NULL;
}

/* The request is over: free it first, so the callback can start the next one. */
static void sup_http_finish(struct sup_http *h, CURLcode res)
{
    long code = 0;
    if (res == CURLE_OK) curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
    sup_http_drop(h);
    json_t *doc = res == CURLE_OK ? json_loadb(h->body, h->body_len, 0, NULL) : NULL;
    h->done(h->ctx, code, doc);
    json_decref(doc);
}

static void sup_http_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_http *h = w->data;
    int running = 0, left = 0;
    curl_multi_perform(h->multi, &running);
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->easy) {
            sup_http_finish(h, msg->data.result);
            return; /* h->easy may be a new request now; it is read on the next poll */
        }
    }
}

int sup_http_start(struct sup_http *h, const char *addr, const char *path, const char *post)
{
    if (h->easy) return ERR_BUSY;
    char url[CONFIG_ADDR_MAX + 64];
    snprintf(url, sizeof url, "http://%s%s", addr, path);
    h->easy = curl_easy_init();
    if (!h->easy) return ERR_NOMEM;
    h->body_len = 0;
    h->body[0] = '\0';
    curl_easy_setopt(h->easy, CURLOPT_URL, url);
    curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM: the sup owns its signals */
    /* The nodes are the sup's own children: an http_proxy in the user's environment (set for
     * apt or a browser) must not reroute their joins. */
    curl_easy_setopt(h->easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, sup_http_write_cb);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
    if (post) {
        curl_easy_setopt(h->easy, CURLOPT_COPYPOSTFIELDS, post);
        curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->hdrs);
    }
    curl_multi_add_handle(h->multi, h->easy);
    ev_timer_again(h->loop, &h->poll);
    return 0;
}

bool sup_http_busy(const struct sup_http *h)
{
    return h->easy != NULL;
}

int sup_http_new(struct ev_loop *loop, long timeout_ms, sup_http_done_fn *done, void *ctx,
                 struct sup_http **out)
{
    static bool global_done; /* raftsup is single-threaded: no race on the flag */
    if (!global_done && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return ERR_IO;
    global_done = true;
    struct sup_http *h = calloc(1, sizeof *h);
    if (!h) return ERR_NOMEM;
    h->loop = loop;
    h->timeout_ms = timeout_ms;
    h->done = done;
    h->ctx = ctx;
    h->multi = curl_multi_init();
    h->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    ev_init(&h->poll, sup_http_poll_cb);
    h->poll.repeat = SUP_HTTP_POLL_S;
    h->poll.data = h;
    if (!h->multi || !h->hdrs) {
        sup_http_free(h);
        return ERR_NOMEM;
    }
    *out = h;
    return 0;
}

void sup_http_free(struct sup_http *h)
{
    if (!h) return;
    sup_http_drop(h);
    if (h->multi) curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->hdrs);
    free(h);
}
