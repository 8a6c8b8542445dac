# Sourced by test-migration.sh for case f: the migration of b and c again
# with vmleased on the sanlock backend (host_id 1 and 2, one lockspace and
# lease directory on O_DIRECT storage, a sanlock daemon per host in its
# private /run/sanlock). Emits exactly F_TESTS TAP lines.
F_TESTS=11

f_skip_all() {
    local i
    for ((i = 0; i < F_TESTS; i++)); do skip "f: sanlock backend" "$1"; done
}

f_run() {
    local t0 out rc pid1 pid2 err h
    if [ -z "$shim" ] || [ ! -e "$shim" ]; then f_skip_all "no setrlimit shim given (tests/sanlock builds it)"; return; fi
    command -v sanlock >/dev/null || { f_skip_all "sanlock is not installed"; return; }
    # The fcntl hosts go; their files stay beside for VMLEASE_KEEP.
    for h in 1 2; do mg_host_down "$h"; mv "$MG_ROOT/host$h" "$MG_ROOT/host$h-fcntl"; done
    mg_throttle off
    mg_use_sanlock "$shim" || { f_skip_all "no O_DIRECT storage for the lockspace"; return; }
    t0=$(mg_now_ms)
    if ! mg_host_up 1 || ! mg_host_up 2; then f_skip_all "the sanlock hosts did not come up"; return; fi
    # A join takes a few io_timeouts, more on a loaded machine; vmleased
    # joins again by itself if sanlock gave a join up.
    if mg_wait 150 mg_sanlock_joined; then
        ok "f: both hosts joined the sanlock lockspace, live ($(($(mg_now_ms) - t0)) ms)"
    else
        not_ok "f: both hosts joined the sanlock lockspace" "$(vml 1 hosts 2>&1)" "$(vml 2 hosts 2>&1)" \
            "$(for h in 1 2; do tail -8 "$MG_ROOT/host$h/log/vmleased.log" "$MG_ROOT/host$h/log/sanlock.log" 2>&1; done)"
        for ((h = 1; h < F_TESTS; h++)); do skip "f: sanlock backend" "the hosts did not join"; done
        return
    fi

    BASE=$MG_IMAGES/base-s.qcow2 DISK=$MG_IMAGES/disk-s.qcow2
    qemu-img create -q -f qcow2 "$BASE" 16M
    qemu-img create -q -f qcow2 -b base-s.qcow2 -F qcow2 "$DISK" 16M
    mg_domain_xml A "$UA" "$DISK" > "$MG_ROOT/A-s.xml"
    out=$(vsh 1 define "$MG_ROOT/A-s.xml" 2>&1 && vsh 1 start A 2>&1)
    pid1=$(mg_qemu_pid 1 A)
    expect_owners "f: A started on host1 (pid $pid1): both hosts see it holding the disk exclusive" \
        "$DISK" "host1:A:$pid1:exclusive:in-use"
    [ "$(domstate 1)" = running ] || diag "$out" "$(lease_log 4)"

    mg_throttle "$RATE"
    mg_pollers_start "$DISK" "$UA" || diag "pollers did not start"
    sleep 0.5
    t0=$(mg_now_ms)
    out=$(migrate 1 2 2>&1)
    rc=$?
    local ms=$(($(mg_now_ms) - t0))
    sleep 0.5
    mg_pollers_stop
    check "f: live migration host1 -> host2 on sanlock succeeds (took $ms ms)" test $rc -eq 0 || diag "$out"
    poll_report "f"
    never_written "f"
    diag "$(lease_log 4)"

    pid2=$(mg_qemu_pid 2 A)
    expect_owners "f: both hosts see host2's QEMU (pid $pid2) holding the disk exclusive" \
        "$DISK" "host2:A:$pid2:exclusive:in-use"
    err=$(vsh 1 start A 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then ok "f: virsh start A on host1 fails"
    else not_ok "f: virsh start A on host1 fails" "$err"; vsh 1 destroy A >/dev/null 2>&1; fi
    refused_naming "f: vmlease run --exclusive DISK on host1 is refused" 1 host2
    mg_throttle off
}
f_run
