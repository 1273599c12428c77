/* codec.h — the peer wire format: framing plus encoders/decoders for HELLO, RAFT, FWD_REQ,
 * FWD_RESP, SNAP_CHUNK and SNAP_ACK. Pure (no I/O, no clock, no globals) so it can be fuzzed; it
 * must never read out of bounds or allocate more than the frame length it was given justifies.
 *
 * Frame = 12-byte header + payload. Header (all integers big-endian):
 *   u32 payload length | u8 version (CODEC_VERSION) | u8 type | u16 flags |
 *   u32 CRC-32 (zlib) of the payload
 * flags is 0, except on SNAP_CHUNK, where it is always CODEC_FLAG_CRC_HEAD: the CRC covers
 * only the chunk's fixed fields (its first CODEC_SNAP_CHUNK_HEAD payload bytes). Its stream
 * bytes are records that carry their own CRC-32s, which the receiver checks end to end
 * (src/fsm/fsm_snap_fmt.h): checksumming them twice on each side cost ~20% of a catch-up's
 * CPU. A flipped stream byte thus aborts the stream rather than the connection.
 * Payloads (strings are u16 length + bytes, no NUL inside, at most CODEC_STR_MAX bytes):
 *   HELLO    str cluster | str name | u64 raft_id | str raft_addr
 *   RAFT     u8 type | u8 flags (bit0 reject, bit1 transfer) | u64 from, to, term, index, log_term,
 * commit, hint, ctx | u32 n_entries | n x entry entry: u64 term | u64 index | u8 type | u8 flags
 * (bit0 has data) | u32 len | len bytes (len == 0 when there is no data) FWD_REQ  u64 fwd_id | u8
 * op | u32 len | len bytes FWD_RESP u64 fwd_id | u32 err | u64 index | u64 term | str leader_name
 *   SNAP_CHUNK (leader -> follower, one InstallSnapshot stream in order)
 *            u64 session | u64 term | u64 index | u64 offset | u8 flags (bit0 last) |
 *            u32 len (<= CODEC_SNAP_CHUNK_MAX) | len bytes
 *   SNAP_ACK (follower -> leader)
 *            u64 session | u64 term | u64 offset | u8 status | u64 index | str reason
 *            status OK: every byte < offset was received; INSTALLED: the snapshot at index
 *            is installed; ABORT: the follower dropped the session (reason says why).
 */
#ifndef RAFTFS_CODEC_H
#define RAFTFS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define CODEC_VERSION 1
#define CODEC_HDR_BYTES 12
/* Whole frame (header + payload): a 64 MiB HTTP body plus generous overhead. */
#define CODEC_MAX_FRAME_BYTES (80u << 20)
#define CODEC_STR_MAX 255 /* names, cluster, addresses on the wire */

enum codec_type {
    CODEC_HELLO = 1,
    CODEC_RAFT = 2,
    CODEC_FWD_REQ = 3,
    CODEC_FWD_RESP = 4,
    CODEC_SNAP_CHUNK = 5,
    CODEC_SNAP_ACK = 6,
    CODEC_TYPE__COUNT
};

/* Operations a follower forwards to the leader. */
enum codec_fwd_op {
    CODEC_FWD_PROPOSE = 1,
    CODEC_FWD_JOIN = 2,
    CODEC_FWD_REMOVE = 3,
    CODEC_FWD_TRANSFER = 4,
};

struct codec_frame_hdr {
    uint32_t len; /* payload bytes; the frame is CODEC_HDR_BYTES + len */
    uint8_t version;
    uint8_t type; /* enum codec_type */
    uint16_t flags;
    uint32_t checksum; /* CRC-32 of the payload */
};

struct codec_hello {
    char cluster[CODEC_STR_MAX + 1];
    char name[CODEC_STR_MAX + 1]; /* sender's node name, e.g. "node1" */
    raft_id id;                   /* sender's raft id */
    char addr[CODEC_STR_MAX + 1]; /* sender's raft address "host:port" */
};

