#include "vml-qemu-probe.h"
#include "vml-error.h"
#include "vml-proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define COMMAND_MAX 4096

static const char *const perm_names[VML_QEMU_PERM_BITS] = {
    "consistent-read", "write", "write-unchanged", "resize", "graph-mod",
};

static void
holder_free(gpointer p)
{
    VmlQemuHolder *h = p;
    g_free(h->command);
    g_free(h->program);
    g_free(h);
}

void
vml_qemu_locks_free(VmlQemuLocks *l)
{
    if (!l)
        return;
    g_ptr_array_unref(l->holders);
    g_free(l);
}

char *
vml_qemu_perms_text(guint perms)
{
    if (!perms)
        return g_strdup("none");
    GString *s = g_string_new(NULL);
    for (int i = 0; i < VML_QEMU_PERM_BITS; i++) {
        if (perms & (1u << i))
            g_string_append_printf(s, "%s%s", s->len ? ", " : "", perm_names[i]);
    }
    return g_string_free(s, FALSE);
}

/* Is any lock held on bytes [BYTE, BYTE + LEN) through another open file
 * description? */
static gboolean
range_locked(int fd, off_t byte, off_t len, gboolean *locked, GError **error)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = len,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot test lock byte %ld: %s",
                    (long)byte, g_strerror(errno));
        return FALSE;
    }
    *locked = fl.l_type != F_UNLCK;
    return TRUE;
}

static gboolean
byte_locked(int fd, off_t byte, gboolean *locked, GError **error)
{
    return range_locked(fd, byte, 1, locked, error);
}

/* Add the bits of one "lock:" line of an fdinfo file naming DEV:INO. */
static void
parse_lock_line(const char *line, dev_t dev, ino_t ino, VmlQemuHolder *h)
{
    char kind[16], mode[16], rw[16], id[64], end[32];
    long pid;
    unsigned maj, min;
    unsigned long long lino, start;

    /* "lock:\t1: OFDLCK  ADVISORY  READ  -1 fd:01:1234 100 100" */
    if (sscanf(line, "lock: %63s %15s %15s %15s %ld %x:%x:%llu %llu %31s",
               id, kind, mode, rw, &pid, &maj, &min, &lino, &start, end) != 10)
        return;
    if (makedev(maj, min) != dev || lino != (unsigned long long)ino)
        return;
    unsigned long long last = strcmp(end, "EOF") == 0 ? G_MAXUINT64 : strtoull(end, NULL, 10);
    for (int i = 0; i < VML_QEMU_PERM_BITS; i++) {
        unsigned long long p = VML_QEMU_LOCK_PERM_BASE + i, s = VML_QEMU_LOCK_SHARED_BASE + i;
        if (start <= p && p <= last)
            h->perms |= 1u << i;
        if (start <= s && s <= last)
            h->unshared |= 1u << i;
    }
}

/* The short name of a command line DATA (LEN bytes, NUL-separated): its
 * program's basename, and QEMU's "-name guest=NAME" when it has one (a
 * libvirt domain's whole command line is kilobytes: no message carries it). */
static char *
program_of(const char *data, gsize len)
{
    g_autofree char *base = g_path_get_basename(data);
    const char *guest = NULL;
    for (gsize i = 0; i < len; i += strlen(data + i) + 1) {
        if (g_str_equal(data + i, "-name") && i + 6 < len) {
            const char *v = data + i + 6;
            guest = g_str_has_prefix(v, "guest=") ? v + 6 : v;
            break;
        }
    }
    g_autofree char *name = guest ? g_strndup(guest, strcspn(guest, ",")) : NULL;
    g_autofree char *text = name ? g_strdup_printf("%s, guest %s", base, name) : g_strdup(base);
    return g_utf8_make_valid(text, -1);
}

static char *
read_command(const char *pid, char **program)
{
    g_autofree char *path = g_strdup_printf("/proc/%s/cmdline", pid);
    g_autofree char *data = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &data, &len, NULL) || len == 0) {
        *program = g_strdup("?");
        return g_strdup("?");
    }
    len = MIN(len, COMMAND_MAX);
    data[len - 1] = '\0';
    *program = program_of(data, len);
    for (gsize i = 0; i + 1 < len; i++) {
        if (data[i] == '\0')
            data[i] = ' ';
    }
    data[len - 1] = '\0';
    return g_utf8_make_valid(data, -1);
}

