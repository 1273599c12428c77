/* fuzz_http.c — libFuzzer target for HTTP request handling: the input is percent-decoded and
 * validated as a path, then fed as raw bytes through a socketpair to a real server (routing,
 * headers, bodies, JSON) whose backend answers at once. Must never crash, leak or hang. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fspath.h"
#include "fuzz.h"
#include "http.h"

static void fz_put(void *ctx, struct http_req *req, const char *path, struct raft_blob *cmd)
{
    (void)ctx;
    (void)path;
    raft_blob_unref(cmd);
    http_reply_json(req, 201, json_pack("{s:s}", "path", path));
}

static void fz_get(void *ctx, struct http_req *req, const char *path, bool stale)
{
    (void)ctx;
    (void)stale;
    if (path[0] == 'a')
        http_reply_error(req, 404, "not_found", "no such file: %s", path);
    else
        http_reply_text(req, 200, "application/octet-stream", path, strlen(path));
}

static void fz_del(void *ctx, struct http_req *req, const char *path)
{
    (void)ctx;
    (void)path;
    http_reply_empty(req, 204);
}

static void fz_list(void *ctx, struct http_req *req, const char *prefix, bool stale)
{
    (void)ctx;
    (void)stale;
    http_reply_json(req, 200, json_pack("{s:[s]}", "files", prefix));
}

static void fz_plain(void *ctx, struct http_req *req)
{
    (void)ctx;
    http_reply_error(req, 503, "no_leader", "no leader");
}

static void fz_join(void *ctx, struct http_req *req, const char *id, const char *raft,
                    const char *http)
{
    (void)ctx;
    http_reply_json(req, 200, json_pack("{s:s, s:s, s:s}", "id", id, "raft", raft, "http", http));
}

static void fz_id(void *ctx, struct http_req *req, const char *id)
{
    (void)ctx;
    http_reply_json(req, 200, json_pack("{s:s}", "id", id));
}

static const struct http_backend fz_backend = {
    .put = fz_put,
    .get = fz_get,
    .del = fz_del,
    .list = fz_list,
    .status = fz_plain,
    .join = fz_join,
    .remove = fz_id,
    .transfer = fz_id,
    .metrics = fz_plain,
};

static struct ev_loop *fz_loop;
static struct http_server *fz_srv;

static void fz_init(void)
{
    char err[256];
    fz_loop = ev_loop_new(EVFLAG_AUTO);
    if (http_start(fz_loop, "127.0.0.1:0", 65536, &fz_backend, NULL, &fz_srv, err, sizeof err))
        abort();
}

static void fz_path(const uint8_t *data, size_t size)
{
    char out[HTTP_PATH_MAX + 2];
    size_t len = 0;
    if (http_path_decode((const char *)data, size, out, sizeof out, &len) == 0)
        (void)fspath_validate(out, len, NULL, 0);
}

/* Writes the input, then drives the loop until the server closes or goes quiet (libmicrohttpd
 * keeps a half-closed connection with an incomplete request until its timeout). */
static void fz_request(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) return;
    if (http_add_connection(fz_srv, sv[0])) {
        close(sv[1]);
        return;
    }
    size_t off = 0;
    bool eof = false;
    char buf[65536];
    int quiet = 0;
    for (int round = 0; round < 2000 && !eof && quiet < 20; round++) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off);
            off += w > 0 ? (size_t)w : 0;
            if (off == size) shutdown(sv[1], SHUT_WR);
        } else if (round == 0) {
            shutdown(sv[1], SHUT_WR);
        }
        ev_run(fz_loop, EVRUN_NOWAIT);
        struct pollfd p = {.fd = sv[1], .events = POLLIN};
        quiet = off == size ? quiet + 1 : 0;
        if (poll(&p, 1, 1) > 0) {
            ssize_t r = read(sv[1], buf, sizeof buf);
            eof = r == 0 || (r < 0 && errno != EAGAIN);
            quiet = 0;
        }
    }
    close(sv[1]);
    for (int i = 0; i < 4; i++)
        ev_run(fz_loop, EVRUN_NOWAIT); /* let the server see the close */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_srv) fz_init();
    fz_path(data, size);
    fz_request(data, size);
    return 0;
}
