/* child.c — one supervised raftnode: fork+exec with a clean signal state, node.pid upkeep,
 * restarts with exponential backoff. Never bootstraps a node that has (or whose peers have)
 * Raft state, and never lets a child outlive a SIGKILLed supervisor. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

#define SUP_CHILD_ARGV_MAX 8

static void sup_child_cb(struct ev_loop *loop, ev_child *w, int revents);
static void sup_child_restart_cb(struct ev_loop *loop, ev_timer *w, int revents);

void sup_child_init(struct sup_child *c, struct sup *s, size_t index)
{
    memset(c, 0, sizeof *c);
    c->sup = s;
    c->index = index;
    c->node = &s->cfg.nodes[index];
    c->backoff_ms = s->cfg.restart_backoff_min_ms;
    snprintf(c->dir, sizeof c->dir, "%s/%s", s->cfg.data_dir, c->node->id);
    snprintf(c->pid_path, sizeof c->pid_path, "%s/%s/node.pid", s->cfg.data_dir, c->node->id);
    snprintf(c->log_path, sizeof c->log_path, "%s/%s/node.log", s->cfg.data_dir, c->node->id);
    ev_timer_init(&c->restart, sup_child_restart_cb, 0., 0.);
    c->restart.data = c;
}

bool sup_child_raft_empty(const struct sup_child *c)
{
    char path[SUP_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/raft", c->dir);
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT; /* unreadable: assume state exists, never re-bootstrap */
    bool empty = true;
    const struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
    closedir(d);
    return empty;
}

/* Bootstrap only the first node, and only while it has no Raft state. A restart before any
 * leader was seen bootstraps again even if the dir is no longer empty (a crash between the
 * store's creation and the bootstrap entry); the node ignores --bootstrap once it has a term
 * or a log, so the repeat is harmless. A wiped first node next to peers with state must
 * rejoin them, not found a second cluster of its own (nemesis seed 3, --links --membership). */
static bool sup_child_should_bootstrap(const struct sup_child *c)
{
    if (c->index != 0) return false;
    if (c->bootstrap_pending) return true;
    if (!sup_child_raft_empty(c)) return false;
    const struct sup *s = c->sup;
    for (size_t i = 1; i < s->cfg.n_nodes; i++) {
        if (!sup_child_raft_empty(&s->children[i])) {
            LOG_WARN("%s has no Raft state but %s has: starting it without --bootstrap",
                     c->node->id, s->children[i].node->id);
            return false;
        }
    }
    return true;
}

/* Runs in the forked child: only async-signal-safe calls, everything prepared beforehand. */
static _Noreturn void sup_child_exec(const char *log_path, char *const argv[], pid_t parent)
{
    sigset_t none;
    sigemptyset(&none);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* SIGKILL/SIGSTOP fail harmlessly */
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Own process group: a Ctrl-C on the terminal reaches only raftsup, which then stops
     * the nodes in order; PDEATHSIG covers a SIGKILLed supervisor. */
    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126); /* the supervisor died before the death signal was armed */
    int in = open("/dev/null", O_RDONLY);
    int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0) _exit(126);
    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    dup2(out, STDERR_FILENO);
    close_range(3, ~0U, 0); /* the lock, the log, curl's sockets: nothing leaks to the node */
    execv(argv[0], argv);
    static const char msg[] = "raftsup: exec of raftnode failed\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
}

static void sup_child_schedule(struct sup_child *c, double delay_s)
{
    ev_timer_stop(c->sup->loop, &c->restart);
    ev_timer_set(&c->restart, delay_s, 0.);
    ev_timer_start(c->sup->loop, &c->restart);
}

void sup_child_spawn(struct sup_child *c)
{
    struct sup *s = c->sup;
    if (s->stopping || c->pid) return;
    bool empty = sup_child_raft_empty(c);
    bool bootstrap = sup_child_should_bootstrap(c);
    char *argv[SUP_CHILD_ARGV_MAX] = {
        s->raftnode, "--config",          s->config_path,
        "--id",      (char *)c->node->id, bootstrap ? "--bootstrap" : NULL,
        NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        LOG_ERROR("%s: fork: %s; retrying in %u ms", c->node->id, strerror(errno), c->backoff_ms);
        sup_child_schedule(c, c->backoff_ms / 1000.0);
        return;
    }
    if (pid == 0) sup_child_exec(c->log_path, argv, parent);
    setpgid(pid, pid); /* also here, so the group exists before anyone signals it */
    ev_child_init(&c->watch, sup_child_cb, pid, 0);
    c->watch.data = c;
    ev_child_start(s->loop, &c->watch);
    c->pid = pid;
    c->started_at = ev_now(s->loop);
    c->starts++;
    c->bootstrap_pending = bootstrap;
    if (sup_write_pid(c->pid_path, pid))
        LOG_ERROR("%s: cannot write %s: %s", c->node->id, c->pid_path, strerror(errno));
    LOG_INFO("%s %s: pid %d%s%s", c->node->id, c->starts == 1 ? "started" : "restarted", (int)pid,
             bootstrap ? " (--bootstrap)" : "", empty ? ", no Raft state yet" : "");
    if (empty && !bootstrap && s->join) sup_join_kick(s->join);
}

