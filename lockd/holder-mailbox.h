/* A holder's mailbox: an AF_UNIX datagram socket connected to itself that
 * the VM process keeps open (the plugin makes it in the QEMU child before
 * exec) and never reads. Lock fds sent into it stay open in its receive
 * queue, so every lock lives as long as the VM process does, also those
 * taken later from libvirtd (hotplug, block jobs, a migration's claim),
 * whatever happens to vmleased; the queue dies with the VM process.
 *
 * The queue always holds the current set: a new set is sent before the
 * old messages are taken out, so at no instant is a held lock referenced
 * by vmleased alone. Locks taken since may be added beside it, as
 * messages of their own, until the next store. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct _VmlMailbox VmlMailbox;

/* Take FD (ours from here on) if it is a datagram socket connected to
 * itself; NULL with ERROR otherwise (FD closed). */
VmlMailbox *vml_mailbox_new(int fd, GError **error);
/* The mailbox PID keeps as the socket with inode INO, through PIDFD. */
VmlMailbox *vml_mailbox_find(pid_t pid, int pidfd, guint64 ino);
/* The mailbox with inode INO in whatever process keeps it (a holder that
 * died left it to a process it forked); a /proc walk. */
VmlMailbox *vml_mailbox_find_anywhere(guint64 ino);
void vml_mailbox_free(VmlMailbox *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlMailbox, vml_mailbox_free)
/* PID has the mailbox's socket open. */
gboolean vml_mailbox_is_kept_by(VmlMailbox *m, pid_t pid);

int vml_mailbox_fd(VmlMailbox *m);
guint64 vml_mailbox_ino(VmlMailbox *m);

/* Make FDS (borrowed) the mailbox's content. */
gboolean vml_mailbox_store(VmlMailbox *m, const int *fds, guint n_fds, GError **error);
/* Whether N_FDS more can be added without a store: the queue is known
 * (not taken over after a restart) and holds few messages. */
gboolean vml_mailbox_can_add(VmlMailbox *m, guint n_fds);
/* Add FDS (borrowed) to the content, beside what is there: one message. */
gboolean vml_mailbox_add(VmlMailbox *m, const int *fds, guint n_fds, GError **error);

/* Dups of every fd in the mailbox (an int GArray the caller closes),
 * consolidated into one current set without a moment where one is held
 * by us alone. */
GArray *vml_mailbox_contents(VmlMailbox *m, GError **error);
