# Sourced by test-migration.sh, which runs in a network (and mount)
# namespace of its own: two libvirt "hosts" on one machine.
#
# Host N (1 or 2) is a mount + UTS namespace kept alive by an anchor process
# (`sleep infinity` under unshare) with hostname hostN, its own tmpfs /run,
# bind mounts over /etc/libvirt and /var/{lib,log,cache}/libvirt, its own
# vmleased (VMLEASE_ROOT=$MG_ROOT/hostN/vmlease; both use the one lockspace
# $MG_ROOT/shared/lockspace), virtlogd and `libvirtd --listen` on 127.0.0.(N+1)
# with lock_manager = "vmlease". Images live in $MG_ROOT/images, the same
# path on both hosts. on_host N CMD runs CMD there (nsenter into the anchor's
# namespaces). Every process is started here and its pid recorded; cleanup
# signals only those pids (and QEMUs found in our hosts' private /run whose
# mount namespace is one of our hosts').

: "${VMLEASED_BIN:?}" "${VMLEASE_BIN:?}" "${VMLEASE_PLUGIN:?}"
MG_ROOT=$(mktemp -d /tmp/vmlease-migration-XXXXXX)
MG_IMAGES=$MG_ROOT/images
MG_LOCKSPACE=$MG_ROOT/shared/lockspace
MG_MIG_PORT=49152
MG_TEST_NS=$(readlink /proc/self/ns/mnt)
mkdir -p "$MG_IMAGES" "$MG_LOCKSPACE"
declare -A MG_ANCHOR=() MG_VMLEASED=() MG_VIRTLOGD=() MG_LIBVIRTD=() MG_HOSTNS=() MG_SANLOCK=()
MG_JOBS=()          # background jobs: migrations, waiters
MG_POLLERS=()       # samplers and third parties of mg_pollers_start
MG_BACKEND=fcntl    # or sanlock (mg_use_sanlock)
MG_TC=0

