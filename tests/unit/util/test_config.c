/* test_config.c — the config parser: good files load with defaults, each bad shape is
 * refused with a message naming the problem. */
#include <string.h>

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
    CHECK(config_find(&c, "node1") == &c.nodes[0]);
    CHECK(config_find(&c, "nodeX") == NULL);
}

struct bad_case {
    const char *text;
    const char *expect; /* substring of the message */
};

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
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config c;
        char err[256] = "";
        int rv = parse(cases[i].text, &c, err, sizeof err);
        CHECK(rv == ERR_INVALID);
        if (!strstr(err, cases[i].expect))
            fprintf(stderr, "case %zu: message \"%s\" lacks \"%s\"\n", i, err, cases[i].expect);
        CHECK(strstr(err, cases[i].expect) != NULL);
    }
}

static void test_config_missing_file(void)
{
    struct config c;
    char err[256] = "";
    CHECK_EQ_U(config_load("/nonexistent/cluster.json", &c, err, sizeof err), ERR_NOTFOUND);
    CHECK(strstr(err, "No such file") != NULL);
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
    RUN(test_config_raft_id_stable_and_distinct);
    return check_report();
}
