/* test_raftctl_cases.h — the cases of test_raftctl.c (included once, after its helpers). */

static void write_file(const char *name, const uint8_t *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

static void test_put_get_roundtrip(void)
{
    size_t n = 1500000, len = 0;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7919u >> 5);
    write_file("src.bin", data, n);
    char src[256], dst[256];
    snprintf(src, sizeof src, "%s/src.bin", dir);
    snprintf(dst, sizeof dst, "%s/dst.bin", dir);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "put", "d/a b.bin", src, NULL}), 0);
    CHECK(out_has("created d/a b.bin: 1500000 bytes"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "put", "d/a b.bin", src, NULL}), 0);
    CHECK(out_has("replaced"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "get", "d/a b.bin", "-o", dst, NULL}),
               0);
    char *got = slurp("dst.bin", &len);
    CHECK(len == n && !memcmp(got, data, n));
    free(got);
    /* stdin as a pipe-like source ("-") and stdout as the sink. */
    CHECK_EQ_U(run("src.bin", (const char *[]){"--server", server, "put", "s", "-", NULL}), 0);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "get", "s", NULL}), 0);
    got = slurp("out", &len);
    CHECK(len == n && !memcmp(got, data, n));
    free(got);
    free(data);
}

static void test_failures(void)
{
    char dst[256];
    snprintf(dst, sizeof dst, "%s/never.bin", dir);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "get", "nope", "-o", dst, NULL}), 1);
    CHECK(err_has("no such file: nope") && err_has("not_found"));
    CHECK(access(dst, F_OK) != 0);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "rm", "nope", NULL}), 1);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "put", "../x", "/dev/null", NULL}),
               1);
    CHECK(err_has("bad_path"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "remove", "n9", NULL}), 1);
    CHECK(err_has("no such member"));
}

static void test_ls_rm_status_join(void)
{
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "ls", NULL}), 0);
    CHECK(out_has("d/a b.bin") && out_has("1500000"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "ls", "d/", NULL}), 0);
    CHECK(out_has("d/a b.bin"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "--json", "ls", "zz", NULL}), 0);
    CHECK(out_has("{\"files\":[]}"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "rm", "s", NULL}), 0);
    CHECK(out_has("removed s"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "status", NULL}), 0);
    CHECK(out_has("state:          leader") && out_has("leader:         node1"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--json", "--server", server, "status", NULL}), 0);
    CHECK(out_has("\"state\":\"leader\""));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "join", "n4", "127.0.0.1:8",
                                          "127.0.0.1:9", NULL}),
               0);
    CHECK(out_has("ok (index 9)") && !strcmp(st.joined, "n4 127.0.0.1:8 127.0.0.1:9"));
    CHECK_EQ_U(
        run(NULL, (const char *[]){"--server", server, "wait-leader", "--timeout", "2", NULL}), 0);
    CHECK(out_has("leader: node1"));
}

/* transfer: the new leader on success; exit 1 with the server's message on 504 and 404. */
static void test_transfer(void)
{
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "transfer", "n2", NULL}), 0);
    CHECK(out_has("leader: n2 (term 4)"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "--json", "transfer", "n2", NULL}),
               0);
    CHECK(out_has("\"leader\":\"n2\""));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "transfer", "dead", NULL}), 1);
    CHECK(err_has("transfer_timeout") && err_has("did not move to dead"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "transfer", "n9", NULL}), 1);
    CHECK(err_has("not a member"));
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "transfer", NULL}), 2);
}

/* A free port nobody listens on (bound, read back, closed). */
static unsigned closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    bind(fd, (struct sockaddr *)&sin, sizeof sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* The first node of the config refuses connections: the second answers. 503s are retried. */
static void test_failover_and_retry(void)
{
    char cfg[1024], path[256];
    unsigned dead = closed_port();
    snprintf(cfg, sizeof cfg,
             "{\"cluster\":\"t\",\"data_dir\":\"%s\",\"nodes\":["
             "{\"id\":\"n1\",\"raft\":\"127.0.0.1:%u\",\"http\":\"127.0.0.1:%u\"},"
             "{\"id\":\"n2\",\"raft\":\"127.0.0.1:%u\",\"http\":\"%s\"}]}",
             dir, closed_port() + 1, dead, closed_port() + 2, server);
    write_file("cluster.json", (const uint8_t *)cfg, strlen(cfg));
    snprintf(path, sizeof path, "%s/cluster.json", dir);
    CHECK_EQ_U(run(NULL, (const char *[]){"--config", path, "status", NULL}), 0);
    CHECK(out_has("id:             node1"));
    pthread_mutex_lock(&st.mu);
    st.unavailable = 3;
    pthread_mutex_unlock(&st.mu);
    CHECK_EQ_U(run(NULL, (const char *[]){"--config", path, "get", "d/a b.bin", NULL}), 0);
    CHECK_EQ_U(st.unavailable, 0);
    CHECK_EQ_U(run(NULL, (const char *[]){"--server", server, "get", "d/a b.bin", NULL}), 0);
}

static struct ev_loop *loop;
static ev_async stop_w;

static void stop_cb(struct ev_loop *l, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

static void *loop_main(void *arg)
{
    (void)arg;
    ev_run(loop, 0);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_raftctl RAFTCTL\n");
        return 2;
    }
    ctl = argv[1];
    if (!mkdtemp(dir)) return 1;
    char err[256];
    struct http_server *srv = NULL;
    loop = ev_loop_new(EVFLAG_AUTO);
    if (http_start(loop, "127.0.0.1:0", 4u << 20, &fb, NULL, &srv, err, sizeof err)) {
        fprintf(stderr, "http_start: %s\n", err);
        return 1;
    }
    snprintf(server, sizeof server, "127.0.0.1:%u", http_port(srv));
    ev_async_init(&stop_w, stop_cb);
    ev_async_start(loop, &stop_w);
    pthread_t t;
    pthread_create(&t, NULL, loop_main, NULL);
    RUN(test_put_get_roundtrip);
    RUN(test_failures);
    RUN(test_ls_rm_status_join);
    RUN(test_failover_and_retry);
    RUN(test_transfer);
    ev_async_send(loop, &stop_w);
    pthread_join(t, NULL);
    http_stop(srv);
    ev_loop_destroy(loop);
    for (int i = 0; i < FILES_MAX; i++)
        free(st.data[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return check_report();
}
