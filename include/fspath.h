/* fspath.h — validation of client file paths (INTERFACES.md rules). Pure: no I/O. A path that
 * validates can never name anything outside data/nodeN/files/. */
#ifndef RAFTFS_FSPATH_H
#define RAFTFS_FSPATH_H

#include <stddef.h>

#define FSPATH_MAX 4096          /* bytes in a whole path */
#define FSPATH_COMPONENT_MAX 255 /* bytes in one '/'-separated component */

/* 0 when path[0..len) is a valid relative file path: '/'-separated, 1..FSPATH_MAX bytes, each
 * component 1..FSPATH_COMPONENT_MAX bytes, no empty, "." or ".." component, no NUL byte, no
 * leading or trailing '/'. Otherwise ERR_INVALID and, when why != NULL, a short reason in
 * why[0..why_len) (always NUL-terminated when why_len > 0). The input is raw bytes (already
 * percent-decoded by the HTTP layer) and need not be NUL-terminated. */
int fspath_validate(const char *path, size_t len, char *why, size_t why_len);

#endif
