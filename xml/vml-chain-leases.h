/* The lease side of a chain transaction, carried out by vmleased for one
 * holder (the running VM, or the process applying an offline change):
 *   prepare  take every lease the change needs (upgrades included) in one
 *            all-or-nothing Acquire; a conflict names the other holders;
 *   finish   once the change is applied: leave the holder with exactly what
 *            the new chain needs (downgrade the base, release what left);
 *   abort    put back every lease as it was before prepare.
 * Only leases of images the plan touches are ever changed. */
#pragma once

#include "vml-chain-plan.h"
#include "vml-client.h"

#include <json-glib/json-glib.h>

typedef struct _VmlChainLeases VmlChainLeases;

/* CLIENT is borrowed (a lease-socket connection) and must outlive the
 * result; HOLDER is the holder id whose leases change. */
VmlChainLeases *vml_chain_leases_new(VmlClient *client, gint64 holder, const VmlChainPlan *plan);
void vml_chain_leases_free(VmlChainLeases *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlChainLeases, vml_chain_leases_free)

/* On failure nothing has changed. A conflict is VML_ERROR_CONFLICT, its
 * message naming the image and every other holder; *conflict (may be NULL)
 * receives the Conflict's parameters. */
gboolean vml_chain_leases_prepare(VmlChainLeases *t, JsonObject **conflict, GError **error);
gboolean vml_chain_leases_finish(VmlChainLeases *t, GError **error);
/* Undo prepare; returns FALSE (and says what) if a lease could not be put
 * back, which only a vanished daemon or holder can cause. */
gboolean vml_chain_leases_abort(VmlChainLeases *t, GError **error);

/* The holder's leases now (Inquire): canonical key -> VmlLeaseMode. */
GHashTable *vml_chain_leases_current(VmlClient *client, gint64 holder, GError **error);
