/* The embedded backend: a lockspace directory holding, per resource,
 * <sha256-of-key>.lock locked with OFD locks (write = exclusive, read =
 * shared), and per holder process a <tag>.holder record. The first 8 bytes
 * of a lock file count its exclusive grants (the generation).
 *
 * A lease locks two bytes of its lock file, 0 and 1. Every plain acquire
 * needs both, so any one byte held keeps everybody out, a plain whole-file
 * fcntl lock included. Parking an exclusive lease keeps one byte and frees
 * the other; only a claim for the same domain takes a free byte. So from
 * the park to the claim and on to the parked holder's exit, some byte is
 * always locked: the lease is never free for anyone else. */
#include "vml-str-hash.h"
#include "backend.h"
#include "vml-error.h"
#include "vml-lock-holders.h"
#include "vml-paths.h"
#include "vml-proc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Which fds of one set (a holder's fd table, or candidate fds of ours)
 * are open on which lock file: read once per holder at a restart, so that
 * recovering N leases reads a table of N fds once, not N times. */
typedef struct {
    pid_t pid;            /* whose fd numbers; 0: ours, in SOURCE */
    const GArray *source; /* the candidates it was read from */
    guint source_len;
    GHashTable *by_path;  /* lock file path -> GArray of fd numbers */
} FdIndex;

typedef struct {
    VmlBackend parent;
    char *dir;
    int dirfd;
    gboolean in_batch;    /* between recover_batch(TRUE) and (FALSE) */
    FdIndex holder_index, candidate_index;
    /* Key -> lock file name, so that a lease taken again does not hash
     * its key again; dropped whole past LOCK_NAMES_MAX entries. */
    GHashTable *lock_names;
} FcntlBackend;

#define LOCK_NAMES_MAX 4096

static void fd_index_clear(FdIndex *x);

enum { BYTE0 = 1, BYTE1 = 2, BOTH = BYTE0 | BYTE1 };

struct _VmlLock {
    int fd;
    guint bytes;    /* which lease bytes this description locks */
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
    /* Recovery must be able to lock exclusively again and every change
     * must be recorded: a read-only lockspace would lose live leases. */
    struct statvfs sv;
    if (fstatvfs(dirfd, &sv) == 0 && (sv.f_flag & ST_RDONLY)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "lockspace %s is on a read-only file system: vmleased could neither "
                    "take back the leases of running VMs nor record new ones; it starts once "
                    "the lockspace is writable again", cfg->lockspace_dir);
        close(dirfd);
        return NULL;
    }
    FcntlBackend *be = g_new0(FcntlBackend, 1);
    if (!vml_record_store_init(&be->parent.records, cfg->lockspace_dir, error)) {
        close(dirfd);
        g_free(be);
        return NULL;
    }
    be->parent.ops = &vml_fcntl_backend_ops;
    be->lock_names = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, g_free);
    be->dir = g_strdup(cfg->lockspace_dir);
    be->parent.lockspace = g_strdup(be->dir);
    be->dirfd = dirfd;
    return &be->parent;
}

static void
fcntl_close(VmlBackend *parent)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    fd_index_clear(&be->holder_index);
    fd_index_clear(&be->candidate_index);
    vml_record_store_clear(&be->parent.records);
    g_hash_table_unref(be->lock_names);
    close(be->dirfd);
    g_free(be->dir);
    g_free(be->parent.lockspace);
    g_free(be);
}

static char *
lock_name(FcntlBackend *be, const char *key)
{
    const char *known = g_hash_table_lookup(be->lock_names, key);
    if (known)
        return g_strdup(known);
    g_autofree char *hash = vml_key_hash(key);
    char *name = g_strconcat(hash, ".lock", NULL);
    if (g_hash_table_size(be->lock_names) >= LOCK_NAMES_MAX)
        g_hash_table_remove_all(be->lock_names);
    g_hash_table_insert(be->lock_names, g_strdup(key), g_strdup(name));
    return name;
}

