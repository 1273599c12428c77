/* cmds.c — raftctl's commands (INTERFACES.md): argument checks, one HTTP exchange each, readable
 * output (or the server's JSON with --json). Files are streamed, never loaded whole. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"

#define CLI_TARGET_MAX 16384

/* Parses r's JSON body; prints an error and returns NULL when it is not JSON. */
static json_t *cli_json(const struct cli_resp *r)
{
    json_error_t jerr;
    json_t *j = r->data ? json_loads(r->data, 0, &jerr) : NULL;
    if (!j) fprintf(stderr, "raftctl: %s answered something that is not JSON\n", r->node);
    return j;
}

static void cli_print_json(const struct cli_resp *r)
{
    fputs(r->data ? r->data : "{}\n", stdout);
    if (r->len == 0 || r->data[r->len - 1] != '\n') putchar('\n');
}

static bool cli_file_target(const char *path, char *target)
{
    strcpy(target, "/v1/files/");
    if (!cli_encode_path(path, target, CLI_TARGET_MAX)) {
        fprintf(stderr, "raftctl: path too long\n");
        return false;
    }
    return true;
}

/* Opens the upload source: a named file, or stdin for "-" or no argument. */
static int cli_open_upload(const char *name, struct cli_upload *up)
{
    memset(up, 0, sizeof *up);
    up->in = name && strcmp(name, "-") ? fopen(name, "rb") : stdin;
    if (!up->in) {
        fprintf(stderr, "raftctl: cannot open %s: %s\n", name, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    struct stat st;
    if (fstat(fileno(up->in), &st) == 0 && S_ISREG(st.st_mode)) {
        up->size = st.st_size;
        up->seekable = true;
    } else {
        up->size = -1; /* a pipe or device: sent chunked, cannot be retried once read */
    }
    return CLI_EXIT_OK;
}

int cli_cmd_put(struct cli *c, int argc, char **argv)
{
    if (argc < 2 || argc > 3) return cli_usage("put needs PATH and an optional FILE (or -)");
    if (c->check_only) return CLI_EXIT_OK;
    char target[CLI_TARGET_MAX];
    struct cli_upload up;
    if (!cli_file_target(argv[1], target)) return CLI_EXIT_FAILED;
    int rv = cli_open_upload(argc == 3 ? argv[2] : NULL, &up);
    if (rv) return rv;
    struct cli_resp r = {0};
    int hrv = cli_http(c, "PUT", target, NULL, &up, &r);
    if (up.in != stdin) fclose(up.in);
    if (hrv)
        rv = CLI_EXIT_FAILED;
    else if (r.status != 200 && r.status != 201)
        rv = cli_fail_resp("put", &r);
    else if (c->json)
        cli_print_json(&r);
    else {
        json_t *j = cli_json(&r);
        rv = j ? CLI_EXIT_OK : CLI_EXIT_FAILED;
        if (j)
            printf("%s %s: %lld bytes, sha256 %s, index %lld\n",
                   r.status == 201 ? "created" : "replaced",
                   json_string_value(json_object_get(j, "path")),
                   (long long)json_integer_value(json_object_get(j, "size")),
                   json_string_value(json_object_get(j, "sha256")),
                   (long long)json_integer_value(json_object_get(j, "index")));
        json_decref(j);
    }
    cli_resp_free(&r);
    return rv;
}

/* Downloads into out (a temporary file renamed over out on success) or stdout. */
int cli_cmd_get(struct cli *c, int argc, char **argv)
{
    const char *path = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o")) {
            if (++i >= argc) return cli_usage("-o needs a FILE");
            out = argv[i];
        } else if (!path) {
            path = argv[i];
        } else {
            return cli_usage("get takes one PATH");
        }
    }
    if (!path) return cli_usage("get needs a PATH");
    if (c->check_only) return CLI_EXIT_OK;
    char target[CLI_TARGET_MAX], tmp[4200];
    if (!cli_file_target(path, target)) return CLI_EXIT_FAILED;
    struct cli_resp r = {.sink = stdout};
    if (out && strcmp(out, "-")) {
        snprintf(tmp, sizeof tmp, "%s.raftctl-tmp", out);
        r.sink = fopen(tmp, "wb");
        if (!r.sink) {
            fprintf(stderr, "raftctl: cannot write %s: %s\n", tmp, strerror(errno));
            return CLI_EXIT_FAILED;
        }
    }
    int rv = CLI_EXIT_OK;
    if (cli_http(c, "GET", target, NULL, NULL, &r))
        rv = CLI_EXIT_FAILED;
    else if (r.status != 200)
        rv = cli_fail_resp("get", &r);
    if (fflush(r.sink) != 0 && rv == CLI_EXIT_OK) {
        fprintf(stderr, "raftctl: cannot write the output: %s\n", strerror(errno));
        rv = CLI_EXIT_FAILED;
    }
    if (r.sink != stdout) {
        if (fclose(r.sink) != 0 && rv == CLI_EXIT_OK) rv = CLI_EXIT_FAILED;
        if (rv == CLI_EXIT_OK && rename(tmp, out) != 0) {
            fprintf(stderr, "raftctl: cannot rename %s: %s\n", tmp, strerror(errno));
            rv = CLI_EXIT_FAILED;
        }
        if (rv != CLI_EXIT_OK) unlink(tmp);
    }
    cli_resp_free(&r);
    return rv;
}

