/* Unit tests for path validation and key hashing (lib/vml-paths.c). */
#include "vml-paths.h"
#include "vml-error.h"

#include <limits.h>
#include <string.h>

static void
check_accepted(const char *path, gsize len)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *escaped = g_strescape(path, NULL);

    if (!vml_path_check(path, len, &err))
        g_test_fail_printf("\"%s\" (len %" G_GSIZE_FORMAT ") refused: %s",
                           escaped, len, err ? err->message : "(no error set)");
    else if (err)
        g_test_fail_printf("\"%s\" accepted but error set: %s", escaped, err->message);
}

static void
check_rejected(const char *path, gsize len)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *escaped = g_strescape(path, NULL);

    if (vml_path_check(path, len, &err))
        g_test_fail_printf("\"%s\" (len %" G_GSIZE_FORMAT ") accepted", escaped, len);
    else if (!g_error_matches(err, VML_ERROR, VML_ERROR_INVALID_PARAMETER))
        g_test_fail_printf("\"%s\": expected VML_ERROR_INVALID_PARAMETER, got %s",
                           escaped, err ? err->message : "(no error set)");
    else if (!err->message || !*err->message)
        g_test_fail_printf("\"%s\": empty error message", escaped);
}

static void
test_accepted(void)
{
    static const char *const good[] = {
        "/",
        "/a",
        "/a/b.qcow2",
        "/var/lib/libvirt/images/vm-1.qcow2",
        "/a/.hidden",
        "/a/..b",
        "/a/b..",
        "/a/...",
        "/caf\xc3\xa9/disk.img",
        "/with space/x",
    };

    for (guint i = 0; i < G_N_ELEMENTS(good); i++)
        check_accepted(good[i], strlen(good[i]));

    /* Only len bytes count: the rest of the buffer is not looked at. */
    check_accepted("/a/b/../c", 4);
}

static void
test_rejected(void)
{
    static const char *const bad[] = {
        "",
        "a",
        "a/b.qcow2",
        "./a",
        "../a",
        "/..",
        "/.",
        "/a/..",
        "/a/.",
        "/a/../b",
        "/a/./b",
        "//",
        "//a",
        "/a//b",
        "/a/",
        "/a/b/",
        "/\xff",
        "/a/\xc3",         /* truncated sequence */
        "/\xc0\xaf",       /* overlong '/' */
        "/\xed\xa0\x80",   /* surrogate */
    };

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++)
        check_rejected(bad[i], strlen(bad[i]));

    /* NUL inside the given length, anywhere. */
    check_rejected("/a\0b", 4);
    check_rejected("/ab\0", 4);
    check_rejected("\0/a", 3);
}

static void
test_length(void)
{
    /* PATH_MAX includes the terminating NUL, so PATH_MAX - 1 bytes is the
     * longest path. Components of 100 bytes keep it realistic. */
    g_autofree char *path = g_malloc(PATH_MAX + 2);

    for (gsize i = 0; i < PATH_MAX + 1; i++)
        path[i] = (i % 101 == 0) ? '/' : 'a';
    path[PATH_MAX + 1] = '\0';
    /* Never end on '/': that would be refused for another reason. */
    for (gsize len = PATH_MAX - 1; len <= PATH_MAX + 1; len++)
        g_assert_cmpint(path[len - 1], !=, '/');

    check_accepted(path, PATH_MAX - 1);
    check_rejected(path, PATH_MAX);
    check_rejected(path, PATH_MAX + 1);

    g_autoptr(GError) err = NULL;
    g_assert_false(vml_path_check(path, PATH_MAX, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
}

static void
test_messages(void)
{
    /* Each refusal says what is wrong. */
    static const struct {
        const char *path;
        const char *message;
    } cases[] = {
        { "a/b", "path must be absolute" },
        { "/a/../b", "path has a '..' component" },
        { "/a/./b", "path has a '.' component" },
        { "/a//b", "path has an empty component" },
        { "/a/", "path ends with '/'" },
        { "/\xff", "path is not valid UTF-8" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        g_assert_false(vml_path_check(cases[i].path, strlen(cases[i].path), &err));
        g_assert_error(err, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
        g_assert_cmpstr(err->message, ==, cases[i].message);
    }

    g_autoptr(GError) err = NULL;
    g_assert_false(vml_path_check("/a\0b", 4, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_assert_cmpstr(err->message, ==, "path contains a NUL byte");
}

static void
test_key_hash(void)
{
    /* printf %s /a | sha256sum */
    g_autofree char *h = vml_key_hash("/a");
    g_assert_cmpstr(h, ==, "6a50dc8584134c7de537c0052ff6d236bf874355e050c90523e0c5ff2a543a28");

    /* printf %s '' | sha256sum */
    g_autofree char *empty = vml_key_hash("");
    g_assert_cmpstr(empty, ==, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    g_autofree char *other = vml_key_hash("/b");
    g_assert_cmpuint(strlen(other), ==, 64);
    g_assert_cmpstr(other, !=, h);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/paths/accepted", test_accepted);
    g_test_add_func("/paths/rejected", test_rejected);
    g_test_add_func("/paths/length", test_length);
    g_test_add_func("/paths/messages", test_messages);
    g_test_add_func("/paths/key-hash", test_key_hash);
    return g_test_run();
}
