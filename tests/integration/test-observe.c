/* vmlease run --observe against a real vmleased, QEMU and qemu-img: an
 * observer is listed among an image's owners as "observer", takes no lock,
 * blocks nobody and is blocked by nobody, and its command sees each
 * observed image and its backing images read-only (as root, and as a
 * lease-group member through a user namespace). */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define VM_NAME "vmlease-run:qemu-system-x86_64"
/* Bounds for polling; nothing is asserted about how long anything takes. */
#define POLL_TRIES 1000
#define POLL_SLEEP_US 10000

static VmlTestDaemon *daemon_;

static char *
in_root(const char *name)
{
    return g_build_filename(daemon_->root, name, NULL);
}

static char *
canonical(const char *name)
{
    g_autofree char *path = in_root(name);
    char *real = realpath(path, NULL);
    g_assert_nonnull(real);
    return real;
}

static gboolean
have(const char *program)
{
    g_autofree char *p = g_find_program_in_path(program);
    return p != NULL;
}

/* ---- running commands (in the daemon's root, so names are relative) ---- */


static GPtrArray *
collect_argv(const char *first, va_list ap)
{
    GPtrArray *argv = g_ptr_array_new();
    for (const char *a = first; a; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, (char *)a);
    g_ptr_array_add(argv, NULL);
    return argv;
}

static void
run_argv(VmlTestRun *r, GPtrArray *argv)
{
    vml_test_run(r, daemon_->root, (const char *const *)argv->pdata);
}

/* Run PROGRAM ARGS (NULL-terminated). */
static void
tool(VmlTestRun *r, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    g_autoptr(GPtrArray) argv = collect_argv(first, ap);
    va_end(ap);
    run_argv(r, argv);
}

/* Run $VMLEASE_BIN ARGS (NULL-terminated). */
static void
vmlease(VmlTestRun *r, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    g_autoptr(GPtrArray) argv = collect_argv(first, ap);
    va_end(ap);
    g_ptr_array_insert(argv, 0, (char *)g_getenv("VMLEASE_BIN"));
    run_argv(r, argv);
}

/* A vmlease in the background: stdin a pipe we hold (its command can wait
 * for a line), stdout and stderr into files. */
typedef struct {
    GPid pid;
    int in;
    char *out_path;
    char *err_path;
    char *out;
    char *err;
} Bg;

static Bg
bg_vmlease(const char *first, ...)
{
    static int counter;
    va_list ap;
    va_start(ap, first);
    g_autoptr(GPtrArray) argv = collect_argv(first, ap);
    va_end(ap);
    g_ptr_array_insert(argv, 0, (char *)g_getenv("VMLEASE_BIN"));

    Bg bg = { 0 };
    int in[2];
    g_assert_cmpint(pipe2(in, O_CLOEXEC), ==, 0);
    counter++;
    g_autofree char *out_name = g_strdup_printf("bg-%d.out", counter);
    g_autofree char *err_name = g_strdup_printf("bg-%d.err", counter);
    bg.out_path = in_root(out_name);
    bg.err_path = in_root(err_name);
    int out = open(bg.out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = open(bg.err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert_cmpint(out, >=, 0);
    g_assert_cmpint(err, >=, 0);
    g_autoptr(GError) error = NULL;
    gboolean ok = g_spawn_async_with_fds(daemon_->root, (char **)argv->pdata, NULL,
                                         G_SPAWN_DO_NOT_REAP_CHILD, vml_test_die_with_parent, NULL,
                                         &bg.pid, in[0], out, err, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    close(in[0]);
    close(out);
    close(err);
    bg.in = in[1];
    return bg;
}

/* Let its command go on past `read go`. */
static void
bg_go(Bg *bg)
{
    g_assert_cmpint(write(bg->in, "go\n", 3), ==, 3);
    close(bg->in);
    bg->in = -1;
}

/* Reap it; returns its wait status, with out/err read. */
static int
bg_wait(Bg *bg)
{
    if (bg->in >= 0) {
        close(bg->in);
        bg->in = -1;
    }
    int status;
    while (waitpid(bg->pid, &status, 0) < 0)
        g_assert_cmpint(errno, ==, EINTR);
    g_assert_true(g_file_get_contents(bg->out_path, &bg->out, NULL, NULL));
    g_assert_true(g_file_get_contents(bg->err_path, &bg->err, NULL, NULL));
    g_test_message("background vmlease %d -> wait status %d\nstdout: %s\nstderr: %s",
                   (int)bg->pid, status, bg->out, bg->err);
    return status;
}

static void
bg_clear(Bg *bg)
{
    unlink(bg->out_path);
    unlink(bg->err_path);
    g_free(bg->out_path);
    g_free(bg->err_path);
    g_free(bg->out);
    g_free(bg->err);
}

static void
assert_exited(int wait_status, int code)
{
    g_assert_true(WIFEXITED(wait_status));
    g_assert_cmpint(WEXITSTATUS(wait_status), ==, code);
}

/* ---- owners ---- */

static JsonObject *
owner_by_pid(JsonArray *owners, gint64 pid)
{
    for (guint i = 0; i < json_array_get_length(owners); i++) {
        JsonObject *o = json_array_get_object_element(owners, i);
        if (json_object_get_int_member(o, "pid") == pid)
            return o;
    }
    return NULL;
}

/* Poll (bounded) until PID shows among PATH's owners. */
static void
wait_owner(const char *path, GPid pid)
{
    for (int i = 0; i < POLL_TRIES; i++) {
        g_autoptr(JsonArray) owners = vml_test_owners(path);
        if (owner_by_pid(owners, pid))
            return;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            g_error("vmlease %d exited (wait status %d) before it showed among the owners "
                    "of %s", (int)pid, status, path);
        g_usleep(POLL_SLEEP_US);
    }
    g_error("vmlease %d never showed among the owners of %s", (int)pid, path);
}

static guint
n_owners(const char *path)
{
    g_autoptr(JsonArray) owners = vml_test_owners(path);
    return json_array_get_length(owners);
}

/* O is the observer vmlease PID (PID 0: any pid) holding PATH (canonical). */
static void
assert_observer(JsonObject *o, gint64 pid, const char *name, const char *real)
{
    g_assert_nonnull(o);
    if (pid)
        g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, pid);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "observer");
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, name);
    g_assert_cmpstr(json_object_get_string_member(o, "path"), ==, real);
    g_assert_cmpstr(json_object_get_string_member(o, "host"), ==, g_get_host_name());
    g_assert_false(json_object_has_member(o, "parked"));
}

