"""netcluster.py — a raftfs cluster whose nodes are real hosts in network namespaces this
module creates (one per node, one for the clients, one holding the bridge; 10.77.0.x only
inside them), with partitions cut by iptables DROP rules inside the node namespaces.
Never touches the root namespace's interfaces or firewall; cleanup() deletes every
namespace and process it made, also after a failure (callers add atexit/signal hooks).
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import queue
import tempfile
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402
import nodes as e2e_nodes  # noqa: E402

RAFTNODE = harness.RAFTNODE  # RAFTFS_BUILD's, else build/'s
PREFIX = "rfl"  # every namespace this module makes starts with rfl<pid>
SUBNET = "10.77.0."
CLIENT_IP = SUBNET + "100"
RAFT_PORT, HTTP_PORT = 7000, 8000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def unavailable_reason():
    """None when this process can build namespaces; otherwise why not."""
    if os.geteuid() != 0:
        return "not root (network namespaces and iptables need root)"
    for tool in ("ip", "iptables"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    name = "%sprobe%d" % (PREFIX, os.getpid())
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if r.returncode != 0:
        return "ip netns add failed: %s" % r.stderr.decode(errors="replace").strip()
    try:
        r = subprocess.run(["ip", "netns", "exec", name, "iptables", "-w", "-S"],
                           capture_output=True)
        if r.returncode != 0:
            return "iptables in a namespace failed: %s" % r.stderr.decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _run(*args, check=True):
    r = subprocess.run(list(args), capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.decode(errors="replace").strip()))
    return r


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % path)
    finally:
        os.close(fd)


def _pdeathsig():
    # The node dies with this test process, whatever kills it.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Spawner:
    """Starts processes from one long-lived thread. PR_SET_PDEATHSIG fires when the thread
    that forked the child exits, not the process: a node restarted from a short-lived
    thread (the membership nemesis) was SIGKILLed when that thread ended (netns seed 28)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.q = None

    def _loop(self):
        while True:
            fn, box, done = self.q.get()
            try:
                box.append(fn())
            except BaseException as e:  # noqa: BLE001 — handed to the caller
                box.append(e)
            done.set()

    def popen(self, *args, **kw):
        with self.lock:
            if self.q is None:
                self.q = queue.Queue()
                threading.Thread(target=self._loop, daemon=True, name="spawner").start()
        box, done = [], threading.Event()
        self.q.put((lambda: subprocess.Popen(*args, **kw), box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


_spawner = _Spawner()


def remove_stale_namespaces():
    """Deletes rfl<pid>* namespaces left by runs whose process is gone."""
    r = _run("ip", "netns", "list", check=False)
    for line in r.stdout.decode().splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        rest = name[len(PREFIX):]
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        pid = int(digits) if digits else 0
        if pid and not os.path.exists("/proc/%d" % pid):
            _run("ip", "netns", "del", name, check=False)


class NetCluster:
    """n raftnode processes, node i in namespace <tag>n<i> at 10.77.0.<i>."""

    def __init__(self, n=3, name="nemesis", proxies=False, extra=None):
        self.tag = "%s%d" % (PREFIX, os.getpid())
        self.dir = tempfile.mkdtemp(prefix="raftfs-netns-")
        self.data = os.path.join(self.dir, "data")
        self.ids = ["node%d" % (i + 1) for i in range(n)]
        self.nodes = [{"id": nid, "raft": "%s%d:%d" % (SUBNET, i + 1, RAFT_PORT),
                       "http": "%s%d:%d" % (SUBNET, i + 1, HTTP_PORT)}
                      for i, nid in enumerate(self.ids)]
        if proxies:
            # Peers dial raft = a proxy on the node's own address (so partitions by address
            # still apply); the node binds loopback inside its namespace (proxy_spec).
            for i, n in enumerate(self.nodes):
                n["raft_listen"] = "127.0.0.1:%d" % (RAFT_PORT + 100 + i)
        self.config = os.path.join(self.dir, "cluster.json")
        with open(self.config, "w") as f:
            # Few spare inodes: the default pool costs each node seconds of CPU at start here.
            conf = {"cluster": name, "data_dir": self.data, "nodes": self.nodes,
                    "spare_inodes": 32}
            conf.update(extra or {})
            json.dump(conf, f)
        self.procs = {}
        self.held = set()  # killed nodes restart_dead leaves down
        self.namespaces = []
        self.rules = set()  # (src node, dst node) pairs whose packets are dropped
        self._orig_ns = None

    # --- topology -------------------------------------------------------------------
    def ns(self, nid):
        return "%s%s" % (self.tag, nid.replace("node", "n"))

    def _add_ns(self, name):
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _attach(self, ns, ip, port):
        bridge = self.tag + "b"
        _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
             "netns", bridge)
        _run("ip", "-n", bridge, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def build(self):
        """Creates the namespaces and moves this process's threads (those started from now
        on) into the client namespace, from where every node is reachable."""
        remove_stale_namespaces()
        bridge = self.tag + "b"
        self._add_ns(bridge)
        _run("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", bridge, "link", "set", "br0", "up")
        for i, nid in enumerate(self.ids):
            self._add_ns(self.ns(nid))
            self._attach(self.ns(nid), SUBNET + str(i + 1), "p%d" % (i + 1))
        client = self.tag + "c"
        self._add_ns(client)
        self._attach(client, CLIENT_IP, "pc")
        self._orig_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        _setns("/run/netns/" + client)

    # --- processes ------------------------------------------------------------------
    def start(self, nid, bootstrap=False):
        d = os.path.join(self.data, nid)
        os.makedirs(d, exist_ok=True)
        args = ["ip", "netns", "exec", self.ns(nid), RAFTNODE, "--config", self.config,
                "--id", nid] + (["--bootstrap"] if bootstrap else [])
        with open(os.path.join(d, "node.log"), "ab") as log:
            # ip netns exec execs the node in place: the pid is the node's.
            self.procs[nid] = _spawner.popen(args, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig)

    def alive(self, nid):
        p = self.procs.get(nid)
        return p is not None and p.poll() is None

    def pid(self, nid):
        return self.procs[nid].pid if self.alive(nid) else None

    def kill(self, nid, sig=signal.SIGKILL):
        p = self.procs.get(nid)
        if p and p.poll() is None:
            p.send_signal(sig)
            if sig == signal.SIGKILL:
                p.wait(10)

    def proxy_spec(self, nid):
        """(name, listen, upstream) of the proxy in front of nid, run inside its namespace."""
        n = self.nodes[self.ids.index(nid)]
        return nid, n["raft"], n["raft_listen"]

    def restart_dead(self):
        for nid in self.ids:
            if not self.alive(nid) and nid not in self.held:
                self.start(nid)

    def http(self, nid):
        return self.nodes[self.ids.index(nid)]["http"]

    def status(self, nid, timeout=1.0):
        st, body = e2e_nodes.request_json(self.http(nid), "GET", "/v1/status", timeout=timeout)
        return body if st == 200 else None

    def bootstrap_all(self, timeout=20):
        """node1 bootstraps; the others join through the API, as raftsup does."""
        first = self.ids[0]
        self.start(first, bootstrap=True)
        e2e_nodes.wait_until(lambda: (self.status(first) or {}).get("state") == "leader",
                             timeout, "node1 to lead")
        for nid in self.ids[1:]:
            self.start(nid)
            e2e_nodes.wait_until(lambda: self.status(nid), timeout, nid + " serving")
            n = self.nodes[self.ids.index(nid)]
            body = json.dumps({"id": nid, "raft": n["raft"], "http": n["http"]})

            def joined():
                st, _ = e2e_nodes.request_json(self.http(first), "POST", "/v1/cluster/join",
                                               body)
                return st in (200, 201, 409)
            e2e_nodes.wait_until(joined, timeout, "join of " + nid, interval=0.1)

        def all_voters():
            s = self.status(first)
            return s and sorted(m["id"] for m in s["members"] if m["voter"]) == self.ids
        e2e_nodes.wait_until(all_voters, timeout, "every node a voter")

    # --- partitions -----------------------------------------------------------------
    def _ip(self, nid):
        return SUBNET + str(self.ids.index(nid) + 1)

    def drop(self, src, dst):
        """Packets from src to dst are dropped (at src's output and dst's input)."""
        if (src, dst) in self.rules:
            return
        self.rules.add((src, dst))
        _run("ip", "netns", "exec", self.ns(src), "iptables", "-w", "-A", "OUTPUT", "-d",
             self._ip(dst), "-j", "DROP")
        _run("ip", "netns", "exec", self.ns(dst), "iptables", "-w", "-A", "INPUT", "-s",
             self._ip(src), "-j", "DROP")

    def cut(self, a, b):
        self.drop(a, b)
        self.drop(b, a)

    def heal(self):
        for nid in self.ids:
            _run("ip", "netns", "exec", self.ns(nid), "iptables", "-w", "-F", check=False)
        self.rules.clear()

    # --- teardown -------------------------------------------------------------------
    def cleanup(self, keep_dir=False):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except OSError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self._orig_ns is not None:
            try:
                _libc.setns(self._orig_ns, CLONE_NEWNET)
            finally:
                os.close(self._orig_ns)
                self._orig_ns = None
        for name in reversed(self.namespaces):
            _run("ip", "netns", "del", name, check=False)
        self.namespaces = []
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
