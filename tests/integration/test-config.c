/* vmleased.conf as the daemon reads it: settings take effect, and a bad
 * file stops the daemon before it serves, naming file, line and setting. */
#include "harness.h"
#include "vml-error.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/un.h>
#include <sys/socket.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run vmleased --foreground with CONFIG_TEXT; it must exit at once. */
static char *
start_fails(const char *config_text)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *root = g_dir_make_tmp("vmlease-conf-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *conf = g_build_filename(root, "vmleased.conf", NULL);
    g_file_set_contents(conf, config_text, -1, &error);
    g_assert_no_error(error);
    const char *argv[] = { g_getenv("VMLEASED_BIN"), "--foreground", "--config", conf, NULL };
    g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "VMLEASE_ROOT", root, TRUE);
    g_autofree char *err = NULL;
    int status;
    g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                 &status, &error);
    g_assert_no_error(error);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        g_error("vmleased: wait status %d, stderr: %s", status, err);
    /* It never got as far as listening. */
    g_autofree char *sock = g_build_filename(root, "run", "vmleased.sock", NULL);
    g_assert_false(g_file_test(sock, G_FILE_TEST_EXISTS));
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", root);
    g_assert_cmpint(system(cmd), ==, 0);
    /* The message names the file; the caller checks the rest. */
    g_assert_nonnull(strstr(err, "vmleased"));
    g_assert_nonnull(strstr(err, conf));
    return g_steal_pointer(&err);
}

