/* Reconcile, don't count. libvirt names one image at a time (hotplug,
 * media changes, block jobs), sometimes none, and never the backing images
 * or the layers a block job leaves behind: after a snapshot it lets go of
 * the old top that is now the new top's backing image, after a pull or a
 * pivot it names one of the layers that went. So at each of its calls the
 * holder's lease set is brought to what its images need now:
 *  - named: what libvirt named in an acquire (a disk's top image, a medium,
 *    a block job's base or destination), held until libvirt lets it go;
 *  - derived: every backing image of a named one, and a named one libvirt
 *    let go of that the VM process still has open; held shared while
 *    either holds, then released.
 * Each step is all or nothing: what is acquired is acquired in one call of
 * the lease table, and releasing what nothing needs cannot fail. */
#pragma once

#include "lease-table.h"

/* Acquire REQS as vml_lease_table_acquire does, together with the backing
 * images of every image the holder has named (derived, shared at least),
 * then release the derived leases nothing needs any more. Returns every
 * lease of the call (REQS first), borrowed. */
GPtrArray *vml_reconcile_acquire(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs,
                                 guint n_reqs, gboolean holder_fds, gboolean claim,
                                 JsonObject **conflict, GError **error);

/* libvirt lets go of KEYS (those the holder does not hold are skipped):
 * each is released, unless a backing chain the holder keeps or its
 * process still uses it, in which case it stays as a derived, shared
 * lease; then the derived leases nothing needs go. */
gboolean vml_reconcile_release(VmlLeaseTable *t, VmlHolder *h, const char *const *keys,
                               guint n_keys, guint *released, GError **error);
