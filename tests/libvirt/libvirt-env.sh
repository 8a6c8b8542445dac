# Sourced by the libvirt tests, inside a private mount namespace: a
# throw-away libvirtd + virtlogd + vmleased whose /etc/libvirt, /run/libvirt
# and /var/*/libvirt are temporary directories, with lock_manager="vmlease"
# loaded from the build tree. Nothing of the host's libvirt is touched.

: "${VMLEASED_BIN:?}" "${VMLEASE_BIN:?}" "${VMLEASE_PLUGIN:?}"
LV_ROOT=$(mktemp -d /tmp/vmlease-libvirt-XXXXXX)
export VMLEASE_ROOT="$LV_ROOT/vmlease"
mkdir -p "$VMLEASE_ROOT"

lv_setup_users() {
    # libvirtd resolves these at start even when qemu.conf says root.
    for g in kvm libvirt libvirt-qemu; do getent group "$g" >/dev/null || groupadd -r "$g"; done
    getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}

lv_mount_private() {
    for d in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
        local src="$LV_ROOT/fs$d"
        mkdir -p "$src" "$d"
        mount --bind "$src" "$d"
    done
    mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu
    cat > /etc/libvirt/qemu.conf <<CONF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
lock_manager = "vmlease"
CONF
    cat > /etc/libvirt/qemu-vmlease.conf <<CONF
socket_dir = "$VMLEASE_ROOT/run"
CONF
    echo 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"' > /etc/libvirt/libvirtd.conf
}

# Switch libvirt's QEMU driver to lock manager NAME (nop, lockd, vmlease);
# takes effect at the next libvirtd start.
lv_set_lock_manager() {
    sed -i "s/^lock_manager = .*/lock_manager = \"$1\"/" /etc/libvirt/qemu.conf
    if [ "$1" = lockd ]; then
        mkdir -p /var/lib/libvirt/lockd/files
        cat > /etc/libvirt/qemu-lockd.conf <<CONF
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "/var/lib/libvirt/lockd/files"
CONF
        [ -f /run/virtlockd.pid ] && kill -0 "$(cat /run/virtlockd.pid)" 2>/dev/null || virtlockd -d
    fi
}

lv_start_vmleased() {
    "$VMLEASED_BIN" --foreground >>"$LV_ROOT/vmleased.log" 2>&1 &
    LV_VMLEASED=$!
    for _ in $(seq 200); do "$VMLEASE_BIN" status >/dev/null 2>&1 && return 0; sleep 0.02; done
    echo "# vmleased did not start"; cat "$LV_ROOT/vmleased.log"; return 1
}

lv_start_libvirtd() {
    [ -f /run/virtlogd.pid ] && kill -0 "$(cat /run/virtlogd.pid)" 2>/dev/null || virtlogd -d
    # libvirt looks in one directory: libvirt's own plugins plus ours.
    local plugins="$LV_ROOT/lock-driver"
    mkdir -p "$plugins"
    for p in /usr/lib/*/libvirt/lock-driver/*.so; do [ -e "$p" ] && ln -sf "$p" "$plugins/"; done
    ln -sf "$VMLEASE_PLUGIN" "$plugins/vmlease.so"
    LIBVIRT_LOCK_MANAGER_PLUGIN_DIR="$plugins" libvirtd -d
    for _ in $(seq 300); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "# libvirtd did not answer"; tail -20 /var/log/libvirt/libvirtd.log; return 1
}

lv_stop_libvirtd() {
    local pid
    pid=$(cat /run/libvirtd.pid 2>/dev/null) && kill "$pid" 2>/dev/null
    for _ in $(seq 100); do [ -e /proc/"$pid" ] || break; sleep 0.05; done
}

lv_cleanup() {
    for d in $(virsh -c qemu:///system list --name 2>/dev/null); do
        virsh -c qemu:///system destroy "$d" >/dev/null 2>&1
    done
    lv_stop_libvirtd
    [ -f /run/virtlogd.pid ] && kill "$(cat /run/virtlogd.pid)" 2>/dev/null
    [ -f /run/virtlockd.pid ] && kill "$(cat /run/virtlockd.pid)" 2>/dev/null
    [ -n "${LV_VMLEASED:-}" ] && kill "$LV_VMLEASED" 2>/dev/null
    wait 2>/dev/null
    for d in /var/cache/libvirt /var/log/libvirt /var/lib/libvirt /run/libvirt /etc/libvirt; do
        umount "$d" 2>/dev/null
    done
    [ -n "${VMLEASE_KEEP:-}" ] || rm -rf "$LV_ROOT"
}

# A domain that starts without a guest OS: TCG unless /dev/kvm works.
lv_domain_xml() {   # NAME UUID DISK-XML...
    local name=$1 uuid=$2 type=qemu
    shift 2
    [ -c /dev/kvm ] && [ -w /dev/kvm ] && type=kvm
    cat <<XML
<domain type='$type'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
$*
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

lv_disk() {   # PATH TARGET [extra elements]
    echo "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$1'/><target dev='$2' bus='virtio'/>${3:-}</disk>"
}

virsh() { command virsh -c qemu:///system "$@"; }
