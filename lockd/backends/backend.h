/* A lease backend is an ops table; the daemon core knows nothing of how a
 * backend locks, and of where it keeps holder records only the record
 * store it opened (record-store.h). */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/types.h>

#include "daemon-config.h"
#include "owner-record.h"
#include "record-store.h"
#include "vml-conf.h"

typedef struct _VmlBackend VmlBackend;
typedef struct _VmlLock VmlLock;       /* one holder's lock on one resource */

typedef struct {
    const char *name;
    gboolean lock_fds;    /* its locks live in fds a holder can keep */
    /* Its leases guard images that other hosts open too: what it marks in
     * an image must be on stable storage before a grant or release is
     * answered, not only in this host's page cache. */
    gboolean cross_host;
    /* Its own keys of vmleased.conf (NULL-terminated; NULL: none). Every
     * backend's load_config reads them whichever backend is chosen, so a
     * bad value is an error anyway (VML_ERROR_CONFIG naming the key), and
     * returns its settings (CONF NULL: the defaults); free_config frees
     * them. check_config then checks the chosen backend's settings as a
     * whole. Each may be NULL. */
    const char *const *config_keys;
    gpointer (*load_config)(VmlConf *conf, GError **error);
    void (*free_config)(gpointer settings);
    gboolean (*check_config)(gconstpointer settings, GError **error);
    /* CFG->backend_settings are what its load_config returned. */
    VmlBackend *(*open)(const VmlDaemonConfig *cfg, GError **error);
    void (*close)(VmlBackend *be);

    /* Lock KEY in MODE; *generation gets the resource's generation (bumped
     * for an exclusive grant). With PIDFD >= 0, a lock file that process PID
     * already has open is locked through its own description, so the lock
     * lives in that process too. Fails with VML_ERROR_CONFLICT if someone
     * holds it in a conflicting mode, leaving nothing behind. */
    VmlLock *(*acquire)(VmlBackend *be, const char *key, VmlMode mode, pid_t pid,
                        int pidfd, guint64 *generation, GError **error);
    /* Take over FD, which already carries our lock (re-exec hand-over);
     * FD is closed on failure. The lock the kernel has on it wins over the
     * MODE we remember: *mode and *parked are set from it. */
    VmlLock *(*adopt)(VmlBackend *be, const char *key, VmlMode *mode, gboolean *parked,
                      int fd, GError **error);
    /* After a crash: get back a live local holder's lock through its own
     * fds (PIDFD) or the fds of its mailbox (CANDIDATES: ours, borrowed, may
     * be NULL) where it kept them, else take it anew if still free. Fails
     * if the lease was lost meanwhile. *mode and *parked as adopt. */
    VmlLock *(*recover)(VmlBackend *be, const char *key, VmlMode *mode, gboolean *parked,
                        pid_t pid, int pidfd, GArray *candidates, guint64 *generation,
                        GError **error);
    /* At a restart, once every record is back: unlock whatever the live
     * holder PID's fds (PIDFD) or mailbox (CANDIDATES) lock on a resource
     * none of KEYS (everything any holder holds), the leftover of a grant
     * or release that a crash cut short between the lock and the record,
     * which nobody was told of. NULL: the backend's locks cannot outlive
     * the daemon that way. */
    void (*drop_strays)(VmlBackend *be, pid_t pid, int pidfd, GArray *candidates,
                        const char *const *keys, guint n_keys);
    /* KEY was a holder's that died while vmleased was down: unlock it in
     * CANDIDATES (dups from the dead holder's mailbox, may be NULL) and
     * wherever a process it forked still keeps the lock (its exit would
     * have unlocked it with vmleased running), sparing the descriptions of
     * LIVE (the lock fds of the leases held on KEY now). */
    void (*release_orphans)(VmlBackend *be, const char *key, GArray *candidates,
                            const int *live, guint n_live);
    /* At a restart, a run of recover calls for one holder (the same PID,
     * PIDFD and CANDIDATES) begins (TRUE) or has ended: in between nobody
     * hands that holder lock fds, so a backend may keep what it read of
     * its fd table (and of CANDIDATES) for the next lease instead of
     * reading it again for each. May be NULL. */
    void (*recover_batch)(VmlBackend *be, gboolean begin);

    /* Parking: libvirt paused the VM or is migrating it, and its domain's
     * next process (the resumed one, or the migration's destination on
     * any host) must find the lease kept for it while nobody else can take
     * it. An exclusive lock keeps part of itself and frees a part that
     * only `claim` takes; every plain acquire needs both parts. */
    void (*park)(VmlBackend *be, VmlLock *lock, VmlMode mode);
    /* Take back what park freed; VML_ERROR_CONFLICT if it was claimed. */
    gboolean (*unpark)(VmlBackend *be, VmlLock *lock, const char *key, VmlMode mode,
                       GError **error);
    /* Lock KEY in MODE through the part a parked lock left free (the
     * caller checked that the parked holder is of the same domain);
     * VML_ERROR_CONFLICT when there is none. PID/PIDFD as for acquire. */
    VmlLock *(*claim)(VmlBackend *be, const char *key, VmlMode mode, pid_t pid,
                      int pidfd, guint64 *generation, GError **error);
    /* Switch mode on the same lock; a failed upgrade leaves it as it was. */
    gboolean (*change_mode)(VmlBackend *be, VmlLock *lock, const char *key,
                            VmlMode mode, guint64 *generation, GError **error);
    /* Unlock (for every dup, the holder's included) and free. */
    void (*release)(VmlBackend *be, VmlLock *lock);
    /* Free our handle only: the lock stays with the holder's dups. */
    void (*forget)(VmlBackend *be, VmlLock *lock);
    /* An fd that carries the lock, for SCM_RIGHTS to the holder; -1 if the
     * backend has none. Stays owned by the lock. */
    int (*lock_fd)(VmlLock *lock);

    /* Processes on this host that keep a lock on KEY though no holder or
     * record names them (a VM's child that inherited its lock fd, the VM
     * having exited while vmleased was down): unregistered VmlOwners with
     * pid, program and mode. Slow (a /proc walk once KEY is locked): only
     * for naming someone when nobody else can be named. NULL op: the
     * backend cannot see such locks. */
    GPtrArray *(*lockers)(VmlBackend *be, const char *key);

    /* Backends shared by several hosts (NULL otherwise): {lockspace,
     * host_id (this host's), hosts: [{host_id, host, machine_id, state,
     * generation, timestamp, this_host}]},
     * and the state ("live", "failing", "dead", ...) of the host with
     * MACHINE_ID, NULL if unknown. */
    JsonObject *(*hosts)(VmlBackend *be, GError **error);
    char *(*owner_host_state)(VmlBackend *be, const char *machine_id);
} VmlBackendOps;

