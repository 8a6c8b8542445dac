/* state.json: what a start after a crash needs beyond the holder records
 * and the locks (which are the truth): that vmleased ran on this boot, and
 * past which holder id to start (ids are reserved in blocks, so the file
 * is written once per block, not per change). The whole table is written
 * at shutdown. Writes are atomic: temp file, rename (no fsync: see
 * state-file.c). A re-exec hands its state over in memory instead. */
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
