"""lossy_proxy.py — a seeded user-space TCP proxy for fault tests (this kernel has no netem).

One proxy stands in front of each node's Raft port: the node binds "raft_listen", peers dial
"raft" = the proxy, which forwards to the node. raftfs nodes send only on the connections they
dial (inbound connections only receive) and the first frame is a HELLO naming the sender, so
the proxy in front of node D sees every directed link S -> D and learns S from that HELLO
(codec.h: 12-byte header u32 len | u8 version | u8 type | u16 flags | u32 crc, then the HELLO
payload str cluster | str name | ...; str = u16 length + bytes). Each directed link (S, D)
can be given a fault, changed at runtime:

  delay_ms, jitter_ms  every chunk is held delay + uniform(0, jitter) ms (order kept)
  rate_bps             forwarded at most this many bytes per second (throttle)
  stall                nothing forwarded while set (bytes buffer up to a cap, then the
                       sender's TCP window closes)
  blackhole            bytes read and discarded (the sender believes they went out); a
                       connection that lost bytes is reset when the fault ends, since its
                       byte stream is no longer whole frames
  reset_mean_s         each connection is reset (RST) after an exponential time with this mean
  refuse               a new connection is reset at once with this probability

Bytes are never altered. Random choices come from one generator per link seeded with
(seed, S, D), drawn in connection order, so a seed replays the same decisions.

Control: newline-delimited JSON on a Unix socket ({"op": "set", "dst", "src", "fault"},
{"op": "clear"[, "dst"][, "src"]}, {"op": "stats"}, {"op": "ping"}); each request gets one
JSON line back. ProxyControl is the client.

  lossy_proxy.py --control SOCK --seed N --proxy NAME=LISTEN_HOST:PORT,UPSTREAM_HOST:PORT ...
"""
import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
import time

HDR = 12
HELLO = 1
HELLO_MAX = HDR + 4 * (2 + 255) + 8  # the largest valid HELLO frame
BUF_CAP = 4 << 20  # bytes buffered per direction before the proxy stops reading
UNKNOWN = "?"  # the source of a connection whose first frame is not a HELLO
FAULT_KEYS = {"delay_ms", "jitter_ms", "rate_bps", "stall", "blackhole", "reset_mean_s",
              "refuse"}


def parse_hello(buf):
    """(sender name, frame length) from the bytes of a HELLO frame, (None, n) when buf holds
    another frame, (None, 0) while incomplete."""
    if len(buf) < HDR:
        return None, 0
    length, _version, ftype = struct.unpack(">IBB", buf[:6])
    if ftype != HELLO or HDR + length > HELLO_MAX:
        return UNKNOWN, len(buf)
    if len(buf) < HDR + length:
        return None, 0
    p = buf[HDR:HDR + length]
    try:
        (clen,) = struct.unpack(">H", p[:2])
        (nlen,) = struct.unpack(">H", p[2 + clen:4 + clen])
        name = p[4 + clen:4 + clen + nlen].decode()
    except (struct.error, UnicodeDecodeError):
        return UNKNOWN, HDR + length
    return (name if name else UNKNOWN), HDR + length


