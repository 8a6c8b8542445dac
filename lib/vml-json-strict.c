#include "vml-json-strict.h"
#include "vml-error.h"

#include <string.h>

#define DEPTH_MAX 512

typedef struct {
    const guchar *s;
    gsize len;
    gsize pos;
    const char *problem;
} Scan;

static gboolean
fail(Scan *sc, const char *problem)
{
    if (!sc->problem)
        sc->problem = problem;
    return FALSE;
}

static gboolean
at_end(const Scan *sc)
{
    return sc->pos >= sc->len;
}

static guchar
peek(const Scan *sc)
{
    return at_end(sc) ? 0 : sc->s[sc->pos];
}

static void
skip_space(Scan *sc)
{
    while (!at_end(sc)) {
        guchar c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->pos++;
    }
}

/* One UTF-8 character at pos (its first byte >= 0x80), by RFC 3629's
 * table: the shortest form only, no surrogates, at most U+10FFFF. */
static gboolean
scan_utf8(Scan *sc)
{
    guchar c = sc->s[sc->pos];
    guint n;
    gunichar u, min;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1; u = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2; u = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3; u = c & 0x07; min = 0x10000;
    } else {
        return fail(sc, "a byte that cannot start a UTF-8 character");
    }
    if (sc->len - sc->pos <= n)
        return fail(sc, "a UTF-8 character cut short");
    for (guint i = 1; i <= n; i++) {
        guchar cc = sc->s[sc->pos + i];
        if ((cc & 0xc0) != 0x80)
            return fail(sc, "a UTF-8 character cut short");
        u = (u << 6) | (cc & 0x3f);
    }
    if (u < min)
        return fail(sc, "an overlong UTF-8 form");
    if (u >= 0xd800 && u <= 0xdfff)
        return fail(sc, "a surrogate encoded in UTF-8");
    if (u > 0x10ffff)
        return fail(sc, "a UTF-8 character past U+10FFFF");
    sc->pos += n + 1;
    return TRUE;
}

/* Four hex digits at pos; moves past them. */
static gboolean
scan_hex4(Scan *sc, gunichar *unit)
{
    *unit = 0;
    if (sc->len - sc->pos < 4)
        return fail(sc, "a \\u escape cut short");
    for (guint i = 0; i < 4; i++) {
        int v = g_ascii_xdigit_value(sc->s[sc->pos + i]);
        if (v < 0)
            return fail(sc, "a \\u escape without four hex digits");
        *unit = (*unit << 4) | (gunichar)v;
    }
    sc->pos += 4;
    return TRUE;
}

/* A string from its opening quote (at pos) to past its closing one. */
static gboolean
scan_string(Scan *sc)
{
    sc->pos++;
    for (;;) {
        if (at_end(sc))
            return fail(sc, "a string that does not end");
        guchar c = sc->s[sc->pos];
        if (c == '"') {
            sc->pos++;
            return TRUE;
        }
        if (c < 0x20)
            return fail(sc, "a control character in a string, not escaped");
        if (c >= 0x80) {
            if (!scan_utf8(sc))
                return FALSE;
            continue;
        }
        if (c != '\\') {
            sc->pos++;
            continue;
        }
        sc->pos++;
        c = peek(sc);
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
            c == 'r' || c == 't') {
            sc->pos++;
            continue;
        }
        if (c != 'u')
            return fail(sc, "an escape that JSON does not have");
        sc->pos++;
        gunichar unit;
        if (!scan_hex4(sc, &unit))
            return FALSE;
        if (unit >= 0xdc00 && unit <= 0xdfff)
            return fail(sc, "a low surrogate escape with no high one before it");
        if (unit >= 0xd800 && unit <= 0xdbff) {
            gunichar low;
            if (sc->len - sc->pos < 2 || sc->s[sc->pos] != '\\' || sc->s[sc->pos + 1] != 'u')
                return fail(sc, "a high surrogate escape with no low one after it");
            sc->pos += 2;
            if (!scan_hex4(sc, &low))
                return FALSE;
            if (low < 0xdc00 || low > 0xdfff)
                return fail(sc, "a high surrogate escape with no low one after it");
        }
    }
}

