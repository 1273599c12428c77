/* test_http.c — the HTTP module against a fake backend: the server runs on a libev loop in a
 * second thread; libcurl and raw sockets drive it from the test thread. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../check.h"
#include "err.h"
#include "fsm.h"
#include "http.h"
#include "../../../src/http/http_internal.h" /* http_utf8_* */

/* ---- The fake backend (runs on the server thread) ---------------------------------------- */
enum fake_mode { FAKE_SYNC, FAKE_ASYNC, FAKE_HOLD };

struct fake_call {
    char kind[16];
    char a[4200], b[64], c[64]; /* path/prefix/id, raft, http */
    bool stale;
    uint8_t *body; /* PUT: decoded body (malloc'd) */
    size_t body_len;
};

struct fake_async {
    ev_timer t;
    struct http_req *req;
    struct fake_async *next;
};

static struct {
    pthread_mutex_t mu;
    struct ev_loop *loop;
    ev_async stop;
    struct http_server *srv;
    enum fake_mode mode;
    double delay_s;
    int calls, replies;
    struct fake_call last;
    struct http_req *held;
    bool no_leader;
} fk = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void fake_answer(struct http_req *req, const char *kind)
{
    if (!strcmp(kind, "metrics"))
        http_reply_text(req, 200, "text/plain; version=0.0.4", "m 1\n", 4);
    else if (!strcmp(kind, "del"))
        http_reply_empty(req, 204);
    else if (!strcmp(kind, "get") && !strcmp(fk.last.a, "missing"))
        http_reply_error(req, 404, "not_found", "no such file: %s", fk.last.a);
    else if (!strcmp(kind, "status") && fk.no_leader)
        http_reply_error(req, 503, "no_leader", "no leader");
    else
        http_reply_json(req, !strcmp(kind, "put") ? 201 : 200,
                        json_pack("{s:s, s:s}", "kind", kind, "arg", fk.last.a));
    fk.replies++;
}

static void fake_async_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fake_async *a = (struct fake_async *)w;
    pthread_mutex_lock(&fk.mu);
    fake_answer(a->req, fk.last.kind);
    pthread_mutex_unlock(&fk.mu);
    free(a);
}

/* Records the call, then replies as the current mode says. */
static void fake_record(struct http_req *req, const char *kind, const char *a, const char *b,
                        const char *c, bool stale)
{
    pthread_mutex_lock(&fk.mu);
    fk.calls++;
    free(fk.last.body);
    memset(&fk.last, 0, sizeof fk.last);
    snprintf(fk.last.kind, sizeof fk.last.kind, "%s", kind);
    snprintf(fk.last.a, sizeof fk.last.a, "%s", a ? a : "");
    snprintf(fk.last.b, sizeof fk.last.b, "%s", b ? b : "");
    snprintf(fk.last.c, sizeof fk.last.c, "%s", c ? c : "");
    fk.last.stale = stale;
    if (fk.mode == FAKE_SYNC) {
        fake_answer(req, kind);
    } else if (fk.mode == FAKE_HOLD) {
        fk.held = req;
    } else {
        struct fake_async *t = calloc(1, sizeof *t);
        t->req = req;
        ev_timer_init(&t->t, fake_async_cb, fk.delay_s, 0.);
        ev_timer_start(fk.loop, &t->t);
    }
    pthread_mutex_unlock(&fk.mu);
}

static void fake_put(void *ctx, struct http_req *req, const char *path, struct raft_blob *cmd)
{
    (void)ctx;
    struct fsm_cmd c;
    uint8_t *copy = NULL;
    size_t len = 0;
    if (fsm_cmd_decode(cmd->data, cmd->len, &c) == 0 && c.op == FSM_CMD_PUT &&
        c.path_len == strlen(path) && !memcmp(c.path, path, c.path_len)) {
        len = c.body_len;
        copy = malloc(len + 1);
        memcpy(copy, c.body, len);
    }
    raft_blob_unref(cmd);
    fake_record(req, "put", path, NULL, NULL, false);
    pthread_mutex_lock(&fk.mu);
    fk.last.body = copy;
    fk.last.body_len = copy ? len : (size_t)-1;
    pthread_mutex_unlock(&fk.mu);
}

static void fake_get(void *ctx, struct http_req *req, const char *path, bool stale)
{
    (void)ctx;
    fake_record(req, "get", path, NULL, NULL, stale);
}

static void fake_del(void *ctx, struct http_req *req, const char *path)
{
    (void)ctx;
    fake_record(req, "del", path, NULL, NULL, false);
}

static void fake_list(void *ctx, struct http_req *req, const char *prefix, bool stale)
{
    (void)ctx;
    fake_record(req, "list", prefix, NULL, NULL, stale);
}

static void fake_status(void *ctx, struct http_req *req)
{
    (void)ctx;
    fake_record(req, "status", NULL, NULL, NULL, false);
}

static void fake_join(void *ctx, struct http_req *req, const char *id, const char *raft,
                      const char *http)
{
    (void)ctx;
    fake_record(req, "join", id, raft, http, false);
}

static void fake_remove(void *ctx, struct http_req *req, const char *id)
{
    (void)ctx;
    fake_record(req, "remove", id, NULL, NULL, false);
}

