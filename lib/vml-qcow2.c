#include "vml-qcow2.h"
#include "vml-be.h"
#include "vml-error.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Offsets in the fixed header (docs/interop/qcow2.txt in QEMU's tree). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_BACKING_OFFSET = 8,
    OFF_BACKING_SIZE = 16,
    OFF_CLUSTER_BITS = 20,
    OFF_SIZE = 24,
    OFF_CRYPT = 32,
    OFF_L1_SIZE = 36,
    OFF_L1_OFFSET = 40,
    OFF_REFCOUNT_OFFSET = 48,
    OFF_REFCOUNT_CLUSTERS = 56,
    OFF_NB_SNAPSHOTS = 60,
    OFF_SNAPSHOTS_OFFSET = 64,
    OFF_INCOMPAT = 72,
    OFF_COMPAT = 80,
    OFF_AUTOCLEAR = 88,
    OFF_REFCOUNT_ORDER = 96,
    OFF_HEADER_LENGTH = 100,
};

#define EXT_PREFIX 8
#define BACKING_FORMAT_MAX 15     /* QEMU keeps it in a 16-byte buffer */

static guint64
align8(guint64 n)
{
    return (n + 7) & ~G_GUINT64_CONSTANT(7);
}

static void
ext_free(gpointer p)
{
    VmlQcow2Ext *e = p;
    g_bytes_unref(e->data);
    g_free(e);
}

void
vml_qcow2_header_free(VmlQcow2Header *h)
{
    if (!h)
        return;
    g_free(h->backing_file);
    g_free(h->backing_format);
    if (h->extensions)
        g_ptr_array_unref(h->extensions);
    if (h->fixed)
        g_bytes_unref(h->fixed);
    g_free(h->read_only_reason);
    g_free(h);
}

gboolean
vml_qcow2_has_magic(const guint8 *buf, gsize len)
{
    return len >= 4 && vml_be32(buf + OFF_MAGIC) == VML_QCOW2_MAGIC;
}

static gboolean G_GNUC_PRINTF(2, 3)
bad(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE, "invalid qcow2 header: %s", msg);
    return FALSE;
}

/* A metadata table must start on a cluster boundary outside the header
 * cluster (so rewriting the header area can never touch it) and inside
 * the file. */
static gboolean
check_table(const char *what, guint64 offset, const VmlQcow2Header *h,
            guint64 file_size, GError **error)
{
    if (offset % h->cluster_size || offset < h->cluster_size)
        return bad(error, "%s offset %" G_GUINT64_FORMAT " is not a cluster boundary "
                   "after the header cluster", what, offset);
    if (offset >= file_size)
        return bad(error, "%s offset %" G_GUINT64_FORMAT " lies past the end of the "
                   "file (%" G_GUINT64_FORMAT " bytes)", what, offset, file_size);
    return TRUE;
}

