/* The embedded backend: a lockspace directory holding, per resource,
 * <sha256>.lock locked with OFD locks (write = exclusive, read = shared) and
 * one <sha256>.<tag>.owner record per holder. The first 8 bytes of the lock
 * file count exclusive grants (the generation). */
#include "backend.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-proc.h"
#include "vml-wire.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    VmlBackend parent;
    char *dir;
    int dirfd;
} FcntlBackend;

struct _VmlLock {
    int fd;
    char *lock_name;     /* <hash>.lock */
    char *record_name;   /* <hash>.<tag>.owner */
};

#define HASH_LEN 64

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
    be->parent.ops = &vml_fcntl_backend_ops;
    be->dir = g_strdup(cfg->lockspace_dir);
    be->dirfd = dirfd;
    return &be->parent;
}

static void
fcntl_close(VmlBackend *parent)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    close(be->dirfd);
    g_free(be->dir);
    g_free(be);
}

/* Records are per holder process, so the name is stable across restarts. */
static char *
record_name(const VmlOwner *o)
{
    g_autofree char *hash = vml_key_hash(o->resource);
    g_autofree char *ident = g_strdup_printf("%s:%s:%" G_GINT64_FORMAT ":%" G_GUINT64_FORMAT,
                                             o->machine_id, o->boot_id, o->pid, o->start_time);
    g_autofree char *tag = vml_key_hash(ident);
    return g_strdup_printf("%s.%.16s.owner", hash, tag);
}

static VmlLock *
lock_new(const VmlOwner *o, int fd)
{
    VmlLock *l = g_new0(VmlLock, 1);
    g_autofree char *hash = vml_key_hash(o->resource);
    l->fd = fd;
    l->lock_name = g_strdup_printf("%s.lock", hash);
    l->record_name = record_name(o);
    return l;
}

static void
lock_free(VmlLock *l)
{
    if (l->fd >= 0)
        close(l->fd);
    g_free(l->lock_name);
    g_free(l->record_name);
    g_free(l);
}

static int
set_lock(int fd, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, F_OFD_SETLK, &fl);
}

static gboolean
lock_mode(int fd, VmlMode mode, const char *resource, GError **error)
{
    if (set_lock(fd, mode == VML_MODE_EXCLUSIVE ? F_WRLCK : F_RDLCK) == 0)
        return TRUE;
    if (errno == EAGAIN || errno == EACCES)
        g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT,
                    "%s is locked by another holder", resource);
    else
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot lock %s: %s", resource, g_strerror(errno));
    return FALSE;
}

/* Read the generation and, for an exclusive grant, bump it. */
static gboolean
update_generation(int fd, VmlOwner *o, GError **error)
{
    guint64 le = 0;
    ssize_t n = pread(fd, &le, sizeof(le), 0);
    guint64 gen = n == sizeof(le) ? GUINT64_FROM_LE(le) : 0;
    if (o->mode == VML_MODE_EXCLUSIVE) {
        gen++;
        le = GUINT64_TO_LE(gen);
        if (pwrite(fd, &le, sizeof(le), 0) != sizeof(le)) {
            g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                        "cannot write generation of %s: %s", o->resource, g_strerror(errno));
            return FALSE;
        }
    }
    o->generation = gen;
    return TRUE;
}

static gboolean
write_record(FcntlBackend *be, VmlLock *l, const VmlOwner *o, GError **error)
{
    g_autoptr(JsonObject) j = vml_owner_to_json(o, TRUE);
    gsize len;
    g_autofree char *data = vml_json_to_string(j, &len);
    int fd = openat(be->dirfd, l->record_name,
                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot write owner record %s/%s: %s",
                    be->dir, l->record_name, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlinkat(be->dirfd, l->record_name, 0);
        }
        return FALSE;
    }
    close(fd);
    return TRUE;
}

