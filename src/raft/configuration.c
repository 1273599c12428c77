/* configuration.c — encoding of cluster configurations (CONFIG entry payloads). Decode reads
 * bytes from disk and network: it must reject every malformed input, never crash on one.
 *
 * Format (little-endian): u8 version (1), u8 n, then per member: u64 id, u8 voter (0/1),
 * u16 info_len, info bytes. Ids are non-zero and unique; at least one voter. */
#include <string.h>

#include "err.h"
#include "raft.h"

#define CONF_VERSION 1
#define CONF_MEMBER_FIXED (8 + 1 + 2)

static void conf_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t conf_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The shape rules shared by encode and decode. */
static bool conf_valid(const struct raft_configuration *c)
{
    if (c->n == 0 || c->n > RAFT_MAX_NODES) return false;
    uint32_t voters = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_member *m = &c->members[i];
        if (m->id == 0 || m->info_len > RAFT_MEMBER_INFO_MAX) return false;
        for (uint32_t j = 0; j < i; j++)
            if (c->members[j].id == m->id) return false;
        voters += m->voter ? 1 : 0;
    }
    return voters > 0;
}

int raft_configuration_encode(const struct raft_configuration *c, struct raft_blob **out)
{
    if (!c || !out || !conf_valid(c)) return ERR_INVALID;
    size_t len = 2;
    for (uint32_t i = 0; i < c->n; i++)
        len += CONF_MEMBER_FIXED + c->members[i].info_len;
    struct raft_blob *b = raft_blob_new((uint32_t)len);
    if (!b) return ERR_NOMEM;
    uint8_t *p = b->data;
    *p++ = CONF_VERSION;
    *p++ = (uint8_t)c->n;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_member *m = &c->members[i];
        conf_put_u64(p, m->id);
        p[8] = m->voter ? 1 : 0;
        p[9] = (uint8_t)(m->info_len & 0xff);
        p[10] = (uint8_t)(m->info_len >> 8);
        p += CONF_MEMBER_FIXED;
        memcpy(p, m->info, m->info_len);
        p += m->info_len;
    }
    *out = b;
    return 0;
}

int raft_configuration_decode(const uint8_t *data, size_t len, struct raft_configuration *out)
{
    if (!data || !out || len < 2 || data[0] != CONF_VERSION) return ERR_CORRUPT;
    struct raft_configuration c;
    memset(&c, 0, sizeof c);
    c.n = data[1];
    if (c.n == 0 || c.n > RAFT_MAX_NODES) return ERR_CORRUPT;
    size_t off = 2;
    for (uint32_t i = 0; i < c.n; i++) {
        struct raft_member *m = &c.members[i];
        if (len - off < CONF_MEMBER_FIXED) return ERR_CORRUPT;
        const uint8_t *p = data + off;
        m->id = conf_get_u64(p);
        if (p[8] > 1) return ERR_CORRUPT;
        m->voter = p[8] == 1;
        m->info_len = (uint16_t)(p[9] | (p[10] << 8));
        off += CONF_MEMBER_FIXED;
        if (m->info_len > RAFT_MEMBER_INFO_MAX || len - off < m->info_len) return ERR_CORRUPT;
        memcpy(m->info, data + off, m->info_len);
        off += m->info_len;
    }
    if (off != len || !conf_valid(&c)) return ERR_CORRUPT;
    *out = c;
    return 0;
}

const struct raft_member *raft_configuration_find(const struct raft_configuration *c, raft_id id)
{
    if (!c || id == 0) return NULL;
    for (uint32_t i = 0; i < c->n && i < RAFT_MAX_NODES; i++)
        if (c->members[i].id == id) return &c->members[i];
    return NULL;
}