/* The full path of KEY's lock file, as /proc shows it in fd tables. */
static char *
lock_path(FcntlBackend *be, const char *key)
{
    g_autofree char *name = lock_name(be, key);
    return g_build_filename(be->dir, name, NULL);
}

static VmlLock *
lock_new(int fd, guint bytes)
{
    VmlLock *l = g_new(VmlLock, 1);
    l->fd = fd;
    l->bytes = bytes;
    return l;
}

/* Lock (or unlock) BYTES of the lease: one call, so all or nothing. */
static int
set_lock_bytes(int fd, short type, guint bytes)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                        .l_start = bytes == BYTE1 ? 1 : 0, .l_len = bytes == BOTH ? 2 : 1 };
    return fcntl(fd, F_OFD_SETLK, &fl);
}

/* Unlocking covers the whole file: a lockspace made by an earlier release
 * locked from 0 to the end. */
static void
unlock_all(int fd)
{
    struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
    fcntl(fd, F_OFD_SETLK, &fl);
}

static gboolean
lock_bytes(int fd, VmlMode mode, guint bytes, const char *key, GError **error)
{
    if (set_lock_bytes(fd, mode == VML_MODE_EXCLUSIVE ? F_WRLCK : F_RDLCK, bytes) == 0)
        return TRUE;
    if (errno == EAGAIN || errno == EACCES)
        g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "%s is locked by another holder", key);
    else
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot lock %s: %s", key, g_strerror(errno));
    return FALSE;
}

static gboolean
lock_mode(int fd, VmlMode mode, const char *key, GError **error)
{
    return lock_bytes(fd, mode, BOTH, key, error);
}

/* What the kernel says FD's description locks of the lease bytes, from
 * /proc/self/fdinfo: the authority after a crash or re-exec, whatever a
 * saved state says. FALSE when it locks none. */
static gboolean
described_lock(int fd, guint *bytes, VmlMode *mode)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *text = NULL;
    *bytes = 0;
    *mode = VML_MODE_SHARED;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return FALSE;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **line = lines; *line; line++) {
        if (!g_str_has_prefix(*line, "lock:"))
            continue;
        /* lock:  N: OFDLCK ADVISORY WRITE|READ PID MAJ:MIN:INO START END|EOF */
        g_auto(GStrv) f = g_strsplit_set(*line, " \t", -1);
        GPtrArray *w = g_ptr_array_new();
        for (char **x = f; *x; x++)
            if (**x)
                g_ptr_array_add(w, *x);
        if (w->len >= 8 && g_str_equal(w->pdata[2], "OFDLCK")) {
            guint64 start = g_ascii_strtoull(w->pdata[w->len - 2], NULL, 10);
            const char *end_s = w->pdata[w->len - 1];
            guint64 end = g_str_equal(end_s, "EOF") ? G_MAXUINT64
                                                     : g_ascii_strtoull(end_s, NULL, 10);
            guint here = (start == 0 ? BYTE0 : 0) | (start <= 1 && end >= 1 ? BYTE1 : 0);
            if (here) {
                *bytes |= here;
                if (g_str_equal(w->pdata[4], "WRITE"))
                    *mode = VML_MODE_EXCLUSIVE;
            }
        }
        g_ptr_array_free(w, TRUE);
    }
    return *bytes != 0;
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
    g_autofree char *name = lock_name(be, key);
    int fd = openat(be->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot open lock file %s/%s for %s: %s", be->dir, name, key,
                    g_strerror(errno));
    return fd;
}

/* Every description we lock for a holder carries the holder's pid as its
 * file position (unused otherwise: the generation is read and written at
 * explicit offsets), visible in /proc/PID/fdinfo. After a crash that tells
 * the holder's own description from one it inherited over fork(), which
 * carries its parent's pid. */
static void
tag_description(int fd, pid_t pid)
{
    if (pid > 0)
        lseek(fd, (off_t)pid, SEEK_SET);
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
        unlock_all(fd);
        close(fd);
        return NULL;
    }
    return lock_new(fd, BOTH);
}

