/* Unit tests for the JSON on the wire: vml_json_to_string (lib/vml-wire.c)
 * writes strict JSON whatever its strings hold, and the strict checker
 * (lib/vml-json-strict.c) that holds it to that. json-glib's own parser is
 * no judge here: it takes raw control characters and invalid UTF-8. */
#include "vml-error.h"
#include "vml-json-request.h"
#include "vml-json-strict.h"
#include "vml-json-write.h"
#include "vml-wire.h"

#include <math.h>
#include <string.h>

/* ---- the checker ---------------------------------------------------------- */

static void
test_check_accepts(void)
{
    static const char *const good[] = {
        "{}",
        " \t\r\n{ } \n",
        "{\"a\":1}",
        "{\"a\":-0,\"b\":0.5,\"c\":-12.25e+3,\"d\":1E-2,\"e\":9223372036854775807}",
        "{\"a\":[true,false,null,[],{}],\"b\":{\"c\":[1,[2,[3]]]}}",
        "{\"s\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\u0000\"}",
        "{\"s\":\"\\ud83d\\ude00 and \\uD83D\\uDE00\"}",
        "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd \xf4\x8f\xbf\xbf\"}",
        "{\"del\":\"\x7f\"}",   /* RFC 8259 lets U+007F be raw */
        "{\"\":\"\"}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autoptr(GError) error = NULL;
        if (!vml_json_strict_check(good[i], strlen(good[i]), &error))
            g_test_fail_printf("refused %s: %s", good[i], error->message);
    }
}

static void
test_check_refuses(void)
{
    static const struct {
        const char *text;
        gsize len;   /* 0: strlen */
    } bad[] = {
        { "", 0 },
        { "   ", 0 },
        { "[]", 0 },
        { "\"a\"", 0 },
        { "1", 0 },
        { "{", 0 },
        { "{}}", 0 },
        { "{} {}", 0 },
        { "{}x", 0 },
        { "{\"a\":1,}", 0 },
        { "{,}", 0 },
        { "{\"a\" 1}", 0 },
        { "{\"a\":}", 0 },
        { "{a:1}", 0 },
        { "{'a':1}", 0 },
        { "{\"a\":'b'}", 0 },
        { "{\"a\":1 /* c */}", 0 },
        { "{\"a\":[1,]}", 0 },
        { "{\"a\":[1 2]}", 0 },
        { "{\"a\":01}", 0 },
        { "{\"a\":-}", 0 },
        { "{\"a\":1.}", 0 },
        { "{\"a\":.5}", 0 },
        { "{\"a\":+1}", 0 },
        { "{\"a\":0x10}", 0 },
        { "{\"a\":1e}", 0 },
        { "{\"a\":1e+20.0}", 0 },      /* what json-glib writes for 1e20 */
        { "{\"a\":inf.0}", 0 },        /* ... and for an infinity */
        { "{\"a\":NaN}", 0 },
        { "{\"a\":tru}", 0 },
        { "{\"a\":truex}", 0 },
        { "{\"a\":nul}", 0 },
        { "{\"a\":\"b}", 0 },
        { "{\"a\":\"\x01\"}", 0 },
        { "{\"a\":\"\x1f\"}", 0 },
        { "{\"a\":\"\n\"}", 0 },
        { "{\"a\":\"\t\"}", 0 },
        { "{\"a\x1f\":1}", 0 },
        { "{\"a\":\"\0\"}", 7 },
        { "{}\0", 3 },
        { "{\"a\":\"\\x41\"}", 0 },
        { "{\"a\":\"\\'\"}", 0 },
        { "{\"a\":\"\\u12\"}", 0 },
        { "{\"a\":\"\\u12g4\"}", 0 },
        { "{\"a\":\"\\ud800\"}", 0 },
        { "{\"a\":\"\\ud800x\"}", 0 },
        { "{\"a\":\"\\ud800\\u0041\"}", 0 },
        { "{\"a\":\"\\udc00\"}", 0 },
        { "{\"a\":\"\\ude00\\ud83d\"}", 0 },
        { "{\"a\":\"\xff\"}", 0 },
        { "{\"a\":\"\x80\"}", 0 },
        { "{\"a\":\"\xc3\"}", 0 },
        { "{\"a\":\"\xc3x\"}", 0 },
        { "{\"a\":\"\xc0\xaf\"}", 0 },             /* overlong '/' */
        { "{\"a\":\"\xe0\x80\xaf\"}", 0 },         /* overlong '/' */
        { "{\"a\":\"\xf0\x80\x80\xaf\"}", 0 },     /* overlong '/' */
        { "{\"a\":\"\xed\xa0\x80\"}", 0 },         /* U+D800 in UTF-8 */
        { "{\"a\":\"\xed\xbf\xbf\"}", 0 },         /* U+DFFF in UTF-8 */
        { "{\"a\":\"\xf4\x90\x80\x80\"}", 0 },     /* U+110000 */
        { "{\"a\":\"\xf8\x88\x80\x80\x80\"}", 0 }, /* five bytes */
        { "{\"a\":\"\xe2\x82\"}", 0 },             /* cut short */
        { "{\"a\":\"\xe2\x82", 0 },                 /* cut short at the end */
        { "{\"\xff\":1}", 0 },
        { "\xef\xbb\xbf{}", 0 },                    /* a byte order mark */
        { "{}\x0b", 0 },                            /* not JSON whitespace */
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        gsize len = bad[i].len ? bad[i].len : strlen(bad[i].text);
        g_autoptr(GError) error = NULL;
        g_autofree char *shown = g_strescape(bad[i].text, NULL);
        if (vml_json_strict_check(bad[i].text, len, &error))
            g_test_fail_printf("accepted \"%s\"", shown);
        else if (!g_error_matches(error, VML_ERROR, VML_ERROR_PROTOCOL) || !*error->message)
            g_test_fail_printf("\"%s\": refused without a proper error", shown);
    }
}

