/* fsm_snap_fmt.h — internal: the snapshot stream format (version 2), shared by the reader
 * (fsm_snap_read.c) and the writer (fsm_snap_write.c).
 *
 * The stream is a sequence of records, all integers big-endian:
 *   u32 len | u8 type | payload[len] | u32 crc
 * crc = CRC-32 (zlib) of the record's sequence number (u64, 0 for the first record, not sent)
 * followed by the 5 header bytes and the payload: a lost, repeated or reordered record fails
 * its check like a flipped bit does. DATA records are the exception (version 2; version 1
 * covered them too): their crc covers the sequence number and header only, not the content.
 * Content is checked by the receiver against the file's SHA-256 (in its FILE record, which
 * has a full CRC) before anything is installed, and a flipped content byte fails that check
 * as surely; the CRC over it cost ~0.07 s of CPU per GiB on each side. Records, in order:
 *   HDR   once:  magic[8] "raftfsnp" | u32 version | u64 S | u64 term(S) | u32 conf_len | conf
 *   FILE  per file, in strictly increasing bytewise path order:
 *                u64 index | u64 size | u8 sha256[32] | u16 path_len | path
 *         then DATA records carrying exactly `size` content bytes (none for an empty file)
 *   DATA  1..FSS_DATA_MAX content bytes
 *   DEDUP u16 n | n x (u8 req_id[16] | u64 index | u8 status | u8 created | u64 size |
 *                      u8 sha256[32]), indexes strictly increasing over the whole stream
 *   END   once, last: u64 S_end | u64 files | u64 dedup records | u64 content bytes
 * Every length is checked against its type's maximum before any payload is buffered, so a
 * hostile length costs nothing. */
#ifndef RAFTFS_FSM_SNAP_FMT_H
#define RAFTFS_FSM_SNAP_FMT_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>
#ifdef RAFTFS_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#include "fsm.h"
#include "fsm_be.h"
#include "fspath.h"

/* In the HDR record, whose crc is computed the same way in every version: a node refuses a
 * stream of any other version at its first record (a mixed-version cluster fails its
 * catch-ups with a log line saying so, and never parses content of the other format). */
#define FSS_VERSION 2
#define FSS_MAGIC "raftfsnp"

enum fss_type { FSS_HDR = 1, FSS_FILE = 2, FSS_DATA = 3, FSS_DEDUP = 4, FSS_END = 5 };

#define FSS_REC_HDR 5 /* u32 len | u8 type */
#define FSS_REC_CRC 4
#define FSS_DATA_MAX (256u * 1024u)
#define FSS_DIO_ALIGN 4096u /* the writer's O_DIRECT alignment; FSS_DATA_MAX is a multiple */
#define FSS_CONF_MAX (64u * 1024u)
#define FSS_HDR_FIXED (8 + 4 + 8 + 8 + 4)
#define FSS_FILE_FIXED (8 + 8 + FSM_SHA256_LEN + 2)
#define FSS_DEDUP_ONE (FSM_REQ_ID_LEN + 8 + 1 + 1 + 8 + FSM_SHA256_LEN)
#define FSS_DEDUP_N 256 /* records per DEDUP record at most */
#define FSS_END_LEN 32
/* The largest payload of any record: the one buffer a reader or writer needs. */
#define FSS_PAYLOAD_MAX FSS_DATA_MAX

static inline size_t fss_max_payload(uint8_t type)
{
    switch (type) {
    case FSS_HDR:
        return FSS_HDR_FIXED + FSS_CONF_MAX;
    case FSS_FILE:
        return FSS_FILE_FIXED + FSPATH_MAX;
    case FSS_DATA:
        return FSS_DATA_MAX;
    case FSS_DEDUP:
        return 2 + (size_t)FSS_DEDUP_N * FSS_DEDUP_ONE;
    case FSS_END:
        return FSS_END_LEN;
    default:
        return 0;
    }
}

static inline void fss_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t fss_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* zlib's CRC-32 (crc 0 to start), computed by libdeflate when the build found it (faster). */
static inline uint32_t fss_crc32(uint32_t crc, const uint8_t *p, size_t len)
{
#ifdef RAFTFS_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, p, len);
#else
    return (uint32_t)crc32_z(crc, p, len);
#endif
}

/* CRC of record `seq` whose header and payload are hdr[0..5) and payload[0..len): the
 * payload is left out for DATA (hdr[4]), whose content the file's SHA-256 checks. */
static inline uint32_t fss_crc(uint64_t seq, const uint8_t *hdr, const uint8_t *payload, size_t len)
{
    uint8_t s[8];
    fsm_be_put64(s, seq);
    uint32_t c = fss_crc32(0, s, sizeof s);
    c = fss_crc32(c, hdr, FSS_REC_HDR);
    return hdr[4] == FSS_DATA ? c : fss_crc32(c, payload, len);
}

#endif
