/* Listening sockets and client connections: accept with SO_PEERCRED checks,
 * NUL-framed reads, queued replies with fds. What a message means is
 * dispatch.c's business. */
#pragma once

#include "open-as.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/types.h>

#include "daemon.h"
#include "vml-error.h"

typedef enum {
    VML_ACCESS_NONE,
    VML_ACCESS_READ,     /* admin socket, admin group: inspection only */
    VML_ACCESS_LEASE,    /* lease socket: lease operations + inspection */
    VML_ACCESS_ROOT,     /* root on the admin socket: everything */
} VmlAccess;

typedef struct _VmlConn VmlConn;

/* What the server does with each whole message it reads from CONN (FDS,
 * the fds that came with it, owned by the callee); replies go through
 * vml_conn_reply and vml_conn_error. */
typedef void (*VmlMessageHandler)(VmlDaemon *daemon, VmlConn *conn, const char *msg, gsize len,
                                  GArray *fds);

/* Create the sockets, or take over LEASE_FD/ADMIN_FD (>= 0) from re-exec;
 * every message goes to HANDLER. */
VmlServer *vml_server_new(VmlDaemon *daemon, VmlMessageHandler handler, int lease_fd,
                          int admin_fd, GError **error);
void vml_server_free(VmlServer *server);
/* The listening fds, for re-exec. */
void vml_server_listen_fds(VmlServer *server, int *lease_fd, int *admin_fd);

/* Re-exec: append ,"connections":[{"fd":N,"lease":B},...] to JSON for the
 * client connections that sit between messages, adding their fds to FDS
 * (CLOEXEC left to the caller); a connection caught mid-message is closed. */
void vml_server_hand_over(VmlServer *server, GString *json, GArray *fds);
/* Serve FD (a connected AF_UNIX stream socket, non-blocking, CLOEXEC; ours
 * now) as a client of the lease socket (LEASE_SOCKET) or the admin socket,
 * exactly as if accepted there (tests/fuzz/fuzz-wire.c). */
void vml_server_add_connection(VmlServer *server, int fd, gboolean lease_socket);
/* After re-exec: serve the connections handed over in STATE. */
void vml_server_adopt(VmlServer *server, JsonObject *state);

VmlAccess vml_conn_access(VmlConn *conn);
uid_t vml_conn_uid(VmlConn *conn);
/* The peer's pid when it connected (SO_PEERCRED). */
pid_t vml_conn_pid(VmlConn *conn);
/* The holder the last Register on this connection gave (0: none, or that
 * Register failed): what a later call that names no holder acts for. */
gint64 vml_conn_holder(VmlConn *conn);
void vml_conn_set_holder(VmlConn *conn, gint64 holder);
const VmlCreds *vml_conn_creds(VmlConn *conn);
gboolean vml_conn_is_lease_socket(VmlConn *conn);

/* Queue a reply. PARAMS is consumed (may be NULL); FDS (may be NULL) are
 * sent with it and stay the caller's. */
void vml_conn_reply(VmlConn *conn, JsonObject *params, const int *fds, guint n_fds);
/* The same for a reply whose parameters object is JSON text, written
 * strictly (vml-json-write.h) into a buffer from vml_conn_reply_start
 * (room for SIZE bytes of it): replies without a tree. OUT is taken. */
GString *vml_conn_reply_start(gsize size);
void vml_conn_reply_text(VmlConn *conn, GString *out, const int *fds, guint n_fds);
/* Queue an error reply: PARAMS consumed (may be NULL), "message" added. */
void vml_conn_error(VmlConn *conn, VmlErrorCode code, JsonObject *params,
                    const char *format, ...) G_GNUC_PRINTF(4, 5);
void vml_conn_error_gerror(VmlConn *conn, const GError *error, JsonObject *params);
/* How the call begun with vml_conn_call_begin was answered: -1 not yet,
 * -2 with a reply, else with the error of that VmlErrorCode (the last). */
void vml_conn_call_begin(VmlConn *conn);
int vml_conn_call_outcome(VmlConn *conn);

