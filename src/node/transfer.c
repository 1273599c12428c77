/* transfer.c — leadership transfer requests and the leader's hand-over on SIGTERM.
 *
 * A request lives here (not in ops.c) because it waits for something no log entry marks:
 * the cluster's leader becoming the target. A 10 ms timer, running only while something is
 * pending, watches for that. Invariant: every request answers its HTTP request exactly once,
 * at the latest at its deadline (about two election timeouts) or when the node stops. */
#include "transfer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "node_api.h"
#include "transport.h"

#define XFER_POLL_S 0.01
#define XFER_FWD_RETRY_S 1.0 /* resend a forward that got no answer */
#define XFER_DRAIN_MAX_S 1.0 /* after a hand-over: wait this long at most for pending ops */

enum xfer_state {
    XFER_DISPATCH, /* to be started on the leader (ours or, forwarded, a remote one) */
    XFER_FWD,      /* forwarded; waiting for the leader's answer */
    XFER_STARTED,  /* the leader accepted: waiting for the target to lead */
};

struct xfer {
    struct xfer *next;
    struct http_req *req;
    raft_id target;
    char name[CONFIG_ID_MAX];
    enum xfer_state state;
    bool local; /* started by this node as leader: it can tell an abandoned transfer */
    uint64_t fwd_id;
    raft_id fwd_to;
    ev_tstamp retry_at;
    ev_tstamp created, deadline;
};

/* One node per process: the module's state is static, like ops.c's recent-results ring. */
static struct {
    struct node *n;
    ev_timer timer;
    bool timer_init;
    struct xfer *head;
    bool handover; /* stopping: handing leadership over first */
    bool draining; /* leadership moved: waiting for pending ops before stopping */
    ev_tstamp handover_deadline, drain_deadline;
    raft_id handover_to;
} xs;

static double xfer_election_s(const struct node *n)
{
    return n->cfg.election_timeout_max_ms / 1000.0;
}

static const char *xfer_name(struct node *n, raft_id id, char *buf, size_t len)
{
    char http[CONFIG_ADDR_MAX];
    if (!id) return "none";
    if (!node_member_http(n, id, buf, len, http, sizeof http))
        snprintf(buf, len, "%016llx", (unsigned long long)id);
    return buf;
}

static void xfer_unlink(struct xfer *x)
{
    for (struct xfer **p = &xs.head; *p; p = &(*p)->next) {
        if (*p == x) {
            *p = x->next;
            break;
        }
    }
    free(x);
}

static void xfer_ok(struct node *n, struct xfer *x)
{
    LOG_INFO("leadership transfer to %s done (term %llu)", x->name, (unsigned long long)n->term);
    http_reply_json(x->req, 200,
                    json_pack("{s:s, s:I}", "leader", x->name, "term", (json_int_t)n->term));
    xfer_unlink(x);
}

static void xfer_fail(struct xfer *x, unsigned status, const char *code, const char *msg)
{
    LOG_INFO("leadership transfer to %s: %u %s", x->name, status, msg);
    http_reply_error(x->req, status, code, "%s", msg);
    xfer_unlink(x);
}

/* An error from raft_transfer_leadership (here or on the leader): answer, or retry. */
static void xfer_refused(struct node *n, struct xfer *x, int err)
{
    char msg[256];
    switch (err) {
    case ERR_NOTLEADER:
        x->state = XFER_DISPATCH; /* leadership moved meanwhile: start over with the new one */
        x->retry_at = ev_now(n->loop) + 0.05;
        return;
    case ERR_NOTFOUND:
        snprintf(msg, sizeof msg, "%s is not a member of the cluster", x->name);
        xfer_fail(x, 404, "not_found", msg);
        return;
    case ERR_INVALID:
        if (x->target == n->leader) {
            xfer_ok(n, x); /* it became the leader after the request came: done */
        } else {
            snprintf(msg, sizeof msg, "%s is not a voter (a learner cannot lead)", x->name);
            xfer_fail(x, 409, "not_voter", msg);
        }
        return;
    case ERR_BUSY:
        xfer_fail(x, 409, "transfer_in_progress",
                  "a leadership transfer to another node is in progress; retry later");
        return;
    default:
        snprintf(msg, sizeof msg, "the leader refused: %s", err_str(err));
        xfer_fail(x, 503, "unavailable", msg);
    }
}