/* The resources of `vmlease owners --json` output TEXT. */
static JsonArray *
owners_json_resources(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) error = NULL;
    g_assert_true(json_parser_load_from_data(p, text, -1, &error));
    g_assert_no_error(error);
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    return json_array_ref(json_object_get_array_member(root, "resources"));
}

static JsonObject *
resource_for(JsonArray *resources, const char *real)
{
    g_autofree char *key = vml_test_resource_key(real);
    for (guint i = 0; i < json_array_get_length(resources); i++) {
        JsonObject *r = json_array_get_object_element(resources, i);
        if (g_strcmp0(json_object_get_string_member(r, "resource"), key) == 0) {
            vml_test_assert_image(r, "path", real);
            return r;
        }
    }
    g_error("no resource for %s", real);
}

/* ---- files ---- */

static char *
sha256_of(const char *path)
{
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

/* Mounts on mount point PATH in mountinfo TEXT; *READ_ONLY: how many are ro. */
static guint
mounts_on(const char *text, const char *path, guint *read_only)
{
    guint n = 0, ro = 0;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_auto(GStrv) f = g_strsplit(*l, " ", 7);
        if (g_strv_length(f) < 6 || g_strcmp0(f[4], path) != 0)
            continue;
        n++;
        if (g_str_equal(f[5], "ro") || g_str_has_prefix(f[5], "ro,"))
            ro++;
    }
    if (read_only)
        *read_only = ro;
    return n;
}

static guint
my_mounts_on(const char *path)
{
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL));
    return mounts_on(text, path, NULL);
}

static void
make_qcow2(const char *name, const char *backing)
{
    g_auto(VmlTestRun) r = { 0 };
    if (backing)
        tool(&r, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2",
             name, NULL);
    else
        tool(&r, "qemu-img", "create", "-q", "-f", "qcow2", name, "16M", NULL);
    g_assert_cmpint(r.status, ==, 0);
}

static gboolean
have_qemu_tools(void)
{
    if (!have("qemu-img") || !have("qemu-io")) {
        g_test_skip("qemu-img or qemu-io not installed");
        return FALSE;
    }
    return TRUE;
}

/* ---- QMP ---- */

typedef struct {
    FILE *in;
    FILE *out;
} Qmp;

/* The next reply (events skipped). */
static JsonNode *
qmp_reply(Qmp *q)
{
    for (;;) {
        g_autofree char *line = NULL;
        size_t cap = 0;
        g_assert_cmpint(getline(&line, &cap, q->in), >, 0);
        g_autoptr(JsonParser) p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, line, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        if (json_object_has_member(o, "event"))
            continue;
        if (!json_object_has_member(o, "return"))
            g_error("QMP error: %s", line);
        return json_node_copy(json_object_get_member(o, "return"));
    }
}

static JsonNode *
qmp_execute(Qmp *q, const char *command, JsonObject *arguments)
{
    g_autoptr(JsonObject) msg = json_object_new();
    json_object_set_string_member(msg, "execute", command);
    if (arguments)
        json_object_set_object_member(msg, "arguments", json_object_ref(arguments));
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), msg);
    g_autofree char *text = json_to_string(node, FALSE);
    g_assert_cmpint(fprintf(q->out, "%s\n", text), >, 0);
    g_assert_cmpint(fflush(q->out), ==, 0);
    return qmp_reply(q);
}

/* An HMP command through QMP; returns what the monitor printed. */
static char *
qmp_hmp(Qmp *q, const char *command_line)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "command-line", command_line);
    g_autoptr(JsonNode) r = qmp_execute(q, "human-monitor-command", args);
    return g_strdup(json_node_get_string(r));
}

/* Connect to QEMU's QMP socket (bounded wait for QEMU to open it). */
static void
qmp_connect(Qmp *q, const char *path, GPid vm)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_assert_cmpuint(strlen(path), <, sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    int fd = -1;
    for (int i = 0; i < POLL_TRIES && fd < 0; i++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fd);
            fd = -1;
            int status;
            if (waitpid(vm, &status, WNOHANG) == vm)
                g_error("the VM exited (wait status %d) before its QMP socket opened", status);
            g_usleep(POLL_SLEEP_US);
        }
    }
    g_assert_cmpint(fd, >=, 0);
    int fd2 = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    g_assert_cmpint(fd2, >=, 0);
    q->in = fdopen(fd, "r");
    q->out = fdopen(fd2, "w");
    g_assert_nonnull(q->in);
    g_assert_nonnull(q->out);
    /* The greeting, then capabilities negotiation. */
    g_autofree char *greeting = NULL;
    size_t cap = 0;
    g_assert_cmpint(getline(&greeting, &cap, q->in), >, 0);
    g_assert_nonnull(strstr(greeting, "\"QMP\""));
    g_autoptr(JsonNode) r = qmp_execute(q, "qmp_capabilities", NULL);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(r));
}

