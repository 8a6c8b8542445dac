/* Does a QEMU (qemu-system-*, qemu-img, qemu-nbd, ...) hold this image?
 *
 * QEMU's file driver announces each permission it holds with a shared
 * lock on byte 100 + bit and each permission it denies others with a
 * shared lock on byte 200 + bit. Testing those bytes with F_OFD_GETLK
 * takes nothing and disturbs nothing. OFD locks carry no pid, so on this
 * host the holders are found by the "lock:" lines in /proc/PID/fdinfo. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#define VML_QEMU_LOCK_PERM_BASE 100
#define VML_QEMU_LOCK_SHARED_BASE 200
#define VML_QEMU_PERM_BITS 5

/* QEMU's BLK_PERM_* bits. */
#define VML_QEMU_PERM_CONSISTENT_READ (1u << 0)
#define VML_QEMU_PERM_WRITE           (1u << 1)
#define VML_QEMU_PERM_WRITE_UNCHANGED (1u << 2)
#define VML_QEMU_PERM_RESIZE          (1u << 3)
#define VML_QEMU_PERM_GRAPH_MOD       (1u << 4)   /* older QEMUs only */

typedef struct {
    pid_t pid;
    char *command;     /* its command line, spaces between arguments */
    char *program;     /* for messages: the program's name, and the guest's
                          ("qemu-system-x86_64, guest dom-a") */
    guint perms;       /* permissions it holds */
    guint unshared;    /* permissions it denies others */
} VmlQemuHolder;

typedef struct {
    guint perms;       /* held by someone: from the lock bytes themselves */
    guint unshared;
    GPtrArray *holders;  /* VmlQemuHolder*, local processes, by pid */
} VmlQemuLocks;

void vml_qemu_locks_free(VmlQemuLocks *locks);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlQemuLocks, vml_qemu_locks_free)

/* Probe the image open on FD (any access mode). */
VmlQemuLocks *vml_qemu_probe(int fd, GError **error);

static inline gboolean
vml_qemu_locks_busy(const VmlQemuLocks *l)
{
    return l->perms || l->unshared;
}

/* "consistent-read, write, resize"; "none" for 0. */
char *vml_qemu_perms_text(guint perms);
/* "pid 123 (qemu-system-x86_64 -S ...)" for each holder, or "a process
 * on another host" when none is local. */
char *vml_qemu_locks_describe(const VmlQemuLocks *l);