static void
test_bad_files(void)
{
    static const struct { const char *text; const char *says; } cases[] = {
        { "max_clients = \"many\"\n", "vmleased.conf:1: 'max_clients' must be an integer" },
        { "# ok\nbogus = 1\n", "vmleased.conf:2: unknown setting 'bogus'" },
        { "lease_group = \"no-such-group-here\"\n",
          "vmleased.conf:1: lease_group: no such group 'no-such-group-here'" },
        { "lockspace_dir = \"relative/dir\"\n",
          "vmleased.conf:1: lockspace_dir must be an absolute path" },
        { "# limits\nmax_holders = 0\n", "vmleased.conf:2: max_holders must be between 1 and" },
        { "max_clients = 10\n\nmax_clients = 20\n",
          "vmleased.conf:3: 'max_clients' is set twice (first on line 1): set it once" },
        { "backend = \"zookeeper\"\n", "unknown backend 'zookeeper'" },
        { "\nlog_level = \"loud\"\n", "vmleased.conf:2: log_level must be one of" },
        { "state_dir = \"/tmp\n", "vmleased.conf:1:" },
        { "backend = \"sanlock\"\n", "backend \"sanlock\" needs host_id (1..2000, unique per host)" },
        { "backend = \"sanlock\"\nhost_id = 3\n",
          "backend \"sanlock\" needs lockspace_path (on the shared storage)" },
        { "backend = \"sanlock\"\nhost_id = 3\nlockspace_path = \"/var/tmp/ls\"\n",
          "backend \"sanlock\" needs lease_dir (a directory on the shared storage)" },
        { "host_id = 2001\n", "host_id must be between 1 and 2000" },
        { "lease_dir = \"leases\"\n", "lease_dir must be an absolute path" },
        { "backend = \"sanlock\"\nhost_id = 3\nlockspace_path = \"/var/tmp/ls\"\n"
          "lease_dir = \"/var/tmp/l\"\nlockspace_name = \"a:b\"\n",
          "lockspace_name must be 1 to 47 characters without ':'" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *err = start_fails(cases[i].text);
        if (!strstr(err, cases[i].says))
            g_error("case %u: expected '%s' in: %s", i, cases[i].says, err);
    }
}


/* Send SIG and wait until the log has grown by a line containing SAYS
 * after OFFSET. */
static void
signal_and_wait_for_log(VmlTestDaemon *d, int sig, gsize offset, const char *says)
{
    g_assert_cmpint(kill(d->pid, sig), ==, 0);
    for (int i = 0; i < 500; i++) {
        g_autofree char *log = vml_test_daemon_log(d);
        if (strlen(log) > offset && strstr(log + offset, says))
            return;
        g_usleep(10000);
    }
    g_autofree char *log = vml_test_daemon_log(d);
    g_error("no \"%s\" in the log after signal %d:\n%s", says, sig, log + offset);
}

/* A reload (SIGUSR1 or SIGHUP) of a file that does not load, or that
 * changes what held leases live under, is refused and logged with file
 * and line; the same daemon goes on serving with every lease and its old
 * settings. A good file is taken, by either signal. */
static void
test_reload(void)
{
    VmlTestDaemon *d = vml_test_daemon_start("max_leases_per_holder = 100\n");
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    g_autofree char *img2 = vml_test_make_image(d, "disk2.img");
    pid_t vm = vml_test_holder_spawn("aaaaaaaa-0000-4000-8000-000000000002", "vm-r",
                                     vml_test_resources("exclusive", img, NULL));
    pid_t daemon_pid = vml_test_status_int("pid");
    g_autoptr(GError) error = NULL;
    static const struct { const char *text; const char *says; } bad[] = {
        { "max_leases_per_holder = 100\nmax_holderz = 3\n", ":2: unknown setting 'max_holderz'" },
        { "max_leases_per_holder = 0\n", ":1: max_leases_per_holder must be between 1 and" },
        { "# moved\nlockspace_dir = \"/var/tmp/elsewhere\"\n",
          ":2: lockspace_dir cannot change while vmleased runs" },
        { "max_leases_per_holder = 5\nmax_leases_per_holder = 6\n",
          ":2: 'max_leases_per_holder' is set twice (first on line 1)" },
        { "backend = \"sanlock\"\n", ":1: backend \"sanlock\" needs host_id" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_true(g_file_set_contents(d->config, bad[i].text, -1, &error));
        g_autofree char *before = vml_test_daemon_log(d);
        g_autofree char *says = g_strdup_printf("reload refused: %s%s", d->config, bad[i].says);
        signal_and_wait_for_log(d, i % 2 ? SIGHUP : SIGUSR1, strlen(before), says);
        g_assert_cmpint(vml_test_status_int("pid"), ==, daemon_pid);
        g_assert_cmpint(vml_test_status_int("reexecs"), ==, 0);
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);
    }

    /* A good file, by SIGHUP: taken, its limit in force. */
    g_assert_true(g_file_set_contents(d->config, "max_leases_per_holder = 1\n", -1, &error));
    g_assert_cmpint(kill(d->pid, SIGHUP), ==, 0);
    for (int i = 0; i < 500 && vml_test_status_int("reexecs") != 1; i++)
        g_usleep(10000);
    g_assert_cmpint(vml_test_status_int("reexecs"), ==, 1);
    g_assert_cmpint(vml_test_status_int("pid"), ==, daemon_pid);
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);
    pid_t other = vml_test_child_spawn();
    gint64 h = vml_test_register("aaaaaaaa-0000-4000-8000-000000000003", "vm-two", other);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", h);
    json_object_set_array_member(p, "resources",
                                 vml_test_resources("shared", img2, d->config, NULL));
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_LIMIT);
    g_assert_nonnull(strstr(error->message, "more than 1 leases"));
    vml_test_child_kill(other, SIGKILL);
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
}

/* A second vmleased on the same sockets: refused with the first one's pid,
 * which keeps its sockets (the same inodes) and serves on; so also after a
 * re-exec. Once the first is gone (SIGKILL), a new one starts. */
