/* Main-loop watches on fds, all behind one epoll fd that is the only fd
 * this module puts in GLib's poll set. A GLib fd source costs, when it is
 * added, removed or blocked during its callback, an eventfd write and
 * read and an extra loop turn, and every turn polls every source's fd:
 * vmleased adds and removes one per connection and keeps one per holder
 * (its pidfd). Here adding is one epoll_ctl, and a turn costs what is
 * ready, not what is watched. Level-triggered, like poll: a watch is
 * called while its condition holds. vmleased never iterates the loop from
 * inside a callback, so nothing recurses. */
#pragma once

#include <glib-unix.h>

/* Call FUNC(fd, condition met, DATA) whenever FD meets CONDITION (G_IO_IN,
 * G_IO_OUT; G_IO_HUP and G_IO_ERR always count) until it returns
 * G_SOURCE_REMOVE or the watch is removed. An fd may have several
 * watches. The id (never 0) is this module's, not a GSource id. */
guint vml_fd_watch_add(int fd, GIOCondition condition, GUnixFDSourceFunc func,
                       gpointer data);

/* End watch ID, before its fd is closed (a closed fd's number may name
 * another file by the time the watch ends). FALSE when there is no such
 * watch (it ended already). */
gboolean vml_fd_watch_remove(guint id);

/* The same when the caller closes the fd next and holds its only
 * descriptor: epoll forgets a closed file by itself, so the fd's last
 * watch leaves without an epoll_ctl. */
gboolean vml_fd_watch_remove_closing(guint id);
