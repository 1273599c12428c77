/* log.c — line-oriented logging to stderr. One write(2) per line so lines from a node and
 * its supervisor never interleave mid-line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_name[64] = "-";
static enum log_level log_level = LOG_LVL_INFO;
static uint64_t log_term;
static int log_tee_fd = -1;

static const char *const log_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_init(const char *name)
{
    snprintf(log_name, sizeof log_name, "%s", name ? name : "-");
    const char *env = getenv("RAFTFS_LOG");
    if (!env) return;
    for (int i = 0; i <= LOG_LVL_DEBUG; i++)
        if (strcasecmp(env, log_level_names[i]) == 0) log_level = (enum log_level)i;
}

void log_set_level(enum log_level lvl)
{
    log_level = lvl;
}

void log_set_term(uint64_t term)
{
    log_term = term;
}

void log_set_tee(int fd)
{
    log_tee_fd = fd;
}

int log_enabled(enum log_level lvl)
{
    return lvl <= log_level;
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
    if (!log_enabled(lvl)) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s term=%llu ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_level_names[lvl], log_name,
                     (unsigned long long)log_term);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    if (log_tee_fd >= 0) w = write(log_tee_fd, line, (size_t)n);
    (void)w;
}
