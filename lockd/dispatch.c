/* What each method means: parse and check its parameters (every one of
 * them hostile until checked), call the lease table, shape the reply. */
#include "dispatch.h"
#include "daemon-log.h"
#include "lock-fd-check.h"
#include "metrics.h"
#include "call-params.h"
#include "vml-protocol.h"
#include "force-unlock.h"
#include "image-open.h"
#include "lease-reconcile.h"
#include "vml-config.h"
#include "vml-owner-text.h"
#include "vml-paths.h"
#include "vml-proc.h"
#include "vml-wire.h"
#include "vml-json-request.h"
#include "vml-json-write.h"
#include "interface-description.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef void (*MethodFunc)(VmlCall *call);

/* Reply {"leases": LEASES}, each with how it came when GRANT. */
static void
reply_leases(VmlCall *call, GPtrArray *leases, gboolean grant, const int *fds, guint n_fds)
{
    GString *out = vml_conn_reply_start(64 + 256 * leases->len);
    g_string_append(out, "{\"leases\":[");
    for (guint i = 0; i < leases->len; i++) {
        g_string_append(out, i ? ",{" : "{");
        vml_lease_write_json(out, leases->pdata[i], grant);
        g_string_append_c(out, '}');
    }
    g_string_append(out, "]}");
    vml_conn_reply_text(call->conn, out, fds, n_fds);
}

/* ---- io.vmlease.Lease --------------------------------------------------- */

static void
method_register(VmlCall *call)
{
    const char *uuid, *name, *action, *program, *lockspace;
    gint64 pid;
    g_autoptr(GError) error = NULL;

    /* Whatever follows on this connection acts for this holder, or for
     * none if this Register fails. */
    vml_conn_set_holder(call->conn, 0);
    if (!call_get_string(call, call->params, "uuid", TRUE, 64, &uuid) ||
        !call_get_string(call, call->params, "name", TRUE, VML_CALL_NAME_MAX, &name) ||
        !call_get_int(call, call->params, "pid", 1, INT_MAX, &pid) ||
        !call_get_string(call, call->params, "on_lockfailure", FALSE, 16, &action) ||
        !call_get_string(call, call->params, "program", FALSE, VML_PROGRAM_MAX, &program) ||
        !call_get_string(call, call->params, "lockspace", FALSE, PATH_MAX, &lockspace))
        return;
    /* A client configured for another lockspace: nothing of what it sends
     * next may take effect here. */
    if (lockspace && g_strcmp0(lockspace, call->d->backend->lockspace) != 0) {
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "parameter", "lockspace");
        vml_conn_error(call->conn, VML_ERROR_INVALID_PARAMETER, p,
                       "vmleased uses lockspace %s, but the client's configuration "
                       "(qemu-vmlease.conf) says lockspace_dir = \"%s\"",
                       call->d->backend->lockspace, lockspace);
        return;
    }
    if (!call_is_uuid(uuid)) {
        call_param_error(call, "uuid", "is not a UUID");
        return;
    }
    if (action && !vml_lock_failure_valid(action)) {
        call_param_error(call, "on_lockfailure",
                    "must be one of default, poweroff, restart, pause, ignore");
        return;
    }
    VmlHolder *h = vml_lease_table_register(call->d->table, uuid, name, pid, action,
                                            program, vml_conn_uid(call->conn), &error);
    if (!h) {
        JsonObject *p = NULL;
        if (error->code == VML_ERROR_NO_SUCH_PROCESS) {
            p = json_object_new();
            json_object_set_int_member(p, "pid", pid);
        } else if (error->code == VML_ERROR_INVALID_PARAMETER) {
            p = json_object_new();
            json_object_set_string_member(p, "parameter", "pid");
        } else if (error->code == VML_ERROR_LIMIT) {
            p = call_limit_params("max_holders", call->d->cfg->max_holders);
        }
        vml_conn_error_gerror(call->conn, error, p);
        return;
    }
    /* An fd with Register is the VM process's mailbox (holder-mailbox.h). */
    if (call->fds && call->fds->len == 1) {
        int fd = g_array_index(call->fds, int, 0);
        g_array_index(call->fds, int, 0) = -1;
        VmlMailbox *m = vml_mailbox_new(fd, &error);
        if (!m) {
            call_param_error(call, "mailbox", error->message);
            return;
        }
        /* Only a mailbox the holder process itself keeps: whoever else had
         * it could read the holder's lock fds out of it. */
        if (h->mailbox || !vml_mailbox_is_kept_by(m, h->pid)) {
            vml_mailbox_free(m);
            call_param_error(call, "mailbox", h->mailbox ? "is given already for this holder"
                                                    : "must be open in the holder process");
            return;
        }
        vml_lease_table_set_mailbox(call->d->table, h, m);
    } else if (call->fds && call->fds->len > 1) {
        call_param_error(call, "mailbox", "must come as at most one file descriptor");
        return;
    }
    vml_conn_set_holder(call->conn, h->id);
    GString *out = vml_conn_reply_start(64 + strlen(call->d->backend->lockspace));
    g_string_append_c(out, '{');
    vml_json_write_member_int(out, TRUE, "holder", h->id);
    vml_json_write_strict_member_string(out, FALSE, "lockspace", call->d->backend->lockspace);
    g_string_append_c(out, '}');
    vml_conn_reply_text(call->conn, out, NULL, 0);
}

