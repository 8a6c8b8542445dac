/* Applying a planned chain change: through libvirt for a running domain
 * (chain-libvirt.c), with qemu-img for images no VM runs on
 * (chain-qemu-img.c). Both wait until the change is done and check that it
 * happened as planned. */
#pragma once

#include <glib.h>
#include <libvirt/libvirt.h>

#include "chain-progress.h"
#include "vml-chain-plan.h"

/* ---- libvirt ------------------------------------------------------------ */

/* Connect to URI (NULL: libvirt's default) and look up NAME (a name or
 * uuid). NULL with *not_found TRUE when the connection works but has no
 * such domain. */
virDomainPtr chain_lv_lookup(const char *uri, const char *name, gboolean *not_found,
                             GError **error);
void chain_lv_close(virDomainPtr dom);
/* The domain's XML (live, or the persistent definition with INACTIVE). */
char *chain_lv_xml(virDomainPtr dom, gboolean inactive, GError **error);
/* Canonical image path -> why it is frozen, for every layer of a disk that
 * has a block job running. */
GHashTable *chain_lv_frozen(virDomainPtr dom, VmlDomain *model, GError **error);
/* Apply PLAN to the running domain and wait for it (pivoting an active
 * commit); then check the disk's chain is the planned one. BANDWIDTH caps
 * a block job (MiB/s, 0: no cap); PROGRESS (may be NULL) follows the job.
 * SIGINT, SIGTERM or SIGHUP during the job cancel it. */
gboolean chain_lv_apply(virDomainPtr dom, const VmlChainPlan *plan, unsigned long bandwidth,
                        ChainProgress *progress, GError **error);
/* Whether a block job runs on TARGET (TRUE when libvirt cannot say). */
gboolean chain_lv_job_running(virDomainPtr dom, const char *target);
/* Replace the persistent definition (an inactive domain changed offline). */
gboolean chain_lv_define(virDomainPtr dom, const char *xml, GError **error);

/* ---- qemu-img ----------------------------------------------------------- */

/* Snapshot: create the new overlay over the active image (before its lease
 * is taken: the daemon leases existing files only). With VM_RUNNING the
 * active image is not opened (QEMU holds it), its size is read from the
 * header instead. */
gboolean chain_create_overlay(const VmlChainPlan *plan, gboolean vm_running, GError **error);
/* Apply PLAN with qemu-img (the leases are held by then); PROGRESS (may
 * be NULL) follows what qemu-img -p reports. */
gboolean chain_qemu_img_apply(const VmlChainPlan *plan, ChainProgress *progress,
                              GError **error);
/* The virtual size of the qcow2 image PATH, read from its header without
 * taking QEMU's image locks (a running QEMU holds them). VML_ERROR_BAD_IMAGE
 * for an image that is not qcow2. */
gboolean chain_image_virtual_size(const char *path, guint64 *size, GError **error);
