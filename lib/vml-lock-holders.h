/* Which processes keep a kernel lock on a file, found without their help:
 * OFD locks carry no pid (/proc/locks says -1), so every process's open
 * files are looked at, and /proc/PID/fdinfo tells which descriptions hold
 * a lock. For the rare case of a lock nobody registered: a full /proc
 * walk, not for hot paths. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    gboolean write;     /* a write lock on some byte, else read locks only */
    char *program;      /* /proc/PID/comm */
} VmlLockHolder;

void vml_lock_holder_free(VmlLockHolder *h);

/* The processes other than SKIP_PID that hold a lock on the file PATH
 * (an absolute canonical path) through a description of their own; one
 * entry per process. Never NULL. */
GPtrArray *vml_lock_holders_of(const char *path, pid_t skip_pid);
