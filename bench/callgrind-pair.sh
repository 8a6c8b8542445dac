#!/usr/bin/env bash
# callgrind-pair.sh [BUILD_DIR] [PAIRS] [LOG_LEVEL]: the daemon's instructions
# per acquire+release pair of one raw image, counted by callgrind (counts, not
# seconds: the same for the same binary and inputs, whatever else the
# machine does), with vmleased at LOG_LEVEL (default info, which logs a line
# per acquire and per release; warning leaves them out). Prints "name:
# value" lines:
#   daemon_instructions_per_pair       every instruction the daemon ran
#   daemon_instructions_per_pair_{...} the largest shares by library
# Starts its own vmleased-daemon under valgrind in a temporary root; stops
# it by the pid it started.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
pairs=${2:-200}
log_level=${3:-info}
root=$(mktemp -d "${TMPDIR:-/tmp}/callgrind-pair-XXXXXX")
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$root"
}
trap cleanup EXIT
export VMLEASE_ROOT=$root
echo "log_level = \"$log_level\"" > "$root/vmleased.conf"
truncate -s 1M "$root/disk.img"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$root/cg.out" \
    "$build/lockd/vmleased-daemon" --foreground --config "$root/vmleased.conf" \
    > "$root/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 600); do
    "$build/tools/vmlease" status >/dev/null 2>&1 && break
    sleep 0.1
done

# Warm up, switch counting on, PAIRS pairs, switch it off.
python3 - "$root" "$pairs" "$daemon" <<'EOF'
import json, os, socket, subprocess, sys
root, pairs, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.connect(os.path.join(root, "run", "vmleased.sock"))
def call(method, params):
    s.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
    buf = b""
    while not buf.endswith(b"\0"):
        chunk = s.recv(1 << 16)
        if not chunk:
            sys.exit("vmleased closed the connection")
        buf += chunk
    reply = json.loads(buf[:-1])
    if "error" in reply:
        sys.exit("%s: %s" % (method, reply))
    return reply["parameters"]
h = call("io.vmlease.Lease.Register",
         {"uuid": "11111111-2222-4333-8444-000000000009", "name": "callgrind", "pid": os.getpid()})["holder"]
res = [{"path": os.path.join(root, "disk.img"), "mode": "exclusive"}]
def pair():
    call("io.vmlease.Lease.Acquire", {"holder": h, "resources": res})
    call("io.vmlease.Lease.Release", {"holder": h, "resources": res})
for _ in range(20):
    pair()
subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
for _ in range(pairs):
    pair()
subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
EOF
callgrind_control -d "$daemon" >/dev/null 2>&1
kill "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=""

# The totals, and per shared object (callgrind_annotate --inclusive=no).
out=$root/cg.out.1   # the dump: what ran between on and off
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
[ -n "$total" ] || { echo "callgrind-pair: no totals in $out" >&2; exit 1; }
echo "daemon_instructions_per_pair: $((total / pairs))"
callgrind_annotate "$out" 2>/dev/null | awk -v pairs="$pairs" '
    /^-+$/ { dash++ ; next }
    dash >= 3 && $1 ~ /^[0-9,]+$/ && $0 ~ /\[\// {
        n = $1; gsub(",", "", n)
        lib = $0; sub(/.*\[\//, "/", lib); sub(/\].*/, "", lib); sub(/.*\//, "", lib)
        sub(/\.so.*/, "", lib); gsub(/[^A-Za-z0-9]/, "_", lib)
        by[lib] += n
    }
    END { for (l in by) if (by[l] / pairs >= 1000) printf "daemon_instructions_per_pair_%s: %d\n", l, by[l] / pairs }' |
    sort -t: -k2 -rn
