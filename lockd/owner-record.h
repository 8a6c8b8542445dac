/* Who holds a lease: the identity written next to every lock (and shown to
 * admins). The lock enforces; the record explains. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

typedef enum {
    VML_MODE_SHARED,
    VML_MODE_EXCLUSIVE,
} VmlMode;

const char *vml_mode_name(VmlMode mode);
gboolean vml_mode_parse(const char *name, VmlMode *mode);

typedef struct {
    char *resource;     /* resource key */
    char *path;         /* an image's canonical path (NULL for a <lease>'s
                           key); a record from before identities: the key */
    char *host;
    char *machine_id;
    char *boot_id;
    char *uuid;
    char *name;
    gint64 holder;      /* holder id in its daemon */
    gint64 pid;
    guint64 start_time;
    VmlMode mode;
    gint64 since;
    guint64 generation;
    char *parked;       /* why a parked lease waits for its domain
                           ("paused", "migrating"), NULL while in use */
    gint64 parked_since;
    gboolean derived;   /* holder records only: see VmlLease */
    gboolean unregistered;  /* a process keeping a lock that no holder of
                               any daemon names (see VmlBackendOps.lockers) */
    char *program;      /* unregistered: its command name */
    gboolean observer;  /* reads the image holding nothing (mode is moot) */
} VmlOwner;

VmlOwner *vml_owner_copy(const VmlOwner *owner);
void vml_owner_free(VmlOwner *owner);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlOwner, vml_owner_free)

/* The public view: host, uuid, name, pid, mode, since, generation, and
 * parked + parked_since for a lease parked for its domain. */
JsonObject *vml_owner_to_json(const VmlOwner *owner);
/* OWNER as a JSON object's text at the end of OUT, strict as on the wire,
 * with HOST_STATE (may be NULL) as its "host_state". */
void vml_owner_write_json(GString *out, const VmlOwner *owner, const char *host_state);

/* A holder record (in the lockspace and in the state file) is one JSON
 * object: the holder's identity (host, machine_id, boot_id, uuid, name,
 * holder, pid, start_time, since) and "leases": [{resource[, path], mode,
 * generation, since[, parked, parked_since][, fd]}]. Parse one into its identity (resource NULL)
 * and one owner per lease appended to OWNERS; FDS, if given, gets each
 * lease's "fd" (or -1) in the same order. */
VmlOwner *vml_record_parse(JsonObject *record, GPtrArray *owners, GArray *fds,
                           GError **error);

/* Why a lease may be parked: "paused" or "migrating". */
gboolean vml_park_reason_valid(const char *reason);

/* Recorded on this host (machine-id and hostname). */
gboolean vml_owner_is_this_host(const VmlOwner *o);