struct codec_fwd_req {
    uint64_t fwd_id;
    uint8_t op;                /* enum codec_fwd_op */
    struct raft_blob *payload; /* decoded: never NULL (len may be 0), one reference owned */
};

struct codec_fwd_resp {
    uint64_t fwd_id;
    uint32_t err; /* ERR_* code */
    raft_index index;
    raft_term term;
    char leader_name[CODEC_STR_MAX + 1]; /* hint; may be empty */
};

/* Snapshot stream bytes per SNAP_CHUNK: small enough that a few chunks in flight never
 * crowd out heartbeats, large enough that per-frame costs vanish. */
#define CODEC_SNAP_CHUNK_MAX (256u << 10)
#define CODEC_SNAP_LAST 0x01u
/* SNAP_CHUNK frames: u64 session, term, index, offset | u8 flags | u32 len, then the bytes. */
#define CODEC_SNAP_CHUNK_HEAD 37
#define CODEC_FLAG_CRC_HEAD 0x0001u /* header flag: see the format comment at the top */

struct codec_snap_chunk {
    uint64_t session; /* the sender's stream id (ids grow over time) */
    raft_term term;   /* the sender's (leader's) term */
    raft_index index; /* S: the snapshot's index */
    uint64_t offset;  /* of bytes[0] in the stream */
    bool last;        /* the stream ends with these bytes */
    uint32_t len;
    const uint8_t *bytes; /* decoded: borrowed from the payload; encoded: see encoders */
};

enum codec_snap_status {
    CODEC_SNAP_OK = 0,        /* progress: bytes below offset are in */
    CODEC_SNAP_ABORT = 1,     /* the receiver gave up; reason says why */
    CODEC_SNAP_INSTALLED = 2, /* the state at index is installed */
};

struct codec_snap_ack {
    uint64_t session;
    raft_term term; /* the receiver's term */
    uint64_t offset;
    uint8_t status; /* enum codec_snap_status */
    raft_index index;
    char reason[CODEC_STR_MAX + 1]; /* ABORT: why; "" otherwise */
};

/* ---- Contiguous output buffer ------------------------------------------------------------ */
struct codec_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void codec_buf_init(struct codec_buf *b);
void codec_buf_free(struct codec_buf *b);
/* Makes room for extra more bytes. ERR_NOMEM. */
int codec_buf_reserve(struct codec_buf *b, size_t extra);

/* ---- Scatter output: a frame whose large payloads stay in their blobs ----------------------
 * The transport queues these so a 64 MiB entry is sent by reference, never copied. The
 * frame's bytes are the concatenation of segs[] in order; a segment either points into
 * inline (blob == NULL) or holds one reference to a blob. */
struct codec_seg {
    struct raft_blob *blob; /* NULL: bytes [off, off + len) of inline */
    size_t off;
    size_t len;
};

struct codec_frame {
    struct codec_buf inline_bytes; /* the header and every copied byte */
    struct codec_seg *segs;
    size_t n_segs;
    size_t cap_segs;
    size_t total;   /* frame bytes (header included) */
    size_t ref_min; /* blob payloads of at least this many bytes are referenced */
};

/* ref_min: SIZE_MAX copies every payload (one inline segment). */
void codec_frame_init(struct codec_frame *f, size_t ref_min);
/* Drops the blob references and the memory. The frame may be re-initialised afterwards. */
void codec_frame_free(struct codec_frame *f);

/* Each encoder builds one whole frame into a freshly initialised f (on error f is left
 * empty but still needs codec_frame_free). ERR_NOMEM, ERR_TOOBIG (frame over the maximum),
 * ERR_INVALID (a string over CODEC_STR_MAX, an unknown type or op, a NULL entries array). */
