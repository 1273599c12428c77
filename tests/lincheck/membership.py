"""membership.py — membership changes under faults: while the nemesis kills, pauses and cuts
links, a second thread removes a node — mostly a follower, now and then the leader — with
POST /v1/cluster/remove, waits until the removal is committed, kills the node, wipes its
state (keeping node.log, the evidence the one-leader-per-term check reads), restarts it
empty and joins it again (POST /v1/cluster/join; raftsup also re-joins an empty node),
until it is a voter. The node it works on is reserved so the nemesis leaves it alone. Under
raftsup it sometimes instead starts a 4th node outside raftsup's config, joins it (four
voters, quorum three, while the nemesis works), and removes it again.

The target provides: ids, lock, reserved and busy (sets: nodes being cycled, nodes under a
nemesis fault), paused, kill(nid) (stays down until after_kill(nid) restarts it),
wipe(nid), http(nid), raft_addr(nid)."""
import http.client
import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402  (http_json: one request, JSON both ways)

STEP_BOUND = 30.0  # seconds for one step (removal committed, join accepted)


def status(target, nid, timeout=0.5):
    return status_at(target.http(nid), timeout)


def status_at(addr, timeout=0.5):
    try:
        st, body = harness.http_json(addr, "GET", "/v1/status", timeout=timeout)
        return body if st == 200 else None
    except (OSError, http.client.HTTPException):
        return None


def leader_status(target, exclude=()):
    for nid in target.ids:
        if nid in exclude or nid in target.paused:
            continue
        s = status(target, nid)
        if s and s.get("state") == "leader":
            return nid, s
    return None, None


def wipe_dir(node_dir):
    """Everything of a node except its log and pid file."""
    for name in os.listdir(node_dir):
        if name in ("node.log", "node.pid"):
            continue
        p = os.path.join(node_dir, name)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.unlink(p)


