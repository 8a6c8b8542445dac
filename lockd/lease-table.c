#include "lease-table.h"
#include "vml-error.h"
#include "vml-proc.h"

#include <unistd.h>

struct _VmlLeaseTable {
    VmlBackend *backend;
    const VmlDaemonConfig *cfg;
    GHashTable *holders;        /* gint64* id -> VmlHolder* */
    GHashTable *by_resource;    /* key -> GPtrArray of VmlLease* (unowned) */
    gint64 next_id;
    guint n_leases;
    gboolean shutting_down;     /* free without unlocking */
    GFunc changed;
    gpointer changed_data;
};

static void
changed(VmlLeaseTable *t)
{
    if (t->changed)
        t->changed(t, t->changed_data);
}

void
vml_lease_table_set_changed_func(VmlLeaseTable *t, GFunc func, gpointer data)
{
    t->changed = func;
    t->changed_data = data;
}

static void
index_add(VmlLeaseTable *t, VmlLease *l)
{
    GPtrArray *a = g_hash_table_lookup(t->by_resource, l->owner->resource);
    if (!a) {
        a = g_ptr_array_new();
        g_hash_table_insert(t->by_resource, g_strdup(l->owner->resource), a);
    }
    g_ptr_array_add(a, l);
    t->n_leases++;
}

static void
index_remove(VmlLeaseTable *t, VmlLease *l)
{
    GPtrArray *a = g_hash_table_lookup(t->by_resource, l->owner->resource);
    if (a) {
        g_ptr_array_remove_fast(a, l);
        if (a->len == 0)
            g_hash_table_remove(t->by_resource, l->owner->resource);
    }
    t->n_leases--;
}

/* Unlock and forget one lease; the holder's hash entry is the caller's. */
static void
lease_drop(VmlLeaseTable *t, VmlLease *l)
{
    index_remove(t, l);
    if (t->shutting_down)
        t->backend->ops->forget(t->backend, l->lock);
    else
        t->backend->ops->release(t->backend, l->lock);
    vml_owner_free(l->owner);
    g_free(l);
}

static VmlLease *
lease_add(VmlLeaseTable *t, VmlHolder *h, VmlOwner *owner, VmlLock *lock)
{
    VmlLease *l = g_new0(VmlLease, 1);
    l->owner = owner;
    l->lock = lock;
    g_hash_table_insert(h->leases, owner->resource, l);
    index_add(t, l);
    return l;
}

static VmlOwner *
holder_owner(const VmlHolder *h, const char *key, VmlMode mode)
{
    VmlOwner *o = g_new0(VmlOwner, 1);
    o->resource = g_strdup(key);
    o->host = g_strdup(vml_host_name());
    o->machine_id = g_strdup(vml_host_machine_id());
    o->boot_id = g_strdup(vml_host_boot_id());
    o->uuid = g_strdup(h->uuid);
    o->name = g_strdup(h->name);
    o->holder = h->id;
    o->pid = h->pid;
    o->start_time = h->start_time;
    o->mode = mode;
    o->since = g_get_real_time() / G_USEC_PER_SEC;
    return o;
}

static void
holder_free(VmlHolder *h)
{
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        g_hash_table_iter_steal(&it);
        lease_drop(h->table, value);
    }
    g_hash_table_unref(h->leases);
    vml_holder_watch_free(h->watch);
    g_free(h->uuid);
    g_free(h->name);
    g_free(h);
}

static void
on_holder_exit(gpointer data)
{
    VmlHolder *h = data;
    VmlLeaseTable *t = h->table;
    g_info("holder %" G_GINT64_FORMAT " (VM %s, pid %d) exited: releasing %u lease(s)",
           h->id, h->name, (int)h->pid, g_hash_table_size(h->leases));
    g_hash_table_remove(t->holders, &h->id);
    changed(t);
}

VmlLeaseTable *
vml_lease_table_new(VmlBackend *backend, const VmlDaemonConfig *cfg)
{
    VmlLeaseTable *t = g_new0(VmlLeaseTable, 1);
    t->backend = backend;
    t->cfg = cfg;
    t->holders = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
                                       (GDestroyNotify)holder_free);
    t->by_resource = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           (GDestroyNotify)g_ptr_array_unref);
    t->next_id = 1;
    return t;
}

void
vml_lease_table_free(VmlLeaseTable *t)
{
    if (!t)
        return;
    /* Shutdown keeps every lock and record: the holders carry them on and
     * the next daemon recovers them. */
    t->shutting_down = TRUE;
    g_hash_table_unref(t->holders);
    g_hash_table_unref(t->by_resource);
    g_free(t);
}