static void
qmp_close(Qmp *q)
{
    fclose(q->in);
    fclose(q->out);
}

/* ---- cases ---- */

/* The acceptance case: a real QEMU holds its disk exclusively and writes
 * into it while observers read the image and list the owners. */
static void
test_observe_running_vm(void)
{
    if (!have("qemu-system-x86_64") || !have_qemu_tools()) {
        g_test_skip("qemu-system-x86_64, qemu-img or qemu-io not installed");
        return;
    }
    make_qcow2("disk.qcow2", NULL);
    g_autofree char *disk = canonical("disk.qcow2");
    /* What the disk holds once the VM wrote: 64 KiB of 0x5a, zeros after. */
    g_autofree char *ref = in_root("ref.raw");
    {
        int fd = open(ref, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        g_assert_cmpint(fd, >=, 0);
        char buf[65536];
        memset(buf, 0x5a, sizeof(buf));
        g_assert_cmpint(write(fd, buf, sizeof(buf)), ==, sizeof(buf));
        g_assert_cmpint(ftruncate(fd, 16 << 20), ==, 0);
        close(fd);
    }
    g_autofree char *sock = in_root("qmp.sock");
    g_autofree char *qmp_arg = g_strdup_printf("unix:%s,server=on,wait=off", sock);

    Bg vm = bg_vmlease("run", "--exclusive", "disk.qcow2", "--", "qemu-system-x86_64",
                       "-machine", "none", "-nodefaults", "-display", "none", "-S",
                       "-drive", "file=disk.qcow2,if=none,id=d0,format=qcow2",
                       "-qmp", qmp_arg, NULL);
    wait_owner(disk, vm.pid);
    Qmp q;
    qmp_connect(&q, sock, vm.pid);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(disk);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        JsonObject *o = owner_by_pid(owners, vm.pid);
        g_assert_nonnull(o);
        g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "exclusive");
        g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, VM_NAME);
        g_assert_cmpstr(json_object_get_string_member(o, "path"), ==, disk);
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);

    /* Not written yet. */
    {
        g_auto(VmlTestRun) c = { 0 };
        tool(&c, "qemu-img", "compare", "-U", "disk.qcow2", "ref.raw", NULL);
        g_assert_cmpint(c.status, ==, 1);
        g_assert_cmpstr(c.out, ==, "Content mismatch at offset 0!\n");
    }

    /* An observer in place while the VM writes; it reads after the write. */
    Bg obs = bg_vmlease("run", "--observe", "disk.qcow2", "--",
                        "sh", "-c", "read go && exec qemu-img info -U disk.qcow2", NULL);
    wait_owner(disk, obs.pid);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(disk);
        g_assert_cmpuint(json_array_get_length(owners), ==, 2);
        JsonObject *v = owner_by_pid(owners, vm.pid);
        g_assert_nonnull(v);
        g_assert_cmpstr(json_object_get_string_member(v, "mode"), ==, "exclusive");
        g_assert_cmpstr(json_object_get_string_member(v, "name"), ==, VM_NAME);
        assert_observer(owner_by_pid(owners, obs.pid), obs.pid, "vmlease-run:sh", disk);
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);

    g_autofree char *wrote = qmp_hmp(&q, "qemu-io d0 \"write -P 0x5a 0 64k\"");
    g_assert_cmpstr(wrote, ==, "");   /* qemu-io prints on QEMU's stdout */
    g_autofree char *flushed = qmp_hmp(&q, "qemu-io d0 \"flush\"");
    g_assert_cmpstr(flushed, ==, "");
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);
    g_assert_cmpuint(n_owners(disk), ==, 2);

    bg_go(&obs);
    assert_exited(bg_wait(&obs), 0);
    g_assert_true(g_str_has_prefix(obs.out, "image: disk.qcow2\n"
                                            "file format: qcow2\n"
                                            "virtual size: 16 MiB (16777216 bytes)\n"));
    g_assert_nonnull(strstr(obs.out, "\ncluster_size: 65536\n"));
    g_assert_nonnull(strstr(obs.out, "\n    corrupt: false\n"));
    g_assert_cmpstr(obs.err, ==, "");
    /* It released before exiting: only the VM is left. */
    {
        g_autoptr(JsonArray) owners = vml_test_owners(disk);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        g_assert_nonnull(owner_by_pid(owners, vm.pid));
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);

    /* The two commands, as typed. */
    {
        g_auto(VmlTestRun) info = { 0 };
        vmlease(&info, "run", "--observe", "disk.qcow2", "--", "qemu-img", "info", "-U",
                "disk.qcow2", NULL);
        g_assert_cmpint(info.status, ==, 0);
        g_assert_true(g_str_has_prefix(info.out, "image: disk.qcow2\n"
                                                 "file format: qcow2\n"
                                                 "virtual size: 16 MiB (16777216 bytes)\n"));
        g_assert_cmpstr(info.err, ==, "");
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);
    {
        g_auto(VmlTestRun) j = { 0 };
        vmlease(&j, "run", "--observe", "disk.qcow2", "--", "sh", "-c",
                "\"$VMLEASE_BIN\" owners --json disk.qcow2", NULL);
        g_assert_cmpint(j.status, ==, 0);
        g_assert_cmpstr(j.err, ==, "");
        g_autoptr(JsonArray) res = owners_json_resources(j.out);
        g_assert_cmpuint(json_array_get_length(res), ==, 1);
        JsonArray *owners = json_object_get_array_member(resource_for(res, disk), "owners");
        g_assert_cmpuint(json_array_get_length(owners), ==, 2);
        JsonObject *v = owner_by_pid(owners, vm.pid);
        g_assert_nonnull(v);
        g_assert_cmpstr(json_object_get_string_member(v, "mode"), ==, "exclusive");
        g_assert_cmpstr(json_object_get_string_member(v, "name"), ==, VM_NAME);
        g_assert_cmpstr(json_object_get_string_member(v, "path"), ==, disk);
        JsonObject *other = json_array_get_object_element(owners, 0) == v
            ? json_array_get_object_element(owners, 1) : json_array_get_object_element(owners, 0);
        assert_observer(other, 0, "vmlease-run:sh", disk);
        g_assert_cmpint(json_object_get_int_member(other, "pid"), !=, vm.pid);
        g_assert_cmpstr(json_object_get_string_member(other, "uuid"), !=,
                        json_object_get_string_member(v, "uuid"));
    }
    /* The table says "observing" for the observer, "in use" for the VM. */
    {
        g_auto(VmlTestRun) t = { 0 };
        vmlease(&t, "run", "--observe", "disk.qcow2", "--", "sh", "-c",
                "\"$VMLEASE_BIN\" owners disk.qcow2", NULL);
        g_assert_cmpint(t.status, ==, 0);
        g_auto(GStrv) lines = g_strsplit(t.out, "\n", -1);
        g_assert_cmpuint(g_strv_length(lines), ==, 4);   /* header, 2 rows, "" */
        g_assert_true(g_str_has_prefix(lines[0], "IMAGE"));
        g_assert_nonnull(strstr(lines[0], " STATE "));
        g_autofree char *vm_pid = g_strdup_printf(" %d ", (int)vm.pid);
        guint vm_rows = 0, observer_rows = 0;
        for (int i = 1; i <= 2; i++) {
            g_assert_true(g_str_has_prefix(lines[i], disk));
            if (strstr(lines[i], " exclusive ") && strstr(lines[i], " in use ") &&
                strstr(lines[i], " " VM_NAME " ") && strstr(lines[i], vm_pid))
                vm_rows++;
            if (strstr(lines[i], " observer ") && strstr(lines[i], " observing ") &&
                strstr(lines[i], " vmlease-run:sh "))
                observer_rows++;
        }
        g_assert_cmpuint(vm_rows, ==, 1);
        g_assert_cmpuint(observer_rows, ==, 1);
    }
    /* What the VM wrote is what an observer reads. */
    {
        g_auto(VmlTestRun) rd = { 0 };
        vmlease(&rd, "run", "--observe", "disk.qcow2", "--", "qemu-io", "-r", "-U", "-f",
                "qcow2", "-c", "read -P 0x5a 0 64k", "disk.qcow2", NULL);
        g_assert_cmpint(rd.status, ==, 0);
        g_assert_true(g_str_has_prefix(rd.out, "read 65536/65536 bytes at offset 0\n"));
        g_assert_null(strstr(rd.out, "Pattern verification failed"));
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_WRLCK);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(disk);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        g_assert_nonnull(owner_by_pid(owners, vm.pid));
    }

    /* The VM quits: vmlease exits with QEMU's 0 and its lease goes. */
    g_autoptr(JsonNode) quit = qmp_execute(&q, "quit", NULL);
    assert_exited(bg_wait(&vm), 0);
    qmp_close(&q);
    g_assert_nonnull(strstr(vm.out, "wrote 65536/65536 bytes at offset 0\n"));
    g_assert_cmpuint(n_owners(disk), ==, 0);
    g_assert_cmpint(vml_test_lock_state(daemon_, disk), ==, F_UNLCK);
    {
        g_auto(VmlTestRun) c = { 0 };
        tool(&c, "qemu-img", "compare", "disk.qcow2", "ref.raw", NULL);
        g_assert_cmpint(c.status, ==, 0);
        g_assert_cmpstr(c.out, ==, "Images are identical.\n");
    }
    bg_clear(&obs);
    bg_clear(&vm);
}

