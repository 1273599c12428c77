/* codec.c — encoders and decoders of the frame types (layout in include/codec.h). Pure;
 * a decoder trusts no count or length until it has checked it against the bytes left. */
#include "codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_io.h"
#include "err.h"

/* The smallest encoded entry: term, index, type, flags, len. Bounds n_entries before the
 * entries array is allocated, so a frame can never make us allocate more than ~1.5x its size. */
#define CODEC_ENTRY_MIN_BYTES (8 + 8 + 1 + 1 + 4)
#define CODEC_MSG_REJECT 0x01u
#define CODEC_MSG_TRANSFER 0x02u
#define CODEC_ENTRY_HAS_DATA 0x01u

/* ---- Encoders -------------------------------------------------------------------------------- */
int codec_frame_hello(struct codec_frame *f, const struct codec_hello *h)
{
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_str(&w, h->cluster);
    codec_w_str(&w, h->name);
    codec_w_u64(&w, h->id);
    codec_w_str(&w, h->addr);
    return codec_w_end(&w, CODEC_HELLO);
}

static void codec_w_entry(struct codec_w *w, const struct raft_entry *e)
{
    codec_w_u64(w, e->term);
    codec_w_u64(w, e->index);
    codec_w_u8(w, e->type);
    codec_w_u8(w, e->data ? CODEC_ENTRY_HAS_DATA : 0);
    codec_w_u32(w, e->data ? e->data->len : 0);
    codec_w_blob(w, e->data);
}

int codec_frame_msg(struct codec_frame *f, const struct raft_msg *m)
{
    if (m->type == 0 || m->type >= RAFT_MSG__COUNT || (m->n_entries && !m->entries))
        return ERR_INVALID;
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_u8(&w, m->type);
    codec_w_u8(
        &w, (uint8_t)((m->reject ? CODEC_MSG_REJECT : 0) | (m->transfer ? CODEC_MSG_TRANSFER : 0)));
    codec_w_u64(&w, m->from);
    codec_w_u64(&w, m->to);
    codec_w_u64(&w, m->term);
    codec_w_u64(&w, m->index);
    codec_w_u64(&w, m->log_term);
    codec_w_u64(&w, m->commit);
    codec_w_u64(&w, m->hint);
    codec_w_u64(&w, m->ctx);
    codec_w_u32(&w, m->n_entries);
    for (uint32_t i = 0; i < m->n_entries && !w.err; i++)
        codec_w_entry(&w, &m->entries[i]);
    return codec_w_end(&w, CODEC_RAFT);
}

int codec_frame_fwd_req(struct codec_frame *f, uint64_t fwd_id, uint8_t op,
                        struct raft_blob *payload)
{
    if (op < CODEC_FWD_PROPOSE || op > CODEC_FWD_TRANSFER) return ERR_INVALID;
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_u64(&w, fwd_id);
    codec_w_u8(&w, op);
    codec_w_u32(&w, payload ? payload->len : 0);
    codec_w_blob(&w, payload);
    return codec_w_end(&w, CODEC_FWD_REQ);
}

int codec_frame_fwd_resp(struct codec_frame *f, const struct codec_fwd_resp *r)
{
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_u64(&w, r->fwd_id);
    codec_w_u32(&w, r->err);
    codec_w_u64(&w, r->index);
    codec_w_u64(&w, r->term);
    codec_w_str(&w, r->leader_name);
    return codec_w_end(&w, CODEC_FWD_RESP);
}

static void codec_w_snap_chunk_hdr(struct codec_w *w, const struct codec_snap_chunk *c,
                                   uint32_t len)
{
    codec_w_u64(w, c->session);
    codec_w_u64(w, c->term);
    codec_w_u64(w, c->index);
    codec_w_u64(w, c->offset);
    codec_w_u8(w, c->last ? CODEC_SNAP_LAST : 0);
    codec_w_u32(w, len);
}

int codec_frame_snap_chunk(struct codec_frame *f, const struct codec_snap_chunk *c,
                           struct raft_blob *data)
{
    uint32_t len = data ? data->len : 0;
    if (len > CODEC_SNAP_CHUNK_MAX) return ERR_TOOBIG;
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_snap_chunk_hdr(&w, c, len);
    codec_w_blob(&w, data);
    return codec_w_end(&w, CODEC_SNAP_CHUNK);
}

static int codec_frame_snap_chunk_bytes(struct codec_frame *f, const struct codec_snap_chunk *c)
{
    if (c->len > CODEC_SNAP_CHUNK_MAX) return ERR_TOOBIG;
    if (c->len && !c->bytes) return ERR_INVALID;
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_snap_chunk_hdr(&w, c, c->len);
    codec_w_bytes(&w, c->bytes, c->len);
    return codec_w_end(&w, CODEC_SNAP_CHUNK);
}

