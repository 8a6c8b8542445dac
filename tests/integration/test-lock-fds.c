/* After a VM's exec, vmleased looks whether the VM process still keeps the
 * fds that hold its leases: the mailbox and the lock fds handed to it in
 * the child, as vmlease.so does before libvirt execs QEMU. This machine
 * runs no AppArmor, so the policy is played by the child itself: where
 * AppArmor would replace each inherited file its profile does not allow
 * with a null file at exec, the child puts /dev/null over the same fd
 * numbers just before its exec. The check itself is the real one. */
#include "harness.h"
#include "vml-client.h"
#include "vml-mailbox-socket.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define UUID_VM "7a1e3f20-5c55-4d0e-8a6b-0000000000f1"

typedef enum { KEEP_ALL, LOSE_ALL, LOSE_LOCKS } Policy;

/* The child: register with a mailbox, acquire DISK with its lock fd, and
 * exec sleep with what POLICY leaves it. Returns its pid once it has
 * exec'd. */
static pid_t
vm_spawn(const char *disk, Policy policy)
{
    int ready[2];
    g_assert_cmpint(pipe2(ready, O_CLOEXEC), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        close(ready[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* a failed test leaves no VM behind */
        g_autoptr(GError) error = NULL;
        int mailbox = vml_mailbox_socket_new(&error);
        g_autoptr(VmlClient) c = vml_client_connect_lease(&error);
        if (mailbox < 0 || !c)
            _exit(10);
        g_autoptr(JsonObject) p = json_object_new();
        json_object_set_string_member(p, "uuid", UUID_VM);
        json_object_set_string_member(p, "name", "dom-fds");
        json_object_set_int_member(p, "pid", getpid());
        g_autoptr(JsonObject) r = vml_client_call(c, "io.vmlease.Lease.Register", p, &mailbox,
                                                  1, NULL, NULL, &error);
        if (!r)
            _exit(11);
        g_autoptr(JsonObject) a = json_object_new();
        json_object_set_int_member(a, "holder", json_object_get_int_member(r, "holder"));
        json_object_set_array_member(a, "resources", vml_test_resources("exclusive", disk, NULL));
        json_object_set_boolean_member(a, "fds", TRUE);
        GArray *fds = NULL;
        g_autoptr(JsonObject) ar = vml_client_call(c, "io.vmlease.Lease.Acquire", a, NULL, 0,
                                                   &fds, NULL, &error);
        if (!ar || !fds || fds->len != 1)
            _exit(12);
        int lock_fd = g_array_index(fds, int, 0);
        int null = open("/dev/null", O_RDWR);
        if (policy == LOSE_ALL)
            dup2(null, mailbox);
        if (policy == LOSE_ALL || policy == LOSE_LOCKS)
            dup2(null, lock_fd);
        fcntl(mailbox, F_SETFD, 0);
        fcntl(lock_fd, F_SETFD, 0);
        if (write(ready[1], "r", 1) != 1)
            _exit(13);
        execl("/bin/sleep", "sleep", "1000", (char *)NULL);
        _exit(14);
    }
    close(ready[1]);
    char c;
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    close(ready[0]);
    /* Until the exec is done: /proc/PID/exe is sleep's. */
    g_autofree char *exe_link = g_strdup_printf("/proc/%d/exe", (int)pid);
    for (int i = 0; i < 500; i++) {
        g_autofree char *exe = g_file_read_link(exe_link, NULL);
        if (exe && g_str_has_suffix(exe, "/sleep"))
            return pid;
        g_usleep(10000);
    }
    g_error("the child did not exec sleep");
}

static void
vm_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
}

/* The holder of PID in List's reply. */
static JsonObject *
holder_of(pid_t pid)
{
    return vml_test_list_holder("pid", pid);
}

/* libvirtd's acquire at the resume that ends a start: from another
 * process, for the VM's holder, its disk again. */
static void
acquire_from_libvirtd(gint64 holder, const char *disk)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", disk, NULL));
    json_object_set_boolean_member(p, "holder_fds", TRUE);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
}

