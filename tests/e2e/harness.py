"""harness.py — shared helpers for process-level tests of raftsup + raftnode (stdlib only).

Every Cluster lives in its own mkdtemp dir with its own free ports (never the demo's
8001-8003/9001-9003); cleanup() kills every process whose command line names that dir, so
nothing outlives a test, also when it fails. run() (main()) is every test script's runner:
it selects tests (names on the command line, TEST_ONLY), runs them under one hard time limit,
cleans up what each registered (also on failure, SIGTERM or Ctrl-C) and maps the outcome to
an exit status (0 pass, 1 fail, 77 skip), the protocol meson's test() reads.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(os.environ.get("RAFTFS_BUILD", os.path.join(HERE, "..", "..", "build")))
RAFTSUP = os.path.join(BUILD, "raftsup")
RAFTNODE = os.path.join(BUILD, "raftnode")
FAKE_NODE = os.path.join(HERE, "fake_raftnode.py")
HOLD_NODE = os.path.join(HERE, "hold_raftnode.sh")
DEMO_PORTS = {8001, 8002, 8003, 9001, 9002, 9003}


class Skip(Exception):
    """Raised to skip a test (exit 77) with a reason."""


def log(*args):
    """print() behind the seconds since the start (T0)."""
    print("[%7.3f]" % (time.monotonic() - T0), *args, flush=True)


T0 = time.monotonic()


def free_ports(count):
    """Ports that were free a moment ago (bound to 127.0.0.1:0, then released)."""
    ports, socks = [], []
    while len(ports) < count:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        socks.append(s)
        if p not in DEMO_PORTS and p not in ports:
            ports.append(p)
    for s in socks:
        s.close()
    return ports


def check(cond, msg):
    """assert that also runs under python3 -O."""
    if not cond:
        raise AssertionError(msg)


def wait_until(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns something truthy; fails after timeout seconds."""
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(interval)


# Straight to the node: an http_proxy in the environment must not route test traffic.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(addr, method, path, body=None, timeout=2.0, headers=None):
    """One request; returns (status, headers dict lower-case, body bytes). Raises OSError
    when the node cannot be reached."""
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body, method=method,
                                 headers=headers or {})
    try:
        with _DIRECT.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from e


