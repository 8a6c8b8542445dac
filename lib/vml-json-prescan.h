#pragma once

#include <glib.h>

/* How deep a request may nest: json-glib parses recursively. */
#define VML_JSON_PRESCAN_DEPTH_MAX 32

/* Reject what json-glib would mishandle, before it parses. json-glib takes
 * more than JSON ('single quotes', comments, hex and octal numbers, octal
 * escapes, "var x = ..."), and any of that, like a lone surrogate, would
 * make it read the message otherwise than this scan does. So this takes
 * strict JSON only: one object and nothing after it (json-glib drops a
 * second one silently), nested no deeper than its recursion can bear, with
 * no \u0000 and no integer beyond 64 bits. json-glib checks the grammar.
 * NULL when MSG (LEN bytes) passes, else what is wrong with it, a static
 * sentence that starts with "message". */
const char *vml_json_prescan(const char *msg, gsize len);
