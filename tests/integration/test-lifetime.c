/* A lease lives exactly as long as its holder process, whatever happens to
 * vmleased: holder death releases at once; daemon SIGKILL, restart and
 * SIGUSR1 re-exec drop nothing. Also: who may talk to the daemon at all. */
#include "harness.h"
#include "vml-client.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define UUID_A "aaaaaaaa-0000-4000-8000-000000000001"
#define UUID_B "bbbbbbbb-0000-4000-8000-000000000002"
#define UUID_C "cccccccc-0000-4000-8000-000000000003"


/* Try an exclusive lease for a fresh holder; return the conflict's owners
 * (NULL if it was granted). */
static JsonArray *
try_exclusive(const char *path, pid_t *pid_out)
{
    pid_t pid = vml_test_child_spawn();
    gint64 holder = vml_test_register(UUID_C, "vm-c", pid);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", path, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, &ep, &error);
    *pid_out = pid;
    if (r)
        return NULL;
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    return json_array_ref(json_object_get_array_member(ep, "owners"));
}

static void
assert_sole_owner(const char *path, pid_t pid, const char *name, const char *mode)
{
    g_autoptr(JsonArray) owners = vml_test_owners(path);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, pid);
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, name);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, mode);
}

static void
test_holder_sigkill_releases(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    g_autofree char *base = vml_test_make_image(d, "base.img");
    JsonArray *res = vml_test_resources("exclusive", img, NULL);
    JsonObject *b = json_object_new();
    json_object_set_string_member(b, "path", base);
    json_object_set_string_member(b, "mode", "shared");
    json_array_add_object_element(res, b);
    pid_t vm = vml_test_holder_spawn(UUID_A, "vm-a", res);
    assert_sole_owner(img, vm, "vm-a", "exclusive");
    assert_sole_owner(base, vm, "vm-a", "shared");

    gint64 t0 = g_get_monotonic_time();
    vml_test_child_kill(vm, SIGKILL);
    /* Released within 100 ms: both resources free, lock files unlocked. */
    g_assert_true(vml_test_wait_owners(img, 0, 100));
    g_assert_true(vml_test_wait_owners(base, 0, 100));
    gint64 elapsed_us = g_get_monotonic_time() - t0;
    g_test_message("released %" G_GINT64_FORMAT " us after SIGKILL", elapsed_us);
    g_assert_cmpint(elapsed_us, <, 100000);
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(d, base), ==, F_UNLCK);
    g_assert_cmpint(vml_test_status_int("holders"), ==, 0);
    vml_test_daemon_stop(d);
}

static void
test_daemon_sigkill_keeps_leases(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    pid_t vm = vml_test_holder_spawn(UUID_A, "vm-a", vml_test_resources("exclusive", img, NULL));

    vml_test_daemon_kill(d, SIGKILL);
    /* With no daemon at all the lock is still there, carried by the VM's fd. */
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);

    vml_test_daemon_restart(d);
    assert_sole_owner(img, vm, "vm-a", "exclusive");
    g_assert_cmpint(vml_test_status_int("holders"), ==, 1);
    g_assert_cmpint(vml_test_status_int("leases"), ==, 1);
    pid_t other;
    g_autoptr(JsonArray) owners = try_exclusive(img, &other);
    g_assert_nonnull(owners);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(owners, 0), "pid"),
                    ==, vm);

    /* The restarted daemon watches the holder again: its exit releases. */
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_UNLCK);
    vml_test_child_kill(other, SIGKILL);
    vml_test_daemon_stop(d);
}

static void
test_daemon_restart_keeps_leases(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    pid_t vm = vml_test_holder_spawn(UUID_A, "vm-a", vml_test_resources("shared", img, NULL));

    vml_test_daemon_kill(d, SIGTERM);
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_RDLCK);
    vml_test_daemon_restart(d);
    assert_sole_owner(img, vm, "vm-a", "shared");
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
}