static int holder_lock_fd(FcntlBackend *be, pid_t pid, int pidfd, const char *key,
                          gboolean locked);

static void
fd_index_clear(FdIndex *x)
{
    g_clear_pointer(&x->by_path, g_hash_table_unref);
    x->pid = 0;
    x->source = NULL;
    x->source_len = 0;
}

static void
fd_index_add(FdIndex *x, const char *path, int num)
{
    GArray *nums = g_hash_table_lookup(x->by_path, path);
    if (!nums) {
        nums = g_array_new(FALSE, FALSE, sizeof(int));
        g_hash_table_insert(x->by_path, g_strdup(path), nums);
    }
    g_array_append_val(nums, num);
}

static void
fd_index_reset(FdIndex *x)
{
    fd_index_clear(x);
    x->by_path = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify)g_array_unref);
}

/* The numbers of PID's fds open on WANT (a lock file), from one read of
 * its fd table per restart (or a fresh one outside a restart). */
static gboolean
index_lock_fd(int num, const char *target, gpointer data)
{
    FcntlBackend *be = data;
    /* Only lock files of this lockspace are ever asked for. */
    if (g_str_has_prefix(target, be->dir) && g_str_has_suffix(target, ".lock"))
        fd_index_add(&be->holder_index, target, num);
    return TRUE;
}

static GArray *
holder_fds_on(FcntlBackend *be, pid_t pid, const char *want)
{
    FdIndex *x = &be->holder_index;
    if (!be->in_batch || !x->by_path || x->pid != pid) {
        fd_index_reset(x);
        x->pid = pid;
        vml_proc_each_fd(pid, index_lock_fd, be);
    }
    GArray *nums = g_hash_table_lookup(x->by_path, want);
    return nums ? g_array_ref(nums) : g_array_new(FALSE, FALSE, sizeof(int));
}

/* The indices in CANDIDATES (fds of ours) of those open on WANT. */
static GArray *
candidates_on(FcntlBackend *be, GArray *candidates, const char *want)
{
    FdIndex *x = &be->candidate_index;
    if (!candidates)
        return g_array_new(FALSE, FALSE, sizeof(int));
    if (!be->in_batch || !x->by_path || x->source != candidates ||
        x->source_len != candidates->len) {
        fd_index_reset(x);
        x->source = candidates;
        x->source_len = candidates->len;
        for (guint i = 0; i < candidates->len; i++) {
            g_autofree char *target = vml_proc_own_fd_path(g_array_index(candidates, int, i));
            if (target)
                fd_index_add(x, target, (int)i);
        }
    }
    GArray *nums = g_hash_table_lookup(x->by_path, want);
    return nums ? g_array_ref(nums) : g_array_new(FALSE, FALSE, sizeof(int));
}

static void
fcntl_recover_batch(VmlBackend *parent, gboolean begin)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    be->in_batch = begin;
    fd_index_clear(&be->holder_index);
    fd_index_clear(&be->candidate_index);
}

static VmlLock *
fcntl_acquire(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid, int pidfd,
              guint64 *generation, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    int fd = pidfd >= 0 ? holder_lock_fd(be, pid, pidfd, key, FALSE) : -1;
    if (fd < 0)
        fd = open_lock_file(be, key, error);
    if (fd >= 0)
        tag_description(fd, pid);
    return fd < 0 ? NULL : take_lock(fd, key, mode, generation, error);
}

static VmlLock *
fcntl_adopt(G_GNUC_UNUSED VmlBackend *parent, const char *key, VmlMode *mode,
            gboolean *parked, int fd, GError **error)
{
    guint bytes;
    VmlMode held;
    if (!described_lock(fd, &bytes, &held)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "the lock on %s is no longer held through the description kept", key);
        close(fd);
        return NULL;
    }
    /* An exclusive lock on one byte is parked or was claimed: the record
     * says which; a shared lock on one byte came from a claim. */
    *parked = *parked && held == VML_MODE_EXCLUSIVE && bytes != BOTH;
    *mode = held;
    return lock_new(fd, bytes);
}