static gboolean
parse_fixed(VmlQcow2Header *h, const guint8 *buf, gsize len, guint64 file_size,
            GError **error)
{
    if (len < VML_QCOW2_V2_HEADER_LEN)
        return bad(error, "%zu bytes, shorter than the %d-byte header", len,
                   VML_QCOW2_V2_HEADER_LEN);
    if (vml_be32(buf + OFF_MAGIC) != VML_QCOW2_MAGIC)
        return bad(error, "no qcow2 magic");
    h->version = vml_be32(buf + OFF_VERSION);
    if (h->version != 2 && h->version != 3)
        return bad(error, "unsupported version %u", h->version);
    h->cluster_bits = vml_be32(buf + OFF_CLUSTER_BITS);
    if (h->cluster_bits < VML_QCOW2_CLUSTER_BITS_MIN || h->cluster_bits > VML_QCOW2_CLUSTER_BITS_MAX)
        return bad(error, "cluster_bits %u outside %d..%d", h->cluster_bits,
                   VML_QCOW2_CLUSTER_BITS_MIN, VML_QCOW2_CLUSTER_BITS_MAX);
    h->cluster_size = G_GUINT64_CONSTANT(1) << h->cluster_bits;
    h->virtual_size = vml_be64(buf + OFF_SIZE);
    h->crypt_method = vml_be32(buf + OFF_CRYPT);
    if (h->crypt_method > 2)
        return bad(error, "unknown encryption method %u", h->crypt_method);
    h->backing_offset = vml_be64(buf + OFF_BACKING_OFFSET);
    h->backing_length = vml_be32(buf + OFF_BACKING_SIZE);

    if (h->version == 2) {
        h->header_length = VML_QCOW2_V2_HEADER_LEN;
        h->refcount_order = 4;
    } else {
        if (len < VML_QCOW2_V3_HEADER_MIN)
            return bad(error, "%zu bytes, shorter than the %d-byte version 3 header",
                       len, VML_QCOW2_V3_HEADER_MIN);
        h->incompatible_features = vml_be64(buf + OFF_INCOMPAT);
        h->compatible_features = vml_be64(buf + OFF_COMPAT);
        h->autoclear_features = vml_be64(buf + OFF_AUTOCLEAR);
        h->refcount_order = vml_be32(buf + OFF_REFCOUNT_ORDER);
        h->header_length = vml_be32(buf + OFF_HEADER_LENGTH);
        if (h->refcount_order > 6)
            return bad(error, "refcount_order %u above 6", h->refcount_order);
        if (h->header_length < VML_QCOW2_V3_HEADER_MIN || h->header_length > h->cluster_size)
            return bad(error, "header_length %u outside %d..%" G_GUINT64_FORMAT,
                       h->header_length, VML_QCOW2_V3_HEADER_MIN, h->cluster_size);
        if (h->header_length > len)
            return bad(error, "header_length %u runs past the end of the file (%zu bytes)",
                       h->header_length, len);
        if ((h->incompatible_features & VML_QCOW2_INCOMPAT_COMPRESSION) &&
            h->header_length <= VML_QCOW2_V3_HEADER_MIN)
            return bad(error, "compression type flagged but header_length is %u",
                       h->header_length);
    }

    guint32 l1_size = vml_be32(buf + OFF_L1_SIZE);
    guint64 l1_offset = vml_be64(buf + OFF_L1_OFFSET);
    guint64 refcount_offset = vml_be64(buf + OFF_REFCOUNT_OFFSET);
    guint32 refcount_clusters = vml_be32(buf + OFF_REFCOUNT_CLUSTERS);
    guint32 nb_snapshots = vml_be32(buf + OFF_NB_SNAPSHOTS);
    guint64 snapshots_offset = vml_be64(buf + OFF_SNAPSHOTS_OFFSET);
    if (refcount_clusters == 0)
        return bad(error, "refcount table has no clusters");
    if (!check_table("refcount table", refcount_offset, h, file_size, error))
        return FALSE;
    if (l1_size && !check_table("L1 table", l1_offset, h, file_size, error))
        return FALSE;
    if (nb_snapshots && !check_table("snapshot table", snapshots_offset, h, file_size, error))
        return FALSE;
    h->fixed = g_bytes_new(buf, h->header_length);
    return TRUE;
}

static gboolean
printable_ascii(const guint8 *p, gsize n)
{
    for (gsize i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e)
            return FALSE;
    }
    return TRUE;
}

static gboolean
parse_extensions(VmlQcow2Header *h, const guint8 *buf, gsize len, GError **error)
{
    guint64 start = h->header_length;
    /* Like QEMU: the extensions end where the backing file name starts. */
    guint64 limit = h->backing_offset ? h->backing_offset : h->cluster_size;
    guint64 off = start;

    h->extensions = g_ptr_array_new_with_free_func(ext_free);
    if (limit > h->cluster_size)
        limit = h->cluster_size;
    while (off + EXT_PREFIX <= limit) {
        if (off + EXT_PREFIX > len)
            return bad(error, "header extension at offset %" G_GUINT64_FORMAT
                       " runs past the end of the file", off);
        guint32 type = vml_be32(buf + off);
        guint32 elen = vml_be32(buf + off + 4);
        if (type == VML_QCOW2_EXT_END) {
            h->end_marker = TRUE;
            off += EXT_PREFIX;
            break;
        }
        if (elen > limit - off - EXT_PREFIX)
            return bad(error, "header extension 0x%08x at offset %" G_GUINT64_FORMAT
                       " is %u bytes long, past the header area", type, off, elen);
        if (off + EXT_PREFIX + elen > len)
            return bad(error, "header extension 0x%08x at offset %" G_GUINT64_FORMAT
                       " runs past the end of the file", type, off);
        const guint8 *data = buf + off + EXT_PREFIX;
        if (type == VML_QCOW2_EXT_BACKING_FORMAT) {
            if (h->backing_format)
                return bad(error, "two backing format extensions");
            if (elen == 0 || elen > BACKING_FORMAT_MAX || !printable_ascii(data, elen))
                return bad(error, "backing format extension of %u bytes is not a format name",
                           elen);
            h->backing_format = g_strndup((const char *)data, elen);
        } else if (type == VML_QCOW2_EXT_OWNER && vml_qcow2_find_ext(h, type)) {
            return bad(error, "two vmlease owner extensions");
        }
        VmlQcow2Ext *e = g_new0(VmlQcow2Ext, 1);
        e->type = type;
        e->offset = (guint32)off;
        e->data = g_bytes_new(data, elen);
        g_ptr_array_add(h->extensions, e);
        off += EXT_PREFIX + align8(elen);
    }
    /* An extension's padding may run a few bytes past the first cluster
     * (QEMU does not insist that header_length be a multiple of 8); what
     * lies beyond is not ours to rewrite. */
    h->extensions_end = MIN(off, h->cluster_size);
    return TRUE;
}

