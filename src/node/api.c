/* api.c — the HTTP backend of a node (INTERFACES.md "HTTP API"): requests become
 * operations (ops.c); outcomes become status codes and JSON. Never 500 for bad input. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/statvfs.h>

#include "err.h"
#include "fsm.h"
#include "http.h"
#include "log.h"
#include "node_api.h"
#include "transfer.h"
#include "codec.h"
#include "transport.h"

/* A write is admitted only while this node's disk has room for its entry in a payload
 * segment and the BDB log, its file in files/ (3 x the command) plus a reserve for metadata,
 * checkpoints and elections: a storage write that fails later is fatal to the node (the core
 * assumes a handed-out write succeeds), so a full disk is refused here, before anything is
 * proposed. */
#define API_SPACE_RESERVE_BYTES (2u << 20)
/* statvfs() on every write cost ~1.5 % of a leader's CPU under 1 KiB writes: its answer is
 * reused for this long, less what the writes admitted meanwhile will take. Any write the
 * cached figure would refuse asks the file system again, so the boundary is always judged
 * on a fresh answer; only another process filling the disk within this window goes unseen
 * (the reserve absorbs that). */
#define API_SPACE_CACHE_S 0.01

static struct {
    bool valid;
    ev_tstamp at;   /* loop time of the statvfs */
    uint64_t avail; /* bytes free then, less what writes admitted since will take */
} api_space;

static int api_space_fresh(const struct node *n, uint64_t *avail)
{
    struct statvfs sv;
    if (statvfs(n->node_dir, &sv) != 0) return ERR_IO;
    *avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
}

int node_api_space_check(const struct node *n, size_t cmd_len)
{
    uint64_t take = 3 * (uint64_t)cmd_len, need = API_SPACE_RESERVE_BYTES + take;
    ev_tstamp now = ev_now(n->loop);
    bool usable = api_space.valid && now - api_space.at < API_SPACE_CACHE_S &&
                  now >= api_space.at && api_space.avail >= need;
    if (!usable) {
        api_space.valid = false;
        if (api_space_fresh(n, &api_space.avail) != 0) return 0; /* cannot tell: let it try */
        api_space.valid = true;
        api_space.at = now;
    }
    if (api_space.avail < need) return ERR_NOSPACE;
    api_space.avail -= take;
    return 0;
}

static void api_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static json_t *api_file_json(const char *path, uint64_t size, const uint8_t sha[32],
                             raft_index index)
{
    char hex[65];
    api_hex(sha, 32, hex);
    return json_pack("{s:s, s:I, s:s, s:I}", "path", path, "size", (json_int_t)size, "sha256", hex,
                     "index", (json_int_t)index);
}

/* The PUT answer: the same object as api_file_json, without jansson (hot path). */
static void api_reply_file(struct http_req *req, unsigned status, const char *path,
                           const struct fsm_result *res)
{
    char hex[65];
    size_t len = 0;
    api_hex(res->sha256, 32, hex);
    char *text = http_json_file(path, res->size, hex, res->index, &len);
    http_reply_json_text(req, status, text, len);
}

static struct http_req *api_take_req(struct node_op *op)
{
    struct http_req *req = op->req;
    op->req = NULL;
    return req;
}

void node_api_complete(struct node *n, struct node_op *op, const struct fsm_result *res)
{
    struct http_req *req = api_take_req(op);
    switch (op->kind) {
    case OP_PUT:
        if (res->status == ERR_EXISTS) {
            http_reply_error(req, 409, "path_conflict",
                             "%s: a component of the path is a file, or the path is a directory",
                             op->path);
            break;
        }
        api_reply_file(req, res->created ? 201 : 200, op->path, res);
        break;
    case OP_DELETE:
        if (res->status == ERR_NOTFOUND)
            http_reply_error(req, 404, "not_found", "no such file: %s", op->path);
        else
            http_reply_empty(req, 204);
        break;
    case OP_JOIN:
    case OP_REMOVE:
        http_reply_json(req, 200,
                        json_pack("{s:s, s:I}", "result", "ok", "index", (json_int_t)op->index));
        break;
    default:
        http_reply_error(req, 500, "internal", "unexpected operation");
    }
    node_op_done(n, op);
}