/* Inside, the observed path is read-only; outside it is not, and the
 * read-only mount never shows in our mount namespace. */
static void
test_observe_read_only(void)
{
    if (geteuid() != 0) {
        g_test_skip("read-only views of observed images take root");
        return;
    }
    g_autofree char *path = in_root("ro.img");
    static const char original[] = "original bytes\n";
    g_assert_true(g_file_set_contents(path, original, -1, NULL));
    g_autofree char *img = canonical("ro.img");
    g_autofree char *before = sha256_of(img);
    g_assert_cmpuint(my_mounts_on(img), ==, 0);

    g_auto(VmlTestRun) sh = { 0 };
    vmlease(&sh, "run", "--observe", "ro.img", "--", "sh", "-c", "echo x >> ro.img", NULL);
    g_assert_cmpint(sh.status, !=, 0);
    g_assert_cmpstr(sh.out, ==, "");
    g_assert_nonnull(strstr(sh.err, "ro.img: Read-only file system\n"));
    g_autofree char *after_sh = sha256_of(img);
    g_assert_cmpstr(after_sh, ==, before);

    g_auto(VmlTestRun) tr = { 0 };
    vmlease(&tr, "run", "--observe", "ro.img", "--", "truncate", "-s", "0", "ro.img", NULL);
    g_assert_cmpint(tr.status, ==, 1);
    g_assert_cmpstr(tr.err, ==, "truncate: cannot open 'ro.img' for writing: "
                                "Read-only file system\n");
    g_autofree char *after_tr = sha256_of(img);
    g_assert_cmpstr(after_tr, ==, before);

    /* The mount as the command sees it: one read-only bind on the image. */
    g_auto(VmlTestRun) mi = { 0 };
    vmlease(&mi, "run", "--observe", "ro.img", "--", "cat", "/proc/self/mountinfo", NULL);
    g_assert_cmpint(mi.status, ==, 0);
    guint ro = 0;
    g_assert_cmpuint(mounts_on(mi.out, img, &ro), ==, 1);
    g_assert_cmpuint(ro, ==, 1);

    /* While an observer runs, the image is writable here, and no mount of
     * it leaked into our namespace. */
    Bg obs = bg_vmlease("run", "--observe", "ro.img", "--", "sh", "-c",
                        "read go; echo inside >> ro.img", NULL);
    wait_owner(img, obs.pid);
    g_assert_cmpuint(my_mounts_on(img), ==, 0);
    {
        FILE *f = fopen(img, "a");
        g_assert_nonnull(f);
        g_assert_cmpint(fputs("outside\n", f), >=, 0);
        g_assert_cmpint(fclose(f), ==, 0);
    }
    bg_go(&obs);
    int st = bg_wait(&obs);
    g_assert_true(WIFEXITED(st));
    g_assert_cmpint(WEXITSTATUS(st), !=, 0);
    g_assert_nonnull(strstr(obs.err, "ro.img: Read-only file system\n"));
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(img, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "original bytes\noutside\n");
    g_assert_cmpuint(my_mounts_on(img), ==, 0);
    g_assert_cmpuint(n_owners(img), ==, 0);
    bg_clear(&obs);
}