static void
method_acquire(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    gboolean want_fds, holder_fds, claim, reconcile;
    if (!h || !call_get_bool(call, call->params, "fds", &want_fds) ||
        !call_get_bool(call, call->params, "holder_fds", &holder_fds) ||
        !call_get_bool(call, call->params, "claim", &claim) ||
        !call_get_bool(call, call->params, "reconcile", &reconcile))
        return;
    /* Taking over another process's parked lease is libvirt's to do, for
     * its own domain: a lease-group member could register any uuid. */
    if (claim && vml_conn_uid(call->conn) != 0) {
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "uid", vml_conn_uid(call->conn));
        vml_conn_error(call->conn, VML_ERROR_PERMISSION_DENIED, p,
                       "only root (libvirtd resuming a migrated domain) may claim parked "
                       "leases; uid %u may not", (unsigned)vml_conn_uid(call->conn));
        return;
    }
    /* A holder taking again what it holds (libvirtd at resume, after the
     * QEMU child's start): its leases' paths answer for themselves. */
    call->held_paths = h;
    g_autoptr(GArray) reqs = call_get_named_requests(call);
    call->held_paths = NULL;
    if (!reqs)
        return;
    if (want_fds && !call->d->backend->ops->lock_fds) {
        call_param_error(call, "fds", "cannot be had from this backend: its leases live in the "
                    "lock service, not in fds");
        return;
    }
    if (want_fds && reconcile) {
        /* Reconcile adds backing images: more fds than one reply may carry. */
        call_param_error(call, "reconcile", "cannot be combined with fds");
        return;
    }
    if (want_fds && reqs->len > VML_FDS_MAX) {
        call_param_error(call, "resources", "lists more resources than fds fit in one reply (253)");
        return;
    }
    JsonObject *conflict = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) leases = reconcile
        ? vml_reconcile_acquire(call->d->table, h, (VmlRequest *)reqs->data, reqs->len,
                                holder_fds, claim, &conflict, &error)
        : vml_lease_table_acquire(call->d->table, h, (VmlRequest *)reqs->data, reqs->len,
                                  holder_fds, claim, &conflict, &error);
    if (!leases) {
        if (error->code == VML_ERROR_LIMIT)
            conflict = call_limit_params("max_leases_per_holder",
                                         call->d->cfg->max_leases_per_holder);
        vml_conn_error_gerror(call->conn, error, conflict);
        return;
    }
    g_autofree int *fds = want_fds ? g_new(int, leases->len) : NULL;
    for (guint i = 0; fds && i < leases->len; i++)
        fds[i] = call->d->backend->ops->lock_fd(((VmlLease *)leases->pdata[i])->lock);
    if (fds)
        vml_lease_table_handed(h, leases, vml_conn_pid(call->conn));
    reply_leases(call, leases, TRUE, fds, fds ? leases->len : 0);
    /* libvirtd's acquire at the start's resume (through the VM's own
     * fds, from outside it): the VM has exec'd QEMU by then. */
    if (holder_fds && vml_conn_pid(call->conn) != h->pid)
        vml_lock_fd_check(call->d->backend, h);
}

static void stash_error(VmlCall *call, const GError *error, const char *owner, const char *name,
                        const char *limit);

/* "read-write" or "read-only", as the lease mode it needs. */
static gboolean
get_open_mode(VmlCall *call, VmlMode *mode)
{
    const char *m;
    if (!call_get_string(call, call->params, "mode", TRUE, 16, &m))
        return FALSE;
    if (g_strcmp0(m, "read-write") == 0)
        *mode = VML_MODE_EXCLUSIVE;
    else if (g_strcmp0(m, "read-only") == 0)
        *mode = VML_MODE_SHARED;
    else
        return call_param_error(call, "mode", "must be read-write or read-only");
    return TRUE;
}

static void
reply_image_fd(VmlCall *call, int fd, JsonObject *params, const GError *error)
{
    if (fd < 0) {
        vml_conn_error_gerror(call->conn, error, params);
        return;
    }
    vml_conn_reply(call->conn, NULL, &fd, 1);
    close(fd);
}

static void
method_open_image(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    const char *path;
    VmlMode mode;
    if (!h || !call_get_string(call, call->params, "path", TRUE, PATH_MAX, &path) ||
        !get_open_mode(call, &mode))
        return;
    g_autofree char *canonical = NULL;
    g_autofree char *key = call_path_key(call, "path", path, &canonical);
    if (!key)
        return;
    g_autoptr(GError) error = NULL;
    JsonObject *params = NULL;
    int fd = vml_image_open_leased(call->d->table, h, key, canonical, mode,
                                   vml_conn_creds(call->conn), &params, &error);
    reply_image_fd(call, fd, params, error);
}

