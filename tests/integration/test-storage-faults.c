/* Storage that fails under vmleased: a lockspace that is read-only when the
 * daemon restarts after a SIGKILL, and a full file system. Whatever fails,
 * no live lease is released and none is granted twice; what cannot be
 * recorded is refused, with the reason. The lockspace lives on a small
 * tmpfs of the test's own, in a private mount namespace. */
#include "harness.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define UUID_A "aaaaaaaa-0000-4000-8000-00000000000a"
#define UUID_B "bbbbbbbb-0000-4000-8000-00000000000b"
#define UUID_C "cccccccc-0000-4000-8000-00000000000c"

typedef struct {
    char *fs;           /* the tmpfs mount point */
    char *lockspace;    /* fs/lockspace */
    VmlTestDaemon *d;
} Setup;

/* A daemon whose lockspace and state directory are on a fresh tmpfs of
 * SIZE. */
static Setup
setup(const char *size)
{
    Setup s;
    s.fs = g_dir_make_tmp("vml-fs-XXXXXX", NULL);
    g_assert_nonnull(s.fs);
    g_autofree char *opts = g_strdup_printf("size=%s,mode=0700", size);
    g_assert_cmpint(mount("vml-test", s.fs, "tmpfs", 0, opts), ==, 0);
    s.lockspace = g_build_filename(s.fs, "lockspace", NULL);
    g_autofree char *state = g_build_filename(s.fs, "state", NULL);
    g_autofree char *conf = g_strdup_printf("lockspace_dir = \"%s\"\nstate_dir = \"%s\"\n",
                                            s.lockspace, state);
    s.d = vml_test_daemon_start(conf);
    return s;
}

static void
teardown(Setup *s)
{
    vml_test_daemon_stop(s->d);
    g_assert_cmpint(umount2(s->fs, MNT_DETACH), ==, 0);
    g_assert_cmpint(rmdir(s->fs), ==, 0);
    g_free(s->lockspace);
    g_free(s->fs);
}

static void
remount(Setup *s, gboolean read_only)
{
    g_assert_cmpint(mount(NULL, s->fs, NULL, MS_REMOUNT | (read_only ? MS_RDONLY : 0), NULL),
                    ==, 0);
}

/* The lock another process would run into on PATH's lock file. */
static int
lock_state(Setup *s, const char *path)
{
    g_autofree char *name = vml_test_lock_file_name(path);
    g_autofree char *lock = g_build_filename(s->lockspace, name, NULL);
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return F_UNLCK;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    close(fd);
    return fl.l_type;
}

static JsonObject *
acquire(gint64 holder, JsonArray *resources, JsonObject **error_params, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", resources);
    return vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, error_params, error);
}

static void
assert_owner(const char *path, pid_t pid, const char *mode)
{
    g_autoptr(JsonArray) owners = vml_test_owners(path);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, pid);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, mode);
}

/* Another VM tries PATH exclusively: refused, naming PID. */
static void
assert_refused_for_others(const char *path, pid_t pid)
{
    VmlTestVm c = vml_test_vm_new(UUID_C, "vm-c");
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = acquire(c.holder, vml_test_resources("exclusive", path, NULL),
                                      &ep, &error);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    JsonArray *owners = json_object_get_array_member(ep, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(owners, 0), "pid"),
                    ==, pid);
    vml_test_vm_free(&c);
}

/* vmleased started on a read-only lockspace: it must refuse to start (it
 * could not lock exclusively again, nor record anything); return its
 * output. */
static char *
start_must_fail(Setup *s)
{
    const char *argv[] = { g_getenv("VMLEASED_BIN"), "--foreground", "--config", s->d->config,
                           NULL };
    g_auto(GStrv) envp = g_environ_setenv(g_get_environ(), "VMLEASE_ROOT", s->d->root, TRUE);
    char *out = NULL, *err = NULL;
    int status = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, envp, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                               &status, &error));
    g_assert_false(g_spawn_check_wait_status(status, NULL));
    g_free(out);
    return err;
}

/* SIGKILL, then the lockspace goes read-only: the daemon says so and waits
 * for it to be writable, instead of dropping the VM's lease; afterwards the
 * VM holds it still and nobody else may take it. */
static void
test_read_only_lockspace_after_sigkill(void)
{
    Setup s = setup("4m");
    g_autofree char *x = vml_test_make_image(s.d, "x.img");
    g_autofree char *y = vml_test_make_image(s.d, "y.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a");
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = acquire(a.holder, vml_test_resources("exclusive", x, NULL), NULL,
                                      &error);
    g_assert_no_error(error);
    g_clear_pointer(&r, json_object_unref);
    r = acquire(a.holder, vml_test_resources("shared", y, NULL), NULL, &error);
    g_assert_no_error(error);

    for (int round = 0; round < 3; round++) {
        vml_test_daemon_kill(s.d, SIGKILL);
        remount(&s, TRUE);
        g_autofree char *err = start_must_fail(&s);
        if (!strstr(err, "read-only"))
            g_error("vmleased on a read-only lockspace said: %s", err);
        remount(&s, FALSE);
        vml_test_daemon_restart(s.d);
        assert_owner(x, a.pid, "exclusive");
        assert_owner(y, a.pid, "shared");
        g_assert_cmpint(lock_state(&s, x), ==, F_WRLCK);
        g_assert_cmpint(lock_state(&s, y), ==, F_RDLCK);
        assert_refused_for_others(x, a.pid);
        assert_refused_for_others(y, a.pid);
    }
    vml_test_vm_free(&a);
    g_assert_true(vml_test_wait_owners(x, 0, 1000));
    teardown(&s);
}

