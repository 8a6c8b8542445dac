#include "holder-mailbox.h"
#include "vml-error.h"
#include "vml-proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* SCM_MAX_FD is 253; a set larger than one message goes in parts. */
#define FDS_PER_MESSAGE 250
/* Messages added beside a set before the next store consolidates them:
 * a release takes every one out. */
#define ADDED_MAX 16
#define TAG "vmlease-mailbox"

struct _VmlMailbox {
    int fd;
    guint64 ino;
    guint64 serial;
    /* Messages queued, when we know (nobody but us writes or reads the
     * mailbox while we have it); -1 after a restart's takeover. */
    int queued;
};

static guint64
socket_ino(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (guint64)st.st_ino : 0;
}

VmlMailbox *
vml_mailbox_new(int fd, GError **error)
{
    int type = 0, domain = 0;
    socklen_t len = sizeof(type);
    struct sockaddr_un self = { 0 }, peer = { 0 };
    socklen_t self_len = sizeof(self), peer_len = sizeof(peer);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_DGRAM ||
        (len = sizeof(domain), getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len)) < 0 ||
        domain != AF_UNIX || getsockname(fd, (struct sockaddr *)&self, &self_len) < 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &peer_len) < 0 ||
        self_len <= sizeof(sa_family_t) || self_len != peer_len ||
        memcmp(&self, &peer, self_len) != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "must be an AF_UNIX datagram socket connected to itself");
        close(fd);
        return NULL;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    VmlMailbox *m = g_new0(VmlMailbox, 1);
    m->fd = fd;
    m->ino = socket_ino(fd);
    m->serial = (guint64)g_get_real_time() << 8;
    m->queued = -1;
    return m;
}

typedef struct {
    char want[48];   /* socket:[INO] */
    int num;
} SocketSearch;

static gboolean
is_wanted_socket(int num, const char *target, gpointer data)
{
    SocketSearch *s = data;
    if (strcmp(target, s->want) != 0)
        return TRUE;
    s->num = num;
    return FALSE;
}

/* PID's fd number for the socket with inode INO, or -1. */
static int
fd_of_socket(pid_t pid, guint64 ino)
{
    SocketSearch s = { .num = -1 };
    if (!ino)
        return -1;
    g_snprintf(s.want, sizeof(s.want), "socket:[%" G_GUINT64_FORMAT "]", ino);
    vml_proc_each_fd(pid, is_wanted_socket, &s);
    return s.num;
}

VmlMailbox *
vml_mailbox_find(pid_t pid, int pidfd, guint64 ino)
{
    int n = fd_of_socket(pid, ino);
    int fd = n >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, n, 0) : -1;
    return fd >= 0 ? vml_mailbox_new(fd, NULL) : NULL;
}

VmlMailbox *
vml_mailbox_find_anywhere(guint64 ino)
{
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *ent;
    while (proc && (ent = g_dir_read_name(proc))) {
        char *end;
        long pid = strtol(ent, &end, 10);
        if (*end || pid <= 0 || pid == getpid() || fd_of_socket((pid_t)pid, ino) < 0)
            continue;
        int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
        if (pidfd < 0)
            continue;
        VmlMailbox *m = vml_mailbox_find((pid_t)pid, pidfd, ino);
        close(pidfd);
        if (m)
            return m;
    }
    return NULL;
}

gboolean
vml_mailbox_is_kept_by(VmlMailbox *m, pid_t pid)
{
    return fd_of_socket(pid, m->ino) >= 0;
}

void
vml_mailbox_free(VmlMailbox *m)
{
    if (!m)
        return;
    close(m->fd);
    g_free(m);
}

int
vml_mailbox_fd(VmlMailbox *m)
{
    return m->fd;
}

guint64
vml_mailbox_ino(VmlMailbox *m)
{
    return m->ino;
}

