/* test_config.c — the config parser: good files load with defaults, each bad shape is
 * refused with a message naming the problem. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../check.h"
#include "config.h"
#include "err.h"

static const char *good =
    "{\"cluster\":\"demo\",\"data_dir\":\"data\",\"nodes\":["
    "{\"id\":\"node1\",\"raft\":\"127.0.0.1:8001\",\"http\":\"127.0.0.1:9001\"},"
    "{\"id\":\"node2\",\"raft\":\"127.0.0.1:8002\",\"http\":\"127.0.0.1:9002\"}]}";

static int parse(const char *text, struct config *c, char *err, size_t len)
{
    return config_parse(text, strlen(text), c, err, len);
}

static void test_config_good_loads_with_defaults(void)
{
    struct config c;
    char err[256] = "";
    CHECK_EQ_U(parse(good, &c, err, sizeof err), 0);
    CHECK_EQ_U(c.n_nodes, 2);
    CHECK(strcmp(c.nodes[1].id, "node2") == 0);
    CHECK_EQ_U(c.nodes[1].raft.port, 8002);
    CHECK(strcmp(c.nodes[1].http.host, "127.0.0.1") == 0);
    CHECK_EQ_U(c.heartbeat_ms, 50);
    CHECK_EQ_U(c.election_timeout_min_ms, 150);
    CHECK_EQ_U(c.election_timeout_max_ms, 300);
    CHECK_EQ_U(c.max_body_bytes, 64ull << 20);
    CHECK_EQ_U(c.spare_inodes, 1024);
    CHECK_EQ_U(c.snapshot_entries, 10000);
    CHECK_EQ_U(c.snapshot_bytes, 64ull << 20);
    CHECK_EQ_U(c.snapshot_trailing, 5000);
    CHECK_EQ_U(c.nodes[0].has_raft_listen, 0);
    CHECK(config_find(&c, "node1") == &c.nodes[0]);
    CHECK(config_find(&c, "nodeX") == NULL);
}

struct bad_case {
    const char *text;
    const char *expect; /* substring of the message */
};

/* Each text must be refused with ERR_INVALID and a message containing its expect string. */
static void check_bad_cases(const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct config c;
        char err[256] = "";
        int rv = parse(cases[i].text, &c, err, sizeof err);
        CHECK(rv == ERR_INVALID);
        if (!strstr(err, cases[i].expect))
            fprintf(stderr, "case %zu: message \"%s\" lacks \"%s\"\n", i, err, cases[i].expect);
        CHECK(strstr(err, cases[i].expect) != NULL);
    }
}

static void test_config_bad_inputs_refused(void)
{
    static const struct bad_case cases[] = {
        {"{\"cluster\":\"demo\",", "line 1, column"},
        {"[]", "top level"},
        {"{\"cluster\":\"demo\",\"data_dir\":\"d\",\"nodes\":[],\"x\":1}", "non-empty"},
        {"{\"cluster\":\"demo\",\"data_dir\":\"d\",\"bogus\":1,\"nodes\":[]}", "unknown key"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:2\"},{\"id\":\"a\",\"raft\":\"h:3\",\"http\":\"h:4\"}]}",
         "duplicate node id"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:2\"},{\"id\":\"b\",\"raft\":\"h:1\",\"http\":\"h:4\"}]}",
         "duplicate address"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:0\","
         "\"http\":\"h:2\"}]}",
         "bad raft address"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"nocolon\"}]}",
         "bad http address"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:2\",\"extra\":1}]}",
         "unknown key \"extra\""},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a/b\",\"raft\":\"h:1\","
         "\"http\":\"h:2\"}]}",
         "id"},
        {"{\"cluster\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\",\"http\":\"h:2\"}]}",
         "data_dir"},
        {"{\"cluster\":\"d\",\"data_dir\":\"d\",\"heartbeat_ms\":200,\"nodes\":[{\"id\":\"a\","
         "\"raft\":\"h:1\",\"http\":\"h:2\"}]}",
         "election_timeout_ms"},
        {"{\"cluster\":\"d\",\"cluster\":\"e\",\"data_dir\":\"d\"}", "duplicate"},
    };
    check_bad_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_config_missing_file(void)
{
    struct config c;
    char err[256] = "";
    CHECK_EQ_U(config_load("/nonexistent/cluster.json", &c, err, sizeof err), ERR_NOTFOUND);
    CHECK(strstr(err, "No such file") != NULL);
}

