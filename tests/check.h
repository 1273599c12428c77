/* check.h — the unit tests' tiny harness: CHECK records a failure and goes on; the test's
 * main returns check_report(), non-zero when anything failed. */
#ifndef RAFTFS_CHECK_H
#define RAFTFS_CHECK_H

#include <stdio.h>

static int check_failures;
static int check_count;

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(x)) {                                                                                \
            check_failures++;                                                                      \
            fprintf(stderr, "CHECK failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);                 \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U(a, b)                                                                           \
    do {                                                                                           \
        unsigned long long check_a_ = (unsigned long long)(a);                                     \
        unsigned long long check_b_ = (unsigned long long)(b);                                     \
        check_count++;                                                                             \
        if (check_a_ != check_b_) {                                                                \
            check_failures++;                                                                      \
            fprintf(stderr, "CHECK failed: %s == %s (%llu != %llu) (%s:%d)\n", #a, #b, check_a_,  \
                    check_b_, __FILE__, __LINE__);                                                 \
        }                                                                                          \
    } while (0)

#define RUN(test_fn)                                                                               \
    do {                                                                                           \
        int check_before_ = check_failures;                                                        \
        test_fn();                                                                                 \
        fprintf(stderr, "%s %s\n", check_failures == check_before_ ? "ok  " : "FAIL", #test_fn);  \
    } while (0)

static inline int check_report(void)
{
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
