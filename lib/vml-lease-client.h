/* The typed side of the lease interface (io.vmlease.Lease), over the
 * generic vml_client_call(): one place that builds each request and checks
 * each reply, for the plugin, the CLI and xml/. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "vml-client.h"

typedef struct {
    const char *uuid;            /* the domain's */
    const char *name;
    pid_t pid;                   /* the holder process */
    const char *program;         /* may be NULL: what it runs, for the in-image owner */
    const char *on_lockfailure;  /* may be NULL: "default" */
    int mailbox_fd;              /* -1, or the holder's mailbox socket to pass along */
    const char *lockspace;       /* may be NULL: the lockspace the caller was configured
                                    with, which vmleased must be using */
} VmlRegistration;

/* io.vmlease.Lease.Register: the holder id (> 0), or 0 with ERROR (a reply
 * without a usable holder id is VML_ERROR_PROTOCOL; a daemon on another
 * lockspace than REG's is VML_ERROR_CONFIG). */
gint64 vml_lease_register(VmlClient *client, const VmlRegistration *reg, GError **error);
