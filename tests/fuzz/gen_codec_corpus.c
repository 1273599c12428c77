/* gen_codec_corpus.c — writes the codec's seed corpus: valid frames of every type (alone and
 * back to back) and type-prefixed payloads that aim at one decoder. Run by hand when the wire
 * format changes: gen_codec_corpus tests/fuzz/corpus/codec */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static void gen_write(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* The frame alone, and its payload behind a type byte (see fuzz_codec.c). */
static void gen_frame(const char *dir, const char *name, const struct codec_buf *b)
{
    gen_write(dir, name, b->data, b->len);
    size_t n = b->len - CODEC_HDR_BYTES + 1;
    uint8_t *p = malloc(n);
    p[0] = b->data[5];
    memcpy(p + 1, b->data + CODEC_HDR_BYTES, n - 1);
    char pname[256];
    snprintf(pname, sizeof pname, "%s.payload", name);
    gen_write(dir, pname, p, n);
    free(p);
}

static struct raft_blob *gen_blob(const char *s)
{
    struct raft_blob *b = raft_blob_new((uint32_t)strlen(s));
    memcpy(b->data, s, b->len);
    return b;
}

static void gen_msgs(const char *dir, struct codec_buf *all)
{
    struct raft_entry e[3] = {
        {.term = 2, .index = 5, .type = RAFT_ENTRY_NOOP},
        {.term = 2, .index = 6, .type = RAFT_ENTRY_NORMAL, .data = gen_blob("PUT a.txt hello")},
        {.term = 2, .index = 7, .type = RAFT_ENTRY_CONFIG, .data = gen_blob("")}};
    for (uint8_t type = 1; type < RAFT_MSG__COUNT; type++) {
        struct raft_msg m = {.type = type,
                             .from = 0x1111,
                             .to = 0x2222,
                             .term = 2,
                             .index = 4,
                             .log_term = 1,
                             .commit = 3,
                             .hint = 2,
                             .reject = type == RAFT_MSG_APPEND_RESP,
                             .ctx = 9};
        if (type == RAFT_MSG_APPEND) {
            m.n_entries = 3;
            m.entries = e;
        }
        struct codec_buf b;
        codec_buf_init(&b);
        if (codec_encode_msg(&m, &b) || codec_encode_msg(&m, all)) exit(1);
        char name[64];
        snprintf(name, sizeof name, "raft_%02u", type);
        gen_frame(dir, name, &b);
        codec_buf_free(&b);
    }
    for (int i = 0; i < 3; i++)
        raft_blob_unref(e[i].data);
}

static void gen_snap(const char *dir, struct codec_buf *all)
{
    const char *bytes = "RAFTSNAP stream bytes";
    struct codec_snap_chunk c = {.session = 0x5eed,
                                 .term = 2,
                                 .index = 40,
                                 .offset = 0,
                                 .last = true,
                                 .len = (uint32_t)strlen(bytes),
                                 .bytes = (const uint8_t *)bytes};
    struct codec_buf b;
    codec_buf_init(&b);
    if (codec_encode_snap_chunk(&c, &b) || codec_encode_snap_chunk(&c, all)) exit(1);
    gen_frame(dir, "snap_chunk", &b);
    codec_buf_free(&b);
    struct codec_snap_ack a[2] = {
        {.session = 0x5eed, .term = 2, .offset = 21, .status = CODEC_SNAP_INSTALLED, .index = 40},
        {.session = 0x5eed, .term = 2, .status = CODEC_SNAP_ABORT, .reason = "bad stream"}};
    for (int i = 0; i < 2; i++) {
        codec_buf_init(&b);
        if (codec_encode_snap_ack(&a[i], &b) || codec_encode_snap_ack(&a[i], all)) exit(1);
        gen_frame(dir, i ? "snap_ack_abort" : "snap_ack", &b);
        codec_buf_free(&b);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_codec_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    struct codec_buf all, b;
    codec_buf_init(&all);
    struct codec_hello h = {
        .cluster = "demo", .name = "node1", .id = 0x1111, .addr = "127.0.0.1:8001"};
    codec_buf_init(&b);
    if (codec_encode_hello(&h, &b) || codec_encode_hello(&h, &all)) return 1;
    gen_frame(dir, "hello", &b);
    codec_buf_free(&b);
    gen_msgs(dir, &all);
    struct raft_blob *pl = gen_blob("{\"id\":\"node4\",\"raft\":\"127.0.0.1:8004\"}");
    codec_buf_init(&b);
    if (codec_encode_fwd_req(42, CODEC_FWD_JOIN, pl, &b) ||
        codec_encode_fwd_req(42, CODEC_FWD_JOIN, pl, &all))
        return 1;
    gen_frame(dir, "fwd_req", &b);
    codec_buf_free(&b);
    raft_blob_unref(pl);
    struct codec_fwd_resp r = {
        .fwd_id = 42, .err = 9, .index = 17, .term = 2, .leader_name = "node2"};
    codec_buf_init(&b);
    if (codec_encode_fwd_resp(&r, &b) || codec_encode_fwd_resp(&r, &all)) return 1;
    gen_frame(dir, "fwd_resp", &b);
    codec_buf_free(&b);
    gen_snap(dir, &all);
    gen_write(dir, "stream_all", all.data, all.len);
    codec_buf_free(&all);
    return 0;
}
