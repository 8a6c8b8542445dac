/* Writing JSON text straight into a GString: for documents that would cost
 * a whole json-glib tree (state file, holder records) on a hot path, and
 * the strict writer behind every message on the wire. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* Append STR as a JSON string literal (quoted, escaped). */
void vml_json_write_string(GString *out, const char *str);
/* Append "KEY":"VALUE", / "KEY":N, (with a leading comma unless FIRST).
 * KEY, here and below, is a member name of ours: plain ASCII, written as
 * it is. */
void vml_json_write_member_string(GString *out, gboolean first, const char *key, const char *value);
void vml_json_write_member_int(GString *out, gboolean first, const char *key, gint64 value);

/* Append STR as a string literal that is strict JSON (RFC 8259) whatever
 * STR holds: every byte that is not part of a valid UTF-8 character becomes
 * U+FFFD, and every control character (U+0000-U+001F, U+007F) is escaped.
 * Text that came from a client may be quoted with it safely. */
void vml_json_write_strict_string(GString *out, const char *str);
/* Append "KEY":"VALUE" with VALUE written as above (a leading comma
 * unless FIRST). */
void vml_json_write_strict_member_string(GString *out, gboolean first, const char *key,
                                         const char *value);
/* Append NODE as compact strict JSON: strings as above, object members in
 * their order, a double that is not finite as null. json-glib's generator
 * is not strict: it passes invalid UTF-8 and U+001F through raw, and writes
 * doubles such as 1e+20.0. */
void vml_json_write_node(GString *out, JsonNode *node);
/* Append object O (NULL as {}) the same way. */
void vml_json_write_object(GString *out, JsonObject *o);