static void
test_reexec_keeps_every_lease(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *i1 = vml_test_make_image(d, "one.img");
    g_autofree char *i2 = vml_test_make_image(d, "two.img");
    g_autofree char *i3 = vml_test_make_image(d, "three.img");
    /* One VM keeps its fds; another holder relies on the daemon alone. */
    pid_t a = vml_test_holder_spawn(UUID_A, "vm-a", vml_test_resources("exclusive", i1, i2, NULL));
    pid_t b = vml_test_child_spawn();
    gint64 hb = vml_test_register(UUID_B, "vm-b", b);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", hb);
    json_object_set_array_member(p, "resources", vml_test_resources("shared", i3, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL, &error);
    g_assert_no_error(error);
    gint64 started = vml_test_status_int("started");
    pid_t daemon_pid = vml_test_status_int("pid");
    /* A client connected across the re-exec keeps its connection. */
    g_autoptr(VmlClient) kept = vml_client_connect_admin(&error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) before = vml_client_call(kept, "io.vmlease.Admin.Status", NULL, NULL, 0,
                                                   NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(before, "reexecs"), ==, 0);

    kill(d->pid, SIGUSR1);
    for (int i = 0; i < 500 && vml_test_status_int("reexecs") != 1; i++)
        g_usleep(10000);
    g_assert_cmpint(vml_test_status_int("reexecs"), ==, 1);
    g_autoptr(JsonObject) after = vml_client_call(kept, "io.vmlease.Admin.Status", NULL, NULL, 0,
                                                  NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(after, "reexecs"), ==, 1);
    g_assert_cmpint(vml_test_status_int("pid"), ==, daemon_pid);
    g_assert_cmpint(vml_test_status_int("started"), ==, started);
    g_assert_cmpint(vml_test_status_int("holders"), ==, 2);
    g_assert_cmpint(vml_test_status_int("leases"), ==, 3);
    assert_sole_owner(i1, a, "vm-a", "exclusive");
    assert_sole_owner(i2, a, "vm-a", "exclusive");
    assert_sole_owner(i3, b, "vm-b", "shared");
    g_assert_cmpint(vml_test_lock_state(d, i1), ==, F_WRLCK);
    g_assert_cmpint(vml_test_lock_state(d, i3), ==, F_RDLCK);

    /* The holder ids survive too: B can still release by id. */
    g_autoptr(JsonObject) rel = json_object_new();
    json_object_set_int_member(rel, "holder", hb);
    g_autoptr(JsonObject) rr = vml_test_call(FALSE, "io.vmlease.Lease.Release", rel, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(rr, "released"), ==, 1);
    g_assert_cmpint(vml_test_lock_state(d, i3), ==, F_UNLCK);

    /* And a second re-exec, then the watch still works. */
    kill(d->pid, SIGUSR1);
    for (int i = 0; i < 500 && vml_test_status_int("reexecs") != 2; i++)
        g_usleep(10000);
    g_assert_cmpint(vml_test_status_int("reexecs"), ==, 2);
    vml_test_child_kill(a, SIGKILL);
    g_assert_true(vml_test_wait_owners(i1, 0, 1000));
    g_assert_cmpint(vml_test_lock_state(d, i1), ==, F_UNLCK);
    vml_test_child_kill(b, SIGKILL);
    vml_test_daemon_stop(d);
}

/* SIGUSR1 (re-exec) twice in a row, the second while the new image is
 * still starting: it re-executes, never dies, and keeps every lease. (A
 * fresh start blocks the signal from its first code, in a constructor;
 * only the dynamic loader's run before it is left, not tested: timing.) */
static void
test_reexec_signal_storms(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *img = vml_test_make_image(d, "storm.img");
    pid_t a = vml_test_holder_spawn(UUID_A, "vm-a", vml_test_resources("exclusive", img, NULL));
    pid_t daemon_pid = vml_test_status_int("pid");
    for (int round = 0; round < 15; round++) {
        gint64 before = vml_test_status_int("reexecs");
        kill(d->pid, SIGUSR1);
        g_usleep(1000 + g_random_int_range(0, 9000));
        kill(d->pid, SIGUSR1);
        /* Two re-execs, or one if the second came before the first began. */
        for (int i = 0; i < 500 && vml_test_status_int("reexecs") < before + 1; i++)
            g_usleep(10000);
        g_usleep(50000);
        g_assert_cmpint(waitpid(d->pid, NULL, WNOHANG), ==, 0);
        g_assert_cmpint(vml_test_status_int("pid"), ==, daemon_pid);
        g_assert_cmpint(vml_test_status_int("reexecs"), >=, before + 1);
        assert_sole_owner(img, a, "vm-a", "exclusive");
    }
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);
    vml_test_child_kill(a, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
}

/* Acquire RESOURCES (consumed) for HOLDER, without fds. */
static void
acquire_ok(gint64 holder, JsonArray *resources)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", resources);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL, &error);
    g_assert_no_error(error);
}

static void
release_ok(gint64 holder, const char *path)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", path, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Release", p, NULL, NULL, &error);
    g_assert_no_error(error);
}