static void
method_reopen(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    const char *path, *name;
    VmlMode mode;
    if (!h || !call_get_string(call, call->params, "path", TRUE, PATH_MAX, &path) ||
        !get_open_mode(call, &mode) ||
        !call_get_string(call, call->params, "stash_name", FALSE, 255, &name))
        return;
    if (!call->fds || call->fds->len != 1) {
        call_param_error(call, "fd", "must come as exactly one file descriptor with the message");
        return;
    }
    g_autofree char *canonical = NULL;
    g_autofree char *key = call_path_key(call, "path", path, &canonical);
    if (!key)
        return;
    g_autofree char *default_name = g_strconcat("reopen:", canonical, NULL);
    if (!name || !*name)
        name = default_name;
    int old_fd = g_array_index(call->fds, int, 0);
    g_array_index(call->fds, int, 0) = -1;   /* the reopen's now */
    g_autoptr(GError) error = NULL;
    JsonObject *params = NULL;
    const char *limit = NULL;
    int fd = vml_image_reopen(call->d->table, call->d->stash, h, key, canonical, old_fd, mode,
                              name,
                              vml_conn_creds(call->conn), &limit, &params, &error);
    if (limit) {
        stash_error(call, error, h->uuid, name, limit);
        return;
    }
    if (fd < 0 && !params && error->code == VML_ERROR_INVALID_PARAMETER) {
        params = json_object_new();
        json_object_set_string_member(params, "parameter", "fd");
    }
    reply_image_fd(call, fd, params, error);
}

static void
method_release(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    if (!h)
        return;
    const char *park, *status_file;
    gboolean reconcile;
    if (!call_get_string(call, call->params, "park", FALSE, 16, &park) ||
        !call_get_string(call, call->params, "status_file", FALSE, PATH_MAX, &status_file) ||
        !call_get_bool(call, call->params, "reconcile", &reconcile))
        return;
    /* vmleased reads it as root: libvirtd's to give. */
    if (status_file && (vml_conn_uid(call->conn) != 0 || !g_path_is_absolute(status_file))) {
        call_param_error(call, "status_file", "is for root (libvirtd) only, as an absolute path");
        return;
    }
    if (park && !vml_park_reason_valid(park)) {
        call_param_error(call, "park", "must be paused or migrating");
        return;
    }
    call->held_paths = h;
    g_autoptr(GArray) reqs = call_get_requests(call, FALSE);
    call->held_paths = NULL;
    if (!reqs)
        return;
    gboolean all = !json_object_has_member(call->params, "resources") ||
                   JSON_NODE_HOLDS_NULL(json_object_get_member(call->params, "resources"));
    g_autofree const char **keys = g_new0(const char *, reqs->len + 1);
    for (guint i = 0; i < reqs->len; i++)
        keys[i] = vml_holder_held_key(h, &g_array_index(reqs, VmlRequest, i));
    guint released, parked = 0;
    g_autoptr(GError) error = NULL;
    gboolean ok = park
        ? vml_lease_table_park(call->d->table, h, all ? NULL : keys, reqs->len, park,
                               status_file, &parked, &released, &error)
        : reconcile && !all
        ? vml_reconcile_release(call->d->table, h, keys, reqs->len, &released, &error)
        : vml_lease_table_release(call->d->table, h, all ? NULL : keys, reqs->len,
                                  &released, &error);
    if (!ok) {
        JsonObject *p = json_object_new();
        for (guint i = 0; i < reqs->len; i++) {
            if (!g_hash_table_contains(h->leases, keys[i])) {
                json_object_set_string_member(p, "resource", keys[i]);
                const VmlRequest *r = &g_array_index(reqs, VmlRequest, i);
                if (r->path) {
                    json_object_set_string_member(p, "path", r->path);
                    /* Named by the path given, as the caller knows it. */
                    if (error->code == VML_ERROR_NOT_HELD) {
                        g_clear_error(&error);
                        g_set_error(&error, VML_ERROR, VML_ERROR_NOT_HELD,
                                    "holder %" G_GINT64_FORMAT " (VM %s) holds no lease on %s "
                                    "(resource %s)", h->id, h->name, r->given, keys[i]);
                    }
                }
                break;
            }
        }
        vml_conn_error_gerror(call->conn, error, p);
        return;
    }
    GString *out = vml_conn_reply_start(48);
    g_string_append_c(out, '{');
    vml_json_write_member_int(out, TRUE, "released", released);
    if (park)
        vml_json_write_member_int(out, FALSE, "parked", parked);
    g_string_append_c(out, '}');
    vml_conn_reply_text(call->conn, out, NULL, 0);
}