static VmlHolder *
holder_new(VmlLeaseTable *t, gint64 id, const char *uuid, const char *name,
           pid_t pid, guint64 start_time, gint64 since, GError **error)
{
    VmlHolder *h = g_new0(VmlHolder, 1);
    h->watch = vml_holder_watch_new(pid, start_time, on_holder_exit, h, error);
    if (!h->watch) {
        g_free(h);
        return NULL;
    }
    h->id = id;
    h->uuid = g_strdup(uuid);
    h->name = g_strdup(name);
    h->pid = pid;
    h->start_time = start_time;
    h->since = since;
    h->table = t;
    h->leases = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(t->holders, &h->id, h);
    t->next_id = MAX(t->next_id, id + 1);
    return h;
}

static VmlHolder *
find_process(VmlLeaseTable *t, pid_t pid, guint64 start_time)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        VmlHolder *h = value;
        if (h->pid == pid && h->start_time == start_time)
            return h;
    }
    return NULL;
}

VmlHolder *
vml_lease_table_register(VmlLeaseTable *t, const char *uuid, const char *name,
                         pid_t pid, GError **error)
{
    guint64 start_time;
    if (!vml_proc_start_time(pid, &start_time, error))
        return NULL;

    VmlHolder *h = find_process(t, pid, start_time);
    if (h) {
        if (g_strcmp0(h->uuid, uuid) != 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "process %d is already registered for VM %s (uuid %s)",
                        (int)pid, h->name, h->uuid);
            return NULL;
        }
        return h;
    }
    if (g_hash_table_size(t->holders) >= t->cfg->max_holders) {
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "too many holders (max_holders = %u)", t->cfg->max_holders);
        return NULL;
    }
    h = holder_new(t, t->next_id, uuid, name, pid, start_time,
                   g_get_real_time() / G_USEC_PER_SEC, error);
    if (h) {
        g_info("registered holder %" G_GINT64_FORMAT ": VM %s (uuid %s, pid %d)",
               h->id, name, uuid, (int)pid);
        changed(t);
    }
    return h;
}

VmlHolder *
vml_lease_table_lookup(VmlLeaseTable *t, gint64 id, GError **error)
{
    VmlHolder *h = g_hash_table_lookup(t->holders, &id);
    if (!h)
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_HOLDER,
                    "no holder %" G_GINT64_FORMAT " (it exited or was never registered)", id);
    return h;
}

GPtrArray *
vml_lease_table_owners(VmlLeaseTable *t, const char *key)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    GPtrArray *local = g_hash_table_lookup(t->by_resource, key);

    for (guint i = 0; local && i < local->len; i++)
        g_ptr_array_add(out, vml_owner_copy(((VmlLease *)local->pdata[i])->owner));

    g_autoptr(GPtrArray) records = t->backend->ops->owners(t->backend, key, NULL);
    for (guint i = 0; records && i < records->len; i++) {
        VmlOwner *r = records->pdata[i];
        gboolean known = FALSE;
        for (guint j = 0; local && j < local->len && !known; j++)
            known = vml_owner_same_process(r, ((VmlLease *)local->pdata[j])->owner);
        /* A record of this boot whose process is gone is stale, not a holder. */
        gboolean here = vml_owner_is_this_host(r) &&
                        g_strcmp0(r->boot_id, vml_host_boot_id()) == 0;
        if (known || (here && !vml_proc_is_same(r->pid, r->start_time)))
            continue;
        g_ptr_array_add(out, g_steal_pointer(&records->pdata[i]));
    }
    return out;
}

/* The error parameters of a conflict, and a message naming every holder. */
static JsonObject *
conflict_params(VmlLeaseTable *t, VmlHolder *h, const char *key, VmlMode mode,
                GError **error)
{
    JsonObject *p = json_object_new();
    JsonArray *owners = json_array_new();
    g_autoptr(GPtrArray) all = vml_lease_table_owners(t, key);
    g_autoptr(GString) who = g_string_new(NULL);

    for (guint i = 0; i < all->len; i++) {
        VmlOwner *o = all->pdata[i];
        if (o->pid == h->pid && o->start_time == h->start_time && vml_owner_is_this_host(o))
            continue;
        json_array_add_object_element(owners, vml_owner_to_json(o, FALSE));
        g_string_append_printf(who, "%sVM %s (uuid %s, pid %" G_GINT64_FORMAT " on %s, %s)",
                               who->len ? ", " : "", o->name, o->uuid, o->pid, o->host,
                               vml_mode_name(o->mode));
    }
    g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "cannot lock %s %s: in use by %s",
                key, vml_mode_name(mode), who->len ? who->str : "a holder vmleased does not know");
    json_object_set_string_member(p, "resource", key);
    json_object_set_string_member(p, "mode", vml_mode_name(mode));
    json_object_set_array_member(p, "owners", owners);
    return p;
}