static void fake_transfer(void *ctx, struct http_req *req, const char *id)
{
    (void)ctx;
    fake_record(req, "transfer", id, NULL, NULL, false);
}

static void fake_metrics(void *ctx, struct http_req *req)
{
    (void)ctx;
    fake_record(req, "metrics", NULL, NULL, NULL, false);
}

static const struct http_backend fake_backend = {
    .put = fake_put,
    .get = fake_get,
    .del = fake_del,
    .list = fake_list,
    .status = fake_status,
    .join = fake_join,
    .remove = fake_remove,
    .transfer = fake_transfer,
    .metrics = fake_metrics,
};

static void fake_set_mode(enum fake_mode m, double delay_s)
{
    pthread_mutex_lock(&fk.mu);
    fk.mode = m;
    fk.delay_s = delay_s;
    pthread_mutex_unlock(&fk.mu);
}

static int fake_calls(void)
{
    pthread_mutex_lock(&fk.mu);
    int n = fk.calls;
    pthread_mutex_unlock(&fk.mu);
    return n;
}

static int fake_replies(void)
{
    pthread_mutex_lock(&fk.mu);
    int n = fk.replies;
    pthread_mutex_unlock(&fk.mu);
    return n;
}

/* ---- The server thread -------------------------------------------------------------------- */
#define MAX_BODY (1u << 20)

static uint16_t port;
static pthread_t loop_thread;

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *loop_main(void *arg)
{
    (void)arg;
    ev_run(fk.loop, 0);
    return NULL;
}

static int server_start(void)
{
    char err[256];
    fk.loop = ev_loop_new(EVFLAG_AUTO);
    int rv =
        http_start(fk.loop, "127.0.0.1:0", MAX_BODY, &fake_backend, NULL, &fk.srv, err, sizeof err);
    if (rv) {
        fprintf(stderr, "http_start: %s\n", err);
        return rv;
    }
    port = http_port(fk.srv);
    ev_async_init(&fk.stop, stop_cb);
    ev_async_start(fk.loop, &fk.stop);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
    return 0;
}

/* Stops the loop thread; the server stays (http_stop is the caller's next step). */
static void loop_stop(void)
{
    ev_async_send(fk.loop, &fk.stop);
    pthread_join(loop_thread, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls cond() every 5 ms until it holds or 5 s pass. */
static bool wait_for(bool (*cond)(void))
{
    double end = now_s() + 5.0;
    while (now_s() < end) {
        if (cond()) return true;
        usleep(5000);
    }
    return cond();
}

/* ---- A libcurl client ----------------------------------------------------------------------- */
struct resp {
    long status;
    char body[65536];
    size_t len;
    char allow[128];
    char etag[128];
    char retry_after[16];
};

static size_t resp_write_cb(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t len = sz * n;
    size_t room = sizeof r->body - 1 - r->len;
    memcpy(r->body + r->len, p, len < room ? len : room);
    r->len += len < room ? len : room;
    r->body[r->len] = '\0';
    return len;
}

static void resp_header_copy(const char *line, size_t len, const char *name, char *out,
                             size_t out_len)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl)) return;
    size_t i = nl;
    while (i < len && line[i] == ' ')
        i++;
    size_t n = 0;
    while (i < len && line[i] != '\r' && line[i] != '\n' && n + 1 < out_len)
        out[n++] = line[i++];
    out[n] = '\0';
}

static size_t resp_header_cb(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    resp_header_copy(p, sz * n, "Allow:", r->allow, sizeof r->allow);
    resp_header_copy(p, sz * n, "ETag:", r->etag, sizeof r->etag);
    resp_header_copy(p, sz * n, "Retry-After:", r->retry_after, sizeof r->retry_after);
    return sz * n;
}

struct upload {
    const uint8_t *data;
    size_t len, off;
};

static size_t upload_read_cb(char *buf, size_t sz, size_t n, void *ud)
{
    struct upload *u = ud;
    size_t want = sz * n, left = u->len - u->off;
    if (want > left) want = left;
    if (want > 7000) want = 7000; /* many small chunks */
    memcpy(buf, u->data + u->off, want);
    u->off += want;
    return want;
}

/* One request; chunked uploads use Transfer-Encoding: chunked without Content-Length. */
static long req(const char *method, const char *target, const void *body, size_t len, bool chunked,
                struct resp *r)
{
    char url[16384];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, target);
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    struct upload up = {body, len, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, resp_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, resp_header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (chunked) {
        hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, upload_read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    r->status = -1;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return r->status;
}

static bool is_error_json(const struct resp *r, const char *code)
{
    json_t *j = json_loads(r->body, 0, NULL);
    bool ok = j && json_is_string(json_object_get(j, "error")) &&
              json_is_string(json_object_get(j, "code")) &&
              (!code || !strcmp(json_string_value(json_object_get(j, "code")), code));
    json_decref(j);
    return ok;
}

/* Raw bytes on a fresh TCP connection; returns the connected socket. */
static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what the server sends until it closes or 3 s pass; returns the bytes read. */
static size_t raw_read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    double end = now_s() + 3.0;
    while (n + 1 < cap && now_s() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    return n;
}

#include "test_http_cases.h"
