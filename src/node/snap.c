/* snap.c — InstallSnapshot streams between nodes. The file store is the snapshot: the leader
 * streams its live store (fsm_snap_reader, fuzzy: files from indexes in [S, S_end]) in
 * SNAP_CHUNK frames on the peer link; the follower stages it (fsm_snap_writer), installs it
 * atomically and tells its core. Invariants:
 *  - at most SNAP_WINDOW chunks of a stream are unacknowledged, so the peer's bounded queue
 *    always has room for heartbeats and appends (they interleave between chunks);
 *  - every stream ends exactly once: installed (raft_report_snapshot ok), or aborted on a
 *    timeout, a lost link, a refusal or a leadership change (report !ok; the core re-probes);
 *  - the follower installs only what raft_snapshot_acceptable() allows, and calls
 *    raft_install_snapshot() in the same loop turn as the install;
 *  - one incoming stream at a time: a newer one (higher term, or a higher session id of the
 *    same term) replaces it, anything else is refused with an ABORT ack. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "err.h"
#include "fsm.h"
#include "log.h"
#include "node.h"
#include "storage.h"
#include "transport.h"

#define SNAP_CHUNK CODEC_SNAP_CHUNK_MAX
/* Unacknowledged chunks per outgoing stream: 4 MiB, enough to cover a follower's pauses (a
 * 1 MiB window kept the sender waiting ~80% of a 1 GiB stream), and at most half the peer's
 * queue, which therefore always has room for heartbeats and appends. */
#define SNAP_WINDOW 16
#define SNAP_FILL_BUDGET_S 0.004    /* reading the store per chunk, at most (then send less) */
#define SNAP_IDLE_TIMEOUT_S 10.0    /* no progress on a stream for this long: abort */
#define SNAP_INSTALL_TIMEOUT_S 120. /* last chunk acknowledged, install still not reported */
#define SNAP_TIMER_S 0.1            /* timeouts and retries of chunks the queue refused */
/* After a failed stream to a peer, the next waits 0.1 s, doubling to 5 s; an installed one
 * resets it. Without it a follower that refuses every stream (nodes of different stream
 * formats, a staging area it cannot write) was offered a new one every ~25 ms, each logged on
 * both sides. */
#define SNAP_BACKOFF_MIN_S 0.1
#define SNAP_BACKOFF_MAX_S 5.0

_Static_assert((uint64_t)SNAP_WINDOW *SNAP_CHUNK <= TRANSPORT_QUEUE_BYTES / 2,
               "a stream leaves room in the peer queue");

struct snap_out {
    bool used;
    raft_id peer;
    char name[CONFIG_ID_MAX];
    uint64_t session;
    raft_term term;   /* ours when the stream began */
    raft_index index; /* S */
    struct fsm_snap_reader *rd;
    uint64_t sent, acked;
    struct raft_blob *pending; /* the next chunk, refused once by a full queue */
    bool pending_last;
    bool last_sent;
    ev_tstamp started, progress;
    /* Where the stream's time went (logged at its end): reading the store, and waiting for
     * acknowledgements with the window full (full_since: 0 when it is not). */
    double read_s, full_s, full_since;
};

struct snap_in {
    bool active;
    raft_id from;
    char name[CONFIG_ID_MAX];
    uint64_t session;
    raft_term term;
    raft_index index;
    uint64_t received;
    struct fsm_snap_writer *wr;
    ev_tstamp started, progress;
};

struct node_snap {
    struct node *n;
    ev_tstamp warn_window; /* rate limit of warnings about stray frames */
    unsigned warns;
    ev_timer timer;
    /* Tests: RAFTFS_TEST_SNAP_CRASH=after_fsm_install makes the node die between the file
     * store's install and the core's, the window node_snap_boot repairs. */
    bool crash_after_install;
    /* Tests: RAFTFS_TEST_SNAP_REFUSE=1 makes the node refuse every incoming stream. */
    bool refuse_all;
    uint64_t last_session;
    struct snap_backoff {
        raft_id peer; /* 0: a free slot */
        unsigned fails;
        double last_fail, not_before; /* snap_mono(): a wall-clock step must not stretch it */
    } backoff[RAFT_MAX_NODES];
    struct snap_out out[RAFT_MAX_NODES];
    struct snap_in in;
};

/* Stray frames (unknown streams) come from restarted or confused peers, or from an attacker:
 * say so, at most SNAP_WARN_BURST times per SNAP_WARN_WINDOW_S. */
