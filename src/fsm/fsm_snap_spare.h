/* fsm_snap_spare.h — internal: empty files made ahead for a snapshot receiver by a thread of
 * their own. Creating an inode is the receiver's dearest file system call here (ext4 scans its
 * inode bitmap and, after the old tree was just removed, the inode table for recently deleted
 * inodes: ~15% of the receiver's loop-thread CPU on a 1 GiB catch-up of 4 MiB files); renaming
 * a ready empty file into place is cheap. Taking a spare never waits: with none ready the
 * caller creates its file itself, as before. Spares left over stay in the staging directory,
 * which the next writer (or restart) empties. */
#ifndef RAFTFS_FSM_SNAP_SPARE_H
#define RAFTFS_FSM_SNAP_SPARE_H

#include <stdbool.h>
#include <stddef.h>

#define FSS_SPARES 8          /* made ahead at most */
#define FSS_SPARE_NAME_MAX 32 /* "s<k % FSS_SPARES>/spare-<k>", k a decimal u32 */

struct fss_spares;

/* Starts the thread making spares in dirfd (kept open by the caller until fss_spares_stop).
 * NULL when no thread could be started (the caller creates every file itself). */
struct fss_spares *fss_spares_start(int dirfd);
/* Stops and joins the thread; NULL is a no-op. */
void fss_spares_stop(struct fss_spares *s);
/* A ready spare's path (relative to dirfd, in a subdirectory) into name, now the caller's;
 * false when none is ready. */
bool fss_spares_take(struct fss_spares *s, char name[FSS_SPARE_NAME_MAX]);

#endif