static pid_t
parent_of(pid_t pid)
{
    g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *stat = NULL;
    int ppid = 0;
    if (g_file_get_contents(stat_path, &stat, NULL, NULL)) {
        const char *paren = strrchr(stat, ')');
        if (!paren || sscanf(paren, ") %*c %d", &ppid) != 1)
            ppid = 0;
    }
    return ppid;
}

typedef struct {
    pid_t pid, other;
    int num;
    const char *path;
    gboolean found;
} SameDescription;

static gboolean
same_description(int num, const char *target, gpointer data)
{
    SameDescription *s = data;
    s->found = g_str_equal(target, s->path) &&
               syscall(SYS_kcmp, s->pid, s->other, KCMP_FILE, s->num, num) == 0;
    return !s->found;
}

/* Does OTHER have PID's fd NUM (open on PATH) open too, the same
 * description? */
static gboolean
also_open_in(pid_t pid, int num, pid_t other, const char *path)
{
    SameDescription s = { pid, other, num, path, FALSE };
    vml_proc_each_fd(other, same_description, &s);
    return s.found;
}

/* PID's fd NUM (open on PATH) was inherited over fork(): an ancestor of
 * PID has the same description open, so it is that process's (maybe its
 * lease lock), not PID's. Descriptions PID's children share are still
 * PID's own. */
static gboolean
inherited(pid_t pid, int num, const char *path)
{
    pid_t other = pid;
    for (int depth = 0; depth < 32 && (other = parent_of(other)) > 1; depth++) {
        if (also_open_in(pid, num, other, path))
            return TRUE;
    }
    return FALSE;
}

/* Shared with a process PID forked (which may lock through it too). */
static gboolean
shared_with_children(pid_t pid, int num, const char *path)
{
    g_autofree char *tasks = g_strdup_printf("/proc/%d/task", (int)pid);
    g_autoptr(GDir) td = g_dir_open(tasks, 0, NULL);
    const char *task;
    while (td && (task = g_dir_read_name(td))) {
        g_autofree char *cpath = g_strdup_printf("%s/%s/children", tasks, task);
        g_autofree char *children = NULL;
        if (!g_file_get_contents(cpath, &children, NULL, NULL))
            continue;
        g_auto(GStrv) list = g_strsplit(g_strstrip(children), " ", -1);
        for (char **c = list; *c; c++) {
            pid_t child = atoi(*c);
            if (child > 0 && also_open_in(pid, num, child, path))
                return TRUE;
        }
    }
    return FALSE;
}

/* The holder's fd on KEY's lock file, duplicated into this process: with
 * LOCKED one whose description holds a lock (a holder may keep an old
 * unlocked description beside the locked one), preferring one it did not
 * inherit (an inherited description is an ancestor's, maybe its lease
 * lock); else one that holds none and that no related process shares, so
 * a lock is never taken through another holder's description. */
static int
holder_lock_fd(FcntlBackend *be, pid_t pid, int pidfd, const char *key, gboolean locked)
{
    g_autofree char *want = lock_path(be, key);
    g_autoptr(GArray) nums = holder_fds_on(be, pid, want);

    for (guint i = 0; i < nums->len; i++) {
        int num = g_array_index(nums, int, i);
        int fd = syscall(SYS_pidfd_getfd, pidfd, num, 0);
        if (fd < 0)
            continue;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        /* The table was read before: the number may have been reused. */
        g_autofree char *target = vml_proc_own_fd_path(fd);
        if (g_strcmp0(target, want) != 0) {
            close(fd);
            continue;
        }
        guint bytes;
        VmlMode mode;
        if (described_lock(fd, &bytes, &mode) != locked) {
            close(fd);
            continue;
        }
        /* Only a description made for PID itself: one tagged with another
         * pid came over fork() or SCM_RIGHTS from another process, whose
         * lock it is or was (locking through it would give that process
         * our lock, adopting it would take over its lease). Untagged ones
         * (an earlier release made them): not one inherited from an
         * ancestor, and when unlocked not one a child shares either. */
        off_t tag = lseek(fd, 0, SEEK_CUR);
        if (tag == (off_t)pid)
            return fd;
        gboolean other = tag != 0 ||
            inherited(pid, num, want) ||
            (!locked && shared_with_children(pid, num, want));
        if (!other)
            return fd;
        close(fd);
    }
    return -1;
}

