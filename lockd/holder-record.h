/* A holder's record: the JSON text a restart after a crash recovers its
 * leases from (owner-record.h reads it), written before every grant is
 * answered and before every release unlocks.
 *
 * Written whole only now and then; in between, only what changed is
 * written over its place in the file, so a change costs the same for a
 * holder with 10,000 leases as for one with none. Each lease sits in a
 * slot of its own, padded with spaces inside its object and followed by
 * a comma; a lease that goes is blanked to spaces; new ones are appended
 * before the closing "null]}". Every state between two writes is valid
 * JSON, and readers skip the null. */
#pragma once

#include <glib.h>

#include "lease-table.h"

typedef struct _VmlRecordLayout VmlRecordLayout;

void vml_record_layout_free(VmlRecordLayout *layout);
/* L is dropped from its holder: its slot is blanked at the next write. */
void vml_record_layout_forget(VmlRecordLayout *layout, VmlLease *l);

/* Write H's record (its leases but the leaving ones): whole, or patched in
 * place where the layout (*LAYOUT, made on the first write) allows. After
 * a failure the next write is whole. */
gboolean vml_holder_record_write(VmlHolder *h, VmlBackend *be, VmlRecordLayout **layout,
                                 GError **error);

/* H's identity as members after others (",uuid,name,holder,pid,
 * start_time,since[,program]"): in its record, its state and Admin.List. */
void vml_holder_write_identity(GString *out, const VmlHolder *h);

/* H as JSON in one piece (the state file), FDS (may be NULL) getting each
 * lease's lock fd, named in the text as "fd". */
void vml_holder_write_json(GString *out, const VmlHolder *h, VmlBackend *be, GArray *fds);
