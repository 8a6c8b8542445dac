#include "request-cache.h"
#include "vml-json-request.h"

#include <string.h>

typedef struct {
    guint64 hash;
    char *text;          /* NULL: free */
    gsize len;
    JsonObject *request;
} Entry;

struct _VmlRequestCache {
    Entry entries[VML_REQUEST_CACHE_SIZE];
    guint next;          /* the slot the next new text takes */
};

/* Eight bytes a step, multiplied and folded: cheap next to a parse, and
 * only texts of equal hash and length are compared byte for byte. */
static guint64
text_hash(const char *msg, gsize len)
{
    guint64 h = 0x9e3779b97f4a7c15ull ^ len;
    gsize i = 0;
    for (; i + 8 <= len; i += 8) {
        guint64 w;
        memcpy(&w, msg + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    guint64 w = 0;
    memcpy(&w, msg + i, len - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

VmlRequestCache *
vml_request_cache_new(void)
{
    return g_new0(VmlRequestCache, 1);
}

static void
entry_clear(Entry *e)
{
    g_clear_pointer(&e->text, g_free);
    g_clear_pointer(&e->request, json_object_unref);
}

void
vml_request_cache_free(VmlRequestCache *c)
{
    if (!c)
        return;
    for (guint i = 0; i < VML_REQUEST_CACHE_SIZE; i++)
        entry_clear(&c->entries[i]);
    g_free(c);
}

JsonObject *
vml_request_cache_parse(VmlRequestCache *c, const char *msg, gsize len, GError **error)
{
    if (!c || len > VML_REQUEST_CACHE_TEXT_MAX)
        return vml_json_request_parse(msg, len, error);
    guint64 h = text_hash(msg, len);
    for (guint i = 0; i < VML_REQUEST_CACHE_SIZE; i++) {
        const Entry *e = &c->entries[i];
        if (e->text && e->hash == h && e->len == len && memcmp(e->text, msg, len) == 0)
            return json_object_ref(e->request);
    }
    JsonObject *request = vml_json_request_parse(msg, len, error);
    if (!request)
        return NULL;
    Entry *e = &c->entries[c->next];
    c->next = (c->next + 1) % VML_REQUEST_CACHE_SIZE;
    entry_clear(e);
    e->hash = h;
    e->text = g_memdup2(msg, len);
    e->len = len;
    e->request = json_object_ref(request);
    return request;
}
