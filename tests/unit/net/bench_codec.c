/* bench_codec.c — codec throughput (encode; parse + CRC + decode; scatter encode as the
 * transport does it) for typical Raft messages. A measurement, never a test:
 * ninja -C BUILD tests/unit/net/bench_codec && BUILD/tests/unit/net/bench_codec */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_case(const char *label, uint32_t n_ent, uint32_t size, int iters)
{
    struct raft_entry *e = calloc(n_ent ? n_ent : 1, sizeof *e);
    for (uint32_t i = 0; i < n_ent; i++) {
        e[i] = (struct raft_entry){
            .term = 1, .index = i + 1, .type = RAFT_ENTRY_NORMAL, .data = raft_blob_new(size)};
        memset(e[i].data->data, (int)i, size);
    }
    struct raft_msg m = {
        .type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 3, .n_entries = n_ent, .entries = e};
    struct codec_buf b;
    codec_buf_init(&b);
    double t0 = bench_now();
    for (int i = 0; i < iters; i++) {
        b.len = 0;
        if (codec_encode_msg(&m, &b)) abort();
    }
    double t1 = bench_now();
    for (int i = 0; i < iters; i++) {
        struct codec_frame_hdr h;
        size_t need;
        struct raft_msg d;
        if (codec_frame_parse(b.data, b.len, CODEC_MAX_FRAME_BYTES, &h, &need) || need ||
            codec_decode_msg(b.data + CODEC_HDR_BYTES, h.len, &d))
            abort();
        codec_msg_free(&d);
    }
    double t2 = bench_now();
    for (int i = 0; i < iters; i++) {
        struct codec_frame f;
        codec_frame_init(&f, 4096);
        if (codec_frame_msg(&f, &m)) abort();
        codec_frame_free(&f);
    }
    double t3 = bench_now();
    double mb = (double)b.len * iters / 1e6;
    printf("%-22s %9zu B  encode %9.0f/s %6.0f MB/s  decode %9.0f/s %6.0f MB/s  "
           "scatter %9.0f/s\n",
           label, b.len, iters / (t1 - t0), mb / (t1 - t0), iters / (t2 - t1), mb / (t2 - t1),
           iters / (t3 - t2));
    for (uint32_t i = 0; i < n_ent; i++)
        raft_blob_unref(e[i].data);
    free(e);
    codec_buf_free(&b);
}

int main(void)
{
    bench_case("heartbeat", 0, 0, 2000000);
    bench_case("append 1 x 1 KiB", 1, 1024, 1000000);
    bench_case("append 64 x 1 KiB", 64, 1024, 50000);
    bench_case("append 16 x 64 KiB", 16, 65536, 2000);
    bench_case("append 1 x 64 MiB", 1, 64u << 20, 10);
    return 0;
}