int codec_frame_snap_ack(struct codec_frame *f, const struct codec_snap_ack *a)
{
    if (a->status > CODEC_SNAP_INSTALLED) return ERR_INVALID;
    struct codec_w w;
    codec_w_begin(&w, f);
    codec_w_u64(&w, a->session);
    codec_w_u64(&w, a->term);
    codec_w_u64(&w, a->offset);
    codec_w_u8(&w, a->status);
    codec_w_u64(&w, a->index);
    codec_w_str(&w, a->status == CODEC_SNAP_ABORT ? a->reason : "");
    return codec_w_end(&w, CODEC_SNAP_ACK);
}

/* Moves a contiguous frame (one inline segment) onto the end of out. */
static int codec_flatten(struct codec_frame *f, int rv, struct codec_buf *out)
{
    if (rv == 0 && codec_buf_reserve(out, f->inline_bytes.len)) rv = ERR_NOMEM;
    if (rv == 0) {
        memcpy(out->data + out->len, f->inline_bytes.data, f->inline_bytes.len);
        out->len += f->inline_bytes.len;
    }
    codec_frame_free(f);
    return rv;
}

int codec_encode_hello(const struct codec_hello *h, struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_hello(&f, h), out);
}

int codec_encode_msg(const struct raft_msg *m, struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_msg(&f, m), out);
}

int codec_encode_fwd_req(uint64_t fwd_id, uint8_t op, struct raft_blob *payload,
                         struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_fwd_req(&f, fwd_id, op, payload), out);
}

int codec_encode_fwd_resp(const struct codec_fwd_resp *r, struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_fwd_resp(&f, r), out);
}

int codec_encode_snap_chunk(const struct codec_snap_chunk *c, struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_snap_chunk_bytes(&f, c), out);
}

int codec_encode_snap_ack(const struct codec_snap_ack *a, struct codec_buf *out)
{
    struct codec_frame f;
    codec_frame_init(&f, SIZE_MAX);
    return codec_flatten(&f, codec_frame_snap_ack(&f, a), out);
}

/* ---- Decoders -------------------------------------------------------------------------------- */
int codec_decode_hello(const uint8_t *p, size_t len, struct codec_hello *out)
{
    struct codec_r r;
    codec_r_init(&r, p, len);
    codec_r_str(&r, out->cluster);
    codec_r_str(&r, out->name);
    out->id = codec_r_u64(&r);
    codec_r_str(&r, out->addr);
    int rv = codec_r_done(&r);
    if (rv == 0 && (!out->cluster[0] || !out->name[0] || out->id == 0)) rv = ERR_PROTO;
    return rv;
}

/* A payload of len bytes: a fresh blob, or NULL without data. */
static int codec_r_payload(struct codec_r *r, uint32_t len, bool has_data, struct raft_blob **out)
{
    *out = NULL;
    if (!has_data) return len ? ERR_PROTO : 0;
    const uint8_t *src = codec_r_bytes(r, len);
    if (!src) return ERR_PROTO;
    struct raft_blob *b = raft_blob_new(len);
    if (!b) return ERR_NOMEM;
    if (len) memcpy(b->data, src, len);
    *out = b;
    return 0;
}

static int codec_r_entry(struct codec_r *r, struct raft_entry *e)
{
    e->term = codec_r_u64(r);
    e->index = codec_r_u64(r);
    e->type = codec_r_u8(r);
    uint8_t flags = codec_r_u8(r);
    uint32_t len = codec_r_u32(r);
    if (r->bad || e->type == 0 || (flags & ~CODEC_ENTRY_HAS_DATA)) return ERR_PROTO;
    return codec_r_payload(r, len, flags & CODEC_ENTRY_HAS_DATA, &e->data);
}

static int codec_r_entries(struct codec_r *r, struct raft_msg *out)
{
    uint32_t n = codec_r_u32(r);
    if (r->bad || n > codec_r_left(r) / CODEC_ENTRY_MIN_BYTES) return ERR_PROTO;
    if (n == 0) return 0;
    out->entries = calloc(n, sizeof *out->entries);
    if (!out->entries) return ERR_NOMEM;
    /* n_entries counts the decoded entries so codec_msg_free() releases exactly those. */
    for (uint32_t i = 0; i < n; i++) {
        int rv = codec_r_entry(r, &out->entries[i]);
        if (rv) return rv;
        out->n_entries = i + 1;
    }
    return 0;
}