static gboolean
send_part(VmlMailbox *m, guint64 serial, const int *fds, guint n, GError **error)
{
    char text[64];
    int len = g_snprintf(text, sizeof(text), TAG " %" G_GUINT64_FORMAT, serial);
    struct iovec iov = { .iov_base = text, .iov_len = (size_t)len };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MESSAGE)];
    } ctl;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (n) {
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    if (sendmsg(m->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != len) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot put lock fds into the VM's mailbox: %s", g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* The head message's serial (0 if it is not ours) without taking it;
 * with FDS, dups of its fds are appended. FALSE when the queue is empty. */
static gboolean
peek_head(VmlMailbox *m, guint64 *serial, GArray *fds)
{
    char text[64] = { 0 };
    struct iovec iov = { .iov_base = text, .iov_len = sizeof(text) - 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (fds) {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
    }
    ssize_t n = recvmsg(m->fd, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return FALSE;
    for (struct cmsghdr *c = fds ? CMSG_FIRSTHDR(&msg) : NULL; c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        guint k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        g_array_append_vals(fds, CMSG_DATA(c), k);
    }
    *serial = 0;
    if (g_str_has_prefix(text, TAG " "))
        *serial = g_ascii_strtoull(text + strlen(TAG) + 1, NULL, 10);
    return TRUE;
}

/* Take the head message out; without a control buffer the kernel closes
 * the fds it carried. */
static void
drop_head(VmlMailbox *m)
{
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    recvmsg(m->fd, &msg, MSG_DONTWAIT);
}

gboolean
vml_mailbox_store(VmlMailbox *m, const int *fds, guint n_fds, GError **error)
{
    guint64 serial = ++m->serial;
    guint64 head;
    int parts = 0;
    /* Nothing left to keep and we know what is queued: out with it. */
    if (n_fds == 0 && m->queued >= 0) {
        for (int i = 0; i < m->queued; i++)
            drop_head(m);
        m->queued = 0;
        return TRUE;
    }
    /* First the new set, whole... */
    for (guint off = 0; off < n_fds || off == 0; off += FDS_PER_MESSAGE) {
        if (!send_part(m, serial, fds + off, MIN(FDS_PER_MESSAGE, n_fds - off), error)) {
            m->queued = -1;
            return FALSE;
        }
        parts++;
        if (n_fds == 0)
            break;
    }
    /* ... then out with everything queued before it: as many as we know
     * of, else (or if the head is not the new set then) one by one. */
    for (int i = 0; i < m->queued; i++)
        drop_head(m);
    if (m->queued < 0) {
        while (peek_head(m, &head, NULL) && head != serial)
            drop_head(m);
    }
    m->queued = parts;
    return TRUE;
}

gboolean
vml_mailbox_can_add(VmlMailbox *m, guint n_fds)
{
    return m->queued >= 0 && m->queued < ADDED_MAX && n_fds <= FDS_PER_MESSAGE;
}

gboolean
vml_mailbox_add(VmlMailbox *m, const int *fds, guint n_fds, GError **error)
{
    g_return_val_if_fail(vml_mailbox_can_add(m, n_fds), FALSE);
    if (!send_part(m, ++m->serial, fds, n_fds, error)) {
        m->queued = -1;
        return FALSE;
    }
    m->queued++;
    return TRUE;
}

GArray *
vml_mailbox_contents(VmlMailbox *m, GError **error)
{
    GArray *all = g_array_new(FALSE, FALSE, sizeof(int));
    guint64 marker = ++m->serial;
    guint64 head;
    if (!send_part(m, marker, NULL, 0, error)) {
        g_array_unref(all);
        return NULL;
    }
    /* Each old message is copied behind the marker before it is taken
     * out, so its locks are never ours alone. */
    while (peek_head(m, &head, NULL) && head != marker) {
        guint first = all->len;
        peek_head(m, &head, all);
        if (!send_part(m, m->serial + 1, &g_array_index(all, int, first), all->len - first,
                       error)) {
            for (guint i = 0; i < all->len; i++)
                close(g_array_index(all, int, i));
            g_array_unref(all);
            return NULL;
        }
        drop_head(m);
    }
    drop_head(m);   /* the marker */
    m->serial++;
    m->queued = -1;
    return all;
}
