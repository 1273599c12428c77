/* recover.c — `raftnode --force-new-cluster`: disaster recovery when a cluster lost its
 * majority for good. Before the node starts, one CONFIG entry naming this node as the only
 * voter is appended to its own log (at last+1, in a new term, written through the store like
 * any entry), so the node elects itself alone and serves everything its log holds. This
 * overrides Raft's safety on purpose: entries only the lost majority had are gone, and entries
 * this node had but the cluster never committed become committed. The operator must wipe the
 * other nodes' data before they join again. Logged loudly. */
#include "recover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "log.h"
#include "node.h"
#include "storage.h"

/* The last entry's (index, term) of a loaded log (the snapshot point when it is empty). */
static void recover_last(const struct raft_boot *b, raft_index *index, raft_term *term)
{
    *index = b->snapshot_index;
    *term = b->snapshot_term;
    if (b->n_entries) {
        *index = b->entries[b->n_entries - 1].index;
        *term = b->entries[b->n_entries - 1].term;
    }
}

/* Describes the configuration the log ended with (for the log line), best effort. */
static void recover_describe_old(const struct raft_boot *b, char *out, size_t len)
{
    struct raft_configuration c;
    memset(&c, 0, sizeof c);
    if (b->snapshot_conf) c = *b->snapshot_conf;
    for (size_t i = 0; i < b->n_entries; i++) {
        const struct raft_entry *e = &b->entries[i];
        if (e->type == RAFT_ENTRY_CONFIG && e->data)
            raft_configuration_decode(e->data->data, e->data->len, &c);
    }
    size_t off = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < c.n && off < len; i++) {
        char id[CONFIG_ID_MAX], raft[CONFIG_ADDR_MAX], http[CONFIG_ADDR_MAX];
        if (node_member_parse(&c.members[i], id, sizeof id, raft, sizeof raft, http, sizeof http))
            snprintf(id, sizeof id, "?");
        int w = snprintf(out + off, len - off, "%s%s%s", off ? ", " : "", id,
                         c.members[i].voter ? "" : " (learner)");
        if (w < 0) break;
        off += (size_t)w;
    }
}

/* The new configuration's entry: this node alone, as a voter. */
static int recover_entry(const struct config_node *self, raft_index index, raft_term term,
                         struct raft_entry **out)
{
    struct raft_configuration conf;
    memset(&conf, 0, sizeof conf);
    int rv = node_member_info(self->id, self->raft.text, self->http.text, &conf.members[0]);
    if (rv) return rv;
    conf.members[0].voter = true;
    conf.n = 1;
    struct raft_entry *e = calloc(1, sizeof *e);
    if (!e) return ERR_NOMEM;
    rv = raft_configuration_encode(&conf, &e->data);
    if (rv) {
        free(e);
        return rv;
    }
    e->index = index;
    e->term = term;
    e->type = RAFT_ENTRY_CONFIG;
    *out = e;
    return 0;
}

/* Appends the entry and a new term (no vote) in one durable write. */
static int recover_write(struct store *s, const struct config_node *self, raft_index commit,
                         raft_index index, raft_term term, char *err, size_t err_len)
{
    struct store_write w;
    memset(&w, 0, sizeof w);
    int rv = recover_entry(self, index, term, &w.entries);
    if (rv) {
        snprintf(err, err_len, "building the configuration entry: %s", err_str(rv));
        return rv;
    }
    w.n_entries = 1;
    w.seq = 1;
    w.hardstate_changed = true;
    w.term = term;
    w.vote = 0;
    w.commit = commit;
    rv = store_write_sync(s, &w); /* takes the entries array and its blob */
    if (rv) snprintf(err, err_len, "writing the new configuration: %s", store_errmsg(s));
    return rv;
}

static int recover_store(struct store *s, const struct config_node *self, char *err, size_t err_len)
{
    struct raft_boot b;
    int rv = store_load(s, &b);
    if (rv) {
        snprintf(err, err_len, "loading the raft log: %s", err_str(rv));
        return rv;
    }
    raft_index last, commit = b.commit;
    raft_term last_term, term = b.term;
    recover_last(&b, &last, &last_term);
    char old[1024];
    recover_describe_old(&b, old, sizeof old);
    store_boot_free(&b);
    if (last == 0) {
        snprintf(err, err_len,
                 "this node has no Raft log: nothing to recover (use --bootstrap "
                 "for a new cluster)");
        return ERR_INVALID;
    }
    if (last_term > term) term = last_term;
    term++; /* a term no leader of the old cluster ever used for this index */
    LOG_WARN("FORCE NEW CLUSTER: the configuration [%s] is replaced by [%s] alone, as the only "
             "voter: entry %llu in term %llu (log had %llu entries, commit %llu)",
             old, self->id, (unsigned long long)(last + 1), (unsigned long long)term,
             (unsigned long long)last, (unsigned long long)commit);
    LOG_WARN("FORCE NEW CLUSTER: writes only the lost nodes had are gone; wipe the other nodes' "
             "data directories before they join again");
    return recover_write(s, self, commit, last + 1, term, err, err_len);
}

int node_force_new_cluster(const char *config_path, const char *id, char *err, size_t err_len)
{
    static struct config cfg;
    int rv = config_load(config_path, &cfg, err, err_len);
    if (rv) return rv;
    const struct config_node *self = config_find(&cfg, id);
    if (!self) {
        snprintf(err, err_len, "%s: no node with id \"%s\"", config_path, id);
        return ERR_INVALID;
    }
    char dir[4200];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s/%s/raft", cfg.data_dir, id);
    if (stat(dir, &sb) != 0) {
        snprintf(err, err_len, "%s: %s: no Raft state to recover", dir, strerror(errno));
        return ERR_INVALID;
    }
    struct store *s = NULL;
    rv = store_open(dir, &s, err, err_len);
    if (rv == 0) rv = recover_store(s, self, err, err_len);
    store_close(s);
    return rv;
}
