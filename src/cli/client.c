/* client.c — raftctl's HTTP client on libcurl: tries the nodes in order, skips unreachable
 * ones, retries 503 (no leader yet) on the others for a few seconds. Streams bodies both ways. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"

#define CLI_DATA_MAX (256u << 20) /* JSON answers (ls of a big tree) */

void cli_resp_free(struct cli_resp *r)
{
    free(r->data);
    r->data = NULL;
    r->len = 0;
}

bool cli_encode_path(const char *path, char *out, size_t out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(out);
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        bool keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("-._~/", *p);
        if (n + 4 > out_len) return false;
        if (keep) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return true;
}

static double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct cli_xfer {
    struct cli_resp *r;
    CURL *curl;
    bool failed_sink; /* writing the downloaded bytes failed */
};

static size_t cli_write_cb(char *p, size_t sz, size_t n, void *ud)
{
    struct cli_xfer *x = ud;
    size_t len = sz * n;
    long st = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &st);
    if (x->r->sink && st >= 200 && st < 300) {
        x->r->sink_used = true;
        if (fwrite(p, 1, len, x->r->sink) != len) {
            x->failed_sink = true;
            return 0;
        }
        return len;
    }
    if (x->r->len + len > CLI_DATA_MAX) return 0;
    char *nd = realloc(x->r->data, x->r->len + len + 1);
    if (!nd) return 0;
    memcpy(nd + x->r->len, p, len);
    x->r->data = nd;
    x->r->len += len;
    nd[x->r->len] = '\0';
    return len;
}

static size_t cli_read_cb(char *buf, size_t sz, size_t n, void *ud)
{
    struct cli_upload *up = ud;
    size_t got = fread(buf, 1, sz * n, up->in);
    if (got) up->consumed = true;
    if (got == 0 && ferror(up->in)) return CURL_READFUNC_ABORT;
    return got;
}

static void cli_setup_upload(CURL *curl, struct cli_upload *up)
{
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, cli_read_cb);
    curl_easy_setopt(curl, CURLOPT_READDATA, up);
    if (up->size >= 0) curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up->size);
}

/* One attempt. Returns the curl result; r->status is set when an answer arrived. */
static CURLcode cli_perform(struct cli *c, size_t node, const char *method, const char *target,
                            const char *json_body, struct cli_upload *up, struct cli_resp *r,
                            long timeout_ms)
{
    char url[16384];
    snprintf(url, sizeof url, "http://%s%s", c->servers[node], target);
    CURL *curl = curl_easy_init();
    if (!curl) return CURLE_OUT_OF_MEMORY;
    struct cli_xfer x = {.r = r, .curl = curl};
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    /* A stalled transfer (no byte for 30 s) fails instead of hanging forever. */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 30L);
    if (timeout_ms > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cli_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
    if (up) {
        cli_setup_upload(curl, up);
    } else if (json_body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body);
    }
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    r->status = 0;
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    if (x.failed_sink) rc = CURLE_WRITE_ERROR;
    snprintf(r->node, sizeof r->node, "%s", c->servers[node]);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    return rc;
}

int cli_http_one(struct cli *c, size_t node, const char *method, const char *target,
                 struct cli_resp *r, long timeout_ms)
{
    cli_resp_free(r);
    CURLcode rc = cli_perform(c, node, method, target, NULL, NULL, r, timeout_ms);
    return rc == CURLE_OK ? 0 : ERR_IO;
}

/* Whether another node may be tried after this outcome. */
static bool cli_can_retry(struct cli_upload *up, const struct cli_resp *r)
{
    if (r->sink_used) return false; /* part of a download was written out already */
    if (!up) return true;
    if (!up->consumed) return true;
    if (!up->seekable || fseeko(up->in, 0, SEEK_SET) != 0) return false;
    up->consumed = false;
    return true;
}

int cli_http(struct cli *c, const char *method, const char *target, const char *json_body,
             struct cli_upload *up, struct cli_resp *r)
{
    double deadline = cli_now() + CLI_RETRY_503_S;
    CURLcode last = CURLE_OK;
    for (int round = 0;; round++) {
        bool any_503 = false;
        for (size_t k = 0; k < c->n_servers; k++) {
            size_t node = (c->cur + k) % c->n_servers;
            cli_resp_free(r);
            last = cli_perform(c, node, method, target, json_body, up, r, 0);
            if (last == CURLE_WRITE_ERROR) {
                fprintf(stderr, "raftctl: cannot write the output: %s\n", strerror(errno));
                return ERR_IO;
            }
            if (last == CURLE_OK && r->status != 503) {
                c->cur = node;
                return 0;
            }
            any_503 |= last == CURLE_OK;
            if (!cli_can_retry(up, r)) return last == CURLE_OK ? 0 : ERR_IO;
        }
        if (!any_503 || cli_now() >= deadline) break;
        usleep(200000u + 100000u * (unsigned)(round < 5 ? round : 5));
    }
    if (last == CURLE_OK) return 0; /* the 503 itself is the answer */
    fprintf(stderr, "raftctl: cannot reach any node (%zu tried, last %s): %s\n", c->n_servers,
            r->node, curl_easy_strerror(last));
    return ERR_IO;
}

int cli_fail_resp(const char *what, const struct cli_resp *r)
{
    json_error_t jerr;
    json_t *j = r->data ? json_loads(r->data, 0, &jerr) : NULL;
    const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
    const char *code = j ? json_string_value(json_object_get(j, "code")) : NULL;
    if (msg)
        fprintf(stderr, "raftctl: %s: %s (%s, HTTP %ld from %s)\n", what, msg,
                code ? code : "error", r->status, r->node);
    else
        fprintf(stderr, "raftctl: %s: HTTP %ld from %s\n", what, r->status, r->node);
    json_decref(j);
    return CLI_EXIT_FAILED;
}