mg_addr() { echo "127.0.0.$(($1 + 1))"; }
mg_uri() { echo "qemu+tcp://$(mg_addr "$1")/system"; }
mg_host_uuid() { printf '00000000-0000-4000-8000-00000000000%d\n' "$1"; }
mg_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
mg_quiet() { "$@" >/dev/null 2>&1; }
mg_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# mg_wait SECONDS CMD...: poll CMD every 50 ms until it succeeds; 1 on timeout.
mg_wait() {
    local end=$(($(mg_now_ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(mg_now_ms)" -ge $end ] && return 1
        sleep 0.05
    done
}

# mg_stop PID [SECONDS]: SIGTERM a process we started, SIGKILL after SECONDS
# (default 5), reap it.
mg_stop() {
    local pid=${1:-} t=${2:-5} i
    mg_alive "$pid" || { [ -n "$pid" ] && wait "$pid" 2>/dev/null; return 0; }
    kill "$pid" 2>/dev/null
    for ((i = 0; i < t * 20; i++)); do mg_alive "$pid" || break; sleep 0.05; done
    mg_alive "$pid" && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# on_host N CMD...: run CMD in host N's mount and UTS namespaces (the
# network namespace is the test's own), with host N's VMLEASE_ROOT.
on_host() {
    local h=$1
    shift
    [ -n "${MG_ANCHOR[$h]:-}" ] || { echo "# host$h is not up" >&2; return 125; }
    nsenter -t "${MG_ANCHOR[$h]}" -m -u -- env VMLEASE_ROOT="$MG_ROOT/host$h/vmlease" "$@"
}
# on_host_bg N CMD... &: the same as a background job whose pid ($!) is
# CMD's own: the job's subshell execs nsenter, which execs CMD. Only ever
# in the background (it refuses to replace the test's shell).
on_host_bg() {
    local h=$1
    shift
    [ "$BASHPID" != "$$" ] || { echo "# on_host_bg: not in a background job" >&2; return 125; }
    [ -n "${MG_ANCHOR[$h]:-}" ] || { echo "# host$h is not up" >&2; exit 125; }
    exec nsenter -t "${MG_ANCHOR[$h]}" -m -u -- env VMLEASE_ROOT="$MG_ROOT/host$h/vmlease" "$@"
}
# host N's private files seen from outside (through the anchor's root).
mg_hostpath() { echo "/proc/${MG_ANCHOR[$1]}/root$2"; }
vml() { local h=$1; shift; on_host "$h" "$VMLEASE_BIN" "$@"; }
vsh() { local h=$1; shift; timeout 120 virsh -q -c "$(mg_uri "$h")" "$@"; }
# mg_qemu_pid N DOMAIN: DOMAIN's QEMU pid on host N, from that host's /run.
mg_qemu_pid() { cat "$(mg_hostpath "$1" "/run/libvirt/qemu/$2.pid")" 2>/dev/null; }

mg_setup_users() {
    # libvirtd resolves these at start even when qemu.conf says root.
    for g in kvm libvirt libvirt-qemu; do getent group "$g" >/dev/null || groupadd -r "$g"; done
    getent passwd libvirt-qemu >/dev/null ||
        useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}

mg_network_up() {
    ip link set lo up || return 1
    # 127.0.0.0/8 is on lo: 127.0.0.2 and 127.0.0.3 answer already.
    ip -4 addr show dev lo | grep -q 'inet 127.0.0.1/8'
}

# mg_throttle RATE [buffered|paced]: the migration port (the destination
# port of both directions) at RATE (e.g. 2mbit), everything else at 10 Gbit/s.
# buffered (default): lo's MTU of 64 KiB, the default socket buffers and a
# 1000-packet queue swallow a small guest's whole RAM at once: the source
# pauses within a second and stays paused (its lease parked) while the
# queue drains for seconds. paced: a 16 KiB MTU, 32 KiB send buffers and a
# 64 KiB queue make QEMU itself wait: the source runs for seconds while its
# RAM trickles over, then the switchover is short.
# mg_throttle off: no qdisc, defaults back.
MG_TCP_WMEM=$(sysctl -n net.ipv4.tcp_wmem 2>/dev/null | tr -s '\t ' ' ')
mg_throttle() {
    if [ "$MG_TC" = 1 ]; then tc qdisc del dev lo root 2>/dev/null; MG_TC=0; fi
    ip link set lo mtu 65536
    [ -n "$MG_TCP_WMEM" ] && sysctl -qw net.ipv4.tcp_wmem="$MG_TCP_WMEM"
    [ "$1" = off ] && return 0
    tc qdisc add dev lo root handle 1: htb default 20 &&
        tc class add dev lo parent 1: classid 1:10 htb rate "$1" ceil "$1" &&
        tc class add dev lo parent 1: classid 1:20 htb rate 10gbit 2>/dev/null &&
        tc filter add dev lo protocol ip parent 1: prio 1 u32 \
            match ip dport "$MG_MIG_PORT" 0xffff flowid 1:10 || return 1
    MG_TC=1
    if [ "${2:-buffered}" = paced ]; then
        ip link set lo mtu 16384 &&
            sysctl -qw net.ipv4.tcp_wmem="4096 16384 32768" &&
            tc qdisc add dev lo parent 1:10 handle 10: bfifo limit 65536 || return 1
    fi
}

mg_write_configs() {   # N
    local h=$1 H=$MG_ROOT/host$1 addr
    addr=$(mg_addr "$h")
    cat > "$H/fs/etc/libvirt/libvirtd.conf" <<CONF
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = "$addr"
host_uuid = "$(mg_host_uuid "$h")"
log_level = 3
log_filters = "1:locking 1:qemu.qemu_migration 1:qemu.qemu_process"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
CONF
    cat > "$H/fs/etc/libvirt/qemu.conf" <<CONF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
lock_manager = "vmlease"
migration_address = "$addr"
migration_host = "$addr"
CONF
    cat > "$H/fs/etc/libvirt/qemu-vmlease.conf" <<CONF
socket_dir = "$H/vmlease/run"
backend = "$MG_BACKEND"
CONF
    [ "$MG_BACKEND" = fcntl ] && echo "lockspace_dir = \"$MG_LOCKSPACE\"" >> "$H/fs/etc/libvirt/qemu-vmlease.conf"
    # VMLEASE_ROOT gives run/ and state/ per host; this default config file
    # of VMLEASE_ROOT points both hosts at one lockspace.
    if [ "$MG_BACKEND" = fcntl ]; then
        cat > "$H/vmlease/vmleased.conf" <<CONF
lockspace_dir = "$MG_LOCKSPACE"
log_level = "debug"
CONF
    else
        cat > "$H/vmlease/vmleased.conf" <<CONF
backend = "sanlock"
host_id = $h
lockspace_path = "$MG_SANLOCK_DIR/lockspace"
lease_dir = "$MG_SANLOCK_DIR/leases"
io_timeout = 2
log_level = "debug"
CONF
    fi
}

# the anchor has unshared and exec'd sleep
mg_anchor_ready() {
    local ns exe
    ns=$(readlink "/proc/$1/ns/mnt" 2>/dev/null) && exe=$(readlink "/proc/$1/exe" 2>/dev/null) &&
        [ "$ns" != "$MG_TEST_NS" ] && [ "${exe##*/}" = sleep ]
}

# mg_host_up N: namespaces, mounts, configs, vmleased, virtlogd, libvirtd.
mg_host_up() {
    local h=$1 H=$MG_ROOT/host$1 d pid
    mkdir -p "$H/vmlease" "$H/log"
    for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do mkdir -p "$H/fs$d"; done
    mkdir -p "$H/fs/var/log/libvirt/qemu" "$H/fs/var/lib/libvirt/qemu" "$H/fs/var/cache/libvirt/qemu"
    unshare --mount --uts --propagation private -- sleep infinity &
    pid=$!
    MG_ANCHOR[$h]=$pid
    # unshare has run once the anchor's mount namespace is no longer ours.
    if ! mg_wait 5 mg_anchor_ready "$pid"; then
        echo "# host$h: no namespaces"; return 1
    fi
    MG_HOSTNS[$h]=$(readlink "/proc/$pid/ns/mnt")
    [ -n "${MG_HOSTNS[$h]}" ] && [ "${MG_HOSTNS[$h]}" != "$MG_TEST_NS" ] || return 1
    # Mount only after checking, inside, that this is the host's namespace.
    on_host "$h" bash -c '
        set -e
        [ "$(readlink /proc/self/ns/mnt)" = "$1" ] || { echo "not in host namespace" >&2; exit 1; }
        hostname "host$2"
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -p /run/libvirt /run/lock
        ln -s /dev/shm /run/shm
        for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
            mkdir -p "$d"
            mount --bind "$3/fs$d" "$d"
        done' mounts "${MG_HOSTNS[$h]}" "$h" "$H" || { echo "# host$h: mounts failed"; return 1; }
    mg_write_configs "$h"
    if [ "$MG_BACKEND" = sanlock ]; then mg_start_sanlock "$h" || return 1; fi
    mg_start_vmleased "$h" || return 1
    mg_start_libvirtd "$h"
}

# ---- sanlock (f): a sanlock daemon per host, one lockspace for both ----
MG_SHIM="" MG_SANLOCK_DIR="" MG_LOOP="" MG_LOOP_MNT=""

# mg_use_sanlock SHIM: the next mg_host_up runs sanlock daemons (with the
# setrlimit shim preloaded, no watchdog, no mlock: see TESTING-NOTES) and
# vmleased on backend sanlock, host_id N, lockspace and leases in one
# directory that supports O_DIRECT (a loop-mounted ext4 if $MG_ROOT does not).
mg_use_sanlock() {
    MG_SHIM=$1 MG_BACKEND=sanlock MG_SANLOCK_DIR=$MG_ROOT/sanlock
    mkdir -p "$MG_SANLOCK_DIR"
    if ! dd if=/dev/zero of="$MG_SANLOCK_DIR/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
        truncate -s 64M "$MG_ROOT/sanlock.ext4" && mkfs.ext4 -q "$MG_ROOT/sanlock.ext4" &&
            MG_LOOP=$(losetup -f --show "$MG_ROOT/sanlock.ext4") &&
            mount "$MG_LOOP" "$MG_SANLOCK_DIR" && MG_LOOP_MNT=$MG_SANLOCK_DIR ||
            { echo "# no O_DIRECT storage for sanlock"; return 1; }
    fi
    rm -f "$MG_SANLOCK_DIR/probe"
    mkdir -p "$MG_SANLOCK_DIR/leases"
    truncate -s 1M "$MG_SANLOCK_DIR/lockspace"
    # Initialised once here, so that both hosts' vmleaseds may join at once.
    sanlock direct init -s "vmlease:0:$MG_SANLOCK_DIR/lockspace:0" >/dev/null
}

mg_start_sanlock() {   # N
    local h=$1
    on_host "$h" mkdir -p /run/sanlock
    # -L -1: no /var/log/sanlock.log (shared); -D logs to stderr.
    on_host_bg "$h" env LD_PRELOAD="$MG_SHIM" sanlock daemon -D -w 0 -l 0 -L -1 -U root -G root -o 2 \
        >>"$MG_ROOT/host$h/log/sanlock.log" 2>&1 &
    MG_SANLOCK[$h]=$!
    mg_wait 10 test -S "$(mg_hostpath "$h" /run/sanlock/sanlock.sock)" && return 0
    echo "# host$h: sanlock daemon did not start"
    tail -5 "$MG_ROOT/host$h/log/sanlock.log" | sed 's/^/# /'
    return 1
}

# mg_sanlock_joined: both hosts see both live in `vmlease hosts`.
mg_sanlock_joined() {
    local h s
    for h in 1 2; do
        s=$(vml "$h" hosts --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join("%s:%s" % (h["host"], h["state"]) for h in sorted(d["hosts"], key=lambda h: h["host_id"])))' 2>/dev/null)
        [ "$s" = "host1:live host2:live" ] || return 1
    done
}

mg_start_vmleased() {   # N
    local h=$1
    on_host_bg "$h" "$VMLEASED_BIN" --foreground >>"$MG_ROOT/host$h/log/vmleased.log" 2>&1 &
    MG_VMLEASED[$h]=$!
    mg_wait 10 mg_quiet vml "$h" status && return 0
    echo "# host$h: vmleased did not start"
    tail -5 "$MG_ROOT/host$h/log/vmleased.log" | sed 's/^/# /'
    return 1
}

mg_start_libvirtd() {   # N
    local h=$1 H=$MG_ROOT/host$1 p plugins=$MG_ROOT/lock-driver
    if [ ! -d "$plugins" ]; then
        # libvirt looks in one directory: libvirt's own plugins plus ours.
        mkdir -p "$plugins"
        for p in /usr/lib/*/libvirt/lock-driver/*.so; do [ -e "$p" ] && ln -sf "$p" "$plugins/"; done
        ln -sf "$VMLEASE_PLUGIN" "$plugins/vmlease.so"
    fi
    if ! mg_alive "${MG_VIRTLOGD[$h]:-}"; then
        on_host_bg "$h" virtlogd >>"$H/log/virtlogd.out" 2>&1 &
        MG_VIRTLOGD[$h]=$!
        mg_wait 10 test -S "$(mg_hostpath "$h" /run/libvirt/virtlogd-sock)" ||
            { echo "# host$h: virtlogd did not start"; return 1; }
    fi
    # QEMU's capabilities probed by the first libvirtd (seconds per binary)
    # serve the others: same binaries, same machine.
    local caps=$H/fs/var/cache/libvirt/qemu/capabilities
    [ -d "$MG_ROOT/capcache" ] && [ ! -d "$caps" ] && cp -a "$MG_ROOT/capcache" "$caps"
    # In the foreground (no -d): $! is libvirtd itself.
    on_host_bg "$h" env LIBVIRT_LOCK_MANAGER_PLUGIN_DIR="$plugins" libvirtd --listen \
        >>"$H/log/libvirtd.out" 2>&1 &
    MG_LIBVIRTD[$h]=$!
    if mg_wait 30 mg_quiet timeout 5 virsh -c "$(mg_uri "$h")" version; then
        [ -d "$MG_ROOT/capcache" ] || [ ! -d "$caps" ] || cp -a "$caps" "$MG_ROOT/capcache"
        return 0
    fi
    echo "# host$h: libvirtd did not answer on $(mg_uri "$h")"
    tail -5 "$H/log/libvirtd.out" "$H/fs/var/log/libvirt/libvirtd.log" 2>/dev/null | sed 's/^/# /'
    return 1
}

# mg_own_qemu_pids N: the pids of the domains' QEMUs in host N's private
# /run/libvirt/qemu (DOMAIN.pid; driver.pid there is libvirtd's own) whose
# process is a QEMU living in host N's mount namespace: surely ours.
mg_own_qemu_pids() {
    local h=$1 f pid exe
    [ -n "${MG_ANCHOR[$h]:-}" ] && mg_alive "${MG_ANCHOR[$h]}" || return 0
    for f in "$(mg_hostpath "$h" /run/libvirt/qemu)"/*.pid; do
        [ -f "$f" ] && [ "${f##*/}" != driver.pid ] || continue
        pid=$(cat "$f" 2>/dev/null)
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null)
        [[ "${exe##*/}" == qemu-system-* ]] &&
            [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "${MG_HOSTNS[$h]}" ] && echo "$pid"
    done
}

mg_host_down() {   # N
    local h=$1 d pid
    if mg_alive "${MG_LIBVIRTD[$h]:-}"; then
        for d in $(timeout 10 virsh -q -c "$(mg_uri "$h")" list --name 2>/dev/null); do
            timeout 20 virsh -q -c "$(mg_uri "$h")" destroy "$d" >/dev/null 2>&1
        done
    fi
    for pid in $(mg_own_qemu_pids "$h"); do kill -9 "$pid" 2>/dev/null; done
    mg_stop "${MG_LIBVIRTD[$h]:-}" 10
    mg_stop "${MG_VIRTLOGD[$h]:-}"
    mg_stop "${MG_VMLEASED[$h]:-}"
    # sanlock stops (and reaps its helper) when told to, even with lockspaces.
    if mg_alive "${MG_SANLOCK[$h]:-}"; then
        on_host "$h" timeout 5 sanlock shutdown -f 1 >/dev/null 2>&1
        mg_stop "${MG_SANLOCK[$h]}" 3
    fi
    MG_SANLOCK[$h]=""
    MG_LIBVIRTD[$h]="" MG_VIRTLOGD[$h]="" MG_VMLEASED[$h]=""
    if mg_alive "${MG_ANCHOR[$h]:-}"; then
        on_host "$h" bash -c 'for d in /var/cache/libvirt /var/log/libvirt /var/lib/libvirt /etc/libvirt /run; do
                                  umount -l "$d"; done' 2>/dev/null
        mg_stop "${MG_ANCHOR[$h]}"
    fi
    MG_ANCHOR[$h]=""
}

# mg_strays: pids of processes still carrying this run's VMLEASE_ROOT (every
# on_host command does; $MG_ROOT is unique to this run), none of them known.
mg_strays() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
        tr '\0' '\n' 2>/dev/null < "/proc/$p/environ" | grep -qx "VMLEASE_ROOT=$MG_ROOT/host[12]/vmlease" &&
            echo "$p"
    done
}

mg_cleanup() {
    local pid h strays
    for pid in "${MG_POLLERS[@]}" "${MG_JOBS[@]}"; do mg_stop "$pid" 2; done
    MG_POLLERS=() MG_JOBS=()
    for h in 1 2; do mg_host_down "$h"; done
    # A harness bug would leave some: say so, and end them.
    strays=$(mg_strays)
    if [ -n "$strays" ]; then
        echo "# cleanup: stray processes of this run: $(for pid in $strays; do
            printf '%s(%s) ' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done)"
        kill -9 $strays 2>/dev/null
    fi
    mg_throttle off
    if [ -n "$MG_LOOP_MNT" ]; then umount "$MG_LOOP_MNT" 2>/dev/null || umount -l "$MG_LOOP_MNT"; fi
    [ -n "$MG_LOOP" ] && losetup -d "$MG_LOOP"
    MG_LOOP="" MG_LOOP_MNT=""
    [ -n "${VMLEASE_KEEP:-}" ] && { echo "# kept $MG_ROOT"; return 0; }
    rm -rf "$MG_ROOT"
}

