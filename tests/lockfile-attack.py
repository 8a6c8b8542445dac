#!/usr/bin/env python3
# lockfile-attack.py LOCKSPACE IMG...: what a party that bypasses vmlease
# gets. One token per image, "NAME=posix:R,ofd:R" (NAME: the file name
# without .qcow2/.iso), R the outcome of a non-blocking F_WRLCK over the
# whole of IMG's lock file in LOCKSPACE (as `$VMLEASE_BIN inspect --json`
# names it: the SHA-256 of the image's resource key), as a classic
# (lockf) and as an OFD lock: "refused" (EAGAIN/EACCES), "GOT" (then let go
# at once), or another errno name; "NAME=nofile:ERRNO" if the lock file
# cannot be opened (nothing is created). Used by the libvirt and migration
# tests while vmleased is down.
import errno, fcntl, json, os, struct, subprocess, sys
lockspace = sys.argv[1]
def outcome(fn):
    try:
        fn()
        return "GOT"
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return "refused"
        return errno.errorcode.get(e.errno, str(e.errno))
out = []
for p in sys.argv[2:]:
    name = os.path.basename(p)
    for ext in (".qcow2", ".iso"):
        if name.endswith(ext):
            name = name[:-len(ext)]
    facts = subprocess.run([os.environ.get("VMLEASE_BIN", "vmlease"), "inspect", "--json", p],
                           capture_output=True, text=True)
    path = os.path.join(lockspace, json.loads(facts.stdout)["lock_file"])
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        out.append("%s=nofile:%s" % (name, errno.errorcode.get(e.errno, str(e.errno))))
        continue
    def posix():
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0, os.SEEK_SET)
        fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0, os.SEEK_SET)
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD)
    def ofd():
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))
    out.append("%s=posix:%s,ofd:%s" % (name, outcome(posix), outcome(ofd)))
    os.close(fd)
print(" ".join(out))