static void
method_observe(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    if (!h)
        return;
    g_autoptr(GArray) reqs = call_get_named_requests(call);
    if (!reqs)
        return;
    g_autoptr(GError) error = NULL;
    if (!vml_lease_table_observe(call->d->table, h, (VmlRequest *)(void *)reqs->data, reqs->len,
                                 &error)) {
        JsonObject *p = NULL;
        if (error->code == VML_ERROR_INVALID_PARAMETER) {
            p = json_object_new();
            json_object_set_string_member(p, "parameter", "resources");
        }
        vml_conn_error_gerror(call->conn, error, p);
        return;
    }
    JsonArray *observing = json_array_new();
    for (guint i = 0; i < reqs->len; i++) {
        const VmlRequest *r = &g_array_index(reqs, VmlRequest, i);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "resource", r->key);
        json_object_set_string_member(o, "path", r->path);
        json_array_add_object_element(observing, o);
    }
    JsonObject *reply = json_object_new();
    json_object_set_array_member(reply, "observing", observing);
    vml_conn_reply(call->conn, reply, NULL, 0);
}

static void
method_inquire(VmlCall *call)
{
    VmlHolder *h = call_get_holder(call);
    if (!h)
        return;
    g_autoptr(GPtrArray) leases = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value))
        g_ptr_array_add(leases, value);
    reply_leases(call, leases, FALSE, NULL, 0);
}

/* ---- io.vmlease.Admin --------------------------------------------------- */

static void
method_list(VmlCall *call)
{
    vml_lock_fd_check_all(call->d->backend, call->d->table);
    g_autoptr(GList) list = vml_lease_table_holders(call->d->table);
    GString *out = vml_conn_reply_start(4096);
    g_string_append(out, "{\"holders\":[");
    for (GList *l = list; l; l = l->next) {
        if (l != list)
            g_string_append_c(out, ',');
        vml_holder_write_json_summary(out, l->data);
    }
    g_string_append(out, "]}");
    vml_conn_reply_text(call->conn, out, NULL, 0);
}

/* Resources per page of a listing of everything: a page stays far
 * below the 1 MiB a message may have. */
#define OWNERS_PAGE_DEFAULT 1000
#define OWNERS_PAGE_MAX 2000

static void
method_owners(VmlCall *call)
{
    JsonArray *paths;
    g_autoptr(GPtrArray) keys = NULL;
    g_autoptr(GHashTable) owners_of = NULL;
    const char *after = NULL;
    gint64 max = OWNERS_PAGE_DEFAULT;

    if (!call_get_array(call, call->params, "paths", FALSE, &paths) ||
        !call_get_string(call, call->params, "after", FALSE, VML_CALL_FIELD_MAX + PATH_MAX,
                         &after) ||
        (json_object_has_member(call->params, "max") &&
         !call_get_int(call, call->params, "max", 1, OWNERS_PAGE_MAX, &max)))
        return;
    if (paths) {
        keys = g_ptr_array_new_with_free_func(g_free);
        for (guint i = 0; i < json_array_get_length(paths); i++) {
            JsonNode *n = json_array_get_element(paths, i);
            if (json_node_get_value_type(n) != G_TYPE_STRING) {
                call_param_error(call, "paths", "must hold strings");
                return;
            }
            char *key = call_path_key(call, "paths", json_node_get_string(n), NULL);
            if (!key)
                return;
            g_ptr_array_add(keys, key);
        }
    }
    g_autofree char *next = NULL;
    g_autoptr(GPtrArray) order = NULL;
    owners_of = vml_lease_table_all_owners(call->d->table, keys, after, (guint)max, &next,
                                           keys ? NULL : &order);
    /* A path asked for with no lease or record on it may still be locked
     * by a process nobody registered: name that process. */
    for (guint i = 0; paths && i < keys->len; i++) {
        if (g_hash_table_contains(owners_of, keys->pdata[i]))
            continue;
        GPtrArray *lockers = vml_lease_table_lockers(call->d->table, keys->pdata[i]);
        if (lockers->len)
            g_hash_table_insert(owners_of, g_strdup(keys->pdata[i]), lockers);
        else
            g_ptr_array_unref(lockers);
    }
    /* Everything: a page at a time in key order (NEXT asks for the page
     * after this one). */
    if (!keys)
        keys = g_ptr_array_ref(order);
    /* Written as text: a page of a thousand resources as a json-glib tree
     * costs most of the call in making and freeing it. */
    VmlBackend *be = call->d->backend;
    GString *out = vml_conn_reply_start(256 * keys->len + 64);
    /* NEXT first: a client can ask for that page before it reads this one. */
    g_string_append_c(out, '{');
    if (next) {
        vml_json_write_strict_member_string(out, TRUE, "next", next);
        g_string_append_c(out, ',');
    }
    g_string_append(out, "\"resources\":[");
    for (guint i = 0; i < keys->len; i++) {
        GPtrArray *owners = g_hash_table_lookup(owners_of, keys->pdata[i]);
        g_string_append(out, i ? ",{" : "{");
        vml_json_write_strict_member_string(out, TRUE, "resource", keys->pdata[i]);
        /* The name asked by, else the one its first owner holds it by. */
        const char *named = paths ? json_array_get_string_element(paths, i) : NULL;
        for (guint j = 0; !named && owners && j < owners->len; j++)
            named = ((const VmlOwner *)owners->pdata[j])->path;
        if (named)
            vml_json_write_strict_member_string(out, FALSE, "path", named);
        g_string_append(out, ",\"owners\":[");
        for (guint j = 0; owners && j < owners->len; j++) {
            const VmlOwner *o = owners->pdata[j];
            g_autofree char *state = be->ops->owner_host_state
                ? be->ops->owner_host_state(be, o->machine_id) : NULL;
            if (j)
                g_string_append_c(out, ',');
            vml_owner_write_json(out, o, state);
        }
        g_string_append(out, "]}");
    }
    g_string_append(out, "]}");
    vml_conn_reply_text(call->conn, out, NULL, 0);
}

