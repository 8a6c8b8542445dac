/* Every name of one image is one resource: a lease taken through one name
 * keeps out a holder that asks through any other (symlink, hard link, bind
 * mount, /dev/fd and /proc/self/fd, a loop device and its backing file, a
 * second loop device, a by-id style alias and a second device node, another
 * host's mount point of the same shared filesystem), while a different image
 * is granted. And leases left by the release that keyed them by path move
 * onto their identity when vmleased starts.
 *
 * Root only. The whole test runs in a private mount namespace of its own
 * (made before any daemon starts), so no mount it makes is seen outside;
 * the loop devices it makes are detached by the device it made, at the end
 * of each case, at exit and on a fatal signal. */
#include "harness.h"
#include "vml-client.h"
#include "vml-error.h"
#include "vml-image-identity.h"
#include "vml-owner-text.h"
#include "vml-paths.h"
#include "vml-proc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define UUID_1 "11111111-0000-4000-8000-000000000001"
#define UUID_2 "22222222-0000-4000-8000-000000000002"
#define NAME_1 "vm-one"
#define NAME_2 "vm-two"

static VmlTestDaemon *daemon_;

/* ---- what must be undone whatever happens ----------------------------------- */

/* Loop devices we attached: detached at the end of their case, and at exit
 * or on a fatal signal (a failed assertion aborts: no teardown runs then).
 * Only in this process, never in a forked child. */
#define MAX_LOOPS 16
static char made_loops[MAX_LOOPS][64];
static pid_t main_pid;

static void
detach_loop_now(char *dev)
{
    if (!dev[0])
        return;
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ioctl(fd, LOOP_CLR_FD, 0);
        close(fd);
    }
    dev[0] = '\0';
}

static void
detach_all_loops(void)
{
    if (getpid() != main_pid)
        return;
    for (int i = 0; i < MAX_LOOPS; i++)
        detach_loop_now(made_loops[i]);
}

static void
on_fatal_signal(int sig)
{
    detach_all_loops();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* `losetup -f --show FILE`: the device made, remembered for detaching. */
static char *
loop_attach(const char *file)
{
    g_autofree char *out = NULL, *err = NULL;
    const char *argv[] = { "losetup", "-f", "--show", file, NULL };
    int status;
    g_autoptr(GError) error = NULL;
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                 &status, &error);
    g_assert_no_error(error);
    g_strstrip(out);
    if (!g_spawn_check_wait_status(status, NULL) || !g_str_has_prefix(out, "/dev/loop"))
        g_error("losetup -f --show %s failed: %s%s", file, out, err);
    int slot = -1;
    for (int i = 0; i < MAX_LOOPS && slot < 0; i++)
        if (!made_loops[i][0])
            slot = i;
    g_assert_cmpint(slot, >=, 0);
    g_assert_cmpuint(strlen(out), <, sizeof(made_loops[0]));
    strcpy(made_loops[slot], out);
    return g_strdup(out);
}

/* `losetup -d DEV` of a device we made, and forget it. */
static void
loop_detach(const char *dev)
{
    for (int i = 0; i < MAX_LOOPS; i++) {
        if (!g_str_equal(made_loops[i], dev))
            continue;
        g_autofree char *cmd = g_strdup_printf("losetup -d '%s'", dev);
        int rc = system(cmd);
        if (rc != 0)
            detach_loop_now(made_loops[i]);
        made_loops[i][0] = '\0';
        g_assert_cmpint(rc, ==, 0);
        return;
    }
    g_error("%s is not a loop device this test made", dev);
}

/* ---- small helpers ----------------------------------------------------------- */

static char *
make_image_in(const char *dir, const char *name)
{
    char *path = g_build_filename(dir, name, NULL);
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 1 << 20), ==, 0);
    close(fd);
    return path;
}

static char *
real_path(const char *path)
{
    char *r = realpath(path, NULL);
    if (!r)
        g_error("realpath %s: %s", path, g_strerror(errno));
    char *copy = g_strdup(r);
    free(r);
    return copy;
}

static void
use_daemon(VmlTestDaemon *d)
{
    g_setenv("VMLEASE_ROOT", d->root, TRUE);
}

static JsonObject *
acquire(gint64 holder, const char *mode, const char *path, JsonObject **eparams,
        GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources(mode, path, NULL));
    return vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, eparams, error);
}

static guint
n_held(gint64 holder)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Inquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    return json_array_get_length(json_object_get_array_member(r, "leases"));
}

/* HOLDER gets PATH in MODE: one lease on KEY by CANONICAL. */
static void
assert_granted(gint64 holder, const char *mode, const char *path, const char *canonical,
               const char *key)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = acquire(holder, mode, path, NULL, &error);
    g_assert_no_error(error);
    JsonArray *leases = json_object_get_array_member(r, "leases");
    g_assert_cmpuint(json_array_get_length(leases), ==, 1);
    JsonObject *l = json_array_get_object_element(leases, 0);
    g_assert_cmpstr(json_object_get_string_member(l, "resource"), ==, key);
    g_assert_cmpstr(json_object_get_string_member(l, "path"), ==, canonical);
    g_assert_cmpstr(json_object_get_string_member(l, "mode"), ==, mode);
}

static void
release_all(gint64 holder)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Release", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    g_assert_cmpuint(n_held(holder), ==, 0);
}

/* Who holds the image exclusively, as a conflict must name it. */
typedef struct {
    pid_t pid;
    const char *uuid;
    const char *name;
    const char *host;
    const char *path;   /* the canonical path it took the lease by */
} Expected;

static void
assert_owner(JsonObject *o, const Expected *e, const char *mode)
{
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, e->pid);
    g_assert_cmpstr(json_object_get_string_member(o, "uuid"), ==, e->uuid);
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, e->name);
    g_assert_cmpstr(json_object_get_string_member(o, "host"), ==, e->host);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, mode);
    g_assert_cmpstr(json_object_get_string_member_with_default(o, "path", NULL), ==, e->path);
}

