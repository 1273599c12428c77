/* test_fsm_sha256.c — the file store's SHA-256 (SHA-NI when the CPU has it, else libsodium)
 * against OpenSSL: every length around the block and padding edges, big inputs, any split of
 * the input into updates, both code paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../../check.h"
#include "../../../src/fsm/fsm_sha256.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void ref(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned len;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

/* The digest of p[0..n) fed in random pieces. */
static void pieces(const uint8_t *p, size_t n, uint8_t out[32])
{
    struct fsm_sha256 c;
    fsm_sha256_init(&c);
    while (n > 0) {
        size_t k = 1 + next() % (next() % 2 ? 70 : 5000);
        if (k > n) k = n;
        fsm_sha256_update(&c, p, k);
        p += k;
        n -= k;
    }
    fsm_sha256_final(&c, out);
}

static void check_all(void)
{
    size_t cap = 3u << 20;
    uint8_t *buf = malloc(cap), a[32], b[32], c[32];
    for (size_t i = 0; i < cap; i++)
        buf[i] = (uint8_t)next();
    for (size_t n = 0; n <= 1100; n++) {
        ref(buf, n, a);
        fsm_sha256(buf, n, b);
        pieces(buf, n, c);
        CHECK(memcmp(a, b, 32) == 0);
        CHECK(memcmp(a, c, 32) == 0);
    }
    size_t big[] = {65536, 1000003, cap};
    for (size_t k = 0; k < 3; k++) {
        ref(buf, big[k], a);
        fsm_sha256(buf, big[k], b);
        pieces(buf, big[k], c);
        CHECK(memcmp(a, b, 32) == 0);
        CHECK(memcmp(a, c, 32) == 0);
    }
    /* The FIPS 180-2 "abc" vector. */
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                    0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                    0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    fsm_sha256((const uint8_t *)"abc", 3, b);
    CHECK(memcmp(abc, b, 32) == 0);
    free(buf);
}

static void test_sha256_default(void)
{
    fprintf(stderr, "  SHA extensions %s\n", fsm_sha256_hw() ? "used" : "not available");
    check_all();
}

static void test_sha256_portable(void)
{
    fsm_sha256_allow_hw(false);
    CHECK(!fsm_sha256_hw());
    check_all();
    fsm_sha256_allow_hw(true);
}

int main(void)
{
    RUN(test_sha256_default);
    RUN(test_sha256_portable);
    return check_report();
}
