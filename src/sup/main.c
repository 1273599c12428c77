/* main.c — `raftsup CONFIG`: validate the whole config (exit 2, nothing created), take the
 * data_dir lock (exit 1 if held), supervise the nodes until SIGTERM/SIGINT (exit 0). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "sup.h"

static void main_usage(FILE *f)
{
    fprintf(f, "usage: raftsup CONFIG\n"
               "  Runs one raftnode per node of CONFIG (e.g. conf/cluster.json), bootstraps the\n"
               "  first one on an empty data_dir, joins the others, restarts crashed nodes and\n"
               "  stops them all on SIGTERM/SIGINT. SIGHUP restarts the nodes one at a time\n"
               "  (rolling restart: followers first, each serving again before the next; a\n"
               "  stopping leader hands leadership over first). The raftnode binary is taken\n"
               "  from the directory of raftsup itself unless $RAFTFS_RAFTNODE names it.\n");
}

/* $RAFTFS_RAFTNODE, else `raftnode` next to /proc/self/exe. */
static int main_find_raftnode(char *out, size_t len)
{
    const char *env = getenv("RAFTFS_RAFTNODE");
    if (env && env[0]) {
        snprintf(out, len, "%s", env);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0) return ERR_IO;
        self[n] = '\0';
        snprintf(out, len, "%s/raftnode", dirname(self));
    }
    return access(out, X_OK) == 0 ? 0 : ERR_NOTFOUND;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        main_usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        main_usage(stderr);
        return 2;
    }
    static struct config cfg;
    char err[1024] = "";
    if (config_load(argv[1], &cfg, err, sizeof err)) {
        fprintf(stderr, "raftsup: bad config: %s\n", err);
        return 2;
    }
    char raftnode[PATH_MAX];
    if (main_find_raftnode(raftnode, sizeof raftnode)) {
        fprintf(stderr, "raftsup: cannot run raftnode at %s: %s (set RAFTFS_RAFTNODE)\n", raftnode,
                strerror(errno));
        return 1;
    }
    log_init("raftsup");
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "raftsup: cannot initialise libev\n");
        return 1;
    }
    static struct sup sup;
    int rv = sup_init(&sup, loop, &cfg, argv[1], raftnode, err, sizeof err);
    if (rv) {
        fprintf(stderr, "raftsup: %s\n", err);
        sup_close(&sup);
        return 1;
    }
    sup_start(&sup);
    sup_run(&sup);
    sup_close(&sup);
    return 0;
}
