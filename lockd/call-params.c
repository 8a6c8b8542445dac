#include "call-params.h"
#include "open-as.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

gboolean
call_param_error(VmlCall *call, const char *name, const char *reason)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "parameter", name);
    vml_conn_error(call->conn, VML_ERROR_INVALID_PARAMETER, p,
                   "parameter '%s' %s", name, reason);
    return FALSE;
}

gboolean
call_get_string(VmlCall *call, JsonObject *obj, const char *name, gboolean required,
           gsize max_len, const char **out)
{
    JsonNode *n = json_object_get_member(obj, name);
    *out = NULL;
    if (!n || JSON_NODE_HOLDS_NULL(n)) {
        if (required)
            return call_param_error(call, name, "is missing");
        return TRUE;
    }
    if (json_node_get_value_type(n) != G_TYPE_STRING)
        return call_param_error(call, name, "must be a string");
    const char *s = json_node_get_string(n);
    /* json-glib decodes a lone surrogate escape into invalid UTF-8. */
    if (!g_utf8_validate(s, -1, NULL))
        return call_param_error(call, name, "is not valid UTF-8");
    if (strlen(s) > max_len)
        return call_param_error(call, name, "is too long");
    for (const char *p = s; *p; p++) {
        if ((guchar)*p < 0x20 || *p == 0x7f)
            return call_param_error(call, name, "contains a control character");
    }
    *out = s;
    return TRUE;
}

gboolean
call_get_int(VmlCall *call, JsonObject *obj, const char *name, gint64 min, gint64 max,
             gint64 *out)
{
    JsonNode *n = json_object_get_member(obj, name);
    if (!n)
        return call_param_error(call, name, "is missing");
    if (json_node_get_value_type(n) != G_TYPE_INT64)
        return call_param_error(call, name, "must be an integer");
    *out = json_node_get_int(n);
    if (*out < min || *out > max)
        return call_param_error(call, name, "is out of range");
    return TRUE;
}

gboolean
call_get_bool(VmlCall *call, JsonObject *obj, const char *name, gboolean *out)
{
    JsonNode *n = json_object_get_member(obj, name);
    *out = FALSE;
    if (!n || JSON_NODE_HOLDS_NULL(n))
        return TRUE;
    if (json_node_get_value_type(n) != G_TYPE_BOOLEAN)
        return call_param_error(call, name, "must be true or false");
    *out = json_node_get_boolean(n);
    return TRUE;
}

/* LimitReached(limit, value) parameters for a limit from the config. */
JsonObject *
call_limit_params(const char *limit, guint value)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "limit", limit);
    json_object_set_int_member(p, "value", value);
    return p;
}

gboolean
call_get_array(VmlCall *call, JsonObject *obj, const char *name, gboolean required, JsonArray **out)
{
    JsonNode *n = json_object_get_member(obj, name);
    *out = NULL;
    if (!n || JSON_NODE_HOLDS_NULL(n)) {
        if (required)
            return call_param_error(call, name, "is missing");
        return TRUE;
    }
    if (!JSON_NODE_HOLDS_ARRAY(n))
        return call_param_error(call, name, "must be an array");
    *out = json_node_get_array(n);
    if (json_array_get_length(*out) > call->d->cfg->max_resources_per_call) {
        JsonObject *p = call_limit_params("max_resources_per_call",
                                     call->d->cfg->max_resources_per_call);
        vml_conn_error(call->conn, VML_ERROR_LIMIT, p,
                       "parameter '%s' lists more than %u entries (max_resources_per_call)",
                       name, call->d->cfg->max_resources_per_call);
        return FALSE;
    }
    return TRUE;
}

gboolean
call_is_uuid(const char *s)
{
    return g_uuid_string_is_valid(s);
}

GStrv
vml_call_own_dirs(const VmlDaemonConfig *cfg, const VmlBackend *backend)
{
    g_autoptr(GStrvBuilder) dirs = g_strv_builder_new();
    const char *const own[] = { cfg->lockspace_dir, cfg->state_dir, backend->records.dir };
    for (guint i = 0; i < G_N_ELEMENTS(own); i++) {
        char *real = own[i] ? realpath(own[i], NULL) : NULL;
        if (real)
            g_strv_builder_add(dirs, real);
        free(real);
    }
    return g_strv_builder_end(dirs);
}

#define HELD_PATHS_SCAN_MAX 64

/* H has a lease taken through PATH (canonical); looked for only in a
 * holder with few leases (a VM's disks), where a scan is cheap. */
static gboolean
holds_path(VmlHolder *h, const char *path)
{
    if (g_hash_table_size(h->leases) > HELD_PATHS_SCAN_MAX)
        return FALSE;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        if (g_strcmp0(((const VmlLease *)value)->path, path) == 0)
            return TRUE;
    }
    return FALSE;
}