class Membership(threading.Thread):
    def __init__(self, target, rng, deadline, log):
        super().__init__(daemon=True)
        self.target, self.rng, self.deadline, self.log = target, rng, deadline, log
        self.events = []
        self.errors = []
        self.stop = threading.Event()
        self.current = None  # the node being cycled, until it is a voter again

    def pick(self):
        t = self.target
        lead, _ = leader_status(t)
        # Mostly a follower; sometimes the leader itself (it hands over or steps down).
        take_leader = self.rng.random() < 0.25
        with t.lock:
            cands = [n for n in t.ids if (n == lead) == take_leader and n not in t.busy and
                     n not in t.paused]
            if not lead or not cands:
                return None
            f = self.rng.choice(sorted(cands))
            t.reserved.add(f)
            return f

    def run(self):
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                if self.stop.wait(self.rng.uniform(1.0, 4.0)):
                    break
                if time.monotonic() >= self.deadline:
                    break
                if getattr(self.target, "extra_ids", None) and self.rng.random() < 0.3:
                    self.cycle_fourth()
                    continue
                f = self.pick()
                if f is None:
                    continue
                self.current = f
                try:
                    self.cycle(f)
                finally:
                    with self.target.lock:
                        self.target.reserved.discard(f)
                    self.current = None
        except Exception as e:  # noqa: BLE001 — reported by the checks
            self.errors.append("membership thread: %r" % e)

    def until(self, pred, what, bound=STEP_BOUND):
        end = time.monotonic() + bound
        while time.monotonic() < end:
            r = pred()
            if r:
                return r
            time.sleep(0.1)
        raise TimeoutError("%s not within %.0f s" % (what, bound))

    def removed_committed(self, f):
        """True once a leader's configuration lacks f and its commit index covers the
        entry that removed it (the configuration is in force once appended)."""
        lead, s = leader_status(self.target, exclude=(f,))
        if not s or any(m["id"] == f for m in s["members"]):
            return False
        last, term = s["last_log_index"], s["term"]
        end = time.monotonic() + 5
        while time.monotonic() < end:
            s2 = status(self.target, lead)
            if not s2 or s2.get("state") != "leader" or s2["term"] != term:
                return False
            if s2["commit_index"] >= last:
                return True
            time.sleep(0.05)
        return False

    def remove(self, f):
        def attempt():
            lead, _ = leader_status(self.target, exclude=(f,))
            via = lead or self.rng.choice([n for n in self.target.ids if n != f])
            try:
                st, body = harness.http_json(self.target.http(via), "POST", "/v1/cluster/remove",
                                             {"id": f}, timeout=6.0)
            except (OSError, http.client.HTTPException):
                st = 0
            return st == 200 or self.removed_committed(f)
        self.until(attempt, "removal of %s committed" % f)

    def rejoin(self, f, raft=None, http_addr=None):
        body = {"id": f, "raft": raft or self.target.raft_addr(f),
                "http": http_addr or self.target.http(f)}

        def attempt():
            lead, s = leader_status(self.target, exclude=(f,))
            if s and any(m["id"] == f for m in s["members"]):
                return True
            if not lead:
                return False
            try:
                st, _ = harness.http_json(self.target.http(lead), "POST", "/v1/cluster/join",
                                          body, timeout=6.0)
            except (OSError, http.client.HTTPException):
                return False
            return st in (200, 409)
        self.until(attempt, "join of %s" % f)

    def is_voter(self, f):
        _, s = leader_status(self.target, exclude=(f,))
        return s and any(m["id"] == f and m["voter"] for m in s["members"])

    def cycle(self, f):
        t0 = time.monotonic()
        self.remove(f)
        self.log("membership: %s removed (%.1f s)" % (f, time.monotonic() - t0))
        # A removed node may run on a while before it is stopped.
        time.sleep(self.rng.uniform(0, 1.5))
        self.target.kill(f)
        self.target.wipe(f)
        self.target.after_kill(f)
        self.rejoin(f)
        self.log("membership: %s wiped and joined again (%.1f s)" % (f, time.monotonic() - t0))
        self.events.append("remove+wipe+rejoin %s" % f)
        try:
            self.until(lambda: self.is_voter(f), "%s a voter again" % f, bound=20)
            self.log("membership: %s is a voter again (%.1f s)" % (f, time.monotonic() - t0))
        except TimeoutError:
            pass  # checked after healing

    def cycle_fourth(self):
        """A 4th node joins (4 voters: quorum 3 while the nemesis works), stays a while and is
        removed again."""
        t, x = self.target, self.target.extra_ids[0]
        t0 = time.monotonic()
        raft, http_addr = t.fourth_addrs()
        t.start_fourth()
        try:
            self.until(lambda: status_at(http_addr), "%s serving" % x, bound=15)
            self.rejoin(x, raft, http_addr)
            self.log("membership: %s joined (%.1f s)" % (x, time.monotonic() - t0))
            try:
                self.until(lambda: self.is_voter(x), "%s a voter" % x, bound=15)
                self.log("membership: %s is a voter (%.1f s)" % (x, time.monotonic() - t0))
            except TimeoutError:
                pass
            time.sleep(self.rng.uniform(1.0, 4.0))
            self.remove(x)
            self.log("membership: %s removed (%.1f s)" % (x, time.monotonic() - t0))
            self.events.append("add+remove %s" % x)
        finally:
            t.stop_fourth()

    def finish(self, bound=60.0):
        """After the nemesis stopped: the cycle in progress completes and every node is a
        voter again. Returns problems."""
        self.stop.set()
        self.join(bound)
        problems = list(self.errors)
        if self.is_alive():
            problems.append("membership thread still busy (%s) %.0f s after healing" % (
                self.current, bound))
            return problems
        try:
            self.until(lambda: all(self.is_voter(n) or self.is_leader(n)
                                   for n in self.target.ids), "every node a voter", bound=30)
        except TimeoutError as e:
            _, s = leader_status(self.target)
            problems.append("%s (leader's members: %s)" % (e, s and s["members"]))
        _, s = leader_status(self.target)
        extra = [m["id"] for m in (s or {}).get("members", [])
                 if m["id"] not in self.target.ids]
        if extra:
            problems.append("members left over after the run: %s" % extra)
        return problems

    def is_leader(self, n):
        s = status(self.target, n)
        return s and s.get("state") == "leader"
