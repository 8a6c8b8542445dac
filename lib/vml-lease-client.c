#include "vml-lease-client.h"
#include "vml-error.h"

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
    g_autoptr(JsonObject) r = vml_client_call(client, "io.vmlease.Lease.Register", p,
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