static void
method_hosts(VmlCall *call)
{
    VmlBackend *be = call->d->backend;
    if (!be->ops->hosts) {
        vml_conn_error(call->conn, VML_ERROR_BACKEND, NULL,
                       "backend %s has no hosts: it is local to this one", call->d->cfg->backend);
        return;
    }
    g_autoptr(GError) error = NULL;
    JsonObject *reply = be->ops->hosts(be, &error);
    if (!reply) {
        vml_conn_error_gerror(call->conn, error, NULL);
        return;
    }
    vml_conn_reply(call->conn, reply, NULL, 0);
}

static void
method_status(VmlCall *call)
{
    VmlDaemon *d = call->d;
    JsonObject *reply = json_object_new();
    json_object_set_string_member(reply, "version", VMLEASE_VERSION);
    json_object_set_int_member(reply, "pid", getpid());
    json_object_set_string_member(reply, "backend", d->backend->ops->name);
    json_object_set_string_member(reply, "lockspace", d->backend->lockspace);
    json_object_set_string_member(reply, "host", vml_host_name());
    json_object_set_int_member(reply, "started", d->started);
    json_object_set_int_member(reply, "reexecs", d->reexecs);
    json_object_set_int_member(reply, "holders", vml_lease_table_n_holders(d->table));
    json_object_set_int_member(reply, "leases", vml_lease_table_n_leases(d->table));
    json_object_set_int_member(reply, "stashed", vml_stash_size(d->stash));
    json_object_set_string_member(reply, "log_level", vml_log_level());
    vml_lock_fd_check_all(d->backend, d->table);
    json_object_set_int_member(reply, "holders_without_lock_fds",
                               vml_lock_fd_missing_count(d->table));
    vml_conn_reply(call->conn, reply, NULL, 0);
}

/* Verbosity from now until the next reload or restart, which go back to
 * the configuration's log_level (as virt-admin's daemon-log-filters). */
static void
method_set_log_level(VmlCall *call)
{
    const char *level;
    if (!call_get_string(call, call->params, "level", TRUE, 16, &level))
        return;
    g_autofree char *previous = g_strdup(vml_log_level());
    if (!vml_log_set_level(level)) {
        call_param_error(call, "level", "must be one of " VML_LOG_LEVEL_NAMES);
        return;
    }
    g_message("log level %s (was %s), set by uid %u (pid %d) until the next reload",
              level, previous, (unsigned)vml_conn_uid(call->conn), (int)vml_conn_pid(call->conn));
    JsonObject *reply = json_object_new();
    json_object_set_string_member(reply, "level", vml_log_level());
    json_object_set_string_member(reply, "previous", previous);
    vml_conn_reply(call->conn, reply, NULL, 0);
}

static void
method_force_unlock(VmlCall *call)
{
    const char *path;
    gboolean force;
    if (!call_get_string(call, call->params, "path", TRUE, PATH_MAX, &path) ||
        !call_get_bool(call, call->params, "force", &force))
        return;
    g_autofree char *canonical = NULL;
    g_autofree char *key = call_path_key(call, "path", path, &canonical);
    if (!key)
        return;
    g_autoptr(GError) error = NULL;
    JsonObject *reply = NULL, *params = NULL;
    if (!vml_force_unlock(call->d->table, key, canonical, force, &reply, &params, &error)) {
        if (!params && error->code != VML_ERROR_FAILED) {
            params = json_object_new();
            json_object_set_string_member(params, "path", canonical);
        }
        vml_conn_error_gerror(call->conn, error, params);
        return;
    }
    vml_conn_reply(call->conn, reply, NULL, 0);
}

/* ---- io.vmlease.Stash ----------------------------------------------------- */

#define STASH_NAME_MAX 255

/* owner and name, checked; FALSE after an error reply. */
static gboolean
stash_params(VmlCall *call, const char **owner, const char **name)
{
    if (!call_get_string(call, call->params, "owner", TRUE, 64, owner) ||
        (name && !call_get_string(call, call->params, "name", TRUE, STASH_NAME_MAX, name)))
        return FALSE;
    if (!call_is_uuid(*owner))
        return call_param_error(call, "owner", "is not a UUID");
    if (name && !**name)
        return call_param_error(call, "name", "is empty");
    return TRUE;
}

