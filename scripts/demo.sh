#!/usr/bin/env bash
# vmlease's main job, live: install, build, start vmleased on the embedded
# fcntl backend in ./demo-root, and watch two holders contend for one image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null

export VMLEASE_ROOT="$PWD/demo-root"
rm -rf "$VMLEASE_ROOT"
mkdir -p "$VMLEASE_ROOT"
vmleased=build/lockd/vmleased
vmlease=build/tools/vmlease
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "start vmleased (fcntl backend, lockspace $VMLEASE_ROOT/lockspace)"
$vmleased --foreground 2>"$VMLEASE_ROOT/vmleased.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do $vmlease status >/dev/null 2>&1 && break; sleep 0.05; done
$vmlease status

img="$VMLEASE_ROOT/disk.qcow2"
qemu-img create -q -f qcow2 "$img" 16M

say "holder A: 'vmlease run --exclusive disk.qcow2 -- sleep 6' (stands in for a VM writing the disk)"
$vmlease run --exclusive "$img" -- sleep 6 &
holder_a=$!
for _ in $(seq 100); do $vmlease owners "$img" | grep -q sleep && break; sleep 0.05; done

say "who holds it: vmlease owners"
$vmlease owners "$img"

say "the image says so itself: vmlease inspect (in-use bit and owner record in the qcow2 header)"
$vmlease inspect "$img"

say "holder B: 'vmlease run --exclusive disk.qcow2 -- qemu-img snapshot -c s1 disk.qcow2' is refused"
set +e
$vmlease run --exclusive "$img" -- qemu-img snapshot -c s1 "$img"
echo "(exit status $?)"
set -e

say "another name is the same image: a hard link is refused too, naming A"
ln -f "$img" "$VMLEASE_ROOT/alias.qcow2"
set +e
$vmlease run --exclusive "$VMLEASE_ROOT/alias.qcow2" -- true
echo "(exit status $?)"
set -e

say "a read-only observer is let in without a lease: 'vmlease run --observe disk.qcow2 -- qemu-img info -U disk.qcow2'"
$vmlease run --observe "$img" -- sh -c "qemu-img info -U '$img' | head -3; $vmlease owners '$img'"

say "A finishes; its lease goes with it"
wait $holder_a
$vmlease owners "$img"
echo "(no owners)"

say "now B may take the image"
$vmlease run --exclusive "$img" -- qemu-img snapshot -c s1 "$img"
qemu-img snapshot -l "$img"
say "done: daemon log in $VMLEASE_ROOT/vmleased.log"
