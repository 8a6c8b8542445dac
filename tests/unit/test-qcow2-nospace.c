/* A qcow2 header rewrite that cannot complete leaves the old header, with
 * the real qemu-img as the judge.
 *
 * The images are chains (top.qcow2 over base.qcow2) made by qemu-img 7.2,
 * with an unknown padding extension that puts the backing file name where
 * a case wants it, and with their all-zero pages of the header cluster
 * turned into holes, as a sparse copy (cp --sparse=always, rsync -S,
 * fallocate --dig-holes) leaves them. They live on a small tmpfs (and, as
 * root, a loop-mounted ext4 with 1 KiB blocks), mounted in a private mount
 * namespace, that is filled up until writes fail with ENOSPC. A mark or
 * unmark that would need a page there must fail naming the image and the
 * errno, with the first cluster byte for byte as it was, `qemu-img check`
 * clean and `qemu-img info` showing the same backing file; one that fits
 * in the pages the image has must work.
 *
 * The restore path is cut at every byte: with RLIMIT_FSIZE (the kernel
 * makes write() short, then EFBIG, at that offset; SIGXFSZ is ignored) and
 * with pwrite() and fdatasync() wrapped here (the static library's calls
 * land in these wrappers), which can stop the rewrite after any number of
 * bytes, fail any fdatasync, fail the restore too, or stop everything
 * after any step, as a crash there would. */
#include "vml-error.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"
#include "image-util.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define CLUSTER 65536
#define PAD_TYPE 0x70616421u      /* "pad!": unknown to QEMU and to us */
#define OWNER_EXT 120             /* the sample owner: 8 + 111 padded to 112 */
#define FS_SIZE (1024 * 1024)

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

static char *no_namespace;   /* why there is no private tmpfs */

/* ---- pwrite and fdatasync, wrapped ---- */

static struct {
    gboolean armed;
    gsize budget;        /* bytes pwrite may still write */
    gboolean tripped;    /* the budget ran out: one call failed */
    gboolean sticky;     /* and every later one fails too */
    int err;
    guint sync_fail;     /* fail this fdatasync (1-based); 0: none */
    guint stop_after;    /* after this many fdatasyncs, every pwrite fails */
    guint syncs;
    gsize bytes;         /* bytes written while armed */
} inj;

static void
inject(gsize budget, int err, gboolean sticky, guint sync_fail)
{
    memset(&inj, 0, sizeof(inj));
    inj.armed = TRUE;
    inj.budget = budget;
    inj.err = err;
    inj.sticky = sticky;
    inj.sync_fail = sync_fail;
}

static void
disarm(void)
{
    inj.armed = FALSE;
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (inj.armed && inj.stop_after && inj.syncs >= inj.stop_after) {
        inj.tripped = TRUE;
        errno = EIO;
        return -1;
    }
    if (inj.armed && inj.budget != (gsize)-1) {
        if (inj.tripped && inj.sticky) {
            errno = inj.err;
            return -1;
        }
        if (!inj.tripped) {
            if (inj.budget == 0 && n > 0) {
                inj.tripped = TRUE;
                errno = inj.err;
                return -1;
            }
            n = MIN(n, inj.budget);
        }
    }
    ssize_t done = syscall(SYS_pwrite64, fd, buf, n, off);
    if (inj.armed && done > 0) {
        inj.bytes += (gsize)done;
        if (!inj.tripped && inj.budget != (gsize)-1)
            inj.budget -= (gsize)done;
    }
    return done;
}

