/* vmlease.so driven the way libvirt drives it (dlopen, virLockDriverImpl,
 * New/AddResource/Acquire in the child before exec/Release/Inquire), with
 * a real vmleased. The end-to-end tests with a real libvirtd live in
 * tests/libvirt/; these pin the plugin's own contract. */
#include "harness.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"
#include "libvirt-lock-driver.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static VmlTestDaemon *daemon_;
static VmlLockDriver *drv;

#define UUID_A { 0xaa, 0xaa, 0xaa, 0xaa, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1 }
#define UUID_B { 0xbb, 0xbb, 0xbb, 0xbb, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 2 }

typedef struct {
    VmlLockManager man;
} Dom;

static void
dom_new(Dom *d, const unsigned char uuid[16], const char *name, pid_t pid)
{
    VmlLockParam params[4] = { 0 };
    params[0].type = VML_LOCK_PARAM_UUID;
    params[0].key = "uuid";
    memcpy(params[0].value.uuid, uuid, 16);
    params[1].type = VML_LOCK_PARAM_STRING;
    params[1].key = "name";
    params[1].value.cstr = name;
    params[2].type = VML_LOCK_PARAM_UINT;
    params[2].key = "id";
    params[2].value.ui = 1;
    params[3].type = VML_LOCK_PARAM_UINT;
    params[3].key = "pid";
    params[3].value.ui = pid;
    d->man.driver = drv;
    d->man.privateData = NULL;
    g_assert_cmpint(drv->drvNew(&d->man, VML_LOCK_OBJECT_DOMAIN, 4, params, 0), ==, 0);
}

static void
dom_disk(Dom *d, const char *path, unsigned int flags)
{
    g_assert_cmpint(drv->drvAddResource(&d->man, VML_LOCK_RESOURCE_DISK, path, 0, NULL, flags),
                    ==, 0);
}

/* A domain whose one disk is PATH. */
static void
dom_on_disk(Dom *d, const unsigned char uuid[16], const char *name, pid_t pid, const char *path,
            unsigned int flags)
{
    dom_new(d, uuid, name, pid);
    dom_disk(d, path, flags);
}

/* Like libvirt starting QEMU: fork, Acquire in the child, exec "sleep".
 * Returns the "QEMU" pid once it runs, or -1 if Acquire failed. */
static pid_t
start_qemu(Dom *d, const char *state)
{
    int pipefd[2];
    g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        int fd = -1;
        /* libvirt starts QEMU paused: register-only, restricted. */
        if (drv->drvAcquire(&d->man, state, VML_LOCK_ACQUIRE_REGISTER_ONLY | VML_LOCK_ACQUIRE_RESTRICT,
                            0, &fd) < 0) {
            if (write(pipefd[1], "n", 1) != 1)
                _exit(2);
            _exit(1);
        }
        /* The pipe closes at exec (CLOEXEC): the parent then knows. */
        execlp("sleep", "sleep", "60", NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char c;
    ssize_t n = read(pipefd[0], &c, 1);
    close(pipefd[0]);
    if (n == 1) {
        int status;
        waitpid(pid, &status, 0);
        return -1;
    }
    return pid;
}

static void
stop_qemu(pid_t pid)
{
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
}

/* Does PID have an fd open on PATH's lock file? */
static gboolean
holds_lock_fd(pid_t pid, const char *path)
{
    g_autofree char *name = vml_test_lock_file_name(path);
    g_autofree char *want = g_strdup_printf("%s/lockspace/%s", daemon_->root, name);
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    for (const char *e; d && (e = g_dir_read_name(d));) {
        g_autofree char *link = g_build_filename(dir, e, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        if (g_strcmp0(target, want) == 0)
            return TRUE;
    }
    return FALSE;
}

/* Call F with stderr going to a string; returns what was printed. */
static char *
capture_stderr(int (*f)(Dom *), Dom *d, int *rc)
{
    g_autofree char *path = g_build_filename(daemon_->root, "stderr.txt", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int saved = dup(2);
    dup2(fd, 2);
    *rc = f(d);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = NULL;
    g_file_get_contents(path, &text, NULL, NULL);
    return text;
}

static int
acquire_in_libvirtd(Dom *d)
{
    return drv->drvAcquire(&d->man, NULL, 0, 0, NULL);
}

static void
test_start_takes_exclusive_and_survives_exec(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "a.qcow2");
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    pid_t qemu = start_qemu(&a, NULL);
    g_assert_cmpint(qemu, >, 0);

    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, qemu);
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, "dom-a");
    g_assert_cmpstr(json_object_get_string_member(o, "uuid"), ==,
                    "aaaaaaaa-0000-4000-8000-000000000001");
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "exclusive");
    /* The lock fd went through exec into "QEMU". */
    g_assert_true(holds_lock_fd(qemu, img));

    /* Domain B on the same disk: refused, naming the image and dom-a. */
    pid_t other = vml_test_child_spawn();
    Dom b;
    dom_on_disk(&b, (const unsigned char[])UUID_B, "dom-b", other, img, 0);
    int rc;
    g_autofree char *err = capture_stderr(acquire_in_libvirtd, &b, &rc);
    g_assert_cmpint(rc, ==, -1);
    g_autofree char *real = realpath(img, NULL);
    g_assert_nonnull(strstr(err, "dom-b"));
    g_assert_nonnull(strstr(err, real));
    g_assert_nonnull(strstr(err, "VM \"dom-a\""));

    /* vmleased killed: the lock stays with "QEMU"; B still cannot start. */
    vml_test_daemon_kill(daemon_, SIGKILL);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    vml_test_daemon_restart(daemon_);
    g_autofree char *err2 = capture_stderr(acquire_in_libvirtd, &b, &rc);
    g_assert_cmpint(rc, ==, -1);
    g_assert_nonnull(strstr(err2, "VM \"dom-a\""));

    /* Destroy: QEMU exits, everything is released. */
    stop_qemu(qemu);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_assert_cmpint(acquire_in_libvirtd(&b), ==, 0);
    vml_test_child_kill(other, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&a.man);
    drv->drvFree(&b.man);
}

