/* fuzz_path.c — libFuzzer target for the path validator and the file-store command decoder:
 * neither may crash or over-read; an accepted path must be relative with no "."/".."/empty
 * component and no NUL, within the limits (so it can never leave files/), and a decoded
 * command must point inside its input at a path that validates. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fsm.h"
#include "fspath.h"
#include "fuzz.h"

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
    uint8_t *cmd = malloc(size ? size : 1);
    if (!cmd) return 0;
    memcpy(cmd, data, size);
    struct fsm_cmd c;
    if (fsm_cmd_decode(cmd, size, &c) == 0) {
        const char *end = (const char *)cmd + size;
        if (c.path < (const char *)cmd || c.path + c.path_len > end ||
            fspath_validate(c.path, c.path_len, NULL, 0) != 0)
            abort();
        if (c.op == FSM_CMD_PUT && (const char *)c.body + c.body_len != end) abort();
    }
    free(cmd);
    return 0;
}