/* Of CANDIDATES (fds of ours), a dup of one on KEY's lock file whose
 * description holds a lock. */
static int
candidate_lock_fd(FcntlBackend *be, GArray *candidates, const char *key)
{
    g_autofree char *want = lock_path(be, key);
    g_autoptr(GArray) at = candidates_on(be, candidates, want);
    for (guint i = 0; i < at->len; i++) {
        int fd = g_array_index(candidates, int, g_array_index(at, int, i));
        guint bytes;
        VmlMode mode;
        if (described_lock(fd, &bytes, &mode))
            return fcntl(fd, F_DUPFD_CLOEXEC, 0);
    }
    return -1;
}

static VmlLock *
fcntl_recover(VmlBackend *parent, const char *key, VmlMode *mode, gboolean *parked,
              pid_t pid, int pidfd, GArray *candidates, guint64 *generation, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    /* The mailbox holds exactly the descriptions we gave the holder. */
    int fd = candidate_lock_fd(be, candidates, key);
    if (fd < 0)
        fd = holder_lock_fd(be, pid, pidfd, key, TRUE);

    if (fd >= 0) {
        VmlLock *l = fcntl_adopt(parent, key, mode, parked, fd, error);
        guint64 le = 0;
        if (l && pread(l->fd, &le, sizeof(le), 0) == sizeof(le))
            *generation = GUINT64_FROM_LE(le);
        return l;
    }
    /* The holder kept no fd, so the lock died with the old daemon: take it
     * again if nobody else has meanwhile. Not a new grant: the generation
     * stays, and tells the caller whether someone else wrote between. */
    fd = open_lock_file(be, key, error);
    *parked = FALSE;
    if (fd >= 0)
        tag_description(fd, pid);
    if (fd < 0 || !lock_mode(fd, *mode, key, error)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    guint64 le = 0;
    *generation = pread(fd, &le, sizeof(le), 0) == sizeof(le) ? GUINT64_FROM_LE(le) : 0;
    return lock_new(fd, BOTH);
}

/* Is FD (ours) on one of the lease lock files of the lockspace but not
 * on one of KEEP (full paths)? */
static gboolean
is_stray_lock_file(FcntlBackend *be, const char *target, GHashTable *keep)
{
    g_autofree char *dir = target ? g_path_get_dirname(target) : NULL;
    return target && g_str_equal(dir, be->dir) && g_str_has_suffix(target, ".lock") &&
           !g_hash_table_contains(keep, target);
}

static void
drop_stray(int fd, const char *target, pid_t pid)
{
    guint bytes;
    VmlMode mode;
    if (!described_lock(fd, &bytes, &mode))
        return;
    unlock_all(fd);
    g_warning("released a %s lock on %s that process %d kept but no record of it names "
              "(a grant or release cut short by a crash, never answered)",
              vml_mode_name(mode), target, (int)pid);
}

typedef struct {
    FcntlBackend *be;
    GHashTable *keep;
    pid_t pid;
    int pidfd;
} Strays;

static gboolean
drop_holder_stray(int num, const char *target, gpointer data)
{
    Strays *st = data;
    if (!is_stray_lock_file(st->be, target, st->keep))
        return TRUE;
    int fd = syscall(SYS_pidfd_getfd, st->pidfd, num, 0);
    if (fd >= 0) {
        drop_stray(fd, target, st->pid);
        close(fd);
    }
    return TRUE;
}

static void
fcntl_drop_strays(VmlBackend *parent, pid_t pid, int pidfd, GArray *candidates,
                  const char *const *keys, guint n_keys)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autoptr(GHashTable) keep = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, NULL);
    for (guint i = 0; i < n_keys; i++)
        g_hash_table_add(keep, lock_path(be, keys[i]));
    Strays st = { be, keep, pid, pidfd };
    vml_proc_each_fd(pid, drop_holder_stray, &st);
    for (guint i = 0; candidates && i < candidates->len; i++) {
        int fd = g_array_index(candidates, int, i);
        g_autofree char *target = vml_proc_own_fd_path(fd);
        if (is_stray_lock_file(be, target, keep))
            drop_stray(fd, target, pid);
    }
}

