# Sourced by the libvirt tests, inside a private mount namespace: a
# throw-away libvirtd + virtlogd + vmleased whose /run is a private tmpfs and
# whose /etc/libvirt and /var/*/libvirt are temporary directories, with
# lock_manager="vmlease" loaded from the build tree. Nothing of the host's
# libvirt is touched: every daemon is started here, its pid recorded, and
# only those pids are ever signalled.

: "${VMLEASED_BIN:?}" "${VMLEASE_BIN:?}" "${VMLEASE_PLUGIN:?}"
LV_ROOT=$(mktemp -d /tmp/vmlease-libvirt-XXXXXX)
export VMLEASE_ROOT="$LV_ROOT/vmlease"
mkdir -p "$VMLEASE_ROOT"
LV_VIRTLOGD="" LV_VIRTLOCKD="" LV_LIBVIRTD="" LV_VMLEASED=""
LV_MOUNTS=()

# lv_alive PID: PID is set and still runs.
lv_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# lv_stop PID [SECONDS]: SIGTERM a process this harness started, wait for it
# (SIGKILL after SECONDS, default 5) and reap it.
lv_stop() {
    local pid=${1:-} t=${2:-5} i
    lv_alive "$pid" || return 0
    kill "$pid" 2>/dev/null
    for ((i = 0; i < t * 20; i++)); do lv_alive "$pid" || break; sleep 0.05; done
    lv_alive "$pid" && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

lv_setup_users() {
    # libvirtd resolves these at start even when qemu.conf says root.
    for g in kvm libvirt libvirt-qemu; do getent group "$g" >/dev/null || groupadd -r "$g"; done
    getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}

lv_mount_private() {
    # Only ever inside the private mount namespace the test unshared: the
    # script was exec'd by `unshare --mount`, so its parent (the test runner)
    # lives in the namespace we must not touch.
    local me parent
    me=$(readlink /proc/self/ns/mnt 2>/dev/null)
    parent=$(readlink "/proc/$PPID/ns/mnt" 2>/dev/null)
    if [ -z "$me" ] || [ -z "$parent" ] || [ "$me" = "$parent" ]; then
        echo "# refusing to mount over /run: not in a mount namespace of our own (self '$me', parent '$parent')" >&2
        return 1
    fi
    # A /run of our own: libvirtd, virtlogd and virtlockd write their pid
    # files and sockets there, none of the host's is visible.
    mount -t tmpfs -o mode=0755 tmpfs /run || return 1
    LV_MOUNTS+=(/run)
    mkdir -p /run/libvirt /run/lock
    ln -s /dev/shm /run/shm
    for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
        local src="$LV_ROOT/fs$d"
        mkdir -p "$src" "$d"
        mount --bind "$src" "$d" || return 1
        LV_MOUNTS+=("$d")
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
        lv_alive "$LV_VIRTLOCKD" || lv_start_daemon LV_VIRTLOCKD virtlockd /run/libvirt/virtlockd-sock virtlockd
    fi
}

# lv_start_daemon VAR NAME SOCKET CMD...: run CMD in the foreground as a
# background job (so $! is the daemon itself), store its pid in VAR and wait
# up to 10 s for SOCKET to appear.
lv_start_daemon() {
    local var=$1 name=$2 sock=$3 i
    shift 3
    "$@" >>"$LV_ROOT/$name.out" 2>&1 &
    printf -v "$var" %s "$!"
    for ((i = 0; i < 200; i++)); do
        [ -S "$sock" ] && return 0
        lv_alive "${!var}" || break
        sleep 0.05
    done
    echo "# $name did not start"; tail -5 "$LV_ROOT/$name.out" | sed 's/^/# /'; return 1
}

lv_start_vmleased() {
    "$VMLEASED_BIN" --foreground >>"$LV_ROOT/vmleased.log" 2>&1 &
    LV_VMLEASED=$!
    for _ in $(seq 200); do "$VMLEASE_BIN" status >/dev/null 2>&1 && return 0; sleep 0.02; done
    echo "# vmleased did not start"; cat "$LV_ROOT/vmleased.log"; return 1
}

lv_start_libvirtd() {
    lv_alive "$LV_VIRTLOGD" || lv_start_daemon LV_VIRTLOGD virtlogd /run/libvirt/virtlogd-sock virtlogd || return 1
    # libvirt looks in one directory: libvirt's own plugins plus ours.
    local plugins="$LV_ROOT/lock-driver"
    mkdir -p "$plugins"
    for p in /usr/lib/*/libvirt/lock-driver/*.so; do [ -e "$p" ] && ln -sf "$p" "$plugins/"; done
    ln -sf "$VMLEASE_PLUGIN" "$plugins/vmlease.so"
    # Not -d: in the foreground $! is libvirtd's own pid.
    LIBVIRT_LOCK_MANAGER_PLUGIN_DIR="$plugins" libvirtd >>"$LV_ROOT/libvirtd.out" 2>&1 &
    LV_LIBVIRTD=$!
    for _ in $(seq 300); do
        virsh -c qemu:///system version >/dev/null 2>&1 && return 0
        lv_alive "$LV_LIBVIRTD" || break
        sleep 0.05
    done
    echo "# libvirtd did not answer"; tail -20 /var/log/libvirt/libvirtd.log "$LV_ROOT/libvirtd.out" | sed 's/^/# /'; return 1
}

lv_stop_libvirtd() {
    lv_stop "$LV_LIBVIRTD" 10
    LV_LIBVIRTD=""
}

# lv_own_qemu_pids: the domains' QEMU pids our libvirtd recorded in our
# private /run (DOMAIN.pid; driver.pid there is libvirtd's own), only those
# whose process is a QEMU living in this mount namespace (so surely ours).
lv_own_qemu_pids() {
    local f pid me exe
    me=$(readlink /proc/self/ns/mnt)
    for f in /run/libvirt/qemu/*.pid; do
        [ -f "$f" ] && [ "${f##*/}" != driver.pid ] || continue
        pid=$(cat "$f" 2>/dev/null)
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null)
        [[ "${exe##*/}" == qemu-system-* ]] &&
            [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$me" ] && echo "$pid"
    done
}

lv_cleanup() {
    local d pid i
    if lv_alive "$LV_LIBVIRTD"; then
        for d in $(timeout 10 virsh -c qemu:///system list --name 2>/dev/null); do
            timeout 20 virsh -c qemu:///system destroy "$d" >/dev/null 2>&1
        done
    fi
    # QEMUs libvirtd could not destroy (it died, or timed out).
    for pid in $(lv_own_qemu_pids); do kill -9 "$pid" 2>/dev/null; done
    lv_stop_libvirtd
    lv_stop "$LV_VIRTLOCKD"; LV_VIRTLOCKD=""
    lv_stop "$LV_VIRTLOGD"; LV_VIRTLOGD=""
    lv_stop "$LV_VMLEASED"; LV_VMLEASED=""
    for ((i = ${#LV_MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${LV_MOUNTS[i]}" 2>/dev/null
    done
    LV_MOUNTS=()
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
