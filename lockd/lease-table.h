/* The daemon's table of holders and their leases, on top of a backend.
 * Every change is all or nothing, is published at once in the holder's
 * record, and lets the state file follow. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/stat.h>

#include "backends/backend.h"
#include "daemon-log.h"
#include "daemon-config.h"
#include "holder-mailbox.h"
#include "holder-watch.h"
#include "resume-watch.h"
#include "owner-record.h"

typedef struct _VmlLeaseTable VmlLeaseTable;
typedef struct _VmlHolder VmlHolder;
typedef struct _VmlLease VmlLease;

#define VML_PROGRAM_MAX 255

/* How the last acquire that named a lease got it. */
typedef enum {
    VML_GRANT_HELD,       /* held already, in use */
    VML_GRANT_NEW,        /* taken now */
    VML_GRANT_UNPARKED,   /* held parked by this holder, in use again */
    VML_GRANT_CLAIMED,    /* taken over from a parked lease of its domain */
} VmlGrant;

struct _VmlLease {
    VmlHolder *holder;
    const char *key;      /* owned by the table's resource index */
    char *path;           /* an image's canonical path, as first acquired
                             (opened for its in-use mark); NULL for a
                             <lease>'s lockspace/key */
    VmlMode mode;
    guint64 generation;
    gint64 since;
    VmlLock *lock;
    char *parked;         /* "paused", "migrating": kept for the domain's
                             next process, which claims it; NULL in use */
    gint64 parked_since;
    VmlGrant grant;
    gboolean derived;     /* kept because the holder's images need it (a
                             backing image, or one its process still has
                             open), not because libvirt named it */
    gboolean leaving;     /* being released: left out of the record that
                             must be written before the lock goes */
    gboolean unmarkable;  /* its mark found no header vmleased writes (raw,
                             qcow2 v2): no mark of anyone's to clear */
    gpointer record_slot; /* where it is in its holder's record
                             (holder-record.c) */
    gboolean record_dirty; /* changed since the record was written: on
                              its holder's record_dirty list */
    gboolean in_mailbox;  /* its lock fd is in its holder's mailbox */
    VmlLease *next;       /* next lease on the same resource */
};

/* Whether the VM process keeps, after its exec, the fds that keep its
 * leases alive (lock-fd-check.h). */
typedef enum {
    VML_LOCK_FDS_UNCHECKED,   /* not exec'd yet, or not looked at */
    VML_LOCK_FDS_KEPT,
    VML_LOCK_FDS_MISSING,     /* its leases live in vmleased alone */
    VML_LOCK_FDS_NONE,        /* none were given to it (sanlock, or all
                                 taken from libvirtd) */
} VmlLockFds;

struct _VmlHolder {
    gint64 id;
    char *uuid;
    char *name;
    pid_t pid;
    guint64 start_time;
    gint64 since;
    uid_t uid;                   /* who registered it: only that uid or root
                                    may act on it */
    char *on_lockfailure;        /* libvirt's <on_lockfailure>, for backends
                                    whose leases can be lost (sanlock) */
    char *program;               /* as registered, for the in-image owner */
    GPtrArray *pending_unmarks;  /* images whose in-use mark waits for the
                                    QEMU holding them to go */
    GHashTable *leases;          /* resource key -> VmlLease* */
    GHashTable *observing;       /* resource key -> canonical path: images it
                                    reads as an observer, holding nothing */
    GHashTable *handed;          /* keys whose lock fds vmleased sent the
                                    holder process: only their lock files can
                                    be in its fd table. NULL: not known (it
                                    was restored, or fds went elsewhere) */
    VmlHolderWatch *watch;
    VmlMailbox *mailbox;         /* in the VM process: keeps our locks alive */
    gboolean mailbox_stale;      /* it may hold a lock that went: the next fill
                                    stores the whole set */
    VmlResumeWatch *resume_watch; /* while parked: libvirt's status file */
    guint64 exe_dev, exe_ino;    /* the program it ran when it registered
                                    (0: not known, restored): one exec
                                    later, lock-fd-check.h looks */
    VmlLockFds lock_fds;         /* what that check found */
    char *lock_fds_detail;       /* what is missing, when it is */
    VmlRecord *record;
    struct _VmlRecordLayout *record_layout;  /* where its leases are in it */
    GPtrArray *record_dirty;     /* VmlLease* changed since it was written */
    char *tag;                   /* its record's name */
    VmlLeaseTable *table;
    struct _VmlHolder *next_same_pid;  /* the table's other holders of PID
                                          (one whose process exited, before
                                          its exit is handled) */
};

