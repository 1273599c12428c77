#!/usr/bin/env bash
# run_bench.sh BUILD_DIR — the standard benchmark set (./run.sh bench): a 3-node cluster under
# raftsup in a temp dir on its own ports; raftbench with 1 and 64 connections, 1 KiB and
# 64 KiB files, overwrites and new paths, a GET mix and all-node load; resident memory per
# node idle and after the load. Numbers go to stdout (and into README by hand).
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
DUR=${DUR:-10}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/raftfs-bench-XXXX")
SUP=
cleanup() {
    if [ -n "$SUP" ]; then
        kill -TERM "$SUP" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SUP" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
read -r P1 P2 P3 H1 H2 H3 < <(python3 -c '
import socket
s=[socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')
cat > "$WORK/cluster.json" <<JSON
{"cluster": "bench", "data_dir": "$WORK/data", "nodes": [
  {"id": "node1", "raft": "127.0.0.1:$P1", "http": "127.0.0.1:$H1"},
  {"id": "node2", "raft": "127.0.0.1:$P2", "http": "127.0.0.1:$H2"},
  {"id": "node3", "raft": "127.0.0.1:$P3", "http": "127.0.0.1:$H3"}]}
JSON
"$BUILD/raftsup" "$WORK/cluster.json" >"$WORK/raftsup.out" 2>&1 &
SUP=$!
"$BUILD/raftctl" --config "$WORK/cluster.json" wait-leader --timeout 20 >/dev/null
voters() { curl -s "http://127.0.0.1:$H1/v1/status" | python3 -c 'import json,sys; print(sum(m["voter"] for m in json.load(sys.stdin)["members"]))'; }
for _ in $(seq 1 200); do [ "$(voters 2>/dev/null)" = 3 ] && break; sleep 0.1; done
leader=$(curl -s "http://127.0.0.1:$H1/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["http"])')
rss() { for n in node1 node2 node3; do printf '%s %s KiB  ' "$n" "$(awk '/VmRSS/{print $2}' /proc/"$(cat "$WORK/data/$n/node.pid")"/status)"; done; echo; }
echo "resident memory, idle:        $(rss)"
B="$BUILD/tests/bench/raftbench --fsync-dir $WORK -d $DUR"
# Warm-up: the overwrite cases reuse 1,024 paths; create them first so those cases measure
# overwrites (TESTBED.md: creating an inode costs ~50x a rename here).
$BUILD/tests/bench/raftbench --fsync-dir "$WORK" -d 3 --server "$leader" -c 64 -s 1024 >/dev/null
echo "== leader $leader, ${DUR}s per case"
$B --server "$leader" -c 1 -s 1024
$B --server "$leader" -c 64 -s 1024
$B --server "$leader" -c 1 -s 65536
$B --server "$leader" -c 64 -s 65536
echo "resident memory, after load:  $(rss)"
$B --server "$leader" -c 64 -s 1024 --paths 0
$B --server "$leader" -c 64 -s 1024 --get 90
$B --server "127.0.0.1:$H1,127.0.0.1:$H2,127.0.0.1:$H3" -c 64 -s 1024
echo "resident memory, at the end:  $(rss)"
