/* codec_io.h — the codec's private writer (into a codec_frame) and bounds-checked reader.
 * Only codec_frame.c and codec.c include this; nothing here touches a socket. */
#ifndef RAFTFS_CODEC_IO_H
#define RAFTFS_CODEC_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* Writer: the first error sticks and every later put is a no-op, so encoders check once. */
struct codec_w {
    struct codec_frame *f;
    int err;
};

void codec_w_begin(struct codec_w *w, struct codec_frame *f);
void codec_w_u8(struct codec_w *w, uint8_t v);
void codec_w_u16(struct codec_w *w, uint16_t v);
void codec_w_u32(struct codec_w *w, uint32_t v);
void codec_w_u64(struct codec_w *w, uint64_t v);
/* A string as u16 length + bytes; ERR_INVALID when longer than CODEC_STR_MAX. */
void codec_w_str(struct codec_w *w, const char *s);
/* n bytes copied from p. */
void codec_w_bytes(struct codec_w *w, const void *p, size_t n);
/* b's bytes (NULL: nothing), copied or referenced depending on the frame's ref_min. */
void codec_w_blob(struct codec_w *w, struct raft_blob *b);
/* Writes the header (length, version, type, checksum). Returns the sticky error; on error
 * the frame is emptied. */
int codec_w_end(struct codec_w *w, uint8_t type);

/* Reader over one payload: reading past the end sets bad and yields zeros. */
struct codec_r {
    const uint8_t *p;
    size_t len;
    size_t pos;
    bool bad;
};

void codec_r_init(struct codec_r *r, const uint8_t *p, size_t len);
uint8_t codec_r_u8(struct codec_r *r);
uint16_t codec_r_u16(struct codec_r *r);
uint32_t codec_r_u32(struct codec_r *r);
uint64_t codec_r_u64(struct codec_r *r);
/* Copies a string into out[CODEC_STR_MAX + 1]; bad when truncated or it contains a NUL. */
void codec_r_str(struct codec_r *r, char *out);
/* Borrowed pointer to the next n bytes (NULL and bad when fewer remain). */
const uint8_t *codec_r_bytes(struct codec_r *r, size_t n);
size_t codec_r_left(const struct codec_r *r);
/* 0 when everything was read exactly, ERR_PROTO otherwise. */
int codec_r_done(const struct codec_r *r);

#endif