def rst_close(writer):
    """Closes with RST rather than FIN: what a peer sees when a link resets."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.close()


async def quiet(coro):
    """Runs coro; a connection error just ends it (the caller closes both sides)."""
    try:
        await coro
    except (OSError, EOFError):
        pass


class Link:
    """One directed link src -> dst: its fault, seeded generator and counters."""

    def __init__(self, seed, src, dst):
        self.rng = random.Random("%s:%s:%s" % (seed, src, dst))
        self.fault = {}
        self.changed = asyncio.Event()  # set (and replaced) whenever the fault changes
        self.conns = set()
        self.stats = {"conns": 0, "refused": 0, "resets": 0, "bytes": 0, "discarded": 0,
                      "chunks": 0, "delayed_ms": 0.0}

    def set_fault(self, fault):
        old = self.fault
        self.fault = dict(fault)
        ev, self.changed = self.changed, asyncio.Event()
        ev.set()
        if old.get("blackhole") and not self.fault.get("blackhole"):
            for c in list(self.conns):
                if c.tainted:
                    c.reset("black hole ended")
        for c in list(self.conns):
            c.plan_reset()


class Conn:
    """One proxied connection on a link. Only src -> dst carries faults."""

    def __init__(self, proxy, link, creader, cwriter, first):
        self.proxy, self.link = proxy, link
        self.creader, self.cwriter = creader, cwriter
        self.first = first
        self.uwriter = None
        self.tainted = False
        self.closed = False
        self.tasks = []
        self.reset_timer = None
        self.queue = []  # (release time, bytes) waiting to be written upstream
        self.queued = 0
        self.more = asyncio.Event()
        self.room = asyncio.Event()
        self.last_release = 0.0

    def reset(self, why):
        if self.closed:
            return
        self.closed = True
        self.link.stats["resets"] += 1
        for w in (self.cwriter, self.uwriter):
            if w is not None:
                rst_close(w)
        for t in self.tasks:
            t.cancel()
        self.finish()

    def finish(self):
        self.closed = True
        if self.reset_timer:
            self.reset_timer.cancel()
        self.link.conns.discard(self)

    def plan_reset(self):
        """(Re)draws this connection's reset time from the link's generator."""
        if self.reset_timer:
            self.reset_timer.cancel()
            self.reset_timer = None
        mean = self.link.fault.get("reset_mean_s")
        if mean and not self.closed:
            after = self.link.rng.expovariate(1.0 / mean)
            self.reset_timer = asyncio.get_running_loop().call_later(
                after, self.reset, "lossy link")

    async def run(self):
        link = self.link
        if link.fault.get("blackhole"):
            # Never reaches the node; whatever is sent is lost until the fault ends.
            self.tainted = True
            link.stats["discarded"] += len(self.first)
            self.tasks = [asyncio.current_task()]
            await self.discard_until_close()
            return
        try:
            ureader, self.uwriter = await asyncio.open_connection(*self.proxy.upstream)
        except OSError:
            rst_close(self.cwriter)  # the node is down: the dialer sees a reset
            self.finish()
            return
        if self.closed:
            rst_close(self.uwriter)
            return
        self.push(self.first)
        up = asyncio.ensure_future(quiet(self.pump_up()))
        out = asyncio.ensure_future(quiet(self.write_up()))
        down = asyncio.ensure_future(quiet(self.pump_down(ureader)))
        self.tasks = [up, out, down]
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        if self.closed:
            return
        if up.done() and not down.done() and not out.done():
            # The sender closed: deliver what is queued (bounded), then close.
            try:
                await asyncio.wait_for(asyncio.shield(out), 5.0)
            except asyncio.TimeoutError:
                pass
        for t in self.tasks:
            t.cancel()
        for w in (self.cwriter, self.uwriter):
            w.close()
        self.finish()

    async def discard_until_close(self):
        try:
            while True:
                data = await self.creader.read(65536)
                if not data:
                    break
                self.link.stats["discarded"] += len(data)
        except (OSError, asyncio.CancelledError):
            pass
        if not self.closed:
            self.cwriter.close()
            self.finish()

    def push(self, data):
        f = self.link.fault
        now = time.monotonic()
        delay = f.get("delay_ms", 0) + (self.link.rng.uniform(0, f["jitter_ms"])
                                        if f.get("jitter_ms") else 0)
        release = max(self.last_release, now + delay / 1000.0)
        self.last_release = release
        self.link.stats["delayed_ms"] += (release - now) * 1000.0
        self.queue.append((release, data))
        self.queued += len(data)
        self.more.set()

    async def pump_up(self):
        """src -> proxy: reads, discards (black hole) or queues with a release time."""
        while True:
            while self.queued > BUF_CAP:
                self.room.clear()
                await self.room.wait()
            data = await self.creader.read(65536)
            if not data:
                return
            if self.link.fault.get("blackhole"):
                self.tainted = True
                self.link.stats["discarded"] += len(data)
                continue
            self.push(data)

    async def write_up(self):
        """proxy -> dst: waits for each chunk's release time, stalls, throttles."""
        link = self.link
        while True:
            if not self.queue:
                if self.creader.at_eof():
                    return
                self.more.clear()
                await self.more.wait()
                continue
            release, data = self.queue[0]
            wait = release - time.monotonic()
            if link.fault.get("stall") or wait > 0:
                changed = link.changed
                try:
                    await asyncio.wait_for(changed.wait(), None if link.fault.get("stall")
                                           else wait)
                except asyncio.TimeoutError:
                    pass
                continue
            rate = link.fault.get("rate_bps")
            if rate:
                piece = max(1, int(rate / 20))
                data, rest = data[:piece], data[piece:]
                if rest:
                    self.queue[0] = (release, rest)
                else:
                    self.queue.pop(0)
            else:
                self.queue.pop(0)
            self.queued -= len(data)
            self.room.set()
            self.uwriter.write(data)
            await self.uwriter.drain()
            link.stats["bytes"] += len(data)
            link.stats["chunks"] += 1
            if rate:
                await asyncio.sleep(len(data) / float(rate))

    async def pump_down(self, ureader):
        """dst -> src: untouched (raftfs nodes send nothing on inbound connections)."""
        while True:
            data = await ureader.read(65536)
            if not data:
                return
            self.cwriter.write(data)
            await self.cwriter.drain()


class Proxy:
    """Listens for one destination node and forwards to its real Raft port."""

    def __init__(self, name, listen, upstream, seed, links):
        self.name, self.listen, self.upstream = name, listen, upstream
        self.seed, self.links = seed, links
        self.server = None

    def link(self, src):
        key = (src, self.name)
        if key not in self.links:
            self.links[key] = Link(self.seed, src, self.name)
            wild = self.links.get(("*", self.name))
            if wild is not None and wild.fault:
                self.links[key].fault = dict(wild.fault)
        return self.links[key]

    async def start(self):
        self.server = await asyncio.start_server(self.accept, *self.listen)

    async def accept(self, creader, cwriter):
        buf = b""
        try:
            while True:
                src, n = parse_hello(buf)
                if src is not None:
                    break
                data = await asyncio.wait_for(creader.read(HELLO_MAX - len(buf)), 10.0)
                if not data:
                    cwriter.close()
                    return
                buf += data
        except (asyncio.TimeoutError, OSError):
            cwriter.close()
            return
        link = self.link(src)
        link.stats["conns"] += 1
        refuse = link.fault.get("refuse", 0)
        # Always draw, so a link's later decisions do not depend on whether refuse was set.
        if link.rng.random() < refuse:
            link.stats["refused"] += 1
            rst_close(cwriter)
            return
        conn = Conn(self, link, creader, cwriter, buf)
        link.conns.add(conn)
        conn.plan_reset()
        try:
            await conn.run()
        except (OSError, asyncio.CancelledError):
            conn.reset("error")


