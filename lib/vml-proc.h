/* Facts about processes and this host, read from /proc and /etc. */
#pragma once

#include <glib.h>
#include <sys/types.h>

/* Start time of PID (field 22 of /proc/PID/stat, clock ticks since boot);
 * with a pid it names a process uniquely for the life of a boot. */
gboolean vml_proc_start_time(pid_t pid, guint64 *start_time, GError **error);

/* The real uid PID runs as (the Uid: line of /proc/PID/status). */
gboolean vml_proc_uid(pid_t pid, uid_t *uid, GError **error);

/* TRUE when PID is alive (not a zombie) and still started at START_TIME. */
gboolean vml_proc_is_same(pid_t pid, guint64 start_time);

/* What this process's FD is open on, as the kernel names it (the path it
 * was reached by, every symlink resolved); NULL if it cannot be read. */
char *vml_proc_own_fd_path(int fd);

/* FUNC(NUM, TARGET, DATA) for each open fd NUM of PID and what it links to
 * (/proc/PID/fd); FUNC returns FALSE to stop. Fds that cannot be read are
 * passed over; a process that cannot be looked at has none. */
typedef gboolean (*VmlFdFunc)(int num, const char *target, gpointer data);
void vml_proc_each_fd(pid_t pid, VmlFdFunc func, gpointer data);
/* The walk under it: FUNC(DIRFD, NAME, NUM, DATA) for each open fd NUM of
 * PID, with DIRFD the open /proc/PID/fd and NAME its entry there, for a
 * caller that wants the file itself (fstatat) rather than its name. */
typedef gboolean (*VmlFdEntryFunc)(int dirfd, const char *name, int num, gpointer data);
void vml_proc_each_fd_entry(pid_t pid, VmlFdEntryFunc func, gpointer data);

/* The file PID runs (/proc/PID/exe: its device and inode); it changes
 * when PID execs another program. FALSE if it cannot be looked at. */
gboolean vml_proc_exe_id(pid_t pid, guint64 *dev, guint64 *ino);

const char *vml_host_name(void);
/* Newly read each call is not needed: cached after the first read. */
const char *vml_host_boot_id(void);
const char *vml_host_machine_id(void);
