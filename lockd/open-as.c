#include "open-as.h"
#include "vml-error.h"
#include "vml-wire.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void
vml_creds_of_peer(int fd, const struct ucred *cr, VmlCreds *creds)
{
    memset(creds, 0, sizeof(*creds));
    creds->uid = cr->uid;
    creds->gid = cr->gid;
    socklen_t glen = sizeof(creds->groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, creds->groups, &glen) == 0)
        creds->n_groups = glen / sizeof(gid_t);
}

static int
open_no_symlinks(const char *path, int flags)
{
    struct open_how how = {
        .flags = (guint64)(flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK),
        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
}

static int
open_error(GError **error, const char *path, int err)
{
    g_set_error(error, VML_ERROR,
                err == EACCES || err == EPERM ? VML_ERROR_PERMISSION_DENIED
                                              : VML_ERROR_NO_SUCH_IMAGE,
                "cannot open %s: %s", path,
                err == ELOOP ? "a part of the path is (now) a symlink, loops, or links "
                               "into /proc" : g_strerror(err));
    return -1;
}

/* A user's name of a file: its symlinks are the user's to have, but not
 * a /proc magic link (/proc/self/fd/N), which would name what the
 * resolving process (forked from vmleased) has open. */
static int
open_following(const char *path, G_GNUC_UNUSED int flags)
{
    return vml_open_path_no_magic(path);
}

int
vml_open_path_no_magic(const char *path)
{
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC,
        .resolve = RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    /* No openat2 (valgrind, a kernel before 5.6): a magic link is then
     * followed, and the caller's checks of where the path led (not into
     * /proc, not into vmleased's own directories) are all that is left. */
    if (fd < 0 && errno == ENOSYS)
        fd = open(path, O_PATH | O_CLOEXEC);
    return fd;
}

static int
open_as(const char *path, int flags, int (*opener)(const char *, int), const VmlCreds *creds,
        GError **error)
{
    if (!creds || creds->uid == 0) {
        int fd = opener(path, flags);
        return fd >= 0 ? fd : open_error(error, path, errno);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
        return open_error(error, path, errno);
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        return open_error(error, path, err);
    }
    if (pid == 0) {
        /* Only system calls from here: the daemon has threads. */
        int err = 0, fd = -1;
        if (setgroups(creds->n_groups, creds->groups) < 0 ||
            setresgid(creds->gid, creds->gid, creds->gid) < 0 ||
            setresuid(creds->uid, creds->uid, creds->uid) < 0)
            err = errno;
        else if ((fd = opener(path, flags)) < 0)
            err = errno;
        struct iovec iov = { .iov_base = &err, .iov_len = sizeof(err) };
        VmlFdControl control;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd >= 0)
            vml_wire_attach_fds(&mh, &control, &fd, 1);
        _exit(sendmsg(sv[1], &mh, 0) < 0 ? 1 : 0);
    }
    close(sv[1]);
    int err = EIO;
    struct iovec iov = { .iov_base = &err, .iov_len = sizeof(err) };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf) };
    ssize_t n;
    do {
        n = recvmsg(sv[0], &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    int fd = -1;
    struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
    close(sv[0]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (fd >= 0)
        return fd;
    return open_error(error, path, n == (ssize_t)sizeof(err) && err ? err : EIO);
}

int
vml_open_as(const char *path, int flags, const VmlCreds *creds, GError **error)
{
    return open_as(path, flags, open_no_symlinks, creds, error);
}

int
vml_open_path_as(const char *path, const VmlCreds *creds, GError **error)
{
    return open_as(path, 0, open_following, creds, error);
}
