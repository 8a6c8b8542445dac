/* lib/vml-image-identity without a daemon: which names are one image.
 * Runs in a private mount namespace of its own (as root), so its bind and
 * tmpfs mounts never reach the machine. */
#include "vml-image-identity.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char *dir;

static char *
key_of(const char *path, const VmlStorageName *names, guint n)
{
    g_autoptr(GError) error = NULL;
    char *key = vml_image_identity_of_path(path, names, n, &error);
    g_assert_no_error(error);
    g_assert_nonnull(key);
    return key;
}

static char *
make_file(const char *name)
{
    char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, "image", -1, NULL));
    return path;
}

static void
test_file_names(void)
{
    g_autofree char *file = make_file("disk.img");
    g_autofree char *other = make_file("other.img");
    g_autofree char *sym = g_build_filename(dir, "link.img", NULL);
    g_autofree char *hard = g_build_filename(dir, "hard.img", NULL);
    g_assert_cmpint(symlink(file, sym), ==, 0);
    g_assert_cmpint(link(file, hard), ==, 0);
    int fd = open(file, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_autofree char *self_fd = g_strdup_printf("/proc/self/fd/%d", fd);

    g_autofree char *k = key_of(file, NULL, 0);
    struct stat st;
    g_assert_cmpint(stat(file, &st), ==, 0);
    g_autofree char *ino = g_strdup_printf(":%" G_GUINT64_FORMAT, (guint64)st.st_ino);
    g_assert_true(g_str_has_prefix(k, "file:"));
    g_assert_true(g_str_has_suffix(k, ino));
    g_autofree char *kl = key_of(sym, NULL, 0);
    g_autofree char *kh = key_of(hard, NULL, 0);
    g_autofree char *kf = key_of(self_fd, NULL, 0);
    g_autofree char *kfd = vml_image_identity(fd, NULL, 0, NULL);
    g_autofree char *ko = key_of(other, NULL, 0);
    g_assert_cmpstr(kl, ==, k);
    g_assert_cmpstr(kh, ==, k);
    g_assert_cmpstr(kf, ==, k);
    g_assert_cmpstr(kfd, ==, k);
    g_assert_cmpstr(ko, !=, k);
    close(fd);
    g_assert_false(vml_key_is_legacy_path(k));
    g_assert_true(vml_key_is_legacy_path(file));
}

static void
test_not_an_image(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_null(vml_image_identity_of_path(dir, NULL, 0, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_clear_error(&error);
    g_assert_null(vml_image_identity_of_path("/dev/null", NULL, 0, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_clear_error(&error);
    g_autofree char *gone = g_build_filename(dir, "gone.img", NULL);
    g_assert_null(vml_image_identity_of_path(gone, NULL, 0, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_assert_nonnull(strstr(error->message, gone));
}

/* A bind mount of the image's directory: the same filesystem and inode. */
static void
test_bind_mount(void)
{
    g_autofree char *sub = g_build_filename(dir, "bindsrc", NULL);
    g_autofree char *mnt = g_build_filename(dir, "bindmnt", NULL);
    g_assert_cmpint(g_mkdir_with_parents(sub, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(mnt, 0755), ==, 0);
    g_autofree char *file = g_build_filename(sub, "disk.img", NULL);
    g_assert_true(g_file_set_contents(file, "x", -1, NULL));
    g_assert_cmpint(mount(sub, mnt, NULL, MS_BIND, NULL), ==, 0);
    g_autofree char *through = g_build_filename(mnt, "disk.img", NULL);
    g_autofree char *a = key_of(file, NULL, 0);
    g_autofree char *b = key_of(through, NULL, 0);
    g_assert_cmpstr(a, ==, b);
    g_assert_cmpint(umount(mnt), ==, 0);
}

/* shared_storage: a name for a mount root keys its files by name and
 * inode; a plain directory names nothing. */
static void
test_storage_names(void)
{
    g_autofree char *mnt = g_build_filename(dir, "shared", NULL);
    g_autofree char *plain = g_build_filename(dir, "plain", NULL);
    g_assert_cmpint(g_mkdir_with_parents(mnt, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(plain, 0755), ==, 0);
    g_assert_cmpint(mount("vmltest", mnt, "tmpfs", 0, "size=1m"), ==, 0);
    g_autofree char *file = g_build_filename(mnt, "disk.img", NULL);
    g_assert_true(g_file_set_contents(file, "x", -1, NULL));
    struct stat st;
    g_assert_cmpint(stat(file, &st), ==, 0);

    VmlStorageName names[2] = { 0 };
    g_autofree char *plain_text = g_strdup_printf("plain=%s", plain);
    g_assert_true(vml_storage_name_parse(plain_text, &names[0], NULL));
    g_autofree char *text = g_strdup_printf("images=%s", mnt);
    g_assert_true(vml_storage_name_parse(text, &names[1], NULL));
    g_autofree char *k = key_of(file, names, 2);
    g_autofree char *want = g_strdup_printf("file:name:images:%" G_GUINT64_FORMAT,
                                            (guint64)st.st_ino);
    g_assert_cmpstr(k, ==, want);
    /* The plain directory sits on the test's filesystem: not renamed. */
    g_autofree char *outside = make_file("outside.img");
    g_autofree char *ko = key_of(outside, names, 2);
    g_assert_false(g_str_has_prefix(ko, "file:name:"));
    /* Unnamed, a tmpfs is this host's alone. */
    g_autofree char *local = key_of(file, NULL, 0);
    g_autofree char *dev = g_strdup_printf("file:dev:%u:%u:", major(st.st_dev), minor(st.st_dev));
    g_assert_true(g_str_has_prefix(local, dev));
    g_assert_cmpint(umount(mnt), ==, 0);
    vml_storage_name_clear(&names[0]);
    vml_storage_name_clear(&names[1]);
}

static void
test_storage_name_parse(void)
{
    static const char *const bad[] = {
        "", "images", "=/srv", "images=srv", "ima ges=/srv", "im/ages=/srv",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=/srv",
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        VmlStorageName n = { 0 };
        g_autoptr(GError) error = NULL;
        g_assert_false(vml_storage_name_parse(bad[i], &n, &error));
        g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
        g_assert_null(n.name);
    }
    VmlStorageName n = { 0 };
    g_assert_true(vml_storage_name_parse("nfs-1.images_a=/srv/a=b", &n, NULL));
    g_assert_cmpstr(n.name, ==, "nfs-1.images_a");
    g_assert_cmpstr(n.root, ==, "/srv/a=b");
    vml_storage_name_clear(&n);
}

/* Block devices: a second node of the same device is the same disk. */
static void
test_block_node_alias(void)
{
    struct stat st;
    if (stat("/dev/loop0", &st) < 0 || !S_ISBLK(st.st_mode)) {
        g_test_skip("no /dev/loop0");
        return;
    }
    g_autofree char *node = g_build_filename(dir, "alias-node", NULL);
    g_assert_cmpint(mknod(node, S_IFBLK | 0600, st.st_rdev), ==, 0);
    g_autofree char *a = key_of("/dev/loop0", NULL, 0);
    g_autofree char *b = key_of(node, NULL, 0);
    g_assert_cmpstr(a, ==, b);
    g_assert_true(g_str_has_prefix(a, "blk:") || g_str_has_prefix(a, "file:"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        g_print("1..0 # SKIP needs root and a mount namespace of its own\n");
        return 0;
    }
    dir = g_dir_make_tmp("vml-identity-XXXXXX", NULL);
    g_assert_nonnull(dir);
    g_test_add_func("/identity/file-names", test_file_names);
    g_test_add_func("/identity/not-an-image", test_not_an_image);
    g_test_add_func("/identity/bind-mount", test_bind_mount);
    g_test_add_func("/identity/storage-names", test_storage_names);
    g_test_add_func("/identity/storage-name-parse", test_storage_name_parse);
    g_test_add_func("/identity/block-node-alias", test_block_node_alias);
    int rc = g_test_run();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    (void)!system(cmd);
    return rc;
}
