/* membership.c — single-server membership changes (thesis ch. 4): a configuration takes
 * effect once appended, reverts when its entry is truncated, one change at a time, and only
 * after the leader has committed an entry of its own term. New members join as learners and
 * are promoted once caught up; a removed leader steps down once its removal commits. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

bool raft_conf_is_voter(const struct raft_configuration *c, raft_id id)
{
    const struct raft_member *m = raft_configuration_find(c, id);
    return m && m->voter;
}

bool raft_conf_equal(const struct raft_configuration *a, const struct raft_configuration *b)
{
    if (a->n != b->n) return false;
    for (uint32_t i = 0; i < a->n; i++) {
        const struct raft_member *x = &a->members[i], *y = &b->members[i];
        if (x->id != y->id || x->voter != y->voter || x->info_len != y->info_len ||
            memcmp(x->info, y->info, x->info_len) != 0)
            return false;
    }
    return true;
}

uint32_t raft_conf_voters(const struct raft_configuration *c)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n; i++)
        n += c->members[i].voter ? 1 : 0;
    return n;
}

uint32_t raft_quorum(const struct raft *r)
{
    return raft_conf_voters(&r->conf) / 2 + 1;
}

bool raft_own_term_committed(const struct raft *r)
{
    return raft_log_term(&r->log, r->commit) == r->term;
}

bool raft_change_in_flight(const struct raft *r)
{
    return r->conf_index > r->commit;
}

static void raft_conf_trace(struct raft *r, raft_index idx)
{
    if (!r->cfg.trace) return;
    char buf[200];
    size_t off = 0;
    for (uint32_t i = 0; i < r->conf.n && off < sizeof buf - 24; i++) {
        const struct raft_member *m = &r->conf.members[i];
        int w = snprintf(buf + off, sizeof buf - off, " %llx%s", (unsigned long long)m->id,
                         m->voter ? "" : "(learner)");
        off += w > 0 ? (size_t)w : 0;
    }
    buf[off < sizeof buf ? off : sizeof buf - 1] = 0;
    raft_tracef(r, "config change at index %llu:%s", (unsigned long long)idx, buf);
}

int raft_conf_on_append(struct raft *r, raft_index idx, const struct raft_blob *data)
{
    ASSERT(data);
    int rv = raft_configuration_decode(data->data, data->len, &r->conf);
    ASSERT(rv == 0); /* validated before appending */
    r->conf_index = idx;
    raft_conf_trace(r, idx);
    if (r->role == RAFT_LEADER) raft_progress_sync(r);
    return 0;
}

/* The configuration reverts to the latest one still in the log, or the snapshot's. */
void raft_conf_on_truncate(struct raft *r, raft_index from)
{
    if (r->conf_index < from) return;
    r->conf = r->snap_conf;
    r->conf_index = r->snap_conf_index;
    for (raft_index i = from - 1; i > r->log.offset; i--) {
        const struct raft_lentry *e = raft_log_get(&r->log, i);
        if (e->type != RAFT_ENTRY_CONFIG) continue;
        int rv = raft_configuration_decode(e->data->data, e->data->len, &r->conf);
        ASSERT(rv == 0);
        r->conf_index = i;
        break;
    }
    raft_tracef(r, "config reverted to index %llu", (unsigned long long)r->conf_index);
}

void raft_membership_on_commit(struct raft *r)
{
    ASSERT(r->role == RAFT_LEADER);
    raft_progress_sync(r);
    if (raft_change_in_flight(r) || raft_conf_is_voter(&r->conf, r->cfg.id)) return;
    /* A last round tells the remaining members that their configuration committed. */
    raft_repl_heartbeat(r);
    raft_become_follower(r, r->term, 0, "removed from the configuration");
}

static int raft_change_check(const struct raft *r)
{
    if (r->failed) return ERR_FAILED;
    if (r->role != RAFT_LEADER) return ERR_NOTLEADER;
    if (raft_change_in_flight(r) || r->transferee) return ERR_BUSY;
    /* Ongaro 2015: a new leader commits an entry of its term before changing membership. */
    if (!raft_own_term_committed(r) && !raft_bug(r, RAFT_BUG_CONFIG_BEFORE_NOOP)) return ERR_BUSY;
    if (!raft_configuration_find(&r->conf, r->cfg.id)) return ERR_BUSY;
    return 0;
}

static int raft_change_append(struct raft *r, const struct raft_configuration *c,
                              raft_index *index_out)
{
    struct raft_blob *b = NULL;
    int rv = raft_configuration_encode(c, &b);
    if (rv) return rv;
    rv = raft_append_entry(r, r->term, RAFT_ENTRY_CONFIG, b, false);
    if (rv) return rv;
    if (index_out) *index_out = raft_log_last(&r->log);
    r->bcast_pending = true;
    raft_maybe_commit(r);
    return 0;
}

int raft_add_member(struct raft *r, const struct raft_member *m, raft_index *index_out)
{
    int rv = raft_change_check(r);
    if (rv) return rv;
    if (!m || m->id == 0 || m->info_len > RAFT_MEMBER_INFO_MAX) return ERR_INVALID;
    if (raft_configuration_find(&r->conf, m->id)) return ERR_EXISTS;
    if (r->conf.n >= RAFT_MAX_NODES) return ERR_INVALID;
    struct raft_configuration c = r->conf;
    c.members[c.n] = *m;
    c.members[c.n].voter = false;
    c.n++;
    return raft_change_append(r, &c, index_out);
}

int raft_remove_member(struct raft *r, raft_id id, raft_index *index_out)
{
    int rv = raft_change_check(r);
    if (rv) return rv;
    const struct raft_member *m = raft_configuration_find(&r->conf, id);
    if (!m) return ERR_NOTFOUND;
    if (m->voter && raft_conf_voters(&r->conf) == 1) return ERR_INVALID;
    struct raft_configuration c;
    memset(&c, 0, sizeof c);
    for (uint32_t i = 0; i < r->conf.n; i++)
        if (r->conf.members[i].id != id) c.members[c.n++] = r->conf.members[i];
    return raft_change_append(r, &c, index_out);
}

/* A learner whose match reached the commit index is caught up: make it a voter. */
void raft_membership_maybe_promote(struct raft *r)
{
    if (r->role != RAFT_LEADER || raft_change_check(r)) return;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct raft_member *m = &r->conf.members[i];
        if (m->voter) continue;
        const struct raft_progress *pr = raft_progress_find(r, m->id);
        if (!pr || pr->match < r->commit) continue;
        struct raft_configuration c = r->conf;
        c.members[i].voter = true;
        raft_tracef(r, "promoting %llx (caught up at %llu)", (unsigned long long)m->id,
                    (unsigned long long)pr->match);
        if (raft_change_append(r, &c, NULL)) raft_fail(r, "out of memory appending a promotion");
        return;
    }
}
