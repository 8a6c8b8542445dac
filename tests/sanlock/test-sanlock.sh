#!/usr/bin/env bash
# vmlease on sanlock across two simulated hosts (TAP). Each host is a set
# of mount/UTS/network namespaces with its own hostname, sanlock daemon
# (private /run/sanlock) and vmleased; they share a lockspace, lease
# directory and images under /var/tmp (O_DIRECT: not tmpfs).
# Usage: test-sanlock.sh SHIM VMLEASED VMLEASE
set -u
shim=$1 vmleased=$2 vmlease=$3
here=$(cd "$(dirname "$0")" && pwd)
io_timeout=2

. "$(dirname "$0")/../tap.sh"

root=$(mktemp -d /var/tmp/vmlease-sanlock-XXXXXX)
sims=()
cleanup() {
    for h in 1 2; do
        for f in vmleased sanlock; do
            [ -f "$root/host$h/$f.pid" ] && kill -9 "$(cat "$root/host$h/$f.pid")" 2>/dev/null
        done
    done
    for p in "${sims[@]}"; do kill -9 "$p" 2>/dev/null; done
    pkill -9 -f "$root" 2>/dev/null
    sleep 0.2
    rm -rf "$root"
}
trap cleanup EXIT

mkdir -p "$root/shared/leases" "$root/shared/images"
truncate -s 1M "$root/shared/lockspace"
img="$root/shared/images/disk.img" ro="$root/shared/images/base.img"
touch "$img" "$ro"

# in_host N CMD...: run CMD inside host N's namespaces.
in_host() {
    local h=$1; shift
    nsenter -t "$(cat "$root/host$h/anchor.pid")" -m -u -n -- env VMLEASE_ROOT="$root/host$h" "$@"
}
vml() { local h=$1; shift; in_host "$h" "$vmlease" "$@"; }

for h in 1 2; do
    unshare --mount --uts --net --propagation private \
        "$here/sim-host.sh" "$h" "$root" "$shim" "$vmleased" "$io_timeout" \
        >"$root/sim$h.out" 2>&1 &
    sims+=($!)
done
for h in 1 2; do
    for _ in $(seq 200); do [ -f "$root/host$h/anchor.pid" ] && break; sleep 0.05; done
done

echo "1..13"

# 1. both hosts join the lockspace and see each other live
joined=0 start=$(date +%s)
for _ in $(seq 120); do
    states=$(vml 1 hosts --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join("%s:%s" % (h["host"], h["state"]) for h in sorted(d["hosts"], key=lambda h: h["host_id"])))' 2>/dev/null)
    [ "$states" = "host1:live host2:live" ] && { joined=1; break; }
    sleep 0.5
done
check "both hosts joined and are live in 'vmlease hosts' ($states, $(( $(date +%s) - start )) s)" \
    test $joined -eq 1
[ $joined -eq 1 ] || { echo "Bail out! hosts did not join"; cat "$root"/host*/vmleased.log; exit 1; }

# 2. an exclusive lease on host 1 blocks host 2, naming host 1 and the VM
vml 1 run --exclusive "$img" -- sleep 600 >/dev/null 2>&1 &
for _ in $(seq 100); do vml 1 owners "$img" 2>/dev/null | grep -q sleep && break; sleep 0.1; done
holder=$(vml 1 owners --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["owners"][0]["pid"])')
err=$(vml 2 run --exclusive "$img" -- true 2>&1)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *"on host host1"* ]] && [[ "$err" == *'VM "vmlease-run:sleep"'* ]]; then
    ok "exclusive on host1 refuses host2 (exit 3, names host1 and the VM)"
else
    not_ok "exclusive on host1 refuses host2" "rc=$rc" "$err"
fi
rc=$(vml 2 run --shared "$img" -- true >/dev/null 2>&1; echo $?)
check "a shared lease on host2 is refused too (exit $rc)" test "$rc" = 3

