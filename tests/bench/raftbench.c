/* raftbench.c — load generator for raftfs: N concurrent connections PUT (or GET) S-byte files
 * for T seconds against one node or all, through libcurl's multi interface; prints ops/s,
 * MB/s, latency percentiles, and the disk's own fsync latency measured beside the load. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_SERVERS 9
#define BENCH_MAX_SAMPLES (5u * 1000 * 1000)

struct bench_opts {
    char *servers[BENCH_MAX_SERVERS];
    int n_servers;
    int conns;
    size_t size;
    double seconds;
    int paths;       /* per connection: overwrite this many paths in turn; 0 = a new path each */
    int get_percent; /* share of requests that are GETs */
    const char *fsync_dir;
    bool json;
    double slow_ms; /* > 0: log each request slower than this to stderr, with the time */
};

struct bench_conn {
    CURL *easy;
    int index;
    uint64_t seq;
    double started;
    bool is_get;
    size_t sent; /* upload cursor */
    char url[512];
};

struct bench_stats {
    double *lat_us;
    size_t n;
    uint64_t ok, errors, bytes;
};

static const uint8_t *bench_body;
static struct bench_opts bench_o;

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t bench_read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct bench_conn *c = ud;
    size_t want = size * nitems, left = bench_o.size - c->sent;
    size_t n = want < left ? want : left;
    memcpy(buf, bench_body + c->sent, n);
    c->sent += n;
    return n;
}

static size_t bench_write_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    (void)buf;
    (void)ud;
    return size * nitems;
}

static void bench_issue(CURLM *multi, struct bench_conn *c)
{
    const char *server = bench_o.servers[c->index % bench_o.n_servers];
    c->is_get = bench_o.get_percent > 0 && (int)(rand() % 100) < bench_o.get_percent;
    if (bench_o.paths) /* every connection cycles through one shared set of paths */
        snprintf(
            c->url, sizeof c->url, "http://%s/v1/files/bench/ow%llu", server,
            (unsigned long long)((c->seq + (uint64_t)c->index * 7919) % (uint64_t)bench_o.paths));
    else
        snprintf(c->url, sizeof c->url, "http://%s/v1/files/bench/c%d/new%llu", server, c->index,
                 (unsigned long long)c->seq);
    curl_easy_setopt(c->easy, CURLOPT_URL, c->url);
    if (c->is_get) {
        curl_easy_setopt(c->easy, CURLOPT_UPLOAD, 0L);
        curl_easy_setopt(c->easy, CURLOPT_HTTPGET, 1L);
    } else {
        c->sent = 0;
        curl_easy_setopt(c->easy, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)bench_o.size);
    }
    c->seq++;
    c->started = bench_now();
    curl_multi_add_handle(multi, c->easy);
}

/* One slow request on stderr, stamped with the UTC wall clock of its end (as in node.log), so
 * stalls can be matched with what the nodes logged then. */
static void bench_log_slow(const struct bench_conn *c, double lat_us, long status)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "slow %02d:%02d:%02d.%03ld conn %d %.1f ms status %ld %s\n", tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, c->index, lat_us / 1e3, status, c->url);
}

static void bench_record(struct bench_stats *st, struct bench_conn *c, CURLcode code)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    bool ok = code == CURLE_OK && status >= 200 && status < 300;
    /* A GET of a path never written yet answers 404: count it as served. */
    if (c->is_get && code == CURLE_OK && status == 404) ok = true;
    if (!ok) {
        st->errors++;
        return;
    }
    st->ok++;
    st->bytes += bench_o.size;
    double lat_us = (bench_now() - c->started) * 1e6;
    if (st->n < BENCH_MAX_SAMPLES) st->lat_us[st->n++] = lat_us;
    if (bench_o.slow_ms > 0 && lat_us >= bench_o.slow_ms * 1e3) bench_log_slow(c, lat_us, status);
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_pct(const double *v, size_t n, double p)
{
    if (n == 0) return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1));
    return v[i];
}

/* The disk's own fsync latency, sampled beside the load (1 KiB write + fdatasync, 50/s). */
struct bench_fsync {
    pthread_t thread;
    volatile bool stop;
    double lat_us[100000];
    size_t n;
};

static void *bench_fsync_main(void *arg)
{
    struct bench_fsync *f = arg;
    char path[4200], buf[1024];
    memset(buf, 'f', sizeof buf);
    snprintf(path, sizeof path, "%s/raftbench-fsync.%d", bench_o.fsync_dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return NULL;
    while (!f->stop && f->n < sizeof f->lat_us / sizeof f->lat_us[0]) {
        double t0 = bench_now();
        if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fdatasync(fd) != 0) break;
        f->lat_us[f->n++] = (bench_now() - t0) * 1e6;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    unlink(path);
    return NULL;
}

static void bench_loop(CURLM *multi, struct bench_conn *conns, struct bench_stats *st)
{
    double end = bench_now() + bench_o.seconds;
    for (int i = 0; i < bench_o.conns; i++)
        bench_issue(multi, &conns[i]);
    int running = bench_o.conns;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct bench_conn *c = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            bench_record(st, c, msg->data.result);
            curl_multi_remove_handle(multi, c->easy);
            if (bench_now() < end) bench_issue(multi, c);
        }
        curl_multi_perform(multi, &running);
        if (running) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
}

