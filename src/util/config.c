/* config.c — loads and validates the cluster config (jansson). Every rule is checked before
 * the caller starts anything, so a bad file never half-starts a cluster. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int config_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int config_fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return ERR_INVALID;
}

int config_parse_addr(const char *text, struct config_addr *out)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    const char *colon = strrchr(text, ':');
    if (len == 0 || len >= CONFIG_ADDR_MAX || !colon || colon == text) return ERR_INVALID;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5) return ERR_INVALID;
    unsigned long port = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p)) return ERR_INVALID;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535) return ERR_INVALID;
    size_t host_len = (size_t)(colon - text);
    for (size_t i = 0; i < host_len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == '_')) return ERR_INVALID;
    }
    memcpy(out->host, text, host_len);
    memcpy(out->text, text, len);
    out->port = (uint16_t)port;
    return 0;
}

static int config_valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= CONFIG_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!(isalnum(c) || c == '-' || c == '_')) return 0;
    }
    return 1;
}

raft_id config_raft_id(const char *id)
{
    unsigned char md[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(md, (const unsigned char *)id, strlen(id));
    raft_id v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    return v ? v : 1;
}

/* Reads a string member into dst (dst_len bytes). */
static int config_get_string(json_t *obj, const char *key, char *dst, size_t dst_len,
                             const char *where, char *err, size_t err_len)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return config_fail(err, err_len, "%s: missing key \"%s\"", where, key);
    if (!json_is_string(v))
        return config_fail(err, err_len, "%s: \"%s\" must be a string", where, key);
    const char *s = json_string_value(v);
    if (strlen(s) >= dst_len || strlen(s) != json_string_length(v))
        return config_fail(err, err_len, "%s: \"%s\" is too long or holds NUL", where, key);
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int config_get_uint(json_t *v, const char *key, unsigned min, unsigned max, unsigned *out,
                           char *err, size_t err_len)
{
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        json_integer_value(v) > (json_int_t)max)
        return config_fail(err, err_len, "\"%s\" must be an integer in [%u, %u]", key, min, max);
    *out = (unsigned)json_integer_value(v);
    return 0;
}

/* A [min, max] pair of integers (milliseconds). */
static int config_get_range(json_t *v, const char *key, unsigned lo, unsigned hi, unsigned *min_out,
                            unsigned *max_out, char *err, size_t err_len)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return config_fail(err, err_len, "\"%s\" must be [min, max]", key);
    int rv = config_get_uint(json_array_get(v, 0), key, lo, hi, min_out, err, err_len);
    if (rv == 0) rv = config_get_uint(json_array_get(v, 1), key, lo, hi, max_out, err, err_len);
    if (rv == 0 && *min_out > *max_out)
        return config_fail(err, err_len, "\"%s\": min %u > max %u", key, *min_out, *max_out);
    return rv;
}

static int config_parse_node(json_t *jn, size_t i, struct config_node *n, char *err, size_t err_len)
{
    char where[32], raft[CONFIG_ADDR_MAX], http[CONFIG_ADDR_MAX];
    snprintf(where, sizeof where, "nodes[%zu]", i);
    if (!json_is_object(jn)) return config_fail(err, err_len, "%s must be an object", where);
    const char *key;
    json_t *v;
    json_object_foreach(jn, key, v)
    {
        if (strcmp(key, "id") && strcmp(key, "raft") && strcmp(key, "http") &&
            strcmp(key, "raft_listen"))
            return config_fail(err, err_len, "%s: unknown key \"%s\"", where, key);
    }
    int rv = config_get_string(jn, "id", n->id, sizeof n->id, where, err, err_len);
    if (rv == 0 && !config_valid_id(n->id))
        return config_fail(err, err_len, "%s: id \"%s\" must be 1-63 of [A-Za-z0-9_-]", where,
                           n->id);
    if (rv == 0) rv = config_get_string(jn, "raft", raft, sizeof raft, where, err, err_len);
    if (rv == 0) rv = config_get_string(jn, "http", http, sizeof http, where, err, err_len);
    if (rv) return rv;
    if (config_parse_addr(raft, &n->raft))
        return config_fail(err, err_len, "%s: bad raft address \"%s\" (want host:port)", where,
                           raft);
    if (config_parse_addr(http, &n->http))
        return config_fail(err, err_len, "%s: bad http address \"%s\" (want host:port)", where,
                           http);
    if (json_object_get(jn, "raft_listen")) {
        char listen[CONFIG_ADDR_MAX];
        rv = config_get_string(jn, "raft_listen", listen, sizeof listen, where, err, err_len);
        if (rv) return rv;
        if (config_parse_addr(listen, &n->raft_listen))
            return config_fail(err, err_len, "%s: bad raft_listen address \"%s\" (want host:port)",
                               where, listen);
        n->has_raft_listen = 1;
    }
    return 0;
}

