/* SIGUSR1 or SIGHUP: replace this process with a fresh exec of vmleased
 * (after an upgrade, or to read its configuration again), handing over the
 * listening sockets, every lock fd, the lease table and the configuration
 * text it checked through a memfd, so no lease is dropped and no
 * connection is refused. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <signal.h>

#include "daemon.h"

/* The configuration a re-exec is to run with: the file as it is now. */
typedef struct {
    char *text;      /* NULL: there is no file, the defaults */
    gsize len;
    char *origin;
} VmlReloadConfig;

void vml_reload_config_free(VmlReloadConfig *rc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlReloadConfig, vml_reload_config_free)

/* The file read and loaded as the new image will load it, and refused
 * when it changes what the held leases live under: the backend and its
 * settings, the lockspace, state and socket directories. NULL with ERROR,
 * naming the file and line. */
VmlReloadConfig *vml_reexec_check_config(VmlDaemon *d, GError **error);

/* Only returns on failure (logged); the daemon then keeps running. RC is
 * what the new image configures itself with, never read from disk again. */
void vml_reexec(VmlDaemon *d, const VmlReloadConfig *rc);

/* The configuration text a re-exec handed over in STATE: TRUE with *RC
 * when there is one (a state from before this was handed over has none). */
gboolean vml_reexec_state_config(JsonObject *state, VmlReloadConfig **rc, GError **error);

/* The signals that ask for a re-exec, blocked until their handler is in
 * place (their default ends the process). */
void vml_reexec_signals(sigset_t *set);

/* Read the state handed over in FD (closed). NULL with ERROR on failure. */
JsonObject *vml_reexec_read_state(int fd, GError **error);
