/* The fd stash of a real vmleased: round trips keep the open file, fds
 * outlive their giver and a re-exec, owners are kept apart, limits hold,
 * and nothing leaks. */
#include "harness.h"
#include "vml-error.h"
#include "vmlease-stash.h"

#include <dirent.h>
#include <string.h>
#include <grp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OWNER_A "aaaaaaaa-1111-4222-8333-444444444444"
#define OWNER_B "bbbbbbbb-1111-4222-8333-444444444444"
#define NOBODY 65534
#define NOGROUP 65534

static VmlTestDaemon *daemon_;

static VmlClient *
connect_lease(void)
{
    g_autoptr(GError) error = NULL;
    VmlClient *c = vml_client_connect_lease(&error);
    g_assert_no_error(error);
    return c;
}

static guint
daemon_fds(void)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)daemon_->pid);
    DIR *d = opendir(path);
    g_assert_nonnull(d);
    guint n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The daemon's fd count once connections closed by earlier steps are gone
 * (the daemon notices a hang-up on its next turn). */
static guint
settled_daemon_fds(void)
{
    guint n = daemon_fds();
    for (int i = 0; i < 100; i++) {
        g_usleep(20 * 1000);
        guint again = daemon_fds();
        if (again == n)
            return n;
        n = again;
    }
    return n;
}

/* Wait (up to 3 s) for the daemon to be back at WANT fds. */
static guint
daemon_fds_back_to(guint want)
{
    guint n = daemon_fds();
    for (int i = 0; i < 300 && n != want; i++) {
        g_usleep(10 * 1000);
        n = daemon_fds();
    }
    return n;
}

/* A file of its own under the daemon's root, open read-write. */
static int
open_file(const char *name)
{
    g_autofree char *path = vml_test_make_image(daemon_, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    return fd;
}

static void
assert_same_file(int a, int b)
{
    struct stat sa, sb;
    g_assert_cmpint(fstat(a, &sa), ==, 0);
    g_assert_cmpint(fstat(b, &sb), ==, 0);
    g_assert_cmpuint(sa.st_dev, ==, sb.st_dev);
    g_assert_cmpuint(sa.st_ino, ==, sb.st_ino);
}

static void
test_round_trip(void)
{
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    int fd = open_file("rt.img");
    g_assert_cmpint(fcntl(fd, F_SETFL, O_APPEND), ==, 0);
    g_assert_cmpint(lseek(fd, 1234, SEEK_SET), ==, 1234);
    g_assert_true(vmlease_stash_give(c, OWNER_A, "disk0", fd, FALSE, &error));
    g_assert_no_error(error);

    int peek = vmlease_stash_peek(c, OWNER_A, "disk0", &error);
    g_assert_no_error(error);
    assert_same_file(fd, peek);
    /* One open file description: the offset moves for all of them. */
    g_assert_cmpint(lseek(peek, 0, SEEK_CUR), ==, 1234);
    close(peek);

    g_autoptr(JsonArray) list = vmlease_stash_list(c, OWNER_A, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_array_get_length(list), ==, 1);
    JsonObject *e = json_array_get_object_element(list, 0);
    g_autofree char *path = g_build_filename(daemon_->root, "rt.img", NULL);
    g_assert_cmpstr(json_object_get_string_member(e, "name"), ==, "disk0");
    g_assert_cmpstr(json_object_get_string_member(e, "path"), ==, path);
    g_assert_cmpstr(json_object_get_string_member(e, "access"), ==, "read-write");
    g_assert_cmpint(json_object_get_int_member(e, "offset"), ==, 1234);
    g_assert_false(json_object_get_boolean_member(e, "keep"));

    int took = vmlease_stash_take(c, OWNER_A, "disk0", &error);
    g_assert_no_error(error);
    assert_same_file(fd, took);
    g_assert_cmpint(lseek(took, 0, SEEK_CUR), ==, 1234);
    g_assert_cmpint(fcntl(took, F_GETFL) & (O_ACCMODE | O_APPEND), ==, O_RDWR | O_APPEND);
    close(took);
    close(fd);

    g_assert_cmpint(vmlease_stash_take(c, OWNER_A, "disk0", &error), ==, -1);
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_FD);
    g_assert_cmpstr(error->message, ==, "owner " OWNER_A " has nothing stashed");
}