def http_json(addr, method, path, obj=None, timeout=2.0):
    body = json.dumps(obj).encode() if obj is not None else None
    st, _, data = http(addr, method, path, body, timeout,
                       {"Content-Type": "application/json"} if body else None)
    try:
        return st, json.loads(data) if data else None
    except ValueError:
        return st, None


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pids_naming(text):
    """Pids of live processes whose command line contains text."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read() and pid_alive(int(d)):
                    out.append(int(d))
        except OSError:
            pass
    return out


class Cluster:
    """A config of n nodes in a temp dir, run under raftsup."""

    def __init__(self, n=3, fake=False, extra=None, name="suptest"):
        self.dir = tempfile.mkdtemp(prefix="raftfs-sup-")
        self.data = os.path.join(self.dir, "data")
        ports = free_ports(2 * n)
        self.nodes = [{"id": "node%d" % (i + 1), "raft": "127.0.0.1:%d" % ports[2 * i],
                       "http": "127.0.0.1:%d" % ports[2 * i + 1]} for i in range(n)]
        # A small spare-inode pool: each test cluster would otherwise create 3 x 1,024 inodes.
        conf = {"cluster": name, "data_dir": self.data, "nodes": self.nodes, "spare_inodes": 32}
        conf.update(extra or {})
        self.config = os.path.join(self.dir, "cluster.json")
        with open(self.config, "w") as f:
            json.dump(conf, f, indent=1)
        self.env = dict(os.environ)
        self.hold_dir = os.path.join(self.dir, "hold")
        os.makedirs(self.hold_dir)
        if fake:
            self.env["RAFTFS_RAFTNODE"] = FAKE_NODE
        else:
            # Real nodes run through hold_raftnode.sh so a test can keep one down.
            self.env.update(RAFTFS_RAFTNODE=HOLD_NODE, RAFTFS_REAL_RAFTNODE=RAFTNODE,
                            RAFTFS_HOLD_DIR=self.hold_dir)
        self.procs = []
        self.sup = None

    # --- the supervisor -------------------------------------------------------------
    def start(self, expect_running=True, relative=False):
        """relative: pass the config as a path relative to the cwd (the temp dir)."""
        out = open(os.path.join(self.dir, "raftsup.out.%d" % len(self.procs)), "ab")
        conf = os.path.basename(self.config) if relative else self.config
        p = subprocess.Popen([RAFTSUP, conf], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir,
                             start_new_session=True)
        out.close()
        self.procs.append(p)
        self.sup = p
        if expect_running:
            wait_until(lambda: self.sup_pid_file() == p.pid or p.poll() is not None, 10,
                       "raftsup.pid")
            if p.poll() is not None:
                raise AssertionError("raftsup exited %s:\n%s" % (p.returncode, self.sup_output()))
        return p

    def sup_output(self):
        text = ""
        for i in range(len(self.procs)):
            try:
                with open(os.path.join(self.dir, "raftsup.out.%d" % i), "rb") as f:
                    text += f.read().decode(errors="replace")
            except OSError:
                pass
        return text

    def sup_pid_file(self):
        return read_pid(os.path.join(self.data, "raftsup.pid"))

    def stop(self, timeout=10):
        """SIGTERM to raftsup; returns its exit status."""
        self.sup.send_signal(signal.SIGTERM)
        return self.sup.wait(timeout)

    def kill_sup(self):
        self.sup.kill()
        self.sup.wait(5)

    # --- nodes ----------------------------------------------------------------------
    def node(self, nid):
        return next(n for n in self.nodes if n["id"] == nid)

    def node_pid(self, nid):
        return read_pid(os.path.join(self.data, nid, "node.pid"))

    def live_node_pid(self, nid):
        pid = self.node_pid(nid)
        return pid if pid and pid_alive(pid) else None

    def wait_node_pids(self, timeout=10, ids=None):
        ids = ids or [n["id"] for n in self.nodes]
        return wait_until(lambda: all(self.live_node_pid(i) for i in ids) and
                          {i: self.live_node_pid(i) for i in ids}, timeout, "node.pid files")

    def hold(self, nid):
        """Restarts of nid fail (exit 1) until release(nid)."""
        open(os.path.join(self.hold_dir, nid), "w").close()

    def release(self, nid):
        os.unlink(os.path.join(self.hold_dir, nid))

    def kill_node(self, nid, sig=signal.SIGKILL):
        pid = self.live_node_pid(nid)
        assert pid, "%s is not running" % nid
        os.kill(pid, sig)
        return pid

    def status(self, nid, timeout=1.0):
        st, body = http_json(self.node(nid)["http"], "GET", "/v1/status", timeout=timeout)
        return body if st == 200 else None

    def statuses(self, ids=None):
        out = {}
        for n in self.nodes:
            if ids and n["id"] not in ids:
                continue
            try:
                out[n["id"]] = self.status(n["id"], 0.5)
            except OSError:
                out[n["id"]] = None
        return out

    def leader(self, ids=None):
        """The id of a node that says it is the leader and that the others agree on."""
        sts = self.statuses(ids)
        leaders = [i for i, s in sts.items() if s and s.get("state") == "leader"]
        if len(leaders) != 1:
            return None
        return leaders[0]

    def wait_leader(self, timeout=15, ids=None, exclude=None):
        def pred():
            lead = self.leader(ids)
            return lead if lead and lead != exclude else None
        return wait_until(pred, timeout, "a leader")

    def wait_voters(self, n, timeout=20):
        def pred():
            lead = self.leader()
            st = self.status(lead) if lead else None
            if not st:
                return None
            voters = [m["id"] for m in st["members"] if m.get("voter")]
            return voters if len(voters) == n else None
        return wait_until(pred, timeout, "%d voters" % n)

    # --- files ----------------------------------------------------------------------
    def put(self, nid, path, data, timeout=3.0):
        st, _, body = http(self.node(nid)["http"], "PUT", "/v1/files/" + path, data, timeout)
        return st, body

    def get(self, nid, path, stale=False, timeout=3.0):
        q = "?stale=true" if stale else ""
        st, _, body = http(self.node(nid)["http"], "GET", "/v1/files/" + path + q, None,
                           timeout)
        return st, body

    def put_ok(self, path, data, timeout=15, ids=None):
        """PUT through any node until one answers 2xx; returns the node used."""
        ids = ids or [n["id"] for n in self.nodes]

        def pred():
            for nid in ids:
                try:
                    st, _ = self.put(nid, path, data, 2.0)
                except OSError:
                    continue
                if st in (200, 201):
                    return nid
            return None
        return wait_until(pred, timeout, "PUT %s accepted" % path, 0.05)

    def wait_file(self, nid, path, data, timeout=15):
        """Until nid's local state holds path with exactly data."""
        def pred():
            st, body = self.get(nid, path, stale=True, timeout=1.0)
            return st == 200 and body == data
        return wait_until(pred, timeout, "%s on %s" % (path, nid))

    def files_on_disk(self, nid):
        return read_tree(os.path.join(self.data, nid, "files"))

    # --- teardown -------------------------------------------------------------------
    def cleanup(self):
        """Kills everything this cluster started (raftsup sessions, then any process that
        names the temp dir), waits for it to vanish, removes the dir."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(5)
        for _ in range(100):
            pids = pids_naming(self.dir)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        remove_tmp(self.dir)

    def dump_logs(self):
        print("---- raftsup output", flush=True)
        print(self.sup_output()[-4000:], flush=True)
        for n in self.nodes:
            p = os.path.join(self.data, n["id"], "node.log")
            try:
                with open(p, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                print("---- %s node.log (tail)\n%s" % (n["id"], tail), flush=True)
            except OSError:
                pass


def read_tree(root, digest=None, vanishing=False):
    """{path relative to root: content, or digest(content)} of every file below root.
    vanishing: a file deleted while the tree is read is left out instead of raising OSError
    (for trees a live node is still changing)."""
    out = {}
    for dp, _, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                if vanishing:
                    continue
                raise
            out[os.path.relpath(p, root)] = digest(data) if digest else data
    return out


def remove_tmp(path):
    """Removes a test's temp dir, unless RAFTFS_KEEP_TMP (or KEEP_E2E) asks to keep it for a
    post-mortem."""
    if os.environ.get("RAFTFS_KEEP_TMP") or os.environ.get("KEEP_E2E"):
        log("kept", path)
    else:
        shutil.rmtree(path, ignore_errors=True)


class TempDir:
    """A temp dir to hand to track(): harness.run removes it after the test."""

    def __init__(self, prefix):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def cleanup(self):
        remove_tmp(self.path)


FAST_RESTART = {"restart_backoff_ms": [50, 500]}  # killed nodes come back quickly


def started(track, n=3, extra=None):
    """A tracked n-node cluster of real nodes under raftsup (FAST_RESTART unless extra says
    otherwise); returns once every node runs and is a voter."""
    need_binaries(True)
    c = track(Cluster(n, extra=dict(FAST_RESTART, **(extra or {}))))
    c.start()
    c.wait_node_pids()
    c.wait_voters(n, 30)
    return c


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def need_binaries(real_node):
    if not os.access(RAFTSUP, os.X_OK):
        raise Skip("%s is not built" % RAFTSUP)
    if real_node and not os.access(RAFTNODE, os.X_OK):
        raise Skip("%s is not built yet" % RAFTNODE)


class _Abort(BaseException):
    """The hard time limit (SIGALRM) or a SIGTERM (meson's timeout): the test fails and the
    run stops, after cleanup. A BaseException so a test's `except Exception` cannot eat it."""


def _abort(signum, frame):
    raise _Abort("hard time limit reached" if signum == signal.SIGALRM else
                 "stopped by signal %d" % signum)


class _Tracker:
    """What a test registered through track(x): each x has cleanup() and may have
    dump_logs(). SIGALRM, SIGTERM and SIGINT wait until cleanup is over, so a late signal
    cannot cut it short and leave processes or temp dirs behind."""

    def __init__(self):
        self.items = []

    def __call__(self, x):
        self.items.append(x)
        return x

    def dump_logs(self):
        for x in self.items:
            if hasattr(x, "dump_logs"):
                x.dump_logs()

    def cleanup(self):
        # Deferred, not blocked: with other threads running, a blocked signal would still
        # reach this (the main) thread's Python handler through one of them.
        pending = []
        held = (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)
        saved = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
        try:
            while self.items:
                try:
                    self.items.pop().cleanup()
                except Exception:  # noqa: BLE001 — the rest must still be cleaned
                    traceback.print_exc()
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
            if pending:
                signal.raise_signal(pending[0])


def _attempt(name, call, track):
    """call() with its outcome logged: 'ok', 'skip', 'fail' or 'abort' (stop the run). A
    failure prints its traceback and the logs of what track holds."""
    try:
        log("== %s" % name)
        call()
        log("ok   %s" % name)
        return "ok"
    except Skip as e:
        log("skip %s: %s" % (name, e))
        return "skip"
    except BaseException as e:  # noqa: BLE001 — every failure is reported, then cleaned up
        if isinstance(e, _Abort):
            log("FAIL %s: %s" % (name, e))
        else:
            traceback.print_exc()
            log("FAIL %s" % name)
        track.dump_logs()
        return "abort" if isinstance(e, (_Abort, KeyboardInterrupt, SystemExit)) else "fail"


def _run_tests(tests, args, stop_at_failure):
    """Each test as test(*args), or as test(track) with a tracker of its own."""
    outcomes = []
    for t in tests:
        track = _Tracker()
        try:
            call = (lambda: t(*args)) if args is not None else (lambda: t(track))
            outcomes.append(_attempt(t.__name__, call, track))
        finally:
            track.cleanup()
        if outcomes[-1] == "abort" or (outcomes[-1] == "fail" and stop_at_failure):
            break
    return outcomes


def select(tests, names=(), only=None):
    """The tests named in names (all when empty) whose name contains only (TEST_ONLY)."""
    return [t for t in tests
            if (not names or t.__name__ in names) and (not only or only in t.__name__)]


def _run_with_setup(tests, setup, shared, stop_at_failure):
    box = []
    first = _attempt("setup", lambda: box.append(setup(shared)), shared)
    if first != "ok":
        return [first]
    outcomes = _run_tests(tests, box[0], stop_at_failure)
    if not _passed(outcomes):
        shared.dump_logs()
    return outcomes


def _passed(outcomes):
    return all(o in ("ok", "skip") for o in outcomes)


def run(tests, limit_s=120, names=(), setup=None, stop_at_failure=False):
    """Runs the tests under one hard time limit; returns the exit status: 1 when a test (or
    setup) failed or nothing was selected, 77 when every test run was skipped, else 0.

    Tests run in order, selected by names (exact) and TEST_ONLY (a substring). Without setup
    each test is called as test(track): track(x) registers x (a Cluster, or anything with
    cleanup() and optionally dump_logs()) to be cleaned up after the test, and to have its
    logs dumped if the test fails. With setup, setup(track) runs once before the first test
    and returns either the tuple of arguments every test is then called with (tests that
    share a cluster; what setup tracked is cleaned up at the end, its logs dumped if
    anything failed) or None (it only checked a precondition; tests get their own track).
    A Skip from setup skips every test. stop_at_failure: for tests that build on each
    other's state. The time limit, SIGTERM and Ctrl-C fail the running test and stop the
    run; cleanup happens in every case."""
    only = os.environ.get("TEST_ONLY")
    chosen = select(tests, names, only)
    if not chosen:
        log("FAIL: no test named %s matches TEST_ONLY=%s" % (list(names) or "(any)", only))
        return 1
    old = {s: signal.signal(s, _abort) for s in (signal.SIGALRM, signal.SIGTERM)}
    signal.alarm(limit_s)
    shared = _Tracker()
    try:
        if setup:
            outcomes = _run_with_setup(chosen, setup, shared, stop_at_failure)
        else:
            outcomes = _run_tests(chosen, None, stop_at_failure)
    except (_Abort, KeyboardInterrupt) as e:  # one that waited for a cleanup to end
        log("FAIL: %s" % (e or type(e).__name__))
        outcomes = ["abort"]
    finally:
        signal.alarm(0)
        shared.cleanup()
        for s, handler in old.items():
            signal.signal(s, handler)
    if not _passed(outcomes):
        return 1
    return 77 if all(o == "skip" for o in outcomes) else 0


def random_bytes(rng, lo, hi):
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(lo, hi)))


def seeded_rng():
    seed = int(os.environ.get("TEST_SEED", random.randrange(1 << 30)))
    log("seed", seed, "(TEST_SEED=%d replays the choices)" % seed)
    return random.Random(seed)


def main(tests, limit_s=120, setup=None, stop_at_failure=False):
    """run() with the test names given on the command line; exits with its status."""
    sys.exit(run(tests, limit_s, sys.argv[1:], setup, stop_at_failure))
