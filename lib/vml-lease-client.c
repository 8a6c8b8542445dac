#include "vml-lease-client.h"
#include "vml-protocol.h"
#include "vml-error.h"
#include "vml-wire.h"

#include <string.h>

/* The params of a call for HOLDER: none named (0) is the connection's. */
static JsonObject *
holder_params(gint64 holder)
{
    JsonObject *p = json_object_new();
    if (holder)
        json_object_set_int_member(p, "holder", holder);
    return p;
}

/* Register's params for REG (its mailbox fd goes beside them). */
static JsonObject *
register_params(const VmlRegistration *reg)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "uuid", reg->uuid);
    json_object_set_string_member(p, "name", reg->name);
    json_object_set_int_member(p, "pid", reg->pid);
    if (reg->program)
        json_object_set_string_member(p, "program", reg->program);
    if (reg->on_lockfailure)
        json_object_set_string_member(p, "on_lockfailure", reg->on_lockfailure);
    /* Checked by the daemon too, so that nothing sent after Register acts
     * on a daemon of another lockspace. */
    if (reg->lockspace)
        json_object_set_string_member(p, "lockspace", reg->lockspace);
    return p;
}

/* The holder id of a Register reply R (NULL: the call failed, ERROR set). */
static gint64
register_reply(JsonObject *r, const VmlRegistration *reg, GError **error)
{
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

gboolean
vml_lease_register_send(VmlClient *client, const VmlRegistration *reg, GError **error)
{
    g_autoptr(JsonObject) p = register_params(reg);
    gboolean with_mailbox = reg->mailbox_fd >= 0;
    return vml_client_send(client, VML_METHOD_REGISTER, p,
                           with_mailbox ? &reg->mailbox_fd : NULL, with_mailbox ? 1 : 0,
                           error);
}

gint64
vml_lease_register_finish(VmlClient *client, const VmlRegistration *reg, GError **error)
{
    g_autoptr(JsonObject) r = vml_client_receive(client, NULL, NULL, error);
    return register_reply(r, reg, error);
}

gint64
vml_lease_register(VmlClient *client, const VmlRegistration *reg, GError **error)
{
    g_autoptr(JsonObject) p = register_params(reg);
    gboolean with_mailbox = reg->mailbox_fd >= 0;
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_REGISTER, p,
                                              with_mailbox ? &reg->mailbox_fd : NULL,
                                              with_mailbox ? 1 : 0, NULL, NULL, error);
    return register_reply(r, reg, error);
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

static JsonObject *
acquire_params(gint64 holder, JsonArray *resources, const VmlAcquireFlags *flags)
{
    JsonObject *p = holder_params(holder);
    json_object_set_array_member(p, "resources", resources);
    json_object_set_boolean_member(p, "fds", flags->fds);
    if (flags->holder_fds)
        json_object_set_boolean_member(p, "holder_fds", TRUE);
    if (flags->claim)
        json_object_set_boolean_member(p, "claim", TRUE);
    if (flags->reconcile)
        json_object_set_boolean_member(p, "reconcile", TRUE);
    return p;
}

/* The leases of an Acquire reply R (NULL: the call failed), with the fds
 * GOT that came with it into *FDS (may be NULL: closed). */
static JsonArray *
acquire_reply(JsonObject *r, GArray *got, GArray **fds, GError **error)
{
    JsonArray *leases = r ? reply_array(r, "leases", "Acquire", error) : NULL;
    if (leases && fds)
        *fds = got;
    else if (got)
        vml_fds_close(got);
    return leases;
}

gboolean
vml_lease_acquire_send(VmlClient *client, gint64 holder, JsonArray *resources,
                       const VmlAcquireFlags *flags, GError **error)
{
    g_autoptr(JsonObject) p = acquire_params(holder, resources, flags);
    return vml_client_send(client, VML_METHOD_ACQUIRE, p, NULL, 0, error);
}

JsonArray *
vml_lease_acquire_finish(VmlClient *client, GArray **fds, JsonObject **error_params,
                         GError **error)
{
    GArray *got = NULL;
    g_autoptr(JsonObject) r = vml_client_receive(client, &got, error_params, error);
    return acquire_reply(r, got, fds, error);
}

JsonArray *
vml_lease_acquire(VmlClient *client, gint64 holder, JsonArray *resources,
                  const VmlAcquireFlags *flags, GArray **fds, JsonObject **error_params,
                  GError **error)
{
    if (fds)
        *fds = NULL;
    g_autoptr(JsonObject) p = acquire_params(holder, resources, flags);
    GArray *got = NULL;
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_ACQUIRE, p, NULL, 0, &got,
                                              error_params, error);
    return acquire_reply(r, got, fds, error);
}

