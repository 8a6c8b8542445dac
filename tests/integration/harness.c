#include "harness.h"
#include "vml-client.h"
#include "vml-paths.h"
#include "vml-image-identity.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whatever this test leaves behind dies with it, so an aborted test never
 * keeps meson waiting on a pipe. */
void
vml_test_die_with_parent(G_GNUC_UNUSED gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void
spawn_daemon(VmlTestDaemon *d)
{
    const char *bin = g_getenv("VMLEASED_BIN");
    g_assert_nonnull(bin);
    g_autoptr(GError) error = NULL;
    const char *argv[] = { bin, "--foreground", "--config", d->config, NULL };
    g_auto(GStrv) envp = g_get_environ();
    envp = g_environ_setenv(envp, "VMLEASE_ROOT", d->root, TRUE);
    /* The daemon's log goes to root/vmleased.log, shown when a test fails. */
    g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    g_assert_cmpint(logfd, >=, 0);
    gboolean ok = g_spawn_async_with_fds(NULL, (char **)argv, envp,
                                         G_SPAWN_DO_NOT_REAP_CHILD, vml_test_die_with_parent, NULL,
                                         &d->pid, -1, logfd, logfd, &error);
    close(logfd);
    g_assert_no_error(error);
    g_assert_true(ok);
    vml_test_daemon_wait_ready(d);
}

char *
vml_test_daemon_log(VmlTestDaemon *d)
{
    g_autofree char *path = g_build_filename(d->root, "vmleased.log", NULL);
    char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return text;
}

JsonObject *
vml_test_list_holder(const char *member, gint64 value)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.List", NULL, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    JsonArray *holders = json_object_get_array_member(r, "holders");
    for (guint i = 0; i < json_array_get_length(holders); i++) {
        JsonObject *h = json_array_get_object_element(holders, i);
        if (json_object_get_int_member(h, member) == value)
            return json_object_ref(h);
    }
    g_error("Admin.List has no holder with %s %" G_GINT64_FORMAT, member, value);
}

void
vml_test_daemon_wait_ready(VmlTestDaemon *d)
{
    for (int i = 0; i < 500; i++) {
        g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
        if (c) {
            g_autoptr(JsonObject) r = vml_client_call(c, "io.vmlease.Admin.Status", NULL,
                                                      NULL, 0, NULL, NULL, NULL);
            if (r)
                return;
        }
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
            g_autofree char *text = NULL;
            g_file_get_contents(log, &text, NULL, NULL);
            g_error("vmleased exited during start-up (status %d):\n%s", status, text ? text : "");
        }
        g_usleep(10000);
    }
    g_error("vmleased did not answer within 5 s");
}

VmlTestDaemon *
vml_test_daemon_start(const char *config_text)
{
    VmlTestDaemon *d = g_new0(VmlTestDaemon, 1);
    g_autoptr(GError) error = NULL;
    d->root = g_dir_make_tmp("vmlease-test-XXXXXX", &error);
    g_assert_no_error(error);
    d->config = g_build_filename(d->root, "vmleased.conf", NULL);
    g_file_set_contents(d->config, config_text ? config_text : "# test\n", -1, &error);
    g_assert_no_error(error);
    g_setenv("VMLEASE_ROOT", d->root, TRUE);
    spawn_daemon(d);
    return d;
}

void
vml_test_daemon_restart(VmlTestDaemon *d)
{
    spawn_daemon(d);
}

void
vml_test_daemon_kill(VmlTestDaemon *d, int sig)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, sig);
    int status;
    while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
        ;
    d->pid = 0;
}

void
vml_test_daemon_stop(VmlTestDaemon *d)
{
    /* A clean stop is part of every test: a daemon that crashed or was
     * flagged by a sanitizer along the way fails it, with its log shown. */
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        int status;
        while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
            ;
        d->pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
            g_autofree char *text = NULL;
            g_file_get_contents(log, &text, NULL, NULL);
            g_error("vmleased did not stop cleanly (wait status %d):\n%s", status,
                    text ? text : "");
        }
    }
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", d->root);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(d->root);
    g_free(d->config);
    g_free(d);
}

