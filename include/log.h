/* log.h — one line per event on stderr: UTC timestamp, level, node id, term, message.
 * raftsup points each node's stderr at data/nodeN/node.log. */
#ifndef RAFTFS_LOG_H
#define RAFTFS_LOG_H

#include <stdint.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* name: the node id (or "raftsup"); copied. Level from $RAFTFS_LOG (error|warn|info|debug),
 * default info. */
void log_init(const char *name);
void log_set_level(enum log_level lvl);
/* The term printed on each line (the node updates it on every term change). */
void log_set_term(uint64_t term);
int log_enabled(enum log_level lvl);
/* Also append every line to fd (raftsup: DATA/raftsup.log); -1 turns it off. Not owned. */
void log_set_tee(int fd);
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_ERROR(...) log_write(LOG_LVL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) log_write(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO(...) log_write(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LVL_DEBUG))                                                            \
            log_write(LOG_LVL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)

#endif