int
fdatasync(int fd)
{
    if (inj.armed && ++inj.syncs == inj.sync_fail) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

/* ---- a private small file system ---- */

static gboolean
write_proc(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return FALSE;
    gboolean ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok;
}

/* Before any thread exists: a mount namespace of our own (a user namespace
 * too when not root), with nothing propagating back. */
static void
enter_private_mounts(void)
{
    if (geteuid() == 0) {
        if (unshare(CLONE_NEWNS) < 0) {
            no_namespace = g_strdup_printf("unshare(CLONE_NEWNS): %s", g_strerror(errno));
            return;
        }
    } else {
        uid_t uid = geteuid();
        gid_t gid = getegid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
            no_namespace = g_strdup_printf("unshare(CLONE_NEWUSER|CLONE_NEWNS): %s",
                                           g_strerror(errno));
            return;
        }
        g_autofree char *umap = g_strdup_printf("0 %u 1\n", (unsigned)uid);
        g_autofree char *gmap = g_strdup_printf("0 %u 1\n", (unsigned)gid);
        if (!write_proc("/proc/self/setgroups", "deny") ||
            !write_proc("/proc/self/uid_map", umap) ||
            !write_proc("/proc/self/gid_map", gmap)) {
            no_namespace = g_strdup("cannot map our uid in a user namespace");
            return;
        }
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        no_namespace = g_strdup_printf("making / private: %s", g_strerror(errno));
}

static char *
mount_tmpfs(gsize size)
{
    g_autoptr(GError) error = NULL;
    char *mnt = g_dir_make_tmp("vmlease-nospace-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *opts = g_strdup_printf("size=%zu,mode=0755", size);
    if (mount("vmlease-nospace", mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        g_error("mount tmpfs on %s: %s", mnt, g_strerror(errno));
    return mnt;
}

static void
unmount_tmpfs(char *mnt)
{
    g_assert_cmpint(umount2(mnt, MNT_DETACH), ==, 0);
    g_assert_cmpint(rmdir(mnt), ==, 0);
    g_free(mnt);
}

/* Free blocks of DIR's file system, and their size. */
static guint64
free_blocks(const char *dir, gsize *block)
{
    struct statvfs sv;
    g_assert_cmpint(statvfs(dir, &sv), ==, 0);
    if (block)
        *block = sv.f_frsize;
    return sv.f_bavail;
}

static guint64
free_pages(const char *dir)
{
    gsize block;
    guint64 n = free_blocks(dir, &block);
    g_assert_cmpuint(block, ==, PAGE);
    return n;
}

/* Fill DIR's file system until a write fails with ENOSPC (after an fsync
 * too), then give back LEAVE blocks. */
static void
fill_fs(const char *dir, guint leave)
{
    g_autofree char *path = g_build_filename(dir, "filler", NULL);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    gsize block;
    free_blocks(dir, &block);
    g_autofree guint8 *buf = g_malloc(block);
    memset(buf, 0xa5, block);
    for (guint round = 0; round < 2; round++) {
        for (;;) {
            ssize_t n = write(fd, buf, block);
            if (n < 0) {
                g_assert_cmpint(errno, ==, ENOSPC);
                break;
            }
        }
        g_assert_cmpint(fsync(fd), ==, 0);
    }
    struct stat st;
    g_assert_cmpint(fstat(fd, &st), ==, 0);
    off_t keep = st.st_size / (off_t)block * (off_t)block - (off_t)leave * (off_t)block;
    g_assert_cmpint(keep, >=, 0);
    g_assert_cmpint(ftruncate(fd, keep), ==, 0);
    g_assert_cmpint(fsync(fd), ==, 0);
    close(fd);
    guint64 left = free_blocks(dir, NULL);
    if (leave == 0 || block == PAGE)     /* tmpfs counts exactly */
        g_assert_cmpuint(left, ==, leave);
    else
        g_assert_cmpuint(left, >=, leave);
}

static void
unfill_fs(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "filler", NULL);
    g_assert_cmpint(unlink(path), ==, 0);
}

/* ---- images ---- */

typedef struct {
    char *dir;
    char *path;        /* top.qcow2 */
    char *backing;     /* its backing file name, as stored */
} Chain;

static void
chain_free(Chain *c)
{
    g_free(c->dir);
    g_free(c->path);
    g_free(c->backing);
    g_free(c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Chain, chain_free)

static int
spawn_in(const char *dir, const char *const *argv, char **out)
{
    g_autoptr(GError) error = NULL;
    int status = 0;
    g_spawn_sync(dir, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                 NULL, NULL, out, NULL, &status, &error);
    g_assert_no_error(error);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int
qemu_img_check(const Chain *c)
{
    const char *const argv[] = { "qemu-img", "check", "-q", c->path, NULL };
    return spawn_in(c->dir, argv, NULL);
}

/* `qemu-img info --output=json`'s backing-filename; NULL when it shows
 * none, "(info failed)" when qemu-img could not read the image. */
static char *
qemu_backing(const Chain *c)
{
    const char *const argv[] = { "qemu-img", "info", "--output=json", c->path, NULL };
    g_autofree char *out = NULL;
    if (spawn_in(c->dir, argv, &out) != 0)
        return g_strdup("(info failed)");
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    json_parser_load_from_data(parser, out, -1, &error);
    g_assert_no_error(error);
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    const char *b = json_object_get_string_member_with_default(o, "backing-filename", NULL);
    return g_strdup(b);
}

/* QEMU sees the image whole, with the same backing file. */
static void
assert_qemu_happy(const Chain *c)
{
    g_assert_cmpint(qemu_img_check(c), ==, 0);
    g_autofree char *b = qemu_backing(c);
    g_assert_cmpstr(b, ==, c->backing);
}

static VmlQcow2Header *
read_header(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean not_qcow2 = TRUE;
    g_autoptr(GError) error = NULL;
    VmlQcow2Header *h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_nonnull(h);
    return h;
}

static gboolean
write_header(const char *path, const VmlQcow2Header *h, GError **error)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean ok = vml_qcow2_write(fd, path, h, error);
    close(fd);
    g_assert_true(ok == (error == NULL || *error == NULL));
    return ok;
}

/* What image-guard does to mark and to unmark. */
static gboolean
mark(const char *path, GError **error)
{
    g_autoptr(VmlQcow2Header) h = read_header(path);
    g_autoptr(GBytes) owner = vml_image_owner_encode(&sample_owner);
    g_assert_cmpuint(8 + ((g_bytes_get_size(owner) + 7) & ~(gsize)7), ==, OWNER_EXT);
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, owner);
    return write_header(path, h, error);
}

static gboolean
unmark(const char *path, GError **error)
{
    g_autoptr(VmlQcow2Header) h = read_header(path);
    h->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
    g_assert_true(vml_qcow2_remove_ext(h, VML_QCOW2_EXT_OWNER));
    return write_header(path, h, error);
}

typedef gboolean (*Op)(const char *path, GError **error);

/* The image parses, has the backing file and is marked or not. */
static void
assert_state(const Chain *c, gboolean marked)
{
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    g_assert_cmpstr(h->backing_file, ==, c->backing);
    g_assert_cmpuint(!!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE), ==, marked);
    g_assert_cmpuint(vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER) != NULL, ==, marked);
}

/* The first 64 KiB (the header cluster, or more of a small-cluster
 * image), or the whole file when it is smaller. */
static GBytes *
first_cluster(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint8 *buf = g_malloc(CLUSTER);
    ssize_t n = pread(fd, buf, CLUSTER, 0);
    g_assert_cmpint(n, >, 0);
    close(fd);
    return g_bytes_new_take(buf, (gsize)n);
}

static void
assert_cluster(const char *path, GBytes *want, const char *when)
{
    g_autoptr(GBytes) now = first_cluster(path);
    gsize n;
    const guint8 *a = g_bytes_get_data(want, &n);
    const guint8 *b = g_bytes_get_data(now, NULL);
    g_assert_cmpuint(g_bytes_get_size(now), ==, n);
    for (gsize i = 0; i < n; i++) {
        if (a[i] != b[i])
            g_error("%s: the first cluster differs first at byte %zu (0x%02x, was 0x%02x)",
                    when, i, b[i], a[i]);
    }
}

/* Put the first cluster back (not through the wrappers' budget). */
static void
put_cluster(const char *path, GBytes *bytes)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gsize n;
    const guint8 *data = g_bytes_get_data(bytes, &n);
    g_assert_cmpint(syscall(SYS_pwrite64, fd, data, n, 0), ==, (ssize_t)n);
    close(fd);
}

