#include "image-open.h"
#include "image-guard.h"
#include "vml-error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Open PATH for MODE with CREDS' rights; blocking I/O as any image user
 * expects. */
static int
open_for(const char *path, VmlMode mode, const VmlCreds *creds, GError **error)
{
    int fd = vml_open_as(path, mode == VML_MODE_EXCLUSIVE ? O_RDWR : O_RDONLY, creds, error);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s is not a regular file or block device", path);
        close(fd);
        return -1;
    }
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static gboolean
change_lease(VmlLeaseTable *t, VmlHolder *h, const char *key, const char *path, VmlMode mode,
             gboolean at_least, JsonObject **params, GError **error)
{
    VmlRequest req = { .key = (char *)key, .path = (char *)path, .mode = mode,
                       .at_least = at_least };
    g_autoptr(GPtrArray) leases = vml_lease_table_acquire(t, h, &req, 1, FALSE, FALSE, params, error);
    return leases != NULL;
}

/* Put H's lease on KEY back to what it was: none, or PREV. Only ever a
 * release or a downgrade, which cannot conflict. */
static void
restore_lease(VmlLeaseTable *t, VmlHolder *h, const char *key, const char *path, gboolean had,
              VmlMode prev)
{
    g_autoptr(GError) error = NULL;
    JsonObject *params = NULL;
    guint released;
    gboolean ok = had ? change_lease(t, h, key, path, prev, FALSE, &params, &error)
                      : vml_lease_table_release(t, h, &key, 1, &released, &error);
    if (params)
        json_object_unref(params);
    if (!ok)
        g_warning("%s: cannot put holder %" G_GINT64_FORMAT "'s lease back: %s", path, h->id,
                  error->message);
}

int
vml_image_open_leased(VmlLeaseTable *t, VmlHolder *h, const char *key, const char *path,
                      VmlMode mode, const VmlCreds *creds, JsonObject **params, GError **error)
{
    VmlLease *l = g_hash_table_lookup(h->leases, key);
    gboolean had = l != NULL;
    VmlMode prev = l ? l->mode : VML_MODE_SHARED;
    if (!change_lease(t, h, key, path, mode, TRUE, params, error))
        return -1;
    int fd = open_for(path, mode, creds, error);
    if (fd < 0 && (!had || prev != mode))
        restore_lease(t, h, key, path, had, prev);
    return fd;
}

static gboolean
same_file(int fd, const char *path, GError **error)
{
    struct stat a, b;
    if (fstat(fd, &a) < 0 || stat(path, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "the fd given is not an open file of %s", path);
        return FALSE;
    }
    return TRUE;
}

int
vml_image_reopen(VmlLeaseTable *t, VmlStash *stash, VmlHolder *h, const char *key,
                 const char *path, int old_fd,
                 VmlMode mode, const char *stash_name, const VmlCreds *creds,
                 const char **limit, JsonObject **params, GError **error)
{
    uid_t uid = creds->uid;
    VmlLease *l = g_hash_table_lookup(h->leases, key);
    gboolean had = l != NULL;
    VmlMode prev = l ? l->mode : VML_MODE_SHARED;

    if (!same_file(old_fd, path, error)) {
        close(old_fd);
        return -1;
    }
    if (!vml_stash_give(stash, h->uuid, stash_name, old_fd, FALSE, uid, limit, error)) {
        close(old_fd);
        return -1;
    }
    int fd = -1;
    if (mode == VML_MODE_EXCLUSIVE) {
        /* Never a read-write fd before the exclusive lease. */
        if (change_lease(t, h, key, path, mode, FALSE, params, error)) {
            fd = open_for(path, mode, creds, error);
            if (fd < 0)
                restore_lease(t, h, key, path, had, prev);
        }
    } else {
        /* Open first: a downgrade could not be undone if another holder
         * took a shared lease in between. */
        fd = open_for(path, mode, creds, error);
        if (fd >= 0 && !change_lease(t, h, key, path, mode, FALSE, params, error)) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0)
        vml_stash_drop(stash, h->uuid, stash_name, uid, NULL);
    return fd;
}