# 3. shared leases coexist across hosts; an exclusive one then is refused
vml 1 run --shared "$ro" -- sleep 600 >/dev/null 2>"$root/shared1.err" &
vml 2 run --shared "$ro" -- sleep 600 >/dev/null 2>"$root/shared2.err" &
modes=""
for _ in $(seq 100); do
    modes=$(vml 1 owners --json "$ro" 2>/dev/null | python3 -c '
import json, sys
o = json.load(sys.stdin)["resources"][0]["owners"]
print(" ".join(sorted("%s:%s" % (x["host"], x["mode"]) for x in o)))' 2>/dev/null)
    [ "$modes" = "host1:shared host2:shared" ] && break
    sleep 0.1
done
if [ "$modes" = "host1:shared host2:shared" ]; then ok "shared leases on both hosts at once ($modes)";
else not_ok "shared leases on both hosts at once ($modes)" "$(cat "$root"/shared*.err)" \
    "$(grep -h "sanlock acquire" "$root"/host*/vmleased.log)"; fi
err=$(vml 1 run --exclusive "$ro" -- true 2>&1)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *"on host host2"* ]]; then ok "exclusive refused while both share (names host2)";
else not_ok "exclusive refused while both share" "rc=$rc" "$err"; fi

# 4. vmlease owners agrees on both hosts
view() {
    vml "$1" owners --json | python3 -c '
import json, sys
for r in json.load(sys.stdin)["resources"]:
    for o in sorted(r["owners"], key=lambda o: (o["host"], o["pid"])):
        print(r.get("path", r["resource"]), o["host"], o["name"], o["pid"], o["mode"], o.get("host_state"))'
}
v1=$(view 1) v2=$(view 2)
if [ -n "$v1" ] && [ "$v1" = "$v2" ] && [ "$(echo "$v1" | wc -l)" -eq 3 ]; then
    ok "vmlease owners is the same on both hosts (3 leases, host states live)"
else
    not_ok "vmlease owners is the same on both hosts" "host1: $v1" "host2: $v2"
fi
check "owners report host1's state as live" grep -q "host1 vmlease-run:sleep $holder exclusive live" <<<"$v1"

# 5. host 1 loses sanlock: its holder is fenced at once, and host 2 gets
# the lease only when sanlock declares host 1 dead.
t0=$(date +%s.%N)
kill -9 "$(cat "$root/host1/sanlock.pid")"
fenced=""
for _ in $(seq 400); do
    kill -0 "$holder" 2>/dev/null || { fenced=$(date +%s.%N); break; }
    sleep 0.025
done
took="" refused_live=0
for _ in $(seq 600); do
    if vml 2 run --exclusive "$img" -- true >/dev/null 2>&1; then took=$(date +%s.%N); break; fi
    state=$(vml 2 hosts --json | python3 -c '
import json, sys
print([h["state"] for h in json.load(sys.stdin)["hosts"] if h["host_id"] == 1][0])')
    [ "$state" != dead ] && refused_live=$((refused_live + 1))
    sleep 0.5
done
# Seconds between two date +%s.%N stamps, and A < B, without bc.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
fence_s=$(elapsed "$t0" "${fenced:-0}") take_s=$(elapsed "$t0" "${took:-0}")
echo "# failover: host1's holder fenced after ${fence_s} s; host2 got the lease after ${take_s} s (io_timeout ${io_timeout} s)"
fenced_soon() { [ -n "$fenced" ] && less "$fence_s" 2; }
check "host1's holder (pid $holder) was fenced within 2 s of sanlock's death (${fence_s} s)" \
    fenced_soon
check "host2 got the exclusive lease after host1 died (${take_s} s)" test -n "$took"
check "fenced before host2 could take over" less "${fenced:-9e99}" "${took:-0}"
check "host2 was refused while host1 was not yet dead ($refused_live tries)" test "$refused_live" -gt 0
h1=$(vml 2 hosts --json | python3 -c '
import json, sys
print([h["state"] for h in json.load(sys.stdin)["hosts"] if h["host_id"] == 1][0])')
check "vmlease hosts on host2 shows host1 dead ($h1)" test "$h1" = dead

# 6. without sanlock, vmleased says what to do
cat > "$root/nosanlock.conf" <<CONF
backend = "sanlock"
host_id = 3
lockspace_path = "$root/shared/lockspace"
lease_dir = "$root/shared/leases"
CONF
err=$(unshare --mount --propagation private bash -c "mount -t tmpfs tmpfs /run/sanlock 2>/dev/null || { mkdir -p /run/sanlock && mount -t tmpfs tmpfs /run/sanlock; }; VMLEASE_ROOT=$root/host3 $vmleased --foreground --config $root/nosanlock.conf" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$err" == *"cannot reach the sanlock daemon: start it first"* ]]; then
    ok "vmleased without a sanlock daemon exits, saying to start sanlock"
else
    not_ok "vmleased without a sanlock daemon exits, saying to start sanlock" "rc=$rc" "$err"
fi

exit $(( failed > 0 ))
