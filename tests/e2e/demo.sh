#!/usr/bin/env bash
# demo.sh — the narrated demo behind ./run.sh: start the cluster of conf/cluster.json under
# raftsup, write, read, kill the leader, time the failover, watch the restart and catch-up.
#   tests/e2e/demo.sh start   (re)start the cluster and narrate; leaves it running
#   tests/e2e/demo.sh stop    stop what start started
# Needs only bash, curl and python3 (JSON parsing). Never touches anything but DATA/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD=${RAFTFS_BUILD:-$ROOT/build}
CONFIG=${RAFTFS_CONFIG:-conf/cluster.json}

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' Y=$'\e[33m' R=$'\e[31m' N=$'\e[0m'; else B= G= Y= R= N=; fi
say()  { printf '%s\n' "${B}==> $*${N}"; }
info() { printf '    %s\n' "$*"; }
die()  { printf '%s\n' "${R}demo: $*${N}" >&2; exit 1; }
now_ms() { date +%s%3N; }

# conf_get EXPR — evaluates a python expression over the config (`c`).
conf_get() { python3 -c 'import json,sys
try:
    c = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))
except Exception as e:
    sys.exit("demo: cannot read %s: %s" % (sys.argv[1], e))' "$CONFIG" "$1"; }
DATA=$(conf_get 'c["data_dir"]') || exit 2
mapfile -t IDS < <(conf_get '"\n".join(n["id"] for n in c["nodes"])')
mapfile -t HTTPS < <(conf_get '"\n".join(n["http"] for n in c["nodes"])')
mapfile -t RAFTS < <(conf_get '"\n".join(n["raft"] for n in c["nodes"])')

http_of() { local i; for i in "${!IDS[@]}"; do [ "${IDS[$i]}" = "$1" ] && echo "${HTTPS[$i]}"; done; }
pid_of() { cat "$DATA/$1/node.pid" 2>/dev/null || true; }
# json FIELD-EXPR — reads JSON from stdin, prints eval'd expression over `j` ('' on error).
json() { python3 -c 'import json,sys
try:
    j=json.load(sys.stdin); v=eval(sys.argv[1]); print("" if v is None else v)
except Exception: print("")' "$1"; }
status() { curl -s --max-time 1 "http://$1/v1/status" || true; }

# The leader's id as seen by a node that claims to be the leader ('' when none).
leader_id() {
    local h
    for h in "${HTTPS[@]}"; do
        if [ "$(status "$h" | json 'j["state"]')" = leader ]; then
            status "$h" | json 'j["id"]'
            return
        fi
    done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... — polls every 50 ms
    local secs=$1 what=$2; shift 2
    local end=$(( $(now_ms) + secs * 1000 ))
    until "$@"; do
        [ "$(now_ms)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
        sleep 0.05
    done
}

cmd_stop() {
    local pidfile="$DATA/raftsup.pid" pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    # A stale pid file may name a recycled pid: only a live raftsup is stopped.
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null ||
        ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q raftsup; then
        [ -n "${1:-}" ] || echo "demo: no cluster running (no live $pidfile)"
        return 0
    fi
    say "Stopping the cluster (raftsup pid $pid: SIGTERM, it stops every node)"
    kill -TERM "$pid"
    local end=$(( $(now_ms) + 12000 ))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(now_ms)" -ge "$end" ]; then
            echo "demo: raftsup $pid did not stop in 12 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    info "stopped."
}

# True when one node leads, every node names it, and all config nodes are voters. One curl
# per node and one python3 per poll keep the poll cheap.
nodes_ready() {
    local h
    for h in "${HTTPS[@]}"; do status "$h" | tr -d '\n'; echo; done | python3 -c '
import json, sys
try:
    st = [json.loads(line) for line in sys.stdin]
    lead = [s["id"] for s in st if s["state"] == "leader"]
    l = [s for s in st if s["id"] == lead[0]][0]
    ok = (len(lead) == 1 and all((s["leader"] or {}).get("id") == lead[0] for s in st)
          and sum(1 for m in l["members"] if m["voter"]) == len(st))
except Exception:
    ok = False
sys.exit(0 if ok else 1)'
}

# nodes_ready, but a raftsup that exits (bad config, lock held) ends the demo at once.
sup_alive_and_ready() {
    if ! kill -0 "$SUP_PID" 2>/dev/null; then
        sed 's/^/    /' "$DATA/raftsup.out" >&2
        die "raftsup exited (output above, from $DATA/raftsup.out)"
    fi
    nodes_ready
}

put() {  # put HTTP PATH CONTENT — prints the status code
    curl -s -o /dev/null -w "%{http_code}" --max-time "${4:-2}" -X PUT --data-binary "$3" \
        "http://$1/v1/files/$2" || true
}

cmd_start() {
    [ -x "$BUILD/raftsup" ] && [ -x "$BUILD/raftnode" ] || die "build first: $BUILD/raftsup and $BUILD/raftnode are needed (./run.sh builds them)"
    cmd_stop quiet
    local h busy=
    for h in "${HTTPS[@]}" "${RAFTS[@]}"; do
        if (exec 3<>"/dev/tcp/${h%:*}/${h##*:}") 2>/dev/null; then busy+=" $h"; fi
    done
    [ -z "$busy" ] || die "ports in use by something else:$busy (stop it, or edit $CONFIG)"
    mkdir -p "$DATA"
    say "Starting raftsup with $CONFIG (3 nodes, data in $DATA/)"
    setsid nohup "$BUILD/raftsup" "$CONFIG" >"$DATA/raftsup.out" 2>&1 </dev/null &
    SUP_PID=$!
    local t0; t0=$(now_ms)
    wait_for 30 "a leader with ${#IDS[@]} voters (see $DATA/raftsup.log)" sup_alive_and_ready
    local lead; lead=$(leader_id)
    info "raftsup pid $(cat "$DATA/raftsup.pid"); leader ${G}$lead${N}, ${#IDS[@]} voters, ready $(( $(now_ms) - t0 )) ms after the start"
    for i in "${!IDS[@]}"; do
        info "${IDS[$i]}: pid $(pid_of "${IDS[$i]}"), http ${HTTPS[$i]}, raft ${RAFTS[$i]}, state $(status "${HTTPS[$i]}" | json 'j["state"]')"
    done

    local first=${IDS[0]} stamp; stamp=$(date -u +%H:%M:%S)
    [ "$first" != "$lead" ] || first=${IDS[1]}
    say "Writing hello.txt through $first (a follower forwards the write to the leader)"
    local code; code=$(put "$(http_of "$first")" hello.txt "hello from raftfs at $stamp")
    info "PUT /v1/files/hello.txt -> HTTP $code"
    say "Reading it back from every node"
    for i in "${!IDS[@]}"; do
        info "${IDS[$i]}: $(curl -s --max-time 2 "http://${HTTPS[$i]}/v1/files/hello.txt")"
    done

    local victim=$lead vpid; vpid=$(pid_of "$lead")
    say "Killing the leader ${R}$victim${N} with kill -9 $vpid"
    local k0; k0=$(now_ms)
    kill -9 "$vpid"
    local survivors=() i
    for i in "${!IDS[@]}"; do [ "${IDS[$i]}" = "$victim" ] || survivors+=("${HTTPS[$i]}"); done
    local accepted= n=0
    while [ -z "$accepted" ]; do
        for h in "${survivors[@]}"; do
            code=$(put "$h" after-failover.txt "written after $victim was killed" 5)
            case $code in 200|201) accepted=$h; break ;; esac
        done
        n=$((n + 1))
        [ $(( $(now_ms) - k0 )) -lt 20000 ] || die "no write accepted within 20 s of the kill"
    done
    local took=$(( $(now_ms) - k0 ))
    local newlead; newlead=$(leader_id)
    info "new leader: ${G}$newlead${N}; first write accepted through $accepted ${B}$took ms${N} after the kill"
    grep -hE "became leader|campaigning" "$DATA/$newlead/node.log" 2>/dev/null | tail -2 | sed 's/^/    /' || true

    say "raftsup restarts $victim (see $DATA/raftsup.log)"
    wait_for 15 "$victim to be restarted" bash -c "p=\$(cat '$DATA/$victim/node.pid' 2>/dev/null); [ -n \"\$p\" ] && [ \"\$p\" != '$vpid' ] && kill -0 \$p"
    info "$victim: new pid $(pid_of "$victim")"
    grep -E "$victim (\(pid|restarted)" "$DATA/raftsup.log" | tail -2 | sed 's/^/    /'
    wait_for 20 "$victim to catch up" test -f "$DATA/$victim/files/after-failover.txt"
    info "$victim caught up: $(cat "$DATA/$victim/files/after-failover.txt") (state $(status "$(http_of "$victim")" | json 'j["state"]'))"

    say "The replicated files, as plain files on each node's disk"
    for id in "${IDS[@]}"; do
        info "$DATA/$id/files/: $(ls "$DATA/$id/files/" | tr '\n' ' ')"
    done

    say "The cluster keeps running"
    for i in "${!IDS[@]}"; do
        info "${IDS[$i]}: pid $(pid_of "${IDS[$i]}")  http://${HTTPS[$i]}  log $DATA/${IDS[$i]}/node.log"
    done
    info "raftsup: pid $(cat "$DATA/raftsup.pid")  log $DATA/raftsup.log"
    info "try:   curl -X PUT --data-binary @README.md http://${HTTPS[0]}/v1/files/readme"
    info "       curl http://${HTTPS[1]}/v1/status"
    info "       kill -9 \$(cat $DATA/${IDS[0]}/node.pid)      # raftsup restarts it"
    info "       tail -f $DATA/${IDS[0]}/node.log"
    info "stop:  ./run.sh stop"
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
