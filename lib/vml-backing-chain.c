#include "vml-backing-chain.h"
#include "vml-error.h"
#include "vml-qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The backing file name stored in PATH's header; NULL without error when
 * PATH is not qcow2 or has none. */
static char *
read_backing_name(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot open %s: %s", path, g_strerror(errno));
        return NULL;
    }
    gboolean not_qcow2;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, error);
    close(fd);
    if (!h || !h->backing_file)
        return NULL;   /* raw, or no backing file: the chain ends */
    /* Network or json: backing stores are not files to lease. */
    if (strstr(h->backing_file, "://") || g_str_has_prefix(h->backing_file, "json:"))
        return NULL;
    return g_steal_pointer(&h->backing_file);
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
