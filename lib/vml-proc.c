#include "vml-proc.h"
#include "vml-error.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The first SIZE - 1 bytes of /proc/PID/WHAT into BUF, NUL-terminated:
 * one open, one read, one close (the fields asked for come early). */
static gboolean
proc_read(pid_t pid, const char *what, char *buf, gsize size)
{
    char path[48];
    if (pid <= 0)
        return FALSE;
    g_snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FALSE;
    ssize_t n;
    do
        n = read(fd, buf, size - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return FALSE;
    buf[n] = '\0';
    return TRUE;
}

/* Start time (field 22) and state (field 3) from a /proc/PID/stat line. */
static gboolean
parse_stat(char *data, guint64 *start_time, char *state)
{
    /* comm may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(data, ')');
    if (!p || p[1] != ' ')
        return FALSE;
    *state = p[2];
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return FALSE;
    }
    char *end;
    errno = 0;
    guint64 v = g_ascii_strtoull(p + 1, &end, 10);
    if (errno || end == p + 1)
        return FALSE;
    *start_time = v;
    return TRUE;
}

gboolean
vml_proc_start_time(pid_t pid, guint64 *start_time, GError **error)
{
    char data[1024];
    char state;
    if (!proc_read(pid, "stat", data, sizeof(data))) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS,
                    "no process with pid %d", (int)pid);
        return FALSE;
    }
    if (!parse_stat(data, start_time, &state)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot parse /proc/%d/stat", (int)pid);
        return FALSE;
    }
    return TRUE;
}

gboolean
vml_proc_uid(pid_t pid, uid_t *uid, GError **error)
{
    char data[4096];
    if (!proc_read(pid, "status", data, sizeof(data))) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS, "no process with pid %d",
                    (int)pid);
        return FALSE;
    }
    const char *line = strstr(data, "\nUid:");
    char *end = NULL;
    guint64 v = line ? g_ascii_strtoull(line + 5, &end, 10) : 0;
    if (!line || end == line + 5 || v > G_MAXUINT32) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot parse /proc/%d/status",
                    (int)pid);
        return FALSE;
    }
    *uid = (uid_t)v;
    return TRUE;
}

char *
vml_proc_own_fd_path(int fd)
{
    char link[32];
    g_snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    return g_file_read_link(link, NULL);
}

gboolean
vml_proc_exe_id(pid_t pid, guint64 *dev, guint64 *ino)
{
    char exe[64];
    struct stat st;
    g_snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
    if (stat(exe, &st) < 0)
        return FALSE;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return TRUE;
}

void
vml_proc_each_fd_entry(pid_t pid, VmlFdEntryFunc func, gpointer data)
{
    char fddir[64];
    g_snprintf(fddir, sizeof(fddir), "/proc/%d/fd", (int)pid);
    /* getdents64 on the directory fd itself: fdopendir would add an fstat
     * and two fcntl calls per walk. */
    int dfd = open(fddir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char buf[8192] __attribute__((aligned(8)));
    gboolean go = TRUE;
    long n;
    while (go && (n = syscall(SYS_getdents64, dfd, buf, sizeof(buf))) > 0) {
        for (long off = 0; go && off < n;) {
            const struct dirent64 *e = (const struct dirent64 *)(void *)(buf + off);
            off += e->d_reclen;
            if (e->d_name[0] != '.')
                go = func(dfd, e->d_name, atoi(e->d_name), data);
        }
    }
    close(dfd);
}

typedef struct {
    VmlFdFunc func;
    gpointer data;
} LinkWalk;

static gboolean
read_link_entry(int dirfd, const char *name, int num, gpointer data)
{
    LinkWalk *w = data;
    /* Each link read relative to the directory: no walk of the whole
     * /proc path per fd. */
    char target[PATH_MAX];
    ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
    if (n < 0)
        return TRUE;
    target[n] = '\0';
    return w->func(num, target, w->data);
}

void
vml_proc_each_fd(pid_t pid, VmlFdFunc func, gpointer data)
{
    LinkWalk w = { func, data };
    vml_proc_each_fd_entry(pid, read_link_entry, &w);
}

gboolean
vml_proc_is_same(pid_t pid, guint64 start_time)
{
    char data[1024];
    guint64 now;
    char state;
    /* A zombie has exited: nothing of it uses an image any more. */
    return proc_read(pid, "stat", data, sizeof(data)) && parse_stat(data, &now, &state) &&
           now == start_time && state != 'Z' && state != 'X';
}

static char *
read_id_file(const char *path)
{
    char *data = NULL;
    if (!g_file_get_contents(path, &data, NULL, NULL))
        return g_strdup("");
    g_strstrip(data);
    return data;
}

const char *
vml_host_name(void)
{
    static char *name;
    if (g_once_init_enter(&name)) {
        char buf[256] = "";
        if (gethostname(buf, sizeof(buf) - 1) < 0)
            strcpy(buf, "localhost");
        g_once_init_leave(&name, g_strdup(buf));
    }
    return name;
}

const char *
vml_host_boot_id(void)
{
    static char *id;
    if (g_once_init_enter(&id))
        g_once_init_leave(&id, read_id_file("/proc/sys/kernel/random/boot_id"));
    return id;
}

const char *
vml_host_machine_id(void)
{
    static char *id;
    if (g_once_init_enter(&id))
        g_once_init_leave(&id, read_id_file("/etc/machine-id"));
    return id;
}
