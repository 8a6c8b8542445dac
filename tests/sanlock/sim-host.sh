#!/usr/bin/env bash
# One simulated host, run by test-sanlock.sh under
#   unshare --mount --uts --net --propagation private
# Its own hostname, sanlock daemon (private /run/sanlock) and vmleased
# (VMLEASE_ROOT=$ROOT/hostN), sharing $ROOT/shared with the other hosts.
# Then it waits; the test runs commands in it with nsenter.
set -eu
id=$1 root=$2 shim=$3 vmleased=$4 io_timeout=$5
hostname "host$id"
ip link set lo up 2>/dev/null || true
mkdir -p /run/sanlock
mount -t tmpfs tmpfs /run/sanlock
# No watchdog here (-w 0), no mlock (-l 0): see TESTING-NOTES. sanlock
# still counts its 60 s watchdog fire timeout before it calls a silent host
# dead.
host="$root/host$id"
mkdir -p "$host"
LD_PRELOAD="$shim" sanlock daemon -D -w 0 -l 0 -U root -G root -o "$io_timeout" \
    >"$host/sanlock.log" 2>&1 &
echo $! > "$host/sanlock.pid"
for _ in $(seq 100); do [ -S /run/sanlock/sanlock.sock ] && break; sleep 0.05; done
cat > "$host/vmleased.conf" <<CONF
backend = "sanlock"
host_id = $id
lockspace_path = "$root/shared/lockspace"
lease_dir = "$root/shared/leases"
io_timeout = $io_timeout
CONF
VMLEASE_ROOT="$host" "$vmleased" --foreground --config "$host/vmleased.conf" \
    >"$host/vmleased.log" 2>&1 &
echo $! > "$host/vmleased.pid"
echo $$ > "$host/anchor.pid"
exec sleep infinity
