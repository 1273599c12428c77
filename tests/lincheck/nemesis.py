"""nemesis.py — a seeded, time-bounded fault run against a real 3-node raftfs cluster:
concurrent clients PUT/GET/DELETE small unique values on a few files through random nodes
while a nemesis kills (-9), pauses (SIGSTOP/SIGCONT) and — as root with ip netns —
partitions nodes; with --links a lossy_proxy in front of every node's Raft port also makes
single directed links slow (delay + jitter), lossy (connection resets and refusals),
stalled, throttled or one-way black holes; with --membership a second thread meanwhile
removes a node, wipes it and joins it again. Then it heals and checks (lincheck.py)
linearizability per file, no lost acknowledged write, identical files/ on every node, one
leader per term, no crash in the node logs, every node a voter again, and that the cluster
takes writes again within a bound. Never leaves namespaces or processes behind.

  nemesis.py [--seed S] [--seconds N | --minutes M] [--mode auto|sup|netns] [--links]
             [--membership] [--keep]
Exit status: 0 every check passed, 1 a check failed, 77 the mode cannot run here.
"""
import argparse
import atexit
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import harness  # noqa: E402
import lincheck as lc  # noqa: E402
import linkfaults  # noqa: E402
import membership  # noqa: E402
import netcluster  # noqa: E402

CLIENT_TIMEOUT = 3.0  # longer than any pause, so a paused node's late answers are checked
WRITABLE_BOUND = 15.0  # seconds from healing to the first accepted write
CONVERGE_BOUND = 20.0  # seconds from healing to identical files/ on every node
ROUND_SECONDS = 60  # torture runs rounds of this length, each checked on its own
STALE_READS = False  # --stale-reads: GET ?stale=true, to show the checker catches them
BIG_WRITES = False  # --links: some PUTs of 64-512 KiB
# --snapshots: compaction every 200 entries or 4 MiB, keeping 20 (the defaults are 10,000 /
# 64 MiB / 1,024, which a short run rarely reaches).
SNAPSHOT_CONF = {"snapshot_entries": 200, "snapshot_bytes": 4 << 20, "snapshot_trailing": 20}


log, T0 = harness.log, harness.T0


class CheckFailed(Exception):
    pass


