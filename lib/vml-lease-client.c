#include "vml-lease-client.h"
#include "vml-protocol.h"
#include "vml-error.h"
#include "vml-wire.h"

gint64
vml_lease_register(VmlClient *client, const VmlRegistration *reg, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "uuid", reg->uuid);
    json_object_set_string_member(p, "name", reg->name);
    json_object_set_int_member(p, "pid", reg->pid);
    if (reg->program)
        json_object_set_string_member(p, "program", reg->program);
    if (reg->on_lockfailure)
        json_object_set_string_member(p, "on_lockfailure", reg->on_lockfailure);
    gboolean with_mailbox = reg->mailbox_fd >= 0;
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_REGISTER, p,
                                              with_mailbox ? &reg->mailbox_fd : NULL,
                                              with_mailbox ? 1 : 0, NULL, NULL, error);
    if (!r)
        return 0;
    JsonNode *n = json_object_get_member(r, "holder");
    gint64 holder = n && json_node_get_value_type(n) == G_TYPE_INT64 ? json_node_get_int(n) : 0;
    if (holder <= 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                    "malformed Register reply from vmleased: no holder id");
        return 0;
    }
    const char *used = json_object_get_string_member_with_default(r, "lockspace", "");
    if (reg->lockspace && g_strcmp0(used, reg->lockspace) != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "vmleased uses lockspace %s, but qemu-vmlease.conf says lockspace_dir = \"%s\"",
                    used, reg->lockspace);
        return 0;
    }
    return holder;
}

/* The array member NAME of a reply to METHOD; VML_ERROR_PROTOCOL without. */
static JsonArray *
reply_array(JsonObject *reply, const char *name, const char *method, GError **error)
{
    JsonNode *n = json_object_get_member(reply, name);
    if (!n || !JSON_NODE_HOLDS_ARRAY(n)) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                    "malformed %s reply from vmleased: no %s", method, name);
        return NULL;
    }
    return json_array_ref(json_node_get_array(n));
}

JsonArray *
vml_lease_acquire(VmlClient *client, gint64 holder, JsonArray *resources,
                  const VmlAcquireFlags *flags, GArray **fds, JsonObject **error_params,
                  GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", resources);
    json_object_set_boolean_member(p, "fds", flags->fds);
    if (flags->holder_fds)
        json_object_set_boolean_member(p, "holder_fds", TRUE);
    if (flags->claim)
        json_object_set_boolean_member(p, "claim", TRUE);
    if (flags->reconcile)
        json_object_set_boolean_member(p, "reconcile", TRUE);
    GArray *got = NULL;
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_ACQUIRE, p, NULL, 0, &got,
                                              error_params, error);
    JsonArray *leases = r ? reply_array(r, "leases", "Acquire", error) : NULL;
    if (!leases && got) {
        vml_fds_close(got);
        got = NULL;
    }
    if (fds)
        *fds = got;
    else if (got)
        vml_fds_close(got);
    return leases;
}

gboolean
vml_lease_release(VmlClient *client, gint64 holder, JsonArray *resources,
                  const VmlReleaseFlags *flags, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    if (resources)
        json_object_set_array_member(p, "resources", resources);
    if (flags && flags->park)
        json_object_set_string_member(p, "park", flags->park);
    if (flags && flags->status_file)
        json_object_set_string_member(p, "status_file", flags->status_file);
    if (flags && flags->reconcile)
        json_object_set_boolean_member(p, "reconcile", TRUE);
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_RELEASE, p, NULL, 0, NULL,
                                              NULL, error);
    return r != NULL;
}

JsonArray *
vml_lease_inquire(VmlClient *client, gint64 holder, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_INQUIRE, p, NULL, 0, NULL,
                                              NULL, error);
    return r ? reply_array(r, "leases", "Inquire", error) : NULL;
}
