#include "systemd-service.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_FDS_START 3

/* The path a listening AF_UNIX stream socket FD is bound to, else NULL. */
static char *
listening_path(int fd)
{
    int type = 0, listening = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return NULL;
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
        return NULL;
    struct sockaddr_un addr = { 0 };
    len = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0 || addr.sun_family != AF_UNIX ||
        len <= offsetof(struct sockaddr_un, sun_path) || !addr.sun_path[0])
        return NULL;
    return g_strndup(addr.sun_path, len - offsetof(struct sockaddr_un, sun_path));
}

gboolean
vml_systemd_listen_fds(const char *lease_path, const char *admin_path, int *lease_fd,
                       int *admin_fd, GError **error)
{
    *lease_fd = *admin_fd = -1;
    const char *pid_text = g_getenv("LISTEN_PID");
    const char *n_text = g_getenv("LISTEN_FDS");
    gint64 pid = pid_text ? g_ascii_strtoll(pid_text, NULL, 10) : 0;
    gint64 n = n_text ? g_ascii_strtoll(n_text, NULL, 10) : 0;
    g_unsetenv("LISTEN_PID");
    g_unsetenv("LISTEN_FDS");
    g_unsetenv("LISTEN_FDNAMES");
    if (pid != (gint64)getpid() || n <= 0)
        return TRUE;   /* not for us */
    if (n > 2) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "systemd passed %" G_GINT64_FORMAT " sockets; vmleased takes two "
                    "(vmleased.socket and vmleased-admin.socket)", n);
        return FALSE;
    }
    for (int fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + n; fd++) {
        g_autofree char *path = listening_path(fd);
        int *slot = !path ? NULL : g_str_equal(path, lease_path) ? lease_fd
                  : g_str_equal(path, admin_path) ? admin_fd : NULL;
        if (slot && *slot >= 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                        "systemd passed two sockets for %s", path);
            return FALSE;
        }
        if (!slot) {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                        "the socket systemd passed as fd %d is %s%s, not %s or %s: "
                        "socket_dir in vmleased.conf and ListenStream= in the socket units "
                        "must agree", fd, path ? "bound to " : "no listening AF_UNIX socket",
                        path ? path : "", lease_path, admin_path);
            return FALSE;
        }
        *slot = fd;
        /* Ours now; and accepted from the main loop, so never blocking. */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    if (*lease_fd < 0 || *admin_fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "systemd passed the %s socket only: enable both vmleased.socket and "
                    "vmleased-admin.socket", *lease_fd >= 0 ? "lease" : "admin");
        return FALSE;
    }
    return TRUE;
}

void
vml_systemd_notify(const char *state)
{
    const char *where = g_getenv("NOTIFY_SOCKET");
    if (!where || !*where || strlen(where) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    memcpy(addr.sun_path, where, strlen(where));
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';   /* abstract */
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + strlen(where);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, len) < 0)
        g_debug("cannot tell systemd %s: %s", state, g_strerror(errno));
    close(fd);
}
