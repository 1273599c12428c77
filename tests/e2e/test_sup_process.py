#!/usr/bin/env python3
"""test_sup_process.py — raftsup's process handling, driven with fake_raftnode.py so it runs
whether or not raftnode is built: bootstrap once and joins, node.pid upkeep, restarts with
backoff, crash loops that do not spin, the data_dir lock, SIGTERM (and SIGKILL escalation),
SIGKILL of raftsup leaving no orphans, stale pid files."""
import os
import signal
import subprocess
import time

import harness as h


def starts(c, nid):
    """[(pid, bootstrap)] from the fake node's starts.log."""
    try:
        with open(os.path.join(c.data, nid, "starts.log")) as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except OSError:
        return []


def joins(c):
    try:
        with open(os.path.join(c.data, "joins.log")) as f:
            return f.read().split()
    except OSError:
        return []


def sup_log(c):
    with open(os.path.join(c.data, "raftsup.log")) as f:
        return f.read()


def pid_cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")


def started_fake(track, n=3):
    """A running raftsup over n fake nodes; returns (cluster, {id: pid})."""
    h.need_binaries(False)
    c = track(h.Cluster(n, fake=True))
    c.start()
    return c, c.wait_node_pids()


def test_bootstrap_once_and_joins(track):
    c, pids = started_fake(track, 3)
    h.wait_until(lambda: sorted(joins(c)) == ["node2", "node3"], 10, "joins of node2, node3")
    for nid, pid in pids.items():
        argv = pid_cmdline(pid)
        assert b"--id" in argv and nid.encode() in argv, argv
        assert (b"--bootstrap" in argv) == (nid == "node1"), (nid, argv)
        assert os.getpgid(pid) == pid, "%s is not in its own process group" % nid
    h.wait_until(lambda: "membership complete: 3 of 3" in sup_log(c), 10, "membership log")
    assert c.stop() == 0
    for pid in pids.values():
        assert not h.pid_alive(pid)
    for nid in pids:
        assert not os.path.exists(os.path.join(c.data, nid, "node.pid"))
    assert not os.path.exists(os.path.join(c.data, "raftsup.pid"))
    # Again over the same data: nobody is bootstrapped or joined a second time.
    c.start()
    c.wait_node_pids()
    h.wait_until(lambda: sup_log(c).count("membership complete") == 2, 10, "second pass")
    assert sorted(joins(c)) == ["node2", "node3"], joins(c)
    for nid in ("node1", "node2", "node3"):
        # Under load a fake node may still be starting when the leader reports it a member.
        h.wait_until(lambda: len(starts(c, nid)) == 2, 10, "%s started twice" % nid)
        boots = [b for _, b in starts(c, nid)]
        assert boots == ([1, 0] if nid == "node1" else [0, 0]), (nid, boots)
    assert c.stop() == 0


def test_restart_after_kill(track):
    c, old = started_fake(track, 3)
    h.wait_until(lambda: "membership complete" in sup_log(c), 10, "membership")
    for victim, sig in (("node2", signal.SIGKILL), ("node1", signal.SIGSEGV)):
        h.wait_until(lambda: c.status(victim), 5, "%s serving" % victim)
        c.kill_node(victim, sig)
        new = h.wait_until(lambda: c.live_node_pid(victim) not in (None, old[victim]) and
                           c.live_node_pid(victim), 5, "%s restarted" % victim)
        h.log("%s: pid %d -> %d" % (victim, old[victim], new))
        old[victim] = new
    text = sup_log(c)
    assert "node2 (pid" in text and "killed by signal 9 (KILL)" in text, text
    assert "killed by signal 11 (SEGV)" in text
    assert "node2 restarted" in text and "node1 restarted" in text
    # A restarted node has Raft state: no --bootstrap.
    h.wait_until(lambda: c.status("node1"), 5, "node1 serving again")
    assert [b for _, b in starts(c, "node1")] == [1, 0], starts(c, "node1")
    assert c.stop() == 0


def test_crash_loop_backs_off(track):
    h.need_binaries(False)
    c = track(h.Cluster(1, fake=True, extra={"restart_backoff_ms": [50, 400],
                                              "restart_reset_ms": 1000}))
    os.makedirs(os.path.join(c.data, "node1"))
    open(os.path.join(c.data, "node1", "crash"), "w").close()
    c.start()
    h.wait_until(lambda: len(starts(c, "node1")) >= 6, 15, "6 crashes")
    t0 = time.monotonic()
    n0 = len(starts(c, "node1"))
    # Backoff is at its 400 ms cap by now: at most ~3 more starts per second, never a spin.
    h.wait_until(lambda: time.monotonic() - t0 > 1.5, 3, "1.5 s")
    rate = (len(starts(c, "node1")) - n0) / (time.monotonic() - t0)
    h.log("starts/s at the cap: %.1f" % rate)
    assert rate <= 4, rate
    delays = [int(line.rsplit("restarting in ", 1)[1].split()[0])
              for line in sup_log(c).splitlines() if "restarting in" in line]
    h.log("delays", delays)
    assert delays[:5] == [50, 100, 200, 400, 400], delays
    assert "exited with status 3" in sup_log(c)
    # It recovers once the fault is gone; after restart_reset_ms of uptime a crash is
    # restarted at the minimum delay again.
    os.unlink(os.path.join(c.data, "node1", "crash"))
    h.wait_until(lambda: c.live_node_pid("node1") and c.status("node1"), 5, "node1 up")
    up = time.monotonic()
    h.wait_until(lambda: time.monotonic() - up > 1.2, 3, "1.2 s of uptime")
    c.kill_node("node1")
    h.wait_until(lambda: "killed by signal 9" in sup_log(c), 5, "the kill in raftsup's log")
    last = [line for line in sup_log(c).splitlines() if "restarting in" in line][-1]
    assert "killed by signal 9" in last and "restarting in 50 ms" in last, last
    assert c.stop() == 0


