/* main.c — raftnode: `raftnode --config CONFIG --id ID [--bootstrap | --force-new-cluster]`.
 * Exit 0 after a graceful stop, 1 on a fatal error (raftsup restarts it), 2 on a usage or
 * config error. */
#include <getopt.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "node.h"
#include "recover.h"

static void main_usage(FILE *f)
{
    fprintf(f, "usage: raftnode --config CONFIG --id ID [--bootstrap | --force-new-cluster]\n"
               "  --config CONFIG      the cluster config (JSON), e.g. conf/cluster.json\n"
               "  --id ID              this node's id in CONFIG\n"
               "  --bootstrap          start a new cluster with this node as its only voter\n"
               "                       (ignored when the node already has Raft state)\n"
               "  --force-new-cluster  disaster recovery after losing the majority for good:\n"
               "                       make this node, with its data, the only voter of the\n"
               "                       cluster (writes only the lost nodes had are lost; wipe\n"
               "                       the other nodes' data before they join again)\n");
}

/* The file store keeps recently overwritten files open (an fd cache of up to an eighth of the
 * soft limit) and every HTTP client and peer holds an fd: the usual 1024 soft limit would
 * shrink the cache to 128, so take what the hard limit allows, up to 65536. */
#define MAIN_NOFILE_WANT 65536

static void main_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > MAIN_NOFILE_WANT ? MAIN_NOFILE_WANT
                                                                                 : rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want) return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        LOG_INFO("open files limit raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)want);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"id", required_argument, NULL, 'i'},
        {"bootstrap", no_argument, NULL, 'b'},    {"force-new-cluster", no_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *config = NULL, *id = NULL;
    bool bootstrap = false, force = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:i:bh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'b':
            bootstrap = true;
            break;
        case 'F':
            force = true;
            break;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (!config || !id || optind != argc || (bootstrap && force)) {
        main_usage(stderr);
        return 2;
    }
    log_init(id);
    signal(SIGPIPE, SIG_IGN);
    main_raise_nofile(); /* before the file store sizes its fd cache */
    static struct node node;
    char err[512] = "";
    if (force) {
        int frv = node_force_new_cluster(config, id, err, sizeof err);
        if (frv) {
            LOG_ERROR("--force-new-cluster: %s", err);
            fprintf(stderr, "raftnode: --force-new-cluster: %s\n", err);
            return frv == ERR_INVALID || frv == ERR_NOTFOUND ? 2 : 1;
        }
    }
    int rv = node_init(&node, config, id, bootstrap, err, sizeof err);
    if (rv) {
        LOG_ERROR("cannot start: %s", err[0] ? err : err_str(rv));
        fprintf(stderr, "raftnode: %s\n", err[0] ? err : err_str(rv));
        node_close(&node);
        return rv == ERR_INVALID || rv == ERR_NOTFOUND ? 2 : 1;
    }
    int code = node_run(&node);
    node_close(&node);
    LOG_INFO("stopped (exit %d)", code);
    return code;
}
