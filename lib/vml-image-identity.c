/* Name-independent resource keys (see vml-image-identity.h). */
#include "vml-image-identity.h"
#include "vml-conf.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define LOOP_DEVICE_MAJOR 7
/* A loop device over a file on a loop device over ...: far past anything real. */
#define MAX_DEPTH 8

/* Filesystems whose every client mounts the same SOURCE name. */
static const char *const network_fs_types[] = {
    "nfs", "nfs4", "ceph", "cifs", "smb3", "glusterfs", "fuse.glusterfs", "fuse.cephfs",
    "lustre", "gpfs", "beegfs", "9p", "virtiofs", NULL,
};

gboolean
vml_storage_name_parse(const char *text, VmlStorageName *out, GError **error)
{
    const char *eq = strchr(text, '=');
    if (!eq || eq == text) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "'%s' is not NAME=/mount/point", text);
        return FALSE;
    }
    for (const char *p = text; p < eq; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-') {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "storage name in '%s' may hold only letters, digits, '.', '_' and '-'",
                        text);
            return FALSE;
        }
    }
    if (eq - text > 64) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "storage name in '%s' is longer than 64 characters", text);
        return FALSE;
    }
    if (eq[1] != '/') {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "mount point in '%s' must be an absolute path", text);
        return FALSE;
    }
    out->name = g_strndup(text, eq - text);
    out->root = g_strdup(eq + 1);
    return TRUE;
}

void
vml_storage_name_clear(VmlStorageName *n)
{
    g_clear_pointer(&n->name, g_free);
    g_clear_pointer(&n->root, g_free);
}

void
vml_storage_names_free(VmlStorageName *names, guint n_names)
{
    for (guint i = 0; names && i < n_names; i++)
        vml_storage_name_clear(&names[i]);
    g_free(names);
}

gboolean
vml_storage_names_from_conf(VmlConf *conf, VmlStorageName **names, guint *n_names,
                            GError **error)
{
    g_auto(GStrv) list = NULL;
    g_autoptr(GError) type_error = NULL;
    *names = NULL;
    *n_names = 0;
    if (!vml_conf_get_string_list(conf, "shared_storage", &list, &type_error)) {
        if (!type_error)
            return TRUE;   /* not set */
        g_propagate_error(error, g_steal_pointer(&type_error));
        return FALSE;
    }
    guint n = list ? g_strv_length(list) : 0;
    VmlStorageName *out = g_new0(VmlStorageName, n + 1);
    for (guint i = 0; i < n; i++) {
        g_autoptr(GError) local = NULL;
        gboolean twice = FALSE;
        if (vml_storage_name_parse(list[i], &out[i], &local)) {
            for (guint j = 0; j < i && !twice; j++)
                twice = g_str_equal(out[j].name, out[i].name);
            if (!twice)
                continue;
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                        "shared_storage: name '%s' is given twice", out[i].name);
        } else {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "shared_storage: %s",
                        local->message);
        }
        vml_conf_prefix_key_error(conf, "shared_storage", error);
        vml_storage_names_free(out, i + 1);
        return FALSE;
    }
    *names = out;
    *n_names = n;
    return TRUE;
}

gboolean
vml_key_is_legacy_path(const char *key)
{
    return key && key[0] == '/';
}

/* A sysfs attribute of block device DEV, trimmed; NULL if absent or empty. */
static char *
sysfs_attr(dev_t dev, const char *attr)
{
    g_autofree char *path = g_strdup_printf("/sys/dev/block/%u:%u/%s", major(dev), minor(dev),
                                            attr);
    char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    g_strstrip(text);
    if (!*text) {
        g_free(text);
        return NULL;
    }
    return text;
}

/* Sysfs text made safe for a key: printable ASCII, no blanks or ':'. */
static char *
key_part(const char *text)
{
    GString *s = g_string_new(NULL);
    gboolean blank = FALSE;
    for (const char *p = text; *p && s->len < 200; p++) {
        if (g_ascii_isgraph(*p) && *p != ':') {
            g_string_append_c(s, *p);
            blank = FALSE;
        } else if (!blank) {
            g_string_append_c(s, '_');
            blank = TRUE;
        }
    }
    return g_string_free(s, FALSE);
}

static char *file_key(dev_t dev, ino_t ino, const VmlStorageName *names, guint n_names,
                      int depth);

