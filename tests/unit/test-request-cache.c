/* lockd/request-cache: identical request texts share one sealed tree,
 * anything else is parsed as vml_json_request_parse() would. */
#include "request-cache.h"
#include "vml-error.h"

#include <string.h>

static JsonObject *
parse(VmlRequestCache *c, const char *text, GError **error)
{
    return vml_request_cache_parse(c, text, strlen(text), error);
}

static void
test_shared(void)
{
    g_autoptr(VmlRequestCache) c = vml_request_cache_new();
    g_autoptr(GError) error = NULL;
    const char *reg = "{\"method\":\"io.vmlease.Lease.Register\",\"parameters\":{\"pid\":7}}";
    g_autoptr(JsonObject) a = parse(c, reg, &error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) b = parse(c, reg, &error);
    g_assert_true(a == b);
    g_assert_true(json_object_is_immutable(a));
    /* One byte more is another request. */
    g_autoptr(JsonObject) other = parse(c, "{\"method\":\"io.vmlease.Lease.Register\","
                                           "\"parameters\":{\"pid\":8}}", &error);
    g_assert_true(other != a);
    g_assert_cmpint(json_object_get_int_member(json_object_get_object_member(other, "parameters"),
                                               "pid"), ==, 8);
}

static void
test_errors_and_limits(void)
{
    g_autoptr(VmlRequestCache) c = vml_request_cache_new();
    g_autoptr(GError) error = NULL;
    for (int i = 0; i < 2; i++) {
        g_assert_null(parse(c, "{\"method\":", &error));
        g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_MESSAGE);
        g_assert_cmpstr(error->message, ==, "message is not a whole JSON object");
        g_clear_error(&error);
    }
    /* Past the size limit: parsed each time, never kept. */
    GString *big = g_string_new("{\"method\":\"x\",\"parameters\":{\"name\":\"");
    while (big->len <= VML_REQUEST_CACHE_TEXT_MAX)
        g_string_append_c(big, 'a');
    g_string_append(big, "\"}}");
    g_autoptr(JsonObject) x = parse(c, big->str, &error);
    g_autoptr(JsonObject) y = parse(c, big->str, &error);
    g_assert_no_error(error);
    g_assert_true(x != y);
    g_string_free(big, TRUE);
    /* Without a cache: parsed each time. */
    g_autoptr(JsonObject) p = parse(NULL, "{\"method\":\"x\"}", &error);
    g_autoptr(JsonObject) q = parse(NULL, "{\"method\":\"x\"}", &error);
    g_assert_true(p != q);
}

static void
test_ring(void)
{
    g_autoptr(VmlRequestCache) c = vml_request_cache_new();
    g_autoptr(GError) error = NULL;
    const char *first = "{\"method\":\"first\"}";
    g_autoptr(JsonObject) a = parse(c, first, &error);
    /* SIZE - 1 other texts: the first is still there. */
    for (int i = 1; i < VML_REQUEST_CACHE_SIZE; i++) {
        g_autofree char *t = g_strdup_printf("{\"method\":\"m%d\"}", i);
        json_object_unref(parse(c, t, &error));
    }
    g_autoptr(JsonObject) b = parse(c, first, &error);
    g_assert_true(a == b);
    /* One more pushes it out. */
    json_object_unref(parse(c, "{\"method\":\"last\"}", &error));
    g_autoptr(JsonObject) d = parse(c, first, &error);
    g_assert_no_error(error);
    g_assert_true(d != a);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/request-cache/shared", test_shared);
    g_test_add_func("/request-cache/errors-and-limits", test_errors_and_limits);
    g_test_add_func("/request-cache/ring", test_ring);
    return g_test_run();
}
