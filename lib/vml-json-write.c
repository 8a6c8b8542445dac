#include "vml-json-write.h"

void
vml_json_write_string(GString *out, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    g_string_append_c(out, '"');
    for (const guchar *p = (const guchar *)str; *p; p++) {
        switch (*p) {
        case '"': g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        default:
            if (*p < 0x20) {
                g_string_append(out, "\\u00");
                g_string_append_c(out, hex[*p >> 4]);
                g_string_append_c(out, hex[*p & 15]);
            } else {
                g_string_append_c(out, *p);
            }
        }
    }
    g_string_append_c(out, '"');
}

void
vml_json_write_member_string(GString *out, gboolean first, const char *key, const char *value)
{
    if (!first)
        g_string_append_c(out, ',');
    vml_json_write_string(out, key);
    g_string_append_c(out, ':');
    vml_json_write_string(out, value);
}

void
vml_json_write_member_int(GString *out, gboolean first, const char *key, gint64 value)
{
    if (!first)
        g_string_append_c(out, ',');
    vml_json_write_string(out, key);
    g_string_append_printf(out, ":%" G_GINT64_FORMAT, value);
}
