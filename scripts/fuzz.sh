#!/usr/bin/env bash
# Fuzz the qcow2 header parser with libFuzzer under ASan + UBSan for
# FUZZ_SECONDS (default 60), starting from real headers qemu-img made.
# Ends with one line "fuzz: N execs in S s, C crashes"; exits 1 on a crash.
# The outcome is also left in build-fuzz/testlog.json, in meson's format, for
# scripts/count-tests.py.
set -uo pipefail
cd "$(dirname "$0")/.."
result() {   # OK|FAIL LINE
    mkdir -p build-fuzz
    python3 -c 'import json, sys; print(json.dumps({"name": "fuzz-qcow2-header", "result": sys.argv[1], "stdout": sys.argv[2] + "\n"}))' \
        "$1" "$2" > build-fuzz/testlog.json
    echo "${2#* - }"
}
rm -f build-fuzz/testlog.json
seconds=${FUZZ_SECONDS:-60}
bash scripts/install-deps.sh >/dev/null || exit 1   # clang and its fuzzer runtime among them
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dwerror=true >/dev/null || exit 1
fi
ninja -C build-fuzz tests/fuzz/fuzz-qcow2-header >/dev/null || exit 1
rm -rf build-fuzz/fuzz-seeds build-fuzz/fuzz-corpus build-fuzz/fuzz-artifacts
bash tests/fuzz/make-corpus.sh build-fuzz/fuzz-seeds || exit 1
mkdir -p build-fuzz/fuzz-corpus build-fuzz/fuzz-artifacts
log=build-fuzz/fuzz.log
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    build-fuzz/tests/fuzz/fuzz-qcow2-header -max_total_time="$seconds" -rss_limit_mb=2048 \
    -max_len=70000 -print_final_stats=1 -artifact_prefix=build-fuzz/fuzz-artifacts/ \
    build-fuzz/fuzz-corpus build-fuzz/fuzz-seeds tests/fuzz/regressions >"$log" 2>&1
rc=$?
execs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
crashes=$(find build-fuzz/fuzz-artifacts -type f | wc -l)
if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$execs" ]; then
    tail -40 "$log"
    find build-fuzz/fuzz-artifacts -type f -printf 'fuzz: crash input %p\n'
    result FAIL "not ok 1 - fuzz: ${execs:-0} execs in ${secs:-0} s, $(( crashes > 0 ? crashes : 1 )) crashes"
    exit 1
fi
result OK "ok 1 - fuzz: $execs execs in $secs s, 0 crashes"