static gboolean
is_hole(const char *path, off_t page)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    off_t data = lseek(fd, page, SEEK_DATA);
    close(fd);
    return data < 0 || data >= page + PAGE;
}

/* Punch every all-zero page of the header cluster. */
static void
dig_holes(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint8 buf[PAGE];
    static const guint8 zero[PAGE];
    for (off_t off = 0; off < CLUSTER; off += PAGE) {
        ssize_t n = pread(fd, buf, PAGE, off);
        g_assert_cmpint(n, >=, 0);
        if (n < PAGE)
            break;
        if (memcmp(buf, zero, PAGE) == 0)
            g_assert_cmpint(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, PAGE),
                            ==, 0);
    }
    close(fd);
}

/* Add a padding extension of bytes FILL so that the backing file name
 * starts at NAME_AT. */
static void
pad_to(const Chain *c, guint64 name_at, guint8 fill)
{
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    /* QEMU and we put the name right after the end marker. */
    guint64 now = h->backing_offset;
    g_assert_cmpuint(name_at, >=, now + 8);
    g_assert_cmpuint((name_at - now) % 8, ==, 0);
    gsize n = name_at - now - 8;
    guint8 *pad = g_malloc(n + 1);
    memset(pad, fill, n);
    g_autoptr(GBytes) data = g_bytes_new_take(pad, n);
    vml_qcow2_set_ext(h, PAD_TYPE, data);
    g_autoptr(GError) error = NULL;
    write_header(c->path, h, &error);
    g_assert_no_error(error);
    g_autoptr(VmlQcow2Header) again = read_header(c->path);
    g_assert_cmpuint(again->backing_offset, ==, name_at);
}