/* An observer locks nothing and is in nobody's way: exclusive leases,
 * a snapshot and a commit all go ahead while it reads. */
static void
test_observe_holds_nothing(void)
{
    if (!have_qemu_tools())
        return;
    make_qcow2("free.qcow2", NULL);
    g_autofree char *img = canonical("free.qcow2");

    /* The observer keeps the image open for reading until told to go on,
     * then lists its snapshots. */
    Bg obs = bg_vmlease("run", "--observe", "free.qcow2", "--", "sh", "-c",
                        "exec 3<free.qcow2 && cat <&3 >/dev/null && read go && "
                        "exec qemu-img snapshot -l -U free.qcow2", NULL);
    wait_owner(img, obs.pid);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        assert_observer(owner_by_pid(owners, obs.pid), obs.pid, "vmlease-run:sh", img);
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);

    g_auto(VmlTestRun) ex = { 0 };
    vmlease(&ex, "run", "--exclusive", "free.qcow2", "--", "true", NULL);
    g_assert_cmpint(ex.status, ==, 0);
    g_assert_cmpstr(ex.err, ==, "");

    /* The exclusive holder and the observer side by side. */
    g_auto(VmlTestRun) both = { 0 };
    vmlease(&both, "run", "--exclusive", "free.qcow2", "--", "sh", "-c",
            "\"$VMLEASE_BIN\" owners --json free.qcow2", NULL);
    g_assert_cmpint(both.status, ==, 0);
    {
        g_autoptr(JsonArray) res = owners_json_resources(both.out);
        g_assert_cmpuint(json_array_get_length(res), ==, 1);
        JsonArray *owners = json_object_get_array_member(resource_for(res, img), "owners");
        g_assert_cmpuint(json_array_get_length(owners), ==, 2);
        JsonObject *o = owner_by_pid(owners, obs.pid);
        assert_observer(o, obs.pid, "vmlease-run:sh", img);
        JsonObject *x = json_array_get_object_element(owners, 0) == o
            ? json_array_get_object_element(owners, 1) : json_array_get_object_element(owners, 0);
        g_assert_cmpstr(json_object_get_string_member(x, "mode"), ==, "exclusive");
        g_assert_cmpstr(json_object_get_string_member(x, "name"), ==, "vmlease-run:sh");
    }

    g_auto(VmlTestRun) snap = { 0 };
    vmlease(&snap, "run", "--exclusive", "free.qcow2", "--", "qemu-img", "snapshot", "-c", "s1",
            "free.qcow2", NULL);
    g_assert_cmpint(snap.status, ==, 0);
    g_assert_cmpstr(snap.err, ==, "");
    /* The observer is still there, still holding nothing. */
    {
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        assert_observer(owner_by_pid(owners, obs.pid), obs.pid, "vmlease-run:sh", img);
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);
    bg_go(&obs);
    assert_exited(bg_wait(&obs), 0);
    g_assert_cmpuint(n_owners(img), ==, 0);

    /* The snapshot is there, seen by the observer and afterwards. */
    g_auto(VmlTestRun) list = { 0 };
    tool(&list, "qemu-img", "snapshot", "-l", "free.qcow2", NULL);
    g_assert_cmpint(list.status, ==, 0);
    g_assert_cmpstr(obs.out, ==, list.out);
    {
        g_auto(GStrv) lines = g_strsplit(list.out, "\n", -1);
        guint tagged = 0;
        for (char **l = lines; *l; l++) {
            g_auto(GStrv) f = g_strsplit_set(*l, " ", -1);
            guint k = 0;
            const char *fields[2] = { NULL, NULL };
            for (char **w = f; *w && k < 2; w++)
                if (**w)
                    fields[k++] = *w;
            if (k == 2 && g_str_equal(fields[0], "1") && g_str_equal(fields[1], "s1"))
                tagged++;
        }
        g_assert_cmpuint(tagged, ==, 1);
    }
    bg_clear(&obs);

    /* A commit of an observed overlay into its (observed) base. */
    make_qcow2("cbase.qcow2", NULL);
    make_qcow2("ctop.qcow2", "cbase.qcow2");
    g_autofree char *base = canonical("cbase.qcow2");
    g_autofree char *top = canonical("ctop.qcow2");
    {
        g_auto(VmlTestRun) w = { 0 };
        tool(&w, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 64k", "ctop.qcow2", NULL);
        g_assert_cmpint(w.status, ==, 0);
    }
    Bg cobs = bg_vmlease("run", "--observe", "ctop.qcow2", "--", "sh", "-c", "read go", NULL);
    wait_owner(top, cobs.pid);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(base);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        assert_observer(owner_by_pid(owners, cobs.pid), cobs.pid, "vmlease-run:sh", base);
    }
    g_assert_cmpint(vml_test_lock_state(daemon_, base), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(daemon_, top), ==, F_UNLCK);
    g_auto(VmlTestRun) commit = { 0 };
    vmlease(&commit, "run", "--exclusive", "cbase.qcow2", "--exclusive", "ctop.qcow2", "--",
            "qemu-img", "commit", "ctop.qcow2", NULL);
    g_assert_cmpint(commit.status, ==, 0);
    g_assert_cmpstr(commit.out, ==, "Image committed.\n");
    g_assert_cmpstr(commit.err, ==, "");
    g_assert_cmpuint(n_owners(base), ==, 1);
    g_assert_cmpuint(n_owners(top), ==, 1);
    bg_go(&cobs);
    assert_exited(bg_wait(&cobs), 0);
    g_assert_cmpuint(n_owners(base), ==, 0);
    g_assert_cmpuint(n_owners(top), ==, 0);
    /* The data went into the base. */
    g_auto(VmlTestRun) rd = { 0 };
    tool(&rd, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x22 0 64k", "cbase.qcow2", NULL);
    g_assert_cmpint(rd.status, ==, 0);
    g_assert_true(g_str_has_prefix(rd.out, "read 65536/65536 bytes at offset 0\n"));
    g_assert_null(strstr(rd.out, "Pattern verification failed"));
    bg_clear(&cobs);
}