static void
test_check_depth(void)
{
    GString *s = g_string_new("{\"a\":");
    for (guint i = 0; i < 510; i++)
        g_string_append_c(s, '[');
    for (guint i = 0; i < 510; i++)
        g_string_append_c(s, ']');
    g_string_append_c(s, '}');
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_json_strict_check(s->str, s->len, &error));
    g_assert_no_error(error);

    g_string_assign(s, "{\"a\":");
    for (guint i = 0; i < 100000; i++)
        g_string_append_c(s, '[');
    g_assert_false(vml_json_strict_check(s->str, s->len, &error));
    g_assert_nonnull(strstr(error->message, "nesting"));
    g_string_free(s, TRUE);
}

/* ---- the writer ------------------------------------------------------------ */

/* TEXT is strict JSON and has no raw control character, U+007F included. */
static void
assert_strict(const char *text, gsize len)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *shown = g_strescape(text, NULL);
    if (!vml_json_strict_check(text, len, &error)) {
        g_test_fail_printf("%s: %s", shown, error->message);
        return;
    }
    if (strlen(text) != len)
        g_test_fail_printf("%s: a NUL inside", shown);
    for (gsize i = 0; i < len; i++) {
        if ((guchar)text[i] < 0x20 || (guchar)text[i] == 0x7f) {
            g_test_fail_printf("%s: raw control character 0x%02x", shown, (guchar)text[i]);
            return;
        }
    }
}

/* Read TEXT back with json-glib: the root object. */
static JsonObject *
parse_back(const char *text, gsize len)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    g_assert_true(json_parser_load_from_data(parser, text, len, &error));
    g_assert_no_error(error);
    JsonNode *root = json_parser_get_root(parser);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(root));
    return json_object_ref(json_node_get_object(root));
}

/* A reply carrying S as a value and as a member name comes out strict, and
 * reads back as S with each byte that is not UTF-8 made U+FFFD. */
static void
check_string(const char *s)
{
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "value", s);
    json_object_set_int_member(o, s, 7);
    gsize len;
    g_autofree char *text = vml_json_to_string(o, &len);
    g_assert_nonnull(text);
    assert_strict(text, len);
    if (g_test_failed())
        return;

    g_autofree char *want = g_utf8_make_valid(s, -1);
    g_autoptr(JsonObject) back = parse_back(text, len);
    g_assert_cmpstr(json_object_get_string_member(back, "value"), ==, want);
    if (*s)
        g_assert_cmpint(json_object_get_int_member(back, want), ==, 7);
}

static void
test_every_byte(void)
{
    for (guint b = 1; b < 256; b++) {
        char s[] = { 'a', (char)b, 'z', 0 };
        check_string(s);
        char alone[] = { (char)b, 0 };
        check_string(alone);
    }
}

/* Every pair of bytes, at the end of a string and before ASCII: truncated
 * sequences, stray continuation bytes, overlong forms. */