static JsonObject *
release_params(gint64 holder, JsonArray *resources, const VmlReleaseFlags *flags)
{
    JsonObject *p = holder_params(holder);
    if (resources)
        json_object_set_array_member(p, "resources", resources);
    if (flags && flags->park)
        json_object_set_string_member(p, "park", flags->park);
    if (flags && flags->status_file)
        json_object_set_string_member(p, "status_file", flags->status_file);
    if (flags && flags->reconcile)
        json_object_set_boolean_member(p, "reconcile", TRUE);
    return p;
}

gboolean
vml_lease_release_send(VmlClient *client, gint64 holder, JsonArray *resources,
                       const VmlReleaseFlags *flags, GError **error)
{
    g_autoptr(JsonObject) p = release_params(holder, resources, flags);
    return vml_client_send(client, VML_METHOD_RELEASE, p, NULL, 0, error);
}

gboolean
vml_lease_release_finish(VmlClient *client, GError **error)
{
    g_autoptr(JsonObject) r = vml_client_receive(client, NULL, NULL, error);
    return r != NULL;
}

gboolean
vml_lease_release(VmlClient *client, gint64 holder, JsonArray *resources,
                  const VmlReleaseFlags *flags, GError **error)
{
    g_autoptr(JsonObject) p = release_params(holder, resources, flags);
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_RELEASE, p, NULL, 0, NULL,
                                              NULL, error);
    return r != NULL;
}

gboolean
vml_lease_inquire_send(VmlClient *client, gint64 holder, GError **error)
{
    g_autoptr(JsonObject) p = holder_params(holder);
    return vml_client_send(client, VML_METHOD_INQUIRE, p, NULL, 0, error);
}

JsonArray *
vml_lease_inquire_finish(VmlClient *client, GError **error)
{
    g_autoptr(JsonObject) r = vml_client_receive(client, NULL, NULL, error);
    return r ? reply_array(r, "leases", "Inquire", error) : NULL;
}

JsonArray *
vml_lease_inquire(VmlClient *client, gint64 holder, GError **error)
{
    g_autoptr(JsonObject) p = holder_params(holder);
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_INQUIRE, p, NULL, 0, NULL,
                                              NULL, error);
    return r ? reply_array(r, "leases", "Inquire", error) : NULL;
}

/* An Owners page being read, and the one after it asked for already. */
typedef struct {
    VmlClient *client;
    JsonObject *params;
    char *asked;          /* the "after" of the page asked for ahead */
} OwnersPaging;

/* A page asked for ahead and never read (this one failed): its reply is
 * read and dropped, so the connection's next call gets its own. */
static void
owners_paging_clear(OwnersPaging *pg)
{
    if (pg->asked) {
        JsonObject *dropped = vml_client_receive(pg->client, NULL, NULL, NULL);
        if (dropped)
            json_object_unref(dropped);
        g_clear_pointer(&pg->asked, g_free);
    }
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OwnersPaging, owners_paging_clear)

/* The daemon writes a page's "next" first: when the reply starts with a
 * plain one, ask for that page now, while this one is parsed (which is
 * most of the time an Owners page takes). Anything else (escapes, an
 * error) waits for the parse. */
static void
owners_ask_ahead(const char *text, gsize len, gpointer data)
{
    static const char head[] = "{\"parameters\":{\"next\":\"";
    OwnersPaging *pg = data;
    gsize n = sizeof(head) - 1;
    if (len <= n || memcmp(text, head, n) != 0)
        return;
    gsize end = n;
    while (end < len && text[end] != '"' && text[end] != '\\' && (guchar)text[end] >= 0x20 &&
           (guchar)text[end] < 0x7f)
        end++;
    if (end == len || text[end] != '"' || end == n)
        return;
    pg->asked = g_strndup(text + n, end - n);
    json_object_set_string_member(pg->params, "after", pg->asked);
    /* A failure is the client's send error, reported by the receive. */
    if (vml_client_send(pg->client, VML_METHOD_OWNERS, pg->params, NULL, 0, NULL))
        vml_client_flush(pg->client, NULL);
}

JsonArray *
vml_admin_owners(VmlClient *client, JsonArray *paths, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    if (paths)
        json_object_set_array_member(p, "paths", paths);
    g_autoptr(JsonArray) all = json_array_new();
    g_autofree char *after = NULL;
    g_auto(OwnersPaging) pg = { .client = client, .params = p };
    vml_client_send(client, VML_METHOD_OWNERS, p, NULL, 0, NULL);
    do {
        g_clear_pointer(&pg.asked, g_free);   /* its page is the one read now */
        g_autoptr(JsonObject) page = vml_client_receive_peek(client, owners_ask_ahead, &pg,
                                                             error);
        if (!page)
            return NULL;
        g_autoptr(JsonArray) got = reply_array(page, "resources", "Owners", error);
        if (!got)
            return NULL;
        /* The page's entries themselves, not deep copies: json-glib keeps
         * no parent link that sharing them with ALL would leave wrong. */
        for (guint i = 0; i < json_array_get_length(got); i++)
            json_array_add_element(all, json_node_ref(json_array_get_element(got, i)));
        JsonNode *n = json_object_get_member(page, "next");
        const char *next = n && JSON_NODE_HOLDS_VALUE(n) &&
                           json_node_get_value_type(n) == G_TYPE_STRING
            ? json_node_get_string(n) : NULL;
        if ((next && after && strcmp(next, after) <= 0) ||
            (pg.asked && g_strcmp0(next, pg.asked) != 0)) {
            g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                        "malformed Owners reply from vmleased");
            return NULL;
        }
        g_free(after);
        after = g_strdup(next);
        if (after && !pg.asked) {
            json_object_set_string_member(p, "after", after);
            vml_client_send(client, VML_METHOD_OWNERS, p, NULL, 0, NULL);
        }
    } while (after);
    return g_steal_pointer(&all);
}

