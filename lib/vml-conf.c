/* Parser for config files in libvirt's conf syntax (see vml-conf.h).
 *
 * The file may be written by anyone who can edit it, so it is treated as
 * hostile: its size is bounded, every byte is checked, and any error names
 * origin:line:column so the admin can find it. Columns count characters,
 * not bytes, because that is what editors show.
 *
 * Grammar (one statement per line):
 *   statement := key blank* '=' blank* value blank* comment? (newline | EOF)
 *   value     := string | integer | '[' (string (',' string)* ','?)? ']'
 * Inside a list, newlines and comments may appear between the tokens.
 */
#include "vml-conf.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define VML_CONF_MAX_SIZE (1024 * 1024)

typedef enum {
    VALUE_STRING,
    VALUE_INT,
    VALUE_LIST,
} ValueType;

typedef struct {
    char *key;
    guint line;
    ValueType type;
    union {
        char *s;
        gint64 i;
        GStrv list;
    } v;
} Entry;

struct _VmlConf {
    char *origin;
    GPtrArray *entries;   /* Entry *, in file order; owns them */
    GHashTable *by_key;   /* key -> its Entry (a key is set once) */
};

typedef struct {
    const char *origin;
    const char *cur;
    const char *end;
    const char *line_start;
    guint line;
} Parser;

static void
entry_free(gpointer data)
{
    Entry *e = data;

    g_free(e->key);
    if (e->type == VALUE_STRING)
        g_free(e->v.s);
    else if (e->type == VALUE_LIST)
        g_strfreev(e->v.list);
    g_free(e);
}

/* Characters, not bytes: UTF-8 continuation bytes do not start a column. */
static guint
column_of(const Parser *p, const char *pos)
{
    guint col = 1;

    for (const char *c = p->line_start; c < pos; c++) {
        if (((guchar)*c & 0xC0) != 0x80)
            col++;
    }
    return col;
}

static void parse_error(const Parser *p, const char *pos, GError **error,
                        const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static void
parse_error(const Parser *p, const char *pos, GError **error, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s:%u:%u: %s",
                p->origin, p->line, column_of(p, pos), msg);
}

/* What sits at pos, for "found ..." in messages; never echoes raw bytes. */
static const char *
describe(const Parser *p, const char *pos, char buf[16])
{
    if (pos >= p->end)
        return "end of file";
    if (*pos == '\n')
        return "end of line";
    if (*pos == '\0')
        return "a NUL byte";
    if (g_ascii_isprint(*pos))
        g_snprintf(buf, 16, "'%c'", *pos);
    else
        g_snprintf(buf, 16, "byte 0x%02x", (guchar)*pos);
    return buf;
}

static void
skip_blanks(Parser *p)
{
    /* '\r' counts as a blank so CRLF files parse. */
    while (p->cur < p->end && (*p->cur == ' ' || *p->cur == '\t' || *p->cur == '\r'))
        p->cur++;
}

/* Skips a comment up to (not including) the newline. Comments may hold any
 * bytes except NUL, which would silently truncate the file for C readers. */
static gboolean
skip_comment(Parser *p, GError **error)
{
    if (p->cur >= p->end || *p->cur != '#')
        return TRUE;
    while (p->cur < p->end && *p->cur != '\n') {
        if (*p->cur == '\0') {
            parse_error(p, p->cur, error, "NUL byte in comment");
            return FALSE;
        }
        p->cur++;
    }
    return TRUE;
}

static void
newline(Parser *p)
{
    p->cur++;
    p->line++;
    p->line_start = p->cur;
}

/* Blanks, comments and newlines: what may separate tokens inside a list. */
static gboolean
skip_space(Parser *p, GError **error)
{
    for (;;) {
        skip_blanks(p);
        if (!skip_comment(p, error))
            return FALSE;
        if (p->cur < p->end && *p->cur == '\n')
            newline(p);
        else
            return TRUE;
    }
}

/* "..." with escapes \" and \\, or '...' taken literally (as libvirt does).
 * Strings end on the line they start on. */
