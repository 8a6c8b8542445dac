#!/usr/bin/env bash
# Install what vmlease needs to build and test, from Debian 12's packages.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(build-essential pkg-config meson ninja-build python3
      libglib2.0-dev libjson-glib-dev libxml2-dev
      libvirt-dev libsanlock-dev qemu-utils
      libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
      clang libclang-rt-14-dev sanlock libvirt-sanlock util-linux iproute2
      python3-docutils groff-base   # rst2man builds the man pages; groff renders them in the test
      systemd)   # systemd-analyze verify of the units; nothing is started
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