/* The conflict message for GIVEN (resolved to CANONICAL) in MODE, owned by O. */
static char *
conflict_message(const char *given, const char *canonical, const char *key, const char *mode,
                 JsonObject *o)
{
    g_autofree char *who = vml_owner_text(o);
    const char *opath = json_object_get_string_member_with_default(o, "path", NULL);
    g_autofree char *through = g_strcmp0(opath, canonical) != 0
        ? g_strdup_printf(", through %s", opath) : g_strdup("");
    return g_strdup_printf("cannot lock %s (resource %s) %s: in use by %s%s", given, key, mode,
                           who, through);
}

/* HOLDER asking for GIVEN in MODE is refused with a Conflict on KEY naming
 * E alone, and holds nothing afterwards. */
static void
assert_conflict(gint64 holder, const char *mode, const char *given, const char *canonical,
                const char *key, const Expected *e)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = acquire(holder, mode, given, &ep, &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_assert_nonnull(ep);
    g_assert_cmpstr(json_object_get_string_member_with_default(ep, "path", NULL), ==, given);
    g_assert_cmpstr(json_object_get_string_member_with_default(ep, "canonical_path", NULL), ==,
                    canonical);
    g_assert_cmpstr(json_object_get_string_member_with_default(ep, "resource", NULL), ==, key);
    g_assert_cmpstr(json_object_get_string_member_with_default(ep, "mode", NULL), ==, mode);
    JsonArray *owners = json_object_get_array_member(ep, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    assert_owner(o, e, "exclusive");
    g_autofree char *want = conflict_message(given, canonical, key, mode, o);
    g_test_message("%s %s: %s", mode, given, error->message);
    g_assert_cmpstr(error->message, ==, want);
    /* ", through X" exactly when the owner took it by another name. */
    g_autofree char *through = g_strdup_printf(", through %s", e->path);
    g_assert_cmpint(strstr(error->message, through) != NULL, ==,
                    g_strcmp0(e->path, canonical) != 0);
    g_assert_cmpuint(n_held(holder), ==, 0);
}

/* Owners of PATH through daemon D: its one resource object (ref'd). */
static JsonObject *
owners_resource(VmlTestDaemon *d, const char *path)
{
    use_daemon(d);
    g_autoptr(JsonObject) p = json_object_new();
    JsonArray *paths = json_array_new();
    json_array_add_string_element(paths, path);
    json_object_set_array_member(p, "paths", paths);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.Owners", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    JsonArray *res = json_object_get_array_member(r, "resources");
    g_assert_cmpuint(json_array_get_length(res), ==, 1);
    return json_object_ref(json_array_get_object_element(res, 0));
}

/* An exclusive lease through A by a real holder process; a second holder
 * asking through B, exclusive and shared, is refused naming the first;
 * owners of B name it too; a different image is granted to the second. */
static void
check_pair(const char *a, const char *b)
{
    g_autofree char *real_a = real_path(a), *real_b = real_path(b);
    g_autofree char *key = vml_test_resource_key(a);
    g_autofree char *key_b = vml_test_resource_key(b);
    g_assert_cmpstr(key, ==, key_b);
    g_assert_false(key[0] == '/');

    pid_t h1 = vml_test_holder_spawn(UUID_1, NAME_1, vml_test_resources("exclusive", a, NULL));
    VmlTestVm h2 = vml_test_vm_new(UUID_2, NAME_2);
    Expected e = { .pid = h1, .uuid = UUID_1, .name = NAME_1, .host = g_get_host_name(),
                   .path = real_a };

    assert_conflict(h2.holder, "exclusive", b, real_b, key, &e);
    assert_conflict(h2.holder, "shared", b, real_b, key, &e);
    g_assert_cmpint(vml_test_lock_state(daemon_, b), ==, F_WRLCK);

    /* Owners of B: the one resource, held by holder 1 through A. */
    g_autoptr(JsonObject) r0 = owners_resource(daemon_, b);
    g_assert_cmpstr(json_object_get_string_member(r0, "resource"), ==, key);
    JsonArray *owners = json_object_get_array_member(r0, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    assert_owner(json_array_get_object_element(owners, 0), &e, "exclusive");

    /* Control: another image is the second holder's for the asking. */
    g_autofree char *other = make_image_in(daemon_->root, "control.img");
    g_autofree char *other_key = vml_test_resource_key(other);
    g_assert_cmpstr(other_key, !=, key);
    assert_granted(h2.holder, "exclusive", other, other, other_key);
    release_all(h2.holder);
    g_assert_cmpint(unlink(other), ==, 0);

    vml_test_child_kill(h1, SIGKILL);
    g_assert_true(vml_test_wait_owners(a, 0, 5000));
    g_assert_cmpint(vml_test_lock_state(daemon_, a), ==, F_UNLCK);
    /* Free again: B is the second holder's now, and A conflicts with it. */
    assert_granted(h2.holder, "exclusive", b, real_b, key);
    release_all(h2.holder);
    vml_test_vm_free(&h2);
}

/* A fresh directory under the daemon's root for one case. */
static char *
case_dir(const char *name)
{
    char *dir = g_build_filename(daemon_->root, name, NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    return dir;
}

static void
remove_tree(const char *dir)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(cmd), ==, 0);
}

/* ---- 1-3: file names --------------------------------------------------------- */

static void
test_symlink(void)
{
    g_autofree char *dir = case_dir("symlink");
    g_autofree char *img = make_image_in(dir, "disk.img");
    g_autofree char *link = g_build_filename(dir, "alias.img", NULL);
    g_assert_cmpint(symlink("disk.img", link), ==, 0);
    check_pair(img, link);   /* file, then asked through the symlink */
    check_pair(link, img);   /* symlink, then asked through the file */
    remove_tree(dir);
}

static void
test_hard_link(void)
{
    g_autofree char *dir = case_dir("hardlink");
    g_autofree char *img = make_image_in(dir, "disk.img");
    g_autofree char *hard = g_build_filename(dir, "second-name.img", NULL);
    g_assert_cmpint(link(img, hard), ==, 0);
    check_pair(img, hard);
    check_pair(hard, img);
    remove_tree(dir);
}

static void
test_bind_mount(void)
{
    g_autofree char *dir = case_dir("bind");
    g_autofree char *src = g_build_filename(dir, "images", NULL);
    g_autofree char *dst = g_build_filename(dir, "elsewhere", NULL);
    g_assert_cmpint(g_mkdir_with_parents(src, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(dst, 0755), ==, 0);
    g_autofree char *img = make_image_in(src, "disk.img");
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        g_error("bind mount %s at %s: %s", src, dst, g_strerror(errno));
    g_autofree char *under = g_build_filename(dst, "disk.img", NULL);
    /* realpath does not see through a bind mount: two canonical paths. */
    g_autofree char *real_under = real_path(under);
    g_assert_cmpstr(real_under, ==, under);
    check_pair(img, under);
    check_pair(under, img);
    g_assert_cmpint(umount2(dst, MNT_DETACH), ==, 0);
    remove_tree(dir);
}

/* A new image NAME (*IMG, canonically *REAL, keyed *KEY) held exclusive by
 * a new VM, returned. */
static VmlTestVm
hold_new_image(const char *name, char **img, char **real, char **key)
{
    *img = vml_test_make_image(daemon_, name);
    *real = real_path(*img);
    *key = vml_test_resource_key(*real);
    VmlTestVm h = vml_test_vm_new(UUID_1, NAME_1);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = acquire(h.holder, "exclusive", *img, NULL, &error);
    g_assert_no_error(error);
    return h;
}

/* mv a new file over IMG (canonically REAL, keyed OLD_KEY until now);
 * the new file's key, another one. */
static char *
replace_image(const char *img, const char *real, const char *old_key)
{
    g_autofree char *tmp = g_strconcat(img, ".new", NULL);
    g_assert_true(g_file_set_contents(tmp, "new image", -1, NULL));
    g_assert_cmpint(rename(tmp, img), ==, 0);
    char *new_key = vml_test_resource_key(real);
    g_assert_cmpstr(new_key, !=, old_key);
    return new_key;
}

/* A holder releasing by path after the file there was replaced (mv new
 * over old) lets go of the lease it took through that path, not nothing;
 * the new file is then another image, free to take. */
static void
test_release_after_replace(void)
{
    g_autofree char *img = NULL, *real = NULL, *old_key = NULL;
    VmlTestVm h = hold_new_image("replaced.img", &img, &real, &old_key);
    g_autoptr(GError) error = NULL;
    g_autofree char *new_key = replace_image(img, real, old_key);

    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", h.holder);
    JsonArray *res = json_array_new();
    JsonObject *one = json_object_new();
    json_object_set_string_member(one, "path", img);
    json_array_add_object_element(res, one);
    json_object_set_array_member(p, "resources", res);
    g_autoptr(JsonObject) rel = vml_test_call(FALSE, "io.vmlease.Lease.Release", p, NULL, NULL,
                                              &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(rel, "released"), ==, 1);
    g_assert_cmpuint(n_held(h.holder), ==, 0);

    VmlTestVm h2 = vml_test_vm_new(UUID_2, NAME_2);
    g_autoptr(JsonObject) r2 = acquire(h2.holder, "exclusive", img, NULL, &error);
    g_assert_no_error(error);
    JsonObject *l = json_array_get_object_element(json_object_get_array_member(r2, "leases"), 0);
    g_assert_cmpstr(json_object_get_string_member(l, "resource"), ==, new_key);
    vml_test_vm_free(&h2);
    vml_test_vm_free(&h);
}

/* A second acquire through the path a lease was taken by: while that is
 * still the same file, it is the lease held ("held", one lease); a file
 * put there since is a lease of its own, on that file. */
static void
test_reacquire_through_held_path(void)
{
    g_autofree char *img = NULL, *real = NULL, *old_key = NULL;
    VmlTestVm h = hold_new_image("reacquired.img", &img, &real, &old_key);
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonObject) r1 = acquire(h.holder, "exclusive", img, NULL, &error);
    g_assert_no_error(error);
    JsonObject *l = json_array_get_object_element(json_object_get_array_member(r1, "leases"), 0);
    g_assert_cmpstr(json_object_get_string_member(l, "resource"), ==, old_key);
    g_assert_cmpstr(json_object_get_string_member(l, "grant"), ==, "held");
    g_assert_cmpuint(n_held(h.holder), ==, 1);

    g_autofree char *new_key = replace_image(img, real, old_key);
    g_autoptr(JsonObject) r2 = acquire(h.holder, "exclusive", img, NULL, &error);
    g_assert_no_error(error);
    l = json_array_get_object_element(json_object_get_array_member(r2, "leases"), 0);
    g_assert_cmpstr(json_object_get_string_member(l, "resource"), ==, new_key);
    g_assert_cmpstr(json_object_get_string_member(l, "grant"), ==, "new");
    g_assert_cmpuint(n_held(h.holder), ==, 2);
    vml_test_vm_free(&h);
}

/* ---- 4: /dev/fd and /proc/self/fd -------------------------------------------- */


/* sh -c 'exec 3<FILE; exec vmlease ARGS...' */
static void
vmlease_with_fd3(VmlTestRun *r, const char *file, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, "sh");
    g_ptr_array_add(argv, "-c");
    g_ptr_array_add(argv, "exec 3<\"$1\" && shift && exec \"$@\"");
    g_ptr_array_add(argv, "sh");
    g_ptr_array_add(argv, (char *)file);
    g_ptr_array_add(argv, (char *)g_getenv("VMLEASE_BIN"));
    va_list ap;
    va_start(ap, file);
    for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    vml_test_run(r, NULL, (const char *const *)argv->pdata);
}