/* Undo record of one step of an acquire. */
typedef struct {
    VmlLease *lease;
    gboolean added;      /* new lease (else: mode changed) */
    VmlMode old_mode;
} AcquireStep;

static void
rollback(VmlLeaseTable *t, VmlHolder *h, GArray *steps)
{
    for (guint i = steps->len; i-- > 0;) {
        AcquireStep *s = &g_array_index(steps, AcquireStep, i);
        if (s->added) {
            g_hash_table_remove(h->leases, s->lease->owner->resource);
            lease_drop(t, s->lease);
        } else {
            /* An upgrade undone is a downgrade: it cannot conflict. */
            t->backend->ops->change_mode(t->backend, s->lease->lock, s->lease->owner,
                                         s->old_mode, NULL);
        }
    }
}

GPtrArray *
vml_lease_table_acquire(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs,
                        guint n_reqs, JsonObject **conflict, GError **error)
{
    guint n_new = 0;
    for (guint i = 0; i < n_reqs; i++) {
        if (!g_hash_table_contains(h->leases, reqs[i].key))
            n_new++;
    }
    if (g_hash_table_size(h->leases) + n_new > t->cfg->max_leases_per_holder) {
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "holder %" G_GINT64_FORMAT " would hold more than %u leases "
                    "(max_leases_per_holder)", h->id, t->cfg->max_leases_per_holder);
        return NULL;
    }

    g_autoptr(GArray) steps = g_array_new(FALSE, FALSE, sizeof(AcquireStep));
    /* Downgrades go last: once done they could not be undone safely. */
    for (int pass = 0; pass < 2; pass++) {
        for (guint i = 0; i < n_reqs; i++) {
            const VmlRequest *r = &reqs[i];
            VmlLease *l = g_hash_table_lookup(h->leases, r->key);
            g_autoptr(GError) local = NULL;
            gboolean ok = TRUE;

            if (l && l->owner->mode == r->mode)
                continue;
            gboolean downgrade = l && r->mode == VML_MODE_SHARED;
            if (downgrade != (pass == 1))
                continue;
            if (l) {
                AcquireStep s = { .lease = l, .added = FALSE, .old_mode = l->owner->mode };
                ok = t->backend->ops->change_mode(t->backend, l->lock, l->owner, r->mode, &local);
                if (ok)
                    g_array_append_val(steps, s);
            } else {
                VmlOwner *o = holder_owner(h, r->key, r->mode);
                VmlLock *lock = t->backend->ops->acquire(t->backend, o, &local);
                if (lock) {
                    AcquireStep s = { .lease = lease_add(t, h, o, lock), .added = TRUE };
                    g_array_append_val(steps, s);
                } else {
                    vml_owner_free(o);
                    ok = FALSE;
                }
            }
            if (!ok) {
                if (local->code == VML_ERROR_CONFLICT) {
                    *conflict = conflict_params(t, h, r->key, r->mode, error);
                } else {
                    g_propagate_error(error, g_steal_pointer(&local));
                }
                rollback(t, h, steps);
                return NULL;
            }
        }
    }

    GPtrArray *out = g_ptr_array_sized_new(n_reqs);
    for (guint i = 0; i < n_reqs; i++)
        g_ptr_array_add(out, g_hash_table_lookup(h->leases, reqs[i].key));
    if (steps->len)
        changed(t);
    return out;
}

gboolean
vml_lease_table_release(VmlLeaseTable *t, VmlHolder *h, const char *const *keys,
                        guint n_keys, guint *released, GError **error)
{
    if (!keys) {
        *released = g_hash_table_size(h->leases);
        GHashTableIter it;
        gpointer value;
        g_hash_table_iter_init(&it, h->leases);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            g_hash_table_iter_steal(&it);
            lease_drop(t, value);
        }
    } else {
        for (guint i = 0; i < n_keys; i++) {
            if (!g_hash_table_contains(h->leases, keys[i])) {
                g_set_error(error, VML_ERROR, VML_ERROR_NOT_HELD,
                            "holder %" G_GINT64_FORMAT " (VM %s) holds no lease on %s",
                            h->id, h->name, keys[i]);
                return FALSE;
            }
        }
        *released = 0;
        for (guint i = 0; i < n_keys; i++) {
            VmlLease *l = g_hash_table_lookup(h->leases, keys[i]);
            if (!l)
                continue;   /* listed twice */
            g_hash_table_steal(h->leases, keys[i]);
            lease_drop(t, l);
            (*released)++;
        }
    }
    if (*released)
        changed(t);
    return TRUE;
}

