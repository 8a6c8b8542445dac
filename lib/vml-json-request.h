/* The daemon's parser of requests. json-glib's parser takes more than JSON
 * ('single quotes', comments, hex and octal numbers, octal escapes, "var
 * x = ..."), cuts a string at \u0000, reads past a lone surrogate, wraps
 * an integer beyond 64 bits and drops a second object after the first
 * silently; it also costs a GScanner, a GObject and a signal per node. This
 * one takes strict JSON only and builds the same JsonNode tree json-glib's
 * immutable parser would (integers as G_TYPE_INT64, other numbers as
 * doubles, the last value of a name given twice, every node sealed). */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* How deep a request may nest, the top object counted. */
#define VML_JSON_REQUEST_DEPTH_MAX 32

/* MSG (LEN bytes) as one JSON object with nothing but whitespace around
 * it: valid UTF-8, JSON's grammar, escapes and numbers, no \u0000, no
 * unpaired surrogate, no integer beyond 64 bits, nested at most
 * VML_JSON_REQUEST_DEPTH_MAX deep. Otherwise NULL and
 * VML_ERROR_INVALID_MESSAGE with a sentence that starts with "message". */
JsonObject *vml_json_request_parse(const char *msg, gsize len, GError **error);

/* The same parse, the tree left open to changes: for turning JSON text
 * the daemon wrote itself into an object to add to. */
JsonObject *vml_json_parse_object(const char *text, gsize len, GError **error);