/* vmlease run MODE FDNAME -- true, with fd 3 open on FILE. */
static void
run_through_fd(VmlTestRun *r, const char *file, const char *mode, const char *fdname)
{
    vmlease_with_fd3(r, file, "run", mode, fdname, "--", "true", NULL);
}

static void
test_fd_names(void)
{
    g_autofree char *dir = case_dir("fdnames");
    g_autofree char *img = make_image_in(dir, "disk.img");
    g_autofree char *hard = g_build_filename(dir, "hard.img", NULL);
    g_assert_cmpint(link(img, hard), ==, 0);
    g_autofree char *key = vml_test_resource_key(img);

    pid_t h1 = vml_test_holder_spawn(UUID_1, NAME_1, vml_test_resources("exclusive", img, NULL));
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    Expected e = { .pid = h1, .uuid = UUID_1, .name = NAME_1, .host = g_get_host_name(),
                   .path = img };
    assert_owner(o, &e, "exclusive");
    /* FILE opened as fd 3 by the shell, named as FDNAME to vmlease. The
     * CLI resolves its own fd name to the path the fd was opened by. */
    struct {
        const char *file;
        const char *fdname;
        const char *mode;
    } cases[] = {
        { img, "/dev/fd/3", "--exclusive" },
        { img, "/proc/self/fd/3", "--exclusive" },
        { hard, "/dev/fd/3", "--exclusive" },
        { hard, "/proc/self/fd/3", "--shared" },
        { img, "/dev/fd/3", "--shared" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_auto(VmlTestRun) r = { 0 };
        run_through_fd(&r, cases[i].file, cases[i].mode, cases[i].fdname);
        g_test_message("vmlease run %s %s (fd 3 on %s): exit %d: %s", cases[i].mode,
                       cases[i].fdname, cases[i].file, r.status, r.err);
        g_assert_cmpint(r.status, ==, 3);
        g_assert_cmpstr(r.out, ==, "");
        g_autofree char *msg = conflict_message(cases[i].file, cases[i].file, key,
                                                cases[i].mode + 2, o);
        g_autofree char *want = g_strdup_printf("vmlease: %s\n", msg);
        g_assert_cmpstr(r.err, ==, want);
        g_autofree char *pid_text = g_strdup_printf("pid %d ", (int)h1);
        g_assert_nonnull(strstr(r.err, pid_text));
        g_assert_nonnull(strstr(r.err, "VM \"" NAME_1 "\""));
        /* Asked through the hard link: the message says by which name it is held. */
        g_autofree char *through = g_strdup_printf(", through %s\n", img);
        g_assert_cmpint(g_str_has_suffix(r.err, through), ==, cases[i].file == hard);
    }
    /* vmlease owners through /dev/fd/3 (on the hard link): the image by
     * the name asked, its key, and the owner by the name it holds it by. */
    g_auto(VmlTestRun) j = { 0 };
    vmlease_with_fd3(&j, hard, "owners", "--json", "/dev/fd/3", NULL);
    g_assert_cmpint(j.status, ==, 0);
    g_autoptr(JsonParser) jp = json_parser_new();
    g_assert_true(json_parser_load_from_data(jp, j.out, -1, NULL));
    JsonArray *jres = json_object_get_array_member(json_node_get_object(json_parser_get_root(jp)),
                                                   "resources");
    g_assert_cmpuint(json_array_get_length(jres), ==, 1);
    JsonObject *jr = json_array_get_object_element(jres, 0);
    g_assert_cmpstr(json_object_get_string_member(jr, "resource"), ==, key);
    g_assert_cmpstr(json_object_get_string_member_with_default(jr, "path", NULL), ==, hard);
    JsonArray *jowners = json_object_get_array_member(jr, "owners");
    g_assert_cmpuint(json_array_get_length(jowners), ==, 1);
    assert_owner(json_array_get_object_element(jowners, 0), &e, "exclusive");

    g_auto(VmlTestRun) t = { 0 };
    vmlease_with_fd3(&t, hard, "owners", "/proc/self/fd/3", NULL);
    g_test_message("vmlease owners /proc/self/fd/3 (fd 3 on %s):\n%s", hard, t.out);
    g_assert_cmpint(t.status, ==, 0);
    g_auto(GStrv) lines = g_strsplit(t.out, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 3);   /* header, one row, "" */
    g_auto(GStrv) cols = g_strsplit_set(lines[0], " ", -1);
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    for (char **c = cols; *c; c++)
        if (**c)
            g_ptr_array_add(names, *c);
    g_ptr_array_add(names, NULL);
    g_autofree char *header = g_strjoinv(" ", (char **)names->pdata);
    g_assert_cmpstr(header, ==, "IMAGE RESOURCE MODE STATE HOST VM UUID PID SINCE");
    g_autofree char *image_col = g_strdup_printf("%s (as %s) ", hard, img);
    g_assert_true(g_str_has_prefix(lines[1], image_col));
    g_autofree char *key_col = g_strdup_printf(" %s ", key);
    g_assert_nonnull(strstr(lines[1], key_col));
    g_assert_nonnull(strstr(lines[1], " exclusive "));
    g_assert_nonnull(strstr(lines[1], " in use "));
    g_assert_nonnull(strstr(lines[1], " " NAME_1 " "));
    g_assert_nonnull(strstr(lines[1], " " UUID_1 " "));
    g_autofree char *pid_col = g_strdup_printf(" %d ", (int)h1);
    g_assert_nonnull(strstr(lines[1], pid_col));

    /* The daemon refuses /proc and /dev/fd names sent raw: they would name
     * the daemon's own fds. */
    VmlTestVm h2 = vml_test_vm_new(UUID_2, NAME_2);
    const char *raw[] = { "/proc/self/fd/3", "/dev/fd/3", NULL };
    for (const char **p = raw; *p; p++) {
        for (int m = 0; m < 2; m++) {
            g_autoptr(GError) error = NULL;
            g_autoptr(JsonObject) ep = NULL;
            g_autoptr(JsonObject) r = acquire(h2.holder, m ? "shared" : "exclusive", *p, &ep,
                                              &error);
            g_assert_null(r);
            g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
            g_assert_nonnull(ep);
            g_assert_cmpstr(json_object_get_string_member_with_default(ep, "parameter", NULL),
                            ==, "path");
            g_assert_cmpuint(n_held(h2.holder), ==, 0);
        }
    }
    /* Nor through a symlink to such a name (or to /dev/stdin, itself one):
     * /proc's magic links are never followed by vmleased. */
    g_autofree char *to_fd = g_build_filename(daemon_->root, "to-proc-fd.img", NULL);
    g_autofree char *to_stdin = g_build_filename(daemon_->root, "to-stdin.img", NULL);
    g_assert_cmpint(symlink("/proc/self/fd/1", to_fd), ==, 0);
    g_assert_cmpint(symlink("/dev/stdin", to_stdin), ==, 0);
    const char *linked[] = { to_fd, to_stdin, NULL };
    for (const char **p = linked; *p; p++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonObject) ep = NULL;
        g_autoptr(JsonObject) r = acquire(h2.holder, "exclusive", *p, &ep, &error);
        g_assert_null(r);
        g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
        g_assert_nonnull(strstr(error->message, "link into /proc"));
        g_assert_cmpuint(n_held(h2.holder), ==, 0);
    }
    g_autoptr(JsonArray) still = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(still), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(still, 0), "pid"),
                    ==, h1);
    vml_test_child_kill(h1, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 5000));

    /* Free: the CLI gets it through /dev/fd/3 (fd 3 on the hard link). */
    g_auto(VmlTestRun) ok = { 0 };
    run_through_fd(&ok, hard, "--exclusive", "/dev/fd/3");
    g_assert_cmpint(ok.status, ==, 0);
    g_assert_cmpstr(ok.err, ==, "");
    vml_test_vm_free(&h2);
    remove_tree(dir);
}