class Controller:
    def __init__(self, proxies, links):
        self.proxies = {p.name: p for p in proxies}
        self.links = links

    def handle(self, req):
        op = req.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "set":
            dst, src, fault = req["dst"], req.get("src", "*"), req.get("fault", {})
            bad = set(fault) - FAULT_KEYS
            if dst not in self.proxies or bad:
                return {"ok": False, "error": "unknown dst or fault keys %s" % sorted(bad)}
            p = self.proxies[dst]
            targets = [p.link(src)] if src != "*" else (
                [p.link("*")] + [lk for (s, d), lk in self.links.items() if d == dst])
            for lk in targets:
                lk.set_fault(fault)
            return {"ok": True}
        if op == "clear":
            for (s, d), lk in self.links.items():
                if req.get("dst") in (None, d) and req.get("src") in (None, s) and lk.fault:
                    lk.set_fault({})
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "links": {"%s>%s" % k: dict(lk.stats, fault=lk.fault)
                                          for k, lk in self.links.items()}}
        return {"ok": False, "error": "unknown op %r" % op}

    async def serve(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    resp = self.handle(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    resp = {"ok": False, "error": str(e)}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        writer.close()


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def amain(args):
    links = {}
    proxies = []
    for spec in args.proxy:
        name, addrs = spec.split("=", 1)
        listen, upstream = addrs.split(",")
        proxies.append(Proxy(name, parse_addr(listen), parse_addr(upstream), args.seed, links))
    for p in proxies:
        await p.start()
    ctl = Controller(proxies, links)
    tmp = args.control + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    server = await asyncio.start_unix_server(ctl.serve, path=tmp)
    os.rename(tmp, args.control)  # appears only once every listener is bound
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    if args.parent:
        async def watch_parent():
            while os.getppid() == args.parent:
                await asyncio.sleep(0.5)
            stop.set()
        asyncio.ensure_future(watch_parent())
    await stop.wait()
    server.close()
    for p in proxies:
        p.server.close()


class ProxyControl:
    """Client of a proxy process's control socket."""

    def __init__(self, path, timeout=5.0):
        self.path, self.timeout = path, timeout
        self.sock = None
        self.buf = b""

    def call(self, **req):
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(self.path)
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise OSError("proxy control closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        resp = json.loads(line)
        if not resp.get("ok"):
            raise ValueError("proxy: %s" % resp.get("error"))
        return resp

    def set(self, dst, src, **fault):
        return self.call(op="set", dst=dst, src=src, fault=fault)

    def clear(self, dst=None, src=None):
        req = {"op": "clear"}
        if dst:
            req["dst"] = dst
        if src:
            req["src"] = src
        return self.call(**req)

    def stats(self):
        return self.call(op="stats")["links"]

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def spawn(control, seed, specs, prefix=(), log=None, timeout=10.0):
    """Starts a proxy process (specs: [(name, listen "h:p", upstream "h:p")]); prefix: e.g.
    ["ip", "netns", "exec", NS]. Returns (Popen, ProxyControl) once it answers. The process
    dies with its parent (PR_SET_PDEATHSIG and --parent)."""
    import ctypes
    import subprocess

    def pdeath():
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    args = list(prefix) + [sys.executable, os.path.abspath(__file__), "--control", control,
                           "--seed", str(seed), "--parent", str(os.getpid())]
    for name, listen, upstream in specs:
        args += ["--proxy", "%s=%s,%s" % (name, listen, upstream)]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log or subprocess.DEVNULL,
                         stderr=log or subprocess.DEVNULL, preexec_fn=pdeath)
    end = time.monotonic() + timeout
    while True:
        if p.poll() is not None:
            raise RuntimeError("lossy_proxy exited %s" % p.returncode)
        if os.path.exists(control):
            try:
                ctl = ProxyControl(control)
                ctl.call(op="ping")
                return p, ctl
            except OSError:
                pass
        if time.monotonic() > end:
            p.kill()
            raise RuntimeError("lossy_proxy did not start within %.0f s" % timeout)
        time.sleep(0.02)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--control", required=True, help="Unix socket path for control")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proxy", action="append", required=True,
                    help="NAME=LISTEN_HOST:PORT,UPSTREAM_HOST:PORT (repeatable)")
    ap.add_argument("--parent", type=int, default=0, help="exit when this pid is gone")
    args = ap.parse_args(argv[1:])
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