static void
test_second_daemon_refused(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    pid_t vm = vml_test_holder_spawn("aaaaaaaa-0000-4000-8000-000000000004", "vm-s",
                                     vml_test_resources("exclusive", img, NULL));
    g_autofree char *sock = g_build_filename(d->root, "run", "vmleased.sock", NULL);
    struct stat before;
    g_assert_cmpint(stat(sock, &before), ==, 0);
    g_autofree char *said = g_strdup_printf("vmleased is already running as pid %d on %s/run: "
                                            "stop it first", (int)d->pid, d->root);
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            g_assert_cmpint(kill(d->pid, SIGUSR1), ==, 0);
            for (int i = 0; i < 500 && vml_test_status_int("reexecs") != 1; i++)
                g_usleep(10000);
            g_assert_cmpint(vml_test_status_int("reexecs"), ==, 1);
        }
        /* Bounded: a daemon that took the sockets over would serve on. */
        const char *argv[] = { "timeout", "20", g_getenv("VMLEASED_BIN"), "--foreground",
                               "--config", d->config, NULL };
        g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "VMLEASE_ROOT", d->root, TRUE);
        g_autofree char *err = NULL;
        g_autoptr(GError) error = NULL;
        int status;
        g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_SEARCH_PATH,
                     NULL, NULL, NULL, &err, &status, &error);
        g_assert_no_error(error);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
            g_error("round %d: the second vmleased: wait status %d (124: it was still running "
                    "after 20 s), stderr: %s", round, status, err);
        if (!strstr(err, said))
            g_error("round %d: expected '%s' in: %s", round, said, err);
        struct stat after;
        g_assert_cmpint(stat(sock, &after), ==, 0);
        g_assert_cmpuint(after.st_ino, ==, before.st_ino);
        g_assert_cmpint(vml_test_status_int("pid"), ==, d->pid);
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    }
    vml_test_daemon_kill(d, SIGKILL);
    vml_test_daemon_restart(d);
    g_assert_cmpint(vml_test_status_int("pid"), ==, d->pid);
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
}

/* A listening AF_UNIX stream socket at PATH, as systemd's socket unit
 * makes it. */