/* top.qcow2 over base.qcow2 in DIR, its backing file name NAME_LEN bytes
 * ("./" repeated, then base.qcow2) at NAME_AT (0: where qemu-img put it),
 * the padding bytes FILL; marked before the padding goes in when
 * OWNER_FIRST; CLUSTER_SIZE bytes to a cluster (0: qemu-img's 64 KiB). */
static Chain *
make_chain_sized(const char *dir, guint name_len, guint64 name_at, guint8 fill,
                 gboolean owner_first, guint cluster_size)
{
    Chain *c = g_new0(Chain, 1);
    c->dir = g_strdup(dir);
    c->path = g_build_filename(dir, "top.qcow2", NULL);
    g_assert_cmpuint(name_len, >=, 10);
    g_assert_cmpuint(name_len % 2, ==, 0);
    GString *b = g_string_new(NULL);
    while (b->len < name_len - 10)
        g_string_append(b, "./");
    g_string_append(b, "base.qcow2");
    c->backing = g_string_free(b, FALSE);
    g_autofree char *opts = cluster_size ? g_strdup_printf("-o cluster_size=%u", cluster_size)
                                         : g_strdup("");
    g_autofree char *cmd = g_strdup_printf(
        "qemu-img create -q -f qcow2 base.qcow2 1M && "
        "qemu-img create -q -f qcow2 %s -b '%s' -F qcow2 top.qcow2", opts, c->backing);
    image_util_run(dir, cmd);
    if (owner_first) {
        g_autoptr(GError) error = NULL;
        mark(c->path, &error);
        g_assert_no_error(error);
    }
    if (name_at)
        pad_to(c, name_at, fill);
    dig_holes(c->path);
    assert_state(c, owner_first);
    assert_qemu_happy(c);
    return c;
}

static Chain *
make_chain(const char *dir, guint name_len, guint64 name_at, guint8 fill, gboolean owner_first)
{
    return make_chain_sized(dir, name_len, name_at, fill, owner_first, 0);
}

static void
assert_failed(const GError *error, const Chain *c, const char *errno_text, const char *how)
{
    g_assert_nonnull(error);
    g_assert_true(error->domain == VML_ERROR);
    g_assert_cmpint(error->code, ==, VML_ERROR_FAILED);
    g_autofree char *start = g_strdup_printf("%s: cannot write the qcow2 header: ", c->path);
    if (!g_str_has_prefix(error->message, start) || !strstr(error->message, errno_text) ||
        !strstr(error->message, how))
        g_error("expected '%s...%s...%s', got: %s", start, errno_text, how, error->message);
}

/* OP fails on the full file system and changes nothing. */
static void
assert_op_fails(const Chain *c, Op op, gboolean marked)
{
    g_autoptr(GBytes) before = first_cluster(c->path);
    g_autoptr(GError) error = NULL;
    g_assert_false(op(c->path, &error));
    g_test_message("%s", error->message);
    assert_qemu_happy(c);
    assert_cluster(c->path, before, "after a failed rewrite");
    assert_state(c, marked);
    assert_failed(error, c, "No space left on device", "(the header was not changed)");
}

static void
assert_op_works(const Chain *c, Op op, gboolean marked)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(op(c->path, &error));
    g_assert_no_error(error);
    assert_state(c, marked);
    assert_qemu_happy(c);
}

static char *
small_fs_or_skip(void)
{
    if (no_namespace) {
        g_test_skip(no_namespace);
        return NULL;
    }
    return mount_tmpfs(FS_SIZE);
}

/* ---- /nospace/name-moves-into-a-hole ----
 * The header area ends in page 0 (the name at 4032, 20 bytes); marked,
 * the name moves to 4152, in page 1, a hole. This is what used to lose
 * the backing file: page 0 was written, page 1 was not, and the backing
 * file offset pointed into zeros. */
static void
test_name_moves_into_a_hole(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 20, 4032, 0x5a, FALSE);
    g_autoptr(GBytes) pristine = first_cluster(c->path);
    g_assert_true(is_hole(c->path, PAGE));

    fill_fs(mnt, 0);
    assert_op_fails(c, mark, FALSE);
    g_assert_true(is_hole(c->path, PAGE));

    /* One page is all it needs. */
    fill_fs(mnt, 1);
    assert_op_works(c, mark, TRUE);
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    g_assert_cmpuint(h->backing_offset, ==, 4032 + OWNER_EXT);
    g_assert_cmpuint(h->area_end, >, PAGE);

    /* Clearing it needs no new page; then the cluster is as qemu-img left it. */
    fill_fs(mnt, 0);
    assert_op_works(c, unmark, FALSE);
    assert_cluster(c->path, pristine, "after mark and unmark");
    unmount_tmpfs(mnt);
}

