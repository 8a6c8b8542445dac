#!/usr/bin/env bash
# vmlease.so inside a real libvirtd + QEMU, flow by flow: the exact lease set
# (`vmlease owners --json`: holder pid, exclusive/shared, parked) of every
# image involved before and after change-media, disk-only snapshots, block
# commit, pull and copy, hotplug, and suspend / managedsave / save. After
# each step an "attacker" (`vmlease run --exclusive IMG -- true`) must be
# refused, naming the domain, on every image the VM still uses, and must get
# every image it no longer uses. Each case defines, starts and destroys its
# own domain on its own images (base <- mid <- top, 16M qcow2), so a failure
# does not cascade. The last case SIGKILLs vmleased while a hotplugged disk,
# a snapshot overlay and a blockcopy destination are leased (kept by the
# VM's mailbox alone): plain fcntl locks and second vmleaseds on the
# lockspace are refused on every image until it is back and shows them all.
# TAP output; SKIP only where libvirtd/QEMU are missing.
set -u
if [ -z "${VMLEASE_IN_NS:-}" ]; then
    # A private mount namespace: libvirt's directories get bind mounts
    # that vanish with the test.
    exec env VMLEASE_IN_NS=1 unshare --mount --propagation private "$BASH" "$0" "$@"
fi
for tool in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img python3 timeout; do
    if ! command -v "$tool" >/dev/null; then
        echo "1..0 # SKIP $tool is not installed"
        exit 0
    fi
done
. "$(dirname "$0")/libvirt-env.sh"

BG_PIDS=()          # background samplers this script started
flows_cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do lv_stop "$p" 2; done
    lv_cleanup
}
trap flows_cleanup EXIT