static void bench_report(struct bench_stats *st, double elapsed, struct bench_fsync *f)
{
    qsort(st->lat_us, st->n, sizeof *st->lat_us, bench_cmp);
    qsort(f->lat_us, f->n, sizeof *f->lat_us, bench_cmp);
    double ops = (double)st->ok / elapsed, mbs = (double)st->bytes / elapsed / 1e6;
    const char *fmt = bench_o.json
                          ? "{\"conns\":%d,\"size\":%zu,\"get_percent\":%d,\"ops\":%.1f,"
                            "\"mb_s\":%.2f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
                            "\"p999_ms\":%.3f,\"errors\":%llu,\"fsync_p50_ms\":%.3f,"
                            "\"fsync_p99_ms\":%.3f}\n"
                          : "conns=%d size=%zu get%%=%d  %.0f ops/s  %.2f MB/s  p50 %.3f ms  "
                            "p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  errors %llu  "
                            "(disk fsync p50 %.3f ms p99 %.3f ms)\n";
    printf(fmt, bench_o.conns, bench_o.size, bench_o.get_percent, ops, mbs,
           bench_pct(st->lat_us, st->n, 50) / 1e3, bench_pct(st->lat_us, st->n, 90) / 1e3,
           bench_pct(st->lat_us, st->n, 99) / 1e3, bench_pct(st->lat_us, st->n, 99.9) / 1e3,
           (unsigned long long)st->errors, bench_pct(f->lat_us, f->n, 50) / 1e3,
           bench_pct(f->lat_us, f->n, 99) / 1e3);
}

static void bench_usage(void)
{
    fprintf(stderr,
            "usage: raftbench --server HOST:PORT[,HOST:PORT...] [-c CONNS] [-s BYTES] [-d SECS]\n"
            "                 [--paths N (0 = new path per request)] [--get PERCENT]\n"
            "                 [--fsync-dir DIR] [--json] [--slow MS (log slower requests)]\n");
}

static int bench_parse(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 'S'},    {"conns", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},      {"duration", required_argument, NULL, 'd'},
        {"paths", required_argument, NULL, 'p'},     {"get", required_argument, NULL, 'g'},
        {"fsync-dir", required_argument, NULL, 'f'}, {"json", no_argument, NULL, 'j'},
        {"slow", required_argument, NULL, 'w'},      {NULL, 0, NULL, 0}};
    bench_o = (struct bench_opts){
        .conns = 1, .size = 1024, .seconds = 10, .paths = 1024, .fsync_dir = "."};
    int ch;
    char *servers = NULL;
    while ((ch = getopt_long(argc, argv, "S:c:s:d:p:g:f:jw:", opts, NULL)) != -1) {
        switch (ch) {
        case 'S':
            servers = optarg;
            break;
        case 'c':
            bench_o.conns = atoi(optarg);
            break;
        case 's':
            bench_o.size = (size_t)atol(optarg);
            break;
        case 'd':
            bench_o.seconds = atof(optarg);
            break;
        case 'p':
            bench_o.paths = atoi(optarg);
            break;
        case 'g':
            bench_o.get_percent = atoi(optarg);
            break;
        case 'f':
            bench_o.fsync_dir = optarg;
            break;
        case 'j':
            bench_o.json = true;
            break;
        case 'w':
            bench_o.slow_ms = atof(optarg);
            break;
        default:
            return 2;
        }
    }
    if (!servers || bench_o.conns < 1 || bench_o.conns > 1024 || bench_o.seconds <= 0 ||
        bench_o.paths < 0 || bench_o.get_percent < 0 || bench_o.get_percent > 100)
        return 2;
    for (char *save = NULL, *s = strtok_r(servers, ",", &save);
         s && bench_o.n_servers < BENCH_MAX_SERVERS; s = strtok_r(NULL, ",", &save))
        bench_o.servers[bench_o.n_servers++] = s;
    return bench_o.n_servers ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (bench_parse(argc, argv)) {
        bench_usage();
        return 2;
    }
    uint8_t *body = malloc(bench_o.size ? bench_o.size : 1);
    struct bench_stats st = {.lat_us = malloc(BENCH_MAX_SAMPLES * sizeof(double))};
    struct bench_conn *conns = calloc((size_t)bench_o.conns, sizeof *conns);
    static struct bench_fsync fs;
    if (!body || !st.lat_us || !conns) return 1;
    for (size_t i = 0; i < bench_o.size; i++)
        body[i] = (uint8_t)('a' + i % 26);
    bench_body = body;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)bench_o.conns);
    /* No "Expect: 100-continue": it would add a round trip to every PUT over 1 KiB. */
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    for (int i = 0; i < bench_o.conns; i++) {
        conns[i].index = i;
        conns[i].easy = curl_easy_init();
        curl_easy_setopt(conns[i].easy, CURLOPT_PRIVATE, &conns[i]);
        curl_easy_setopt(conns[i].easy, CURLOPT_READFUNCTION, bench_read_cb);
        curl_easy_setopt(conns[i].easy, CURLOPT_READDATA, &conns[i]);
        curl_easy_setopt(conns[i].easy, CURLOPT_WRITEFUNCTION, bench_write_cb);
        curl_easy_setopt(conns[i].easy, CURLOPT_TIMEOUT, 30L);
        curl_easy_setopt(conns[i].easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(conns[i].easy, CURLOPT_HTTPHEADER, hdrs);
    }
    pthread_create(&fs.thread, NULL, bench_fsync_main, &fs);
    double t0 = bench_now();
    bench_loop(multi, conns, &st);
    double elapsed = bench_now() - t0;
    fs.stop = true;
    pthread_join(fs.thread, NULL);
    bench_report(&st, elapsed, &fs);
    for (int i = 0; i < bench_o.conns; i++)
        curl_easy_cleanup(conns[i].easy);
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    free(conns);
    free(st.lat_us);
    free(body);
    return st.ok ? 0 : 1;
}