static char *
parse_string(Parser *p, GError **error)
{
    const char quote = *p->cur;
    const char *open = p->cur;
    g_autoptr(GString) buf = g_string_new(NULL);

    p->cur++;
    for (;;) {
        if (p->cur >= p->end || *p->cur == '\n' || *p->cur == '\r') {
            parse_error(p, p->cur, error,
                        "expected %c to close the string opened at column %u",
                        quote, column_of(p, open));
            return NULL;
        }
        if (*p->cur == quote) {
            p->cur++;
            return g_string_free(g_steal_pointer(&buf), FALSE);
        }
        if (*p->cur == '\0') {
            parse_error(p, p->cur, error, "NUL byte in string");
            return NULL;
        }
        if (quote == '"' && *p->cur == '\\') {
            if (p->cur + 1 < p->end && (p->cur[1] == '"' || p->cur[1] == '\\')) {
                g_string_append_c(buf, p->cur[1]);
                p->cur += 2;
                continue;
            }
            parse_error(p, p->cur, error,
                        "invalid escape sequence: expected \\\" or \\\\");
            return NULL;
        }
        if ((guchar)*p->cur < 0x80) {
            g_string_append_c(buf, *p->cur);
            p->cur++;
            continue;
        }
        /* One multi-byte character; g_utf8_validate_len rejects overlong
         * forms, surrogates and truncated sequences. */
        gsize clen = (gsize)g_utf8_skip[(guchar)*p->cur];
        if (clen > (gsize)(p->end - p->cur) || !g_utf8_validate_len(p->cur, clen, NULL)) {
            parse_error(p, p->cur, error, "invalid UTF-8 in string");
            return NULL;
        }
        g_string_append_len(buf, p->cur, (gssize)clen);
        p->cur += clen;
    }
}

static gboolean
parse_int(Parser *p, gint64 *out, GError **error)
{
    const char *start = p->cur;
    g_autofree char *token = NULL;
    char found[16];

    if (*p->cur == '-')
        p->cur++;
    const char *digits = p->cur;
    while (p->cur < p->end && g_ascii_isdigit(*p->cur))
        p->cur++;
    if (p->cur == digits) {
        parse_error(p, p->cur, error, "expected digits after '-', found %s",
                    describe(p, p->cur, found));
        return FALSE;
    }
    token = g_strndup(start, (gsize)(p->cur - start));
    if (!g_ascii_string_to_signed(token, 10, G_MININT64, G_MAXINT64, out, NULL)) {
        /* The token is not echoed: it may be a megabyte of digits. */
        parse_error(p, start, error, "integer does not fit in 64 bits");
        return FALSE;
    }
    return TRUE;
}

static GStrv
parse_list(Parser *p, GError **error)
{
    const guint open_line = p->line;
    const guint open_col = column_of(p, p->cur);
    g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(g_free);
    char found[16];

    p->cur++;
    for (;;) {
        if (!skip_space(p, error))
            return NULL;
        if (p->cur >= p->end)
            break;
        if (*p->cur == ']') {
            p->cur++;
            g_ptr_array_add(items, NULL);
            return (GStrv)g_ptr_array_free(g_steal_pointer(&items), FALSE);
        }
        if (*p->cur != '"' && *p->cur != '\'') {
            parse_error(p, p->cur, error, "expected a string or ']' in list, found %s",
                        describe(p, p->cur, found));
            return NULL;
        }
        char *s = parse_string(p, error);
        if (!s)
            return NULL;
        g_ptr_array_add(items, s);
        if (!skip_space(p, error))
            return NULL;
        if (p->cur >= p->end)
            break;
        if (*p->cur == ',') {
            p->cur++;
        } else if (*p->cur != ']') {
            parse_error(p, p->cur, error, "expected ',' or ']' in list, found %s",
                        describe(p, p->cur, found));
            return NULL;
        }
    }
    parse_error(p, p->cur, error, "expected ']' to close the list opened at %u:%u",
                open_line, open_col);
    return NULL;
}

static gboolean
parse_statement(Parser *p, VmlConf *conf, GError **error)
{
    g_autoptr(GString) key = g_string_new(NULL);
    Entry *e;
    char found[16];

    if (!g_ascii_isalpha(*p->cur) && *p->cur != '_') {
        parse_error(p, p->cur, error, "expected a setting name, found %s",
                    describe(p, p->cur, found));
        return FALSE;
    }
    while (p->cur < p->end &&
           (g_ascii_isalnum(*p->cur) || *p->cur == '_' || *p->cur == '.')) {
        g_string_append_c(key, *p->cur);
        p->cur++;
    }
    skip_blanks(p);
    if (p->cur >= p->end || *p->cur != '=') {
        parse_error(p, p->cur, error, "expected '=' after '%s', found %s",
                    key->str, describe(p, p->cur, found));
        return FALSE;
    }
    p->cur++;
    skip_blanks(p);

    e = g_new0(Entry, 1);
    e->line = p->line;
    if (p->cur < p->end && (*p->cur == '"' || *p->cur == '\'')) {
        e->type = VALUE_STRING;
        e->v.s = parse_string(p, error);
        if (!e->v.s)
            goto fail;
    } else if (p->cur < p->end && (*p->cur == '-' || g_ascii_isdigit(*p->cur))) {
        e->type = VALUE_INT;
        if (!parse_int(p, &e->v.i, error))
            goto fail;
    } else if (p->cur < p->end && *p->cur == '[') {
        e->type = VALUE_LIST;
        e->v.list = parse_list(p, error);
        if (!e->v.list)
            goto fail;
    } else {
        parse_error(p, p->cur, error, "expected a value after '='");
        goto fail;
    }

    /* Only a comment may follow the value on its line. */
    skip_blanks(p);
    if (!skip_comment(p, error))
        goto fail;
    if (p->cur < p->end && *p->cur != '\n') {
        parse_error(p, p->cur, error,
                    "expected a comment or end of line after the value of '%s', found %s",
                    key->str, describe(p, p->cur, found));
        goto fail;
    }

    const Entry *first = g_hash_table_lookup(conf->by_key, key->str);
    if (first) {
        /* Which one counts would be a guess (libvirt's own reader and
         * ours took different ones): say so instead. */
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s:%u: '%s' is set twice (first on line %u): set it once", p->origin,
                    e->line, key->str, first->line);
        goto fail;
    }
    e->key = g_string_free(g_steal_pointer(&key), FALSE);
    g_ptr_array_add(conf->entries, e);
    g_hash_table_insert(conf->by_key, e->key, e);
    return TRUE;

