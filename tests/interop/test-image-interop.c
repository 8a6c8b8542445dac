/* The in-image in-use mark against the real QEMU tools: images made by
 * qemu-img, marks set and cleared by a real vmleased, qemu-img check and
 * info as the judges, and a real qemu-system-x86_64 holding an image. */
#include "harness.h"
#include "vml-error.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"
#include "vml-qemu-probe.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define VM_UUID "3b1a4c2e-5d6f-4a7b-8c9d-0e1f2a3b4c5d"
#define WAIT_MS 3000

static VmlTestDaemon *daemon_;
static char *dir;

static char *
img(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

/* Run a shell command in the image directory; its exit status. */
static int
sh(char **out, char **err, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int
sh(char **out, char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    int status;
    g_autoptr(GError) error = NULL;
    g_autofree char *o = NULL, *e = NULL;
    g_assert_true(g_spawn_sync(dir, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               &o, &e, &status, &error));
    g_assert_no_error(error);
    if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && !out && !err))
        g_test_message("%s\n%s%s", cmd, o, e);
    if (out)
        *out = g_steal_pointer(&o);
    if (err)
        *err = g_steal_pointer(&e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define SH_OK(...) g_assert_cmpint(sh(NULL, NULL, __VA_ARGS__), ==, 0)

static GBytes *
first_bytes(const char *path, gsize n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint8 *buf = g_malloc0(n);
    ssize_t got = pread(fd, buf, n, 0);
    close(fd);
    g_assert_cmpint(got, >, 0);
    return g_bytes_new_take(buf, (gsize)got);
}

static VmlQcow2Header *
header(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    VmlQcow2Header *h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_nonnull(h);
    return h;
}

static gboolean
marked(const char *path)
{
    g_autoptr(VmlQcow2Header) h = header(path);
    gboolean bit = !!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE);
    gboolean ext = vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER) != NULL;
    g_assert_cmpint(bit, ==, ext);   /* never one without the other */
    return bit;
}

/* The owner extension's bytes (asserting there is one). */
static GBytes *
mark_bytes(const char *path)
{
    g_autoptr(VmlQcow2Header) h = header(path);
    const VmlQcow2Ext *e = vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER);
    g_assert_nonnull(e);
    return g_bytes_ref(e->data);
}

static VmlImageOwner *
mark_owner(const char *path)
{
    g_autoptr(GBytes) data = mark_bytes(path);
    g_autoptr(GError) error = NULL;
    VmlImageOwner *o = vml_image_owner_decode(data, &error);
    g_assert_no_error(error);
    return o;
}

static gboolean
wait_unmarked(const char *path)
{
    for (guint i = 0; i < WAIT_MS / 10; i++) {
        if (!marked(path))
            return TRUE;
        g_usleep(10 * 1000);
    }
    return FALSE;
}

/* qemu-img check finds no errors (exit 0). */
static void
assert_check_clean(const char *path)
{
    g_autofree char *out = NULL, *err = NULL;
    int rc = sh(&out, &err, "qemu-img check '%s'", path);
    if (rc != 0)
        g_error("qemu-img check %s: exit %d\n%s%s", path, rc, out, err);
    g_assert_nonnull(strstr(out, "No errors were found on the image."));
}