#define SNAP_WARN_BURST 5
#define SNAP_WARN_WINDOW_S 10.0
static bool snap_warn_allow(struct node *n)
{
    struct node_snap *s = n->snap;
    ev_tstamp now = ev_now(n->loop);
    if (now - s->warn_window >= SNAP_WARN_WINDOW_S) {
        s->warn_window = now;
        s->warns = 0;
    }
    return s->warns++ < SNAP_WARN_BURST;
}

static double snap_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double snap_mb(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void snap_peer_name(struct node *n, raft_id id, char *name, size_t len)
{
    char http[CONFIG_ADDR_MAX];
    if (!node_member_http(n, id, name, len, http, sizeof http))
        snprintf(name, len, "%016" PRIx64, id);
}

/* ---- Outgoing streams (leader) ----------------------------------------------------------- */
static struct snap_out *snap_out_find(struct node_snap *s, raft_id peer)
{
    for (size_t i = 0; i < RAFT_MAX_NODES; i++)
        if (s->out[i].used && s->out[i].peer == peer) return &s->out[i];
    return NULL;
}

static void snap_out_free(struct snap_out *o)
{
    if (o->rd) fsm_snap_reader_close(o->rd);
    raft_blob_unref(o->pending);
    memset(o, 0, sizeof *o);
}

/* The backoff slot of peer (taking a free one, or reusing the oldest), never NULL. */
static struct snap_backoff *snap_backoff_of(struct node_snap *s, raft_id peer)
{
    struct snap_backoff *b = &s->backoff[0];
    for (size_t i = 0; i < RAFT_MAX_NODES; i++) {
        if (s->backoff[i].peer == peer) return &s->backoff[i];
        if (s->backoff[i].not_before < b->not_before) b = &s->backoff[i];
    }
    memset(b, 0, sizeof *b);
    b->peer = peer;
    return b;
}

static void snap_backoff_note(struct node *n, raft_id peer, bool ok)
{
    struct snap_backoff *b = snap_backoff_of(n->snap, peer);
    if (ok) {
        b->fails = 0;
        b->not_before = 0;
        return;
    }
    double now = snap_mono();
    if (now - b->last_fail > 2 * SNAP_BACKOFF_MAX_S) b->fails = 0; /* an old streak is over */
    double wait = SNAP_BACKOFF_MIN_S;
    for (unsigned i = 0; i < b->fails && wait < SNAP_BACKOFF_MAX_S; i++)
        wait *= 2;
    if (wait > SNAP_BACKOFF_MAX_S) wait = SNAP_BACKOFF_MAX_S;
    b->fails++;
    b->last_fail = now;
    b->not_before = now + wait;
}

/* Ends o. ok: the follower installed the state at `index`. */
static void snap_out_end(struct node *n, struct snap_out *o, bool ok, raft_index index,
                         const char *why)
{
    double secs = ev_now(n->loop) - o->started;
    if (ok) {
        n->m.snapshots_sent++;
        LOG_INFO("snapshot: sent to %s: installed at %" PRIu64 ", %.1f MiB in %.1f s (%.2f s "
                 "reading the store, %.2f s waiting with the window full)",
                 o->name, index, snap_mb(o->sent), secs, o->read_s, o->full_s);
    } else {
        n->m.snapshots_failed++;
        LOG_WARN("snapshot: stream to %s at %" PRIu64 " aborted after %.1f MiB, %.1f s: %s",
                 o->name, o->index, snap_mb(o->sent), secs, why);
    }
    raft_id peer = o->peer;
    raft_index s_index = o->index;
    snap_out_free(o);
    snap_backoff_note(n, peer, ok);
    raft_report_snapshot(n->raft, peer, ok ? index : s_index, ok);
}

/* The next chunk's bytes from the store: up to SNAP_CHUNK, within a small time budget. */
static int snap_out_read(struct snap_out *o, struct raft_blob **out, bool *done)
{
    struct raft_blob *b = raft_blob_new(SNAP_CHUNK);
    if (!b) return ERR_NOMEM;
    size_t have = 0;
    *done = false;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double el = 0;
    while (have < SNAP_CHUNK && !*done) {
        size_t len = 0;
        int rv = fsm_snap_reader_next(o->rd, b->data + have, SNAP_CHUNK - have, &len, done);
        if (rv) {
            raft_blob_unref(b);
            return rv;
        }
        have += len;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (el >= SNAP_FILL_BUDGET_S) break;
    }
    o->read_s += el;
    b->len = (uint32_t)have; /* only shrinks: the allocation stays SNAP_CHUNK */
    *out = b;
    return 0;
}

/* Sends chunks while the window has room. Returns false when o ended. */
static bool snap_out_fill(struct node *n, struct snap_out *o)
{
    while (!o->last_sent && o->sent - o->acked < (uint64_t)SNAP_WINDOW * SNAP_CHUNK) {
        if (!o->pending) {
            int rv = snap_out_read(o, &o->pending, &o->pending_last);
            if (rv) {
                snap_out_end(n, o, false, 0, err_str(rv));
                return false;
            }
            if (o->pending->len == 0 && !o->pending_last) return true; /* slow store: later */
        }
        struct codec_snap_chunk c = {.session = o->session,
                                     .term = o->term,
                                     .index = o->index,
                                     .offset = o->sent,
                                     .last = o->pending_last};
        int rv = transport_send_snap_chunk(n->tr, o->peer, &c, o->pending);
        if (rv == ERR_BUSY) return true; /* the queue is full of other frames: the timer retries */
        if (rv) {
            snap_out_end(n, o, false, 0, err_str(rv));
            return false;
        }
        o->sent += o->pending->len;
        n->m.snapshot_bytes_sent += o->pending->len;
        o->last_sent = o->pending_last;
        raft_blob_unref(o->pending);
        o->pending = NULL;
    }
    if (!o->last_sent && !o->full_since) o->full_since = snap_mono();
    return true;
}

static void snap_out_start(struct node *n, const struct raft_msg *m, struct snap_out *o)
{
    struct node_snap *s = n->snap;
    raft_index index = fsm_applied(n->fsm);
    raft_term term = 0;
    struct raft_configuration conf;
    struct raft_blob *conf_blob = NULL;
    int rv = raft_snapshot_meta(n->raft, index, &term, &conf);
    if (rv == 0) rv = raft_configuration_encode(&conf, &conf_blob);
    struct fsm_snap_reader *rd = NULL;
    if (rv == 0) rv = fsm_snap_reader_open(n->fsm, index, term, conf_blob, &rd);
    raft_blob_unref(conf_blob);
    char name[CONFIG_ID_MAX];
    snap_peer_name(n, m->to, name, sizeof name);
    if (rv) {
        /* ERR_BUSY: the file store is still replaying after a restart; the core asks again. */
        if (rv == ERR_BUSY)
            LOG_DEBUG("snapshot: cannot start a stream to %s yet: %s", name, err_str(rv));
        else
            LOG_WARN("snapshot: cannot start a stream to %s at %" PRIu64 ": %s", name, index,
                     err_str(rv));
        raft_report_snapshot(n->raft, m->to, m->index, false);
        return;
    }
    /* Ids grow over time, also across restarts: a follower prefers the newest stream. */
    uint64_t now_us = (uint64_t)(ev_time() * 1e6);
    s->last_session = now_us > s->last_session ? now_us : s->last_session + 1;
    memset(o, 0, sizeof *o);
    o->used = true;
    o->peer = m->to;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->session = s->last_session;
    o->term = m->term;
    o->index = index;
    o->rd = rd;
    o->started = o->progress = ev_now(n->loop);
    LOG_INFO("snapshot: streaming the file store to %s at %" PRIu64 " (term %" PRIu64
             "; its log needs entries up to our snapshot point %" PRIu64 ")",
             name, index, term, m->index);
    snap_out_fill(n, o);
}

void node_snap_on_request(struct node *n, const struct raft_msg *m)
{
    struct node_snap *s = n->snap;
    if (snap_out_find(s, m->to)) return; /* still streaming (the core re-asks after a while) */
    if (snap_mono() < snap_backoff_of(s, m->to)->not_before) {
        /* The last stream to it failed just now; the core asks again after its next probe. */
        raft_report_snapshot(n->raft, m->to, m->index, false);
        return;
    }
    if (!transport_peer_connected(n->tr, m->to)) {
        /* Nothing to stream over; the core asks again after its next probe. */
        raft_report_snapshot(n->raft, m->to, m->index, false);
        return;
    }
    for (size_t i = 0; i < RAFT_MAX_NODES; i++)
        if (!s->out[i].used) {
            snap_out_start(n, m, &s->out[i]);
            return;
        }
    raft_report_snapshot(n->raft, m->to, m->index, false);
}

raft_index node_snap_out_floor(const struct node *n)
{
    raft_index floor = UINT64_MAX;
    if (!n->snap) return floor;
    for (size_t i = 0; i < RAFT_MAX_NODES; i++)
        if (n->snap->out[i].used && n->snap->out[i].index < floor) floor = n->snap->out[i].index;
    return floor;
}

void node_snap_on_role(struct node *n)
{
    struct node_snap *s = n->snap;
    if (!s) return;
    for (size_t i = 0; i < RAFT_MAX_NODES; i++)
        if (s->out[i].used && (n->role != RAFT_LEADER || n->term != s->out[i].term))
            snap_out_end(n, &s->out[i], false, 0, "no longer the leader of that term");
}

static void snap_out_ack(struct node *n, struct snap_out *o, const struct codec_snap_ack *a)
{
    if (a->status == CODEC_SNAP_ABORT) {
        char why[CODEC_STR_MAX + 32];
        snprintf(why, sizeof why, "refused by the follower: %s", a->reason);
        snap_out_end(n, o, false, 0, why);
        return;
    }
    if (a->offset > o->sent || a->offset < o->acked) {
        snap_out_end(n, o, false, 0, "acknowledgement out of range");
        return;
    }
    o->acked = a->offset;
    o->progress = ev_now(n->loop);
    if (o->full_since) {
        o->full_s += snap_mono() - o->full_since;
        o->full_since = 0;
    }
    if (a->status == CODEC_SNAP_INSTALLED) {
        if (!o->last_sent || a->offset != o->sent || a->index != o->index)
            snap_out_end(n, o, false, 0, "install reported before the end of the stream");
        else
            snap_out_end(n, o, true, a->index, NULL);
        return;
    }
    snap_out_fill(n, o);
}

/* ---- Incoming stream (follower) ---------------------------------------------------------- */
static void snap_send_ack(struct node *n, raft_id to, uint64_t session, uint64_t offset,
                          uint8_t status, raft_index index, const char *reason)
{
    struct codec_snap_ack a = {
        .session = session, .term = n->term, .offset = offset, .status = status, .index = index};
    snprintf(a.reason, sizeof a.reason, "%s", reason ? reason : "");
    int rv = transport_send_snap_ack(n->tr, to, &a);
    if (rv) LOG_DEBUG("snapshot: ack to %016" PRIx64 ": %s", to, err_str(rv));
}

static void snap_in_drop(struct snap_in *in)
{
    if (in->wr) fsm_snap_writer_abort(in->wr);
    memset(in, 0, sizeof *in);
}

/* Drops the incoming stream and tells its sender why (when tell). */
static void snap_in_abort(struct node *n, const char *why, bool tell)
{
    struct snap_in *in = &n->snap->in;
    LOG_WARN("snapshot: dropping the stream from %s at %" PRIu64 " after %.1f MiB: %s", in->name,
             in->index, snap_mb(in->received), why);
    if (tell) snap_send_ack(n, in->from, in->session, in->received, CODEC_SNAP_ABORT, 0, why);
    snap_in_drop(in);
}

/* Installs the completely received stream, or refuses it. */
static void snap_in_finish(struct node *n)
{
    struct snap_in *in = &n->snap->in;
    struct fsm_snap_meta info;
    int rv = fsm_snap_writer_finish(in->wr, &info);
    if (rv) {
        snap_in_abort(n, err_str(rv), true);
        return;
    }
    n->m.snapshots_received++;
    struct raft_configuration conf;
    bool conf_ok =
        info.conf && raft_configuration_decode(info.conf->data, info.conf->len, &conf) == 0;
    raft_blob_unref(info.conf);
    if (!conf_ok) {
        snap_in_abort(n, "undecodable configuration", true);
        return;
    }
    if (!raft_snapshot_acceptable(n->raft, in->term, info.index)) {
        snap_in_abort(n, "not acceptable (stale term, or not beyond our commit index)", true);
        return;
    }
    LOG_INFO("snapshot: installing the stream from %s: index %" PRIu64 " (term %" PRIu64
             "), window to %" PRIu64 ", %.1f MiB",
             in->name, info.index, info.term, info.index_end, snap_mb(in->received));
    rv = fsm_snap_install(n->fsm, in->wr);
    in->wr = NULL; /* consumed, also on error */
    if (rv) {
        snap_in_drop(in);
        node_fail(n, "installing a snapshot into the file store failed");
        return;
    }
    if (n->snap->crash_after_install) {
        LOG_WARN("snapshot: RAFTFS_TEST_SNAP_CRASH: exiting between the two installs");
        _exit(9);
    }
    rv = raft_install_snapshot(n->raft, in->from, in->term, info.index, info.term, &conf);
    if (rv) {
        /* files/ moved to S while the core refused: a restart repairs the raft store from
         * fsm_snap_info (node_snap_boot). */
        snap_in_drop(in);
        node_fail(n, "the raft core refused an installed snapshot");
        return;
    }
    n->applied = fsm_applied(n->fsm);
    n->m.snapshots_installed++;
    double secs = ev_now(n->loop) - in->started;
    LOG_INFO("snapshot: installed at %" PRIu64 " from %s (%.1f MiB in %.1f s, %.1f MiB/s)",
             info.index, in->name, snap_mb(in->received), secs,
             secs > 0 ? snap_mb(in->received) / secs : 0.0);
    snap_send_ack(n, in->from, in->session, in->received, CODEC_SNAP_INSTALLED, info.index, NULL);
    snap_in_drop(in);
}

/* A chunk at offset 0 of a session we are not receiving: start it, or refuse it. */
static bool snap_in_begin(struct node *n, raft_id from, const struct codec_snap_chunk *c)
{
    struct snap_in *in = &n->snap->in;
    if (n->snap->refuse_all) {
        snap_send_ack(n, from, c->session, 0, CODEC_SNAP_ABORT, 0,
                      "refusing every stream (RAFTFS_TEST_SNAP_REFUSE)");
        return false;
    }
    if (in->active) {
        bool newer = c->term > in->term || (c->term == in->term && c->session > in->session);
        if (!newer) {
            snap_send_ack(n, from, c->session, 0, CODEC_SNAP_ABORT, 0,
                          "another snapshot is being received");
            return false;
        }
        snap_in_abort(n, "replaced by a newer stream", true);
    }
    struct fsm_snap_writer *wr = NULL;
    int rv = fsm_snap_writer_open(n->fsm, &wr);
    if (rv) {
        LOG_WARN("snapshot: cannot stage a stream: %s", err_str(rv));
        snap_send_ack(n, from, c->session, 0, CODEC_SNAP_ABORT, 0, err_str(rv));
        return false;
    }
    memset(in, 0, sizeof *in);
    in->active = true;
    in->from = from;
    snap_peer_name(n, from, in->name, sizeof in->name);
    in->session = c->session;
    in->term = c->term;
    in->index = c->index;
    in->wr = wr;
    in->started = in->progress = ev_now(n->loop);
    LOG_INFO("snapshot: receiving a stream from %s at %" PRIu64 " (term %" PRIu64 ")", in->name,
             c->index, c->term);
    return true;
}

void node_snap_chunk_cb(void *ctx, raft_id from, const struct codec_snap_chunk *c)
{
    struct node *n = ctx;
    struct snap_in *in = &n->snap->in;
    if (n->stopping) return;
    if (c->term < n->term) {
        snap_send_ack(n, from, c->session, 0, CODEC_SNAP_ABORT, 0, "stale term");
        return;
    }
    bool ours = in->active && in->from == from && in->session == c->session;
    if (!ours) {
        if (c->offset != 0) {
            if (snap_warn_allow(n))
                LOG_WARN("snapshot: chunk at offset %" PRIu64 " of an unknown stream %" PRIx64
                         " from %016" PRIx64 " refused",
                         c->offset, c->session, from);
            snap_send_ack(n, from, c->session, 0, CODEC_SNAP_ABORT, 0, "unknown session");
            return;
        }
        if (!snap_in_begin(n, from, c)) return;
    } else if (c->offset != in->received) {
        snap_in_abort(n, "a gap in the stream", true);
        return;
    }
    int rv = fsm_snap_writer_put(in->wr, c->bytes, c->len);
    if (rv) {
        char why[96];
        snprintf(why, sizeof why, "bad stream: %s", err_str(rv));
        snap_in_abort(n, why, true);
        return;
    }
    in->received += c->len;
    in->progress = ev_now(n->loop);
    n->m.snapshot_bytes_received += c->len;
    if (c->last)
        snap_in_finish(n);
    else
        snap_send_ack(n, from, in->session, in->received, CODEC_SNAP_OK, 0, NULL);
}

void node_snap_ack_cb(void *ctx, raft_id from, const struct codec_snap_ack *a)
{
    struct node *n = ctx;
    struct snap_out *o = snap_out_find(n->snap, from);
    if (!o || o->session != a->session) {
        if (snap_warn_allow(n))
            LOG_WARN("snapshot: ack for an unknown stream %" PRIx64 " from %016" PRIx64 " ignored",
                     a->session, from);
        return;
    }
    snap_out_ack(n, o, a);
}

void node_snap_link_down_cb(void *ctx, raft_id peer)
{
    struct node *n = ctx;
    struct node_snap *s = n->snap;
    struct snap_out *o = snap_out_find(s, peer);
    if (o) snap_out_end(n, o, false, 0, "the link to the follower went down");
    if (s->in.active && s->in.from == peer)
        snap_in_abort(n, "the link to the leader went down", false);
}

/* ---- Timeouts ---------------------------------------------------------------------------- */
static void snap_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct node_snap *s = w->data;
    struct node *n = s->n;
    ev_tstamp now = ev_now(loop);
    for (size_t i = 0; i < RAFT_MAX_NODES; i++) {
        struct snap_out *o = &s->out[i];
        if (!o->used) continue;
        bool installing = o->last_sent && o->acked == o->sent;
        double limit = installing ? SNAP_INSTALL_TIMEOUT_S : SNAP_IDLE_TIMEOUT_S;
        if (now - o->progress > limit)
            snap_out_end(n, o, false, 0, "no acknowledgement in time");
        else
            snap_out_fill(n, o);
    }
    if (s->in.active && now - s->in.progress > SNAP_IDLE_TIMEOUT_S)
        snap_in_abort(n, "no chunk in time", true);
    /* The file store's checkpoint moves on its own thread: a quiet node compacts too. */
    node_compact_maybe(n);
}

