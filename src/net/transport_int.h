/* transport_int.h — the transport's private state, shared by transport.c (lifecycle, API),
 * transport_out.c (dialing, send queues) and transport_in.c (listener, inbound frames). */
#ifndef RAFTFS_TRANSPORT_INT_H
#define RAFTFS_TRANSPORT_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "transport.h"

#define TRANSPORT_BACKOFF_MIN_S 0.05
#define TRANSPORT_BACKOFF_MAX_S 1.0
#define TRANSPORT_CONNECT_TIMEOUT_S 3.0
#define TRANSPORT_HANDSHAKE_TIMEOUT_S 5.0
#define TRANSPORT_STABLE_S 2.0 /* a link up this long resets the backoff when it fails */
#define TRANSPORT_EMFILE_PAUSE_S 0.1
#define TRANSPORT_KEEPIDLE_S 5
#define TRANSPORT_KEEPINTVL_S 2
#define TRANSPORT_KEEPCNT 3
#define TRANSPORT_USER_TIMEOUT_MS 10000
/* Before the HELLO, a frame larger than this closes the connection: strangers never make
 * us buffer more than a few KiB. */
#define TRANSPORT_HELLO_FRAME_MAX 4096
#define TRANSPORT_READ_CHUNK (64u << 10)
#define TRANSPORT_READ_BUDGET (4u << 20) /* bytes per read callback, for fairness */
/* An inbound buffer up to this size is kept after its frame is gone: one SNAP_CHUNK frame
 * fits, so a snapshot stream reuses its buffer instead of shrinking and regrowing it per
 * chunk (fresh pages: ~3% of a catch-up's CPU in page faults). Larger ones are given back. */
#define TRANSPORT_KEEP_BYTES (2 * (CODEC_HDR_BYTES + CODEC_SNAP_CHUNK_HEAD + CODEC_SNAP_CHUNK_MAX))
#define TRANSPORT_IOV_MAX 64

#define TRANSPORT_CONTAINER_OF(ptr, type, member)                                                  \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct transport_qframe {
    struct transport_qframe *next;
    struct codec_frame f;
};

enum transport_link { TRANSPORT_DOWN = 0, TRANSPORT_CONNECTING, TRANSPORT_UP };

struct transport_peer {
    struct transport *t;
    bool used;
    raft_id id;
    char name[CODEC_STR_MAX + 1];
    char addr[CODEC_STR_MAX + 1];
    enum transport_link state;
    int fd;         /* -1 unless CONNECTING or UP */
    ev_io rio;      /* UP: notices EOF (the acceptor never writes) */
    ev_io wio;      /* CONNECTING: completion; UP: queue non-empty */
    ev_timer timer; /* DOWN: next dial; CONNECTING: connect timeout */
    struct transport_qframe *head, *tail;
    size_t queued_bytes; /* unsent bytes of the queued frames */
    size_t seg_idx;      /* write position inside head */
    size_t seg_off;
    double backoff_s;
    ev_tstamp up_since;
    unsigned fails; /* consecutive failed attempts (for quiet logging) */
    bool flush_due; /* UP, frames queued since the last flush and wio idle: write at prepare */
};

struct transport_conn {
    struct transport *t;
    bool used;
    bool hello_done;
    int fd;
    ev_io rio;
    ev_timer timer; /* handshake deadline */
    raft_id peer_id;
    char peer_name[CODEC_STR_MAX + 1];
    char remote[64]; /* "ip:port" for logs */
    uint8_t *buf;    /* bytes of the frame(s) being received */
    size_t len;
    size_t cap;
};

/* At most TRANSPORT_LOG_BURST warnings per window; the rest are counted and summarised. */
#define TRANSPORT_LOG_BURST 10
#define TRANSPORT_LOG_WINDOW_S 10.0
struct transport_ratelimit {
    ev_tstamp start;
    unsigned n;
    unsigned suppressed;
};

struct transport {
    struct ev_loop *loop;
    struct transport_ops ops;
    void *ctx;
    char cluster[CODEC_STR_MAX + 1];
    char self_name[CODEC_STR_MAX + 1];
    char self_addr[CODEC_STR_MAX + 1];
    raft_id self_id;
    int lfd;
    uint16_t port;
    ev_io lio;
    ev_timer ltimer; /* re-arms the listener after EMFILE */
    /* Writes the frames queued during this loop turn, once every other prepare watcher (the
     * node's ready drain) has queued its own: always active, at the lowest priority. */
    ev_prepare flush;
    unsigned flush_due; /* peers with flush_due set */
    uint64_t rng;
    struct transport_ratelimit in_log;
    struct transport_stats stats;
    struct transport_peer peers[TRANSPORT_MAX_PEERS];
    struct transport_conn conns[TRANSPORT_MAX_INBOUND];
};

/* transport.c */
bool transport_log_allow(struct transport *t, struct transport_ratelimit *rl);
/* Splits "host:port" / "[v6]:port". ERR_INVALID. */
int transport_split_addr(const char *addr, char *host, size_t host_len, char *port,
                         size_t port_len);
/* Non-blocking, close-on-exec, TCP_NODELAY, SO_KEEPALIVE. */
void transport_tune_socket(int fd);
double transport_jitter(struct transport *t);

/* transport_out.c */
void transport_peer_start(struct transport_peer *p);
void transport_peer_stop(struct transport_peer *p);
/* Takes ownership of q. ERR_BUSY when the queue is over its cap (q freed). */
int transport_peer_enqueue(struct transport_peer *p, struct transport_qframe *q);
/* The flush prepare watcher's callback: writes every peer marked flush_due. */
void transport_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents);

/* transport_in.c */
int transport_listen(struct transport *t, const char *listen_addr, char *err, size_t err_len);
void transport_listen_close(struct transport *t);

#endif