/* What qemu-img info says matters: format, virtual size, backing file. */
static char *
info(const char *path)
{
    g_autofree char *out = NULL;
    g_assert_cmpint(sh(&out, NULL, "qemu-img info -U --output=json '%s'", path), ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    return g_strdup_printf("%s|%" G_GINT64_FORMAT "|%s|%s",
                           json_object_get_string_member(o, "format"),
                           json_object_get_int_member(o, "virtual-size"),
                           json_object_get_string_member_with_default(o, "backing-filename", "-"),
                           json_object_get_string_member_with_default(o, "backing-filename-format", "-"));
}

static pid_t
hold(const char *path, const char *mode)
{
    return vml_test_holder_spawn(VM_UUID, "vm-a", vml_test_resources(mode, path, NULL));
}

/* ---- QEMU processes -------------------------------------------------------- */

static const char *
qemu_system(void)
{
    return "qemu-system-x86_64";
}

static void
exec_qemu(const char *path)
{
    g_autofree char *file = g_strdup_printf("driver=file,filename=%s,node-name=f", path);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    execlp(qemu_system(), qemu_system(), "-S", "-name", "guest=interop-vm,debug-threads=on",
           "-display", "none", "-nodefaults", "-machine", "none", "-blockdev", file,
           "-blockdev", "driver=qcow2,file=f,node-name=q", (char *)NULL);
    _exit(127);
}

/* Wait until a QEMU holds PATH for writing. */
static void
wait_qemu_writer(const char *path)
{
    for (guint i = 0; i < 10000 / 20; i++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_autoptr(VmlQemuLocks) l = vml_qemu_probe(fd, NULL);
        close(fd);
        if (l && (l->perms & VML_QEMU_PERM_WRITE))
            return;
        g_usleep(20 * 1000);
    }
    g_error("no QEMU took the write lock on %s", path);
}

/* A qemu-system-x86_64 (paused, no machine) with PATH open read-write. */
static pid_t
start_qemu(const char *path)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        exec_qemu(path);
    }
    wait_qemu_writer(path);
    return pid;
}

/* ---- tests ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *create;   /* qemu-img create options */
    gboolean v2;
} Variant;

static void
test_mark_and_clear_variants(void)
{
    g_autofree char *long_dir = g_strnfill(200, 'd');
    SH_OK("mkdir -p %s/%s/%s && qemu-img create -q -f qcow2 %s/%s/%s/base.qcow2 16M && "
          "qemu-img create -q -f qcow2 base.qcow2 16M", long_dir, long_dir, long_dir,
          long_dir, long_dir, long_dir);
    g_autofree char *long_base = g_strdup_printf("%s/%s/%s/%s/base.qcow2", dir, long_dir,
                                                 long_dir, long_dir);
    g_autofree char *long_opt = g_strdup_printf("-b %s -F qcow2", long_base);
    const Variant variants[] = {
        { "v3.qcow2", "", FALSE },
        { "v3-backing.qcow2", "-b base.qcow2 -F qcow2", FALSE },
        { "v3-long-backing.qcow2", long_opt, FALSE },
        { "v3-512.qcow2", "-o cluster_size=512 -b base.qcow2 -F qcow2", FALSE },
        { "v3-2m.qcow2", "-o cluster_size=2M -b base.qcow2 -F qcow2", FALSE },
        { "v2.qcow2", "-o compat=0.10 -b base.qcow2 -F qcow2", TRUE },
    };
    for (guint i = 0; i < G_N_ELEMENTS(variants); i++) {
        const Variant *v = &variants[i];
        g_test_message("variant %s", v->name);
        SH_OK("qemu-img create -q -f qcow2 %s %s 16M", v->create, v->name);
        g_autofree char *path = img(v->name);
        g_autoptr(VmlQcow2Header) orig_h = header(path);
        gsize cluster = (gsize)orig_h->cluster_size;
        g_autoptr(GBytes) orig = first_bytes(path, cluster);
        g_autofree char *info_before = info(path);
        if (strstr(v->name, "long"))
            g_assert_cmpuint(strlen(orig_h->backing_file), >, 600);

        pid_t holder = hold(path, "exclusive");
        if (v->v2) {
            /* Version 2 has no compatible features: left as it was. */
            g_autoptr(GBytes) now = first_bytes(path, cluster);
            g_assert_true(g_bytes_equal(now, orig));
        } else {
            g_assert_true(marked(path));
            g_autoptr(VmlImageOwner) o = mark_owner(path);
            g_assert_cmpuint(o->pid, ==, (guint)holder);
            g_assert_cmpstr(o->uuid, ==, VM_UUID);
            g_assert_cmpstr(o->name, ==, "vm-a");
            g_assert_cmpstr(o->program, ==, "test-image-interop");
            g_assert_cmpuint(o->generation, >=, 1);
            g_autoptr(VmlQcow2Header) h = header(path);
            g_assert_cmpstr(h->backing_file, ==, orig_h->backing_file);
            g_assert_cmpstr(h->backing_format, ==, orig_h->backing_format);
            g_assert_cmpuint(h->area_end, <=, h->cluster_size);
        }
        assert_check_clean(path);
        g_autofree char *info_marked = info(path);
        g_assert_cmpstr(info_marked, ==, info_before);

        vml_test_child_kill(holder, SIGKILL);
        g_assert_true(wait_unmarked(path));
        g_assert_true(vml_test_wait_owners(path, 0, WAIT_MS));
        /* Cleared, the header is again exactly what qemu-img wrote. */
        g_autoptr(GBytes) after = first_bytes(path, cluster);
        g_assert_true(g_bytes_equal(after, orig));
        assert_check_clean(path);
        g_autofree char *info_after = info(path);
        g_assert_cmpstr(info_after, ==, info_before);
    }
}

