#include "vml-image-owner.h"
#include "vml-owner-text.h"
#include "vml-be.h"
#include "vml-error.h"

#include <string.h>

void
vml_image_owner_free(VmlImageOwner *o)
{
    if (!o)
        return;
    g_free(o->uuid);
    g_free(o->machine_id);
    g_free(o->boot_id);
    g_free(o->hostname);
    g_free(o->program);
    g_free(o->name);
    g_free(o);
}

static void
put32(GByteArray *b, guint32 v)
{
    guint8 be[4];
    vml_put_be32(be, v);
    g_byte_array_append(b, be, 4);
}

static void
put64(GByteArray *b, guint64 v)
{
    guint8 be[8];
    vml_put_be64(be, v);
    g_byte_array_append(b, be, 8);
}

/* 32 hex digits, dashes anywhere ignored (machine-id and uuid forms). */
static void
put_id(GByteArray *b, const char *text)
{
    guint8 id[16] = { 0 };
    guint n = 0;
    gboolean ok = text != NULL;

    for (const char *p = text; ok && *p; p++) {
        if (*p == '-')
            continue;
        int v = g_ascii_xdigit_value(*p);
        if (v < 0 || n >= 32) {
            ok = FALSE;
            break;
        }
        id[n / 2] |= (guint8)(n % 2 ? v : v << 4);
        n++;
    }
    if (!ok || n != 32)
        memset(id, 0, sizeof(id));
    g_byte_array_append(b, id, sizeof(id));
}

static void
put_string(GByteArray *b, const char *s)
{
    gsize n = s ? strlen(s) : 0;
    if (n > VML_IMAGE_OWNER_STRING_MAX) {
        /* Cut at a character boundary. */
        const char *end = g_utf8_find_prev_char(s, s + VML_IMAGE_OWNER_STRING_MAX + 1);
        n = end ? (gsize)(end - s) : VML_IMAGE_OWNER_STRING_MAX;
    }
    guint8 len = (guint8)n;
    g_byte_array_append(b, &len, 1);
    if (n)
        g_byte_array_append(b, (const guint8 *)s, (guint)n);
}

GBytes *
vml_image_owner_encode(const VmlImageOwner *o)
{
    GByteArray *b = g_byte_array_sized_new(VML_IMAGE_OWNER_FIXED + 128);
    put32(b, VML_IMAGE_OWNER_VERSION);
    put32(b, o->pid);
    put64(b, o->start_time);
    put64(b, (guint64)o->time_set);
    put64(b, o->generation);
    put_id(b, o->uuid);
    put_id(b, o->machine_id);
    put_id(b, o->boot_id);
    put_string(b, o->hostname);
    put_string(b, o->program);
    put_string(b, o->name);
    return g_byte_array_free_to_bytes(b);
}

static gboolean
all_zero(const guint8 *p, gsize n)
{
    for (gsize i = 0; i < n; i++) {
        if (p[i])
            return FALSE;
    }
    return TRUE;
}

static char *
id_text(const guint8 *p, gboolean dashes)
{
    if (all_zero(p, 16))
        return g_strdup("");
    /* By hand, not printf: a release's unmark decodes three of these. */
    static const char hex[] = "0123456789abcdef";
    char *s = g_malloc(37), *w = s;
    for (int i = 0; i < 16; i++) {
        if (dashes && (i == 4 || i == 6 || i == 8 || i == 10))
            *w++ = '-';
        *w++ = hex[p[i] >> 4];
        *w++ = hex[p[i] & 15];
    }
    *w = '\0';
    return s;
}

static gboolean
get_string(const guint8 *data, gsize len, gsize *off, const char *what,
           char **out, GError **error)
{
    if (*off >= len) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "vmlease owner extension ends before its %s", what);
        return FALSE;
    }
    gsize n = data[*off];
    const char *s = (const char *)data + *off + 1;
    if (n > len - *off - 1) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "vmlease owner extension: %s of %zu bytes runs past its end", what, n);
        return FALSE;
    }
    if (memchr(s, '\0', n) || !g_utf8_validate(s, (gssize)n, NULL)) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "vmlease owner extension: %s holds a NUL byte or invalid UTF-8", what);
        return FALSE;
    }
    *out = g_strndup(s, n);
    *off += 1 + n;
    return TRUE;
}

VmlImageOwner *
vml_image_owner_decode(GBytes *bytes, GError **error)
{
    gsize len;
    const guint8 *data = g_bytes_get_data(bytes, &len);

    if (len < VML_IMAGE_OWNER_FIXED) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "vmlease owner extension of %zu bytes, shorter than its %d fixed bytes",
                    len, VML_IMAGE_OWNER_FIXED);
        return NULL;
    }
    g_autoptr(VmlImageOwner) o = g_new0(VmlImageOwner, 1);
    o->version = vml_be32(data);
    if (o->version < VML_IMAGE_OWNER_VERSION) {
        g_set_error(error, VML_ERROR, VML_ERROR_BAD_IMAGE,
                    "vmlease owner extension has layout version %u", o->version);
        return NULL;
    }
    o->pid = vml_be32(data + 4);
    o->start_time = vml_be64(data + 8);
    o->time_set = (gint64)vml_be64(data + 16);
    o->generation = vml_be64(data + 24);
    o->uuid = id_text(data + 32, TRUE);
    o->machine_id = id_text(data + 48, FALSE);
    o->boot_id = id_text(data + 64, TRUE);
    gsize off = VML_IMAGE_OWNER_FIXED;
    if (!get_string(data, len, &off, "hostname", &o->hostname, error) ||
        !get_string(data, len, &off, "program", &o->program, error) ||
        !get_string(data, len, &off, "domain name", &o->name, error))
        return NULL;
    return g_steal_pointer(&o);
}

char *
vml_image_owner_describe(const VmlImageOwner *o)
{
    /* As vml_owner_text() says an owner, and as safe for a terminal:
     * every field comes from the image's header. */
    g_autofree char *when = vml_text_time(o->time_set);
    g_autofree char *name = vml_text_sanitize(*o->name ? o->name : "?");
    g_autofree char *uuid = vml_text_sanitize(*o->uuid ? o->uuid : "none");
    g_autofree char *program = vml_text_sanitize(o->program);
    g_autofree char *host = vml_text_sanitize(*o->hostname ? o->hostname : "?");
    g_autofree char *ran = *program ? g_strdup_printf(" (%s)", program) : g_strdup("");
    if (*o->name || *o->uuid)
        return g_strdup_printf("VM \"%s\" (uuid %s, pid %u%s on host %s, marked since %s)",
                               name, uuid, o->pid, ran, host, when);
    return g_strdup_printf("process \"%s\" (pid %u on host %s, marked since %s)",
                           *program ? program : "?", o->pid, host, when);
}

JsonObject *
vml_image_owner_to_json(const VmlImageOwner *o)
{
    JsonObject *j = json_object_new();
    json_object_set_int_member(j, "pid", o->pid);
    json_object_set_int_member(j, "start_time", (gint64)o->start_time);
    json_object_set_int_member(j, "time_set", o->time_set);
    json_object_set_int_member(j, "generation", (gint64)o->generation);
    json_object_set_string_member(j, "uuid", o->uuid);
    json_object_set_string_member(j, "machine_id", o->machine_id);
    json_object_set_string_member(j, "boot_id", o->boot_id);
    json_object_set_string_member(j, "host", o->hostname);
    json_object_set_string_member(j, "program", o->program);
    json_object_set_string_member(j, "name", o->name);
    return j;
}