static int
listen_at(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_assert_cmpuint(strlen(path), <, sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(chmod(path, 0666), ==, 0);
    g_assert_cmpint(listen(fd, 16), ==, 0);
    return fd;
}

/* The next notification on the datagram socket FD, within 20 s. */
static char *
next_notification(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    g_assert_cmpint(poll(&p, 1, 20000), ==, 1);
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    g_assert_cmpint(n, >, 0);
    return g_strndup(buf, (gsize)n);
}

/* As systemd starts vmleased.service from vmleased.socket and
 * vmleased-admin.socket (Type=notify): it serves on the sockets it was
 * given (their inodes, never bound again), says READY=1 once serving,
 * RELOADING=1 then READY=1 around a reload, STOPPING=1 at a stop, and
 * leaves the socket files to systemd. */
static void
test_socket_activation(void)
{
    g_autoptr(GError) error = NULL;
    VmlTestDaemon *d = g_new0(VmlTestDaemon, 1);
    d->root = g_dir_make_tmp("vmlease-test-XXXXXX", &error);
    g_assert_no_error(error);
    d->config = g_build_filename(d->root, "vmleased.conf", NULL);
    g_assert_true(g_file_set_contents(d->config, "", 0, &error));
    g_setenv("VMLEASE_ROOT", d->root, TRUE);
    g_autofree char *run = g_build_filename(d->root, "run", NULL);
    g_assert_cmpint(g_mkdir_with_parents(run, 0755), ==, 0);
    g_autofree char *lease_path = g_build_filename(run, "vmleased.sock", NULL);
    g_autofree char *admin_path = g_build_filename(run, "vmleased-admin.sock", NULL);
    /* Given in the other order: matched by path, not by position. */
    int admin = listen_at(admin_path), lease = listen_at(lease_path);
    struct stat lease_st;
    g_assert_cmpint(stat(lease_path, &lease_st), ==, 0);
    g_autofree char *notify_path = g_build_filename(d->root, "notify", NULL);
    struct sockaddr_un na = { .sun_family = AF_UNIX };
    strcpy(na.sun_path, notify_path);
    int notify = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(bind(notify, (struct sockaddr *)&na, sizeof(na)), ==, 0);

    const char *bin = g_getenv("VMLEASED_BIN");
    g_autofree char *notify_env = g_strdup_printf("NOTIFY_SOCKET=%s", notify_path);
    g_autofree char *root_env = g_strdup_printf("VMLEASE_ROOT=%s", d->root);
    char pid_env[32] = "LISTEN_PID=";
    char *envp[] = { pid_env, (char *)"LISTEN_FDS=2",
                     (char *)"LISTEN_FDNAMES=vmleased-admin.socket:vmleased.socket",
                     notify_env, root_env, NULL };
    char *argv[] = { (char *)bin, (char *)"--foreground", (char *)"--config", d->config, NULL };
    g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        /* System calls only: the pid in LISTEN_PID by hand. */
        char digits[16], *p = digits + sizeof(digits);
        *--p = '\0';
        for (int v = (int)getpid(); v; v /= 10)
            *--p = (char)('0' + v % 10);
        char *dst = pid_env + strlen("LISTEN_PID=");
        while ((*dst++ = *p++))
            ;
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        /* Out of the way first: either may be fd 3 or 4 already. */
        int a = fcntl(admin, F_DUPFD, 10), l = fcntl(lease, F_DUPFD, 10);
        if (a < 0 || l < 0 || dup2(a, 3) < 0 || dup2(l, 4) < 0)
            _exit(126);
        execve(bin, argv, envp);
        _exit(127);
    }
    close(logfd);
    d->pid = pid;
    g_autofree char *ready = next_notification(notify);
    g_assert_cmpstr(ready, ==, "READY=1");
    g_assert_cmpint(vml_test_status_int("pid"), ==, pid);
    struct stat now;
    g_assert_cmpint(stat(lease_path, &now), ==, 0);
    g_assert_cmpuint(now.st_ino, ==, lease_st.st_ino);
    g_autofree char *img = vml_test_make_image(d, "disk.img");
    pid_t vm = vml_test_holder_spawn("aaaaaaaa-0000-4000-8000-000000000005", "vm-sd",
                                     vml_test_resources("exclusive", img, NULL));

    g_assert_cmpint(kill(pid, SIGHUP), ==, 0);
    g_autofree char *reloading = next_notification(notify);
    g_assert_cmpstr(reloading, ==, "RELOADING=1");
    g_autofree char *again = next_notification(notify);
    g_assert_cmpstr(again, ==, "READY=1");
    g_assert_cmpint(vml_test_status_int("reexecs"), ==, 1);
    g_assert_cmpint(vml_test_lock_state(d, img), ==, F_WRLCK);

    g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
    g_autofree char *stopping = next_notification(notify);
    g_assert_cmpstr(stopping, ==, "STOPPING=1");
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    d->pid = 0;
    g_assert_cmpint(stat(lease_path, &now), ==, 0);   /* systemd's, not removed */
    g_assert_cmpuint(now.st_ino, ==, lease_st.st_ino);

    /* A socket passed for another path: refused, naming both. */
    close(lease);
    close(admin);
    unlink(lease_path);
    unlink(admin_path);
    g_autofree char *stray = g_build_filename(d->root, "elsewhere.sock", NULL);
    int other = listen_at(stray);
    admin = listen_at(admin_path);
    g_autofree char *err = NULL;
    int status2 = -1;
    g_autofree char *script = g_strdup_printf(
        "exec 13<&%d 14<&%d; exec 3<&13 4<&14 13<&- 14<&-; "
        "LISTEN_PID=$$ LISTEN_FDS=2 exec '%s' --foreground --config '%s'",
        admin, other, bin, d->config);
    fcntl(admin, F_SETFD, 0);
    fcntl(other, F_SETFD, 0);
    const char *sh[] = { "bash", "-c", script, NULL };   /* fds past 9 */
    g_auto(GStrv) senv = g_environ_setenv(g_get_environ(), "VMLEASE_ROOT", d->root, TRUE);
    g_spawn_sync(NULL, (char **)sh, senv,
                 G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_LEAVE_DESCRIPTORS_OPEN,
                 NULL, NULL, NULL, &err, &status2, &error);
    g_assert_no_error(error);
    if (!WIFEXITED(status2) || WEXITSTATUS(status2) != 1)
        g_error("a stray socket passed: wait status %d, stderr: %s", status2, err);
    if (!strstr(err, stray) || !strstr(err, "must agree"))
        g_error("expected the stray socket named in: %s", err);
    close(other);
    close(admin);
    close(notify);
    vml_test_child_kill(vm, SIGKILL);
    vml_test_daemon_stop(d);
}

