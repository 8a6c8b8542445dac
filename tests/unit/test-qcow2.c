/* The qcow2 header code against images the real qemu-img (7.2) wrote:
 * parsed, rewritten with our owner extension and back, refused when there
 * is no room, and the same headers with one lie each. Also the owner
 * extension's exact bytes. */
#include "vml-error.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"
#include "image-util.h"

#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *dir;

/* ---- helpers ---- */

static char *
img(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void G_GNUC_PRINTF(1, 2)
run(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    image_util_run(dir, cmd);
}

/* qemu-img create NAME in the test directory; SIZE may be "" when a
 * backing file gives it. */
static void
make_image(const char *name, const char *opts, const char *size)
{
    run("qemu-img create -q -f qcow2 %s %s %s", opts, name, size);
}

/* Run ARGV in the test directory; its exit status, -1 if it did not exit. */
static int
spawn(const char *const *argv, char **out)
{
    g_autoptr(GError) error = NULL;
    int status = 0;
    g_spawn_sync(dir, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, NULL,
                 &status, &error);
    g_assert_no_error(error);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `qemu-img info --output=json NAME`, parsed. */
static JsonObject *
qemu_img_info(const char *name)
{
    const char *const argv[] = { "qemu-img", "info", "--output=json", name, NULL };
    g_autofree char *out = NULL;
    g_assert_cmpint(spawn(argv, &out), ==, 0);
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    json_parser_load_from_data(parser, out, -1, &error);
    g_assert_no_error(error);
    JsonNode *root = json_parser_get_root(parser);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(root));
    return json_object_ref(json_node_get_object(root));
}

static int
qemu_img_check(const char *name)
{
    const char *const argv[] = { "qemu-img", "check", "-q", name, NULL };
    return spawn(argv, NULL);
}

static VmlQcow2Header *
read_header(const char *path, gboolean *not_qcow2, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    VmlQcow2Header *h = vml_qcow2_read(fd, path, not_qcow2, error);
    close(fd);
    return h;
}

/* A header that must parse. */
static VmlQcow2Header *
read_good_header(const char *path)
{
    gboolean not_qcow2 = TRUE;
    g_autoptr(GError) error = NULL;
    VmlQcow2Header *h = read_header(path, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_nonnull(h);
    g_assert_false(not_qcow2);
    return h;
}

/* Rewrite PATH's header from H; assert it worked. */
static void
write_header(const char *path, const VmlQcow2Header *h)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(GError) error = NULL;
    gboolean ok = vml_qcow2_write(fd, path, h, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_true(ok);
}

/* The first N bytes of PATH (its first cluster, in the tests). */
static GBytes *
read_head(const char *path, gsize n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint8 *buf = g_malloc0(n);
    g_assert_cmpint(pread(fd, buf, n, 0), ==, (ssize_t)n);
    close(fd);
    return g_bytes_new_take(buf, n);
}

static GBytes *
read_whole(const char *path)
{
    char *data = NULL;
    gsize n = 0;
    g_assert_true(g_file_get_contents(path, &data, &n, NULL));
    return g_bytes_new_take(data, n);
}

static void
assert_bytes_equal(GBytes *a, GBytes *b)
{
    gsize na, nb;
    const guint8 *pa = g_bytes_get_data(a, &na);
    const guint8 *pb = g_bytes_get_data(b, &nb);
    g_assert_cmpuint(na, ==, nb);
    for (gsize i = 0; i < na; i++) {
        if (pa[i] != pb[i])
            g_error("bytes differ first at offset %zu: 0x%02x, 0x%02x", i, pa[i], pb[i]);
    }
}

/* H's extensions are exactly TYPES (0-terminated), in that order. */
static void
assert_ext_types(const VmlQcow2Header *h, const guint32 *types)
{
    guint n = 0;
    while (types[n])
        n++;
    g_assert_cmpuint(h->extensions->len, ==, n);
    for (guint i = 0; i < n; i++) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        g_assert_cmphex(e->type, ==, types[i]);
    }
}

/* A and B hold the same extensions (type, bytes, order), ignoring SKIP. */
static void
assert_same_exts(const VmlQcow2Header *a, const VmlQcow2Header *b, guint32 skip)
{
    guint i = 0, j = 0;
    for (;;) {
        while (i < a->extensions->len && ((VmlQcow2Ext *)a->extensions->pdata[i])->type == skip)
            i++;
        while (j < b->extensions->len && ((VmlQcow2Ext *)b->extensions->pdata[j])->type == skip)
            j++;
        if (i == a->extensions->len || j == b->extensions->len)
            break;
        const VmlQcow2Ext *ea = a->extensions->pdata[i++];
        const VmlQcow2Ext *eb = b->extensions->pdata[j++];
        g_assert_cmphex(ea->type, ==, eb->type);
        g_assert_true(g_bytes_equal(ea->data, eb->data));
    }
    g_assert_cmpuint(i, ==, a->extensions->len);
    g_assert_cmpuint(j, ==, b->extensions->len);
}

static void
assert_message(const GError *error, const char *says, const char *what)
{
    if (!strstr(error->message, says))
        g_error("%s: expected '%s' in: %s", what, says, error->message);
}

/* An owner with every field set (the values of /image-owner/exact-bytes). */
static const VmlImageOwner sample_owner = {
    .version = 1, .pid = 4242, .start_time = 123456789, .time_set = 1700000000,
    .generation = 7,
    .uuid = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
    .machine_id = (char *)"a1b2c3d4e5f60718293a4b5c6d7e8f90",
    .boot_id = (char *)"0f9e8d7c-6b5a-4938-2716-05f4e3d2c1b0",
    .hostname = (char *)"host-a",
    .program = (char *)"qemu-system-x86_64",
    .name = (char *)"vm-a",
};
#define SAMPLE_OWNER_LEN (80 + 1 + 6 + 1 + 18 + 1 + 4)

/* ---- /qcow2/parse-real-images ---- */

static void
test_parse_real_images(void)
{
    static const guint32 no_ext[] = { 0 };
    static const guint32 features[] = { VML_QCOW2_EXT_FEATURE_TABLE, 0 };
    static const guint32 backed[] = { VML_QCOW2_EXT_BACKING_FORMAT, VML_QCOW2_EXT_FEATURE_TABLE, 0 };
    /* extensions_end and area_end follow from QEMU's layout: extensions
     * from header_length, each padded to 8, an 8-byte end marker, then the
     * backing file name. The feature name table is 8 entries of 48. */
    static const struct {
        const char *name, *opts, *size;
        guint64 virtual_size;
        guint32 version, cluster_bits, header_length;
        guint64 compat;
        const char *backing, *backing_format;
        const guint32 *exts;
        guint64 extensions_end, area_end;
    } images[] = {
        { "v2.qcow2", "-o compat=0.10", "1M", 1 << 20, 2, 16, 72, 0, NULL, NULL,
          no_ext, 80, 80 },
        { "v3.qcow2", "", "16M", 16 << 20, 3, 16, 112, 0, NULL, NULL,
          features, 112 + 8 + 384 + 8, 512 },
        { "top.qcow2", "-b v3.qcow2 -F qcow2", "", 16 << 20, 3, 16, 112, 0, "v3.qcow2", "qcow2",
          backed, 112 + 16 + 8 + 384 + 8, 528 + strlen("v3.qcow2") },
        { "c512.qcow2", "-o cluster_size=512", "1M", 1 << 20, 3, 9, 112, 0, NULL, NULL,
          no_ext, 120, 120 },
        { "c2m.qcow2", "-o cluster_size=2M", "64M", 64 << 20, 3, 21, 112, 0, NULL, NULL,
          features, 512, 512 },
        { "lazy.qcow2", "-o lazy_refcounts=on", "3M", 3 << 20, 3, 16, 112,
          VML_QCOW2_COMPAT_LAZY_REFCOUNTS, NULL, NULL, features, 512, 512 },
    };
    g_autoptr(GBytes) feature_table = NULL;

    for (guint i = 0; i < G_N_ELEMENTS(images); i++) {
        make_image(images[i].name, images[i].opts, images[i].size);
        g_test_message("image %s", images[i].name);
        g_autofree char *path = img(images[i].name);
        g_autoptr(VmlQcow2Header) h = read_good_header(path);
        g_assert_cmpuint(h->version, ==, images[i].version);
        g_assert_cmpuint(h->cluster_bits, ==, images[i].cluster_bits);
        g_assert_cmpuint(h->cluster_size, ==, G_GUINT64_CONSTANT(1) << images[i].cluster_bits);
        g_assert_cmpuint(h->virtual_size, ==, images[i].virtual_size);
        g_assert_cmpuint(h->header_length, ==, images[i].header_length);
        g_assert_cmpuint(g_bytes_get_size(h->fixed), ==, images[i].header_length);
        g_assert_cmpuint(h->crypt_method, ==, 0);
        g_assert_cmpuint(h->refcount_order, ==, 4);
        g_assert_cmphex(h->incompatible_features, ==, 0);
        g_assert_cmphex(h->compatible_features, ==, images[i].compat);
        g_assert_cmphex(h->autoclear_features, ==, 0);
        g_assert_cmpstr(h->backing_file, ==, images[i].backing);
        g_assert_cmpstr(h->backing_format, ==, images[i].backing_format);
        if (images[i].backing) {
            g_assert_cmpuint(h->backing_length, ==, strlen(images[i].backing));
            g_assert_cmpuint(h->backing_offset, ==, images[i].extensions_end);
        } else {
            g_assert_cmpuint(h->backing_offset, ==, 0);
            g_assert_cmpuint(h->backing_length, ==, 0);
        }
        assert_ext_types(h, images[i].exts);
        g_assert_true(h->end_marker);
        g_assert_cmpuint(h->extensions_end, ==, images[i].extensions_end);
        g_assert_cmpuint(h->area_end, ==, images[i].area_end);
        g_assert_null(h->read_only_reason);

        /* Extensions are laid end to end from the header's end. */
        guint64 off = h->header_length;
        for (guint k = 0; k < h->extensions->len; k++) {
            const VmlQcow2Ext *e = h->extensions->pdata[k];
            g_assert_cmpuint(e->offset, ==, off);
            off += 8 + ((g_bytes_get_size(e->data) + 7) & ~(gsize)7);
        }
        const VmlQcow2Ext *bf = vml_qcow2_find_ext(h, VML_QCOW2_EXT_BACKING_FORMAT);
        if (bf)
            g_assert_cmpmem(g_bytes_get_data(bf->data, NULL), g_bytes_get_size(bf->data),
                            "qcow2", 5);
        /* QEMU's feature name table: the same in every image that has it,
         * 384 bytes, starting with incompatible bit 0, "dirty bit". */
        const VmlQcow2Ext *ft = vml_qcow2_find_ext(h, VML_QCOW2_EXT_FEATURE_TABLE);
        if (ft) {
            const guint8 *p = g_bytes_get_data(ft->data, NULL);
            g_assert_cmpuint(g_bytes_get_size(ft->data), ==, 384);
            g_assert_cmpmem(p, 11, "\0\0dirty bit", 11);
            if (!feature_table)
                feature_table = g_bytes_ref(ft->data);
            g_assert_true(g_bytes_equal(feature_table, ft->data));
        }

        /* What QEMU itself reads from the same file. */
        g_autoptr(JsonObject) info = qemu_img_info(images[i].name);
        g_assert_cmpstr(json_object_get_string_member(info, "format"), ==, "qcow2");
        g_assert_cmpint(json_object_get_int_member(info, "virtual-size"), ==,
                        (gint64)h->virtual_size);
        g_assert_cmpint(json_object_get_int_member(info, "cluster-size"), ==,
                        (gint64)h->cluster_size);
        g_assert_cmpstr(json_object_get_string_member_with_default(info, "backing-filename", NULL),
                        ==, h->backing_file);
        g_assert_cmpstr(json_object_get_string_member_with_default(info,
                            "backing-filename-format", NULL), ==, h->backing_format);
        JsonObject *data = json_object_get_object_member(
            json_object_get_object_member(info, "format-specific"), "data");
        g_assert_cmpstr(json_object_get_string_member(data, "compat"), ==,
                        h->version == 2 ? "0.10" : "1.1");
        g_assert_cmpint(json_object_get_int_member(data, "refcount-bits"), ==,
                        1 << h->refcount_order);
        if (h->version == 3)
            g_assert_cmpint(json_object_get_boolean_member(data, "lazy-refcounts"), ==,
                            !!(h->compatible_features & VML_QCOW2_COMPAT_LAZY_REFCOUNTS));
    }
    g_assert_nonnull(feature_table);
}

/* ---- /qcow2/not-qcow2 ---- */

static void
test_not_qcow2(void)
{
    run("qemu-img create -q -f raw disk.raw 1M && : > empty && printf QFI > three");
    const char *const names[] = { "disk.raw", "empty", "three" };
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *path = img(names[i]);
        gboolean not_qcow2 = FALSE;
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
        g_assert_no_error(error);
        g_assert_null(h);
        g_assert_true(not_qcow2);
    }
}

