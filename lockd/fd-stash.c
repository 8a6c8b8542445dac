#include "fd-stash.h"
#include "vml-str-hash.h"
#include "vml-error.h"
#include "vml-json-write.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

typedef struct {
    int fd;
    gboolean keep;
    gint64 since;
    uid_t uid;             /* who gave it: only that uid and root see it */
} Entry;

typedef struct {
    uid_t uid;             /* who may give to this owner (besides root) */
    GHashTable *entries;   /* name -> Entry* */
} Owner;

struct _VmlStash {
    GHashTable *owners;    /* uuid -> Owner* */
    guint max_per_owner;
    guint max_total;
    guint total;
};

static void
entry_free(gpointer p)
{
    g_free(p);
}

static void
owner_free(gpointer p)
{
    Owner *o = p;
    g_hash_table_unref(o->entries);
    g_free(o);
}

VmlStash *
vml_stash_new(guint max_per_owner, guint max_total)
{
    VmlStash *s = g_new0(VmlStash, 1);
    s->owners = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, owner_free);
    s->max_per_owner = max_per_owner;
    s->max_total = max_total;
    return s;
}

void
vml_stash_free(VmlStash *s, gboolean close_fds)
{
    if (!s)
        return;
    GHashTableIter it, jt;
    gpointer value, e;
    g_hash_table_iter_init(&it, s->owners);
    while (close_fds && g_hash_table_iter_next(&it, NULL, &value)) {
        g_hash_table_iter_init(&jt, ((Owner *)value)->entries);
        while (g_hash_table_iter_next(&jt, NULL, &e))
            close(((Entry *)e)->fd);
    }
    g_hash_table_unref(s->owners);
    g_free(s);
}

guint
vml_stash_size(VmlStash *s)
{
    return s->total;
}

static Owner *
owner_get(VmlStash *s, const char *owner, uid_t uid, gboolean create, GError **error)
{
    Owner *o = g_hash_table_lookup(s->owners, owner);
    if (o && uid != 0 && o->uid != uid) {
        g_set_error(error, VML_ERROR, VML_ERROR_PERMISSION_DENIED,
                    "the stash of owner %s belongs to uid %u, not %u", owner,
                    (unsigned)o->uid, (unsigned)uid);
        return NULL;
    }
    if (!o && create) {
        o = g_new0(Owner, 1);
        o->uid = uid;
        o->entries = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, entry_free);
        g_hash_table_insert(s->owners, g_strdup(owner), o);
    }
    if (!o)
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_FD, "owner %s has nothing stashed",
                    owner);
    return o;
}

static Entry *
entry_get(VmlStash *s, const char *owner, const char *name, uid_t uid, Owner **o_out,
          GError **error)
{
    Owner *o = owner_get(s, owner, uid, FALSE, error);
    if (!o)
        return NULL;
    Entry *e = g_hash_table_lookup(o->entries, name);
    /* Root's fds in an owner a lease-group member made first (it can
     * learn any VM's uuid) are not that member's: as if not there. */
    if (e && uid != 0 && e->uid != uid)
        e = NULL;
    if (!e)
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_FD, "owner %s has no fd named \"%s\"",
                    owner, name);
    if (o_out)
        *o_out = o;
    return e;
}

/* Forget NAME of O (its fd is the caller's business). */
static void
entry_remove(VmlStash *s, const char *owner, Owner *o, const char *name)
{
    g_hash_table_remove(o->entries, name);
    s->total--;
    if (g_hash_table_size(o->entries) == 0)
        g_hash_table_remove(s->owners, owner);
}

gboolean
vml_stash_give(VmlStash *s, const char *owner, const char *name, int fd, gboolean keep,
               uid_t uid, const char **limit, GError **error)
{
    *limit = NULL;
    Owner *o = g_hash_table_lookup(s->owners, owner);
    if (o && !owner_get(s, owner, uid, FALSE, error))
        return FALSE;   /* another uid's */
    if (o && g_hash_table_contains(o->entries, name)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FD_EXISTS,
                    "owner %s already has an fd named \"%s\"", owner, name);
        return FALSE;
    }
    if (s->total >= s->max_total) {
        *limit = "max_stash_total";
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "the stash holds %u fds already (max_stash_total)", s->total);
        return FALSE;
    }
    if (o && g_hash_table_size(o->entries) >= s->max_per_owner) {
        *limit = "max_stash_per_owner";
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "owner %s has %u fds stashed already (max_stash_per_owner)", owner,
                    g_hash_table_size(o->entries));
        return FALSE;
    }
    o = owner_get(s, owner, uid, TRUE, error);
    Entry *e = g_new0(Entry, 1);
    e->fd = fd;
    e->keep = keep;
    e->since = g_get_real_time() / G_USEC_PER_SEC;
    e->uid = uid;
    g_hash_table_insert(o->entries, g_strdup(name), e);
    s->total++;
    return TRUE;
}

int
vml_stash_take(VmlStash *s, const char *owner, const char *name, uid_t uid, GError **error)
{
    Owner *o;
    Entry *e = entry_get(s, owner, name, uid, &o, error);
    if (!e)
        return -1;
    int fd = e->fd;
    entry_remove(s, owner, o, name);
    return fd;
}

int
vml_stash_peek(VmlStash *s, const char *owner, const char *name, uid_t uid, GError **error)
{
    Entry *e = entry_get(s, owner, name, uid, NULL, error);
    if (!e)
        return -1;
    int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot duplicate fd \"%s\": %s",
                    name, g_strerror(errno));
    return fd;
}

gboolean
vml_stash_drop(VmlStash *s, const char *owner, const char *name, uid_t uid, GError **error)
{
    int fd = vml_stash_take(s, owner, name, uid, error);
    if (fd < 0)
        return FALSE;
    close(fd);
    return TRUE;
}