static void
test_readonly_and_shareable_disks_are_shared(void)
{
    g_autofree char *ro = vml_test_make_image(daemon_, "ro.img");
    g_autofree char *sh = vml_test_make_image(daemon_, "sh.img");
    Dom a, b;
    dom_new(&a, (const unsigned char[])UUID_A, "dom-a", 0);
    dom_new(&b, (const unsigned char[])UUID_B, "dom-b", 0);
    for (Dom *d = &a; d; d = d == &a ? &b : NULL) {
        dom_disk(d, ro, VML_LOCK_RESOURCE_READONLY);
        dom_disk(d, sh, VML_LOCK_RESOURCE_SHARED);
    }
    pid_t qa = start_qemu(&a, NULL);
    pid_t qb = start_qemu(&b, NULL);
    g_assert_cmpint(qa, >, 0);
    g_assert_cmpint(qb, >, 0);
    g_autoptr(JsonArray) o1 = vml_test_owners(ro);
    g_autoptr(JsonArray) o2 = vml_test_owners(sh);
    g_assert_cmpuint(json_array_get_length(o1), ==, 2);
    g_assert_cmpuint(json_array_get_length(o2), ==, 2);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(o1, 0), "mode"),
                    ==, "shared");
    g_assert_cmpint(vml_test_lock_state(daemon_, ro), ==, F_RDLCK);
    stop_qemu(qa);
    stop_qemu(qb);
    g_assert_true(vml_test_wait_owners(ro, 0, 1000));
    drv->drvFree(&a.man);
    drv->drvFree(&b.man);
}

/* The one owner of PATH, which must have exactly one. */
static JsonObject *
only_owner(const char *path, JsonArray **keep)
{
    *keep = vml_test_owners(path);
    g_assert_cmpuint(json_array_get_length(*keep), ==, 1);
    return json_array_get_object_element(*keep, 0);
}

static void
test_pause_parks_for_the_domain(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "pause.img");
    pid_t qemu = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", qemu, img, 0);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, 0, 0, NULL), ==, 0);

    char *state = NULL;
    g_assert_cmpint(drv->drvInquire(&a.man, &state, 0), ==, 0);
    g_autofree char *key = vml_test_resource_key(img);
    g_autofree char *escaped = g_uri_escape_string(key, NULL, FALSE);
    g_autofree char *expect = g_strdup_printf("vmlease/1;%s=1", escaped);
    g_assert_cmpstr(state, ==, expect);
    g_free(state);

    /* Pause: the lease is parked for dom-a, still locked. */
    char *paused = NULL;
    g_assert_cmpint(drv->drvRelease(&a.man, &paused, 0), ==, 0);
    g_assert_cmpstr(paused, ==, expect);
    g_autoptr(JsonArray) keep1 = NULL;
    JsonObject *o = only_owner(img, &keep1);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, qemu);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "exclusive");
    g_assert_cmpstr(json_object_get_string_member_with_default(o, "parked", ""), ==, "paused");
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);

    /* Nobody else can take it, and is told why. */
    pid_t intruder = vml_test_child_spawn();
    Dom b;
    dom_on_disk(&b, (const unsigned char[])UUID_B, "dom-b", intruder, img, 0);
    int rc;
    g_autofree char *err = capture_stderr(acquire_in_libvirtd, &b, &rc);
    g_assert_cmpint(rc, ==, -1);
    g_assert_nonnull(strstr(err, "VM \"dom-a\""));
    g_assert_nonnull(strstr(err, "parked for the domain (paused) since"));

    /* Resume takes it back at the same generation. */
    g_assert_cmpint(drv->drvAcquire(&a.man, paused, 0, 0, NULL), ==, 0);
    g_free(paused);
    g_autoptr(JsonArray) keep2 = NULL;
    o = only_owner(img, &keep2);
    g_assert_false(json_object_has_member(o, "parked"));
    g_assert_cmpint(json_object_get_int_member(o, "generation"), ==, 1);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);

    /* A paused domain destroyed: its parked lease goes with its process. */
    g_assert_cmpint(drv->drvRelease(&a.man, &paused, 0), ==, 0);
    g_free(paused);
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);
    vml_test_child_kill(intruder, SIGKILL);
    drv->drvFree(&a.man);
    drv->drvFree(&b.man);
}