GPtrArray *
vml_lease_table_resources(VmlLeaseTable *t)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, t->by_resource);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_hash_table_add(seen, key);
        g_ptr_array_add(out, g_strdup(key));
    }
    g_autoptr(GPtrArray) records = t->backend->ops->owners(t->backend, NULL, NULL);
    for (guint i = 0; records && i < records->len; i++) {
        VmlOwner *r = records->pdata[i];
        if (!g_hash_table_contains(seen, r->resource)) {
            char *k = g_strdup(r->resource);
            g_hash_table_add(seen, k);
            g_ptr_array_add(out, k);
        }
    }
    g_ptr_array_sort(out, (GCompareFunc)g_strcmp0);
    return out;
}

static gint
holder_cmp(gconstpointer a, gconstpointer b)
{
    gint64 x = ((const VmlHolder *)a)->id, y = ((const VmlHolder *)b)->id;
    return x < y ? -1 : x > y;
}

GList *
vml_lease_table_holders(VmlLeaseTable *t)
{
    return g_list_sort(g_hash_table_get_values(t->holders), holder_cmp);
}

guint
vml_lease_table_n_holders(VmlLeaseTable *t)
{
    return g_hash_table_size(t->holders);
}

guint
vml_lease_table_n_leases(VmlLeaseTable *t)
{
    return t->n_leases;
}

JsonObject *
vml_lease_to_json(const VmlLease *l)
{
    JsonObject *j = json_object_new();
    json_object_set_string_member(j, "resource", l->owner->resource);
    json_object_set_string_member(j, "mode", vml_mode_name(l->owner->mode));
    json_object_set_int_member(j, "generation", (gint64)l->owner->generation);
    json_object_set_int_member(j, "since", l->owner->since);
    return j;
}

JsonObject *
vml_holder_to_json(const VmlHolder *h)
{
    JsonObject *j = json_object_new();
    JsonArray *leases = json_array_new();
    g_autoptr(GList) values = g_hash_table_get_values(h->leases);

    json_object_set_int_member(j, "holder", h->id);
    json_object_set_string_member(j, "uuid", h->uuid);
    json_object_set_string_member(j, "name", h->name);
    json_object_set_int_member(j, "pid", h->pid);
    json_object_set_int_member(j, "start_time", (gint64)h->start_time);
    json_object_set_int_member(j, "since", h->since);
    for (GList *l = values; l; l = l->next)
        json_array_add_object_element(leases, vml_lease_to_json(l->data));
    json_object_set_array_member(j, "leases", leases);
    return j;
}

/* ---- state: save and restore -------------------------------------------- */

JsonObject *
vml_lease_table_save(VmlLeaseTable *t, GArray *fds)
{
    JsonObject *state = json_object_new();
    JsonArray *holders = json_array_new();
    JsonArray *leases = json_array_new();
    GHashTableIter it;
    gpointer value;

    json_object_set_int_member(state, "version", 1);
    json_object_set_string_member(state, "boot_id", vml_host_boot_id());
    json_object_set_int_member(state, "next_holder", t->next_id);
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        VmlHolder *h = value;
        JsonObject *hj = json_object_new();
        json_object_set_int_member(hj, "holder", h->id);
        json_object_set_string_member(hj, "uuid", h->uuid);
        json_object_set_string_member(hj, "name", h->name);
        json_object_set_int_member(hj, "pid", h->pid);
        json_object_set_int_member(hj, "start_time", (gint64)h->start_time);
        json_object_set_int_member(hj, "since", h->since);
        json_array_add_object_element(holders, hj);

        GHashTableIter lit;
        gpointer lv;
        g_hash_table_iter_init(&lit, h->leases);
        while (g_hash_table_iter_next(&lit, NULL, &lv)) {
            VmlLease *l = lv;
            JsonObject *lj = vml_owner_to_json(l->owner, TRUE);
            if (fds) {
                int fd = t->backend->ops->lock_fd(l->lock);
                json_object_set_int_member(lj, "fd", fd);
                g_array_append_val(fds, fd);
            }
            json_array_add_object_element(leases, lj);
        }
    }
    json_object_set_array_member(state, "holders", holders);
    json_object_set_array_member(state, "leases", leases);
    return state;
}

