#!/usr/bin/env bash
# Live migration of a domain between two libvirt "hosts" on one machine
# (see migration-env.sh), lock_manager = "vmlease" on both, one shared
# lockspace. TAP output. The migration port is throttled with tc so that
# the switchover lasts seconds. Cases:
#  a) A runs on host1: both hosts' vmlease see host1's QEMU holding the disk
#     exclusive and its backing image shared.
#  b) live migration host1 -> host2 while, on each host, a sampler lists
#     the disk's owners every 50 ms (never none: a holder or a parked lease)
#     and a third party loops `vmlease run --exclusive DISK -- qemu-io
#     write 0xee` (never let in; the data is checked afterwards).
#  c) afterwards: host2 holds it; a start on host1 and a third party there
#     are refused, naming host2.
#  d) domjobabort while RAM is copied (d1) and in the switchover (d2): the
#     source runs and holds the lease, in use.
#  e) the destination QEMU killed while RAM is copied (e1) and in the
#     switchover (e2): likewise; then a cold restart on the source works.
#  f) b and c on the sanlock backend (skipped without the setrlimit shim).
#  g) (run before f, on fcntl) host2's vmleased SIGKILLed right after a
#     migration host1 -> host2: while it is down host1's vmleased and a
#     plain fcntl write lock on the lock files are refused; restarted, both
#     hosts see host2's QEMU holding the disk and its backing image again.
# Usage: test-migration.sh [SETRLIMIT-SHIM], with VMLEASED_BIN, VMLEASE_BIN
# and VMLEASE_PLUGIN in the environment (meson test --suite migration sets
# them and passes tests/sanlock's shim). VMLEASE_MIGRATION_RATE (default
# 1mbit) sets the throttle; VMLEASE_KEEP=1 keeps the temporary directory
# (logs of every daemon, the samplers' and third parties' records).
set -u
if [ -z "${VMLEASE_IN_NS:-}" ]; then
    for tool in unshare python3; do
        command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool is not installed"; exit 0; }
    done
    # A network namespace for both hosts (tc on its lo touches nothing
    # else) and a mount namespace the hosts' own are copied from, under a
    # reaper of orphans (daemonized QEMUs, sanlock's helper): see reaper.py.
    exec env VMLEASE_IN_NS=1 unshare --net --mount --propagation private \
        python3 "$(dirname "$0")/reaper.py" "$BASH" "$0" "$@"
fi
shim=${1:-}
for tool in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img qemu-io python3 nsenter tc ip; do
    command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool is not installed"; exit 0; }
done
here=$(cd "$(dirname "$0")" && pwd)
. "$here/migration-env.sh"
trap mg_cleanup EXIT
# a signal (meson's timeout) ends the script through the EXIT trap too
trap 'exit 143' TERM; trap 'exit 130' INT; trap 'exit 129' HUP
T_START=$(mg_now_ms)
RATE=${VMLEASE_MIGRATION_RATE:-1mbit}