static gboolean
process_gone(pid_t pid)
{
    g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *stat = NULL;
    if (!g_file_get_contents(stat_path, &stat, NULL, NULL))
        return TRUE;
    /* Reparented and not reaped yet: dead all the same. */
    const char *end = strrchr(stat, ')');
    return end && end[1] == ' ' && end[2] == 'Z';
}

/* The observer is gone from the owners when it exits, is stopped, or is
 * killed outright. */
static void
test_observe_gone_on_exit_and_kill(void)
{
    g_autofree char *path = vml_test_make_image(daemon_, "kill.img");
    g_autofree char *img = canonical("kill.img");

    /* Exit: released before vmlease exits with COMMAND's status. */
    g_auto(VmlTestRun) ex = { 0 };
    vmlease(&ex, "run", "--observe", "kill.img", "--", "sh", "-c", "exit 7", NULL);
    g_assert_cmpint(ex.status, ==, 7);
    g_assert_cmpstr(ex.err, ==, "");
    g_assert_cmpuint(n_owners(img), ==, 0);

    /* SIGTERM: passed on to COMMAND, 128+15, released. */
    Bg term = bg_vmlease("run", "--observe", "kill.img", "--", "sleep", "60", NULL);
    wait_owner(img, term.pid);
    g_assert_cmpint(kill(term.pid, SIGTERM), ==, 0);
    assert_exited(bg_wait(&term), 128 + SIGTERM);
    g_assert_cmpuint(n_owners(img), ==, 0);
    bg_clear(&term);

    /* SIGKILL: vmleased notices the holder died. */
    Bg obs = bg_vmlease("run", "--observe", "kill.img", "--", "sleep", "60", NULL);
    wait_owner(img, obs.pid);
    {
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        assert_observer(owner_by_pid(owners, obs.pid), obs.pid, "vmlease-run:sleep", img);
    }
    /* Its command, to see it goes too. */
    pid_t child = 0;
    for (int i = 0; i < POLL_TRIES && !child; i++) {
        g_autofree char *cpath = g_strdup_printf("/proc/%d/task/%d/children", (int)obs.pid,
                                                 (int)obs.pid);
        g_autofree char *children = NULL;
        if (g_file_get_contents(cpath, &children, NULL, NULL) && *children)
            child = (pid_t)g_ascii_strtoll(children, NULL, 10);
        else
            g_usleep(POLL_SLEEP_US);
    }
    g_assert_cmpint(child, >, 0);
    g_assert_cmpint(kill(obs.pid, SIGKILL), ==, 0);
    int st = bg_wait(&obs);
    g_assert_true(WIFSIGNALED(st));
    g_assert_cmpint(WTERMSIG(st), ==, SIGKILL);
    gboolean gone = FALSE;
    for (int i = 0; i < POLL_TRIES && !gone; i++) {
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        gone = json_array_get_length(owners) == 0;
        if (!gone) {
            g_assert_nonnull(owner_by_pid(owners, obs.pid));
            g_usleep(POLL_SLEEP_US);
        }
    }
    g_assert_true(gone);
    gboolean child_gone = FALSE;
    for (int i = 0; i < POLL_TRIES && !child_gone; i++) {
        child_gone = process_gone(child);
        if (!child_gone)
            g_usleep(POLL_SLEEP_US);
    }
    g_assert_true(child_gone);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);
    g_auto(VmlTestRun) after = { 0 };
    vmlease(&after, "run", "--exclusive", "kill.img", "--", "true", NULL);
    g_assert_cmpint(after.status, ==, 0);
    bg_clear(&obs);
}

