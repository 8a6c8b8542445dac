/* The lease side of a chain transaction: see vml-chain-leases.h. */
#include "vml-chain-leases.h"
#include "vml-lease-client.h"
#include "vml-error.h"

#include <string.h>

struct _VmlChainLeases {
    VmlClient *client;
    gint64 holder;
    GPtrArray *leases;     /* VmlChainLease* (borrowed from the plan) */
    GHashTable *before;    /* path -> mode before prepare; NULL until prepared */
};

VmlChainLeases *
vml_chain_leases_new(VmlClient *client, gint64 holder, const VmlChainPlan *plan)
{
    VmlChainLeases *t = g_new0(VmlChainLeases, 1);
    t->client = client;
    t->holder = holder;
    t->leases = g_ptr_array_ref(plan->leases);
    return t;
}

void
vml_chain_leases_free(VmlChainLeases *t)
{
    if (!t)
        return;
    g_ptr_array_unref(t->leases);
    g_clear_pointer(&t->before, g_hash_table_unref);
    g_free(t);
}

static VmlLeaseMode
mode_from_name(const char *name)
{
    if (g_strcmp0(name, "exclusive") == 0)
        return VML_LEASE_EXCLUSIVE;
    if (g_strcmp0(name, "shared") == 0)
        return VML_LEASE_SHARED;
    return VML_LEASE_NONE;
}

GHashTable *
vml_chain_leases_current(VmlClient *client, gint64 holder, GError **error)
{
    g_autoptr(JsonArray) leases = vml_lease_inquire(client, holder, error);
    if (!leases)
        return NULL;
    GHashTable *held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (guint i = 0; i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        /* Images by canonical path, as the chain names them. */
        const char *key = l ? json_object_get_string_member_with_default(
                                  l, "path", json_object_get_string_member_with_default(
                                                 l, "resource", NULL)) : NULL;
        const char *mode = l ? json_object_get_string_member_with_default(l, "mode", NULL) : NULL;
        if (key)
            g_hash_table_insert(held, g_strdup(key), GINT_TO_POINTER(mode_from_name(mode)));
    }
    return held;
}

static VmlLeaseMode
held_mode(GHashTable *held, const char *path)
{
    return GPOINTER_TO_INT(g_hash_table_lookup(held, path));
}

static JsonObject *
resource(const char *path, VmlLeaseMode mode, gboolean at_least)
{
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "path", path);
    if (mode != VML_LEASE_NONE)
        json_object_set_string_member(r, "mode", vml_lease_mode_name(mode));
    if (at_least)
        json_object_set_boolean_member(r, "at_least", TRUE);
    return r;
}

/* One Acquire of every resource in RESOURCES (all or none). */
static gboolean
acquire_leases(VmlChainLeases *t, JsonArray *resources, JsonObject **conflict, GError **error)
{
    if (json_array_get_length(resources) == 0)
        return TRUE;
    VmlAcquireFlags flags = { 0 };
    g_autoptr(JsonArray) leases = vml_lease_acquire(t->client, t->holder,
                                                    json_array_ref(resources), &flags, NULL,
                                                    conflict, error);
    return leases != NULL;
}

/* One Release of every resource in RESOURCES. */
static gboolean
release_leases(VmlChainLeases *t, JsonArray *resources, GError **error)
{
    return json_array_get_length(resources) == 0 ||
           vml_lease_release(t->client, t->holder, json_array_ref(resources), NULL, error);
}

/* Bring every plan image to the mode TARGET(lease) gives, from HELD: the
 * changes that keep or raise a lease in one Acquire, then one Release. */
static gboolean
move_to(VmlChainLeases *t, GHashTable *held, VmlLeaseMode (*target)(VmlChainLeases *, const VmlChainLease *),
        JsonObject **conflict, GError **error)
{
    g_autoptr(JsonArray) acquire = json_array_new();
    g_autoptr(JsonArray) release = json_array_new();
    for (guint i = 0; i < t->leases->len; i++) {
        const VmlChainLease *l = t->leases->pdata[i];
        VmlLeaseMode want = target(t, l), have = held_mode(held, l->path);
        if (want == have)
            continue;
        if (want == VML_LEASE_NONE)
            json_array_add_object_element(release, resource(l->path, VML_LEASE_NONE, FALSE));
        else
            json_array_add_object_element(acquire, resource(l->path, want, FALSE));
    }
    return acquire_leases(t, acquire, conflict, error) &&
           release_leases(t, release, error);
}

gboolean
vml_chain_leases_prepare(VmlChainLeases *t, JsonObject **conflict, GError **error)
{
    g_autoptr(GHashTable) held = vml_chain_leases_current(t->client, t->holder, error);
    if (!held)
        return FALSE;
    /* Only raise: a lease held stronger than needed (a base a block job
     * made exclusive) stays as it is until finish. */
    g_autoptr(JsonArray) acquire = json_array_new();
    for (guint i = 0; i < t->leases->len; i++) {
        const VmlChainLease *l = t->leases->pdata[i];
        VmlLeaseMode have = held_mode(held, l->path);
        if (l->during > have)
            json_array_add_object_element(acquire, resource(l->path, l->during,
                                                            l->during == VML_LEASE_SHARED));
    }
    if (!acquire_leases(t, acquire, conflict, error))
        return FALSE;
    t->before = g_steal_pointer(&held);
    return TRUE;
}

static VmlLeaseMode
target_after(VmlChainLeases *t, const VmlChainLease *l)
{
    (void)t;
    return l->after;
}

static VmlLeaseMode
target_before(VmlChainLeases *t, const VmlChainLease *l)
{
    return held_mode(t->before, l->path);
}

gboolean
vml_chain_leases_finish(VmlChainLeases *t, GError **error)
{
    g_return_val_if_fail(t->before, FALSE);
    g_autoptr(GHashTable) held = vml_chain_leases_current(t->client, t->holder, error);
    return held && move_to(t, held, target_after, NULL, error);
}

gboolean
vml_chain_leases_abort(VmlChainLeases *t, GError **error)
{
    if (!t->before)
        return TRUE;   /* prepare changed nothing */
    g_autoptr(GHashTable) held = vml_chain_leases_current(t->client, t->holder, error);
    if (!held || !move_to(t, held, target_before, NULL, error)) {
        g_prefix_error(error, "cannot put the leases back as they were: ");
        return FALSE;
    }
    g_clear_pointer(&t->before, g_hash_table_unref);
    return TRUE;
}