/* The state a paused dom-a left when its process exited (destroyed while
 * paused, or a migration source that died), with IMG free again. */
static char *
state_of_paused_and_gone(const char *img)
{
    pid_t q = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", q, img, 0);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, 0, 0, NULL), ==, 0);
    char *state = NULL;
    g_assert_cmpint(drv->drvRelease(&a.man, &state, 0), ==, 0);
    vml_test_child_kill(q, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&a.man);
    return state;
}

/* The parked holder exited before its domain came back (a migration whose
 * source died), and another domain wrote meanwhile: the resume is refused
 * and leaves nothing held. */
static void
test_resume_refused_after_foreign_write(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "foreign.img");
    char *state = state_of_paused_and_gone(img);

    pid_t intruder = vml_test_child_spawn();
    Dom b;
    dom_on_disk(&b, (const unsigned char[])UUID_B, "dom-b", intruder, img, 0);
    g_assert_cmpint(drv->drvAcquire(&b.man, NULL, 0, 0, NULL), ==, 0);
    g_assert_cmpint(drv->drvRelease(&b.man, NULL, 0), ==, 0);

    pid_t q2 = vml_test_child_spawn();
    Dom a2;
    dom_on_disk(&a2, (const unsigned char[])UUID_A, "dom-a", q2, img, 0);
    g_assert_cmpint(drv->drvAcquire(&a2.man, state, 0, 0, NULL), ==, -1);
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 0);
    g_free(state);
    vml_test_child_kill(q2, SIGKILL);
    vml_test_child_kill(intruder, SIGKILL);
    drv->drvFree(&a2.man);
    drv->drvFree(&b.man);
}

/* libvirt may keep the state of a failed migration and hand it to the
 * next start's resume: a process that took its leases itself at start
 * is not held to it. */
static void
test_stale_state_never_blocks_cold_start(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "stale.img");
    char *stale = state_of_paused_and_gone(img);
    for (int i = 0; i < 2; i++) {   /* the generation moves on */
        pid_t other = vml_test_child_spawn();
        Dom b;
        dom_on_disk(&b, (const unsigned char[])UUID_B, "dom-b", other, img, 0);
        g_assert_cmpint(drv->drvAcquire(&b.man, NULL, 0, 0, NULL), ==, 0);
        vml_test_child_kill(other, SIGKILL);
        g_assert_true(vml_test_wait_owners(img, 0, 1000));
        drv->drvFree(&b.man);
    }
    /* Cold start: the child takes the lease, then the resume brings the
     * stale state. */
    Dom a2;
    dom_on_disk(&a2, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    pid_t q2 = start_qemu(&a2, NULL);
    g_assert_cmpint(q2, >, 0);
    Dom ctl;
    dom_on_disk(&ctl, (const unsigned char[])UUID_A, "dom-a", q2, img, 0);
    g_assert_cmpint(drv->drvAcquire(&ctl.man, stale, 0, 0, NULL), ==, 0);
    g_autoptr(JsonArray) keep = NULL;
    JsonObject *o = only_owner(img, &keep);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, q2);
    g_assert_cmpint(json_object_get_int_member(o, "generation"), ==, 4);
    g_free(stale);
    stop_qemu(q2);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&a2.man);
    drv->drvFree(&ctl.man);
}

/* A disk hotplugged from libvirtd, and a lease claimed on a migration's
 * destination, are taken in libvirtd, not in the VM process: they live in
 * the VM's mailbox, so a SIGKILL of vmleased loses neither, and a restart
 * finds both again. */
