/* The fd stash: named open files kept for an owner
 * (a domain uuid), so that a management layer can reopen an image and
 * fall back to the old fd whatever happens to it meanwhile.
 *
 * An owner belongs to the uid that first gave it an fd; only that uid and
 * root may give to it. Each fd is seen (listed, peeked, taken, dropped)
 * only by the uid that gave it and by root: root's fds for a VM stay
 * root's even in an owner a lease-group member made first. Entries outlive the connection that gave them and a
 * re-exec; without "keep" they go when the owner's last holder process
 * exits. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/types.h>

typedef struct _VmlStash VmlStash;

VmlStash *vml_stash_new(guint max_per_owner, guint max_total);
/* With CLOSE_FDS, close every stashed fd (else they are a re-exec's). */
void vml_stash_free(VmlStash *s, gboolean close_fds);

/* Errors: PermissionDenied (another uid's owner), FdExists, LimitReached
 * (*limit names which), NoSuchFd. */
gboolean vml_stash_give(VmlStash *s, const char *owner, const char *name, int fd,
                        gboolean keep, uid_t uid, const char **limit, GError **error);
/* The fd itself, out of the stash (-1 on error). */
int vml_stash_take(VmlStash *s, const char *owner, const char *name, uid_t uid,
                   GError **error);
/* A new descriptor of the same open file; the stash keeps its own. */
int vml_stash_peek(VmlStash *s, const char *owner, const char *name, uid_t uid,
                   GError **error);
gboolean vml_stash_drop(VmlStash *s, const char *owner, const char *name, uid_t uid,
                        GError **error);
/* [{owner, name, keep, since, path, access, offset}] of OWNER (NULL: every
 * owner UID may see; root sees all), sorted by owner and name. */
JsonArray *vml_stash_list(VmlStash *s, const char *owner, uid_t uid, GError **error);

guint vml_stash_size(VmlStash *s);

/* The owner's last holder process exited: drop what was not kept. */
void vml_stash_owner_gone(VmlStash *s, const char *owner);

/* Re-exec: append ,"stash":[...] to JSON and the fds to FDS. */
void vml_stash_save(VmlStash *s, GString *json, GArray *fds);
/* After re-exec: take the entries (and their inherited fds) back. */
void vml_stash_restore(VmlStash *s, JsonObject *state);
