#include "resume-watch.h"
#include "vml-domain-status.h"
#include "vml-error.h"

#include <gio/gio.h>

struct _VmlResumeWatch {
    char *path;
    GFileMonitor *monitor;
    guint idle;
    GFunc func;
    gpointer data;
};

static gboolean
fire(gpointer data)
{
    VmlResumeWatch *w = data;
    w->idle = 0;
    w->func(w, w->data);
    return G_SOURCE_REMOVE;
}

static void
on_changed(G_GNUC_UNUSED GFileMonitor *m, G_GNUC_UNUSED GFile *file,
           G_GNUC_UNUSED GFile *other, G_GNUC_UNUSED GFileMonitorEvent event, gpointer data)
{
    VmlResumeWatch *w = data;
    g_autofree char *text = NULL;
    if (w->idle || !w->monitor || !g_file_get_contents(w->path, &text, NULL, NULL) ||
        !vml_domain_status_running(text))
        return;
    /* Not from inside the monitor's own signal: FUNC may free us. */
    g_signal_handlers_disconnect_by_data(w->monitor, w);
    w->idle = g_idle_add(fire, w);
}

VmlResumeWatch *
vml_resume_watch_new(const char *path, GFunc func, gpointer data, GError **error)
{
    g_autoptr(GFile) file = g_file_new_for_path(path);
    g_autoptr(GError) local = NULL;
    GFileMonitor *monitor = g_file_monitor_file(file, G_FILE_MONITOR_NONE, NULL, &local);
    if (!monitor) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot watch %s: %s", path,
                    local->message);
        return NULL;
    }
    VmlResumeWatch *w = g_new0(VmlResumeWatch, 1);
    w->path = g_strdup(path);
    w->monitor = monitor;
    w->func = func;
    w->data = data;
    g_signal_connect(monitor, "changed", G_CALLBACK(on_changed), w);
    return w;
}

void
vml_resume_watch_free(VmlResumeWatch *w)
{
    if (!w)
        return;
    if (w->idle)
        g_source_remove(w->idle);
    if (w->monitor) {
        g_signal_handlers_disconnect_by_data(w->monitor, w);
        g_file_monitor_cancel(w->monitor);
        g_object_unref(w->monitor);
    }
    g_free(w->path);
    g_free(w);
}

const char *
vml_resume_watch_path(VmlResumeWatch *w)
{
    return w->path;
}
