/* The typed client (lib/vml-lease-client) against a canned server: each
 * call sends the request the interface declares, and a reply without what
 * the interface promises is refused with VML_ERROR_PROTOCOL, naming the
 * method and the missing member. No daemon: a thread answers on a
 * temporary AF_UNIX socket with the replies a case gives it. */
#include "vml-error.h"
#include "vml-lease-client.h"

#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct {
    char *dir;
    char *path;
    int listen_fd;
    const char *const *replies;   /* one per request, NULL-terminated */
    GPtrArray *requests;          /* what came, as text */
    GThread *thread;
} Canned;

static gpointer
serve(gpointer data)
{
    Canned *c = data;
    int fd = accept(c->listen_fd, NULL, NULL);
    g_assert_cmpint(fd, >=, 0);
    GString *in = g_string_new(NULL);
    for (guint i = 0; c->replies[i]; i++) {
        /* One request up to its NUL. */
        char *nul;
        while (!(nul = memchr(in->str, '\0', in->len))) {
            char buf[4096];
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                goto out;
            g_string_append_len(in, buf, n);
        }
        g_ptr_array_add(c->requests, g_strdup(in->str));
        g_string_erase(in, 0, nul - in->str + 1);
        g_assert_cmpint(write(fd, c->replies[i], strlen(c->replies[i]) + 1), ==,
                        (ssize_t)strlen(c->replies[i]) + 1);
    }
out:
    g_string_free(in, TRUE);
    close(fd);
    return NULL;
}

static Canned *
canned_new(const char *const *replies)
{
    Canned *c = g_new0(Canned, 1);
    c->dir = g_dir_make_tmp("lease-client-XXXXXX", NULL);
    c->path = g_build_filename(c->dir, "s.sock", NULL);
    c->replies = replies;
    c->requests = g_ptr_array_new_with_free_func(g_free);
    c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, c->path, sizeof(sa.sun_path));
    g_assert_cmpint(bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(listen(c->listen_fd, 1), ==, 0);
    c->thread = g_thread_new("canned", serve, c);
    return c;
}

static VmlClient *
canned_client(Canned *c)
{
    g_autoptr(GError) error = NULL;
    VmlClient *client = vml_client_connect(c->path, &error);
    g_assert_no_error(error);
    return client;
}

static void
canned_free(Canned *c)
{
    g_thread_join(c->thread);
    close(c->listen_fd);
    g_unlink(c->path);
    g_rmdir(c->dir);
    g_free(c->path);
    g_free(c->dir);
    g_ptr_array_unref(c->requests);
    g_free(c);
}

/* The request REQ names METHOD and carries exactly PARAMS (as text). */
static void
assert_request(const char *req, const char *method, const char *params)
{
    g_autofree char *want = g_strdup_printf("{\"method\":\"%s\",\"parameters\":%s}", method,
                                            params);
    g_assert_cmpstr(req, ==, want);
}

