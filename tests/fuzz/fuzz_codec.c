/* fuzz_codec.c — libFuzzer target for the peer codec: the streaming frame parser over the
 * input, every decoder over each frame's payload and over the raw input (so the fuzzer need
 * not forge checksums), and a round-trip oracle: whatever decodes must re-encode to the very
 * same bytes. Any crash, sanitizer report or abort() is a bug. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz.h"

/* The encoding is canonical, so decode-then-encode must reproduce the payload exactly. */
static void fuzz_codec_same(const struct codec_buf *b, const uint8_t *p, size_t len, int rv)
{
    if (rv != 0 || b->len != CODEC_HDR_BYTES + len ||
        memcmp(b->data + CODEC_HDR_BYTES, p, len) != 0)
        abort();
}

/* The scatter frame (payloads by reference, as the transport queues them) must hold the very
 * same bytes as the contiguous encoding in b. */
static void fuzz_codec_scatter_same(const struct codec_frame *f, int rv, const struct codec_buf *b)
{
    if (rv != 0 || f->total != b->len) abort();
    size_t off = 0;
    for (size_t i = 0; i < f->n_segs; i++) {
        const struct codec_seg *s = &f->segs[i];
        const uint8_t *p = s->blob ? s->blob->data : f->inline_bytes.data + s->off;
        if (s->len > b->len - off || memcmp(p, b->data + off, s->len) != 0) abort();
        off += s->len;
    }
    if (off != b->len) abort();
}

/* A decoded chunk is a view into p; re-encoded contiguously and by blob reference it must
 * give back the same bytes. */
static void fuzz_codec_snap_chunk(struct codec_buf *b, const uint8_t *p, size_t len)
{
    struct codec_snap_chunk c;
    if (codec_decode_snap_chunk(p, len, &c) != 0) return;
    if (c.len > CODEC_SNAP_CHUNK_MAX || (c.len && (c.bytes < p || c.bytes + c.len > p + len)))
        abort();
    fuzz_codec_same(b, p, len, codec_encode_snap_chunk(&c, b));
    struct raft_blob *data = c.len ? raft_blob_new(c.len) : NULL;
    if (c.len && !data) return;
    if (data) memcpy(data->data, c.bytes, c.len);
    struct codec_frame f;
    codec_frame_init(&f, 1 + (len & 7));
    fuzz_codec_scatter_same(&f, codec_frame_snap_chunk(&f, &c, data), b);
    codec_frame_free(&f);
    raft_blob_unref(data);
}

static void fuzz_codec_decode(uint8_t type, const uint8_t *p, size_t len)
{
    struct codec_buf b;
    codec_buf_init(&b);
    if (type == CODEC_HELLO) {
        struct codec_hello h;
        if (codec_decode_hello(p, len, &h) == 0)
            fuzz_codec_same(&b, p, len, codec_encode_hello(&h, &b));
    } else if (type == CODEC_RAFT) {
        struct raft_msg m;
        if (codec_decode_msg(p, len, &m) == 0) {
            fuzz_codec_same(&b, p, len, codec_encode_msg(&m, &b));
            struct codec_frame f;
            codec_frame_init(&f, 1 + (len & 7)); /* some payloads copied, some referenced */
            fuzz_codec_scatter_same(&f, codec_frame_msg(&f, &m), &b);
            codec_frame_free(&f);
            codec_msg_free(&m);
        }
    } else if (type == CODEC_FWD_REQ) {
        struct codec_fwd_req r;
        if (codec_decode_fwd_req(p, len, &r) == 0) {
            fuzz_codec_same(&b, p, len, codec_encode_fwd_req(r.fwd_id, r.op, r.payload, &b));
            struct codec_frame f;
            codec_frame_init(&f, 1);
            fuzz_codec_scatter_same(&f, codec_frame_fwd_req(&f, r.fwd_id, r.op, r.payload), &b);
            codec_frame_free(&f);
            codec_fwd_req_free(&r);
        }
    } else if (type == CODEC_FWD_RESP) {
        struct codec_fwd_resp r;
        if (codec_decode_fwd_resp(p, len, &r) == 0)
            fuzz_codec_same(&b, p, len, codec_encode_fwd_resp(&r, &b));
    } else if (type == CODEC_SNAP_CHUNK) {
        fuzz_codec_snap_chunk(&b, p, len);
    } else if (type == CODEC_SNAP_ACK) {
        struct codec_snap_ack a;
        if (codec_decode_snap_ack(p, len, &a) == 0)
            fuzz_codec_same(&b, p, len, codec_encode_snap_ack(&a, &b));
    }
    codec_buf_free(&b);
}

/* Walks the input as a stream of frames, as a connection's reader would. */
static void fuzz_codec_stream(const uint8_t *data, size_t size, size_t max_frame)
{
    size_t off = 0;
    while (off < size) {
        struct codec_frame_hdr h;
        size_t need = 0;
        int rv = codec_frame_parse(data + off, size - off, max_frame, &h, &need);
        if (rv != 0 || need != 0) {
            /* An incomplete frame must ask for more than it has. */
            if (rv == 0 && need <= size - off) abort();
            return;
        }
        fuzz_codec_decode(h.type, data + off + CODEC_HDR_BYTES, h.len);
        off += CODEC_HDR_BYTES + h.len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec_stream(data, size, CODEC_MAX_FRAME_BYTES);
    fuzz_codec_stream(data, size, 4096); /* the limit before a HELLO */
    for (uint8_t type = CODEC_HELLO; type < CODEC_TYPE__COUNT; type++)
        fuzz_codec_decode(type, data, size);
    /* The first byte picks a type for the rest: lets one input aim at one decoder. */
    if (size > 0) fuzz_codec_decode((uint8_t)(data[0] % CODEC_TYPE__COUNT), data + 1, size - 1);
    return 0;
}