/* A SIGKILL right after a change (the reply is the last thing before it,
 * well inside the state file's 200 ms delay): the restart finds the
 * change, not the snapshot before it; 20 rounds of a downgrade, an
 * upgrade, a release and a hand-over. */
static void
test_crash_right_after_a_change(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *x = vml_test_make_image(d, "x.img");
    g_autofree char *y = vml_test_make_image(d, "y.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a");
    VmlTestVm b = vml_test_vm_new(UUID_B, "vm-b");
    for (int round = 0; round < 20; round++) {
        /* A downgrade: back shared, and so another reader is let in. */
        acquire_ok(a.holder, vml_test_resources("exclusive", x, NULL));
        g_usleep(300 * 1000);   /* the snapshot says exclusive */
        acquire_ok(a.holder, vml_test_resources("shared", x, NULL));
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        assert_sole_owner(x, a.pid, "vm-a", "shared");
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_RDLCK);
        acquire_ok(b.holder, vml_test_resources("shared", x, NULL));
        release_ok(b.holder, x);
        release_ok(a.holder, x);
        /* An upgrade: back exclusive, not shared. */
        acquire_ok(a.holder, vml_test_resources("shared", x, NULL));
        g_usleep(300 * 1000);   /* the snapshot says shared */
        acquire_ok(a.holder, vml_test_resources("exclusive", x, NULL));
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        assert_sole_owner(x, a.pid, "vm-a", "exclusive");
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_WRLCK);
        /* A release: back released, not held. */
        g_usleep(300 * 1000);
        release_ok(a.holder, x);
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        g_assert_true(vml_test_wait_owners(x, 0, 0));
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_UNLCK);
        /* A lets go of Y, B takes it: B holds it after the restart. */
        acquire_ok(a.holder, vml_test_resources("exclusive", y, NULL));
        g_usleep(300 * 1000);
        release_ok(a.holder, y);
        acquire_ok(b.holder, vml_test_resources("exclusive", y, NULL));
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        assert_sole_owner(y, b.pid, "vm-b", "exclusive");
        release_ok(b.holder, y);
    }
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
    vml_test_daemon_stop(d);
}

typedef struct {
    gint64 holder;
    pid_t keeper;   /* a child that inherited the lock fds, or 0 */
} ScriptedVm;

/* One call from inside a scripted VM; FALSE unless it succeeded. */
static gboolean
scripted_call(VmlClient *c, const char *method, gint64 holder, const char *path)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", path, NULL));
    gboolean with_fds = g_str_has_suffix(method, "Acquire");
    if (with_fds)
        json_object_set_boolean_member(p, "fds", TRUE);
    GArray *fds = NULL;   /* kept open for the life of the process, as in a VM */
    g_autoptr(JsonObject) r = vml_client_call(c, method, p, NULL, 0, with_fds ? &fds : NULL,
                                              NULL, NULL);
    return r != NULL && (!with_fds || (fds && fds->len == 1));
}

/* Lock PATH's lock file in the lockspace of $VMLEASE_ROOT directly, as
 * a grant cut short by a crash (locked, never recorded) leaves it. */
static gboolean
lock_directly(const char *path)
{
    g_autofree char *name = vml_test_lock_file_name(path);
    g_autofree char *lock = g_build_filename(g_getenv("VMLEASE_ROOT"), "lockspace", name, NULL);
    int fd = open(lock, O_RDWR | O_CREAT, 0600);   /* kept, as a VM keeps its lock fds */
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 2 };
    return fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

/* A VM process that registers itself and runs SCRIPT on PATH, keeping
 * every fd it is given: 'a' acquires exclusively with fds, 'r' releases,
 * 'l' locks PATH's lock file without vmleased, 'f' forks a child that
 * inherits the fds and just sleeps. */