void node_api_fail_write(struct node *n, struct node_op *op, int err)
{
    struct http_req *req = api_take_req(op);
    switch (err) {
    case ERR_EXISTS:
        http_reply_error(req, 409, "exists", "already a member");
        break;
    case ERR_NOTFOUND:
        http_reply_error(req, 404, "not_found", "no such member");
        break;
    case ERR_INVALID:
        http_reply_error(req, 400, "invalid", "refused by the leader: %s", err_str(err));
        break;
    case ERR_TOOBIG:
        http_reply_error(req, 413, "too_large", "too large");
        break;
    case ERR_NOSPACE:
        http_reply_error(req, 507, "no_space",
                         "not enough free disk space on this node or the leader; retry when "
                         "space is freed");
        break;
    case ERR_BUSY:
        http_reply_error(req, 503, "busy",
                         "a configuration change is in progress or the leader is not ready");
        break;
    default:
        http_reply_error(req, 503, "unavailable", "the leader refused: %s", err_str(err));
    }
    node_op_done(n, op);
}

static void api_serve_get(struct node *n, struct http_req *req, const char *path)
{
    int fd = -1;
    struct fsm_meta meta;
    int rv = fsm_open_read(n->fsm, path, &fd, &meta);
    if (rv == ERR_NOTFOUND) {
        http_reply_error(req, 404, "not_found", "no such file: %s", path);
        return;
    }
    if (rv) {
        http_reply_error(req, 503, "io_error", "cannot read %s: %s", path, err_str(rv));
        return;
    }
    char etag[65];
    api_hex(meta.sha256, 32, etag);
    http_reply_fd(req, fd, meta.size, etag, meta.index);
}

static int api_list_cb(void *ctx, const char *path, const struct fsm_meta *m)
{
    json_t *files = ctx;
    return json_array_append_new(files, api_file_json(path, m->size, m->sha256, m->index))
               ? ERR_NOMEM
               : 0;
}

static void api_serve_list(struct node *n, struct http_req *req, const char *prefix)
{
    json_t *files = json_array();
    int rv = files ? fsm_list(n->fsm, prefix, api_list_cb, files) : ERR_NOMEM;
    if (rv) {
        json_decref(files);
        http_reply_error(req, 503, "io_error", "cannot list: %s", err_str(rv));
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "files", files));
}

void node_api_serve_read(struct node *n, struct node_op *op)
{
    struct http_req *req = api_take_req(op);
    if (op->kind == OP_GET)
        api_serve_get(n, req, op->path);
    else
        api_serve_list(n, req, op->path);
    node_op_done(n, op);
}

int node_member_from_blob(const struct raft_blob *b, struct raft_member *m)
{
    char text[RAFT_MEMBER_INFO_MAX + 1], id[CONFIG_ID_MAX], raft[CONFIG_ADDR_MAX],
        http[CONFIG_ADDR_MAX];
    if (!b || b->len == 0 || b->len > RAFT_MEMBER_INFO_MAX) return ERR_INVALID;
    memcpy(text, b->data, b->len);
    text[b->len] = '\0';
    if (sscanf(text, "%63s %127s %127s", id, raft, http) != 3) return ERR_INVALID;
    return node_member_info(id, raft, http, m);
}

struct raft_blob *node_remove_payload(raft_id id)
{
    struct raft_blob *b = raft_blob_new(8);
    if (!b) return NULL;
    for (int i = 0; i < 8; i++)
        b->data[i] = (uint8_t)(id >> (56 - 8 * i));
    return b;
}

/* The 8-byte big-endian id of a REMOVE or TRANSFER payload. */
static raft_id node_payload_id(const struct raft_blob *b)
{
    raft_id id = 0;
    for (int i = 0; i < 8; i++)
        id = (id << 8) | b->data[i];
    return id;
}

