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
            codec_msg_free(&m);
        }
    } else if (type == CODEC_FWD_REQ) {
        struct codec_fwd_req r;
        if (codec_decode_fwd_req(p, len, &r) == 0) {
            fuzz_codec_same(&b, p, len, codec_encode_fwd_req(r.fwd_id, r.op, r.payload, &b));
            codec_fwd_req_free(&r);
        }
    } else if (type == CODEC_FWD_RESP) {
        struct codec_fwd_resp r;
        if (codec_decode_fwd_resp(p, len, &r) == 0)
            fuzz_codec_same(&b, p, len, codec_encode_fwd_resp(&r, &b));
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
