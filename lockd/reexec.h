/* SIGUSR1: replace this process with a fresh exec of vmleased (for example
 * after an upgrade), handing over the listening sockets, every lock fd and
 * the lease table through a memfd, so no lease is dropped and no connection
 * is refused. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "daemon.h"

/* Only returns on failure (logged); the daemon then keeps running. */
void vml_reexec(VmlDaemon *d);

/* Read the state handed over in FD (closed). NULL with ERROR on failure. */
JsonObject *vml_reexec_read_state(int fd, GError **error);