/* ---- 5-6: block devices --------------------------------------------------------- */

typedef struct {
    char *dir;
    char *loops[2];
} LoopFixture;

static void
loop_setup(LoopFixture *f, gconstpointer data)
{
    f->dir = case_dir(data);
}

static void
loop_teardown(LoopFixture *f, G_GNUC_UNUSED gconstpointer data)
{
    for (guint i = 0; i < G_N_ELEMENTS(f->loops); i++) {
        if (f->loops[i])
            loop_detach(f->loops[i]);
        g_clear_pointer(&f->loops[i], g_free);
    }
    remove_tree(f->dir);
    g_clear_pointer(&f->dir, g_free);
}

static void
test_loop_device(LoopFixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autofree char *img = make_image_in(f->dir, "backing.img");
    f->loops[0] = loop_attach(img);
    f->loops[1] = loop_attach(img);
    g_test_message("%s and %s over %s", f->loops[0], f->loops[1], img);
    g_autofree char *key = vml_test_resource_key(img);
    g_assert_true(g_str_has_prefix(key, "file:"));

    check_pair(img, f->loops[0]);           /* the backing file, then the device */
    check_pair(f->loops[0], img);           /* the device, then its backing file */
    check_pair(f->loops[0], f->loops[1]);   /* two loop devices over one file */
    check_pair(f->loops[1], f->loops[0]);
}

