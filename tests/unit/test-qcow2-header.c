/* The qcow2 header parser against headers qemu-img wrote and the same
 * headers with one lie each; the owner extension's exact bytes. */
#include "vml-error.h"
#include "image-util.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir;

static char *
img(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void
run(const char *cmd)
{
    image_util_run(dir, cmd);
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

static void
test_real_images(void)
{
    run("qemu-img create -q -f qcow2 base.qcow2 16M && "
        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
        "qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M && "
        "qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 1M && "
        "qemu-img create -q -f raw disk.raw 1M && : > empty");
    g_autofree char *top = img("top.qcow2");
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = read_header(top, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(h->version, ==, 3);
    g_assert_cmpuint(h->cluster_size, ==, 65536);
    g_assert_cmpuint(h->virtual_size, ==, 16u << 20);
    g_assert_cmpuint(h->header_length, ==, 112);
    g_assert_cmpstr(h->backing_file, ==, "base.qcow2");
    g_assert_cmpstr(h->backing_format, ==, "qcow2");
    g_assert_true(h->end_marker);
    g_assert_null(h->read_only_reason);
    g_assert_nonnull(vml_qcow2_find_ext(h, VML_QCOW2_EXT_FEATURE_TABLE));
    g_assert_nonnull(vml_qcow2_find_ext(h, VML_QCOW2_EXT_BACKING_FORMAT));

    g_autofree char *v2 = img("v2.qcow2");
    g_autoptr(VmlQcow2Header) h2 = read_header(v2, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(h2->version, ==, 2);
    g_assert_cmpuint(h2->header_length, ==, 72);
    g_assert_null(h2->backing_file);

    /* A 512-byte cluster has no room for QEMU's feature name table. */
    g_autofree char *small = img("small.qcow2");
    g_autoptr(VmlQcow2Header) hs = read_header(small, &not_qcow2, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(hs->cluster_size, ==, 512);
    g_assert_null(vml_qcow2_find_ext(hs, VML_QCOW2_EXT_FEATURE_TABLE));

    const char *const others[] = { "disk.raw", "empty" };
    for (guint i = 0; i < G_N_ELEMENTS(others); i++) {
        g_autofree char *path = img(others[i]);
        g_autoptr(VmlQcow2Header) none = read_header(path, &not_qcow2, &error);
        g_assert_no_error(error);
        g_assert_null(none);
        g_assert_true(not_qcow2);
    }
}

static void
test_lies(void)
{
    /* On a v3 image with backing file "base.qcow2": the backing format
     * extension sits at 112, the feature table after it, the name after
     * the end marker. */
    static const struct { off_t offset; guint64 value; int width; const char *says; } lies[] = {
        { 4, 7, 4, "unsupported version 7" },
        { 20, 8, 4, "cluster_bits 8 outside 9..21" },
        { 20, 22, 4, "cluster_bits 22 outside 9..21" },
        { 100, 100, 4, "header_length 100 outside 104..65536" },
        { 100, 70000, 4, "header_length 70000 outside 104..65536" },
        { 96, 7, 4, "refcount_order 7 above 6" },
        { 32, 3, 4, "unknown encryption method 3" },
        { 48, 0, 8, "refcount table offset 0 is not a cluster boundary" },
        { 48, 65537, 8, "refcount table offset 65537 is not a cluster boundary" },
        { 48, 1u << 30, 8, "refcount table offset 1073741824 lies past the end of the file" },
        { 40, 4096, 8, "L1 table offset 4096 is not a cluster boundary" },
        { 16, 1024, 4, "backing file name of 1024 bytes (at most 1023)" },
        { 8, 40, 8, "backing file name at offset 40 overlaps the header" },
        { 8, 65530, 8, "backing file name at offset 65530 (10 bytes) runs past the first cluster" },
        { 116, 60000, 4, "header extension 0xe2792aca at offset 112 is 60000 bytes long, past the header area" },
        { 116, 16, 4, "backing format extension of 16 bytes is not a format name" },
        { 120, 0x71000000, 4, "backing format extension of 5 bytes is not a format name" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(lies); i++) {
        g_autofree char *name = g_strdup_printf("lie%u.qcow2", i);
        g_autofree char *cmd = g_strdup_printf(
            "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", name);
        run(cmd);
        g_autofree char *path = img(name);
        image_util_poke(path, lies[i].offset, lies[i].value, lies[i].width);
        gboolean not_qcow2;
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
        g_assert_null(h);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        if (!strstr(error->message, lies[i].says))
            g_error("lie %u: expected '%s' in: %s", i, lies[i].says, error->message);
    }
}

/* Parsed, but not to be written back. */
static void
test_read_only(void)
{
    static const struct { guint64 incompat; const char *says; } cases[] = {
        { G_GUINT64_CONSTANT(1) << 40, "unknown incompatible feature bits 0x10000000000" },
        { 2, "the image is marked corrupt" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *name = g_strdup_printf("ro%u.qcow2", i);
        g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 %s 1M", name);
        run(cmd);
        g_autofree char *path = img(name);
        image_util_poke(path, 72, cases[i].incompat, 8);
        gboolean not_qcow2;
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlQcow2Header) h = read_header(path, &not_qcow2, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(h->read_only_reason, ==, cases[i].says);
        g_autoptr(GBytes) area = vml_qcow2_serialize(h, &error);
        g_assert_null(area);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        g_assert_nonnull(strstr(error->message, cases[i].says));
    }
}

/* A 512-byte cluster with a long backing name: our extension does not fit,
 * and the file is left as it was. */
static void
test_no_room(void)
{
    g_autofree char *d = g_strnfill(150, 'd');
    g_autofree char *cmd = g_strdup_printf(
        "mkdir -p %s/%s && qemu-img create -q -f qcow2 %s/%s/b.qcow2 1M && "
        "qemu-img create -q -f qcow2 -o cluster_size=512 -b %s/%s/b.qcow2 -F qcow2 tight.qcow2",
        d, d, d, d, d, d);
    run(cmd);
    g_autofree char *path = img("tight.qcow2");
    g_autofree char *before = NULL, *after = NULL;
    gsize n_before, n_after;
    g_assert_true(g_file_get_contents(path, &before, &n_before, NULL));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    g_assert_no_error(error);
    guint8 filler[200] = { 0 };
    g_autoptr(GBytes) ext = g_bytes_new(filler, sizeof(filler));
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, ext);
    g_assert_false(vml_qcow2_write(fd, path, h, &error));
    close(fd);
    g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
    g_assert_nonnull(strstr(error->message, "past its first cluster (512 bytes)"));
    g_assert_true(g_file_get_contents(path, &after, &n_after, NULL));
    g_assert_cmpmem(before, n_before, after, n_after);
}

static void
test_owner_bytes(void)
{
    VmlImageOwner o = {
        .pid = 4242, .start_time = 123456789, .time_set = 1700000000, .generation = 7,
        .uuid = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
        .machine_id = (char *)"00112233445566778899aabbccddeeff",
        .boot_id = (char *)"01234567-89ab-cdef-0123-456789abcdef",
        .hostname = (char *)"host-a", .program = (char *)"qemu", .name = (char *)"vm-a",
    };
    static const guint8 want[] = {
        0, 0, 0, 1,                          /* layout version */
        0, 0, 0x10, 0x92,                    /* pid 4242 */
        0, 0, 0, 0, 0x07, 0x5b, 0xcd, 0x15,  /* start time 123456789 */
        0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00,  /* time set 1700000000 */
        0, 0, 0, 0, 0, 0, 0, 7,              /* generation */
        0x6f, 0x1e, 0x5a, 0x2c, 0x0d, 0x3b, 0x4c, 0x8e,
        0x9a, 0x7f, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60,
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
        0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        6, 'h', 'o', 's', 't', '-', 'a',
        4, 'q', 'e', 'm', 'u',
        4, 'v', 'm', '-', 'a',
    };
    g_autoptr(GBytes) got = vml_image_owner_encode(&o);
    gsize n;
    const guint8 *bytes = g_bytes_get_data(got, &n);
    g_assert_cmpmem(bytes, n, want, sizeof(want));

    g_autoptr(GError) error = NULL;
    g_autoptr(VmlImageOwner) back = vml_image_owner_decode(got, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(back->pid, ==, 4242);
    g_assert_cmpuint(back->start_time, ==, 123456789);
    g_assert_cmpint(back->time_set, ==, 1700000000);
    g_assert_cmpuint(back->generation, ==, 7);
    g_assert_cmpstr(back->uuid, ==, o.uuid);
    g_assert_cmpstr(back->machine_id, ==, o.machine_id);
    g_assert_cmpstr(back->boot_id, ==, o.boot_id);
    g_assert_cmpstr(back->hostname, ==, "host-a");
    g_assert_cmpstr(back->program, ==, "qemu");
    g_assert_cmpstr(back->name, ==, "vm-a");

    /* Truncated, a string running past the end, a NUL, layout 0. */
    static const struct { gsize len; gsize poke_at; guint8 value; const char *says; } bad[] = {
        { 79, 0, 0, "shorter than its 80 fixed bytes" },
        { sizeof(want), 80, 200, "hostname of 200 bytes runs past its end" },
        { sizeof(want), 82, 0, "hostname holds a NUL byte" },
        { sizeof(want), 3, 0, "layout version 0" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint8 copy[sizeof(want)];
        memcpy(copy, want, sizeof(want));
        if (bad[i].poke_at || bad[i].len == sizeof(want))
            copy[bad[i].poke_at] = bad[i].value;
        g_autoptr(GBytes) b = g_bytes_new(copy, bad[i].len);
        g_autoptr(GError) e = NULL;
        g_autoptr(VmlImageOwner) none = vml_image_owner_decode(b, &e);
        g_assert_null(none);
        g_assert_error(e, VML_ERROR, VML_ERROR_BAD_IMAGE);
        if (!strstr(e->message, bad[i].says))
            g_error("bad owner %u: expected '%s' in: %s", i, bad[i].says, e->message);
    }

    /* A long name is cut at a character boundary. */
    g_autoptr(GString) name = g_string_new(NULL);
    for (int i = 0; i < 150; i++)
        g_string_append(name, "\xc3\xa9");   /* é, 2 bytes */
    o.name = name->str;
    g_autoptr(GBytes) cut = vml_image_owner_encode(&o);
    g_autoptr(VmlImageOwner) cut_back = vml_image_owner_decode(cut, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(strlen(cut_back->name), ==, 254);
    g_assert_true(g_utf8_validate(cut_back->name, -1, NULL));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    dir = g_dir_make_tmp("vmlease-qcow2-XXXXXX", NULL);
    g_test_add_func("/qcow2/real-images", test_real_images);
    g_test_add_func("/qcow2/lies", test_lies);
    g_test_add_func("/qcow2/read-only", test_read_only);
    g_test_add_func("/qcow2/no-room", test_no_room);
    g_test_add_func("/image-owner/bytes", test_owner_bytes);
    int rc = g_test_run();
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(rm), ==, 0);
    g_free(dir);
    return rc;
}