/* ---- /nospace/area-across-pages-grows-into-a-hole ----
 * The area spans pages 0 and 1 (a 1000-byte name at 7152 ends at 8152);
 * marked it would reach into page 2, a hole. */
static void
test_area_across_pages_grows_into_a_hole(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 1000, 7152, 0x5a, FALSE);
    g_autoptr(GBytes) pristine = first_cluster(c->path);
    g_assert_false(is_hole(c->path, PAGE));
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 0);
    assert_op_fails(c, mark, FALSE);
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 1);
    assert_op_works(c, mark, TRUE);
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    g_assert_cmpuint(h->area_end, >, 2 * PAGE);

    fill_fs(mnt, 0);
    assert_op_works(c, unmark, FALSE);
    assert_cluster(c->path, pristine, "after mark and unmark");
    unmount_tmpfs(mnt);
}

/* ---- /nospace/area-across-pages-needs-no-new-page ----
 * The area spans pages 0 and 1 and, marked, still ends in page 1: a full
 * file system is no reason to fail. */
static void
test_area_across_pages_needs_no_new_page(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 1000, 3600, 0x5a, FALSE);
    g_autoptr(GBytes) pristine = first_cluster(c->path);
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 0);
    assert_op_works(c, mark, TRUE);
    assert_op_works(c, unmark, FALSE);
    assert_cluster(c->path, pristine, "after mark and unmark");
    g_assert_true(is_hole(c->path, 2 * PAGE));
    unmount_tmpfs(mnt);
}

/* ---- /nospace/little-space ----
 * The padding is zeros, so page 1 inside the area is a hole; the name ends
 * in page 2 and, marked, moves into page 3, another hole. One free page is
 * enough, since bytes that stay the same are not written (writing the whole
 * area would spend that page on page 1 and then stop short in page 3);
 * none is not. */
static void
test_little_space(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 20, 3 * PAGE - 40, 0, FALSE);
    g_autoptr(GBytes) pristine = first_cluster(c->path);
    g_assert_true(is_hole(c->path, PAGE));
    g_assert_false(is_hole(c->path, 2 * PAGE));
    g_assert_true(is_hole(c->path, 3 * PAGE));

    fill_fs(mnt, 0);
    assert_op_fails(c, mark, FALSE);
    g_assert_true(is_hole(c->path, 3 * PAGE));

    fill_fs(mnt, 1);
    assert_op_works(c, mark, TRUE);
    g_assert_true(is_hole(c->path, PAGE));
    g_assert_cmpuint(free_pages(mnt), ==, 0);

    fill_fs(mnt, 0);
    assert_op_works(c, unmark, FALSE);
    assert_cluster(c->path, pristine, "after mark and unmark");
    g_assert_true(is_hole(c->path, PAGE));
    unmount_tmpfs(mnt);
}

/* ---- /nospace/unmark-moves-name-back-into-a-hole ----
 * Marked first, then zero padding after the owner extension so that the
 * name starts just past page 2, which is all zeros and a hole. Unmarked,
 * the name moves back by the owner extension's 120 bytes, into page 2. */
static void
test_unmark_moves_name_back_into_a_hole(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 20, 3 * PAGE + 8, 0, TRUE);
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 0);
    assert_op_fails(c, unmark, TRUE);
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 1);
    assert_op_works(c, unmark, FALSE);
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    g_assert_cmpuint(h->backing_offset, ==, 3 * PAGE + 8 - OWNER_EXT);
    unmount_tmpfs(mnt);
}

/* ---- /nospace/unmark-with-no-room-to-park ----
 * Marked, the area ends 4 bytes short of page 2, a hole. Unmarking needs no
 * new page, but the name's copy would go there while the extensions
 * change: without room for it, the name is rewritten in place. */
static void
test_unmark_with_no_room_to_park(void)
{
    char *mnt = small_fs_or_skip();
    if (!mnt)
        return;
    g_autoptr(Chain) c = make_chain(mnt, 20, 2 * PAGE - 24, 0x5a, TRUE);
    g_assert_true(is_hole(c->path, 2 * PAGE));

    fill_fs(mnt, 0);
    assert_op_works(c, unmark, FALSE);
    g_assert_true(is_hole(c->path, 2 * PAGE));
    g_autoptr(VmlQcow2Header) h = read_header(c->path);
    g_assert_cmpuint(h->backing_offset, ==, 2 * PAGE - 24 - OWNER_EXT);
    unmount_tmpfs(mnt);
}