static void
test_libvirtd_leases_survive_sigkill(void)
{
    g_autofree char *boot = vml_test_make_image(daemon_, "mbox-boot.img");
    g_autofree char *hot = vml_test_make_image(daemon_, "mbox-hot.img");
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", 0, boot, 0);
    pid_t qemu = start_qemu(&a, NULL);
    g_assert_cmpint(qemu, >, 0);
    Dom plug;
    dom_on_disk(&plug, (const unsigned char[])UUID_A, "dom-a", qemu, hot, 0);
    g_assert_cmpint(drv->drvAcquire(&plug.man, NULL, 0, 0, NULL), ==, 0);
    /* Not in QEMU's fd table: in its mailbox. */
    g_assert_false(holds_lock_fd(qemu, hot));

    for (int round = 0; round < 2; round++) {
        vml_test_daemon_kill(daemon_, SIGKILL);
        g_assert_cmpint(vml_test_lock_state(daemon_, hot), ==, F_WRLCK);
        g_assert_cmpint(vml_test_lock_state(daemon_, boot), ==, F_WRLCK);
        vml_test_daemon_restart(daemon_);
        g_autoptr(JsonArray) keep = NULL;
        JsonObject *o = only_owner(hot, &keep);
        g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, qemu);
        g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "exclusive");
    }
    /* Detach: released for every copy, the mailbox's included. */
    g_assert_cmpint(drv->drvRelease(&plug.man, NULL, 0), ==, 0);
    g_assert_cmpint(vml_test_lock_state(daemon_, hot), ==, F_UNLCK);
    vml_test_daemon_kill(daemon_, SIGKILL);
    g_assert_cmpint(vml_test_lock_state(daemon_, hot), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(daemon_, boot), ==, F_WRLCK);
    vml_test_daemon_restart(daemon_);
    g_autoptr(JsonArray) none = vml_test_owners(hot);
    g_assert_cmpuint(json_array_get_length(none), ==, 0);

    /* The VM exits while vmleased is down: the mailbox goes with it. */
    g_assert_cmpint(drv->drvAcquire(&plug.man, NULL, 0, 0, NULL), ==, 0);
    vml_test_daemon_kill(daemon_, SIGKILL);
    stop_qemu(qemu);
    g_assert_cmpint(vml_test_lock_state(daemon_, hot), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(daemon_, boot), ==, F_UNLCK);
    vml_test_daemon_restart(daemon_);
    g_assert_true(vml_test_wait_owners(hot, 0, 1000));
    drv->drvFree(&a.man);
    drv->drvFree(&plug.man);
}

/* Like start_qemu, but "QEMU" keeps the images FILES (NULL-terminated)
 * open for reading, as a VM reads its backing chain. */