static pid_t
spawn_scripted_vm(const char *uuid, const char *name, const char *path, const char *script,
                  ScriptedVm *out)
{
    static int lifeline[2] = { -1, -1 };
    if (lifeline[0] < 0)
        g_assert_cmpint(pipe2(lifeline, O_CLOEXEC), ==, 0);
    int pipefd[2];
    g_assert_cmpint(pipe(pipefd), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        close(pipefd[0]);
        ScriptedVm vm = { 0 };
        g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
        g_autoptr(JsonObject) p = json_object_new();
        json_object_set_string_member(p, "uuid", uuid);
        json_object_set_string_member(p, "name", name);
        json_object_set_int_member(p, "pid", getpid());
        g_autoptr(JsonObject) r = c ? vml_client_call(c, "io.vmlease.Lease.Register", p,
                                                      NULL, 0, NULL, NULL, NULL) : NULL;
        vm.holder = r ? json_object_get_int_member(r, "holder") : -1;
        for (const char *s = script; vm.holder > 0 && *s; s++) {
            gboolean ok = TRUE;
            if (*s == 'a')
                ok = scripted_call(c, "io.vmlease.Lease.Acquire", vm.holder, path);
            else if (*s == 'r')
                ok = scripted_call(c, "io.vmlease.Lease.Release", vm.holder, path);
            else if (*s == 'l')
                ok = lock_directly(path);
            else if (*s == 'f' && (vm.keeper = fork()) == 0) {
                /* Outlives the VM, never the test (EOF on the lifeline). */
                close(pipefd[1]);
                close(lifeline[1]);
                int null = open("/dev/null", O_RDWR);
                dup2(null, 1);
                dup2(null, 2);
                char c;
                while (read(lifeline[0], &c, 1) < 0)
                    ;
                _exit(0);
            }
            if (!ok)
                vm.holder = -1;
        }
        if (write(pipefd[1], &vm, sizeof(vm)) != sizeof(vm))
            _exit(1);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    g_assert_cmpint(read(pipefd[0], out, sizeof(*out)), ==, sizeof(*out));
    close(pipefd[0]);
    g_assert_cmpint(out->holder, >, 0);
    return pid;
}

/* A VM that took X, let it go and took it again keeps two fds on X's lock
 * file, only the second of which holds the lock: recovery adopts that one,
 * so the lease is listed, refuses others and is released by its holder. */
static void
test_recovery_picks_the_locked_fd(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *x = vml_test_make_image(d, "x.img");
    for (int round = 0; round < 10; round++) {
        ScriptedVm vm;
        pid_t pid = spawn_scripted_vm(UUID_A, "vm-a", x, "ara", &vm);
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        assert_sole_owner(x, pid, "vm-a", "exclusive");
        pid_t other;
        g_autoptr(JsonArray) owners = try_exclusive(x, &other);
        g_assert_nonnull(owners);
        g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(owners, 0),
                                                   "pid"), ==, pid);
        vml_test_child_kill(other, SIGKILL);
        release_ok(vm.holder, x);
        g_assert_true(vml_test_wait_owners(x, 0, 0));
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_UNLCK);
        vml_test_child_kill(pid, SIGKILL);
    }
    vml_test_daemon_stop(d);
}

/* A crash between taking a lock for a VM and recording it leaves the VM
 * with a lock that nobody was told of: the restart lets it go, and keeps
 * what the record names. */
static void
test_recovery_drops_an_unrecorded_lock(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *x = vml_test_make_image(d, "x.img");
    g_autofree char *y = vml_test_make_image(d, "y.img");
    for (int round = 0; round < 5; round++) {
        ScriptedVm vm;
        pid_t pid = spawn_scripted_vm(UUID_A, "vm-a", x, "a", &vm);
        ScriptedVm stray;
        pid_t spid = spawn_scripted_vm(UUID_B, "vm-b", y, "l", &stray);
        g_assert_cmpint(vml_test_lock_state(d, y), ==, F_WRLCK);
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_daemon_restart(d);
        assert_sole_owner(x, pid, "vm-a", "exclusive");
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_WRLCK);
        g_assert_cmpint(vml_test_lock_state(d, y), ==, F_UNLCK);
        g_assert_true(vml_test_wait_owners(y, 0, 0));
        vml_test_child_kill(spid, SIGKILL);
        vml_test_child_kill(pid, SIGKILL);
        g_assert_true(vml_test_wait_owners(x, 0, 1000));
    }
    vml_test_daemon_stop(d);
}

/* A VM forked a child that inherited its lock fd, then exited while
 * vmleased was down: with vmleased running, the VM's exit would have
 * unlocked that description, so the restart does it, and the image is
 * free for the next VM. */
static void
test_inherited_lock_goes_with_its_vm(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *x = vml_test_make_image(d, "x.img");
    for (int round = 0; round < 3; round++) {
        ScriptedVm vm;
        pid_t pid = spawn_scripted_vm(UUID_A, "vm-a", x, "af", &vm);
        g_assert_cmpint(vm.keeper, >, 0);
        vml_test_daemon_kill(d, SIGKILL);
        vml_test_child_kill(pid, SIGKILL);
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_WRLCK);   /* the keeper's */
        vml_test_daemon_restart(d);
        g_assert_cmpint(vml_test_lock_state(d, x), ==, F_UNLCK);
        g_assert_true(vml_test_wait_owners(x, 0, 0));
        pid_t other;
        g_autoptr(JsonArray) owners = try_exclusive(x, &other);
        g_assert_null(owners);
        vml_test_child_kill(other, SIGKILL);
        g_assert_true(vml_test_wait_owners(x, 0, 1000));
        kill(vm.keeper, SIGKILL);   /* not our child: the VM was its parent */
    }
    vml_test_daemon_stop(d);
}

