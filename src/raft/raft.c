/* raft.c — the core's public entry points: lifecycle, inputs, status and invariants.
 * Pure: no clock, files, sockets, rand() or global state; randomness comes from cfg.seed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

void raft_tracef(struct raft *r, const char *fmt, ...)
{
    if (!r->cfg.trace) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->cfg.trace(r->cfg.ctx, line);
}

void raft_fail(struct raft *r, const char *why)
{
    if (!r->failed) raft_tracef(r, "failed: %s", why);
    r->failed = true;
}

/* splitmix64: a tiny seeded generator, enough for timeouts; not a hash function. */
uint64_t raft_rand(struct raft *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

const char *raft_role_str(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRECANDIDATE:
        return "precandidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "unknown";
}

static int raft_config_defaults(struct raft_config *c)
{
    if (c->id == 0) return ERR_INVALID;
    if (!c->heartbeat_ticks) c->heartbeat_ticks = 5;
    if (!c->election_ticks_min) c->election_ticks_min = 15;
    if (!c->election_ticks_max) c->election_ticks_max = c->election_ticks_min * 2;
    if (c->election_ticks_min > c->election_ticks_max ||
        c->heartbeat_ticks >= c->election_ticks_min)
        return ERR_INVALID;
    if (!c->snapshot_timeout_ticks)
        c->snapshot_timeout_ticks = RAFT_SNAPSHOT_TIMEOUT_ELECTIONS * c->election_ticks_max;
    if (!c->max_append_entries) c->max_append_entries = 64;
    if (!c->max_append_bytes) c->max_append_bytes = 1u << 20;
    if (!c->max_inflight) c->max_inflight = 8;
    if (c->max_inflight > RAFT__INFLIGHT_MAX) c->max_inflight = RAFT__INFLIGHT_MAX;
    return 0;
}

static int raft_load_boot(struct raft *r, const struct raft_boot *b)
{
    /* The durable log's shape is checked before it is trusted. */
    /* An installed snapshot may be durable before the term it came with: a crash between the
     * state machine's install and the core's hardstate write. Terms only grow: adopt it. */
    raft_term term = b->term, vote = b->vote;
    if (b->snapshot_index > 0 && b->snapshot_term > term) {
        term = b->snapshot_term;
        vote = 0;
        r->hs_dirty = true;
    }
    if (!raft_entries_well_formed(b->entries, b->n_entries, b->snapshot_index + 1, b->snapshot_term,
                                  term))
        return ERR_CORRUPT;
    raft_log_init(&r->log, b->snapshot_index, b->snapshot_term);
    if (b->snapshot_index > 0) {
        if (!b->snapshot_conf || b->snapshot_term == 0 ||
            raft_configuration_encode(b->snapshot_conf, &r->snap_conf_blob))
            return ERR_CORRUPT;
        r->snap_conf = *b->snapshot_conf;
        r->snap_conf_index = b->snapshot_index;
        r->conf = r->snap_conf;
        r->conf_index = b->snapshot_index;
    }
    r->term = term;
    r->vote = vote;
    r->durable_term = b->term;
    r->durable_vote = b->vote;
    for (size_t i = 0; i < b->n_entries; i++) {
        const struct raft_entry *e = &b->entries[i];
        int rv = raft_append_entry(r, e->term, e->type, raft_blob_ref(e->data),
                                   e->type == RAFT_ENTRY_NORMAL && !e->data);
        if (rv) return rv;
    }
    raft_index last = raft_log_last(&r->log);
    r->stable = last;
    r->persist_from = last + 1;
    if (b->applied > last) return ERR_CORRUPT; /* applied entries are always durable first */
    r->commit = b->commit < last ? b->commit : last;
    if (r->commit < b->applied) r->commit = b->applied;
    if (r->commit < b->snapshot_index) r->commit = b->snapshot_index;
    r->applied = b->applied > b->snapshot_index ? b->applied : b->snapshot_index;
    r->log.evict_next = b->snapshot_index + 1;
    return 0;
}

int raft_new(const struct raft_config *cfg, const struct raft_boot *boot, struct raft **out)
{
    if (!cfg || !out) return ERR_INVALID;
    struct raft *r = calloc(1, sizeof *r);
    if (!r) return ERR_NOMEM;
    r->cfg = *cfg;
    int rv = raft_config_defaults(&r->cfg);
    if (rv) goto err;
    r->rng = cfg->seed ^ (cfg->id * 0x2545f4914f6cdd1dull);
    for (uint32_t i = 0; i < RAFT__PROGRESS_MAX; i++) {
        r->prs[i].inflight = calloc(r->cfg.max_inflight, sizeof(raft_index));
        if (!r->prs[i].inflight) {
            rv = ERR_NOMEM;
            goto err;
        }
    }
    struct raft_boot empty;
    memset(&empty, 0, sizeof empty);
    raft_log_init(&r->log, 0, 0);
    r->persist_from = 1;
    rv = raft_load_boot(r, boot ? boot : &empty);
    if (rv) goto err;
    r->role = RAFT_FOLLOWER;
    r->rep_role = RAFT_FOLLOWER;
    raft_election_reset_timer(r);
    *out = r;
    return 0;
err:
    raft_free(r);
    return rv;
}

static void raft_handed_release(struct raft *r)
{
    struct raft_handed *h = &r->h;
    for (size_t i = 0; i < h->n_entries; i++)
        raft_blob_unref(h->entries[i].data);
    free(h->entries);
    for (size_t i = 0; i < h->n_committed; i++)
        raft_blob_unref(h->committed[i].data);
    free(h->committed);
    free(h->reads);
    raft_blob_unref(h->snap_conf_blob);
    raft_msgbuf_free(&h->msgs);
    raft_msgbuf_free(&h->after);
    memset(h, 0, sizeof *h);
    r->handed_out = false;
}

void raft_free(struct raft *r)
{
    if (!r) return;
    raft_handed_release(r);
    raft_log_close(&r->log);
    raft_blob_unref(r->snap_conf_blob);
    for (uint32_t i = 0; i < RAFT__PROGRESS_MAX; i++)
        free(r->prs[i].inflight);
    raft_msgbuf_free(&r->msgs);
    raft_msgbuf_free(&r->after);
    free(r->read_out);
    free(r->reads);
    free(r->writes);
    free(r);
}

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
    (void)rd;
    raft_handed_release(r);
    raft_index upto = r->applied < r->stable ? r->applied : r->stable;
    if (r->cfg.fetch) raft_log_evict(&r->log, upto, r->cfg.cache_bytes_max);
}

