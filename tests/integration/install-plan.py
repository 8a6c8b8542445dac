#!/usr/bin/env python3
"""install-plan.py BUILDDIR: what `meson install` would put where, for this
build's prefix, is one coherent system (TAP output):
 - the plugin where libvirt loads lock managers (its libdir/libvirt/lock-driver);
 - qemu-vmlease.conf where libvirt reads it (libvirt's sysconfdir, whatever
   our prefix), vmleased.conf where vmleased reads it (the default that
   `vmleased --help` names);
 - the systemd unit's ExecStart is the installed vmleased, and the
   launcher execs the installed vmleased-daemon.
Read from `meson introspect --installed`: nothing is installed."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

build = sys.argv[1]
results = []


def check(ok, what, detail=""):
    results.append((bool(ok), what, detail))


plan = json.loads(subprocess.run(["meson", "introspect", "--installed", build],
                                 check=True, capture_output=True, text=True).stdout)
by_name = {}
for src, dst in plan.items():
    by_name.setdefault(os.path.basename(dst), []).append((src, dst))


def dest(name):
    got = by_name.get(name, [])
    check(len(got) == 1, "%s is installed once" % name, str(got))
    return got[0] if got else (None, None)


_, plugin = dest("vmlease.so")
libvirt_libdir = subprocess.run(["pkg-config", "--variable=libdir", "libvirt"], check=True,
                                capture_output=True, text=True).stdout.strip()
check(plugin == os.path.join(libvirt_libdir, "libvirt", "lock-driver", "vmlease.so"),
      "the plugin goes where libvirt loads lock managers", str(plugin))

libvirt_prefix = subprocess.run(["pkg-config", "--variable=prefix", "libvirt"], check=True,
                                capture_output=True, text=True).stdout.strip()
libvirt_etc = "/etc" if libvirt_prefix == "/usr" else os.path.join(libvirt_prefix, "etc")
_, qemu_conf = dest("qemu-vmlease.conf")
check(qemu_conf == os.path.join(libvirt_etc, "libvirt", "qemu-vmlease.conf"),
      "qemu-vmlease.conf goes where libvirt reads it (%s/libvirt)" % libvirt_etc, str(qemu_conf))

_, daemon_conf = dest("vmleased.conf")
src_launcher, launcher = dest("vmleased")
env = {k: v for k, v in os.environ.items() if k != "VMLEASE_ROOT"}
help_text = subprocess.run([src_launcher, "--help"], capture_output=True, text=True,
                           env=env).stdout
m = re.search(r"--config=FILE\s+Configuration file \(default: ([^)]+)\)", help_text)
check(m and m.group(1) == daemon_conf,
      "vmleased.conf goes where vmleased reads it by default (vmleased --help)",
      "help says %s, installed to %s" % (m.group(1) if m else None, daemon_conf))

src_unit, unit = dest("vmleased.service")
check(unit and "/systemd/system/" in unit, "the unit goes to a systemd unit directory", str(unit))
text = open(src_unit).read() if src_unit else ""
m = re.search(r"^ExecStart=(\S+)", text, re.M)
check(m and m.group(1) == launcher, "the unit's ExecStart is the installed vmleased",
      "ExecStart=%s, vmleased at %s" % (m.group(1) if m else None, launcher))
check(re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M),
      "the unit reloads with SIGHUP (checked, then re-exec)")

# systemd-analyze verify on the three units, installed as the plan says into
# a root that has systemd's own units and what the units run.
units = []
for name in ("vmleased.service", "vmleased.socket", "vmleased-admin.socket"):
    s, d = dest(name)
    units.append((s, d))
check(re.search(r"^Type=notify$", text, re.M), "the service is Type=notify")
check(re.search(r"^Requires=vmleased.socket vmleased-admin.socket$", text, re.M),
      "the service requires both socket units")
vroot = tempfile.mkdtemp(prefix="vmlease-units-")
try:
    shutil.copytree("/lib/systemd/system", os.path.join(vroot, "lib/systemd/system"),
                    symlinks=True)
    for src, dst in units + [(src_launcher, launcher), ("/bin/kill", "/bin/kill")]:
        os.makedirs(os.path.dirname(vroot + dst), exist_ok=True)
        shutil.copy(src, vroot + dst)
    r = subprocess.run(["systemd-analyze", "verify", "--root=" + vroot, "--man=no"] +
                       [d for _, d in units], capture_output=True, text=True)
    check(r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(),
          "systemd-analyze verify accepts the installed units",
          "exit %d: %s %s" % (r.returncode, r.stdout, r.stderr))
finally:
    shutil.rmtree(vroot, ignore_errors=True)

_, daemon = dest("vmleased-daemon")
launcher_bytes = open(src_launcher, "rb").read()
check(daemon and daemon.encode() + b"\0" in launcher_bytes,
      "the launcher execs the installed vmleased-daemon (%s)" % daemon)

print("1..%d" % len(results))
for n, (ok, what, detail) in enumerate(results, 1):
    print("%s %d - %s" % ("ok" if ok else "not ok", n, what))
    if not ok and detail:
        print("# " + detail)
sys.exit(0 if all(ok for ok, _, _ in results) else 1)