int node_api_leader_exec(struct node *n, uint8_t op_code, struct raft_blob *payload,
                         raft_index *index, raft_term *term)
{
    int rv = ERR_INVALID;
    *term = n->term;
    if (op_code == CODEC_FWD_PROPOSE) {
        rv = payload ? node_api_space_check(n, payload->len) : 0;
        if (rv) {
            raft_blob_unref(payload);
            return rv;
        }
        n->m.proposals++;
        return raft_propose(n->raft, payload, index, term);
    }
    if (op_code == CODEC_FWD_JOIN) {
        struct raft_member m;
        rv = node_member_from_blob(payload, &m);
        if (rv == 0) rv = raft_add_member(n->raft, &m, index);
        if (rv == ERR_EXISTS) rv = node_member_readdress(n, &m, index);
    } else if (op_code == CODEC_FWD_TRANSFER && payload && payload->len == 8) {
        rv = node_transfer_start(n, node_payload_id(payload));
    } else if (op_code == CODEC_FWD_REMOVE && payload && payload->len == 8) {
        rv = node_member_remove(n, node_payload_id(payload), index);
    }
    raft_blob_unref(payload);
    return rv;
}

/* ---- The backend callbacks ---------------------------------------------------------------- */

static struct node_op *api_op(struct node *n, enum node_op_kind kind, struct http_req *req,
                              ev_tstamp timeout_s)
{
    struct node_op *op = node_op_new(n, kind, req, timeout_s);
    if (!op) http_reply_error(req, 503, "no_memory", "out of memory");
    return op;
}

/* A node removed from the configuration (it has a log but is no longer a member) hears from
 * no leader any more: answering at once sends the client to another node instead of letting
 * it wait out the leader timeout. A new node not joined yet (empty log) waits as before. */
static bool api_refuse_removed(struct node *n, struct http_req *req)
{
    struct raft_status st;
    raft_status(n->raft, &st);
    if (st.member || st.last_index == 0) return false;
    http_reply_error(req, 503, "not_member",
                     "this node (%s) is not a member of the cluster (removed?); use another node",
                     n->self->id);
    return true;
}

static void api_write(struct node *n, enum node_op_kind kind, struct http_req *req,
                      const char *path, struct raft_blob *cmd)
{
    if (api_refuse_removed(n, req)) {
        raft_blob_unref(cmd);
        return;
    }
    struct node_op *op = api_op(n, kind, req, NODE_WRITE_TIMEOUT_S);
    if (!op) {
        raft_blob_unref(cmd);
        return;
    }
    op->cmd = cmd;
    snprintf(op->path, sizeof op->path, "%s", path);
    int rv = node_api_space_check(n, cmd->len);
    if (rv) {
        node_api_fail_write(n, op, rv);
        return;
    }
    node_op_dispatch(n, op);
}

static void api_put(void *ctx, struct http_req *req, const char *path, struct raft_blob *cmd)
{
    api_write(ctx, OP_PUT, req, path, cmd);
}

static void api_del(void *ctx, struct http_req *req, const char *path)
{
    struct node *n = ctx;
    uint8_t req_id[16];
    struct raft_blob *cmd = NULL;
    if (fsm_req_id_new(req_id) || fsm_cmd_delete(req_id, path, strlen(path), &cmd)) {
        http_reply_error(req, 503, "no_memory", "cannot build the command");
        return;
    }
    api_write(n, OP_DELETE, req, path, cmd);
}

static void api_read(struct node *n, struct http_req *req, enum node_op_kind kind, const char *path,
                     bool stale)
{
    if (stale) {
        n->m.reads_stale++;
        if (kind == OP_GET)
            api_serve_get(n, req, path);
        else
            api_serve_list(n, req, path);
        return;
    }
    if (api_refuse_removed(n, req)) return;
    struct node_op *op = api_op(n, kind, req, NODE_READ_TIMEOUT_S);
    if (!op) return;
    snprintf(op->path, sizeof op->path, "%s", path);
    node_op_dispatch(n, op);
}

