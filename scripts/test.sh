#!/usr/bin/env bash
# Install dependencies, build, run every test twice (a plain build, then one
# under AddressSanitizer + UBSan where a daemon that trips them fails its
# test), fuzz the qcow2 header parser, the domain XML parser and the wire
# (scripts/fuzz.sh); end with "N passed, N failed"
# counting each TAP test case.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bash scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }
rc=0
meson test -C build --print-errorlogs "$@" || rc=1

if [ ! -f build-sanitize/build.ninja ]; then
    meson setup build-sanitize -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
        >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-sanitize >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
# Leaks are not judged: GLib keeps caches on purpose, and the daemon is
# stopped by a signal. Everything else stops the test. The libvirt suite
# stays out: libvirtd itself is not built with the sanitizers, so it
# cannot load a sanitized plugin.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-sanitize --print-errorlogs --no-suite libvirt "$@" || rc=1

# libFuzzer (ASan + UBSan) on the qcow2 header parser, the domain XML parser
# and the daemon's wire, 45 s each by default (FUZZ_SECONDS).
bash scripts/fuzz.sh || rc=1
[ -f build-fuzz/testlog.json ] || echo '{"name": "fuzz-qcow2-header", "result": "FAIL"}' \
    > build-fuzz/testlog.json

python3 scripts/count-tests.py build/meson-logs/testlog.json \
    build-sanitize/meson-logs/testlog.json build-fuzz/testlog.json || rc=1
exit $rc
