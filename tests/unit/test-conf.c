/* Unit tests for the libvirt-syntax config parser (lib/vml-conf.c). */
#include "vml-conf.h"
#include "vml-error.h"

#include <glib/gstdio.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static VmlConf *
parse_ok(const char *text)
{
    g_autoptr(GError) err = NULL;
    VmlConf *conf = vml_conf_new_from_data(text, strlen(text), "test.conf", &err);

    g_assert_no_error(err);
    g_assert_nonnull(conf);
    return conf;
}

static void
test_types(void)
{
    g_autoptr(VmlConf) conf = parse_ok(
        "# header comment\n"
        "name = \"hello world\"\n"
        "empty = \"\"\n"
        "num = 42\n"
        "neg = -17\n"
        "zero = 0\n"
        "big = 9223372036854775807\n"
        "small = -9223372036854775808\n"
        "list = [ \"a\", \"b\" ]\n"
        "none = [ ]\n"
        "none2 = []\n"
        "utf8 = \"caf\xc3\xa9 \xe2\x82\xac\"\n");
    g_autoptr(GError) err = NULL;
    g_autofree char *s = NULL;
    g_autofree char *e = NULL;
    g_autofree char *u = NULL;
    g_auto(GStrv) list = NULL;
    g_auto(GStrv) none = NULL;
    g_auto(GStrv) none2 = NULL;
    gint64 i = 0;

    g_assert_true(vml_conf_get_string(conf, "name", &s, &err));
    g_assert_no_error(err);
    g_assert_cmpstr(s, ==, "hello world");
    g_assert_true(vml_conf_get_string(conf, "empty", &e, &err));
    g_assert_cmpstr(e, ==, "");
    g_assert_true(vml_conf_get_string(conf, "utf8", &u, &err));
    g_assert_cmpstr(u, ==, "caf\xc3\xa9 \xe2\x82\xac");

    g_assert_true(vml_conf_get_int(conf, "num", &i, &err));
    g_assert_cmpint(i, ==, 42);
    g_assert_true(vml_conf_get_int(conf, "neg", &i, &err));
    g_assert_cmpint(i, ==, -17);
    g_assert_true(vml_conf_get_int(conf, "zero", &i, &err));
    g_assert_cmpint(i, ==, 0);
    g_assert_true(vml_conf_get_int(conf, "big", &i, &err));
    g_assert_cmpint(i, ==, G_MAXINT64);
    g_assert_true(vml_conf_get_int(conf, "small", &i, &err));
    g_assert_cmpint(i, ==, G_MININT64);

    g_assert_true(vml_conf_get_string_list(conf, "list", &list, &err));
    g_assert_cmpuint(g_strv_length(list), ==, 2);
    g_assert_cmpstr(list[0], ==, "a");
    g_assert_cmpstr(list[1], ==, "b");
    g_assert_true(vml_conf_get_string_list(conf, "none", &none, &err));
    g_assert_nonnull(none);
    g_assert_cmpuint(g_strv_length(none), ==, 0);
    g_assert_true(vml_conf_get_string_list(conf, "none2", &none2, &err));
    g_assert_nonnull(none2);
    g_assert_cmpuint(g_strv_length(none2), ==, 0);
    g_assert_no_error(err);
}