typedef struct {
    char *key;
    char *path;          /* canonical path of an image; NULL for a <lease> */
    const char *given;   /* the path as the caller wrote it, for errors */
    VmlMode mode;
    gboolean at_least;   /* an exclusive lease already held satisfies "shared" */
    gboolean derived;    /* a backing image of a named one (see VmlLease) */
} VmlRequest;

VmlLeaseTable *vml_lease_table_new(VmlBackend *backend, const VmlDaemonConfig *cfg);
/* L changed (mode, generation, parked, derived, leaving, or new): its
 * record is patched for it at the next write. Every change of those
 * fields calls this. */
void vml_lease_touch(VmlLease *l);

/* The id the next registered holder gets. */
gint64 vml_lease_table_next_id(VmlLeaseTable *t);

/* The resource key of the image at PATH (vml-image-identity.h, with the
 * configured shared storage names). */
char *vml_lease_table_image_key(VmlLeaseTable *t, const char *path, GError **error);
/* The same for the file ST is the stat of; NULL when it is no image. */
char *vml_lease_table_key_of_stat(VmlLeaseTable *t, const struct stat *st);
/* Open the image at PATH (canonical) as the next vml_lease_table_acquire
 * checks and marks it, which then uses this fd instead of opening PATH
 * again, and closes it, taken or not. -1 when it is not a regular file or
 * cannot be opened (the acquire tries on its own). The fd is borrowed; ST
 * gets its fstat. */
int vml_lease_table_open_image(VmlLeaseTable *t, const char *path, struct stat *st);
/* The header read on that fd is no qcow2 header: nothing to mark. */
void vml_lease_table_image_not_qcow2(VmlLeaseTable *t, const char *path);
/* Forget everything without unlocking: the holders carry their leases on. */
void vml_lease_table_free(VmlLeaseTable *t);

void vml_lease_table_set_changed_func(VmlLeaseTable *t, GFunc func, gpointer data);
/* FUNC(uuid, DATA) runs when the last holder process of a domain exits. */
void vml_lease_table_set_owner_gone_func(VmlLeaseTable *t,
                                         void (*func)(const char *uuid, gpointer data),
                                         gpointer data);

/* ON_LOCKFAILURE may be NULL ("default"); given again it replaces the old.
 * PROGRAM (may be NULL) names what the holder runs, for in-image owners. */
/* CALLER is the uid asking: root, or the uid PID runs as; a holder
 * registered already by another uid is refused (VML_ERROR_PERMISSION_DENIED). */
VmlHolder *vml_lease_table_register(VmlLeaseTable *t, const char *uuid,
                                    const char *name, pid_t pid,
                                    const char *on_lockfailure, const char *program,
                                    uid_t caller, GError **error);
/* One of libvirt's lock failure actions: default, poweroff, restart, pause, ignore. */
gboolean vml_lock_failure_valid(const char *action);

VmlHolder *vml_lease_table_lookup(VmlLeaseTable *t, gint64 id, GError **error);

/* The lock fds of LEASES were sent to process PID: H's own if PID is
 * H's, and anyone's then, as far as vmleased can tell. */
void vml_lease_table_handed(VmlHolder *h, GPtrArray *leases, pid_t pid);

/* Clear the in-use marks H let go of while a QEMU still had the image open
 * (a layer that left the chain), where that QEMU has gone since. */
void vml_lease_table_retry_unmarks(VmlHolder *h);

/* From now on H's locks also live in MAILBOX (taken; see holder-mailbox.h). */
void vml_lease_table_set_mailbox(VmlLeaseTable *t, VmlHolder *h, VmlMailbox *mailbox);

/* Acquire every request or none. With HOLDER_FDS, lock files the holder
 * process already has open are locked through its own descriptions (a VM
 * resumed by libvirtd). A lease the holder parked is taken back; with
 * CLAIM, a lease that another process of the same domain (uuid) parked,
 * on any host, is taken over (resume on a migration's destination).
 * Returns the holder's leases in request order (borrowed), each with its
 * grant. On a conflict, *conflict receives the error parameters
 * (resource, mode, owners) and the error message names every owner. */
GPtrArray *vml_lease_table_acquire(VmlLeaseTable *t, VmlHolder *h,
                                   const VmlRequest *reqs, guint n_reqs,
                                   gboolean holder_fds, gboolean claim,
                                   JsonObject **conflict, GError **error);
/* Park KEYS (NULL: all) for REASON ("paused", "migrating"): they stay
 * held, nobody else can take them, and the domain's next process claims
 * them. Leases of a backend that cannot park are released instead
 * (*released counts them). Fails without a change if one is not held. */