static void
test_status(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"version\":\"1\",\"pid\":7,\"backend\":\"fcntl\","
        "\"lockspace\":\"/l\",\"host\":\"h\",\"started\":1,\"reexecs\":0,\"holders\":0,"
        "\"leases\":0,\"stashed\":0}}",
        "{\"parameters\":{\"version\":\"1\",\"pid\":7,\"lockspace\":\"/l\"}}",
        "{\"parameters\":{\"version\":\"1\",\"pid\":\"7\",\"backend\":\"fcntl\","
        "\"lockspace\":\"/l\"}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonObject) ok = vml_admin_status(client, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(json_object_get_string_member(ok, "backend"), ==, "fcntl");

    g_assert_null(vml_admin_status(client, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Status reply from vmleased: no backend");
    g_clear_error(&error);

    g_assert_null(vml_admin_status(client, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Status reply from vmleased: no pid");

    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

static void
test_list_hosts(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"holders\":[{\"holder\":3}]}}",
        "{\"parameters\":{\"holders\":{}}}",
        "{\"parameters\":{\"lockspace\":\"vmlease\",\"host_id\":2,\"hosts\":[]}}",
        "{\"parameters\":{\"lockspace\":\"vmlease\",\"host_id\":2}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonObject) list = vml_admin_list(client, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(list, "holders")), ==, 1);
    g_assert_null(vml_admin_list(client, &error));
    g_assert_cmpstr(error->message, ==, "malformed List reply from vmleased: no holders");
    g_clear_error(&error);

    g_autoptr(JsonObject) hosts = vml_admin_hosts(client, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(hosts, "host_id"), ==, 2);
    g_assert_null(vml_admin_hosts(client, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Hosts reply from vmleased: no hosts");

    g_assert_cmpuint(c->requests->len, ==, 4);
    assert_request(c->requests->pdata[0], "io.vmlease.Admin.List", "{}");
    assert_request(c->requests->pdata[2], "io.vmlease.Admin.Hosts", "{}");
    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

static void
test_force_unlock(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"resource\":\"file:x:1\",\"cleared\":true,\"verdict\":\"stale\","
        "\"reason\":\"gone\"}}",
        "{\"error\":\"io.vmlease.ImageBusy\",\"parameters\":{\"resource\":\"file:x:1\","
        "\"verdict\":\"live\",\"message\":\"/x is in use\"}}",
        "{\"parameters\":{\"resource\":\"file:x:1\",\"cleared\":\"yes\",\"verdict\":\"stale\","
        "\"reason\":\"gone\"}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonObject) ok = vml_admin_force_unlock(client, "/x", FALSE, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_get_boolean_member(ok, "cleared"));

    g_autoptr(JsonObject) busy = NULL;
    g_assert_null(vml_admin_force_unlock(client, "/x", TRUE, &busy, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY);
    g_assert_cmpstr(error->message, ==, "/x is in use");
    g_assert_cmpstr(json_object_get_string_member(busy, "verdict"), ==, "live");
    g_clear_error(&error);

    g_assert_null(vml_admin_force_unlock(client, "/x", FALSE, NULL, &error));
    g_assert_cmpstr(error->message, ==, "malformed ForceUnlock reply from vmleased: no cleared");

    assert_request(c->requests->pdata[0], "io.vmlease.Admin.ForceUnlock",
                   "{\"path\":\"/x\",\"force\":false}");
    assert_request(c->requests->pdata[1], "io.vmlease.Admin.ForceUnlock",
                   "{\"path\":\"/x\",\"force\":true}");
    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

static void
test_observe_owners(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"observing\":[{\"path\":\"/a\"}]}}",
        "{\"parameters\":{}}",
        /* Owners: two pages joined, then a next that does not move on. */
        "{\"parameters\":{\"resources\":[{\"resource\":\"a\"}],\"next\":\"a\"}}",
        "{\"parameters\":{\"resources\":[{\"resource\":\"b\"}]}}",
        "{\"parameters\":{\"resources\":[],\"next\":\"m\"}}",
        "{\"parameters\":{\"resources\":[],\"next\":\"m\"}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;

    JsonArray *res = json_array_new();
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "path", "/a");
    json_array_add_object_element(res, r);
    g_autoptr(JsonArray) seen = vml_lease_observe(client, 5, res, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_array_get_length(seen), ==, 1);
    g_assert_null(vml_lease_observe(client, 5, json_array_new(), &error));
    g_assert_cmpstr(error->message, ==, "malformed Observe reply from vmleased: no observing");
    g_clear_error(&error);

    g_autoptr(JsonArray) all = vml_admin_owners(client, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_array_get_length(all), ==, 2);
    g_assert_null(vml_admin_owners(client, NULL, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Owners reply from vmleased");

    assert_request(c->requests->pdata[0], "io.vmlease.Lease.Observe",
                   "{\"holder\":5,\"resources\":[{\"path\":\"/a\"}]}");
    assert_request(c->requests->pdata[3], "io.vmlease.Admin.Owners", "{\"after\":\"a\"}");
    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

/* The daemon writes "next" first: the page after is asked for before
 * this one is parsed, and a page whose parsed "next" is not the one it
 * was asked ahead by is refused, its pipelined reply read and dropped. */
static void
test_owners_ahead(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"next\":\"a\",\"resources\":[{\"resource\":\"a\"}]}}",
        "{\"parameters\":{\"next\":\"b\",\"resources\":[{\"resource\":\"b\"}]}}",
        "{\"parameters\":{\"resources\":[{\"resource\":\"c\"}]}}",
        /* A second "next" (the last counts) that is not the one peeked. */
        "{\"parameters\":{\"next\":\"d\",\"resources\":[],\"next\":\"e\"}}",
        "{\"parameters\":{\"resources\":[]}}",
        "{\"parameters\":{\"held\":0,\"holders\":0}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonArray) all = vml_admin_owners(client, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_array_get_length(all), ==, 3);
    for (guint i = 0; i < 3; i++) {
        JsonObject *r = json_array_get_object_element(all, i);
        g_autofree char *want = g_strdup_printf("%c", 'a' + i);
        g_assert_cmpstr(json_object_get_string_member(r, "resource"), ==, want);
    }
    g_assert_null(vml_admin_owners(client, NULL, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Owners reply from vmleased");

    /* The connection is in step again: the next call gets its own reply. */
    g_clear_error(&error);
    g_autoptr(JsonObject) status = vml_client_call(client, "io.vmlease.Admin.Status", NULL, NULL,
                                                   0, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(status, "holders"), ==, 0);

    g_assert_cmpuint(c->requests->len, ==, 6);
    assert_request(c->requests->pdata[0], "io.vmlease.Admin.Owners", "{}");
    assert_request(c->requests->pdata[1], "io.vmlease.Admin.Owners", "{\"after\":\"a\"}");
    assert_request(c->requests->pdata[2], "io.vmlease.Admin.Owners", "{\"after\":\"b\"}");
    assert_request(c->requests->pdata[4], "io.vmlease.Admin.Owners", "{\"after\":\"d\"}");
    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

static void
test_register(void)
{
    static const char *const replies[] = {
        "{\"parameters\":{\"holder\":4,\"lockspace\":\"/ls\"}}",
        "{\"parameters\":{\"holder\":4,\"lockspace\":\"/other\"}}",
        "{\"parameters\":{\"lockspace\":\"/ls\"}}",
        NULL,
    };
    Canned *c = canned_new(replies);
    g_autoptr(VmlClient) client = canned_client(c);
    g_autoptr(GError) error = NULL;
    VmlRegistration reg = { .uuid = "u", .name = "n", .pid = 9, .mailbox_fd = -1,
                            .lockspace = "/ls" };

    g_assert_cmpint(vml_lease_register(client, &reg, &error), ==, 4);
    g_assert_no_error(error);
    g_assert_cmpint(vml_lease_register(client, &reg, &error), ==, 0);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(error->message, ==,
                    "vmleased uses lockspace /other, but qemu-vmlease.conf says "
                    "lockspace_dir = \"/ls\"");
    g_clear_error(&error);
    g_assert_cmpint(vml_lease_register(client, &reg, &error), ==, 0);
    g_assert_error(error, VML_ERROR, VML_ERROR_PROTOCOL);
    g_assert_cmpstr(error->message, ==, "malformed Register reply from vmleased: no holder id");

    assert_request(c->requests->pdata[0], "io.vmlease.Lease.Register",
                   "{\"uuid\":\"u\",\"name\":\"n\",\"pid\":9,\"lockspace\":\"/ls\"}");
    vml_client_free(g_steal_pointer(&client));
    canned_free(c);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lease-client/status", test_status);
    g_test_add_func("/lease-client/list-hosts", test_list_hosts);
    g_test_add_func("/lease-client/force-unlock", test_force_unlock);
    g_test_add_func("/lease-client/observe-owners", test_observe_owners);
    g_test_add_func("/lease-client/owners-ahead", test_owners_ahead);
    g_test_add_func("/lease-client/register", test_register);
    return g_test_run();
}