static void
test_every_pair(void)
{
    for (guint a = 1; a < 256; a++) {
        for (guint b = 1; b < 256; b++) {
            char s[] = { (char)a, (char)b, 0 };
            g_autoptr(JsonObject) o = json_object_new();
            json_object_set_string_member(o, "v", s);
            gsize len;
            g_autofree char *text = vml_json_to_string(o, &len);
            assert_strict(text, len);
            if (g_test_failed())
                return;
        }
    }
}

static void
test_hostile_strings(void)
{
    static const char *const hostile[] = {
        "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
        "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
        "io.vmlease.Admin.Sta\x1ftus",
        "\x1b[31mred\x1b[0m",
        "line\nforged log line\r\n",
        "\xff\xfe",
        "a\xff" "b",
        "\xc0\xaf",
        "\xe0\x80\xaf",
        "\xed\xa0\x80",              /* a lone \ud800 as json-glib decodes it */
        "\xed\xb0\x80",              /* a lone \udc00 */
        "\xed\xa0\xbd\xed\xb8\x80",  /* a pair encoded one by one (CESU-8) */
        "\xf4\x90\x80\x80",
        "\xf8\x88\x80\x80\x80",
        "\xe2\x82",
        "caf\xc3",
        "\x80\x80\x80",
        "\"quoted\" \\back\\slash /",
        "\xe2\x80\xa8\xe2\x80\xa9",  /* U+2028, U+2029: fine in JSON */
        "caf\xc3\xa9 \xf0\x9f\x98\x80",
        "",
    };
    for (guint i = 0; i < G_N_ELEMENTS(hostile); i++)
        check_string(hostile[i]);
}

/* json-glib turns a lone surrogate escape into bytes that are not UTF-8; a
 * reply that carries them back must still be strict. */
static void
test_lone_surrogate_input(void)
{
    static const char *const inputs[] = {
        "{\"method\":\"a\\ud800b\"}",
        "{\"method\":\"x\\udc00y\"}",
        "{\"method\":\"\\ud800\\u0041z\"}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(inputs); i++) {
        g_autoptr(JsonParser) parser = json_parser_new();
        if (!json_parser_load_from_data(parser, inputs[i], -1, NULL))
            continue;   /* refused outright: nothing to echo */
        JsonObject *in = json_node_get_object(json_parser_get_root(parser));
        const char *name = json_object_get_string_member(in, "method");
        g_assert_nonnull(name);
        check_string(name);
    }
}

/* The shape of an error reply (vml_conn_error), its message made with
 * printf from client text and cut at a byte count. */
static void
test_error_reply(void)
{
    static const char *const names[] = {
        "io.vmlease.Nope\x01\x1f\x7f",
        "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac",
        "\xed\xa0\x80\x1f",
    };
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        for (int cut = 0; cut <= (int)strlen(names[i]); cut++) {
            g_autoptr(JsonObject) msg = json_object_new();
            JsonObject *p = json_object_new();
            json_object_set_string_member(p, "method", names[i]);
            g_autofree char *text = g_strdup_printf("no method '%.*s'", cut, names[i]);
            json_object_set_string_member(p, "message", text);
            json_object_set_string_member(p, "reason", text);
            json_object_set_string_member(msg, "error", "org.varlink.service.MethodNotFound");
            json_object_set_object_member(msg, "parameters", p);
            gsize len;
            g_autofree char *json = vml_json_to_string(msg, &len);
            assert_strict(json, len);
        }
    }
}

/* Ordinary replies come out byte for byte as json-glib's generator wrote
 * them before: member order, escapes, integers, nesting. */
static void
test_same_as_json_glib(void)
{
    static const char *const docs[] = {
        "{}",
        "{\"parameters\":{}}",
        "{\"error\":\"io.vmlease.Conflict\",\"parameters\":{\"resource\":\"/var/lib/a b.qcow2\","
        "\"owners\":[{\"pid\":42,\"uuid\":\"u\",\"parked\":false,\"since\":-1}],"
        "\"message\":\"VM \\\"x\\\" has it\\n\\ttab \\\\ / caf\xc3\xa9 \\u0001\\u007f\"}}",
        "{\"z\":1,\"a\":2,\"m\":[null,true,[[],{}],\"\"],\"n\":null,\"big\":-9223372036854775808}",
        "{\"d\":0.5,\"e\":-2.25,\"f\":1.0}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(docs); i++) {
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, docs[i], -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(parser));
        g_autoptr(JsonGenerator) gen = json_generator_new();
        json_generator_set_root(gen, json_parser_get_root(parser));
        g_autofree char *theirs = json_generator_to_data(gen, NULL);
        gsize len;
        g_autofree char *ours = vml_json_to_string(o, &len);
        g_assert_cmpstr(ours, ==, theirs);
        g_assert_cmpuint(len, ==, strlen(theirs));
        assert_strict(ours, len);
    }
}

