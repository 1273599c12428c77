/* join.c — raftsup's membership helper: finds the leader through GET /v1/status and sends
 * POST /v1/cluster/join for config nodes that are not members and have never been part of a
 * cluster (empty log). One request in flight (sup_http), so the loop never blocks on HTTP.
 * Never joins a node that has Raft history. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sup.h"
#include "sup_http.h"

#define SUP_JOIN_RETRY_S 0.1     /* between probes while no leader is known */
#define SUP_JOIN_BUSY_S 0.2      /* after a 503 or an unreachable node */
#define SUP_JOIN_TIMEOUT_MS 1000 /* per request */
#define SUP_JOIN_MOVE_S 10.0     /* an address update's remove + add back, at most */

enum sup_join_phase {
    SUP_JOIN_IDLE,  /* nothing to do until the next kick */
    SUP_JOIN_PROBE, /* GET /v1/status looking for the leader */
    SUP_JOIN_CHECK, /* GET /v1/status of a non-member: is its log empty? */
    SUP_JOIN_SEND,  /* POST /v1/cluster/join to the leader */
};

struct sup_join {
    struct sup *sup;
    struct sup_http *http; /* the request in flight; its answer goes to sup_join_done */
    ev_timer retry;        /* delay before the next step */
    enum sup_join_phase phase;
    size_t probe;                 /* next config node to ask for the leader */
    char leader[CONFIG_ADDR_MAX]; /* leader's http address, "" when unknown */
    size_t target;                /* config index checked or joined */
    bool member[RAFT_MAX_NODES];  /* per config node, from the leader's last status */
    bool moved[RAFT_MAX_NODES];   /* a member whose addresses differ from the config's */
    bool skip[RAFT_MAX_NODES];    /* has a log but is not a member: left alone */
    /* Address update sent: the leader removes the member and adds it back; until this time
     * its absence is that window, not a reason to skip it. */
    ev_tstamp moving_until[RAFT_MAX_NODES];
    bool waiting_logged;
};

static void sup_join_after(struct sup_join *j, enum sup_join_phase phase, double delay_s)
{
    j->phase = phase;
    ev_timer_stop(j->sup->loop, &j->retry);
    ev_timer_set(&j->retry, delay_s, 0.);
    ev_timer_start(j->sup->loop, &j->retry);
}

/* Reads the members of a leader's status into j->member; false when the text is not one. */
static bool sup_join_read_members(struct sup_join *j, json_t *st)
{
    json_t *members = json_object_get(st, "members");
    if (!json_is_array(members)) return false;
    memset(j->member, 0, sizeof j->member);
    memset(j->moved, 0, sizeof j->moved);
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        const char *raft = json_string_value(json_object_get(m, "raft"));
        const char *http = json_string_value(json_object_get(m, "http"));
        for (size_t k = 0; id && k < j->sup->cfg.n_nodes; k++) {
            const struct config_node *n = &j->sup->cfg.nodes[k];
            if (strcmp(id, n->id) != 0) continue;
            j->member[k] = true;
            j->moved[k] =
                !raft || !http || strcmp(raft, n->raft.text) || strcmp(http, n->http.text);
            if (j->moved[k] && j->moving_until[k] < ev_now(j->sup->loop))
                LOG_INFO("%s is a member at raft %s, http %s; the config says raft %s, http %s: "
                         "updating its addresses",
                         id, raft ? raft : "?", http ? http : "?", n->raft.text, n->http.text);
        }
    }
    return true;
}

/* POST the join of config node i (new node, or new addresses of a member) to the leader. */
static void sup_join_send(struct sup_join *j, size_t i)
{
    const struct config_node *n = &j->sup->cfg.nodes[i];
    char post[512];
    j->target = i;
    snprintf(post, sizeof post, "{\"id\":\"%s\",\"raft\":\"%s\",\"http\":\"%s\"}", n->id,
             n->raft.text, n->http.text);
    j->phase = SUP_JOIN_SEND;
    LOG_INFO("joining %s (raft %s, http %s) through the leader at %s", n->id, n->raft.text,
             n->http.text, j->leader);
    if (sup_http_start(j->http, j->leader, "/v1/cluster/join", post))
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S);
}

/* Decides the next step once the leader's members are known. */
static void sup_join_next(struct sup_join *j)
{
    const struct config *cfg = &j->sup->cfg;
    ev_tstamp now = ev_now(j->sup->loop);
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        if (j->member[i] && j->moved[i] && j->moving_until[i] < now) {
            j->moving_until[i] = now + SUP_JOIN_MOVE_S;
            sup_join_send(j, i);
            return;
        }
        if ((!j->member[i] || j->moved[i]) && j->moving_until[i] >= now) {
            sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S); /* being moved: watch it */
            return;
        }
        if (j->member[i] || j->skip[i]) continue;
        j->target = i;
        j->phase = SUP_JOIN_CHECK;
        if (sup_http_start(j->http, cfg->nodes[i].http.text, "/v1/status", NULL))
            sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++)
        n += j->member[i];
    LOG_INFO("membership complete: %zu of %zu config nodes are members (leader %s)", n,
             cfg->n_nodes, j->leader);
    j->phase = SUP_JOIN_IDLE;
}

