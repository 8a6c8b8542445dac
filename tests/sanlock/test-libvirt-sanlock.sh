#!/usr/bin/env bash
# vmlease.so in a real libvirtd on the sanlock backend (TAP): the QEMU
# process registers with sanlock before exec and holds its leases there.
# Usage: test-libvirt-sanlock.sh SHIM (with VMLEASED_BIN, VMLEASE_BIN,
# VMLEASE_PLUGIN in the environment, as meson sets them).
set -u
if [ -z "${VMLEASE_IN_NS:-}" ]; then
    exec env VMLEASE_IN_NS=1 unshare --mount --uts --propagation private "$BASH" "$0" "$@"
fi
shim=$1
for tool in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img python3 sanlock; do
    command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool is not installed"; exit 0; }
done
hostname host1
. "$(dirname "$0")/../libvirt/libvirt-env.sh"
shared=$(mktemp -d /var/tmp/vmlease-lvsanlock-XXXXXX)   # O_DIRECT: not tmpfs
cleanup() {
    # First sanlock: lv_cleanup waits for every background job.
    [ -n "${sanlock_pid:-}" ] && kill -9 "$sanlock_pid" 2>/dev/null
    lv_cleanup
    umount /run/sanlock 2>/dev/null
    rm -rf "$shared"
}
trap cleanup EXIT

. "$(dirname "$0")/../tap.sh"
owner_field() {
    "$VMLEASE_BIN" owners --json "$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["resources"]:
    for o in r["owners"]:
        print(o.get(sys.argv[1]))' "$2"
}

lv_setup_users
lv_mount_private
mkdir -p /run/sanlock && mount -t tmpfs tmpfs /run/sanlock
LD_PRELOAD="$shim" sanlock daemon -D -w 0 -l 0 -U root -G root -o 2 >"$shared/sanlock.log" 2>&1 &
sanlock_pid=$!
for _ in $(seq 100); do [ -S /run/sanlock/sanlock.sock ] && break; sleep 0.05; done
truncate -s 1M "$shared/lockspace"
mkdir -p "$shared/leases"
cat > "$VMLEASE_ROOT/vmleased.conf" <<CONF
backend = "sanlock"
host_id = 1
lockspace_path = "$shared/lockspace"
lease_dir = "$shared/leases"
io_timeout = 2
CONF
cat >> /etc/libvirt/qemu-vmlease.conf <<CONF
backend = "sanlock"
CONF
"$VMLEASED_BIN" --foreground --config "$VMLEASE_ROOT/vmleased.conf" >>"$LV_ROOT/vmleased.log" 2>&1 &
LV_VMLEASED=$!
echo "1..6"
probe="$shared/probe.img"; touch "$probe"
joined=0
for _ in $(seq 120); do
    "$VMLEASE_BIN" run --exclusive "$probe" -- true >/dev/null 2>&1 && { joined=1; break; }
    sleep 0.5
done
check "vmleased joined the sanlock lockspace as host 1" test $joined -eq 1
[ $joined -eq 1 ] || { echo "Bail out! no lockspace"; tail "$LV_ROOT/vmleased.log"; exit 1; }
lv_start_libvirtd || { echo "Bail out! libvirtd did not start"; exit 1; }

img="$shared/disk-a.qcow2"
qemu-img create -q -f qcow2 "$img" 16M
UA=22222222-2222-4333-8444-555555555501 UB=22222222-2222-4333-8444-555555555502
lv_domain_xml dom-a $UA "$(lv_disk "$img" vda)" > "$LV_ROOT/a.xml"
lv_domain_xml dom-b $UB "$(lv_disk "$img" vda)" > "$LV_ROOT/b.xml"
virsh define "$LV_ROOT/a.xml" >/dev/null; virsh define "$LV_ROOT/b.xml" >/dev/null

out=$(virsh start dom-a 2>&1) || echo "# $out"
pid_a=$(cat /run/libvirt/qemu/dom-a.pid 2>/dev/null)
got="$(owner_field "$img" name)|$(owner_field "$img" pid)|$(owner_field "$img" mode)|$(owner_field "$img" host_state)"
check "dom-a runs; its disk is leased exclusive by QEMU pid $pid_a, host live ($got)" \
    test "$got" = "dom-a|$pid_a|exclusive|live"
# sanlock itself holds the lease for the QEMU process it knows.
check "sanlock lists QEMU (pid $pid_a) as a registered client holding a lease" \
    bash -c "sanlock client status | grep -q '^p $pid_a' && sanlock client status | grep -q '^r vmlease:'"

err=$(virsh start dom-b 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$err" == *"dom-a"* ]]; then ok "dom-b is refused, naming dom-a";
else not_ok "dom-b is refused, naming dom-a" "rc=$rc" "$err"; fi

virsh suspend dom-a >/dev/null && virsh resume dom-a >/dev/null
check "suspend + resume: dom-a runs and still holds its lease" \
    test "$(virsh domstate dom-a)|$(owner_field "$img" pid)" = "running|$pid_a"

virsh destroy dom-a >/dev/null
released=0
for _ in $(seq 40); do [ -z "$(owner_field "$img" pid)" ] && { released=1; break; }; sleep 0.05; done
check "virsh destroy: the lease is gone" test $released -eq 1
exit $(( failed > 0 ))
