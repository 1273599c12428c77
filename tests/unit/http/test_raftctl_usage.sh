#!/bin/sh
# test_raftctl_usage.sh RAFTCTL — usage errors exit 2 with a message on stderr and nothing on
# stdout; an unreachable node is a failed operation (exit 1). Never contacts a real node.
set -u
ctl="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect CODE ARGS...: runs raftctl ARGS, checks the exit code and that stderr says something.
expect() {
    want="$1"
    shift
    "$ctl" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    got=$?
    if [ "$got" -ne "$want" ] || [ ! -s "$tmp/err" ]; then
        echo "FAIL: raftctl $* -> exit $got (want $want), stderr: $(head -c 200 "$tmp/err")"
        fails=$((fails + 1))
    elif [ "$want" -eq 2 ] && [ -s "$tmp/out" ]; then
        echo "FAIL: raftctl $* printed on stdout"
        fails=$((fails + 1))
    else
        echo "ok   raftctl $* -> $got"
    fi
}

expect 2
expect 2 frobnicate
expect 2 --bogus status
expect 2 --server
expect 2 --server nohostport status
expect 2 --server 127.0.0.1:0 status
expect 2 --server 127.0.0.1:1 --config x.json status
expect 2 --config "$tmp/missing.json" status
printf '{"cluster": "x", "nodes": [' >"$tmp/bad.json"
expect 2 --config "$tmp/bad.json" status
expect 2 put
expect 2 put a b c
expect 2 get
expect 2 get a b
expect 2 get a -o
expect 2 rm
expect 2 rm a b
expect 2 ls a b
expect 2 status extra
expect 2 join a b
expect 2 join a b c d
expect 2 remove
expect 2 transfer
expect 2 wait-leader --timeout
expect 2 wait-leader --timeout abc
expect 2 wait-leader --timeout -1
expect 2 wait-leader --bogus
# Port 1 on loopback: connection refused, a failed operation.
expect 1 --server 127.0.0.1:1 status
expect 1 --server 127.0.0.1:1 get a/b
expect 1 --server 127.0.0.1:1 wait-leader --timeout 0.3
expect 1 --server 127.0.0.1:1 put a "$tmp/missing-file"
"$ctl" --help >"$tmp/out" 2>&1 && grep -q wait-leader "$tmp/out" || {
    echo "FAIL: --help"
    fails=$((fails + 1))
}
[ "$fails" -eq 0 ] && echo "all raftctl usage checks passed"
[ "$fails" -eq 0 ]