/* A lock on a lease's lock file that no lease of vmleased's explains (a
 * process locked it itself): whoever runs into it is told which process
 * keeps it, in Conflict and in Owners. */
static void
test_unregistered_lock_names_its_process(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *x = vml_test_make_image(d, "x.img");
    ScriptedVm vm;
    pid_t pid = spawn_scripted_vm(UUID_A, "vm-a", x, "l", &vm);
    g_assert_cmpint(vml_test_lock_state(d, x), ==, F_WRLCK);

    pid_t other;
    g_autoptr(JsonArray) owners = try_exclusive(x, &other);
    vml_test_child_kill(other, SIGKILL);
    g_assert_nonnull(owners);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, pid);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "exclusive");
    g_assert_true(json_object_get_boolean_member_with_default(o, "unregistered", FALSE));
    g_assert_cmpstr(json_object_get_string_member(o, "program"), ==, "test-lifetime");

    g_autoptr(JsonArray) listed = vml_test_owners(x);
    g_assert_cmpuint(json_array_get_length(listed), ==, 1);
    JsonObject *lo = json_array_get_object_element(listed, 0);
    g_assert_cmpint(json_object_get_int_member(lo, "pid"), ==, pid);
    g_assert_true(json_object_get_boolean_member_with_default(lo, "unregistered", FALSE));

    vml_test_child_kill(pid, SIGKILL);
    g_assert_cmpint(vml_test_lock_state(d, x), ==, F_UNLCK);
    g_assert_true(vml_test_wait_owners(x, 0, 0));
    vml_test_daemon_stop(d);
}

/* Run BODY(DATA) in a child running as UID/GID (and EXTRA_GROUP, unless
 * -1); what it returns (a varlink error name, "ok", ...) comes back. */
static char *
answer_as(uid_t uid, gid_t gid, gid_t extra_group, const char *(*body)(gpointer),
          gpointer data)
{
    int pipefd[2];
    g_assert_cmpint(pipe(pipefd), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        close(pipefd[0]);
        gid_t groups[1] = { extra_group };
        if (setgroups(extra_group == (gid_t)-1 ? 0 : 1, groups) < 0 ||
            setgid(gid) < 0 || setuid(uid) < 0)
            _exit(2);
        const char *answer = body(data);
        if (write(pipefd[1], answer, strlen(answer)) < 0)
            _exit(3);
        _exit(0);
    }
    close(pipefd[1]);
    char buf[1024] = "";
    ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    return g_strndup(buf, MAX(n, 0));
}

typedef struct {
    const char *socket, *method, *params;
    gboolean detail;    /* answer "ErrorName|message", not the name alone */
} CallArgs;

/* Call ARGS' method with its params (JSON text; "%PID%" becomes the
 * caller's own pid) on its socket. */
static const char *
call_body(gpointer data)
{
    const CallArgs *a = data;
    g_autofree char *own = g_strdup_printf("%d", (int)getpid());
    g_auto(GStrv) parts = g_strsplit(a->params ? a->params : "{}", "%PID%", -1);
    g_autofree char *text = g_strjoinv(own, parts);
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, text, -1, NULL))
        return "bad-params";
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) c = vml_client_connect(a->socket, &error);
    if (!c)
        return "connect-failed";
    g_autoptr(JsonObject) r = vml_client_call(c, a->method,
        json_node_get_object(json_parser_get_root(parser)), NULL, 0, NULL, NULL, &error);
    if (r)
        return "ok";
    if (!a->detail)
        return vml_error_name(error->code);
    /* Kept until the child exits, which is right after the answer. */
    static char answer[900];
    g_snprintf(answer, sizeof(answer), "%s|%s", vml_error_name(error->code), error->message);
    return answer;
}

/* As UID/GID (and EXTRA_GROUP), call Status on SOCKET. */
static char *
call_as(uid_t uid, gid_t gid, gid_t extra_group, const char *socket)
{
    CallArgs a = { socket, "io.vmlease.Admin.Status", NULL, FALSE };
    return answer_as(uid, gid, extra_group, call_body, &a);
}