/* qemu-img rewrites headers for these; our extension must come through. */
static void
test_qemu_img_keeps_mark(void)
{
    SH_OK("qemu-img create -q -f qcow2 ops-base.qcow2 16M && "
          "qemu-img create -q -f qcow2 ops-base2.qcow2 16M && "
          "qemu-img create -q -f qcow2 -b ops-base.qcow2 -F qcow2 ops.qcow2 && "
          "qemu-io -c 'write -P 0x5a 0 64k' ops.qcow2 >/dev/null");
    g_autofree char *path = img("ops.qcow2");
    pid_t holder = hold(path, "exclusive");
    g_autoptr(GBytes) mark = mark_bytes(path);
    static const char *const ops[] = {
        "qemu-img snapshot -c s1 ops.qcow2",
        "qemu-img resize -q ops.qcow2 32M",
        "qemu-img rebase -u -b ops-base2.qcow2 -F qcow2 ops.qcow2",
        "qemu-img rebase -q -b ops-base.qcow2 -F qcow2 ops.qcow2",
        "qemu-img commit -q ops.qcow2",
    };
    for (guint i = 0; i < G_N_ELEMENTS(ops); i++) {
        g_test_message("%s", ops[i]);
        SH_OK("%s", ops[i]);
        g_assert_true(marked(path));
        g_autoptr(GBytes) now = mark_bytes(path);
        g_assert_true(g_bytes_equal(now, mark));
        assert_check_clean(path);
    }
    g_autofree char *out = NULL;
    SH_OK("qemu-img snapshot -U -l ops.qcow2 | grep -q ' s1 '");
    g_autoptr(VmlQcow2Header) h = header(path);
    g_assert_cmpuint(h->virtual_size, ==, 32u << 20);
    g_assert_cmpstr(h->backing_file, ==, "ops-base.qcow2");
    /* The commit reached the base. */
    g_assert_cmpint(sh(&out, NULL, "qemu-io -c 'read -P 0x5a 0 64k' ops-base.qcow2"), ==, 0);
    g_assert_null(strstr(out, "Pattern verification failed"));

    vml_test_child_kill(holder, SIGKILL);
    g_assert_true(wait_unmarked(path));
    assert_check_clean(path);
}