/* ---- /qcow2/rewrite-roundtrip ---- */

static void
test_rewrite_roundtrip(void)
{
    make_image("rt-base.qcow2", "", "8M");
    make_image("rt.qcow2", "-b rt-base.qcow2 -F qcow2", "");
    g_autofree char *path = img("rt.qcow2");
    g_autoptr(GBytes) pristine = read_head(path, 65536);
    g_autoptr(VmlQcow2Header) orig = read_good_header(path);
    g_assert_cmpuint(orig->area_end, ==, 528 + strlen("rt-base.qcow2"));

    /* Take: the in-use bit and our extension, appended after QEMU's. */
    g_autoptr(VmlQcow2Header) h = read_good_header(path);
    g_autoptr(GBytes) owner = vml_image_owner_encode(&sample_owner);
    g_assert_cmpuint(g_bytes_get_size(owner), ==, SAMPLE_OWNER_LEN);
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, owner);
    write_header(path, h);

    g_autoptr(VmlQcow2Header) held = read_good_header(path);
    g_assert_cmphex(held->compatible_features, ==, VML_QCOW2_COMPAT_IN_USE);
    g_assert_cmphex(held->incompatible_features, ==, 0);
    const VmlQcow2Ext *e = vml_qcow2_find_ext(held, VML_QCOW2_EXT_OWNER);
    g_assert_nonnull(e);
    g_assert_true(g_bytes_equal(e->data, owner));
    /* After the feature table (which ends at 520), padded to 112 bytes;
     * then the end marker, then the name. */
    g_assert_cmpuint(e->offset, ==, 520);
    g_assert_cmpuint(held->backing_offset, ==, 520 + 8 + 112 + 8);
    g_assert_cmpstr(held->backing_file, ==, orig->backing_file);
    g_assert_cmpstr(held->backing_format, ==, orig->backing_format);
    g_assert_cmpuint(held->backing_length, ==, orig->backing_length);
    g_assert_true(held->end_marker);
    g_assert_cmphex(((VmlQcow2Ext *)held->extensions->pdata[held->extensions->len - 1])->type,
                    ==, VML_QCOW2_EXT_OWNER);
    assert_same_exts(orig, held, VML_QCOW2_EXT_OWNER);
    g_assert_cmpuint(held->extensions->len, ==, orig->extensions->len + 1);
    /* The fixed header changed only in the compatible bits and the
     * backing file offset. */
    {
        g_autoptr(GBytes) now = read_head(path, 65536);
        const guint8 *a = g_bytes_get_data(pristine, NULL), *b = g_bytes_get_data(now, NULL);
        for (guint i = 0; i < 112; i++) {
            if ((i >= 8 && i < 16) || (i >= 80 && i < 88))
                continue;
            g_assert_cmphex(a[i], ==, b[i]);
        }
        g_assert_cmphex(b[87], ==, 2);
    }
    /* The owner decodes back. */
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlImageOwner) back = vml_image_owner_decode(e->data, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(back->pid, ==, 4242);
    g_assert_cmpstr(back->name, ==, "vm-a");
    /* QEMU still finds its backing file and a clean image. */
    g_assert_cmpint(qemu_img_check("rt.qcow2"), ==, 0);
    g_autoptr(JsonObject) info = qemu_img_info("rt.qcow2");
    g_assert_cmpstr(json_object_get_string_member(info, "backing-filename"), ==, "rt-base.qcow2");
    g_assert_cmpstr(json_object_get_string_member(info, "backing-filename-format"), ==, "qcow2");

    /* A new generation while held replaces the extension in place. */
    VmlImageOwner next = sample_owner;
    next.generation = 8;
    g_autoptr(GBytes) owner8 = vml_image_owner_encode(&next);
    vml_qcow2_set_ext(held, VML_QCOW2_EXT_OWNER, owner8);
    write_header(path, held);
    vml_qcow2_header_free(held);
    held = read_good_header(path);
    g_assert_cmpuint(held->extensions->len, ==, orig->extensions->len + 1);
    e = vml_qcow2_find_ext(held, VML_QCOW2_EXT_OWNER);
    g_assert_cmpuint(e->offset, ==, 520);
    g_assert_true(g_bytes_equal(e->data, owner8));
    assert_same_exts(orig, held, VML_QCOW2_EXT_OWNER);

    /* Removing keeps the others in order (in memory only). */
    {
        g_autoptr(VmlQcow2Header) copy = read_good_header(path);
        static const guint32 rest[] = { VML_QCOW2_EXT_FEATURE_TABLE, VML_QCOW2_EXT_OWNER, 0 };
        g_assert_true(vml_qcow2_remove_ext(copy, VML_QCOW2_EXT_BACKING_FORMAT));
        assert_ext_types(copy, rest);
    }

    /* Release: everything back as qemu-img made it, byte for byte. The
     * serializer zero-fills the old (longer) area, which QEMU had left
     * zero too. */
    g_assert_true(vml_qcow2_remove_ext(held, VML_QCOW2_EXT_OWNER));
    g_assert_false(vml_qcow2_remove_ext(held, VML_QCOW2_EXT_OWNER));
    held->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
    write_header(path, held);
    g_autoptr(GBytes) after = read_head(path, 65536);
    assert_bytes_equal(pristine, after);
    g_assert_cmpint(qemu_img_check("rt.qcow2"), ==, 0);
}

