/* test_sup_http.c — raftsup's async HTTP helper on a private ev loop against a canned-reply
 * server thread (127.0.0.1, port 0): answers (JSON, not JSON, POST), the paths that end in
 * "no answer" (timeout, refused, body too large, bad address), one request at a time, a
 * completion that starts the next request, and a free with a request in flight. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../check.h"
#include "err.h"
#include "../../../src/sup/sup_http.h"

#define GUARD_S 5.0 /* a test loop that runs this long has lost its completion call */

/* ---- Canned-reply server (its own thread; one connection at a time) ---------------------- */

static struct {
    pthread_mutex_t mu;
    int fd;
    pthread_t th;
    char addr[64];     /* "127.0.0.1:PORT" */
    const char *reply; /* the whole HTTP answer to every request */
    size_t reply_len;
    char req[4096]; /* the last request received, NUL-terminated */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A listening socket on 127.0.0.1 and a free port; "host:port" into addr. */
static int listen_any(char *addr, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(listen(fd, 8) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    snprintf(addr, cap, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    return fd;
}

/* Reads the request head and its Content-Length body into srv.req. */
static void srv_read_request(int c)
{
    char buf[sizeof srv.req];
    size_t n = 0;
    char *end = NULL;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = recv(c, buf + n, sizeof buf - 1 - n, 0)) > 0) {
        buf[n += (size_t)r] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        const char *cl = strstr(buf, "Content-Length: ");
        size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
        if (n >= want) break;
    }
    pthread_mutex_lock(&srv.mu);
    memcpy(srv.req, buf, n + 1);
    pthread_mutex_unlock(&srv.mu);
}

static void *srv_main(void *arg)
{
    (void)arg;
    int c;
    while ((c = accept(srv.fd, NULL, NULL)) >= 0) {
        srv_read_request(c);
        pthread_mutex_lock(&srv.mu);
        /* MSG_NOSIGNAL: a client that gives up (body too large) must not kill the test. */
        for (size_t off = 0; off < srv.reply_len;) {
            ssize_t w = send(c, srv.reply + off, srv.reply_len - off, MSG_NOSIGNAL);
            if (w <= 0) break;
            off += (size_t)w;
        }
        pthread_mutex_unlock(&srv.mu);
        close(c);
    }
    return NULL; /* accept fails once srv_stop shuts the socket down */
}

static void srv_reply(const char *reply, size_t len)
{
    pthread_mutex_lock(&srv.mu);
    srv.reply = reply;
    srv.reply_len = len;
    srv.req[0] = '\0';
    pthread_mutex_unlock(&srv.mu);
}

static bool srv_req_has(const char *s)
{
    pthread_mutex_lock(&srv.mu);
    bool has = strstr(srv.req, s) != NULL;
    pthread_mutex_unlock(&srv.mu);
    return has;
}

static void srv_start(void)
{
    srv.fd = listen_any(srv.addr, sizeof srv.addr);
    CHECK(pthread_create(&srv.th, NULL, srv_main, NULL) == 0);
}

static void srv_stop(void)
{
    shutdown(srv.fd, SHUT_RDWR);
    pthread_join(srv.th, NULL);
    close(srv.fd);
}

/* ---- One helper on a private loop; what its completion calls saw ------------------------- */

struct run {
    struct ev_loop *loop;
    struct sup_http *h;
    ev_timer guard;
    int calls;
    long code;
    char state[32]; /* "state" of a JSON answer, "" when there was no JSON */
    int chain;      /* completions that start the next request before the loop stops */
};

static void done_cb(void *ctx, long code, json_t *doc)
{
    struct run *r = ctx;
    const char *state = json_string_value(json_object_get(doc, "state"));
    r->calls++;
    r->code = code;
    snprintf(r->state, sizeof r->state, "%s", state ? state : "");
    if (r->chain > 0) {
        r->chain--;
        CHECK_EQ_U(sup_http_start(r->h, srv.addr, "/v1/status", NULL), 0);
        return;
    }
    ev_break(r->loop, EVBREAK_ALL);
}

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void run_init(struct run *r, long timeout_ms)
{
    memset(r, 0, sizeof *r);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    CHECK_EQ_U(sup_http_new(r->loop, timeout_ms, done_cb, r, &r->h), 0);
    ev_timer_init(&r->guard, guard_cb, GUARD_S, 0.);
}

/* Runs the loop until a completion stops it (or the guard does); seconds taken. */
static double run_loop(struct run *r)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ev_timer_start(r->loop, &r->guard);
    ev_run(r->loop, 0);
    ev_timer_stop(r->loop, &r->guard);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

static void run_fini(struct run *r)
{
    sup_http_free(r->h);
    ev_loop_destroy(r->loop);
}

#define REPLY(s) srv_reply(s, sizeof s - 1)

/* ---- Tests ------------------------------------------------------------------------------- */

static void test_get_json(void)
{
    struct run r;
    run_init(&r, 1000);
    REPLY("HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{\"state\":\"leader\"}");
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/status", NULL), 0);
    CHECK(sup_http_busy(r.h));
    run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 200);
    CHECK(strcmp(r.state, "leader") == 0);
    CHECK(!sup_http_busy(r.h));
    CHECK(srv_req_has("GET /v1/status HTTP/1.1\r\n"));
    run_fini(&r);
}