static void
test_qemu_probe_and_refusal(void)
{
    SH_OK("qemu-img create -q -f qcow2 busy.qcow2 16M");
    g_autofree char *path = img("busy.qcow2");
    g_autoptr(GBytes) orig = first_bytes(path, 65536);
    pid_t qemu = start_qemu(path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQemuLocks) l = vml_qemu_probe(fd, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_cmpuint(l->holders->len, ==, 1);
    const VmlQemuHolder *q = l->holders->pdata[0];
    g_assert_cmpint(q->pid, ==, qemu);
    g_assert_cmpuint(q->perms, ==, VML_QEMU_PERM_CONSISTENT_READ | VML_QEMU_PERM_WRITE |
                     VML_QEMU_PERM_RESIZE);
    g_assert_cmpuint(q->unshared, ==, VML_QEMU_PERM_WRITE | VML_QEMU_PERM_RESIZE);
    g_assert_true(g_str_has_prefix(q->command, "qemu-system-x86_64 -S"));
    /* Messages name the program and the guest, not the whole line. */
    g_assert_cmpstr(q->program, ==, "qemu-system-x86_64, guest interop-vm");

    /* An exclusive lease is refused, naming QEMU's pid and command. */
    pid_t vm = vml_test_child_spawn();
    gint64 id = vml_test_register("8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d", "vm-b", vm);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", id);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", path, NULL));
    g_autoptr(JsonObject) eparams = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL,
                                            &eparams, &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY);
    g_autofree char *says = g_strdup_printf("%s is open for writing by pid %d (qemu-system-x86_64, "
                                            "guest interop-vm), which holds no vmlease lease on it",
                                            path, (int)qemu);
    g_assert_cmpstr(error->message, ==, says);
    g_assert_cmpint(json_object_get_int_member(eparams, "pid"), ==, qemu);
    /* The whole command line stays in the parameters, for scripts. */
    g_assert_true(g_str_has_prefix(json_object_get_string_member(eparams, "command"),
                                   "qemu-system-x86_64 -S"));
    vml_test_assert_image(eparams, "path", path);
    g_assert_true(vml_test_wait_owners(path, 0, 0));   /* nothing left held */
    g_clear_error(&error);

    /* Shared is fine (a reader), and changes nothing in the image. */
    g_autoptr(JsonObject) ps = json_object_new();
    json_object_set_int_member(ps, "holder", id);
    json_object_set_array_member(ps, "resources", vml_test_resources("shared", path, NULL));
    g_autoptr(JsonObject) rs = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", ps, NULL,
                                             NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) now = first_bytes(path, 65536);
    g_assert_true(g_bytes_equal(now, orig));

    /* inspect tells the truth about it. */
    g_autofree char *out = NULL;
    g_assert_cmpint(sh(&out, NULL, "'%s' inspect --json '%s'", g_getenv("VMLEASE_BIN"), path),
                    ==, 0);
    g_autoptr(JsonParser) jp = json_parser_new();
    g_assert_true(json_parser_load_from_data(jp, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(jp));
    g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "in-use");
    JsonObject *qj = json_object_get_object_member(o, "qemu");
    JsonObject *h0 = json_array_get_object_element(json_object_get_array_member(qj, "holders"), 0);
    g_assert_cmpint(json_object_get_int_member(h0, "pid"), ==, qemu);

    vml_test_child_kill(qemu, SIGKILL);
    vml_test_child_kill(vm, SIGKILL);
}

/* libvirt's order: the lease is taken for the QEMU pid before exec (marked),
 * released at pause while QEMU still runs (the mark must stay: QEMU would
 * write its header copy back), taken again at resume, released at the next
 * pause, and the mark is cleared once QEMU has exited. */
static void
test_vm_lifecycle(void)
{
    SH_OK("qemu-img create -q -f qcow2 life.qcow2 16M");
    g_autofree char *path = img("life.qcow2");
    int go[2];
    g_assert_cmpint(pipe(go), ==, 0);
    pid_t vm = fork();
    g_assert_cmpint(vm, >=, 0);
    if (vm == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        exec_qemu(path);
    }
    close(go[0]);
    gint64 id = vml_test_register(VM_UUID, "vm-life", vm);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", id);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", path, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    g_assert_true(marked(path));
    g_autoptr(GBytes) mark = mark_bytes(path);
    g_assert_cmpint(write(go[1], "x", 1), ==, 1);
    close(go[1]);
    wait_qemu_writer(path);

    g_autoptr(JsonObject) rel = json_object_new();
    json_object_set_int_member(rel, "holder", id);
    g_autoptr(JsonObject) rr = vml_test_call(FALSE, "io.vmlease.Lease.Release", rel, NULL,
                                             NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(rr, "released"), ==, 1);
    g_assert_true(marked(path));   /* QEMU holds it: left as it was */

    /* Resume: the QEMU writing the image is the holder's own. */
    g_autoptr(JsonObject) r2 = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                             &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) still = mark_bytes(path);
    g_assert_true(g_bytes_equal(still, mark));

    /* Paused again, then destroyed: no lease is left to release at exit,
     * the mark is cleared all the same. */
    g_autoptr(JsonObject) rr2 = vml_test_call(FALSE, "io.vmlease.Lease.Release", rel, NULL,
                                              NULL, &error);
    g_assert_no_error(error);
    g_assert_true(marked(path));
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(wait_unmarked(path));
    assert_check_clean(path);
}