static pid_t
start_qemu_reading(Dom *d, const char *const *files)
{
    int pipefd[2];
    g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        for (const char *const *f = files; *f; f++) {
            if (open(*f, O_RDONLY) < 0)
                _exit(3);
        }
        if (drv->drvAcquire(&d->man, NULL, VML_LOCK_ACQUIRE_REGISTER_ONLY | VML_LOCK_ACQUIRE_RESTRICT,
                            0, NULL) < 0) {
            if (write(pipefd[1], "n", 1) != 1)
                _exit(2);
            _exit(1);
        }
        execlp("sleep", "sleep", "60", NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char c;
    ssize_t n = read(pipefd[0], &c, 1);
    close(pipefd[0]);
    g_assert_cmpint(n, ==, 0);
    return pid;
}

static const char *
mode_of(const char *path)
{
    static char mode[16];
    g_autoptr(JsonArray) owners = vml_test_owners(path);
    if (json_array_get_length(owners) != 1)
        return json_array_get_length(owners) ? "several" : "none";
    g_strlcpy(mode, json_object_get_string_member(json_array_get_object_element(owners, 0), "mode"),
              sizeof(mode));
    return mode;
}

/* libvirt names one image at a time and never a backing image; the held
 * set follows what the images need all the same. */
static void
test_reconcile_follows_the_chain(void)
{
    g_autofree char *base = g_build_filename(daemon_->root, "rc-base.qcow2", NULL);
    g_autofree char *top = g_build_filename(daemon_->root, "rc-top.qcow2", NULL);
    g_autofree char *snap = g_build_filename(daemon_->root, "rc-snap.qcow2", NULL);
    g_autofree char *cd = vml_test_make_image(daemon_, "rc-cd.iso");
    g_autofree char *cmd = g_strdup_printf(
        "qemu-img create -q -f qcow2 '%s' 1M && qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'"
        " && qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'", base, base, top, top, snap);
    g_assert_cmpint(system(cmd), ==, 0);
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", 0, top, 0);
    dom_disk(&a, cd, VML_LOCK_RESOURCE_READONLY);
    const char *reading[] = { top, base, NULL };
    pid_t qemu = start_qemu_reading(&a, reading);
    g_assert_cmpstr(mode_of(top), ==, "exclusive");
    g_assert_cmpstr(mode_of(base), ==, "shared");
    g_assert_cmpstr(mode_of(cd), ==, "shared");

    /* change-media --insert: libvirt lets go of the empty tray, naming
     * nothing: nothing goes. */
    Dom none;
    dom_new(&none, (const unsigned char[])UUID_A, "dom-a", qemu);
    g_assert_cmpint(drv->drvRelease(&none.man, NULL, 0), ==, 0);
    g_assert_cmpstr(mode_of(top), ==, "exclusive");
    g_assert_cmpstr(mode_of(base), ==, "shared");
    g_assert_cmpstr(mode_of(cd), ==, "shared");

    /* --eject: the medium named and closed: it goes, nothing else. */
    Dom eject;
    dom_on_disk(&eject, (const unsigned char[])UUID_A, "dom-a", qemu, cd, VML_LOCK_RESOURCE_READONLY);
    g_assert_cmpint(drv->drvRelease(&eject.man, NULL, 0), ==, 0);
    g_assert_cmpstr(mode_of(cd), ==, "none");
    g_assert_cmpstr(mode_of(top), ==, "exclusive");

    /* snapshot-create-as --disk-only: the overlay is named, then the old
     * top let go, though the VM reads it as the overlay's backing image:
     * it stays, shared, and nobody can write it. */
    Dom over;
    dom_on_disk(&over, (const unsigned char[])UUID_A, "dom-a", qemu, snap, 0);
    g_assert_cmpint(drv->drvAcquire(&over.man, NULL, 0, 0, NULL), ==, 0);
    Dom old;
    dom_on_disk(&old, (const unsigned char[])UUID_A, "dom-a", qemu, top, 0);
    g_assert_cmpint(drv->drvRelease(&old.man, NULL, 0), ==, 0);
    g_assert_cmpstr(mode_of(snap), ==, "exclusive");
    g_assert_cmpstr(mode_of(top), ==, "shared");
    g_assert_cmpstr(mode_of(base), ==, "shared");
    g_assert_cmpint(vml_test_lock_state(daemon_, top), ==, F_RDLCK);
    Dom b;
    dom_on_disk(&b, (const unsigned char[])UUID_B, "dom-b", 0, top, 0);
    g_assert_cmpint(start_qemu(&b, NULL), ==, -1);

    /* A pause and resume name the new top only; the chain stays. */
    char *state = NULL;
    Dom all;
    dom_on_disk(&all, (const unsigned char[])UUID_A, "dom-a", qemu, snap, 0);
    g_assert_cmpint(drv->drvRelease(&all.man, &state, 0), ==, 0);
    g_assert_cmpint(drv->drvAcquire(&all.man, state, 0, 0, NULL), ==, 0);
    g_free(state);
    g_assert_cmpstr(mode_of(snap), ==, "exclusive");
    g_assert_cmpstr(mode_of(top), ==, "shared");
    g_assert_cmpstr(mode_of(base), ==, "shared");

    stop_qemu(qemu);
    g_assert_true(vml_test_wait_owners(top, 0, 1000));
    Dom *doms[] = { &a, &none, &eject, &over, &old, &b, &all };
    for (guint i = 0; i < G_N_ELEMENTS(doms); i++)
        drv->drvFree(&doms[i]->man);
}

/* A pull that drops the whole chain (libvirt names one layer, the VM
 * closed them all): every layer that left goes. */
static void
test_reconcile_releases_what_left(void)
{
    g_autofree char *base = g_build_filename(daemon_->root, "rl-base.qcow2", NULL);
    g_autofree char *mid = g_build_filename(daemon_->root, "rl-mid.qcow2", NULL);
    g_autofree char *top = g_build_filename(daemon_->root, "rl-top.qcow2", NULL);
    g_autofree char *cmd = g_strdup_printf(
        "qemu-img create -q -f qcow2 '%s' 1M && qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'"
        " && qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'", base, base, mid, mid, top);
    g_assert_cmpint(system(cmd), ==, 0);
    pid_t qemu = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", qemu, top, 0);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, 0, 0, NULL), ==, 0);
    g_assert_cmpstr(mode_of(mid), ==, "shared");
    g_assert_cmpstr(mode_of(base), ==, "shared");
    /* blockpull: the data is in top now, which names no backing file. */
    g_autofree char *pull = g_strdup_printf("qemu-img rebase -q -u -b '' '%s'", top);
    g_assert_cmpint(system(pull), ==, 0);
    Dom job;
    dom_on_disk(&job, (const unsigned char[])UUID_A, "dom-a", qemu, mid, VML_LOCK_RESOURCE_READONLY);
    g_assert_cmpint(drv->drvRelease(&job.man, NULL, 0), ==, 0);
    g_assert_cmpstr(mode_of(mid), ==, "none");
    g_assert_cmpstr(mode_of(base), ==, "none");
    g_assert_cmpstr(mode_of(top), ==, "exclusive");
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_true(vml_test_wait_owners(top, 0, 1000));
    drv->drvFree(&a.man);
    drv->drvFree(&job.man);
}

static gboolean
image_marked(const char *path, guint32 *pid)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    close(fd);
    g_assert_no_error(error);
    gboolean bit = !!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE);
    const VmlQcow2Ext *e = vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER);
    g_assert_cmpint(bit, ==, e != NULL);
    if (e && pid) {
        g_autoptr(VmlImageOwner) o = vml_image_owner_decode(e->data, &error);
        g_assert_no_error(error);
        *pid = o->pid;
    }
    return bit;
}

/* virsh destroy while vmleased is down: the restart clears the marks the
 * dead VM left, and finds nothing moved. */
static void
test_marks_cleared_for_vm_gone_while_down(void)
{
    g_autofree char *img = g_build_filename(daemon_->root, "gone.qcow2", NULL);
    g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 '%s' 1M", img);
    g_assert_cmpint(system(cmd), ==, 0);
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    pid_t qemu = start_qemu(&a, NULL);
    g_assert_cmpint(qemu, >, 0);
    guint32 pid = 0;
    g_assert_true(image_marked(img, &pid));
    g_assert_cmpuint(pid, ==, (guint32)qemu);
    vml_test_daemon_kill(daemon_, SIGKILL);
    stop_qemu(qemu);
    g_assert_true(image_marked(img, NULL));
    vml_test_daemon_restart(daemon_);
    g_assert_false(image_marked(img, NULL));
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 0);
    g_autofree char *log_path = g_build_filename(daemon_->root, "vmleased.log", NULL);
    g_autofree char *log = NULL;
    g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
    g_assert_null(strstr(log, "generation moved"));
    drv->drvFree(&a.man);
}

