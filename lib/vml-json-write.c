#include "vml-json-write.h"

#include <math.h>
#include <string.h>

/* Append N bytes of S: a copy when they fit (the usual case), without a
 * call into GString per piece. */
static inline void
put(GString *out, const char *s, gsize n)
{
    gsize at = out->len;
    if (at + n < out->allocated_len) {
        memcpy(out->str + at, s, n);
        out->len = at + n;
        out->str[out->len] = '\0';
    } else {
        g_string_append_len(out, s, (gssize)n);
    }
}

/* A literal's bytes. */
#define PUT_LITERAL(out, lit) put((out), (lit), sizeof(lit) - 1)

void
vml_json_write_string(GString *out, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    g_string_append_c(out, '"');
    for (const guchar *p = (const guchar *)str; *p; p++) {
        /* What needs no escape goes out in one piece. */
        const guchar *run = p;
        while (*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            put(out, (const char *)run, p - run);
        if (!*p)
            break;
        switch (*p) {
        case '"': PUT_LITERAL(out, "\\\""); break;
        case '\\': PUT_LITERAL(out, "\\\\"); break;
        case '\n': PUT_LITERAL(out, "\\n"); break;
        case '\r': PUT_LITERAL(out, "\\r"); break;
        case '\t': PUT_LITERAL(out, "\\t"); break;
        default:
            PUT_LITERAL(out, "\\u00");
            g_string_append_c(out, hex[*p >> 4]);
            g_string_append_c(out, hex[*p & 15]);
        }
    }
    g_string_append_c(out, '"');
}

/* VALUE in decimal, without printf's machinery. */
static void
write_int(GString *out, gint64 value)
{
    char buf[24];
    char *end = buf + sizeof(buf), *p = end;
    guint64 u = value < 0 ? (guint64)0 - (guint64)value : (guint64)value;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (value < 0)
        *--p = '-';
    put(out, p, end - p);
}

/* ,"KEY": with KEY as it is: member names are ours, plain ASCII. */
static void
write_key(GString *out, gboolean first, const char *key)
{
    if (!first)
        g_string_append_c(out, ',');
    g_string_append_c(out, '"');
    put(out, key, strlen(key));
    put(out, "\":", 2);
}

void
vml_json_write_member_string(GString *out, gboolean first, const char *key, const char *value)
{
    write_key(out, first, key);
    vml_json_write_string(out, value);
}

void
vml_json_write_member_int(GString *out, gboolean first, const char *key, gint64 value)
{
    write_key(out, first, key);
    write_int(out, value);
}

/* ---- strict writer ------------------------------------------------------- */

/* What U+FFFD is in UTF-8: stands for each byte that is not UTF-8. */
#define REPLACEMENT "\xef\xbf\xbd"

void
vml_json_write_strict_string(GString *out, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const char *p = str ? str : "";

    g_string_append_c(out, '"');
    while (*p) {
        /* Plain printable ASCII goes out in one piece. */
        const char *run = p;
        while ((guchar)*p >= 0x20 && (guchar)*p < 0x7f && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            put(out, run, p - run);
        guchar c = (guchar)*p;
        if (c == '\0')
            break;
        if (c >= 0x80) {
            /* Rejects truncated and overlong sequences, surrogates (what
             * json-glib makes of a lone \ud800) and anything past U+10FFFF. */
            gunichar u = g_utf8_get_char_validated(p, -1);
            if (u == (gunichar)-1 || u == (gunichar)-2) {
                g_string_append(out, REPLACEMENT);
                p++;
            } else {
                const char *next = g_utf8_next_char(p);
                put(out, p, next - p);
                p = next;
            }
            continue;
        }
        switch (c) {
        case '"': PUT_LITERAL(out, "\\\""); break;
        case '\\': PUT_LITERAL(out, "\\\\"); break;
        case '\b': PUT_LITERAL(out, "\\b"); break;
        case '\f': PUT_LITERAL(out, "\\f"); break;
        case '\n': PUT_LITERAL(out, "\\n"); break;
        case '\r': PUT_LITERAL(out, "\\r"); break;
        case '\t': PUT_LITERAL(out, "\\t"); break;
        default:   /* the rest of U+0000-U+001F, and U+007F */
            PUT_LITERAL(out, "\\u00");
            g_string_append_c(out, hex[c >> 4]);
            g_string_append_c(out, hex[c & 15]);
        }
        p++;
    }
    g_string_append_c(out, '"');
}

void
vml_json_write_strict_member_string(GString *out, gboolean first, const char *key,
                                    const char *value)
{
    write_key(out, first, key);
    vml_json_write_strict_string(out, value);
}

static void
write_double(GString *out, double v)
{
    if (!isfinite(v)) {
        PUT_LITERAL(out, "null");   /* JSON has no NaN or infinity */
        return;
    }
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_ascii_dtostr(buf, sizeof(buf), v);
    put(out, buf, strlen(buf));
    /* Keep it a double for whoever reads it back, as json-glib does. */
    if (!strpbrk(buf, ".eE"))
        PUT_LITERAL(out, ".0");
}

static void
write_value(GString *out, JsonNode *node)
{
    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
        write_int(out, json_node_get_int(node));
        break;
    case G_TYPE_DOUBLE:
        write_double(out, json_node_get_double(node));
        break;
    case G_TYPE_BOOLEAN:
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
        break;
    case G_TYPE_STRING: {
        const char *s = json_node_get_string(node);
        if (s)
            vml_json_write_strict_string(out, s);
        else
            PUT_LITERAL(out, "null");
        break;
    }
    default:
        PUT_LITERAL(out, "null");
    }
}

void
vml_json_write_object(GString *out, JsonObject *o)
{
    g_string_append_c(out, '{');
    if (o) {
        /* Members in the order they were set, as json-glib writes them. */
        JsonObjectIter it;
        const char *name;
        JsonNode *member;
        gboolean first = TRUE;
        json_object_iter_init_ordered(&it, o);
        while (json_object_iter_next_ordered(&it, &name, &member)) {
            if (!first)
                g_string_append_c(out, ',');
            first = FALSE;
            vml_json_write_strict_string(out, name);
            g_string_append_c(out, ':');
            vml_json_write_node(out, member);
        }
    }
    g_string_append_c(out, '}');
}

void
vml_json_write_node(GString *out, JsonNode *node)
{
    switch (node ? JSON_NODE_TYPE(node) : JSON_NODE_NULL) {
    case JSON_NODE_OBJECT:
        vml_json_write_object(out, json_node_get_object(node));
        break;
    case JSON_NODE_ARRAY: {
        JsonArray *a = json_node_get_array(node);
        g_string_append_c(out, '[');
        for (guint i = 0; a && i < json_array_get_length(a); i++) {
            if (i > 0)
                g_string_append_c(out, ',');
            vml_json_write_node(out, json_array_get_element(a, i));
        }
        g_string_append_c(out, ']');
        break;
    }
    case JSON_NODE_VALUE:
        write_value(out, node);
        break;
    case JSON_NODE_NULL:
    default:
        PUT_LITERAL(out, "null");
    }
}
