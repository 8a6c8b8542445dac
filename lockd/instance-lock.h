/* One vmleased per socket directory. A second daemon started on the same
 * directory would unlink and bind the sockets again, leaving the first one
 * running with every lease and nobody able to reach it. So the first holds
 * an OFD write lock on SOCKET_DIR/vmleased.pid, which says its pid, for as
 * long as it runs, across re-execs too (the fd is handed over); a second
 * one finds it locked and refuses to start, naming the first. */
#pragma once

#include <glib.h>

/* Take the lock in RUN_DIR (made if need be): its fd, or -1 with ERROR
 * saying which pid runs there. */
int vml_instance_lock_take(const char *run_dir, GError **error);

/* Write this process's pid into the lock file FD (after daemonizing). */
void vml_instance_lock_write_pid(int fd);