T0=$SECONDS
. "$(dirname "$0")/../tap.sh"
vt() { timeout "${VT_TIMEOUT:-90}" virsh -c qemu:///system "$@"; }   # virsh, bounded
vmlease() { timeout 20 "$VMLEASE_BIN" "$@"; }

# leases IMG...: one token per image, "NAME=PID:MODE[:parked=STATE]" for each
# owner (several joined by ","), "NAME=-" when nobody holds it; NAME is the
# image's file name without .qcow2/.iso. Paths must exist.
LEASES_PY='
import json, os, sys
got = {}
for r in json.load(sys.stdin)["resources"]:
    got[r.get("path", r["resource"])] = sorted(
        "%s:%s%s" % (o["pid"], o["mode"], (":parked=%s" % o["parked"]) if "parked" in o else "")
        for o in r["owners"])
out = []
for p in sys.argv[1:]:
    name = os.path.basename(p)
    for ext in (".qcow2", ".iso"):
        if name.endswith(ext):
            name = name[:-len(ext)]
    out.append("%s=%s" % (name, ",".join(got.get(os.path.realpath(p), [])) or "-"))
print(" ".join(out))'
leases() { vmlease owners --json "$@" | python3 -c "$LEASES_PY" "$@"; }

# diag IMG...: what a failure report needs: the owners JSON of the images,
# the domain's disks and the end of vmleased's log.
diag() {
    echo "# owners --json:"
    vmlease owners --json "$@" 2>&1 | python3 -c '
import json, sys
try:
    for r in json.load(sys.stdin)["resources"]:
        print(json.dumps(r, sort_keys=True))
except Exception as e:
    print("unparsable:", e)' | sed 's/^/#   /'
    if [ -n "${DOM:-}" ]; then
        echo "# virsh domblklist $DOM --details:"
        vt domblklist "$DOM" --details 2>&1 | sed 's/^/#   /'
    fi
    echo "# vmleased.log (tail):"
    tail -n 15 "$LV_ROOT/vmleased.log" | cut -c1-400 | sed 's/^/#   /'
}

# expect, refused and grabbable report one TAP line each and return 0, so
# that a chain "run_ok STEP && expect ... && refused ..." stops only when
# the libvirt step itself failed.
# expect DESC EXPECTED IMG...: the lease set of IMG... is exactly EXPECTED
# (in leases' format). Waits up to 5 s for it (detach and block job ends
# reach vmleased a little after virsh returns), then reads it once more
# after 0.3 s: a set that is only right for an instant does not pass.
expect() {
    local desc=$1 want=$2 got end=$((SECONDS + 5))
    shift 2
    while :; do
        got=$(leases "$@" 2>&1)
        [ "$got" = "$want" ] && break
        [ $SECONDS -ge $end ] && break
        sleep 0.05
    done
    if [ "$got" = "$want" ]; then
        sleep 0.3
        got=$(leases "$@" 2>&1)
    fi
    if [ "$got" = "$want" ]; then
        ok "$desc: $want"
    else
        not_ok "$desc" "expected: $want" "got:      $got"
        diag "$@"
    fi
    return 0   # the step is reported; the flow goes on
}

# refused DESC IMG...: an attacker wanting IMG exclusively is refused
# (non-zero exit) with a message naming $DOM, for each IMG.
refused() {
    local desc=$1 img out rc bad=() rcs=""
    shift
    for img in "$@"; do
        out=$(vmlease run --exclusive "$img" -- true 2>&1)
        rc=$?
        rcs+=" ${img##*/}:$rc"
        if [ $rc -eq 0 ] || [[ "$out" != *"\"$DOM\""* ]]; then
            bad+=("$img: exit $rc: ${out:-(no message)}")
        fi
    done
    if [ ${#bad[@]} -eq 0 ]; then
        ok "$desc: exclusive refused naming $DOM (exit$rcs)"
    else
        not_ok "$desc: exclusive must be refused naming $DOM" "${bad[@]}"
        diag "$@"
    fi
    return 0   # the step is reported; the flow goes on
}

# grabbable DESC IMG...: an attacker gets each IMG exclusively (the VM let go).
grabbable() {
    local desc=$1 img out rc bad=()
    shift
    for img in "$@"; do
        out=$(vmlease run --exclusive "$img" -- true 2>&1)
        rc=$?
        [ $rc -eq 0 ] || bad+=("$img: exit $rc: $out")
    done
    if [ ${#bad[@]} -eq 0 ]; then
        ok "$desc: an attacker gets $(printf '%s ' "${@##*/}")exclusively"
    else
        not_ok "$desc: an attacker must get the images the VM let go" "${bad[@]}"
        diag "$@"
    fi
    return 0   # the step is reported; the flow goes on
}

# refused_for_backing DESC BACKING IMG...: the VM let go of each IMG, but its
# qcow2 header still names BACKING, which the VM holds exclusively, and
# `vmlease run` leases an image's backing chain shared: the attacker on IMG
# is refused for BACKING alone (the message names BACKING, not IMG).
refused_for_backing() {
    local desc=$1 back=$2 img out rc bad=()
    shift 2
    for img in "$@"; do
        out=$(vmlease run --exclusive "$img" -- true 2>&1)
        rc=$?
        if [ $rc -ne 3 ] || [[ "$out" != *"cannot lock $back (resource "*") shared: in use by VM \"$DOM\""* ]] ||
           [[ "$out" == *"lock $img "* ]]; then
            bad+=("$img: exit $rc: ${out:-(no message)}")
        fi
    done
    if [ ${#bad[@]} -eq 0 ]; then
        ok "$desc: an attacker on $(printf '%s ' "${@##*/}")is refused only for their backing ${back##*/}"
    else
        not_ok "$desc: an attacker on $* must be refused for ${back##*/} alone" "${bad[@]}"
        diag "$@" "$back"
    fi
    return 0
}

qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }

scsi_disk() {   # PATH TARGET
    echo "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$1'/><target dev='$2' bus='scsi'/></disk>"
}
cdrom() {       # PATH TARGET
    echo "    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='$1'/><target dev='$2' bus='scsi'/><readonly/></disk>"
}

# case_begin NAME [DISK-XML...]: a fresh directory D with base <- mid <- top,
# a persistent domain NAME (= $DOM) booting from top on sda (virtio-scsi:
# unpluggable without a guest) plus DISK-XML, started; P = its QEMU pid.
# Any other images go into "$D" before the call (see mkimg). Returns non-zero
# (after a not ok) when the domain does not start.
CASE_NO=0
D="" DOM="" P="" base="" mid="" top=""
mkdir_case() {
    CASE_NO=$((CASE_NO + 1))
    D="$LV_ROOT/case$CASE_NO"
    mkdir -p "$D"
    base="$D/base.qcow2" mid="$D/mid.qcow2" top="$D/top.qcow2"
    qemu-img create -q -f qcow2 "$base" 16M
    qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$mid"
    qemu-img create -q -f qcow2 -b "$mid" -F qcow2 "$top"
}
case_begin() {
    DOM=$1
    shift
    local uuid out
    uuid=$(printf '11111111-2222-4333-8444-6666666666%02d' "$CASE_NO")
    echo "# --- case $CASE_NO: $DOM ($D)"
    lv_domain_xml "$DOM" "$uuid" \
        "    <controller type='scsi' index='0' model='virtio-scsi'/>" \
        "$(scsi_disk "$top" sda)" "$@" > "$D/$DOM.xml"
    if ! out=$(vt define "$D/$DOM.xml" 2>&1 && vt start "$DOM" 2>&1); then
        not_ok "$DOM: define + start" "$out"
        diag "$top" "$mid" "$base"
        return 1
    fi
    P=$(qemu_pid "$DOM")
    echo "# $DOM runs, QEMU pid $P"
}
# case_end IMG...: destroy and undefine $DOM; every IMG is free at once.
case_end() {
    local out
    out=$(vt destroy "$DOM" 2>&1) || echo "# destroy $DOM: $out"
    expect "$DOM destroyed: every image free" \
        "$(for i in "$@"; do f=${i##*/}; f=${f%.qcow2}; printf '%s=- ' "${f%.iso}"; done | sed 's/ $//')" "$@"
    vt undefine "$DOM" --snapshots-metadata --managed-save >/dev/null 2>&1
    DOM=""
}
# run_ok DESC CMD...: CMD (a virsh call) must succeed.
run_ok() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        return 0
    fi
    not_ok "$desc" "$* failed:" "$out"
    diag "$top" "$mid" "$base"
    return 1
}
chain3() { echo "top=$P:exclusive mid=$P:shared base=$P:shared"; }

# --- samplers for the short windows of managedsave and save ---------------
# A python loop (a bash one with python for each sample is too slow for a
# window of a few tens of ms): "owners" records the lease set of IMG with
# whether QEMU PID still lived (and was no zombie) right after the read;
# "attack" tries `vmlease run --exclusive IMG -- true` again and again and
# records the exit status the same way. Both stop when STOPFILE appears.
SAMPLER_PY='
import json, os, subprocess, sys
mode, vml, img, pid, stop, out = sys.argv[1:7]
def alive():
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
real = os.path.realpath(img)
with open(out, "w") as log:
    while not os.path.exists(stop):
        if mode == "owners":
            r = subprocess.run([vml, "owners", "--json", img], capture_output=True, text=True)
            try:
                owners = [o for x in json.loads(r.stdout)["resources"] if x.get("path") == real
                          for o in x["owners"]]
                tok = ",".join("%s:%s%s" % (o["pid"], o["mode"],
                               (":parked=%s" % o["parked"]) if "parked" in o else "")
                               for o in owners) or "-"
            except Exception:
                tok = "error"
        else:
            r = subprocess.run([vml, "run", "--exclusive", img, "--", "true"],
                               capture_output=True, text=True)
            tok = str(r.returncode)
        log.write("%s %s %d\n" % (mode, tok, alive()))
        log.flush()
'
sampler_start() {   # IMG PID TAG: owners and attack loops in the background
    rm -f "$D/$3.stop"
    python3 -c "$SAMPLER_PY" owners "$VMLEASE_BIN" "$1" "$2" "$D/$3.stop" "$D/$3.owners" &
    BG_PIDS+=($!)
    python3 -c "$SAMPLER_PY" attack "$VMLEASE_BIN" "$1" "$2" "$D/$3.stop" "$D/$3.attack" &
    BG_PIDS+=($!)
    # both loops have taken a sample before the flow goes on
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$D/$3.owners" ] && [ -s "$D/$3.attack" ] && return 0
        sleep 0.025
    done
    echo "# samplers for $3 did not start"
}
sampler_stop() {    # TAG
    local p
    touch "$D/$1.stop"
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    BG_PIDS=()
}
# sampler_judge DESC TAG: while QEMU lived, the lease was never missing, once
# parked it stayed parked, and the attacker never got it; both loops sampled
# while QEMU lived (they start before the flow). How many samples fell into
# the parked window (a few tens of ms) is only reported.
sampler_judge() {
    local desc=$1 tag=$2 res
    res=$(python3 - "$D/$tag.owners" "$D/$tag.attack" "$P" <<'PY'
import sys
own, att, pid = sys.argv[1:4]
bad, samples, parked, live, seen_park, attempts, refused = [], 0, 0, 0, False, 0, 0
for line in open(own):
    _, tok, alive = line.split()
    samples += 1
    if "parked=" in tok:
        parked += 1
        seen_park = True
    if alive != "1":
        continue
    live += 1
    if tok == "-" or tok == "error":
        bad.append("QEMU %s alive, owners: %s" % (pid, tok))
    elif not tok.startswith(pid + ":exclusive"):
        bad.append("QEMU %s alive, owners: %s (not the domain's pid, exclusive)" % (pid, tok))
    elif seen_park and "parked=" not in tok:
        bad.append("unparked again while QEMU %s lived: %s" % (pid, tok))
for line in open(att):
    _, rc, alive = line.split()
    attempts += 1
    if rc != "0":
        refused += 1
    elif alive == "1":
        bad.append("attacker got the image exclusively while QEMU %s lived" % pid)
if live == 0:
    bad.append("no owners sample while QEMU %s lived" % pid)
if not any(l.split()[2] == "1" for l in open(att)):
    bad.append("no attack while QEMU %s lived" % pid)
print("%d samples (%d while QEMU lived, %d parked), %d attacks (%d refused)|%s"
      % (samples, live, parked, attempts, refused, ";".join(sorted(set(bad)))))
PY
)
    if [ -z "${res#*|}" ]; then
        ok "$desc (${res%%|*})"
    else
        local IFS=';'
        # shellcheck disable=SC2086
        not_ok "$desc (${res%%|*})" ${res#*|}
        diag "$top" "$mid" "$base"
    fi
}

lv_setup_users
lv_mount_private || { echo "Bail out! no private /run and libvirt directories"; exit 1; }
lv_start_vmleased || { echo "1..0 # SKIP vmleased did not start"; exit 1; }
lv_start_libvirtd || { echo "Bail out! libvirtd did not start"; exit 1; }

# ===== 1. change-media on a cdrom ========================================
flow_change_media() {
    mkdir_case
    local cd1="$D/cd1.iso" cd2="$D/cd2.iso"
    qemu-img create -q -f raw "$cd1" 1M
    qemu-img create -q -f raw "$cd2" 1M
    case_begin f1-media "$(cdrom "$cd1" sdb)" || return
    local all=("$top" "$mid" "$base" "$cd1" "$cd2")
    expect "media: start" "$(chain3) cd1=$P:shared cd2=-" "${all[@]}"
    refused "media: start" "$top" "$mid" "$base" "$cd1"
    # the boot disk's lease, watched all through the media changes
    rm -f "$D/watch.stop"
    python3 -c "$SAMPLER_PY" owners "$VMLEASE_BIN" "$top" "$P" "$D/watch.stop" "$D/watch.owners" &
    BG_PIDS+=($!)

    run_ok "change-media --eject" vt change-media "$DOM" sdb --eject --live &&
        expect "media: after --eject" "$(chain3) cd1=- cd2=-" "${all[@]}" &&
        refused "media: after --eject, the disks" "$top" "$mid" "$base" &&
        grabbable "media: after --eject" "$cd1"

    run_ok "change-media --insert" vt change-media "$DOM" sdb "$cd2" --insert --live &&
        expect "media: after --insert cd2" "$(chain3) cd1=- cd2=$P:shared" "${all[@]}" &&
        refused "media: after --insert cd2" "$top" "$mid" "$base" "$cd2" &&
        grabbable "media: after --insert cd2" "$cd1"

    run_ok "change-media --update" vt change-media "$DOM" sdb "$cd1" --update --live &&
        expect "media: after --update cd1" "$(chain3) cd1=$P:shared cd2=-" "${all[@]}" &&
        refused "media: after --update cd1" "$top" "$mid" "$base" "$cd1" &&
        grabbable "media: after --update cd1" "$cd2"

    sampler_stop watch
    local res
    res=$(awk -v want="$P:exclusive" '{ n++; if ($2 != want) { b++; if (!x) x = $2 } }
        END { printf "%d %d %s", n, b, x }' "$D/watch.owners")
    set -- $res
    if [ "${1:-0}" -gt 0 ] && [ "${2:-1}" -eq 0 ]; then
        ok "media: the boot disk stayed exclusive to $P all along ($1 samples)"
    else
        not_ok "media: the boot disk must stay exclusive to $P all along" \
            "$1 samples, $2 otherwise, e.g. ${3:-?}"
    fi
    case_end "${all[@]}"
}

# ===== 2. disk-only snapshots ============================================
flow_snapshot() {   # VARIANT: metadata | no-metadata | reuse-external
    mkdir_case
    local snap="$D/snap.qcow2" flags=()
    case $1 in
        no-metadata) flags=(--no-metadata) ;;
        reuse-external)
            flags=(--reuse-external)
            qemu-img create -q -f qcow2 -b "$top" -F qcow2 "$snap" ;;
    esac
    case_begin "f2-snap-$1" || return
    local all=("$top" "$mid" "$base")
    expect "snapshot $1: before" "$(chain3)" "${all[@]}"
    run_ok "snapshot-create-as $1" vt snapshot-create-as "$DOM" s1 --disk-only "${flags[@]}" \
        --diskspec "sda,file=$snap" || { case_end "${all[@]}"; return; }
    all=("$snap" "${all[@]}")
    expect "snapshot $1: after" \
        "snap=$P:exclusive top=$P:shared mid=$P:shared base=$P:shared" "${all[@]}"
    refused "snapshot $1: after" "${all[@]}"
    if [ "$1" = metadata ]; then
        # and one more on top of it: the chain is four deep now
        local snap2="$D/snap2.qcow2"
        run_ok "second snapshot-create-as --no-metadata" vt snapshot-create-as "$DOM" s2 \
            --disk-only --no-metadata --diskspec "sda,file=$snap2" && {
            all=("$snap2" "${all[@]}")
            expect "snapshot $1: after a second, --no-metadata one" \
                "snap2=$P:exclusive snap=$P:shared top=$P:shared mid=$P:shared base=$P:shared" "${all[@]}"
            refused "snapshot $1: after the second one" "${all[@]}"
        }
    fi
    case_end "${all[@]}"
}

# ===== 3. blockcommit ====================================================
flow_commit_mid() {
    mkdir_case
    case_begin f3-commit-mid || return
    local all=("$top" "$mid" "$base")
    expect "commit mid: before" "$(chain3)" "${all[@]}"
    run_ok "blockcommit --top mid --base base --wait" \
        vt blockcommit "$DOM" sda --top "$mid" --base "$base" --wait &&
        expect "commit mid: after" "top=$P:exclusive mid=- base=$P:shared" "${all[@]}" &&
        refused "commit mid: after" "$top" "$base" &&
        grabbable "commit mid: after" "$mid"
    case_end "${all[@]}"
}
flow_commit_active() {
    mkdir_case
    case_begin f3-commit-active || return
    local all=("$top" "$mid" "$base")
    expect "active commit: before" "$(chain3)" "${all[@]}"
    run_ok "blockcommit --active --pivot" vt blockcommit "$DOM" sda --active --pivot &&
        expect "active commit + pivot: after" "top=- mid=- base=$P:exclusive" "${all[@]}" &&
        refused "active commit + pivot: after" "$base" &&
        refused_for_backing "active commit + pivot: after" "$base" "$top" "$mid"
    case_end "${all[@]}"
}

# ===== 4. blockpull ======================================================
flow_pull() {   # full | base
    mkdir_case
    case_begin "f4-pull-$1" || return
    local all=("$top" "$mid" "$base")
    expect "pull $1: before" "$(chain3)" "${all[@]}"
    if [ "$1" = full ]; then
        run_ok "blockpull --wait" vt blockpull "$DOM" sda --wait &&
            expect "pull (full): after" "top=$P:exclusive mid=- base=-" "${all[@]}" &&
            refused "pull (full): after" "$top" &&
            grabbable "pull (full): after" "$mid" "$base"
    else
        run_ok "blockpull --base base --wait" vt blockpull "$DOM" sda --base "$base" --wait &&
            expect "pull --base base: after" "top=$P:exclusive mid=- base=$P:shared" "${all[@]}" &&
            refused "pull --base base: after" "$top" "$base" &&
            grabbable "pull --base base: after" "$mid"
    fi
    case_end "${all[@]}"
}

# ===== 5. blockcopy ======================================================
# A persistent domain takes a copy job only with --transient-job (libvirt
# 9.0 refuses otherwise).
flow_copy() {   # pivot | finish | abort
    mkdir_case
    case_begin "f5-copy-$1" || return
    local copy="$D/copy.qcow2"
    local all=("$top" "$mid" "$base")
    expect "copy $1: before" "$(chain3)" "${all[@]}"
    case $1 in
    pivot)
        run_ok "blockcopy --pivot" vt blockcopy "$DOM" sda --dest "$copy" --pivot --transient-job || {
            case_end "${all[@]}"; return; }
        all+=("$copy")
        expect "copy + pivot: after" "top=- mid=- base=- copy=$P:exclusive" "${all[@]}"
        refused "copy + pivot: after" "$copy"
        grabbable "copy + pivot: after" "$top" "$mid" "$base" ;;
    finish)
        run_ok "blockcopy --finish" vt blockcopy "$DOM" sda --dest "$copy" --finish --transient-job || {
            case_end "${all[@]}"; return; }
        all+=("$copy")
        expect "copy + finish: after" "$(chain3) copy=-" "${all[@]}"
        refused "copy + finish: after" "$top" "$mid" "$base"
        grabbable "copy + finish: after" "$copy" ;;
    abort)
        run_ok "blockcopy --wait (ready)" vt blockcopy "$DOM" sda --dest "$copy" --wait --transient-job || {
            case_end "${all[@]}"; return; }
        all+=("$copy")
        expect "copy, mirroring: during" "$(chain3) copy=$P:exclusive" "${all[@]}"
        refused "copy, mirroring: during" "$top" "$mid" "$base" "$copy"
        run_ok "blockjob --abort" vt blockjob "$DOM" sda --abort &&
            expect "copy + abort: after" "$(chain3) copy=-" "${all[@]}" &&
            refused "copy + abort: after" "$top" "$mid" "$base" &&
            grabbable "copy + abort: after" "$copy" ;;
    esac
    case_end "${all[@]}"
}

# ===== 6. attach-disk / detach-disk ======================================
flow_hotplug() {   # live | persistent
    mkdir_case
    local xb="$D/xbase.qcow2" x="$D/extra.qcow2" flags=(--live)
    qemu-img create -q -f qcow2 "$xb" 16M
    qemu-img create -q -f qcow2 -b "$xb" -F qcow2 "$x"
    [ "$1" = persistent ] && flags=(--persistent --live)
    case_begin "f6-hotplug-$1" || return
    local all=("$top" "$mid" "$base" "$x" "$xb")
    expect "hotplug $1: before" "$(chain3) extra=- xbase=-" "${all[@]}"
    run_ok "attach-disk ${flags[*]}" vt attach-disk "$DOM" "$x" sdc --targetbus scsi \
            --driver qemu --subdriver qcow2 "${flags[@]}" &&
        expect "hotplug $1: attached" "$(chain3) extra=$P:exclusive xbase=$P:shared" "${all[@]}" &&
        refused "hotplug $1: attached" "$x" "$xb" "$top" &&
        run_ok "detach-disk ${flags[*]}" vt detach-disk "$DOM" sdc "${flags[@]}" &&
        expect "hotplug $1: detached" "$(chain3) extra=- xbase=-" "${all[@]}" &&
        refused "hotplug $1: detached, the boot disk" "$top" "$mid" "$base" &&
        grabbable "hotplug $1: detached" "$x" "$xb"
    case_end "${all[@]}"
}

# ===== 7. suspend / managedsave / save ====================================
parked3() { echo "top=$P:exclusive:parked=paused mid=$P:shared:parked=paused base=$P:shared:parked=paused"; }
flow_suspend() {
    mkdir_case
    case_begin f7-suspend || return
    local all=("$top" "$mid" "$base")
    expect "suspend: before" "$(chain3)" "${all[@]}"
    run_ok "suspend" vt suspend "$DOM" || { case_end "${all[@]}"; return; }
    expect "suspend: paused" "$(parked3)" "${all[@]}"
    refused "suspend: paused" "${all[@]}"
    run_ok "resume" vt resume "$DOM" &&
        expect "resume: running again, nothing parked" "$(chain3)" "${all[@]}" &&
        refused "resume: after" "${all[@]}"
    case_end "${all[@]}"
}
flow_save() {   # managedsave | save
    mkdir_case
    case_begin "f7-$1" || return
    local all=("$top" "$mid" "$base") sav="$D/dom.sav" out
    expect "$1: before" "$(chain3)" "${all[@]}"
    # the real flow: libvirt pauses (parks), writes the state, kills QEMU;
    # watched by the samplers while it runs
    local oldp=$P
    sampler_start "$top" "$P" "$1"
    if [ "$1" = managedsave ]; then
        out=$(vt managedsave "$DOM" 2>&1)
    else
        out=$(vt save "$DOM" "$sav" 2>&1)
    fi
    local rc=$?
    sampler_stop "$1"
    if [ $rc -ne 0 ]; then
        not_ok "$1" "$out"
        case_end "${all[@]}"
        return
    fi
    sampler_judge "$1: while QEMU $oldp lived, parked or in use, never free, never taken" "$1"
    expect "$1: saved, QEMU $oldp gone: nothing held" "top=- mid=- base=-" "${all[@]}"
    if [ "$1" = managedsave ]; then
        run_ok "start after managedsave" vt start "$DOM" || { case_end "${all[@]}"; return; }
    else
        run_ok "restore" vt restore "$sav" || { case_end "${all[@]}"; return; }
    fi
    P=$(qemu_pid "$DOM")
    local st
    st=$(vt domstate "$DOM" 2>&1)
    if [ "$st" = running ] && [ -n "$P" ] && [ "$P" != "$oldp" ]; then
        ok "$1: restored, running in a new QEMU ($P)"
    else
        not_ok "$1: restored, running in a new QEMU" "state '$st', pid '$P' (old $oldp)"
    fi
    expect "$1: restored, held again" "$(chain3)" "${all[@]}"
    refused "$1: restored" "${all[@]}"

    # again with the window made wide: pause first, then save the paused
    # domain (--running: it runs after the restore)
    run_ok "suspend before $1" vt suspend "$DOM" || { case_end "${all[@]}"; return; }
    expect "$1: paused before the save" "$(parked3)" "${all[@]}"
    refused "$1: paused before the save" "${all[@]}"
    oldp=$P
    if [ "$1" = managedsave ]; then
        run_ok "managedsave --running (paused domain)" vt managedsave "$DOM" --running
    else
        rm -f "$sav"
        run_ok "save --running (paused domain)" vt save "$DOM" "$sav" --running
    fi || { case_end "${all[@]}"; return; }
    expect "$1 of the paused domain: QEMU $oldp gone, nothing held" "top=- mid=- base=-" "${all[@]}"
    if [ "$1" = managedsave ]; then
        run_ok "start after managedsave --running" vt start "$DOM"
    else
        run_ok "restore (saved --running)" vt restore "$sav"
    fi || { case_end "${all[@]}"; return; }
    P=$(qemu_pid "$DOM")
    st=$(vt domstate "$DOM" 2>&1)
    if [ "$st" = running ] && [ -n "$P" ] && [ "$P" != "$oldp" ]; then
        ok "$1 (from paused): restored, running in a new QEMU ($P)"
    else
        not_ok "$1 (from paused): restored, running in a new QEMU" "state '$st', pid '$P' (old $oldp)"
    fi
    expect "$1 (from paused): restored, held again" "$(chain3)" "${all[@]}"
    refused "$1 (from paused): restored" "${all[@]}"
    case_end "${all[@]}"
}

# ===== 8. vmleased SIGKILLed while libvirtd's leases are held ============
# A domain with every kind of lease libvirtd takes for a running VM: a
# hotplugged disk (with a backing image), a disk-only snapshot overlay and a
# blockcopy destination, mirroring (ready). Those never were in QEMU's fd
# table; only the VM's mailbox keeps them when vmleased is SIGKILLed. While
# it is down: a plain whole-file fcntl write lock (classic and OFD) on each
# image's lock file, and `vmlease run --exclusive` through a second vmleased
# sharing the lockspace (once under another hostname, where only the kernel
# lock refuses; once under this one, where it adopts the VM's holder from
# the records and the mailbox), must be refused on every image the VM uses.
# Restarted, vmleased shows them all held again, in the same modes.

# A plain whole-file fcntl write lock on each image's lock file: see
# tests/lockfile-attack.py.
LOCKFILE_ATTACK="$(cd "$(dirname "$0")/.." && pwd)/lockfile-attack.py"

# other_vmleased VAR ROOT [HOSTNAME]: a second vmleased with VMLEASE_ROOT
# ROOT (its own run/ and state/) on our lockspace, in a UTS namespace of its
# own named HOSTNAME if given; its pid ($! is the daemon itself: unshare and
# sh exec) into VAR. 1 if it does not answer within 4 s.
other_vmleased() {
    local var=$1 root=$2 host=${3:-} i
    mkdir -p "$root"
    printf 'lockspace_dir = "%s"\nlog_level = "debug"\n' "$VMLEASE_ROOT/lockspace" > "$root/vmleased.conf"
    if [ -n "$host" ]; then
        VMLEASE_ROOT=$root unshare --uts -- sh -c 'hostname "$1" && exec "$2" --foreground' \
            other "$host" "$VMLEASED_BIN" >>"$root/vmleased.log" 2>&1 &
    else
        VMLEASE_ROOT=$root "$VMLEASED_BIN" --foreground >>"$root/vmleased.log" 2>&1 &
    fi
    printf -v "$var" %s "$!"
    BG_PIDS+=("$!")
    for ((i = 0; i < 200; i++)); do
        VMLEASE_ROOT=$root "$VMLEASE_BIN" status >/dev/null 2>&1 && return 0
        lv_alive "${!var}" || break
        sleep 0.02
    done
    echo "# second vmleased ($root) did not start:"
    tail -n 10 "$root/vmleased.log" | cut -c1-300 | sed 's/^/#   /'
    return 1
}

# refused_via ROOT DESC IMG...: `vmlease run --exclusive IMG -- true` through
# the vmleased of VMLEASE_ROOT ROOT exits 3 naming $DOM and its pid $P, for
# each IMG.
refused_via() {
    local root=$1 desc=$2 img out rc bad=() rcs=""
    shift 2
    for img in "$@"; do
        out=$(VMLEASE_ROOT=$root timeout 20 "$VMLEASE_BIN" run --exclusive "$img" -- true 2>&1)
        rc=$?
        rcs+=" ${img##*/}:$rc"
        if [ $rc -ne 3 ] || [[ "$out" != *"VM \"$DOM\""* ]] || [[ "$out" != *"pid $P on host"* ]]; then
            bad+=("$img: exit $rc: ${out:-(no message)}")
        fi
    done
    if [ ${#bad[@]} -eq 0 ]; then
        ok "$desc: exclusive refused (exit 3) naming VM \"$DOM\", pid $P (exit$rcs)"
    else
        not_ok "$desc: exclusive must be refused (exit 3) naming VM \"$DOM\", pid $P" "${bad[@]}"
        echo "# $root/vmleased.log (tail):"
        tail -n 15 "$root/vmleased.log" | cut -c1-400 | sed 's/^/#   /'
    fi
    return 0
}

flow_vmleased_killed() {
    mkdir_case
    local xb="$D/xbase.qcow2" x="$D/extra.qcow2" snap="$D/snap.qcow2" copy="$D/copy.qcow2"
    qemu-img create -q -f qcow2 "$xb" 16M
    qemu-img create -q -f qcow2 -b "$xb" -F qcow2 "$x"
    case_begin f8-vmleased-killed || return
    local all=("$top" "$mid" "$base" "$x" "$xb")
    expect "killed vmleased: start" "$(chain3) extra=- xbase=-" "${all[@]}"
    run_ok "attach-disk --live" vt attach-disk "$DOM" "$x" sdc --targetbus scsi \
            --driver qemu --subdriver qcow2 --live || { case_end "${all[@]}"; return; }
    expect "killed vmleased: hotplugged" "$(chain3) extra=$P:exclusive xbase=$P:shared" "${all[@]}"
    # the hotplugged disk is left out of the snapshot (it would get an
    # overlay of libvirt's naming)
    run_ok "snapshot-create-as --disk-only --no-metadata" vt snapshot-create-as "$DOM" s1 \
            --disk-only --no-metadata --diskspec "sda,file=$snap" --diskspec sdc,snapshot=no ||
        { case_end "${all[@]}"; return; }
    all=("$snap" "${all[@]}")
    expect "killed vmleased: snapshotted" \
        "snap=$P:exclusive top=$P:shared mid=$P:shared base=$P:shared extra=$P:exclusive xbase=$P:shared" \
        "${all[@]}"
    run_ok "blockcopy --wait (ready)" vt blockcopy "$DOM" sda --dest "$copy" --wait --transient-job ||
        { case_end "${all[@]}"; return; }
    all+=("$copy")
    # ready: the mirror is in the live XML, all copied (--wait returned)
    local mirror
    mirror=$(vt dumpxml "$DOM" 2>&1 | grep -F "<mirror " | sed 's/^ *//')
    if [[ "$mirror" == *"file='$copy'"* ]] && [[ "$mirror" == *"job='copy'"* ]] &&
       [[ "$mirror" == *"ready='yes'"* ]]; then
        ok "killed vmleased: the copy to ${copy##*/} is mirroring, ready"
    else
        not_ok "killed vmleased: the copy to ${copy##*/} must be mirroring, ready" "mirror: ${mirror:-(none)}"
    fi
    local want="snap=$P:exclusive top=$P:shared mid=$P:shared base=$P:shared extra=$P:exclusive xbase=$P:shared copy=$P:exclusive"
    expect "killed vmleased: copy mirroring, before the kill" "$want" "${all[@]}"
    local st
    st=$(vt blockjob "$DOM" sda --info 2>&1)
    echo "# blockjob sda --info: $st"

    # --- the kill
    local old=$LV_VMLEASED loglines exe rc
    exe=$(readlink "/proc/$old/exe" 2>/dev/null)
    kill -9 "$old"
    wait "$old" 2>/dev/null
    LV_VMLEASED=""
    vmlease status >/dev/null 2>&1
    rc=$?
    if [ "${exe##*/}" != vmleased-daemon ] || lv_alive "$old" || [ $rc -ne 2 ] || ! lv_alive "$P"; then
        not_ok "killed vmleased: vmleased (pid $old) gone, QEMU $P alive" \
            "pid $old was ${exe:-?}; alive: $(lv_alive "$old" && echo yes || echo no)" \
            "vmlease status: exit $rc (2: not reachable)" \
            "QEMU alive: $(lv_alive "$P" && echo yes || echo no)"
    else
        ok "killed vmleased: vmleased (pid $old) SIGKILLed, not reachable (status: exit 2), QEMU $P runs on"
    fi
    loglines=$(wc -l < "$LV_ROOT/vmleased.log")

    # --- while it is down: the kernel's locks alone
    local lockspace=$VMLEASE_ROOT/lockspace got i f
    want=$(for i in "${all[@]}"; do f=${i##*/}; printf '%s=posix:refused,ofd:refused ' "${f%.qcow2}"; done | sed 's/ $//')
    got=$(python3 "$LOCKFILE_ATTACK" "$lockspace" "${all[@]}" 2>&1)
    if [ "$got" = "$want" ]; then
        ok "killed vmleased, down: a whole-file fcntl write lock on each lock file is refused: $got"
    else
        not_ok "killed vmleased, down: a whole-file fcntl write lock on each lock file must be refused" \
            "expected: $want" "got:      $got"
        for i in "${all[@]}"; do
            echo "# ${i##*/}: $lockspace/$("$VMLEASE_BIN" inspect --json "$i" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["lock_file"])')"
        done
        echo "# QEMU $P's fds on the lockspace:"
        for f in "/proc/$P/fd/"*; do
            i=$(readlink "$f" 2>/dev/null) && [[ "$i" == "$lockspace/"* ]] && echo "#   ${f##*/} -> $i"
        done
    fi

    # --- a second vmleased on the lockspace, under another hostname: the
    # VM's records are foreign to it, only the locks refuse
    local other_pid="" other_root=$LV_ROOT/vmlease-other
    if other_vmleased other_pid "$other_root" flows-other; then
        ok "killed vmleased, down: a second vmleased (pid $other_pid, host flows-other) runs on the lockspace"
        refused_via "$other_root" "killed vmleased, down: through a second vmleased under another hostname" \
            "${all[@]}"
    else
        not_ok "killed vmleased, down: a second vmleased (host flows-other) runs on the lockspace"
    fi
    lv_stop "$other_pid"
    # --- and one under this hostname: it adopts the VM's holder from the
    # records, its locks from the mailbox
    local same_pid="" same_root=$LV_ROOT/vmlease-same
    if other_vmleased same_pid "$same_root"; then
        ok "killed vmleased, down: a second vmleased (pid $same_pid, this hostname) runs on the lockspace"
        refused_via "$same_root" "killed vmleased, down: through a second vmleased under this hostname" \
            "${all[@]}"
        echo "# the second vmleased under this hostname: $(grep -o 'restored [0-9]* holder(s) with [0-9]* lease(s)' "$same_root/vmleased.log" | tail -1)"
    else
        not_ok "killed vmleased, down: a second vmleased (this hostname) runs on the lockspace"
    fi
    lv_stop "$same_pid"
    if lv_alive "$other_pid" || lv_alive "$same_pid"; then
        not_ok "killed vmleased: the second vmleaseds stopped" "pids $other_pid $same_pid"
    fi
    # the second ones are gone: the locks are still there
    got=$(python3 "$LOCKFILE_ATTACK" "$lockspace" "${all[@]}" 2>&1)
    if [ "$got" = "$want" ]; then
        ok "killed vmleased, down, the second vmleaseds stopped: every fcntl write lock still refused"
    else
        not_ok "killed vmleased, down, the second vmleaseds stopped: every fcntl write lock must still be refused" \
            "expected: $want" "got:      $got"
    fi

    # --- restarted
    if ! lv_start_vmleased; then
        not_ok "killed vmleased: restarted"
        case_end "${all[@]}"
        return
    fi
    ok "killed vmleased: restarted (pid $LV_VMLEASED)"
    expect "killed vmleased, restarted: every lease held again, same modes" \
        "snap=$P:exclusive top=$P:shared mid=$P:shared base=$P:shared extra=$P:exclusive xbase=$P:shared copy=$P:exclusive" \
        "${all[@]}"
    local lost
    lost=$(tail -n "+$((loglines + 1))" "$LV_ROOT/vmleased.log" | grep -E 'was lost while vmleased was down|while vmleased was down|the lock wins')
    if [ -z "$lost" ]; then
        ok "killed vmleased, restarted: no lease lost, no generation or mode changed meanwhile"
    else
        local lines
        mapfile -t lines < <(printf '%s\n' "$lost" | cut -c1-300)
        not_ok "killed vmleased, restarted: no lease lost, no generation or mode changed meanwhile" \
            "${lines[@]}"
    fi
    refused "killed vmleased, restarted" "${all[@]}"

    run_ok "blockjob --abort" vt blockjob "$DOM" sda --abort && {
        expect "killed vmleased, copy aborted" \
            "snap=$P:exclusive top=$P:shared mid=$P:shared base=$P:shared extra=$P:exclusive xbase=$P:shared copy=-" \
            "${all[@]}"
        grabbable "killed vmleased, copy aborted" "$copy"
    }
    case_end "${all[@]}"
}

flow_change_media
flow_snapshot metadata
flow_snapshot no-metadata
flow_snapshot reuse-external
flow_commit_mid
flow_commit_active
flow_pull full
flow_pull base
flow_copy pivot
flow_copy finish
flow_copy abort
flow_hotplug live
flow_hotplug persistent
flow_suspend
flow_save managedsave
flow_save save
flow_vmleased_killed

echo "# runtime $((SECONDS - T0)) s"
echo "1..$n"
[ $failed -eq 0 ]