static void api_get(void *ctx, struct http_req *req, const char *path, bool stale)
{
    api_read(ctx, req, OP_GET, path, stale);
}

static void api_list(void *ctx, struct http_req *req, const char *prefix, bool stale)
{
    api_read(ctx, req, OP_LIST, prefix ? prefix : "", stale);
}

static void api_join(void *ctx, struct http_req *req, const char *id, const char *raft_addr,
                     const char *http_addr)
{
    struct node *n = ctx;
    struct raft_member m;
    if (node_member_info(id, raft_addr, http_addr, &m)) {
        http_reply_error(req, 400, "bad_member",
                         "join needs an id of [A-Za-z0-9_-] and host:port addresses");
        return;
    }
    struct raft_blob *b = raft_blob_new(m.info_len);
    struct node_op *op = b ? api_op(n, OP_JOIN, req, NODE_WRITE_TIMEOUT_S) : NULL;
    if (!op) {
        if (!b) http_reply_error(req, 503, "no_memory", "out of memory");
        raft_blob_unref(b);
        return;
    }
    memcpy(b->data, m.info, m.info_len);
    op->cmd = b;
    LOG_INFO("join requested: %s raft=%s http=%s", id, raft_addr, http_addr);
    node_op_dispatch(n, op);
}

static void api_remove(void *ctx, struct http_req *req, const char *id)
{
    struct node *n = ctx;
    struct node_op *op = api_op(n, OP_REMOVE, req, NODE_WRITE_TIMEOUT_S);
    if (!op) return;
    op->target = config_raft_id(id);
    LOG_INFO("removal requested: %s", id);
    node_op_dispatch(n, op);
}

static void api_transfer(void *ctx, struct http_req *req, const char *id)
{
    node_transfer_request(ctx, req, id);
}

static const char *api_state(const struct raft_status *st)
{
    if (st->role == RAFT_LEADER) return "leader";
    if (st->role == RAFT_CANDIDATE || st->role == RAFT_PRECANDIDATE) return "candidate";
    return st->member && !st->voter ? "learner" : "follower";
}

static json_t *api_members(struct node *n)
{
    const struct raft_configuration *c = raft_configuration(n->raft);
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < c->n; i++) {
        char id[CONFIG_ID_MAX], raft[CONFIG_ADDR_MAX], http[CONFIG_ADDR_MAX];
        if (node_member_parse(&c->members[i], id, sizeof id, raft, sizeof raft, http, sizeof http))
            continue;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "id", id, "raft", raft, "http",
                                             http, "voter", c->members[i].voter));
    }
    return arr;
}

static void api_status(void *ctx, struct http_req *req)
{
    struct node *n = ctx;
    struct raft_status st;
    raft_status(n->raft, &st);
    json_t *leader = json_null();
    char name[CONFIG_ID_MAX], http[CONFIG_ADDR_MAX];
    if (st.leader && node_member_http(n, st.leader, name, sizeof name, http, sizeof http))
        leader = json_pack("{s:s, s:s}", "id", name, "http", http);
    json_t *body =
        json_pack("{s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:o}", "id", n->self->id, "state",
                  api_state(&st), "term", (json_int_t)st.term, "leader", leader, "commit_index",
                  (json_int_t)st.commit_index, "applied_index", (json_int_t)n->applied,
                  "last_log_index", (json_int_t)st.last_index, "members", api_members(n));
    http_reply_json(req, 200, body);
}

static void api_metrics(void *ctx, struct http_req *req)
{
    node_metrics_reply(ctx, req);
}

const struct http_backend node_http_backend = {
    .put = api_put,
    .get = api_get,
    .del = api_del,
    .list = api_list,
    .status = api_status,
    .join = api_join,
    .remove = api_remove,
    .transfer = api_transfer,
    .metrics = api_metrics,
};
