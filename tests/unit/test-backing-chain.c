/* Backing chains read from qcow2 headers that the real qemu-img wrote, and
 * headers that lie. */
#include "vml-backing-chain.h"
#include "vml-error.h"
#include "image-util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
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

static void
test_three_layers_relative_names(void)
{
    run("qemu-img create -q -f raw base.raw 1M && "
        "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && "
        "mkdir -p sub && qemu-img create -q -f qcow2 -b ../mid.qcow2 -F qcow2 sub/top.qcow2");
    g_autofree char *top = img("sub/top.qcow2");
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) chain = vml_backing_chain(top, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(chain->len, ==, 2);
    g_autofree char *mid = realpath(img("mid.qcow2"), NULL);
    g_autofree char *base = realpath(img("base.raw"), NULL);
    g_assert_cmpstr(chain->pdata[0], ==, mid);
    g_assert_cmpstr(chain->pdata[1], ==, base);
    /* A raw image and a qcow2 without backing file have no chain. */
    g_autoptr(GPtrArray) none = vml_backing_chain(base, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(none->len, ==, 0);
}

/* Read through an fd the caller keeps: the same chain as by name, the fd
 * left open at its offset, whether the top is qcow2 said. */
static void
test_of_open(void)
{
    run("qemu-img create -q -f raw open-base.raw 1M && "
        "qemu-img create -q -f qcow2 -b open-base.raw -F raw open-top.qcow2");
    g_autofree char *top = realpath(img("open-top.qcow2"), NULL);
    g_autofree char *base = realpath(img("open-base.raw"), NULL);
    const char *const paths[] = { top, base };
    const guint lens[] = { 1, 0 };
    for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
        int fd = open(paths[i], O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(lseek(fd, 7, SEEK_SET), ==, 7);
        struct stat st;
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_autoptr(GError) error = NULL;
        gboolean is_qcow2 = i == 1;
        g_autoptr(GPtrArray) chain = vml_backing_chain_of_open(paths[i], fd, &st, &is_qcow2,
                                                               &error);
        g_assert_no_error(error);
        g_assert_cmpuint(chain->len, ==, lens[i]);
        if (lens[i])
            g_assert_cmpstr(chain->pdata[0], ==, base);
        g_assert_true(is_qcow2 == (i == 0));
        /* Still open, never moved. */
        g_assert_cmpint(lseek(fd, 0, SEEK_CUR), ==, 7);
        g_assert_cmpint(close(fd), ==, 0);
    }
}

static void
test_loop_and_missing(void)
{
    run("qemu-img create -q -f qcow2 a.qcow2 1M && "
        "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 && "
        "qemu-img rebase -u -f qcow2 -b b.qcow2 -F qcow2 a.qcow2");
    g_autofree char *b = img("b.qcow2");
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) chain = vml_backing_chain(b, &error);
    g_assert_null(chain);
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_assert_nonnull(strstr(error->message, "loops"));
    g_clear_error(&error);

    run("qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 -u orphan.qcow2 1M");
    g_autofree char *orphan = img("orphan.qcow2");
    g_autoptr(GPtrArray) c2 = vml_backing_chain(orphan, &error);
    g_assert_null(c2);
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_assert_nonnull(strstr(error->message, "gone.qcow2"));
}

/* Overwrite 4/8 big-endian bytes at OFFSET of PATH. */
static void
test_lying_headers(void)
{
    static const struct { off_t offset; guint64 value; int width; const char *says; } lies[] = {
        { 8, 1u << 20, 8, "backing file name at offset 1048576 (15 bytes) runs past the first cluster" },
        { 16, 5000, 4, "backing file name of 5000 bytes (at most 1023)" },
        { 8, 4, 8, "backing file name at offset 4 overlaps the header" },
        { 4, 7, 4, "invalid qcow2 header: unsupported version 7" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(lies); i++) {
        g_autofree char *cmd = g_strdup_printf(
            "qemu-img create -q -f qcow2 liar-base.qcow2 1M && "
            "qemu-img create -q -f qcow2 -b liar-base.qcow2 -F qcow2 liar%u.qcow2", i);
        run(cmd);
        g_autofree char *name = g_strdup_printf("liar%u.qcow2", i);
        g_autofree char *path = img(name);
        image_util_poke(path, lies[i].offset, lies[i].value, lies[i].width);
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) chain = vml_backing_chain(path, &error);
        g_assert_null(chain);
        g_assert_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE);
        if (!strstr(error->message, lies[i].says))
            g_error("lie %u: expected '%s' in: %s", i, lies[i].says, error->message);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    dir = g_dir_make_tmp("vmlease-chain-XXXXXX", NULL);
    g_test_add_func("/backing-chain/three-layers-relative-names", test_three_layers_relative_names);
    g_test_add_func("/backing-chain/of-open", test_of_open);
    g_test_add_func("/backing-chain/loop-and-missing", test_loop_and_missing);
    g_test_add_func("/backing-chain/lying-headers", test_lying_headers);
    if (!qemu_img) {
        g_print("1..0 # SKIP qemu-img is not installed\n");
        return 0;
    }
    int rc = g_test_run();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(dir);
    return rc;
}
