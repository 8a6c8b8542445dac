#include "vml-backing-chain.h"
#include "vml-str-hash.h"
#include "vml-error.h"
#include "vml-proc.h"
#include "vml-qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void
vml_backing_layer_free(VmlBackingLayer *layer)
{
    if (!layer)
        return;
    g_free(layer->path);
    g_free(layer->format);
    g_free(layer);
}

/* A format name from a header is hostile: only a short plain word may end
 * up in a domain's XML. */
static gboolean
format_name_ok(const char *name)
{
    gsize len = strlen(name);
    if (len == 0 || len > 32)
        return FALSE;
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-')
            return FALSE;
    }
    return TRUE;
}

/* PATH opened for reading its header (*FD; -1, with *OPEN_ERRNO, when it
 * cannot be) and its canonical path: the kernel's name of the file opened
 * (every symlink resolved), or realpath's when that is not to be had.
 * NULL, with errno, when PATH does not resolve at all. */
static char *
open_resolved(const char *path, int *fd, int *open_errno)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    *open_errno = errno;
    if (*fd >= 0) {
        char *canon = vml_proc_own_fd_path(*fd);
        if (canon && canon[0] == '/' && !g_str_has_suffix(canon, " (deleted)"))
            return canon;
        g_free(canon);
    }
    char *real = realpath(path, NULL);
    if (!real && *fd >= 0) {
        int err = errno;
        close(*fd);
        *fd = -1;
        errno = err;
    }
    if (!real)
        return NULL;
    char *canon = g_strdup(real);
    free(real);
    return canon;
}

/* What PATH's header says, read from FD (taken; -1: PATH could not be
 * opened, with OPEN_ERRNO; borrowed, not closed, when its stat is given
 * as LENT): whether it is qcow2 (else it is taken as raw), its backing
 * file name (NULL when none, or not a file) and the backing format its
 * extension declares (NULL when none). Without PROBE only whether PATH is
 * a block device is found out. */
static gboolean
read_image(int fd, int open_errno, const struct stat *lent, const char *path, gboolean probe,
           gboolean *is_qcow2, char **backing, char **backing_format, gboolean *block,
           GError **error)
{
    *is_qcow2 = FALSE;
    *backing = NULL;
    *backing_format = NULL;
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot open %s: %s", path, g_strerror(open_errno));
        return FALSE;
    }
    struct stat own;
    gboolean stated = lent || fstat(fd, &own) == 0;
    const struct stat *st = lent ? lent : &own;
    *block = stated && S_ISBLK(st->st_mode);
    if (!probe) {
        if (!lent)
            close(fd);
        return TRUE;
    }
    gboolean not_qcow2;
    g_autoptr(GError) local = NULL;
    g_autoptr(VmlQcow2Header) h = stated ? vml_qcow2_read_stat(fd, st, path, &not_qcow2, &local)
                                         : vml_qcow2_read(fd, path, &not_qcow2, &local);
    if (!lent)
        close(fd);
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    *is_qcow2 = h != NULL;
    if (!h || !h->backing_file)
        return TRUE;   /* raw, or no backing file: the chain ends */
    /* Network or json: backing stores are not files to lease. */
    if (strstr(h->backing_file, "://") || g_str_has_prefix(h->backing_file, "json:"))
        return TRUE;
    *backing = g_steal_pointer(&h->backing_file);
    if (h->backing_format && format_name_ok(h->backing_format))
        *backing_format = g_steal_pointer(&h->backing_format);
    return TRUE;
}

/* PATH's own image when the caller has it open already: FD (borrowed)
 * and its stat. */
typedef struct {
    int fd;
    const struct stat *st;
} OpenTop;

/* The chain from PATH, [0] PATH itself. With HONOUR_FORMATS, a layer whose
 * format is known and is not qcow2 ends the chain unread. TOP (may be
 * NULL): PATH is canonical and open already. */
