/* roll.c — raftsup's rolling restart (SIGHUP): one node at a time, SIGTERM (a leader hands
 * leadership over before it stops), restart at once, and wait until the node serves again —
 * it names a leader and has applied everything it knows committed — before the next one.
 * Followers go first and the leader last, so leadership moves once. A node that does not come
 * back within SUP_ROLL_WAIT_S stops the roll (logged): the rest keep running as they are.
 * HTTP through sup_http, so the loop never blocks. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sup.h"
#include "sup_http.h"

#define SUP_ROLL_RETRY_S 0.1     /* between status probes */
#define SUP_ROLL_WAIT_S 60.0     /* a restarted node must serve again within this */
#define SUP_ROLL_TIMEOUT_MS 1000 /* per request */

enum sup_roll_phase {
    SUP_ROLL_IDLE,
    SUP_ROLL_PROBE,    /* GET /v1/status of the next node: is it the leader? */
    SUP_ROLL_STOPPING, /* SIGTERM sent; waiting for the exit (sup_roll_child_exited) */
    SUP_ROLL_WAITING,  /* restarted; GET /v1/status until it serves */
};

struct sup_roll {
    struct sup *sup;
    struct sup_http *http; /* GET /v1/status; the answer goes to sup_roll_done */
    ev_timer retry;
    enum sup_roll_phase phase;
    size_t order[RAFT_MAX_NODES]; /* config indexes still to restart, in order */
    size_t n_left;
    bool deferred[RAFT_MAX_NODES]; /* moved to the end once because it was the leader */
    size_t cur;                    /* config index being restarted */
    ev_tstamp deadline;
    ev_tstamp started;
};

static void sup_roll_later(struct sup_roll *r, double delay_s)
{
    ev_timer_stop(r->sup->loop, &r->retry);
    ev_timer_set(&r->retry, delay_s, 0.);
    ev_timer_start(r->sup->loop, &r->retry);
}

/* GET /v1/status of the current node. */
static void sup_roll_request(struct sup_roll *r)
{
    if (sup_http_start(r->http, r->sup->cfg.nodes[r->cur].http.text, "/v1/status", NULL))
        sup_roll_later(r, SUP_ROLL_RETRY_S);
}

static void sup_roll_finish(struct sup_roll *r, const char *how)
{
    r->phase = SUP_ROLL_IDLE;
    ev_timer_stop(r->sup->loop, &r->retry);
    LOG_INFO("rolling restart %s after %.1f s", how, ev_now(r->sup->loop) - r->started);
}

/* Takes the next node off the list and asks whether it leads. */
static void sup_roll_next(struct sup_roll *r)
{
    if (r->n_left == 0) {
        sup_roll_finish(r, "done");
        return;
    }
    r->cur = r->order[0];
    r->phase = SUP_ROLL_PROBE;
    sup_roll_request(r);
}

static void sup_roll_stop_child(struct sup_roll *r)
{
    struct sup_child *c = &r->sup->children[r->cur];
    memmove(r->order, r->order + 1, (r->n_left - 1) * sizeof r->order[0]);
    r->n_left--;
    r->deadline = ev_now(r->sup->loop) + SUP_ROLL_WAIT_S;
    if (!c->pid) { /* down already (a restart is pending): just wait for it */
        LOG_INFO("rolling restart: %s is not running; waiting for its restart", c->node->id);
        r->phase = SUP_ROLL_WAITING;
        sup_roll_later(r, SUP_ROLL_RETRY_S);
        return;
    }
    LOG_INFO("rolling restart: stopping %s (pid %d)", c->node->id, (int)c->pid);
    c->rolling = true;
    r->phase = SUP_ROLL_STOPPING;
    sup_child_signal(c, SIGTERM);
    sup_roll_later(r, SUP_STOP_GRACE_S); /* then SIGKILL, as a supervisor stop would */
}

static void sup_roll_probe_done(struct sup_roll *r, long code, json_t *st)
{
    const char *state = json_string_value(json_object_get(st, "state"));
    bool leader = code == 200 && state && !strcmp(state, "leader");
    if (leader && r->n_left > 1 && !r->deferred[r->cur]) {
        /* The leader goes last: leadership then moves once, to a restarted node. */
        r->deferred[r->cur] = true;
        memmove(r->order, r->order + 1, (r->n_left - 1) * sizeof r->order[0]);
        r->order[r->n_left - 1] = r->cur;
        sup_roll_next(r);
        return;
    }
    sup_roll_stop_child(r);
}