static guint
count_in(const char *haystack, const char *needle)
{
    guint n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void
run_status(const char *expect_line)
{
    const char *argv[] = { g_getenv("VMLEASE_BIN"), "status", NULL };
    g_auto(VmlTestRun) r = { 0 };
    vml_test_run(&r, NULL, argv);
    g_assert_cmpint(r.status, ==, 0);
    if (!strstr(r.out, expect_line))
        g_error("status has no '%s':\n%s", expect_line, r.out);
}

/* A VM that kept everything: "kept", no warning. */
static void
test_kept(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *disk = vml_test_make_image(d, "disk.img");
    pid_t vm = vm_spawn(disk, KEEP_ALL);
    g_autoptr(JsonObject) before = holder_of(vm);
    /* List itself looks once the VM has exec'd. */
    g_assert_cmpstr(json_object_get_string_member(before, "lock_fds"), ==, "kept");
    acquire_from_libvirtd(json_object_get_int_member(before, "holder"), disk);
    g_assert_cmpint(vml_test_status_int("holders_without_lock_fds"), ==, 0);
    run_status("holders without lock fds: 0\n");
    g_autofree char *text = vml_test_daemon_log(d);
    g_assert_null(strstr(text, "does not keep the fds"));
    vm_kill(vm);
    vml_test_daemon_stop(d);
}

/* A policy closed the mailbox and the lock fd at exec: found at the
 * resume's acquire, said once, reported by List, Status and inspect. */
static void
test_missing_all(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *disk = vml_test_make_image(d, "disk.img");
    pid_t vm = vm_spawn(disk, LOSE_ALL);
    /* The resume's acquire looks, before any admin asks. */
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) first = holder_of(vm);
    gint64 holder = json_object_get_int_member(first, "holder");
    acquire_from_libvirtd(holder, disk);
    acquire_from_libvirtd(holder, disk);
    g_autoptr(JsonObject) h = holder_of(vm);
    g_assert_cmpstr(json_object_get_string_member(h, "lock_fds"), ==, "missing");
    g_assert_cmpstr(json_object_get_string_member(h, "lock_fds_detail"), ==,
                    "its lease mailbox and 1 of its 1 lock file(s) closed at exec");
    g_assert_cmpint(vml_test_status_int("holders_without_lock_fds"), ==, 1);
    run_status("holders without lock fds: 1 (their leases live in vmleased alone: "
               "see SECURITY POLICIES in vmleased(8))\n");

    g_autofree char *text = vml_test_daemon_log(d);
    g_autofree char *warning = g_strdup_printf(
        "warning: VM dom-fds (uuid %s, pid %d) does not keep the fds that hold its leases: "
        "its lease mailbox and 1 of its 1 lock file(s) closed at exec (a security policy "
        "revalidating inherited fds, such as AppArmor's?). vmleased alone holds its 1 "
        "lease(s) now, and they end if vmleased dies; let QEMU's profile keep them "
        "(vmleased(8), SECURITY POLICIES)\n", UUID_VM, (int)vm);
    g_assert_cmpuint(count_in(text, warning), ==, 1);

    /* inspect names the VM and what it lacks. */
    const char *argv[] = { g_getenv("VMLEASE_BIN"), "inspect", disk, NULL };
    g_auto(VmlTestRun) r = { 0 };
    vml_test_run(&r, NULL, argv);
    g_autofree char *line = g_strdup_printf("warning: VM dom-fds (pid %d) does not keep the "
                                            "fds that hold its leases: its lease mailbox and 1 "
                                            "of its 1 lock file(s) closed at exec\n", (int)vm);
    if (!strstr(r.out, line))
        g_error("inspect says nothing of the lost fds:\n%s", r.out);
    /* The lease itself is still held: by vmleased alone. */
    g_assert_cmpint(vml_test_lock_state(d, disk), ==, F_WRLCK);
    vm_kill(vm);
    g_assert_true(vml_test_wait_owners(disk, 0, 2000));
    g_assert_cmpint(vml_test_status_int("holders_without_lock_fds"), ==, 0);
    vml_test_daemon_stop(d);
}

/* The mailbox survived, the lock fd did not: still reported, by name. */
static void
test_missing_locks(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *disk = vml_test_make_image(d, "disk.img");
    pid_t vm = vm_spawn(disk, LOSE_LOCKS);
    g_autoptr(JsonObject) h = holder_of(vm);
    g_assert_cmpstr(json_object_get_string_member(h, "lock_fds"), ==, "missing");
    g_assert_cmpstr(json_object_get_string_member(h, "lock_fds_detail"), ==,
                    "1 of its 1 lock file(s) closed at exec");
    vm_kill(vm);
    vml_test_daemon_stop(d);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lock-fds/kept", test_kept);
    g_test_add_func("/lock-fds/missing-all", test_missing_all);
    g_test_add_func("/lock-fds/missing-locks", test_missing_locks);
    return g_test_run();
}
