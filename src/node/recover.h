/* recover.h — disaster recovery for a cluster that lost its majority (recover.c). */
#ifndef RAFTFS_NODE_RECOVER_H
#define RAFTFS_NODE_RECOVER_H

#include <stddef.h>

/* `raftnode --force-new-cluster`: before the node starts, appends to node `id`'s own log a
 * configuration entry with this node as the only voter (index last+1, a new term) and logs
 * it loudly. ERR_INVALID (bad config or id, no Raft state to recover) or a storage error;
 * err gets a message. */
int node_force_new_cluster(const char *config_path, const char *id, char *err, size_t err_len);

#endif