/* ---- Lifecycle --------------------------------------------------------------------------- */
int node_snap_init(struct node *n)
{
    struct node_snap *s = calloc(1, sizeof *s);
    if (!s) return ERR_NOMEM;
    s->n = n;
    const char *crash = getenv("RAFTFS_TEST_SNAP_CRASH");
    s->crash_after_install = crash && strcmp(crash, "after_fsm_install") == 0;
    const char *refuse = getenv("RAFTFS_TEST_SNAP_REFUSE");
    s->refuse_all = refuse && strcmp(refuse, "1") == 0;
    ev_timer_init(&s->timer, snap_timer_cb, SNAP_TIMER_S, SNAP_TIMER_S);
    s->timer.data = s;
    ev_timer_start(n->loop, &s->timer);
    n->snap = s;
    return 0;
}

void node_snap_close(struct node *n)
{
    struct node_snap *s = n->snap;
    if (!s) return;
    ev_timer_stop(n->loop, &s->timer);
    for (size_t i = 0; i < RAFT_MAX_NODES; i++)
        if (s->out[i].used) snap_out_free(&s->out[i]);
    snap_in_drop(&s->in);
    free(s);
    n->snap = NULL;
}

/* ---- Boot repair ------------------------------------------------------------------------- */
/* Does the loaded log hold (index, term)? */
static bool snap_log_has(const struct raft_boot *b, raft_index index, raft_term term)
{
    if (index == b->snapshot_index) return term == b->snapshot_term;
    if (index < b->snapshot_index || index - b->snapshot_index > b->n_entries) return false;
    return b->entries[index - b->snapshot_index - 1].term == term;
}

