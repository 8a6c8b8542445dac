/* The strict scan of a request before json-glib parses it (see
 * vml-json-prescan.h). */
#include "vml-json-prescan.h"

#include <errno.h>
#include <string.h>

static gboolean
json_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* What may come right after a number or a literal. */
static gboolean
json_delimiter(const char *msg, gsize len, gsize i)
{
    return i == len || json_space(msg[i]) || msg[i] == ',' || msg[i] == ']' || msg[i] == '}';
}

/* The four hex digits of a \u escape at MSG[i], as a UTF-16 code unit. */
static gboolean
hex4(const char *msg, gsize len, gsize i, gunichar *unit)
{
    *unit = 0;
    if (i + 4 > len)
        return FALSE;
    for (gsize k = i; k < i + 4; k++) {
        int v = g_ascii_xdigit_value(msg[k]);
        if (v < 0)
            return FALSE;
        *unit = (*unit << 4) | (gunichar)v;
    }
    return TRUE;
}

/* The string opening at MSG[*i]: JSON's escapes only, no \u0000 (json-glib
 * would cut the string there silently), surrogates only in pairs (json-glib
 * reads on past the end of a string after a lone one) and no raw control
 * characters. Moves *i to the closing quote. */
static const char *
scan_string(const char *msg, gsize len, gsize *i)
{
    for (gsize j = *i + 1; j < len; j++) {
        guchar ch = msg[j];
        if (ch == '"') {
            *i = j;
            return NULL;
        }
        if (ch < 0x20)
            return "message has a control character in a string";
        if (ch != '\\')
            continue;
        if (++j == len)
            break;
        if (msg[j] == 'u') {
            gunichar unit, low;
            if (!hex4(msg, len, j + 1, &unit))
                return "message has a malformed \\u escape in a string";
            if (unit == 0)
                return "message holds a NUL character (\\u0000) in a string";
            j += 4;
            if (unit >= 0xdc00 && unit <= 0xdfff)
                return "message has a lone surrogate (\\uDC00-\\uDFFF) in a string";
            if (unit >= 0xd800 && unit <= 0xdbff) {
                if (j + 2 >= len || msg[j + 1] != '\\' || msg[j + 2] != 'u' ||
                    !hex4(msg, len, j + 3, &low) || low < 0xdc00 || low > 0xdfff)
                    return "message has a lone surrogate (\\uD800-\\uDBFF) in a string";
                j += 6;
            }
        } else if (msg[j] == '\0' || !strchr("\"\\/bfnrt", msg[j])) {
            return "message has an escape in a string that JSON does not know";
        }
    }
    return "message ends inside a string";
}

/* The number starting at MSG[*i], in JSON's form only: json-glib also takes
 * hex, octal and more. An integer must fit 64 bits, as json-glib wraps it
 * silently. Moves *i to the number's last byte. */
static const char *
scan_number(const char *msg, gsize len, gsize *i)
{
    static const char *const malformed = "message has a number that is not JSON";
    gsize j = *i;
    gboolean integer = TRUE;

    if (msg[j] == '-')
        j++;
    if (j < len && msg[j] == '0') {
        j++;
    } else if (j < len && g_ascii_isdigit(msg[j])) {
        while (j < len && g_ascii_isdigit(msg[j]))
            j++;
    } else {
        return malformed;
    }
    if (j < len && msg[j] == '.') {
        integer = FALSE;
        if (++j == len || !g_ascii_isdigit(msg[j]))
            return malformed;
        while (j < len && g_ascii_isdigit(msg[j]))
            j++;
    }
    if (j < len && (msg[j] == 'e' || msg[j] == 'E')) {
        integer = FALSE;
        if (++j < len && (msg[j] == '+' || msg[j] == '-'))
            j++;
        if (j == len || !g_ascii_isdigit(msg[j]))
            return malformed;
        while (j < len && g_ascii_isdigit(msg[j]))
            j++;
    }
    if (!json_delimiter(msg, len, j))
        return malformed;
    if (integer) {
        /* No leading zeros: anything longer than "-9223372036854775808"
         * is out of range already. */
        char digits[21];
        gsize n = j - *i;
        if (n >= sizeof(digits))
            return "message holds an integer beyond 64 bits";
        memcpy(digits, msg + *i, n);
        digits[n] = '\0';
        errno = 0;
        g_ascii_strtoll(digits, NULL, 10);
        if (errno == ERANGE)
            return "message holds an integer beyond 64 bits";
    }
    *i = j - 1;
    return NULL;
}

/* true, false or null at MSG[*i]; moves *i to its last byte. */
static const char *
scan_literal(const char *msg, gsize len, gsize *i)
{
    static const char *const words[] = { "true", "false", "null" };
    for (guint w = 0; w < G_N_ELEMENTS(words); w++) {
        gsize n = strlen(words[w]);
        if (len - *i >= n && memcmp(msg + *i, words[w], n) == 0 &&
            json_delimiter(msg, len, *i + n)) {
            *i += n - 1;
            return NULL;
        }
    }
    return "message has a word outside strings that is not JSON";
}

const char *
vml_json_prescan(const char *msg, gsize len)
{
    int depth = 0;
    gboolean ended = FALSE;

    if (!g_utf8_validate(msg, len, NULL))
        return "message is not valid UTF-8";
    for (gsize i = 0; i < len; i++) {
        char ch = msg[i];
        const char *problem = NULL;

        if (json_space(ch))
            continue;
        if (ended)
            return "message has data after its JSON object";
        if (depth == 0 && ch != '{')
            return "message is not a JSON object";
        if (ch == '{' || ch == '[') {
            if (++depth > VML_JSON_PRESCAN_DEPTH_MAX)
                return "message is nested too deeply";
        } else if (ch == '}' || ch == ']') {
            ended = (--depth == 0);
        } else if (ch == '"') {
            problem = scan_string(msg, len, &i);
        } else if (ch == '-' || g_ascii_isdigit(ch)) {
            problem = scan_number(msg, len, &i);
        } else if (g_ascii_isalpha(ch)) {
            problem = scan_literal(msg, len, &i);
        } else if (ch == '\'') {
            problem = "message has a 'single-quoted' string, which is not JSON";
        } else if (ch == '/') {
            problem = "message has a comment, which is not JSON";
        } else if (ch != ':' && ch != ',') {
            problem = "message has a character outside strings that is not JSON";
        }
        if (problem)
            return problem;
    }
    if (!ended)
        return "message is not a whole JSON object";
    return NULL;
}