typedef struct {
    const char *pid;
    dev_t dev;
    ino_t ino;
    VmlQemuHolder h;
} ProcessScan;

static gboolean
scan_fd(int dirfd, const char *name, G_GNUC_UNUSED int num, gpointer data)
{
    ProcessScan *scan = data;
    struct stat st;
    if (fstatat(dirfd, name, &st, 0) < 0 || st.st_dev != scan->dev || st.st_ino != scan->ino)
        return TRUE;
    g_autofree char *info_path = g_strdup_printf("/proc/%s/fdinfo/%s", scan->pid, name);
    g_autofree char *info = NULL;
    if (!g_file_get_contents(info_path, &info, NULL, NULL))
        return TRUE;
    g_auto(GStrv) lines = g_strsplit(info, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (g_str_has_prefix(*l, "lock:"))
            parse_lock_line(*l, scan->dev, scan->ino, &scan->h);
    }
    return TRUE;
}

/* The lock bits PID holds on DEV:INO through any of its descriptions. */
static void
scan_process(const char *pid, dev_t dev, ino_t ino, GPtrArray *out)
{
    ProcessScan scan = { .pid = pid, .dev = dev, .ino = ino };
    /* gone, or a kernel thread: no fds */
    vml_proc_each_fd_entry((pid_t)atoi(pid), scan_fd, &scan);
    if (!scan.h.perms && !scan.h.unshared)
        return;
    VmlQemuHolder *copy = g_new0(VmlQemuHolder, 1);
    *copy = scan.h;
    copy->pid = (pid_t)atoi(pid);
    copy->command = read_command(pid, &copy->program);
    g_ptr_array_add(out, copy);
}

VmlQemuLocks *
vml_qemu_probe(int fd, GError **error)
{
    g_autoptr(VmlQemuLocks) l = g_new0(VmlQemuLocks, 1);
    l->holders = g_ptr_array_new_with_free_func(holder_free);

    /* Nearly always nobody has the image open: one test for the whole
     * span of QEMU's bytes says so; only a lock in it is looked at byte
     * by byte. */
    gboolean any;
    if (!range_locked(fd, VML_QEMU_LOCK_PERM_BASE,
                      VML_QEMU_LOCK_SHARED_BASE + VML_QEMU_PERM_BITS - VML_QEMU_LOCK_PERM_BASE,
                      &any, error))
        return NULL;
    for (int i = 0; any && i < VML_QEMU_PERM_BITS; i++) {
        gboolean held, denied;
        if (!byte_locked(fd, VML_QEMU_LOCK_PERM_BASE + i, &held, error) ||
            !byte_locked(fd, VML_QEMU_LOCK_SHARED_BASE + i, &denied, error))
            return NULL;
        l->perms |= held ? 1u << i : 0;
        l->unshared |= denied ? 1u << i : 0;
    }
    if (!vml_qemu_locks_busy(l))
        return g_steal_pointer(&l);

    struct stat st;
    if (fstat(fd, &st) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "fstat: %s", g_strerror(errno));
        return NULL;
    }
    DIR *proc = opendir("/proc");
    if (!proc)
        return g_steal_pointer(&l);
    struct dirent *e;
    while ((e = readdir(proc))) {
        if (g_ascii_isdigit(e->d_name[0]))
            scan_process(e->d_name, st.st_dev, st.st_ino, l->holders);
    }
    closedir(proc);
    return g_steal_pointer(&l);
}

char *
vml_qemu_locks_describe(const VmlQemuLocks *l)
{
    if (l->holders->len == 0)
        return g_strdup("a process that is not on this host");
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < l->holders->len; i++) {
        const VmlQemuHolder *h = l->holders->pdata[i];
        g_string_append_printf(s, "%spid %d (%s)", i ? ", " : "", (int)h->pid, h->program);
    }
    return g_string_free(s, FALSE);
}
