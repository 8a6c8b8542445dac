#!/usr/bin/env bash
# Run abi-bench against privately started lock daemons:
#   bench/abi-bench.sh [BUILD_DIR] [abi-bench options, e.g. --quick]
# vmlease.so against a vmleased (VMLEASE_ROOT in a temporary root), libvirt's
# lockd.so against a virtlockd and, if the Debian package libvirt-sanlock is
# installed, libvirt's sanlock.so against a sanlock daemon with a
# file-backed lockspace. Everything runs in a mount namespace of its own
# with a tmpfs on /run (lockd.so and sanlock.so find their daemons only at
# /run/libvirt/virtlockd-sock and /run/sanlock/sanlock.sock); every file
# lives under one temporary root in /var/tmp (not tmpfs: sanlock uses
# O_DIRECT, and the images' syncs should cost what they cost on disk).
# Every daemon is stopped by the pid this script started. Needs root.
# Figures (name: value) on stdout; everything else on stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
    build=$(cd "$1" && pwd)
    shift
else
    build=$(cd "$here/../build" && pwd)
fi

if [ -z "${ABI_BENCH_NS_CHILD:-}" ]; then
    # Re-run in a private mount namespace; the marker tells the inner run
    # that its namespace is its own.
    exec env ABI_BENCH_NS_CHILD=1 unshare --mount --propagation private \
        "$BASH" "${BASH_SOURCE[0]}" "$build" "$@"
fi

# Inside: refuse to mount over /run unless this namespace is not our
# parent's (the parent lives where we must not touch anything).
me=$(readlink /proc/self/ns/mnt)
parent=$(readlink "/proc/$PPID/ns/mnt" 2>/dev/null || true)
if [ -z "$me" ] || [ "$me" = "$parent" ]; then
    echo "abi-bench.sh: not in a mount namespace of our own; refusing" >&2
    exit 1
fi

root=$(mktemp -d /var/tmp/abi-bench-XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    umount /run 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/libvirt /run/sanlock

# wait_sock PID SOCKET NAME: up to 10 s for SOCKET, while PID lives.
wait_sock() {
    for _ in $(seq 200); do
        [ -S "$2" ] && return 0
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    echo "abi-bench.sh: $3 did not start:" >&2
    tail -5 "$root/$3.log" >&2 || true
    return 1
}

args=(--dir "$root/bench")

# vmlease.so + vmleased (fcntl backend).
mkdir -p "$root/vmlease"
if VMLEASE_ROOT="$root/vmlease" "$build/lockd/vmleased" --foreground \
        >"$root/vmleased.log" 2>&1 & pids+=($!); wait_sock "$!" "$root/vmlease/run/vmleased.sock" vmleased; then
    cat >"$root/qemu-vmlease.conf" <<CONF
socket_dir = "$root/vmlease/run"
lockspace_dir = "$root/vmlease/lockspace"
CONF
    args+=(--plugin "$build/plugin/vmlease.so" --config "$root/qemu-vmlease.conf")
fi

# libvirt's lockd.so + a private virtlockd.
lockd_so=$(ls /usr/lib/*/libvirt/lock-driver/lockd.so 2>/dev/null | head -1 || true)
if [ -n "$lockd_so" ] && command -v virtlockd >/dev/null; then
    mkdir -p "$root/lockd-files"
    echo "log_outputs = \"3:file:$root/virtlockd-daemon.log\"" >"$root/virtlockd.conf"
    cat >"$root/qemu-lockd.conf" <<CONF
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "$root/lockd-files"
CONF
    if virtlockd -f "$root/virtlockd.conf" -p /run/virtlockd.pid >"$root/virtlockd.log" 2>&1 &
            pids+=($!); wait_sock "$!" /run/libvirt/virtlockd-sock virtlockd; then
        args+=(--plugin "$lockd_so" --config "$root/qemu-lockd.conf")
    fi
else
    echo "abi-bench.sh: lockd: no lockd.so or virtlockd (package libvirt-daemon); skipped" >&2
fi

# libvirt's sanlock.so + a private sanlock daemon: no watchdog, no mlock,
# and a shim that lets its failing setrlimit() calls pass (TESTING-NOTES).
sanlock_so=$(ls /usr/lib/*/libvirt/lock-driver/sanlock.so 2>/dev/null | head -1 || true)
shim="$build/tests/sanlock/setrlimit-shim.so"
if [ -z "$sanlock_so" ] || ! command -v sanlock >/dev/null; then
    echo "abi-bench.sh: sanlock: no sanlock.so (package libvirt-sanlock) or sanlock; skipped" >&2
elif [ ! -e "$shim" ]; then
    echo "abi-bench.sh: sanlock: $shim not built; skipped" >&2
else
    mkdir -p "$root/sanlock-leases"
    cat >"$root/qemu-sanlock.conf" <<CONF
auto_disk_leases = 1
disk_lease_dir = "$root/sanlock-leases"
host_id = 1
require_lease_for_disks = 1
io_timeout = 1
CONF
    if LD_PRELOAD="$shim" sanlock daemon -D -w 0 -l 0 -U root -G root -o 1 -L -1 \
            >"$root/sanlock.log" 2>&1 & pids+=($!); wait_sock "$!" /run/sanlock/sanlock.sock sanlock; then
        args+=(--plugin "$sanlock_so" --config "$root/qemu-sanlock.conf")
    fi
fi

# abi-bench runs as its own job so that the trap can stop it by its pid.
${ABI_BENCH_WRAP:-} "$build/bench/abi-bench" "${args[@]}" "$@" &
bench=$!
rc=0
wait "$bench" || rc=$?
exit $rc