static void test_config_addr_edges(void)
{
    struct config_addr a;
    CHECK_EQ_U(config_parse_addr("127.0.0.1:1", &a), 0);
    CHECK_EQ_U(a.port, 1);
    CHECK_EQ_U(config_parse_addr("localhost:65535", &a), 0);
    CHECK_EQ_U(a.port, 65535);
    CHECK(strcmp(a.host, "localhost") == 0);
    CHECK(strcmp(a.text, "localhost:65535") == 0);
    static const char *bad[] = {
        "",        ":80",     "host:",    "host",   "host:65536", "host:123456", "host:+1",
        "host:-1", "host:8a", "ho st:80", "host:0", "a/b:80",     "[::1]:80",    "host:80 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rv = config_parse_addr(bad[i], &a);
        if (rv != ERR_INVALID) fprintf(stderr, "address \"%s\" accepted\n", bad[i]);
        CHECK(rv == ERR_INVALID);
    }
    char longaddr[CONFIG_ADDR_MAX + 8];
    memset(longaddr, 'a', sizeof longaddr);
    memcpy(longaddr + sizeof longaddr - 6, ":8001", 6);
    CHECK(config_parse_addr(longaddr, &a) == ERR_INVALID);
}

static void test_config_tuning_keys(void)
{
    static const char *text =
        "{\"cluster\":\"t\",\"data_dir\":\"/tmp/x\",\"tick_ms\":5,\"heartbeat_ms\":20,"
        "\"election_timeout_ms\":[100,200],\"restart_backoff_ms\":[50,400],"
        "\"restart_reset_ms\":1000,\"max_body_bytes\":1024,\"snapshot_entries\":100,"
        "\"snapshot_bytes\":10000000000,\"snapshot_trailing\":0,\"nodes\":["
        "{\"id\":\"a\",\"raft\":\"h:1\",\"http\":\"h:2\",\"raft_listen\":\"0.0.0.0:7\"}]}";
    struct config c;
    char err[256] = "";
    CHECK_EQ_U(parse(text, &c, err, sizeof err), 0);
    CHECK_EQ_U(c.tick_ms, 5);
    CHECK_EQ_U(c.heartbeat_ms, 20);
    CHECK_EQ_U(c.election_timeout_min_ms, 100);
    CHECK_EQ_U(c.election_timeout_max_ms, 200);
    CHECK_EQ_U(c.restart_backoff_min_ms, 50);
    CHECK_EQ_U(c.restart_backoff_max_ms, 400);
    CHECK_EQ_U(c.restart_reset_ms, 1000);
    CHECK_EQ_U(c.max_body_bytes, 1024);
    CHECK_EQ_U(c.snapshot_entries, 100);
    CHECK_EQ_U(c.snapshot_bytes, 10000000000ull);
    CHECK_EQ_U(c.snapshot_trailing, 0);
    CHECK_EQ_U(c.nodes[0].has_raft_listen, 1);
    CHECK_EQ_U(c.nodes[0].raft_listen.port, 7);
    CHECK(strcmp(c.data_dir, "/tmp/x") == 0);
    CHECK_EQ_U(c.restart_backoff_min_ms, 50);
}