/* ---- /nospace/ext4-1k-blocks ----
 * The same on a block file system: a loop-mounted ext4 with 1 KiB blocks
 * (no journal, so freed blocks come back at once; nodelalloc, so ENOSPC
 * shows at write()), whose fallocate leaves unwritten extents. The name
 * moving into a hole, and an area across pages growing into one: a full
 * file system fails the mark with the header as it was; with room the
 * mark works, and the unmark works on a full one. Root only. */
static void
test_ext4(void)
{
    if (no_namespace) {
        g_test_skip(no_namespace);
        return;
    }
    g_autofree char *mkfs = g_find_program_in_path("mkfs.ext4");
    if (!mkfs && g_file_test("/usr/sbin/mkfs.ext4", G_FILE_TEST_IS_EXECUTABLE))
        mkfs = g_strdup("/usr/sbin/mkfs.ext4");
    if (!mkfs || geteuid() != 0) {
        g_test_skip(!mkfs ? "no mkfs.ext4" : "loop mounts need root");
        return;
    }
    char *store = mount_tmpfs(16 * 1024 * 1024);
    g_autofree char *fs = g_build_filename(store, "fs.img", NULL);
    g_autofree char *mnt = g_build_filename(store, "mnt", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
    g_autofree char *cmd = g_strdup_printf(
        "truncate -s 8M fs.img && '%s' -q -F -b 1024 -m 0 -O ^has_journal fs.img", mkfs);
    image_util_run(store, cmd);
    g_autofree char *mount_cmd = g_strdup_printf(
        "mount -o loop,nodelalloc '%s' '%s' 2>/dev/null", fs, mnt);
    if (system(mount_cmd) != 0) {
        unmount_tmpfs(store);
        g_test_skip("cannot loop-mount an ext4 image here");
        return;
    }
    static const struct { guint name_len; guint64 name_at; } cases[] = {
        { 20, 4032 },
        { 1000, 7152 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *dir = g_strdup_printf("%s/case%u", mnt, i);
        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        g_autoptr(Chain) c = make_chain(dir, cases[i].name_len, cases[i].name_at, 0x5a, FALSE);
        g_autoptr(GBytes) pristine = first_cluster(c->path);
        off_t hole = (off_t)(cases[i].name_at + cases[i].name_len + 1023) / 1024 * 1024;
        g_assert_true(is_hole(c->path, hole));

        fill_fs(dir, 0);
        assert_op_fails(c, mark, FALSE);
        g_assert_true(is_hole(c->path, hole));

        fill_fs(dir, 64);
        assert_op_works(c, mark, TRUE);
        fill_fs(dir, 0);
        assert_op_works(c, unmark, FALSE);
        assert_cluster(c->path, pristine, "after mark and unmark");
        unfill_fs(dir);
    }
    g_assert_cmpint(umount2(mnt, 0), ==, 0);
    unmount_tmpfs(store);
}

/* ---- cutting the rewrite short ---- */

typedef struct {
    const char *what;
    guint name_len;
    guint64 name_at;
    guint cluster_size;
    Op op;
    gboolean marked_before;
} CutCase;

/* The name moves past its old place (it goes straight there), or within
 * reach of it (it waits past both areas), or, in a 1 KiB cluster with no
 * room for a copy, is rewritten in place; marking and unmarking. */
static const CutCase cut_cases[] = {
    { "mark, name to a new place", 20, 4032, 0, mark, FALSE },
    { "mark, name parked, area across pages", 1000, 7152, 0, mark, FALSE },
    { "mark, name in place, 1 KiB cluster", 400, 0, 1024, mark, FALSE },
    { "unmark, name parked", 20, 4032, 0, unmark, TRUE },
    { "unmark, name parked, area across pages", 1000, 7152, 0, unmark, TRUE },
    { "unmark, name in place, 1 KiB cluster", 400, 0, 1024, unmark, TRUE },
};

/* A chain in a fresh directory, in the state CC starts from; *BEFORE and
 * *AFTER the first cluster before and after CC's operation. */
static Chain *
cut_setup(const CutCase *cc, const char *tmp, guint i, GBytes **before, GBytes **after)
{
    g_autofree char *dir = g_strdup_printf("%s/case%u", tmp, i);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    Chain *c = make_chain_sized(dir, cc->name_len, cc->name_at, 0x5a, FALSE, cc->cluster_size);
    g_autoptr(GError) error = NULL;
    if (cc->marked_before)
        g_assert_true(mark(c->path, &error));
    g_assert_no_error(error);
    *before = first_cluster(c->path);
    g_assert_true(cc->op(c->path, &error));
    g_assert_no_error(error);
    assert_state(c, !cc->marked_before);
    assert_qemu_happy(c);
    *after = first_cluster(c->path);
    put_cluster(c->path, *before);
    return c;
}

static void
set_fsize(rlim_t soft)
{
    struct rlimit rl;
    g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &rl), ==, 0);
    rl.rlim_cur = soft;
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
}