/* A migration cancelled in its switchover: QEMU resumes the source by
 * itself and libvirt, finding it running, asks for nothing; its status
 * file says "running", and the parked leases are taken back. */
static void
test_parked_leases_follow_a_resume_libvirt_does_not_report(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "self-resumed.img");
    g_autofree char *status = g_build_filename(daemon_->root, "libvirt-qemu", "dom-a.xml", NULL);
    g_assert_true(g_file_set_contents(status,
        "<domstatus state='running' reason='booted' pid='1'>\n"
        "  <job type='none' async='migration out' phase='perform3'/>\n</domstatus>\n", -1, NULL));
    pid_t qemu = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", qemu, img, 0);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, 0, 0, NULL), ==, 0);
    char *state = NULL;
    g_assert_cmpint(drv->drvRelease(&a.man, &state, 0), ==, 0);
    g_free(state);
    g_autoptr(JsonArray) keep = NULL;
    JsonObject *o = only_owner(img, &keep);
    g_assert_cmpstr(json_object_get_string_member_with_default(o, "parked", ""), ==, "migrating");
    /* libvirt records the pause, then QEMU's resume. */
    g_assert_true(g_file_set_contents(status,
        "<domstatus state='paused' reason='migration' pid='1'>\n</domstatus>\n", -1, NULL));
    g_usleep(300 * 1000);
    g_autoptr(JsonArray) keep2 = NULL;
    o = only_owner(img, &keep2);
    g_assert_cmpstr(json_object_get_string_member_with_default(o, "parked", ""), ==, "migrating");
    g_assert_true(g_file_set_contents(status,
        "<domstatus state='running' reason='unpaused' pid='1'>\n</domstatus>\n", -1, NULL));
    gboolean back = FALSE;
    for (int i = 0; i < 300 && !back; i++) {
        g_autoptr(JsonArray) now = vml_test_owners(img);
        back = json_array_get_length(now) == 1 &&
               !json_object_has_member(json_array_get_object_element(now, 0), "parked");
        if (!back)
            g_usleep(10 * 1000);
    }
    g_assert_true(back);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    g_assert_cmpint(unlink(status), ==, 0);
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&a.man);
}

static void
test_lockspace_must_match(void)
{
    g_autofree char *conf = g_build_filename(daemon_->root, "wrong-lockspace.conf", NULL);
    g_autofree char *text = g_strdup_printf("socket_dir = \"%s/run\"\n"
                                            "lockspace_dir = \"/elsewhere/lockspace\"\n",
                                            daemon_->root);
    g_assert_true(g_file_set_contents(conf, text, -1, NULL));
    drv->drvDeinit();
    g_assert_cmpint(drv->drvInit(VML_LOCK_DRIVER_VERSION, conf, 0), ==, 0);
    g_autofree char *img = vml_test_make_image(daemon_, "ls.img");
    pid_t qemu = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", qemu, img, 0);
    int rc;
    g_autofree char *err = capture_stderr(acquire_in_libvirtd, &a, &rc);
    g_assert_cmpint(rc, ==, -1);
    g_assert_nonnull(strstr(err, "lockspace_dir = \"/elsewhere/lockspace\""));
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 0);
    vml_test_child_kill(qemu, SIGKILL);
    drv->drvFree(&a.man);
    /* Back to the good configuration for the other tests. */
    drv->drvDeinit();
    g_autofree char *good = g_build_filename(daemon_->root, "qemu-vmlease.conf", NULL);
    g_assert_cmpint(drv->drvInit(VML_LOCK_DRIVER_VERSION, good, 0), ==, 0);
}

/* Like libvirt's incoming migration: the destination QEMU of the same
 * domain starts (register-only) while the source still holds the disk,
 * and takes it over with the source's state at resume. */