static void
stash_error(VmlCall *call, const GError *error, const char *owner, const char *name,
            const char *limit)
{
    JsonObject *p = json_object_new();
    if (limit) {
        json_object_unref(p);
        p = call_limit_params(limit, g_str_equal(limit, "max_stash_total")
                                    ? call->d->cfg->max_stash_total
                                    : call->d->cfg->max_stash_per_owner);
    } else if (error->code == VML_ERROR_PERMISSION_DENIED) {
        json_object_set_int_member(p, "uid", vml_conn_uid(call->conn));
    } else {
        json_object_set_string_member(p, "owner", owner);
        if (name)
            json_object_set_string_member(p, "name", name);
    }
    vml_conn_error_gerror(call->conn, error, p);
}

static void
method_stash_give(VmlCall *call)
{
    const char *owner, *name;
    gboolean keep;
    if (!stash_params(call, &owner, &name) || !call_get_bool(call, call->params, "keep", &keep))
        return;
    if (!call->fds || call->fds->len != 1) {
        call_param_error(call, "fd", "must come as exactly one file descriptor with the message");
        return;
    }
    int fd = g_array_index(call->fds, int, 0);
    g_autoptr(GError) error = NULL;
    const char *limit;
    if (!vml_stash_give(call->d->stash, owner, name, fd, keep, vml_conn_uid(call->conn),
                        &limit, &error)) {
        stash_error(call, error, owner, name, limit);
        return;
    }
    g_array_index(call->fds, int, 0) = -1;   /* the stash's now */
    vml_conn_reply(call->conn, NULL, NULL, 0);
}

/* Take or Peek: the fd goes back with the reply. */
static void
stash_hand_out(VmlCall *call, gboolean take)
{
    const char *owner, *name;
    if (!stash_params(call, &owner, &name))
        return;
    g_autoptr(GError) error = NULL;
    uid_t uid = vml_conn_uid(call->conn);
    int fd = take ? vml_stash_take(call->d->stash, owner, name, uid, &error)
                  : vml_stash_peek(call->d->stash, owner, name, uid, &error);
    if (fd < 0) {
        stash_error(call, error, owner, name, NULL);
        return;
    }
    vml_conn_reply(call->conn, NULL, &fd, 1);
    close(fd);
}

static void
method_stash_take(VmlCall *call)
{
    stash_hand_out(call, TRUE);
}

static void
method_stash_peek(VmlCall *call)
{
    stash_hand_out(call, FALSE);
}

static void
method_stash_drop(VmlCall *call)
{
    const char *owner, *name;
    if (!stash_params(call, &owner, &name))
        return;
    g_autoptr(GError) error = NULL;
    if (!vml_stash_drop(call->d->stash, owner, name, vml_conn_uid(call->conn), &error)) {
        stash_error(call, error, owner, name, NULL);
        return;
    }
    vml_conn_reply(call->conn, NULL, NULL, 0);
}

static void
method_stash_list(VmlCall *call)
{
    const char *owner;
    if (!call_get_string(call, call->params, "owner", FALSE, 64, &owner))
        return;
    if (owner && !call_is_uuid(owner)) {
        call_param_error(call, "owner", "is not a UUID");
        return;
    }
    g_autoptr(GError) error = NULL;
    JsonArray *fds = vml_stash_list(call->d->stash, owner, vml_conn_uid(call->conn), &error);
    if (!fds) {
        stash_error(call, error, owner, NULL, NULL);
        return;
    }
    JsonObject *reply = json_object_new();
    json_object_set_array_member(reply, "fds", fds);
    vml_conn_reply(call->conn, reply, NULL, 0);
}

/* ---- org.varlink.service ------------------------------------------------ */

static void
method_get_info(VmlCall *call)
{
    JsonObject *reply = json_object_new();
    JsonArray *ifaces = json_array_new();
    json_object_set_string_member(reply, "vendor", "vmlease");
    json_object_set_string_member(reply, "product", "vmleased");
    json_object_set_string_member(reply, "version", VMLEASE_VERSION);
    json_object_set_string_member(reply, "url", "");
    json_array_add_string_element(ifaces, "org.varlink.service");
    for (guint i = 0; i < G_N_ELEMENTS(vml_interfaces); i++)
        json_array_add_string_element(ifaces, vml_interfaces[i].name);
    json_object_set_array_member(reply, "interfaces", ifaces);
    vml_conn_reply(call->conn, reply, NULL, 0);
}

/* The varlink error for an interface we do not serve; its name kept exact
 * in the parameters, shown sanitized. */
static void
interface_not_found(VmlConn *conn, const char *iface)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "interface", iface);
    g_autofree char *shown = g_strndup(iface, 200);
    g_autofree char *safe = vml_text_sanitize(shown);
    vml_conn_error(conn, VML_ERROR_INTERFACE_NOT_FOUND, p, "no interface '%s' here", safe);
}

/* The interface file of IFACE, NULL if it is none of ours. */
static const VmlInterfaceText *
find_interface(const char *iface)
{
    for (guint i = 0; i < G_N_ELEMENTS(vml_interfaces); i++) {
        if (g_str_equal(vml_interfaces[i].name, iface))
            return &vml_interfaces[i];
    }
    return NULL;
}

