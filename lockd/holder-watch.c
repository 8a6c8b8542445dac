#include "holder-watch.h"
#include "fd-watch.h"
#include "vml-error.h"
#include "vml-proc.h"

#include <errno.h>
#include <poll.h>
#include <glib-unix.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Without pidfd_open (a kernel before 5.3, or valgrind), how often a
 * holder is looked at instead. */
#define POLL_MS 50

struct _VmlHolderWatch {
    int pidfd;            /* -1: polled */
    pid_t pid;
    guint64 start_time;
    gboolean polled;      /* SOURCE is a timeout, else an fd watch */
    guint source;
    VmlHolderExitFunc func;
    gpointer data;
};

static gboolean
on_pidfd(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer user_data)
{
    VmlHolderWatch *w = user_data;
    /* W keeps its watch id: freeing W ends the watch before the pidfd is
     * closed. */
    w->func(w->data);   /* may free w */
    return G_SOURCE_REMOVE;
}

static gboolean
on_poll(gpointer user_data)
{
    VmlHolderWatch *w = user_data;
    if (vml_proc_is_same(w->pid, w->start_time))
        return G_SOURCE_CONTINUE;
    w->source = 0;
    w->func(w->data);   /* may free w */
    return G_SOURCE_REMOVE;
}

VmlHolderWatch *
vml_holder_watch_new(pid_t pid, guint64 start_time,
                     VmlHolderExitFunc func, gpointer data, GError **error)
{
    int pidfd = syscall(SYS_pidfd_open, pid, 0);
    gboolean polled = pidfd < 0 && errno == ENOSYS;
    if (pidfd < 0 && errno == ESRCH) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS, "no process with pid %d",
                    (int)pid);
        return NULL;
    }
    if (pidfd < 0 && !polled) {
        /* Out of fds (EMFILE, ENFILE) is ours, not the caller's pid. */
        g_set_error(error, VML_ERROR, errno == EMFILE || errno == ENFILE ? VML_ERROR_LIMIT
                                                                         : VML_ERROR_FAILED,
                    "cannot watch pid %d: %s", (int)pid, g_strerror(errno));
        return NULL;
    }
    if (!vml_proc_is_same(pid, start_time)) {
        if (pidfd >= 0)
            close(pidfd);
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS,
                    "process %d exited (or its pid was reused)", (int)pid);
        return NULL;
    }
    VmlHolderWatch *w = g_new0(VmlHolderWatch, 1);
    w->pidfd = pidfd;
    w->pid = pid;
    w->start_time = start_time;
    w->func = func;
    w->data = data;
    w->polled = polled;
    w->source = polled ? g_timeout_add(POLL_MS, on_poll, w)
                       : vml_fd_watch_add(pidfd, G_IO_IN, on_pidfd, w);
    return w;
}

int
vml_holder_watch_pidfd(VmlHolderWatch *w)
{
    return w->pidfd;
}

gboolean
vml_holder_watch_running(VmlHolderWatch *w)
{
    struct pollfd pfd = { .fd = w->pidfd, .events = POLLIN };
    return w->pidfd >= 0 && poll(&pfd, 1, 0) == 0;
}

void
vml_holder_watch_free(VmlHolderWatch *w)
{
    if (!w)
        return;
    if (w->source && w->polled)
        g_source_remove(w->source);
    else if (w->source)
        vml_fd_watch_remove(w->source);
    if (w->pidfd >= 0)
        close(w->pidfd);
    g_free(w);
}