/* Back: running, follows a leader (or is it), applied what it knows committed. */
static bool sup_roll_serving(json_t *st)
{
    const char *state = json_string_value(json_object_get(st, "state"));
    json_t *applied = json_object_get(st, "applied_index");
    json_t *commit = json_object_get(st, "commit_index");
    return state && (!strcmp(state, "leader") || !strcmp(state, "follower")) &&
           json_is_object(json_object_get(st, "leader")) && json_is_integer(applied) &&
           json_is_integer(commit) && json_integer_value(applied) >= json_integer_value(commit);
}

static void sup_roll_wait_done(struct sup_roll *r, long code, json_t *st)
{
    const char *id = r->sup->cfg.nodes[r->cur].id;
    if (code == 200 && sup_roll_serving(st)) {
        LOG_INFO("rolling restart: %s is back (term %lld, applied %lld)", id,
                 (long long)json_integer_value(json_object_get(st, "term")),
                 (long long)json_integer_value(json_object_get(st, "applied_index")));
        sup_roll_next(r);
        return;
    }
    if (ev_now(r->sup->loop) >= r->deadline) {
        LOG_ERROR("rolling restart: %s did not serve again within %.0f s; not restarting the "
                  "others",
                  id, SUP_ROLL_WAIT_S);
        sup_roll_finish(r, "stopped");
        return;
    }
    sup_roll_later(r, SUP_ROLL_RETRY_S);
}

/* One completed request (sup_http): dispatch on the phase that started it. */
static void sup_roll_done(void *ctx, long code, json_t *doc)
{
    struct sup_roll *r = ctx;
    if (r->phase == SUP_ROLL_PROBE)
        sup_roll_probe_done(r, code, doc);
    else if (r->phase == SUP_ROLL_WAITING)
        sup_roll_wait_done(r, code, doc);
}

static void sup_roll_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_roll *r = w->data;
    if (r->phase == SUP_ROLL_STOPPING) {
        struct sup_child *c = &r->sup->children[r->cur];
        LOG_WARN("rolling restart: %s still running %.0f s after SIGTERM: SIGKILL", c->node->id,
                 SUP_STOP_GRACE_S);
        sup_child_signal(c, SIGKILL);
        return;
    }
    if (!sup_http_busy(r->http) && (r->phase == SUP_ROLL_WAITING || r->phase == SUP_ROLL_PROBE))
        sup_roll_request(r);
}

void sup_roll_child_exited(struct sup_roll *r, struct sup_child *c)
{
    if (!r || r->phase != SUP_ROLL_STOPPING || c->index != r->cur) return;
    r->phase = SUP_ROLL_WAITING;
    sup_roll_later(r, SUP_ROLL_RETRY_S);
}

void sup_roll_start(struct sup_roll *r)
{
    if (r->phase != SUP_ROLL_IDLE) {
        LOG_INFO("rolling restart already running: signal ignored");
        return;
    }
    r->n_left = r->sup->cfg.n_nodes;
    for (size_t i = 0; i < r->n_left; i++) {
        r->order[i] = i;
        r->deferred[i] = false;
    }
    r->started = ev_now(r->sup->loop);
    LOG_INFO("rolling restart of %zu nodes: one at a time, followers first", r->n_left);
    sup_roll_next(r);
}

int sup_roll_new(struct sup *s, struct sup_roll **out)
{
    struct sup_roll *r = calloc(1, sizeof *r);
    if (!r) return ERR_NOMEM;
    r->sup = s;
    ev_timer_init(&r->retry, sup_roll_retry_cb, 0., 0.);
    r->retry.data = r;
    int rv = sup_http_new(s->loop, SUP_ROLL_TIMEOUT_MS, sup_roll_done, r, &r->http);
    if (rv) {
        free(r);
        return rv;
    }
    *out = r;
    return 0;
}

void sup_roll_free(struct sup_roll *r)
{
    if (!r) return;
    ev_timer_stop(r->sup->loop, &r->retry);
    sup_http_free(r->http);
    free(r);
}