/* Whether IFACE (the part of a method name before its last dot) is one
 * this daemon serves. */
static gboolean
serves_interface(const char *iface)
{
    return g_str_equal(iface, "org.varlink.service") || find_interface(iface);
}

static void
method_get_interface_description(VmlCall *call)
{
    const char *iface;
    if (!call_get_string(call, call->params, "interface", TRUE, 256, &iface))
        return;
    const VmlInterfaceText *found = find_interface(iface);
    if (!found) {
        interface_not_found(call->conn, iface);
        return;
    }
    JsonObject *reply = json_object_new();
    json_object_set_string_member(reply, "description", found->description);
    vml_conn_reply(call->conn, reply, NULL, 0);
}

static void
method_metrics(VmlCall *call)
{
    GString *out = vml_conn_reply_start(1024);
    g_string_append_c(out, '{');
    vml_metrics_write(out);
    g_string_append_c(out, '}');
    vml_conn_reply_text(call->conn, out, NULL, 0);
}

typedef struct {
    const char *name;
    VmlAccess access;     /* least access needed */
    gboolean lease_only;  /* only on the lease socket */
    MethodFunc func;
    const char *doing;    /* what it does, for a refusal's message */
} Method;

static const Method methods[] = {
    { VML_METHOD_REGISTER, VML_ACCESS_LEASE, TRUE, method_register, "register a VM" },
    { VML_METHOD_ACQUIRE, VML_ACCESS_LEASE, TRUE, method_acquire, "take leases" },
    { VML_METHOD_RELEASE, VML_ACCESS_LEASE, TRUE, method_release, "release leases" },
    { VML_METHOD_INQUIRE, VML_ACCESS_LEASE, TRUE, method_inquire, "list a VM's leases" },
    { VML_METHOD_OBSERVE, VML_ACCESS_LEASE, TRUE, method_observe, "observe images" },
    { VML_METHOD_OPEN_IMAGE, VML_ACCESS_LEASE, TRUE, method_open_image, "open images" },
    { VML_METHOD_REOPEN, VML_ACCESS_LEASE, TRUE, method_reopen, "reopen images" },
    { VML_METHOD_STASH_GIVE, VML_ACCESS_LEASE, TRUE, method_stash_give, "stash fds" },
    { VML_METHOD_STASH_TAKE, VML_ACCESS_LEASE, TRUE, method_stash_take, "take stashed fds" },
    { VML_METHOD_STASH_PEEK, VML_ACCESS_LEASE, TRUE, method_stash_peek, "look at stashed fds" },
    { VML_METHOD_STASH_LIST, VML_ACCESS_LEASE, TRUE, method_stash_list, "list stashed fds" },
    { VML_METHOD_STASH_DROP, VML_ACCESS_LEASE, TRUE, method_stash_drop, "drop stashed fds" },
    { VML_METHOD_LIST, VML_ACCESS_READ, FALSE, method_list, "list holders" },
    { VML_METHOD_OWNERS, VML_ACCESS_READ, FALSE, method_owners, "list owners" },
    { VML_METHOD_STATUS, VML_ACCESS_READ, FALSE, method_status, "read the status" },
    { VML_METHOD_METRICS, VML_ACCESS_READ, FALSE, method_metrics, "read the metrics" },
    { VML_METHOD_HOSTS, VML_ACCESS_READ, FALSE, method_hosts, "list hosts" },
    { VML_METHOD_FORCE_UNLOCK, VML_ACCESS_ROOT, FALSE, method_force_unlock,
      "clear in-use marks (force-unlock)" },
    { VML_METHOD_SET_LOG_LEVEL, VML_ACCESS_ROOT, FALSE, method_set_log_level,
      "change the log level (log-level)" },
    { VML_METHOD_GET_INFO, VML_ACCESS_READ, FALSE, method_get_info, "describe the service" },
    { VML_METHOD_GET_INTERFACE_DESCRIPTION, VML_ACCESS_READ, FALSE,
      method_get_interface_description, "describe the interface" },
};

/* The metrics of one call of M answered with OUTCOME (vml_conn_call_outcome)
 * after USEC. */
static void
count_call(const Method *m, int outcome, gint64 usec)
{
    gboolean acquire = m->func == method_acquire, release = m->func == method_release;
    if (acquire || release)
        vml_metrics_observe(acquire ? VML_LATENCY_ACQUIRE : VML_LATENCY_RELEASE, usec);
    if (outcome == VML_ERROR_CONFLICT || outcome == VML_ERROR_IMAGE_BUSY)
        vml_metrics_count(acquire ? VML_COUNT_CONFLICTS : VML_COUNT_CALL_ERRORS, 1);
    else if (outcome >= 0)
        vml_metrics_count(VML_COUNT_CALL_ERRORS, 1);
    else if (acquire || release)
        vml_metrics_count(acquire ? VML_COUNT_ACQUIRES : VML_COUNT_RELEASES, 1);
}

/* Why M may not be called on CONN, and what would do: said in words, the
 * method's name only in the error's parameters. */