/* The disk a partition DEV is part of, and the partition's number. */
static gboolean
partition_parent(dev_t dev, dev_t *parent, char **number)
{
    g_autofree char *part = sysfs_attr(dev, "partition");
    if (!part)
        return FALSE;
    g_autofree char *link = g_strdup_printf("/sys/dev/block/%u:%u", major(dev), minor(dev));
    g_autofree char *real = realpath(link, NULL);
    if (!real)
        return FALSE;
    g_autofree char *dir = g_path_get_dirname(real);
    g_autofree char *dev_file = g_build_filename(dir, "dev", NULL);
    g_autofree char *text = NULL;
    unsigned maj, min;
    if (!g_file_get_contents(dev_file, &text, NULL, NULL) ||
        sscanf(text, "%u:%u", &maj, &min) != 2)
        return FALSE;
    *parent = makedev(maj, min);
    *number = key_part(part);
    return TRUE;
}

/* The file a bound loop device reads, as (filesystem, inode). */
static gboolean
loop_backing(dev_t dev, dev_t *backing_dev, ino_t *backing_ino)
{
    /* Its node is /dev/ + the kernel's name for it (no udev needed). */
    g_autofree char *link = g_strdup_printf("/sys/dev/block/%u:%u", major(dev), minor(dev));
    g_autofree char *real = realpath(link, NULL);
    g_autofree char *name = real ? g_path_get_basename(real) : NULL;
    g_autofree char *node = name ? g_build_filename("/dev", name, NULL) : NULL;
    int fd = node ? open(node, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    if (fd < 0)
        return FALSE;
    struct stat st;
    struct loop_info64 info;
    gboolean ok = fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == dev &&
                  ioctl(fd, LOOP_GET_STATUS64, &info) == 0;
    close(fd);
    if (!ok)
        return FALSE;
    *backing_dev = (dev_t)info.lo_device;
    *backing_ino = (ino_t)info.lo_inode;
    return TRUE;
}

/* Identity of block device DEV: a loop device's backing file ("file:..."),
 * else "blk:ID". */
static char *
block_key(dev_t dev, const VmlStorageName *names, guint n_names, int depth)
{
    dev_t bdev, parent;
    ino_t bino;
    char *number = NULL;

    if (depth < MAX_DEPTH && major(dev) == LOOP_DEVICE_MAJOR && loop_backing(dev, &bdev, &bino))
        return file_key(bdev, bino, names, n_names, depth + 1);
    g_autofree char *dm_uuid = sysfs_attr(dev, "dm/uuid");
    if (dm_uuid) {
        g_autofree char *part = key_part(dm_uuid);
        return g_strconcat("blk:dm:", part, NULL);
    }
    if (depth < MAX_DEPTH && partition_parent(dev, &parent, &number)) {
        g_autofree char *n = number;
        g_autofree char *whole = block_key(parent, names, n_names, depth + 1);
        return g_strdup_printf("%s:part%s", whole, n);
    }
    static const char *const ids[][2] = {
        { "wwid", "wwid" }, { "device/wwid", "wwid" }, { "serial", "serial" },
        { "device/serial", "serial" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(ids); i++) {
        g_autofree char *value = sysfs_attr(dev, ids[i][0]);
        if (value) {
            g_autofree char *part = key_part(value);
            return g_strdup_printf("blk:%s:%s", ids[i][1], part);
        }
    }
    return g_strdup_printf("blk:dev:%u:%u", major(dev), minor(dev));
}

/* A configured storage root that is the root of a mount of filesystem DEV. */
static const char *
configured_name(dev_t dev, const VmlStorageName *names, guint n_names)
{
    for (guint i = 0; i < n_names; i++) {
        struct statx stx;
        if (statx(AT_FDCWD, names[i].root, 0, STATX_BASIC_STATS, &stx) < 0 ||
            makedev(stx.stx_dev_major, stx.stx_dev_minor) != dev)
            continue;
        /* A root that is a plain directory names the filesystem above it:
         * only a mount point names what is mounted there. */
        if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
            !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
            continue;
        return names[i].name;
    }
    return NULL;
}

/* "TYPE:SOURCE" of a network filesystem DEV (as /proc/self/mountinfo
 * gives them), else NULL. */
static char *
network_fs(dev_t dev)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL))
        return NULL;
    g_autofree char *want = g_strdup_printf(" %u:%u ", major(dev), minor(dev));
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *at = strstr(line, want);
        char *sep = strstr(line, " - ");
        if (at && sep && at < sep) {
            g_auto(GStrv) f = g_strsplit(sep + 3, " ", 3);
            if (f[0] && f[1] && g_strv_contains(network_fs_types, f[0])) {
                g_autofree char *type = key_part(f[0]);
                return g_strdup_printf("%s:%s", type, f[1]);
            }
            return NULL;
        }
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Which filesystem DEV is, as the part of a file key before the inode. */
static char *
filesystem_key(dev_t dev, const VmlStorageName *names, guint n_names, int depth)
{
    const char *name = configured_name(dev, names, n_names);
    if (name)
        return g_strdup_printf("name:%s", name);
    char *fs = major(dev) == 0 ? network_fs(dev) : NULL;
    if (fs)
        return fs;
    if (major(dev) != 0 && depth < MAX_DEPTH)
        return block_key(dev, names, n_names, depth + 1);
    return g_strdup_printf("dev:%u:%u", major(dev), minor(dev));
}

