/* cli.h — raftctl's pieces: an HTTP client that tries the cluster's nodes in turn (client.c)
 * and the commands (cmds.c). Only main.c exits. */
#ifndef RAFTFS_CLI_H
#define RAFTFS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILED 1
#define CLI_EXIT_USAGE 2
#define CLI_RETRY_503_S 5.0 /* how long 503 answers (no leader yet) are retried on other nodes */

struct cli {
    char servers[RAFT_MAX_NODES][CONFIG_ADDR_MAX]; /* "host:port" of each node's HTTP API */
    size_t n_servers;
    size_t cur;      /* the node that answered last: tried first next time */
    bool json;       /* print the server's JSON */
    bool check_only; /* commands validate their arguments and return before any I/O */
};

/* A request body streamed from a file (never loaded whole). */
struct cli_upload {
    FILE *in;
    int64_t size;  /* -1: unknown (a pipe): sent chunked */
    bool seekable; /* can be rewound to retry on another node */
    bool consumed; /* bytes were read: a non-seekable body cannot be retried */
};

/* An answer: the body of a 2xx goes to sink when given, anything else to data. */
struct cli_resp {
    long status;
    char *data; /* NUL-terminated; owned, free() */
    size_t len;
    FILE *sink;
    bool sink_used;             /* bytes went to sink */
    char node[CONFIG_ADDR_MAX]; /* the node that answered */
};

/* Sends method target ("/v1/...", already percent-encoded) to the nodes in turn: a node that
 * cannot be reached is skipped, a 503 is retried on the others for CLI_RETRY_503_S. Returns 0
 * once any node answered (any status, in r->status), ERR_IO when none could be reached (a
 * message is printed). json_body may be NULL; up may be NULL. */
int cli_http(struct cli *c, const char *method, const char *target, const char *json_body,
             struct cli_upload *up, struct cli_resp *r);
/* One attempt at one node, no retries (wait-leader polls each node itself). */
int cli_http_one(struct cli *c, size_t node, const char *method, const char *target,
                 struct cli_resp *r, long timeout_ms);
void cli_resp_free(struct cli_resp *r);
/* Appends path percent-encoded (unreserved bytes and '/' kept) to out; false if it does not
 * fit. */
bool cli_encode_path(const char *path, char *out, size_t out_len);
/* Prints the server's error answer on stderr; returns CLI_EXIT_FAILED. */
int cli_fail_resp(const char *what, const struct cli_resp *r);

/* Commands: argv[0] is the command name. Return a CLI_EXIT_* code. */
int cli_cmd_put(struct cli *c, int argc, char **argv);
int cli_cmd_get(struct cli *c, int argc, char **argv);
int cli_cmd_rm(struct cli *c, int argc, char **argv);
int cli_cmd_ls(struct cli *c, int argc, char **argv);
int cli_cmd_status(struct cli *c, int argc, char **argv);
int cli_cmd_join(struct cli *c, int argc, char **argv);
int cli_cmd_remove(struct cli *c, int argc, char **argv);
int cli_cmd_transfer(struct cli *c, int argc, char **argv);
int cli_cmd_wait_leader(struct cli *c, int argc, char **argv);

/* Prints the usage line for one command (or all) and returns CLI_EXIT_USAGE. */
int cli_usage(const char *why);

#endif