static void test_post_json(void)
{
    struct run r;
    run_init(&r, 1000);
    REPLY("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
    char post[64];
    snprintf(post, sizeof post, "{\"id\":\"node2\"}");
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/cluster/join", post), 0);
    memset(post, 'x', sizeof post - 1); /* the helper sends its own copy */
    run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 201);
    CHECK(srv_req_has("POST /v1/cluster/join HTTP/1.1\r\n"));
    CHECK(srv_req_has("Content-Type: application/json\r\n"));
    CHECK(srv_req_has("\r\n\r\n{\"id\":\"node2\"}"));
    run_fini(&r);
}

/* An answer that is not JSON still reports its status (a 503 from a busy node). */
static void test_not_json(void)
{
    struct run r;
    run_init(&r, 1000);
    REPLY("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/status", NULL), 0);
    run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 503);
    CHECK(r.state[0] == '\0');
    run_fini(&r);
}

/* A node that accepts the connection and never answers (hung, stopped): the request ends
 * with "no answer" at its deadline, so the join and the rolling restart move on. */
static void test_timeout(void)
{
    char addr[64];
    int silent = listen_any(addr, sizeof addr); /* the kernel accepts; nobody answers */
    struct run r;
    run_init(&r, 300);
    CHECK_EQ_U(sup_http_start(r.h, addr, "/v1/status", NULL), 0);
    double took = run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 0);
    CHECK(took >= 0.25 && took < 2.0);
    run_fini(&r);
    close(silent);
}

static void test_refused(void)
{
    char addr[64];
    close(listen_any(addr, sizeof addr)); /* a port nobody listens on */
    struct run r;
    run_init(&r, 1000);
    CHECK_EQ_U(sup_http_start(r.h, addr, "/v1/status", NULL), 0);
    CHECK(run_loop(&r) < 1.0);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 0);
    run_fini(&r);
}

static void test_body_too_large(void)
{
    size_t body = SUP_HTTP_BODY_MAX + 4096;
    char *reply = malloc(body + 128);
    CHECK(reply != NULL);
    int head = snprintf(reply, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body);
    memset(reply + head, ' ', body);
    srv_reply(reply, (size_t)head + body);
    struct run r;
    run_init(&r, 1000);
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/status", NULL), 0);
    run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 0);
    run_fini(&r);
    REPLY("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"); /* before reply is freed */
    free(reply);
}

static void test_bad_address(void)
{
    struct run r;
    run_init(&r, 1000);
    CHECK_EQ_U(sup_http_start(r.h, "127.0.0.1:99999", "/v1/status", NULL), 0);
    run_loop(&r);
    CHECK_EQ_U(r.calls, 1);
    CHECK_EQ_U(r.code, 0);
    run_fini(&r);
}

/* One request at a time; a completion may start the next one (the join's probe -> check ->
 * send chain does). */
static void test_busy_and_chain(void)
{
    struct run r;
    run_init(&r, 1000);
    REPLY("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"state\":\"follower\"}");
    r.chain = 2;
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/status", NULL), 0);
    CHECK_EQ_U(sup_http_start(r.h, srv.addr, "/v1/status", NULL), ERR_BUSY);
    run_loop(&r);
    CHECK_EQ_U(r.calls, 3);
    CHECK_EQ_U(r.code, 200);
    CHECK(strcmp(r.state, "follower") == 0);
    run_fini(&r);
}

/* raftsup stopping mid-request: the request is dropped, no completion call, nothing leaks
 * (the ASan build checks the last part). */
static void test_free_in_flight(void)
{
    char addr[64];
    int silent = listen_any(addr, sizeof addr);
    struct run r;
    run_init(&r, 1000);
    CHECK_EQ_U(sup_http_start(r.h, addr, "/v1/status", NULL), 0);
    ev_timer_set(&r.guard, 0.1, 0.); /* long enough for a few polls: the request is sent */
    run_loop(&r);
    CHECK(sup_http_busy(r.h));
    run_fini(&r);
    CHECK_EQ_U(r.calls, 0);
    close(silent);
}

int main(void)
{
    srv_start();
    RUN(test_get_json);
    RUN(test_post_json);
    RUN(test_not_json);
    RUN(test_timeout);
    RUN(test_refused);
    RUN(test_body_too_large);
    RUN(test_bad_address);
    RUN(test_busy_and_chain);
    RUN(test_free_in_flight);
    srv_stop();
    return check_report();
}
