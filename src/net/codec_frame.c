/* codec_frame.c — frame buffers, the scatter writer, the bounds-checked reader and the frame
 * header parser. Pure: no I/O; never reads outside the buffer it was given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_io.h"
#include "err.h"
#include "rassert.h"
#include "rcrc32.h"

void codec_buf_init(struct codec_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void codec_buf_free(struct codec_buf *b)
{
    free(b->data);
    codec_buf_init(b);
}

int codec_buf_reserve(struct codec_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len) return ERR_NOMEM;
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

void codec_frame_init(struct codec_frame *f, size_t ref_min)
{
    memset(f, 0, sizeof *f);
    codec_buf_init(&f->inline_bytes);
    f->ref_min = ref_min ? ref_min : 1;
}

void codec_frame_free(struct codec_frame *f)
{
    for (size_t i = 0; i < f->n_segs; i++)
        raft_blob_unref(f->segs[i].blob);
    free(f->segs);
    codec_buf_free(&f->inline_bytes);
    size_t ref_min = f->ref_min;
    codec_frame_init(f, ref_min);
}

static int codec_frame_push_seg(struct codec_frame *f, struct raft_blob *blob, size_t off,
                                size_t len)
{
    if (f->n_segs == f->cap_segs) {
        size_t cap = f->cap_segs ? f->cap_segs * 2 : 4;
        struct codec_seg *s = realloc(f->segs, cap * sizeof *s);
        if (!s) return ERR_NOMEM;
        f->segs = s;
        f->cap_segs = cap;
    }
    f->segs[f->n_segs++] = (struct codec_seg){.blob = blob, .off = off, .len = len};
    return 0;
}

/* ---- Writer ---------------------------------------------------------------------------------- */
static void codec_w_raw(struct codec_w *w, const void *p, size_t n)
{
    struct codec_frame *f = w->f;
    if (w->err || n == 0) return;
    if (n > CODEC_MAX_FRAME_BYTES - f->total) {
        w->err = ERR_TOOBIG;
        return;
    }
    if (codec_buf_reserve(&f->inline_bytes, n)) {
        w->err = ERR_NOMEM;
        return;
    }
    /* Inline bytes extend the last segment unless it is a referenced blob. */
    if (f->n_segs == 0 || f->segs[f->n_segs - 1].blob) {
        if (codec_frame_push_seg(f, NULL, f->inline_bytes.len, 0)) {
            w->err = ERR_NOMEM;
            return;
        }
    }
    memcpy(f->inline_bytes.data + f->inline_bytes.len, p, n);
    f->inline_bytes.len += n;
    f->segs[f->n_segs - 1].len += n;
    f->total += n;
}

void codec_w_begin(struct codec_w *w, struct codec_frame *f)
{
    ASSERT(f->total == 0);
    w->f = f;
    w->err = 0;
    uint8_t hdr[CODEC_HDR_BYTES] = {0}; /* filled by codec_w_end */
    codec_w_raw(w, hdr, sizeof hdr);
}

void codec_w_u8(struct codec_w *w, uint8_t v)
{
    codec_w_raw(w, &v, 1);
}

void codec_w_u16(struct codec_w *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    codec_w_raw(w, b, sizeof b);
}

void codec_w_u32(struct codec_w *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (24 - 8 * i));
    codec_w_raw(w, b, sizeof b);
}

void codec_w_u64(struct codec_w *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    codec_w_raw(w, b, sizeof b);
}

void codec_w_str(struct codec_w *w, const char *s)
{
    size_t n = s ? strnlen(s, CODEC_STR_MAX + 1) : 0;
    if (n > CODEC_STR_MAX) {
        if (!w->err) w->err = ERR_INVALID;
        return;
    }
    codec_w_u16(w, (uint16_t)n);
    codec_w_raw(w, s, n);
}

void codec_w_bytes(struct codec_w *w, const void *p, size_t n)
{
    codec_w_raw(w, p, n);
}

void codec_w_blob(struct codec_w *w, struct raft_blob *b)
{
    struct codec_frame *f = w->f;
    if (w->err || !b || b->len == 0) return;
    if (b->len < f->ref_min) {
        codec_w_raw(w, b->data, b->len);
        return;
    }
    if (b->len > CODEC_MAX_FRAME_BYTES - f->total) {
        w->err = ERR_TOOBIG;
        return;
    }
    if (codec_frame_push_seg(f, b, 0, b->len)) {
        w->err = ERR_NOMEM;
        return;
    }
    raft_blob_ref(b);
    f->total += b->len;
}

static void codec_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t codec_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The header flags every frame of `type` carries. */
static uint16_t codec_frame_flags(uint8_t type)
{
    return type == CODEC_SNAP_CHUNK ? CODEC_FLAG_CRC_HEAD : 0;
}

