/* run.c — one simulated run: the event queue (a binary heap ordered by virtual time, then by
 * insertion), the trace ring and its hash, and failure recording. No real time, no threads. */
#include "sim.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sim *sim_current;

void *sim_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) abort();
    memset((char *)q + *cap * elem, 0, (c - *cap) * elem);
    *cap = c;
    return q;
}

static bool sim_ev_before(const struct sim_event *a, const struct sim_event *b)
{
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void sim_push(struct sim *s, struct sim_event ev)
{
    s->heap = sim_grow(s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap);
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!sim_ev_before(&ev, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = ev;
}

void sim_schedule(struct sim *s, uint64_t time, uint8_t kind, uint8_t slot, uint32_t inc,
                  struct raft_msg *msg)
{
    sim_push(s, (struct sim_event){time, s->ev_seq++, kind, slot, inc, msg, NULL});
}

void sim_schedule_snap(struct sim *s, uint64_t time, uint8_t kind, uint8_t slot,
                       struct sim_snap *sn)
{
    sim_push(s, (struct sim_event){time, s->ev_seq++, kind, slot, 0, NULL, sn});
}

static struct sim_event sim_pop(struct sim *s)
{
    struct sim_event top = s->heap[0];
    struct sim_event last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n) break;
        if (c + 1 < s->heap_n && sim_ev_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!sim_ev_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n) s->heap[i] = last;
    return top;
}

void sim_trace(struct sim *s, const char *fmt, ...)
{
    if (!s->o.tracing) return;
    char *line = s->ring[s->ring_n++ % SIM_TRACE_LINES];
    int k = snprintf(line, SIM_TRACE_LEN, "%6llu.%llu ", (unsigned long long)(s->now / SIM_TICK),
                     (unsigned long long)(s->now % SIM_TICK));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, SIM_TRACE_LEN - (size_t)k, fmt, ap);
    va_end(ap);
    EVP_DigestUpdate(s->hash_ctx, line, strlen(line));
    EVP_DigestUpdate(s->hash_ctx, "\n", 1);
    if (s->o.verbose) printf("%s\n", line);
}

/* Writes the last `last` trace lines to fd with write(2) only: also used from SIGABRT. */
void sim_trace_dump(const struct sim *s, int fd, unsigned last)
{
    if (!s->ring) return;
    uint64_t from = s->ring_n > last ? s->ring_n - last : 0;
    if (s->ring_n - from > SIM_TRACE_LINES) from = s->ring_n - SIM_TRACE_LINES;
    for (uint64_t i = from; i < s->ring_n; i++) {
        const char *line = s->ring[i % SIM_TRACE_LINES];
        ssize_t w = write(fd, line, strlen(line));
        w += write(fd, "\n", 1);
        (void)w;
    }
}

void sim_fail(struct sim *s, const char *prop, const char *fmt, ...)
{
    if (s->failed) return;
    s->failed = true;
    snprintf(s->fail_prop, sizeof s->fail_prop, "%s", prop);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_msg, sizeof s->fail_msg, fmt, ap);
    va_end(ap);
    sim_trace(s, "VIOLATION of %s: %s", s->fail_prop, s->fail_msg);
}

static void sim_dispatch(struct sim *s, struct sim_event *ev)
{
    struct sim_node *n = &s->nodes[ev->slot];
    switch (ev->kind) {
    case SIM_EV_DRIVER:
        sim_driver_step(s);
        break;
    case SIM_EV_TICK:
        if (n->up && n->incarnation == ev->incarnation) sim_node_tick(s, n);
        break;
    case SIM_EV_PERSIST:
        if (n->up && n->incarnation == ev->incarnation) sim_node_persist_done(s, n);
        break;
    case SIM_EV_DELIVER:
        sim_net_deliver(s, ev->msg);
        break;
    case SIM_EV_DROPPED:
        break;
    case SIM_EV_SNAP:
        sim_snap_deliver(s, ev->snap);
        break;
    case SIM_EV_SNAP_REPORT:
        sim_snap_report(s, ev->snap);
        break;
    default:
        abort();
    }
}

static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->heap_n; i++) {
        if (s->heap[i].msg) {
            sim_msg_release(s->heap[i].msg);
            free(s->heap[i].msg);
        }
        sim_snap_free(s->heap[i].snap);
    }
    free(s->heap);
    for (unsigned i = 0; i < SIM_MAX_NODES; i++)
        sim_node_free(&s->nodes[i]);
    sim_check_free(s);
    free(s->payload_at);
    free(s->rr);
    free(s->ring);
    if (s->hash_ctx) EVP_MD_CTX_free(s->hash_ctx);
    free(s);
}

/* Runs one seed to completion or to its first violation. Returns 0, or -1 on OOM. */
int sim_run(const struct sim_opts *o, struct sim_result *res)
{
    struct sim *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->o = *o;
    sim_rng_seed(&s->rng, o->seed);
    if (o->tracing) {
        s->ring = calloc(SIM_TRACE_LINES, sizeof *s->ring);
        s->hash_ctx = EVP_MD_CTX_new();
        if (!s->ring || !s->hash_ctx || !EVP_DigestInit_ex(s->hash_ctx, EVP_sha256(), NULL))
            abort();
    }
    sim_current = s;
    sim_driver_init(s);
    uint64_t end = (uint64_t)s->p.end_step * SIM_TICK;
    while (!s->failed && s->heap_n && s->heap[0].time <= end) {
        struct sim_event ev = sim_pop(s);
        s->now = ev.time;
        s->st.events++;
        sim_dispatch(s, &ev);
    }
    memset(res, 0, sizeof *res);
    res->failed = s->failed;
    memcpy(res->prop, s->fail_prop, sizeof res->prop);
    memcpy(res->msg, s->fail_msg, sizeof res->msg);
    res->st = s->st;
    res->p = s->p;
    if (o->tracing) {
        unsigned int len = 0;
        EVP_DigestFinal_ex(s->hash_ctx, res->hash, &len);
        if (s->failed && !o->verbose) {
            fflush(stdout);
            sim_trace_dump(s, 1, 200);
        }
    }
    sim_current = NULL;
    sim_free(s);
    return 0;
}
