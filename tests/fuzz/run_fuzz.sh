#!/usr/bin/env bash
# run_fuzz.sh BUILD_DIR SECONDS [TARGET...] — builds every target of tests/fuzz/targets.txt
# (or only the named ones) with clang + libFuzzer + ASan + UBSan into BUILD_DIR and fuzzes
# each for SECONDS, starting from its seed corpus (new inputs go to BUILD_DIR, never into the
# repository). Exit 0 when nothing was found, 1 on a crash (the reproducer's path is printed),
# 77 (skip) when clang or libFuzzer is not available.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
secs=$2
shift 2
mkdir -p "$out" && out=$(cd "$out" && pwd)

cc=""
for c in "${CLANG:-}" clang clang-14 clang-15 clang-16; do
    if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
done
if [ -z "$cc" ]; then
    echo "SKIP: no clang found (libFuzzer needs clang; set CLANG=...)"
    exit 77
fi
probe="$out/probe.c"
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe" -o "$out/probe" 2>"$out/probe.log"; then
    echo "SKIP: $cc cannot build with -fsanitize=fuzzer (libclang-rt / compiler-rt missing?):"
    head -3 "$out/probe.log"
    exit 77
fi

failed=0
ran=0
while read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    spec=${line%%:*}
    libs=""
    [ "$spec" != "$line" ] && libs=${line#*:}
    read -r name srcs <<<"$spec"
    if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
    incs="-I$root/include -I$root/tests/fuzz"
    paths=""
    for s in $srcs; do
        paths="$paths $root/$s"
        incs="$incs -I$root/$(dirname "$s")"
    done
    ldlibs=""
    for l in $libs; do ldlibs="$ldlibs -l$l"; done
    bin="$out/fuzz_$name"
    # shellcheck disable=SC2086
    if ! "$cc" -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined $incs "$root/tests/fuzz/fuzz_$name.c" $paths $ldlibs \
        -o "$bin"; then
        echo "FAIL: $name does not build"
        failed=1
        continue
    fi
    work="$out/corpus_$name"
    mkdir -p "$work"
    echo "fuzzing $name for ${secs}s (seeds: tests/fuzz/corpus/$name, new inputs: $work)"
    if "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/crash_${name}_" "$work" "$root/tests/fuzz/corpus/$name" \
        >"$out/fuzz_$name.log" 2>&1; then
        echo "ok: $name ($(grep -c . "$out/fuzz_$name.log") log lines," \
             "$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/fuzz_$name.log" |
                grep -o '[0-9]*$') runs)"
    else
        echo "FAIL: $name crashed; log $out/fuzz_$name.log; reproducer:"
        ls "$out"/crash_"${name}"_* 2>/dev/null
        tail -30 "$out/fuzz_$name.log"
        failed=1
    fi
    ran=$((ran + 1))
done <"$root/tests/fuzz/targets.txt"
if [ "$ran" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "no fuzz target matched"
    exit 1
fi
exit $failed
