#include "owner-record.h"
#include "vml-json-request.h"
#include "vml-json-write.h"
#include "vml-image-identity.h"
#include "vml-error.h"
#include "vml-proc.h"

const char *
vml_mode_name(VmlMode mode)
{
    return mode == VML_MODE_EXCLUSIVE ? "exclusive" : "shared";
}

gboolean
vml_mode_parse(const char *name, VmlMode *mode)
{
    if (g_strcmp0(name, "exclusive") == 0)
        *mode = VML_MODE_EXCLUSIVE;
    else if (g_strcmp0(name, "shared") == 0)
        *mode = VML_MODE_SHARED;
    else
        return FALSE;
    return TRUE;
}

VmlOwner *
vml_owner_copy(const VmlOwner *o)
{
    VmlOwner *c = g_new(VmlOwner, 1);
    *c = *o;
    c->resource = g_strdup(o->resource);
    c->path = g_strdup(o->path);
    c->program = g_strdup(o->program);
    c->host = g_strdup(o->host);
    c->machine_id = g_strdup(o->machine_id);
    c->boot_id = g_strdup(o->boot_id);
    c->uuid = g_strdup(o->uuid);
    c->name = g_strdup(o->name);
    c->parked = g_strdup(o->parked);
    return c;
}

void
vml_owner_free(VmlOwner *o)
{
    if (!o)
        return;
    g_free(o->resource);
    g_free(o->path);
    g_free(o->host);
    g_free(o->machine_id);
    g_free(o->boot_id);
    g_free(o->uuid);
    g_free(o->name);
    g_free(o->parked);
    g_free(o->program);
    g_free(o);
}

void
vml_owner_write_json(GString *out, const VmlOwner *o, const char *host_state)
{
    g_string_append_c(out, '{');
    vml_json_write_strict_member_string(out, TRUE, "host", o->host);
    if (o->path)
        vml_json_write_strict_member_string(out, FALSE, "path", o->path);
    vml_json_write_strict_member_string(out, FALSE, "uuid", o->uuid);
    vml_json_write_strict_member_string(out, FALSE, "name", o->name);
    vml_json_write_member_int(out, FALSE, "pid", o->pid);
    vml_json_write_strict_member_string(out, FALSE, "mode",
                                        o->observer ? "observer" : vml_mode_name(o->mode));
    vml_json_write_member_int(out, FALSE, "since", o->since);
    vml_json_write_member_int(out, FALSE, "generation", (gint64)o->generation);
    if (o->parked) {
        vml_json_write_strict_member_string(out, FALSE, "parked", o->parked);
        vml_json_write_member_int(out, FALSE, "parked_since", o->parked_since);
    }
    if (o->unregistered) {
        g_string_append(out, ",\"unregistered\":true");
        vml_json_write_strict_member_string(out, FALSE, "program", o->program ? o->program : "?");
    }
    if (host_state)
        vml_json_write_strict_member_string(out, FALSE, "host_state", host_state);
    g_string_append_c(out, '}');
}

JsonObject *
vml_owner_to_json(const VmlOwner *o)
{
    /* One list of the fields, vml_owner_write_json's, for both forms. */
    g_autoptr(GString) text = g_string_new(NULL);
    vml_owner_write_json(text, o, NULL);
    JsonObject *j = vml_json_parse_object(text->str, text->len, NULL);
    g_assert(j);
    return j;
}

static const char *
get_str(JsonObject *j, const char *key, GError **error)
{
    JsonNode *n = json_object_get_member(j, key);
    if (!n || json_node_get_value_type(n) != G_TYPE_STRING) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "holder record: '%s' missing", key);
        return NULL;
    }
    return json_node_get_string(n);
}

static gboolean
get_int(JsonObject *j, const char *key, gint64 *out, GError **error)
{
    JsonNode *n = json_object_get_member(j, key);
    if (!n || json_node_get_value_type(n) != G_TYPE_INT64) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "holder record: '%s' missing", key);
        return FALSE;
    }
    *out = json_node_get_int(n);
    return TRUE;
}

VmlOwner *
vml_record_parse(JsonObject *j, GPtrArray *owners, GArray *fds, GError **error)
{
    g_autoptr(VmlOwner) id = g_new0(VmlOwner, 1);
    const char *host, *machine_id, *boot_id, *uuid, *name;
    gint64 start_time;

    if (!(host = get_str(j, "host", error)) ||
        !(machine_id = get_str(j, "machine_id", error)) ||
        !(boot_id = get_str(j, "boot_id", error)) ||
        !(uuid = get_str(j, "uuid", error)) ||
        !(name = get_str(j, "name", error)) ||
        !get_int(j, "holder", &id->holder, error) ||
        !get_int(j, "pid", &id->pid, error) ||
        !get_int(j, "start_time", &start_time, error) ||
        !get_int(j, "since", &id->since, error))
        return NULL;
    id->host = g_strdup(host);
    id->machine_id = g_strdup(machine_id);
    id->boot_id = g_strdup(boot_id);
    id->uuid = g_strdup(uuid);
    id->name = g_strdup(name);
    id->start_time = (guint64)start_time;

    JsonNode *ln = json_object_get_member(j, "leases");
    JsonArray *leases = ln && JSON_NODE_HOLDS_ARRAY(ln) ? json_node_get_array(ln) : NULL;
    for (guint i = 0; leases && i < json_array_get_length(leases); i++) {
        JsonNode *en = json_array_get_element(leases, i);
        if (!JSON_NODE_HOLDS_OBJECT(en))
            continue;
        JsonObject *lj = json_node_get_object(en);
        const char *resource = get_str(lj, "resource", NULL);
        const char *mode = get_str(lj, "mode", NULL);
        gint64 generation, since;
        VmlMode m;
        if (!resource || !mode || !vml_mode_parse(mode, &m) ||
            !get_int(lj, "generation", &generation, NULL) || !get_int(lj, "since", &since, NULL))
            continue;
        VmlOwner *o = vml_owner_copy(id);
        o->resource = g_strdup(resource);
        /* Keys were canonical paths before identities. */
        const char *path = get_str(lj, "path", NULL);
        if (path && g_path_is_absolute(path))
            o->path = g_strdup(path);
        else if (vml_key_is_legacy_path(resource))
            o->path = g_strdup(resource);
        o->mode = m;
        o->generation = (guint64)generation;
        o->since = since;
        JsonNode *dn = json_object_get_member(lj, "derived");
        o->derived = dn && json_node_get_value_type(dn) == G_TYPE_BOOLEAN && json_node_get_boolean(dn);
        const char *parked = get_str(lj, "parked", NULL);
        if (parked && vml_park_reason_valid(parked)) {
            o->parked = g_strdup(parked);
            get_int(lj, "parked_since", &o->parked_since, NULL);
        }
        g_ptr_array_add(owners, o);
        if (fds) {
            gint64 fd = -1;
            get_int(lj, "fd", &fd, NULL);
            int v = fd >= 0 && fd <= G_MAXINT ? (int)fd : -1;
            g_array_append_val(fds, v);
        }
    }
    return g_steal_pointer(&id);
}

gboolean
vml_park_reason_valid(const char *reason)
{
    return g_strcmp0(reason, "paused") == 0 || g_strcmp0(reason, "migrating") == 0;
}

gboolean
vml_owner_is_this_host(const VmlOwner *o)
{
    return g_strcmp0(o->machine_id, vml_host_machine_id()) == 0 &&
           g_strcmp0(o->host, vml_host_name()) == 0;
}