fail:
    entry_free(e);
    return FALSE;
}

VmlConf *
vml_conf_new_from_data(const char *data, gsize len, const char *origin, GError **error)
{
    g_autoptr(VmlConf) conf = NULL;
    Parser p;

    g_return_val_if_fail(data != NULL || len == 0, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    if (!origin)
        origin = "<config>";
    if (len > VML_CONF_MAX_SIZE) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s: larger than the limit of %d bytes", origin, VML_CONF_MAX_SIZE);
        return NULL;
    }

    conf = g_new0(VmlConf, 1);
    conf->origin = g_strdup(origin);
    conf->entries = g_ptr_array_new_with_free_func(entry_free);
    conf->by_key = g_hash_table_new(g_str_hash, g_str_equal);

    p.origin = conf->origin;
    p.cur = p.line_start = data ? data : "";
    p.end = p.cur + len;
    p.line = 1;

    for (;;) {
        skip_blanks(&p);
        if (!skip_comment(&p, error))
            return NULL;
        if (p.cur >= p.end)
            break;
        if (*p.cur == '\n')
            newline(&p);
        else if (!parse_statement(&p, conf, error))
            return NULL;
    }
    return g_steal_pointer(&conf);
}

/* Reads at most one byte past the limit, so /dev/zero or a huge file cannot
 * exhaust memory. */
gboolean
vml_conf_read_file(const char *path, char **out, gsize *out_len, GError **error)
{
    g_autofree char *buf = NULL;
    gsize len = 0;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        saved = errno;
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s: %s", path, g_strerror(saved));
        return FALSE;
    }
    buf = g_malloc(VML_CONF_MAX_SIZE + 1);
    while (len <= VML_CONF_MAX_SIZE) {
        ssize_t n = read(fd, buf + len, VML_CONF_MAX_SIZE + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            saved = errno;
            close(fd);
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s: %s", path, g_strerror(saved));
            return FALSE;
        }
        if (n == 0)
            break;
        len += (gsize)n;
    }
    close(fd);
    if (len > VML_CONF_MAX_SIZE) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s: larger than the limit of %d bytes", path, VML_CONF_MAX_SIZE);
        return FALSE;
    }
    *out = g_steal_pointer(&buf);
    *out_len = len;
    return TRUE;
}

VmlConf *
vml_conf_new_from_file(const char *path, GError **error)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    g_return_val_if_fail(path != NULL, NULL);

    if (!vml_conf_read_file(path, &data, &len, error))
        return NULL;
    return vml_conf_new_from_data(data, len, path, error);
}

void
vml_conf_free(VmlConf *conf)
{
    if (!conf)
        return;
    /* The table borrows keys from the entries: drop it first. */
    g_hash_table_destroy(conf->by_key);
    g_ptr_array_free(conf->entries, TRUE);
    g_free(conf->origin);
    g_free(conf);
}

/* The entry for key if present with the wanted type; NULL otherwise, with
 * error set only when it is present with another type. */
static Entry *
lookup(VmlConf *conf, const char *key, ValueType type, const char *what, GError **error)
{
    Entry *e;

    g_return_val_if_fail(conf != NULL, NULL);
    g_return_val_if_fail(key != NULL, NULL);

    e = g_hash_table_lookup(conf->by_key, key);
    if (e && e->type != type) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s:%u: '%s' must be %s",
                    conf->origin, e->line, key, what);
        return NULL;
    }
    return e;
}

gboolean
vml_conf_get_string(VmlConf *conf, const char *key, char **out, GError **error)
{
    Entry *e = lookup(conf, key, VALUE_STRING, "a string", error);

    if (!e)
        return FALSE;
    *out = g_strdup(e->v.s);
    return TRUE;
}