/* REPLY when it has every member of WANTED ("name:kind", kind s string,
 * i integer, b boolean, a array), else NULL with VML_ERROR_PROTOCOL. */
static JsonObject *
checked_reply(JsonObject *reply, const char *method, const char *const *wanted,
              GError **error)
{
    if (!reply)
        return NULL;
    for (guint i = 0; wanted[i]; i++) {
        const char *colon = strchr(wanted[i], ':');
        g_autofree char *name = g_strndup(wanted[i], colon - wanted[i]);
        JsonNode *n = json_object_get_member(reply, name);
        gboolean ok = FALSE;
        if (n && colon[1] == 'a')
            ok = JSON_NODE_HOLDS_ARRAY(n);
        else if (n && JSON_NODE_HOLDS_VALUE(n))
            ok = json_node_get_value_type(n) == (colon[1] == 's' ? G_TYPE_STRING
                                                : colon[1] == 'i' ? G_TYPE_INT64
                                                                  : G_TYPE_BOOLEAN);
        if (!ok) {
            g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                        "malformed %s reply from vmleased: no %s", method, name);
            json_object_unref(reply);
            return NULL;
        }
    }
    return reply;
}

JsonObject *
vml_admin_list(VmlClient *client, GError **error)
{
    static const char *const wanted[] = { "holders:a", NULL };
    return checked_reply(vml_client_call(client, VML_METHOD_LIST, NULL, NULL, 0, NULL, NULL,
                                         error), "List", wanted, error);
}

JsonObject *
vml_admin_metrics(VmlClient *client, GError **error)
{
    static const char *const wanted[] = { "latencies:a", NULL };
    JsonObject *r = checked_reply(vml_client_call(client, VML_METHOD_METRICS, NULL, NULL, 0,
                                                  NULL, NULL, error), "Metrics", wanted, error);
    JsonNode *c = r ? json_object_get_member(r, "counters") : NULL;
    if (r && (!c || !JSON_NODE_HOLDS_OBJECT(c))) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                    "malformed Metrics reply from vmleased: no counters");
        g_clear_pointer(&r, json_object_unref);
    }
    return r;
}

JsonObject *
vml_admin_set_log_level(VmlClient *client, const char *level, GError **error)
{
    static const char *const wanted[] = { "level:s", "previous:s", NULL };
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "level", level);
    return checked_reply(vml_client_call(client, VML_METHOD_SET_LOG_LEVEL, p, NULL, 0, NULL,
                                         NULL, error), "SetLogLevel", wanted, error);
}

JsonObject *
vml_admin_status(VmlClient *client, GError **error)
{
    static const char *const wanted[] = { "version:s", "backend:s", "lockspace:s", "pid:i",
                                          NULL };
    return checked_reply(vml_client_call(client, VML_METHOD_STATUS, NULL, NULL, 0, NULL, NULL,
                                         error), "Status", wanted, error);
}

JsonObject *
vml_admin_hosts(VmlClient *client, GError **error)
{
    static const char *const wanted[] = { "lockspace:s", "host_id:i", "hosts:a", NULL };
    return checked_reply(vml_client_call(client, VML_METHOD_HOSTS, NULL, NULL, 0, NULL, NULL,
                                         error), "Hosts", wanted, error);
}

JsonObject *
vml_admin_force_unlock(VmlClient *client, const char *path, gboolean force,
                       JsonObject **error_params, GError **error)
{
    static const char *const wanted[] = { "resource:s", "cleared:b", "verdict:s", "reason:s",
                                          NULL };
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "path", path);
    json_object_set_boolean_member(p, "force", force);
    return checked_reply(vml_client_call(client, VML_METHOD_FORCE_UNLOCK, p, NULL, 0, NULL,
                                         error_params, error), "ForceUnlock", wanted, error);
}

JsonArray *
vml_lease_observe(VmlClient *client, gint64 holder, JsonArray *resources, GError **error)
{
    g_autoptr(JsonObject) p = holder_params(holder);
    json_object_set_array_member(p, "resources", resources);
    g_autoptr(JsonObject) r = vml_client_call(client, VML_METHOD_OBSERVE, p, NULL, 0, NULL,
                                              NULL, error);
    return r ? reply_array(r, "observing", "Observe", error) : NULL;
}