int codec_frame_hello(struct codec_frame *f, const struct codec_hello *h);
int codec_frame_msg(struct codec_frame *f, const struct raft_msg *m);
/* payload may be NULL (sent as empty); borrowed (the frame takes its own reference). */
int codec_frame_fwd_req(struct codec_frame *f, uint64_t fwd_id, uint8_t op,
                        struct raft_blob *payload);
int codec_frame_fwd_resp(struct codec_frame *f, const struct codec_fwd_resp *r);
/* The chunk's bytes come from data (NULL: none; c->len and c->bytes are ignored), referenced
 * when the frame's ref_min allows. ERR_TOOBIG when data is over CODEC_SNAP_CHUNK_MAX. */
int codec_frame_snap_chunk(struct codec_frame *f, const struct codec_snap_chunk *c,
                           struct raft_blob *data);
/* ERR_INVALID for an unknown status or a reason over CODEC_STR_MAX. */
int codec_frame_snap_ack(struct codec_frame *f, const struct codec_snap_ack *a);

/* Contiguous versions: append one whole frame to out (errors as above; out unchanged). */
int codec_encode_hello(const struct codec_hello *h, struct codec_buf *out);
int codec_encode_msg(const struct raft_msg *m, struct codec_buf *out);
int codec_encode_fwd_req(uint64_t fwd_id, uint8_t op, struct raft_blob *payload,
                         struct codec_buf *out);
int codec_encode_fwd_resp(const struct codec_fwd_resp *r, struct codec_buf *out);
/* Copies c->len bytes from c->bytes. */
int codec_encode_snap_chunk(const struct codec_snap_chunk *c, struct codec_buf *out);
int codec_encode_snap_ack(const struct codec_snap_ack *a, struct codec_buf *out);

/* ---- Parsing ------------------------------------------------------------------------------ */
/* Looks at the bytes received so far (buf, len), which start at a frame boundary.
 *   0, *need == 0: a whole frame with a valid checksum; its payload is
 *                  buf[CODEC_HDR_BYTES .. CODEC_HDR_BYTES + hdr->len).
 *   0, *need > len: incomplete; *need is the total byte count required to progress.
 *   ERR_PROTO: bad version, type or flags (only SNAP_CHUNK has one, always set). ERR_TOOBIG: frame over max_frame (pass
 *   CODEC_MAX_FRAME_BYTES, or less before a handshake). ERR_CORRUPT: checksum mismatch.
 * Header errors are reported as soon as the header is complete, before the payload. */
int codec_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, struct codec_frame_hdr *hdr,
                      size_t *need);

/* Decoders take the payload of one frame of the matching type. ERR_PROTO for truncated,
 * overlong or inconsistent input; ERR_NOMEM. On error *out holds nothing to free. */
int codec_decode_hello(const uint8_t *p, size_t len, struct codec_hello *out);
/* On success out->entries (NULL when n_entries == 0) and each entry's data are owned by out:
 * release with codec_msg_free(). */
int codec_decode_msg(const uint8_t *p, size_t len, struct raft_msg *out);
void codec_msg_free(struct raft_msg *m);
/* On success out->payload holds one reference: release with codec_fwd_req_free(). */
int codec_decode_fwd_req(const uint8_t *p, size_t len, struct codec_fwd_req *out);
void codec_fwd_req_free(struct codec_fwd_req *r);
int codec_decode_fwd_resp(const uint8_t *p, size_t len, struct codec_fwd_resp *out);
/* out->bytes points into p (valid while p is). Refuses len over CODEC_SNAP_CHUNK_MAX, unknown
 * flags, session 0. */
int codec_decode_snap_chunk(const uint8_t *p, size_t len, struct codec_snap_chunk *out);
/* Refuses an unknown status, session 0, a reason on a non-ABORT status. */
int codec_decode_snap_ack(const uint8_t *p, size_t len, struct codec_snap_ack *out);

const char *codec_type_str(uint8_t type);

#endif
