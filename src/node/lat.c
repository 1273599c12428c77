/* lat.c — where a write's time goes on this node, for /metrics: how long each loop iteration
 * works (everything the loop serves waits behind it), how long a write handed to the storage
 * thread takes to come back, how long the applies of a ready batch take, and how long an
 * appended entry waits for its commit. Each is a lathist; the cost is a clock read per end
 * point (a few per loop iteration, one store per appended entry). */
#include <stdlib.h>

#include "log.h"
#include "node.h"

static void lat_start_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    struct node *n = w->data;
    n->lat->iter_start_us = lathist_now_us();
}

static void lat_end_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct node *n = w->data;
    struct node_lat *l = n->lat;
    if (l->iter_start_us) {
        uint64_t us = lathist_now_us() - l->iter_start_us;
        lathist_add(&l->loop_busy, us);
        if (lathist_slow(us, 100000, &l->slow_log_us))
            LOG_WARN("event loop: one iteration took %.0f ms (every client, peer and timer "
                     "waited)",
                     (double)us / 1e3);
    }
    l->iter_start_us = 0;
}

void node_lat_start(struct node *n)
{
    n->lat = calloc(1, sizeof *n->lat);
    if (!n->lat) return;
    /* libev runs check watchers right after the poll and prepare watchers right before the
     * next one, highest priority first: these two bracket all of an iteration's callbacks,
     * node_prepare_cb's ready drain (applies, sends) included. */
    ev_check_init(&n->lat_start, lat_start_cb);
    ev_set_priority(&n->lat_start, EV_MAXPRI);
    n->lat_start.data = n;
    ev_check_start(n->loop, &n->lat_start);
    ev_prepare_init(&n->lat_end, lat_end_cb);
    ev_set_priority(&n->lat_end, EV_MINPRI);
    n->lat_end.data = n;
    ev_prepare_start(n->loop, &n->lat_end);
}

void node_lat_stop(struct node *n)
{
    if (!n->lat) return;
    ev_check_stop(n->loop, &n->lat_start);
    ev_prepare_stop(n->loop, &n->lat_end);
    free(n->lat);
    n->lat = NULL;
}

void node_lat_submitted(struct node *n, uint64_t seq, const struct raft_entry *es, size_t count)
{
    struct node_lat *l = n->lat;
    if (!l) return;
    uint64_t now = lathist_now_us();
    l->seq_key[seq % NODE_LAT_RING] = seq;
    l->seq_us[seq % NODE_LAT_RING] = now;
    for (size_t i = 0; i < count; i++) {
        size_t k = es[i].index % NODE_LAT_RING;
        l->idx_key[k] = es[i].index;
        l->idx_us[k] = now;
    }
}

void node_lat_persisted(struct node *n, uint64_t seq)
{
    struct node_lat *l = n->lat;
    if (!l || l->seq_key[seq % NODE_LAT_RING] != seq) return;
    lathist_add(&l->persist, lathist_now_us() - l->seq_us[seq % NODE_LAT_RING]);
}

void node_lat_committed(struct node *n, const struct raft_entry *es, size_t count)
{
    struct node_lat *l = n->lat;
    if (!l || count == 0) return;
    uint64_t now = lathist_now_us();
    for (size_t i = 0; i < count; i++) {
        size_t k = es[i].index % NODE_LAT_RING;
        if (l->idx_key[k] != es[i].index) continue; /* appended before a restart, or too long ago */
        lathist_add(&l->commit, now - l->idx_us[k]);
        l->idx_key[k] = 0; /* counted once */
    }
}
