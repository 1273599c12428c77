/* node.c — opening and closing a node: config, storage, file store, core, transport, HTTP,
 * and the loop's watchers. The only place that decides the core's tuning from the config. */
#include "node.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsm.h"
#include "http.h"
#include "jitter.h"
#include "log.h"
#include "storage.h"
#include "transfer.h"
#include "transport.h"

static int node_fetch_cb(void *ctx, raft_index index, struct raft_blob **out)
{
    struct node *n = ctx;
    return store_fetch(n->store, index, out);
}

static void node_trace_cb(void *ctx, const char *line)
{
    (void)ctx;
    LOG_INFO("raft: %s", line);
}

static int node_mkdir(const char *path, char *err, size_t err_len)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    snprintf(err, err_len, "mkdir %s: %s", path, strerror(errno));
    return ERR_IO;
}

static void node_raft_config(const struct node *n, struct raft_config *rc)
{
    const struct config *c = &n->cfg;
    memset(rc, 0, sizeof *rc);
    rc->id = n->id;
    rc->heartbeat_ticks = c->heartbeat_ms / c->tick_ms;
    rc->election_ticks_min = c->election_timeout_min_ms / c->tick_ms;
    rc->election_ticks_max = c->election_timeout_max_ms / c->tick_ms;
    if (getrandom(&rc->seed, sizeof rc->seed, 0) != (ssize_t)sizeof rc->seed)
        rc->seed = n->id ^ (uint64_t)getpid();
    rc->max_append_entries = 256;
    rc->max_append_bytes = 1u << 20;
    rc->max_inflight = 16;
    rc->cache_bytes_max = 4u << 20;
    rc->prevote = true;
    rc->check_quorum = true;
    rc->fetch = node_fetch_cb;
    rc->trace = node_trace_cb;
    rc->ctx = (void *)n;
}

/* A first start with --bootstrap makes this node the single voter of a new cluster. */
static int node_bootstrap(struct node *n, char *err, size_t err_len)
{
    struct raft_status st;
    raft_status(n->raft, &st);
    if (st.last_index > 0 || st.term > 0) {
        LOG_INFO("--bootstrap ignored: this node already has Raft state (last index %llu)",
                 (unsigned long long)st.last_index);
        return 0;
    }
    struct raft_configuration conf;
    memset(&conf, 0, sizeof conf);
    int rv =
        node_member_info(n->self->id, n->self->raft.text, n->self->http.text, &conf.members[0]);
    conf.members[0].voter = true;
    conf.n = 1;
    if (rv == 0) rv = raft_bootstrap(n->raft, &conf);
    if (rv)
        snprintf(err, err_len, "bootstrap: %s", err_str(rv));
    else
        LOG_INFO("bootstrapped a new cluster \"%s\" with this node as its only voter",
                 n->cfg.cluster);
    return rv;
}

static int node_open_raft(struct node *n, bool bootstrap, char *err, size_t err_len)
{
    struct raft_boot boot;
    int rv = node_snap_boot(n, &boot, err, err_len); /* store_load, after a repair if needed */
    if (rv) return rv;
    struct raft_config rc;
    node_raft_config(n, &rc);
    /* Entries the file store already applied are not handed out (and fetched) again. */
    boot.applied = fsm_applied(n->fsm);
    rv = raft_new(&rc, &boot, &n->raft);
    store_boot_free(&boot);
    if (rv) {
        snprintf(err, err_len, "starting the raft core: %s", err_str(rv));
        return rv;
    }
    struct raft_status st;
    raft_status(n->raft, &st);
    n->term = st.term;
    log_set_term(st.term);
    LOG_INFO("raft state loaded: term %llu, snapshot point %llu, last index %llu, applied %llu",
             (unsigned long long)st.term, (unsigned long long)st.snapshot_index,
             (unsigned long long)st.last_index, (unsigned long long)fsm_applied(n->fsm));
    return bootstrap ? node_bootstrap(n, err, err_len) : 0;
}

static const struct transport_ops node_transport_ops;

static void node_on_msg_cb(void *ctx, const struct raft_msg *m)
{
    struct node *n = ctx;
    int rv = raft_step(n->raft, m);
    if (rv) LOG_DEBUG("dropped message type %u: %s", m->type, err_str(rv));
}

static const struct transport_ops node_transport_ops = {
    .on_msg = node_on_msg_cb,
    .on_fwd_req = node_fwd_req_cb,
    .on_fwd_resp = node_fwd_resp_cb,
    .accept_peer = node_accept_peer_cb,
    .on_snap_chunk = node_snap_chunk_cb,
    .on_snap_ack = node_snap_ack_cb,
    .on_link_down = node_snap_link_down_cb,
};

static void node_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct node *n = w->data;
    raft_tick(n->raft);
}

static void node_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    node_ready_drain(w->data);
}

static void node_ckpt_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct node *n = w->data;
    int rv = fsm_checkpoint(n->fsm);
    if (rv) LOG_WARN("file store checkpoint: %s", err_str(rv));
    /* Next kick in 0.5-1.5 s: nodes started together must not flush in step (fsm.c). */
    w->repeat = (double)jitter_between(&n->ckpt_rng, 500, 1500) / 1000.0;
    ev_timer_again(loop, w);
}

static void node_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct node *n = w->data;
    if (node_transfer_on_stop_signal(n)) return; /* a leader hands over first (bounded) */
    LOG_INFO("signal %d: finishing in-flight writes and stopping", w->signum);
    n->stopping = true;
    ev_break(loop, EVBREAK_ALL);
}

