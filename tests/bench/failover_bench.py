#!/usr/bin/env python3
"""failover_bench.py [BUILD_DIR] [KILLS] — failover time under raftsup: kill -9 the leader
KILLS times (default 10) and measure from the kill to the first write accepted (2xx) through a
survivor, with both survivors tried concurrently. Prints each sample and min/median/p90/max.
A measurement, never an assertion: exit 0 unless the cluster could not be run at all."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
if len(sys.argv) > 1:
    os.environ["RAFTFS_BUILD"] = os.path.abspath(sys.argv[1])
import harness as h  # noqa: E402


def first_write(c, survivors, path, limit_s=30.0):
    """Seconds until one survivor answers 2xx to a PUT; both are tried in parallel."""
    t0 = time.monotonic()
    won = threading.Event()

    def loop(nid):
        while not won.is_set() and time.monotonic() - t0 < limit_s:
            try:
                st, _ = c.put(nid, path, b"after failover", timeout=6.0)
            except OSError:
                st = None
                time.sleep(0.005)
            if st in (200, 201):
                won.set()
    ts = [threading.Thread(target=loop, args=(n,), daemon=True) for n in survivors]
    for t in ts:
        t.start()
    won.wait(limit_s)
    took = time.monotonic() - t0
    for t in ts:
        t.join(8)
    return took if won.is_set() else None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    kills = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    h.need_binaries(True)
    c = h.Cluster(3, name="failover")
    samples = []
    try:
        c.start()
        c.wait_node_pids()
        c.wait_voters(3, 30)
        for i in range(kills):
            pids = c.wait_node_pids(15)
            lead = c.wait_leader(20)
            for nid in pids:
                if nid != lead:
                    h.wait_until(lambda: (c.status(nid) or {}).get("state") == "follower", 20,
                                 "%s follower" % nid)
            c.put_ok("warm/%d" % i, b"x")
            survivors = [n for n in pids if n != lead]
            c.kill_node(lead)
            took = first_write(c, survivors, "failover/%d" % i)
            new = c.wait_leader(10, ids=survivors)
            if took is None:
                print("kill %2d: leader %s: no write accepted within 30 s" % (i + 1, lead))
                continue
            samples.append(took * 1000)
            print("kill %2d: leader %s -> %s: first accepted write after %6.1f ms" %
                  (i + 1, lead, new, took * 1000), flush=True)
    finally:
        c.stop(15) if c.sup and c.sup.poll() is None else None
        c.cleanup()
    if not samples:
        print("no samples")
        return 1
    print("failover (kill -9 leader -> first accepted write), %d kills: min %.0f ms, "
          "median %.0f ms, p90 %.0f ms, max %.0f ms" %
          (len(samples), min(samples), pct(samples, 50), pct(samples, 90), max(samples)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except h.Skip as e:
        print("failover_bench: skipped: %s" % e)
        sys.exit(77)