/* The giver is killed before anyone takes the fd: the stash still has it. */
static void
test_survives_giver_and_reexec(void)
{
    pid_t giver = fork();
    g_assert_cmpint(giver, >=, 0);
    if (giver == 0) {
        g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
        int fd = open_file("crash.img");
        lseek(fd, 77, SEEK_SET);
        if (!c || !vmlease_stash_give(c, OWNER_A, "crash", fd, FALSE, NULL))
            _exit(1);
        kill(getpid(), SIGKILL);
    }
    int status;
    g_assert_cmpint(waitpid(giver, &status, 0), ==, giver);
    g_assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    guint before = settled_daemon_fds();
    g_assert_cmpint(kill(daemon_->pid, SIGUSR1), ==, 0);
    g_autoptr(GError) error = NULL;
    gint64 reexecs = 0;
    for (int i = 0; i < 500 && reexecs < 1; i++) {
        g_usleep(10 * 1000);
        g_autoptr(VmlClient) a = vml_client_connect_admin(NULL);
        g_autoptr(JsonObject) st = a ? vml_client_call(a, "io.vmlease.Admin.Status", NULL, NULL,
                                                       0, NULL, NULL, NULL) : NULL;
        reexecs = st ? json_object_get_int_member(st, "reexecs") : 0;
    }
    g_assert_cmpint(reexecs, ==, 1);
    /* The Status connections above close on their own time. */
    g_assert_cmpuint(daemon_fds_back_to(before), ==, before);

    g_autoptr(VmlClient) c = connect_lease();
    int fd = vmlease_stash_take(c, OWNER_A, "crash", &error);
    g_assert_no_error(error);
    g_assert_cmpint(lseek(fd, 0, SEEK_CUR), ==, 77);
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *target = g_file_read_link(link, NULL);
    g_autofree char *want = g_build_filename(daemon_->root, "crash.img", NULL);
    g_assert_cmpstr(target, ==, want);
    close(fd);
}

/* Run FUNC as uid UID (group nogroup, the test config's lease_group) in a
 * child; its exit status. */
static int
as_user(uid_t uid, int (*func)(void))
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(NOGROUP) < 0 || setuid(uid) < 0)
            _exit(90);
        _exit(func());
    }
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int
nobody_gives(void)
{
    g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return c && vmlease_stash_give(c, OWNER_B, "mine", fd, TRUE, NULL) ? 0 : 1;
}

/* Another uid: may neither see nor take nor give into nobody's owner. */
static int
other_user_tries(void)
{
    g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
    g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL, e4 = NULL;
    if (!c)
        return 10;
    if (vmlease_stash_take(c, OWNER_B, "mine", &e1) >= 0 ||
        !g_error_matches(e1, VML_ERROR, VML_ERROR_PERMISSION_DENIED) ||
        g_strcmp0(e1->message, "the stash of owner " OWNER_B " belongs to uid 65534, not 65533"))
        return 11;
    g_autoptr(JsonArray) l = vmlease_stash_list(c, OWNER_B, &e2);
    if (l || !g_error_matches(e2, VML_ERROR, VML_ERROR_PERMISSION_DENIED))
        return 12;
    g_autoptr(JsonArray) all = vmlease_stash_list(c, NULL, &e3);
    if (!all || json_array_get_length(all) != 0)
        return 13;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (vmlease_stash_give(c, OWNER_B, "intruder", fd, FALSE, &e4) ||
        !g_error_matches(e4, VML_ERROR, VML_ERROR_PERMISSION_DENIED))
        return 14;
    return 0;
}

static void
test_owners_apart(void)
{
    g_assert_cmpint(as_user(NOBODY, nobody_gives), ==, 0);
    g_assert_cmpint(as_user(NOBODY - 1, other_user_tries), ==, 0);
    /* Root may. */
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    g_assert_true(vmlease_stash_drop(c, OWNER_B, "mine", &error));
    g_assert_no_error(error);
}

static guint
stash_len(VmlClient *c, const char *owner)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonArray) l = vmlease_stash_list(c, owner, &error);
    g_assert_no_error(error);
    return json_array_get_length(l);
}

/* Without keep, an fd goes with the owner's last holder process. */
static void
test_dropped_with_holder(void)
{
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    pid_t vm1 = vml_test_child_spawn(), vm2 = vml_test_child_spawn();
    vml_test_register(OWNER_A, "vm-a", vm1);
    vml_test_register(OWNER_A, "vm-a", vm2);   /* e.g. the migration target */
    int fd = open_file("gone.img");
    g_assert_true(vmlease_stash_give(c, OWNER_A, "temp", fd, FALSE, &error));
    g_assert_true(vmlease_stash_give(c, OWNER_A, "kept", fd, TRUE, &error));
    close(fd);
    vml_test_child_kill(vm1, SIGKILL);
    g_usleep(200 * 1000);
    g_assert_cmpuint(stash_len(c, OWNER_A), ==, 2);   /* vm2 still runs */
    vml_test_child_kill(vm2, SIGKILL);
    for (int i = 0; i < 300 && stash_len(c, OWNER_A) != 1; i++)
        g_usleep(10 * 1000);
    g_autoptr(JsonArray) l = vmlease_stash_list(c, OWNER_A, &error);
    g_assert_cmpuint(json_array_get_length(l), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(l, 0), "name"),
                    ==, "kept");
    g_assert_true(vmlease_stash_drop(c, OWNER_A, "kept", &error));
}

