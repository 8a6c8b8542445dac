#include "output.h"
#include "vml-owner-text.h"

#include <stdarg.h>
#include <string.h>

/* ---- text --------------------------------------------------------------- */

char *
cli_sanitize(const char *text)
{
    return vml_text_sanitize(text);
}

/* Columns a cell takes, counting characters rather than bytes. */
static gsize
text_width(const char *text)
{
    return g_utf8_strlen(text, -1);
}

static void
pad(FILE *out, gsize n)
{
    for (gsize i = 0; i < n; i++)
        fputc(' ', out);
}

/* ---- tables ------------------------------------------------------------- */

struct _CliTable {
    guint n_columns;
    GPtrArray *cells;   /* row-major, header row first */
};

CliTable *
cli_table_new(const char *first_header, ...)
{
    CliTable *t = g_new0(CliTable, 1);
    t->cells = g_ptr_array_new_with_free_func(g_free);
    va_list ap;
    va_start(ap, first_header);
    for (const char *h = first_header; h; h = va_arg(ap, const char *)) {
        g_ptr_array_add(t->cells, cli_sanitize(h));
        t->n_columns++;
    }
    va_end(ap);
    return t;
}

void
cli_table_add_row(CliTable *t, const char *first_cell, ...)
{
    va_list ap;
    va_start(ap, first_cell);
    const char *cell = first_cell;
    for (guint i = 0; i < t->n_columns; i++) {
        g_ptr_array_add(t->cells, cli_sanitize(cell));
        if (i + 1 < t->n_columns)
            cell = va_arg(ap, const char *);
    }
    va_end(ap);
}

guint
cli_table_n_rows(CliTable *t)
{
    return t->cells->len / t->n_columns - 1;
}

void
cli_table_print(CliTable *t, FILE *out)
{
    g_autofree gsize *width = g_new0(gsize, t->n_columns);
    for (guint i = 0; i < t->cells->len; i++) {
        gsize w = text_width(t->cells->pdata[i]);
        width[i % t->n_columns] = MAX(width[i % t->n_columns], w);
    }
    for (guint i = 0; i < t->cells->len; i++) {
        guint col = i % t->n_columns;
        const char *cell = t->cells->pdata[i];
        fputs(cell, out);
        if (col + 1 == t->n_columns)
            fputc('\n', out);
        else
            pad(out, width[col] - text_width(cell) + 2);
    }
}

void
cli_table_free(CliTable *t)
{
    if (!t)
        return;
    g_ptr_array_unref(t->cells);
    g_free(t);
}

/* ---- key: value blocks -------------------------------------------------- */

struct _CliFields {
    GPtrArray *keys;
    GPtrArray *values;
};

CliFields *
cli_fields_new(void)
{
    CliFields *f = g_new0(CliFields, 1);
    f->keys = g_ptr_array_new_with_free_func(g_free);
    f->values = g_ptr_array_new_with_free_func(g_free);
    return f;
}

void
cli_fields_add(CliFields *f, const char *key, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *value = g_strdup_vprintf(format, ap);
    va_end(ap);
    g_ptr_array_add(f->keys, g_strdup_printf("%s:", key));
    g_ptr_array_add(f->values, cli_sanitize(value));
}

void
cli_fields_print(CliFields *f, FILE *out)
{
    gsize width = 0;
    for (guint i = 0; i < f->keys->len; i++)
        width = MAX(width, text_width(f->keys->pdata[i]));
    for (guint i = 0; i < f->keys->len; i++) {
        fputs(f->keys->pdata[i], out);
        pad(out, width - text_width(f->keys->pdata[i]) + 1);
        fputs(f->values->pdata[i], out);
        fputc('\n', out);
    }
}

void
cli_fields_free(CliFields *f)
{
    if (!f)
        return;
    g_ptr_array_unref(f->keys);
    g_ptr_array_unref(f->values);
    g_free(f);
}

/* ---- JSON --------------------------------------------------------------- */

void
cli_print_json(JsonObject *object)
{
    g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), object);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 2);
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    fputs(text, stdout);
    fputc('\n', stdout);
}

const char *
cli_json_string(JsonObject *o, const char *name, const char *fallback)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    if (!n || json_node_get_value_type(n) != G_TYPE_STRING)
        return fallback;
    return json_node_get_string(n);
}

gint64
cli_json_int(JsonObject *o, const char *name, gint64 fallback)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    if (!n || json_node_get_value_type(n) != G_TYPE_INT64)
        return fallback;
    return json_node_get_int(n);
}

