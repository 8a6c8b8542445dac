/* A blocking varlink client for vmleased's lease and admin sockets. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct _VmlClient VmlClient;

VmlClient *vml_client_connect(const char *socket_path, GError **error);
/* The default sockets (honouring VMLEASE_ROOT). */
VmlClient *vml_client_connect_lease(GError **error);
VmlClient *vml_client_connect_admin(GError **error);
void vml_client_free(VmlClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlClient, vml_client_free)

int vml_client_get_fd(VmlClient *client);

/* Idle connections to one socket kept for a long-lived process's next
 * calls (libvirtd's plugin: a connect and accept cost about what the call
 * itself does). Thread-safe. A client from vml_client_pool_connect goes
 * back to its pool when freed if every reply was read and nothing failed,
 * and is taken again only if the daemon has neither spoken nor hung up on
 * it since; a process forked from the pool's maker always connects anew.
 * Every call starts with Register (which rebinds the connection), so a
 * reused connection acts for nobody it did not name. */
typedef struct _VmlClientPool VmlClientPool;
VmlClientPool *vml_client_pool_new(const char *socket_path, guint max_idle);
void vml_client_pool_unref(VmlClientPool *pool);
VmlClient *vml_client_pool_connect(VmlClientPool *pool, GError **error);

/* How long a call waits for its reply (default 30 s; <= 0: forever). A
 * daemon that hangs must not hang every admin command with it. */
void vml_client_set_timeout(VmlClient *client, int timeout_ms);

/* Call METHOD with PARAMS (borrowed; NULL means {}), sending FDS along.
 * On success returns the reply's parameters (never NULL) and, if fds_out is
 * given, the fds that came with the reply (an int GArray the caller owns).
 * On a varlink error reply returns NULL with ERROR set: its code maps the
 * error name (vml-error.h), its message is the reply's "message" parameter,
 * and if error_params is given it receives the reply's parameters (for
 * example the holders of an io.vmlease.Conflict). */
JsonObject *vml_client_call(VmlClient *client, const char *method,
                            JsonObject *params,
                            const int *fds, guint n_fds,
                            GArray **fds_out,
                            JsonObject **error_params,
                            GError **error);

/* The two halves of vml_client_call, for sending calls back to back and
 * reading their replies after, in order: one round trip for several. A
 * receive that gets no reply at all after a failed send reports that
 * send's error (a daemon that refuses a client answers before it hangs
 * up, so its reply, when there is one, comes first). */
gboolean vml_client_send(VmlClient *client, const char *method, JsonObject *params,
                         const int *fds, guint n_fds, GError **error);
JsonObject *vml_client_receive(VmlClient *client, GArray **fds_out,
                               JsonObject **error_params, GError **error);
/* vml_client_receive (no fds, no error parameters) that shows PEEK the
 * reply's text (LEN bytes, hostile as ever) before it is parsed: a paged
 * call sends for its next page while this one is read. */
typedef void (*VmlReplyPeekFunc)(const char *text, gsize len, gpointer data);
JsonObject *vml_client_receive_peek(VmlClient *client, VmlReplyPeekFunc peek, gpointer data,
                                    GError **error);
/* Send what vml_client_send has corked now, without waiting for a reply. */
gboolean vml_client_flush(VmlClient *client, GError **error);
