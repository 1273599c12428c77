/* fuzz_path.c — libFuzzer target for the path validator: it must never crash or over-read, and
 * whatever it accepts must be a relative path with no "."/".." component, no NUL, no empty
 * component, within the length limits (so it can never leave files/). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fspath.h"

static void fuzz_path_check_accepted(const char *p, size_t len)
{
    if (len == 0 || len > FSPATH_MAX || p[0] == '/' || p[len - 1] == '/' || memchr(p, 0, len))
        abort();
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '/') continue;
        size_t n = i - start;
        if (n == 0 || n > FSPATH_COMPONENT_MAX) abort();
        if ((n == 1 && p[start] == '.') || (n == 2 && p[start] == '.' && p[start + 1] == '.'))
            abort();
        start = i + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[64];
    /* An exact-size copy: ASan flags any read past the end. */
    char *p = malloc(size ? size : 1);
    if (!p) return 0;
    memcpy(p, data, size);
    int rv = fspath_validate(p, size, why, sizeof why);
    if (rv == 0)
        fuzz_path_check_accepted(p, size);
    else if (rv != ERR_INVALID || why[0] == '\0')
        abort();
    free(p);
    return 0;
}
