"""lincheck.py — records client operations on files and checks that each file's history is
linearizable as a read/write register (Wing & Gong's search with Lowe's memoization, as
Knossos and Porcupine do). Never talks to a node itself: callers record, this module judges.

A file is a register whose state is its bytes, or ABSENT (None) when it does not exist;
PUT is a write, DELETE is a write of ABSENT, a DELETE answered 404 is a read of ABSENT.
An indeterminate write (timeout, 5xx, connection error) may or may not have taken effect:
it is given an infinite completion time, so it may be linearized anywhere after its
invocation (placing it last is always possible, which is what "never took effect" means).
Failed reads are dropped: they observed nothing.

Usage as a tool: python3 lincheck.py HISTORY.jsonl   (a history saved by History.save)
"""
import json
import math
import sys
import threading
import time

ABSENT = None
INF = math.inf

# Op kinds.
READ = "read"
WRITE = "write"

# Outcomes of a recorded operation.
OK = "ok"  # completed; for a read, `value` is what it saw
FAIL = "fail"  # definitely did not happen (a write refused with 4xx, a failed read)
INFO = "info"  # indeterminate: may or may not have happened


class Op:
    """One operation on one key. call/ret are times (ret INF when indeterminate)."""

    __slots__ = ("id", "key", "kind", "value", "call", "ret", "client", "note", "existed")

    def __init__(self, key, kind, value, call, ret, client=None, note="", existed=None):
        self.id = -1
        self.key = key
        self.kind = kind
        self.value = value
        self.call = call
        self.ret = ret
        self.client = client
        self.note = note
        # For a completed write: did the file exist just before it (PUT 200 / DELETE 204:
        # True, PUT 201: False)? None when unknown. Checked by the model.
        self.existed = existed

    def __repr__(self):
        ret = "inf" if self.ret == INF else "%.4f" % self.ret
        return "%s(%s=%s)[%.4f..%s]%s%s" % (
            self.kind, self.key, _show(self.value), self.call, ret,
            " c%s" % self.client if self.client is not None else "",
            " " + self.note if self.note else "")


def _show(v):
    if v is ABSENT:
        return "ABSENT"
    s = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return s if len(s) <= 24 else s[:21] + "..."


class History:
    """Thread-safe recorder. invoke() before sending, then exactly one of ok()/fail()/info()."""

    def __init__(self, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._pending = {}
        self._next = 0
        self.ops = []  # completed or indeterminate Ops, in completion order

    def invoke(self, key, kind, value=ABSENT, client=None):
        with self._lock:
            h = self._next
            self._next += 1
            self._pending[h] = Op(key, kind, value, self._clock(), INF, client)
            return h

    def ok(self, h, value=ABSENT, note="", as_read=False, existed=None):
        """Completed. For a read, value is what was read (ABSENT for 404). as_read: the
        write turned out to be an observation (a DELETE answered 404 read ABSENT).
        existed: for a write, whether the answer says the file existed before it."""
        with self._lock:
            op = self._pending.pop(h)
            op.ret = self._clock()
            op.existed = existed
            if as_read:
                op.kind = READ
            if op.kind == READ:
                op.value = value
            op.note = note
            self.ops.append(op)

    def fail(self, h):
        """Definitely without effect (or a read that observed nothing): dropped."""
        with self._lock:
            self._pending.pop(h)

    def info(self, h, note=""):
        """Outcome unknown. A read is dropped; a write stays with an infinite completion."""
        with self._lock:
            op = self._pending.pop(h)
            if op.kind == WRITE:
                op.note = note
                self.ops.append(op)

    def close(self):
        """Operations still pending (a client thread that never returned) are indeterminate."""
        with self._lock:
            for h in sorted(self._pending):
                op = self._pending[h]
                if op.kind == WRITE:
                    op.note = "never returned"
                    self.ops.append(op)
            self._pending.clear()

    def by_key(self):
        out = {}
        for op in self.ops:
            out.setdefault(op.key, []).append(op)
        return out

    def save(self, path):
        with open(path, "w") as f:
            for op in self.ops:
                f.write(json.dumps(_op_to_json(op)) + "\n")

    @staticmethod
    def load(path):
        h = History()
        with open(path) as f:
            for line in f:
                if line.strip():
                    h.ops.append(_op_from_json(json.loads(line)))
        return h


def _op_to_json(op):
    v = op.value
    return {"key": op.key, "kind": op.kind,
            "value": None if v is ABSENT else (v.decode("latin-1") if isinstance(v, bytes) else v),
            "call": op.call, "ret": None if op.ret == INF else op.ret,
            "client": op.client, "note": op.note, "existed": op.existed}


def _op_from_json(d):
    v = d["value"]
    return Op(d["key"], d["kind"], None if v is None else v.encode("latin-1"), d["call"],
              INF if d["ret"] is None else d["ret"], d.get("client"), d.get("note", ""),
              d.get("existed"))


class Result:
    """ok is True (linearizable), False (not), or None (search budget exhausted)."""

    def __init__(self, key, ok, ops, message="", steps=0):
        self.key = key
        self.ok = ok
        self.ops = ops
        self.message = message
        self.steps = steps

    def __repr__(self):
        return "Result(%r, %r, %s)" % (self.key, self.ok, self.message)


class _Entry:
    """A node of the doubly linked list of call/return events."""

    __slots__ = ("op", "is_call", "match", "prev", "next")

    def __init__(self, op, is_call):
        self.op = op
        self.is_call = is_call
        self.match = None
        self.prev = None
        self.next = None


def _build_entries(ops):
    """The event list: calls and returns by time; on equal times calls come first, so
    operations that touch at an instant count as concurrent (never a false alarm)."""
    events = []
    for op in ops:
        events.append((op.call, 0, op.id, op, True))
        events.append((op.ret, 1, op.id, op, False))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, False)  # sentinel
    prev = head
    calls = {}
    for _, _, _, op, is_call in events:
        e = _Entry(op, is_call)
        if is_call:
            calls[op.id] = e
        else:
            calls[op.id].match = e
            e.match = calls[op.id]
        prev.next = e
        e.prev = prev
        prev = e
    return head


