/* The typed side of the lease and admin interfaces (io.vmlease.Lease,
 * io.vmlease.Admin; the stash's is lib/vmlease-stash), over the generic
 * vml_client_call(): one place that builds each request and checks each
 * reply, for the plugin, the CLI and xml/. A reply without what the
 * interface promises is VML_ERROR_PROTOCOL. */
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
 * lockspace than REG's refuses it). Register also makes the holder the
 * connection's: a call below given holder 0 acts for it. */
gint64 vml_lease_register(VmlClient *client, const VmlRegistration *reg, GError **error);

/* Every call below comes in two halves as well, _send and _finish, so
 * that a client can send Register and the call that follows it (with
 * holder 0) back to back, then read both replies in order: one round trip
 * instead of two. */
gboolean vml_lease_register_send(VmlClient *client, const VmlRegistration *reg,
                                 GError **error);
gint64 vml_lease_register_finish(VmlClient *client, const VmlRegistration *reg,
                                 GError **error);

/* What an Acquire asks for beside its resources. */
typedef struct {
    gboolean fds;          /* the lock fds back, one per lease (fcntl backend) */
    gboolean holder_fds;   /* lock through the holder process's own fds where it has them */
    gboolean claim;        /* take over the parked leases of the holder's domain */
    gboolean reconcile;    /* bring the backing images' leases to what the images need */
} VmlAcquireFlags;

/* io.vmlease.Lease.Acquire of RESOURCES (a Resource array, taken) for
 * HOLDER, all or none: the granted leases, or NULL with ERROR and, for a
 * refusal with parameters (a conflict), *ERROR_PARAMS (may be NULL).
 * *FDS (may be NULL) gets the lock fds sent with the reply, if any. */
JsonArray *vml_lease_acquire(VmlClient *client, gint64 holder, JsonArray *resources,
                             const VmlAcquireFlags *flags, GArray **fds,
                             JsonObject **error_params, GError **error);
gboolean vml_lease_acquire_send(VmlClient *client, gint64 holder, JsonArray *resources,
                                const VmlAcquireFlags *flags, GError **error);
JsonArray *vml_lease_acquire_finish(VmlClient *client, GArray **fds,
                                    JsonObject **error_params, GError **error);

/* What a Release does beside letting go. */
typedef struct {
    const char *park;         /* may be NULL: "paused" or "migrating" parks every lease */
    const char *status_file;  /* may be NULL: libvirt's status XML, watched while parked */
    gboolean reconcile;       /* keep what the holder's images still need */
} VmlReleaseFlags;

/* io.vmlease.Lease.Release of RESOURCES (taken; NULL: every lease of
 * HOLDER). FLAGS may be NULL. */
gboolean vml_lease_release(VmlClient *client, gint64 holder, JsonArray *resources,
                           const VmlReleaseFlags *flags, GError **error);
gboolean vml_lease_release_send(VmlClient *client, gint64 holder, JsonArray *resources,
                                const VmlReleaseFlags *flags, GError **error);
gboolean vml_lease_release_finish(VmlClient *client, GError **error);

/* io.vmlease.Lease.Inquire: HOLDER's leases, or NULL with ERROR. */
JsonArray *vml_lease_inquire(VmlClient *client, gint64 holder, GError **error);
gboolean vml_lease_inquire_send(VmlClient *client, gint64 holder, GError **error);
JsonArray *vml_lease_inquire_finish(VmlClient *client, GError **error);

/* io.vmlease.Admin.Owners (on an admin-socket CLIENT): the resources PATHS
 * (taken; NULL: every resource, page after page, joined) name, each
 * {resource, path, owners: [...]}; NULL with ERROR. A page without
 * "resources", or a "next" that does not move on (which would loop), is
 * VML_ERROR_PROTOCOL. */
JsonArray *vml_admin_owners(VmlClient *client, JsonArray *paths, GError **error);

/* io.vmlease.Lease.Observe of RESOURCES (taken) for HOLDER (0: the
 * connection's): the images now observed, backing images included. */
JsonArray *vml_lease_observe(VmlClient *client, gint64 holder, JsonArray *resources,
                             GError **error);

/* io.vmlease.Admin.List: the reply, {holders: [...]}. */
JsonObject *vml_admin_list(VmlClient *client, GError **error);
/* io.vmlease.Admin.Status: the reply (version, pid, backend, lockspace, ...). */
JsonObject *vml_admin_status(VmlClient *client, GError **error);
/* Root: vmleased logs at LEVEL from now on (error, warning, info, debug). */
JsonObject *vml_admin_set_log_level(VmlClient *client, const char *level, GError **error);
/* io.vmlease.Admin.Metrics: "counters" (an object) and "latencies". */
JsonObject *vml_admin_metrics(VmlClient *client, GError **error);
/* io.vmlease.Admin.Hosts: the reply, {lockspace, host_id, hosts: [...]}. */
JsonObject *vml_admin_hosts(VmlClient *client, GError **error);
/* io.vmlease.Admin.ForceUnlock of PATH: the reply {resource, cleared,
 * verdict, reason, owner?}; a refusal's parameters in *ERROR_PARAMS (may
 * be NULL). */
JsonObject *vml_admin_force_unlock(VmlClient *client, const char *path, gboolean force,
                                   JsonObject **error_params, GError **error);
