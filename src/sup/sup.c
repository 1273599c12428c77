/* sup.c — the supervisor's lifecycle: data_dir lock, pid and log files, signal handling and
 * the graceful stop (SIGTERM to every child, SIGKILL after SUP_STOP_GRACE_S). Never starts a
 * child before the lock is held. */
#include "sup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

static int sup_fail(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int sup_fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return code;
}

int sup_write_pid(const char *path, pid_t pid)
{
    char tmp[SUP_PATH_MAX + 8], text[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int len = snprintf(text, sizeof text, "%d\n", (int)pid);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ERR_IO;
    ssize_t w = write(fd, text, (size_t)len);
    close(fd);
    if (w != len || rename(tmp, path) != 0) {
        unlink(tmp);
        return ERR_IO;
    }
    return 0;
}

/* mkdir -p for a path of at most SUP_PATH_MAX bytes. */
static int sup_mkdirs(const char *path)
{
    char buf[SUP_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ERR_INVALID;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return ERR_IO;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return ERR_IO;
    return 0;
}

/* flock (not fcntl) so the lock belongs to the open file, released when raftsup dies in
 * any way; the holder's pid is read from raftsup.pid only for the message. */
static int sup_lock(struct sup *s, char *err, size_t err_len)
{
    char path[SUP_PATH_MAX];
    snprintf(path, sizeof path, "%s/raftsup.lock", s->cfg.data_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) return sup_fail(err, err_len, ERR_IO, "%s: %s", path, strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) return 0;
    int e = errno;
    close(s->lock_fd);
    s->lock_fd = -1;
    if (e != EWOULDBLOCK) return sup_fail(err, err_len, ERR_IO, "flock %s: %s", path, strerror(e));
    int holder = 0;
    FILE *f = fopen(s->pid_path, "r");
    if (f) {
        if (fscanf(f, "%d", &holder) != 1) holder = 0;
        fclose(f);
    }
    return sup_fail(err, err_len, ERR_BUSY,
                    "another raftsup (pid %d) is already running on data_dir %s", holder,
                    s->cfg.data_dir);
}

static int sup_prepare_dirs(struct sup *s, char *err, size_t err_len)
{
    if (sup_mkdirs(s->cfg.data_dir))
        return sup_fail(err, err_len, ERR_IO, "cannot create data_dir %s: %s", s->cfg.data_dir,
                        strerror(errno));
    for (size_t i = 0; i < s->cfg.n_nodes; i++) {
        const char *dir = s->children[i].dir;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return sup_fail(err, err_len, ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    }
    return 0;
}

int sup_init(struct sup *s, struct ev_loop *loop, const struct config *cfg, const char *config_path,
             const char *raftnode, char *err, size_t err_len)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->lock_fd = -1;
    s->log_fd = -1;
    s->cfg = *cfg;
    snprintf(s->config_path, sizeof s->config_path, "%s", config_path);
    snprintf(s->raftnode, sizeof s->raftnode, "%s", raftnode);
    snprintf(s->pid_path, sizeof s->pid_path, "%s/raftsup.pid", s->cfg.data_dir);
    for (size_t i = 0; i < s->cfg.n_nodes; i++)
        sup_child_init(&s->children[i], s, i);
    int rv = sup_prepare_dirs(s, err, err_len);
    if (rv == 0) rv = sup_lock(s, err, err_len);
    if (rv) return rv;
    if (sup_write_pid(s->pid_path, getpid()))
        return sup_fail(err, err_len, ERR_IO, "cannot write %s: %s", s->pid_path, strerror(errno));
    char path[SUP_PATH_MAX];
    snprintf(path, sizeof path, "%s/raftsup.log", s->cfg.data_dir);
    s->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->log_fd < 0) return sup_fail(err, err_len, ERR_IO, "%s: %s", path, strerror(errno));
    log_set_tee(s->log_fd);
    LOG_INFO("raftsup pid %d: cluster %s, %zu nodes, data_dir %s, raftnode %s", (int)getpid(),
             s->cfg.cluster, s->cfg.n_nodes, s->cfg.data_dir, s->raftnode);
    for (size_t i = 0; i < s->cfg.n_nodes; i++)
        sup_child_clear_stale(&s->children[i]);
    return 0;
}

static size_t sup_running(const struct sup *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->cfg.n_nodes; i++)
        n += s->children[i].pid != 0;
    return n;
}

