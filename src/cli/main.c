/* main.c — raftctl, the raftfs client: global options, the node list (from --server or the
 * cluster config) and command dispatch. Exit 0 success, 1 failed operation, 2 usage error. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "err.h"

static const char cli_usage_text[] =
    "usage: raftctl [--config CONFIG | --server HOST:PORT] [--json] COMMAND\n"
    "commands:\n"
    "  put PATH [FILE|-]              store FILE (or stdin) at PATH\n"
    "  get PATH [-o FILE]             print PATH (or write it to FILE)\n"
    "  rm PATH                        delete PATH\n"
    "  ls [PREFIX]                    list files (size, index, sha256, path)\n"
    "  status                         the answering node's Raft status\n"
    "  join ID RAFT_ADDR HTTP_ADDR    add a node to the cluster\n"
    "  remove ID                      remove a node from the cluster\n"
    "  transfer ID                    hand leadership to ID\n"
    "  wait-leader [--timeout S]      wait until a node reports a leader (default 30 s)\n"
    "--config defaults to conf/cluster.json; nodes are tried in order.\n";

int cli_usage(const char *why)
{
    if (why) fprintf(stderr, "raftctl: %s\n", why);
    fputs(cli_usage_text, stderr);
    return CLI_EXIT_USAGE;
}

static const struct {
    const char *name;
    int (*fn)(struct cli *c, int argc, char **argv);
} cli_cmds[] = {
    {"put", cli_cmd_put},
    {"get", cli_cmd_get},
    {"rm", cli_cmd_rm},
    {"ls", cli_cmd_ls},
    {"status", cli_cmd_status},
    {"join", cli_cmd_join},
    {"remove", cli_cmd_remove},
    {"transfer", cli_cmd_transfer},
    {"wait-leader", cli_cmd_wait_leader},
};

/* Fills c's node list from --server or the config file; a CLI_EXIT_* code. */
static int cli_nodes(struct cli *c, const char *server, const char *config_path)
{
    if (server) {
        struct config_addr a;
        if (config_parse_addr(server, &a)) return cli_usage("--server needs HOST:PORT");
        snprintf(c->servers[0], sizeof c->servers[0], "%s", server);
        c->n_servers = 1;
        return CLI_EXIT_OK;
    }
    static struct config cfg;
    char err[512];
    if (config_load(config_path, &cfg, err, sizeof err)) {
        fprintf(stderr, "raftctl: bad config %s: %s\n", config_path, err);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < cfg.n_nodes && i < RAFT_MAX_NODES; i++)
        snprintf(c->servers[i], sizeof c->servers[i], "%s", cfg.nodes[i].http.text);
    c->n_servers = cfg.n_nodes;
    return c->n_servers ? CLI_EXIT_OK : cli_usage("the config names no nodes");
}

/* Global options before the command; returns the command's index, or -1 after a usage error. */
static int cli_options(int argc, char **argv, const char **server, const char **config, bool *json)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            *json = true;
        } else if (!strcmp(a, "--server") || !strcmp(a, "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "raftctl: %s needs a value\n", a);
                return -1;
            }
            *(a[2] == 's' ? server : config) = argv[++i];
        } else if (!strncmp(a, "--server=", 9)) {
            *server = a + 9;
        } else if (!strncmp(a, "--config=", 9)) {
            *config = a + 9;
        } else if (!strcmp(a, "--")) {
            return i + 1;
        } else {
            fprintf(stderr, "raftctl: unknown option %s\n", a);
            return -1;
        }
    }
    return i;
}

int main(int argc, char **argv)
{
    const char *server = NULL, *config = NULL;
    struct cli c = {0};
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(cli_usage_text, stdout);
        return CLI_EXIT_OK;
    }
    int i = cli_options(argc, argv, &server, &config, &c.json);
    if (i < 0) return cli_usage(NULL);
    if (i >= argc) return cli_usage("missing COMMAND");
    if (server && config) return cli_usage("give --config or --server, not both");
    if (!config) config = "conf/cluster.json";
    for (size_t k = 0; k < sizeof cli_cmds / sizeof cli_cmds[0]; k++) {
        if (strcmp(argv[i], cli_cmds[k].name)) continue;
        /* Arguments are checked before the config is read or a node is contacted. */
        c.check_only = true;
        int rv = cli_cmds[k].fn(&c, argc - i, argv + i);
        c.check_only = false;
        if (rv != CLI_EXIT_OK) return rv;
        rv = cli_nodes(&c, server, config);
        if (rv != CLI_EXIT_OK) return rv;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rv = cli_cmds[k].fn(&c, argc - i, argv + i);
        curl_global_cleanup();
        return rv;
    }
    fprintf(stderr, "raftctl: unknown command '%s'\n", argv[i]);
    return cli_usage(NULL);
}
