#!/usr/bin/env bash
# run.sh — set up, build, and run raftfs (README "Quick start").
#   ./run.sh          install what is missing, build, (re)start the demo cluster, narrate
#   ./run.sh stop     stop what ./run.sh started
#   ./run.sh test     install, build, run every test (plain build, then ASan+UBSan)
#   ./run.sh sim N    run the Raft simulator over N seeds
#   ./run.sh bench    run the benchmarks
#   ./run.sh fuzz [S] run each fuzz target for S seconds (default 60)
#   ./run.sh torture [M]  M minutes (default 10) of faults (kills, pauses, partitions as root,
#                         slow/lossy/stalled/one-way links, membership cycles) + checks
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

PKGS=(meson ninja-build pkg-config gcc clang libev-dev libjansson-dev libdb-dev
      libmicrohttpd-dev libssl-dev zlib1g-dev python3 curl iproute2 iptables procps
      libclang-rt-14-dev libcurl4-openssl-dev libsodium-dev libdeflate-dev)

install_deps() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "run.sh: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {  # build DIR [meson options...]
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

# Runs meson's suite in DIR and records its counts in the globals.
PASSED=0 FAILED=0 SKIPPED=0
run_suite() {  # dir label [meson test args...]
    local dir=$1 label=$2; shift 2
    local log="$dir/meson-logs/testlog.txt" rc=0
    echo "== $label" >&2
    meson test -C "$dir" --print-errorlogs "$@" || rc=$?
    local json="$dir/meson-logs/testlog.json"
    if [ -f "$json" ]; then
        read -r p f s < <(python3 - "$json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
        PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
    elif [ $rc -ne 0 ]; then
        FAILED=$((FAILED + 1))
    fi
    [ -f "$log" ] || true
}

cmd_test() {
    install_deps
    build build
    # ASan+UBSan build of the same suite; e2e/fuzz run only in the plain build to keep the
    # whole thing well under 20 minutes on 2 cores.
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    run_suite build "plain build: every suite" --num-processes 2
    run_suite build-asan "ASan+UBSan build: unit + sim" --num-processes 2 --suite unit --suite sim
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ]
}

case "${1:-demo}" in
    test) cmd_test ;;
    sim) install_deps; build build; exec build/tests/sim/raft_sim --seeds "${2:-20000}" ;;
    bench) install_deps; build build; exec tests/bench/run_bench.sh "$ROOT/build" ;;
    fuzz) install_deps; build build; exec tests/fuzz/run_fuzz.sh "$ROOT/build" "${2:-60}" ;;
    torture) install_deps; build build
        # Half in network namespaces when root (partitions; else raftsup) with frequent log
        # compaction (InstallSnapshot), half under raftsup (its restarts and re-joins, a 4th
        # node); both with proxied links and membership cycles.
        half=$(awk -v m="${2:-10}" 'BEGIN { print m / 2 }'); rc=0
        for run in "auto --snapshots" "sup"; do
            RAFTFS_BUILD="$ROOT/build" python3 tests/lincheck/nemesis.py --mode $run \
                --minutes "$half" --links --membership || rc=1
        done
        exit $rc ;;
    stop) exec tests/e2e/demo.sh stop ;;
    demo) install_deps; build build; exec tests/e2e/demo.sh start ;;
    *) echo "usage: $0 [demo|stop|test|sim N|bench|fuzz [SECONDS]|torture [MINUTES]]" >&2; exit 2 ;;
esac
