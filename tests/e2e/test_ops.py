#!/usr/bin/env python3
"""test_ops.py — cluster operations end to end (issue 5, items 3 and 4): leadership transfer
to each follower in turn under a continuous writer; transfer's bad inputs (unknown id,
learner, the leader itself, garbage JSON, a dead target -> 504 while the leader keeps
serving); a 4th node started by hand on a new address joined at runtime, a node removed, a
node that comes back on a new address keeping its identity, everything restarted; a leader
stopped with SIGTERM handing leadership over first, and a rolling restart under raftsup; and
disaster recovery with --force-new-cluster after the majority is lost for good.

Each subtest has its own temp dir and free ports. The write unavailability (longest time
between two acknowledged writes of a continuous writer) is printed as a benchmark number,
not asserted; that no acknowledged write is lost and files/ are identical is asserted."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import harness as h
import nodes as nd

RAFTCTL = os.path.join(h.BUILD, "raftctl")


# ---- helpers -----------------------------------------------------------------------------
class Nodes(nd.Cluster):
    """Nodes started by hand (nodes.py), plus nodes that are not in the config file."""

    def __init__(self, n=3, extra=None):
        super().__init__(n, name="opstest", extra=extra)
        self.confs = {}  # node index -> the config file it runs with

    def start_with(self, i, config, args=(), wait=True):
        node = self.nodes[i]
        cmd = [nd.BUILD + "/raftnode", "--config", config, "--id", node["id"]] + list(args)
        os.makedirs(self.node_dir(i), exist_ok=True)
        with open(os.path.join(self.node_dir(i), "node.log"), "ab") as log:
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
        self.confs[i] = config
        if wait:
            nd.wait_until(lambda: self.status(i), 10, "%s to serve HTTP" % node["id"])
        return self.procs[i]

    def add_node(self, nid):
        """A node that only its own config file names (the others' config files do not)."""
        raft, http_port = h.free_ports(2)
        self.nodes.append({"id": nid, "raft": "127.0.0.1:%d" % raft,
                           "http": "127.0.0.1:%d" % http_port})
        return len(self.nodes) - 1

    def write_config(self, name, ids):
        with open(self.config) as f:
            conf = json.load(f)
        conf["nodes"] = [n for n in self.nodes if n["id"] in ids]
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def index(self, nid):
        return next(i for i, n in enumerate(self.nodes) if n["id"] == nid)

    def stop_node(self, i, sig=signal.SIGKILL):
        p = self.procs.pop(i, None)
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(15)
        return p

    def leader_id(self, among=None, timeout=15):
        """The id of a leader every asked live node agrees on."""
        among = among if among is not None else sorted(self.procs)

        def find():
            ids = set()
            for i in among:
                try:
                    s = self.status(i, 0.5)
                except (OSError, http.client.HTTPException):
                    continue
                if not s or not s["leader"]:
                    return None
                ids.add(s["leader"]["id"])
            return ids.pop() if len(ids) == 1 else None
        return nd.wait_until(find, timeout, "agreed leader", 0.02)

    def members(self, i):
        return {m["id"]: m for m in self.status(i)["members"]}

    def wait_same_files(self, ids, timeout=20):
        def same():
            got = [h.read_tree(os.path.join(self.node_dir(i), "files")) for i in ids]
            return all(g == got[0] for g in got) and got[0]
        return nd.wait_until(same, timeout, "identical files/ on %s" % ids, 0.1)


def booted(track):
    """Three tracked nodes started by hand: node1 bootstrapped, the others joined."""
    h.need_binaries(True)
    c = track(Nodes(3))
    c.bootstrap_all()
    return c


def post(addr, route, obj, timeout=10.0):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    st, _, data = nd.request(addr, "POST", route, body, {"Content-Type": "application/json"},
                             timeout)
    try:
        return st, json.loads(data) if data else None
    except ValueError:
        return st, data


def raftctl(args, timeout=30):
    p = subprocess.run([RAFTCTL] + args, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class Writer(threading.Thread):
    """PUTs new paths one after another through addrs (the next one after a failure) and
    records when each was acknowledged. A refused or failed write is retried with the same
    path and bytes, so every acknowledged path must hold exactly its bytes everywhere."""

    def __init__(self, addrs, prefix="w"):
        super().__init__(daemon=True)
        self.addrs = list(addrs)
        self.prefix = prefix
        self.acked = {}
        self.ack_times = []
        self.refused = []  # (time, status or error)
        self.stop_ev = threading.Event()

    def run(self):
        i = k = 0
        while not self.stop_ev.is_set():
            path = "%s/%06d" % (self.prefix, i)
            data = b"write %d " % i * 8
            addr = self.addrs[k % len(self.addrs)]
            try:
                st, _, body = nd.request(addr, "PUT", "/v1/files/" + path, data, timeout=6)
            except (OSError, http.client.HTTPException) as e:
                st, body = type(e).__name__, b""
            if st in (200, 201):
                self.acked[path] = data
                self.ack_times.append(time.monotonic())
                i += 1
            else:
                self.refused.append((time.monotonic(), st))
                k += 1
                time.sleep(0.005)

    def stop(self):
        self.stop_ev.set()
        self.join(15)

    def gap_around(self, t0, t1):
        """The longest time without an acknowledgement in [t0, t1] (edges included)."""
        times = [t0] + [t for t in self.ack_times if t0 < t < t1] + [t1]
        later = [t for t in self.ack_times if t >= t1]
        if later:
            times.append(later[0])
        return max(b - a for a, b in zip(times, times[1:]))

    def refused_between(self, t0, t1):
        return [r for r in self.refused if t0 <= r[0] <= t1]


def check_acked(c, w, ids):
    files = c.wait_same_files(ids)
    lost = [p for p, d in w.acked.items() if files.get(p) != d]
    assert not lost, "acknowledged writes lost: %s" % lost[:5]
    return files


# ---- transfer ----------------------------------------------------------------------------
def test_transfer_each_follower(track):
    c = booted(track)
    w = Writer([n["http"] for n in c.nodes])
    w.start()
    nd.wait_until(lambda: len(w.acked) >= 20, 15, "first writes")
    gaps = []
    for rnd in range(3):
        lead = c.leader_id()
        target = next(n["id"] for n in c.nodes if n["id"] not in (lead,) and
                      (rnd % 2 == 0 or n["id"] != "node1"))
        # Alternate: ask the leader itself, or a follower (forwarded to the leader).
        via = c.index(lead) if rnd % 2 == 0 else next(
            i for i, n in enumerate(c.nodes) if n["id"] not in (lead, target))
        t0 = time.monotonic()
        st, body = post(c.http(via), "/v1/cluster/transfer", {"id": target})
        t1 = time.monotonic()
        assert st == 200 and body["leader"] == target, (st, body)
        assert c.leader_id() == target
        nd.wait_until(lambda: len([t for t in w.ack_times if t > t1]) >= 5, 10,
                      "writes after the transfer")
        gap = w.gap_around(t0, t1)
        gaps.append(gap)
        h.log("transfer %s -> %s via %s: answered in %.0f ms; longest write gap %.0f ms, "
              "%d refused" % (lead, target, c.nodes[via]["id"], 1000 * (t1 - t0), 1000 * gap,
                              len(w.refused_between(t0, t1))))
    # raftctl: to the node that is not the leader yet, through the config's node list.
    lead = c.leader_id()
    target = next(n["id"] for n in c.nodes if n["id"] != lead)
    rc, out, err = raftctl(["--config", c.config, "transfer", target])
    assert rc == 0 and "leader: %s" % target in out, (rc, out, err)
    time.sleep(0.3)  # a few more acknowledged writes after the last transfer
    w.stop()
    h.log("BENCH transfer: write gaps %s ms; %d writes acknowledged, %d refused in all"
          % ([round(1000 * g) for g in gaps], len(w.acked), len(w.refused)))
    files = check_acked(c, w, range(3))
    assert len(files) == len(w.acked)
    for i in range(3):
        with open(os.path.join(c.node_dir(i), "node.log")) as f:
            if "leadership transfer to" in f.read():
                break
    else:
        raise AssertionError("no node logged a leadership transfer")


def test_transfer_bad_inputs(track):
    c = booted(track)
    lead = c.leader_id()
    li = c.index(lead)
    fi = (li + 1) % 3
    ghost = {"id": "ghost", "raft": "127.0.0.1:%d" % h.free_ports(1)[0],
             "http": "127.0.0.1:%d" % h.free_ports(1)[0]}
    st, body = post(c.http(li), "/v1/cluster/join", ghost)  # never started: stays a learner
    assert st == 200, (st, body)
    nd.wait_until(lambda: "ghost" in c.members(fi), 10, "ghost learner known")
    cases = [
        (li, {"id": "nobody"}, 404, "not_found"),
        (fi, {"id": "nobody"}, 404, "not_found"),
        (li, {"id": "ghost"}, 409, "not_voter"),
        (fi, {"id": "ghost"}, 409, "not_voter"),
        (li, {"id": lead}, 409, "already_leader"),
        (fi, {"id": lead}, 409, "already_leader"),
        (li, b"{not json", 400, "bad_json"),
        (li, {"name": "node2"}, 400, "bad_json"),
        (fi, {"id": 7}, 400, "bad_json"),
        (li, b"", 400, "bad_json"),
    ]
    for via, obj, want, code in cases:
        st, body = post(c.http(via), "/v1/cluster/transfer", obj)
        h.log("transfer %r via %s: %d %s" % (obj, c.nodes[via]["id"], st, body))
        assert st == want and body["code"] == code, (obj, st, body)
    st, _, _ = nd.request(c.http(li), "GET", "/v1/cluster/transfer")
    assert st == 405, st
    rc, out, err = raftctl(["--server", c.http(li), "transfer", "nobody"])
    assert rc == 1 and "not a member" in err, (rc, out, err)
    rc, out, err = raftctl(["--server", c.http(li), "transfer"])
    assert rc == 2, (rc, out, err)
    # A dead voter: 504 after about two election timeouts; the leader keeps serving.
    dead = (li + 2) % 3
    c.stop_node(dead)
    for via in (li, fi):
        t0 = time.monotonic()
        st, body = post(c.http(via), "/v1/cluster/transfer", {"id": c.nodes[dead]["id"]})
        took = time.monotonic() - t0
        h.log("transfer to dead %s via %s: %d %s after %.0f ms" % (
            c.nodes[dead]["id"], c.nodes[via]["id"], st, body, 1000 * took))
        assert st == 504 and body["code"] == "transfer_timeout", (st, body)
        assert took < 3.0, took
        assert c.leader_id(among=[li, fi]) == lead
        st, _, _ = nd.request(c.http(fi), "PUT", "/v1/files/after-dead-%d" % via, b"x")
        assert st == 201, st
    # Nothing is left pending: a later transfer to the live follower works at once.
    st, body = post(c.http(li), "/v1/cluster/transfer", {"id": c.nodes[fi]["id"]})
    assert st == 200 and body["leader"] == c.nodes[fi]["id"], (st, body)


# ---- membership --------------------------------------------------------------------------
def put_files(c, via, files):
    for p, d in files.items():
        st, _, body = nd.request(c.http(via), "PUT", "/v1/files/" + p, d, timeout=10)
        assert st in (200, 201), (p, st, body)


def voters(c, i):
    return sorted(m["id"] for m in c.status(i)["members"] if m["voter"])


def test_add_remove_restart(track):
    c = booted(track)
    files = {"a/%d" % i: os.urandom(200 + i) for i in range(10)}
    put_files(c, 0, files)
    # node4: a new host:port that only its own config file names.
    i4 = c.add_node("node4")
    conf4 = c.write_config("node4.json", ["node1", "node2", "node3", "node4"])
    c.start_with(i4, conf4)
    w = Writer([c.http(0), c.http(1), c.http(2)], "m")
    w.start()
    n4 = c.nodes[i4]
    t0 = time.monotonic()
    rc, out, err = raftctl(["--config", c.config, "join", "node4", n4["raft"], n4["http"]])
    assert rc == 0 and "ok" in out, (rc, out, err)
    nd.wait_until(lambda: voters(c, 0) == ["node1", "node2", "node3", "node4"], 20,
                  "node4 a voter")
    t1 = time.monotonic()
    h.log("BENCH join node4: longest write gap %.0f ms" % (1000 * w.gap_around(t0, t1)))
    # Remove node1 (the leader, since it bootstrapped, unless an election moved it).
    lead = c.leader_id()
    t0 = time.monotonic()
    rc, out, err = raftctl(["--server", c.http(1), "remove", "node1"])
    assert rc == 0, (rc, out, err)
    nd.wait_until(lambda: voters(c, 1) == ["node2", "node3", "node4"], 10, "node1 removed")
    # A removed leader steps down once its removal commits: wait for the next one to serve.
    nd.wait_until(lambda: c.leader_id(among=[1, 2, i4]) != "node1", 10, "a leader not node1")
    t1 = time.monotonic()
    nd.wait_until(lambda: len([t for t in w.ack_times if t > t1]) >= 3, 10,
                  "writes after the removal")
    h.log("BENCH remove node1 (leader: %s): longest write gap %.0f ms"
          % (lead, 1000 * w.gap_around(t0, t1)))
    if lead == "node1":  # a leader hands leadership over before its own removal
        with open(os.path.join(c.node_dir(0), "node.log"), errors="replace") as f:
            assert "removal of this node (the leader): handing leadership over" in f.read()
    w.addrs = [c.http(1), c.http(2), c.http(i4)]
    time.sleep(0.3)
    w.stop()
    c.stop_node(0)
    more = {"b/%d" % i: os.urandom(300) for i in range(5)}
    put_files(c, i4, more)
    files.update(more)
    files.update(w.acked)
    # Restart everything: the configuration (node4 in, node1 out) comes back from the log.
    for i in (1, 2, i4):
        c.stop_node(i, signal.SIGTERM)
    for i in (1, 2):
        c.start_with(i, c.config)
    c.start_with(i4, conf4)
    lead = c.leader_id(among=[1, 2, i4], timeout=20)
    h.log("after the restart: leader %s, voters %s" % (lead, voters(c, 1)))
    assert voters(c, i4) == ["node2", "node3", "node4"]
    assert "node1" not in c.members(1)
    got = c.wait_same_files([1, 2, i4])
    assert got == files, sorted(set(got) ^ set(files))[:5]


def test_new_address_keeps_identity(track):
    c = booted(track)
    files = {"x/%d" % i: os.urandom(100) for i in range(5)}
    put_files(c, 0, files)
    lead = c.leader_id()
    mover = next(i for i in range(3) if c.nodes[i]["id"] != lead)
    mid = c.nodes[mover]["id"]
    nd.wait_until(lambda: c.status(mover)["applied_index"] >= c.status(c.index(lead))[
        "commit_index"], 10, "mover caught up")
    c.stop_node(mover, signal.SIGTERM)
    # Same id and data directory, new ports (its own config file says so).
    raft, http_port = h.free_ports(2)
    c.nodes[mover] = dict(c.nodes[mover], raft="127.0.0.1:%d" % raft,
                          http="127.0.0.1:%d" % http_port)
    conf_m = c.write_config("moved.json", [n["id"] for n in c.nodes])
    c.start_with(mover, conf_m)
    others = [i for i in range(3) if i != mover]
    w = Writer([c.http(i) for i in others], "n")
    w.start()
    t0 = time.monotonic()
    n = c.nodes[mover]
    rc, out, err = raftctl(["--server", c.http(others[0]), "join", mid, n["raft"], n["http"]])
    assert rc == 0, (rc, out, err)

    def moved():
        m = c.members(others[1]).get(mid)
        return m and m["raft"] == n["raft"] and m["http"] == n["http"] and m["voter"]
    nd.wait_until(moved, 20, "%s a voter at its new address" % mid)
    t1 = time.monotonic()
    h.log("BENCH address change: longest write gap %.0f ms" % (1000 * w.gap_around(t0, t1)))
    logs = ""
    for i in range(3):
        with open(os.path.join(c.node_dir(i), "node.log"), errors="replace") as f:
            logs += f.read()
    assert "member address change: removed %s" % mid in logs
    assert "member %s added back as a learner" % mid in logs
    # Same addresses again: nothing to do.
    rc, out, err = raftctl(["--server", c.http(others[0]), "join", mid, n["raft"], n["http"]])
    assert rc == 1 and "already a member" in err, (rc, out, err)
    time.sleep(0.2)
    w.stop()
    files.update(w.acked)
    put_files(c, mover, {"y": b"through the moved node"})
    files["y"] = b"through the moved node"
    got = c.wait_same_files(range(3))
    assert got == files, sorted(set(got) ^ set(files))[:5]
    st = c.status(mover)
    assert st["id"] == mid and st["state"] in ("follower", "leader"), st


# ---- SIGTERM and rolling restart (raftsup) -----------------------------------------------
def node_log(c, nid):
    with open(os.path.join(c.data, nid, "node.log"), errors="replace") as f:
        return f.read()


def sup_log(c):
    with open(os.path.join(c.data, "raftsup.log"), errors="replace") as f:
        return f.read()


def caught_up(c, nid):
    lead = c.leader()
    if not lead:
        return False
    ls, ns = c.status(lead), c.status(nid)
    return ls and ns and ns["leader"] and ns["applied_index"] >= ls["commit_index"]


def test_sigterm_leader_and_rolling_restart(track):
    c = h.started(track)
    w = Writer([n["http"] for n in c.nodes], "r")
    w.start()
    h.wait_until(lambda: len(w.acked) >= 20, 15, "first writes")
    # SIGTERM of the leader: it hands leadership over, then stops; raftsup restarts it.
    lead = c.wait_leader()
    pid = c.live_node_pid(lead)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    new = c.wait_leader(exclude=lead, ids=[n["id"] for n in c.nodes if n["id"] != lead])
    h.wait_until(lambda: not h.pid_alive(pid), 10, "old leader stopped")
    h.wait_until(lambda: c.live_node_pid(lead) not in (None, pid), 10, "restarted")
    h.wait_until(lambda: caught_up(c, lead), 20, "%s caught up" % lead)
    t1 = time.monotonic()
    text = node_log(c, lead)
    assert "handing leadership to" in text and "leadership handed over" in text, text[-2000:]
    h.log("BENCH SIGTERM of leader %s -> %s: longest write gap %.0f ms, %d refused"
          % (lead, new, 1000 * w.gap_around(t0, t1), len(w.refused_between(t0, t1))))
    # Rolling restart through raftsup (SIGHUP): one node at a time, followers first.
    pids = c.wait_node_pids()
    lead = c.wait_leader()
    t0 = time.monotonic()
    c.sup.send_signal(signal.SIGHUP)
    h.wait_until(lambda: "rolling restart done" in sup_log(c), 40, "the rolling restart")
    t1 = time.monotonic()
    new_pids = c.wait_node_pids()
    assert all(new_pids[i] != pids[i] for i in pids), (pids, new_pids)
    text = sup_log(c).rsplit("rolling restart of 3 nodes", 1)[1]
    order = [line.split("stopping ")[1].split()[0] for line in text.splitlines()
             if "rolling restart: stopping" in line]
    assert order[-1] == lead and sorted(order) == ["node1", "node2", "node3"], (order, lead)
    for n in c.nodes:
        h.wait_until(lambda: caught_up(c, n["id"]), 20, "%s caught up" % n["id"])
    time.sleep(0.2)
    w.stop()
    h.log("BENCH rolling restart of 3 nodes in %.1f s: longest write gap %.0f ms, %d refused "
          "(%s)" % (t1 - t0, 1000 * w.gap_around(t0, t1), len(w.refused_between(t0, t1)),
                    sorted(set(str(r[1]) for r in w.refused_between(t0, t1)))))
    ids = [n["id"] for n in c.nodes]

    def same():
        got = [c.files_on_disk(i) for i in ids]
        return all(g == got[0] for g in got) and got[0]
    files = h.wait_until(same, 20, "identical files/")
    lost = [p for p, d in w.acked.items() if files.get(p) != d]
    assert not lost, lost[:5]


def test_sup_new_address(track):
    """raftsup restarted with a config that moves one node to new ports: the node keeps its
    identity and data, raftsup's join helper updates its addresses in the configuration."""
    c = h.started(track)
    files = {"s/%d" % i: os.urandom(64) for i in range(5)}
    for p, d in files.items():
        c.put_ok(p, d)
    assert c.stop(15) == 0
    # Move the node that led (the hardest case: it must hand leadership over first) — or,
    # if it happens to lose the next election, a follower: either way its address changes.
    mover = c.nodes[2]
    raft, http_port = h.free_ports(2)
    mover["raft"], mover["http"] = "127.0.0.1:%d" % raft, "127.0.0.1:%d" % http_port
    with open(c.config) as f:
        conf = json.load(f)
    conf["nodes"] = c.nodes
    with open(c.config, "w") as f:
        json.dump(conf, f)
    c.start()
    c.wait_node_pids()

    def moved():
        lead = c.leader()
        st = c.status(lead) if lead else None
        m = st and {m["id"]: m for m in st["members"]}.get(mover["id"])
        return m and m["raft"] == mover["raft"] and m["http"] == mover["http"] and \
            len([x for x in st["members"] if x["voter"]]) == 3
    h.wait_until(moved, 30, "%s at its new address, 3 voters" % mover["id"])
    assert "address update accepted" in sup_log(c), sup_log(c)[-3000:]
    files["after"] = b"after the move"
    c.put_ok("after", files["after"], ids=[mover["id"]])
    for n in c.nodes:
        for p, d in files.items():
            c.wait_file(n["id"], p, d)


# ---- disaster recovery -------------------------------------------------------------------
def test_force_new_cluster(track):
    c = booted(track)
    files = {"old/%d" % i: os.urandom(500) for i in range(20)}
    put_files(c, 0, files)
    lead = c.leader_id()
    surv = next(i for i in range(3) if c.nodes[i]["id"] != lead)  # a follower survives
    nd.wait_until(lambda: c.status(surv)["applied_index"] >= c.status(c.index(lead))[
        "commit_index"], 10, "survivor caught up")
    for i in range(3):
        c.stop_node(i)  # SIGKILL: the majority is lost for good
    lost = [i for i in range(3) if i != surv]
    for i in lost:
        shutil.rmtree(c.node_dir(i))
    # Without state there is nothing to recover: refused, nothing started.
    p = c.start_with(lost[0], c.config, ["--force-new-cluster"], wait=False)
    assert p.wait(10) == 2, p.returncode
    c.procs.pop(lost[0])
    shutil.rmtree(c.node_dir(lost[0]))
    p = c.start_with(surv, c.config, ["--force-new-cluster", "--bootstrap"], wait=False)
    assert p.wait(10) == 2, "--bootstrap with --force-new-cluster is a usage error"
    c.procs.pop(surv)
    # Without the flag the survivor alone cannot elect itself.
    c.start_with(surv, c.config)
    time.sleep(1.0)  # several election timeouts (checked: no leader appears)
    assert c.status(surv)["leader"] is None, c.status(surv)
    c.stop_node(surv, signal.SIGTERM)
    t0 = time.monotonic()
    c.start_with(surv, c.config, ["--force-new-cluster"])
    sid = c.nodes[surv]["id"]
    assert c.leader_id(among=[surv]) == sid
    h.log("survivor %s leads alone %.0f ms after the restart" % (sid, 1000 * (time.monotonic() - t0)))
    with open(os.path.join(c.node_dir(surv), "node.log")) as f:
        text = f.read()
    assert "FORCE NEW CLUSTER" in text, text[-2000:]
    st = c.status(surv)
    assert [m["id"] for m in st["members"]] == [sid] and st["members"][0]["voter"], st
    for p, d in files.items():
        got = nd.request(c.http(surv), "GET", "/v1/files/" + p)
        assert got[0] == 200 and got[2] == d, (p, got[0])
    files["new"] = b"written after the recovery"
    put_files(c, surv, {"new": files["new"]})
    # A fresh node (wiped data) joins the new cluster and gets every file.
    fresh = lost[1]
    c.start_with(fresh, c.config)
    n = c.nodes[fresh]
    st, body = post(c.http(surv), "/v1/cluster/join", {"id": n["id"], "raft": n["raft"],
                                                       "http": n["http"]})
    assert st == 200, (st, body)
    nd.wait_until(lambda: sorted(voters(c, surv)) == sorted([sid, n["id"]]), 20,
                  "the fresh node a voter")
    got = c.wait_same_files([surv, fresh])
    assert got == files, sorted(set(got) ^ set(files))[:5]


def test_force_new_cluster_under_raftsup(track):
    """The README's recovery procedure with raftsup: stop it, wipe the lost nodes, run the
    survivor once by hand with --force-new-cluster, start raftsup again: it joins the wiped
    nodes to the survivor's cluster and every file is everywhere."""
    c = h.started(track)
    files = {"d/%d" % i: os.urandom(300) for i in range(10)}
    for p, d in files.items():
        c.put_ok(p, d)
    for n in c.nodes:
        for p, d in files.items():
            c.wait_file(n["id"], p, d)
    assert c.stop(15) == 0
    for nid in ("node1", "node3"):  # lost for good
        shutil.rmtree(os.path.join(c.data, nid))
    with open(os.path.join(c.data, "node2", "node.log"), "ab") as log:
        p = subprocess.Popen([h.RAFTNODE, "--config", c.config, "--id", "node2",
                              "--force-new-cluster"], stdout=log, stderr=log,
                             start_new_session=True)
    h.wait_until(lambda: (c.status("node2") or {}).get("state") == "leader", 10,
                 "node2 leading alone")
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    c.start()
    c.wait_node_pids()
    c.wait_voters(3, 30)
    assert c.leader() is not None
    files["later"] = b"after the recovery"
    c.put_ok("later", files["later"])
    for n in c.nodes:
        for p, d in files.items():
            c.wait_file(n["id"], p, d)
    h.wait_until(lambda: "node3 joined" in sup_log(c).rsplit("raftsup pid", 1)[1], 10,
                 "raftsup's log")
    second = sup_log(c).rsplit("raftsup pid", 1)[1]
    assert "(--bootstrap)" not in second and "node1 joined" in second, second


if __name__ == "__main__":
    h.main([test_transfer_each_follower, test_transfer_bad_inputs, test_add_remove_restart,
            test_new_address_keeps_identity, test_sup_new_address,
            test_sigterm_leader_and_rolling_restart, test_force_new_cluster,
            test_force_new_cluster_under_raftsup], 290)
