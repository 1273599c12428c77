"""test_lincheck.py — the history checker on hand-made histories that must pass and must
fail (stdlib unittest; exit 0 pass, 1 fail). Never starts a node."""
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lincheck as lc  # noqa: E402
from lincheck import ABSENT, INF, READ, WRITE, Op  # noqa: E402


def w(v, call, ret, key="f", existed=None):
    return Op(key, WRITE, v if v is ABSENT else v.encode(), call, ret, existed=existed)


def r(v, call, ret, key="f"):
    return Op(key, READ, v if v is ABSENT else v.encode(), call, ret)


def dele(call, ret, key="f"):
    return Op(key, WRITE, ABSENT, call, ret)


def verdict(ops, **kw):
    return lc.check_ops(ops, "f", **kw).ok


class MustPass(unittest.TestCase):
    def test_empty(self):
        self.assertTrue(verdict([]))

    def test_read_of_absent_file(self):
        self.assertTrue(verdict([r(ABSENT, 0, 1)]))

    def test_sequential(self):
        self.assertTrue(verdict([w("a", 0, 1), r("a", 2, 3), w("b", 4, 5), r("b", 6, 7)]))

    def test_read_concurrent_with_write_sees_old(self):
        self.assertTrue(verdict([w("a", 0, 1), w("b", 2, 5), r("a", 3, 4)]))

    def test_read_concurrent_with_write_sees_new(self):
        self.assertTrue(verdict([w("a", 0, 1), w("b", 2, 5), r("b", 3, 4)]))

    def test_concurrent_writes_either_order(self):
        # Two overlapping writes; later reads agree on b, so a came first.
        self.assertTrue(verdict([w("a", 0, 3), w("b", 1, 4), r("b", 5, 6), r("b", 7, 8)]))
        self.assertTrue(verdict([w("a", 0, 3), w("b", 1, 4), r("a", 5, 6)]))

    def test_reads_order_concurrent_writes(self):
        # r1 sees b then a later read sees a: fine only because a's write was still running.
        self.assertTrue(verdict([w("a", 0, 10), w("b", 0, 2), r("b", 3, 4), r("a", 11, 12)]))

    def test_indeterminate_write_may_appear(self):
        self.assertTrue(verdict([w("a", 0, 1), w("b", 2, INF), r("b", 5, 6)]))

    def test_indeterminate_write_may_not_appear(self):
        self.assertTrue(verdict([w("a", 0, 1), w("b", 2, INF), r("a", 5, 6), r("a", 7, 8)]))

    def test_indeterminate_write_appears_late(self):
        # It may take effect long after its client gave up.
        self.assertTrue(verdict([w("a", 0, 1), w("b", 2, INF), r("a", 5, 6), r("b", 9, 10)]))

    def test_delete_then_absent(self):
        self.assertTrue(verdict([w("a", 0, 1), dele(2, 3), r(ABSENT, 4, 5), w("b", 6, 7),
                                 r("b", 8, 9)]))

    def test_created_and_replaced_flags(self):
        self.assertTrue(verdict([w("a", 0, 1, existed=False), w("b", 2, 3, existed=True),
                                 dele(4, 5), w("c", 6, 7, existed=False)]))
        # Concurrent creates: exactly one of them may say "created".
        self.assertTrue(verdict([w("a", 0, 3, existed=False), w("b", 1, 4, existed=True)]))

    def test_touching_intervals_count_as_concurrent(self):
        self.assertTrue(verdict([w("a", 0, 1), w("b", 1, 2), r("a", 2, 3)]))

    def test_many_concurrent_clients(self):
        # 4 clients writing unique values in lock-step rounds, a reader per round that
        # overlaps the whole round: always linearizable.
        rng = random.Random(7)
        ops, t = [], 0.0
        for rnd in range(60):
            vals = ["r%dc%d" % (rnd, c) for c in range(4)]
            for v in vals:
                a = t + rng.random()
                ops.append(w(v, a, a + 1 + rng.random()))
            ops.append(r(rng.choice(vals), t + 2.5, t + 2.6))
            t += 3.0
        res = lc.check_ops(ops, "f")
        self.assertTrue(res.ok, res.message)

    def test_keys_are_independent(self):
        h = lc.History()
        h.ops = [w("a", 0, 1, "x"), w("b", 0, 1, "y"), r("a", 2, 3, "x"), r("b", 2, 3, "y")]
        res = lc.check_history(h)
        self.assertEqual(set(res), {"x", "y"})
        self.assertTrue(all(v.ok for v in res.values()))


