#include "vml-str-hash.h"

#include <string.h>

#define MIX 0x9e3779b97f4a7c15ull

static guint64
seed(void)
{
    static gsize once;
    static guint64 value;
    if (g_once_init_enter(&once)) {
        value = ((guint64)g_random_int() << 32 | g_random_int()) | 1;
        g_once_init_leave(&once, 1);
    }
    return value;
}

static inline guint64
step(guint64 h, guint64 word)
{
    h ^= word;
    h *= MIX;
    return h ^ (h >> 29);
}

guint
vml_str_hash(gconstpointer key)
{
    const char *s = key;
    gsize len = strlen(s);
    guint64 h = seed() ^ (len * MIX);
    gsize i = 0;
    for (; i + 8 <= len; i += 8) {
        guint64 w;
        memcpy(&w, s + i, 8);
        h = step(h, w);
    }
    if (i < len) {
        guint64 w = 0;
        memcpy(&w, s + i, len - i);
        h = step(h, w);
    }
    h = step(h, len);
    return (guint)(h ^ (h >> 32));
}
