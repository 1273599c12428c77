#!/usr/bin/env python3
"""fake_raftnode.py — a stand-in for raftnode that tests raftsup's process handling alone:
same command line, GET /v1/status, POST /v1/cluster/join, PUT/GET /v1/files/PATH, cluster
state in a shared file under data_dir; a member takes over when the leader's pid is dead, a
PUT is copied to every live member, a restarted member copies the leader's files. Records each start in DATA/ID/starts.log ("pid bootstrap"). Knobs (files):
DATA/ID/crash (exit 3 at once), DATA/ID/ignore_term (survive SIGTERM). Never a real Raft."""
import argparse
import fcntl
import json
import os
import shutil
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--bootstrap", action="store_true")
    a = ap.parse_args()
    with open(a.config) as f:
        conf = json.load(f)
    data = conf["data_dir"]
    me = next(n for n in conf["nodes"] if n["id"] == a.id)
    home = os.path.join(data, a.id)
    raft = os.path.join(home, "raft")
    os.makedirs(raft, exist_ok=True)
    open(os.path.join(raft, "env"), "a").close()  # like BDB: the store exists before any state
    with open(os.path.join(home, "starts.log"), "a") as f:
        f.write("%d %d\n" % (os.getpid(), int(a.bootstrap)))
    if os.path.exists(os.path.join(home, "crash")):
        print("fake %s: crashing on purpose" % a.id, file=sys.stderr, flush=True)
        sys.exit(3)
    shared = os.path.join(data, "fake_cluster.json")

    def update(fn):
        with open(shared + ".lock", "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                with open(shared) as f:
                    st = json.load(f)
            except (OSError, ValueError):
                st = {"leader": None, "members": []}
            st = fn(st)
            with open(shared + ".tmp", "w") as f:
                json.dump(st, f)
            os.replace(shared + ".tmp", shared)
            return st

    def alive(nid):
        try:
            with open(os.path.join(data, nid, "node.pid")) as f:
                pid = int(f.read())
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, ValueError, IndexError):
            return False

    def take_over(st):
        ids = [m["id"] for m in st["members"]]
        if a.id in ids and st["leader"] != a.id and not (st["leader"] and alive(st["leader"])):
            st["leader"] = a.id
            st["term"] = st.get("term", 1) + 1
        return st

    def files_of(nid):
        return os.path.join(data, nid, "files")

    state = os.path.join(raft, "state")
    if a.bootstrap and not os.path.exists(state):
        with open(os.path.join(raft, "state"), "w") as f:
            f.write("bootstrapped\n")
        update(lambda st: {"leader": a.id, "members": [dict(me, voter=True)]})

    st0 = update(lambda st: st)
    if st0["leader"] and st0["leader"] != a.id and os.path.exists(state) and \
            os.path.isdir(files_of(st0["leader"])):
        shutil.copytree(files_of(st0["leader"]), files_of(a.id), dirs_exist_ok=True)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/v1/files/"):
                try:
                    with open(os.path.join(files_of(a.id), self.path[10:].split("?")[0]), "rb") as f:
                        body = f.read()
                except OSError:
                    return self.reply(404, {"error": "no", "code": "not_found"})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return self.wfile.write(body)
            if self.path != "/v1/status":
                return self.reply(404, {"error": "no", "code": "not_found"})
            st = update(take_over)
            lead = next((m for m in st["members"] if m["id"] == st["leader"]), None)
            has_log = os.path.exists(state)
            self.reply(200, {"id": a.id, "state": "leader" if st["leader"] == a.id else "follower",
                             "term": st.get("term", 1), "leader": lead and {"id": lead["id"], "http": lead["http"]},
                             "commit_index": int(has_log), "applied_index": int(has_log),
                             "last_log_index": int(has_log),
                             "members": st["members"] if has_log else []})

        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            st = update(take_over)
            if not (st["leader"] and alive(st["leader"])):
                return self.reply(503, {"error": "no leader", "code": "no_leader"})
            path = self.path[10:]
            for m in st["members"]:
                if alive(m["id"]) or m["id"] == a.id:
                    dst = os.path.join(files_of(m["id"]), path)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    with open(dst, "wb") as f:
                        f.write(body)
            self.reply(201, {"path": path, "size": len(body)})

        def do_POST(self):
            n = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result = {}

            def join(st):
                if any(m["id"] == n["id"] for m in st["members"]):
                    result["code"] = 409
                else:
                    st["members"].append(dict(n, voter=True))
                    os.makedirs(os.path.join(data, n["id"], "raft"), exist_ok=True)
                    with open(os.path.join(data, n["id"], "raft", "state"), "w") as f:
                        f.write("joined\n")
                    with open(os.path.join(data, "joins.log"), "a") as f:
                        f.write(n["id"] + "\n")
                    result["code"] = 200
                return st
            update(join)
            self.reply(result["code"], {"id": n["id"]} if result["code"] == 200 else
                       {"error": "exists", "code": "exists"})

    host, port = me["http"].rsplit(":", 1)
    srv = HTTPServer((host, int(port)), H)

    def on_term(signum, frame):
        if os.path.exists(os.path.join(home, "ignore_term")):
            print("fake %s: ignoring SIGTERM" % a.id, file=sys.stderr, flush=True)
            return
        print("fake %s: stopping" % a.id, file=sys.stderr, flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("fake %s: serving on %s" % (a.id, me["http"]), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
