/* What systemd gives a service and wants from it, spoken directly (the
 * protocols are a few environment variables and one datagram; no
 * libsystemd): the listening sockets of vmleased.socket and
 * vmleased-admin.socket (socket activation), and the READY=1 /
 * RELOADING=1 / STOPPING=1 notifications of Type=notify. Without systemd
 * both are no-ops. */
#pragma once

#include <glib.h>

/* The sockets systemd passed for LEASE_PATH and ADMIN_PATH (matched by
 * the path each is bound to), into *LEASE_FD and *ADMIN_FD, or -1 each
 * when systemd passed none (LISTEN_PID is not us). A passed fd that is no
 * listening AF_UNIX stream socket, or bound elsewhere, or one of the two
 * missing, is an error: vmleased would serve where nobody looks. The
 * LISTEN_* variables are cleared, so nothing we spawn sees them. */
gboolean vml_systemd_listen_fds(const char *lease_path, const char *admin_path, int *lease_fd,
                                int *admin_fd, GError **error);

/* Send STATE ("READY=1", ...) to $NOTIFY_SOCKET, if there is one. */
void vml_systemd_notify(const char *state);
