#include "vmlease-stash.h"
#include "vml-protocol.h"
#include "vml-error.h"

#include <unistd.h>

static JsonObject *
owner_name(const char *owner, const char *name)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "owner", owner);
    if (name)
        json_object_set_string_member(p, "name", name);
    return p;
}

/* Call METHOD and return the single fd of its reply. */
static int
call_for_fd(VmlClient *c, const char *method, JsonObject *params, const int *fds,
            guint n_fds, GError **error)
{
    GArray *got = NULL;
    g_autoptr(JsonObject) r = vml_client_call(c, method, params, fds, n_fds, &got, NULL, error);
    if (!r)
        return -1;
    if (!got || got->len != 1) {
        for (guint i = 0; got && i < got->len; i++)
            close(g_array_index(got, int, i));
        if (got)
            g_array_unref(got);
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "%s: no fd in the reply", method);
        return -1;
    }
    int fd = g_array_index(got, int, 0);
    g_array_unref(got);
    return fd;
}

gboolean
vmlease_stash_give(VmlClient *c, const char *owner, const char *name, int fd,
                   gboolean keep, GError **error)
{
    g_autoptr(JsonObject) p = owner_name(owner, name);
    if (keep)
        json_object_set_boolean_member(p, "keep", TRUE);
    g_autoptr(JsonObject) r = vml_client_call(c, VML_METHOD_STASH_GIVE, p, &fd, 1, NULL,
                                              NULL, error);
    return r != NULL;
}

int
vmlease_stash_take(VmlClient *c, const char *owner, const char *name, GError **error)
{
    g_autoptr(JsonObject) p = owner_name(owner, name);
    return call_for_fd(c, VML_METHOD_STASH_TAKE, p, NULL, 0, error);
}

int
vmlease_stash_peek(VmlClient *c, const char *owner, const char *name, GError **error)
{
    g_autoptr(JsonObject) p = owner_name(owner, name);
    return call_for_fd(c, VML_METHOD_STASH_PEEK, p, NULL, 0, error);
}

gboolean
vmlease_stash_drop(VmlClient *c, const char *owner, const char *name, GError **error)
{
    g_autoptr(JsonObject) p = owner_name(owner, name);
    g_autoptr(JsonObject) r = vml_client_call(c, VML_METHOD_STASH_DROP, p, NULL, 0, NULL,
                                              NULL, error);
    return r != NULL;
}

JsonArray *
vmlease_stash_list(VmlClient *c, const char *owner, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    if (owner)
        json_object_set_string_member(p, "owner", owner);
    g_autoptr(JsonObject) r = vml_client_call(c, VML_METHOD_STASH_LIST, p, NULL, 0, NULL,
                                              NULL, error);
    if (!r)
        return NULL;
    JsonNode *n = json_object_get_member(r, "fds");
    if (!n || !JSON_NODE_HOLDS_ARRAY(n)) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "malformed Stash.List reply");
        return NULL;
    }
    return json_array_ref(json_node_get_array(n));
}

int
vmlease_open_image(VmlClient *c, gint64 holder, const char *path, const char *mode,
                   GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_string_member(p, "path", path);
    json_object_set_string_member(p, "mode", mode);
    return call_for_fd(c, VML_METHOD_OPEN_IMAGE, p, NULL, 0, error);
}

int
vmlease_reopen(VmlClient *c, gint64 holder, const char *path, int fd, const char *new_mode,
               const char *stash_name, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_string_member(p, "path", path);
    json_object_set_string_member(p, "mode", new_mode);
    if (stash_name)
        json_object_set_string_member(p, "stash_name", stash_name);
    return call_for_fd(c, VML_METHOD_REOPEN, p, &fd, 1, error);
}
