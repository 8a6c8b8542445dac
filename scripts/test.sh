#!/usr/bin/env bash
# Install dependencies, build, run every test; end with "N passed, N failed"
# counting each TAP test case (and each non-TAP test as one).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bash scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }
meson test -C build --print-errorlogs "$@"
rc=$?
python3 scripts/count-tests.py build/meson-logs/testlog.json || rc=1
exit $rc
