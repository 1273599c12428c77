"""test_proxy.py — unit tests of lossy_proxy.py against a fake node on loopback: bytes pass
unchanged, delays are applied per directed link, a one-way black hole blocks only its own
direction, stalls hold and release in order, throttling bounds the rate, resets and refusals
follow the seed. Exit 0 pass, 1 fail."""
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import harness  # noqa: E402
import lossy_proxy as lp  # noqa: E402


def hello(name, cluster="t"):
    def s(x):
        return struct.pack(">H", len(x)) + x.encode()
    payload = s(cluster) + s(name) + struct.pack(">Q", 7) + s("127.0.0.1:1")
    return struct.pack(">IBBHI", len(payload), 1, lp.HELLO, 0, zlib.crc32(payload)) + payload


class Sink:
    """A fake node: accepts connections and records (arrival time, bytes) per connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []  # lists of (time, bytes)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = []
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self.read_loop, args=(c, rec), daemon=True).start()

    def read_loop(self, c, rec):
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            if not d:
                c.close()
                return
            with self.lock:
                rec.append((time.monotonic(), d))

    def received(self):
        with self.lock:
            return b"".join(b"".join(d for _, d in rec) for rec in self.conns)

    def first_time(self, marker):
        """Arrival time of the chunk that completed marker (None if not yet there)."""
        with self.lock:
            for rec in self.conns:
                acc = b""
                for t, d in rec:
                    acc += d
                    if marker in acc:
                        return t
        return None


class Env:
    def __init__(self, seed=1, names=("D", "A")):
        self.dir = tempfile.mkdtemp(prefix="raftfs-proxy-")
        self.sinks = {n: Sink() for n in names}
        ports = harness.free_ports(len(names))
        self.listen = {n: "127.0.0.1:%d" % p for n, p in zip(names, ports)}
        specs = [(n, self.listen[n], self.sinks[n].addr) for n in names]
        self.proc, self.ctl = lp.spawn(os.path.join(self.dir, "ctl"), seed, specs)

    def dial(self, dst, src):
        host, port = self.listen[dst].rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(hello(src))
        return s

    def close(self):
        self.ctl.close()
        self.proc.kill()
        self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    cleanup = close  # what harness.run's track() calls


def wait_for(pred, timeout, what):
    return harness.wait_until(pred, timeout, what, interval=0.005)


def expect_absent(sink, marker, seconds):
    """marker must not arrive within seconds (absence needs a bounded wait)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert marker not in sink.received(), "%r arrived but should not have" % marker
        time.sleep(0.02)


def t_passthrough(env):
    s = env.dial("D", "A")
    data = bytes(random.Random(3).getrandbits(8) for _ in range(300000))
    s.sendall(data)
    wait_for(lambda: len(env.sinks["D"].received()) >= len(hello("A")) + len(data), 10, "bytes")
    assert env.sinks["D"].received() == hello("A") + data, "bytes changed in transit"
    st = env.ctl.stats()
    assert st["A>D"]["bytes"] == len(hello("A")) + len(data), st
    s.close()


def t_delay_per_link(env):
    env.ctl.set("D", "A", delay_ms=600, jitter_ms=100)
    a, b = env.dial("D", "A"), env.dial("D", "B")
    t0 = time.monotonic()
    a.sendall(b"from-A")
    b.sendall(b"from-B")
    sink = env.sinks["D"]
    wait_for(lambda: sink.first_time(b"from-A"), 5, "delayed bytes")
    da, db = sink.first_time(b"from-A") - t0, sink.first_time(b"from-B") - t0
    assert 0.59 <= da <= 2.0, "A->D delay %.3f s, want 0.6-0.7 s" % da
    assert db < 0.45, "B->D is not faulted but took %.3f s" % db
    # Order is kept under jitter.
    for i in range(50):
        a.sendall(b"<%03d>" % i)
    want = b"".join(b"<%03d>" % i for i in range(50))
    wait_for(lambda: want in sink.received(), 10, "ordered chunks")
    a.close()
    b.close()


