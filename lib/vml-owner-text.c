#include "vml-owner-text.h"

char *
vml_text_sanitize(const char *text)
{
    char *copy = g_strdup(text ? text : "");
    /* Never let a name move the cursor or recolour the terminal. */
    for (char *p = copy; *p; p++) {
        if ((guchar)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    if (!g_utf8_validate(copy, -1, NULL)) {
        char *valid = g_utf8_make_valid(copy, -1);
        g_free(copy);
        copy = valid;
    }
    return copy;
}

char *
vml_text_time(gint64 unix_time)
{
    g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local(unix_time);
    if (!dt)
        return g_strdup_printf("@%" G_GINT64_FORMAT, unix_time);
    return g_date_time_format(dt, "%Y-%m-%d %H:%M:%S");
}

static char *
member(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return vml_text_sanitize(n && json_node_get_value_type(n) == G_TYPE_STRING
                             ? json_node_get_string(n) : "?");
}

static gint64
member_int(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return n && json_node_get_value_type(n) == G_TYPE_INT64 ? json_node_get_int(n) : 0;
}

char *
vml_owner_text(JsonObject *owner)
{
    if (json_object_get_boolean_member_with_default(owner, "unregistered", FALSE)) {
        g_autofree char *program = member(owner, "program");
        g_autofree char *host = member(owner, "host");
        g_autofree char *mode = member(owner, "mode");
        return g_strdup_printf("process \"%s\" (pid %" G_GINT64_FORMAT " on host %s, a lock "
                               "held %s that no VM registered with vmleased)", program,
                               member_int(owner, "pid"), host, mode);
    }
    g_autofree char *name = member(owner, "name");
    g_autofree char *uuid = member(owner, "uuid");
    g_autofree char *host = member(owner, "host");
    g_autofree char *mode = member(owner, "mode");
    g_autofree char *since = vml_text_time(member_int(owner, "since"));
    g_autofree char *parked = NULL;
    if (json_object_has_member(owner, "parked")) {
        g_autofree char *why = member(owner, "parked");
        g_autofree char *at = vml_text_time(member_int(owner, "parked_since"));
        parked = g_strdup_printf(", parked for the domain (%s) since %s", why, at);
    }
    return g_strdup_printf("VM \"%s\" (uuid %s, pid %" G_GINT64_FORMAT " on host %s, %s since "
                           "%s%s)", name, uuid, member_int(owner, "pid"), host, mode, since,
                           parked ? parked : "");
}
