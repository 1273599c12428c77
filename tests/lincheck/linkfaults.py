"""linkfaults.py — the nemesis's link faults, played through lossy_proxy.py: one proxy in
front of every node's Raft port (node binds raft_listen, peers dial raft = the proxy), so
every directed link src -> dst can be slowed, made lossy, stalled, throttled or
black-holed on its own. ProxyLinks runs the proxy process(es); apply() starts one fault and
returns the function that ends it."""
import os

import lossy_proxy as lp

FAULTS_LINK = ["slow-link", "slow-node", "lossy-link", "stall-link", "blackhole-from-leader",
               "blackhole-to-leader", "throttle-leader"]


class ProxyLinks:
    """Proxy processes for a cluster. groups: [(prefix argv, [(nid, listen, upstream)])] —
    one process per group (one for all nodes on loopback, one per namespace)."""

    def __init__(self, workdir, seed, groups):
        self.workdir, self.seed, self.groups = workdir, seed, groups
        self.procs, self.ctls = [], {}
        self.active = set()  # (src, dst) links with a fault

    def start(self):
        for i, (prefix, specs) in enumerate(self.groups):
            ctl_path = os.path.join(self.workdir, "proxy%d.ctl" % i)
            with open(os.path.join(self.workdir, "proxy%d.log" % i), "ab") as log:
                p, ctl = lp.spawn(ctl_path, self.seed, specs, prefix=prefix, log=log)
            self.procs.append(p)
            for nid, _, _ in specs:
                self.ctls[nid] = ctl

    def set(self, src, dst, **fault):
        self.ctls[dst].set(dst, src, **fault)
        self.active.add((src, dst))

    def clear(self, links=None):
        for src, dst in list(links if links is not None else self.active):
            self.ctls[dst].clear(dst=dst, src=src)
            self.active.discard((src, dst))

    def heal(self):
        for ctl in set(self.ctls.values()):
            ctl.clear()
        self.active.clear()

    def stats(self):
        out = {}
        for ctl in set(self.ctls.values()):
            out.update(ctl.stats())
        return out

    def stop(self):
        for ctl in set(self.ctls.values()):
            ctl.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except Exception:  # noqa: BLE001 — cleanup goes on
                pass
        self.procs = []


def _pair(rng, ids):
    a = rng.choice(ids)
    b = rng.choice([x for x in ids if x != a])
    return a, b


def apply(links, fault, rng, ids, lead, follower):
    """Starts fault; returns (description, end function)."""
    set_links = []

    def put(src, dst, **f):
        links.set(src, dst, **f)
        set_links.append((src, dst))

    if fault == "slow-link":
        a, b = _pair(rng, ids)
        # Mostly below the heartbeat interval; sometimes past the election timeout.
        delay = rng.uniform(5, 60) if rng.random() < 0.7 else rng.uniform(150, 400)
        jitter = rng.uniform(0, delay)
        put(a, b, delay_ms=delay, jitter_ms=jitter)
        put(b, a, delay_ms=delay, jitter_ms=jitter)
        what = "slow %s<->%s %.0f+%.0f ms" % (a, b, delay, jitter)
    elif fault == "slow-node":
        x = rng.choice(ids)
        delay, jitter = rng.uniform(20, 250), rng.uniform(0, 100)
        for o in ids:
            if o != x:
                put(x, o, delay_ms=delay, jitter_ms=jitter)
                put(o, x, delay_ms=delay, jitter_ms=jitter)
        what = "slow node %s %.0f+%.0f ms" % (x, delay, jitter)
    elif fault == "lossy-link":
        a, b = _pair(rng, ids)
        mean, refuse = rng.uniform(0.05, 1.0), rng.uniform(0.2, 0.8)
        put(a, b, reset_mean_s=mean, refuse=refuse)
        put(b, a, reset_mean_s=mean, refuse=refuse)
        what = "lossy %s<->%s resets every ~%.2f s, refuses %.0f%%" % (a, b, mean, refuse * 100)
    elif fault == "stall-link":
        a, b = _pair(rng, ids)
        put(a, b, stall=True)
        both = rng.random() < 0.5
        if both:
            put(b, a, stall=True)
        what = "stall %s%s%s" % (a, "<->" if both else "->", b)
    elif fault == "blackhole-from-leader":
        put(lead, follower, blackhole=True)
        what = "black hole %s->%s (from leader)" % (lead, follower)
    elif fault == "blackhole-to-leader":
        put(follower, lead, blackhole=True)
        what = "black hole %s->%s (to leader)" % (follower, lead)
    elif fault == "throttle-leader":
        rate = rng.uniform(10e3, 200e3)
        for o in ids:
            if o != lead:
                put(lead, o, rate_bps=rate)
        what = "throttle %s's links to %.0f kB/s" % (lead, rate / 1e3)
    else:
        raise ValueError(fault)
    return what, lambda: links.clear(set_links)