char *
vml_test_make_image(VmlTestDaemon *d, const char *name)
{
    char *path = g_build_filename(d->root, name, NULL);
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    g_assert_cmpint(fd, >=, 0);
    close(fd);
    return path;
}

JsonObject *
vml_test_call(gboolean admin, const char *method, JsonObject *params,
              GArray **fds_out, JsonObject **error_params, GError **error)
{
    g_autoptr(GError) cerr = NULL;
    g_autoptr(VmlClient) c = admin ? vml_client_connect_admin(&cerr)
                                   : vml_client_connect_lease(&cerr);
    g_assert_no_error(cerr);
    return vml_client_call(c, method, params, NULL, 0, fds_out, error_params, error);
}

pid_t
vml_test_child_spawn(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        vml_test_die_with_parent(NULL);
        for (;;)
            pause();
    }
    return pid;
}

void
vml_test_child_kill(pid_t pid, int sig)
{
    kill(pid, sig);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

gint64
vml_test_register(const char *uuid, const char *name, pid_t pid)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "uuid", uuid);
    json_object_set_string_member(p, "name", name);
    json_object_set_int_member(p, "pid", pid);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Register", p, NULL, NULL, &error);
    g_assert_no_error(error);
    return json_object_get_int_member(r, "holder");
}

VmlTestVm
vml_test_vm_new(const char *uuid, const char *name)
{
    VmlTestVm vm = { .pid = vml_test_child_spawn() };
    vm.holder = vml_test_register(uuid, name, vm.pid);
    return vm;
}

void
vml_test_vm_free(VmlTestVm *vm)
{
    vml_test_child_kill(vm->pid, SIGKILL);
}

JsonArray *
vml_test_resources(const char *mode, ...)
{
    JsonArray *a = json_array_new();
    va_list ap;
    va_start(ap, mode);
    for (const char *path = va_arg(ap, const char *); path; path = va_arg(ap, const char *)) {
        JsonObject *r = json_object_new();
        json_object_set_string_member(r, "path", path);
        json_object_set_string_member(r, "mode", mode);
        json_array_add_object_element(a, r);
    }
    va_end(ap);
    return a;
}

