/* The daemon's parser of requests (see vml-json-request.h). */
#include "vml-json-request.h"
#include "vml-error.h"

#include <errno.h>
#include <string.h>

typedef struct {
    const char *msg;
    gsize len;
    gsize i;               /* the next byte to read */
    int depth;
    const char *problem;   /* what stopped the parse */
    gsize at;              /* where, for a grammar error */
    gboolean grammar;      /* PROBLEM is a grammar error: say where */
} Parser;

static gboolean
json_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* What may come right after a number or a literal. */
static gboolean
json_delimiter(const Parser *p, gsize i)
{
    return i == p->len || json_space(p->msg[i]) || p->msg[i] == ',' || p->msg[i] == ']' ||
           p->msg[i] == '}';
}

static void
skip_space(Parser *p)
{
    while (p->i < p->len && json_space(p->msg[p->i]))
        p->i++;
}

static JsonNode *
fail(Parser *p, const char *problem)
{
    p->problem = problem;
    return NULL;
}

static JsonNode *
fail_grammar(Parser *p, const char *expected)
{
    p->problem = expected;
    p->at = p->i;
    p->grammar = TRUE;
    return NULL;
}

/* The four hex digits of a \u escape at MSG[i], as a UTF-16 code unit. */
static gboolean
hex4(const Parser *p, gsize i, gunichar *unit)
{
    *unit = 0;
    if (i + 4 > p->len)
        return FALSE;
    for (gsize k = i; k < i + 4; k++) {
        int v = g_ascii_xdigit_value(p->msg[k]);
        if (v < 0)
            return FALSE;
        *unit = (*unit << 4) | (gunichar)v;
    }
    return TRUE;
}

/* The string opening at MSG[i], decoded: JSON's escapes only, no \u0000
 * (a C string would end there), surrogates only in pairs and no raw
 * control characters. Leaves I past the closing quote. */
static char *
parse_string_slow(Parser *p)
{
    const char *msg = p->msg;
    g_autoptr(GString) out = g_string_new(NULL);
    for (gsize j = p->i + 1; j < p->len; j++) {
        gsize run = j;
        while (j < p->len && (guchar)msg[j] >= 0x20 && msg[j] != '"' && msg[j] != '\\')
            j++;
        g_string_append_len(out, msg + run, (gssize)(j - run));
        if (j == p->len)
            break;
        guchar ch = msg[j];
        if (ch == '"') {
            p->i = j + 1;
            return g_string_free(g_steal_pointer(&out), FALSE);
        }
        if (ch < 0x20) {
            fail(p, "message has a control character in a string");
            return NULL;
        }
        if (++j == p->len)
            break;
        gunichar unit, low;
        switch (msg[j]) {
        case '"': case '\\': case '/': g_string_append_c(out, msg[j]); break;
        case 'b': g_string_append_c(out, '\b'); break;
        case 'f': g_string_append_c(out, '\f'); break;
        case 'n': g_string_append_c(out, '\n'); break;
        case 'r': g_string_append_c(out, '\r'); break;
        case 't': g_string_append_c(out, '\t'); break;
        case 'u':
            if (!hex4(p, j + 1, &unit)) {
                fail(p, "message has a malformed \\u escape in a string");
                return NULL;
            }
            if (unit == 0) {
                fail(p, "message holds a NUL character (\\u0000) in a string");
                return NULL;
            }
            j += 4;
            if (unit >= 0xdc00 && unit <= 0xdfff) {
                fail(p, "message has a lone surrogate (\\uDC00-\\uDFFF) in a string");
                return NULL;
            }
            if (unit >= 0xd800 && unit <= 0xdbff) {
                if (j + 2 >= p->len || msg[j + 1] != '\\' || msg[j + 2] != 'u' ||
                    !hex4(p, j + 3, &low) || low < 0xdc00 || low > 0xdfff) {
                    fail(p, "message has a lone surrogate (\\uD800-\\uDBFF) in a string");
                    return NULL;
                }
                unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                j += 6;
            }
            g_string_append_unichar(out, unit);
            break;
        default:
            fail(p, "message has an escape in a string that JSON does not know");
            return NULL;
        }
    }
    fail(p, "message ends inside a string");
    return NULL;
}

/* The same into BUF when it has no escape and fits (json-glib copies
 * names and values again anyway), else into *HEAP. NULL on a fault. */