/* ---- /qcow2/no-room ---- */

static void
test_no_room(void)
{
    /* A 300-byte backing name: two 140-byte directories and an 18-byte
     * file name (each component below NAME_MAX). */
    g_autofree char *d = g_strnfill(140, 'd');
    g_autofree char *backing = g_strdup_printf("%s/%s/base-0123456.qcow2", d, d);
    g_assert_cmpuint(strlen(backing), ==, 300);
    run("mkdir -p %s/%s", d, d);
    make_image(backing, "", "1M");
    g_autofree char *opts = g_strdup_printf("-o cluster_size=512 -b %s -F qcow2", backing);
    make_image("tight.qcow2", opts, "");
    g_autofree char *path = img("tight.qcow2");
    g_autoptr(GBytes) before = read_whole(path);

    g_autoptr(VmlQcow2Header) h = read_good_header(path);
    g_assert_cmpuint(h->cluster_size, ==, 512);
    g_assert_cmpstr(h->backing_file, ==, backing);
    /* Fits as it is: 112 + 16 (format) + 8 (end) + 300. */
    g_assert_cmpuint(h->area_end, ==, 436);
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) same = vml_qcow2_serialize(h, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(g_bytes_get_size(same), ==, 436);

    /* With the owner it would take 436 + 8 + 112 bytes. */
    g_autoptr(GBytes) owner = vml_image_owner_encode(&sample_owner);
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, owner);
    g_autoptr(GBytes) area = vml_qcow2_serialize(h, &error);
    g_assert_null(area);
    g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
    g_assert_cmpstr(error->message, ==, "the qcow2 header would grow to 556 bytes, "
                    "past its first cluster (512 bytes)");
    g_clear_error(&error);

    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean ok = vml_qcow2_write(fd, "tight.qcow2", h, &error);
    close(fd);
    g_assert_false(ok);
    g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
    assert_message(error, "tight.qcow2: the qcow2 header would grow", "write");
    assert_message(error, "past its first cluster", "write");
    g_autoptr(GBytes) after = read_whole(path);
    assert_bytes_equal(before, after);
}

