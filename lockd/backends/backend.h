/* A lease backend is an ops table; the daemon core knows nothing of how a
 * backend locks. Every lock belongs to one holder's lease on one resource. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "daemon-config.h"
#include "owner-record.h"

typedef struct _VmlBackend VmlBackend;
typedef struct _VmlLock VmlLock;

typedef struct {
    const char *name;
    VmlBackend *(*open)(const VmlDaemonConfig *cfg, GError **error);
    void (*close)(VmlBackend *be);

    /* Lock OWNER->resource in OWNER->mode and record the owner. Sets
     * OWNER->generation. Fails with VML_ERROR_CONFLICT if someone else holds
     * it in a conflicting mode, leaving nothing behind. */
    VmlLock *(*acquire)(VmlBackend *be, VmlOwner *owner, GError **error);
    /* Take over a lock that FD already holds (handed over by re-exec). */
    VmlLock *(*adopt)(VmlBackend *be, VmlOwner *owner, int fd, GError **error);
    /* After a crash: get back a live local holder's lock, through its own
     * fds (PIDFD) where it kept them. Fails if the lease was lost. */
    VmlLock *(*recover)(VmlBackend *be, VmlOwner *owner, int pidfd, GError **error);
    /* Switch mode on the same lock: upgrade fails with VML_ERROR_CONFLICT
     * and leaves the lock as it was. */
    gboolean (*change_mode)(VmlBackend *be, VmlLock *lock, VmlOwner *owner,
                            VmlMode mode, GError **error);
    /* Unlock (for every dup, the holder's included), drop the record. */
    void (*release)(VmlBackend *be, VmlLock *lock);
    /* Let go of our handle only: the lock and record stay with the holder
     * (daemon shutdown). */
    void (*forget)(VmlBackend *be, VmlLock *lock);
    /* An fd that carries the lock, for SCM_RIGHTS to the holder; -1 if the
     * backend has none. Stays owned by the lock. */
    int (*lock_fd)(VmlLock *lock);

    /* Owner records of one resource (KEY) or of all (NULL), every host. */
    GPtrArray *(*owners)(VmlBackend *be, const char *key, GError **error);
    /* Forget a record whose holder is gone (stale after crash or reboot). */
    void (*remove_record)(VmlBackend *be, const VmlOwner *owner);
} VmlBackendOps;

struct _VmlBackend {
    const VmlBackendOps *ops;
};

VmlBackend *vml_backend_open(const VmlDaemonConfig *cfg, GError **error);

extern const VmlBackendOps vml_fcntl_backend_ops;
