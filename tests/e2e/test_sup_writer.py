#!/usr/bin/env python3
"""test_sup_writer.py — a writer PUTs brand-new paths through random nodes while the leader
is killed 10 times under raftsup. Afterwards every PUT that got a 2xx is read back with its
exact content from every node (API and disk), and no node holds a file or content that was
never written. Bounded (~60 s of kills). Skipped (77) only while build/raftnode is absent."""
import threading
import time

import harness as h


class Writer(threading.Thread):
    def __init__(self, c, rng):
        super().__init__(daemon=True)
        self.c, self.rng = c, rng
        self.stop = threading.Event()
        self.attempted = {}  # path -> content (each path is written once)
        self.acked = {}      # path -> content, 2xx only
        self.statuses = {}

    def run(self):
        seq = 0
        ids = [n["id"] for n in self.c.nodes]
        while not self.stop.is_set():
            seq += 1
            path = "w/%05d" % seq
            data = b"%d:" % seq + h.random_bytes(self.rng, 0, 300)
            self.attempted[path] = data
            nid = self.rng.choice(ids)
            try:
                st, _ = self.c.put(nid, path, data, timeout=8.0)
            except OSError:
                st = "conn"
                time.sleep(0.02)  # the node is down: do not spin on refused connections
            self.statuses[st] = self.statuses.get(st, 0) + 1
            if st in (200, 201):
                self.acked[path] = data

    def acked_count(self):
        return len(self.acked)


def test_writer_across_leader_kills(track):
    rng = h.seeded_rng()
    c = h.started(track)
    w = Writer(c, rng)
    w.start()
    deadline = time.monotonic() + 90
    kills = 0
    try:
        while kills < 10 and time.monotonic() < deadline:
            # Progress since the last kill, and all three up, before the next kill.
            base = w.acked_count()
            h.wait_until(lambda: w.acked_count() >= base + 10, 20, "writes accepted")
            pids = c.wait_node_pids(15)
            lead = c.wait_leader(20)
            commit = c.status(lead)["commit_index"]
            for nid in pids:
                if nid != lead:
                    h.wait_until(lambda: ((c.status(nid) or {}).get("state") == "follower" and
                                          c.status(nid)["applied_index"] >= commit),
                                 20, "%s a caught-up follower" % nid)
            c.kill_node(lead)
            kills += 1
            h.log("kill %d: leader %s (acked so far %d)" % (kills, lead, w.acked_count()))
        base = w.acked_count()
        h.wait_until(lambda: w.acked_count() >= base + 3, 20, "writes after the last kill")
    finally:
        w.stop.set()
        w.join(15)
    h.log("PUT outcomes:", w.statuses)
    assert kills == 10, "only %d kills in the time limit" % kills
    assert len(w.acked) >= 30, len(w.acked)
    c.wait_node_pids(15)
    lead = c.wait_leader(20)
    commit = c.status(lead)["commit_index"]
    for n in c.nodes:
        h.wait_until(lambda: (c.status(n["id"]) or {}).get("applied_index", -1) >= commit, 30,
                     "%s applied %d" % (n["id"], commit))
    for n in c.nodes:
        nid = n["id"]
        for path, data in w.acked.items():
            st, body = c.get(nid, path, stale=True)
            assert st == 200 and body == data, "%s: acked %s reads %d %r" % (nid, path, st,
                                                                            body[:40])
        disk = c.files_on_disk(nid)
        for path, data in disk.items():
            assert path in w.attempted, "%s holds %s, never written" % (nid, path)
            assert data == w.attempted[path], "%s: %s holds content never written" % (nid, path)
        missing = set(w.acked) - set(disk)
        assert not missing, "%s lacks acked files on disk: %s" % (nid, sorted(missing)[:5])
    first = c.files_on_disk("node1")
    for n in c.nodes[1:]:
        assert c.files_on_disk(n["id"]) == first, "nodes disagree on their files"
    h.log("%d acked, %d attempted, %d on every node" % (len(w.acked), len(w.attempted),
                                                         len(first)))


if __name__ == "__main__":
    h.main([test_writer_across_leader_kills], 220)
