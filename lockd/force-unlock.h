/* io.vmlease.Admin.ForceUnlock: clear an image's in-use mark (compatible
 * bit 1 and the owner extension) that no live use stands behind. A mark
 * whose use is live, or cannot be checked from here, is cleared only with
 * FORCE; a header is never rewritten while a QEMU holds the image. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "lease-table.h"

/* PATH is the image's canonical path, KEY its resource. On success *REPLY
 * is the reply {resource, path, cleared, verdict, reason[, owner]}; on failure *PARAMS (may
 * be NULL) carries the error's data. */
gboolean vml_force_unlock(VmlLeaseTable *t, const char *key, const char *path,
                          gboolean force,
                          JsonObject **reply, JsonObject **params, GError **error);
