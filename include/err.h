/* err.h — raftfs error codes: 0 is success, positive codes are ERR_*; BDB's negative band
 * (-30800..-30999) never crosses a module boundary (the storage layer translates it). */
#ifndef RAFTFS_ERR_H
#define RAFTFS_ERR_H

/* One table so err_str() can never drift from the enum. */
#define ERR_LIST(X)                                                                                \
    X(OK, "ok")                                                                                    \
    X(NOMEM, "out of memory")                                                                      \
    X(IO, "i/o error")                                                                             \
    X(CORRUPT, "corrupt data")                                                                     \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(INVALID, "invalid argument")                                                                 \
    X(PROTO, "protocol error")                                                                     \
    X(TOOBIG, "too large")                                                                         \
    X(NOTLEADER, "not the leader")                                                                 \
    X(BUSY, "busy, retry later")                                                                   \
    X(SHUTDOWN, "shutting down")                                                                   \
    X(TIMEOUT, "timed out")                                                                        \
    X(NOSPACE, "no space left on device")                                                          \
    X(FAILED, "node is in a failed state")

enum err_code {
#define ERR_ENUM_(name, msg) ERR_##name,
    ERR_LIST(ERR_ENUM_)
#undef ERR_ENUM_
        ERR__COUNT
};

/* Borrowed static string; never NULL, also for unknown codes. */
const char *err_str(int code);

#endif
