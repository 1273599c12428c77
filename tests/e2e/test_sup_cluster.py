#!/usr/bin/env python3
"""test_sup_cluster.py — real raftnode processes under raftsup: bootstrap + joins make three
voters; kill -9 of the leader, of a follower, of two nodes at once; kill -9 and SIGTERM of
raftsup itself, and restarts over existing data (no second bootstrap, files intact).
Skipped (77) only while build/raftnode does not exist."""
import json
import os
import subprocess
import time

import harness as h

def others(c, nid):
    return [n["id"] for n in c.nodes if n["id"] != nid]


def wait_caught_up(c, nid, timeout=20, follower=True):
    """Until nid has applied everything the leader has committed (as a follower, unless
    follower=False: after a quorum loss the returning node may win the election)."""
    def pred():
        lead = c.leader()
        if not lead or (follower and lead == nid):
            return None
        ls, ns = c.status(lead), c.status(nid)
        ok_state = ns and ns["state"] in (("follower",) if follower else ("follower", "leader"))
        return ok_state and ls and ns["applied_index"] >= ls["commit_index"] and ns
    return h.wait_until(pred, timeout, "%s caught up" % nid)


def check_files(c, files, ids=None):
    for nid in ids or [n["id"] for n in c.nodes]:
        for path, data in files.items():
            c.wait_file(nid, path, data)


def test_bootstrap_and_joins(track):
    c = h.started(track)
    lead = c.wait_leader()
    st = c.status(lead)
    assert sorted(m["id"] for m in st["members"]) == ["node1", "node2", "node3"], st
    assert all(m["voter"] for m in st["members"]), st
    for nid in others(c, lead):
        s = c.status(nid)
        assert s["leader"] and s["leader"]["id"] == lead, s
    def sup_log():
        with open(os.path.join(c.data, "raftsup.log")) as f:
            return f.read()
    # The join's 200 may reach raftsup just after the configuration is visible.
    h.wait_until(lambda: "membership complete: 3 of 3" in sup_log(), 10, "raftsup's log")
    text = sup_log()
    assert "node1 started" in text and "(--bootstrap)" in text
    assert "node2 joined" in text and "node3 joined" in text, text


def test_joins_ignore_http_proxy(track):
    """raftsup talks to its own children directly: a proxy in the environment (here one that
    accepts connections and never answers) must not stall the joins."""
    import socket
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(64)
    try:
        proxy = "http://127.0.0.1:%d" % sink.getsockname()[1]
        c = track(h.Cluster(3, extra=h.FAST_RESTART))
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            c.env[var] = proxy
        c.env.pop("no_proxy", None)
        c.env.pop("NO_PROXY", None)
        c.start()
        c.wait_node_pids()
        c.wait_voters(3, 30)
    finally:
        sink.close()


def test_kill_leader(track):
    c = h.started(track)
    files = {"before.txt": b"written before the kill\n"}
    c.put_ok("before.txt", files["before.txt"])
    old = c.wait_leader()
    # Held down until the survivors have elected: raftsup restarts a killed node within the
    # backoff (50 ms here), and a restarted old leader with the longest log may legitimately
    # win the next election itself, which would not show the failover this test is about.
    c.hold(old)
    old_pid = c.kill_node(old)
    t0 = time.monotonic()
    new = c.wait_leader(ids=others(c, old), exclude=old)
    h.log("leader %s killed; %s elected after %.0f ms" % (old, new, 1000 * (time.monotonic() - t0)))
    files["after.txt"] = b"written after the kill\n"
    c.put_ok("after.txt", files["after.txt"], ids=others(c, old))
    c.release(old)
    pid = h.wait_until(lambda: c.live_node_pid(old) not in (None, old_pid) and
                       c.live_node_pid(old), 10, "%s restarted" % old)
    h.log("%s restarted by raftsup: pid %d -> %d" % (old, old_pid, pid))
    wait_caught_up(c, old)
    check_files(c, files)
    assert c.files_on_disk(old) == c.files_on_disk(new)


def test_kill_follower(track):
    c = h.started(track)
    lead = c.wait_leader()
    victim = others(c, lead)[0]
    old_pid = c.kill_node(victim)
    files = {"f%d" % i: b"follower down %d" % i for i in range(5)}
    for p, d in files.items():
        c.put_ok(p, d)
    h.wait_until(lambda: c.live_node_pid(victim) not in (None, old_pid), 10, "restart")
    wait_caught_up(c, victim)
    check_files(c, files)
    assert c.wait_leader() == lead, "killing a follower must not change the leader"


def test_kill_two_of_three(track):
    c = h.started(track)
    files = {"acked%d" % i: b"acknowledged %d\n" % i for i in range(5)}
    for p, d in files.items():
        c.put_ok(p, d)
    lead = c.wait_leader()
    down = others(c, lead)
    for nid in down:
        c.hold(nid)
        c.kill_node(nid)
    for nid in down:
        h.wait_until(lambda: not c.live_node_pid(nid), 5, "%s down" % nid)
    st, body = c.put(lead, "lost.txt", b"no quorum", timeout=15)
    h.log("PUT without quorum: %d %s" % (st, body[:120]))
    assert st == 503, (st, body)
    for nid in down:
        c.release(nid)
    c.wait_node_pids()
    c.wait_leader(30)
    for nid in down:
        wait_caught_up(c, nid, 30, follower=False)
    check_files(c, files)
    files["later.txt"] = b"after they returned"
    c.put_ok("later.txt", files["later.txt"])
    check_files(c, files)
    for nid in (n["id"] for n in c.nodes):
        st, body = c.get(nid, "lost.txt", stale=True)
        assert st == 404 or body == b"no quorum", (nid, st, body)


