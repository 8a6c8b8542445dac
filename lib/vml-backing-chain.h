/* The backing chain of an image, read from qcow2 headers: just enough to
 * lease every layer (headers parsed by vml-qcow2.c).
 * Headers are hostile input: offsets and lengths are checked, names must
 * be sane, the depth is bounded and a loop is an error. */
#pragma once

#include <glib.h>
#include <sys/stat.h>

#define VML_BACKING_CHAIN_MAX 64

/* The backing images of PATH, nearest first, as absolute canonical paths
 * (relative names resolved against the directory of the image that names
 * them). Empty for a raw image or a qcow2 image without backing file. */
GPtrArray *vml_backing_chain(const char *path, GError **error);
/* The same, with PATH's own canonical path in *CANONICAL: the chain walk
 * resolves it anyway, so a caller needs no realpath() of its own. */
GPtrArray *vml_backing_chain_resolved(const char *path, char **canonical, GError **error);
/* The same for a PATH known to be canonical already (a lease's): opened
 * as it is, without resolving it again. */
GPtrArray *vml_backing_chain_of_canonical(const char *path, GError **error);
/* The same for PATH (canonical) open already on FD, with ST its fstat:
 * FD is read with pread and left open. *IS_QCOW2: whether PATH's own
 * header is qcow2's. */
GPtrArray *vml_backing_chain_of_open(const char *path, int fd, const struct stat *st,
                                     gboolean *is_qcow2, GError **error);

typedef struct {
    char *path;        /* absolute and canonical */
    /* The format the naming image's header declares (its backing format
     * extension), else the one detected: "qcow2" or "raw". */
    char *format;
    gboolean block;    /* a block device (else a file) */
} VmlBackingLayer;

void vml_backing_layer_free(VmlBackingLayer *layer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlBackingLayer, vml_backing_layer_free)

/* PATH itself ([0], canonical) followed by its backing images as
 * vml_backing_chain() finds them, each with its format; same checks and
 * errors. FORMAT is PATH's format when known (NULL: detected). Unlike
 * vml_backing_chain(), a layer whose format is known (FORMAT, or the
 * backing format its parent's header declares) and is not qcow2 ends the
 * chain unread: QEMU opens it as that format and never looks for a
 * backing file in it, and a raw image's content is the guest's to forge. */
GPtrArray *vml_backing_chain_layers(const char *path, const char *format, GError **error);