# --- the cluster under test, two flavours with one interface ------------------------------
class SupTarget:
    """Nodes on loopback under raftsup (harness.Cluster); raftsup restarts killed nodes."""

    partitions = False

    def __init__(self, links=False, seed=0, extra=None):
        harness.need_binaries(real_node=True)
        # A short restart backoff: nodes the nemesis held down come back quickly.
        conf = {"restart_backoff_ms": [100, 1000]}
        conf.update(extra or {})
        self.c = harness.Cluster(3, name="nemesis", extra=conf)
        self.ids = [n["id"] for n in self.c.nodes]
        self.dir, self.data = self.c.dir, self.c.data
        self.paused = set()
        self.held = set()
        self.lock = threading.Lock()
        self.reserved, self.busy = set(), set()
        self.links = None
        if links:
            self._put_proxies_in_front(seed)
        self._make_fourth()

    # --- a 4th node outside raftsup's config, for the membership nemesis --------------
    extra_ids = ["node4"]

    def _make_fourth(self):
        """config4.json: the cluster's config plus node4, run by hand (raftsup never sees
        it); the others learn its address from its join."""
        raft, http_ = harness.free_ports(2)
        self.fourth = {"id": "node4", "raft": "127.0.0.1:%d" % raft,
                       "http": "127.0.0.1:%d" % http_}
        with open(self.c.config) as f:
            conf = json.load(f)
        conf["nodes"] = conf["nodes"] + [self.fourth]
        self.config4 = os.path.join(self.dir, "config4.json")
        with open(self.config4, "w") as f:
            json.dump(conf, f, indent=1)
        self.fourth_proc = None

    def start_fourth(self):
        d = os.path.join(self.data, "node4")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "node.log"), "ab") as out:
            self.fourth_proc = subprocess.Popen(
                [harness.RAFTNODE, "--config", self.config4, "--id", "node4"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop_fourth(self):
        p, self.fourth_proc = self.fourth_proc, None
        if p and p.poll() is None:
            p.kill()
            p.wait(10)
        membership.wipe_dir(os.path.join(self.data, "node4"))

    def fourth_addrs(self):
        return self.fourth["raft"], self.fourth["http"]

    def _put_proxies_in_front(self, seed):
        """Each node binds raft_listen (its old raft port); peers dial raft = its proxy."""
        ports = harness.free_ports(len(self.ids))
        specs = []
        for n, port in zip(self.c.nodes, ports):
            n["raft_listen"] = n["raft"]
            n["raft"] = "127.0.0.1:%d" % port
            specs.append((n["id"], n["raft"], n["raft_listen"]))
        with open(self.c.config) as f:
            conf = json.load(f)
        conf["nodes"] = self.c.nodes
        with open(self.c.config, "w") as f:
            json.dump(conf, f, indent=1)
        self.links = linkfaults.ProxyLinks(self.dir, seed, [((), specs)])

    def raft_addr(self, nid):
        return self.c.node(nid)["raft"]

    def wipe(self, nid):
        membership.wipe_dir(os.path.join(self.data, nid))

    def start(self):
        if self.links:
            self.links.start()
        self.c.start()
        self.c.wait_leader(20)
        self.c.wait_voters(3, 20)

    def http(self, nid):
        return self.c.node(nid)["http"]

    def pid(self, nid):
        return self.c.live_node_pid(nid)

    def kill(self, nid):
        """SIGKILL; raftsup's restarts fail until after_kill(nid), so the node stays down."""
        self.c.hold(nid)
        self.held.add(nid)
        pid = self.pid(nid)
        if pid:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        self.paused.discard(nid)

    def signal(self, nid, sig):
        pid = self.pid(nid)
        if pid:
            os.kill(pid, sig)
            (self.paused.add if sig == signal.SIGSTOP else self.paused.discard)(nid)

    def after_kill(self, nid):
        if nid in self.held:
            self.held.discard(nid)
            self.c.release(nid)  # raftsup's next restart succeeds

    def heal(self):
        if self.links:
            self.links.heal()
        for nid in list(self.held):
            self.after_kill(nid)
        for nid in list(self.paused):
            self.signal(nid, signal.SIGCONT)
        harness.wait_until(lambda: all(self.pid(n) for n in self.ids), 15, "every node running")

    def cleanup(self, keep):
        for nid in list(self.paused):
            try:
                self.signal(nid, signal.SIGCONT)
            except OSError:
                pass
        if self.links:
            self.links.stop()
        if self.fourth_proc and self.fourth_proc.poll() is None:
            self.fourth_proc.kill()
        if keep:
            os.environ["RAFTFS_KEEP_TMP"] = "1"
        self.c.cleanup()


class NetTarget:
    """Nodes as hosts in network namespaces; this process restarts killed nodes."""

    partitions = True

    def __init__(self, links=False, seed=0, extra=None):
        if not os.access(netcluster.RAFTNODE, os.X_OK):
            raise harness.Skip("%s is not built" % netcluster.RAFTNODE)
        self.c = netcluster.NetCluster(3, proxies=links, extra=extra)
        self.ids = self.c.ids
        self.dir, self.data = self.c.dir, self.c.data
        self.paused = set()
        self.lock = threading.Lock()
        self.reserved, self.busy = set(), set()
        self.links = None
        if links:
            self.links = linkfaults.ProxyLinks(self.dir, seed, [
                (["ip", "netns", "exec", self.c.ns(nid)], [self.c.proxy_spec(nid)])
                for nid in self.ids])

    extra_ids = []

    def raft_addr(self, nid):
        return self.c.nodes[self.ids.index(nid)]["raft"]

    def wipe(self, nid):
        membership.wipe_dir(os.path.join(self.data, nid))

    def start(self):
        self.c.build()
        if self.links:
            self.links.start()
        self.c.bootstrap_all()

    def http(self, nid):
        return self.c.http(nid)

    def pid(self, nid):
        return self.c.pid(nid)

    def kill(self, nid):
        self.c.held.add(nid)  # stays down until after_kill
        self.c.kill(nid, signal.SIGCONT)
        self.c.kill(nid, signal.SIGKILL)
        self.paused.discard(nid)

    def signal(self, nid, sig):
        self.c.kill(nid, sig)
        (self.paused.add if sig == signal.SIGSTOP else self.paused.discard)(nid)

    def after_kill(self, nid):
        self.c.held.discard(nid)
        self.c.restart_dead()

    def heal(self):
        if self.links:
            self.links.heal()
        for nid in list(self.paused):
            self.signal(nid, signal.SIGCONT)
        self.c.heal()
        self.c.held.clear()
        self.c.restart_dead()

    def cleanup(self, keep):
        if self.links:
            self.links.stop()
        self.c.cleanup(keep_dir=keep)


# --- HTTP ----------------------------------------------------------------------------------
def request(addr, method, path, body=None, timeout=CLIENT_TIMEOUT):
    """(status, body). Raises ConnectionRefusedError (request never sent) or another
    OSError / HTTPException (outcome unknown)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def find_leader(target):
    return membership.leader_status(target)[0]


# --- the workload --------------------------------------------------------------------------
class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.odd = []  # unexpected answers (e.g. a 4xx to a valid PUT)

    def add(self, what, odd=None):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if odd and len(self.odd) < 20:
                self.odd.append(odd)


def do_op(target, hist, stats, rng, cid, key, nid, seq, tag):
    """One recorded operation through node nid."""
    path = "/v1/files/" + key
    x = rng.random()
    if x < 0.45:
        kind, method, value = lc.WRITE, "PUT", ("%s-c%d-%d" % (tag, cid, seq)).encode()
        if BIG_WRITES and rng.random() < 0.04:
            # Now and then a large one, so throttled and stalled links fill their windows.
            value += b"." * rng.randint(64 << 10, 512 << 10)
    elif x < 0.52:
        kind, method, value = lc.WRITE, "DELETE", lc.ABSENT
    else:
        kind, method, value = lc.READ, "GET", lc.ABSENT
    h = hist.invoke(key, kind, value, client=cid)
    if method == "GET" and STALE_READS:
        path += "?stale=true"
    try:
        st, body = request(target.http(nid), method, path, value)
    except ConnectionRefusedError:
        hist.fail(h)  # never reached a node
        stats.add(method + " refused")
        return
    except (OSError, http.client.HTTPException) as e:
        hist.info(h, "%s via %s: %s" % (method, nid, type(e).__name__))
        stats.add(method + " unknown")
        return
    if method == "GET" and st in (200, 404):
        hist.ok(h, body if st == 200 else lc.ABSENT, note="via " + nid)
    elif method == "PUT" and st in (200, 201):
        hist.ok(h, note="via %s %d" % (nid, st), existed=(st == 200))
    elif method == "DELETE" and st == 204:
        hist.ok(h, note="via %s 204" % nid, existed=True)
    elif method == "DELETE" and st == 404:
        hist.ok(h, lc.ABSENT, note="via %s 404" % nid, as_read=True)
    elif st >= 500:
        hist.info(h, "%s via %s: %d" % (method, nid, st))
        stats.add("%s %d" % (method, st))
        return
    else:
        hist.fail(h)
        stats.add("%s %d" % (method, st), "%s %s via %s -> %d %r" % (method, key, nid, st,
                                                                      body[:200]))
        return
    stats.add(method + " ok")


def client_loop(target, hist, stats, seed, cid, keys, stop, tag):
    rng = random.Random(seed * 1000 + cid)
    seq = 0
    while not stop.is_set():
        seq += 1
        do_op(target, hist, stats, rng, cid, rng.choice(keys), rng.choice(target.ids), seq, tag)
        time.sleep(rng.uniform(0, 0.02))


# --- the nemesis ---------------------------------------------------------------------------
FAULTS_ALL = ["kill-leader", "kill-follower", "pause-leader", "pause-follower", "kill-two",
              "kill-all"]
FAULTS_NET = ["isolate-leader", "isolate-follower", "bridge", "one-way-from-leader",
              "one-way-to-leader"]


def pick_roles(target, rng):
    """(leader, a follower) for the next fault; nodes the membership thread is cycling are
    left alone (follower None when every follower is reserved)."""
    lead = find_leader(target)
    if lead is None:
        lead = rng.choice(target.ids)
    with target.lock:
        others = sorted(n for n in target.ids if n != lead and n not in target.reserved)
    return lead, (rng.choice(others) if others else None)


def apply_fault(target, fault, rng, events):
    """Starts one fault; returns a function that ends it (None: nothing to fault now)."""
    lead, follower = pick_roles(target, rng)
    if fault in linkfaults.FAULTS_LINK:
        what, end = linkfaults.apply(target.links, fault, rng, target.ids, lead,
                                     follower or rng.choice([n for n in target.ids
                                                             if n != lead]))
        events.append(what)
        return end
    who = lead if "leader" in fault.split("-")[-1] else follower
    if fault in ("kill-two", "kill-all"):
        victims = [lead, follower] if fault == "kill-two" else list(target.ids)
    elif fault.startswith("kill") or fault.startswith("pause"):
        victims = [who]
    else:
        victims = []
    with target.lock:
        victims = [v for v in victims if v and v not in target.reserved]
        if (fault.startswith("kill") or fault.startswith("pause")) and not victims:
            return None
        if fault == "kill-two" and len(victims) < 2:
            return None
        target.busy.update(victims)

    def unbusy():
        with target.lock:
            target.busy.difference_update(victims)
    if fault.startswith("kill"):
        for v in victims:
            target.kill(v)
        events.append("%s %s" % (fault, "+".join(victims)))
        return lambda: ([target.after_kill(v) for v in victims], unbusy())
    if fault.startswith("pause"):
        target.signal(who, signal.SIGSTOP)
        events.append("%s %s" % (fault, who))
        return lambda: (target.signal(who, signal.SIGCONT), unbusy())
    if follower is None:
        return None
    c = target.c
    if fault.startswith("isolate"):
        for o in target.ids:
            if o != who:
                c.cut(who, o)
        events.append("%s %s" % (fault, who))
    elif fault == "bridge":
        a, b = sorted(n for n in target.ids if n != lead)
        c.cut(a, b)
        events.append("bridge %s (cut %s|%s)" % (lead, a, b))
    elif fault == "one-way-from-leader":
        c.drop(lead, follower)
        events.append("drop %s->%s" % (lead, follower))
    elif fault == "one-way-to-leader":
        c.drop(follower, lead)
        events.append("drop %s->%s" % (follower, lead))
    return c.heal


def nemesis_loop(target, rng, deadline, events):
    faults = FAULTS_ALL + (FAULTS_NET if target.partitions else [])
    if target.links:
        faults = faults + linkfaults.FAULTS_LINK
    # Some runs are fast: short faults close together, many elections around in-flight
    # forwarded writes.
    tempo = 0.3 if rng.random() < 0.4 else 1.0
    log("nemesis tempo %.1f" % tempo)
    while time.monotonic() < deadline:
        time.sleep(min(tempo * rng.uniform(0.3, 1.5), max(0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
        chosen = [rng.choice(faults)]
        x = rng.random()
        if target.partitions and x < 0.3:
            # A partition together with a crash or a pause.
            chosen = [rng.choice(FAULTS_NET), rng.choice(FAULTS_ALL[:4])]
        elif target.links and x < 0.45:
            # A bad link together with a crash, a pause or another bad link.
            chosen = [rng.choice(linkfaults.FAULTS_LINK),
                      rng.choice(FAULTS_ALL[:4] + linkfaults.FAULTS_LINK)]
        hold = tempo * (rng.uniform(0.5, 2.5) if any(f.startswith("pause") for f in chosen)
                        else rng.uniform(0.5, 4.0))
        t = time.monotonic() - T0
        ends = []
        n0 = len(events)
        for fault in chosen:
            end = apply_fault(target, fault, rng, events)
            if end:
                ends.append(end)
        if not ends:
            continue
        what = " + ".join(events[n0:])
        del events[n0:]
        events.append("%.1fs %s for %.1fs" % (t, what, hold))
        log("nemesis:", events[-1])
        time.sleep(hold)
        for end in reversed(ends):
            end()


# --- checks after healing ------------------------------------------------------------------
def wait_writable(target, hist, key):
    """Seconds from now until a PUT through some node is accepted (recorded in hist)."""
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < WRITABLE_BOUND:
        for nid in target.ids:
            n += 1
            v = ("probe-%d" % n).encode()
            h = hist.invoke(key, lc.WRITE, v, client=-1)
            try:
                st, _ = request(target.http(nid), "PUT", "/v1/files/" + key, v, 2.0)
            except ConnectionRefusedError:
                hist.fail(h)
                continue
            except (OSError, http.client.HTTPException):
                hist.info(h, "probe")
                continue
            if st in (200, 201):
                hist.ok(h)
                return time.monotonic() - t0
            (hist.info if st >= 500 else hist.fail)(h)
        time.sleep(0.1)
    raise CheckFailed("cluster not writable %.0f s after healing" % WRITABLE_BOUND)


last_final = {}  # key -> what the last final read saw


def final_reads(target, hist, keys):
    """A linearizable GET of every key from every node (recorded); {key: {node: value}}."""
    out = {}
    for key in keys:
        for nid in target.ids:
            end = time.monotonic() + 10
            while True:
                h = hist.invoke(key, lc.READ, client=-2)
                try:
                    st, body = request(target.http(nid), "GET", "/v1/files/" + key)
                except (OSError, http.client.HTTPException):
                    st, body = 0, b""
                if st in (200, 404):
                    v = body if st == 200 else lc.ABSENT
                    hist.ok(h, v, note="final via " + nid)
                    out.setdefault(key, {})[nid] = v
                    last_final[key] = v
                    break
                hist.fail(h)
                if time.monotonic() > end:
                    raise CheckFailed("final GET %s via %s kept failing (%d)" % (key, nid, st))
                time.sleep(0.1)
    return out


def check_no_lost_write(hist, finals):
    """The value every node reads at the end must come from a write that no acknowledged
    write started after: otherwise an acknowledged write was lost."""
    problems = []
    by_key = hist.by_key()
    for key, per_node in finals.items():
        ops = [o for o in by_key.get(key, []) if o.kind == lc.WRITE]
        acked = [o for o in ops if o.ret != lc.INF]
        for nid, v in per_node.items():
            src = [o for o in ops if o.value == v]
            latest_ret = max([o.ret for o in src], default=-lc.INF)
            later = [o for o in acked if o.call > latest_ret]
            if later:
                problems.append("%s via %s reads %s, but %r was acknowledged after that value "
                                "was written" % (key, nid, lc._show(v), later[0]))
    return problems


def wait_files_identical(target):
    """Every node's files/ the same, byte for byte (polls: applying may lag)."""
    def snapshot(nid):
        return harness.read_tree(os.path.join(target.data, nid, "files"), vanishing=True)

    end = time.monotonic() + CONVERGE_BOUND
    while True:
        snaps = {nid: snapshot(nid) for nid in target.ids}
        first = snaps[target.ids[0]]
        diff = [nid for nid in target.ids if snaps[nid] != first]
        if not diff:
            return first
        if time.monotonic() > end:
            lines = []
            for nid in diff:
                s = snaps[nid]
                for p in sorted(set(s) | set(first)):
                    if s.get(p) != first.get(p):
                        lines.append("  %s: %s has %r, %s has %r" % (
                            p, target.ids[0], first.get(p, b"<none>")[:40], nid,
                            s.get(p, b"<none>")[:40]))
            raise CheckFailed("files/ differ after %.0f s:\n%s" % (CONVERGE_BOUND,
                                                                   "\n".join(lines[:20])))
        time.sleep(0.2)


LEADER_RE = re.compile(r"^\S+ +\S+ +(\S+) .*raft: became leader at term (\d+)")


def leaders_per_term(target):
    terms = {}
    for nid in target.ids + target.extra_ids:
        try:
            with open(os.path.join(target.data, nid, "node.log"), errors="replace") as f:
                for line in f:
                    m = LEADER_RE.match(line)
                    if m:
                        terms.setdefault(int(m.group(2)), set()).add(m.group(1))
        except OSError:
            pass
    return terms


CRASH_RE = re.compile(r"assertion failed|AddressSanitizer|LeakSanitizer|runtime error:")


def crash_reports(target):
    """Lines of node logs that show a crash or a failed assertion (a node that died on
    its own is restarted, so the history alone would not tell)."""
    out = []
    for nid in target.ids + target.extra_ids:
        try:
            with open(os.path.join(target.data, nid, "node.log"), errors="replace") as f:
                for line in f:
                    if CRASH_RE.search(line) and len(out) < 10:
                        out.append("%s crashed: %s" % (nid, line.strip()[:300]))
        except OSError:
            pass
    return out


def check_round(target, hist, keys, stats, events, artifacts, early=()):
    """Heal-time checks; raises CheckFailed with every problem found."""
    problems = list(early)
    finals = final_reads(target, hist, keys)
    files = wait_files_identical(target)
    log("files/ identical on every node (%d files)" % len(files))
    for _ in range(5):
        # A write whose client timed out may still land after the final reads (it is
        # indeterminate, so that is allowed, as seed 103 showed): read again until the
        # files settle.
        bad = [k for k in finals if files.get(k, lc.ABSENT) != last_final[k]]
        if not bad:
            break
        time.sleep(1.0)
        final_reads(target, hist, bad)
        files = wait_files_identical(target)
    for key in bad:
        problems.append("%s: files/ holds %r but GET answered %r" % (
            key, files.get(key, "<absent>"), last_final[key]))
    hist.close()
    t0 = time.monotonic()
    results = lc.check_history(hist)
    for key, r in results.items():
        log("lincheck %s: %d ops, %s (%d steps)" % (
            key, len(r.ops), {True: "linearizable", False: "NOT LINEARIZABLE",
                              None: "UNKNOWN"}[r.ok], r.steps))
        if r.ok is not True:
            problems.append("%s: %s" % (key, r.message))
    log("checked in %.2f s" % (time.monotonic() - t0))
    problems += check_no_lost_write(hist, finals)
    terms = leaders_per_term(target)
    multi = {t: sorted(ns) for t, ns in terms.items() if len(ns) > 1}
    log("leaders elected in %d terms%s" % (len(terms), "" if not multi else ", SPLIT: %r" % multi))
    if multi:
        problems.append("more than one leader in a term: %r" % multi)
    problems += crash_reports(target)
    if problems:
        hist.save(os.path.join(artifacts, "history.jsonl"))
        raise CheckFailed("\n".join(problems))


# --- one run -------------------------------------------------------------------------------
def run_round(target, seed, rnd, seconds, args, artifacts):
    rng = random.Random(seed * 7919 + rnd)
    keys = ["lc/r%d/k%d" % (rnd, i) for i in range(args.keys)]
    hist, stats, stop, events = lc.History(), Stats(), threading.Event(), []
    tag = "s%dr%d" % (seed, rnd)
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(target, hist, stats, seed + rnd, cid, keys, stop, tag))
               for cid in range(args.clients)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + seconds
    members = None
    if args.membership:
        members = membership.Membership(target, random.Random(seed * 104729 + rnd),
                                        deadline - 3, log)
        members.start()
    try:
        nemesis_loop(target, rng, deadline, events)
    finally:
        stop.set()
        if members:
            members.stop.set()
        target.heal()
        log("healed")
    t = wait_writable(target, hist, keys[0])
    log("writable again %.2f s after healing" % t)
    early = []
    if members:
        early = members.finish()
        log("membership: %d cycles (%s)%s" % (len(members.events), ", ".join(members.events),
                                              "" if not early else "; " + "; ".join(early)))
        target.heal()  # whatever a failed cycle left down
    if target.links:
        st = target.links.stats()
        log("links: " + ", ".join("%s %d conns %d resets %d refused %d kB" % (
            k, v["conns"], v["resets"], v["refused"], v["bytes"] // 1000)
            for k, v in sorted(st.items()) if v["conns"]))
    end = time.monotonic() + CLIENT_TIMEOUT * 3
    for th in threads:
        th.join(max(0.1, end - time.monotonic()))
    log("round %d: %d faults; ops: %s" % (rnd, len(events), ", ".join(
        "%s %d" % kv for kv in sorted(stats.counts.items()))))
    for o in stats.odd:
        log("unexpected answer:", o)
    check_round(target, hist, keys, stats, events, artifacts, early)


def choose_mode(mode):
    if mode == "sup":
        return SupTarget, None
    why = netcluster.unavailable_reason()
    if mode == "netns" and why:
        raise harness.Skip("network partitions skipped: " + why)
    if why:
        log("network partitions skipped: %s; kills and pauses only (raftsup)" % why)
        return SupTarget, None
    return NetTarget, None


_targets = []


def _cleanup_all(keep=False):
    while _targets:
        t = _targets.pop()
        try:
            t.cleanup(keep)
        except Exception:  # noqa: BLE001 — cleanup must go on
            traceback.print_exc()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--minutes", type=float, default=None, help="torture: rounds of 60 s")
    ap.add_argument("--mode", choices=["auto", "sup", "netns"], default="auto")
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--keys", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--links", action="store_true",
                    help="a lossy_proxy in front of every node: slow, lossy, stalled, "
                         "throttled and one-way black-holed links")
    ap.add_argument("--snapshots", action="store_true",
                    help="compact the log every few hundred entries, so wiped and lagging "
                         "nodes catch up by InstallSnapshot")
    ap.add_argument("--membership", action="store_true",
                    help="meanwhile remove a follower, wipe it and join it again")
    ap.add_argument("--stale-reads", action="store_true",
                    help="clients read with ?stale=true (not linearizable: should FAIL)")
    args = ap.parse_args(argv[1:])
    global STALE_READS, BIG_WRITES
    STALE_READS = args.stale_reads
    BIG_WRITES = args.links
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    total = args.minutes * 60 if args.minutes else args.seconds
    log("seed %d (--seed %d replays the fault schedule), %.0f s, mode %s%s%s%s" % (
        seed, seed, total, args.mode, " --links" if args.links else "",
        " --membership" if args.membership else "", " --snapshots" if args.snapshots else ""))
    atexit.register(_cleanup_all)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(int(total + 240))  # hard bound on the whole run
    try:
        cls, _ = choose_mode(args.mode)
        target = cls(links=args.links, seed=seed,
                     extra=SNAPSHOT_CONF if args.snapshots else None)
    except harness.Skip as e:
        log("SKIP:", e)
        return 77
    _targets.append(target)
    artifacts = tempfile.mkdtemp(prefix="raftfs-nemesis-%d-" % seed)
    ok = False
    try:
        log("cluster in %s (%s)" % (target.dir, type(target).__name__))
        target.start()
        rounds = max(1, int(round(total / ROUND_SECONDS))) if args.minutes else 1
        for rnd in range(rounds):
            run_round(target, seed, rnd, total / rounds, args, artifacts)
            log("round %d passed every check" % rnd)
        ok = True
    except (CheckFailed, AssertionError) as e:
        log("FAIL (seed %d):\n%s" % (seed, e))
    except SystemExit as e:
        log("interrupted (%s)" % e)
    except Exception:  # noqa: BLE001 — report, clean up, fail
        traceback.print_exc()
    finally:
        signal.alarm(0)
        keep = args.keep or not ok
        if not ok:
            for nid in target.ids:
                src = os.path.join(target.data, nid, "node.log")
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(artifacts, nid + ".log"))
            log("artifacts (history, node logs) in", artifacts)
        else:
            shutil.rmtree(artifacts, ignore_errors=True)
        _cleanup_all(keep and args.keep)
    log("PASS" if ok else "FAIL", "seed", seed)
    return 0 if ok else 1


if __name__ == "__main__":
    socket.setdefaulttimeout(CLIENT_TIMEOUT)
    sys.exit(main(sys.argv))
