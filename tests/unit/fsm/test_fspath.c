/* test_fspath.c — the path validator: every bad shape is refused with a reason, good paths
 * pass, and nothing that passes can climb out of files/. */
#include <string.h>

#include "../../check.h"
#include "err.h"
#include "fspath.h"

static int validate(const char *p)
{
    char why[128];
    return fspath_validate(p, strlen(p), why, sizeof why);
}

static void test_fspath_good(void)
{
    const char *good[] = {
        "a",           "a/b",  "dir/sub/file.txt",  "..a", "a..",      "...", ".hidden", "a/.b/c",
        "x y/z%2e%2e", "a\\b", "\xc3\xa9t\xc3\xa9", "-",   "a/b/c/d/e"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_EQ_U(validate(good[i]), 0);
}

static void test_fspath_bad_shapes(void)
{
    const char *bad[] = {
        "",    "/",    "/a",          "a/",           "a//b", ".",      "..",
        "./a", "a/.",  "a/./b",       "../a",         "a/..", "a/../b", "../../etc/passwd",
        "//a", "a/b/", "/etc/passwd", "a/b/../../..", "./",   "../"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[128] = "";
        CHECK_EQ_U(fspath_validate(bad[i], strlen(bad[i]), why, sizeof why), ERR_INVALID);
        CHECK(why[0] != '\0');
    }
    CHECK_EQ_U(fspath_validate(NULL, 0, NULL, 0), ERR_INVALID);
}

static void test_fspath_nul(void)
{
    CHECK_EQ_U(fspath_validate("a\0b", 3, NULL, 0), ERR_INVALID);
    CHECK_EQ_U(fspath_validate("ab\0", 3, NULL, 0), ERR_INVALID);
    CHECK_EQ_U(fspath_validate("\0", 1, NULL, 0), ERR_INVALID);
    char why[64];
    CHECK_EQ_U(fspath_validate("a/\0/b", 5, why, sizeof why), ERR_INVALID);
    CHECK(strstr(why, "NUL") != NULL);
}

static void test_fspath_lengths(void)
{
    char buf[FSPATH_MAX + 2];
    memset(buf, 'a', 255);
    CHECK_EQ_U(fspath_validate(buf, 255, NULL, 0), 0);
    CHECK_EQ_U(fspath_validate(buf, 256, NULL, 0), ERR_INVALID);
    /* 4096 bytes exactly: components of 200 bytes, then one of 76; one more byte is too long. */
    for (size_t i = 0; i < FSPATH_MAX + 1; i++)
        buf[i] = (i % 201 == 200) ? '/' : 'b';
    CHECK_EQ_U(fspath_validate(buf, FSPATH_MAX, NULL, 0), 0);
    char why[64];
    CHECK_EQ_U(fspath_validate(buf, FSPATH_MAX + 1, why, sizeof why), ERR_INVALID);
    CHECK(strstr(why, "4096") != NULL);
}

static void test_fspath_why_truncates_safely(void)
{
    char why[4] = "xyz";
    CHECK_EQ_U(fspath_validate("/a", 2, why, sizeof why), ERR_INVALID);
    CHECK(strlen(why) == 3);
    CHECK_EQ_U(fspath_validate("a", 1, why, 0), 0);
}

int main(void)
{
    RUN(test_fspath_good);
    RUN(test_fspath_bad_shapes);
    RUN(test_fspath_nul);
    RUN(test_fspath_lengths);
    RUN(test_fspath_why_truncates_safely);
    return check_report();
}
