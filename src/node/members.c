/* members.c — what the node keeps about each member in the configuration's opaque info
 * bytes ("ID RAFT_ADDR HTTP_ADDR"), and keeping the transport's peers in step with it.
 * Identity is the id: a member that comes back with a new address keeps its raft_id. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "node.h"
#include "transfer.h"
#include "transport.h"

int node_member_info(const char *id, const char *raft_addr, const char *http_addr,
                     struct raft_member *m)
{
    struct config_addr a;
    memset(m, 0, sizeof *m);
    if (config_parse_addr(raft_addr, &a) || config_parse_addr(http_addr, &a)) return ERR_INVALID;
    if (strlen(id) == 0 || strlen(id) >= CONFIG_ID_MAX || strpbrk(id, " /\t\n")) return ERR_INVALID;
    int len = snprintf((char *)m->info, sizeof m->info, "%s %s %s", id, raft_addr, http_addr);
    if (len < 0 || (size_t)len >= sizeof m->info) return ERR_TOOBIG;
    m->info_len = (uint16_t)len;
    m->id = config_raft_id(id);
    m->voter = false;
    return 0;
}

int node_member_parse(const struct raft_member *m, char *id, size_t id_len, char *raft_addr,
                      size_t raft_len, char *http_addr, size_t http_len)
{
    char buf[RAFT_MEMBER_INFO_MAX + 1];
    if (m->info_len > RAFT_MEMBER_INFO_MAX) return ERR_CORRUPT;
    memcpy(buf, m->info, m->info_len);
    buf[m->info_len] = '\0';
    char *save = NULL;
    const char *f1 = strtok_r(buf, " ", &save);
    const char *f2 = f1 ? strtok_r(NULL, " ", &save) : NULL;
    const char *f3 = f2 ? strtok_r(NULL, " ", &save) : NULL;
    if (!f3) return ERR_CORRUPT;
    snprintf(id, id_len, "%s", f1);
    snprintf(raft_addr, raft_len, "%s", f2);
    snprintf(http_addr, http_len, "%s", f3);
    return 0;
}

bool node_member_http(struct node *n, raft_id id, char *name, size_t name_len, char *http,
                      size_t http_len)
{
    const struct raft_member *m = raft_configuration_find(raft_configuration(n->raft), id);
    char raft_addr[CONFIG_ADDR_MAX];
    if (m && node_member_parse(m, name, name_len, raft_addr, sizeof raft_addr, http, http_len) == 0)
        return true;
    for (size_t i = 0; i < n->cfg.n_nodes; i++) {
        if (config_raft_id(n->cfg.nodes[i].id) != id) continue;
        snprintf(name, name_len, "%s", n->cfg.nodes[i].id);
        snprintf(http, http_len, "%s", n->cfg.nodes[i].http.text);
        return true;
    }
    return false;
}

bool node_accept_peer_cb(void *ctx, raft_id id, const char *name)
{
    struct node *n = ctx;
    if (id != config_raft_id(name)) return false; /* the id must be the one its name hashes to */
    if (raft_configuration_find(raft_configuration(n->raft), id)) return true;
    return config_find(&n->cfg, name) != NULL;
}

/* Peers: every node of the config file and every member of the latest configuration, the
 * configuration's address winning. Cheap enough to run after every ready drain: it only
 * talks to the transport when the configuration changed. */
void node_sync_peers(struct node *n)
{
    struct raft_configuration *last = &n->peers_conf;
    const struct raft_configuration *c = raft_configuration(n->raft);
    if (n->peers_conf_valid && memcmp(last, c, sizeof *last) == 0) return;
    for (size_t i = 0; i < n->cfg.n_nodes; i++) {
        raft_id id = config_raft_id(n->cfg.nodes[i].id);
        if (id != n->id && !raft_configuration_find(c, id))
            transport_set_peer(n->tr, id, n->cfg.nodes[i].id, n->cfg.nodes[i].raft.text);
    }
    for (uint32_t i = 0; i < c->n; i++) {
        char id[CONFIG_ID_MAX], raft_addr[CONFIG_ADDR_MAX], http[CONFIG_ADDR_MAX];
        if (c->members[i].id == n->id) continue;
        if (node_member_parse(&c->members[i], id, sizeof id, raft_addr, sizeof raft_addr, http,
                              sizeof http)) {
            LOG_WARN("member %016llx has unreadable info", (unsigned long long)c->members[i].id);
            continue;
        }
        transport_set_peer(n->tr, c->members[i].id, id, raft_addr);
    }
    if (n->peers_conf_valid) {
        for (uint32_t i = 0; i < last->n; i++) {
            raft_id id = last->members[i].id;
            char name[CONFIG_ID_MAX] = "";
            if (!raft_configuration_find(c, id) && id != n->id) {
                for (size_t j = 0; j < n->cfg.n_nodes; j++)
                    if (config_raft_id(n->cfg.nodes[j].id) == id)
                        snprintf(name, sizeof name, "%s", n->cfg.nodes[j].id);
                if (!name[0]) transport_remove_peer(n->tr, id);
            }
        }
    }
    memcpy(last, c, sizeof *last);
    n->peers_conf_valid = true;
    LOG_INFO("configuration: %u members", c->n);
}

