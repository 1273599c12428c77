/* test_raftctl.c RAFTCTL — raftctl against the real HTTP module with an in-memory fake backend
 * (no Raft): every command, streamed files both ways, --json, node failover from a config and
 * 503 retries. The server runs on a libev loop in a second thread. */
#include <ev.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "../../check.h"
#include "fsm.h"
#include "http.h"

extern char **environ;

#define FILES_MAX 8

static struct {
    pthread_mutex_t mu;
    char path[FILES_MAX][256];
    uint8_t *data[FILES_MAX];
    size_t len[FILES_MAX];
    int unavailable; /* answer 503 to this many more requests */
    char joined[256];
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int fb_find(const char *path)
{
    for (int i = 0; i < FILES_MAX; i++)
        if (st.data[i] && !strcmp(st.path[i], path)) return i;
    return -1;
}

static bool fb_busy(struct http_req *req)
{
    if (st.unavailable <= 0) return false;
    st.unavailable--;
    http_reply_error(req, 503, "no_leader", "no leader yet");
    return true;
}

static void fb_put(void *ctx, struct http_req *req, const char *path, struct raft_blob *cmd)
{
    (void)ctx;
    struct fsm_cmd c;
    pthread_mutex_lock(&st.mu);
    int i = fb_find(path);
    bool created = i < 0;
    for (int k = 0; i < 0 && k < FILES_MAX; k++)
        if (!st.data[k]) i = k;
    if (fb_busy(req)) {
    } else if (i < 0 || fsm_cmd_decode(cmd->data, cmd->len, &c)) {
        http_reply_error(req, 507, "full", "fake store full");
    } else {
        free(st.data[i]);
        snprintf(st.path[i], sizeof st.path[i], "%s", path);
        st.data[i] = malloc(c.body_len + 1);
        memcpy(st.data[i], c.body, c.body_len);
        st.len[i] = c.body_len;
        http_reply_json(req, created ? 201 : 200,
                        json_pack("{s:s, s:I, s:s, s:I}", "path", path, "size",
                                  (json_int_t)c.body_len, "sha256", "ab12", "index", 7));
    }
    pthread_mutex_unlock(&st.mu);
    raft_blob_unref(cmd);
}

static void fb_get(void *ctx, struct http_req *req, const char *path, bool stale)
{
    (void)ctx;
    (void)stale;
    pthread_mutex_lock(&st.mu);
    int i = fb_find(path);
    if (fb_busy(req)) {
    } else if (i < 0) {
        http_reply_error(req, 404, "not_found", "no such file: %s", path);
    } else {
        int fd = memfd_create("fake", MFD_CLOEXEC);
        if (fd < 0 || write(fd, st.data[i], st.len[i]) != (ssize_t)st.len[i]) {
            http_reply_error(req, 500, "io", "memfd");
            if (fd >= 0) close(fd);
        } else {
            http_reply_fd(req, fd, st.len[i], "ab12", 7);
        }
    }
    pthread_mutex_unlock(&st.mu);
}

static void fb_del(void *ctx, struct http_req *req, const char *path)
{
    (void)ctx;
    pthread_mutex_lock(&st.mu);
    int i = fb_find(path);
    if (i < 0) {
        http_reply_error(req, 404, "not_found", "no such file: %s", path);
    } else {
        free(st.data[i]);
        st.data[i] = NULL;
        http_reply_empty(req, 204);
    }
    pthread_mutex_unlock(&st.mu);
}

static void fb_list(void *ctx, struct http_req *req, const char *prefix, bool stale)
{
    (void)ctx;
    (void)stale;
    json_t *files = json_array();
    pthread_mutex_lock(&st.mu);
    for (int i = 0; i < FILES_MAX; i++)
        if (st.data[i] && !strncmp(st.path[i], prefix, strlen(prefix)))
            json_array_append_new(files,
                                  json_pack("{s:s, s:I, s:s, s:I}", "path", st.path[i], "size",
                                            (json_int_t)st.len[i], "sha256", "ab12", "index", 7));
    pthread_mutex_unlock(&st.mu);
    http_reply_json(req, 200, json_pack("{s:o}", "files", files));
}

static void fb_status(void *ctx, struct http_req *req)
{
    (void)ctx;
    pthread_mutex_lock(&st.mu);
    if (!fb_busy(req))
        http_reply_json(req, 200,
                        json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i, s:i, s:i, s:[]}", "id",
                                  "node1", "state", "leader", "term", 3, "leader", "id", "node1",
                                  "http", "127.0.0.1:1", "commit_index", 5, "applied_index", 5,
                                  "last_log_index", 5, "members"));
    pthread_mutex_unlock(&st.mu);
}