pid_t
vml_test_keeper_spawn(gboolean (*setup)(gpointer data), gpointer data)
{
    int pipefd[2];
    g_assert_cmpint(pipe(pipefd), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        vml_test_die_with_parent(NULL);
        close(pipefd[0]);
        char ok = setup(data) ? 'y' : 'n';
        if (write(pipefd[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    char ok = 0;
    g_assert_cmpint(read(pipefd[0], &ok, 1), ==, 1);
    close(pipefd[0]);
    g_assert_cmpint(ok, ==, 'y');
    return pid;
}

gboolean
vml_test_register_and_acquire(const char *uuid, const char *name, JsonArray *resources)
{
    g_autoptr(VmlClient) c = vml_client_connect_lease(NULL);
    if (!c)
        return FALSE;
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "uuid", uuid);
    json_object_set_string_member(p, "name", name);
    json_object_set_int_member(p, "pid", getpid());
    g_autoptr(JsonObject) r = vml_client_call(c, "io.vmlease.Lease.Register", p, NULL, 0, NULL,
                                              NULL, NULL);
    if (!r)
        return FALSE;
    g_autoptr(JsonObject) a = json_object_new();
    json_object_set_int_member(a, "holder", json_object_get_int_member(r, "holder"));
    json_object_set_array_member(a, "resources", json_array_ref(resources));
    json_object_set_boolean_member(a, "fds", TRUE);
    GArray *fds = NULL;
    g_autoptr(JsonObject) ar = vml_client_call(c, "io.vmlease.Lease.Acquire", a, NULL, 0, &fds,
                                               NULL, NULL);
    /* The fds stay open for the life of this process, as in a VM. */
    return ar && fds && fds->len == json_array_get_length(resources);
}

typedef struct {
    const char *uuid, *name;
    JsonArray *resources;
} HolderArgs;

static gboolean
holder_setup(gpointer data)
{
    const HolderArgs *a = data;
    return vml_test_register_and_acquire(a->uuid, a->name, a->resources);
}

pid_t
vml_test_holder_spawn(const char *uuid, const char *name, JsonArray *resources)
{
    HolderArgs args = { uuid, name, resources };
    pid_t pid = vml_test_keeper_spawn(holder_setup, &args);
    json_array_unref(resources);
    return pid;
}

void
vml_test_run_clear(VmlTestRun *r)
{
    g_clear_pointer(&r->out, g_free);
    g_clear_pointer(&r->err, g_free);
}

void
vml_test_run(VmlTestRun *r, const char *dir, const char *const *argv)
{
    g_auto(GStrv) env = g_get_environ();
    env = g_environ_setenv(env, "TZ", "UTC", TRUE);
    g_autoptr(GError) error = NULL;
    int wait_status;
    g_spawn_sync(dir, (char **)argv, env, G_SPAWN_SEARCH_PATH, vml_test_die_with_parent, NULL,
                 &r->out, &r->err, &wait_status, &error);
    g_assert_no_error(error);
    g_assert_true(WIFEXITED(wait_status));
    r->status = WEXITSTATUS(wait_status);
    g_test_message("%s ... -> %d\nstdout: %s\nstderr: %s", argv[0], r->status, r->out, r->err);
}

char *
vml_test_resource_key(const char *path)
{
    g_autoptr(GError) error = NULL;
    char *key = vml_image_identity_of_path(path, NULL, 0, &error);
    g_assert_no_error(error);
    return key;
}

void
vml_test_assert_image(JsonObject *o, const char *path_member, const char *path)
{
    g_autofree char *real = realpath(path, NULL);
    g_assert_nonnull(real);
    g_autofree char *key = vml_test_resource_key(real);
    g_assert_cmpstr(json_object_get_string_member_with_default(o, "resource", NULL), ==, key);
    g_assert_cmpstr(json_object_get_string_member_with_default(o, path_member, NULL), ==, real);
}

char *
vml_test_lock_file_name(const char *path)
{
    g_autofree char *key = vml_test_resource_key(path);
    g_autofree char *hash = vml_key_hash(key);
    return g_strdup_printf("%s.lock", hash);
}

int
vml_test_lock_state(VmlTestDaemon *d, const char *path)
{
    g_autofree char *name = vml_test_lock_file_name(path);
    g_autofree char *lock = g_build_filename(d->root, "lockspace", name, NULL);
    int fd = open(lock, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return F_UNLCK;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    close(fd);
    return fl.l_type;
}

gint64
vml_test_status_int(const char *member)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.Status", NULL, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    return json_object_get_int_member(r, member);
}

JsonArray *
vml_test_owners(const char *path)
{
    g_autoptr(JsonObject) p = json_object_new();
    JsonArray *paths = json_array_new();
    json_array_add_string_element(paths, path);
    json_object_set_array_member(p, "paths", paths);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.Owners", p, NULL, NULL, &error);
    g_assert_no_error(error);
    JsonArray *res = json_object_get_array_member(r, "resources");
    g_assert_cmpuint(json_array_get_length(res), ==, 1);
    return json_array_ref(json_object_get_array_member(
        json_array_get_object_element(res, 0), "owners"));
}

gboolean
vml_test_wait_owners(const char *path, guint n, guint timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000;
    do {
        g_autoptr(JsonArray) owners = vml_test_owners(path);
        if (json_array_get_length(owners) == n)
            return TRUE;
        g_usleep(1000);
    } while (g_get_monotonic_time() < deadline);
    return FALSE;
}