void sup_child_stopped(struct sup *s)
{
    if (sup_running(s) == 0) {
        LOG_INFO("all nodes stopped");
        ev_timer_stop(s->loop, &s->stop_timer);
        ev_break(s->loop, EVBREAK_ALL);
    }
}

static void sup_stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup *s = w->data;
    for (size_t i = 0; i < s->cfg.n_nodes; i++) {
        if (s->children[i].pid) {
            LOG_WARN("%s (pid %d) still running after %.0f s: SIGKILL", s->children[i].node->id,
                     (int)s->children[i].pid, SUP_STOP_GRACE_S);
            sup_child_signal(&s->children[i], SIGKILL);
        }
    }
}

/* First signal: graceful stop. A second one while stopping: SIGKILL at once. */
static void sup_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct sup *s = w->data;
    if (s->stopping) {
        LOG_WARN("signal %d while stopping: killing the remaining nodes", w->signum);
        ev_feed_event(loop, &s->stop_timer, EV_TIMER);
        return;
    }
    s->stopping = true;
    LOG_INFO("signal %d: stopping %zu nodes (SIGTERM, SIGKILL after %.0f s)", w->signum,
             sup_running(s), SUP_STOP_GRACE_S);
    if (s->join) {
        sup_join_free(s->join);
        s->join = NULL;
    }
    sup_roll_free(s->roll);
    s->roll = NULL;
    for (size_t i = 0; i < s->cfg.n_nodes; i++) {
        ev_timer_stop(loop, &s->children[i].restart);
        sup_child_signal(&s->children[i], SIGTERM);
    }
    ev_timer_start(loop, &s->stop_timer);
    if (sup_running(s) == 0) sup_child_stopped(s);
}

/* SIGHUP: rolling restart of every node. */
static void sup_hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup *s = w->data;
    if (s->stopping) return;
    if (!s->roll) {
        LOG_ERROR("SIGHUP: the rolling restart is not available (out of memory at start)");
        return;
    }
    sup_roll_start(s->roll);
}

int sup_start(struct sup *s)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&s->sig_term, sup_signal_cb, SIGTERM);
    ev_signal_init(&s->sig_int, sup_signal_cb, SIGINT);
    s->sig_term.data = s->sig_int.data = s;
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_init(&s->sig_hup, sup_hup_cb, SIGHUP);
    s->sig_hup.data = s;
    ev_signal_start(s->loop, &s->sig_hup);
    if (sup_roll_new(s, &s->roll)) LOG_ERROR("cannot set up the rolling restart (SIGHUP)");
    ev_timer_init(&s->stop_timer, sup_stop_timer_cb, SUP_STOP_GRACE_S, 0.);
    s->stop_timer.data = s;
    if (s->cfg.n_nodes > 1 && sup_join_new(s, &s->join))
        LOG_ERROR("cannot start the join helper: nodes will not be joined automatically");
    for (size_t i = 0; i < s->cfg.n_nodes; i++)
        sup_child_spawn(&s->children[i]);
    if (s->join) sup_join_kick(s->join);
    return 0;
}

void sup_run(struct sup *s)
{
    ev_run(s->loop, 0);
}

void sup_close(struct sup *s)
{
    if (s->join) {
        sup_join_free(s->join);
        s->join = NULL;
    }
    for (size_t i = 0; i < s->cfg.n_nodes; i++) {
        ev_timer_stop(s->loop, &s->children[i].restart);
        if (s->lock_fd >= 0) unlink(s->children[i].pid_path);
    }
    ev_signal_stop(s->loop, &s->sig_term);
    ev_signal_stop(s->loop, &s->sig_int);
    ev_signal_stop(s->loop, &s->sig_hup);
    sup_roll_free(s->roll);
    s->roll = NULL;
    ev_timer_stop(s->loop, &s->stop_timer);
    if (s->lock_fd >= 0) {
        unlink(s->pid_path); /* only the lock holder owns the pid file */
        LOG_INFO("raftsup stopped");
        close(s->lock_fd);
        s->lock_fd = -1;
    }
    log_set_tee(-1);
    if (s->log_fd >= 0) close(s->log_fd);
    s->log_fd = -1;
}