int codec_decode_msg(const uint8_t *p, size_t len, struct raft_msg *out)
{
    memset(out, 0, sizeof *out);
    struct codec_r r;
    codec_r_init(&r, p, len);
    out->type = codec_r_u8(&r);
    uint8_t flags = codec_r_u8(&r);
    out->reject = flags & CODEC_MSG_REJECT;
    out->transfer = flags & CODEC_MSG_TRANSFER;
    out->from = codec_r_u64(&r);
    out->to = codec_r_u64(&r);
    out->term = codec_r_u64(&r);
    out->index = codec_r_u64(&r);
    out->log_term = codec_r_u64(&r);
    out->commit = codec_r_u64(&r);
    out->hint = codec_r_u64(&r);
    out->ctx = codec_r_u64(&r);
    int rv = ERR_PROTO;
    if (!r.bad && out->type != 0 && out->type < RAFT_MSG__COUNT &&
        !(flags & ~(CODEC_MSG_REJECT | CODEC_MSG_TRANSFER)))
        rv = codec_r_entries(&r, out);
    if (rv == 0) rv = codec_r_done(&r);
    if (rv) codec_msg_free(out);
    return rv;
}

void codec_msg_free(struct raft_msg *m)
{
    for (uint32_t i = 0; i < m->n_entries; i++)
        raft_blob_unref(m->entries[i].data);
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

int codec_decode_fwd_req(const uint8_t *p, size_t len, struct codec_fwd_req *out)
{
    memset(out, 0, sizeof *out);
    struct codec_r r;
    codec_r_init(&r, p, len);
    out->fwd_id = codec_r_u64(&r);
    out->op = codec_r_u8(&r);
    uint32_t n = codec_r_u32(&r);
    if (r.bad || out->op < CODEC_FWD_PROPOSE || out->op > CODEC_FWD_TRANSFER) return ERR_PROTO;
    int rv = codec_r_payload(&r, n, true, &out->payload);
    if (rv == 0) rv = codec_r_done(&r);
    if (rv) codec_fwd_req_free(out);
    return rv;
}

void codec_fwd_req_free(struct codec_fwd_req *r)
{
    raft_blob_unref(r->payload);
    r->payload = NULL;
}

int codec_decode_fwd_resp(const uint8_t *p, size_t len, struct codec_fwd_resp *out)
{
    struct codec_r r;
    codec_r_init(&r, p, len);
    out->fwd_id = codec_r_u64(&r);
    out->err = codec_r_u32(&r);
    out->index = codec_r_u64(&r);
    out->term = codec_r_u64(&r);
    codec_r_str(&r, out->leader_name);
    int rv = codec_r_done(&r);
    /* Error codes are small; anything else is a peer speaking another protocol. */
    if (rv == 0 && out->err > UINT16_MAX) rv = ERR_PROTO;
    return rv;
}

int codec_decode_snap_chunk(const uint8_t *p, size_t len, struct codec_snap_chunk *out)
{
    struct codec_r r;
    codec_r_init(&r, p, len);
    out->session = codec_r_u64(&r);
    out->term = codec_r_u64(&r);
    out->index = codec_r_u64(&r);
    out->offset = codec_r_u64(&r);
    uint8_t flags = codec_r_u8(&r);
    out->last = flags & CODEC_SNAP_LAST;
    out->len = codec_r_u32(&r);
    out->bytes = NULL;
    if (r.bad || out->session == 0 || (flags & ~CODEC_SNAP_LAST) || out->len > CODEC_SNAP_CHUNK_MAX)
        return ERR_PROTO;
    out->bytes = codec_r_bytes(&r, out->len);
    /* A stream offset near 2^64 would wrap the receiver's arithmetic. */
    if (out->offset > UINT64_MAX / 2) return ERR_PROTO;
    return codec_r_done(&r);
}

int codec_decode_snap_ack(const uint8_t *p, size_t len, struct codec_snap_ack *out)
{
    struct codec_r r;
    codec_r_init(&r, p, len);
    out->session = codec_r_u64(&r);
    out->term = codec_r_u64(&r);
    out->offset = codec_r_u64(&r);
    out->status = codec_r_u8(&r);
    out->index = codec_r_u64(&r);
    codec_r_str(&r, out->reason);
    int rv = codec_r_done(&r);
    if (rv == 0 && (out->session == 0 || out->status > CODEC_SNAP_INSTALLED ||
                    (out->status != CODEC_SNAP_ABORT && out->reason[0])))
        rv = ERR_PROTO;
    return rv;
}

const char *codec_type_str(uint8_t type)
{
    switch (type) {
    case CODEC_HELLO:
        return "HELLO";
    case CODEC_RAFT:
        return "RAFT";
    case CODEC_FWD_REQ:
        return "FWD_REQ";
    case CODEC_FWD_RESP:
        return "FWD_RESP";
    case CODEC_SNAP_CHUNK:
        return "SNAP_CHUNK";
    case CODEC_SNAP_ACK:
        return "SNAP_ACK";
    default:
        return "unknown";
    }
}
