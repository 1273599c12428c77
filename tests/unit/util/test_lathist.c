/* test_lathist.c — the /metrics latency histogram: bucket edges (a bound is inclusive), the
 * overflow bucket, sum and max, adds from several threads at once; the slow-event limiter. */
#include <pthread.h>

#include "check.h"
#include "lathist.h"

static uint64_t count(const struct lathist *h, size_t b)
{
    return atomic_load(&h->n[b]);
}

static void test_edges(void)
{
    struct lathist h = {0};
    lathist_add(&h, 0);
    lathist_add(&h, 100); /* on the first bound: still the first bucket */
    lathist_add(&h, 101);
    lathist_add(&h, 15000); /* the 15 ms target is a bound of its own */
    lathist_add(&h, 15001);
    lathist_add(&h, 5000001); /* beyond every bound */
    CHECK_EQ_U(count(&h, 0), 2);
    CHECK_EQ_U(count(&h, 1), 1);
    size_t b15 = 0;
    while (lathist_le_us[b15] != 15000)
        b15++;
    CHECK_EQ_U(count(&h, b15), 1);
    CHECK_EQ_U(count(&h, b15 + 1), 1);
    CHECK_EQ_U(count(&h, LATHIST_BUCKETS), 1);
    CHECK_EQ_U(atomic_load(&h.sum_us), 0 + 100 + 101 + 15000 + 15001 + 5000001);
    CHECK_EQ_U(atomic_load(&h.max_us), 5000001);
    for (size_t i = 1; i < LATHIST_BUCKETS; i++)
        CHECK(lathist_le_us[i] > lathist_le_us[i - 1]);
}

static void test_slow(void)
{
    uint64_t last = 0;
    CHECK(!lathist_slow(99, 100, &last)); /* under the threshold */
    CHECK_EQ_U(last, 0);
    CHECK(lathist_slow(100, 100, &last)); /* at it: logged */
    CHECK(last != 0);
    CHECK(!lathist_slow(500000, 100, &last)); /* again within a second: not logged */
    last -= 1000001;                          /* as if the last line were over a second old */
    CHECK(lathist_slow(500000, 100, &last));
}

#define THREADS 4
#define ADDS 20000

static void *adder(void *arg)
{
    struct lathist *h = arg;
    for (uint64_t i = 0; i < ADDS; i++)
        lathist_add(h, i % 300);
    return NULL;
}

static void test_threads(void)
{
    static struct lathist h;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, adder, &h) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    uint64_t total = 0;
    for (size_t b = 0; b <= LATHIST_BUCKETS; b++)
        total += count(&h, b);
    CHECK_EQ_U(total, THREADS * ADDS);
    CHECK_EQ_U(atomic_load(&h.max_us), 299);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < ADDS; i++)
        sum += i % 300;
    CHECK_EQ_U(atomic_load(&h.sum_us), THREADS * sum);
}

int main(void)
{
    RUN(test_edges);
    RUN(test_threads);
    RUN(test_slow);
    return check_report();
}
