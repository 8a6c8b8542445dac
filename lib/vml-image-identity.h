/* What an image *is*, whatever it is called: the resource key of the
 * storage a path or fd leads to. Every name of one image (symlinks, hard
 * links, bind mounts, /proc/self/fd, a loop device and its backing file,
 * /dev/VG/LV, /dev/mapper/VG-LV and /dev/dm-N, /dev/disk/by-* aliases, and
 * another host's mount point of the same shared filesystem) gives the same
 * key. docs/resource-identity.md gives the reasoning.
 *
 *   file:FS:INO   a regular file: inode INO of filesystem FS
 *   blk:ID        a block device with no file behind it
 *
 * FS is, first match wins: "name:N" for a configured shared storage root
 * N=/mount/point that is the root of the file's filesystem; "TYPE:SOURCE"
 * for a network filesystem (nfs, nfs4, ceph, cifs, glusterfs, ...), as
 * every client mounts the same source; the block identity of the device
 * a local filesystem sits on; else "dev:MAJOR:MINOR" (this host only).
 * ID is "dm:UUID" (LVM's LV UUID lives there), "wwid:W", "serial:S", each
 * with ":partN" for a partition of such a disk, else "dev:MAJOR:MINOR".
 * A loop device is its backing file's key. Keys never start with '/'. */
#pragma once

#include <glib.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "vml-conf.h"

/* A configured name for a shared filesystem: every host names its own
 * mount point of it, and they all key its files alike. */
typedef struct {
    char *name;
    char *root;
} VmlStorageName;

/* Parse "NAME=/mount/point" (NAME: letters, digits, '.', '_', '-'). */
gboolean vml_storage_name_parse(const char *text, VmlStorageName *out, GError **error);
void vml_storage_name_clear(VmlStorageName *n);

/* The shared_storage list of CONF (vmleased.conf): *N_NAMES names (an
 * array of *N_NAMES + 1, the last zeroed; NULL and 0 when not set). An
 * entry that is not NAME=/mount/point, or a name given twice, is an error
 * (VML_ERROR_CONFIG). */
gboolean vml_storage_names_from_conf(VmlConf *conf, VmlStorageName **names, guint *n_names,
                                     GError **error);
void vml_storage_names_free(VmlStorageName *names, guint n_names);

/* The resource key of what FD is open on (an O_PATH fd will do): a regular
 * file or block device. NAMES: the configured storage names (N_NAMES may
 * be 0). Fails with VML_ERROR_NO_SUCH_IMAGE for anything else. */
char *vml_image_identity(int fd, const VmlStorageName *names, guint n_names, GError **error);
/* The same for the image whose fstat() is ST (a regular file or block
 * device), for a caller that has it already. */
char *vml_image_identity_stat(const struct stat *st, const VmlStorageName *names,
                              guint n_names, GError **error);

/* The same for PATH, following symlinks. */
char *vml_image_identity_of_path(const char *path, const VmlStorageName *names,
                                 guint n_names, GError **error);

/* A resource key of the release before identities: the canonical path. */
gboolean vml_key_is_legacy_path(const char *key);
