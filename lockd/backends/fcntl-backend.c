/* The embedded backend: a lockspace directory holding, per resource,
 * <sha256-of-key>.lock locked with OFD locks (write = exclusive, read =
 * shared), and per holder process a <tag>.holder record. The first 8 bytes
 * of a lock file count its exclusive grants (the generation). */
#include "backend.h"
#include "record-dir.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    VmlBackend parent;
    char *dir;
    int dirfd;
    VmlRecordDir records;
} FcntlBackend;

struct _VmlLock {
    int fd;
};

static VmlBackend *
fcntl_open(const VmlDaemonConfig *cfg, GError **error)
{
    if (g_mkdir_with_parents(cfg->lockspace_dir, 0700) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot create lockspace %s: %s", cfg->lockspace_dir, g_strerror(errno));
        return NULL;
    }
    int dirfd = open(cfg->lockspace_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (dirfd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot open lockspace %s: %s", cfg->lockspace_dir, g_strerror(errno));
        return NULL;
    }
    FcntlBackend *be = g_new0(FcntlBackend, 1);
    if (!vml_record_dir_init(&be->records, cfg->lockspace_dir, error)) {
        close(dirfd);
        g_free(be);
        return NULL;
    }
    be->parent.ops = &vml_fcntl_backend_ops;
    be->dir = g_strdup(cfg->lockspace_dir);
    be->dirfd = dirfd;
    return &be->parent;
}

static void
fcntl_close(VmlBackend *parent)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    vml_record_dir_clear(&be->records);
    close(be->dirfd);
    g_free(be->dir);
    g_free(be);
}

static char *
lock_name(const char *key)
{
    g_autofree char *hash = vml_key_hash(key);
    return g_strconcat(hash, ".lock", NULL);
}

static VmlLock *
lock_new(int fd)
{
    VmlLock *l = g_new(VmlLock, 1);
    l->fd = fd;
    return l;
}

static int
set_lock(int fd, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, F_OFD_SETLK, &fl);
}

static gboolean
lock_mode(int fd, VmlMode mode, const char *key, GError **error)
{
    if (set_lock(fd, mode == VML_MODE_EXCLUSIVE ? F_WRLCK : F_RDLCK) == 0)
        return TRUE;
    if (errno == EAGAIN || errno == EACCES)
        g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "%s is locked by another holder", key);
    else
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot lock %s: %s", key, g_strerror(errno));
    return FALSE;
}

/* Read the generation and, for an exclusive grant, bump it. */
static gboolean
update_generation(int fd, VmlMode mode, const char *key, guint64 *generation, GError **error)
{
    guint64 le = 0;
    ssize_t n = pread(fd, &le, sizeof(le), 0);
    guint64 gen = n == sizeof(le) ? GUINT64_FROM_LE(le) : 0;
    if (mode == VML_MODE_EXCLUSIVE) {
        gen++;
        le = GUINT64_TO_LE(gen);
        if (pwrite(fd, &le, sizeof(le), 0) != sizeof(le)) {
            g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                        "cannot write generation of %s: %s", key, g_strerror(errno));
            return FALSE;
        }
    }
    *generation = gen;
    return TRUE;
}

static int
open_lock_file(FcntlBackend *be, const char *key, GError **error)
{
    g_autofree char *name = lock_name(key);
    int fd = openat(be->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot open lock file %s/%s for %s: %s", be->dir, name, key,
                    g_strerror(errno));
    return fd;
}

/* Lock FD (open on KEY's lock file; owned from here on). */
static VmlLock *
take_lock(int fd, const char *key, VmlMode mode, guint64 *generation, GError **error)
{
    if (!lock_mode(fd, mode, key, error)) {
        close(fd);
        return NULL;
    }
    if (!update_generation(fd, mode, key, generation, error)) {
        /* Closing our description would not drop a lock that a holder's dup
         * carries, so unlock explicitly. */
        set_lock(fd, F_UNLCK);
        close(fd);
        return NULL;
    }
    return lock_new(fd);
}

static int holder_lock_fd(FcntlBackend *be, pid_t pid, int pidfd, const char *key);

static VmlLock *
fcntl_acquire(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid, int pidfd,
              guint64 *generation, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    int fd = pidfd >= 0 ? holder_lock_fd(be, pid, pidfd, key) : -1;
    if (fd < 0)
        fd = open_lock_file(be, key, error);
    return fd < 0 ? NULL : take_lock(fd, key, mode, generation, error);
}

