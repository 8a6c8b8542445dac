/* The backing chain of an image, read from qcow2 headers: just enough to
 * lease every layer (headers parsed by vml-qcow2.c).
 * Headers are hostile input: offsets and lengths are checked, names must
 * be sane, the depth is bounded and a loop is an error. */
#pragma once

#include <glib.h>

#define VML_BACKING_CHAIN_MAX 64

/* The backing images of PATH, nearest first, as absolute canonical paths
 * (relative names resolved against the directory of the image that names
 * them). Empty for a raw image or a qcow2 image without backing file. */
GPtrArray *vml_backing_chain(const char *path, GError **error);
