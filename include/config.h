/* config.h — the cluster config file (JSON, read with jansson), shared by raftnode, raftsup
 * and raftctl. Validated whole before anything starts. */
#ifndef RAFTFS_CONFIG_H
#define RAFTFS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define CONFIG_ID_MAX 64    /* node id: [A-Za-z0-9_-], 1..63 bytes */
#define CONFIG_ADDR_MAX 128 /* "host:port" as written */

struct config_addr {
    char text[CONFIG_ADDR_MAX]; /* as written: "127.0.0.1:8001" */
    char host[CONFIG_ADDR_MAX]; /* numeric IPv4 or a host name */
    uint16_t port;              /* 1..65535 */
};

struct config_node {
    char id[CONFIG_ID_MAX];
    struct config_addr raft;
    struct config_addr http;
    /* "raft_listen": optional address to bind the Raft port to, when peers reach this node
     * through another address (a proxy, NAT). Peers always dial "raft". has_raft_listen == 0:
     * bind "raft". */
    int has_raft_listen;
    struct config_addr raft_listen;
};

struct config {
    char cluster[CONFIG_ID_MAX];
    char data_dir[4096]; /* as written (relative to the current directory) */
    size_t n_nodes;
    struct config_node nodes[RAFT_MAX_NODES];
    /* Optional tuning keys (README "Configuration"). */
    unsigned tick_ms;                 /* "tick_ms", default 10 */
    unsigned heartbeat_ms;            /* "heartbeat_ms", default 50 */
    unsigned election_timeout_min_ms; /* "election_timeout_ms": [150, 300] by default */
    unsigned election_timeout_max_ms;
    uint64_t max_body_bytes;         /* "max_body_bytes", default 64 MiB */
    unsigned restart_backoff_min_ms; /* "restart_backoff_ms": [100, 5000] by default */
    unsigned restart_backoff_max_ms;
    unsigned restart_reset_ms; /* "restart_reset_ms", default 30000 */
    unsigned spare_inodes;     /* "spare_inodes", default 1024: empty inodes each node
                                  keeps ready for new paths (0..4160) */
    /* Log compaction (README "Snapshots and compaction"): once this many entries (or payload
     * bytes) are in the log beyond the last compaction point, the log prefix the file store
     * has durably checkpointed is deleted, keeping the last snapshot_trailing entries so a
     * slightly late follower still catches up from the log. */
    uint64_t snapshot_entries;  /* "snapshot_entries", default 10000 (16..1e9) */
    uint64_t snapshot_bytes;    /* "snapshot_bytes", default 64 MiB (1 MiB..64 GiB) */
    uint64_t snapshot_trailing; /* "snapshot_trailing", default 5000 (0..1e9) */
};

/* Loads and validates path. On error returns ERR_INVALID (or ERR_NOTFOUND/ERR_IO for the
 * file) and writes a human message (with line:column for bad JSON) into err. */
int config_load(const char *path, struct config *out, char *err, size_t err_len);
/* Parses a JSON text already in memory (the fuzz target's entry point). */
int config_parse(const char *text, size_t len, struct config *out, char *err, size_t err_len);
/* Borrowed pointer into c, or NULL. */
const struct config_node *config_find(const struct config *c, const char *id);
/* Parses "host:port" (port 1..65535, host non-empty). ERR_INVALID otherwise. */
int config_parse_addr(const char *text, struct config_addr *out);
/* The node's numeric Raft identity: a stable 64-bit hash of its id string (never 0). */
raft_id config_raft_id(const char *id);

#endif