/* ---- A member that comes back with new addresses ------------------------------------------
 * The core keeps a member's info unchanged on a second add (ERR_EXISTS), and a configuration
 * entry that only rewrites info does not exist, so the leader changes a member's addresses by
 * removing it and adding it back as a learner (promoted again once caught up). Its identity
 * (id, log, files) is unchanged; only the window between the two changes has one voter less. */
static struct {
    bool active;
    struct raft_member m;
    ev_tstamp deadline;
} readd;

#define READD_TIMEOUT_S 10.0

void node_member_readd_later(struct node *n, const struct raft_member *m)
{
    readd.active = true;
    readd.m = *m;
    readd.deadline = ev_now(n->loop) + READD_TIMEOUT_S;
    node_transfer_kick(n);
}

bool node_member_readd_tick(struct node *n)
{
    if (!readd.active) return false;
    char id[CONFIG_ID_MAX], raft_addr[CONFIG_ADDR_MAX], http[CONFIG_ADDR_MAX];
    if (node_member_parse(&readd.m, id, sizeof id, raft_addr, sizeof raft_addr, http, sizeof http))
        snprintf(id, sizeof id, "?");
    raft_index index = 0;
    int rv = n->role == RAFT_LEADER ? raft_add_member(n->raft, &readd.m, &index) : ERR_NOTLEADER;
    if (rv == ERR_BUSY && ev_now(n->loop) < readd.deadline) return true; /* removal uncommitted */
    readd.active = false;
    if (rv == 0)
        LOG_INFO("member %s added back as a learner with raft %s, http %s (index %llu)", id,
                 raft_addr, http, (unsigned long long)index);
    else
        LOG_WARN("member %s was removed for an address change but could not be added back (%s); "
                 "run the join again",
                 id, err_str(rv));
    return false;
}

/* The leader cannot remove and re-add itself: it hands leadership over, and the join, retried
 * on ERR_NOTLEADER, moves it through the next leader. */
static int node_member_readdress_self(struct node *n)
{
    raft_id to = node_transfer_pick(n);
    if (!to || node_transfer_start(n, to)) return ERR_INVALID;
    LOG_INFO("address change of the leader itself: handing leadership over first");
    return ERR_NOTLEADER;
}

#define SELF_REMOVE_WINDOW_S 5.0 /* a hand-over for our own removal counts this long */

int node_member_remove(struct node *n, raft_id id, raft_index *index)
{
    static ev_tstamp handover_at; /* when our own removal last started a hand-over */
    if (id == n->id && n->role == RAFT_LEADER) {
        struct raft_status st;
        raft_status(n->raft, &st);
        ev_tstamp now = ev_now(n->loop);
        bool recent = handover_at > 0 && now - handover_at < SELF_REMOVE_WINDOW_S;
        bool abandoned = recent && st.transferee == 0; /* tried; still the leader */
        raft_id to = abandoned ? 0 : node_transfer_pick(n);
        if (to && node_transfer_start(n, to) == 0) {
            if (!recent) {
                handover_at = now;
                LOG_INFO("removal of this node (the leader): handing leadership over first");
            }
            return ERR_NOTLEADER;
        }
        handover_at = 0;
    }
    return raft_remove_member(n->raft, id, index);
}

/* Leader: a join for an existing member. Same info: ERR_EXISTS (409, nothing to do). New
 * addresses: the removal's index (the join answers once it is applied; the add follows). */
int node_member_readdress(struct node *n, const struct raft_member *m, raft_index *index)
{
    const struct raft_member *old = raft_configuration_find(raft_configuration(n->raft), m->id);
    if (!old) return ERR_NOTFOUND;
    if (old->info_len == m->info_len && memcmp(old->info, m->info, m->info_len) == 0)
        return ERR_EXISTS;
    if (m->id == n->id) return node_member_readdress_self(n);
    if (readd.active) return ERR_BUSY;
    char was[RAFT_MEMBER_INFO_MAX + 1]; /* old is borrowed only until the next core input */
    snprintf(was, sizeof was, "%.*s", (int)old->info_len, (const char *)old->info);
    int rv = raft_remove_member(n->raft, m->id, index);
    if (rv) return rv;
    LOG_INFO("member address change: removed %s (index %llu); adding it back as %.*s", was,
             (unsigned long long)*index, (int)m->info_len, (const char *)m->info);
    node_member_readd_later(n, m);
    return 0;
}