int raft_bootstrap(struct raft *r, const struct raft_configuration *conf)
{
    if (raft_log_last(&r->log) != 0 || r->term != 0 || r->log.offset != 0) return ERR_EXISTS;
    const struct raft_member *self = raft_configuration_find(conf, r->cfg.id);
    if (!self || !self->voter) return ERR_INVALID;
    struct raft_blob *b = NULL;
    int rv = raft_configuration_encode(conf, &b);
    if (rv) return rv;
    r->term = 1;
    r->vote = 0;
    r->hs_dirty = true;
    rv = raft_append_entry(r, 1, RAFT_ENTRY_CONFIG, b, false);
    if (rv) return rv;
    /* The only log in the cluster: the initial configuration is committed by definition. */
    r->commit = 1;
    raft_tracef(r, "bootstrapped with %u members", conf->n);
    return 0;
}

void raft_tick(struct raft *r)
{
    if (r->failed) return;
    if (r->role == RAFT_LEADER)
        raft_tick_leader(r);
    else
        raft_tick_election(r);
}

int raft_propose(struct raft *r, struct raft_blob *data, raft_index *index_out, raft_term *term_out)
{
    int rv = 0;
    if (r->failed)
        rv = ERR_FAILED;
    else if (r->role != RAFT_LEADER)
        rv = ERR_NOTLEADER;
    else if (!raft_configuration_find(&r->conf, r->cfg.id))
        rv = ERR_BUSY; /* removing itself: the next leader takes the write */
    else if (r->transferee)
        rv = ERR_BUSY; /* handing leadership over: the next leader takes the write */
    if (rv) {
        raft_blob_unref(data);
        return rv;
    }
    rv = raft_append_entry(r, r->term, RAFT_ENTRY_NORMAL, data, false);
    if (rv) return rv;
    if (index_out) *index_out = raft_log_last(&r->log);
    if (term_out) *term_out = r->term;
    r->bcast_pending = true;
    raft_maybe_commit(r);
    return 0;
}

void raft_status(const struct raft *r, struct raft_status *st)
{
    memset(st, 0, sizeof *st);
    st->id = r->cfg.id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->leader;
    st->commit_index = r->commit;
    st->applied_index = r->applied;
    st->last_index = raft_log_last(&r->log);
    st->stable_index = r->stable;
    const struct raft_member *m = raft_configuration_find(&r->conf, r->cfg.id);
    st->member = m != NULL;
    st->voter = m && m->voter;
    st->failed = r->failed;
    st->snapshot_index = r->log.offset;
    st->snapshot_term = r->log.offset_term;
    st->transferee = r->transferee;
}

const struct raft_configuration *raft_configuration(const struct raft *r)
{
    return &r->conf;
}

bool raft_failed(const struct raft *r)
{
    return r->failed;
}
