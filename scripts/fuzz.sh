#!/usr/bin/env bash
# Fuzz with libFuzzer under ASan + UBSan, each target for FUZZ_SECONDS
# (default 45):
#   fuzz-qcow2-header  the qcow2 header parser, from real headers qemu-img made
#                      (tests/fuzz/make-corpus.sh) and tests/fuzz/regressions;
#   fuzz-domain-xml    the domain XML parser and chain write-back, from
#                      tests/fuzz/domain-seeds (and tests/fuzz/domain-regressions)
#                      with tests/fuzz/domain-xml.dict;
#   fuzz-wire          the daemon's server and dispatch in-process through a
#                      socketpair, every reply held to strict JSON, from
#                      tests/fuzz/wire-seeds (and tests/fuzz/wire-regressions)
#                      with tests/fuzz/wire.dict (needs root, as this script).
# Ends with one line per target, "TARGET: N execs in S s, C crashes"; exits 1
# when any target crashed or did not run. Crash inputs are left in
# build-fuzz/fuzz-artifacts/TARGET/, libFuzzer's output in
# build-fuzz/fuzz-TARGET.log. The outcome is also left in
# build-fuzz/testlog.json, one line per target in meson's format, for
# scripts/count-tests.py.
set -uo pipefail
cd "$(dirname "$0")/.."
result() {   # TARGET OK|FAIL LINE
    mkdir -p build-fuzz
    python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "result": sys.argv[2], "stdout": sys.argv[3] + "\n"}))' \
        "$1" "$2" "$3" >> build-fuzz/testlog.json
    echo "${3#* - }"
}
rm -f build-fuzz/testlog.json
seconds=${FUZZ_SECONDS:-45}
bash scripts/install-deps.sh >/dev/null || exit 1   # clang and its fuzzer runtime among them
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dwerror=true >/dev/null || exit 1
fi
ninja -C build-fuzz tests/fuzz/fuzz-qcow2-header tests/fuzz/fuzz-domain-xml \
    tests/fuzz/fuzz-wire >/dev/null || exit 1
rm -rf build-fuzz/fuzz-seeds build-fuzz/fuzz-corpus build-fuzz/fuzz-corpus-xml \
    build-fuzz/fuzz-corpus-wire build-fuzz/fuzz-artifacts
bash tests/fuzz/make-corpus.sh build-fuzz/fuzz-seeds >/dev/null || exit 1

# TARGET CORPUS OPTIONS... -- SEED-DIRS...: run TARGET, print its line.
fuzz() {
    local target=$1 corpus=$2; shift 2
    local opts=() dirs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
    local artifacts=build-fuzz/fuzz-artifacts/$target log=build-fuzz/fuzz-$target.log
    mkdir -p "$corpus" "$artifacts"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "build-fuzz/tests/fuzz/$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${opts[@]}" \
        "$corpus" "${dirs[@]}" >"$log" 2>&1
    local rc=$?
    local execs secs crashes
    execs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    crashes=$(find "$artifacts" -type f | wc -l)
    if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$execs" ]; then
        tail -40 "$log"
        find "$artifacts" -type f -printf "$target: crash input %p\n"
        result "$target" FAIL \
            "not ok 1 - $target: ${execs:-0} execs in ${secs:-0} s, $(( crashes > 0 ? crashes : 1 )) crashes"
        return 1
    fi
    result "$target" OK "ok 1 - $target: $execs execs in $secs s, 0 crashes"
}

status=0
fuzz fuzz-qcow2-header build-fuzz/fuzz-corpus -max_len=70000 \
    -- build-fuzz/fuzz-seeds tests/fuzz/regressions || status=1
fuzz fuzz-domain-xml build-fuzz/fuzz-corpus-xml -max_len=65536 -dict=tests/fuzz/domain-xml.dict \
    -- tests/fuzz/domain-seeds tests/fuzz/domain-regressions || status=1
fuzz fuzz-wire build-fuzz/fuzz-corpus-wire -max_len=65536 -dict=tests/fuzz/wire.dict \
    -- tests/fuzz/wire-seeds tests/fuzz/wire-regressions || status=1
exit $status