/* As UID with group GID, call METHOD with PARAMS (see call_body) on SOCKET. */
static char *
call_as_with(uid_t uid, gid_t gid, const char *socket, const char *method, const char *params)
{
    CallArgs a = { socket, method, params, FALSE };
    return answer_as(uid, gid, (gid_t)-1, call_body, &a);
}

/* Admin.Owners of PATH as UID with group GID: "ok" or "ErrorName|message"
 * with PATH in it replaced by "PATH". */
static char *
owners_as(uid_t uid, gid_t gid, const char *socket, const char *path)
{
    g_autofree char *params = g_strdup_printf("{\"paths\":[\"%s\"]}", path);
    CallArgs a = { socket, "io.vmlease.Admin.Owners", params, TRUE };
    g_autofree char *answer = answer_as(uid, gid, (gid_t)-1, call_body, &a);
    g_auto(GStrv) parts = g_strsplit(answer, path, -1);
    return g_strjoinv("PATH", parts);
}

/* An admin-group member learns nothing through Admin.Owners about a
 * directory it cannot search: a file there and a missing one get the same
 * answer, while root is told which is which. */
static void
test_owners_tell_only_what_the_caller_may_see(void)
{
    struct group *gr = getgrnam("nogroup");
    g_assert_nonnull(gr);
    VmlTestDaemon *d = vml_test_daemon_start("admin_group = \"nogroup\"\n");
    g_assert_cmpint(chmod(d->root, 0755), ==, 0);
    g_autofree char *admin = g_build_filename(d->root, "run", "vmleased-admin.sock", NULL);
    g_autofree char *secret = g_build_filename(d->root, "secret", NULL);
    g_assert_cmpint(mkdir(secret, 0700), ==, 0);
    g_autofree char *there = g_build_filename(secret, "there.img", NULL);
    g_autofree char *missing = g_build_filename(secret, "missing.img", NULL);
    g_assert_true(g_file_set_contents(there, "", 0, NULL));
    g_autofree char *open_dir = g_build_filename(d->root, "open", NULL);
    g_assert_cmpint(mkdir(open_dir, 0755), ==, 0);
    g_autofree char *visible = g_build_filename(open_dir, "visible.img", NULL);
    g_assert_true(g_file_set_contents(visible, "", 0, NULL));

    g_autofree char *a_there = owners_as(65534, gr->gr_gid, admin, there);
    g_autofree char *a_missing = owners_as(65534, gr->gr_gid, admin, missing);
    g_assert_true(g_str_has_prefix(a_there, "io.vmlease.PermissionDenied|"));
    g_assert_cmpstr(a_there, ==, a_missing);
    /* Where it may look, it is answered. */
    g_autofree char *a_visible = owners_as(65534, gr->gr_gid, admin, visible);
    g_assert_cmpstr(a_visible, ==, "ok");
    /* Root is told the truth about both. */
    g_autoptr(JsonArray) o = vml_test_owners(there);
    g_assert_cmpuint(json_array_get_length(o), ==, 0);
    g_autoptr(JsonObject) p = json_object_new();
    JsonArray *paths = json_array_new();
    json_array_add_string_element(paths, missing);
    json_object_set_array_member(p, "paths", paths);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.Owners", p, NULL, NULL, &error);
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    vml_test_daemon_stop(d);
}

/* A lease-group member acts only for holders it registered, and registers
 * only its own processes: a VM's lease cannot be released, taken over or
 * read by it, nor can it hold a disk in pid 1's name. */