def _lift(e):
    """Removes a call entry and its return from the list (the op is linearized)."""
    e.prev.next = e.next
    if e.next:
        e.next.prev = e.prev
    m = e.match
    m.prev.next = m.next
    if m.next:
        m.next.prev = m.prev


def _unlift(e):
    m = e.match
    m.prev.next = m
    if m.next:
        m.next.prev = m
    e.prev.next = e
    if e.next:
        e.next.prev = e


def _step(state, op):
    """The register model: (ok, new state)."""
    if op.kind == WRITE:
        if op.existed is not None and op.existed != (state is not ABSENT):
            return False, state
        return True, op.value
    return op.value == state, state


def prune(ops):
    """Drops indeterminate writes whose value no read observed: each can always be
    linearized last, so it cannot make a read possible or impossible. It could still have
    made the file exist just before a write answered "replaced" (existed=True), so from
    the first dropped write's invocation on, existed=True claims are no longer checked
    (existed=False claims stay: a dropped write can only contradict them). Keeps the
    search small under faults."""
    seen = {op.value for op in ops if op.kind == READ}
    dropped = [op for op in ops if op.kind == WRITE and op.ret == INF and op.value not in seen]
    if not dropped:
        return list(ops)
    gone = {id(op) for op in dropped}
    first = min(op.call for op in dropped)
    out = []
    for op in ops:
        if id(op) in gone:
            continue
        if op.existed is True and op.ret > first:
            op = _copy(op)
            op.existed = None
        out.append(op)
    return out


def _copy(op):
    c = Op(op.key, op.kind, op.value, op.call, op.ret, op.client, op.note, op.existed)
    c.id = op.id
    return c


def check_ops(ops, key=None, initial=ABSENT, max_steps=2_000_000):
    """Checks one key's operations. Returns a Result."""
    ops = sorted(prune(ops), key=lambda o: (o.call, o.ret))
    for i, op in enumerate(ops):
        op.id = i
    written = {op.value for op in ops if op.kind == WRITE} | {initial}
    for op in ops:
        if op.kind == READ and op.value not in written:
            return Result(key, False, ops, "read of a value never written: %r" % (op,))
    head = _build_entries(ops)
    state, linearized, stack, cache, steps = initial, 0, [], set(), 0
    best = (0, [])
    e = head.next
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            return Result(key, None, ops, "search budget of %d steps exhausted" % max_steps, steps)
        if e.is_call:
            ok, new_state = _step(state, e.op)
            if ok:
                bit = linearized | (1 << e.op.id)
                if (bit, new_state) not in cache:
                    cache.add((bit, new_state))
                    stack.append((e, state))
                    state, linearized = new_state, bit
                    _lift(e)
                    if len(stack) > best[0]:
                        best = (len(stack), [s[0].op for s in stack])
                    e = head.next
                    continue
            e = e.next
        else:
            if not stack:
                return Result(key, False, ops, _explain(ops, best[1], initial), steps)
            e, state = stack.pop()
            linearized &= ~(1 << e.op.id)
            _unlift(e)
            e = e.next
    return Result(key, True, ops, "", steps)


def _explain(ops, best, initial):
    """Describes where the longest linearization found got stuck."""
    done = {op.id for op in best}
    rest = [op for op in ops if op.id not in done]
    stuck = min(rest, key=lambda o: o.ret) if rest else None
    state = initial
    for op in reversed(best):
        if op.kind == WRITE:
            state = op.value
            break
    lines = ["not linearizable: longest linearization covers %d of %d ops" % (len(best), len(ops))]
    lines.append("  register then holds %s" % _show(state))
    if stuck is not None:
        lines.append("  cannot place: %r" % (stuck,))
        lo, hi = stuck.call - 1.0, min(stuck.ret, stuck.call + 1.0) + 0.2
        near = [op for op in ops if op.ret >= lo and op.call <= hi]
        near = sorted(sorted(near, key=lambda o: abs(o.call - stuck.call))[:30],
                      key=lambda o: o.call)
        lines.append("  ops overlapping [%.3f, %.3f]:" % (lo, hi))
        lines += ["    %s%r%s" % ("* " if op.id in done else "  ", op,
                                 "" if op.existed is None else " existed=%s" % op.existed)
                  for op in near]
        lines.append("  (* = placed in that linearization)")
    return "\n".join(lines)


def check_history(history, initial=ABSENT, max_steps=2_000_000):
    """Checks every key of a History (or a list of Ops); returns {key: Result}."""
    ops = history.ops if isinstance(history, History) else history
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return {k: check_ops(v, k, initial, max_steps) for k, v in sorted(by_key.items())}


def main(argv):
    if len(argv) != 2:
        print("usage: lincheck.py HISTORY.jsonl", file=sys.stderr)
        return 2
    results = check_history(History.load(argv[1]))
    bad = 0
    for k, r in results.items():
        verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown"}[r.ok]
        print("%s: %d ops, %s (%d steps)" % (k, len(r.ops), verdict, r.steps))
        if r.ok is not True:
            bad += 1
            print(r.message)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
