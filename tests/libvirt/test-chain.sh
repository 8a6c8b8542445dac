#!/usr/bin/env bash
# vmlease chain against a real libvirtd + QEMU (TCG without /dev/kvm):
# leases on every layer of a three-layer chain, a live commit of the middle
# layer as a transaction (refused while another domain shares the base, then
# applied), live snapshot, pull and active commit, a frozen disk, and offline
# commit and rebase with qemu-img judged by qemu-img itself. TAP output.
set -u
if [ -z "${VMLEASE_IN_NS:-}" ]; then
    exec env VMLEASE_IN_NS=1 unshare --mount --propagation private "$BASH" "$0" "$@"
fi
for tool in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img qemu-io python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "1..0 # SKIP $tool is not installed"
        exit 0
    fi
done
. "$(dirname "$0")/libvirt-env.sh"
trap lv_cleanup EXIT
trap 'exit 143' TERM; trap 'exit 130' INT; trap 'exit 129' HUP   # cleanup on signals too

. "$(dirname "$0")/../tap.sh"
vmlease() { "$VMLEASE_BIN" "$@"; }

# leases PATH...: "NAME:MODE" of every owner of each PATH (sorted, joined
# by ","), the paths separated by "|"; "-" for an image nobody holds.
leases() {
    "$VMLEASE_BIN" owners --json "$@" | python3 -c '
import json, os, sys
got = {r.get("path", r["resource"]): sorted("%s:%s" % (o["name"], o["mode"]) for o in r["owners"])
       for r in json.load(sys.stdin)["resources"]}
print("|".join(",".join(got.get(os.path.realpath(p), [])) or "-" for p in sys.argv[1:]))' "$@"
}
# xml_chain < XML: the vda chain in domain XML, "a -> b -> c".
xml_chain() {
    python3 -c '
import sys, xml.etree.ElementTree as ET
disk = ET.parse(sys.stdin).find("./devices/disk/target[@dev=\"vda\"]/..")
out = []
while disk is not None and disk.find("source") is not None:
    out.append(disk.find("source").get("file"))
    disk = disk.find("backingStore")
print(" -> ".join(out))'
}
live_chain() { virsh dumpxml "$1" | xml_chain; }
# whole_match PATTERN FILE: all of FILE (its carriage returns kept) is what
# the Python regular expression PATTERN matches.
whole_match() {
    python3 -c 'import re, sys; sys.exit(not re.fullmatch(sys.argv[1], open(sys.argv[2], newline="").read(), re.S))' "$1" "$2"
}
# summary_re WORDS [SIZE]: the summary line of a change, WORDS literally,
# then ", SIZE in S.T s" (no SIZE: ", done in S.T s"); only the time varies.
summary_re() {
    python3 -c 'import re, sys; print(re.escape(sys.argv[1] + ", " + (sys.argv[2] or "done") + " in") + r" [0-9]+\.[0-9] s\n", end="")' "$1" "${2:-}"
}
# progress_re LABEL: progress lines rewritten with \r, the last at 100 %.
progress_re() {
    local rate='( [0-9]+(\.[0-9])? (B|KiB|MiB|GiB|TiB)/s)? *'
    # \r and \n go to Python as escapes: $(...) would eat a real newline.
    printf '(\\r%s: \\[[ 0-9]{2}[0-9] %%\\]%s)*\\r%s: \\[100 %%\\]%s\\n' "$1" "$rate" "$1" "$rate"
}
# img_chain IMAGE: "a -> b -> c" from qemu-img info --backing-chain.
img_chain() {
    qemu-img info --backing-chain --output=json "$1" | python3 -c '
import json, os, sys
print(" -> ".join(os.path.basename(i["filename"]) for i in json.load(sys.stdin)))'
}

lv_setup_users
lv_mount_private || { echo "Bail out! no private /run and libvirt directories"; exit 1; }
lv_start_vmleased || { echo "1..0 # SKIP vmleased did not start"; exit 1; }
lv_start_libvirtd || { echo "Bail out! libvirtd did not start"; exit 1; }

D=$LV_ROOT
base=$D/base.qcow2 mid=$D/mid.qcow2 top=$D/top-a.qcow2 topb=$D/top-b.qcow2
qemu-img create -q -f qcow2 "$base" 16M
# 8 MiB of data: enough for a slow pull in test 17
qemu-io -c "write -P 0x0b 0 8M" "$base" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$mid"
qemu-io -c "write -P 0x0c 1M 1M" "$mid" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$top"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$topb"   # dom-b reads the same base
UA=11111111-2222-4333-8444-5555555555a1 UB=11111111-2222-4333-8444-5555555555b2
lv_domain_xml dom-a $UA "$(lv_disk "$top" vda)" > "$D/a.xml"
lv_domain_xml dom-b $UB "$(lv_disk "$topb" vda)" > "$D/b.xml"
virsh define "$D/a.xml" >/dev/null && virsh define "$D/b.xml" >/dev/null

