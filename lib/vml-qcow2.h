/* A qcow2 image header (versions 2 and 3), read and rewritten safely.
 *
 * Headers are hostile input. Parsing checks every offset and length
 * against the file and the first cluster, refuses overlaps, and keeps
 * every header extension byte for byte (unknown ones included), so that
 * a rewrite changes exactly what the caller changed. A header that was
 * not fully understood is never written back. */
#pragma once

#include <glib.h>
#include <sys/stat.h>

#define VML_QCOW2_MAGIC 0x514649fbu               /* "QFI\xfb" */
#define VML_QCOW2_V2_HEADER_LEN 72
#define VML_QCOW2_V3_HEADER_MIN 104
#define VML_QCOW2_BACKING_NAME_MAX 1023            /* QEMU's limit */
#define VML_QCOW2_CLUSTER_BITS_MIN 9
#define VML_QCOW2_CLUSTER_BITS_MAX 21

/* Header extension types defined by the qcow2 specification. */
#define VML_QCOW2_EXT_END             0x00000000u
#define VML_QCOW2_EXT_BACKING_FORMAT  0xe2792acau
#define VML_QCOW2_EXT_FEATURE_TABLE   0x6803f857u
#define VML_QCOW2_EXT_BITMAPS         0x23852875u
#define VML_QCOW2_EXT_ENCRYPTION      0x0537be77u
#define VML_QCOW2_EXT_DATA_FILE       0x44415441u
/* Ours: who holds the image (vml-image-owner.h), "vmle". */
#define VML_QCOW2_EXT_OWNER           0x766d6c65u

/* Compatible feature bits. Bit 1 is vmlease's in-use bit. */
#define VML_QCOW2_COMPAT_LAZY_REFCOUNTS (G_GUINT64_CONSTANT(1) << 0)
#define VML_QCOW2_COMPAT_IN_USE         (G_GUINT64_CONSTANT(1) << 1)
/* Incompatible feature bits this code knows. */
#define VML_QCOW2_INCOMPAT_DIRTY        (G_GUINT64_CONSTANT(1) << 0)
#define VML_QCOW2_INCOMPAT_CORRUPT      (G_GUINT64_CONSTANT(1) << 1)
#define VML_QCOW2_INCOMPAT_DATA_FILE    (G_GUINT64_CONSTANT(1) << 2)
#define VML_QCOW2_INCOMPAT_COMPRESSION  (G_GUINT64_CONSTANT(1) << 3)
#define VML_QCOW2_INCOMPAT_EXTENDED_L2  (G_GUINT64_CONSTANT(1) << 4)
#define VML_QCOW2_INCOMPAT_KNOWN        (G_GUINT64_CONSTANT(0x1f))

typedef struct {
    guint32 type;
    guint32 offset;       /* of its 8-byte type/length prefix in the file */
    GBytes *data;         /* exactly its length, padding not included */
} VmlQcow2Ext;

typedef struct {
    guint32 version;
    guint32 cluster_bits;
    guint64 cluster_size;
    guint64 virtual_size;
    guint32 crypt_method;
    guint64 incompatible_features;
    guint64 compatible_features;
    guint64 autoclear_features;
    guint32 refcount_order;
    guint32 header_length;        /* 72 for version 2 */
    guint64 backing_offset;
    guint32 backing_length;
    char *backing_file;           /* NULL: none */
    char *backing_format;         /* from its extension; NULL: none */
    gboolean end_marker;          /* extensions ended by an end marker */
    guint64 extensions_end;       /* first byte after the extension area */
    guint64 area_end;             /* first byte after everything in use */
    GPtrArray *extensions;        /* VmlQcow2Ext*, in file order */
    GBytes *fixed;                /* the first header_length bytes, verbatim */
    char *read_only_reason;       /* why this header may not be rewritten */
    /* Set by vml_qcow2_read_stat only: the bytes it was parsed from, with
     * the file's size and device then (vml_qcow2_write_fresh). */
    GBytes *read_bytes;
    guint64 read_file_size;
    dev_t read_dev;
    blksize_t read_blksize;
} VmlQcow2Header;

void vml_qcow2_header_free(VmlQcow2Header *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlQcow2Header, vml_qcow2_header_free)

/* TRUE when BUF (the start of a file) carries the qcow2 magic. */
gboolean vml_qcow2_has_magic(const guint8 *buf, gsize len);

/* Parse the header from BUF, the first LEN bytes of a file of FILE_SIZE
 * bytes (LEN may be less than FILE_SIZE: pass at least the first cluster,
 * or the whole file if smaller). */
VmlQcow2Header *vml_qcow2_parse(const guint8 *buf, gsize len, guint64 file_size,
                                GError **error);

/* Read and parse the header of the image open on FD. Sets *NOT_QCOW2 (and
 * returns NULL without error) when the file does not start with the qcow2
 * magic. NAME is used in error messages. */
VmlQcow2Header *vml_qcow2_read(int fd, const char *name, gboolean *not_qcow2,
                               GError **error);
/* The same for FD whose fstat() is ST, for a caller that has it already. */
VmlQcow2Header *vml_qcow2_read_stat(int fd, const struct stat *st, const char *name,
                                    gboolean *not_qcow2, GError **error);

const VmlQcow2Ext *vml_qcow2_find_ext(const VmlQcow2Header *h, guint32 type);
/* Replace the extension of TYPE (or append it before the end marker). */
void vml_qcow2_set_ext(VmlQcow2Header *h, guint32 type, GBytes *data);
/* TRUE when one was there. */
gboolean vml_qcow2_remove_ext(VmlQcow2Header *h, guint32 type);

/* The header area as it would be written: the fixed header (feature bits
 * and backing offset updated), the extensions, an end marker and the
 * backing file name, zero-filled up to the old area's end so nothing stale
 * remains. Fails when the header may not be rewritten or would not fit in
 * the first cluster. */
GBytes *vml_qcow2_serialize(const VmlQcow2Header *h, GError **error);

/* How far vml_qcow2_write waits for the disk. */
typedef enum {
    /* An fdatasync after every step, the last one included: the new header
     * is on stable storage when the call returns. */
    VML_QCOW2_DURABLE,
    /* An fdatasync between steps only, so that a crash still finds one of
     * the states the steps go through; the last step is left to the
     * kernel's writeback (docs/image-format.md, "Durability"). */
    VML_QCOW2_ORDERED,
} VmlQcow2Sync;

/* Write the serialized header to FD: only the bytes that differ from the
 * file's, in steps with an fdatasync after each (but the last, with
 * VML_QCOW2_ORDERED), so that the backing file offset always points at the
 * name (see docs/image-format.md). Every byte range is allocated before
 * the first write, so a full file system fails with nothing changed; a
 * failed or short write or fdatasync puts the old bytes back. NAME (and
 * the errno text) are in error messages. */
gboolean vml_qcow2_write_synced(int fd, const char *name, const VmlQcow2Header *h,
                                VmlQcow2Sync sync, GError **error);

/* The same for H (maybe changed since) read by vml_qcow2_read_stat from
 * FD a moment ago, with nothing written to FD in between: the bytes it was
 * read from stand for what the file holds, so they are not read again.
 * Without them, as vml_qcow2_write_synced. */
gboolean vml_qcow2_write_fresh(int fd, const char *name, const VmlQcow2Header *h,
                               VmlQcow2Sync sync, GError **error);

/* vml_qcow2_write_synced(..., VML_QCOW2_DURABLE, ...). */
gboolean vml_qcow2_write(int fd, const char *name, const VmlQcow2Header *h,
                         GError **error);
