/* rassert.h — always-on assertions for programmer errors (never for bad input, a full disk
 * or an unreachable peer: those are ERR_* results). */
#ifndef RAFTFS_RASSERT_H
#define RAFTFS_RASSERT_H

_Noreturn void rassert_fail(const char *expr, const char *file, int line, const char *func);

#define ASSERT(x) ((x) ? (void)0 : rassert_fail(#x, __FILE__, __LINE__, __func__))

#endif