. "$(dirname "$0")/../tap.sh"
diag() { tap_diag "$@"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
# unpark WHY: a lease A's running QEMU left parked (libvirt never resumed
# it through the lock manager) is taken back with suspend + resume, so the
# next case starts clean.
unpark() {
    local o
    o=$(owners_of 1 "$DISK")
    [[ "$o" == *parked* ]] || return 0
    vsh 1 suspend A >/dev/null 2>&1 && vsh 1 resume A >/dev/null 2>&1
    diag "$1: A's lease was left $o; after virsh suspend + resume: $(owners_of 1 "$DISK")"
}

# restart_on_1 WHY: an earlier case left A other than running on host1:
# destroy it wherever it is and start it afresh on host1, so the next cases
# test what they say.
restart_on_1() {
    local h
    diag "$1: A is '$(domstate 1)' on host1 and '$(domstate 2)' on host2: destroyed and started again on host1"
    for h in 1 2; do running_on "$h" && vsh "$h" destroy A >/dev/null 2>&1; done
    mg_wait 10 eval '[ -z "$(owners_of 1 "$DISK")" ]' || diag "$1: the disk still has owners: $(owners_of 1 "$DISK")"
    vsh 1 start A >/dev/null 2>&1 || diag "$1: $(vsh 1 start A 2>&1)"
}

# need_a_on_1 CASE COUNT: A runs on host1 (restarted there if an earlier
# case left it elsewhere), pid1 is its QEMU; else COUNT failures for CASE.
need_a_on_1() {
    local i
    [ "$(domstate 1)" = running ] || restart_on_1 "$1"
    if [ "$(domstate 1)" != running ]; then
        for ((i = 0; i < $2; i++)); do not_ok "$1: (not run: A does not run on host1)"; done
        return 1
    fi
    pid1=$(mg_qemu_pid 1 A)
}

# owners_of N PATH: PATH's owners as host N's vmlease sees them, each
# "host:name:pid:mode:state" (state in-use or parked-REASON), sorted, ",".
owners_of() {
    vml "$1" owners --json "$2" 2>&1 | python3 -c '
import json, os, sys
text = sys.stdin.read()
try:
    res = json.loads(text)["resources"]
except (ValueError, KeyError):
    print("ERROR: " + text.strip().replace("\n", " "))
    sys.exit(0)
real = os.path.realpath(sys.argv[1])
print(",".join(sorted("%s:%s:%s:%s:%s" % (o.get("host"), o.get("name"), o.get("pid"), o.get("mode"),
                                           "parked-" + o["parked"] if o.get("parked") else "in-use")
                      for r in res if r.get("path", r["resource"]) == real for o in r["owners"])))' "$2"
}
# expect_owners WHAT PATH EXPECTED: both hosts see exactly EXPECTED.
expect_owners() {
    local o1 o2
    o1=$(owners_of 1 "$2") o2=$(owners_of 2 "$2")
    if [ "$o1" = "$3" ] && [ "$o2" = "$3" ]; then ok "$1 ($3)"
    else not_ok "$1" "expected: $3" "host1 sees: $o1" "host2 sees: $o2"; fi
}
# migrate SRC DST: live migration of A from host SRC to host DST.
migrate() {
    vsh "$1" migrate --live A "$(mg_uri "$2")" \
        --migrateuri "tcp://$(mg_addr "$2"):$MG_MIG_PORT" --unsafe
}
# migrate_bg SRC DST: the same in the background; MIG_PID, output in MIG_OUT.
migrate_bg() {
    MIG_OUT=$MG_ROOT/migrate.$(mg_now_ms).out
    migrate "$1" "$2" >"$MIG_OUT" 2>&1 &
    MIG_PID=$!
    MG_JOBS+=("$MIG_PID")
}
# migrate_wait: MIG_PID's exit status (124 if it outlives 90 s: killed).
migrate_wait() {
    mg_wait 90 eval '! kill -0 '"$MIG_PID"' 2>/dev/null' || kill "$MIG_PID" 2>/dev/null
    wait "$MIG_PID"
}
domstate() { vsh "$1" domstate A 2>/dev/null | head -1; }
running_on() { vsh "$1" list --name 2>/dev/null | grep -qx A; }
# memory_moving N: host N's outgoing migration job has sent RAM already.
memory_moving() {
    vsh "$1" domjobinfo A 2>/dev/null |
        awk -F: '/^Memory processed/ { split($2, a, " "); if (a[1] + 0 > 0) ok = 1 } END { exit !ok }'
}
source_paused() { [ "$(domstate "$1")" = paused ]; }
# waiting for a background migration (MIG_PID) from host1 to get somewhere
moving_or_done() { memory_moving 1 || ! kill -0 "$MIG_PID" 2>/dev/null; }
paused_or_done() { source_paused 1 || ! kill -0 "$MIG_PID" 2>/dev/null; }
# resume_calls N: how often host N's libvirtd called virDomainLockProcessResume.
resume_calls() { grep -c virDomainLockProcessResume "$MG_ROOT/host$1/fs/var/log/libvirt/libvirtd.log"; }
# refusal_names WHAT N HOSTNAME: `vmlease run --exclusive DISK -- true` on
# host N exits 3 with a message naming HOSTNAME.
refused_naming() {
    local err rc
    err=$(vml "$2" run --exclusive "$DISK" -- true 2>&1)
    rc=$?
    if [ $rc -eq 3 ] && [[ "$err" == *"host $3"* ]]; then ok "$1 (exit 3, names $3)"
    else not_ok "$1" "rc=$rc" "$err"; fi
}
# never_written: DISK reads as zeros at 1M+64k (the third party's 0xee never
# landed; the guest has no OS and writes nothing). -U: A may be running.
never_written() {
    local out
    out=$(qemu-io -U -r -f qcow2 -c 'read -P 0 1M 64k' "$DISK" 2>&1)
    if [[ "$out" == *"read 65536/65536 bytes"* ]] && [[ "$out" != *"Pattern verification failed"* ]]; then
        ok "$1: 1M+64k of the disk is still zeros, no 0xee"
    else
        not_ok "$1: 1M+64k of the disk is still zeros, no 0xee" "$out"
        qemu-io -U -r -f qcow2 -c 'read -v 1M 32' "$DISK" 2>&1 | diag "$(cat)"
    fi
}
# poll_report WHAT: the samplers' and third parties' figures, asserted.
poll_report() {
    local h s t samples none errors wrote attempts
    for h in 1 2; do
        s=$(mg_sample_summary "$h")
        samples=$(sed -n 's/.*samples=\([0-9]*\).*/\1/p' <<<"$s")
        none=$(sed -n 's/.*no_holder=\([0-9]*\).*/\1/p' <<<"$s")
        errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$s")
        echo "# host$h: ${s%%$'\n'*}"
        echo "# host$h ${s#*$'\n'}"
        if [ "${samples:-0}" -ge 20 ] && [ "${none:-1}" -eq 0 ] && [ "${errors:-1}" -eq 0 ]; then
            ok "$1: host$h's sampler always saw a holder or a parked lease (samples=$samples no_holder=$none)"
        else
            not_ok "$1: host$h's sampler always saw a holder or a parked lease" \
                "samples=$samples (need 20) no_holder=$none errors=$errors"
        fi
    done
    for h in 1 2; do
        t=$(mg_third_summary "$h")
        echo "# third party host$h: $t"
        attempts=$(sed -n 's/.*attempts=\([0-9]*\).*/\1/p' <<<"$t")
        wrote=$(sed -n 's/.*wrote=\([0-9]*\).*/\1/p' <<<"$t")
        local refusal
        refusal=$(grep -m1 parked "$MG_ROOT/poll/third-msgs.$h.refused" 2>/dev/null ||
                  head -1 "$MG_ROOT/poll/third-msgs.$h.refused" 2>/dev/null)
        [ -n "$refusal" ] && echo "# third party host$h refused with: $refusal"
        if [ "${attempts:-0}" -ge 5 ] && [ "${wrote:-1}" -eq 0 ]; then
            ok "$1: the third party on host$h never wrote ($t)"
        else
            not_ok "$1: the third party on host$h never wrote" "$t (want >= 5 attempts, wrote=0)" \
                "$(grep -m3 -A1 '^wrote:' "$MG_ROOT/poll/third-msgs.$h" 2>/dev/null)"
        fi
    done
}
# lease_log: what both vmleaseds logged about A's leases (parks, claims...).
lease_log() {
    local h
    for h in 1 2; do
        grep -hE "registered|parked|claimed|took back|exited|refus|conflict|lost|sanlock" \
            "$MG_ROOT/host$h/log/vmleased.log" 2>/dev/null | grep -v vmlease-run | tail -"${1:-8}" | cut -c12-220 | sed "s/^/host$h /"
    done
}

mg_setup_users
mg_network_up || { echo "Bail out! no loopback in the network namespace"; exit 1; }
G_TESTS=11          # case g emits exactly this many TAP lines
echo "1..$((47 + G_TESTS))"

# ---------------------------------------------------------------- a) -----
t0=$(mg_now_ms)
if ! mg_host_up 1 || ! mg_host_up 2; then echo "Bail out! hosts did not come up"; exit 1; fi
names="$(on_host 1 hostname) $(on_host 2 hostname)"
check "a: two hosts up in $(($(mg_now_ms) - t0)) ms: $names, libvirtd on 127.0.0.2 and 127.0.0.3" \
    test "$names" = "host1 host2"
check "a: the hosts' libvirtds tell distinct host uuids" \
    test "$(vsh 1 capabilities | grep -m1 '<uuid>')" != "$(vsh 2 capabilities | grep -m1 '<uuid>')"

BASE=$MG_IMAGES/base.qcow2 DISK=$MG_IMAGES/disk.qcow2
qemu-img create -q -f qcow2 "$BASE" 16M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$DISK" 16M
UA=33333333-2222-4333-8444-5555555555a1
mg_domain_xml A "$UA" "$DISK" > "$MG_ROOT/A.xml"
out=$(vsh 1 define "$MG_ROOT/A.xml" 2>&1 && vsh 1 start A 2>&1)
check "a: A defined and started on host1" test "$(domstate 1)" = running || diag "$out"
pid1=$(mg_qemu_pid 1 A)
expect_owners "a: both hosts see host1's QEMU (pid $pid1) holding the disk exclusive" "$DISK" \
    "host1:A:$pid1:exclusive:in-use"
expect_owners "a: both hosts see it holding the backing image shared" "$BASE" "host1:A:$pid1:shared:in-use"
refused_naming "a: vmlease run --exclusive DISK on host2 is refused" 2 host1

# ---------------------------------------------------------------- b) -----
mg_throttle "$RATE" 2>/dev/null || { echo "Bail out! tc could not throttle the migration port"; exit 1; }
mg_pollers_start "$DISK" "$UA" || diag "pollers did not start"
sleep 0.5
t0=$(mg_now_ms)
out=$(migrate 1 2 2>&1)
rc=$? ms=$(($(mg_now_ms) - t0))
sleep 0.5
mg_pollers_stop
check "b: live migration host1 -> host2 at $RATE succeeds (took $ms ms)" test $rc -eq 0 || diag "$out"
poll_report "b"
pid2=$(mg_qemu_pid 2 A)
never_written "b"
diag "$(lease_log 4)"

# ---------------------------------------------------------------- c) -----
check "c: A runs on host2 (pid $pid2), not on host1" \
    test "$(domstate 2)|$(domstate 1)" = "running|shut off"
expect_owners "c: both hosts see host2's QEMU holding the disk exclusive" "$DISK" "host2:A:$pid2:exclusive:in-use"
expect_owners "c: ... and the backing image shared" "$BASE" "host2:A:$pid2:shared:in-use"
vsh 1 dominfo A >/dev/null 2>&1 || vsh 1 define "$MG_ROOT/A.xml" >/dev/null
err=$(vsh 1 start A 2>&1)
rc=$?
check "c: virsh start A on host1 fails" test $rc -ne 0
# Here QEMU's own image lock would stop it too (one machine); across real
# hosts only the lease does: the refusal must be vmlease's, naming host2.
if [ $rc -ne 0 ] && [[ "$err" == *"host host2"* ]]; then ok "c: ... refused by vmlease, naming host2"
else not_ok "c: ... refused by vmlease, naming host2" "rc=$rc" "$err" "$(lease_log 3)"; fi
check "c: after the refused start A still runs on host2 alone, host1's A is shut off" \
    test "$(domstate 2)|$(domstate 1)|$(mg_qemu_pid 2 A)" = "running|shut off|$pid2"
expect_owners "c: the disk is still host2's" "$DISK" "host2:A:$pid2:exclusive:in-use"
refused_naming "c: vmlease run --exclusive DISK on host1 is refused" 1 host2

# ---------------------------------------------------------------- d) -----
# back to host1 first (host1 keeps A's persistent definition)
if [ "$(domstate 2)" = running ]; then
    t0=$(mg_now_ms)
    out=$(migrate 2 1 2>&1)
    rc=$?
    check "d: migration back host2 -> host1 succeeds ($(($(mg_now_ms) - t0)) ms)" \
        test "$rc|$(domstate 1)" = "0|running" || { diag "$out"; restart_on_1 d; }
else
    not_ok "d: migration back host2 -> host1" "A does not run on host2 (b failed)"
    restart_on_1 d
fi
pid1=$(mg_qemu_pid 1 A)
expect_owners "d: the disk is host1's again (pid $pid1)" "$DISK" "host1:A:$pid1:exclusive:in-use"

# d1: cancelled while RAM is being copied (the source still runs)
case_d1() {
    need_a_on_1 d1 4 || return 0
    mg_throttle "$RATE" paced
    migrate_bg 1 2
    mg_wait 30 moving_or_done || diag "no memory moving after 30 s"
    state=$(domstate 1)
    resumes=$(resume_calls 1)
    out=$(vsh 1 domjobabort A 2>&1) || diag "domjobabort: $out"
    migrate_wait
    rc=$?
    check "d1: domjobabort while RAM is copied and the source runs ($state): virsh migrate fails" \
        test "$rc|$state" != "0|running" -a "$state" = running
    diag "$(cat "$MIG_OUT")"
    mg_wait 10 eval '! running_on 2' || true
    check "d1: the source runs A (same pid $pid1), the destination does not" \
        test "$(domstate 1)|$(mg_qemu_pid 1 A)|$(running_on 2 && echo running-on-2)" = "running|$pid1|"
    expect_owners "d1: the disk is host1's, in use" "$DISK" "host1:A:$pid1:exclusive:in-use"
    refused_naming "d1: vmlease run --exclusive DISK on host2 is refused" 2 host1
    diag "libvirt called the lock manager's resume on the source $(($(resume_calls 1) - resumes)) time(s) after the abort"
}
case_d1

# d2: cancelled in the switchover: the source paused (and parked its lease)
case_d2() {
    need_a_on_1 d2 2 || return 0
    mg_throttle "$RATE" buffered
    resumes=$(resume_calls 1)
    migrate_bg 1 2
    if mg_wait 40 paused_or_done && source_paused 1; then
        parked=$(owners_of 1 "$DISK")
        out=$(vsh 1 domjobabort A 2>&1)
        arc=$?
        migrate_wait
        rc=$?
        diag "lease while the source was paused: $parked" "domjobabort: rc=$arc $out" "$(cat "$MIG_OUT")"
        if [ $rc -ne 0 ]; then
            mg_wait 10 eval '[ "$(domstate 1)" = running ]' || true
            check "d2: domjobabort in the switchover: the source runs A again (pid $pid1)" \
                test "$(domstate 1)|$(mg_qemu_pid 1 A)|$(running_on 2 && echo running-on-2)" = "running|$pid1|"
            expect_owners "d2: the disk is host1's, in use again" "$DISK" "host1:A:$pid1:exclusive:in-use"
            diag "libvirt called the lock manager's resume on the source $(($(resume_calls 1) - resumes)) time(s) after the abort"
        else
            # too late to cancel: it completed; come back for case e
            skip "d2: the source runs A again" "the migration completed before the abort"
            skip "d2: the disk is host1's, in use again" "the migration completed before the abort"
            migrate 2 1 >/dev/null 2>&1
            pid1=$(mg_qemu_pid 1 A)
        fi
    else
        migrate_wait
        not_ok "d2: the source paused for the switchover within 40 s" "$(cat "$MIG_OUT")"
        not_ok "d2: the disk is host1's, in use again"
    fi
    diag "$(lease_log 4)"
    unpark d2
}
case_d2

# ---------------------------------------------------------------- e) -----
# e1: the destination QEMU dies while RAM is copied
case_e1() {
    need_a_on_1 e1 3 || return 0
    mg_throttle "$RATE" paced
    migrate_bg 1 2
    mg_wait 30 moving_or_done || diag "no memory moving after 30 s"
    state=$(domstate 1)
    dpid=$(mg_qemu_pid 2 A)
    [ -n "$dpid" ] && kill -9 "$dpid"
    migrate_wait
    rc=$?
    check "e1: destination QEMU (pid ${dpid:-none}) killed while RAM is copied and the source runs ($state): virsh migrate fails" \
        test -n "$dpid" -a $rc -ne 0 -a "$state" = running
    diag "$(cat "$MIG_OUT")"
    mg_wait 10 eval '[ "$(domstate 1)" = running ]' || true
    check "e1: the source runs A (pid $pid1), the destination does not" \
        test "$(domstate 1)|$(mg_qemu_pid 1 A)|$(running_on 2 && echo running-on-2)" = "running|$pid1|"
    expect_owners "e1: the disk is host1's, in use" "$DISK" "host1:A:$pid1:exclusive:in-use"
    unpark e1
}
case_e1

# e2: the destination QEMU dies in the switchover (source paused, parked)
case_e2() {
    need_a_on_1 e2 2 || return 0
    mg_throttle "$RATE" buffered
    migrate_bg 1 2
    if mg_wait 40 paused_or_done && source_paused 1; then
        dpid=$(mg_qemu_pid 2 A)
        parked=$(owners_of 1 "$DISK")
        [ -n "$dpid" ] && kill -9 "$dpid"
        migrate_wait
        rc=$?
        diag "lease while the source was paused: $parked" "$(cat "$MIG_OUT")"
        if [ $rc -ne 0 ]; then
            mg_wait 10 eval '[ "$(domstate 1)" = running ]' || true
            check "e2: destination QEMU (pid $dpid) killed in the switchover: the source runs A again" \
                test "$(domstate 1)|$(mg_qemu_pid 1 A)|$(running_on 2 && echo running-on-2)" = "running|$pid1|"
            expect_owners "e2: the disk is host1's, in use again" "$DISK" "host1:A:$pid1:exclusive:in-use"
        else
            skip "e2: the source runs A again" "the migration completed before the kill"
            skip "e2: the disk is host1's, in use again" "the migration completed before the kill"
            migrate 2 1 >/dev/null 2>&1
        fi
    else
        migrate_wait
        not_ok "e2: the source paused for the switchover within 40 s" "$(cat "$MIG_OUT")"
        not_ok "e2: the disk is host1's, in use again"
    fi
    diag "$(lease_log 4)"
    unpark e2
}
case_e2

# a cold restart on the source works
out=$(vsh 1 destroy A 2>&1; vsh 1 start A 2>&1)
rc=$?
pid1=$(mg_qemu_pid 1 A)
check "e: virsh destroy + virsh start A on host1: runs (pid $pid1)" test "$rc|$(domstate 1)" = "0|running" ||
    diag "$out"
expect_owners "e: the restarted A holds the disk exclusive" "$DISK" "host1:A:$pid1:exclusive:in-use"
refused_naming "e: vmlease run --exclusive DISK on host2 is refused" 2 host1
vsh 1 destroy A >/dev/null 2>&1

# ---------------------------------------------------------------- g) -----
# The destination's leases are claimed from libvirtd (at the resume), never
# in QEMU's fd table: only the mailbox keeps them when host2's vmleased is
# SIGKILLed. From host1 (sharing the lockspace) nobody may take them while
# it is down; restarted, it shows them again.

# lockfile_attack IMG...: tests/lockfile-attack.py on $MG_LOCKSPACE.
lockfile_attack() {
    python3 "$here/../lockfile-attack.py" "$MG_LOCKSPACE" "$@"
}

case_g() {
    local i out rc t0 ms pid2 vpid lines got want err lost log2=$MG_ROOT/host2/log/vmleased.log
    mg_throttle off
    running_on 2 && vsh 2 destroy A >/dev/null 2>&1
    running_on 1 || vsh 1 start A >/dev/null 2>&1
    pid1=$(mg_qemu_pid 1 A)
    t0=$(mg_now_ms)
    out=$(migrate 1 2 2>&1)
    rc=$? ms=$(($(mg_now_ms) - t0))
    pid2=$(mg_qemu_pid 2 A)
    if [ $rc -ne 0 ] || [ "$(domstate 2)|$(domstate 1)" != "running|shut off" ] || [ -z "$pid2" ]; then
        not_ok "g: A (pid ${pid1:-none}) migrated host1 -> host2" "rc=$rc" "$out" \
            "A is '$(domstate 1)' on host1, '$(domstate 2)' on host2" "$(lease_log 4)"
        for ((i = 1; i < G_TESTS; i++)); do not_ok "g: (not run: the migration failed)"; done
        return 0
    fi
    ok "g: A (pid $pid1) migrated host1 -> host2 unthrottled in $ms ms: runs there (pid $pid2)"
    expect_owners "g: before the kill, both hosts see host2's QEMU holding the disk exclusive" "$DISK" \
        "host2:A:$pid2:exclusive:in-use"

    # --- the kill
    vpid=${MG_VMLEASED[2]}
    local exe
    exe=$(readlink "/proc/$vpid/exe" 2>/dev/null)
    lines=$(wc -l < "$log2")
    kill -9 "$vpid"
    wait "$vpid" 2>/dev/null
    MG_VMLEASED[2]=""
    vml 2 status >/dev/null 2>&1
    rc=$?
    check "g: host2's vmleased (pid $vpid, ${exe##*/}) SIGKILLed (status: exit $rc), host2's QEMU $pid2 runs on" \
        test "${exe##*/}|$(mg_alive "$vpid" && echo vmleased-alive)|$rc|$(mg_alive "$pid2" && echo qemu-alive)" = \
        "vmleased-daemon||2|qemu-alive"

    # --- while it is down
    refused_naming "g: host2's vmleased down: vmlease run --exclusive DISK on host1 is refused" 1 host2
    err=$(vml 1 run --exclusive "$BASE" -- true 2>&1)
    rc=$?
    if [ $rc -eq 3 ] && [[ "$err" == *"host host2"* ]]; then
        ok "g: host2's vmleased down: vmlease run --exclusive BASE on host1 is refused (exit 3, names host2)"
    else
        not_ok "g: host2's vmleased down: vmlease run --exclusive BASE on host1 is refused" "rc=$rc" "$err"
    fi
    want="disk=posix:refused,ofd:refused base=posix:refused,ofd:refused"
    got=$(lockfile_attack "$DISK" "$BASE" 2>&1)
    if [ "$got" = "$want" ]; then
        ok "g: host2's vmleased down: a whole-file fcntl write lock on each lock file is refused ($got)"
    else
        not_ok "g: host2's vmleased down: a whole-file fcntl write lock on each lock file must be refused" \
            "expected: $want" "got:      $got" \
            "host2's QEMU $pid2 has open: $(for i in "/proc/$pid2/fd/"*; do readlink "$i"; done 2>/dev/null |
                                             grep -cF "$MG_LOCKSPACE/") lock file(s)" \
            "host1 sees, DISK: $(owners_of 1 "$DISK"), BASE: $(owners_of 1 "$BASE")"
    fi

    # --- restarted
    if mg_start_vmleased 2; then
        ok "g: host2's vmleased restarted (pid ${MG_VMLEASED[2]})"
    else
        not_ok "g: host2's vmleased restarted"
    fi
    expect_owners "g: restarted, both hosts see host2's QEMU holding the disk exclusive" "$DISK" \
        "host2:A:$pid2:exclusive:in-use"
    expect_owners "g: ... and the backing image shared" "$BASE" "host2:A:$pid2:shared:in-use"
    lost=$(tail -n "+$((lines + 1))" "$log2" 2>/dev/null |
           grep -E 'was lost while vmleased was down|while vmleased was down|the lock wins' | cut -c1-300)
    if [ -z "$lost" ]; then
        ok "g: host2's restarted vmleased lost no lease and saw no generation or mode change"
    else
        not_ok "g: host2's restarted vmleased lost no lease and saw no generation or mode change" "$lost"
    fi
    out=$(vsh 2 destroy A 2>&1) || diag "destroy A on host2: $out"
    mg_wait 5 eval '[ -z "$(owners_of 1 "$DISK")$(owners_of 1 "$BASE")$(owners_of 2 "$DISK")$(owners_of 2 "$BASE")" ]' || true
    got="$(owners_of 1 "$DISK")|$(owners_of 1 "$BASE")|$(owners_of 2 "$DISK")|$(owners_of 2 "$BASE")"
    if [ "$got" = "|||" ]; then
        ok "g: A destroyed on host2: the disk and its backing image have no owner on either host"
    else
        not_ok "g: A destroyed on host2: the disk and its backing image must have no owner" \
            "host1 DISK|BASE, host2 DISK|BASE: $got"
    fi
}
case_g

echo "# fcntl cases took $(($(mg_now_ms) - T_START)) ms"

# ---------------------------------------------------------------- f) -----
. "$here/migration-sanlock.sh"

echo "# whole suite took $(($(mg_now_ms) - T_START)) ms"
[ $failed -eq 0 ]