/* Root naming, in a release or a second acquire, the very path its
 * holder's lease was taken through (canonical): when that path is still
 * the same file (one stat), the lease's key and path are the answer,
 * without resolving it again. NULL: resolve it. A path that names another
 * file now (replaced, remounted), anything but a file or block device, or
 * any other path goes the whole way. */
static char *
held_path_key(VmlCall *call, const char *path, char **canonical)
{
    struct stat st;
    if (!call->held_paths || vml_conn_uid(call->conn) != 0 ||
        !holds_path(call->held_paths, path) || stat(path, &st) != 0)
        return NULL;
    g_autofree char *key = vml_image_identity_stat(&st, call->d->cfg->storage_names,
                                                   call->d->cfg->n_storage_names, NULL);
    const VmlLease *l = key ? g_hash_table_lookup(call->held_paths->leases, key) : NULL;
    if (!l || g_strcmp0(l->path, path) != 0)
        return NULL;
    if (canonical)
        *canonical = g_strdup(l->path);
    return g_steal_pointer(&key);
}

/* PATH (canonical) is one of the daemon's own directories or below one. */
static gboolean
path_is_ours(VmlCall *call, const char *path)
{
    for (char **dir = call->d->own_dirs; dir && *dir; dir++) {
        gsize n = strlen(*dir);
        if (strncmp(path, *dir, n) == 0 && (path[n] == '/' || path[n] == '\0'))
            return TRUE;
    }
    return FALSE;
}

/* Resolve an image path to its resource key, which every name of the
 * image shares (vml-image-identity.h); *CANONICAL (may be NULL) gets the
 * path with every symlink resolved, what the image is opened by. */
char *
call_path_key(VmlCall *call, const char *what, const char *path, char **canonical)
{
    g_autoptr(GError) error = NULL;
    if (!vml_path_check(path, strlen(path), &error)) {
        call_param_error(call, what, error->message);
        return NULL;
    }
    /* /proc/self, /dev/fd and /proc/PID/fd name what the daemon has open
     * (its own records), or another process's files by its rights: the
     * client resolves its own /proc/self/fd names. */
    if (g_str_has_prefix(path, "/proc/") || g_str_has_prefix(path, "/dev/fd/") ||
        g_str_equal(path, "/proc") || g_str_equal(path, "/dev/fd")) {
        call_param_error(call, what,
                         "names a file through /proc or /dev/fd: give the image's path");
        return NULL;
    }
    char *held = held_path_key(call, path, canonical);
    if (held)
        return held;
    /* Resolved first as the caller would: a directory it cannot search
     * answers "permission denied" whether or not the file exists there. */
    const VmlCreds *creds = vml_conn_creds(call->conn);
    int seen = -1;
    if (creds->uid != 0 && (seen = vml_open_path_as(path, creds, &error)) < 0) {
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "path", path);
        vml_conn_error(call->conn, error->code, p, "cannot resolve image %s as uid %u: %s",
                       path, (unsigned)creds->uid,
                       error->code == VML_ERROR_PERMISSION_DENIED ? "permission denied"
                                                                  : "no such file");
        return NULL;
    }
    /* Never through a /proc magic link (a symlink to /proc/self/fd/N):
     * it would name what vmleased itself has open. */
    if (seen < 0 && (seen = vml_open_path_no_magic(path)) < 0 && errno == ELOOP) {
        /* ELOOP is a symlink loop too: that one is merely no image. */
        int plain = open(path, O_PATH | O_CLOEXEC);
        if (plain >= 0) {
            close(plain);
            call_param_error(call, what, "resolves through a link into /proc");
            return NULL;
        }
    }
    /* Resolved once: the canonical path is the kernel's name for the inode
     * opened here (every symlink resolved), and the identity comes from
     * that inode, not from a name that could be swapped in between. */
    int fd = seen;
    int saved = errno;
    struct stat st;
    gboolean got = fd >= 0 && fstat(fd, &st) == 0;
    g_autofree char *canon = got ? vml_proc_own_fd_path(fd) : NULL;
    /* Unlinked (or renamed away from every name) since it was opened. */
    gboolean moved = got && ((S_ISREG(st.st_mode) && st.st_nlink == 0) || !canon ||
                             canon[0] != '/');
    if (moved) {
        close(fd);
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "path", path);
        vml_conn_error(call->conn, VML_ERROR_NO_SUCH_IMAGE, p,
                       "image %s changed while it was being resolved", path);
        return NULL;
    }
    if (canon && (g_str_has_prefix(canon, "/proc/") || path_is_ours(call, canon))) {
        if (fd >= 0)
            close(fd);
        call_param_error(call, what, "resolves into /proc or into vmleased's own directories");
        return NULL;
    }
    if (!got) {
        if (fd >= 0) {
            saved = errno;
            close(fd);
        }
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "path", path);
        vml_conn_error(call->conn, VML_ERROR_NO_SUCH_IMAGE, p,
                       "cannot resolve image %s: %s", path, g_strerror(saved));
        return NULL;
    }
    char *key = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)
        ? vml_image_identity_stat(&st, call->d->cfg->storage_names,
                                  call->d->cfg->n_storage_names, &error)
        : NULL;
    close(fd);
    if (!key) {
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "path", path);
        vml_conn_error(call->conn, VML_ERROR_NO_SUCH_IMAGE, p,
                       "%s is not a regular file or block device", path);
        return NULL;
    }
    if (canonical)
        *canonical = g_steal_pointer(&canon);
    return key;
}