static void
test_block_alias(LoopFixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autofree char *img = make_image_in(f->dir, "backing.img");
    f->loops[0] = loop_attach(img);
    const char *dev = f->loops[0];
    struct stat st;
    g_assert_cmpint(stat(dev, &st), ==, 0);
    g_assert_true(S_ISBLK(st.st_mode));

    /* What udev would make: /dev/disk/by-id/virtio-TEST -> ../../loopN. */
    g_autofree char *by_id = g_build_filename(f->dir, "by-id", NULL);
    g_assert_cmpint(g_mkdir_with_parents(by_id, 0755), ==, 0);
    g_autofree char *alias = g_build_filename(by_id, "virtio-TEST", NULL);
    g_assert_cmpint(symlink(dev, alias), ==, 0);
    /* A second node of the same device. */
    g_autofree char *node = g_build_filename(f->dir, "node-of-loop", NULL);
    g_assert_cmpint(mknod(node, S_IFBLK | 0600, st.st_rdev), ==, 0);
    g_test_message("%s (%u:%u): alias %s, node %s", dev, major(st.st_rdev), minor(st.st_rdev),
                   alias, node);

    check_pair(dev, alias);
    check_pair(dev, node);
    check_pair(node, dev);
    check_pair(alias, node);
}

/* ---- 7: two hosts, one shared filesystem ---------------------------------------- */

typedef struct {
    char *base;         /* everything of this case */
    char *shared;       /* the shared filesystem (a tmpfs), mounted here in our namespace */
    char *lockspace;    /* one lockspace for both daemons */
    VmlTestDaemon *host[2];
    char *mnt[2];       /* each host's mount point of the shared filesystem */
} TwoHosts;

static const char *const host_names[2] = { "hostA", "hostB" };

/* In a forked child: enter the namespaces of daemon D (mount, UTS). */
static void
enter_host(VmlTestDaemon *d)
{
    static const char *const ns[] = { "mnt", "uts" };
    for (guint i = 0; i < G_N_ELEMENTS(ns); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)d->pid, ns[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, 0) < 0)
            _exit(121);
        close(fd);
    }
}

/* vmleased in a mount + UTS namespace of its own (hostname HOST) where
 * SHARED is bind-mounted at MNT alone. */