static VmlLock *
fcntl_adopt(G_GNUC_UNUSED VmlBackend *parent, const char *key, VmlMode mode, int fd, GError **error)
{
    /* Same description: re-asserting our own lock cannot conflict. */
    if (!lock_mode(fd, mode, key, error)) {
        close(fd);
        return NULL;
    }
    return lock_new(fd);
}

/* The holder's fd on KEY's lock file, duplicated into this process. */
static int
holder_lock_fd(FcntlBackend *be, pid_t pid, int pidfd, const char *key)
{
    g_autofree char *fddir = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autofree char *name = lock_name(key);
    g_autofree char *want = g_build_filename(be->dir, name, NULL);
    g_autoptr(GDir) d = g_dir_open(fddir, 0, NULL);
    const char *ent;

    while (d && (ent = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(fddir, ent, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        if (g_strcmp0(target, want) != 0)
            continue;
        int fd = syscall(SYS_pidfd_getfd, pidfd, atoi(ent), 0);
        if (fd >= 0) {
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            return fd;
        }
    }
    return -1;
}

static VmlLock *
fcntl_recover(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid, int pidfd,
              guint64 *generation, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    int fd = holder_lock_fd(be, pid, pidfd, key);

    if (fd >= 0) {
        VmlLock *l = fcntl_adopt(parent, key, mode, fd, error);
        guint64 le = 0;
        if (l && pread(l->fd, &le, sizeof(le), 0) == sizeof(le))
            *generation = GUINT64_FROM_LE(le);
        return l;
    }
    /* The holder kept no fd, so the lock died with the old daemon: take it
     * again if nobody else has meanwhile. */
    fd = open_lock_file(be, key, error);
    return fd < 0 ? NULL : take_lock(fd, key, mode, generation, error);
}

static gboolean
fcntl_change_mode(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, const char *key, VmlMode mode,
                  guint64 *generation, GError **error)
{
    if (!lock_mode(l->fd, mode, key, error))
        return FALSE;
    if (!update_generation(l->fd, mode, key, generation, error)) {
        lock_mode(l->fd, mode == VML_MODE_EXCLUSIVE ? VML_MODE_SHARED : VML_MODE_EXCLUSIVE,
                  key, NULL);
        return FALSE;
    }
    return TRUE;
}

static void
fcntl_release(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l)
{
    set_lock(l->fd, F_UNLCK);
    close(l->fd);
    g_free(l);
}

static void
fcntl_forget(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l)
{
    close(l->fd);
    g_free(l);
}

static int
fcntl_lock_fd(VmlLock *l)
{
    return l->fd;
}

/* ---- holder records, in the lockspace ------------------------------------ */

static VmlRecord *
fcntl_record_open(VmlBackend *parent, const char *tag, GError **error)
{
    return vml_record_dir_open(&((FcntlBackend *)parent)->records, tag, error);
}

static gboolean
fcntl_record_write(VmlBackend *parent, VmlRecord *r, const char *data, gsize len,
                   GError **error)
{
    return vml_record_dir_write(&((FcntlBackend *)parent)->records, r, data, len, error);
}

static void
fcntl_record_close(VmlBackend *parent, VmlRecord *r, gboolean remove)
{
    vml_record_dir_close(&((FcntlBackend *)parent)->records, r, remove);
}

static GPtrArray *
fcntl_records(VmlBackend *parent, GError **error)
{
    return vml_record_dir_all(&((FcntlBackend *)parent)->records, error);
}

static void
fcntl_record_remove(VmlBackend *parent, const char *tag)
{
    vml_record_dir_remove(&((FcntlBackend *)parent)->records, tag);
}

const VmlBackendOps vml_fcntl_backend_ops = {
    .name = "fcntl",
    .lock_fds = TRUE,
    .open = fcntl_open,
    .close = fcntl_close,
    .acquire = fcntl_acquire,
    .adopt = fcntl_adopt,
    .recover = fcntl_recover,
    .change_mode = fcntl_change_mode,
    .release = fcntl_release,
    .forget = fcntl_forget,
    .lock_fd = fcntl_lock_fd,
    .record_open = fcntl_record_open,
    .record_write = fcntl_record_write,
    .record_close = fcntl_record_close,
    .records = fcntl_records,
    .record_remove = fcntl_record_remove,
};
