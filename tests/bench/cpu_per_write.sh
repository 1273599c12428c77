#!/usr/bin/env bash
# cpu_per_write.sh BUILD_DIR — CPU microseconds per write on each node under compare.sh's wrk
# load (a benchmark, not a test). CPU per write survives a busy machine far better than
# writes/s does, so A/B comparisons of the write path use it. Starts a 3-node cluster under
# raftsup in a temp dir on free ports; for each case runs wrk and reads each raftnode's
# utime+stime from /proc before and after.
# env: CASES ("ow:64")  DUR (8s)  ROUNDS (1)  PERF (unset; a dir: perf record -g the leader and
#      one follower into it during the first round; PERF_OPTS (-g), PERF_SECS (DUR))  KEEP (unset: delete the temp dir)
#   ow:N  N connections overwrite paths made by a warm-up run (pure overwrites, unlike
#         compare.sh's ow case, whose first 2,048 requests create inodes)
#   new:N N connections, a new path every request
#      EXTRA_CONF: more cluster.json members, e.g. '"snapshot_trailing": 16384' 
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-build}" && pwd)
CASES=${CASES:-"ow:64"}; DUR=${DUR:-8s}; ROUNDS=${ROUNDS:-1}
export VALUE_SIZE=${VALUE_SIZE:-1024}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/raftfs-cpu-XXXX")
SUP=
cleanup() {
    if [ -n "$SUP" ]; then
        kill -TERM "$SUP" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SUP" 2>/dev/null || true
    fi
    [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
read -r P1 P2 P3 H1 H2 H3 < <(python3 -c '
import socket
s=[socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')
cat > "$WORK/cluster.json" <<JSON
{"cluster": "cpubench", "data_dir": "$WORK/data", ${EXTRA_CONF:+$EXTRA_CONF,} "nodes": [
  {"id": "node1", "raft": "127.0.0.1:$P1", "http": "127.0.0.1:$H1"},
  {"id": "node2", "raft": "127.0.0.1:$P2", "http": "127.0.0.1:$H2"},
  {"id": "node3", "raft": "127.0.0.1:$P3", "http": "127.0.0.1:$H3"}]}
JSON
(cd "$WORK" && exec setsid "$BUILD/raftsup" "$WORK/cluster.json" >"$WORK/raftsup.out" 2>&1) &
SUP=$!
"$BUILD/raftctl" --config "$WORK/cluster.json" wait-leader --timeout 20 >/dev/null
status() { curl -s -m 2 "http://127.0.0.1:$H1/v1/status"; }
for _ in $(seq 1 200); do
    [ "$(status | python3 -c 'import json,sys; print(sum(m["voter"] for m in json.load(sys.stdin)["members"]))' 2>/dev/null)" = 3 ] && break
    sleep 0.1
done
leader=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["http"])')
lid=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["id"])')
pid_of() { cat "$WORK/data/$1/node.pid"; }
http_of() { python3 -c 'import json,sys; print([x["http"] for x in json.load(open(sys.argv[1]))["nodes"] if x["id"] == sys.argv[2]][0])' "$WORK/cluster.json" "$1"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
order=("$lid"); for n in node1 node2 node3; do [ "$n" = "$lid" ] || order+=("$n"); done

wrk_run() {  # conns paths runid dur -> WRKJSON line
    local t=2; [ "$1" -lt 2 ] && t=1
    PATHS=$2 RUNID=$3 wrk -t"$t" -c"$1" -d"$4" --latency -s "$HERE/put_wrk.lua" "http://$leader" 2>&1 |
        sed -n 's/^WRKJSON //p'
}

one_case() {  # case round
    local mode=${1%%:*} conns=${1##*:} runid paths=0 i
    runid=$(printf '%x%04x' "$(date +%s)" $((RANDOM)))
    if [ "$mode" = ow ]; then
        paths=1024
        wrk_run "$conns" "$paths" "$runid" 4s >/dev/null  # creates the paths (and more)
    fi
    local before=() after=() perfs=()
    for i in 0 1 2; do before[$i]=$(ticks "$(pid_of "${order[$i]}")"); done
    if [ -n "${PERF:-}" ] && [ "$2" = 1 ]; then
        mkdir -p "$PERF"
        for i in 0 1; do
            perf record ${PERF_OPTS:--g} -o "$PERF/${mode}${conns}-${order[$i]}$([ $i = 0 ] && echo -leader).data" \
                -p "$(pid_of "${order[$i]}")" -- sleep "${PERF_SECS:-${DUR%s}}" >/dev/null 2>&1 &
            perfs+=($!)
        done
    fi
    local load line
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    line=$(wrk_run "$conns" "$paths" "$runid" "$DUR")
    for i in 0 1 2; do after[$i]=$(ticks "$(pid_of "${order[$i]}")"); done
    for p in "${perfs[@]}"; do wait "$p" || true; done
    # Outliers are explained by these: snapshot streams to a lagging follower, elections.
    # And slow group-commit fsyncs (> 0.1 s) / file store checkpoints (> 0.25 s) on any node.
    local events="" n slow
    for n in "${order[@]}"; do
        slow=$(curl -s -m 2 "http://$(http_of "$n")/metrics" | awk '
            function le(s) { sub(/.*le="/, "", s); sub(/".*/, "", s); return s }
            /^raftfs_snapshots_sent_total /{s=$2} /^raftfs_leader_changes_total /{l=$2}
            /^raftfs_fsync_seconds_bucket/{ if (le($0) == "0.1") f=$2; if (le($0) == "+Inf") F=$2 }
            /^raftfs_fsm_checkpoint_seconds_bucket/{ if (le($0) == "0.25") c=$2; if (le($0) == "+Inf") C=$2 }
            END{printf "%d/%d/%d/%d", s, l, F-f, C-c}')
        events="$events $n:$slow"
    done
    events="snapshots sent/leader changes/fsyncs>0.1s/checkpoints>0.25s (cumulative):$events"
    python3 - "$1" "$line" "$HZ" "$load" "$events" "${before[@]}" "${after[@]}" <<'PY'
import json, sys
case, d, hz, load, events = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
b, a = list(map(int, sys.argv[6:9])), list(map(int, sys.argv[9:12]))
n = max(d["requests"], 1)
us = [(a[i] - b[i]) / hz * 1e6 / n for i in range(3)]
err = d["err_status"] + d["err_timeout"]
print(f"{case}: {d['rps']:.0f} req/s p50 {d['lat_p50_us']/1e3:.2f} p99 {d['lat_p99_us']/1e3:.2f} "
      f"max {d['lat_max_us']/1e3:.0f} ms; CPU us/write leader {us[0]:.1f} followers "
      f"{us[1]:.1f} {us[2]:.1f} sum {sum(us):.1f}; errors {err}; load {load}; {events}")
PY
}

for r in $(seq 1 "$ROUNDS"); do
    for c in $CASES; do one_case "$c" "$r"; done
done