gboolean
vml_conf_get_int(VmlConf *conf, const char *key, gint64 *out, GError **error)
{
    Entry *e = lookup(conf, key, VALUE_INT, "an integer", error);

    if (!e)
        return FALSE;
    *out = e->v.i;
    return TRUE;
}

gboolean
vml_conf_get_bool(VmlConf *conf, const char *key, gboolean *out, GError **error)
{
    Entry *e;

    g_return_val_if_fail(conf != NULL, FALSE);
    g_return_val_if_fail(key != NULL, FALSE);

    e = g_hash_table_lookup(conf->by_key, key);
    if (!e)
        return FALSE;
    /* Like libvirt: booleans are the integers 0 and 1, nothing else. */
    if (e->type != VALUE_INT || (e->v.i != 0 && e->v.i != 1)) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s:%u: '%s' must be 0 or 1",
                    conf->origin, e->line, key);
        return FALSE;
    }
    *out = e->v.i == 1;
    return TRUE;
}

gboolean
vml_conf_get_string_list(VmlConf *conf, const char *key, GStrv *out, GError **error)
{
    Entry *e = lookup(conf, key, VALUE_LIST, "a list of strings", error);

    if (!e)
        return FALSE;
    *out = g_strdupv(e->v.list);
    return TRUE;
}

gboolean
vml_conf_check_keys(VmlConf *conf, const char *const *known, GError **error)
{
    g_return_val_if_fail(conf != NULL, FALSE);
    g_return_val_if_fail(known != NULL, FALSE);

    for (guint i = 0; i < conf->entries->len; i++) {
        Entry *e = g_ptr_array_index(conf->entries, i);
        if (!g_strv_contains(known, e->key)) {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "%s:%u: unknown setting '%s'",
                        conf->origin, e->line, e->key);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
vml_conf_update_string(VmlConf *conf, const char *key, char **field, GError **error)
{
    char *value = NULL;
    g_autoptr(GError) local = NULL;

    if (vml_conf_get_string(conf, key, &value, &local)) {
        g_free(*field);
        *field = value;
        return TRUE;
    }
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    return TRUE;
}

gboolean
vml_conf_update_bool(VmlConf *conf, const char *key, gboolean *field, GError **error)
{
    g_autoptr(GError) local = NULL;

    if (!vml_conf_get_bool(conf, key, field, &local) && local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    return TRUE;
}

gboolean
vml_conf_update_uint(VmlConf *conf, const char *key, guint *field, guint min, guint max,
                     gboolean *set, GError **error)
{
    gint64 v;
    g_autoptr(GError) local = NULL;

    if (set)
        *set = FALSE;
    if (!vml_conf_get_int(conf, key, &v, &local)) {
        if (local) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
        return TRUE;
    }
    if (v < (gint64)min || v > (gint64)max) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s must be between %u and %u, not %" G_GINT64_FORMAT, key, min, max, v);
        vml_conf_prefix_key_error(conf, key, error);
        return FALSE;
    }
    *field = (guint)v;
    if (set)
        *set = TRUE;
    return TRUE;
}

gboolean
vml_conf_update_abs_path(VmlConf *conf, const char *key, char **field, GError **error)
{
    if (!vml_conf_update_string(conf, key, field, error))
        return FALSE;
    if (*field && !g_path_is_absolute(*field)) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s must be an absolute path, not '%s'", key, *field);
        vml_conf_prefix_key_error(conf, key, error);
        return FALSE;
    }
    return TRUE;
}

gboolean
vml_conf_same_value(VmlConf *a, VmlConf *b, const char *key)
{
    const Entry *x = a ? g_hash_table_lookup(a->by_key, key) : NULL;
    const Entry *y = b ? g_hash_table_lookup(b->by_key, key) : NULL;
    if (!x || !y)
        return !x && !y;
    if (x->type != y->type)
        return FALSE;
    switch (x->type) {
    case VALUE_STRING:
        return g_str_equal(x->v.s, y->v.s);
    case VALUE_INT:
        return x->v.i == y->v.i;
    case VALUE_LIST:
        return g_strv_equal((const char *const *)x->v.list, (const char *const *)y->v.list);
    }
    return FALSE;
}

guint
vml_conf_line(VmlConf *conf, const char *key)
{
    const Entry *e = conf ? g_hash_table_lookup(conf->by_key, key) : NULL;
    return e ? e->line : 0;
}

void
vml_conf_prefix_key_error(VmlConf *conf, const char *key, GError **error)
{
    if (!conf || !error || !*error || g_str_has_prefix((*error)->message, conf->origin))
        return;
    const Entry *e = key ? g_hash_table_lookup(conf->by_key, key) : NULL;
    if (e)
        g_prefix_error(error, "%s:%u: ", conf->origin, e->line);
    else
        g_prefix_error(error, "%s: ", conf->origin);
}