static void
test_holders_belong_to_their_uid(void)
{
    struct group *gr = getgrnam("nogroup");
    g_assert_nonnull(gr);
    VmlTestDaemon *d = vml_test_daemon_start("lease_group = \"nogroup\"\n");
    g_assert_cmpint(chmod(d->root, 0755), ==, 0);
    g_autofree char *lease = g_build_filename(d->root, "run", "vmleased.sock", NULL);
    g_autofree char *img = vml_test_make_image(d, "vm-disk.img");
    g_assert_cmpint(chmod(img, 0644), ==, 0);
    VmlTestVm vm = vml_test_vm_new(UUID_A, "vm-a");
    acquire_ok(vm.holder, vml_test_resources("exclusive", img, NULL));

    g_autofree char *res = g_strdup_printf("[{\"path\":\"%s\"}]", img);
    g_autofree char *rel = g_strdup_printf("{\"holder\":%" G_GINT64_FORMAT ",\"resources\":%s}",
                                           vm.holder, res);
    g_autofree char *acq = g_strdup_printf("{\"holder\":%" G_GINT64_FORMAT ",\"resources\":%s}",
                                           vm.holder, res);
    g_autofree char *inq = g_strdup_printf("{\"holder\":%" G_GINT64_FORMAT "}", vm.holder);
    g_autofree char *again = g_strdup_printf("{\"uuid\":\"%s\",\"name\":\"x\",\"pid\":%d}",
                                             UUID_A, (int)vm.pid);
    const struct { const char *method, *params; } denied[] = {
        { "io.vmlease.Lease.Release", rel },
        { "io.vmlease.Lease.Release", inq },   /* all of it */
        { "io.vmlease.Lease.Acquire", acq },
        { "io.vmlease.Lease.Inquire", inq },
        { "io.vmlease.Lease.Register", again },
        { "io.vmlease.Lease.Register",
          "{\"uuid\":\"" UUID_C "\",\"name\":\"init\",\"pid\":1}" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(denied); i++) {
        g_autofree char *answer = call_as_with(65534, gr->gr_gid, lease, denied[i].method,
                                               denied[i].params);
        if (g_strcmp0(answer, "io.vmlease.PermissionDenied") != 0)
            g_error("%s %s as uid 65534: %s", denied[i].method, denied[i].params, answer);
        assert_sole_owner(img, vm.pid, "vm-a", "exclusive");
    }
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);
    /* Its own process it may register. */
    g_autofree char *own = call_as_with(65534, gr->gr_gid, lease, "io.vmlease.Lease.Register",
                                        "{\"uuid\":\"" UUID_B "\",\"name\":\"mine\",\"pid\":%PID%}");
    g_assert_cmpstr(own, ==, "ok");
    vml_test_vm_free(&vm);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
}

typedef struct {
    const char *socket, *path, *mode;
} OpenArgs;

/* Register the calling process, then OpenImage ARGS' path in its mode. */
static const char *
open_image_body(gpointer data)
{
    const OpenArgs *a = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) c = vml_client_connect(a->socket, &error);
    if (!c)
        return "connect-failed";
    g_autoptr(JsonObject) reg = json_object_new();
    json_object_set_string_member(reg, "uuid", UUID_B);
    json_object_set_string_member(reg, "name", "tool");
    json_object_set_int_member(reg, "pid", getpid());
    g_autoptr(JsonObject) r = vml_client_call(c, "io.vmlease.Lease.Register", reg, NULL, 0,
                                              NULL, NULL, &error);
    if (!r)
        return vml_error_name(error->code);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", json_object_get_int_member(r, "holder"));
    json_object_set_string_member(p, "path", a->path);
    json_object_set_string_member(p, "mode", a->mode);
    GArray *fds = NULL;
    g_autoptr(JsonObject) o = vml_client_call(c, "io.vmlease.Lease.OpenImage", p, NULL, 0,
                                              &fds, NULL, &error);
    return o && fds && fds->len == 1 ? "ok" : o ? "no-fd" : vml_error_name(error->code);
}

/* As UID with group GID: register itself, then OpenImage PATH in MODE. */
static char *
open_image_as(uid_t uid, gid_t gid, const char *socket, const char *path, const char *mode)
{
    OpenArgs a = { socket, path, mode };
    return answer_as(uid, gid, (gid_t)-1, open_image_body, &a);
}

/* OpenImage opens with the caller's rights, not the daemon's: no fd on a
 * root-only file for a lease-group member, and no lease left behind. */
