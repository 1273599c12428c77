"""nodes.py — start raftnode processes by hand (no supervisor) for end-to-end tests.

Each cluster lives in its own temp dir with its own free ports; stop() kills every process
it started, by pid, also when a test fails.
"""
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_ports  # noqa: E402, F401  (shared with the raftsup tests)

BUILD = harness.BUILD  # RAFTFS_BUILD, else build/


def need_raftnode():
    """Skips (exit 77 under harness.run) when raftnode is not built."""
    if not os.access(harness.RAFTNODE, os.X_OK):
        raise harness.Skip("%s is not built" % harness.RAFTNODE)


def wait_until(pred, timeout, what, interval=0.05):
    """harness.wait_until, also tolerating HTTP protocol errors while a node starts."""
    def guarded():
        try:
            return pred()
        except http.client.HTTPException:
            return None
    return harness.wait_until(guarded, timeout, what, interval)


def request(addr, method, path, body=None, headers=None, timeout=5.0):
    """One HTTP request; returns (status, headers dict (lower-case), body bytes)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def request_json(addr, method, path, body=None, timeout=5.0):
    st, hd, data = request(addr, method, path, body, timeout=timeout)
    return st, (json.loads(data) if data else None)


class Cluster:
    def __init__(self, n=3, name="e2e", extra=None):
        self.dir = tempfile.mkdtemp(prefix="raftfs-e2e-")
        ports = free_ports(2 * n)
        self.nodes = []
        for i in range(n):
            self.nodes.append({"id": "node%d" % (i + 1),
                               "raft": "127.0.0.1:%d" % ports[2 * i],
                               "http": "127.0.0.1:%d" % ports[2 * i + 1]})
        conf = {"cluster": name, "data_dir": os.path.join(self.dir, "data"), "nodes": self.nodes,
                "spare_inodes": 32}  # each test cluster would otherwise create 3 x 1,024 inodes
        conf.update(extra or {})
        self.config = os.path.join(self.dir, "cluster.json")
        with open(self.config, "w") as f:
            json.dump(conf, f)
        self.procs = {}

    def http(self, i):
        return self.nodes[i]["http"]

    def node_dir(self, i):
        return os.path.join(self.dir, "data", self.nodes[i]["id"])

    def start(self, i, bootstrap=False):
        args = [os.path.join(BUILD, "raftnode"), "--config", self.config, "--id", self.nodes[i]["id"]]
        if bootstrap:
            args.append("--bootstrap")
        os.makedirs(self.node_dir(i), exist_ok=True)
        log = open(os.path.join(self.node_dir(i), "node.log"), "ab")
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_until(lambda: self.status(i), 10, "node%d to serve HTTP" % (i + 1))

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs.get(i)
        if p and p.poll() is None:
            p.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait(10)

    def status(self, i, timeout=1.0):
        st, body = request_json(self.http(i), "GET", "/v1/status", timeout=timeout)
        return body if st == 200 else None

    def leader(self, among=None, timeout=10):
        """Index of the node every live node agrees is leader."""
        among = list(range(len(self.nodes))) if among is None else among

        def find():
            for i in among:
                s = self.status(i)
                if s and s["state"] == "leader":
                    return ("ok", i)
            return None
        return wait_until(find, timeout, "a leader")[1]

    def bootstrap_all(self):
        """node1 bootstraps; the others join through the API, as raftsup would."""
        self.start(0, bootstrap=True)
        self.leader([0])
        for i in range(1, len(self.nodes)):
            self.start(i)
            n = self.nodes[i]
            body = json.dumps({"id": n["id"], "raft": n["raft"], "http": n["http"]})

            def joined():
                st, _ = request_json(self.http(0), "POST", "/v1/cluster/join", body)
                return st in (200, 409)
            wait_until(joined, 15, "join of " + n["id"], interval=0.1)
        ids = [n["id"] for n in self.nodes]

        def all_voters():
            s = self.status(0)
            return s and sorted(m["id"] for m in s["members"] if m["voter"]) == sorted(ids)
        wait_until(all_voters, 15, "every node a voter")

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        harness.remove_tmp(self.dir)

    def cleanup(self):
        """For harness.run's track()."""
        self.stop()

    def dump_logs(self):
        for i in range(len(self.nodes)):
            path = os.path.join(self.node_dir(i), "node.log")
            if os.path.exists(path):
                print("---- %s (tail)" % path)
                with open(path, errors="replace") as f:
                    print("".join(f.readlines()[-40:]))


def rand_bytes(n, seed=None):
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))
