/* Client side of the fd stash and of lease-guarded image opening, for the
 * plugin, the CLI and management tools: one call per daemon method, over
 * a lease-socket connection. fds returned are the caller's to close. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vml-client.h"

/* Stash a duplicate of FD as OWNER (a domain uuid) / NAME. Without KEEP it
 * is dropped when the owner's last holder process exits. */
gboolean vmlease_stash_give(VmlClient *c, const char *owner, const char *name, int fd,
                            gboolean keep, GError **error);
/* The stashed fd itself (it leaves the stash); -1 on error. */
int vmlease_stash_take(VmlClient *c, const char *owner, const char *name, GError **error);
/* A duplicate; the stash keeps its own. */
int vmlease_stash_peek(VmlClient *c, const char *owner, const char *name, GError **error);
gboolean vmlease_stash_drop(VmlClient *c, const char *owner, const char *name,
                            GError **error);
/* [{owner, name, keep, since, path, access, offset}]; OWNER NULL: all the
 * caller may see. */
JsonArray *vmlease_stash_list(VmlClient *c, const char *owner, GError **error);

/* Take a lease on PATH for HOLDER (exclusive for "read-write", shared for
 * "read-only") and open it so, in one step. */
int vmlease_open_image(VmlClient *c, gint64 holder, const char *path, const char *mode,
                       GError **error);
/* Reopen PATH, open as FD, in NEW_MODE: the old fd is stashed (owner =
 * the holder's uuid, name STASH_NAME or "reopen:PATH") and kept there on
 * success; on failure lease, stash and FD are as before. */
int vmlease_reopen(VmlClient *c, gint64 holder, const char *path, int fd,
                   const char *new_mode, const char *stash_name, GError **error);
