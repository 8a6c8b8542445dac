#!/usr/bin/env bash
# Seed corpus for fuzz-qcow2-header: the first bytes of real images that
# qemu-img makes in every shape we know of. Usage: make-corpus.sh OUTDIR
set -euo pipefail
out=$(realpath -m "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$work"
long=$(printf 'l%.0s' $(seq 250))
mkdir -p "$long/$long"
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-img create -q -f qcow2 "$long/$long/base.qcow2" 16M
mk() {   # NAME OPTIONS...
    local name=$1; shift
    qemu-img create -q -f qcow2 "$@" "$name" 16M
}
mk v2.qcow2 -o compat=0.10
mk v2-backing.qcow2 -o compat=0.10 -b base.qcow2 -F qcow2
mk v3.qcow2
mk v3-backing.qcow2 -b base.qcow2 -F qcow2
mk v3-long-backing.qcow2 -b "$PWD/$long/$long/base.qcow2" -F qcow2
mk v3-512.qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2
mk v3-2m.qcow2 -o cluster_size=2M
mk v3-lazy.qcow2 -o lazy_refcounts=on
mk v3-extl2.qcow2 -o extended_l2=on
mk v3-zstd.qcow2 -o compression_type=zstd 2>/dev/null || true
mk v3-datafile.qcow2 -o data_file=data.raw
mk v3-snap.qcow2 && qemu-img snapshot -c s1 v3-snap.qcow2
mk v3-bitmap.qcow2 && qemu-img bitmap --add v3-bitmap.qcow2 b0
mk v3-refcount1.qcow2 -o refcount_bits=1
for f in *.qcow2; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f")
    n=$(( size < 65536 ? size : 65536 ))
    case "$f" in v3-2m.qcow2) n=4096 ;; esac
    head -c "$n" "$f" > "$out/$f"
done
echo "make-corpus: $(ls "$out" | wc -l) seeds in $out"