# A domain that starts without a guest OS: TCG unless /dev/kvm works.
mg_domain_xml() {   # NAME UUID DISK
    local type=qemu
    [ -c /dev/kvm ] && [ -w /dev/kvm ] && type=kvm
    cat <<XML
<domain type='$type'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$3'/><target dev='vda' bus='virtio'/></disk>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

# ---- pollers: a sampler of `vmlease owners` and a third party writer ----

cat > "$MG_ROOT/sampler.py" <<'PY'
# sampler.py VMLEASE DISK OUT STOPFILE INTERVAL: every INTERVAL seconds run
# `VMLEASE owners --json DISK`; one line per sample to OUT:
#   MS RC OWNER...   with OWNER = host:pid:mode:uuid:state (state in-use or
#   parked-REASON); RC is the CLI's exit status (or "json" if unparsable).
import json, os, subprocess, sys, time
vmlease, disk, out, stop, interval = sys.argv[1:6]
interval = float(interval)
real = os.path.realpath(disk)
with open(out, "w") as f:
    while not os.path.exists(stop):
        t = time.time()
        p = subprocess.run([vmlease, "owners", "--json", disk], capture_output=True, text=True)
        rc, owners = str(p.returncode), []
        if p.returncode == 0:
            try:
                for r in json.loads(p.stdout)["resources"]:
                    if r.get("path", r["resource"]) == real:
                        owners += r["owners"]
            except (ValueError, KeyError, TypeError):
                rc = "json"
        f.write("%d %s %s\n" % (t * 1000, rc, " ".join(
            "%s:%s:%s:%s:%s" % (o.get("host"), o.get("pid"), o.get("mode"), o.get("uuid"),
                                "parked-" + o["parked"] if o.get("parked") else "in-use")
            for o in owners)))
        f.flush()
        time.sleep(max(0.0, interval - (time.time() - t)))
PY

cat > "$MG_ROOT/summary.py" <<'PY'
# summary.py SAMPLES UUID: "samples=N no_holder=M errors=E foreign=F
# parked=P" and the sequence of distinct owner sets seen (host:pid:state).
import sys
path, uuid = sys.argv[1:3]
n = none = err = foreign = parked = 0
seq = []
for line in open(path):
    parts = line.split()
    if len(parts) < 2:
        continue
    n += 1
    if parts[1] != "0":
        err += 1
        continue
    owners = parts[2:]
    if not owners:
        none += 1
    if any(o.split(":")[3] != uuid for o in owners):
        foreign += 1
    if any(":parked-" in o for o in owners):
        parked += 1
    key = ",".join(sorted("%s:%s:%s:%s" % tuple(o.split(":")[i] for i in (0, 1, 2, 4)) for o in owners)) or "NONE"
    if not seq or seq[-1][0] != key:
        seq.append([key, 1])
    else:
        seq[-1][1] += 1
print("samples=%d no_holder=%d errors=%d foreign=%d parked=%d" % (n, none, err, foreign, parked))
print("sequence: " + " -> ".join("%s x%d" % (k, c) for k, c in seq))
PY

# mg_pollers_start DISK UUID: on each host a sampler (every 50 ms) and a
# third party looping `vmlease run --exclusive DISK -- qemu-io ... write`.
# Results in $MG_ROOT/poll/{samples,third,third-msgs}.N.
mg_pollers_start() {
    local disk=$1 h
    MG_POLL_UUID=$2
    rm -rf "$MG_ROOT/poll"
    mkdir -p "$MG_ROOT/poll"
    for h in 1 2; do
        on_host_bg "$h" python3 "$MG_ROOT/sampler.py" "$VMLEASE_BIN" "$disk" \
            "$MG_ROOT/poll/samples.$h" "$MG_ROOT/poll/stop" 0.05 &
        MG_POLLERS+=($!)
        on_host_bg "$h" bash -c '
            vmlease=$1 disk=$2 log=$3 msgs=$4 stop=$5
            while [ ! -e "$stop" ]; do
                out=$("$vmlease" run --exclusive "$disk" -- \
                      qemu-io -f qcow2 -c "write -P 0xee 1M 64k" "$disk" 2>&1)
                rc=$?
                case $rc in
                    0) class=wrote ;;
                    3) class=refused ;;
                    *) if [[ "$out" == *"Failed to get \"write\" lock"* ]]; then class=granted-qemu-locked
                       else class=other; fi ;;
                esac
                echo "$(($(date +%s%N) / 1000000)) $rc $class" >> "$log"
                [ $class = refused ] || printf "%s\n" "$class: $out" >> "$msgs"
                [ $class = refused ] && printf "%s\n" "$out" | head -1 >> "$msgs.refused"
                sleep 0.02
            done' third "$VMLEASE_BIN" "$disk" "$MG_ROOT/poll/third.$h" \
            "$MG_ROOT/poll/third-msgs.$h" "$MG_ROOT/poll/stop" &
        MG_POLLERS+=($!)
    done
    # both samplers have a first sample
    mg_wait 10 test -s "$MG_ROOT/poll/samples.1" -a -s "$MG_ROOT/poll/samples.2"
}

mg_pollers_stop() {
    local pid
    touch "$MG_ROOT/poll/stop"
    for pid in "${MG_POLLERS[@]}"; do
        mg_wait 10 eval '! kill -0 '"$pid"' 2>/dev/null' || kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    MG_POLLERS=()
}

# mg_sample_summary N: the summary of host N's sampler (two lines).
mg_sample_summary() { python3 "$MG_ROOT/summary.py" "$MG_ROOT/poll/samples.$1" "$MG_POLL_UUID"; }
# mg_third_summary N: "attempts=N refused=N wrote=N granted=N other=N".
mg_third_summary() {
    awk '{ n++; c[$3]++ } END { printf "attempts=%d refused=%d wrote=%d granted-qemu-locked=%d other=%d\n",
        n, c["refused"], c["wrote"], c["granted-qemu-locked"], c["other"] }' "$MG_ROOT/poll/third.$1" 2>/dev/null
}