static gboolean
parse_backing_name(VmlQcow2Header *h, const guint8 *buf, gsize len, GError **error)
{
    guint64 off = h->backing_offset;
    guint32 n = h->backing_length;

    h->area_end = h->extensions_end;
    if (off == 0 || n == 0)
        return TRUE;
    if (n > VML_QCOW2_BACKING_NAME_MAX)
        return bad(error, "backing file name of %u bytes (at most %d)", n,
                   VML_QCOW2_BACKING_NAME_MAX);
    if (off < h->header_length || off < h->extensions_end)
        return bad(error, "backing file name at offset %" G_GUINT64_FORMAT
                   " overlaps the header or its extensions (which end at %" G_GUINT64_FORMAT ")",
                   off, h->extensions_end);
    if (off > h->cluster_size || n > h->cluster_size - off)
        return bad(error, "backing file name at offset %" G_GUINT64_FORMAT
                   " (%u bytes) runs past the first cluster", off, n);
    if (off + n > len)
        return bad(error, "backing file name runs past the end of the file");
    const char *name = (const char *)buf + off;
    if (memchr(name, '\0', n) || !g_utf8_validate(name, n, NULL))
        return bad(error, "backing file name holds a NUL byte or invalid UTF-8");
    h->backing_file = g_strndup(name, n);
    h->area_end = MAX(h->area_end, off + n);
    return TRUE;
}

VmlQcow2Header *
vml_qcow2_parse(const guint8 *buf, gsize len, guint64 file_size, GError **error)
{
    g_autoptr(VmlQcow2Header) h = g_new0(VmlQcow2Header, 1);

    if (file_size < len)
        file_size = len;
    if (!parse_fixed(h, buf, len, file_size, error) ||
        !parse_extensions(h, buf, len, error) ||
        !parse_backing_name(h, buf, len, error))
        return NULL;

    guint64 unknown = h->incompatible_features & ~VML_QCOW2_INCOMPAT_KNOWN;
    if (unknown)
        h->read_only_reason = g_strdup_printf("unknown incompatible feature bits 0x%"
                                              G_GINT64_MODIFIER "x", unknown);
    else if (h->incompatible_features & VML_QCOW2_INCOMPAT_CORRUPT)
        h->read_only_reason = g_strdup("the image is marked corrupt");
    return g_steal_pointer(&h);
}

VmlQcow2Header *
vml_qcow2_read(int fd, const char *name, gboolean *not_qcow2, GError **error)
{
    struct stat st;
    guint8 head[VML_QCOW2_V2_HEADER_LEN];

    *not_qcow2 = FALSE;
    if (fstat(fd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: %s", name, g_strerror(errno));
        return NULL;
    }
    guint64 file_size = (guint64)st.st_size;
    if (!S_ISREG(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        file_size = end < 0 ? 0 : (guint64)end;
    }
    ssize_t n = pread(fd, head, sizeof(head), 0);
    if (n < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: cannot read: %s", name,
                    g_strerror(errno));
        return NULL;
    }
    if (!vml_qcow2_has_magic(head, (gsize)n)) {
        *not_qcow2 = TRUE;
        return NULL;
    }
    /* Read the whole first cluster (or the file, if smaller): everything
     * the header may use lives there. */
    guint32 bits = n >= OFF_CLUSTER_BITS + 4 ? vml_be32(head + OFF_CLUSTER_BITS) : 0;
    gsize want = sizeof(head);
    if (bits >= VML_QCOW2_CLUSTER_BITS_MIN && bits <= VML_QCOW2_CLUSTER_BITS_MAX)
        want = MIN((guint64)1 << bits, MAX(file_size, sizeof(head)));
    g_autofree guint8 *buf = g_malloc(want);
    n = pread(fd, buf, want, 0);
    if (n < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: cannot read: %s", name,
                    g_strerror(errno));
        return NULL;
    }
    g_autoptr(GError) local = NULL;
    VmlQcow2Header *h = vml_qcow2_parse(buf, (gsize)n, file_size, &local);
    if (!h)
        g_set_error(error, VML_ERROR, local->code, "%s: %s", name, local->message);
    return h;
}

