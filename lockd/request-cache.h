/* The last requests parsed, by their exact text. libvirtd sends the same
 * Register, and the same resources, for each lock call of a domain, on a
 * new connection each time; a parsed request is sealed (json-glib's
 * immutable tree: handlers only read it), so the tree of an identical
 * text is shared instead of parsed and freed again. A bounded ring:
 * VML_REQUEST_CACHE_SIZE requests of at most VML_REQUEST_CACHE_TEXT_MAX
 * bytes; anything else, and every request that fails to parse, is parsed
 * each time. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#define VML_REQUEST_CACHE_SIZE 64
#define VML_REQUEST_CACHE_TEXT_MAX 2048

typedef struct _VmlRequestCache VmlRequestCache;

VmlRequestCache *vml_request_cache_new(void);
void vml_request_cache_free(VmlRequestCache *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlRequestCache, vml_request_cache_free)

/* MSG (LEN bytes) parsed as vml_json_request_parse() does, a reference
 * the caller owns; NULL with its error. C may be NULL: no cache. */
JsonObject *vml_request_cache_parse(VmlRequestCache *c, const char *msg, gsize len,
                                    GError **error);