struct _VmlBackend {
    const VmlBackendOps *ops;
    /* Where its leases live, as people and qemu-vmlease.conf name it:
     * the lockspace directory, or sanlock's "NAME (PATH)". Set by open. */
    char *lockspace;
    /* Where the holder records live, beside the leases so that every
     * host sharing them reads them too. Initialized by open, cleared by
     * close; the core uses it through record-store.h only. */
    VmlRecordStore records;
    /* Called when the backend can no longer keep leases alive (sanlock
     * died): the holders must be stopped before other hosts take over. */
    void (*lost)(VmlBackend *be, gpointer data);
    gpointer lost_data;
};

VmlBackend *vml_backend_open(const VmlDaemonConfig *cfg, GError **error);

/* Every backend's config keys, added to KEYS. */
void vml_backend_add_config_keys(GStrvBuilder *keys);
/* Every backend's load_config over CONF; *SETTINGS gets the one of
 * backend CHOSEN (an unknown name gets none: vml_backend_open reports it). */
gboolean vml_backend_load_config(const char *chosen, VmlConf *conf, gpointer *settings,
                                 GError **error);
void vml_backend_free_config(const char *chosen, gpointer settings);
/* The configured backend's check_config of its settings. */
gboolean vml_backend_check_config(const VmlDaemonConfig *cfg, GError **error);

extern const VmlBackendOps vml_fcntl_backend_ops;
extern const VmlBackendOps vml_sanlock_backend_ops;
