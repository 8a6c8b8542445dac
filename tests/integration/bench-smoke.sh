#!/usr/bin/env bash
# The benchmark must run and print every figure it promises (values are
# not judged here: timings do not belong in tests).
set -u
bench="$1"
out=$("$bench" --quick 2>/dev/null)
rc=$?
echo "1..2"
if [ $rc -eq 0 ]; then echo "ok 1 lease-bench --quick exits 0"; else echo "not ok 1 lease-bench exited $rc"; fi
missing=""
for name in acquire_release_p50_us acquire_release_p99_us throughput_ops_s \
            throughput_ops_s_8clients rss_kib_10000_leases socket_roundtrip_p50_us \
            acquire_release_same_cpu_p50_us; do
    echo "$out" | grep -Eq "^$name: [0-9]+(\.[0-9]+)?$" || missing="$missing $name"
done
if [ -z "$missing" ]; then echo "ok 2 every figure printed as 'name: value'"; else echo "not ok 2 missing:$missing"; fi