static const char *
parse_string_tmp(Parser *p, char *buf, gsize size, char **heap)
{
    const char *msg = p->msg;
    gsize end = p->i + 1;
    while (end < p->len && (guchar)msg[end] >= 0x20 && msg[end] != '"' && msg[end] != '\\')
        end++;
    gsize n = end - p->i - 1;
    if (end < p->len && msg[end] == '"' && n < size) {
        memcpy(buf, msg + p->i + 1, n);
        buf[n] = '\0';
        p->i = end + 1;
        return buf;
    }
    return *heap = parse_string_slow(p);
}

/* The number at MSG[i], in JSON's form only; an integer must fit 64 bits.
 * An integer is a G_TYPE_INT64 value, anything else a double. */
static JsonNode *
parse_number(Parser *p)
{
    static const char *const malformed = "message has a number that is not JSON";
    const char *msg = p->msg;
    gsize j = p->i;
    gboolean integer = TRUE;

    if (msg[j] == '-')
        j++;
    if (j < p->len && msg[j] == '0') {
        j++;
    } else if (j < p->len && g_ascii_isdigit(msg[j])) {
        while (j < p->len && g_ascii_isdigit(msg[j]))
            j++;
    } else {
        return fail(p, malformed);
    }
    if (j < p->len && msg[j] == '.') {
        integer = FALSE;
        if (++j == p->len || !g_ascii_isdigit(msg[j]))
            return fail(p, malformed);
        while (j < p->len && g_ascii_isdigit(msg[j]))
            j++;
    }
    if (j < p->len && (msg[j] == 'e' || msg[j] == 'E')) {
        integer = FALSE;
        if (++j < p->len && (msg[j] == '+' || msg[j] == '-'))
            j++;
        if (j == p->len || !g_ascii_isdigit(msg[j]))
            return fail(p, malformed);
        while (j < p->len && g_ascii_isdigit(msg[j]))
            j++;
    }
    if (!json_delimiter(p, j))
        return fail(p, malformed);
    /* No leading zeros: anything longer than "-9223372036854775808" is
     * out of range already; a double's text is bounded the same way. */
    char text[64];
    gsize n = j - p->i;
    if (n >= (integer ? 21 : sizeof(text)))
        return fail(p, integer ? "message holds an integer beyond 64 bits" : malformed);
    memcpy(text, msg + p->i, n);
    text[n] = '\0';
    p->i = j;
    JsonNode *node = json_node_new(JSON_NODE_VALUE);
    errno = 0;
    if (integer) {
        gint64 v = g_ascii_strtoll(text, NULL, 10);
        if (errno == ERANGE) {
            json_node_unref(node);
            return fail(p, "message holds an integer beyond 64 bits");
        }
        json_node_set_int(node, v);
    } else {
        json_node_set_double(node, g_ascii_strtod(text, NULL));
    }
    return node;
}

static JsonNode *parse_value(Parser *p);

/* The members or elements of the object or array opening at MSG[i]. */
static JsonNode *
parse_container(Parser *p, gboolean object)
{
    if (++p->depth > VML_JSON_REQUEST_DEPTH_MAX)
        return fail(p, "message is nested too deeply");
    char close = object ? '}' : ']';
    JsonObject *o = object ? json_object_new() : NULL;
    JsonArray *a = object ? NULL : json_array_new();
    JsonNode *node = json_node_new(object ? JSON_NODE_OBJECT : JSON_NODE_ARRAY);
    if (object)
        json_node_take_object(node, o);
    else
        json_node_take_array(node, a);
    p->i++;
    skip_space(p);
    gboolean first = TRUE;
    for (;;) {
        if (p->i == p->len) {
            json_node_unref(node);
            return fail(p, "message is not a whole JSON object");
        }
        if (p->msg[p->i] == close && first) {
            p->i++;
            break;
        }
        char name_buf[128];
        g_autofree char *name_heap = NULL;
        const char *name = NULL;
        if (object) {
            if (p->msg[p->i] != '"') {
                json_node_unref(node);
                return fail_grammar(p, "a member name in double quotes");
            }
            if (!(name = parse_string_tmp(p, name_buf, sizeof(name_buf), &name_heap))) {
                json_node_unref(node);
                return NULL;
            }
            skip_space(p);
            if (p->i == p->len || p->msg[p->i] != ':') {
                json_node_unref(node);
                return p->i == p->len ? fail(p, "message is not a whole JSON object")
                                      : fail_grammar(p, "':' after a member name");
            }
            p->i++;
            skip_space(p);
        }
        JsonNode *value = parse_value(p);
        if (!value) {
            json_node_unref(node);
            return NULL;
        }
        /* A name given twice: the last value counts, as json-glib had it. */
        if (object)
            json_object_set_member(o, name, value);
        else
            json_array_add_element(a, value);
        first = FALSE;
        skip_space(p);
        if (p->i < p->len && p->msg[p->i] == ',') {
            p->i++;
            skip_space(p);
            continue;
        }
        if (p->i < p->len && p->msg[p->i] == close) {
            p->i++;
            break;
        }
        json_node_unref(node);
        return p->i == p->len ? fail(p, "message is not a whole JSON object")
                              : fail_grammar(p, object ? "',' or '}'" : "',' or ']'");
    }
    p->depth--;
    return node;
}