int node_transfer_start(struct node *n, raft_id to)
{
    if (n->role != RAFT_LEADER || n->stopping || xs.handover) return ERR_NOTLEADER;
    struct raft_status st;
    raft_status(n->raft, &st);
    int rv = raft_transfer_leadership(n->raft, to);
    if (rv == 0 && st.transferee != to) {
        char name[CONFIG_ID_MAX];
        LOG_INFO("leadership transfer to %s started", xfer_name(n, to, name, sizeof name));
    }
    return rv;
}

static void xfer_dispatch(struct node *n, struct xfer *x)
{
    ev_tstamp now = ev_now(n->loop);
    if (now < x->retry_at) return;
    if (n->role == RAFT_LEADER) {
        int rv = node_transfer_start(n, x->target);
        if (rv) {
            xfer_refused(n, x, rv);
            return;
        }
        x->state = XFER_STARTED;
        x->local = true;
        return;
    }
    if (!n->leader || n->leader == n->id) return; /* no leader known yet: wait */
    x->fwd_id = ++n->next_op_id;
    x->fwd_to = n->leader;
    x->state = XFER_FWD;
    x->retry_at = now + XFER_FWD_RETRY_S;
    int rv = transport_send_fwd_req(n->tr, n->leader, x->fwd_id, CODEC_FWD_TRANSFER,
                                    node_remove_payload(x->target));
    if (rv) LOG_DEBUG("forward transfer to the leader: %s (will retry)", err_str(rv));
}

bool node_transfer_on_fwd_resp(struct node *n, uint64_t fwd_id, int err)
{
    for (struct xfer *x = xs.head; x; x = x->next) {
        if (x->state != XFER_FWD || x->fwd_id != fwd_id) continue;
        if (err) {
            xfer_refused(n, x, err);
        } else {
            x->state = XFER_STARTED;
            x->local = false;
        }
        return true;
    }
    return false;
}

/* One request, once per poll. */
static void xfer_step(struct node *n, struct xfer *x, const struct raft_status *st)
{
    ev_tstamp now = ev_now(n->loop);
    /* The target was not the leader when the request came: now it is, however it got there
     * (a forward's answer may have been lost on the way). */
    if (n->leader == x->target && st->role != RAFT_CANDIDATE) {
        xfer_ok(n, x);
        return;
    }
    if (now >= x->deadline) {
        char msg[320], cur[CONFIG_ID_MAX];
        snprintf(msg, sizeof msg,
                 "leadership did not move to %s within %.0f ms; the leader is %s (is %s up and "
                 "reachable?)",
                 x->name, 1000 * (x->deadline - x->created),
                 xfer_name(n, n->leader, cur, sizeof cur), x->name);
        xfer_fail(x, 504, "transfer_timeout", msg);
        return;
    }
    if (x->state == XFER_STARTED && x->local && st->role == RAFT_LEADER && st->transferee == 0) {
        char msg[320];
        snprintf(msg, sizeof msg,
                 "%s did not catch up and take over within an election timeout; this node "
                 "(%s) is still the leader (is %s up and reachable?)",
                 x->name, n->self->id, x->name);
        xfer_fail(x, 504, "transfer_timeout", msg);
        return;
    }
    if (x->state == XFER_FWD && (n->leader != x->fwd_to || now >= x->retry_at)) {
        x->state = XFER_DISPATCH; /* the leader changed or the forward was lost: again */
        x->retry_at = 0;
    }
    if (x->state == XFER_DISPATCH) xfer_dispatch(n, x);
}

/* SIGTERM hand-over, once per poll: stop when leadership moved and pending ops drained, or
 * at the deadline. */
static void xfer_handover_step(struct node *n)
{
    ev_tstamp now = ev_now(n->loop);
    char name[CONFIG_ID_MAX];
    if (!xs.draining && n->role != RAFT_LEADER) {
        LOG_INFO("stopping: leadership handed over (leader now %s); draining %s requests",
                 xfer_name(n, n->leader, name, sizeof name), n->ops ? "pending" : "no");
        xs.draining = true;
        xs.drain_deadline = now + XFER_DRAIN_MAX_S;
    }
    bool stop = false;
    if (xs.draining) {
        stop = (!n->ops && n->leader && n->leader != n->id) || now >= xs.drain_deadline;
    } else if (now >= xs.handover_deadline) {
        LOG_WARN("stopping: leadership transfer to %s did not complete within %.0f ms; "
                 "stopping anyway (the others elect a new leader)",
                 xfer_name(n, xs.handover_to, name, sizeof name), 1000 * xfer_election_s(n));
        stop = true;
    }
    if (!stop) return;
    LOG_INFO("signal: finishing in-flight writes and stopping");
    n->stopping = true;
    ev_break(n->loop, EVBREAK_ALL);
}