static void
acquire_as(gint64 id, const char *mode, const char *path)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", id);
    json_object_set_array_member(p, "resources", vml_test_resources(mode, path, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
}

/* A downgrade ends the exclusive hold: the mark goes; an upgrade brings a
 * new one with the new generation. */
static void
test_downgrade_and_upgrade(void)
{
    SH_OK("qemu-img create -q -f qcow2 updown.qcow2 16M");
    g_autofree char *path = img("updown.qcow2");
    pid_t vm = vml_test_child_spawn();
    gint64 id = vml_test_register(VM_UUID, "vm-updown", vm);
    acquire_as(id, "exclusive", path);
    g_autoptr(VmlImageOwner) first = mark_owner(path);
    g_assert_cmpuint(first->pid, ==, (guint)vm);
    acquire_as(id, "shared", path);
    g_assert_false(marked(path));
    acquire_as(id, "exclusive", path);
    g_autoptr(VmlImageOwner) second = mark_owner(path);
    g_assert_cmpuint(second->generation, ==, first->generation + 1);
    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(wait_unmarked(path));
}

static int
vmlease(char **out, char **err, const char *args)
{
    return sh(out, err, "'%s' %s", g_getenv("VMLEASE_BIN"), args);
}

/* Write a mark by hand, as another boot or host would have left it. */
static void
plant_mark(const char *path, const char *machine_id, const char *boot_id, guint32 pid)
{
    VmlImageOwner o = {
        .pid = pid, .start_time = 1, .time_set = 1700000000, .generation = 3,
        .uuid = (char *)VM_UUID, .machine_id = (char *)machine_id, .boot_id = (char *)boot_id,
        .hostname = (char *)"elsewhere", .program = (char *)"qemu-system-x86_64",
        .name = (char *)"vm-gone",
    };
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean not_qcow2;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) ext = vml_image_owner_encode(&o);
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, ext);
    g_assert_true(vml_qcow2_write(fd, path, h, &error));
    close(fd);
}

static char *
this_id(const char *file)
{
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(file, &text, NULL, NULL));
    return g_strstrip(g_strdup(text));
}

static void
test_stale_and_force_unlock(void)
{
    SH_OK("test -f base.qcow2 || qemu-img create -q -f qcow2 base.qcow2 16M; "
          "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 stale.qcow2");
    g_autofree char *path = img("stale.qcow2");
    g_autoptr(GBytes) orig = first_bytes(path, 65536);
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *arg = g_strdup_printf("force-unlock '%s'", path);
    g_autofree char *arg_force = g_strdup_printf("force-unlock --force '%s'", path);
    g_autofree char *arg_inspect = g_strdup_printf("inspect '%s'", path);

    /* Live: a holder marked it. Refused without --force, naming the mark. */
    pid_t holder = hold(path, "exclusive");
    g_assert_cmpint(vmlease(&out, &err, arg), ==, 3);
    g_autofree char *would = g_strdup_printf("would have cleared the in-use mark of VM \"vm-a\" "
                                             "(uuid %s, pid %d (test-image-interop) on host %s, "
                                             "marked since ", VM_UUID, (int)holder,
                                             g_get_host_name());
    if (!strstr(err, would))
        g_error("expected '%s' in: %s", would, err);
    g_assert_true(marked(path));

    /* The daemon dies, then the holder, and the daemon's records are lost
     * with it (a restart that finds them clears the dead holder's marks):
     * the mark is left behind. */
    vml_test_daemon_kill(daemon_, SIGKILL);
    vml_test_child_kill(holder, SIGKILL);
    g_autofree char *forget = g_strdup_printf("rm -f '%s'/lockspace/*.holder '%s'/state/state.json",
                                              daemon_->root, daemon_->root);
    g_assert_cmpint(system(forget), ==, 0);
    vml_test_daemon_restart(daemon_);
    g_assert_true(marked(path));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg_inspect), ==, 0);
    g_autofree char *stale = g_strdup_printf("verdict:       stale: pid %d is gone", (int)holder);
    if (!strstr(out, stale))
        g_error("expected '%s' in: %s", stale, out);
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg), ==, 0);
    g_assert_nonnull(strstr(out, "cleared the in-use mark (stale: pid"));
    g_autoptr(GBytes) cleared = first_bytes(path, 65536);
    g_assert_true(g_bytes_equal(cleared, orig));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg), ==, 0);
    g_assert_nonnull(strstr(out, "nothing cleared: no in-use mark to clear"));

    /* This host, an earlier boot. */
    g_autofree char *machine = this_id("/etc/machine-id");
    plant_mark(path, machine, "00000000-1111-2222-3333-444444444444", 4242);
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg_inspect), ==, 0);
    g_assert_nonnull(strstr(out, "verdict:       stale: host elsewhere rebooted since it was set "
                                 "(boot-id differs)"));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg), ==, 0);
    g_assert_false(marked(path));

    /* Another host: cannot be checked, so only with --force. */
    plant_mark(path, "0123456789abcdef0123456789abcdef", "00000000-1111-2222-3333-444444444444",
               4242);
    g_clear_pointer(&err, g_free);
    g_assert_cmpint(vmlease(NULL, &err, arg), ==, 3);
    g_assert_nonnull(strstr(err, "another host: its processes cannot be checked from here"));
    g_assert_true(marked(path));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(vmlease(&out, NULL, arg_force), ==, 0);
    g_assert_false(marked(path));

    /* Never while a QEMU has the image open, --force or not. */
    plant_mark(path, machine, "00000000-1111-2222-3333-444444444444", 4242);
    pid_t qemu = start_qemu(path);
    g_clear_pointer(&err, g_free);
    g_assert_cmpint(vmlease(NULL, &err, arg_force), ==, 3);
    g_autofree char *busy = g_strdup_printf("%s is open in pid %d (qemu-system-x86_64", path,
                                            (int)qemu);
    if (!strstr(err, busy))
        g_error("expected '%s' in: %s", busy, err);
    g_assert_true(marked(path));
    vml_test_child_kill(qemu, SIGKILL);
    g_assert_cmpint(vmlease(NULL, NULL, arg), ==, 0);
    g_assert_false(marked(path));
    assert_check_clean(path);
}