static void
test_doubles(void)
{
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_double_member(o, "big", 1e20);
    json_object_set_double_member(o, "huge", 1e300);
    json_object_set_double_member(o, "tiny", -2.5e-300);
    json_object_set_double_member(o, "one", 1.0);
    json_object_set_double_member(o, "inf", INFINITY);
    json_object_set_double_member(o, "nan", NAN);
    gsize len;
    g_autofree char *text = vml_json_to_string(o, &len);
    assert_strict(text, len);
    g_autoptr(JsonObject) back = parse_back(text, len);
    g_assert_cmpfloat(json_object_get_double_member(back, "big"), ==, 1e20);
    g_assert_cmpfloat(json_object_get_double_member(back, "huge"), ==, 1e300);
    g_assert_cmpfloat(json_object_get_double_member(back, "tiny"), ==, -2.5e-300);
    g_assert_true(json_node_get_value_type(json_object_get_member(back, "one")) == G_TYPE_DOUBLE);
    g_assert_true(json_object_get_null_member(back, "inf"));
    g_assert_true(json_object_get_null_member(back, "nan"));
}

/* A NULL string, an object or array node never filled: JSON all the same. */
static void
test_empty_nodes(void)
{
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "s", NULL);
    json_object_set_member(o, "obj", json_node_new(JSON_NODE_OBJECT));
    json_object_set_member(o, "arr", json_node_new(JSON_NODE_ARRAY));
    json_object_set_null_member(o, "n");
    gsize len;
    g_autofree char *text = vml_json_to_string(o, &len);
    assert_strict(text, len);
}

/* Random strings in replies nested a few levels: strict every time. */
static void
test_random_replies(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(13);
    for (guint round = 0; round < 2000; round++) {
        g_autoptr(JsonObject) top = json_object_new();
        JsonObject *o = top;
        guint depth = g_rand_int_range(rand, 1, 5);
        for (guint d = 0; d < depth; d++) {
            char buf[24];
            guint n = g_rand_int_range(rand, 0, sizeof(buf));
            for (guint i = 0; i < n; i++)
                buf[i] = (char)g_rand_int_range(rand, 1, 256);
            buf[n] = '\0';
            json_object_set_string_member(o, "s", buf);
            json_object_set_string_member(o, buf, buf);
            JsonArray *a = json_array_new();
            json_array_add_string_element(a, buf);
            json_array_add_int_element(a, g_rand_int(rand));
            json_object_set_array_member(o, "a", a);
            JsonObject *inner = json_object_new();
            json_object_set_object_member(o, "o", inner);
            o = inner;
        }
        gsize len;
        g_autofree char *text = vml_json_to_string(top, &len);
        assert_strict(text, len);
        if (g_test_failed())
            return;
    }
}

/* The daemon's parser of requests: each refusal with its exact sentence,
 * and what it accepts parsed as json-glib parses it. */
