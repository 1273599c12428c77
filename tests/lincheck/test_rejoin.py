"""test_rejoin.py — membership regressions found by the nemesis, as quick deterministic runs
under raftsup (through lossy_proxy, as the nemesis runs them):

- the first node of the config (the one raftsup bootstraps) is removed, wiped and restarted:
  it must rejoin the existing cluster — not found a second one-voter cluster of its own,
  lead it in terms the real cluster also uses and never catch up (nemesis seed 3,
  --links --membership; raftsup had stopped checking its peers' state);
- the same for a follower, with a one-way black hole from the leader to it while it
  catches up, healed afterwards.
Each time: the node is a voter again, reads through it see the latest write, files/ match
and no term has two leaders. Exit 0 pass, 1 fail, 77 skip."""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import harness  # noqa: E402
import membership  # noqa: E402
import nemesis  # noqa: E402

def start(track):
    t = nemesis.SupTarget(links=True, seed=5)
    track(CleanTarget(t))
    t.start()
    return t


class CleanTarget:
    """Adapts a nemesis target to harness.run's cleanup/dump_logs."""

    def __init__(self, t):
        self.t = t

    def cleanup(self):
        self.t.cleanup(False)

    def dump_logs(self):
        self.t.c.dump_logs()


def rejoin(t, f, faults=None):
    """Removes f, kills, wipes and restarts it, joins it again (faults() runs just before
    the join and returns the function that heals them); waits until f is a voter."""
    m = membership.Membership(t, random.Random(0), 0, harness.log)
    m.remove(f)
    log_path = os.path.join(t.data, f, "node.log")
    offset = os.path.getsize(log_path)
    t.kill(f)
    t.wipe(f)
    t.after_kill(f)
    heal = faults() if faults else None
    m.rejoin(f)
    if heal:
        t.c.put_ok("during-" + f, b"y")
        heal()
    harness.wait_until(lambda: m.is_voter(f), 30, "%s a voter again" % f, 0.1)
    with open(log_path, errors="replace") as fh:
        fh.seek(offset)
        after = fh.read()
    assert "bootstrapped a new cluster" not in after, \
        "wiped %s bootstrapped a cluster of its own:\n%s" % (f, after[-2000:])


def check_consistent(t, key):
    v = ("v-%s" % key).encode()
    t.c.put_ok(key, v)
    for nid in t.ids:
        harness.wait_until(lambda: t.c.get(nid, key) == (200, v), 15,
                           "%s reads the latest %s" % (nid, key), 0.1)
    harness.wait_until(lambda: all(t.c.files_on_disk(n) == t.c.files_on_disk(t.ids[0])
                                   for n in t.ids), 15, "identical files/", 0.1)
    split = {k: v for k, v in nemesis.leaders_per_term(t).items() if len(v) > 1}
    assert not split, "two leaders in a term: %r" % split
    assert not nemesis.crash_reports(t), nemesis.crash_reports(t)


def test_wiped_first_node_rejoins(track):
    t = start(track)
    for i in range(5):
        t.c.put_ok("before/%d" % i, b"x%d" % i)
    rejoin(t, t.ids[0])  # node1: the node raftsup bootstraps
    check_consistent(t, "after-node1")


def test_wiped_follower_rejoins_through_black_hole(track):
    """The follower is killed right after its removal commits (before the leader dropped
    its progress) and the leader's messages to the new, wiped incarnation are black-holed
    while it joins. The leader used to reuse the old progress (match at the old log):
    heartbeats were rejected, the rejections ignored as stale, and the node stayed a
    learner with an empty log forever."""
    t = start(track)
    t.c.put_ok("before", b"x")
    lead = t.c.wait_leader(15)
    f = next(n for n in t.ids if n != lead)

    def blackhole():
        t.links.set(lead, f, blackhole=True)

        def heal():
            # Healed only once the leader's messages to the new f are being lost.
            harness.wait_until(lambda: t.links.stats()["%s>%s" % (lead, f)]["discarded"], 15,
                               "messages %s->%s black-holed" % (lead, f), 0.05)
            t.links.heal()
        return heal
    rejoin(t, f, blackhole)
    check_consistent(t, "after-" + f)


if __name__ == "__main__":
    harness.main([test_wiped_first_node_rejoins, test_wiped_follower_rejoins_through_black_hole],
                 limit_s=150)