int cli_cmd_rm(struct cli *c, int argc, char **argv)
{
    if (argc != 2) return cli_usage("rm needs exactly one PATH");
    if (c->check_only) return CLI_EXIT_OK;
    char target[CLI_TARGET_MAX];
    if (!cli_file_target(argv[1], target)) return CLI_EXIT_FAILED;
    struct cli_resp r = {0};
    int rv = CLI_EXIT_OK;
    if (cli_http(c, "DELETE", target, NULL, NULL, &r))
        rv = CLI_EXIT_FAILED;
    else if (r.status != 204 && r.status != 200)
        rv = cli_fail_resp("rm", &r);
    else if (c->json) {
        json_t *j = json_pack("{s:s, s:b}", "path", argv[1], "removed", 1);
        json_dumpf(j, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(j);
    } else {
        printf("removed %s\n", argv[1]);
    }
    cli_resp_free(&r);
    return rv;
}

static void cli_print_files(json_t *files)
{
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        printf("%12lld  %8lld  %.12s  %s\n",
               (long long)json_integer_value(json_object_get(f, "size")),
               (long long)json_integer_value(json_object_get(f, "index")), sha ? sha : "-",
               json_string_value(json_object_get(f, "path")));
    }
}

int cli_cmd_ls(struct cli *c, int argc, char **argv)
{
    if (argc > 2) return cli_usage("ls takes at most one PREFIX");
    if (c->check_only) return CLI_EXIT_OK;
    char target[CLI_TARGET_MAX] = "/v1/files?prefix=";
    if (argc == 2 && !cli_encode_path(argv[1], target, sizeof target)) {
        fprintf(stderr, "raftctl: prefix too long\n");
        return CLI_EXIT_FAILED;
    }
    struct cli_resp r = {0};
    int rv = CLI_EXIT_OK;
    if (cli_http(c, "GET", target, NULL, NULL, &r))
        rv = CLI_EXIT_FAILED;
    else if (r.status != 200)
        rv = cli_fail_resp("ls", &r);
    else if (c->json)
        cli_print_json(&r);
    else {
        json_t *j = cli_json(&r);
        json_t *files = json_object_get(j, "files");
        rv = json_is_array(files) ? CLI_EXIT_OK : CLI_EXIT_FAILED;
        if (files) cli_print_files(files);
        json_decref(j);
    }
    cli_resp_free(&r);
    return rv;
}
