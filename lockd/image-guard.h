/* The in-image side of a lease (docs/image-format.md): before an exclusive
 * lease on an image is granted, make sure no QEMU the daemon does not
 * know writes it; once granted, mark a qcow2 v3 image in use (compatible
 * bit 1 and the owner extension); on release, clear the mark. A header is
 * only rewritten while no QEMU holds the image, since QEMU writes back the
 * header it read at open. Raw and version 2 images are left alone. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "vml-image-owner.h"

/* PATH opened once for the check and the mark of one acquire: read-write
 * (*WRITABLE) where it may be, else read-only, with its fstat() in *ST;
 * -1 when it cannot be. */
int vml_image_guard_open(const char *path, gboolean *writable, struct stat *st);

/* FALSE with VML_ERROR_IMAGE_BUSY (and *PARAMS: resource, pid, command)
 * when a QEMU whose pid is not in KNOWN holds PATH, open on FD (from
 * vml_image_guard_open; -1: nothing to probe), for writing. *UNHELD: no
 * QEMU held it at all (so a mark may follow without asking again). */
gboolean vml_image_guard_check(const char *path, int fd, const pid_t *known, guint n_known,
                               gboolean *unheld, JsonObject **params, GError **error);

/* Mark PATH (open read-write on WRITABLE_FD, its fstat() WRITABLE_ST; or
 * -1) in use by OWNER, on
 * stable storage before returning when DURABLE (another host may read the
 * header next), else ordered only
 * (docs/image-format.md, "Durability"). Never fails the lease: what it
 * could not do is logged, and the owner record stays in the lockspace.
 * FALSE when the image has no header vmleased ever writes (raw, qcow2
 * v2, a header it may not rewrite): there is no mark on it to clear. */
gboolean vml_image_guard_mark(const char *path, int writable_fd, const struct stat *writable_st,
                              gboolean unheld, const VmlImageOwner *owner, gboolean durable);

/* Clear the mark of the process PID/START_TIME on PATH, or one an exited
 * process of the same domain UUID (may be NULL) left on this host (a
 * migration's source); a mark set by anyone else is left alone. FALSE
 * when a QEMU still holds the image: try again once it has gone. DURABLE
 * as for vml_image_guard_mark. */
gboolean vml_image_guard_unmark(const char *path, guint32 pid, guint64 start_time,
                                const char *uuid, gboolean durable);

/* Open PATH (canonical) for header work: a regular file or block device,
 * never following a final symlink. */
int vml_image_open(const char *path, int flags, GError **error);
/* The same, with its fstat() in *ST. */
int vml_image_open_stat(const char *path, int flags, struct stat *st, GError **error);