echo "1..36"

# 1. the chain from the inactive definition (read from the headers)
out=$(vmlease chain show --json dom-a | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["running"], " ".join("%s:%s:%s" % (l["index"], l["from"], l["lease"]) for l in d["disks"][0]["chain"]))')
check "chain show dom-a (shut off): 3 layers from the headers, no leases ($out)" \
    test "$out" = "False 0:xml:- 1:header:- 2:header:-"

# 2. running: a lease on every layer
virsh start dom-a >/dev/null && virsh start dom-b >/dev/null
got=$(leases "$top" "$mid" "$base")
check "dom-a and dom-b run: top exclusive, mid shared, base shared by both ($got)" \
    test "$got" = "dom-a:exclusive|dom-a:shared|dom-a:shared,dom-b:shared"
echo "# vmlease chain show dom-a, before the commit:"
vmlease chain show dom-a | sed 's/^/#   /'

# 3-5. the commit of mid into base is refused while dom-b shares the base;
# nothing changes
err=$(vmlease chain commit dom-a --disk vda --top "$mid" --base "$base" 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *dom-b* ]] && [[ "$err" == *"$base"* ]]; then
    ok "commit refused with exit 3, naming dom-b and the base"
else
    not_ok "commit refused naming dom-b" "rc=$rc" "$err"
fi
echo "# $err"
got=$(leases "$top" "$mid" "$base")
check "after the refusal every lease is as it was ($got)" \
    test "$got" = "dom-a:exclusive|dom-a:shared|dom-a:shared,dom-b:shared"
check "after the refusal the chain is unchanged" \
    test "$(live_chain dom-a)" = "$top -> $mid -> $base"

# 6. an offline commit into the base both VMs read is refused too
other=$D/other.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$other"
err=$(vmlease chain commit "$other" 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *dom-a* ]] && [[ "$err" == *dom-b* ]]; then
    ok "offline commit of another overlay into the shared base refused (exit 3, names dom-a and dom-b)"
else
    not_ok "offline commit into the shared base refused" "rc=$rc" "$err"
fi

# 7-11. dom-b gone: the live commit goes through
virsh destroy dom-b >/dev/null
for _ in $(seq 100); do [ "$(leases "$base")" = "dom-a:shared" ] && break; sleep 0.05; done
vmlease chain commit dom-a --disk vda --top "$mid" --base "$base" --progress --xml \
    > "$D/after-commit.out" 2> "$D/err"
rc=$?
check "live commit of mid into base: exit 0" test $rc -eq 0 || sed 's/^/# /' "$D/err"
check "libvirt's live XML: top-a -> base" test "$(live_chain dom-a)" = "$top -> $base"
got=$(leases "$top" "$mid" "$base")
check "leases match the new chain exactly: top exclusive, mid free, base shared ($got)" \
    test "$got" = "dom-a:exclusive|-|dom-a:shared"
head -n 1 "$D/after-commit.out" > "$D/summary"
tail -n +2 "$D/after-commit.out" > "$D/after-commit.xml"
check "stdout starts with the summary: $(cat "$D/summary")" whole_match \
    "$(summary_re "committed $mid into $base (disk vda of domain dom-a): chain of 3 images is now 2" "16.0 MiB")" \
    "$D/summary"
got=$(xml_chain < "$D/after-commit.xml")
check "--xml: the domain XML after the summary has the new chain ($got)" test "$got" = "$top -> $base"
check "--progress: stderr holds the block job's progress, ending at [100 %]" \
    whole_match "$(progress_re "Block commit")" "$D/err" || tap_diag "$(cat -A "$D/err")"
echo "# vmlease chain show dom-a, after the commit:"
vmlease chain show dom-a | sed 's/^/#   /'
check "the guest still sees mid's data (now in base): qemu-io -U reads 0x0c at 1M" \
    bash -c "qemu-io -r -U -c 'read -P 0x0c 1M 1M' '$top' | grep -q 'read 1048576/1048576'"

# 12-14. live snapshot: a new overlay on top, the old top becomes shared;
# without --xml stdout is the summary alone, stderr (no terminal) is empty
snap=$D/snap.qcow2
vmlease chain snapshot dom-a --file "$snap" >"$D/out" 2>"$D/err"
check "live snapshot: exit 0" test $? -eq 0 || sed 's/^/# /' "$D/err"
check "live snapshot: only the summary line on stdout: $(cat "$D/out")" \
    whole_match "$(summary_re "created the overlay $snap on $top (disk vda of domain dom-a): chain of 2 images is now 3")" \
    "$D/out"