/* Is FD of process PID (ours when PID is 0) one of the descriptions of LIVE? */
static gboolean
is_live(pid_t pid, int fd, const int *live, guint n_live)
{
    for (guint i = 0; i < n_live; i++) {
        if (syscall(SYS_kcmp, getpid(), pid ? pid : getpid(), KCMP_FILE, live[i], fd) == 0)
            return TRUE;
    }
    return FALSE;
}

typedef struct {
    const char *key, *path;
    const VmlLockHolder *keeper;
    int pidfd;
    const int *live;
    guint n_live;
} Orphans;

/* An fd of a process the dead holder forked, on its lock file: unlock
 * the description, unless it is one of a live lease. */
static gboolean
release_kept_orphan(int num, const char *target, gpointer data)
{
    Orphans *o = data;
    if (!g_str_equal(target, o->path) || is_live(o->keeper->pid, num, o->live, o->n_live))
        return TRUE;
    int fd = (int)syscall(SYS_pidfd_getfd, o->pidfd, num, 0);
    if (fd < 0)
        return TRUE;
    guint bytes;
    VmlMode mode;
    if (described_lock(fd, &bytes, &mode)) {
        unlock_all(fd);
        g_warning("%s: released the %s lock that process %d (%s) kept after its VM "
                  "exited while vmleased was down", o->key, vml_mode_name(mode),
                  (int)o->keeper->pid, o->keeper->program);
    }
    close(fd);
    return TRUE;
}

static void
fcntl_release_orphans(VmlBackend *parent, const char *key, GArray *candidates,
                      const int *live, guint n_live)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    g_autofree char *path = lock_path(be, key);
    for (guint i = 0; candidates && i < candidates->len; i++) {
        int fd = g_array_index(candidates, int, i);
        g_autofree char *target = vml_proc_own_fd_path(fd);
        guint bytes;
        VmlMode mode;
        if (g_strcmp0(target, path) != 0 || !described_lock(fd, &bytes, &mode) ||
            is_live(0, fd, live, n_live))
            continue;
        unlock_all(fd);
        g_warning("%s: released the %s lock left in the mailbox of a VM that exited while "
                  "vmleased was down (a process it forked keeps the mailbox)", key,
                  vml_mode_name(mode));
    }
    g_autoptr(GPtrArray) keepers = vml_lock_holders_of(path, getpid());
    for (guint i = 0; i < keepers->len; i++) {
        const VmlLockHolder *k = keepers->pdata[i];
        int pidfd = (int)syscall(SYS_pidfd_open, k->pid, 0);
        if (pidfd < 0)
            continue;
        Orphans o = { key, path, k, pidfd, live, n_live };
        vml_proc_each_fd(k->pid, release_kept_orphan, &o);
        close(pidfd);
    }
}

static gboolean
fcntl_change_mode(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, const char *key, VmlMode mode,
                  guint64 *generation, GError **error)
{
    if (!lock_bytes(l->fd, mode, l->bytes, key, error))
        return FALSE;
    if (!update_generation(l->fd, mode, key, generation, error)) {
        lock_bytes(l->fd, mode == VML_MODE_EXCLUSIVE ? VML_MODE_SHARED : VML_MODE_EXCLUSIVE,
                   l->bytes, key, NULL);
        return FALSE;
    }
    return TRUE;
}

static void
fcntl_release(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l)
{
    unlock_all(l->fd);
    close(l->fd);
    g_free(l);
}

