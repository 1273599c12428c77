/* rcrc32.h — zlib's CRC-32 (pass 0 to start, the previous result to continue), computed by
 * libdeflate when the build found it (RAFTFS_HAVE_LIBDEFLATE: carry-less multiply, ~2.5x
 * zlib 1.2.13's speed here; crc32_z was 2-3% of every node's CPU on 1 KiB writes), else by
 * zlib. Both compute the same checksum, so frames and logs written by either build agree. */
#ifndef RAFTFS_RCRC32_H
#define RAFTFS_RCRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef RAFTFS_HAVE_LIBDEFLATE
#include <libdeflate.h>
#else
#include <zlib.h>
#endif

static inline uint32_t rcrc32(uint32_t crc, const void *p, size_t len)
{
#ifdef RAFTFS_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, p, len);
#else
    return (uint32_t)crc32_z(crc, p, len);
#endif
}

#endif