JsonArray *
cli_json_array(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    return (n && JSON_NODE_HOLDS_ARRAY(n)) ? json_node_get_array(n) : NULL;
}

JsonObject *
cli_json_array_object(JsonArray *a, guint index)
{
    JsonNode *n = json_array_get_element(a, index);
    return (n && JSON_NODE_HOLDS_OBJECT(n)) ? json_node_get_object(n) : NULL;
}

/* ---- times -------------------------------------------------------------- */

char *
cli_format_time(gint64 unix_time)
{
    return vml_text_time(unix_time);
}

char *
cli_format_duration(gint64 seconds)
{
    if (seconds < 0)
        seconds = 0;
    gint64 d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60,
           s = seconds % 60;
    if (d)
        return g_strdup_printf("%" G_GINT64_FORMAT "d %" G_GINT64_FORMAT "h %"
                               G_GINT64_FORMAT "m %" G_GINT64_FORMAT "s", d, h, m, s);
    if (h)
        return g_strdup_printf("%" G_GINT64_FORMAT "h %" G_GINT64_FORMAT "m %"
                               G_GINT64_FORMAT "s", h, m, s);
    if (m)
        return g_strdup_printf("%" G_GINT64_FORMAT "m %" G_GINT64_FORMAT "s", m, s);
    return g_strdup_printf("%" G_GINT64_FORMAT "s", s);
}

/* VALUE / UNIT in tenths, rounded, without overflowing for any VALUE. */
static guint64
tenths(guint64 value, guint64 unit)
{
    return value / unit * 10 + (value % unit * 10 + unit / 2) / unit;
}

/* "W.T" by hand: printf's %f would follow LC_NUMERIC, a comma in some
 * locales. */
static char *
tenths_text(guint64 t, const char *unit)
{
    return g_strdup_printf("%" G_GUINT64_FORMAT ".%u %s", t / 10, (unsigned)(t % 10), unit);
}

char *
cli_format_bytes(guint64 bytes)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    if (bytes < 1024)
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
    guint u = 0;
    guint64 unit = 1024;
    /* The next unit up once this one would read 1024.0 or more. */
    while (u + 1 < G_N_ELEMENTS(units) && tenths(bytes, unit) >= 10240) {
        unit *= 1024;
        u++;
    }
    return tenths_text(tenths(bytes, unit), units[u]);
}

char *
cli_format_seconds(gint64 microseconds)
{
    return tenths_text(tenths(microseconds < 0 ? 0 : (guint64)microseconds, G_USEC_PER_SEC), "s");
}

/* ---- owners ------------------------------------------------------------- */

char *
cli_owner_describe(JsonObject *owner)
{
    return vml_owner_text(owner);
}

static gint
owner_cmp(gconstpointer a, gconstpointer b)
{
    JsonObject *x = *(JsonObject *const *)a, *y = *(JsonObject *const *)b;
    gint64 sx = cli_json_int(x, "since", 0), sy = cli_json_int(y, "since", 0);
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return g_strcmp0(cli_json_string(x, "uuid", NULL), cli_json_string(y, "uuid", NULL));
}

GPtrArray *
cli_owners_sorted(JsonArray *owners)
{
    GPtrArray *sorted = g_ptr_array_new();
    for (guint i = 0; owners && i < json_array_get_length(owners); i++) {
        JsonObject *o = cli_json_array_object(owners, i);
        if (o)
            g_ptr_array_add(sorted, o);
    }
    /* The daemon lists its own holders first, then records in directory
     * order: sort so the same state always prints the same way. */
    g_ptr_array_sort(sorted, owner_cmp);
    return sorted;
}

char *
cli_owners_describe(JsonArray *owners)
{
    return cli_owners_describe_through(owners, NULL);
}

char *
cli_owners_describe_through(JsonArray *owners, const char *asked)
{
    g_autoptr(GString) s = g_string_new(NULL);
    g_autoptr(GPtrArray) sorted = cli_owners_sorted(owners);
    for (guint i = 0; i < sorted->len; i++) {
        g_autofree char *one = cli_owner_describe(sorted->pdata[i]);
        g_string_append_printf(s, "%s%s", s->len ? "; " : "", one);
        const char *path = cli_json_string(sorted->pdata[i], "path", NULL);
        if (asked && path && g_strcmp0(path, asked) != 0) {
            g_autofree char *clean = cli_sanitize(path);
            g_string_append_printf(s, ", through %s", clean);
        }
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}