static void
test_request_parse(void)
{
    static const struct { const char *text; const char *problem; } cases[] = {
        { "{\"method\":\"x\",\"parameters\":{\"a\":[1,-2.5e3,true,false,null,{}]}}", NULL },
        { " {\"a\":\"\\u00e9\\ud83d\\ude00 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}\n", NULL },
        { "{\"a\":-9223372036854775808,\"b\":9223372036854775807,\"c\":-0,\"d\":1E+2}", NULL },
        { "{\"a\":1,\"a\":[2]}", NULL },
        { "{\"a\":9223372036854775808}", "message holds an integer beyond 64 bits" },
        { "{\"a\":\"\\u0000\"}", "message holds a NUL character (\\u0000) in a string" },
        { "{\"a\":\"\\udc00\"}", "message has a lone surrogate (\\uDC00-\\uDFFF) in a string" },
        { "{\"a\":\"\\ud800x\"}", "message has a lone surrogate (\\uD800-\\uDBFF) in a string" },
        { "{\"a\":\"\\u12\"}", "message has a malformed \\u escape in a string" },
        { "{\"a\":\"\\x41\"}", "message has an escape in a string that JSON does not know" },
        { "{\"a\":\"\t\"}", "message has a control character in a string" },
        { "{\"a\":\"open", "message ends inside a string" },
        { "{\"a\":'b'}", "message has a 'single-quoted' string, which is not JSON" },
        { "{\"a\":/* c */1}", "message has a comment, which is not JSON" },
        { "{\"a\":nope}", "message has a word outside strings that is not JSON" },
        { "{\"a\":truex}", "message has a word outside strings that is not JSON" },
        { "{\"a\":0x1f}", "message has a number that is not JSON" },
        { "{\"a\":01}", "message has a number that is not JSON" },
        { "{\"a\":1.}", "message has a number that is not JSON" },
        { "{\"a\":1}{}", "message has data after its JSON object" },
        { "[1]", "message is not a JSON object" },
        { "", "message is not a whole JSON object" },
        { "{\"a\":[1]", "message is not a whole JSON object" },
        { "{\"a\"", "message is not a whole JSON object" },
        { "{\"a\":\xc3}", "message is not valid UTF-8" },
        { "{\"a\":#}", "message has a character outside strings that is not JSON" },
        { "{\"a\" 1}", "message is not valid JSON: expected ':' after a member name at byte 5" },
        { "{1:2}", "message is not valid JSON: expected a member name in double quotes at byte 1" },
        { "{\"a\":1,}", "message is not valid JSON: expected a member name in double quotes at byte 7" },
        { "{\"a\":[1,]}", "message is not valid JSON: expected a value at byte 8" },
        { "{\"a\":1 \"b\":2}", "message is not valid JSON: expected ',' or '}' at byte 7" },
        { "{\"a\":[1 2]}", "message is not valid JSON: expected ',' or ']' at byte 8" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        gsize len = strlen(cases[i].text);
        g_autoptr(JsonObject) got = vml_json_request_parse(cases[i].text, len, &error);
        g_test_message("%s -> %s", cases[i].text, error ? error->message : "ok");
        if (cases[i].problem) {
            g_assert_null(got);
            g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_MESSAGE);
            g_assert_cmpstr(error->message, ==, cases[i].problem);
            continue;
        }
        g_assert_no_error(error);
        g_assert_nonnull(got);
        /* The same tree json-glib makes of it: same text written back,
         * same types (an integer stays one), sealed. */
        g_autoptr(JsonParser) parser = json_parser_new_immutable();
        g_assert_true(json_parser_load_from_data(parser, cases[i].text, (gssize)len, NULL));
        JsonObject *want = json_node_get_object(json_parser_get_root(parser));
        g_autofree char *got_text = vml_json_to_string(got, NULL);
        g_autofree char *want_text = vml_json_to_string(want, NULL);
        g_assert_cmpstr(got_text, ==, want_text);
        g_assert_true(json_object_is_immutable(got));
    }
    /* As deep as allowed, and one deeper. */
    g_autoptr(GString) deep = g_string_new("{\"a\":");
    for (int i = 1; i < VML_JSON_REQUEST_DEPTH_MAX; i++)
        g_string_append_c(deep, '[');
    for (int i = 1; i < VML_JSON_REQUEST_DEPTH_MAX; i++)
        g_string_append_c(deep, ']');
    g_string_append_c(deep, '}');
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ok = vml_json_request_parse(deep->str, deep->len, &error);
    g_assert_no_error(error);
    g_string_insert_c(deep, 5, '[');
    g_string_insert_c(deep, deep->len - 1, ']');
    g_assert_null(vml_json_request_parse(deep->str, deep->len, &error));
    g_assert_cmpstr(error->message, ==, "message is nested too deeply");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/wire-json/check/accepts", test_check_accepts);
    g_test_add_func("/wire-json/check/refuses", test_check_refuses);
    g_test_add_func("/wire-json/check/depth", test_check_depth);
    g_test_add_func("/wire-json/request-parse", test_request_parse);
    g_test_add_func("/wire-json/write/every-byte", test_every_byte);
    g_test_add_func("/wire-json/write/every-pair", test_every_pair);
    g_test_add_func("/wire-json/write/hostile-strings", test_hostile_strings);
    g_test_add_func("/wire-json/write/lone-surrogate-input", test_lone_surrogate_input);
    g_test_add_func("/wire-json/write/error-reply", test_error_reply);
    g_test_add_func("/wire-json/write/same-as-json-glib", test_same_as_json_glib);
    g_test_add_func("/wire-json/write/doubles", test_doubles);
    g_test_add_func("/wire-json/write/empty-nodes", test_empty_nodes);
    g_test_add_func("/wire-json/write/random-replies", test_random_replies);
    return g_test_run();
}
