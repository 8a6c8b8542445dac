/* Writing JSON text straight into a GString: for documents that would cost
 * a whole json-glib tree (state file, holder records) on a hot path. */
#pragma once

#include <glib.h>

/* Append STR as a JSON string literal (quoted, escaped). */
void vml_json_write_string(GString *out, const char *str);
/* Append "KEY":"VALUE", / "KEY":N, (with a leading comma unless FIRST). */
void vml_json_write_member_string(GString *out, gboolean first, const char *key, const char *value);
void vml_json_write_member_int(GString *out, gboolean first, const char *key, gint64 value);