static JsonObject *
entry_json(const char *owner, const char *name, const Entry *e)
{
    JsonObject *j = json_object_new();
    json_object_set_string_member(j, "owner", owner);
    json_object_set_string_member(j, "name", name);
    json_object_set_boolean_member(j, "keep", e->keep);
    json_object_set_int_member(j, "since", e->since);
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", e->fd);
    g_autofree char *path = g_file_read_link(link, NULL);
    g_autofree char *valid = g_utf8_make_valid(path ? path : "?", -1);
    json_object_set_string_member(j, "path", valid);
    int flags = fcntl(e->fd, F_GETFL);
    int acc = flags & O_ACCMODE;
    json_object_set_string_member(j, "access", flags < 0 ? "?" : acc == O_RDWR ? "read-write"
                                               : acc == O_WRONLY ? "write-only" : "read-only");
    off_t offset = lseek(e->fd, 0, SEEK_CUR);
    json_object_set_int_member(j, "offset", offset < 0 ? -1 : (gint64)offset);
    return j;
}

static gint
compare_keys(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(a, b);
}

static void
list_owner(JsonArray *out, const char *owner, Owner *o, uid_t uid)
{
    GList *names = g_list_sort(g_hash_table_get_keys(o->entries), compare_keys);
    for (GList *l = names; l; l = l->next) {
        const Entry *e = g_hash_table_lookup(o->entries, l->data);
        if (uid == 0 || e->uid == uid)
            json_array_add_object_element(out, entry_json(owner, l->data, e));
    }
    g_list_free(names);
}

JsonArray *
vml_stash_list(VmlStash *s, const char *owner, uid_t uid, GError **error)
{
    JsonArray *out = json_array_new();
    if (owner) {
        g_autoptr(GError) local = NULL;
        Owner *o = owner_get(s, owner, uid, FALSE, &local);
        if (!o && local->code == VML_ERROR_PERMISSION_DENIED) {
            g_propagate_error(error, g_steal_pointer(&local));
            json_array_unref(out);
            return NULL;
        }
        if (o)
            list_owner(out, owner, o, uid);
        return out;
    }
    GList *owners = g_list_sort(g_hash_table_get_keys(s->owners), compare_keys);
    for (GList *l = owners; l; l = l->next) {
        Owner *o = g_hash_table_lookup(s->owners, l->data);
        if (uid == 0 || o->uid == uid)
            list_owner(out, l->data, o, uid);
    }
    g_list_free(owners);
    return out;
}

void
vml_stash_owner_gone(VmlStash *s, const char *owner)
{
    Owner *o = g_hash_table_lookup(s->owners, owner);
    if (!o)
        return;
    GHashTableIter it;
    gpointer name, value;
    guint dropped = 0;
    g_hash_table_iter_init(&it, o->entries);
    while (g_hash_table_iter_next(&it, &name, &value)) {
        Entry *e = value;
        if (e->keep)
            continue;
        close(e->fd);
        g_hash_table_iter_remove(&it);
        s->total--;
        dropped++;
    }
    if (dropped)
        g_info("owner %s has no holder left: dropped %u stashed fd(s)", owner, dropped);
    if (g_hash_table_size(o->entries) == 0)
        g_hash_table_remove(s->owners, owner);
}

void
vml_stash_save(VmlStash *s, GString *json, GArray *fds)
{
    GHashTableIter it, jt;
    gpointer owner, value, name, e;
    gboolean first = TRUE;
    g_string_append(json, ",\"stash\":[");
    g_hash_table_iter_init(&it, s->owners);
    while (g_hash_table_iter_next(&it, &owner, &value)) {
        Owner *o = value;
        g_hash_table_iter_init(&jt, o->entries);
        while (g_hash_table_iter_next(&jt, &name, &e)) {
            const Entry *en = e;
            g_string_append(json, first ? "{" : ",{");
            first = FALSE;
            vml_json_write_member_string(json, TRUE, "owner", owner);
            vml_json_write_member_string(json, FALSE, "name", name);
            vml_json_write_member_int(json, FALSE, "uid", o->uid);
            vml_json_write_member_int(json, FALSE, "given_by", en->uid);
            vml_json_write_member_int(json, FALSE, "fd", en->fd);
            vml_json_write_member_int(json, FALSE, "since", en->since);
            g_string_append_printf(json, ",\"keep\":%s}", en->keep ? "true" : "false");
            g_array_append_val(fds, en->fd);
        }
    }
    g_string_append_c(json, ']');
}

void
vml_stash_restore(VmlStash *s, JsonObject *state)
{
    JsonArray *a = state && json_object_has_member(state, "stash")
        ? json_object_get_array_member(state, "stash") : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        const char *owner = json_object_get_string_member_with_default(j, "owner", NULL);
        const char *name = json_object_get_string_member_with_default(j, "name", NULL);
        int fd = (int)json_object_get_int_member_with_default(j, "fd", -1);
        if (!owner || !name || fd < 3 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            g_warning("re-exec: stash entry %u is unusable: dropped", i);
            continue;
        }
        Owner *o = owner_get(s, owner, 0, TRUE, NULL);
        o->uid = (uid_t)json_object_get_int_member_with_default(j, "uid", 0);
        Entry *e = g_new0(Entry, 1);
        e->fd = fd;
        e->keep = json_object_get_boolean_member_with_default(j, "keep", FALSE);
        e->since = json_object_get_int_member_with_default(j, "since", 0);
        e->uid = (uid_t)json_object_get_int_member_with_default(j, "given_by", o->uid);
        g_hash_table_insert(o->entries, g_strdup(name), e);
        s->total++;
    }
    if (s->total)
        g_info("re-exec: %u stashed fd(s) kept", s->total);
}
