#include "fd-watch.h"

guint
vml_fd_watch_add(int fd, GIOCondition condition, GUnixFDSourceFunc func, gpointer data)
{
    GSource *source = g_unix_fd_source_new(fd, condition);
    g_source_set_can_recurse(source, TRUE);
    g_source_set_callback(source, (GSourceFunc)(void (*)(void))func, data, NULL);
    guint id = g_source_attach(source, NULL);
    g_source_unref(source);
    return id;
}