static GPtrArray *
walk_chain(const char *path, const char *format, gboolean honour_formats, gboolean canonical,
           const OpenTop *top, GError **error)
{
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vml_backing_layer_free);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, NULL);
    int fd = -1, open_errno = 0;
    const struct stat *lent = NULL;
    g_autofree char *current = NULL;
    /* A path the caller knows is canonical needs no resolving: opened as
     * it is (a symlink there now is resolved as any other name). */
    if (top) {
        fd = top->fd;
        lent = top->st;
        current = g_strdup(path);
    } else if (canonical && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)) >= 0) {
        current = g_strdup(path);
    } else {
        current = open_resolved(path, &fd, &open_errno);
    }

    if (!current) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot resolve %s: %s", path, g_strerror(errno));
        return NULL;
    }
    g_hash_table_add(seen, g_strdup(current));
    /* CURRENT's format as known beforehand: FORMAT for PATH, then what the
     * parent's header declares; NULL: detected. */
    g_autofree char *declared = g_strdup(format);
    for (;;) {
        gboolean probe = !honour_formats || !declared || g_str_equal(declared, "qcow2");
        gboolean is_qcow2, block;
        g_autofree char *name = NULL;
        g_autofree char *backing_format = NULL;
        gboolean ok = read_image(fd, open_errno, lent, current, probe, &is_qcow2, &name,
                                 &backing_format, &block, error);
        fd = -1;
        lent = NULL;
        if (!ok)
            return NULL;
        VmlBackingLayer *layer = g_new0(VmlBackingLayer, 1);
        layer->path = g_strdup(current);
        layer->format = declared ? g_steal_pointer(&declared)
                                 : g_strdup(is_qcow2 ? "qcow2" : "raw");
        layer->block = block;
        g_ptr_array_add(chain, layer);
        if (!name)
            break;
        g_autofree char *dir = g_path_get_dirname(current);
        g_autofree char *joined = g_path_is_absolute(name) ? g_strdup(name)
                                                           : g_build_filename(dir, name, NULL);
        g_autofree char *real = open_resolved(joined, &fd, &open_errno);
        if (!real) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing file %s: %s", current, joined, g_strerror(errno));
            return NULL;
        }
        if (!g_hash_table_add(seen, g_strdup(real))) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing chain loops back to %s", path, real);
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        /* [0] is PATH itself: the backing images are the rest. */
        if (chain->len > VML_BACKING_CHAIN_MAX) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "%s: backing chain deeper than %d", path, VML_BACKING_CHAIN_MAX);
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        declared = g_steal_pointer(&backing_format);
        g_free(current);
        current = g_steal_pointer(&real);
    }
    return g_steal_pointer(&chain);
}

GPtrArray *
vml_backing_chain_layers(const char *path, const char *format, GError **error)
{
    return walk_chain(path, format, TRUE, FALSE, NULL, error);
}

GPtrArray *
vml_backing_chain(const char *path, GError **error)
{
    return vml_backing_chain_resolved(path, NULL, error);
}

/* The backing images of LAYERS (NULL: ERROR set), with [0]'s path in
 * *CANONICAL (may be NULL). */
static GPtrArray *
backing_of(GPtrArray *layers, char **canonical)
{
    if (!layers)
        return NULL;
    if (canonical)
        *canonical = g_strdup(((VmlBackingLayer *)layers->pdata[0])->path);
    GPtrArray *chain = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 1; i < layers->len; i++) {
        VmlBackingLayer *layer = layers->pdata[i];
        g_ptr_array_add(chain, g_steal_pointer(&layer->path));
    }
    return chain;
}

GPtrArray *
vml_backing_chain_resolved(const char *path, char **canonical, GError **error)
{
    /* Every qcow2 header is followed, whatever format its parent declares
     * (what this function always did). */
    g_autoptr(GPtrArray) layers = walk_chain(path, NULL, FALSE, FALSE, NULL, error);
    return backing_of(layers, canonical);
}

GPtrArray *
vml_backing_chain_of_canonical(const char *path, GError **error)
{
    g_autoptr(GPtrArray) layers = walk_chain(path, NULL, FALSE, TRUE, NULL, error);
    return backing_of(layers, NULL);
}

GPtrArray *
vml_backing_chain_of_open(const char *path, int fd, const struct stat *st, gboolean *is_qcow2,
                          GError **error)
{
    OpenTop top = { fd, st };
    g_autoptr(GPtrArray) layers = walk_chain(path, NULL, FALSE, TRUE, &top, error);
    if (layers)
        *is_qcow2 = g_str_equal(((VmlBackingLayer *)layers->pdata[0])->format, "qcow2");
    return backing_of(layers, NULL);
}