static void sup_join_probe_done(struct sup_join *j, long code, json_t *st)
{
    const char *state = json_string_value(json_object_get(st, "state"));
    const char *hint = json_string_value(json_object_get(json_object_get(st, "leader"), "http"));
    if (code == 200 && state && strcmp(state, "leader") == 0 && sup_join_read_members(j, st)) {
        const char *id = json_string_value(json_object_get(st, "id"));
        if (!j->leader[0] || strcmp(j->leader, j->sup->cfg.nodes[j->probe].http.text))
            LOG_INFO("leader is %s (term %lld)", id ? id : "?",
                     (long long)json_integer_value(json_object_get(st, "term")));
        snprintf(j->leader, sizeof j->leader, "%s", j->sup->cfg.nodes[j->probe].http.text);
        j->sup->children[0].bootstrap_pending = false; /* the cluster exists */
        sup_join_next(j);
        return;
    }
    /* Follow the leader hint if it names a config node, else try the next node. */
    size_t next = (j->probe + 1) % j->sup->cfg.n_nodes;
    for (size_t k = 0; hint && k < j->sup->cfg.n_nodes; k++)
        if (strcmp(hint, j->sup->cfg.nodes[k].http.text) == 0 && k != j->probe) next = k;
    bool follow = hint && next != (j->probe + 1) % j->sup->cfg.n_nodes;
    j->probe = next;
    j->leader[0] = '\0';
    if (!j->waiting_logged) {
        LOG_INFO("waiting for a leader");
        j->waiting_logged = true;
    }
    sup_join_after(j, SUP_JOIN_PROBE, follow ? 0. : SUP_JOIN_RETRY_S);
}

static void sup_join_check_done(struct sup_join *j, long code, json_t *st)
{
    const struct config_node *n = &j->sup->cfg.nodes[j->target];
    json_t *last = json_object_get(st, "last_log_index");
    if (code != 200 || !json_is_integer(last)) {
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S); /* not up yet: retry later */
        return;
    }
    if (json_integer_value(last) != 0) {
        LOG_WARN("%s has Raft history (last_log_index %lld) but is not a member: "
                 "not joining it (was it removed?)",
                 n->id, (long long)json_integer_value(last));
        j->skip[j->target] = true;
        sup_join_next(j);
        return;
    }
    sup_join_send(j, j->target);
}

static void sup_join_send_done(struct sup_join *j, long code, json_t *resp)
{
    const char *id = j->sup->cfg.nodes[j->target].id;
    if ((code == 200 || code == 201) && j->moved[j->target]) {
        LOG_INFO("%s: address update accepted (removed, then added back as a learner)", id);
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S);
    } else if (code == 200 || code == 201) {
        LOG_INFO("%s joined as a learner", id);
        sup_join_after(j, SUP_JOIN_PROBE, 0.);
    } else if (code == 409) {
        LOG_INFO("%s is already a member", id);
        sup_join_after(j, SUP_JOIN_PROBE, 0.);
    } else {
        const char *msg = json_string_value(json_object_get(resp, "error"));
        LOG_INFO("join of %s answered %ld (%s); retrying", id, code, msg ? msg : "no message");
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S);
    }
}

/* One completed request (sup_http): dispatch on the phase that started it. */
static void sup_join_done(void *ctx, long code, json_t *doc)
{
    struct sup_join *j = ctx;
    if (code == 0) {
        /* Unreachable: the leader may have died; start over from the next node. */
        j->leader[0] = '\0';
        if (j->phase == SUP_JOIN_PROBE) j->probe = (j->probe + 1) % j->sup->cfg.n_nodes;
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_RETRY_S);
        return;
    }
    if (j->phase == SUP_JOIN_PROBE)
        sup_join_probe_done(j, code, doc);
    else if (j->phase == SUP_JOIN_CHECK)
        sup_join_check_done(j, code, doc);
    else if (j->phase == SUP_JOIN_SEND)
        sup_join_send_done(j, code, doc);
}

static void sup_join_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_join *j = w->data;
    if (sup_http_busy(j->http)) return;
    j->phase = SUP_JOIN_PROBE;
    if (sup_http_start(j->http, j->sup->cfg.nodes[j->probe].http.text, "/v1/status", NULL))
        sup_join_after(j, SUP_JOIN_PROBE, SUP_JOIN_BUSY_S);
}

void sup_join_kick(struct sup_join *j)
{
    if (j->phase != SUP_JOIN_IDLE) return; /* a pass is running; it will see the new node */
    memset(j->skip, 0, sizeof j->skip);
    j->waiting_logged = false;
    sup_join_after(j, SUP_JOIN_PROBE, 0.);
}

int sup_join_new(struct sup *s, struct sup_join **out)
{
    struct sup_join *j = calloc(1, sizeof *j);
    if (!j) return ERR_NOMEM;
    j->sup = s;
    ev_timer_init(&j->retry, sup_join_retry_cb, 0., 0.);
    j->retry.data = j;
    int rv = sup_http_new(s->loop, SUP_JOIN_TIMEOUT_MS, sup_join_done, j, &j->http);
    if (rv) {
        free(j);
        return rv;
    }
    *out = j;
    return 0;
}

void sup_join_free(struct sup_join *j)
{
    if (!j) return;
    ev_timer_stop(j->sup->loop, &j->retry);
    sup_http_free(j->http);
    free(j);
}
