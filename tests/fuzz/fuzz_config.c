/* fuzz_config.c — libFuzzer target for the cluster config parser: any bytes must either load
 * into a config that satisfies every documented rule or be refused with a message; never a
 * crash, a leak or an over-read. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "fuzz.h"

/* What config_parse promises about anything it accepts. */
static void fuzz_config_check(const struct config *c)
{
    if (c->n_nodes == 0 || c->n_nodes > RAFT_MAX_NODES || !c->cluster[0] || !c->data_dir[0])
        abort();
    if (c->heartbeat_ms < c->tick_ms || c->election_timeout_min_ms < 2 * c->heartbeat_ms ||
        c->election_timeout_min_ms > c->election_timeout_max_ms)
        abort();
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct config_node *n = &c->nodes[i];
        if (!n->id[0] || n->raft.port == 0 || n->http.port == 0 || !n->raft.host[0])
            abort();
        for (size_t j = 0; j < i; j++)
            if (!strcmp(n->id, c->nodes[j].id) || !strcmp(n->raft.text, c->nodes[j].raft.text))
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[512];
    err[0] = '\0';
    int rv = config_parse((const char *)data, size, &c, err, sizeof err);
    if (rv == 0)
        fuzz_config_check(&c);
    else if (rv != ERR_INVALID || !err[0])
        abort(); /* a refusal always says why */
    return 0;
}
