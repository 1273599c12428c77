/* test_jitter.c — the spread of periodic background work: values stay in [lo, hi), cover the
 * range (both halves, the ends' neighbourhoods), two seeds give different sequences, a seed is
 * never 0 (xorshift would stay at 0: no spread at all). */
#include "check.h"
#include "jitter.h"

static void test_range_and_spread(void)
{
    uint64_t st = jitter_seed(12345, 678);
    uint64_t lo = 500, hi = 1500, min = UINT64_MAX, max = 0;
    int low_half = 0, high_half = 0, out = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t v = jitter_between(&st, lo, hi);
        if (v < lo || v >= hi) out++;
        if (v < min) min = v;
        if (v > max) max = v;
        if (v < 1000)
            low_half++;
        else
            high_half++;
    }
    CHECK_EQ_U(out, 0);
    CHECK(min < lo + 20 && max > hi - 20);
    CHECK(low_half > 4000 && high_half > 4000);
    CHECK_EQ_U(jitter_between(&st, 7, 7), 7);
    CHECK_EQ_U(jitter_between(&st, 9, 3), 9);
}

static void test_seeds(void)
{
    CHECK(jitter_seed(0, 0) != 0);
    uint64_t a = jitter_seed(1, 2), b = jitter_seed(1, 3);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += jitter_between(&a, 0, 1000000) == jitter_between(&b, 0, 1000000);
    CHECK(same < 5);
    uint64_t z = jitter_seed(0, 0), first = jitter_between(&z, 0, 1000);
    int moved = 0;
    for (int i = 0; i < 10; i++)
        moved |= jitter_between(&z, 0, 1000) != first;
    CHECK(moved);
}

int main(void)
{
    RUN(test_range_and_spread);
    RUN(test_seeds);
    return check_report();
}
