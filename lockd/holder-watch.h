/* Watch a holder process with a pidfd in the GLib main loop: the callback
 * runs once, as soon as the process exits. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef void (*VmlHolderExitFunc)(gpointer data);
typedef struct _VmlHolderWatch VmlHolderWatch;

/* Fails with VML_ERROR_NO_SUCH_PROCESS unless PID is alive and started at
 * START_TIME (checked after the pidfd is open, so a recycled pid is caught). */
VmlHolderWatch *vml_holder_watch_new(pid_t pid, guint64 start_time,
                                     VmlHolderExitFunc func, gpointer data,
                                     GError **error);
int vml_holder_watch_pidfd(VmlHolderWatch *w);
/* TRUE while the watched process has certainly not exited (its pidfd is
 * not readable); FALSE once it has, or without a pidfd to ask. */
gboolean vml_holder_watch_running(VmlHolderWatch *w);
void vml_holder_watch_free(VmlHolderWatch *w);