def t_one_way_blackhole(env):
    """A -> D black-holed: D hears nothing from A, but B -> D and D -> A still flow; when
    the fault ends, A's damaged connection is reset and a new one delivers."""
    env.ctl.set("D", "A", blackhole=True)
    a, b, d = env.dial("D", "A"), env.dial("D", "B"), env.dial("A", "D")
    a.sendall(b"lost-A")
    b.sendall(b"kept-B")
    d.sendall(b"kept-D")
    wait_for(lambda: b"kept-B" in env.sinks["D"].received(), 5, "B->D")
    wait_for(lambda: b"kept-D" in env.sinks["A"].received(), 5, "D->A")
    expect_absent(env.sinks["D"], b"lost-A", 0.5)
    wait_for(lambda: env.ctl.stats()["A>D"]["discarded"] >= 6, 5, "discard count")
    env.ctl.clear()
    a.settimeout(5)
    try:
        got = a.recv(10)
    except ConnectionResetError:
        got = b""
    assert got == b"", "black-holed connection not closed after the fault: %r" % got
    a2 = env.dial("D", "A")
    a2.sendall(b"back-A")
    wait_for(lambda: b"back-A" in env.sinks["D"].received(), 5, "A->D after healing")
    assert b"lost-A" not in env.sinks["D"].received()
    for s in (a2, b, d):
        s.close()


def t_stall(env):
    a = env.dial("D", "A")
    a.sendall(b"before")
    wait_for(lambda: b"before" in env.sinks["D"].received(), 5, "before the stall")
    env.ctl.set("D", "A", stall=True)
    for i in range(20):
        a.sendall(b"[%02d]" % i)
    expect_absent(env.sinks["D"], b"[00]", 0.4)
    env.ctl.clear()
    want = b"before" + b"".join(b"[%02d]" % i for i in range(20))
    wait_for(lambda: want in env.sinks["D"].received(), 5, "stalled bytes after the stall")
    a.close()


def t_throttle(env):
    env.ctl.set("D", "A", rate_bps=100000)
    a = env.dial("D", "A")
    t0 = time.monotonic()
    a.sendall(b"x" * 100000 + b"END")
    wait_for(lambda: b"END" in env.sinks["D"].received(), 10, "throttled bytes")
    took = env.sinks["D"].first_time(b"END") - t0
    assert took >= 0.8, "100 kB at 100 kB/s took only %.2f s" % took
    a.close()


def refusals(seed, n=12):
    """Which of n successive connections A -> D the proxy refuses at refuse=0.5."""
    env = Env(seed)
    try:
        env.ctl.set("D", "A", refuse=0.5)
        pattern = []
        for i in range(n):
            s = env.dial("D", "A")
            st = wait_for(lambda: (env.ctl.stats().get("A>D") or {}).get("conns") == i + 1 and
                          env.ctl.stats()["A>D"], 5, "connection %d seen" % i)
            pattern.append(st["refused"] > sum(pattern))
            s.close()
        return pattern
    finally:
        env.close()


def t_refuse_per_seed(track):  # makes its own Envs
    p1, p1b, p2 = refusals(11, 12), refusals(11, 12), refusals(12, 12)
    assert p1 == p1b, "same seed, different decisions: %r vs %r" % (p1, p1b)
    assert p1 != p2, "different seeds, same decisions: %r" % p1
    assert 0 < sum(p1) < len(p1), p1


def t_reset(env):
    env.ctl.set("D", "A", reset_mean_s=0.2)
    a = env.dial("D", "A")
    a.settimeout(5)
    t0 = time.monotonic()
    try:
        got = a.recv(1)
    except ConnectionResetError:
        got = b""
    assert got == b"" and time.monotonic() - t0 < 4.5, "no reset"
    wait_for(lambda: env.ctl.stats()["A>D"]["resets"] >= 1, 5, "reset counted")


def t_not_hello(env):
    host, port = env.listen["D"].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    junk = b"GET / HTTP/1.0\r\n\r\n"
    s.sendall(junk)
    wait_for(lambda: junk in env.sinks["D"].received(), 5, "junk forwarded")
    assert "?>D" in env.ctl.stats()
    s.close()


def t_bad_control(env):
    for req in ({"op": "nope"}, {"op": "set", "dst": "Z", "src": "A", "fault": {}},
                {"op": "set", "dst": "D", "src": "A", "fault": {"corrupt": 1}}):
        try:
            env.ctl.call(**req)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % req)
    env.ctl.call(op="ping")


TESTS = [t_passthrough, t_delay_per_link, t_one_way_blackhole, t_stall, t_throttle, t_reset,
         t_not_hello, t_bad_control]


def with_env(t):
    """t(env) as a harness.run test: a fresh proxy Env, which the runner closes."""
    def test(track):
        t(track(Env()))
    test.__name__ = t.__name__
    return test


if __name__ == "__main__":
    harness.main([with_env(t) for t in TESTS] + [t_refuse_per_seed], 50)
