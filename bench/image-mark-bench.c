/* What the in-image mark costs: parsing a real qcow2 header, probing
 * QEMU's lock bytes, a mark or unmark (one write + fdatasync), and an
 * exclusive acquire + release through a real vmleased on a qcow2 image
 * against the same on a raw image (which is never written). Prints
 * "name: value" figures. */
#include "bench-util.h"
#include "vml-protocol.h"
#include "vml-client.h"
#include "vml-image-owner.h"
#include "vml-qcow2.h"
#include "vml-qemu-probe.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 200

/* Library level: parse, probe, mark and unmark PATH ROUNDS times. */
static void
bench_library(const char *path)
{
    double parse[ROUNDS], probe[ROUNDS], mark[ROUNDS], unmark[ROUNDS];
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        bench_die(path, NULL);
    VmlImageOwner o = {
        .pid = (guint32)getpid(), .start_time = 1, .time_set = 1700000000, .generation = 1,
        .uuid = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
        .machine_id = (char *)"0123456789abcdef0123456789abcdef",
        .boot_id = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
        .hostname = (char *)"bench", .program = (char *)"image-mark-bench", .name = (char *)"vm",
    };
    g_autoptr(GBytes) ext = vml_image_owner_encode(&o);
    for (guint i = 0; i < ROUNDS; i++) {
        g_autoptr(GError) error = NULL;
        gboolean not_qcow2;
        gint64 t0 = bench_now_ns();
        g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, &error);
        gint64 t1 = bench_now_ns();
        if (!h)
            bench_die("vml_qcow2_read", error);
        g_autoptr(VmlQemuLocks) l = vml_qemu_probe(fd, &error);
        gint64 t2 = bench_now_ns();
        if (!l)
            bench_die("vml_qemu_probe", error);
        h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
        vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, ext);
        if (!vml_qcow2_write(fd, path, h, &error))
            bench_die("vml_qcow2_write", error);
        gint64 t3 = bench_now_ns();
        h->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
        vml_qcow2_remove_ext(h, VML_QCOW2_EXT_OWNER);
        if (!vml_qcow2_write(fd, path, h, &error))
            bench_die("vml_qcow2_write", error);
        gint64 t4 = bench_now_ns();
        parse[i] = (t1 - t0) / 1e3;
        probe[i] = (t2 - t1) / 1e3;
        mark[i] = (t3 - t2) / 1e3;
        unmark[i] = (t4 - t3) / 1e3;
    }
    close(fd);
    bench_print_p50("qcow2_header_parse", parse, ROUNDS);
    bench_print_p50("qemu_lock_probe", probe, ROUNDS);
    bench_print_p50("header_mark_write_fdatasync", mark, ROUNDS);
    bench_print_p50("header_unmark_write_fdatasync", unmark, ROUNDS);
}

static JsonObject *
call(VmlClient *c, const char *method, JsonObject *params)
{
    g_autoptr(GError) error = NULL;
    JsonObject *r = vml_client_call(c, method, params, NULL, 0, NULL, NULL, &error);
    if (!r)
        bench_die(method, error);
    return r;
}

/* Exclusive acquire + release of PATH through the daemon. */
static void
bench_daemon(const char *name, const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) c = vml_client_connect_lease(&error);
    if (!c)
        bench_die("connect", error);
    JsonObject *reg = json_object_new();
    json_object_set_string_member(reg, "uuid", "6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60");
    json_object_set_string_member(reg, "name", "image-mark-bench");
    json_object_set_int_member(reg, "pid", getpid());
    g_autoptr(JsonObject) r = call(c, VML_METHOD_REGISTER, reg);
    gint64 holder = json_object_get_int_member(r, "holder");
    double us[ROUNDS];
    for (guint i = 0; i < ROUNDS; i++) {
        JsonObject *a = json_object_new();
        JsonArray *res = json_array_new();
        JsonObject *one = json_object_new();
        json_object_set_string_member(one, "path", path);
        json_object_set_string_member(one, "mode", "exclusive");
        json_array_add_object_element(res, one);
        json_object_set_int_member(a, "holder", holder);
        json_object_set_array_member(a, "resources", res);
        JsonObject *rel = json_object_new();
        json_object_set_int_member(rel, "holder", holder);
        gint64 t0 = bench_now_ns();
        g_autoptr(JsonObject) ar = call(c, VML_METHOD_ACQUIRE, a);
        g_autoptr(JsonObject) rr = call(c, VML_METHOD_RELEASE, rel);
        us[i] = (bench_now_ns() - t0) / 1e3;
    }
    bench_print_p50(name, us, ROUNDS);
}

static void
sh(const char *cmd)
{
    if (system(cmd) != 0) {
        fprintf(stderr, "image-mark-bench: failed: %s\n", cmd);
        exit(1);
    }
}

int
main(int argc, char **argv)
{
    g_set_prgname("image-mark-bench");
    const char *daemon = argc > 1 ? argv[1] : g_getenv("VMLEASED_BIN");
    g_autofree char *root = g_dir_make_tmp("vmlease-markbench-XXXXXX", NULL);
    g_autofree char *qcow2 = g_build_filename(root, "disk.qcow2", NULL);
    g_autofree char *raw = g_build_filename(root, "disk.raw", NULL);
    g_autofree char *make = g_strdup_printf("qemu-img create -q -f qcow2 '%s' 1G && "
                                            "qemu-img create -q -f raw '%s' 1G", qcow2, raw);
    sh(make);
    bench_library(qcow2);

    if (daemon) {
        g_setenv("VMLEASE_ROOT", root, TRUE);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 2);
            execl(daemon, daemon, "--foreground", (char *)NULL);
            _exit(127);
        }
        g_autofree char *sock = g_build_filename(root, "run", "vmleased.sock", NULL);
        for (int i = 0; i < 200 && access(sock, F_OK) != 0; i++)
            g_usleep(10 * 1000);
        bench_daemon("acquire_release_raw", raw);
        bench_daemon("acquire_release_qcow2_marked", qcow2);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", root);
    sh(rm);
    return 0;
}
