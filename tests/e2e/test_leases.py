#!/usr/bin/env python3
"""End-to-end: the write leases a node keeps on files it overwrote in place (src/fsm/fsm_fdc.h).

While a client overwrites a set of paths (same size, so every node writes them in place and
keeps each file's lease), every node answers GETs of them with a whole version, and another
process (this one) opening the nodes' files/ directly gets in promptly (each open is bounded by
SIGALRM, far below the kernel's lease-break-time of 45 s) and reads only whole versions.
"""
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import check  # noqa: E402
import nodes  # noqa: E402
from nodes import Cluster, request, wait_until  # noqa: E402

PATHS = ["lease/%d" % k for k in range(8)]
SIZE = 4096


def body(path_no, version):
    """Every byte of a version is the same letter, so a mix of two versions shows."""
    return bytes([65 + (path_no * 7 + version) % 26]) * SIZE


def whole(data):
    return len(data) == SIZE and data == data[:1] * SIZE


class Opener:
    """Opens with a deadline: SIGALRM interrupts an open that waits for a lease."""

    def __init__(self, limit_s=5):
        self.limit = limit_s
        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError()))

    def read(self, path):
        signal.alarm(self.limit)
        try:
            with open(path, "rb") as f:
                signal.alarm(0)
                return f.read()
        finally:
            signal.alarm(0)


def writer(c, lead, stop, counts, errors):
    version = 1
    while not stop.is_set():
        for k, p in enumerate(PATHS):
            st, _, data = request(c.http(lead), "PUT", "/v1/files/" + p, body(k, version))
            if st != 200:
                errors.append("PUT %s: %d %r" % (p, st, data))
                return
        counts[0] += 1
        version += 1


def test_reads_of_leased_files_while_overwritten(c):
    lead = c.leader()
    for k, p in enumerate(PATHS):
        st, _, _ = request(c.http(lead), "PUT", "/v1/files/" + p, body(k, 0))
        check(st in (200, 201), "create %s: %d" % (p, st))
    stop, counts, errors = threading.Event(), [0], []
    t = threading.Thread(target=writer, args=(c, lead, stop, counts, errors), daemon=True)
    t.start()
    opener = Opener()
    gets = opens = 0
    try:
        wait_until(lambda: counts[0] >= 3 or errors, 30, "overwrites under way")
        while counts[0] < 40 and not errors:
            for i in range(3):
                for k, p in enumerate(PATHS):
                    st, _, data = request(c.http(i), "GET", "/v1/files/%s?stale=true" % p,
                                          timeout=5)
                    check(st == 200 and whole(data), "GET %s from node%d: %d, %d bytes"
                          % (p, i + 1, st, len(data)))
                    gets += 1
                    try:
                        data = opener.read(os.path.join(c.node_dir(i), "files", p))
                    except TimeoutError:
                        check(False, "open of node%d's files/%s waited 5 s" % (i + 1, p))
                    check(whole(data), "node%d's files/%s: %d bytes, torn" % (i + 1, p, len(data)))
                    opens += 1
    finally:
        stop.set()
        t.join(30)
    check(not errors, errors)
    harness.log("%d overwrite rounds, %d GETs, %d direct opens" % (counts[0], gets, opens))
    # The overwrites went in place (the leases were taken) on every node.
    for i in range(3):
        st, _, data = request(c.http(i), "GET", "/metrics")
        line = [ln for ln in data.decode().splitlines()
                if ln.startswith("raftfs_fsm_overwrites_in_place_total ")]
        check(line and float(line[0].split()[1]) > 0, "node%d wrote nothing in place" % (i + 1))


def setup(track):
    nodes.need_raftnode()
    c = track(Cluster(3, name="leases"))
    c.bootstrap_all()
    return (c,)


if __name__ == "__main__":
    harness.main([test_reads_of_leased_files_while_overwritten], 110, setup)