void sup_child_signal(struct sup_child *c, int sig)
{
    if (c->pid > 0) kill(c->pid, sig);
}

static void sup_child_describe(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?",
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "changed state (status 0x%x)", (unsigned)status);
}

/* Backoff: restart_backoff_ms[0] doubling up to [1]; a child that stayed up for
 * restart_reset_ms starts over from the minimum. So a crash loop costs at most one fork per
 * restart_backoff_ms[1] and never spins. */
static unsigned sup_child_next_delay(struct sup_child *c, double uptime_s)
{
    const struct config *cfg = &c->sup->cfg;
    if (uptime_s * 1000.0 >= cfg->restart_reset_ms) c->backoff_ms = cfg->restart_backoff_min_ms;
    unsigned delay = c->backoff_ms;
    unsigned next = c->backoff_ms * 2;
    c->backoff_ms = next > cfg->restart_backoff_max_ms ? cfg->restart_backoff_max_ms : next;
    return delay;
}

static void sup_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct sup_child *c = w->data;
    struct sup *s = c->sup;
    ev_child_stop(loop, w);
    char how[96];
    sup_child_describe(w->rstatus, how, sizeof how);
    double uptime = ev_now(loop) - c->started_at;
    c->pid = 0;
    if (unlink(c->pid_path) != 0 && errno != ENOENT)
        LOG_WARN("%s: cannot remove %s: %s", c->node->id, c->pid_path, strerror(errno));
    if (s->stopping) {
        LOG_INFO("%s (pid %d) %s", c->node->id, w->rpid, how);
        sup_child_stopped(s);
        return;
    }
    if (c->rolling) { /* a rolling restart stopped it: back at once, backoff untouched */
        c->rolling = false;
        LOG_INFO("%s (pid %d) %s (rolling restart); restarting now", c->node->id, w->rpid, how);
        sup_child_schedule(c, 0.);
        sup_roll_child_exited(s->roll, c);
        return;
    }
    unsigned delay = sup_child_next_delay(c, uptime);
    LOG_WARN("%s (pid %d) %s after %.1f s; restarting in %u ms", c->node->id, w->rpid, how, uptime,
             delay);
    sup_child_schedule(c, delay / 1000.0);
}

static void sup_child_restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sup_child_spawn(w->data);
}

/* Reads /proc/PID/NAME into buf (NUL-terminated); returns the byte count, -1 if unreadable. */
static ssize_t sup_child_read_proc(pid_t pid, const char *name, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* A process is gone when kill() says so or it is a zombie (reaped by someone else later). */
static bool sup_child_pid_alive(pid_t pid)
{
    if (kill(pid, 0) != 0) return errno == EPERM;
    char buf[512];
    if (sup_child_read_proc(pid, "stat", buf, sizeof buf) < 0) return false;
    const char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && rp[2] == 'Z');
}

/* True when pid's command line is `.../raftnode ... --id ID`: never kill a recycled pid. */
static bool sup_child_pid_is_node(pid_t pid, const char *id)
{
    char buf[8192];
    ssize_t got = sup_child_read_proc(pid, "cmdline", buf, sizeof buf);
    if (got < 0) return false;
    size_t n = (size_t)got;
    const char *arg0 = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    if (strcmp(arg0, "raftnode") != 0) return false;
    for (size_t off = strlen(buf) + 1; off < n; off += strlen(buf + off) + 1)
        if (strcmp(buf + off, "--id") == 0 && off + 5 < n && strcmp(buf + off + 5, id) == 0)
            return true;
    return false;
}

void sup_child_clear_stale(struct sup_child *c)
{
    FILE *f = fopen(c->pid_path, "r");
    if (!f) return;
    int pid = 0;
    int got = fscanf(f, "%d", &pid);
    fclose(f);
    if (got == 1 && pid > 1 && sup_child_pid_alive(pid) &&
        sup_child_pid_is_node(pid, c->node->id)) {
        LOG_WARN("%s: a raftnode from an earlier supervisor is still running (pid %d); "
                 "killing it",
                 c->node->id, pid);
        kill(pid, SIGKILL);
        /* Bounded wait for its ports and files to be released (2 s). */
        for (int i = 0; i < 200 && sup_child_pid_alive(pid); i++)
            usleep(10000);
    }
    LOG_INFO("%s: removing stale %s", c->node->id, c->pid_path);
    unlink(c->pid_path);
}