check "live snapshot: nothing on stderr (no terminal, no --progress)" test ! -s "$D/err"
check "live XML after the snapshot: snap -> top-a -> base" \
    test "$(live_chain dom-a)" = "$snap -> $top -> $base"
got=$(leases "$snap" "$top" "$base")
check "leases: snap exclusive, top-a and base shared ($got)" \
    test "$got" = "dom-a:exclusive|dom-a:shared|dom-a:shared"

# 15-16. live pull of top-a into the snapshot
vmlease chain pull dom-a --base "$base" >/dev/null 2>"$D/err"
check "live pull: exit 0, chain snap -> base" test $? -eq 0 -a "$(live_chain dom-a)" = "$snap -> $base" \
    || sed 's/^/# /' "$D/err"
got=$(leases "$snap" "$top" "$base")
check "leases after the pull: snap exclusive, top-a free, base shared ($got)" \
    test "$got" = "dom-a:exclusive|-|dom-a:shared"

# 17. a disk with a running block job is frozen: the change is refused
virsh blockpull dom-a vda --bandwidth 1 >/dev/null 2>&1   # 8 MiB at 1 MiB/s
err=$(vmlease chain commit dom-a 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *frozen* ]] && [[ "$err" == *"pull job on disk vda"* ]]; then
    ok "a change during a running block job is refused: frozen (exit 3)"
else
    not_ok "a change during a running block job is refused" "rc=$rc" "$err"
fi
virsh blockjob dom-a vda --abort >/dev/null 2>&1
for _ in $(seq 100); do virsh blockjob dom-a vda --info 2>&1 | grep -q "No current block job" && break; sleep 0.1; done

# 18. interrupted: a pull capped at 1 MiB/s gets SIGINT once its job runs;
# the job is cancelled, chain and leases are as before; its progress, read
# from libvirt's job info, stopped short of 100 % and its line was ended
"$VMLEASE_BIN" chain pull dom-a --bandwidth 1 --progress >"$D/out" 2>"$D/err" &
cpid=$!
for _ in $(seq 200); do virsh blockjob dom-a vda --info 2>&1 | grep -q "Pull" && break; sleep 0.05; done
kill -INT $cpid
wait $cpid
rc=$?
got="$(live_chain dom-a)|$(leases "$snap" "$base")|$(virsh blockjob dom-a vda --info 2>&1)"
if [ $rc -eq 4 ] && grep -q "interrupted by signal 2" "$D/err" && \
   [ "$got" = "$snap -> $base|dom-a:exclusive|dom-a:shared|No current block job for vda" ]; then
    ok "SIGINT during a live pull: job cancelled, exit 4, chain and leases as before"
else
    not_ok "SIGINT during a live pull" "rc=$rc" "$(cat "$D/err")" "$got"
fi
interrupted_output() {
    local rate='( [0-9]+(\.[0-9])? (B|KiB|MiB|GiB|TiB)/s)? *'
    whole_match "(\\rBlock pull: \\[ [ 0-9][0-9] %\\]$rate)+\\nvmlease: interrupted by signal 2: cancelled the block job on disk vda\\n" \
        "$D/err" && test ! -s "$D/out"
}
check "SIGINT during a live pull: stderr shows the job below 100 %, then the error; stdout empty" \
    interrupted_output || tap_diag "$(cat -A "$D/err")"

# 18-19. active commit: libvirt pivots to the base, which becomes the
# exclusive active image
vmlease chain commit dom-a --json --progress >"$D/out" 2>"$D/err"
check "live active commit: exit 0, chain is base alone" \
    test $? -eq 0 -a "$(live_chain dom-a)" = "$base" || sed 's/^/# /' "$D/err"
got=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(",".join(sorted(d)), d["change"], d["domain"], d["disk"], d["live"], " ".join(d["new_chain"]), "xml" in d)' "$D/out")
check "--json: the change as a document, no XML without --xml ($got)" \
    test "$got" = "bytes,change,disk,domain,live,milliseconds,new_chain,old_chain,summary,uuid commit dom-a vda True $base False"
check "--json --progress: the progress on stderr all the same, ending at [100 %]" \
    whole_match "$(progress_re "Block commit")" "$D/err" || tap_diag "$(cat -A "$D/err")"
got=$(leases "$snap" "$base")
check "leases after the active commit: snap free, base exclusive ($got)" \
    test "$got" = "-|dom-a:exclusive"

# 20. a shut-off domain is changed offline, but not into a base a running
# domain uses
err=$(vmlease chain commit dom-b 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 3 ] && [[ "$err" == *dom-a* ]] && [[ "$err" == *"$base"* ]]; then
    ok "offline commit for shut-off dom-b into the base dom-a runs on: refused (exit 3, names dom-a)"
