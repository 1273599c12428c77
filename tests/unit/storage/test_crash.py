#!/usr/bin/env python3
"""test_crash.py - SIGKILLs crash_writer at random moments inside its write loop (appends,
truncations, compactions with small carried-over deletion chunks, snapshot installs), then checks
that every acknowledged entry above the snapshot point, the snapshot point itself, term and vote
survived and that the log is contiguous after the snapshot (crash_writer verify). Half the kills
also lose every payload byte not yet synced (a power loss: the last batch's headers may then be
durable without their payloads, which the store must cut at open). Bounded: 30 kills, most
10-200 ms after the store opened, some during open and recovery."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

KILLS = 30


def read_lines(pipe, out):
    for line in pipe:
        out.append(line.decode(errors="replace").strip())


def one_run(exe, d, rng):
    lines = []
    p = subprocess.Popen([exe, "run", d, str(rng.randrange(1, 1 << 40))],
                         stdout=subprocess.PIPE)
    t = threading.Thread(target=read_lines, args=(p.stdout, lines), daemon=True)
    t.start()
    if rng.random() < 0.2:
        # Sometimes kill during open/recovery itself: recovery must be restartable.
        time.sleep(rng.uniform(0.0, 0.03))
        p.send_signal(signal.SIGKILL)
        p.wait()
        t.join(5)
        return [l for l in lines if l.startswith(("ACK ", "RESET "))]
    deadline = time.monotonic() + 10
    while not any(l.startswith("READY") for l in lines) and time.monotonic() < deadline:
        if p.poll() is not None:
            break
        time.sleep(0.001)
    if not any(l.startswith("READY") for l in lines):
        p.kill()
        p.wait()
        raise SystemExit(f"FAIL: crash_writer did not start (rc {p.returncode})")
    time.sleep(rng.uniform(0.010, 0.200))  # the random kill moment, not a synchronisation
    early_exit = p.poll()
    p.send_signal(signal.SIGKILL)
    p.wait()
    t.join(5)
    if early_exit is not None:
        raise SystemExit(f"FAIL: crash_writer exited by itself with {early_exit}")
    return [l for l in lines if l.startswith(("ACK ", "RESET "))]


def main():
    exe = sys.argv[1]
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % (1 << 32)))
    rng = random.Random(seed)
    print(f"seed {seed} (CRASH_SEED={seed} replays the kill times)")
    d = tempfile.mkdtemp(prefix="raftfs-crash-")
    last = None
    acks = 0
    try:
        resets = 0
        for i in range(KILLS):
            got = one_run(exe, d, rng)
            resets += sum(1 for l in got if l.startswith("RESET "))
            got = [l for l in got if l.startswith("ACK ")]
            acks += len(got)
            if got:
                last = got[-1].split()
            idx, lterm, hterm, snap = ((last[2], last[3], last[4], last[6]) if last
                                       else ("0", "0", "0", "0"))
            # Half the time a power loss as well: unsynced segment bytes are gone.
            tear = ["tear"] if rng.random() < 0.5 else []
            v = subprocess.run([exe, "verify", d, idx, lterm, hterm, snap] + tear,
                               capture_output=True, text=True, timeout=60)
            print(f"kill {i + 1}: {len(got)} acks, last ack index {idx} term {hterm} "
                  f"snapshot {snap}: {v.stdout.strip()}")
            if v.returncode != 0:
                print(v.stderr)
                print(f"FAIL after kill {i + 1}")
                return 1
        if acks < KILLS // 2:
            print(f"FAIL: only {acks} acknowledged writes in {KILLS} runs")
            return 1
        print(f"ok: {KILLS} kills, {acks} acknowledged writes, {resets} boot-time resets, "
              f"all durable")
        return 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