static void node_start_watchers(struct node *n)
{
    double tick_s = n->cfg.tick_ms / 1000.0;
    ev_timer_init(&n->tick_timer, node_tick_cb, tick_s, tick_s);
    n->tick_timer.data = n;
    ev_timer_start(n->loop, &n->tick_timer);
    ev_timer_init(&n->op_timer, node_ops_timer_cb, 0.02, 0.02);
    n->op_timer.data = n;
    ev_timer_start(n->loop, &n->op_timer);
    n->ckpt_rng = jitter_seed(n->id ^ (uint64_t)getpid(), (uint64_t)time(NULL));
    ev_timer_init(&n->ckpt_timer, node_ckpt_cb, 1.0, 1.0);
    n->ckpt_timer.data = n;
    ev_timer_start(n->loop, &n->ckpt_timer);
    ev_prepare_init(&n->prepare, node_prepare_cb);
    n->prepare.data = n;
    ev_prepare_start(n->loop, &n->prepare);
    node_lat_start(n);
    ev_signal_init(&n->sig_term, node_signal_cb, SIGTERM);
    n->sig_term.data = n;
    ev_signal_start(n->loop, &n->sig_term);
    ev_signal_init(&n->sig_int, node_signal_cb, SIGINT);
    n->sig_int.data = n;
    ev_signal_start(n->loop, &n->sig_int);
}

static int node_open_dirs(struct node *n, char *err, size_t err_len)
{
    int len = snprintf(n->node_dir, sizeof n->node_dir, "%s/%s", n->cfg.data_dir, n->self->id);
    if (len < 0 || (size_t)len >= sizeof n->node_dir) {
        snprintf(err, err_len, "data_dir is too long");
        return ERR_INVALID;
    }
    int rv = node_mkdir(n->cfg.data_dir, err, err_len);
    return rv ? rv : node_mkdir(n->node_dir, err, err_len);
}

static int node_open_io(struct node *n, char *err, size_t err_len)
{
    char raft_dir[4300];
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", n->node_dir);
    struct fsm_options fo = {.spare_target = n->cfg.spare_inodes, .checkpoint_interval_ms = 1000};
    int rv = store_open(raft_dir, &n->store, err, err_len);
    if (rv == 0) rv = fsm_open_opts(store_env(n->store), n->node_dir, &fo, &n->fsm, err, err_len);
    if (rv == 0) n->applied = fsm_applied(n->fsm);
    return rv;
}

static int node_open_net(struct node *n, char *err, size_t err_len)
{
    /* Bind raft_listen when given (peers dial "raft", which may be a proxy in front of us). */
    const char *bind_addr =
        n->self->has_raft_listen ? n->self->raft_listen.text : n->self->raft.text;
    int rv = transport_new(n->loop, n->cfg.cluster, n->self->id, n->id, bind_addr,
                           &node_transport_ops, n, &n->tr, err, err_len);
    if (rv) return rv;
    node_sync_peers(n);
    rv = store_writer_start(n->store, n->loop, node_persist_done_cb, n, &n->writer);
    if (rv) {
        snprintf(err, err_len, "starting the storage thread: %s", err_str(rv));
        return rv;
    }
    return http_start(n->loop, n->self->http.text, n->cfg.max_body_bytes, &node_http_backend, n,
                      &n->http, err, err_len);
}

int node_init(struct node *n, const char *config_path, const char *id, bool bootstrap, char *err,
              size_t err_len)
{
    memset(n, 0, sizeof *n);
    int rv = config_load(config_path, &n->cfg, err, err_len);
    if (rv) return rv;
    n->self = config_find(&n->cfg, id);
    if (!n->self) {
        snprintf(err, err_len, "%s: no node with id \"%s\"", config_path, id);
        return ERR_INVALID;
    }
    n->id = config_raft_id(id);
    n->loop = ev_default_loop(0);
    rv = node_open_dirs(n, err, err_len);
    if (rv == 0) rv = node_open_io(n, err, err_len);
    if (rv == 0) rv = node_open_raft(n, bootstrap, err, err_len);
    if (rv == 0 && node_snap_init(n)) {
        snprintf(err, err_len, "out of memory");
        rv = ERR_NOMEM;
    }
    if (rv == 0) rv = node_open_net(n, err, err_len);
    if (rv == 0) node_start_watchers(n);
    return rv;
}

void node_fail(struct node *n, const char *why)
{
    if (n->exit_code == 0)
        LOG_ERROR("fatal: %s; exiting so the supervisor restarts this node", why);
    n->exit_code = 1;
    n->stopping = true;
    ev_break(n->loop, EVBREAK_ALL);
}

int node_run(struct node *n)
{
    LOG_INFO("serving: raft %s, http %s, data %s", n->self->raft.text, n->self->http.text,
             n->node_dir);
    ev_run(n->loop, 0);
    n->stopping = true;
    node_ops_fail_all(n);
    return n->exit_code;
}

void node_close(struct node *n)
{
    if (n->http) http_stop(n->http);
    /* Stopping the writer finishes the writes already handed to it: what the core was told
     * is being persisted reaches the disk before we exit. */
    if (n->writer) store_writer_stop(n->writer);
    node_outq_free_all(n);
    node_snap_close(n); /* before the file store closes: streams hold its readers/writer */
    if (n->tr) transport_free(n->tr);
    if (n->raft) raft_free(n->raft);
    if (n->fsm) {
        fsm_checkpoint(n->fsm);
        fsm_close(n->fsm);
    }
    if (n->store) store_close(n->store);
    node_lat_stop(n);
    if (n->loop) ev_loop_destroy(n->loop);
    memset(n, 0, sizeof *n);
}