/* Holder for a saved or recorded identity, if its process still lives. */
static VmlHolder *
restore_holder(VmlLeaseTable *t, gint64 id, const char *uuid, const char *name,
               pid_t pid, guint64 start_time, gint64 since)
{
    VmlHolder *h = find_process(t, pid, start_time);
    if (h)
        return h;
    if (!vml_proc_is_same(pid, start_time))
        return NULL;
    if (id <= 0 || g_hash_table_contains(t->holders, &id))
        id = t->next_id;
    return holder_new(t, id, uuid, name, pid, start_time, since, NULL);
}

/* Bring one lease back under our control; FD >= 0 is a re-exec hand-over. */
static void
restore_lease(VmlLeaseTable *t, VmlOwner *o, int fd)
{
    VmlHolder *h = restore_holder(t, o->holder, o->uuid, o->name, o->pid,
                                  o->start_time, o->since);
    if (!h) {
        if (fd >= 0)
            close(fd);
        t->backend->ops->remove_record(t->backend, o);
        vml_owner_free(o);
        return;
    }
    if (g_hash_table_contains(h->leases, o->resource)) {
        if (fd >= 0)
            close(fd);
        vml_owner_free(o);
        return;
    }
    g_autoptr(GError) error = NULL;
    o->holder = h->id;
    VmlLock *lock = fd >= 0
        ? t->backend->ops->adopt(t->backend, o, fd, &error)
        : t->backend->ops->recover(t->backend, o, vml_holder_watch_pidfd(h->watch), &error);
    if (!lock) {
        g_warning("lease of VM %s (pid %d) on %s was lost while vmleased was down: %s",
                  o->name, (int)o->pid, o->resource, error->message);
        t->backend->ops->remove_record(t->backend, o);
        vml_owner_free(o);
        return;
    }
    lease_add(t, h, o, lock);
}

void
vml_lease_table_restore(VmlLeaseTable *t, JsonObject *state, gboolean reexec)
{
    gboolean same_boot = state &&
        g_strcmp0(json_object_get_string_member_with_default(state, "boot_id", ""),
                  vml_host_boot_id()) == 0;

    if (same_boot) {
        t->next_id = MAX(t->next_id, json_object_get_int_member_with_default(state, "next_holder", 1));
        JsonArray *holders = json_object_get_array_member(state, "holders");
        for (guint i = 0; holders && i < json_array_get_length(holders); i++) {
            JsonObject *hj = json_array_get_object_element(holders, i);
            if (!hj)
                continue;
            restore_holder(t, json_object_get_int_member_with_default(hj, "holder", 0),
                           json_object_get_string_member_with_default(hj, "uuid", ""),
                           json_object_get_string_member_with_default(hj, "name", ""),
                           json_object_get_int_member_with_default(hj, "pid", 0),
                           json_object_get_int_member_with_default(hj, "start_time", 0),
                           json_object_get_int_member_with_default(hj, "since", 0));
        }
        JsonArray *leases = json_object_get_array_member(state, "leases");
        for (guint i = 0; leases && i < json_array_get_length(leases); i++) {
            JsonObject *lj = json_array_get_object_element(leases, i);
            int fd = reexec && lj ? json_object_get_int_member_with_default(lj, "fd", -1) : -1;
            VmlOwner *o = lj ? vml_owner_from_json(lj, NULL) : NULL;
            if (o)
                restore_lease(t, o, fd);
            else if (fd >= 0)
                close(fd);
        }
    }

    /* Records cover leases granted after the last state save, and show the
     * ones of processes that are gone. */
    g_autoptr(GPtrArray) records = t->backend->ops->owners(t->backend, NULL, NULL);
    for (guint i = 0; records && i < records->len; i++) {
        VmlOwner *r = records->pdata[i];
        if (!vml_owner_is_this_host(r))
            continue;   /* another host's: not ours to judge */
        if (g_strcmp0(r->boot_id, vml_host_boot_id()) != 0) {
            t->backend->ops->remove_record(t->backend, r);
            continue;
        }
        restore_lease(t, g_steal_pointer(&records->pdata[i]), -1);
    }
    g_info("restored %u holder(s) with %u lease(s)",
           g_hash_table_size(t->holders), t->n_leases);
    changed(t);
}