/* Where the cut tests work: a roomy tmpfs of our own when there is one (an
 * fdatasync there costs nothing), else a directory in /tmp. */
static char *
cut_dir(void)
{
    if (!no_namespace)
        return mount_tmpfs(16 * 1024 * 1024);
    char *tmp = g_dir_make_tmp("vmlease-cut-XXXXXX", NULL);
    g_assert_nonnull(tmp);
    return tmp;
}

static void
cut_dir_done(char *tmp)
{
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'/*", tmp);
    g_assert_cmpint(system(rm), ==, 0);
    if (!no_namespace) {
        unmount_tmpfs(tmp);
    } else {
        g_assert_cmpint(rmdir(tmp), ==, 0);
        g_free(tmp);
    }
}

/* ---- /cut/rlimit-fsize ----
 * With the file size limit at every offset K from 0 up: the rewrite fails
 * (File too large) and the first cluster is unchanged, until K passes the
 * last byte it writes; from there on it works. */
static void
test_cut_rlimit(void)
{
    struct rlimit rl;
    g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY) {
        g_test_skip("RLIMIT_FSIZE has a hard limit");
        return;
    }
    char *tmp = cut_dir();
    for (guint i = 0; i < G_N_ELEMENTS(cut_cases); i++) {
        const CutCase *cc = &cut_cases[i];
        g_autoptr(GBytes) before = NULL, after = NULL;
        g_autoptr(Chain) c = cut_setup(cc, tmp, i, &before, &after);
        guint64 works_from = 0;
        guint failed = 0;
        for (guint64 k = 0; k <= 3 * PAGE; k++) {
            g_autoptr(GError) error = NULL;
            set_fsize(k);
            gboolean ok = cc->op(c->path, &error);
            set_fsize(RLIM_INFINITY);
            if (ok) {
                if (!works_from)
                    works_from = k;
                assert_cluster(c->path, after, cc->what);
                put_cluster(c->path, before);
                continue;
            }
            if (works_from)
                g_error("%s: failed with the limit at %" G_GUINT64_FORMAT
                        " after working at %" G_GUINT64_FORMAT, cc->what, k, works_from);
            failed++;
            assert_failed(error, c, "File too large", "(its old bytes were put back)");
            assert_cluster(c->path, before, cc->what);
            if (k % 1024 == 0 || k % PAGE == PAGE - 1) {
                assert_state(c, cc->marked_before);
                assert_qemu_happy(c);
            }
        }
        g_test_message("%s: fails with the limit below %" G_GUINT64_FORMAT, cc->what,
                       works_from);
        g_assert_cmpuint(works_from, >, MAX(cc->name_at, 136));
        g_assert_cmpuint(failed, ==, works_from);
        assert_state(c, cc->marked_before);
        assert_qemu_happy(c);
    }
    cut_dir_done(tmp);
}

/* ---- /cut/every-byte ----
 * The rewrite stopped (ENOSPC) after every number of bytes it writes, in
 * any of its writes, the fixed header's last ones included; and every
 * fdatasync failing (EIO): each time the old bytes are back. */