class MustFail(unittest.TestCase):
    def test_stale_read_after_completed_write(self):
        self.assertFalse(verdict([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)]))

    def test_read_of_value_never_written(self):
        res = lc.check_ops([w("a", 0, 1), r("zzz", 2, 3)], "f")
        self.assertFalse(res.ok)
        self.assertIn("never written", res.message)

    def test_write_visible_then_invisible(self):
        self.assertFalse(verdict([w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)]))

    def test_first_write_visible_then_absent(self):
        self.assertFalse(verdict([w("a", 0, 5), r("a", 1, 2), r(ABSENT, 3, 4)]))

    def test_lost_acknowledged_write(self):
        self.assertFalse(verdict([w("a", 0, 1), r(ABSENT, 2, 3)]))

    def test_read_before_write_began(self):
        self.assertFalse(verdict([r("a", 0, 1), w("a", 2, 3)]))

    def test_indeterminate_write_seen_before_it_began(self):
        self.assertFalse(verdict([w("a", 0, 1), r("b", 2, 3), w("b", 4, INF)]))

    def test_indeterminate_write_cannot_flicker(self):
        # b appears, disappears (a again), reappears: a register cannot do that.
        self.assertFalse(verdict([w("a", 0, 1), w("b", 2, INF), r("b", 3, 4), r("a", 5, 6),
                                  r("b", 7, 8)]))

    def test_deleted_file_reappears(self):
        self.assertFalse(verdict([w("a", 0, 1), dele(2, 3), r("a", 4, 5)]))

    def test_concurrent_readers_disagree_on_order(self):
        # Both writes finished; one reader sees a then b, another b then a.
        self.assertFalse(verdict([w("a", 0, 2), w("b", 0, 2), r("a", 3, 4), r("b", 5, 6),
                                  r("a", 7, 8)]))

    def test_two_creates_of_one_file(self):
        self.assertFalse(verdict([w("a", 0, 3, existed=False), w("b", 1, 4, existed=False)]))

    def test_replace_of_absent_file(self):
        self.assertFalse(verdict([w("a", 0, 1), dele(2, 3), w("b", 4, 5, existed=True)]))

    def test_failure_names_the_op(self):
        res = lc.check_ops([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)], "f")
        self.assertIn("cannot place", res.message)
        self.assertIn("read(f=a)", res.message)


class Recorder(unittest.TestCase):
    def test_outcomes(self):
        t = [0.0]

        def clock():
            t[0] += 1
            return t[0]
        h = lc.History(clock)
        a = h.invoke("k", WRITE, b"a")
        h.ok(a)
        b = h.invoke("k", WRITE, b"b")
        h.info(b, "timeout")  # stays, infinite completion
        c = h.invoke("k", READ)
        h.fail(c)  # dropped
        d = h.invoke("k", READ)
        h.info(d)  # a read with unknown outcome is dropped
        e = h.invoke("k", WRITE, b"x")
        h.fail(e)  # refused: dropped
        f = h.invoke("k", READ)
        h.ok(f, b"b")
        g = h.invoke("k", WRITE, b"g")  # never completes
        h.close()
        kinds = [(op.kind, op.value, op.ret == INF) for op in h.ops]
        self.assertEqual(kinds, [(WRITE, b"a", False), (WRITE, b"b", True), (READ, b"b", False),
                                 (WRITE, b"g", True)])
        del g
        self.assertTrue(lc.check_history(h)["k"].ok)

    def test_save_load_round_trip(self):
        h = lc.History()
        h.ops = [w("a", 0, 1), w("b\xff", 2, INF), r(ABSENT, 3, 4)]
        fd, path = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
        try:
            h.save(path)
            back = lc.History.load(path).ops
        finally:
            os.unlink(path)
        self.assertEqual([(o.kind, o.value, o.call, o.ret) for o in back],
                         [(o.kind, o.value, o.call, o.ret) for o in h.ops])


class Pruning(unittest.TestCase):
    def test_unobserved_indeterminate_writes_are_dropped(self):
        ops = [w("a", 0, 1)] + [w("x%d" % i, 2, INF) for i in range(200)] + [r("a", 5, 6)]
        self.assertEqual(len(lc.prune(ops)), 2)

    def test_dropped_write_may_explain_replaced(self):
        # The indeterminate PUT of "x" (never read) may have recreated the file, so the
        # "replaced" answer that follows the delete is fine.
        ops = [w("a", 0, 1), dele(2, 3), w("x", 4, INF), w("b", 5, 6, existed=True),
               r("b", 7, 8)]
        self.assertTrue(verdict(ops))
        self.assertFalse(verdict(ops[:2] + ops[3:]))

    def test_budget_gives_unknown(self):
        # Many mutually concurrent writes that are all observed, with a contradiction at the
        # end: the search must give up within its budget rather than run forever.
        ops = [w("v%d" % i, 0, 100) for i in range(16)]
        ops += [r("v%d" % i, 1 + i, 1.5 + i) for i in range(16)]
        ops += [r("v0", 200, 201)]
        self.assertIn(verdict(ops, max_steps=2000), (None, False))


if __name__ == "__main__":
    unittest.main(verbosity=1)
