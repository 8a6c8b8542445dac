/* Chain changes on images no VM runs on, with qemu-img. */
#include "chain-apply.h"
#include "vml-error.h"
#include "vml-qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* qemu-img -p reports "    (42.00/100%)" segments ended by \r: each whole
 * one in PENDING goes to PROGRESS and leaves PENDING. */
static void
take_reports(GString *pending, ChainProgress *progress)
{
    for (;;) {
        gsize n = strcspn(pending->str, "\r\n");
        if (n == pending->len)
            return;
        pending->str[n] = '\0';
        const char *open = strchr(pending->str, '(');
        char *after = NULL;
        double percent = open ? g_ascii_strtod(open + 1, &after) : 0;
        if (after && after != open + 1 && g_str_has_prefix(after, "/100%)"))
            chain_progress_set_fraction(progress, percent / 100);
        g_string_erase(pending, 0, n + 1);
    }
}

/* Read the child's stdout (progress reports) and stderr (kept in ERR)
 * until both are closed; both are closed then. */
static void
read_output(int out_fd, int err_fd, ChainProgress *progress, GString *err)
{
    enum { OUT, ERR };
    g_autoptr(GString) pending = g_string_new(NULL);
    struct pollfd fds[] = { [OUT] = { .fd = out_fd, .events = POLLIN },
                            [ERR] = { .fd = err_fd, .events = POLLIN } };
    while (fds[OUT].fd >= 0 || fds[ERR].fd >= 0) {
        if (poll(fds, G_N_ELEMENTS(fds), -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (guint i = 0; i < G_N_ELEMENTS(fds); i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            char buf[4096];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;   /* poll skips it from now on */
            } else if (i == ERR) {
                g_string_append_len(err, buf, n);
            } else {
                g_string_append_len(pending, buf, n);
                if (progress)
                    take_reports(pending, progress);
            }
        }
    }
    for (guint i = 0; i < G_N_ELEMENTS(fds); i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
}

/* Run qemu-img SUBCOMMAND ARGS...: quiet (-q), or with PROGRESS reporting
 * what qemu-img -p prints. Its stderr goes into the error. */
static gboolean
qemu_img(ChainProgress *progress, GError **error, const char *subcommand, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)"qemu-img");
    g_ptr_array_add(argv, (char *)subcommand);
    /* qemu-img hides its progress under -q. */
    g_ptr_array_add(argv, (char *)(progress ? "-p" : "-q"));
    va_list ap;
    va_start(ap, subcommand);
    for (const char *arg; (arg = va_arg(ap, const char *));)
        g_ptr_array_add(argv, (char *)arg);
    va_end(ap);
    g_ptr_array_add(argv, NULL);

    g_autoptr(GError) local = NULL;
    GPid pid = 0;
    int out_fd = -1, err_fd = -1;
    if (!g_spawn_async_with_pipes(NULL, (char **)argv->pdata, NULL,
                                  G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                  &pid, NULL, &out_fd, &err_fd, &local)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot run qemu-img: %s", local->message);
        return FALSE;
    }
    g_autoptr(GString) err = g_string_new(NULL);
    read_output(out_fd, err_fd, progress, err);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    g_spawn_close_pid(pid);
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s failed: %s", cmd,
                    err->len ? g_strchomp(err->str) : "no message");
        return FALSE;
    }
    return TRUE;
}

static const char *
layer_path(const VmlChainPlan *plan, guint i)
{
    return ((VmlLayer *)plan->old_chain->pdata[i])->path;
}

static const char *
layer_format(const VmlChainPlan *plan, guint i)
{
    const char *f = ((VmlLayer *)plan->old_chain->pdata[i])->format;
    return f ? f : "raw";
}

/* The virtual size from PATH's qcow2 header; *NOT_QCOW2 says when the
 * image is of another format. */
static gboolean
read_virtual_size(const char *path, guint64 *size, gboolean *not_qcow2, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "cannot open %s: %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    *not_qcow2 = FALSE;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, not_qcow2, error);
    close(fd);
    if (!h) {
        if (*not_qcow2 && error && !*error)
            g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE, "%s is not qcow2", path);
        return FALSE;
    }
    *size = h->virtual_size;
    return TRUE;
}

gboolean
chain_image_virtual_size(const char *path, guint64 *size, GError **error)
{
    gboolean not_qcow2 = FALSE;
    return read_virtual_size(path, size, &not_qcow2, error);
}

gboolean
chain_create_overlay(const VmlChainPlan *plan, gboolean vm_running, GError **error)
{
    const char *active = layer_path(plan, 0);
    if (!vm_running)
        return qemu_img(NULL, error, "create", "-f", "qcow2", "-b", active, "-F",
                        layer_format(plan, 0), plan->file, NULL);
    /* QEMU holds the active image: its size comes from the header. */
    guint64 size = 0;
    gboolean not_qcow2 = FALSE;
    if (!read_virtual_size(active, &size, &not_qcow2, error)) {
        if (not_qcow2) {
            g_clear_error(error);
            g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                        "%s is not qcow2: snapshot a running raw disk with virsh", active);
        }
        return FALSE;
    }
    g_autofree char *size_arg = g_strdup_printf("%" G_GUINT64_FORMAT, size);
    return qemu_img(NULL, error, "create", "-f", "qcow2", "-u", "-b", active, "-F",
                    layer_format(plan, 0), plan->file, size_arg, NULL);
}

gboolean
chain_qemu_img_apply(const VmlChainPlan *plan, ChainProgress *progress, GError **error)
{
    switch (plan->op) {
    case VML_CHAIN_COMMIT:
        /* -d: top keeps its data; it leaves the chain but is not emptied. */
        if (!qemu_img(progress, error, "commit", "-d", "-f", layer_format(plan, plan->top), "-b",
                      layer_path(plan, plan->base), layer_path(plan, plan->top), NULL))
            return FALSE;
        if (plan->active)
            return TRUE;
        /* The overlay of top now reads the same data from base. */
        return qemu_img(NULL, error, "rebase", "-u", "-f", layer_format(plan, plan->top - 1),
                        "-b", layer_path(plan, plan->base), "-F",
                        layer_format(plan, plan->base), layer_path(plan, plan->top - 1), NULL);
    case VML_CHAIN_PULL:
        if (plan->base >= plan->old_chain->len)
            return qemu_img(progress, error, "rebase", "-f", layer_format(plan, 0), "-b", "",
                            layer_path(plan, 0), NULL);
        return qemu_img(progress, error, "rebase", "-f", layer_format(plan, 0), "-b",
                        layer_path(plan, plan->base), "-F", layer_format(plan, plan->base),
                        layer_path(plan, 0), NULL);
    case VML_CHAIN_REBASE:
        if (!plan->new_backing)
            return qemu_img(progress, error, "rebase", "-f", layer_format(plan, plan->top), "-b",
                            "", layer_path(plan, plan->top), NULL);
        return qemu_img(progress, error, "rebase", "-f", layer_format(plan, plan->top), "-b",
                        plan->new_backing_name ? plan->new_backing_name : plan->new_backing,
                        "-F", plan->new_backing_format, layer_path(plan, plan->top), NULL);
    case VML_CHAIN_SNAPSHOT:
        return TRUE;   /* the overlay was made before its lease was taken */
    }
    return FALSE;
}
