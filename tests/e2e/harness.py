"""harness.py — shared helpers for process-level tests of raftsup + raftnode (stdlib only).

Every Cluster lives in its own mkdtemp dir with its own free ports (never the demo's
8001-8003/9001-9003); cleanup() kills every process whose command line names that dir, so
nothing outlives a test, also when it fails. run() gives each test a hard time limit and
maps the outcome to an exit status (0 pass, 1 fail, 77 skip).
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
    print("[%7.3f]" % (time.monotonic() - _T0), *args, flush=True)


_T0 = time.monotonic()


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


def http(addr, method, path, body=None, timeout=2.0, headers=None):
    """One request; returns (status, headers dict lower-case, body bytes). Raises OSError
    when the node cannot be reached."""
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
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
        root = os.path.join(self.data, nid, "files")
        out = {}
        for dp, _, fns in os.walk(root):
            for fn in fns:
                p = os.path.join(dp, fn)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, root)] = f.read()
        return out

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
        if os.environ.get("RAFTFS_KEEP_TMP"):
            log("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

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


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run(tests, limit_s=120):
    """Runs each test(cluster_list) under a hard total time limit; 0/1/77 as exit status.
    tests: list of functions taking a `track` callable that registers clusters to clean."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    only = os.environ.get("TEST_ONLY")
    failed = skipped = 0
    for t in tests:
        if only and only not in t.__name__:
            continue
        clusters = []
        try:
            log("== %s" % t.__name__)
            t(lambda c: clusters.append(c) or c)
            log("ok   %s" % t.__name__)
        except Skip as e:
            log("skip %s: %s" % (t.__name__, e))
            skipped += 1
        except _Timeout:
            log("FAIL %s: hard time limit of %d s reached" % (t.__name__, limit_s))
            for c in clusters:
                c.dump_logs()
            failed += 1
            for c in clusters:
                c.cleanup()
            break
        except BaseException:
            traceback.print_exc()
            for c in clusters:
                c.dump_logs()
            log("FAIL %s" % t.__name__)
            failed += 1
        finally:
            for c in clusters:
                c.cleanup()
    signal.alarm(0)
    if failed:
        return 1
    return 77 if skipped and skipped == len(tests) else 0


def random_bytes(rng, lo, hi):
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(lo, hi)))


def seeded_rng():
    seed = int(os.environ.get("TEST_SEED", random.randrange(1 << 30)))
    log("seed", seed, "(TEST_SEED=%d replays the choices)" % seed)
    return random.Random(seed)


def main(tests, limit_s=120):
    sys.exit(run(tests, limit_s))