/* Observing an overlay observes its base: listed, and read-only inside. */
static void
test_observe_backing_images(void)
{
    if (!have_qemu_tools())
        return;
    make_qcow2("bbase.qcow2", NULL);
    make_qcow2("btop.qcow2", "bbase.qcow2");
    g_autofree char *base = canonical("bbase.qcow2");
    g_autofree char *top = canonical("btop.qcow2");
    g_autofree char *base_sum = sha256_of(base);
    g_autofree char *top_sum = sha256_of(top);

    Bg obs = bg_vmlease("run", "--observe", "btop.qcow2", "--", "sh", "-c", "read go", NULL);
    wait_owner(top, obs.pid);
    const char *uuid = NULL;
    g_autoptr(JsonArray) top_owners = vml_test_owners(top);
    g_autoptr(JsonArray) base_owners = vml_test_owners(base);
    g_assert_cmpuint(json_array_get_length(top_owners), ==, 1);
    g_assert_cmpuint(json_array_get_length(base_owners), ==, 1);
    JsonObject *t = owner_by_pid(top_owners, obs.pid);
    JsonObject *b = owner_by_pid(base_owners, obs.pid);
    assert_observer(t, obs.pid, "vmlease-run:sh", top);
    assert_observer(b, obs.pid, "vmlease-run:sh", base);
    uuid = json_object_get_string_member(t, "uuid");
    g_assert_cmpstr(json_object_get_string_member(b, "uuid"), ==, uuid);
    g_assert_cmpint(vml_test_lock_state(daemon_, top), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(daemon_, base), ==, F_UNLCK);
    g_assert_cmpuint(my_mounts_on(top), ==, 0);
    g_assert_cmpuint(my_mounts_on(base), ==, 0);
    bg_go(&obs);
    assert_exited(bg_wait(&obs), 0);
    g_assert_cmpuint(n_owners(top), ==, 0);
    g_assert_cmpuint(n_owners(base), ==, 0);
    bg_clear(&obs);

    /* The CLI, from inside, lists both. */
    g_auto(VmlTestRun) j = { 0 };
    vmlease(&j, "run", "--observe", "btop.qcow2", "--", "sh", "-c",
            "\"$VMLEASE_BIN\" owners --json bbase.qcow2 btop.qcow2", NULL);
    g_assert_cmpint(j.status, ==, 0);
    {
        g_autoptr(JsonArray) res = owners_json_resources(j.out);
        g_assert_cmpuint(json_array_get_length(res), ==, 2);
        JsonArray *bo = json_object_get_array_member(resource_for(res, base), "owners");
        JsonArray *to = json_object_get_array_member(resource_for(res, top), "owners");
        g_assert_cmpuint(json_array_get_length(bo), ==, 1);
        g_assert_cmpuint(json_array_get_length(to), ==, 1);
        JsonObject *bb = json_array_get_object_element(bo, 0);
        JsonObject *tt = json_array_get_object_element(to, 0);
        assert_observer(bb, 0, "vmlease-run:sh", base);
        assert_observer(tt, 0, "vmlease-run:sh", top);
        g_assert_cmpint(json_object_get_int_member(bb, "pid"), ==,
                        json_object_get_int_member(tt, "pid"));
        g_assert_cmpstr(json_object_get_string_member(bb, "uuid"), ==,
                        json_object_get_string_member(tt, "uuid"));
    }

    if (geteuid() != 0) {
        g_test_skip("read-only views of observed images take root");
        return;
    }
    /* Both are read-only inside. */
    g_auto(VmlTestRun) sh = { 0 };
    vmlease(&sh, "run", "--observe", "btop.qcow2", "--", "sh", "-c", "echo x >> bbase.qcow2",
            NULL);
    g_assert_cmpint(sh.status, !=, 0);
    g_assert_nonnull(strstr(sh.err, "bbase.qcow2: Read-only file system\n"));
    g_auto(VmlTestRun) tr = { 0 };
    vmlease(&tr, "run", "--observe", "btop.qcow2", "--", "truncate", "-s", "0", "bbase.qcow2",
            NULL);
    g_assert_cmpint(tr.status, ==, 1);
    g_assert_cmpstr(tr.err, ==, "truncate: cannot open 'bbase.qcow2' for writing: "
                                "Read-only file system\n");
    g_auto(VmlTestRun) qw = { 0 };
    vmlease(&qw, "run", "--observe", "btop.qcow2", "--", "qemu-io", "-f", "qcow2", "-c",
            "write -P 0x33 0 4k", "btop.qcow2", NULL);
    g_assert_cmpint(qw.status, !=, 0);
    g_assert_nonnull(strstr(qw.err, "Read-only file system"));
    g_auto(VmlTestRun) mi = { 0 };
    vmlease(&mi, "run", "--observe", "btop.qcow2", "--", "cat", "/proc/self/mountinfo", NULL);
    g_assert_cmpint(mi.status, ==, 0);
    guint ro = 0;
    g_assert_cmpuint(mounts_on(mi.out, top, &ro), ==, 1);
    g_assert_cmpuint(ro, ==, 1);
    g_assert_cmpuint(mounts_on(mi.out, base, &ro), ==, 1);
    g_assert_cmpuint(ro, ==, 1);

    g_autofree char *base_after = sha256_of(base);
    g_autofree char *top_after = sha256_of(top);
    g_assert_cmpstr(base_after, ==, base_sum);
    g_assert_cmpstr(top_after, ==, top_sum);
    g_assert_cmpuint(my_mounts_on(top), ==, 0);
    g_assert_cmpuint(my_mounts_on(base), ==, 0);
    g_assert_cmpuint(n_owners(top), ==, 0);
    g_assert_cmpuint(n_owners(base), ==, 0);
}

