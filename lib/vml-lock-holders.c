#include "vml-lock-holders.h"
#include "vml-proc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void
vml_lock_holder_free(VmlLockHolder *h)
{
    if (!h)
        return;
    g_free(h->program);
    g_free(h);
}

/* Does fdinfo text list a lock of this description? Lines look like
 * "lock:\t1: OFDLCK  ADVISORY  WRITE -1 fd:01:1234 0 1". Sets *write
 * when one is a write lock. */
static gboolean
fdinfo_locks(const char *text, gboolean *write)
{
    gboolean any = FALSE;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (!g_str_has_prefix(*l, "lock:"))
            continue;
        any = TRUE;
        if (strstr(*l, " WRITE "))
            *write = TRUE;
    }
    return any;
}

static char *
program_of(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/comm", (int)pid);
    char *comm = NULL;
    if (!g_file_get_contents(path, &comm, NULL, NULL))
        return g_strdup("?");
    g_strchomp(comm);
    return comm;
}

typedef struct {
    pid_t pid;
    const char *path;
    gboolean found, write;
} LockScan;

/* One fd of SCAN's process: on its path, with a lock in its fdinfo? */
static gboolean
scan_fd(int num, const char *target, gpointer data)
{
    LockScan *scan = data;
    if (!g_str_equal(target, scan->path))
        return TRUE;
    g_autofree char *info_path = g_strdup_printf("/proc/%d/fdinfo/%d", (int)scan->pid, num);
    g_autofree char *info = NULL;
    if (g_file_get_contents(info_path, &info, NULL, NULL) && fdinfo_locks(info, &scan->write))
        scan->found = TRUE;
    return TRUE;
}

GPtrArray *
vml_lock_holders_of(const char *path, pid_t skip_pid)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vml_lock_holder_free);
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *ent;

    while (proc && (ent = g_dir_read_name(proc))) {
        char *end;
        long pid = strtol(ent, &end, 10);
        if (*end || pid <= 0 || pid == skip_pid)
            continue;
        LockScan scan = { (pid_t)pid, path, FALSE, FALSE };
        vml_proc_each_fd((pid_t)pid, scan_fd, &scan);
        if (!scan.found)
            continue;
        VmlLockHolder *h = g_new0(VmlLockHolder, 1);
        h->pid = (pid_t)pid;
        h->write = scan.write;
        h->program = program_of(h->pid);
        g_ptr_array_add(out, h);
    }
    return out;
}