def test_bootstrap_retried_after_early_crash(track):
    """node1 crashes after creating its store but before bootstrapping: its raft dir is no
    longer empty, yet raftsup keeps passing --bootstrap until a leader exists."""
    h.need_binaries(False)
    c = track(h.Cluster(3, fake=True, extra={"restart_backoff_ms": [50, 200]}))
    os.makedirs(os.path.join(c.data, "node1"))
    open(os.path.join(c.data, "node1", "crash"), "w").close()
    c.start()
    h.wait_until(lambda: len(starts(c, "node1")) >= 3, 10, "node1 crashing")
    assert os.listdir(os.path.join(c.data, "node1", "raft"))
    os.unlink(os.path.join(c.data, "node1", "crash"))
    h.wait_until(lambda: sorted(joins(c)) == ["node2", "node3"], 10, "joins")
    assert all(b == 1 for _, b in starts(c, "node1")), starts(c, "node1")
    c.kill_node("node1")
    h.wait_until(lambda: starts(c, "node1")[-1][1] == 0, 10, "a restart without --bootstrap")
    assert c.stop() == 0


def test_relative_paths(track):
    """`raftsup cluster.json` with "data_dir": "data", both relative to the cwd, as the
    demo runs it; the nodes resolve them against the same cwd."""
    h.need_binaries(False)
    c = track(h.Cluster(3, fake=True, extra={"data_dir": "data"}))
    c.start(relative=True)
    pids = c.wait_node_pids()
    h.wait_until(lambda: sorted(joins(c)) == ["node2", "node3"], 10, "joins")
    for pid in pids.values():
        assert b"cluster.json" in pid_cmdline(pid)
    assert c.stop() == 0


def test_second_supervisor_refused(track):
    c, pids = started_fake(track, 2)
    first = c.sup
    p = subprocess.run([h.RAFTSUP, c.config], capture_output=True, timeout=10, env=c.env)
    err = p.stderr.decode()
    h.log("second raftsup:", p.returncode, err.strip())
    assert p.returncode == 1, p.returncode
    assert "already running" in err and str(first.pid) in err, err
    assert c.sup_pid_file() == first.pid
    assert c.wait_node_pids() == pids, "the first supervisor's nodes were disturbed"
    assert first.poll() is None
    assert c.stop() == 0


def test_sigterm_escalates_to_sigkill(track):
    c, pids = started_fake(track, 2)
    h.wait_until(lambda: c.status("node2"), 5, "node2 serving")
    open(os.path.join(c.data, "node2", "ignore_term"), "w").close()
    t0 = time.monotonic()
    assert c.stop(timeout=15) == 0
    took = time.monotonic() - t0
    h.log("stop took %.2f s" % took)
    assert 4.5 <= took <= 8, took
    assert not any(h.pid_alive(p) for p in pids.values())
    assert "still running after 5 s: SIGKILL" in sup_log(c)


def test_sigkill_leaves_no_orphans(track):
    c, pids = started_fake(track, 3)
    c.kill_sup()
    h.wait_until(lambda: not any(h.pid_alive(p) for p in pids.values()), 5,
                 "children of a SIGKILLed raftsup to exit")
    # Stale pid files are left behind; a new raftsup removes them and starts cleanly.
    assert os.path.exists(os.path.join(c.data, "raftsup.pid"))
    c.start()
    new = c.wait_node_pids()
    assert not set(new.values()) & set(pids.values())
    assert "removing stale" in sup_log(c)
    assert c.stop() == 0


def test_sigint_stops_cleanly(track):
    c, pids = started_fake(track, 2)
    c.sup.send_signal(signal.SIGINT)
    assert c.sup.wait(10) == 0
    assert not any(h.pid_alive(p) for p in pids.values())


if __name__ == "__main__":
    h.main([test_bootstrap_once_and_joins, test_restart_after_kill, test_crash_loop_backs_off,
            test_bootstrap_retried_after_early_crash, test_relative_paths,
            test_second_supervisor_refused, test_sigterm_escalates_to_sigkill,
            test_sigkill_leaves_no_orphans, test_sigint_stops_cleanly], 150)