int node_snap_boot(struct node *n, struct raft_boot *boot, char *err, size_t err_len)
{
    int rv = store_load(n->store, boot);
    if (rv) {
        snprintf(err, err_len, "loading the raft log: %s", err_str(rv));
        return rv;
    }
    struct fsm_snap_meta info = {0};
    rv = fsm_snap_info(n->fsm, &info);
    if (rv == ERR_NOTFOUND) return 0;
    if (rv) {
        snprintf(err, err_len, "reading the file store's snapshot record: %s", err_str(rv));
        return rv;
    }
    if (info.index <= boot->snapshot_index || snap_log_has(boot, info.index, info.term)) {
        raft_blob_unref(info.conf);
        return 0;
    }
    /* The file store installed a snapshot at S that the raft store never heard of (a crash
     * before the core's reset was persisted): the raft log before and around S is not ours. */
    LOG_WARN("snapshot: the file store holds an installed snapshot at %" PRIu64
             " the raft log lacks (log snapshot point %" PRIu64 "); resetting the raft log to it",
             info.index, boot->snapshot_index);
    store_boot_free(boot);
    rv = store_reset_sync(n->store, info.index, info.term, info.conf);
    raft_blob_unref(info.conf);
    if (rv == 0) rv = store_load(n->store, boot);
    if (rv)
        snprintf(err, err_len, "resetting the raft log to the installed snapshot: %s", err_str(rv));
    return rv;
}