/* Fill FS's free space: a filler file written until ENOSPC. */
static void
fill_up(Setup *s)
{
    g_autofree char *path = g_build_filename(s->fs, "filler", NULL);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    static char block[4096];
    while (write(fd, block, sizeof(block)) > 0)
        ;
    g_assert_cmpint(errno, ==, ENOSPC);
    close(fd);
}

static JsonArray *
resources_of(GPtrArray *paths, guint from, guint to)
{
    JsonArray *a = json_array_new();
    for (guint i = from; i < to; i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "path", paths->pdata[i]);
        json_object_set_string_member(o, "mode", "exclusive");
        json_array_add_object_element(a, o);
    }
    return a;
}

/* A full file system: a grant whose record would need room that is not
 * there is refused and leaves nothing held; what was held stays held, a
 * release still works (its record shrinks), and a SIGKILL then brings back
 * exactly what was granted and not released. */
static void
test_full_file_system(void)
{
    Setup s = setup("1m");
    g_autoptr(GPtrArray) imgs = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < 60; i++) {
        g_autofree char *name = g_strdup_printf("disk-with-a-long-enough-name-%02u.img", i);
        g_ptr_array_add(imgs, vml_test_make_image(s.d, name));
    }
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a");
    g_autoptr(GError) error = NULL;
    /* Every lock file made (and released) before the disk fills: only
     * the record of A needs new room below. */
    g_autoptr(JsonObject) r = acquire(a.holder, resources_of(imgs, 0, 60), NULL, &error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) rp = json_object_new();
    json_object_set_int_member(rp, "holder", a.holder);
    g_autoptr(JsonObject) rr = vml_test_call(FALSE, "io.vmlease.Lease.Release", rp, NULL, NULL,
                                             &error);
    g_assert_no_error(error);
    g_clear_pointer(&r, json_object_unref);
    r = acquire(a.holder, resources_of(imgs, 0, 20), NULL, &error);
    g_assert_no_error(error);
    pid_t b = vml_test_holder_spawn(UUID_B, "vm-b", resources_of(imgs, 59, 60));

    fill_up(&s);
    /* 39 more leases need a second page for A's record: refused. */
    g_autoptr(JsonObject) ep = NULL;
    g_clear_pointer(&r, json_object_unref);
    r = acquire(a.holder, resources_of(imgs, 20, 59), &ep, &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_BACKEND);
    if (!strstr(error->message, "cannot be recorded") || !strstr(error->message, "space"))
        g_error("refusal does not say why: %s", error->message);
    g_clear_error(&error);
    for (guint i = 20; i < 59; i++) {
        g_assert_true(vml_test_wait_owners(imgs->pdata[i], 0, 0));
        g_assert_cmpint(lock_state(&s, imgs->pdata[i]), ==, F_UNLCK);
    }
    for (guint i = 0; i < 20; i++)
        assert_owner(imgs->pdata[i], a.pid, "exclusive");
    assert_owner(imgs->pdata[59], b, "exclusive");

    /* A release needs no room. */
    g_autoptr(JsonObject) one = json_object_new();
    json_object_set_int_member(one, "holder", a.holder);
    json_object_set_array_member(one, "resources", resources_of(imgs, 19, 20));
    g_clear_pointer(&rr, json_object_unref);
    rr = vml_test_call(FALSE, "io.vmlease.Lease.Release", one, NULL, NULL, &error);
    g_assert_no_error(error);

    for (int round = 0; round < 3; round++) {
        vml_test_daemon_kill(s.d, SIGKILL);
        vml_test_daemon_restart(s.d);
        for (guint i = 0; i < 19; i++) {
            assert_owner(imgs->pdata[i], a.pid, "exclusive");
            g_assert_cmpint(lock_state(&s, imgs->pdata[i]), ==, F_WRLCK);
        }
        for (guint i = 19; i < 59; i++) {
            g_assert_true(vml_test_wait_owners(imgs->pdata[i], 0, 0));
            g_assert_cmpint(lock_state(&s, imgs->pdata[i]), ==, F_UNLCK);
        }
        assert_owner(imgs->pdata[59], b, "exclusive");
        assert_refused_for_others(imgs->pdata[0], a.pid);
        assert_refused_for_others(imgs->pdata[59], b);
    }
    vml_test_child_kill(b, SIGKILL);
    vml_test_vm_free(&a);
    teardown(&s);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* Mounts of our own, seen by the daemons we start and nobody else. */
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        g_test_skip("needs root (a private mount namespace for a small tmpfs)");
        return g_test_run();
    }
    g_test_add_func("/storage/read-only-lockspace-after-sigkill",
                    test_read_only_lockspace_after_sigkill);
    g_test_add_func("/storage/full-file-system", test_full_file_system);
    return g_test_run();
}