static int
open_lock_file(FcntlBackend *be, const char *name, GError **error)
{
    int fd = openat(be->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot open lock file %s/%s: %s", be->dir, name, g_strerror(errno));
    return fd;
}

/* Lock FD (already open on the resource's lock file; owned from here on)
 * and record the owner. */
static VmlLock *
take_lock(FcntlBackend *be, VmlOwner *o, int fd, GError **error)
{
    if (!lock_mode(fd, o->mode, o->resource, error)) {
        close(fd);
        return NULL;
    }
    VmlLock *l = lock_new(o, fd);
    if (!update_generation(fd, o, error) || !write_record(be, l, o, error)) {
        /* Closing our description would not drop a lock that a holder's dup
         * carries, so unlock explicitly. */
        set_lock(fd, F_UNLCK);
        lock_free(l);
        return NULL;
    }
    return l;
}

static VmlLock *
fcntl_acquire(VmlBackend *parent, VmlOwner *o, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autofree char *hash = vml_key_hash(o->resource);
    g_autofree char *name = g_strdup_printf("%s.lock", hash);
    int fd = open_lock_file(be, name, error);
    if (fd < 0)
        return NULL;
    return take_lock(be, o, fd, error);
}

/* Takes FD over, closing it on failure. */
static VmlLock *
fcntl_adopt(VmlBackend *parent, VmlOwner *o, int fd, GError **error)
{
    VmlLock *l = lock_new(o, fd);
    /* Same description: re-asserting our own lock cannot conflict. */
    if (!lock_mode(fd, o->mode, o->resource, error)) {
        lock_free(l);
        return NULL;
    }
    return l;
}

/* The holder's fd on our lock file, duplicated into this process. */
static int
holder_lock_fd(FcntlBackend *be, pid_t pid, int pidfd, const char *lock_name)
{
    g_autofree char *fddir = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autofree char *want = g_build_filename(be->dir, lock_name, NULL);
    g_autoptr(GDir) d = g_dir_open(fddir, 0, NULL);
    const char *ent;

    while (d && (ent = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(fddir, ent, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        if (g_strcmp0(target, want) != 0)
            continue;
        int fd = syscall(SYS_pidfd_getfd, pidfd, atoi(ent), 0);
        if (fd >= 0)
            return fd;
    }
    return -1;
}

static VmlLock *
fcntl_recover(VmlBackend *parent, VmlOwner *o, int pidfd, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autofree char *hash = vml_key_hash(o->resource);
    g_autofree char *name = g_strdup_printf("%s.lock", hash);
    int fd = holder_lock_fd(be, o->pid, pidfd, name);

    if (fd < 0) {
        /* The holder kept no fd: the lock died with the old daemon. Take
         * it again if nobody else has meanwhile. */
        fd = open_lock_file(be, name, error);
        if (fd < 0)
            return NULL;
        guint64 gen = o->generation;
        VmlLock *l = take_lock(be, o, fd, error);
        if (l && o->mode == VML_MODE_EXCLUSIVE && o->generation != gen + 1)
            g_warning("%s: generation moved from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                      " while vmleased was down", o->resource, gen, o->generation - 1);
        return l;
    }
    return fcntl_adopt(parent, o, fd, error);
}

static gboolean
fcntl_change_mode(VmlBackend *parent, VmlLock *l, VmlOwner *o, VmlMode mode, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    VmlOwner updated = *o;
    updated.mode = mode;
    if (!lock_mode(l->fd, mode, o->resource, error))
        return FALSE;
    if (!update_generation(l->fd, &updated, error) || !write_record(be, l, &updated, error)) {
        lock_mode(l->fd, o->mode, o->resource, NULL);
        return FALSE;
    }
    o->mode = mode;
    o->generation = updated.generation;
    return TRUE;
}

static void
fcntl_release(VmlBackend *parent, VmlLock *l)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    /* Drop the record first: a record without a lock only misleads a
     * reader, a lock without a record hides its holder. */
    unlinkat(be->dirfd, l->record_name, 0);
    set_lock(l->fd, F_UNLCK);
    lock_free(l);
}

static void
fcntl_forget(VmlBackend *parent, VmlLock *l)
{
    lock_free(l);
}

static int
fcntl_lock_fd(VmlLock *l)
{
    return l->fd;
}

static VmlOwner *
read_record(FcntlBackend *be, const char *name)
{
    int fd = openat(be->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n <= 0 || n == sizeof(buf))
        return NULL;
    g_autoptr(JsonParser) p = json_parser_new_immutable();
    if (!json_parser_load_from_data(p, buf, n, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return NULL;
    return vml_owner_from_json(json_node_get_object(json_parser_get_root(p)), NULL);
}

static GPtrArray *
fcntl_owners(VmlBackend *parent, const char *key, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autofree char *hash = key ? vml_key_hash(key) : NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    int dfd = dup(be->dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;

    if (!d) {
        if (dfd >= 0)
            close(dfd);
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot read lockspace %s: %s", be->dir, g_strerror(errno));
        g_ptr_array_unref(out);
        return NULL;
    }
    rewinddir(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (!g_str_has_suffix(e->d_name, ".owner"))
            continue;
        if (hash && (strncmp(e->d_name, hash, HASH_LEN) != 0 || e->d_name[HASH_LEN] != '.'))
            continue;
        VmlOwner *o = read_record(be, e->d_name);
        /* A record must sit under its own resource's hash. */
        if (o) {
            g_autofree char *h = vml_key_hash(o->resource);
            if (strncmp(e->d_name, h, HASH_LEN) == 0)
                g_ptr_array_add(out, o);
            else
                vml_owner_free(o);
        }
    }
    closedir(d);
    return out;
}

static void
fcntl_remove_record(VmlBackend *parent, const VmlOwner *o)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autofree char *name = record_name(o);
    unlinkat(be->dirfd, name, 0);
}

const VmlBackendOps vml_fcntl_backend_ops = {
    .name = "fcntl",
    .open = fcntl_open,
    .close = fcntl_close,
    .acquire = fcntl_acquire,
    .adopt = fcntl_adopt,
    .recover = fcntl_recover,
    .change_mode = fcntl_change_mode,
    .release = fcntl_release,
    .forget = fcntl_forget,
    .lock_fd = fcntl_lock_fd,
    .owners = fcntl_owners,
    .remove_record = fcntl_remove_record,
};