static gboolean
scan_digits(Scan *sc)
{
    if (!g_ascii_isdigit(peek(sc)))
        return fail(sc, "a number that is not JSON");
    while (g_ascii_isdigit(peek(sc)))
        sc->pos++;
    return TRUE;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static gboolean
scan_number(Scan *sc)
{
    if (peek(sc) == '-')
        sc->pos++;
    if (peek(sc) == '0')
        sc->pos++;
    else if (!scan_digits(sc))
        return FALSE;
    if (peek(sc) == '.') {
        sc->pos++;
        if (!scan_digits(sc))
            return FALSE;
    }
    if (peek(sc) == 'e' || peek(sc) == 'E') {
        sc->pos++;
        if (peek(sc) == '+' || peek(sc) == '-')
            sc->pos++;
        if (!scan_digits(sc))
            return FALSE;
    }
    if (g_ascii_isalnum(peek(sc)) || peek(sc) == '.')
        return fail(sc, "a number that is not JSON");
    return TRUE;
}

static gboolean
scan_word(Scan *sc, const char *word)
{
    gsize n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return fail(sc, "a word that is not true, false or null");
    sc->pos += n;
    if (g_ascii_isalnum(peek(sc)))
        return fail(sc, "a word that is not true, false or null");
    return TRUE;
}

static gboolean scan_value(Scan *sc, guint depth);

/* Members or elements up to the closing CLOSE, from just past the opener. */
static gboolean
scan_container(Scan *sc, guint depth, guchar close)
{
    if (depth > DEPTH_MAX)
        return fail(sc, "nesting deeper than 512");
    sc->pos++;
    skip_space(sc);
    if (peek(sc) == close) {
        sc->pos++;
        return TRUE;
    }
    for (;;) {
        skip_space(sc);
        if (close == '}') {
            if (peek(sc) != '"')
                return fail(sc, "an object member without a string name");
            if (!scan_string(sc))
                return FALSE;
            skip_space(sc);
            if (peek(sc) != ':')
                return fail(sc, "an object member name without ':'");
            sc->pos++;
        }
        if (!scan_value(sc, depth))
            return FALSE;
        skip_space(sc);
        guchar c = peek(sc);
        sc->pos++;
        if (c == close)
            return TRUE;
        if (c != ',') {
            sc->pos--;
            return fail(sc, close == '}' ? "an object without ',' or '}' after a member"
                                         : "an array without ',' or ']' after an element");
        }
    }
}

static gboolean
scan_value(Scan *sc, guint depth)
{
    skip_space(sc);
    if (at_end(sc))
        return fail(sc, "a value missing");
    guchar c = sc->s[sc->pos];
    switch (c) {
    case '{': return scan_container(sc, depth + 1, '}');
    case '[': return scan_container(sc, depth + 1, ']');
    case '"': return scan_string(sc);
    case 't': return scan_word(sc, "true");
    case 'f': return scan_word(sc, "false");
    case 'n': return scan_word(sc, "null");
    default:
        if (c == '-' || g_ascii_isdigit(c))
            return scan_number(sc);
        return fail(sc, "a character that cannot start a JSON value");
    }
}

gboolean
vml_json_strict_check(const char *text, gsize len, GError **error)
{
    Scan sc = { .s = (const guchar *)text, .len = len };
    skip_space(&sc);
    gboolean ok;
    if (peek(&sc) != '{')
        ok = fail(&sc, "not a JSON object");
    else
        ok = scan_value(&sc, 0);
    if (ok) {
        skip_space(&sc);
        if (!at_end(&sc))
            ok = fail(&sc, "something after the object");
    }
    if (!ok)
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "not strict JSON: %s at byte %"
                    G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT, sc.problem, sc.pos, len);
    return ok;
}