else
    not_ok "offline commit for shut-off dom-b refused" "rc=$rc" "$err"
fi
virsh destroy dom-a >/dev/null

# 21-22. snapshot of the shut-off dom-b: qemu-img makes the overlay and the
# definition follows
bsnap=$D/b-snap.qcow2
vmlease chain snapshot dom-b --file "$bsnap" >/dev/null 2>"$D/err"
rc=$?
got=$(virsh dumpxml --inactive dom-b | xml_chain)
check "snapshot of shut-off dom-b: exit 0, its definition reads b-snap -> top-b -> base ($got)" \
    test $rc -eq 0 -a "$got" = "$bsnap -> $topb -> $base" || sed 's/^/# /' "$D/err"
check "qemu-img agrees: $(img_chain "$bsnap")" \
    test "$(img_chain "$bsnap")" = "b-snap.qcow2 -> top-b.qcow2 -> base.qcow2"

# 23. a domain XML file: top-b made standalone; the printed XML says so
vmlease chain rebase "$D/b.xml" --backing '' --xml > "$D/b-new.out" 2>"$D/err"
rc=$?
got=$(tail -n +2 "$D/b-new.out" | xml_chain)
check "rebase of b.xml's disk onto nothing: exit 0, printed chain is top-b alone, qemu-img agrees" \
    test $rc -eq 0 -a "$got" = "$topb" -a "$(img_chain "$topb")" = "top-b.qcow2" || sed 's/^/# /' "$D/err"

# 24-25. offline commit with qemu-img: judged by qemu-img
ob=$D/off-base.qcow2 om=$D/off-mid.qcow2 ot=$D/off-top.qcow2
qemu-img create -q -f qcow2 "$ob" 16M
qemu-img create -q -f qcow2 -b off-base.qcow2 -F qcow2 "$om"
qemu-io -c "write -P 0x2a 0 1M" "$om" >/dev/null
qemu-img create -q -f qcow2 -b off-mid.qcow2 -F qcow2 "$ot"
vmlease chain commit "$ot" --top "$om" > "$D/off.out" 2>"$D/err"
rc=$?
check "offline commit on an image: the summary names the images only: $(cat "$D/off.out")" \
    whole_match "$(summary_re "committed $om into $ob: chain of 3 images is now 2" "16.0 MiB")" "$D/off.out"
chk=$(qemu-img check "$ot" 2>&1 | tail -1; qemu-img check "$ob" 2>&1 | tail -1)
if [ $rc -eq 0 ] && [ "$(img_chain "$ot")" = "off-top.qcow2 -> off-base.qcow2" ] && \
   qemu-io -c "read -P 0x2a 0 1M" "$ob" | grep -q "read 1048576/1048576" && \
   qemu-img check -q "$ot" && qemu-img check -q "$ob"; then
    ok "offline commit: qemu-img info --backing-chain says off-top -> off-base, base has the data, qemu-img check clean"
else
    not_ok "offline commit" "rc=$rc" "$(cat "$D/err")" "$(img_chain "$ot")" "$chk"
fi
check "offline commit leaves no lease behind ($(leases "$ot" "$om" "$ob"))" test "$(leases "$ot" "$om" "$ob")" = "-|-|-"

# 26-27. offline rebase onto another base (safe mode: data kept), and a
# rebase that would make a cycle is refused with the images untouched
nb=$D/new-base.qcow2
qemu-img create -q -f qcow2 "$nb" 16M
vmlease chain rebase "$ot" --backing "$nb" >/dev/null 2>"$D/err"
rc=$?
if [ $rc -eq 0 ] && [ "$(img_chain "$ot")" = "off-top.qcow2 -> new-base.qcow2" ] && \
   qemu-io -c "read -P 0x2a 0 1M" "$ot" | grep -q "read 1048576/1048576" && qemu-img check -q "$ot"; then
    ok "offline rebase onto new-base: chain off-top -> new-base, data kept, qemu-img check clean"
else
    not_ok "offline rebase" "rc=$rc" "$(cat "$D/err")" "$(img_chain "$ot")"
fi
cp "$nb" "$D/nb.before"
err=$(vmlease chain rebase "$ot" --image "$nb" --backing "$ot" 2>&1 >/dev/null)
rc=$?
if [ $rc -ne 0 ] && [[ "$err" == *"cycle of 2 images"* ]] && cmp -s "$nb" "$D/nb.before"; then
    ok "rebasing new-base onto off-top refused: a cycle of 2 images; new-base untouched"
else
    not_ok "cycle refused" "rc=$rc" "$err"
fi

[ $failed -eq 0 ]