static VmlTestDaemon *
host_daemon_start(const char *host, const char *lockspace, const char *shared, const char *mnt,
                  const char *storage)
{
    g_autoptr(GError) error = NULL;
    VmlTestDaemon *d = g_new0(VmlTestDaemon, 1);
    d->root = g_dir_make_tmp("vmlease-test-XXXXXX", &error);
    g_assert_no_error(error);
    d->config = g_build_filename(d->root, "vmleased.conf", NULL);
    g_autofree char *conf = g_strdup_printf("lockspace_dir = \"%s\"\n%s%s%s", lockspace,
                                            storage ? "shared_storage = [ \"" : "",
                                            storage ? storage : "", storage ? "\" ]\n" : "");
    g_file_set_contents(d->config, conf, -1, &error);
    g_assert_no_error(error);
    g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
    const char *bin = g_getenv("VMLEASED_BIN");
    g_assert_nonnull(bin);
    use_daemon(d);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0)
            _exit(120);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (unshare(CLONE_NEWNS | CLONE_NEWUTS) < 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            sethostname(host, strlen(host)) < 0 ||
            mount(shared, mnt, NULL, MS_BIND, NULL) < 0 ||
            umount2(shared, MNT_DETACH) < 0) {
            dprintf(2, "host %s: namespace set-up failed: errno %d\n", host, errno);
            _exit(122);
        }
        execl(bin, bin, "--foreground", "--config", d->config, (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
    vml_test_daemon_wait_ready(d);
    return d;
}

typedef struct {
    VmlTestDaemon *d;
    const char *uuid, *name;
    JsonArray *resources;
} HostHolder;

static gboolean
host_holder_setup(gpointer data)
{
    const HostHolder *h = data;
    enter_host(h->d);
    return vml_test_register_and_acquire(h->uuid, h->name, h->resources);
}

/* A holder process in D's host: registers, acquires RESOURCES (consumed)
 * with fds and keeps them, like vml_test_holder_spawn. */
static pid_t
host_holder_spawn(VmlTestDaemon *d, const char *uuid, const char *name, JsonArray *resources)
{
    use_daemon(d);
    HostHolder h = { d, uuid, name, resources };
    pid_t pid = vml_test_keeper_spawn(host_holder_setup, &h);
    json_array_unref(resources);
    return pid;
}

static gboolean
enter_host_setup(gpointer d)
{
    enter_host(d);
    return TRUE;
}

/* A sleeping process in D's host, registered there: the second holder. */
static VmlTestVm
host_vm_new(VmlTestDaemon *d, const char *uuid, const char *name)
{
    use_daemon(d);
    pid_t pid = vml_test_keeper_spawn(enter_host_setup, d);
    VmlTestVm vm = { .pid = pid, .holder = vml_test_register(uuid, name, pid) };
    return vm;
}

static void
two_hosts(gboolean with_names)
{
    TwoHosts t = { 0 };
    g_autoptr(GError) error = NULL;
    g_autofree char *tmp = g_dir_make_tmp("vmlease-ident-hosts-XXXXXX", &error);
    g_assert_no_error(error);
    t.base = real_path(tmp);
    t.shared = g_build_filename(t.base, "shared", NULL);
    t.lockspace = g_build_filename(t.base, "lockspace", NULL);
    t.mnt[0] = g_build_filename(t.base, "hostA", "images", NULL);
    t.mnt[1] = g_build_filename(t.base, "hostB", "vm", NULL);
    for (int i = 0; i < 2; i++)
        g_assert_cmpint(g_mkdir_with_parents(t.mnt[i], 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(t.shared, 0755), ==, 0);
    g_assert_cmpint(g_mkdir_with_parents(t.lockspace, 0700), ==, 0);
    /* Mounted in our private namespace only. */
    if (mount("vmlease-ident", t.shared, "tmpfs", 0, "mode=0755,size=16m") < 0)
        g_error("tmpfs at %s: %s", t.shared, g_strerror(errno));
    g_autofree char *disk = make_image_in(t.shared, "disk.img");
    g_autofree char *other = make_image_in(t.shared, "other.img");
    struct stat st, st_other;
    g_assert_cmpint(stat(disk, &st), ==, 0);
    g_assert_cmpint(stat(other, &st_other), ==, 0);

    g_autofree char *key = NULL, *other_key = NULL;
    if (with_names) {
        key = g_strdup_printf("file:name:images:%" G_GUINT64_FORMAT, (guint64)st.st_ino);
        other_key = g_strdup_printf("file:name:images:%" G_GUINT64_FORMAT,
                                    (guint64)st_other.st_ino);
    } else {
        key = vml_test_resource_key(disk);
        other_key = vml_test_resource_key(other);
    }
    for (int i = 0; i < 2; i++) {
        g_autofree char *storage = with_names ? g_strdup_printf("images=%s", t.mnt[i]) : NULL;
        t.host[i] = host_daemon_start(host_names[i], t.lockspace, t.shared, t.mnt[i], storage);
    }
    /* Each host sees the shared filesystem at its own mount point alone. */
    g_autofree char *path_a = g_build_filename(t.mnt[0], "disk.img", NULL);
    g_autofree char *path_b = g_build_filename(t.mnt[1], "disk.img", NULL);
    g_autofree char *other_b = g_build_filename(t.mnt[1], "other.img", NULL);
    g_assert_false(g_file_test(path_a, G_FILE_TEST_EXISTS));   /* not in our namespace */
    for (int i = 0; i < 2; i++) {
        g_autofree char *mountinfo = NULL;
        g_autofree char *mi = g_strdup_printf("/proc/%d/mountinfo", (int)t.host[i]->pid);
        g_assert_true(g_file_get_contents(mi, &mountinfo, NULL, NULL));
        g_autofree char *own = g_strdup_printf(" %s ", t.mnt[i]);
        g_autofree char *theirs = g_strdup_printf(" %s ", t.mnt[1 - i]);
        g_autofree char *ours = g_strdup_printf(" %s ", t.shared);
        g_assert_nonnull(strstr(mountinfo, own));
        g_assert_null(strstr(mountinfo, theirs));
        g_assert_null(strstr(mountinfo, ours));
    }

    pid_t h1 = host_holder_spawn(t.host[0], UUID_1, NAME_1,
                                 vml_test_resources("exclusive", path_a, NULL));
    g_autoptr(JsonObject) ra = owners_resource(t.host[0], path_a);
    g_assert_cmpstr(json_object_get_string_member(ra, "resource"), ==, key);
    if (with_names) {
        g_assert_true(g_str_has_prefix(json_object_get_string_member(ra, "resource"),
                                       "file:name:images:"));
        g_autofree char *ino = g_strdup_printf(":%" G_GUINT64_FORMAT, (guint64)st.st_ino);
        g_assert_true(g_str_has_suffix(json_object_get_string_member(ra, "resource"), ino));
    }
    Expected e = { .pid = h1, .uuid = UUID_1, .name = NAME_1, .host = host_names[0],
                   .path = path_a };
    JsonArray *oa = json_object_get_array_member(ra, "owners");
    g_assert_cmpuint(json_array_get_length(oa), ==, 1);
    assert_owner(json_array_get_object_element(oa, 0), &e, "exclusive");

    VmlTestVm h2 = host_vm_new(t.host[1], UUID_2, NAME_2);
    assert_conflict(h2.holder, "exclusive", path_b, path_b, key, &e);
    assert_conflict(h2.holder, "shared", path_b, path_b, key, &e);
    g_autoptr(JsonObject) rb = owners_resource(t.host[1], path_b);
    g_assert_cmpstr(json_object_get_string_member(rb, "resource"), ==, key);
    JsonArray *ob = json_object_get_array_member(rb, "owners");
    g_assert_cmpuint(json_array_get_length(ob), ==, 1);
    assert_owner(json_array_get_object_element(ob, 0), &e, "exclusive");

    /* Control: another image of the shared filesystem is B's for the asking. */
    use_daemon(t.host[1]);
    assert_granted(h2.holder, "exclusive", other_b, other_b, other_key);
    release_all(h2.holder);

    /* Holder A gone: B gets the image through its own name. */
    vml_test_child_kill(h1, SIGKILL);
    gboolean freed = FALSE;
    for (int i = 0; i < 500 && !freed; i++) {
        g_autoptr(JsonObject) r = owners_resource(t.host[1], path_b);
        freed = json_array_get_length(json_object_get_array_member(r, "owners")) == 0;
        if (!freed)
            g_usleep(10000);
    }
    g_assert_true(freed);
    use_daemon(t.host[1]);
    assert_granted(h2.holder, "exclusive", path_b, path_b, key);
    release_all(h2.holder);

    vml_test_vm_free(&h2);
    for (int i = 0; i < 2; i++)
        vml_test_daemon_stop(t.host[i]);
    use_daemon(daemon_);
    g_assert_cmpint(umount2(t.shared, MNT_DETACH), ==, 0);
    remove_tree(t.base);
    g_free(t.base);
    g_free(t.shared);
    g_free(t.lockspace);
    g_free(t.mnt[0]);
    g_free(t.mnt[1]);
}

static void
test_two_hosts_plain(void)
{
    two_hosts(FALSE);
}

static void
test_two_hosts_shared_storage(void)
{
    two_hosts(TRUE);
}

/* In a keeper: what the previous release left for an exclusive lease on
 * lock file PATH: generation 1, an untagged OFD write lock on bytes 0-1. */
static gboolean
lock_as_old_release(gpointer path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    guint64 le = GUINT64_TO_LE(1);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 2 };
    return fd >= 0 && pwrite(fd, &le, sizeof(le), 0) == sizeof(le) &&
           fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

/* ---- 8: leases of the release that keyed them by path ---------------------------- */

static int
ofd_lock_state(const char *lock_file)
{
    int fd = open(lock_file, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return F_UNLCK;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    close(fd);
    return fl.l_type;
}

static void
test_upgrade_from_path_keys(void)
{
    g_autoptr(GError) error = NULL;
    VmlTestDaemon *d = g_new0(VmlTestDaemon, 1);
    d->root = g_dir_make_tmp("vmlease-test-XXXXXX", &error);
    g_assert_no_error(error);
    d->config = g_build_filename(d->root, "vmleased.conf", NULL);
    g_file_set_contents(d->config, "# test\n", -1, &error);
    g_assert_no_error(error);
    g_autofree char *img = make_image_in(d->root, "legacy.img");
    g_autofree char *canon = real_path(img);
    g_autofree char *hard = g_build_filename(d->root, "legacy-hard.img", NULL);
    g_assert_cmpint(link(img, hard), ==, 0);
    g_autofree char *lockspace = g_build_filename(d->root, "lockspace", NULL);
    g_assert_cmpint(g_mkdir_with_parents(lockspace, 0700), ==, 0);

    /* The old lock: lockspace/<sha256 of the canonical path>.lock, OFD
     * write lock on bytes 0 and 1, generation 1, kept by the VM process. */
    g_autofree char *old_hash = vml_key_hash(canon);
    g_autofree char *old_name = g_strdup_printf("%s.lock", old_hash);
    g_autofree char *old_lock = g_build_filename(lockspace, old_name, NULL);
    pid_t vm = vml_test_keeper_spawn(lock_as_old_release, old_lock);
    g_assert_cmpint(ofd_lock_state(old_lock), ==, F_WRLCK);

    /* Its record: lockspace/<tag>.holder, the lease keyed by the path. */
    guint64 start_time = 0;
    g_assert_true(vml_proc_start_time(vm, &start_time, NULL));
    gint64 since = g_get_real_time() / G_USEC_PER_SEC - 60;
    g_autofree char *ident = g_strdup_printf("%s:%s:%d:%" G_GUINT64_FORMAT,
                                             vml_host_machine_id(), vml_host_boot_id(), (int)vm,
                                             start_time);
    g_autofree char *ident_hash = vml_key_hash(ident);
    g_autofree char *tag = g_strndup(ident_hash, 32);
    g_autofree char *rec_name = g_strdup_printf("%s.holder", tag);
    g_autofree char *record = g_build_filename(lockspace, rec_name, NULL);
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "host");
    json_builder_add_string_value(b, vml_host_name());
    json_builder_set_member_name(b, "machine_id");
    json_builder_add_string_value(b, vml_host_machine_id());
    json_builder_set_member_name(b, "boot_id");
    json_builder_add_string_value(b, vml_host_boot_id());
    json_builder_set_member_name(b, "uuid");
    json_builder_add_string_value(b, UUID_1);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, NAME_1);
    json_builder_set_member_name(b, "holder");
    json_builder_add_int_value(b, 1);
    json_builder_set_member_name(b, "pid");
    json_builder_add_int_value(b, vm);
    json_builder_set_member_name(b, "start_time");
    json_builder_add_int_value(b, (gint64)start_time);
    json_builder_set_member_name(b, "since");
    json_builder_add_int_value(b, since);
    json_builder_set_member_name(b, "uid");
    json_builder_add_int_value(b, 0);
    json_builder_set_member_name(b, "on_lockfailure");
    json_builder_add_string_value(b, "default");
    json_builder_set_member_name(b, "program");
    json_builder_add_string_value(b, "sleep");
    json_builder_set_member_name(b, "leases");
    json_builder_begin_array(b);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "resource");
    json_builder_add_string_value(b, canon);
    json_builder_set_member_name(b, "mode");
    json_builder_add_string_value(b, "exclusive");
    json_builder_set_member_name(b, "generation");
    json_builder_add_int_value(b, 1);
    json_builder_set_member_name(b, "since");
    json_builder_add_int_value(b, since);
    json_builder_end_object(b);
    json_builder_end_array(b);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    g_autofree char *text = json_to_string(root, FALSE);
    g_assert_true(g_file_set_contents(record, text, -1, NULL));
    g_assert_cmpint(chmod(record, 0600), ==, 0);

    /* The new release starts on that lockspace. */
    use_daemon(d);
    vml_test_daemon_restart(d);

    g_autofree char *key = vml_test_resource_key(img);
    g_assert_false(vml_key_is_legacy_path(key));
    Expected e = { .pid = vm, .uuid = UUID_1, .name = NAME_1, .host = g_get_host_name(),
                   .path = canon };
    g_autoptr(JsonObject) r0 = owners_resource(d, img);
    g_assert_cmpstr(json_object_get_string_member(r0, "resource"), ==, key);
    g_assert_cmpstr(json_object_get_string_member(r0, "path"), ==, canon);
    JsonArray *owners = json_object_get_array_member(r0, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    assert_owner(o, &e, "exclusive");
    g_assert_cmpint(json_object_get_int_member(o, "generation"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "since"), ==, since);

    /* The lock moved: the old file free, the identity's file locked. */
    g_assert_cmpint(ofd_lock_state(old_lock), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);
    g_autofree char *new_name = vml_test_lock_file_name(img);
    g_assert_cmpstr(new_name, !=, old_name);

    /* The record names the identity and the path now. */
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_file(p, record, NULL));
    JsonObject *rec = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpint(json_object_get_int_member(rec, "pid"), ==, vm);
    g_assert_cmpstr(json_object_get_string_member(rec, "uuid"), ==, UUID_1);
    /* Leases, then the null that ends a record (holder-record.h). */
    JsonArray *leases = json_object_get_array_member(rec, "leases");
    g_assert_cmpuint(json_array_get_length(leases), ==, 2);
    g_assert_true(JSON_NODE_HOLDS_NULL(json_array_get_element(leases, 1)));
    JsonObject *l = json_array_get_object_element(leases, 0);
    g_assert_cmpstr(json_object_get_string_member(l, "resource"), ==, key);
    g_assert_cmpstr(json_object_get_string_member_with_default(l, "path", NULL), ==, canon);
    g_assert_cmpstr(json_object_get_string_member(l, "mode"), ==, "exclusive");
    g_assert_cmpint(json_object_get_int_member(l, "generation"), ==, 1);

    /* Another name of the image conflicts, naming the restored holder. */
    VmlTestVm h2 = vml_test_vm_new(UUID_2, NAME_2);
    g_autofree char *real_hard = real_path(hard);
    assert_conflict(h2.holder, "exclusive", hard, real_hard, key, &e);
    assert_conflict(h2.holder, "shared", hard, real_hard, key, &e);
    assert_conflict(h2.holder, "exclusive", img, canon, key, &e);

    /* The VM exits: the image is free. */
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 5000));
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_UNLCK);
    g_assert_cmpint(ofd_lock_state(old_lock), ==, F_UNLCK);
    assert_granted(h2.holder, "exclusive", hard, real_hard, key);
    release_all(h2.holder);
    vml_test_vm_free(&h2);
    vml_test_daemon_stop(d);
    use_daemon(daemon_);
}

