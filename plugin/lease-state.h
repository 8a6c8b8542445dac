/* The lock state libvirt carries across pause, resume and migration:
 * "vmlease/1" then ";KEY=GENERATION" per exclusive lease, KEY URI-escaped.
 * A resume whose generation moved means someone else wrote meanwhile. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* From an Inquire/Acquire "leases" array. */
char *vml_lease_state_encode(JsonArray *leases);
/* KEY -> generation (guint64 stored in a gpointer-sized box); NULL with
 * ERROR on anything malformed. */
GHashTable *vml_lease_state_decode(const char *state, GError **error);
