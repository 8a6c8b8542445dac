#include "image-guard.h"
#include "metrics.h"
#include "vml-error.h"
#include "vml-proc.h"
#include "vml-qcow2.h"
#include "vml-qemu-probe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int
vml_image_open(const char *path, int flags, GError **error)
{
    struct stat st;
    return vml_image_open_stat(path, flags, &st, error);
}

int
vml_image_open_stat(const char *path, int flags, struct stat *st, GError **error)
{
    int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "cannot open %s: %s",
                    path, g_strerror(err));
        errno = err;
        return -1;
    }
    if (fstat(fd, st) < 0 || !(S_ISREG(st->st_mode) || S_ISBLK(st->st_mode))) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s is not a regular file or block device", path);
        close(fd);
        errno = ENODEV;
        return -1;
    }
    return fd;
}

static gboolean
pid_known(pid_t pid, const pid_t *known, guint n_known)
{
    for (guint i = 0; i < n_known; i++) {
        if (known[i] == pid)
            return TRUE;
    }
    return FALSE;
}

int
vml_image_guard_open(const char *path, gboolean *writable, struct stat *st)
{
    int fd = vml_image_open_stat(path, O_RDWR, st, NULL);
    *writable = fd >= 0;
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM || errno == ETXTBSY))
        fd = vml_image_open_stat(path, O_RDONLY, st, NULL);
    return fd;
}

gboolean
vml_image_guard_check(const char *path, int fd, const pid_t *known, guint n_known,
                      gboolean *unheld, JsonObject **params, GError **error)
{
    g_autoptr(GError) local = NULL;
    *unheld = FALSE;
    if (fd < 0)
        return TRUE;   /* nothing to probe: the lease alone decides */
    g_autoptr(VmlQemuLocks) locks = vml_qemu_probe(fd, &local);
    if (!locks) {
        g_warning("%s: QEMU lock probe failed: %s", path, local->message);
        return TRUE;
    }
    *unheld = !vml_qemu_locks_busy(locks);
    if (!(locks->perms & VML_QEMU_PERM_WRITE))
        return TRUE;
    const VmlQemuHolder *writer = NULL;
    for (guint i = 0; i < locks->holders->len; i++) {
        const VmlQemuHolder *q = locks->holders->pdata[i];
        if (!(q->perms & VML_QEMU_PERM_WRITE))
            continue;
        if (pid_known(q->pid, known, n_known))
            return TRUE;
        writer = q;
    }
    *params = json_object_new();
    json_object_set_string_member(*params, "resource", path);
    if (writer) {
        json_object_set_int_member(*params, "pid", writer->pid);
        json_object_set_string_member(*params, "command", writer->command);
        g_set_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY,
                    "%s is open for writing by pid %d (%s), which holds no vmlease lease on it",
                    path, (int)writer->pid, writer->program);
    } else {
        g_set_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY,
                    "%s is open for writing by a QEMU that is not on this host", path);
    }
    return FALSE;
}

/* Read the qcow2 v3 header of PATH open on FD; NULL when there is nothing
 * we may rewrite (logged when it is worth saying), with *NEVER (may be
 * NULL) set when that is for good: no qcow2 at all, or version 2. */
static VmlQcow2Header *
writable_header(int fd, const struct stat *st, const char *path, gboolean *never)
{
    g_autoptr(GError) error = NULL;
    gboolean not_qcow2;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read_stat(fd, st, path, &not_qcow2, &error);
    if (never)
        *never = (!h && not_qcow2) || (h && h->version < 3);
    if (!h) {
        if (error)
            g_warning("%s: left unmarked: %s", path, error->message);
        return NULL;
    }
    if (h->version < 3)
        return NULL;
    if (h->read_only_reason) {
        g_warning("%s: left unmarked: %s", path, h->read_only_reason);
        return NULL;
    }
    return g_steal_pointer(&h);
}

