#include "lease-state.h"
#include "vml-error.h"

#include <errno.h>

#define STATE_TAG "vmlease/1"

char *
vml_lease_state_encode(JsonArray *leases)
{
    GString *s = g_string_new(STATE_TAG);
    for (guint i = 0; leases && i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        if (!l || g_strcmp0(json_object_get_string_member_with_default(l, "mode", ""),
                            "exclusive") != 0)
            continue;
        g_autofree char *key = g_uri_escape_string(
            json_object_get_string_member_with_default(l, "resource", ""), NULL, FALSE);
        g_string_append_printf(s, ";%s=%" G_GINT64_FORMAT, key,
                               json_object_get_int_member_with_default(l, "generation", 0));
    }
    return g_string_free(s, FALSE);
}

GHashTable *
vml_lease_state_decode(const char *state, GError **error)
{
    g_autoptr(GHashTable) gens = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_auto(GStrv) parts = g_strsplit(state, ";", -1);

    if (!parts[0] || g_strcmp0(parts[0], STATE_TAG) != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "lock state is not vmlease's (expected \"%s...\")", STATE_TAG);
        return NULL;
    }
    for (guint i = 1; parts[i]; i++) {
        char *eq = strrchr(parts[i], '=');
        char *end = NULL;
        if (!eq || eq == parts[i])
            goto bad;
        *eq = '\0';
        errno = 0;
        guint64 gen = g_ascii_strtoull(eq + 1, &end, 10);
        char *key = g_uri_unescape_string(parts[i], NULL);
        if (errno || !end || *end || end == eq + 1 || !key || !*key) {
            g_free(key);
            goto bad;
        }
        guint64 *box = g_new(guint64, 1);
        *box = gen;
        g_hash_table_replace(gens, key, box);
    }
    return g_steal_pointer(&gens);
bad:
    g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                "malformed lock state entry in \"%s\"", state);
    return NULL;
}
