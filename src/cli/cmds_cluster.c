/* cmds_cluster.c — raftctl's cluster commands: status, join, remove, transfer, wait-leader. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"

static void cli_print_status(json_t *j)
{
    json_t *leader = json_object_get(j, "leader");
    printf("id:             %s\n", json_string_value(json_object_get(j, "id")));
    printf("state:          %s\n", json_string_value(json_object_get(j, "state")));
    printf("term:           %lld\n", (long long)json_integer_value(json_object_get(j, "term")));
    if (json_is_object(leader))
        printf("leader:         %s (%s)\n", json_string_value(json_object_get(leader, "id")),
               json_string_value(json_object_get(leader, "http")));
    else
        printf("leader:         none\n");
    const char *idx[] = {"commit_index", "applied_index", "last_log_index"};
    for (size_t i = 0; i < 3; i++)
        printf("%-15s %lld\n", idx[i], (long long)json_integer_value(json_object_get(j, idx[i])));
    printf("members:\n");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "members"), i, m)
    {
        printf("  %-12s raft %-21s http %-21s %s\n", json_string_value(json_object_get(m, "id")),
               json_string_value(json_object_get(m, "raft")),
               json_string_value(json_object_get(m, "http")),
               json_is_true(json_object_get(m, "voter")) ? "voter" : "learner");
    }
}

/* Prints r (an answer to a JSON request) readably or raw; the exit code of the command. */
static int cli_json_answer(struct cli *c, const char *what, struct cli_resp *r,
                           void (*print)(json_t *))
{
    if (r->status < 200 || r->status >= 300) return cli_fail_resp(what, r);
    if (c->json) {
        fputs(r->data ? r->data : "{}", stdout);
        if (!r->data || r->len == 0 || r->data[r->len - 1] != '\n') putchar('\n');
        return CLI_EXIT_OK;
    }
    json_t *j = r->data ? json_loads(r->data, 0, NULL) : NULL;
    if (!j) {
        fprintf(stderr, "raftctl: %s: %s answered something that is not JSON\n", what, r->node);
        return CLI_EXIT_FAILED;
    }
    print(j);
    json_decref(j);
    return CLI_EXIT_OK;
}

static void cli_print_ok(json_t *j)
{
    json_t *idx = json_object_get(j, "index");
    if (idx)
        printf("ok (index %lld)\n", (long long)json_integer_value(idx));
    else
        printf("ok\n");
}

int cli_cmd_status(struct cli *c, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) return cli_usage("status takes no arguments");
    if (c->check_only) return CLI_EXIT_OK;
    struct cli_resp r = {0};
    int rv = cli_http(c, "GET", "/v1/status", NULL, NULL, &r)
                 ? CLI_EXIT_FAILED
                 : cli_json_answer(c, "status", &r, cli_print_status);
    cli_resp_free(&r);
    return rv;
}

static void cli_print_transfer(json_t *j)
{
    printf("leader: %s (term %lld)\n", json_string_value(json_object_get(j, "leader")),
           (long long)json_integer_value(json_object_get(j, "term")));
}

static int cli_post_print(struct cli *c, const char *what, const char *route, json_t *body,
                          void (*print)(json_t *))
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        fprintf(stderr, "raftctl: out of memory\n");
        return CLI_EXIT_FAILED;
    }
    struct cli_resp r = {0};
    int rv = cli_http(c, "POST", route, text, NULL, &r) ? CLI_EXIT_FAILED
                                                        : cli_json_answer(c, what, &r, print);
    free(text);
    cli_resp_free(&r);
    return rv;
}

static int cli_post(struct cli *c, const char *what, const char *route, json_t *body)
{
    return cli_post_print(c, what, route, body, cli_print_ok);
}

int cli_cmd_join(struct cli *c, int argc, char **argv)
{
    if (argc != 4) return cli_usage("join needs ID RAFT_ADDR HTTP_ADDR");
    if (c->check_only) return CLI_EXIT_OK;
    return cli_post(c, "join", "/v1/cluster/join",
                    json_pack("{s:s, s:s, s:s}", "id", argv[1], "raft", argv[2], "http", argv[3]));
}

int cli_cmd_remove(struct cli *c, int argc, char **argv)
{
    if (argc != 2) return cli_usage("remove needs an ID");
    if (c->check_only) return CLI_EXIT_OK;
    return cli_post(c, "remove", "/v1/cluster/remove", json_pack("{s:s}", "id", argv[1]));
}

int cli_cmd_transfer(struct cli *c, int argc, char **argv)
{
    if (argc != 2) return cli_usage("transfer needs an ID");
    if (c->check_only) return CLI_EXIT_OK;
    /* Answered once argv[1] leads (200), or 504 after about two election timeouts. */
    return cli_post_print(c, "transfer", "/v1/cluster/transfer", json_pack("{s:s}", "id", argv[1]),
                          cli_print_transfer);
}

static double cli_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Asks one node; true (and prints) when it names a leader. */
static bool cli_leader_at(struct cli *c, size_t node)
{
    struct cli_resp r = {0};
    bool found = false;
    if (cli_http_one(c, node, "GET", "/v1/status", &r, 1000) == 0 && r.status == 200) {
        json_t *j = json_loads(r.data ? r.data : "", 0, NULL);
        json_t *leader = json_object_get(j, "leader");
        if (json_is_object(leader)) {
            found = true;
            if (c->json)
                fputs(r.data, stdout);
            else
                printf("leader: %s (%s), term %lld\n",
                       json_string_value(json_object_get(leader, "id")),
                       json_string_value(json_object_get(leader, "http")),
                       (long long)json_integer_value(json_object_get(j, "term")));
        }
        json_decref(j);
    }
    cli_resp_free(&r);
    return found;
}

int cli_cmd_wait_leader(struct cli *c, int argc, char **argv)
{
    double timeout_s = 30;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout_s = strtod(argv[++i], &end);
            if (!*argv[i] || *end || !(timeout_s >= 0) || timeout_s > 1e6)
                return cli_usage("--timeout needs a number of seconds");
        } else {
            return cli_usage("wait-leader takes only --timeout S");
        }
    }
    if (c->check_only) return CLI_EXIT_OK;
    double deadline = cli_clock() + timeout_s;
    do {
        for (size_t k = 0; k < c->n_servers; k++)
            if (cli_leader_at(c, k)) return CLI_EXIT_OK;
        usleep(200000);
    } while (cli_clock() < deadline);
    fprintf(stderr, "raftctl: no leader within %g s (%zu nodes asked)\n", timeout_s, c->n_servers);
    return CLI_EXIT_FAILED;
}
