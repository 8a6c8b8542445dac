/* Chain changes on images no VM runs on, with qemu-img. */
#include "chain-apply.h"
#include "vml-error.h"
#include "vml-qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Run qemu-img ARGV...; its stderr goes into the error. */
static gboolean
qemu_img(GError **error, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)"qemu-img");
    va_list ap;
    va_start(ap, error);
    for (const char *arg; (arg = va_arg(ap, const char *));)
        g_ptr_array_add(argv, (char *)arg);
    va_end(ap);
    g_ptr_array_add(argv, NULL);

    g_autofree char *err = NULL;
    int status = 0;
    g_autoptr(GError) local = NULL;
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                      NULL, NULL, NULL, &err, &status, &local)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot run qemu-img: %s", local->message);
        return FALSE;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s failed: %s", cmd,
                    err && *err ? g_strchomp(err) : "no message");
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

/* The virtual size of a qcow2 image, read from its header without taking
 * QEMU's image locks (a running QEMU holds them). */
static char *
virtual_size(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "cannot open %s: %s", path,
                    g_strerror(errno));
        return NULL;
    }
    gboolean not_qcow2 = FALSE;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, error);
    close(fd);
    if (!h) {
        if (not_qcow2 && error && !*error)
            g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                        "%s is not qcow2: snapshot a running raw disk with virsh", path);
        return NULL;
    }
    return g_strdup_printf("%" G_GUINT64_FORMAT, h->virtual_size);
}

gboolean
chain_create_overlay(const VmlChainPlan *plan, gboolean vm_running, GError **error)
{
    const char *active = layer_path(plan, 0);
    if (!vm_running)
        return qemu_img(error, "create", "-q", "-f", "qcow2", "-b", active, "-F",
                        layer_format(plan, 0), plan->file, NULL);
    g_autofree char *size = virtual_size(active, error);
    return size && qemu_img(error, "create", "-q", "-f", "qcow2", "-u", "-b", active, "-F",
                            layer_format(plan, 0), plan->file, size, NULL);
}

gboolean
chain_qemu_img_apply(const VmlChainPlan *plan, GError **error)
{
    switch (plan->op) {
    case VML_CHAIN_COMMIT:
        /* -d: top keeps its data; it leaves the chain but is not emptied. */
        if (!qemu_img(error, "commit", "-q", "-d", "-f", layer_format(plan, plan->top), "-b",
                      layer_path(plan, plan->base), layer_path(plan, plan->top), NULL))
            return FALSE;
        if (plan->active)
            return TRUE;
        /* The overlay of top now reads the same data from base. */
        return qemu_img(error, "rebase", "-q", "-u", "-f", layer_format(plan, plan->top - 1),
                        "-b", layer_path(plan, plan->base), "-F",
                        layer_format(plan, plan->base), layer_path(plan, plan->top - 1), NULL);
    case VML_CHAIN_PULL:
        if (plan->base >= plan->old_chain->len)
            return qemu_img(error, "rebase", "-q", "-f", layer_format(plan, 0), "-b", "",
                            layer_path(plan, 0), NULL);
        return qemu_img(error, "rebase", "-q", "-f", layer_format(plan, 0), "-b",
                        layer_path(plan, plan->base), "-F", layer_format(plan, plan->base),
                        layer_path(plan, 0), NULL);
    case VML_CHAIN_REBASE:
        if (!plan->new_backing)
            return qemu_img(error, "rebase", "-q", "-f", layer_format(plan, plan->top), "-b", "",
                            layer_path(plan, plan->top), NULL);
        return qemu_img(error, "rebase", "-q", "-f", layer_format(plan, plan->top), "-b",
                        plan->new_backing_name ? plan->new_backing_name : plan->new_backing,
                        "-F", plan->new_backing_format, layer_path(plan, plan->top), NULL);
    case VML_CHAIN_SNAPSHOT:
        return TRUE;   /* the overlay was made before its lease was taken */
    }
    return FALSE;
}