/* ---- main ------------------------------------------------------------------------ */

static void
skip_not_root(void)
{
    g_test_skip("needs root: mounts, loop devices, device nodes, namespaces");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (geteuid() != 0) {
        g_test_add_func("/identity/needs-root", skip_not_root);
        return g_test_run();
    }
    main_pid = getpid();
    atexit(detach_all_loops);
    const int fatal[] = { SIGABRT, SIGTRAP, SIGSEGV, SIGBUS, SIGTERM, SIGINT, SIGHUP };
    for (guint i = 0; i < G_N_ELEMENTS(fatal); i++)
        signal(fatal[i], on_fatal_signal);

    /* A private mount namespace before any daemon starts: the daemons share
     * it, and none of our mounts is seen outside. */
    g_autofree char *ns_before = g_file_read_link("/proc/self/ns/mnt", NULL);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        g_error("private mount namespace: %s", g_strerror(errno));
    g_autofree char *ns_after = g_file_read_link("/proc/self/ns/mnt", NULL);
    g_assert_cmpstr(ns_before, !=, ns_after);

    daemon_ = vml_test_daemon_start(NULL);
    g_test_add_func("/identity/symlink", test_symlink);
    g_test_add_func("/identity/hard-link", test_hard_link);
    g_test_add_func("/identity/bind-mount", test_bind_mount);
    g_test_add_func("/identity/dev-fd-and-proc-self-fd", test_fd_names);
    g_test_add_func("/identity/release-after-replace", test_release_after_replace);
    g_test_add_func("/identity/reacquire-through-held-path", test_reacquire_through_held_path);
    g_test_add("/identity/loop-device", LoopFixture, "loop", loop_setup, test_loop_device,
               loop_teardown);
    g_test_add("/identity/block-alias", LoopFixture, "alias", loop_setup, test_block_alias,
               loop_teardown);
    g_test_add_func("/identity/two-hosts/no-shared-storage", test_two_hosts_plain);
    g_test_add_func("/identity/two-hosts/shared-storage", test_two_hosts_shared_storage);
    g_test_add_func("/identity/upgrade-from-path-keys", test_upgrade_from_path_keys);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    detach_all_loops();
    return rc;
}