static void fb_join(void *ctx, struct http_req *req, const char *id, const char *raft,
                    const char *http)
{
    (void)ctx;
    pthread_mutex_lock(&st.mu);
    snprintf(st.joined, sizeof st.joined, "%s %s %s", id, raft, http);
    pthread_mutex_unlock(&st.mu);
    http_reply_json(req, 200, json_pack("{s:s, s:i}", "result", "ok", "index", 9));
}

static void fb_remove(void *ctx, struct http_req *req, const char *id)
{
    (void)ctx;
    http_reply_error(req, 404, "not_found", "no such member: %s", id);
}

/* n2 takes over; "dead" never does (504, as a node does after two election timeouts). */
static void fb_transfer(void *ctx, struct http_req *req, const char *id)
{
    (void)ctx;
    if (!strcmp(id, "n2"))
        http_reply_json(req, 200, json_pack("{s:s, s:i}", "leader", "n2", "term", 4));
    else if (!strcmp(id, "dead"))
        http_reply_error(req, 504, "transfer_timeout", "leadership did not move to dead");
    else
        http_reply_error(req, 404, "not_found", "%s is not a member of the cluster", id);
}

static void fb_metrics(void *ctx, struct http_req *req)
{
    (void)ctx;
    http_reply_text(req, 200, "text/plain", "x 1\n", 4);
}

static const struct http_backend fb = {
    .put = fb_put,
    .get = fb_get,
    .del = fb_del,
    .list = fb_list,
    .status = fb_status,
    .join = fb_join,
    .remove = fb_remove,
    .transfer = fb_transfer,
    .metrics = fb_metrics,
};

/* ---- Running raftctl ------------------------------------------------------------------------ */
static const char *ctl;
static char dir[64] = "/tmp/raftctl-test-XXXXXX";
static char server[64];

static char *slurp(const char *name, size_t *len)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    char *buf = calloc(1, 1 << 21);
    *len = f ? fread(buf, 1, (1 << 21) - 1, f) : 0;
    if (f) fclose(f);
    return buf;
}

/* Runs raftctl with args (NULL-terminated), stdin from in_name (or /dev/null); returns its exit
 * status; its stdout and stderr land in dir/out and dir/err. */
static int run(const char *in_name, const char *const *args)
{
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)ctl;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    char in[256], out[256], err[256];
    snprintf(in, sizeof in, "%s/%s", dir, in_name ? in_name : "none");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(err, sizeof err, "%s/err", dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in_name ? in : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int status = -1;
    if (posix_spawn(&pid, ctl, &fa, NULL, argv, environ) == 0) waitpid(pid, &status, 0);
    posix_spawn_file_actions_destroy(&fa);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Whether dir/name (raftctl's "out" or "err") contains needle. */
static bool file_has(const char *name, const char *needle)
{
    size_t len;
    char *o = slurp(name, &len);
    bool ok = strstr(o, needle) != NULL;
    if (!ok) fprintf(stderr, "  %s lacks '%s': %.300s\n", name, needle, o);
    free(o);
    return ok;
}

#define out_has(needle) file_has("out", needle)
#define err_has(needle) file_has("err", needle)

#include "test_raftctl_cases.h"