static void
test_open_image_with_callers_rights(void)
{
    struct group *gr = getgrnam("nogroup");
    g_assert_nonnull(gr);
    VmlTestDaemon *d = vml_test_daemon_start("lease_group = \"nogroup\"\n");
    g_assert_cmpint(chmod(d->root, 0755), ==, 0);
    g_autofree char *lease = g_build_filename(d->root, "run", "vmleased.sock", NULL);
    g_autofree char *secret_dir = g_build_filename(d->root, "private", NULL);
    g_assert_cmpint(g_mkdir_with_parents(secret_dir, 0700), ==, 0);
    g_autofree char *secret = g_build_filename(secret_dir, "root-only.img", NULL);
    g_assert_true(g_file_set_contents(secret, "x", 1, NULL));
    g_assert_cmpint(chmod(secret, 0600), ==, 0);
    g_autofree char *open_img = vml_test_make_image(d, "readable.img");
    g_assert_cmpint(chmod(open_img, 0644), ==, 0);

    /* The path cannot even be resolved by it. */
    g_autofree char *a1 = open_image_as(65534, gr->gr_gid, lease, secret, "read-write");
    g_assert_cmpstr(a1, !=, "ok");
    g_autoptr(JsonArray) o1 = vml_test_owners(secret);
    g_assert_cmpuint(json_array_get_length(o1), ==, 0);
    /* Reachable but not writable by it: read-only yes, read-write no. */
    g_assert_cmpint(chmod(secret_dir, 0755), ==, 0);
    g_autofree char *a2 = open_image_as(65534, gr->gr_gid, lease, secret, "read-only");
    g_assert_cmpstr(a2, ==, "io.vmlease.PermissionDenied");
    g_autofree char *a3 = open_image_as(65534, gr->gr_gid, lease, open_img, "read-write");
    g_assert_cmpstr(a3, ==, "io.vmlease.PermissionDenied");
    g_autofree char *a4 = open_image_as(65534, gr->gr_gid, lease, open_img, "read-only");
    g_assert_cmpstr(a4, ==, "ok");
    g_autoptr(JsonArray) o2 = vml_test_owners(secret);
    g_assert_cmpuint(json_array_get_length(o2), ==, 0);
    vml_test_daemon_stop(d);
}

static void
test_peer_credentials(void)
{
    struct group *gr = getgrnam("nogroup");
    g_assert_nonnull(gr);
    gid_t nogroup = gr->gr_gid;
    VmlTestDaemon *d = vml_test_daemon_start("lease_group = \"nogroup\"\n");
    g_assert_cmpint(chmod(d->root, 0755), ==, 0);
    g_autofree char *lease = g_build_filename(d->root, "run", "vmleased.sock", NULL);
    g_autofree char *admin = g_build_filename(d->root, "run", "vmleased-admin.sock", NULL);

    /* uid 65534 outside the group: refused on both sockets, by the daemon. */
    g_autofree char *a1 = call_as(65534, 1, (gid_t)-1, lease);
    g_assert_cmpstr(a1, ==, "io.vmlease.PermissionDenied");
    g_autofree char *a2 = call_as(65534, 1, (gid_t)-1, admin);
    g_assert_cmpstr(a2, ==, "io.vmlease.PermissionDenied");
    /* In the lease group (primary or supplementary): let in. */
    g_autofree char *a3 = call_as(65534, nogroup, (gid_t)-1, lease);
    g_assert_cmpstr(a3, ==, "ok");
    g_autofree char *a4 = call_as(65534, 1, nogroup, lease);
    g_assert_cmpstr(a4, ==, "ok");
    /* The admin socket has no group configured: root only. */
    g_autofree char *a5 = call_as(65534, nogroup, (gid_t)-1, admin);
    g_assert_cmpstr(a5, ==, "io.vmlease.PermissionDenied");
    /* The daemon still serves root afterwards. */
    g_assert_cmpint(vml_test_status_int("holders"), ==, 0);
    vml_test_daemon_stop(d);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lifetime/holder-sigkill-releases", test_holder_sigkill_releases);
    g_test_add_func("/lifetime/daemon-sigkill-keeps-leases", test_daemon_sigkill_keeps_leases);
    g_test_add_func("/lifetime/daemon-restart-keeps-leases", test_daemon_restart_keeps_leases);
    g_test_add_func("/lifetime/reexec-keeps-every-lease", test_reexec_keeps_every_lease);
    g_test_add_func("/lifetime/reexec-signal-storms", test_reexec_signal_storms);
    g_test_add_func("/lifetime/crash-right-after-a-change", test_crash_right_after_a_change);
    g_test_add_func("/lifetime/recovery-picks-the-locked-fd", test_recovery_picks_the_locked_fd);
    g_test_add_func("/lifetime/recovery-drops-an-unrecorded-lock",
                    test_recovery_drops_an_unrecorded_lock);
    g_test_add_func("/lifetime/inherited-lock-goes-with-its-vm",
                    test_inherited_lock_goes_with_its_vm);
    g_test_add_func("/lifetime/unregistered-lock-names-its-process",
                    test_unregistered_lock_names_its_process);
    g_test_add_func("/lifetime/owners-tell-only-what-the-caller-may-see",
                    test_owners_tell_only_what_the_caller_may_see);
    g_test_add_func("/lifetime/peer-credentials", test_peer_credentials);
    g_test_add_func("/lifetime/holders-belong-to-their-uid", test_holders_belong_to_their_uid);
    g_test_add_func("/lifetime/open-image-with-callers-rights",
                    test_open_image_with_callers_rights);
    return g_test_run();
}
