/* rassert.c — the failure path of ASSERT: report where, then abort for a core dump. */
#include "rassert.h"

#include <stdio.h>
#include <stdlib.h>

void rassert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "assertion failed: %s (%s:%d %s)\n", expr, file, line, func);
    fflush(stderr);
    abort();
}