/* An observer outlives a SIGKILL of vmleased: the restarted daemon lists
 * it again (from its record), and forgets it once it exits. */
static void
test_observe_survives_daemon_kill(void)
{
    g_autofree char *path = in_root("kept.img");
    g_assert_true(g_file_set_contents(path, "x", -1, NULL));
    g_autofree char *img = canonical("kept.img");
    Bg obs = bg_vmlease("run", "--observe", "kept.img", "--", "sh", "-c", "read go", NULL);
    wait_owner(img, obs.pid);
    vml_test_daemon_kill(daemon_, SIGKILL);
    vml_test_daemon_restart(daemon_);
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    assert_observer(json_array_get_object_element(owners, 0), obs.pid, "vmlease-run:sh", img);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);
    bg_go(&obs);
    int st = bg_wait(&obs);
    g_assert_true(WIFEXITED(st));
    bg_clear(&obs);
    for (int i = 0; i < POLL_TRIES && n_owners(img); i++)
        g_usleep(POLL_SLEEP_US);
    g_assert_cmpuint(n_owners(img), ==, 0);
}

/* Without root the observed image is read-only too: uid 65534, in the
 * lease group, gets EROFS writing a 0666 image through the observed path,
 * while the same write outside an observer works. */
static void
test_observe_read_only_without_root(void)
{
    if (geteuid() != 0 || !have("setpriv")) {
        g_test_skip("needs root (to become uid 65534) and setpriv");
        return;
    }
    g_autofree char *path = in_root("nobody.img");
    g_assert_true(g_file_set_contents(path, "bytes\n", -1, NULL));
    g_assert_cmpint(chmod(path, 0666), ==, 0);
    g_assert_cmpint(chmod(daemon_->root, 0711), ==, 0);
    g_autofree char *img = canonical("nobody.img");
    g_autofree char *before = sha256_of(img);
    g_autofree char *write = g_strdup_printf("id -u; echo x >> %s", img);

    g_auto(VmlTestRun) in = { 0 };
    tool(&in, "setpriv", "--reuid", "65534", "--regid", "65534", "--init-groups",
         g_getenv("VMLEASE_BIN"), "run", "--observe", img, "--", "sh", "-c", write, NULL);
    g_assert_cmpint(in.status, ==, 2);
    g_assert_cmpstr(in.out, ==, "65534\n");   /* runs as itself, not as a mapped root */
    g_autofree char *erofs = g_strdup_printf("%s: Read-only file system\n", img);
    g_assert_nonnull(strstr(in.err, erofs));
    g_autofree char *after = sha256_of(img);
    g_assert_cmpstr(after, ==, before);

    /* The control: the same write by the same uid without an observer. */
    g_auto(VmlTestRun) out = { 0 };
    tool(&out, "setpriv", "--reuid", "65534", "--regid", "65534", "--init-groups",
         "sh", "-c", write, NULL);
    g_assert_cmpint(out.status, ==, 0);
    g_autofree char *changed = sha256_of(img);
    g_assert_cmpstr(changed, !=, before);
    g_assert_cmpuint(n_owners(img), ==, 0);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_assert_nonnull(g_getenv("VMLEASE_BIN"));
    /* uid 65534 (group nogroup) may take leases and look: the case
     * without root. */
    daemon_ = vml_test_daemon_start("lease_group = \"nogroup\"\nadmin_group = \"nogroup\"\n");
    g_test_add_func("/observe/running-vm", test_observe_running_vm);
    g_test_add_func("/observe/read-only", test_observe_read_only);
    g_test_add_func("/observe/holds-nothing", test_observe_holds_nothing);
    g_test_add_func("/observe/gone-on-exit-and-kill", test_observe_gone_on_exit_and_kill);
    g_test_add_func("/observe/backing-images", test_observe_backing_images);
    g_test_add_func("/observe/read-only-without-root", test_observe_read_only_without_root);
    g_test_add_func("/observe/survives-daemon-kill", test_observe_survives_daemon_kill);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    return rc;
}
