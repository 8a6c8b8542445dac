/* A strict JSON checker, for tests and fuzzers that hold the daemon to
 * "every reply is strict JSON". json-glib's parser is no judge: it takes
 * single quotes, comments, hex numbers, raw control characters and invalid
 * UTF-8. */
#pragma once

#include <glib.h>

/* TEXT (LEN bytes) is exactly one JSON object as RFC 8259 has it, with
 * nothing but whitespace around it: valid UTF-8 only (no overlong forms,
 * no surrogates, nothing past U+10FFFF), no raw control character in a
 * string, JSON's escapes only with \u surrogates in pairs, JSON's numbers
 * and literals, nested at most 512 deep. Otherwise FALSE, and *ERROR says
 * what and at which byte. */
gboolean vml_json_strict_check(const char *text, gsize len, GError **error);