static void
test_bool(void)
{
    g_autoptr(VmlConf) conf = parse_ok("on = 1\noff = 0\ntwo = 2\nminus = -1\nstr = \"1\"\n");
    g_autoptr(GError) err = NULL;
    gboolean b = FALSE;

    g_assert_true(vml_conf_get_bool(conf, "on", &b, &err));
    g_assert_no_error(err);
    g_assert_true(b);
    g_assert_true(vml_conf_get_bool(conf, "off", &b, &err));
    g_assert_no_error(err);
    g_assert_false(b);

    b = 7;
    g_assert_false(vml_conf_get_bool(conf, "two", &b, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:3: 'two' must be 0 or 1");
    g_assert_cmpint(b, ==, 7);
    g_clear_error(&err);
    g_assert_false(vml_conf_get_bool(conf, "minus", &b, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:4: 'minus' must be 0 or 1");
    g_clear_error(&err);
    g_assert_false(vml_conf_get_bool(conf, "str", &b, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:5: 'str' must be 0 or 1");
    g_clear_error(&err);
    g_assert_false(vml_conf_get_bool(conf, "absent", &b, &err));
    g_assert_no_error(err);
    g_assert_cmpint(b, ==, 7);
}

static void
test_multiline_list(void)
{
    g_autoptr(VmlConf) conf = parse_ok(
        "hosts = [\n"
        "  # a comment before the first item\n"
        "  \"one\",   # after an item\n"
        "\n"
        "  \"two\" # before the comma\n"
        "  , 'three',\n"
        "  \"fo#ur\",\n"
        "]\n"
        "after = 5\n"
        "tight = [\"x\",\"y\",]\n"
        "open = [\n"
        "]\n");
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) hosts = NULL;
    g_auto(GStrv) tight = NULL;
    g_auto(GStrv) open = NULL;
    gint64 after = 0;

    g_assert_true(vml_conf_get_string_list(conf, "hosts", &hosts, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(g_strv_length(hosts), ==, 4);
    g_assert_cmpstr(hosts[0], ==, "one");
    g_assert_cmpstr(hosts[1], ==, "two");
    g_assert_cmpstr(hosts[2], ==, "three");
    g_assert_cmpstr(hosts[3], ==, "fo#ur");
    g_assert_true(vml_conf_get_int(conf, "after", &after, &err));
    g_assert_cmpint(after, ==, 5);
    g_assert_true(vml_conf_get_string_list(conf, "tight", &tight, &err));
    g_assert_cmpuint(g_strv_length(tight), ==, 2);
    g_assert_cmpstr(tight[0], ==, "x");
    g_assert_cmpstr(tight[1], ==, "y");
    g_assert_true(vml_conf_get_string_list(conf, "open", &open, &err));
    g_assert_cmpuint(g_strv_length(open), ==, 0);
    g_assert_no_error(err);

    /* The line of a multi-line list is where its key is. */
    g_autoptr(GError) terr = NULL;
    g_autofree char *s = NULL;
    g_assert_false(vml_conf_get_string(conf, "open", &s, &terr));
    g_assert_error(terr, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(terr->message, ==, "test.conf:11: 'open' must be a string");
    g_assert_null(s);
}

static void
test_escapes(void)
{
    g_autoptr(VmlConf) conf = parse_ok(
        "q = \"say \\\"hi\\\"\"\n"
        "bs = \"C:\\\\dir\\\\\"\n"
        "single = 'a\\b \"c\" #d'\n"
        "hash = \"a # not a comment\" # but this is\n"
        "list = [ \"\\\"\", '\\\\' ]\n");
    g_autoptr(GError) err = NULL;
    g_autofree char *q = NULL;
    g_autofree char *bs = NULL;
    g_autofree char *single = NULL;
    g_autofree char *hash = NULL;
    g_auto(GStrv) list = NULL;

    g_assert_true(vml_conf_get_string(conf, "q", &q, &err));
    g_assert_cmpstr(q, ==, "say \"hi\"");
    g_assert_true(vml_conf_get_string(conf, "bs", &bs, &err));
    g_assert_cmpstr(bs, ==, "C:\\dir\\");
    /* Single quotes are literal: no escapes, as in libvirt. */
    g_assert_true(vml_conf_get_string(conf, "single", &single, &err));
    g_assert_cmpstr(single, ==, "a\\b \"c\" #d");
    g_assert_true(vml_conf_get_string(conf, "hash", &hash, &err));
    g_assert_cmpstr(hash, ==, "a # not a comment");
    g_assert_true(vml_conf_get_string_list(conf, "list", &list, &err));
    g_assert_cmpuint(g_strv_length(list), ==, 2);
    g_assert_cmpstr(list[0], ==, "\"");
    g_assert_cmpstr(list[1], ==, "\\\\");
    g_assert_no_error(err);
}

/* A key set twice is refused, naming both lines, whatever the types. */
static void
test_set_twice(void)
{
    static const char *const texts[] = {
        "a = 1\nb = \"x\"\na = 2\n",
        "a = [ \"x\" ]\nb = \"x\"\n\n# again\na = \"y\"\n",
    };
    static const char *const said[] = {
        "test.conf:3: 'a' is set twice (first on line 1): set it once",
        "test.conf:5: 'a' is set twice (first on line 1): set it once",
    };
    for (guint i = 0; i < G_N_ELEMENTS(texts); i++) {
        g_autoptr(GError) err = NULL;
        g_autoptr(VmlConf) conf = vml_conf_new_from_data(texts[i], strlen(texts[i]),
                                                         "test.conf", &err);
        g_assert_null(conf);
        g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
        g_assert_cmpstr(err->message, ==, said[i]);
    }
}

/* A value of the right type but out of bounds names its line too. */
static void
test_value_errors_name_the_line(void)
{
    g_autoptr(VmlConf) conf = parse_ok("a = 1\n\nlimit = 70000\nwhere = \"rel/dir\"\n");
    g_autoptr(GError) err = NULL;
    guint limit = 5;
    g_autofree char *where = NULL;
    g_assert_false(vml_conf_update_uint(conf, "limit", &limit, 1, 65536, NULL, &err));
    g_assert_cmpstr(err->message, ==, "test.conf:3: limit must be between 1 and 65536, not 70000");
    g_assert_cmpuint(limit, ==, 5);
    g_clear_error(&err);
    g_assert_false(vml_conf_update_abs_path(conf, "where", &where, &err));
    g_assert_cmpstr(err->message, ==, "test.conf:4: where must be an absolute path, not 'rel/dir'");
    g_clear_error(&err);
    /* A check of the caller's own: the key's line, or the file for a default. */
    g_set_error(&err, VML_ERROR, VML_ERROR_CONFIG, "a is odd");
    vml_conf_prefix_key_error(conf, "a", &err);
    g_assert_cmpstr(err->message, ==, "test.conf:1: a is odd");
    vml_conf_prefix_key_error(conf, "a", &err);   /* located already: left */
    g_assert_cmpstr(err->message, ==, "test.conf:1: a is odd");
    g_clear_error(&err);
    g_set_error(&err, VML_ERROR, VML_ERROR_CONFIG, "missing is needed");
    vml_conf_prefix_key_error(conf, "missing", &err);
    g_assert_cmpstr(err->message, ==, "test.conf: missing is needed");
}

static void
test_layout(void)
{
    /* No spaces around '=', tabs, CRLF, blank lines, dotted keys, a final
     * comment without newline. */
    const char text[] =
        "\n"
        "   \n"
        "a=1\n"
        "\tb\t=\t\"two\"\t\n"
        "c = 3\r\n"
        "_d.e_9 = 'x'   # trailing\n"
        "   # indented comment\n"
        "f = -0\n"
        "# last";
    g_autoptr(VmlConf) conf = parse_ok(text);
    g_autoptr(GError) err = NULL;
    g_autofree char *b = NULL;
    g_autofree char *d = NULL;
    gint64 i = 0;

    g_assert_true(vml_conf_get_int(conf, "a", &i, &err));
    g_assert_cmpint(i, ==, 1);
    g_assert_true(vml_conf_get_string(conf, "b", &b, &err));
    g_assert_cmpstr(b, ==, "two");
    g_assert_true(vml_conf_get_int(conf, "c", &i, &err));
    g_assert_cmpint(i, ==, 3);
    g_assert_true(vml_conf_get_string(conf, "_d.e_9", &d, &err));
    g_assert_cmpstr(d, ==, "x");
    g_assert_true(vml_conf_get_int(conf, "f", &i, &err));
    g_assert_cmpint(i, ==, 0);
    g_assert_no_error(err);

    /* Empty input and a value without a final newline. */
    g_autoptr(VmlConf) empty = vml_conf_new_from_data(NULL, 0, "empty", &err);
    g_assert_no_error(err);
    g_assert_nonnull(empty);
    g_autoptr(VmlConf) nonl = parse_ok("x = 5");
    g_assert_true(vml_conf_get_int(nonl, "x", &i, &err));
    g_assert_cmpint(i, ==, 5);
}

static void
test_absent_and_types(void)
{
    g_autoptr(VmlConf) conf = parse_ok(
        "lockspace_dir = 5\n"
        "\n"
        "n = \"5\"\n"
        "l = \"a\"\n");
    g_autoptr(GError) err = NULL;
    char *s = (char *)"untouched";
    gint64 i = 99;
    GStrv l = NULL;
    gboolean b = TRUE;

    /* Absent: FALSE, no error, output untouched. */
    g_assert_false(vml_conf_get_string(conf, "nope", &s, &err));
    g_assert_no_error(err);
    g_assert_cmpstr(s, ==, "untouched");
    g_assert_false(vml_conf_get_int(conf, "nope", &i, &err));
    g_assert_no_error(err);
    g_assert_cmpint(i, ==, 99);
    g_assert_false(vml_conf_get_string_list(conf, "nope", &l, &err));
    g_assert_no_error(err);
    g_assert_null(l);
    g_assert_false(vml_conf_get_bool(conf, "nope", &b, &err));
    g_assert_no_error(err);
    g_assert_true(b);

    /* Wrong type: FALSE with an error naming origin, line and key. */
    g_assert_false(vml_conf_get_string(conf, "lockspace_dir", &s, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:1: 'lockspace_dir' must be a string");
    g_assert_cmpstr(s, ==, "untouched");
    g_clear_error(&err);
    g_assert_false(vml_conf_get_int(conf, "n", &i, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:3: 'n' must be an integer");
    g_assert_cmpint(i, ==, 99);
    g_clear_error(&err);
    g_assert_false(vml_conf_get_string_list(conf, "l", &l, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:4: 'l' must be a list of strings");
    g_assert_null(l);
}

static void
test_check_keys(void)
{
    static const char *const known[] = { "alpha", "beta", NULL };
    g_autoptr(GError) err = NULL;
    g_autoptr(VmlConf) good = parse_ok("alpha = 1\nbeta = \"b\"\n");
    g_autoptr(VmlConf) bad = parse_ok(
        "alpha = 1\n"
        "\n"
        "# comment\n"
        "beta = 2\n"
        "\n"
        "\n"
        "foo = 3\n"
        "bar = 4\n");

    g_assert_true(vml_conf_check_keys(good, known, &err));
    g_assert_no_error(err);
    g_assert_false(vml_conf_check_keys(bad, known, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, "test.conf:7: unknown setting 'foo'");
}

typedef struct {
    const char *input;
    gsize len;            /* 0: strlen(input) */
    const char *where;    /* "line:column" */
    const char *expect;   /* text the message must contain */
} BadCase;

static void
test_malformed(void)
{
    static const BadCase cases[] = {
        { "a =\n", 0, "1:4", "expected a value after '='" },
        { "x = 1\nab = # nothing\n", 0, "2:6", "expected a value after '='" },
        { "a = foo\n", 0, "1:5", "expected a value after '='" },
        { "a = 1 2\n", 0, "1:7", "expected a comment or end of line" },
        { "a = \"x\"\"y\"\n", 0, "1:8", "expected a comment or end of line" },
        { "a = 12.5\n", 0, "1:7", "expected a comment or end of line" },
        { "a = 1 # ok\nb = 2x\n", 0, "2:6", "expected a comment or end of line" },
        { "a = [ \"x\" ] y\n", 0, "1:13", "expected a comment or end of line" },
        /* Columns count characters: the 'x' is the 9th character. */
        { "a = \"\xc3\xa9\" x\n", 0, "1:9", "expected a comment or end of line" },
        { "a = \"abc\n", 0, "1:9", "expected \" to close the string opened at column 5" },
        { "\n\n  b = 'x", 0, "3:9", "expected ' to close the string opened at column 7" },
        { "a = \"abc", 0, "1:9", "expected \" to close the string" },
        { "a = [ \"x\",\n  \"y\"\n", 0, "3:1", "expected ']' to close the list opened at 1:5" },
        { "a = [", 0, "1:6", "expected ']' to close the list opened at 1:5" },
        { "a = [ \"x\", # c\n", 0, "2:1", "expected ']' to close the list opened at 1:5" },
        { "a = [ 1 ]\n", 0, "1:7", "expected a string or ']' in list" },
        { "a = [ , ]\n", 0, "1:7", "expected a string or ']' in list" },
        { "a = [ \"x\",, ]\n", 0, "1:11", "expected a string or ']' in list" },
        { "a = [ \"x\" \"y\" ]\n", 0, "1:11", "expected ',' or ']' in list" },
        { "a = [ [ \"x\" ] ]\n", 0, "1:7", "expected a string or ']' in list" },
        { "a = 9223372036854775808\n", 0, "1:5", "does not fit in 64 bits" },
        { "a = -9223372036854775809\n", 0, "1:5", "does not fit in 64 bits" },
        { "a = 99999999999999999999999999\n", 0, "1:5", "does not fit in 64 bits" },
        { "a = -\n", 0, "1:6", "expected digits after '-'" },
        { "a = --1\n", 0, "1:6", "expected digits after '-'" },
        { "a = \"x\\ny\"\n", 0, "1:7", "invalid escape sequence" },
        { "a = \"x\\", 0, "1:7", "invalid escape sequence" },
        { "a = \"\xff\"\n", 0, "1:6", "invalid UTF-8 in string" },
        { "a = 'ok\xc3'\n", 0, "1:8", "invalid UTF-8 in string" },
        { "a = \"\xc0\xaf\"\n", 0, "1:6", "invalid UTF-8 in string" },        /* overlong */
        { "a = \"\xed\xa0\x80\"\n", 0, "1:6", "invalid UTF-8 in string" },    /* surrogate */
        { "a = \"\xf4\x90\x80\x80\"\n", 0, "1:6", "invalid UTF-8 in string" }, /* > U+10FFFF */
        { "a = \"\xe2\x82", 0, "1:6", "invalid UTF-8 in string" },             /* truncated */
        { "a = \"x\0y\"\n", 10, "1:7", "NUL byte in string" },
        { "# a\0b\na = 1\n", 12, "1:4", "NUL byte in comment" },
        { "a = 1\0\n", 7, "1:6", "expected a comment or end of line" },
        { "\0", 1, "1:1", "expected a setting name" },
        { "1a = 2\n", 0, "1:1", "expected a setting name" },
        { "= 1\n", 0, "1:1", "expected a setting name" },
        { "  -a = 1\n", 0, "1:3", "expected a setting name" },
        { "a 2\n", 0, "1:3", "expected '=' after 'a'" },
        { "a\n= 2\n", 0, "1:2", "expected '=' after 'a'" },
        { "key-name = 1\n", 0, "1:4", "expected '=' after 'key'" },
        { "a = 1; b = 2\n", 0, "1:6", "expected a comment or end of line" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        const BadCase *c = &cases[i];
        gsize len = c->len ? c->len : strlen(c->input);
        g_autoptr(GError) err = NULL;
        g_autoptr(VmlConf) conf = vml_conf_new_from_data(c->input, len, "bad.conf", &err);
        g_autofree char *prefix = g_strdup_printf("bad.conf:%s: ", c->where);
        g_autofree char *escaped = g_strescape(c->input, NULL);

        if (conf || !g_error_matches(err, VML_ERROR, VML_ERROR_CONFIG)) {
            g_test_fail_printf("case %u \"%s\": expected VML_ERROR_CONFIG, got %s",
                               i, escaped, err ? err->message : "success");
            continue;
        }
        if (!g_str_has_prefix(err->message, prefix) || !strstr(err->message, c->expect)) {
            g_test_fail_printf("case %u \"%s\": expected \"%s...%s\", got \"%s\"",
                               i, escaped, prefix, c->expect, err->message);
        }
    }
}

static void
test_limits(void)
{
    g_autoptr(GError) err = NULL;
    /* Exactly 1 MiB is accepted; one byte more is refused before parsing. */
    g_autofree char *data = g_malloc(MIB + 1);

    memset(data, '#', MIB + 1);
    g_autoptr(VmlConf) ok = vml_conf_new_from_data(data, MIB, "big", &err);
    g_assert_no_error(err);
    g_assert_nonnull(ok);
    g_autoptr(VmlConf) bad = vml_conf_new_from_data(data, MIB + 1, "big", &err);
    g_assert_null(bad);
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_true(g_str_has_prefix(err->message, "big: "));
}

static char *
write_temp(const char *contents, gsize len)
{
    g_autoptr(GError) err = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("test-conf-XXXXXX.conf", &path, &err);

    g_assert_no_error(err);
    close(fd);
    g_file_set_contents(path, contents, (gssize)len, &err);
    g_assert_no_error(err);
    return path;
}

static void
test_file(void)
{
    g_autoptr(GError) err = NULL;
    const char text[] = "lockspace_dir = \"/srv/locks\"\nmax_clients = 12\n";
    g_autofree char *path = write_temp(text, strlen(text));
    g_autofree char *dir = NULL;
    gint64 n = 0;

    g_autoptr(VmlConf) conf = vml_conf_new_from_file(path, &err);
    g_assert_no_error(err);
    g_assert_true(vml_conf_get_string(conf, "lockspace_dir", &dir, &err));
    g_assert_cmpstr(dir, ==, "/srv/locks");
    g_assert_true(vml_conf_get_int(conf, "max_clients", &n, &err));
    g_assert_cmpint(n, ==, 12);
    g_assert_no_error(err);

    /* The file's path is the origin of errors. */
    g_autofree char *expected = g_strdup_printf("%s:2: 'max_clients' must be a string", path);
    g_autofree char *s = NULL;
    g_assert_false(vml_conf_get_string(conf, "max_clients", &s, &err));
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, expected);
    g_clear_error(&err);
    g_unlink(path);

    /* Parse errors in a file. */
    const char broken[] = "a = 1\nb = [ \"x\"\n";
    g_autofree char *bpath = write_temp(broken, strlen(broken));
    g_autofree char *bprefix = g_strdup_printf("%s:3:1: expected ']'", bpath);
    g_autoptr(VmlConf) bconf = vml_conf_new_from_file(bpath, &err);
    g_assert_null(bconf);
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_true(g_str_has_prefix(err->message, bprefix));
    g_clear_error(&err);
    g_unlink(bpath);

    /* Missing file: path and strerror. */
    g_autofree char *missing = g_strdup_printf("%s.missing", path);
    g_autofree char *mmsg = g_strdup_printf("%s: %s", missing, g_strerror(ENOENT));
    g_autoptr(VmlConf) mconf = vml_conf_new_from_file(missing, &err);
    g_assert_null(mconf);
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, mmsg);
    g_clear_error(&err);

    /* A directory opens but cannot be read. */
    g_autofree char *tmpdir = g_dir_make_tmp("test-conf-XXXXXX", &err);
    g_assert_no_error(err);
    g_autofree char *dmsg = g_strdup_printf("%s: %s", tmpdir, g_strerror(EISDIR));
    g_autoptr(VmlConf) dconf = vml_conf_new_from_file(tmpdir, &err);
    g_assert_null(dconf);
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(err->message, ==, dmsg);
    g_clear_error(&err);
    g_rmdir(tmpdir);

    /* Too big: refused with the path. */
    g_autofree char *data = g_malloc(MIB + 1);
    memset(data, '#', MIB + 1);
    g_autofree char *big = write_temp(data, MIB + 1);
    g_autofree char *bigprefix = g_strdup_printf("%s: ", big);
    g_autoptr(VmlConf) bigconf = vml_conf_new_from_file(big, &err);
    g_assert_null(bigconf);
    g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_true(g_str_has_prefix(err->message, bigprefix));
    g_clear_error(&err);
    g_unlink(big);

    /* An endless source is cut off at the limit, not read to exhaustion. */
    if (g_file_test("/dev/zero", G_FILE_TEST_EXISTS)) {
        g_autoptr(VmlConf) zconf = vml_conf_new_from_file("/dev/zero", &err);
        g_assert_null(zconf);
        g_assert_error(err, VML_ERROR, VML_ERROR_CONFIG);
        g_assert_true(g_str_has_prefix(err->message, "/dev/zero: "));
    }
}

static void
test_update_keeps_defaults(void)
{
    static const char text[] = "dir = \"/x\"\nflag = 0\nnum = 3\n";
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlConf) conf = vml_conf_new_from_data(text, sizeof(text) - 1, "u.conf", &error);
    g_assert_no_error(error);
    g_autofree char *dir = g_strdup("/default");
    g_autofree char *absent = g_strdup("/kept");
    gboolean flag = TRUE, other = TRUE;
    g_assert_true(vml_conf_update_string(conf, "dir", &dir, &error));
    g_assert_cmpstr(dir, ==, "/x");
    g_assert_true(vml_conf_update_string(conf, "nope", &absent, &error));
    g_assert_cmpstr(absent, ==, "/kept");
    g_assert_true(vml_conf_update_bool(conf, "flag", &flag, &error));
    g_assert_false(flag);
    g_assert_true(vml_conf_update_bool(conf, "nope", &other, &error));
    g_assert_true(other);
    g_assert_no_error(error);
    /* A wrong type fails and leaves the field alone. */
    g_assert_false(vml_conf_update_string(conf, "num", &absent, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFIG);
    g_assert_cmpstr(absent, ==, "/kept");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/conf/types", test_types);
    g_test_add_func("/conf/bool", test_bool);
    g_test_add_func("/conf/multiline-list", test_multiline_list);
    g_test_add_func("/conf/escapes", test_escapes);
    g_test_add_func("/conf/set-twice", test_set_twice);
    g_test_add_func("/conf/value-errors-name-the-line", test_value_errors_name_the_line);
    g_test_add_func("/conf/layout", test_layout);
    g_test_add_func("/conf/absent-and-types", test_absent_and_types);
    g_test_add_func("/conf/check-keys", test_check_keys);
    g_test_add_func("/conf/malformed", test_malformed);
    g_test_add_func("/conf/limits", test_limits);
    g_test_add_func("/conf/file", test_file);
    g_test_add_func("/conf/update-keeps-defaults", test_update_keeps_defaults);
    return g_test_run();
}
