/* fspath.c — client path validation. Pure byte checks; never touches the file system. */
#include "fspath.h"

#include <stdio.h>
#include <string.h>

#include "err.h"

static int fspath_fail(char *why, size_t why_len, const char *reason, size_t at)
{
    if (why && why_len > 0) snprintf(why, why_len, "%s (at byte %zu)", reason, at);
    return ERR_INVALID;
}

/* One component path[start..end): non-empty, not "." or "..", not too long. */
static int fspath_component(const char *path, size_t start, size_t end, char *why, size_t why_len)
{
    size_t n = end - start;
    if (n == 0) return fspath_fail(why, why_len, "empty path component", start);
    if (n > FSPATH_COMPONENT_MAX)
        return fspath_fail(why, why_len, "path component longer than 255 bytes", start);
    if (path[start] == '.' && (n == 1 || (n == 2 && path[start + 1] == '.')))
        return fspath_fail(why, why_len, "'.' or '..' path component", start);
    return 0;
}

int fspath_validate(const char *path, size_t len, char *why, size_t why_len)
{
    if (why && why_len > 0) why[0] = '\0';
    if (!path || len == 0) return fspath_fail(why, why_len, "empty path", 0);
    if (len > FSPATH_MAX)
        return fspath_fail(why, why_len, "path longer than 4096 bytes", FSPATH_MAX);
    if (path[0] == '/') return fspath_fail(why, why_len, "absolute path", 0);
    const char *nul = memchr(path, '\0', len);
    if (nul) return fspath_fail(why, why_len, "NUL byte in path", (size_t)(nul - path));
    if (path[len - 1] == '/') return fspath_fail(why, why_len, "trailing '/'", len - 1);
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/') continue;
        int rv = fspath_component(path, start, i, why, why_len);
        if (rv) return rv;
        start = i + 1;
    }
    return 0;
}