/* Ids and addresses must be unique across the whole cluster. */
static int config_check_unique(const struct config *c, char *err, size_t err_len)
{
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct config_node *a = &c->nodes[i];
        if (strcmp(a->raft.text, a->http.text) == 0)
            return config_fail(err, err_len, "node %s: raft and http addresses are the same",
                               a->id);
        for (size_t j = 0; j < i; j++) {
            const struct config_node *b = &c->nodes[j];
            if (strcmp(a->id, b->id) == 0)
                return config_fail(err, err_len, "duplicate node id \"%s\"", a->id);
            const char *dup = NULL;
            if (!strcmp(a->raft.text, b->raft.text) || !strcmp(a->raft.text, b->http.text))
                dup = a->raft.text;
            else if (!strcmp(a->http.text, b->http.text) || !strcmp(a->http.text, b->raft.text))
                dup = a->http.text;
            if (dup)
                return config_fail(err, err_len, "duplicate address \"%s\" (nodes %s and %s)", dup,
                                   b->id, a->id);
        }
    }
    return 0;
}

static void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    c->tick_ms = 10;
    c->heartbeat_ms = 50;
    c->election_timeout_min_ms = 150;
    c->election_timeout_max_ms = 300;
    c->max_body_bytes = 64ull << 20;
    c->restart_backoff_min_ms = 100;
    c->restart_backoff_max_ms = 5000;
    c->restart_reset_ms = 30000;
    c->spare_inodes = 1024;
    c->snapshot_entries = 10000;
    c->snapshot_bytes = 64ull << 20;
    c->snapshot_trailing = 5000;
}

/* A non-negative integer in [min, max] that may exceed 32 bits. */
static int config_get_u64(json_t *v, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                          char *err, size_t err_len)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max)
        return config_fail(err, err_len, "\"%s\" must be an integer in [%llu, %llu]", key,
                           (unsigned long long)min, (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int config_parse_nodes(json_t *nodes, struct config *c, char *err, size_t err_len)
{
    if (!json_is_array(nodes) || json_array_size(nodes) == 0)
        return config_fail(err, err_len, "\"nodes\" must be a non-empty array");
    if (json_array_size(nodes) > RAFT_MAX_NODES)
        return config_fail(err, err_len, "\"nodes\": at most %d nodes", RAFT_MAX_NODES);
    c->n_nodes = json_array_size(nodes);
    for (size_t i = 0; i < c->n_nodes; i++) {
        int rv = config_parse_node(json_array_get(nodes, i), i, &c->nodes[i], err, err_len);
        if (rv) return rv;
    }
    return config_check_unique(c, err, err_len);
}

static int config_parse_key(const char *key, json_t *v, struct config *c, char *err, size_t err_len)
{
    unsigned u = 0;
    int rv;
    if (!strcmp(key, "cluster")) {
        if (!json_is_string(v) || !config_valid_id(json_string_value(v)))
            return config_fail(err, err_len, "\"cluster\" must be 1-63 of [A-Za-z0-9_-]");
        snprintf(c->cluster, sizeof c->cluster, "%s", json_string_value(v));
    } else if (!strcmp(key, "data_dir")) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= sizeof c->data_dir ||
            strlen(json_string_value(v)) != json_string_length(v))
            return config_fail(err, err_len, "\"data_dir\" must be a non-empty path");
        snprintf(c->data_dir, sizeof c->data_dir, "%s", json_string_value(v));
    } else if (!strcmp(key, "nodes")) {
        return config_parse_nodes(v, c, err, err_len);
    } else if (!strcmp(key, "tick_ms")) {
        return config_get_uint(v, key, 1, 1000, &c->tick_ms, err, err_len);
    } else if (!strcmp(key, "heartbeat_ms")) {
        return config_get_uint(v, key, 1, 60000, &c->heartbeat_ms, err, err_len);
    } else if (!strcmp(key, "election_timeout_ms")) {
        return config_get_range(v, key, 1, 600000, &c->election_timeout_min_ms,
                                &c->election_timeout_max_ms, err, err_len);
    } else if (!strcmp(key, "restart_backoff_ms")) {
        return config_get_range(v, key, 1, 3600000, &c->restart_backoff_min_ms,
                                &c->restart_backoff_max_ms, err, err_len);
    } else if (!strcmp(key, "spare_inodes")) {
        return config_get_uint(v, key, 0, 4160, &c->spare_inodes, err, err_len);
    } else if (!strcmp(key, "snapshot_entries")) {
        return config_get_u64(v, key, 16, 1000000000, &c->snapshot_entries, err, err_len);
    } else if (!strcmp(key, "snapshot_bytes")) {
        return config_get_u64(v, key, 1ull << 20, 64ull << 30, &c->snapshot_bytes, err, err_len);
    } else if (!strcmp(key, "snapshot_trailing")) {
        return config_get_u64(v, key, 0, 1000000000, &c->snapshot_trailing, err, err_len);
    } else if (!strcmp(key, "restart_reset_ms")) {
        return config_get_uint(v, key, 1, 86400000, &c->restart_reset_ms, err, err_len);
    } else if (!strcmp(key, "max_body_bytes")) {
        rv = config_get_uint(v, key, 1, 1024u << 20, &u, err, err_len);
        c->max_body_bytes = u;
        return rv;
    } else {
        return config_fail(err, err_len, "unknown key \"%s\"", key);
    }
    return 0;
}