def test_sigkill_raftsup_then_restart(track):
    c = h.started(track)
    files = {"k%d" % i: os.urandom(100 + i) for i in range(4)}
    for p, d in files.items():
        c.put_ok(p, d)
    check_files(c, files)
    term = c.status(c.wait_leader())["term"]
    pids = c.wait_node_pids()
    c.kill_sup()
    h.wait_until(lambda: not any(h.pid_alive(p) for p in pids.values()), 10,
                 "no orphan raftnode after raftsup was SIGKILLed")
    assert not h.pids_naming(c.config), h.pids_naming(c.config)
    c.start()
    c.wait_node_pids()
    lead = c.wait_leader(30)
    assert c.status(lead)["term"] >= term
    check_files(c, files)
    with open(os.path.join(c.data, "raftsup.log")) as f:
        second_run = f.read().rsplit("raftsup pid", 1)[1]
    assert "--bootstrap" not in second_run, second_run
    assert "joined" not in second_run, second_run


def test_sigterm_then_restart_over_data(track):
    c = h.started(track)
    files = {"t%d" % i: b"term %d" % i for i in range(4)}
    for p, d in files.items():
        c.put_ok(p, d)
    check_files(c, files)
    lead = c.wait_leader()
    before = c.status(lead)
    pids = c.wait_node_pids()
    assert c.stop(15) == 0
    assert not any(h.pid_alive(p) for p in pids.values())
    for n in c.nodes:
        assert not os.path.exists(os.path.join(c.data, n["id"], "node.pid"))
    assert not os.path.exists(os.path.join(c.data, "raftsup.pid"))
    for n in c.nodes:
        assert c.files_on_disk(n["id"]) == files, n["id"]
    c.start()
    c.wait_node_pids()
    lead = c.wait_leader(30)
    after = c.status(lead)
    h.log("term %d -> %d, last index %d -> %d" % (before["term"], after["term"],
          before["last_log_index"], after["last_log_index"]))
    assert after["term"] >= before["term"]
    assert after["last_log_index"] >= before["last_log_index"]
    assert sorted(m["id"] for m in after["members"]) == ["node1", "node2", "node3"]
    check_files(c, files)
    c.put_ok("t-new", b"new")
    with open(os.path.join(c.data, "raftsup.log")) as f:
        second_run = f.read().rsplit("raftsup pid", 1)[1]
    assert "--bootstrap" not in second_run and "joined" not in second_run, second_run
    assert c.stop(15) == 0


def test_stale_node_from_earlier_run_is_killed(track):
    """A raftnode named by a stale node.pid (left by an earlier supervisor) is killed before
    the new one starts its own; an unrelated pid in a stale file is left alone."""
    h.need_binaries(True)
    c = track(h.Cluster(3, extra=h.FAST_RESTART))
    os.makedirs(os.path.join(c.data, "node2"))
    os.makedirs(os.path.join(c.data, "node3"))
    # The stray keeps its Raft state elsewhere: an empty store of a never-joined node2 in
    # data/ would (rightly) stop raftsup from bootstrapping node1 next to it.
    with open(c.config) as f:
        conf = json.load(f)
    conf["data_dir"] = os.path.join(c.dir, "stray-data")
    stray_config = os.path.join(c.dir, "stray.json")
    with open(stray_config, "w") as f:
        json.dump(conf, f)
    with open(os.path.join(c.data, "node2", "node.log"), "ab") as log:
        stray = subprocess.Popen([h.RAFTNODE, "--config", stray_config, "--id", "node2"],
                                 stdout=log, stderr=log, start_new_session=True)
    with open(os.path.join(c.data, "node2", "node.pid"), "w") as f:
        f.write("%d\n" % stray.pid)
    with open(os.path.join(c.data, "node3", "node.pid"), "w") as f:
        f.write("%d\n" % os.getpid())  # not a raftnode: must survive
    h.wait_until(lambda: c.status("node2"), 10, "the stray node2 serving")
    c.start()
    assert stray.wait(10) == -9, "the stray node2 was not killed"
    c.wait_node_pids()
    c.wait_voters(3, 30)
    with open(os.path.join(c.data, "raftsup.log")) as f:
        text = f.read()
    assert "still running (pid %d)" % stray.pid in text, text
    assert c.node_pid("node2") != stray.pid


if __name__ == "__main__":
    h.main([test_bootstrap_and_joins, test_joins_ignore_http_proxy, test_kill_leader, test_kill_follower,
            test_kill_two_of_three, test_sigkill_raftsup_then_restart,
            test_sigterm_then_restart_over_data, test_stale_node_from_earlier_run_is_killed], 280)