const VmlQcow2Ext *
vml_qcow2_find_ext(const VmlQcow2Header *h, guint32 type)
{
    for (guint i = 0; i < h->extensions->len; i++) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        if (e->type == type)
            return e;
    }
    return NULL;
}

void
vml_qcow2_set_ext(VmlQcow2Header *h, guint32 type, GBytes *data)
{
    for (guint i = 0; i < h->extensions->len; i++) {
        VmlQcow2Ext *e = h->extensions->pdata[i];
        if (e->type == type) {
            g_bytes_unref(e->data);
            e->data = g_bytes_ref(data);
            return;
        }
    }
    VmlQcow2Ext *e = g_new0(VmlQcow2Ext, 1);
    e->type = type;
    e->data = g_bytes_ref(data);
    g_ptr_array_add(h->extensions, e);
}

gboolean
vml_qcow2_remove_ext(VmlQcow2Header *h, guint32 type)
{
    gboolean found = FALSE;
    for (guint i = h->extensions->len; i-- > 0;) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        if (e->type == type) {
            g_ptr_array_remove_index(h->extensions, i);
            found = TRUE;
        }
    }
    return found;
}

GBytes *
vml_qcow2_serialize(const VmlQcow2Header *h, GError **error)
{
    if (h->read_only_reason) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "will not rewrite the qcow2 header: %s", h->read_only_reason);
        return NULL;
    }
    guint64 need = h->header_length + EXT_PREFIX + h->backing_length * (h->backing_file != NULL);
    for (guint i = 0; i < h->extensions->len; i++) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        need += EXT_PREFIX + align8(g_bytes_get_size(e->data));
    }
    if (need > h->cluster_size) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "the qcow2 header would grow to %" G_GUINT64_FORMAT " bytes, past its "
                    "first cluster (%" G_GUINT64_FORMAT " bytes)", need, h->cluster_size);
        return NULL;
    }
    gsize total = MAX(need, h->area_end);
    guint8 *out = g_malloc0(total);
    memcpy(out, g_bytes_get_data(h->fixed, NULL), h->header_length);
    if (h->version >= 3)
        vml_put_be64(out + OFF_COMPAT, h->compatible_features);

    gsize off = h->header_length;
    for (guint i = 0; i < h->extensions->len; i++) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        gsize n;
        const guint8 *data = g_bytes_get_data(e->data, &n);
        vml_put_be32(out + off, e->type);
        vml_put_be32(out + off + 4, (guint32)n);
        if (n)
            memcpy(out + off + EXT_PREFIX, data, n);
        off += EXT_PREFIX + align8(n);
    }
    off += EXT_PREFIX;   /* end marker: already zero */
    /* Without a name, a stale offset would still end the extensions for
     * QEMU (and for us): write none, as QEMU does. */
    vml_put_be64(out + OFF_BACKING_OFFSET, h->backing_file ? off : 0);
    vml_put_be32(out + OFF_BACKING_SIZE, h->backing_file ? h->backing_length : 0);
    if (h->backing_file)
        memcpy(out + off, h->backing_file, h->backing_length);
    return g_bytes_new_take(out, total);
}

gboolean
vml_qcow2_write(int fd, const char *name, const VmlQcow2Header *h, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GBytes) area = vml_qcow2_serialize(h, &local);
    if (!area) {
        g_set_error(error, VML_ERROR, local->code, "%s: %s", name, local->message);
        return FALSE;
    }
    gsize n;
    const guint8 *data = g_bytes_get_data(area, &n);
    ssize_t done = pwrite(fd, data, n, 0);
    if (done != (ssize_t)n || fdatasync(fd) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: cannot write the qcow2 header: %s",
                    name, done < 0 || done == (ssize_t)n ? g_strerror(errno) : "short write");
        return FALSE;
    }
    return TRUE;
}