/* Cross-key rules: timing must leave room for heartbeats inside an election timeout. */
static int config_check_timing(const struct config *c, char *err, size_t err_len)
{
    if (c->heartbeat_ms < c->tick_ms)
        return config_fail(err, err_len, "heartbeat_ms (%u) must be >= tick_ms (%u)",
                           c->heartbeat_ms, c->tick_ms);
    if (c->election_timeout_min_ms < 2 * c->heartbeat_ms)
        return config_fail(err, err_len,
                           "election_timeout_ms min (%u) must be >= 2 x heartbeat_ms (%u)",
                           c->election_timeout_min_ms, c->heartbeat_ms);
    return 0;
}

static int config_parse_root(json_t *root, struct config *c, char *err, size_t err_len)
{
    if (!json_is_object(root))
        return config_fail(err, err_len, "the top level must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        int rv = config_parse_key(key, v, c, err, err_len);
        if (rv) return rv;
    }
    if (!c->cluster[0]) return config_fail(err, err_len, "missing key \"cluster\"");
    if (!c->data_dir[0]) return config_fail(err, err_len, "missing key \"data_dir\"");
    if (c->n_nodes == 0) return config_fail(err, err_len, "missing key \"nodes\"");
    return config_check_timing(c, err, err_len);
}

int config_parse(const char *text, size_t len, struct config *out, char *err, size_t err_len)
{
    config_defaults(out);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return config_fail(err, err_len, "invalid JSON at line %d, column %d: %s", jerr.line,
                           jerr.column, jerr.text);
    int rv = config_parse_root(root, out, err, err_len);
    json_decref(root);
    return rv;
}

int config_load(const char *path, struct config *out, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        config_fail(err, err_len, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= (1u << 20)) {
                free(buf);
                fclose(f);
                return config_fail(err, err_len, "%s: larger than 1 MiB", path);
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return ERR_NOMEM;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    int io_err = ferror(f) ? errno : 0;
    fclose(f);
    if (io_err) {
        free(buf);
        config_fail(err, err_len, "%s: cannot read: %s", path, strerror(io_err));
        return ERR_IO;
    }
    char msg[512] = "";
    int rv = config_parse(buf, len, out, msg, sizeof msg);
    free(buf);
    if (rv) config_fail(err, err_len, "%s: %s", path, msg);
    return rv;
}

const struct config_node *config_find(const struct config *c, const char *id)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (strcmp(c->nodes[i].id, id) == 0) return &c->nodes[i];
    return NULL;
}