/* How many of a payload's len bytes its checksum covers. */
static size_t codec_crc_len(uint16_t flags, size_t len)
{
    return (flags & CODEC_FLAG_CRC_HEAD) && len > CODEC_SNAP_CHUNK_HEAD ? CODEC_SNAP_CHUNK_HEAD
                                                                        : len;
}

int codec_w_end(struct codec_w *w, uint8_t type)
{
    struct codec_frame *f = w->f;
    if (w->err) {
        int err = w->err;
        codec_frame_free(f);
        return err;
    }
    ASSERT(f->n_segs > 0 && !f->segs[0].blob && f->segs[0].len >= CODEC_HDR_BYTES);
    uint16_t flags = codec_frame_flags(type);
    size_t left = codec_crc_len(flags, f->total - CODEC_HDR_BYTES);
    uint32_t crc = 0;
    for (size_t i = 0; i < f->n_segs && left > 0; i++) {
        const struct codec_seg *s = &f->segs[i];
        const uint8_t *p = s->blob ? s->blob->data : f->inline_bytes.data + s->off;
        size_t len = s->len;
        if (i == 0) {
            p += CODEC_HDR_BYTES;
            len -= CODEC_HDR_BYTES;
        }
        if (len > left) len = left;
        crc = rcrc32(crc, p, len);
        left -= len;
    }
    uint8_t *h = f->inline_bytes.data;
    codec_put_be32(h, (uint32_t)(f->total - CODEC_HDR_BYTES));
    h[4] = CODEC_VERSION;
    h[5] = type;
    h[6] = (uint8_t)(flags >> 8);
    h[7] = (uint8_t)flags;
    codec_put_be32(h + 8, (uint32_t)crc);
    return 0;
}

/* ---- Reader ---------------------------------------------------------------------------------- */
void codec_r_init(struct codec_r *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->bad = false;
}

const uint8_t *codec_r_bytes(struct codec_r *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint64_t codec_r_be(struct codec_r *r, size_t n)
{
    const uint8_t *p = codec_r_bytes(r, n);
    uint64_t v = 0;
    for (size_t i = 0; p && i < n; i++)
        v = v << 8 | p[i];
    return v;
}

uint8_t codec_r_u8(struct codec_r *r)
{
    return (uint8_t)codec_r_be(r, 1);
}

uint16_t codec_r_u16(struct codec_r *r)
{
    return (uint16_t)codec_r_be(r, 2);
}

uint32_t codec_r_u32(struct codec_r *r)
{
    return (uint32_t)codec_r_be(r, 4);
}

uint64_t codec_r_u64(struct codec_r *r)
{
    return codec_r_be(r, 8);
}

void codec_r_str(struct codec_r *r, char *out)
{
    out[0] = '\0';
    uint16_t n = codec_r_u16(r);
    if (n > CODEC_STR_MAX) {
        r->bad = true;
        return;
    }
    const uint8_t *p = codec_r_bytes(r, n);
    if (!p) return;
    if (memchr(p, '\0', n)) {
        r->bad = true;
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

size_t codec_r_left(const struct codec_r *r)
{
    return r->bad ? 0 : r->len - r->pos;
}

int codec_r_done(const struct codec_r *r)
{
    return (r->bad || r->pos != r->len) ? ERR_PROTO : 0;
}

/* ---- Frame header ---------------------------------------------------------------------------- */
int codec_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, struct codec_frame_hdr *hdr,
                      size_t *need)
{
    *need = CODEC_HDR_BYTES;
    if (len < CODEC_HDR_BYTES) return 0;
    hdr->len = codec_get_be32(buf);
    hdr->version = buf[4];
    hdr->type = buf[5];
    hdr->flags = (uint16_t)(buf[6] << 8 | buf[7]);
    hdr->checksum = codec_get_be32(buf + 8);
    if (hdr->version != CODEC_VERSION || hdr->type == 0 || hdr->type >= CODEC_TYPE__COUNT ||
        hdr->flags != codec_frame_flags(hdr->type))
        return ERR_PROTO;
    if (max_frame > CODEC_MAX_FRAME_BYTES) max_frame = CODEC_MAX_FRAME_BYTES;
    if (max_frame < CODEC_HDR_BYTES) max_frame = CODEC_HDR_BYTES;
    /* Checked before the caller buffers (or allocates for) a single payload byte. */
    if (hdr->len > max_frame - CODEC_HDR_BYTES) return ERR_TOOBIG;
    size_t total = CODEC_HDR_BYTES + (size_t)hdr->len;
    if (len < total) {
        *need = total;
        return 0;
    }
    uint32_t crc = rcrc32(0, buf + CODEC_HDR_BYTES, codec_crc_len(hdr->flags, hdr->len));
    if (crc != hdr->checksum) return ERR_CORRUPT;
    *need = 0;
    return 0;
}