/* Shared locks need no parking: a claim takes its read lock beside them,
 * and they keep writers out all the same. */
static void
fcntl_park(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, VmlMode mode)
{
    if (mode != VML_MODE_EXCLUSIVE || l->bytes != BOTH)
        return;
    set_lock_bytes(l->fd, F_UNLCK, BYTE1);
    l->bytes = BYTE0;
}

static gboolean
fcntl_unpark(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, const char *key, VmlMode mode,
             GError **error)
{
    if (mode != VML_MODE_EXCLUSIVE || l->bytes == BOTH)
        return TRUE;
    guint other = BOTH & ~l->bytes;
    if (!lock_bytes(l->fd, mode, other, key, error))
        return FALSE;
    l->bytes = BOTH;
    return TRUE;
}

static VmlLock *
fcntl_claim(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid, int pidfd,
            guint64 *generation, GError **error)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    int fd = pidfd >= 0 ? holder_lock_fd(be, pid, pidfd, key, FALSE) : -1;
    if (fd < 0 && (fd = open_lock_file(be, key, error)) < 0)
        return NULL;
    tag_description(fd, pid);
    const guint tries[] = { BYTE1, BYTE0 };
    for (guint i = 0; i < G_N_ELEMENTS(tries); i++) {
        if (!lock_bytes(fd, mode, tries[i], key, NULL))
            continue;
        if (!update_generation(fd, mode, key, generation, error)) {
            set_lock_bytes(fd, F_UNLCK, tries[i]);
            close(fd);
            return NULL;
        }
        return lock_new(fd, tries[i]);
    }
    close(fd);
    g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT,
                "%s is locked by another holder and not parked for a claim", key);
    return NULL;
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

/* ---- locks nobody registered ---------------------------------------------- */

/* Processes keeping a lock on KEY's lock file that the caller knows
 * nothing of: a cheap probe first, the /proc walk only if it is locked. */
static GPtrArray *
fcntl_lockers(VmlBackend *parent, const char *key)
{
    FcntlBackend *be = (FcntlBackend *)parent;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    g_autofree char *name = lock_name(be, key);
    int fd = openat(be->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return out;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int rc = fcntl(fd, F_OFD_GETLK, &fl);
    close(fd);
    if (rc < 0 || fl.l_type == F_UNLCK)
        return out;
    g_autofree char *path = lock_path(be, key);
    g_autoptr(GPtrArray) found = vml_lock_holders_of(path, getpid());
    for (guint i = 0; i < found->len; i++) {
        const VmlLockHolder *lh = found->pdata[i];
        VmlOwner *o = g_new0(VmlOwner, 1);
        o->resource = g_strdup(key);
        o->host = g_strdup(vml_host_name());
        o->machine_id = g_strdup(vml_host_machine_id());
        o->boot_id = g_strdup(vml_host_boot_id());
        o->uuid = g_strdup("");
        o->name = g_strdup(lh->program);
        o->program = g_strdup(lh->program);
        o->pid = lh->pid;
        vml_proc_start_time(lh->pid, &o->start_time, NULL);
        o->mode = lh->write ? VML_MODE_EXCLUSIVE : VML_MODE_SHARED;
        o->unregistered = TRUE;
        g_ptr_array_add(out, o);
    }
    return out;
}


const VmlBackendOps vml_fcntl_backend_ops = {
    .name = "fcntl",
    .lock_fds = TRUE,
    .open = fcntl_open,
    .close = fcntl_close,
    .acquire = fcntl_acquire,
    .adopt = fcntl_adopt,
    .recover = fcntl_recover,
    .recover_batch = fcntl_recover_batch,
    .drop_strays = fcntl_drop_strays,
    .release_orphans = fcntl_release_orphans,
    .change_mode = fcntl_change_mode,
    .park = fcntl_park,
    .unpark = fcntl_unpark,
    .claim = fcntl_claim,
    .release = fcntl_release,
    .forget = fcntl_forget,
    .lock_fd = fcntl_lock_fd,
    .lockers = fcntl_lockers,
};