/* ---- /qcow2/hostile-headers ---- */

typedef struct {
    off_t offset;
    guint64 value;
    int width;      /* 0 ends the list */
} Poke;

static void
test_hostile_headers(void)
{
    /* The pristine layout the offsets below rely on, checked first:
     * fixed header 0..111, backing format extension at 112 ("qcow2" at
     * 120), feature name table at 128 (384 bytes, to 520), end marker at
     * 520, backing name "hb.qcow2" at 528; clusters of 64K; the
     * file is 196616 bytes. */
    static const struct {
        Poke pokes[3];
        off_t truncate;   /* 0: keep the length */
        const char *says;
    } lies[] = {
        { { { 4, 7, 4 } }, 0, "unsupported version 7" },
        { { { 4, 1, 4 } }, 0, "unsupported version 1" },
        { { { 20, 8, 4 } }, 0, "cluster_bits 8 outside 9..21" },
        { { { 20, 22, 4 } }, 0, "cluster_bits 22 outside 9..21" },
        { { { 100, 100, 4 } }, 0, "header_length 100 outside 104..65536" },
        { { { 100, 65537, 4 } }, 0, "header_length 65537 outside 104..65536" },
        { { { 96, 7, 4 } }, 0, "refcount_order 7 above 6" },
        { { { 32, 3, 4 } }, 0, "unknown encryption method 3" },
        { { { 72, 8, 8 }, { 100, 104, 4 } }, 0, "compression type flagged but header_length is 104" },
        { { { 56, 0, 4 } }, 0, "refcount table has no clusters" },
        { { { 48, 0, 8 } }, 0,
          "refcount table offset 0 is not a cluster boundary after the header cluster" },
        { { { 48, 512, 8 } }, 0, "refcount table offset 512 is not a cluster boundary" },
        { { { 48, 65537, 8 } }, 0, "refcount table offset 65537 is not a cluster boundary" },
        { { { 48, 262144, 8 } }, 0,
          "refcount table offset 262144 lies past the end of the file (196616 bytes)" },
        { { { 40, 4096, 8 } }, 0, "L1 table offset 4096 is not a cluster boundary" },
        { { { 40, 0, 8 } }, 0, "L1 table offset 0 is not a cluster boundary" },
        { { { 60, 1, 4 }, { 64, 0, 8 } }, 0, "snapshot table offset 0 is not a cluster boundary" },
        { { { 60, 1, 4 }, { 64, 4096, 8 } }, 0,
          "snapshot table offset 4096 is not a cluster boundary" },
        { { { 16, 1024, 4 } }, 0, "backing file name of 1024 bytes (at most 1023)" },
        { { { 8, 40, 8 } }, 0, "backing file name at offset 40 overlaps the header or its "
          "extensions (which end at 112)" },
        /* Inside the format extension's padding: the extensions end at 128. */
        { { { 8, 126, 8 } }, 0, "backing file name at offset 126 overlaps the header or its "
          "extensions (which end at 128)" },
        { { { 8, 65530, 8 } }, 0,
          "backing file name at offset 65530 (8 bytes) runs past the first cluster" },
        { { { 530, 0, 1 } }, 0, "backing file name holds a NUL byte or invalid UTF-8" },
        { { { 530, 0xff, 1 } }, 0, "backing file name holds a NUL byte or invalid UTF-8" },
        /* The name cuts into the feature table. */
        { { { 8, 300, 8 } }, 0,
          "header extension 0x6803f857 at offset 128 is 384 bytes long, past the header area" },
        { { { 116, 60000, 4 } }, 0,
          "header extension 0xe2792aca at offset 112 is 60000 bytes long, past the header area" },
        { { { 128, VML_QCOW2_EXT_BACKING_FORMAT, 4 } }, 0, "two backing format extensions" },
        { { { 116, 16, 4 } }, 0, "backing format extension of 16 bytes is not a format name" },
        { { { 116, 0, 4 } }, 0, "backing format extension of 0 bytes is not a format name" },
        { { { 121, 0x01, 1 } }, 0, "backing format extension of 5 bytes is not a format name" },
        { { { 112, VML_QCOW2_EXT_OWNER, 4 }, { 128, VML_QCOW2_EXT_OWNER, 4 } }, 0,
          "two vmlease owner extensions" },
        { { { 0 } }, 50, "50 bytes, shorter than the 72-byte header" },
        { { { 0 } }, 100, "100 bytes, shorter than the 104-byte version 3 header" },
        { { { 0 } }, 110, "header_length 112 runs past the end of the file (110 bytes)" },
    };

    make_image("hb.qcow2", "", "4M");
    make_image("hostile.qcow2", "-b hb.qcow2 -F qcow2", "");
    g_autofree char *pristine = img("hostile.qcow2");
    {
        g_autoptr(VmlQcow2Header) h = read_good_header(pristine);
        static const guint32 types[] = { VML_QCOW2_EXT_BACKING_FORMAT,
                                         VML_QCOW2_EXT_FEATURE_TABLE, 0 };
        assert_ext_types(h, types);
        g_assert_cmpuint(((VmlQcow2Ext *)h->extensions->pdata[1])->offset, ==, 128);
        g_assert_cmpuint(h->backing_offset, ==, 528);
        g_assert_cmpuint(h->backing_length, ==, 8);
        g_assert_cmpuint(h->cluster_size, ==, 65536);
        struct stat st;
        g_assert_cmpint(stat(pristine, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, 196616);
    }

    for (guint i = 0; i < G_N_ELEMENTS(lies); i++) {
        g_autofree char *name = g_strdup_printf("lie%u.qcow2", i);
        g_autofree char *path = img(name);
        run("cp hostile.qcow2 %s", name);
        for (guint k = 0; k < G_N_ELEMENTS(lies[i].pokes) && lies[i].pokes[k].width; k++)
            image_util_poke(path, lies[i].pokes[k].offset, lies[i].pokes[k].value,
                            lies[i].pokes[k].width);
        if (lies[i].truncate)
            g_assert_cmpint(truncate(path, lies[i].truncate), ==, 0);
        gboolean not_qcow2 = TRUE;
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
        if (h)
            g_error("lie %u (%s) parsed", i, lies[i].says);
        g_assert_false(not_qcow2);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        /* Errors name the file and say what is wrong. */
        g_autofree char *prefix = g_strdup_printf("%s: invalid qcow2 header: ", path);
        g_assert_true(g_str_has_prefix(error->message, prefix));
        g_autofree char *what = g_strdup_printf("lie %u", i);
        assert_message(error, lies[i].says, what);
    }

    /* Past the end of what the caller read (vml_qcow2_parse given fewer
     * bytes than the file has): refused, not read beyond. */
    g_autoptr(GBytes) head = read_head(pristine, 65536);
    const guint8 *buf = g_bytes_get_data(head, NULL);
    static const struct { gsize len; const char *says; } short_reads[] = {
        { 124, "header extension 0xe2792aca at offset 112 runs past the end of the file" },
        { 300, "header extension 0x6803f857 at offset 128 runs past the end of the file" },
        { 520, "header extension at offset 520 runs past the end of the file" },
        { 530, "backing file name runs past the end of the file" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(short_reads); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlQcow2Header) h = vml_qcow2_parse(buf, short_reads[i].len, 196616, &error);
        g_assert_null(h);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        g_autofree char *what = g_strdup_printf("short read %u", i);
        assert_message(error, short_reads[i].says, what);
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) whole = vml_qcow2_parse(buf, 536, 196616, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(whole->backing_file, ==, "hb.qcow2");

    /* A printable format name of 16 bytes is one too many (QEMU keeps it
     * in 16 bytes with the NUL); 15 is fine. With 512-byte clusters there
     * is no feature table: the format data may fill 120..135 up to the
     * backing name at 136 (then without an end marker, as QEMU allows). */
    make_image("fmt.qcow2", "-o cluster_size=512 -b hb.qcow2 -F qcow2", "");
    for (guint len = 15; len <= 16; len++) {
        g_autofree char *name = g_strdup_printf("fmt%u.qcow2", len);
        g_autofree char *path = img(name);
        run("cp fmt.qcow2 %s", name);
        image_util_poke(path, 116, len, 4);
        image_util_poke(path, 120, 0x6162636465666768, 8);   /* "abcdefgh" */
        image_util_poke(path, 128, len == 16 ? 0x696a6b6c6d6e6f70 : 0x696a6b6c6d6e6f00, 8);
        gboolean not_qcow2;
        g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
        if (len == 15) {
            g_assert_no_error(error);
            g_assert_cmpstr(h->backing_format, ==, "abcdefghijklmno");
            g_assert_cmpstr(h->backing_file, ==, "hb.qcow2");
            g_assert_false(h->end_marker);
            g_assert_cmpuint(h->extensions_end, ==, 136);
        } else {
            g_assert_null(h);
            g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
            assert_message(error, "backing format extension of 16 bytes is not a format name",
                           "printable 16-byte format");
            g_clear_error(&error);
        }
    }
}

/* Headers that parse but must not be written back. */
static void
test_read_only_headers(void)
{
    static const struct { guint64 incompat; const char *reason; } cases[] = {
        { G_GUINT64_CONSTANT(1) << 40, "unknown incompatible feature bits 0x10000000000" },
        { VML_QCOW2_INCOMPAT_CORRUPT, "the image is marked corrupt" },
        /* Unknown bits win over corrupt. */
        { (G_GUINT64_CONSTANT(1) << 40) | (G_GUINT64_CONSTANT(1) << 5) | VML_QCOW2_INCOMPAT_CORRUPT,
          "unknown incompatible feature bits 0x10000000020" },
    };
    make_image("ro-base.qcow2", "", "1M");
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *name = g_strdup_printf("ro%u.qcow2", i);
        make_image(name, "-b ro-base.qcow2 -F qcow2", "");
        g_autofree char *path = img(name);
        image_util_poke(path, 72, cases[i].incompat, 8);
        g_autoptr(GBytes) before = read_whole(path);

        g_autoptr(VmlQcow2Header) h = read_good_header(path);
        g_assert_cmphex(h->incompatible_features, ==, cases[i].incompat);
        g_assert_cmpstr(h->read_only_reason, ==, cases[i].reason);
        g_assert_cmpstr(h->backing_file, ==, "ro-base.qcow2");

        g_autoptr(GError) error = NULL;
        g_autoptr(GBytes) area = vml_qcow2_serialize(h, &error);
        g_assert_null(area);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        g_autofree char *says = g_strdup_printf("will not rewrite the qcow2 header: %s",
                                                cases[i].reason);
        g_assert_cmpstr(error->message, ==, says);
        g_clear_error(&error);

        int fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
        g_assert_false(vml_qcow2_write(fd, name, h, &error));
        close(fd);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        g_autoptr(GBytes) after = read_whole(path);
        assert_bytes_equal(before, after);
    }

    /* Known bits that are no reason to refuse: dirty, and compression
     * (zlib here) with a header long enough to say which. */
    make_image("dirty.qcow2", "", "1M");
    g_autofree char *dirty = img("dirty.qcow2");
    image_util_poke(dirty, 72, VML_QCOW2_INCOMPAT_DIRTY | VML_QCOW2_INCOMPAT_COMPRESSION, 8);
    g_autoptr(VmlQcow2Header) h = read_good_header(dirty);
    g_assert_null(h->read_only_reason);
}

/* ---- /image-owner/exact-bytes ---- */

static void
test_owner_exact_bytes(void)
{
    static const guint8 want[] = {
        0x00, 0x00, 0x00, 0x01,                          /* layout version 1 */
        0x00, 0x00, 0x10, 0x92,                          /* pid 4242 */
        0x00, 0x00, 0x00, 0x00, 0x07, 0x5b, 0xcd, 0x15,  /* start time 123456789 */
        0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00,  /* time set 1700000000 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,  /* generation 7 */
        0x6f, 0x1e, 0x5a, 0x2c, 0x0d, 0x3b, 0x4c, 0x8e,  /* uuid */
        0x9a, 0x7f, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60,
        0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18,  /* machine-id */
        0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f, 0x90,
        0x0f, 0x9e, 0x8d, 0x7c, 0x6b, 0x5a, 0x49, 0x38,  /* boot-id */
        0x27, 0x16, 0x05, 0xf4, 0xe3, 0xd2, 0xc1, 0xb0,
        6, 'h', 'o', 's', 't', '-', 'a',
        18, 'q', 'e', 'm', 'u', '-', 's', 'y', 's', 't', 'e', 'm', '-',
            'x', '8', '6', '_', '6', '4',
        4, 'v', 'm', '-', 'a',
    };
    G_STATIC_ASSERT(sizeof(want) == SAMPLE_OWNER_LEN);
    const VmlImageOwner *o = &sample_owner;
    g_autoptr(GBytes) got = vml_image_owner_encode(o);
    g_assert_cmpmem(g_bytes_get_data(got, NULL), g_bytes_get_size(got), want, sizeof(want));

    g_autoptr(GError) error = NULL;
    g_autoptr(VmlImageOwner) back = vml_image_owner_decode(got, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(back->version, ==, 1);
    g_assert_cmpuint(back->pid, ==, 4242);
    g_assert_cmpuint(back->start_time, ==, 123456789);
    g_assert_cmpint(back->time_set, ==, 1700000000);
    g_assert_cmpuint(back->generation, ==, 7);
    g_assert_cmpstr(back->uuid, ==, o->uuid);
    g_assert_cmpstr(back->machine_id, ==, o->machine_id);
    g_assert_cmpstr(back->boot_id, ==, o->boot_id);
    g_assert_cmpstr(back->hostname, ==, "host-a");
    g_assert_cmpstr(back->program, ==, "qemu-system-x86_64");
    g_assert_cmpstr(back->name, ==, "vm-a");

    /* Ids that do not parse are zeros, and zeros read back as "". Ids are
     * read case-blind with dashes anywhere. */
    static const struct { const char *text, *uuid, *machine_id; } ids[] = {
        { "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f6", "", "" },       /* 31 digits */
        { "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f600", "", "" },     /* 33 digits */
        { "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f6g", "", "" },      /* not hex */
        { "", "", "" },
        { NULL, "", "" },
        { "6F1E5A2C0D3B4C8E9A7F1B2C3D4E5F60", "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
          "6f1e5a2c0d3b4c8e9a7f1b2c3d4e5f60" },
        { "-6f-1e5a2c0d3b4c8e9a7f1b2c3d4e5f60-", "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
          "6f1e5a2c0d3b4c8e9a7f1b2c3d4e5f60" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(ids); i++) {
        VmlImageOwner b = sample_owner;
        b.uuid = b.machine_id = b.boot_id = (char *)ids[i].text;
        g_autoptr(GBytes) enc = vml_image_owner_encode(&b);
        const guint8 *p = g_bytes_get_data(enc, NULL);
        g_assert_cmpuint(g_bytes_get_size(enc), ==, sizeof(want));
        if (!*ids[i].uuid) {
            static const guint8 zeros[48] = { 0 };
            g_assert_cmpmem(p + 32, 48, zeros, 48);
        } else {
            for (int k = 0; k < 3; k++)
                g_assert_cmpmem(p + 32 + 16 * k, 16, want + 32, 16);
        }
        g_autoptr(VmlImageOwner) d = vml_image_owner_decode(enc, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(d->uuid, ==, ids[i].uuid);
        g_assert_cmpstr(d->boot_id, ==, ids[i].uuid);
        g_assert_cmpstr(d->machine_id, ==, ids[i].machine_id);
    }

    /* Missing strings are stored empty. */
    {
        VmlImageOwner b = sample_owner;
        b.hostname = b.program = b.name = NULL;
        g_autoptr(GBytes) enc = vml_image_owner_encode(&b);
        guint8 expect[80 + 3] = { 0 };
        memcpy(expect, want, 80);
        g_assert_cmpmem(g_bytes_get_data(enc, NULL), g_bytes_get_size(enc),
                        expect, sizeof(expect));
        g_autoptr(VmlImageOwner) d = vml_image_owner_decode(enc, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(d->hostname, ==, "");
        g_assert_cmpstr(d->program, ==, "");
        g_assert_cmpstr(d->name, ==, "");
    }

    /* Long UTF-8 strings are cut at a character boundary at or below 255
     * bytes: 2-byte é, 3-byte €, and "a" then 4-byte emoji. */
    static const struct { const char *unit; const char *lead; guint count; gsize cut; } longs[] = {
        { "\xc3\xa9", "", 150, 254 },
        { "\xe2\x82\xac", "", 100, 255 },
        { "\xf0\x9f\x98\x80", "a", 75, 253 },
        { "x", "", 255, 255 },
        { "x", "", 300, 255 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(longs); i++) {
        g_autoptr(GString) s = g_string_new(longs[i].lead);
        for (guint k = 0; k < longs[i].count; k++)
            g_string_append(s, longs[i].unit);
        VmlImageOwner b = sample_owner;
        b.name = s->str;
        g_autoptr(GBytes) enc = vml_image_owner_encode(&b);
        const guint8 *p = g_bytes_get_data(enc, NULL);
        gsize name_at = 80 + 7 + 19;
        g_assert_cmpuint(p[name_at], ==, longs[i].cut);
        g_assert_cmpuint(g_bytes_get_size(enc), ==, name_at + 1 + longs[i].cut);
        g_autoptr(VmlImageOwner) d = vml_image_owner_decode(enc, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(strlen(d->name), ==, longs[i].cut);
        g_assert_true(g_utf8_validate(d->name, -1, NULL));
        g_assert_true(g_str_has_prefix(s->str, d->name));
    }

    /* Broken encodings. */
    static const struct { gsize len; gsize at; guint8 value; const char *says; } bad[] = {
        { 79, 0, 0, "vmlease owner extension of 79 bytes, shorter than its 80 fixed bytes" },
        { 80, 0, 0, "vmlease owner extension ends before its hostname" },
        { sizeof(want), 80, 200, "vmlease owner extension: hostname of 200 bytes runs past its end" },
        { 80 + 7 + 5, 0, 0, "vmlease owner extension: program of 18 bytes runs past its end" },
        { sizeof(want) - 1, 0, 0, "vmlease owner extension: domain name of 4 bytes runs past its end" },
        { sizeof(want), 82, 0, "vmlease owner extension: hostname holds a NUL byte or invalid UTF-8" },
        { sizeof(want), sizeof(want) - 2, 0,
          "vmlease owner extension: domain name holds a NUL byte or invalid UTF-8" },
        { sizeof(want), 90, 0xc3, "vmlease owner extension: program holds a NUL byte or invalid UTF-8" },
        { sizeof(want), 3, 0, "vmlease owner extension has layout version 0" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint8 copy[sizeof(want)];
        memcpy(copy, want, sizeof(want));
        if (bad[i].at)
            copy[bad[i].at] = bad[i].value;
        g_autoptr(GBytes) b = g_bytes_new(copy, bad[i].len);
        g_autoptr(GError) e = NULL;
        g_autoptr(VmlImageOwner) none = vml_image_owner_decode(b, &e);
        g_assert_null(none);
        g_assert_error(e, VML_ERROR, VML_ERROR_BAD_IMAGE);
        g_assert_cmpstr(e->message, ==, bad[i].says);
    }

    /* A later layout may append fields: read, the rest ignored. */
    {
        guint8 later[sizeof(want) + 5];
        memcpy(later, want, sizeof(want));
        memcpy(later + sizeof(want), "extra", 5);
        later[3] = 2;
        g_autoptr(GBytes) b = g_bytes_new(later, sizeof(later));
        g_autoptr(VmlImageOwner) d = vml_image_owner_decode(b, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(d->version, ==, 2);
        g_assert_cmpstr(d->name, ==, "vm-a");
    }
}

/* A header_length that is no multiple of 8 lets the last extension's
 * padding end past the first cluster: a rewrite must still stop at the
 * cluster's end and leave the next cluster's first byte alone. */
static void
test_padding_past_cluster(void)
{
    run("qemu-img create -q -f qcow2 -o cluster_size=512 pad.qcow2 1M");
    g_autofree char *path = img("pad.qcow2");
    image_util_poke(path, 100, 105, 4);            /* header_length 105 */
    image_util_poke(path, 105, 0x12345678, 4);     /* an unknown extension ... */
    image_util_poke(path, 109, 399, 4);            /* ... whose data ends at 512 */
    image_util_poke(path, 512, 0xa5, 1);           /* a marker in cluster 1 */
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(h->area_end, ==, 512);
    g_assert_true(vml_qcow2_remove_ext(h, 0x12345678));
    write_header(path, h);
    g_autoptr(GBytes) head = read_head(path, 513);
    g_assert_cmpuint(((const guint8 *)g_bytes_get_data(head, NULL))[512], ==, 0xa5);
}

/* A header area that runs past the first page of a 64 KiB cluster: the
 * read falls back from the page it tries first to the whole cluster, and a
 * refusal comes from the whole cluster too. */
static void
test_header_past_first_page(void)
{
    make_image("pp-base.qcow2", "", "1M");
    make_image("pp.qcow2", "-b pp-base.qcow2 -F qcow2", "");
    g_autofree char *path = img("pp.qcow2");
    g_autoptr(VmlQcow2Header) before = read_good_header(path);
    guint8 blob[6000];
    for (gsize i = 0; i < sizeof(blob); i++)
        blob[i] = (guint8)(i * 7 + 1);
    g_autoptr(GBytes) data = g_bytes_new(blob, sizeof(blob));
    vml_qcow2_set_ext(before, 0x7e570001, data);
    write_header(path, before);

    g_autoptr(VmlQcow2Header) after = read_good_header(path);
    g_assert_cmpuint(after->area_end, >, 4096);
    g_assert_cmpstr(after->backing_file, ==, before->backing_file);
    const VmlQcow2Ext *e = vml_qcow2_find_ext(after, 0x7e570001);
    g_assert_nonnull(e);
    g_assert_true(g_bytes_equal(e->data, data));
    g_autoptr(JsonObject) info = qemu_img_info("pp.qcow2");
    g_assert_cmpstr(json_object_get_string_member(info, "backing-filename"), ==,
                    "pp-base.qcow2");

    /* The same extension claiming more than the header area holds. */
    image_util_poke(path, e->offset + 4, 70000, 4);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) lying = read_header(path, &not_qcow2, &error);
    g_assert_null(lying);
    g_autofree char *want = g_strdup_printf(
        "%s: invalid qcow2 header: header extension 0x7e570001 at offset %u is 70000 bytes "
        "long, past the header area", path, e->offset);
    g_assert_cmpstr(error->message, ==, want);
}

/* ---- /qcow2/fresh-rewrite ---- */

/* PATH's header read and rewritten on one fd by CHANGE: with FRESH from
 * the bytes it was read from (vml_qcow2_write_fresh), else read again. */
static void
rewrite_on_fd(const char *path, gboolean fresh, void (*change)(VmlQcow2Header *))
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    struct stat st;
    g_assert_cmpint(fstat(fd, &st), ==, 0);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read_stat(fd, &st, path, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_nonnull(h->read_bytes);
    change(h);
    gboolean ok = fresh ? vml_qcow2_write_fresh(fd, path, h, VML_QCOW2_ORDERED, &error)
                        : vml_qcow2_write_synced(fd, path, h, VML_QCOW2_ORDERED, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_true(ok);
}

static void
mark(VmlQcow2Header *h)
{
    g_autoptr(GBytes) owner = vml_image_owner_encode(&sample_owner);
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, owner);
}

static void
unmark(VmlQcow2Header *h)
{
    h->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
    g_assert_true(vml_qcow2_remove_ext(h, VML_QCOW2_EXT_OWNER));
}

static void
add_big_ext(VmlQcow2Header *h)
{
    guint8 blob[6000];
    for (gsize i = 0; i < sizeof(blob); i++)
        blob[i] = (guint8)(i * 5 + 3);
    g_autoptr(GBytes) data = g_bytes_new(blob, sizeof(blob));
    vml_qcow2_set_ext(h, 0x7e570002, data);
}

static void
drop_big_ext(VmlQcow2Header *h)
{
    g_assert_true(vml_qcow2_remove_ext(h, 0x7e570002));
}

/* The same change made both ways on two images qemu-img made alike
 * leaves the same bytes: for a header in the first page and one past it. */
static void
test_fresh_rewrite(void)
{
    make_image("fr-base.qcow2", "", "1M");
    make_image("fr-a.qcow2", "-b fr-base.qcow2 -F qcow2", "");
    make_image("fr-b.qcow2", "-b fr-base.qcow2 -F qcow2", "");
    g_autofree char *a = img("fr-a.qcow2"), *b = img("fr-b.qcow2");
    g_autoptr(GBytes) pristine = read_head(a, 65536);
    void (*const changes[])(VmlQcow2Header *) = { mark, unmark, add_big_ext, mark, unmark,
                                                  drop_big_ext };
    for (guint i = 0; i < G_N_ELEMENTS(changes); i++) {
        rewrite_on_fd(a, FALSE, changes[i]);
        rewrite_on_fd(b, TRUE, changes[i]);
        g_autoptr(GBytes) ha = read_head(a, 65536), hb = read_head(b, 65536);
        assert_bytes_equal(ha, hb);
        g_assert_cmpint(qemu_img_check("fr-b.qcow2"), ==, 0);
    }
    /* And back where qemu-img left it. */
    g_autoptr(GBytes) after = read_head(b, 65536);
    assert_bytes_equal(pristine, after);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img) {
        g_print("1..0 # SKIP qemu-img is not installed\n");
        return 0;
    }
    dir = g_dir_make_tmp("vmlease-test-qcow2-XXXXXX", NULL);
    g_assert_nonnull(dir);
    g_test_add_func("/qcow2/parse-real-images", test_parse_real_images);
    g_test_add_func("/qcow2/not-qcow2", test_not_qcow2);
    g_test_add_func("/qcow2/rewrite-roundtrip", test_rewrite_roundtrip);
    g_test_add_func("/qcow2/no-room", test_no_room);
    g_test_add_func("/qcow2/hostile-headers", test_hostile_headers);
    g_test_add_func("/qcow2/read-only-headers", test_read_only_headers);
    g_test_add_func("/image-owner/exact-bytes", test_owner_exact_bytes);
    g_test_add_func("/qcow2/padding-past-cluster", test_padding_past_cluster);
    g_test_add_func("/qcow2/header-past-first-page", test_header_past_first_page);
    g_test_add_func("/qcow2/fresh-rewrite", test_fresh_rewrite);
    int rc = g_test_run();
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(rm), ==, 0);
    g_free(dir);
    return rc;
}
