#!/usr/bin/env python3
"""snapshot_bench.py — two measurements of issue 5 (not a test; run by hand, takes minutes):

  catchup  A follower with an empty disk catches up on MIB MiB of files through an
           InstallSnapshot stream: stream rate (as the follower logs it: receive + stage +
           install), time from restart to identical files, vs `dd` sequential writes of as
           many bytes on the same file system, twice: conv=fdatasync (through the page cache,
           which a VM's host may cache too) and oflag=direct (O_DIRECT, bypassing our page
           cache: the honest disk rate). REPS catch-ups (wipe, restart) reuse one loaded
           cluster. Each line also says where the stream's time went, from both nodes' logs:
           the follower's time inside put (and in it, waiting for the hasher thread and for
           the disk) and the sender's time reading the store and waiting with a full window.
           RAFTFS_BENCH_PERF=DIR records `perf record -a -g` during each catch-up
           into DIR/all-N.data (it prints the leader's and the follower's pids).
  stall    raftbench write latency (p50/p99/p99.9) with compaction running about every
           second (snapshot_entries small) vs compaction effectively off.

usage: snapshot_bench.py [catchup [MIB [REPS]] | stall [SECONDS]]   (RAFTFS_BUILD=build dir)
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from nodes import BUILD, Cluster, request, wait_until  # noqa: E402


def log_text(c, i):
    with open(os.path.join(c.node_dir(i), "node.log"), errors="replace") as f:
        return f.read()


def dd_rate(dirpath, mib, direct=False):
    """MiB/s of dd writing mib MiB of zeros (new file, 4 MiB blocks: the files' size), synced
    at the end. direct: O_DIRECT, so the page cache neither absorbs nor delays the writes."""
    path = os.path.join(dirpath, "dd.bin")
    flags = ["oflag=direct", "conv=fdatasync"] if direct else ["conv=fdatasync"]
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=4M", "count=%d" % max(1, mib // 4)]
                   + flags, check=True, capture_output=True)
    dt = time.monotonic() - t0
    os.unlink(path)
    return mib / dt


def perf_start(out):
    """perf record -g of the whole machine into out: `-p PID` would miss the threads a node
    starts later (the snapshot writer's hashing and AIO threads); filter with
    `perf report --pid`."""
    return subprocess.Popen(["perf", "record", "-a", "-g", "-q", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGINT)
        p.wait(60)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_s(pid):
    """User + system CPU seconds of process pid so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_digest(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def log_time(line):
    """Seconds of a log line's leading ISO timestamp (2026-11-27T13:44:32.483Z ...)."""
    m = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z", line)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def stream_phases(text):
    """(receive s, install s) of the follower's last stream: from "receiving a stream" to
    "installing the stream" (every byte received, staged and hashed) and from there to
    "installed" (syncfs, commit, swap). None when the lines are missing."""
    marks = {}
    for line in text.splitlines():
        for key, pat in (("recv", "snapshot: receiving a stream"),
                         ("inst", "snapshot: installing the stream"),
                         ("done", "snapshot: installed at")):
            if pat in line:
                marks[key] = log_time(line)
    if None in marks.values() or len(marks) != 3:
        return None
    return marks["inst"] - marks["recv"], marks["done"] - marks["inst"]


def where_time(c, lead, fol):
    """Where the last stream's time went, from both logs: the follower's put (and its waits for
    the hasher thread and the disk), the sender's reading and its waits with a full window."""
    f = re.findall(r"snapshot staged: .*?; ([\d.]+) s in put, of it ([\d.]+) s waiting for the "
                   r"hasher and ([\d.]+) s for writes", log_text(c, fol))
    s = re.findall(r"snapshot: sent to .*?\(([\d.]+) s reading the store, ([\d.]+) s waiting "
                   r"with the window full\)", log_text(c, lead))
    out = "follower put %s s (hasher wait %s, disk wait %s)" % f[-1] if f else "follower put ?"
    return out + ("; sender read %s s, window full %s s" % s[-1] if s else "; sender ?")


def catchup_once(c, lead, fol, mib, want, rep):
    """Wipes fol, restarts it and waits until its files equal the leader's. Prints a line."""
    c.kill(fol)
    for sub in ("raft", "files"):
        shutil.rmtree(os.path.join(c.node_dir(fol), sub), ignore_errors=True)
    subprocess.run(["sync"], check=True)
    dd = dd_rate(c.dir, mib)
    ddd = dd_rate(c.dir, mib, direct=True)
    # Writes while it is down (as in e2e test_snapshot): a leader whose progress for the
    # wiped follower says "matches up to my last entry" would ignore its rejections of
    # heartbeats (the core assumes a follower never loses acknowledged entries).
    for k in range(200):
        request(c.http(lead), "PUT", "/v1/files/small/%03d" % k, b"k%d" % rep * 50, timeout=10)
        want["small/%03d" % k] = len(b"k%d" % rep * 50)
    load = loadavg()
    others = [i for i in range(3) if i != fol]
    cpu0 = {i: cpu_s(c.procs[i].pid) for i in others}
    t0 = time.monotonic()
    c.start(fol)
    pdir = os.environ.get("RAFTFS_BENCH_PERF")
    perfs = []
    if pdir:
        os.makedirs(pdir, exist_ok=True)
        perfs = [perf_start(os.path.join(pdir, "all-%d.data" % rep))]
        print("perf: leader pid %d, follower pid %d" % (c.procs[lead].pid, c.procs[fol].pid))
    try:
        wait_until(lambda: tree_digest(os.path.join(c.node_dir(fol), "files")) == want, 600,
                   "catch-up", interval=0.1)
    finally:
        for p in perfs:
            perf_stop(p)
    total = time.monotonic() - t0
    # The sender is whichever other node worked most (leadership may have moved under load).
    lead_cpu = max(cpu_s(c.procs[i].pid) - cpu0[i] for i in others)
    fol_cpu = cpu_s(c.procs[fol].pid)
    m = re.findall(r"snapshot: installed at \d+ from \S+ \(([\d.]+) MiB in ([\d.]+) s, "
                   r"([\d.]+) MiB/s\)", log_text(c, fol))
    stream = m[-1] if m else ("?", "?", "?")
    rate = float(stream[2]) if m else 0.0
    phases = stream_phases(log_text(c, fol))
    waits = where_time(c, lead, fol)
    print("catch-up of %d MiB: stream %s MiB in %s s = %s MiB/s; restart to identical files "
          "%.1f s = %.1f MiB/s; dd conv=fdatasync %.1f MiB/s (ratio %.0f%%), dd oflag=direct "
          "%.1f MiB/s (ratio %.0f%%); CPU s/GiB sender %.2f follower %.2f (restart to "
          "identical files); %s; %s; load %s"
          % (mib, stream[0], stream[1], stream[2], total, mib / total, dd, 100.0 * rate / dd,
             ddd, 100.0 * rate / ddd, lead_cpu * 1024 / mib, fol_cpu * 1024 / mib,
             "receive %.2f s + install %.2f s" % phases if phases else "phases ?", waits, load),
          flush=True)
    return rate, ddd


def catchup(mib, reps=1):
    file_mib = 4
    c = Cluster(3, name="snapbench", extra={"snapshot_entries": 16, "snapshot_trailing": 0})
    try:
        c.bootstrap_all()
        lead = c.leader()
        body = os.urandom(file_mib << 20)
        t0 = time.monotonic()
        for k in range(mib // file_mib):
            data = body[k:] + body[:k]
            st, _, _ = request(c.http(lead), "PUT", "/v1/files/big/%04d.bin" % k, data,
                               timeout=60)
            assert st in (200, 201), st
        print("loaded %d MiB in %.1f s" % (mib, time.monotonic() - t0), flush=True)
        fol = (lead + 1) % 3
        want = tree_digest(os.path.join(c.node_dir(lead), "files"))
        runs = [catchup_once(c, lead, fol, mib, want, rep) for rep in range(reps)]
        ratios = sorted(100.0 * r / d for r, d in runs)
        print("median stream %.1f MiB/s, median ratio to dd oflag=direct %.0f%% (goal >= 50%%)"
              % (sorted(r for r, _ in runs)[len(runs) // 2], ratios[len(ratios) // 2]),
              flush=True)
    finally:
        c.stop()


def bench(c, lead, secs):
    rb = os.path.join(BUILD, "tests", "bench", "raftbench")
    out = subprocess.run([rb, "--server", c.http(lead), "-c", "16", "-s", "1024", "-d",
                          str(secs), "--paths", "64", "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def stall(secs):
    for label, entries in (("compaction every ~1 s", 2000), ("compaction off", 10 ** 9)):
        c = Cluster(3, name="snapstall", extra={"snapshot_entries": entries,
                                                "snapshot_trailing": 100})
        try:
            c.bootstrap_all()
            lead = c.leader()
            r = bench(c, lead, secs)
            st, _, data = request(c.http(lead), "GET", "/metrics")
            comp = re.search(rb"raftfs_compactions_total (\d+)", data)
            print("%-22s %6.0f ops/s  p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  errors %d  "
                  "compactions %s" % (label, r["ops"], r["p50_ms"], r["p99_ms"], r["p999_ms"],
                                      r["errors"], comp.group(1).decode() if comp else "?"),
                  flush=True)
        finally:
            c.stop()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "catchup"
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else (256 if what == "catchup" else 20)
    if what == "catchup":
        catchup(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        stall(arg)
