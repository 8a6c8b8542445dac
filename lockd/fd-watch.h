/* A main-loop watch on an fd that GLib does not block while its callback
 * runs. GLib takes a blocked source's fds out of the poll set and puts
 * them back afterwards, waking the loop (an eventfd write and read) both
 * times: two wake-ups and an extra loop turn for every message. vmleased
 * never iterates the loop from inside a callback, so nothing can recurse. */
#pragma once

#include <glib-unix.h>

guint vml_fd_watch_add(int fd, GIOCondition condition, GUnixFDSourceFunc func,
                       gpointer data);