/* A Resource object to REQ's key, mode and at_least. */
static char *
resource_key(VmlCall *call, JsonNode *node, VmlRequest *req)
{
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        call_param_error(call, "resources", "must hold objects");
        return NULL;
    }
    JsonObject *r = json_node_get_object(node);
    const char *path, *lockspace, *key, *mode_name;
    if (!call_get_string(call, r, "path", FALSE, PATH_MAX, &path) ||
        !call_get_string(call, r, "lockspace", FALSE, VML_CALL_FIELD_MAX, &lockspace) ||
        !call_get_string(call, r, "key", FALSE, VML_CALL_FIELD_MAX, &key) ||
        !call_get_string(call, r, "mode", FALSE, 16, &mode_name))
        return NULL;
    req->mode = VML_MODE_EXCLUSIVE;
    if (mode_name && !vml_mode_parse(mode_name, &req->mode)) {
        call_param_error(call, "mode", "must be \"exclusive\" or \"shared\"");
        return NULL;
    }
    if (!call_get_bool(call, r, "at_least", &req->at_least) ||
        !call_get_bool(call, r, "derived", &req->derived))
        return NULL;
    if (path && !lockspace && !key) {
        req->given = path;
        return call_path_key(call, "path", path, &req->path);
    }
    if (!path && lockspace && key && *lockspace && *key) {
        g_autofree char *ls = g_uri_escape_string(lockspace, NULL, FALSE);
        g_autofree char *k = g_uri_escape_string(key, NULL, FALSE);
        return g_strdup_printf("lease:%s/%s", ls, k);
    }
    call_param_error(call, "resources", "entries need either a path or a lockspace and key");
    return NULL;
}

VmlHolder *
call_get_holder(VmlCall *call)
{
    gint64 id = vml_conn_holder(call->conn);
    g_autoptr(GError) error = NULL;
    /* No holder named: the one this connection registered, so that a
     * client can send Register and its call in one go. */
    if ((json_object_has_member(call->params, "holder") || !id) &&
        !call_get_int(call, call->params, "holder", 1, G_MAXINT64, &id))
        return NULL;
    VmlHolder *h = vml_lease_table_lookup(call->d->table, id, &error);
    if (!h) {
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "holder", id);
        vml_conn_error_gerror(call->conn, error, p);
        return NULL;
    }
    /* A holder is its registrant's (and root's): ids are listed to admins. */
    uid_t uid = vml_conn_uid(call->conn);
    if (uid != 0 && uid != h->uid) {
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "holder", id);
        json_object_set_int_member(p, "uid", uid);
        vml_conn_error(call->conn, VML_ERROR_PERMISSION_DENIED, p,
                       "holder %" G_GINT64_FORMAT " (VM %s) was registered by uid %u; uid %u "
                       "may act only on holders it registered", id, h->name, (unsigned)h->uid,
                       (unsigned)uid);
        return NULL;
    }
    return h;
}


static void
request_clear(gpointer data)
{
    g_free(((VmlRequest *)data)->key);
    g_free(((VmlRequest *)data)->path);
}

/* The resources parameter as requests; NULL after an error reply. */
GArray *
call_get_requests(VmlCall *call, gboolean required)
{
    JsonArray *res;
    if (!call_get_array(call, call->params, "resources", required, &res))
        return NULL;
    g_autoptr(GArray) reqs = g_array_new(FALSE, FALSE, sizeof(VmlRequest));
    g_array_set_clear_func(reqs, request_clear);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; res && i < json_array_get_length(res); i++) {
        VmlRequest r = { 0 };
        r.key = resource_key(call, json_array_get_element(res, i), &r);
        if (!r.key)
            return NULL;
        g_array_append_val(reqs, r);
        if (!g_hash_table_add(seen, r.key)) {
            call_param_error(call, "resources", "names the same resource twice");
            return NULL;
        }
    }
    return g_steal_pointer(&reqs);
}

/* The resources parameter, which must name at least one. */
GArray *
call_get_named_requests(VmlCall *call)
{
    GArray *reqs = call_get_requests(call, TRUE);
    if (reqs && reqs->len == 0) {
        g_array_unref(reqs);
        call_param_error(call, "resources", "is empty");
        return NULL;
    }
    return reqs;
}

