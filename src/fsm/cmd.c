/* cmd.c — encoding and decoding of file-store commands (the NORMAL entry payload). Decoding
 * treats its input as hostile (it comes from disk and the network) and never reads past it. */
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "err.h"
#include "fsm_be.h"
#include "fsm.h"
#include "fsm_reqid.h"
#include "fspath.h"
#include "rassert.h"

static void cmd_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Allocates a blob of hdr + path + extra bytes and fills the common header. */
static int cmd_new(uint8_t op, const uint8_t req_id[FSM_REQ_ID_LEN], const char *path,
                   size_t path_len, uint64_t extra, struct raft_blob **out)
{
    ASSERT(req_id);
    ASSERT(out);
    *out = NULL;
    if (!path || fspath_validate(path, path_len, NULL, 0)) return ERR_INVALID;
    uint64_t fixed = FSM_CMD_HDR_LEN + path_len;
    if (extra > UINT32_MAX - fixed) return ERR_TOOBIG;
    struct raft_blob *b = raft_blob_new((uint32_t)(fixed + extra));
    if (!b) return ERR_NOMEM;
    b->data[0] = FSM_CMD_VERSION;
    b->data[1] = op;
    memcpy(b->data + 2, req_id, FSM_REQ_ID_LEN);
    cmd_put_u16(b->data + 2 + FSM_REQ_ID_LEN, (uint16_t)path_len);
    memcpy(b->data + FSM_CMD_HDR_LEN, path, path_len);
    *out = b;
    return 0;
}

int fsm_cmd_put_alloc(const uint8_t req_id[FSM_REQ_ID_LEN], const char *path, size_t path_len,
                      uint64_t body_len, struct raft_blob **out, uint8_t **body_out)
{
    ASSERT(body_out);
    *body_out = NULL;
    if (body_len > UINT32_MAX) {
        *out = NULL;
        return ERR_TOOBIG;
    }
    int rv = cmd_new(FSM_CMD_PUT, req_id, path, path_len, 8 + body_len, out);
    if (rv) return rv;
    uint8_t *p = (*out)->data + FSM_CMD_HDR_LEN + path_len;
    fsm_be_put64(p, body_len);
    *body_out = p + 8;
    return 0;
}

int fsm_cmd_delete(const uint8_t req_id[FSM_REQ_ID_LEN], const char *path, size_t path_len,
                   struct raft_blob **out)
{
    return cmd_new(FSM_CMD_DELETE, req_id, path, path_len, 0, out);
}

int fsm_cmd_decode(const uint8_t *data, size_t len, struct fsm_cmd *out)
{
    ASSERT(out);
    memset(out, 0, sizeof *out);
    if (!data || len < FSM_CMD_HDR_LEN || data[0] != FSM_CMD_VERSION) return ERR_CORRUPT;
    uint8_t op = data[1];
    if (op != FSM_CMD_PUT && op != FSM_CMD_DELETE) return ERR_CORRUPT;
    size_t path_len = ((size_t)data[2 + FSM_REQ_ID_LEN] << 8) | data[3 + FSM_REQ_ID_LEN];
    size_t rest = len - FSM_CMD_HDR_LEN;
    if (path_len > rest) return ERR_CORRUPT;
    const char *path = (const char *)data + FSM_CMD_HDR_LEN;
    if (fspath_validate(path, path_len, NULL, 0)) return ERR_CORRUPT;
    rest -= path_len;
    const uint8_t *p = data + FSM_CMD_HDR_LEN + path_len;
    if (op == FSM_CMD_DELETE) {
        if (rest != 0) return ERR_CORRUPT;
    } else {
        if (rest < 8 || fsm_be_get64(p) != rest - 8) return ERR_CORRUPT;
        out->body = p + 8;
        out->body_len = rest - 8;
    }
    out->op = op;
    memcpy(out->req_id, data + 2, FSM_REQ_ID_LEN);
    out->path = path;
    out->path_len = path_len;
    return 0;
}

int fsm_reqid_next(struct fsm_reqid_gen *g, uint64_t now_us, uint8_t out[FSM_REQ_ID_LEN])
{
    if (!g->seeded) {
        if (getrandom(g->seed, sizeof g->seed, 0) != (ssize_t)sizeof g->seed) return ERR_IO;
        g->seeded = true;
    }
    g->last = now_us > g->last ? now_us : g->last + 1;
    fsm_be_put64(out, g->last);
    memcpy(out + 8, g->seed, sizeof g->seed);
    return 0;
}

/* Why ids stay unique without a syscall per request. Within a process the first half is
 * strictly increasing. Two processes (other nodes, or this node before a restart) share an id
 * only if they drew the same 64-bit seed (probability 2^-64 per pair) and also handed out the
 * same first half; for a restart the latter needs the old process to have run ahead of the wall
 * clock (more than one id per microsecond on average) or the clock to have been set back. */
static struct fsm_reqid_gen cmd_reqid;
static pthread_mutex_t cmd_reqid_lock = PTHREAD_MUTEX_INITIALIZER;

int fsm_req_id_new(uint8_t out[FSM_REQ_ID_LEN])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* vDSO: no system call */
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    pthread_mutex_lock(&cmd_reqid_lock);
    int rv = fsm_reqid_next(&cmd_reqid, us, out);
    pthread_mutex_unlock(&cmd_reqid_lock);
    return rv;
}
