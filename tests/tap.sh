# TAP for the shell suites, sourced by each: ok, not_ok (with diagnostic
# lines, each made a "# " comment), check (runs a command: ok if it
# succeeds, else not_ok; returns its verdict), tap_diag. $failed counts the
# failures for the suite's exit status.
n=0 failed=0
tap_diag() { local l; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /'; done; }
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; tap_diag "$@"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; return 1; fi; }
