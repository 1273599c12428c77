/* log.c — the in-memory Raft log: every entry's term and type, and payloads while cached.
 * Knows nothing of roles or persistence; never calls out (fetching is the caller's job). */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rassert.h"

void raft_log_init(struct raft_log *l, raft_index offset, raft_term offset_term)
{
    memset(l, 0, sizeof *l);
    l->offset = offset;
    l->offset_term = offset_term;
    l->evict_next = offset + 1;
}

void raft_log_close(struct raft_log *l)
{
    for (size_t i = 0; i < l->n; i++)
        raft_blob_unref(l->v[i].data);
    free(l->v);
    memset(l, 0, sizeof *l);
}

raft_index raft_log_last(const struct raft_log *l)
{
    return l->offset + l->n;
}

raft_term raft_log_term(const struct raft_log *l, raft_index idx)
{
    if (idx == l->offset) return l->offset_term;
    if (idx < l->offset || idx > raft_log_last(l)) return 0;
    return l->v[idx - l->offset - 1].term;
}

const struct raft_lentry *raft_log_get(const struct raft_log *l, raft_index idx)
{
    if (idx <= l->offset || idx > raft_log_last(l)) return NULL;
    return &l->v[idx - l->offset - 1];
}

int raft_log_append(struct raft_log *l, raft_term term, uint8_t type, struct raft_blob *data,
                    bool absent)
{
    ASSERT(term >= raft_log_term(l, raft_log_last(l)));
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct raft_lentry *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            raft_blob_unref(data);
            return ERR_NOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    struct raft_lentry *e = &l->v[l->n++];
    e->term = term;
    e->type = type;
    e->absent = absent && !data;
    e->data = data;
    if (data) l->bytes_held += data->len;
    return 0;
}

void raft_log_truncate(struct raft_log *l, raft_index from)
{
    ASSERT(from > l->offset);
    while (raft_log_last(l) >= from) {
        struct raft_lentry *e = &l->v[l->n - 1];
        if (e->data) {
            ASSERT(l->bytes_held >= e->data->len);
            l->bytes_held -= e->data->len;
        }
        raft_blob_unref(e->data);
        l->n--;
    }
    if (l->evict_next > from) l->evict_next = from;
}

static void raft_log_release(struct raft_log *l, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        struct raft_lentry *e = &l->v[i];
        if (e->data) {
            ASSERT(l->bytes_held >= e->data->len);
            l->bytes_held -= e->data->len;
        }
        raft_blob_unref(e->data);
    }
}

void raft_log_compact(struct raft_log *l, raft_index upto)
{
    ASSERT(upto > l->offset && upto <= raft_log_last(l));
    size_t k = (size_t)(upto - l->offset);
    l->offset_term = l->v[k - 1].term;
    raft_log_release(l, 0, k);
    memmove(l->v, l->v + k, (l->n - k) * sizeof *l->v);
    l->n -= k;
    l->offset = upto;
    if (l->evict_next <= upto) l->evict_next = upto + 1;
}

void raft_log_reset(struct raft_log *l, raft_index offset, raft_term offset_term)
{
    raft_log_release(l, 0, l->n);
    l->n = 0;
    l->offset = offset;
    l->offset_term = offset_term;
    l->evict_next = offset + 1;
}

void raft_log_evict(struct raft_log *l, raft_index upto, uint64_t max_bytes)
{
    if (upto > raft_log_last(l)) upto = raft_log_last(l);
    while (l->bytes_held > max_bytes && l->evict_next <= upto) {
        struct raft_lentry *e = &l->v[l->evict_next - l->offset - 1];
        /* CONFIG payloads stay: membership is rebuilt from them after a truncation. */
        if (e->type == RAFT_ENTRY_NORMAL && e->data) {
            ASSERT(l->bytes_held >= e->data->len);
            l->bytes_held -= e->data->len;
            raft_blob_unref(e->data);
            e->data = NULL;
            e->absent = true;
        }
        l->evict_next++;
    }
}

bool raft_entries_well_formed(const struct raft_entry *v, size_t n, raft_index first,
                              raft_term min_term, raft_term max_term)
{
    if (n && !v) return false;
    raft_term prev = min_term;
    for (size_t i = 0; i < n; i++) {
        const struct raft_entry *e = &v[i];
        if (e->index != first + i || e->term < prev || e->term > max_term) return false;
        if (e->type < RAFT_ENTRY_NOOP || e->type > RAFT_ENTRY_CONFIG) return false;
        struct raft_configuration c;
        if (e->type == RAFT_ENTRY_CONFIG &&
            (!e->data || raft_configuration_decode(e->data->data, e->data->len, &c)))
            return false;
        prev = e->term;
    }
    return true;
}