/* A header we cannot parse is never written, and does not cost the lease. */
static void
test_bad_header_left_alone(void)
{
    SH_OK("test -f base.qcow2 || qemu-img create -q -f qcow2 base.qcow2 16M; "
          "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 bad.qcow2");
    g_autofree char *path = img("bad.qcow2");
    /* The backing format extension (right after the 112-byte header)
     * claims 60000 bytes. */
    SH_OK("printf '\\000\\000\\352\\140' | dd of=bad.qcow2 bs=1 seek=116 conv=notrunc status=none");
    g_autoptr(GBytes) orig = first_bytes(path, 65536);
    pid_t holder = hold(path, "exclusive");
    g_autoptr(GBytes) now = first_bytes(path, 65536);
    g_assert_true(g_bytes_equal(now, orig));
    g_autofree char *out = NULL;
    g_autofree char *arg = g_strdup_printf("inspect --json '%s'", path);
    /* Called corrupt (exit 6), the fault named first, the lease after it. */
    g_assert_cmpint(vmlease(&out, NULL, arg), ==, 6);
    g_assert_nonnull(strstr(out, "\"header_error\" : \"" ));
    g_assert_nonnull(strstr(out, "is 60000 bytes long, past the header area"));
    g_assert_nonnull(strstr(out, "\"verdict\" : \"corrupt\""));
    g_assert_nonnull(strstr(out, "past the header area; in use by VM"));
    vml_test_child_kill(holder, SIGKILL);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start(NULL);
    dir = g_build_filename(daemon_->root, "images", NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_test_add_func("/interop/mark-and-clear-variants", test_mark_and_clear_variants);
    g_test_add_func("/interop/qemu-img-keeps-mark", test_qemu_img_keeps_mark);
    g_test_add_func("/interop/qemu-probe-and-refusal", test_qemu_probe_and_refusal);
    g_test_add_func("/interop/vm-lifecycle", test_vm_lifecycle);
    g_test_add_func("/interop/downgrade-and-upgrade", test_downgrade_and_upgrade);
    g_test_add_func("/interop/stale-and-force-unlock", test_stale_and_force_unlock);
    g_test_add_func("/interop/bad-header-left-alone", test_bad_header_left_alone);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    g_free(dir);
    return rc;
}