/* 1,000 fds in and out: the daemon ends with exactly the fds it began with.
 * Then the limits (1,000 per owner, 1,002 in all in this test's config). */
static void
test_thousand_and_limits(void)
{
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    int fd = open_file("many.img");
    guint before = settled_daemon_fds();
    for (int i = 0; i < 1000; i++) {
        g_autofree char *name = g_strdup_printf("fd%04d", i);
        g_assert_true(vmlease_stash_give(c, OWNER_A, name, fd, FALSE, &error));
    }
    guint full = daemon_fds();
    g_test_message("daemon fds: %u before, %u with 1000 stashed", before, full);
    g_assert_cmpuint(full, ==, before + 1000);

    g_assert_false(vmlease_stash_give(c, OWNER_A, "one-more", fd, FALSE, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_LIMIT);
    g_assert_cmpstr(error->message, ==,
                    "owner " OWNER_A " has 1000 fds stashed already (max_stash_per_owner)");
    g_clear_error(&error);
    g_assert_true(vmlease_stash_give(c, OWNER_B, "b1", fd, FALSE, &error));
    g_assert_true(vmlease_stash_give(c, OWNER_B, "b2", fd, FALSE, &error));
    g_assert_false(vmlease_stash_give(c, OWNER_B, "b3", fd, FALSE, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_LIMIT);
    g_assert_cmpstr(error->message, ==, "the stash holds 1002 fds already (max_stash_total)");
    g_clear_error(&error);
    /* A name given twice: refused, and the second fd is not kept. */
    g_assert_false(vmlease_stash_give(c, OWNER_B, "b1", fd, FALSE, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_FD_EXISTS);
    g_clear_error(&error);
    g_assert_cmpuint(daemon_fds(), ==, before + 1002);

    for (int i = 0; i < 1000; i++) {
        g_autofree char *name = g_strdup_printf("fd%04d", i);
        int got = vmlease_stash_take(c, OWNER_A, name, &error);
        g_assert_no_error(error);
        assert_same_file(fd, got);
        close(got);
    }
    g_assert_true(vmlease_stash_drop(c, OWNER_B, "b1", &error));
    g_assert_true(vmlease_stash_drop(c, OWNER_B, "b2", &error));
    guint after = daemon_fds_back_to(before);
    g_test_message("daemon fds: %u after taking them all back", after);
    g_assert_cmpuint(after, ==, before);
    close(fd);
}

static gint
compare_strings(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

/* Who holds PATH, as "NAME:MODE" joined by spaces, sorted. */
static char *
holders_of(const char *path)
{
    g_autoptr(JsonArray) owners = vml_test_owners(path);
    g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < json_array_get_length(owners); i++) {
        JsonObject *o = json_array_get_object_element(owners, i);
        g_ptr_array_add(parts, g_strdup_printf("%s:%s", json_object_get_string_member(o, "name"),
                                               json_object_get_string_member(o, "mode")));
    }
    g_ptr_array_sort(parts, compare_strings);
    g_ptr_array_add(parts, NULL);
    return g_strjoinv(" ", (char **)parts->pdata);
}

static int
access_mode(int fd)
{
    return fcntl(fd, F_GETFL) & O_ACCMODE;
}

static void
test_open_image(void)
{
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    g_autofree char *path = vml_test_make_image(daemon_, "open.img");
    pid_t vm_a = vml_test_child_spawn(), vm_b = vml_test_child_spawn();
    gint64 a = vml_test_register(OWNER_A, "vm-a", vm_a);
    gint64 b = vml_test_register(OWNER_B, "vm-b", vm_b);

    int fd = vmlease_open_image(c, a, path, "read-write", &error);
    g_assert_no_error(error);
    g_assert_cmpint(access_mode(fd), ==, O_RDWR);
    g_assert_cmpint(pwrite(fd, "x", 1, 0), ==, 1);
    g_autofree char *held = holders_of(path);
    g_assert_cmpstr(held, ==, "vm-a:exclusive");

    /* Not even a read-only fd for B while A writes. */
    g_assert_cmpint(vmlease_open_image(c, b, path, "read-only", &error), ==, -1);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "in use by VM \"vm-a\""));
    g_clear_error(&error);
    g_autofree char *still = holders_of(path);
    g_assert_cmpstr(still, ==, "vm-a:exclusive");
    g_assert_cmpint(vmlease_open_image(c, a, path, "read-and-write", &error), ==, -1);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    close(fd);
    vml_test_child_kill(vm_a, SIGKILL);
    vml_test_child_kill(vm_b, SIGKILL);
}

static int
reopen(VmlClient *c, gint64 holder, const char *path, int fd, const char *mode,
       const char *name, GError **error)
{
    return vmlease_reopen(c, holder, path, fd, mode, name, error);
}

static void
test_reopen(void)
{
    g_autoptr(VmlClient) c = connect_lease();
    g_autoptr(GError) error = NULL;
    g_autofree char *path = vml_test_make_image(daemon_, "reopen.img");
    g_autofree char *other = vml_test_make_image(daemon_, "other.img");
    pid_t vm_a = vml_test_child_spawn(), vm_b = vml_test_child_spawn();
    gint64 a = vml_test_register(OWNER_A, "vm-a", vm_a);
    gint64 b = vml_test_register(OWNER_B, "vm-b", vm_b);

    int ro = vmlease_open_image(c, a, path, "read-only", &error);
    g_assert_no_error(error);
    g_assert_cmpint(access_mode(ro), ==, O_RDONLY);
    int ro_b = vmlease_open_image(c, b, path, "read-only", &error);
    g_assert_no_error(error);
    g_autofree char *both = holders_of(path);
    g_assert_cmpstr(both, ==, "vm-a:shared vm-b:shared");

    /* Up to read-write while B shares: refused, and all as it was. */
    g_assert_cmpint(reopen(c, a, path, ro, "read-write", NULL, &error), ==, -1);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "in use by VM \"vm-b\""));
    g_clear_error(&error);
    g_autofree char *after = holders_of(path);
    g_assert_cmpstr(after, ==, "vm-a:shared vm-b:shared");
    g_assert_cmpint(access_mode(ro), ==, O_RDONLY);
    char byte;
    g_assert_cmpint(pread(ro, &byte, 1, 0), ==, 0);   /* still a working fd */
    g_assert_cmpuint(stash_len(c, OWNER_A), ==, 0);

    /* An fd of another file is refused before anything changes. */
    int wrong = open(other, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(reopen(c, a, path, wrong, "read-write", NULL, &error), ==, -1);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_clear_error(&error);
    close(wrong);

    /* Alone, it works: a writable fd, an exclusive lease, the old fd
     * stashed under its default name. */
    close(ro_b);
    vml_test_child_kill(vm_b, SIGKILL);
    g_assert_true(vml_test_wait_owners(path, 1, 3000));
    int rw = reopen(c, a, path, ro, "read-write", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(access_mode(rw), ==, O_RDWR);
    g_assert_cmpint(pwrite(rw, "y", 1, 0), ==, 1);
    g_autofree char *excl = holders_of(path);
    g_assert_cmpstr(excl, ==, "vm-a:exclusive");
    g_autoptr(JsonArray) l = vmlease_stash_list(c, OWNER_A, &error);
    g_assert_cmpuint(json_array_get_length(l), ==, 1);
    JsonObject *e = json_array_get_object_element(l, 0);
    g_autofree char *name = g_strconcat("reopen:", path, NULL);
    g_assert_cmpstr(json_object_get_string_member(e, "name"), ==, name);
    g_assert_cmpstr(json_object_get_string_member(e, "access"), ==, "read-only");

    /* And back down, stashing the read-write fd under a name of our own. */
    int back = reopen(c, a, path, rw, "read-only", "rw-copy", &error);
    g_assert_no_error(error);
    g_assert_cmpint(access_mode(back), ==, O_RDONLY);
    g_autofree char *down = holders_of(path);
    g_assert_cmpstr(down, ==, "vm-a:shared");
    g_assert_cmpuint(stash_len(c, OWNER_A), ==, 2);
    close(ro);
    close(rw);
    close(back);
    /* The stash goes with the holder (given without keep). */
    vml_test_child_kill(vm_a, SIGKILL);
    for (int i = 0; i < 300 && stash_len(c, OWNER_A) != 0; i++)
        g_usleep(10 * 1000);
    g_assert_cmpuint(stash_len(c, OWNER_A), ==, 0);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start("lease_group = \"nogroup\"\n"
                                    "max_stash_per_owner = 1000\n"
                                    "max_stash_total = 1002\n");
    /* Others may reach the sockets' directory and the files made here. */
    g_assert_cmpint(chmod(daemon_->root, 0755), ==, 0);
    g_test_add_func("/stash/round-trip", test_round_trip);
    g_test_add_func("/stash/survives-giver-and-reexec", test_survives_giver_and_reexec);
    g_test_add_func("/stash/owners-apart", test_owners_apart);
    g_test_add_func("/stash/dropped-with-holder", test_dropped_with_holder);
    g_test_add_func("/stash/thousand-and-limits", test_thousand_and_limits);
    g_test_add_func("/stash/open-image", test_open_image);
    g_test_add_func("/stash/reopen", test_reopen);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    return rc;
}
