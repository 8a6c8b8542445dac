#include "vml-qcow2.h"
#include "vml-be.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
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
    if (h->read_bytes)
        g_bytes_unref(h->read_bytes);
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
    *not_qcow2 = FALSE;
    if (fstat(fd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: %s", name, g_strerror(errno));
        return NULL;
    }
    return vml_qcow2_read_stat(fd, &st, name, not_qcow2, error);
}

/* H (may be NULL) with the LEN bytes of BUF it was parsed from. */
static VmlQcow2Header *
remember_read(VmlQcow2Header *h, const guint8 *buf, gsize len, guint64 file_size,
              const struct stat *st)
{
    if (h) {
        h->read_bytes = g_bytes_new(buf, len);
        h->read_file_size = file_size;
        h->read_dev = st->st_dev;
        h->read_blksize = st->st_blksize;
    }
    return h;
}

VmlQcow2Header *
vml_qcow2_read_stat(int fd, const struct stat *st, const char *name, gboolean *not_qcow2,
                    GError **error)
{
    /* One page: the header, its extensions and the backing file name of
     * nearly every image lie in it. */
    guint8 head[4096];

    *not_qcow2 = FALSE;
    guint64 file_size = (guint64)st->st_size;
    if (!S_ISREG(st->st_mode)) {
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
    /* Everything the header may use lives in the first cluster (or the
     * file, if smaller). What the first page holds is parsed as it is when
     * the cluster is no bigger or it parses; else the whole cluster is read
     * and judged: a header that parses in a prefix of the cluster parses
     * the same in all of it, and only the whole one may refuse. */
    guint32 bits = n >= OFF_CLUSTER_BITS + 4 ? vml_be32(head + OFF_CLUSTER_BITS) : 0;
    gsize want = VML_QCOW2_V2_HEADER_LEN;
    if (bits >= VML_QCOW2_CLUSTER_BITS_MIN && bits <= VML_QCOW2_CLUSTER_BITS_MAX)
        want = MIN((guint64)1 << bits, MAX(file_size, VML_QCOW2_V2_HEADER_LEN));
    g_autoptr(GError) local = NULL;
    if ((gsize)n >= want || (gsize)n < sizeof(head)) {
        VmlQcow2Header *h = vml_qcow2_parse(head, MIN((gsize)n, want), file_size, &local);
        if (!h)
            g_set_error(error, VML_ERROR, local->code, "%s: %s", name, local->message);
        return remember_read(h, head, (gsize)n, file_size, st);
    }
    VmlQcow2Header *first = vml_qcow2_parse(head, (gsize)n, file_size, NULL);
    if (first)
        return remember_read(first, head, (gsize)n, file_size, st);
    g_autofree guint8 *buf = g_malloc(want);
    n = pread(fd, buf, want, 0);
    if (n < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: cannot read: %s", name,
                    g_strerror(errno));
        return NULL;
    }
    VmlQcow2Header *h = vml_qcow2_parse(buf, (gsize)n, file_size, &local);
    if (!h)
        g_set_error(error, VML_ERROR, local->code, "%s: %s", name, local->message);
    return remember_read(h, buf, (gsize)n, file_size, st);
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


/* ---- Rewriting the header in place ----
 *
 * qcow2 has one copy of its header, so a rewrite cannot be atomic; what it
 * can be is safe for the backing chain at every step, and undone when a
 * step fails. The plan is a list of steps, each a few pieces (runs of bytes
 * that differ from what the file holds; equal bytes are not written again,
 * so an unchanged page that is a hole stays one), with an fdatasync after
 * each step:
 *
 *  1. when the backing file name moves, a copy of it goes where neither the
 *     old nor the new header area reaches ("parked"; the name's new place
 *     itself when that lies past the old area), then the backing file
 *     offset alone is pointed at that copy. QEMU still reads the old
 *     extensions (up to their end marker) and the same backing file;
 *  2. everything after the backing file offset and size: the feature bits
 *     with the extensions, end marker and name, so that a reader sees the
 *     in-use bit and the owner extension come and go together;
 *  3. the backing file offset (and size), pointing at the name's new place;
 *  4. the parked copy, if it was not the name's new place, back to the
 *     bytes that were there.
 * Where the first cluster has no room for the copy, or no space can be
 * allocated for it, the name is rewritten in place with step 2.
 *
 * Before the first write every piece's bytes are allocated (fallocate,
 * or, where the file system has none, the old bytes written back), so a
 * full file system fails the rewrite while nothing has changed. A write or
 * fdatasync that fails later puts back the old bytes of every piece,
 * newest first, step by step. */

#define PIECE_GAP 512   /* this many equal bytes end a piece */
/* The fixed fields up to here (magic, version, backing file offset and
 * size) are written last: they say where the name is. */
#define POINTERS_END (OFF_BACKING_SIZE + 4)

typedef struct {
    gsize off;
    gsize len;
    guint8 *bytes;      /* the new bytes */
    guint8 *before;     /* what the file held there just before */
    gsize written;      /* how many of BYTES reached the file */
    gboolean step_end;  /* fdatasync after this piece */
} Piece;

static void
piece_clear(gpointer p)
{
    Piece *pc = p;
    g_free(pc->bytes);
    g_free(pc->before);
}

/* Add a step making [OFF, OFF + LEN) of CUR (the file as the plan has left
 * it) hold WANT. */
static void
plan_step(GArray *plan, guint8 *cur, gsize off, const guint8 *want, gsize len)
{
    guint first = plan->len;
    guint8 *at = cur + off;

    for (gsize i = 0; i < len;) {
        if (at[i] == want[i]) {
            i++;
            continue;
        }
        gsize end = i + 1;
        for (gsize j = end; j < len && j - end < PIECE_GAP; j++) {
            if (at[j] != want[j])
                end = j + 1;
        }
        Piece pc = { .off = off + i, .len = end - i };
        pc.before = g_memdup2(at + i, pc.len);
        pc.bytes = g_memdup2(want + i, pc.len);
        memcpy(at + i, want + i, pc.len);
        g_array_append_val(plan, pc);
        i = end;
    }
    if (plan->len > first)
        g_array_index(plan, Piece, plan->len - 1).step_end = TRUE;
}

/* pwrite all of BUF; 0 or an errno. *DONE counts the bytes that got there,
 * short writes included. */
static int
write_all(int fd, const guint8 *buf, gsize len, gsize off, gsize *done)
{
    *done = 0;
    while (*done < len) {
        ssize_t n = pwrite(fd, buf + *done, len - *done, (off_t)(off + *done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        *done += (gsize)n;
    }
    return 0;
}

static int
sync_fd(int fd)
{
    while (fdatasync(fd) < 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

static gboolean
no_fallocate(int err)
{
    return err == EOPNOTSUPP || err == ENOSYS || err == ENODEV || err == EINVAL;
}

/* Make sure writing [OFF, OFF + LEN) needs no new space: allocate it (and
 * unshare reflinked blocks where the file system can), or where fallocate
 * is not there write back OLD, the bytes the file holds, which changes
 * nothing even if it stops half-way. *MODE carries what worked between
 * calls (-1: no fallocate). 0 or an errno. */
static int
reserve(int fd, gsize off, gsize len, const guint8 *old, int *mode)
{
    while (*mode >= 0) {
        if (fallocate(fd, *mode, (off_t)off, (off_t)len) == 0)
            return 0;
        int err = errno;
        if (err == EINTR)
            continue;
        if (!no_fallocate(err))
            return err;
#ifdef FALLOC_FL_UNSHARE_RANGE
        if (*mode & FALLOC_FL_UNSHARE_RANGE) {
            *mode = FALLOC_FL_KEEP_SIZE;
            continue;
        }
#endif
        *mode = -1;
    }
    gsize done;
    return write_all(fd, old, len, off, &done);
}

/* Put back the old bytes of pieces [0, UPTO), newest first, an fdatasync
 * between steps. Stops at the first failure: every state on the way back
 * is one the way forward went through. 0 or an errno. */
static int
undo(int fd, GArray *plan, guint upto)
{
    gboolean dirty = FALSE;
    for (guint i = upto; i-- > 0;) {
        Piece *pc = &g_array_index(plan, Piece, i);
        if (pc->step_end && dirty) {
            int err = sync_fd(fd);
            if (err)
                return err;
            dirty = FALSE;
        }
        if (!pc->written)
            continue;
        gsize done;
        int err = write_all(fd, pc->before, pc->written, pc->off, &done);
        if (err)
            return err;
        dirty = TRUE;
    }
    return dirty ? sync_fd(fd) : 0;
}

/* ORIG[*GOT, UPTO) read from the file at the same offsets; *GOT = UPTO. */
static gboolean
read_upto(int fd, const char *name, guint8 *orig, gsize *got, gsize upto, GError **error)
{
    while (*got < upto) {
        ssize_t n = pread(fd, orig + *got, upto - *got, (off_t)*got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                        "%s: cannot read the qcow2 header before rewriting it: %s", name,
                        n < 0 ? g_strerror(errno) : "the file got shorter");
            return FALSE;
        }
        *got += (gsize)n;
    }
    return TRUE;
}

/* FD's size, and the device of its file system in *DEV and its block
 * size in *BLKSIZE (0: unknown). */
static guint64
fd_size(int fd, dev_t *dev, blksize_t *blksize)
{
    struct stat st;
    gboolean stated = fstat(fd, &st) == 0;
    *dev = stated ? st.st_dev : 0;
    *blksize = stated ? st.st_blksize : 0;
    if (stated && S_ISREG(st.st_mode))
        return (guint64)st.st_size;
    off_t end = lseek(fd, 0, SEEK_END);
    return end < 0 ? 0 : (guint64)end;
}

/* The steps of a rewrite from ORIG (the file's first SPAN bytes) to WANT
 * (TOTAL bytes; the backing file name of NAME_LEN bytes at NEW_OFF), the
 * name parked at PARK on the way (0: not). */
static GArray *
make_plan(const guint8 *orig, gsize span, const guint8 *want, gsize total, gsize name_len,
          guint64 new_off, gsize park)
{
    GArray *plan = g_array_new(FALSE, TRUE, sizeof(Piece));
    g_array_set_clear_func(plan, piece_clear);
    g_autofree guint8 *cur = g_memdup2(orig, span);
    if (park) {
        guint8 be[12];
        plan_step(plan, cur, park, want + new_off, name_len);
        vml_put_be64(be, park);
        vml_put_be32(be + 8, (guint32)name_len);
        plan_step(plan, cur, OFF_BACKING_OFFSET, be, sizeof(be));
    }
    plan_step(plan, cur, POINTERS_END, want + POINTERS_END, total - POINTERS_END);
    plan_step(plan, cur, 0, want, POINTERS_END);
    if (park && park != new_off)
        plan_step(plan, cur, park, orig + park, name_len);
    return plan;
}

/* File systems (by device) that refused FALLOC_FL_UNSHARE_RANGE: not
 * asked again (ext4 and tmpfs never have it; a refusal costs a syscall
 * per header rewrite). */
#define NO_UNSHARE_MAX 16
static struct {
    GMutex lock;
    dev_t devs[NO_UNSHARE_MAX];
    guint n;
} no_unshare;

static gboolean
unshare_refused(dev_t dev)
{
    gboolean found = FALSE;
    g_mutex_lock(&no_unshare.lock);
    for (guint i = 0; i < no_unshare.n && !found; i++)
        found = no_unshare.devs[i] == dev;
    g_mutex_unlock(&no_unshare.lock);
    return found;
}

static void
unshare_note_refused(dev_t dev)
{
    g_mutex_lock(&no_unshare.lock);
    if (no_unshare.n < NO_UNSHARE_MAX)
        no_unshare.devs[no_unshare.n++] = dev;
    g_mutex_unlock(&no_unshare.lock);
}

/* Reserve every piece of PLAN on the file system DEV (blocks of BLKSIZE
 * bytes; 0: unknown); NULL, or what failed. */
static char *
reserve_plan(int fd, dev_t dev, blksize_t blksize, GArray *plan, const guint8 *orig)
{
    int mode = FALLOC_FL_KEEP_SIZE;
    /* On a file system without shared (reflinked) blocks, the file's first
     * block is allocated in place (the magic is written there), so a piece
     * inside it needs no new space: no fallocate for it. */
    gsize first_block = 0;
#ifdef FALLOC_FL_UNSHARE_RANGE
    if (!unshare_refused(dev))
        mode |= FALLOC_FL_UNSHARE_RANGE;
    else
        first_block = blksize > 0 ? MIN((gsize)blksize, 4096) : 0;
#endif
    int asked = mode;
    for (guint i = 0; i < plan->len; i++) {
        const Piece *pc = &g_array_index(plan, Piece, i);
        if (pc->off + pc->len <= first_block)
            continue;
        int err = reserve(fd, pc->off, pc->len, orig + pc->off, &mode);
        if (err)
            return g_strdup_printf("no room for bytes %zu-%zu: %s", pc->off,
                                   pc->off + pc->len - 1, g_strerror(err));
    }
    if (mode != asked && mode >= 0)
        unshare_note_refused(dev);
    return NULL;
}

gboolean
vml_qcow2_write(int fd, const char *name, const VmlQcow2Header *h, GError **error)
{
    return vml_qcow2_write_synced(fd, name, h, VML_QCOW2_DURABLE, error);
}

static gboolean write_header(int fd, const char *name, const VmlQcow2Header *h,
                             VmlQcow2Sync sync, gboolean fresh, GError **error);

gboolean
vml_qcow2_write_synced(int fd, const char *name, const VmlQcow2Header *h, VmlQcow2Sync sync,
                       GError **error)
{
    return write_header(fd, name, h, sync, FALSE, error);
}

gboolean
vml_qcow2_write_fresh(int fd, const char *name, const VmlQcow2Header *h, VmlQcow2Sync sync,
                      GError **error)
{
    return write_header(fd, name, h, sync, TRUE, error);
}

static gboolean
write_header(int fd, const char *name, const VmlQcow2Header *h, VmlQcow2Sync sync,
             gboolean fresh, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GBytes) area = vml_qcow2_serialize(h, &local);
    if (!area) {
        g_set_error(error, VML_ERROR, local->code, "%s: %s", name, local->message);
        return FALSE;
    }
    /* The plan starts from what the file holds now, not from what H was
     * read from: the first cluster, parsed again. Its first page is read
     * first, the rest only when the header or the plan reach past it (a
     * header that parses in a prefix of the cluster parses the same in
     * all of it, as in vml_qcow2_read). */
    gsize known_len = 0;
    const guint8 *known = fresh && h->read_bytes ? g_bytes_get_data(h->read_bytes, &known_len)
                                                 : NULL;
    dev_t dev = known ? h->read_dev : 0;
    blksize_t blksize = known ? h->read_blksize : 0;
    guint64 size = known ? h->read_file_size : fd_size(fd, &dev, &blksize);
    gsize len = (gsize)MIN(h->cluster_size, size);
    g_autofree guint8 *orig = g_malloc(len);
    gsize got = 0;
    if (known) {
        got = MIN(known_len, len);
        memcpy(orig, known, got);
    } else if (!read_upto(fd, name, orig, &got, MIN(len, 4096), error)) {
        return FALSE;
    }
    g_autoptr(VmlQcow2Header) now = vml_qcow2_parse(orig, got, size, NULL);
    if (!now && got < len) {
        if (!read_upto(fd, name, orig, &got, len, error))
            return FALSE;
        now = vml_qcow2_parse(orig, got, size, &local);
    } else if (!now) {
        now = vml_qcow2_parse(orig, got, size, &local);
    }
    if (!now) {
        g_set_error(error, VML_ERROR, local->code,
                    "%s: cannot write the qcow2 header: it changed since it was read: %s",
                    name, local->message);
        return FALSE;
    }

    /* The new area, zero-filled over whatever the old one used. */
    gsize total = MAX(g_bytes_get_size(area), now->area_end);
    g_autofree guint8 *want = g_malloc0(total);
    memcpy(want, g_bytes_get_data(area, NULL), g_bytes_get_size(area));
    gsize name_len = h->backing_file ? h->backing_length : 0;
    guint64 new_off = vml_be64(want + OFF_BACKING_OFFSET);

    /* Where the backing file name waits while the extensions change: its
     * new place when that lies past the old area, else past both areas.
     * Only behind an end marker: without one, QEMU would go on to read
     * the old name as an extension once the offset points further. */
    gsize park = 0;
    if (name_len && now->backing_file && new_off != now->backing_offset && now->end_marker) {
        if (new_off >= now->area_end)
            park = (gsize)new_off;
        else if (align8(total) + name_len <= len)
            park = (gsize)align8(total);
    }
    gsize span = park ? MAX(total, park + name_len) : total;
    if (span > len) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "%s: cannot write the qcow2 header: its %zu bytes run past the end of "
                    "the file (%" G_GUINT64_FORMAT " bytes)", name, span, size);
        return FALSE;
    }
    if (span > got && !read_upto(fd, name, orig, &got, span, error))
        return FALSE;

    g_autoptr(GArray) plan = NULL;
    g_autofree char *no_room = NULL;
    for (;;) {
        plan = make_plan(orig, span, want, total, name_len, new_off, park);
        no_room = reserve_plan(fd, dev, blksize, plan, orig);
        if (!no_room)
            break;
        /* No room for the copy (in a hole, on a full file system): the
         * name is rewritten in place rather than fail a rewrite that
         * needs no new space. */
        if (!park || park == new_off)
            break;
        park = 0;
        g_clear_pointer(&plan, g_array_unref);
        g_clear_pointer(&no_room, g_free);
    }
    if (no_room) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "%s: cannot write the qcow2 header: %s (the header was not changed)",
                    name, no_room);
        return FALSE;
    }

    for (guint i = 0; i < plan->len; i++) {
        Piece *pc = &g_array_index(plan, Piece, i);
        int err = write_all(fd, pc->bytes, pc->len, pc->off, &pc->written);
        g_autofree char *what = NULL;
        if (err)
            what = g_strdup_printf("bytes %zu-%zu: %s", pc->off, pc->off + pc->len - 1,
                                   g_strerror(err));
        else if (pc->step_end && (i + 1 < plan->len || sync == VML_QCOW2_DURABLE) &&
                 (err = sync_fd(fd)))
            what = g_strdup_printf("fdatasync: %s", g_strerror(err));
        if (!what)
            continue;
        int undo_err = undo(fd, plan, i + 1);
        if (undo_err)
            g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                        "%s: cannot write the qcow2 header: %s; putting its old bytes back "
                        "failed too: %s (the header may be damaged: run qemu-img check)",
                        name, what, g_strerror(undo_err));
        else
            g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                        "%s: cannot write the qcow2 header: %s (its old bytes were put back)",
                        name, what);
        return FALSE;
    }
    /* Ordered: the last step reaches the disk with the kernel's writeback
     * or the next flush of the image, whichever comes first. */
    return TRUE;
}