static JsonNode *
parse_value(Parser *p)
{
    if (p->i == p->len)
        return fail(p, "message is not a whole JSON object");
    char ch = p->msg[p->i];
    if (ch == '{' || ch == '[')
        return parse_container(p, ch == '{');
    if (ch == '"') {
        char buf[512];
        g_autofree char *heap = NULL;
        const char *s = parse_string_tmp(p, buf, sizeof(buf), &heap);
        if (!s)
            return NULL;
        JsonNode *node = json_node_new(JSON_NODE_VALUE);
        json_node_set_string(node, s);
        return node;
    }
    if (ch == '-' || g_ascii_isdigit(ch))
        return parse_number(p);
    if (g_ascii_isalpha(ch)) {
        static const char *const words[] = { "true", "false", "null" };
        for (guint w = 0; w < G_N_ELEMENTS(words); w++) {
            gsize n = strlen(words[w]);
            if (p->len - p->i >= n && memcmp(p->msg + p->i, words[w], n) == 0 &&
                json_delimiter(p, p->i + n)) {
                p->i += n;
                if (w == 2)
                    return json_node_new(JSON_NODE_NULL);
                JsonNode *node = json_node_new(JSON_NODE_VALUE);
                json_node_set_boolean(node, w == 0);
                return node;
            }
        }
        return fail(p, "message has a word outside strings that is not JSON");
    }
    if (ch == '\'')
        return fail(p, "message has a 'single-quoted' string, which is not JSON");
    if (ch == '/')
        return fail(p, "message has a comment, which is not JSON");
    if (ch == ':' || ch == ',' || ch == '}' || ch == ']')
        return fail_grammar(p, "a value");
    return fail(p, "message has a character outside strings that is not JSON");
}

static JsonObject *
parse_object(const char *msg, gsize len, gboolean seal, GError **error)
{
    Parser p = { .msg = msg, .len = len };
    JsonNode *root = NULL;

    if (!g_utf8_validate(msg, (gssize)len, NULL)) {
        fail(&p, "message is not valid UTF-8");
    } else {
        skip_space(&p);
        if (p.i == len)
            fail(&p, "message is not a whole JSON object");
        else if (msg[p.i] != '{')
            fail(&p, "message is not a JSON object");
        else if ((root = parse_container(&p, TRUE))) {
            skip_space(&p);
            if (p.i < len) {
                g_clear_pointer(&root, json_node_unref);
                fail(&p, "message has data after its JSON object");
            }
        }
    }
    if (!root) {
        if (p.grammar)
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_MESSAGE,
                        "message is not valid JSON: expected %s at byte %zu", p.problem, p.at);
        else
            g_set_error_literal(error, VML_ERROR, VML_ERROR_INVALID_MESSAGE, p.problem);
        return NULL;
    }
    if (seal)
        json_node_seal(root);
    JsonObject *o = json_object_ref(json_node_get_object(root));
    json_node_unref(root);
    return o;
}

JsonObject *
vml_json_request_parse(const char *msg, gsize len, GError **error)
{
    /* Sealed, as json-glib's immutable parser left it: handlers only read. */
    return parse_object(msg, len, TRUE, error);
}

JsonObject *
vml_json_parse_object(const char *text, gsize len, GError **error)
{
    return parse_object(text, len, FALSE, error);
}