static void
test_directories_from_config(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *elsewhere = g_dir_make_tmp("vmlease-dirs-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *text = g_strdup_printf(
        "# every directory away from VMLEASE_ROOT's defaults\n"
        "lockspace_dir = \"%s/ls\"\nstate_dir = \"%s/st\"\n"
        "socket_dir = \"%s/sock\"\n", elsewhere, elsewhere, elsewhere);
    /* The harness talks to VMLEASE_ROOT's sockets: point it at ours. */
    VmlTestDaemon *d = g_new0(VmlTestDaemon, 1);
    d->root = g_dir_make_tmp("vmlease-test-XXXXXX", &error);
    g_assert_no_error(error);
    d->config = g_build_filename(d->root, "vmleased.conf", NULL);
    g_file_set_contents(d->config, text, -1, &error);
    g_assert_no_error(error);
    g_autofree char *run = g_build_filename(d->root, "run", NULL);
    g_autofree char *sockdir = g_build_filename(elsewhere, "sock", NULL);
    g_assert_cmpint(symlink(sockdir, run), ==, 0);
    g_setenv("VMLEASE_ROOT", d->root, TRUE);
    vml_test_daemon_restart(d);

    g_autofree char *img = vml_test_make_image(d, "disk.img");
    pid_t vm = vml_test_holder_spawn("aaaaaaaa-0000-4000-8000-000000000001", "vm-a",
                                     vml_test_resources("exclusive", img, NULL));
    g_autofree char *name = vml_test_lock_file_name(img);
    g_autofree char *lock = g_strdup_printf("%s/ls/%s", elsewhere, name);
    g_assert_true(g_file_test(lock, G_FILE_TEST_IS_REGULAR));
    g_autofree char *default_ls = g_build_filename(d->root, "lockspace", NULL);
    g_assert_false(g_file_test(default_ls, G_FILE_TEST_EXISTS));
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    vml_test_daemon_stop(d);
    /* A clean stop leaves the state file where the config put it. */
    g_autofree char *state = g_strdup_printf("%s/st/state.json", elsewhere);
    g_assert_true(g_file_test(state, G_FILE_TEST_IS_REGULAR));
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", elsewhere);
    g_assert_cmpint(system(cmd), ==, 0);
}

static void
assert_limit(JsonObject *ep, const GError *error, const char *limit, gint64 value)
{
    g_assert_error(error, VML_ERROR, VML_ERROR_LIMIT);
    g_assert_cmpstr(json_object_get_string_member(ep, "limit"), ==, limit);
    g_assert_cmpint(json_object_get_int_member(ep, "value"), ==, value);
}

static void
test_limits_from_config(void)
{
    VmlTestDaemon *d = vml_test_daemon_start("max_holders = 1\nmax_leases_per_holder = 2\n");
    g_autofree char *i1 = vml_test_make_image(d, "l1.img");
    g_autofree char *i2 = vml_test_make_image(d, "l2.img");
    g_autofree char *i3 = vml_test_make_image(d, "l3.img");
    pid_t a = vml_test_child_spawn(), b = vml_test_child_spawn();
    gint64 ha = vml_test_register("aaaaaaaa-0000-4000-8000-000000000001", "vm-a", a);

    g_autoptr(JsonObject) rp = json_object_new();
    json_object_set_string_member(rp, "uuid", "bbbbbbbb-0000-4000-8000-000000000002");
    json_object_set_string_member(rp, "name", "vm-b");
    json_object_set_int_member(rp, "pid", b);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Register", rp, NULL, &ep, &error);
    g_assert_null(r);
    assert_limit(ep, error, "max_holders", 1);
    g_clear_error(&error);
    g_clear_pointer(&ep, json_object_unref);

    g_autoptr(JsonObject) ap = json_object_new();
    json_object_set_int_member(ap, "holder", ha);
    json_object_set_array_member(ap, "resources", vml_test_resources("shared", i1, i2, i3, NULL));
    g_autoptr(JsonObject) r2 = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", ap, NULL, &ep, &error);
    g_assert_null(r2);
    assert_limit(ep, error, "max_leases_per_holder", 2);
    /* Nothing was taken. */
    g_autoptr(JsonArray) owners = vml_test_owners(i1);
    g_assert_cmpuint(json_array_get_length(owners), ==, 0);
    vml_test_child_kill(a, SIGKILL);
    vml_test_child_kill(b, SIGKILL);
    vml_test_daemon_stop(d);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config/bad-files", test_bad_files);
    g_test_add_func("/config/directories-from-config", test_directories_from_config);
    g_test_add_func("/config/limits-from-config", test_limits_from_config);
    g_test_add_func("/config/reload", test_reload);
    g_test_add_func("/config/second-daemon-refused", test_second_daemon_refused);
    g_test_add_func("/config/socket-activation", test_socket_activation);
    return g_test_run();
}
