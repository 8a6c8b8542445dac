/* The parts of a running vmleased, shared by server, dispatch and re-exec. */
#pragma once

#include <glib.h>

#include "backends/backend.h"
#include "daemon-config.h"
#include "fd-stash.h"
#include "lease-table.h"
#include "request-cache.h"
#include "state-file.h"

typedef struct _VmlServer VmlServer;

typedef struct {
    VmlDaemonConfig *cfg;
    char *config_path;       /* as given (NULL: default), for re-exec */
    char *config_text;       /* what CFG was loaded from (NULL: no file) */
    gsize config_len;
    char *config_origin;     /* its file */
    char *exe;               /* our own binary, for re-exec */
    VmlBackend *backend;
    VmlLeaseTable *table;
    VmlStash *stash;
    VmlStateFile *state;
    VmlServer *server;
    VmlRequestCache *requests;  /* parsed requests by text (may be NULL) */
    GStrv own_dirs;          /* our lockspace, state and lease directories,
                                canonical: never a resource */
    GMainLoop *loop;
    gint64 started;
    gint64 reexecs;          /* times this daemon re-executed itself */
    int instance_lock;       /* held while we serve (instance-lock.h) */
    gboolean reexec_requested;
} VmlDaemon;