/* STATUS_FILE (may be NULL): libvirt's status file of the domain, watched
 * while parked: once it says the domain runs again (QEMU resumed the source
 * of a failed migration by itself), the leases are taken back. */
gboolean vml_lease_table_park(VmlLeaseTable *t, VmlHolder *h, const char *const *keys,
                              guint n_keys, const char *reason, const char *status_file,
                              guint *parked, guint *released, GError **error);
/* H reads the images of REQS (paths) as an observer: listed among their
 * owners with mode "observer", holding nothing, in nobody's way (a holder
 * taking them exclusive is not refused) and never refused itself. Ends
 * with H, or with a release of everything. */
gboolean vml_lease_table_observe(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs,
                                 guint n_reqs, GError **error);

/* The key of H's lease that REQ names: REQ's own, or, when H holds none
 * under it, that of the lease H took through REQ's path (the file at the
 * path was replaced since: it is still the one H means). */
const char *vml_holder_held_key(VmlHolder *h, const VmlRequest *req);

/* Release KEYS (NULL: all, observed images too). Fails without releasing
 * any if one is not held. */
gboolean vml_lease_table_release(VmlLeaseTable *t, VmlHolder *h,
                                 const char *const *keys, guint n_keys,
                                 guint *released, GError **error);

/* Current owners of KEY: this daemon's holders, and the records of others
 * (other hosts, leases not yet recovered). */
GPtrArray *vml_lease_table_owners(VmlLeaseTable *t, const char *key);
/* Processes keeping a lock on KEY that no holder or record names (see
 * VmlBackendOps.lockers); slow, for when nobody else can be named. */
GPtrArray *vml_lease_table_lockers(VmlLeaseTable *t, const char *key);
/* The owners of the resources ONLY (keys; NULL: every one held here,
 * observed here or recorded in the lockspace, a page at a time: the MAX
 * (0: all) whose keys sort after AFTER (NULL: from the first), *NEXT (may
 * be NULL) getting the page's last key when more follow, else NULL):
 * key -> GPtrArray of VmlOwner, for the keys that have any. *ORDER (may be
 * NULL) gets those keys in key order, the map's own strings. */
GHashTable *vml_lease_table_all_owners(VmlLeaseTable *t, GPtrArray *only, const char *after,
                                       guint max, char **next, GPtrArray **order);

/* The backend lost its leases: apply each holder's on_lockfailure
 * (default, poweroff, restart: SIGKILL; pause: SIGSTOP; ignore: none). */
void vml_lease_table_fence(VmlLeaseTable *t);

GList *vml_lease_table_holders(VmlLeaseTable *t);   /* sorted by id; free list only */
/* Log an event about H, and KEY (the image at PATH, in MODE; each may be
 * NULL), with the journal fields of both (daemon-log.h): the message is
 * "VM NAME (uuid U, pid P) " and FORMAT; HELD_BY is a conflict's other side. */
void vml_holder_event(GLogLevelFlags level, VmlEventKind kind, const VmlHolder *h,
                      const char *key, const char *path, const char *mode,
                      const char *held_by, const char *format, ...) G_GNUC_PRINTF(8, 9);
/* FUNC(H, DATA) for every holder, in no order: FUNC may not add or drop
 * holders. */
void vml_lease_table_foreach_holder(VmlLeaseTable *t, void (*func)(VmlHolder *h, gpointer data),
                                    gpointer data);
guint vml_lease_table_n_holders(VmlLeaseTable *t);
guint vml_lease_table_n_leases(VmlLeaseTable *t);

/* A lease's members as replies carry them (strict JSON, no braces): its
 * resource, path, mode, generation, since, parked; with GRANT how the last
 * Acquire gave it. */
void vml_lease_write_json(GString *out, const VmlLease *lease, gboolean grant);
const char *vml_grant_name(VmlGrant grant);
/* A holder as Admin.List gives it, with its leases: one JSON object. */
void vml_holder_write_json_summary(GString *out, const VmlHolder *h);

/* The whole table as JSON text (state file, re-exec). With FDS, each lease
 * records its lock fd number and the fd is appended to FDS. */
GString *vml_lease_table_save(VmlLeaseTable *t, GArray *fds);
/* Rebuild from saved state (may be NULL) and the lockspace records. With
 * REEXEC the saved fds are ours to adopt. Logs what it could not keep. */
void vml_lease_table_restore(VmlLeaseTable *t, JsonObject *state, gboolean reexec);