static void
refuse(VmlConn *conn, const Method *m)
{
    JsonObject *p = json_object_new();
    uid_t uid = vml_conn_uid(conn);
    json_object_set_int_member(p, "uid", uid);
    json_object_set_string_member(p, "method", m->name);
    if (m->lease_only && !vml_conn_is_lease_socket(conn))
        vml_conn_error(conn, VML_ERROR_PERMISSION_DENIED, p,
                       "the admin socket does not %s: that is done on the lease socket "
                       "(vmleased.sock), by root or a member of lease_group", m->doing);
    else if (m->access == VML_ACCESS_ROOT && uid == 0)
        vml_conn_error(conn, VML_ERROR_PERMISSION_DENIED, p,
                       "the lease socket does not %s: root does that on the admin socket "
                       "(vmleased-admin.sock)", m->doing);
    else if (m->access == VML_ACCESS_ROOT)
        vml_conn_error(conn, VML_ERROR_PERMISSION_DENIED, p,
                       "uid %u may not %s: only root may (run it as root)", (unsigned)uid,
                       m->doing);
    else
        vml_conn_error(conn, VML_ERROR_PERMISSION_DENIED, p,
                       "uid %u may not %s: root may, and members of %s", (unsigned)uid,
                       m->doing, m->access == VML_ACCESS_LEASE ? "lease_group" : "admin_group");
}

/* ---- message checks ----------------------------------------------------- */

/* How many bytes of S, at most MAX, end on a character boundary: a human
 * message cut in the middle of a character would not be UTF-8. */
static int
utf8_prefix_len(const char *s, gsize max)
{
    gsize n = strnlen(s, max + 1);
    if (n <= max)
        return (int)n;
    return (int)(g_utf8_find_prev_char(s, s + max + 1) - s);
}

static void
dispatch_message(VmlDaemon *d, VmlConn *conn, const char *msg, gsize len, GArray *fds)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) obj = vml_request_cache_parse(d->requests, msg, len, &error);
    if (!obj) {
        vml_conn_error(conn, VML_ERROR_INVALID_MESSAGE, NULL, "%s", error->message);
        return;
    }
    JsonNode *mnode = json_object_get_member(obj, "method");
    if (!mnode || json_node_get_value_type(mnode) != G_TYPE_STRING) {
        vml_conn_error(conn, VML_ERROR_INVALID_MESSAGE, NULL,
                       "message has no \"method\" string");
        return;
    }
    const char *name = json_node_get_string(mnode);
    JsonNode *pnode = json_object_get_member(obj, "parameters");
    if (pnode && !JSON_NODE_HOLDS_OBJECT(pnode) && !JSON_NODE_HOLDS_NULL(pnode)) {
        vml_conn_error(conn, VML_ERROR_INVALID_MESSAGE, NULL,
                       "\"parameters\" must be an object");
        return;
    }
    g_autoptr(JsonObject) params = (pnode && JSON_NODE_HOLDS_OBJECT(pnode))
        ? json_object_ref(json_node_get_object(pnode)) : json_object_new();

    for (guint i = 0; i < G_N_ELEMENTS(methods); i++) {
        const Method *m = &methods[i];
        if (g_strcmp0(m->name, name) != 0)
            continue;
        if ((m->lease_only && !vml_conn_is_lease_socket(conn)) ||
            vml_conn_access(conn) < m->access) {
            refuse(conn, m);
            return;
        }
        VmlCall call = { .d = d, .conn = conn, .params = params, .fds = fds };
        gint64 started = g_get_monotonic_time();
        vml_conn_call_begin(conn);
        m->func(&call);
        int outcome = vml_conn_call_outcome(conn);
        gint64 took = g_get_monotonic_time() - started;
        count_call(m, outcome, took);
        vml_debug("%s from pid %d (uid %u): %s in %" G_GINT64_FORMAT " us", name,
                  (int)vml_conn_pid(conn), (unsigned)vml_conn_uid(conn),
                  outcome >= 0 ? vml_error_name((VmlErrorCode)outcome) : "answered", took);
        return;
    }
    /* A method of an interface we do not serve: that interface is what is
     * not found (varlink's InterfaceNotFound). */
    const char *dot = strrchr(name, '.');
    g_autofree char *iface = dot ? g_strndup(name, (gsize)(dot - name)) : g_strdup(name);
    if (!serves_interface(iface)) {
        interface_not_found(conn, iface);
        return;
    }
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "method", name);
    /* The message is for people: no control character of the caller's
     * reaches a terminal through it ("method" keeps the exact name). */
    g_autofree char *shown = g_strndup(name, utf8_prefix_len(name, 200));
    g_autofree char *safe = vml_text_sanitize(shown);
    vml_conn_error(conn, VML_ERROR_METHOD_NOT_FOUND, p, "no method '%s'", safe);
}

void
vml_dispatch(VmlDaemon *d, VmlConn *conn, const char *msg, gsize len, GArray *fds)
{
    dispatch_message(d, conn, msg, len, fds);
    /* Whatever fds the method did not keep (all, for most methods). */
    vml_fds_close(fds);
}