static void
test_incoming_migration(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "migrate.img");
    Dom src;
    dom_on_disk(&src, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    pid_t qsrc = start_qemu(&src, NULL);
    g_assert_cmpint(qsrc, >, 0);
    Dom src_ctl;    /* libvirtd's context for the running source */
    dom_on_disk(&src_ctl, (const unsigned char[])UUID_A, "dom-a", qsrc, img, 0);

    /* A second start of the same domain that is no incoming migration
     * (a cold start on another host): refused. */
    Dom again;
    dom_on_disk(&again, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    g_assert_cmpint(start_qemu(&again, NULL), ==, -1);
    drv->drvFree(&again.man);

    /* The destination starts, registered only (libvirt's flags), while
     * libvirt's status file says it is an incoming migration. */
    g_autofree char *status = g_build_filename(daemon_->root, "libvirt-qemu", "dom-a.xml", NULL);
    g_assert_true(g_file_set_contents(status,
        "<domstatus state='paused' reason='migration' pid='0'>\n"
        "  <job type='none' async='migration in' phase='prepare' flags='0x0'/>\n"
        "  <domain type='kvm'><name>dom-a</name></domain>\n</domstatus>\n", -1, NULL));
    Dom dst;
    dom_on_disk(&dst, (const unsigned char[])UUID_A, "dom-a", 0, img, 0);
    int pipefd[2];
    g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
    pid_t qdst = fork();
    if (qdst == 0) {
        if (drv->drvAcquire(&dst.man, NULL, VML_LOCK_ACQUIRE_REGISTER_ONLY, 0, NULL) < 0)
            _exit(1);
        execlp("sleep", "sleep", "60", NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char c;
    g_assert_cmpint(read(pipefd[0], &c, 1), ==, 0);   /* exec'd: acquire was fine */
    close(pipefd[0]);
    g_assert_cmpint(waitpid(qdst, NULL, WNOHANG), ==, 0);
    g_assert_cmpint(unlink(status), ==, 0);
    g_autoptr(JsonArray) o1 = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(o1), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(o1, 0), "pid"), ==, qsrc);

    /* The switchover: the source parks its lease for the domain... */
    char *state = NULL;
    g_assert_cmpint(drv->drvRelease(&src_ctl.man, &state, 0), ==, 0);
    g_autoptr(JsonArray) keep = NULL;
    JsonObject *parked = only_owner(img, &keep);
    g_assert_cmpint(json_object_get_int_member(parked, "pid"), ==, qsrc);
    g_assert_cmpstr(json_object_get_string_member_with_default(parked, "parked", ""), ==, "paused");
    /* ... which a different domain cannot take... */
    Dom other;
    dom_on_disk(&other, (const unsigned char[])UUID_B, "dom-b", 0, img, 0);
    g_assert_cmpint(start_qemu(&other, NULL), ==, -1);
    /* ... and the destination claims with its state. */
    Dom dst_ctl;
    dom_on_disk(&dst_ctl, (const unsigned char[])UUID_A, "dom-a", qdst, img, 0);
    g_assert_cmpint(drv->drvAcquire(&dst_ctl.man, state, 0, 0, NULL), ==, 0);
    g_autoptr(JsonArray) o2 = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(o2), ==, 2);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    g_assert_cmpint(start_qemu(&other, NULL), ==, -1);
    /* The source cannot take back what the destination claimed. */
    g_assert_cmpint(drv->drvAcquire(&src_ctl.man, state, 0, 0, NULL), ==, -1);
    g_free(state);

    /* Confirm: the source exits; the destination holds it alone. */
    stop_qemu(qsrc);
    g_assert_true(vml_test_wait_owners(img, 1, 1000));
    g_autoptr(JsonArray) keep3 = NULL;
    JsonObject *now = only_owner(img, &keep3);
    g_assert_cmpint(json_object_get_int_member(now, "pid"), ==, qdst);
    g_assert_false(json_object_has_member(now, "parked"));
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    g_assert_cmpint(start_qemu(&other, NULL), ==, -1);
    stop_qemu(qdst);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&src.man);
    drv->drvFree(&src_ctl.man);
    drv->drvFree(&dst.man);
    drv->drvFree(&dst_ctl.man);
    drv->drvFree(&other.man);
}

/* A block job makes a backing image exclusive through its own context;
 * the domain's acquire at resume (backing chain included) must not take
 * that back to shared. */
static void
test_resume_keeps_block_job_exclusive(void)
{
    g_autofree char *base = g_build_filename(daemon_->root, "job-base.qcow2", NULL);
    g_autofree char *top = g_build_filename(daemon_->root, "job-top.qcow2", NULL);
    g_autofree char *cmd = g_strdup_printf(
        "qemu-img create -q -f qcow2 '%s' 1M && qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'",
        base, base, top);
    g_assert_cmpint(system(cmd), ==, 0);
    pid_t qemu = vml_test_child_spawn();
    Dom dom, job;
    dom_on_disk(&dom, (const unsigned char[])UUID_A, "dom-a", qemu, top, 0);
    g_assert_cmpint(drv->drvAcquire(&dom.man, NULL, 0, 0, NULL), ==, 0);
    g_autoptr(JsonArray) o1 = vml_test_owners(base);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(o1, 0), "mode"),
                    ==, "shared");

    /* libvirt attaches the base read-write for the commit job. */
    dom_new(&job, (const unsigned char[])UUID_A, "dom-a", qemu);
    g_assert_cmpint(drv->drvAddResource(&job.man, VML_LOCK_RESOURCE_DISK, base, 0, NULL, 0), ==, 0);
    g_assert_cmpint(drv->drvAcquire(&job.man, NULL, 0, 0, NULL), ==, 0);
    /* Pause and resume of the domain meanwhile. */
    char *state = NULL;
    g_assert_cmpint(drv->drvRelease(&dom.man, &state, 0), ==, 0);
    g_assert_cmpint(drv->drvAcquire(&dom.man, state, 0, 0, NULL), ==, 0);
    g_free(state);
    g_autoptr(JsonArray) o2 = vml_test_owners(base);
    g_assert_cmpuint(json_array_get_length(o2), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(o2, 0), "mode"),
                    ==, "exclusive");
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_true(vml_test_wait_owners(base, 0, 1000));
    drv->drvFree(&dom.man);
    drv->drvFree(&job.man);
}

