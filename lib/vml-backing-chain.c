#include "vml-backing-chain.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu          /* "QFI\xfb" */
#define QCOW2_HEADER_MIN 72
#define BACKING_NAME_MAX 1023            /* QEMU's own limit */

static guint64
be64(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static guint32
be32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

/* The backing file name stored in PATH's header; NULL without error when
 * PATH is not qcow2 or has none. */
static char *
read_backing_name(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot open %s: %s", path, g_strerror(errno));
        return NULL;
    }
    guint8 h[QCOW2_HEADER_MIN];
    ssize_t n = pread(fd, h, sizeof(h), 0);
    char *name = NULL;
    if (n != (ssize_t)sizeof(h) || be32(h) != QCOW2_MAGIC)
        goto out;   /* raw, or too short to be qcow2: the chain ends */
    guint32 version = be32(h + 4);
    guint64 offset = be64(h + 8);
    guint32 size = be32(h + 16);
    guint32 cluster_bits = be32(h + 20);
    if (version != 2 && version != 3) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s: unsupported qcow2 version %u", path, version);
        goto out;
    }
    if (offset == 0 || size == 0)
        goto out;
    /* The name lives in the first cluster, after the fixed header. */
    if (cluster_bits < 9 || cluster_bits > 21 || size > BACKING_NAME_MAX ||
        offset < QCOW2_HEADER_MIN || offset + size > (G_GUINT64_CONSTANT(1) << cluster_bits)) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s: qcow2 header has a bad backing file name (offset %" G_GUINT64_FORMAT
                    ", length %u)", path, offset, size);
        goto out;
    }
    name = g_malloc(size + 1);
    if (pread(fd, name, size, offset) != (ssize_t)size) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s: backing file name lies past the end of the file", path);
        g_clear_pointer(&name, g_free);
        goto out;
    }
    name[size] = '\0';
    if (strlen(name) != size || !g_utf8_validate(name, size, NULL)) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s: backing file name holds a NUL or invalid UTF-8", path);
        g_clear_pointer(&name, g_free);
        goto out;
    }
    if (strstr(name, "://") || g_str_has_prefix(name, "json:")) {
        /* Network or json: backing stores are not files to lease. */
        g_clear_pointer(&name, g_free);
    }
out:
    close(fd);
    return name;
}

GPtrArray *
vml_backing_chain(const char *path, GError **error)
{
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autofree char *current = realpath(path, NULL);

    if (!current) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot resolve %s: %s", path, g_strerror(errno));
        return NULL;
    }
    g_hash_table_add(seen, g_strdup(current));
    for (;;) {
        g_autoptr(GError) local = NULL;
        g_autofree char *name = read_backing_name(current, &local);
        if (local) {
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
        if (!name)
            break;
        g_autofree char *dir = g_path_get_dirname(current);
        g_autofree char *joined = g_path_is_absolute(name) ? g_strdup(name)
                                                           : g_build_filename(dir, name, NULL);
        char *real = realpath(joined, NULL);
        if (!real) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing file %s: %s", current, joined, g_strerror(errno));
            return NULL;
        }
        if (!g_hash_table_add(seen, g_strdup(real))) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing chain loops back to %s", path, real);
            free(real);
            return NULL;
        }
        if (chain->len >= VML_BACKING_CHAIN_MAX) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing chain deeper than %d", path, VML_BACKING_CHAIN_MAX);
            free(real);
            return NULL;
        }
        g_ptr_array_add(chain, g_strdup(real));
        g_free(current);
        current = g_strdup(real);
        free(real);
    }
    return g_steal_pointer(&chain);
}