/* filesystem_key() of the filesystems met so far, by device. What a
 * mounted filesystem is changes only with the mount table (a device
 * cannot go while mounted), and the kernel tells whoever has
 * /proc/self/mountinfo open of every change (POLLPRI): then all of it is
 * forgotten. Without that file nothing is kept. */
static struct {
    GMutex lock;
    GHashTable *by_dev;     /* dev_t (as guint64 *) -> key */
    char *names;            /* the storage names the keys were made with */
    int mountinfo;          /* 0: not opened yet; -1: cannot be */
} fs_cache;

static char *
names_text(const VmlStorageName *names, guint n_names)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < n_names; i++)
        g_string_append_printf(s, "%s=%s\n", names[i].name, names[i].root);
    return g_string_free(s, FALSE);
}

/* Whether the mount table is as it was when the cache was last used. */
static gboolean
mounts_unchanged(void)
{
    if (fs_cache.mountinfo == 0) {
        int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        fs_cache.mountinfo = fd > 0 ? fd : -1;
        return FALSE;
    }
    struct pollfd pfd = { .fd = fs_cache.mountinfo, .events = POLLPRI };
    return fs_cache.mountinfo > 0 && poll(&pfd, 1, 0) == 0;
}

static char *
filesystem_key_cached(dev_t dev, const VmlStorageName *names, guint n_names)
{
    g_autofree char *text = names_text(names, n_names);
    g_mutex_lock(&fs_cache.lock);
    if (!mounts_unchanged() || g_strcmp0(text, fs_cache.names) != 0 || !fs_cache.by_dev) {
        g_clear_pointer(&fs_cache.by_dev, g_hash_table_unref);
        fs_cache.by_dev = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
        g_free(fs_cache.names);
        fs_cache.names = g_steal_pointer(&text);
    }
    guint64 d = (guint64)dev;
    const char *key = g_hash_table_lookup(fs_cache.by_dev, &d);
    char *out = key ? g_strdup(key) : NULL;
    if (!out) {
        out = filesystem_key(dev, names, n_names, 0);
        if (fs_cache.mountinfo > 0)
            g_hash_table_insert(fs_cache.by_dev, g_memdup2(&d, sizeof(d)), g_strdup(out));
    }
    g_mutex_unlock(&fs_cache.lock);
    return out;
}

static char *
file_key(dev_t dev, ino_t ino, const VmlStorageName *names, guint n_names, int depth)
{
    g_autofree char *fs = depth == 0 ? filesystem_key_cached(dev, names, n_names)
                                     : filesystem_key(dev, names, n_names, depth);
    /* The inode in decimal by hand: this runs for every path of every call. */
    char digits[24], *d = digits + sizeof(digits);
    guint64 v = (guint64)ino;
    *--d = '\0';
    do
        *--d = (char)('0' + v % 10);
    while ((v /= 10));
    return g_strconcat("file:", fs, ":", d, NULL);
}

char *
vml_image_identity_stat(const struct stat *st, const VmlStorageName *names, guint n_names,
                        GError **error)
{
    if (S_ISREG(st->st_mode))
        return file_key(st->st_dev, st->st_ino, names, n_names, 0);
    if (S_ISBLK(st->st_mode))
        return block_key(st->st_rdev, names, n_names, 0);
    g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                "not a regular file or block device");
    return NULL;
}

char *
vml_image_identity(int fd, const VmlStorageName *names, guint n_names, GError **error)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "cannot stat the image: %s",
                    g_strerror(errno));
        return NULL;
    }
    return vml_image_identity_stat(&st, names, n_names, error);
}

char *
vml_image_identity_of_path(const char *path, const VmlStorageName *names, guint n_names,
                           GError **error)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "%s: %s", path,
                    g_strerror(errno));
        return NULL;
    }
    char *key = vml_image_identity(fd, names, n_names, error);
    close(fd);
    return key;
}
