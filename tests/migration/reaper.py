# reaper.py CMD [ARGS...]: run CMD below a child subreaper that reaps, at
# once, every process orphaned under it: QEMU (libvirt daemonizes it, then
# waits for a killed QEMU's pid to vanish: a zombie would hold `virsh
# destroy` for seconds) and sanlock's helper (left when the daemon exits).
# Nothing is left for init. Signals are passed on to CMD; exits as CMD did.
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("reaper.py: prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])


def forward(signum, _frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
status = 1 << 8
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == child:
        status = st
        break
# CMD is done and should have ended all it started: reap stragglers briefly.
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.05)
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
