/* Does a VM process, once it has exec'd QEMU, still have open what keeps
 * its leases alive: its mailbox (holder-mailbox.h) and the lock fds
 * vmleased handed it before the exec? A security policy that revalidates
 * inherited fds at exec can close them: AppArmor replaces every inherited
 * file the new profile does not allow, SELinux's fd use checks do the
 * same for a new domain. The leases then live in vmleased alone and end
 * if it dies, while the VM goes on writing. vmleased cannot give the fds
 * back; it says so, loudly, once per VM process, and reports it (List's
 * lock_fds, Status's holders_without_lock_fds). */
#pragma once

#include "lease-table.h"

/* Look at H's process if it has exec'd since it registered and has not
 * been looked at; a warning and a lock-fds-missing event if it lacks any. */
void vml_lock_fd_check(VmlBackend *be, VmlHolder *h);
/* The same for every holder (admins' queries: List, Status). */
void vml_lock_fd_check_all(VmlBackend *be, VmlLeaseTable *t);
/* Holders whose process lacks them. */
guint vml_lock_fd_missing_count(VmlLeaseTable *t);
const char *vml_lock_fds_name(VmlLockFds state);