static void test_config_bad_values_refused(void)
{
    static const struct bad_case cases[] = {
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"tick_ms\":0,\"nodes\":[]}", "tick_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"tick_ms\":1.5,\"nodes\":[]}", "tick_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"heartbeat_ms\":\"50\",\"nodes\":[]}",
         "heartbeat_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"election_timeout_ms\":[300],\"nodes\":[]}",
         "election_timeout_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"election_timeout_ms\":[300,200],\"nodes\":[]}",
         "min 300 > max 200"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"restart_backoff_ms\":[0,10],\"nodes\":[]}",
         "restart_backoff_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"restart_reset_ms\":-1,\"nodes\":[]}",
         "restart_reset_ms"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"max_body_bytes\":0,\"nodes\":[]}",
         "max_body_bytes"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"snapshot_entries\":15,\"nodes\":[]}",
         "snapshot_entries"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"snapshot_bytes\":-5,\"nodes\":[]}",
         "snapshot_bytes"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"snapshot_trailing\":\"x\",\"nodes\":[]}",
         "snapshot_trailing"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:2\",\"raft_listen\":\"h\"}]}",
         "bad raft_listen"},
        {"{\"cluster\":\"a b\",\"data_dir\":\"d\",\"nodes\":[]}", "cluster"},
        {"{\"cluster\":7,\"data_dir\":\"d\",\"nodes\":[]}", "cluster"},
        {"{\"cluster\":\"t\",\"data_dir\":\"\",\"nodes\":[]}", "data_dir"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\\u0000x\",\"nodes\":[]}", "not allowed"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":{}}", "nodes"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[7]}", "nodes[0] must be an object"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\"}]}",
         "missing key \"http\""},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:1\"}]}",
         "are the same"},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\","
         "\"http\":\"h:2\"},{\"id\":\"b\",\"raft\":\"h:3\",\"http\":\"h:1\"}]}",
         "duplicate address \"h:1\""},
        {"{\"data_dir\":\"d\",\"nodes\":[{\"id\":\"a\",\"raft\":\"h:1\",\"http\":\"h:2\"}]}",
         "missing key \"cluster\""},
        {"{\"cluster\":\"t\",\"data_dir\":\"d\"}", "missing key \"nodes\""},
        {"", "invalid JSON"},
        {"{\"cluster\":\"t\"} trailing", "invalid JSON"},
    };
    check_bad_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_config_too_many_nodes(void)
{
    char text[4096];
    int n = snprintf(text, sizeof text, "{\"cluster\":\"t\",\"data_dir\":\"d\",\"nodes\":[");
    for (int i = 0; i <= RAFT_MAX_NODES; i++)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "%s{\"id\":\"n%d\",\"raft\":\"h:%d\",\"http\":\"h:%d\"}", i ? "," : "", i,
                      1000 + i, 2000 + i);
    snprintf(text + n, sizeof text - (size_t)n, "]}");
    struct config c;
    char err[256] = "";
    CHECK(parse(text, &c, err, sizeof err) == ERR_INVALID);
    CHECK(strstr(err, "at most") != NULL);
}

/* A file on disk: the message names the file and, for bad JSON, the line and column. */
static void test_config_load_file_messages(void)
{
    char dir[] = "/tmp/raftfs-test-config-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/c.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("{\n  \"cluster\": \"t\",\n  \"data_dir\": \"d\"\n  \"nodes\": []\n}\n", f);
        fclose(f);
    }
    struct config c;
    char err[512] = "";
    CHECK_EQ_U(config_load(path, &c, err, sizeof err), ERR_INVALID);
    CHECK(strstr(err, path) != NULL);
    CHECK(strstr(err, "line 4, column") != NULL);
    if (!strstr(err, "line 4, column")) fprintf(stderr, "message: %s\n", err);
    err[0] = '\0';
    CHECK_EQ_U(config_load(dir, &c, err, sizeof err), ERR_IO); /* a directory */
    CHECK(strstr(err, dir) != NULL);
    unlink(path);
    rmdir(dir);
}

static void test_config_raft_id_stable_and_distinct(void)
{
    CHECK(config_raft_id("node1") == config_raft_id("node1"));
    CHECK(config_raft_id("node1") != config_raft_id("node2"));
    CHECK(config_raft_id("") != 0);
}

int main(void)
{
    RUN(test_config_good_loads_with_defaults);
    RUN(test_config_bad_inputs_refused);
    RUN(test_config_missing_file);
    RUN(test_config_addr_edges);
    RUN(test_config_tuning_keys);
    RUN(test_config_bad_values_refused);
    RUN(test_config_too_many_nodes);
    RUN(test_config_load_file_messages);
    RUN(test_config_raft_id_stable_and_distinct);
    return check_report();
}
