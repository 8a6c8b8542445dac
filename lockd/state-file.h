/* state.json: the lease table on disk, so a restarted vmleased rebuilds it.
 * Saves are coalesced (a burst of changes costs one write) and atomic:
 * temp file, rename (no fsync: see state-file.c). Only a re-exec restores
 * from it; after a crash the holder records and the locks are the truth. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "lease-table.h"

typedef struct _VmlStateFile VmlStateFile;

VmlStateFile *vml_state_file_new(const char *dir, VmlLeaseTable *table, GError **error);
void vml_state_file_free(VmlStateFile *sf);

/* Ask for a save soon (coalesced). */
void vml_state_file_schedule(VmlStateFile *sf);
/* Save now if anything is pending. */
gboolean vml_state_file_flush(VmlStateFile *sf, GError **error);

/* The saved state, or NULL (missing or unreadable: logged). */
JsonObject *vml_state_file_load(VmlStateFile *sf);