static void
test_cut_every_byte(void)
{
    char *tmp = cut_dir();
    for (guint i = 0; i < G_N_ELEMENTS(cut_cases); i++) {
        const CutCase *cc = &cut_cases[i];
        g_autoptr(GBytes) before = NULL, after = NULL;
        g_autoptr(Chain) c = cut_setup(cc, tmp, i, &before, &after);

        /* Count what a rewrite writes and syncs. */
        g_autoptr(GError) error = NULL;
        inject((gsize)-1, 0, FALSE, 0);
        g_assert_true(cc->op(c->path, &error));
        disarm();
        g_assert_no_error(error);
        gsize bytes = inj.bytes;
        guint syncs = inj.syncs;
        g_test_message("%s: %zu bytes, %u fdatasyncs", cc->what, bytes, syncs);
        g_assert_cmpuint(bytes, >, 0);
        g_assert_cmpuint(syncs, >=, 2);
        assert_cluster(c->path, after, cc->what);
        put_cluster(c->path, before);

        for (gsize b = 0; b <= bytes; b++) {
            inject(b, ENOSPC, FALSE, 0);
            gboolean ok = cc->op(c->path, &error);
            disarm();
            if (b == bytes) {
                g_assert_no_error(error);
                g_assert_true(ok);
                assert_cluster(c->path, after, cc->what);
                put_cluster(c->path, before);
                break;
            }
            g_assert_false(ok);
            g_assert_true(inj.tripped);
            assert_failed(error, c, "No space left on device", "(its old bytes were put back)");
            g_clear_error(&error);
            assert_cluster(c->path, before, cc->what);
            if (b % 256 == 0)
                assert_qemu_happy(c);
        }
        for (guint s = 1; s <= syncs; s++) {
            inject((gsize)-1, 0, FALSE, s);
            g_assert_false(cc->op(c->path, &error));
            disarm();
            assert_failed(error, c, "fdatasync: Input/output error",
                          "(its old bytes were put back)");
            g_clear_error(&error);
            assert_cluster(c->path, before, cc->what);
        }
        assert_state(c, cc->marked_before);
        assert_qemu_happy(c);

        /* When putting the old bytes back fails too, the error says so. */
        inject(bytes / 2, ENOSPC, TRUE, 0);
        g_assert_false(cc->op(c->path, &error));
        disarm();
        assert_failed(error, c, "No space left on device",
                      "putting its old bytes back failed too: No space left on device "
                      "(the header may be damaged: run qemu-img check)");
        g_clear_error(&error);
        put_cluster(c->path, before);
    }
    cut_dir_done(tmp);
}

/* ---- /cut/between-steps ----
 * Stopped for good after each step's fdatasync (as a crash there would,
 * and with every later write failing, the undo too): what is on disk is
 * an image QEMU reads with the same backing file, that we parse, with the
 * in-use bit and the owner extension both there or both not. */
static void
test_cut_between_steps(void)
{
    char *tmp = cut_dir();
    for (guint i = 0; i < G_N_ELEMENTS(cut_cases); i++) {
        const CutCase *cc = &cut_cases[i];
        if (cc->cluster_size)
            continue;   /* rewritten in place: only the undo holds */
        g_autoptr(GBytes) before = NULL, after = NULL;
        g_autoptr(Chain) c = cut_setup(cc, tmp, i, &before, &after);
        g_autoptr(GError) error = NULL;
        inject((gsize)-1, 0, FALSE, 0);
        g_assert_true(cc->op(c->path, &error));
        disarm();
        guint syncs = inj.syncs;
        put_cluster(c->path, before);
        for (guint s = 1; s < syncs; s++) {
            inject((gsize)-1, 0, FALSE, 0);
            inj.stop_after = s;
            g_assert_false(cc->op(c->path, &error));
            disarm();
            g_assert_true(inj.tripped);
            assert_failed(error, c, "Input/output error", "putting its old bytes back failed too");
            g_clear_error(&error);
            assert_qemu_happy(c);
            g_autoptr(VmlQcow2Header) h = read_header(c->path);
            g_assert_cmpstr(h->backing_file, ==, c->backing);
            gboolean bit = !!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE);
            g_assert_cmpint(bit, ==, vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER) != NULL);
            put_cluster(c->path, before);
        }
    }
    cut_dir_done(tmp);
}

int
main(int argc, char **argv)
{
    enter_private_mounts();
    /* RLIMIT_FSIZE then makes write() fail with EFBIG instead of killing. */
    signal(SIGXFSZ, SIG_IGN);
    g_test_init(&argc, &argv, NULL);
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img) {
        g_print("1..0 # SKIP qemu-img is not installed\n");
        return 0;
    }
    g_test_add_func("/nospace/name-moves-into-a-hole", test_name_moves_into_a_hole);
    g_test_add_func("/nospace/area-across-pages-grows-into-a-hole",
                    test_area_across_pages_grows_into_a_hole);
    g_test_add_func("/nospace/area-across-pages-needs-no-new-page",
                    test_area_across_pages_needs_no_new_page);
    g_test_add_func("/nospace/little-space", test_little_space);
    g_test_add_func("/nospace/unmark-moves-name-back-into-a-hole",
                    test_unmark_moves_name_back_into_a_hole);
    g_test_add_func("/nospace/unmark-with-no-room-to-park", test_unmark_with_no_room_to_park);
    g_test_add_func("/nospace/ext4-1k-blocks", test_ext4);
    g_test_add_func("/cut/rlimit-fsize", test_cut_rlimit);
    g_test_add_func("/cut/every-byte", test_cut_every_byte);
    g_test_add_func("/cut/between-steps", test_cut_between_steps);
    return g_test_run();
}