static void xfer_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct node *n = xs.n;
    if (!n || n->stopping) {
        ev_timer_stop(loop, w);
        return;
    }
    struct raft_status st;
    raft_status(n->raft, &st);
    struct xfer *x = xs.head, *next;
    for (; x; x = next) {
        next = x->next;
        xfer_step(n, x, &st);
    }
    bool readd = node_member_readd_tick(n);
    if (xs.handover) xfer_handover_step(n);
    if (!xs.head && !xs.handover && !readd) ev_timer_stop(loop, w);
}

void node_transfer_kick(struct node *n)
{
    if (!xs.timer_init) {
        ev_timer_init(&xs.timer, xfer_timer_cb, XFER_POLL_S, XFER_POLL_S);
        xs.timer_init = true;
    }
    xs.n = n;
    if (!ev_is_active(&xs.timer)) ev_timer_start(n->loop, &xs.timer);
}

void node_transfer_request(struct node *n, struct http_req *req, const char *id)
{
    raft_id target = config_raft_id(id);
    const struct raft_member *m = raft_configuration_find(raft_configuration(n->raft), target);
    if (!m) {
        http_reply_error(req, 404, "not_found", "%s is not a member of the cluster", id);
        return;
    }
    if (!m->voter) {
        http_reply_error(req, 409, "not_voter", "%s is not a voter (a learner cannot lead)", id);
        return;
    }
    if (n->leader == target) {
        http_reply_error(req, 409, "already_leader", "%s is already the leader", id);
        return;
    }
    if (n->stopping || xs.handover) {
        http_reply_error(req, 503, "shutting_down",
                         "the node is shutting down; retry another node");
        return;
    }
    struct xfer *x = calloc(1, sizeof *x);
    if (!x) {
        http_reply_error(req, 503, "no_memory", "out of memory");
        return;
    }
    x->req = req;
    x->target = target;
    snprintf(x->name, sizeof x->name, "%s", id);
    x->state = XFER_DISPATCH;
    /* The core abandons after one election timeout; the second covers the vote round and
     * the new leader's first append reaching this node. */
    x->created = ev_now(n->loop);
    x->deadline = x->created + 2 * xfer_election_s(n) + 2 * n->cfg.heartbeat_ms / 1000.0;
    x->next = xs.head;
    xs.head = x;
    LOG_INFO("leadership transfer to %s requested", id);
    node_transfer_kick(n);
    xfer_dispatch(n, x);
}

/* The voter to hand leadership to: the most up-to-date voter heard from recently (the core
 * brings it fully up to date before TIMEOUT_NOW); failing that, the first other voter. */
raft_id node_transfer_pick(struct node *n)
{
    raft_id best = raft_transfer_candidate(n->raft);
    if (best) return best;
    const struct raft_configuration *c = raft_configuration(n->raft);
    for (uint32_t i = 0; i < c->n; i++)
        if (c->members[i].voter && c->members[i].id != n->id) return c->members[i].id;
    return 0;
}

bool node_transfer_on_stop_signal(struct node *n)
{
    if (xs.handover || n->role != RAFT_LEADER) return false;
    struct raft_status st;
    raft_status(n->raft, &st);
    raft_id to = st.transferee ? st.transferee : node_transfer_pick(n); /* one running: keep it */
    if (!to) return false;
    int rv = node_transfer_start(n, to);
    char name[CONFIG_ID_MAX];
    xfer_name(n, to, name, sizeof name);
    if (rv) {
        LOG_WARN("stopping: cannot hand leadership to %s (%s); stopping at once", name,
                 err_str(rv));
        return false;
    }
    xs.handover = true;
    xs.handover_to = to;
    xs.handover_deadline = ev_now(n->loop) + xfer_election_s(n);
    LOG_INFO("stopping: handing leadership to %s first (at most %.0f ms)", name,
             1000 * xfer_election_s(n));
    node_transfer_kick(n);
    return true;
}

void node_transfer_fail_all(struct node *n)
{
    (void)n;
    while (xs.head)
        xfer_fail(xs.head, 503, "shutting_down", "the node is shutting down; retry another node");
    if (xs.timer_init && xs.n) ev_timer_stop(xs.n->loop, &xs.timer);
}