static void
test_register_only_and_restrict(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "reg.img");
    pid_t qemu = vml_test_child_spawn();
    Dom a;
    dom_on_disk(&a, (const unsigned char[])UUID_A, "dom-a", qemu, img, 0);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, VML_LOCK_ACQUIRE_REGISTER_ONLY,
                                    VML_LOCK_FAILURE_PAUSE, NULL), ==, 0);
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 0);
    /* Registered, with libvirt's <on_lockfailure> passed through. */
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) list = vml_test_call(TRUE, "io.vmlease.Admin.List", NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    JsonArray *holders = json_object_get_array_member(list, "holders");
    gboolean found = FALSE;
    for (guint i = 0; i < json_array_get_length(holders); i++) {
        JsonObject *h = json_array_get_object_element(holders, i);
        if (json_object_get_int_member(h, "pid") != qemu)
            continue;
        found = TRUE;
        g_assert_cmpstr(json_object_get_string_member(h, "name"), ==, "dom-a");
        g_assert_cmpstr(json_object_get_string_member(h, "on_lockfailure"), ==, "pause");
    }
    g_assert_true(found);
    g_assert_cmpint(drv->drvAcquire(&a.man, NULL, VML_LOCK_ACQUIRE_RESTRICT, 0, NULL), ==, 0);
    g_assert_true(vml_test_wait_owners(img, 1, 1000));
    /* Restricted: no further lock calls from this context. */
    int rc;
    g_autofree char *err = capture_stderr(acquire_in_libvirtd, &a, &rc);
    g_assert_cmpint(rc, ==, -1);
    g_assert_nonnull(strstr(err, "restricted"));
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    drv->drvFree(&a.man);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start(NULL);
    g_autofree char *conf = g_build_filename(daemon_->root, "qemu-vmlease.conf", NULL);
    g_autofree char *text = g_strdup_printf("socket_dir = \"%s/run\"\n"
                                            "libvirt_state_dir = \"%s/libvirt-qemu\"\n",
                                            daemon_->root, daemon_->root);
    g_autofree char *state_dir = g_build_filename(daemon_->root, "libvirt-qemu", NULL);
    g_assert_cmpint(g_mkdir_with_parents(state_dir, 0700), ==, 0);
    g_assert_true(g_file_set_contents(conf, text, -1, NULL));

    void *so = dlopen(g_getenv("VMLEASE_PLUGIN"), RTLD_NOW | RTLD_LOCAL);
    if (!so)
        g_error("dlopen: %s", dlerror());
    drv = dlsym(so, "virLockDriverImpl");
    g_assert_nonnull(drv);
    g_assert_cmpuint(drv->version, ==, VML_LOCK_DRIVER_VERSION);
    g_assert_cmpint(drv->drvInit(2000000, conf, 0), ==, -1);   /* ABI 2: refused */
    g_assert_cmpint(drv->drvInit(VML_LOCK_DRIVER_VERSION, conf, 0), ==, 0);

    g_test_add_func("/plugin/start-takes-exclusive-and-survives-exec",
                    test_start_takes_exclusive_and_survives_exec);
    g_test_add_func("/plugin/readonly-and-shareable-disks-are-shared",
                    test_readonly_and_shareable_disks_are_shared);
    g_test_add_func("/plugin/pause-parks-for-the-domain", test_pause_parks_for_the_domain);
    g_test_add_func("/plugin/resume-refused-after-foreign-write",
                    test_resume_refused_after_foreign_write);
    g_test_add_func("/plugin/stale-state-never-blocks-cold-start",
                    test_stale_state_never_blocks_cold_start);
    g_test_add_func("/plugin/register-only-and-restrict", test_register_only_and_restrict);
    g_test_add_func("/plugin/lockspace-must-match", test_lockspace_must_match);
    g_test_add_func("/plugin/parked-leases-follow-a-resume-libvirt-does-not-report",
                    test_parked_leases_follow_a_resume_libvirt_does_not_report);
    g_test_add_func("/plugin/marks-cleared-for-vm-gone-while-down",
                    test_marks_cleared_for_vm_gone_while_down);
    g_test_add_func("/plugin/reconcile-follows-the-chain", test_reconcile_follows_the_chain);
    g_test_add_func("/plugin/reconcile-releases-what-left", test_reconcile_releases_what_left);
    g_test_add_func("/plugin/libvirtd-leases-survive-sigkill",
                    test_libvirtd_leases_survive_sigkill);
    g_test_add_func("/plugin/incoming-migration", test_incoming_migration);
    g_test_add_func("/plugin/resume-keeps-block-job-exclusive",
                    test_resume_keeps_block_job_exclusive);
    int rc = g_test_run();
    drv->drvDeinit();
    vml_test_daemon_stop(daemon_);
    return rc;
}