/* TRUE (logged) when a QEMU holds the image open on FD. */
static gboolean
qemu_holds(int fd, const char *path, const char *what)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQemuLocks) locks = vml_qemu_probe(fd, &error);
    if (!locks) {
        g_warning("%s: QEMU lock probe failed, %s: %s", path, what, error->message);
        return TRUE;
    }
    if (!vml_qemu_locks_busy(locks))
        return FALSE;
    g_autofree char *who = vml_qemu_locks_describe(locks);
    g_info("%s: held by %s: %s", path, who, what);
    return TRUE;
}

static VmlQcow2Sync
sync_for(gboolean durable)
{
    return durable ? VML_QCOW2_DURABLE : VML_QCOW2_ORDERED;
}

gboolean
vml_image_guard_mark(const char *path, int writable_fd, const struct stat *writable_st,
                     gboolean unheld, const VmlImageOwner *owner, gboolean durable)
{
    g_autoptr(GError) error = NULL;
    struct stat own_st;
    const struct stat *st = writable_st;
    int fd = writable_fd;
    if (fd < 0) {
        fd = vml_image_open_stat(path, O_RDWR, &own_st, &error);
        st = &own_st;
        unheld = FALSE;   /* the check saw another description */
    }
    if (fd < 0) {
        g_info("%s: left unmarked: %s", path, error->message);
        return TRUE;
    }
    gboolean never;
    g_autoptr(VmlQcow2Header) h = writable_header(fd, st, path, &never);
    /* A check that found no QEMU lock on this fd a moment ago stands. */
    if (h && (unheld || !qemu_holds(fd, path, "not marking it"))) {
        g_autoptr(GBytes) ext = vml_image_owner_encode(owner);
        h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
        vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, ext);
        if (!vml_qcow2_write_fresh(fd, path, h, sync_for(durable), &error))
            g_warning("%s: left unmarked: %s", path, error->message);
        else
            vml_metrics_count(VML_COUNT_MARKS, 1);
    }
    if (fd != writable_fd)
        close(fd);
    return !never;
}

gboolean
vml_image_guard_unmark(const char *path, guint32 pid, guint64 start_time, const char *uuid,
                       gboolean durable)
{
    g_autoptr(GError) error = NULL;
    struct stat st;
    int fd = vml_image_open_stat(path, O_RDWR, &st, &error);
    if (fd < 0) {
        g_info("%s: mark not cleared: %s", path, error->message);
        return TRUE;
    }
    gboolean done = TRUE;
    g_autoptr(VmlQcow2Header) h = writable_header(fd, &st, path, NULL);
    const VmlQcow2Ext *ext = h ? vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER) : NULL;
    g_autoptr(VmlImageOwner) o = ext ? vml_image_owner_decode(ext->data, NULL) : NULL;
    gboolean here = o && g_strcmp0(o->boot_id, vml_host_boot_id()) == 0 &&
                    g_strcmp0(o->machine_id, vml_host_machine_id()) == 0;
    gboolean ours = here && o->pid == pid && o->start_time == start_time;
    /* A migration hands the lease over while QEMU has the image open, so
     * the mark keeps naming the source: the domain's later process clears
     * it once that source is gone. */
    gboolean our_domains = !ours && here && uuid && g_strcmp0(o->uuid, uuid) == 0 &&
                           !vml_proc_is_same((pid_t)o->pid, o->start_time);
    if (ours || our_domains) {
        if (qemu_holds(fd, path, "its in-use mark is cleared once that is gone")) {
            done = FALSE;
        } else {
            h->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
            vml_qcow2_remove_ext(h, VML_QCOW2_EXT_OWNER);
            if (!vml_qcow2_write_fresh(fd, path, h, sync_for(durable), &error))
                g_warning("%s: mark not cleared: %s", path, error->message);
            else
                vml_metrics_count(VML_COUNT_UNMARKS, 1);
        }
    }
    close(fd);
    return done;
}
