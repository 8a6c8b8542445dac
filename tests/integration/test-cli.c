/* The vmlease command against a real vmleased: what an administrator sees
 * and the exit codes scripts rely on. */
#include "harness.h"
#include "vml-error.h"

#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define UUID_A "aaaaaaaa-0000-4000-8000-000000000001"

static VmlTestDaemon *daemon_;


/* Run vmlease with ARGS (NULL-terminated) and capture everything. */
static void
vmlease(VmlTestRun *r, const char *first, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    va_list ap;
    g_ptr_array_add(argv, (char *)g_getenv("VMLEASE_BIN"));
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    vml_test_run(r, NULL, (const char *const *)argv->pdata);
}

/* `vmlease run --exclusive IMG -- sleep 60` in the background; returns
 * the vmlease process (the holder) once its lease shows. */
static GPid
run_in_background(const char *mode, const char *img)
{
    const char *argv[] = { g_getenv("VMLEASE_BIN"), "run", mode, img, "--", "sleep", "60", NULL };
    GPid pid;
    g_autoptr(GError) error = NULL;
    g_spawn_async(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid, &error);
    g_assert_no_error(error);
    for (int i = 0; i < 500; i++) {
        g_autoptr(JsonArray) owners = vml_test_owners(img);
        for (guint j = 0; j < json_array_get_length(owners); j++) {
            if (json_object_get_int_member(json_array_get_object_element(owners, j), "pid") == pid)
                return pid;
        }
        g_usleep(10000);
    }
    g_error("vmlease run did not take its lease");
}

static void
stop_background(GPid pid)
{
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    /* vmlease forwards SIGTERM to sleep and exits with its status. */
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 128 + SIGTERM);
}

static void
test_run_refused_names_holder(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "run.img");
    GPid holder = run_in_background("--exclusive", img);
    g_autofree char *pid_text = g_strdup_printf("pid %d", (int)holder);

    g_auto(VmlTestRun) r = { 0 };
    vmlease(&r, "run", "--exclusive", img, "--", "touch", "/nonexistent/should-not-run", NULL);
    g_assert_cmpint(r.status, ==, 3);
    g_assert_cmpstr(r.out, ==, "");
    g_assert_true(g_str_has_prefix(r.err, "vmlease: cannot lock "));
    g_assert_nonnull(strstr(r.err, img));
    g_assert_nonnull(strstr(r.err, "vmlease-run:sleep"));
    g_assert_nonnull(strstr(r.err, pid_text));
    g_assert_nonnull(strstr(r.err, "exclusive since"));

    /* Shared is refused too while the holder is exclusive. */
    g_auto(VmlTestRun) r2 = { 0 };
    vmlease(&r2, "run", "--shared", img, "--", "true", NULL);
    g_assert_cmpint(r2.status, ==, 3);

    stop_background(holder);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_auto(VmlTestRun) r3 = { 0 };
    vmlease(&r3, "run", "--exclusive", img, "--", "sh", "-c", "exit 7", NULL);
    g_assert_cmpint(r3.status, ==, 7);
    g_assert_cmpstr(r3.err, ==, "");
}

static void
test_qemu_img_snapshot_refused_while_vm_runs(void)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img) {
        g_test_skip("qemu-img not installed");
        return;
    }
    g_autofree char *img = g_build_filename(daemon_->root, "vm-disk.qcow2", NULL);
    g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 '%s' 1M", img);
    g_assert_cmpint(system(cmd), ==, 0);
    pid_t vm = vml_test_holder_spawn(UUID_A, "vm-a", vml_test_resources("exclusive", img, NULL));

    g_auto(VmlTestRun) r = { 0 };
    vmlease(&r, "run", "--exclusive", img, "--", "qemu-img", "snapshot", "-c", "s1", img, NULL);
    g_assert_cmpint(r.status, ==, 3);
    g_assert_nonnull(strstr(r.err, "VM \"vm-a\""));
    g_assert_nonnull(strstr(r.err, UUID_A));
    /* qemu-img never ran: no snapshot in the image. */
    g_autofree char *list = NULL;
    g_autofree char *list_cmd = g_strdup_printf("qemu-img snapshot -l '%s'", img);
    g_assert_true(g_spawn_command_line_sync(list_cmd, &list, NULL, NULL, NULL));
    g_assert_null(strstr(list, "s1"));

    vml_test_child_kill(vm, SIGKILL);
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_auto(VmlTestRun) r2 = { 0 };
    vmlease(&r2, "run", "--exclusive", img, "--", "qemu-img", "snapshot", "-c", "s1", img, NULL);
    g_assert_cmpint(r2.status, ==, 0);
}

/* run leases the backing chain shared: a commit into the base, which
 * needs it exclusive, is refused naming the reader, while another reader
 * of the same base is let in. */
static void
test_run_leases_backing_chain(void)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img) {
        g_test_skip("qemu-img not installed");
        return;
    }
    g_autofree char *base = g_build_filename(daemon_->root, "chain-base.qcow2", NULL);
    g_autofree char *top = g_build_filename(daemon_->root, "chain-top.qcow2", NULL);
    g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 '%s' 1M && "
                                           "qemu-img create -q -f qcow2 -b chain-base.qcow2 "
                                           "-F qcow2 '%s'", base, top);
    g_assert_cmpint(system(cmd), ==, 0);
    GPid reader = run_in_background("--exclusive", top);

    g_autoptr(JsonArray) owners = vml_test_owners(base);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, reader);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "shared");

    g_auto(VmlTestRun) r = { 0 };
    vmlease(&r, "run", "--exclusive", base, "--", "qemu-img", "commit", top, NULL);
    g_assert_cmpint(r.status, ==, 3);
    g_assert_nonnull(strstr(r.err, base));
    g_assert_nonnull(strstr(r.err, "vmlease-run:sleep"));
    g_auto(VmlTestRun) r2 = { 0 };
    vmlease(&r2, "run", "--shared", base, "--", "true", NULL);
    g_assert_cmpint(r2.status, ==, 0);

    stop_background(reader);
    g_assert_true(vml_test_wait_owners(base, 0, 1000));
}

static void
test_owners_table_and_json(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "owners.img");
    g_autofree char *real = realpath(img, NULL);
    GPid a = run_in_background("--shared", img);
    GPid b = run_in_background("--shared", img);

    g_auto(VmlTestRun) j = { 0 };
    vmlease(&j, "owners", "--json", img, NULL);
    g_assert_cmpint(j.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, j.out, -1, NULL));
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    JsonArray *res = json_object_get_array_member(root, "resources");
    g_assert_cmpuint(json_array_get_length(res), ==, 1);
    JsonObject *r0 = json_array_get_object_element(res, 0);
    vml_test_assert_image(r0, "path", real);
    JsonArray *owners = json_object_get_array_member(r0, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 2);
    for (guint i = 0; i < 2; i++) {
        JsonObject *o = json_array_get_object_element(owners, i);
        gint64 pid = json_object_get_int_member(o, "pid");
        g_assert_true(pid == a || pid == b);
        g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "shared");
        g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, "vmlease-run:sleep");
        g_assert_cmpstr(json_object_get_string_member(o, "host"), ==, g_get_host_name());
    }

    g_auto(VmlTestRun) t = { 0 };
    vmlease(&t, "owners", img, NULL);
    g_assert_cmpint(t.status, ==, 0);
    g_auto(GStrv) lines = g_strsplit(t.out, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 4);   /* header, 2 rows, "" */
    g_assert_true(g_str_has_prefix(lines[0], "IMAGE"));
    g_assert_nonnull(strstr(lines[0], " RESOURCE "));
    g_assert_nonnull(strstr(lines[0], "MODE"));
    g_assert_nonnull(strstr(lines[0], "PID"));
    g_assert_nonnull(strstr(lines[0], "SINCE"));
    for (int i = 1; i <= 2; i++) {
        g_assert_true(g_str_has_prefix(lines[i], real));
        g_autofree char *key = vml_test_resource_key(real);
        g_autofree char *key_col = g_strdup_printf(" %s ", key);
        g_assert_nonnull(strstr(lines[i], key_col));
        g_assert_nonnull(strstr(lines[i], " shared "));
        g_assert_nonnull(strstr(lines[i], " in use "));
    }
    stop_background(a);
    stop_background(b);

    /* Nothing held: said so, not an empty screen. */
    g_assert_true(vml_test_wait_owners(img, 0, 1000));
    g_auto(VmlTestRun) none = { 0 };
    vmlease(&none, "owners", img, NULL);
    g_assert_cmpint(none.status, ==, 0);
    g_autofree char *said = g_strdup_printf("no leases on %s\n", real);
    g_assert_cmpstr(none.out, ==, said);
}

/* The daemon's root/SUBDIR, made, with the shell SCRIPT run in it (qemu-img
 * making images): the directory. */
static char *
images_made(const char *subdir, const char *script)
{
    char *dir = g_build_filename(daemon_->root, subdir, NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_auto(VmlTestRun) mk = { 0 };
    const char *create[] = { "sh", "-c", script, NULL };
    vml_test_run(&mk, dir, create);
    g_assert_cmpint(mk.status, ==, 0);
    return dir;
}

/* chain rebase --backing NAME takes a relative NAME as qemu-img does: from
 * the directory of the image rebased (whatever the cwd), written into its
 * header as given; no lease is left behind. */
static void
test_chain_rebase_relative(void)
{
    g_autofree char *dir = images_made("rebase-rel",
                                       "qemu-img create -q -f qcow2 base.qcow2 1M && "
                                       "qemu-img create -q -f qcow2 other.qcow2 1M && "
                                       "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
                                       "top.qcow2");
    g_autofree char *top = g_build_filename(dir, "top.qcow2", NULL);
    g_auto(VmlTestRun) rb = { 0 };
    const char *rebase[] = { g_getenv("VMLEASE_BIN"), "chain", "rebase", top, "--backing",
                             "other.qcow2", NULL };
    vml_test_run(&rb, "/", rebase);
    g_assert_cmpint(rb.status, ==, 0);
    g_auto(VmlTestRun) info = { 0 };
    const char *query[] = { "qemu-img", "info", "--output=json", top, NULL };
    vml_test_run(&info, "/", query);
    g_assert_cmpint(info.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, info.out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpstr(json_object_get_string_member(o, "backing-filename"), ==, "other.qcow2");
    g_autofree char *other = g_build_filename(dir, "other.qcow2", NULL);
    g_assert_cmpstr(json_object_get_string_member(o, "full-backing-filename"), ==, other);
    g_autoptr(JsonArray) left = vml_test_owners(top);
    g_assert_cmpuint(json_array_get_length(left), ==, 0);
}

/* TEXT is exactly what the regular expression PATTERN (anchored at both
 * ends here) matches; shown whole when not. */
static void
assert_whole_match(const char *text, const char *pattern)
{
    g_autofree char *anchored = g_strdup_printf("\\A%s\\z", pattern);
    if (!g_regex_match_simple(anchored, text, G_REGEX_DOTALL, 0))
        g_error("expected /%s/, got \"%s\"", pattern, text);
}

/* The summary of a change: WORDS literally, then ", SIZE in S.T s" (or,
 * with SIZE NULL, ", done in S.T s") and a newline; only the time may
 * vary. */
static char *
summary_pattern(const char *words, const char *size)
{
    g_autofree char *quoted = g_regex_escape_string(words, -1);
    g_autofree char *quoted_size = size ? g_regex_escape_string(size, -1) : NULL;
    return g_strdup_printf("%s, %s in [0-9]+\\.[0-9] s\n", quoted,
                           size ? quoted_size : "done");
}

/* The progress lines of a change as qemu-img's percentages make them:
 * "\rLABEL: [ NN %]" (maybe a rate after it) rewritten in place, the last
 * one at 100 %, then a newline. */
static char *
progress_pattern(const char *label)
{
    const char *rate = "( [0-9]+(\\.[0-9])? (B|KiB|MiB|GiB|TiB)/s)? *";
    return g_strdup_printf("(\r%s: \\[[ 0-9]{2}[0-9] %%\\]%s)*\r%s: \\[100 %%\\]%s\n", label,
                           rate, label, rate);
}

/* The backing file qemu-img sees in IMAGE's header (NULL: none). */
static char *
backing_of(const char *image)
{
    g_auto(VmlTestRun) info = { 0 };
    const char *query[] = { "qemu-img", "info", "-U", "--output=json", image, NULL };
    vml_test_run(&info, "/", query);
    g_assert_cmpint(info.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, info.out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    return json_object_has_member(o, "full-backing-filename")
               ? g_strdup(json_object_get_string_member(o, "full-backing-filename"))
               : NULL;
}

/* The members of the JSON object TEXT, sorted and joined by ",". */
static char *
json_members(const char *text, JsonParser *parser)
{
    g_autoptr(GError) error = NULL;
    json_parser_load_from_data(parser, text, -1, &error);
    g_assert_no_error(error);
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    g_autoptr(GList) names = json_object_get_members(o);
    names = g_list_sort(names, (GCompareFunc)strcmp);
    g_autoptr(GString) out = g_string_new(NULL);
    for (GList *n = names; n; n = n->next)
        g_string_append_printf(out, "%s%s", out->len ? "," : "", (const char *)n->data);
    return g_string_free(g_steal_pointer(&out), FALSE);
}


/* base.qcow2 <- mid.qcow2 <- top.qcow2 in a new SUBDIR (1 MiB of data in
 * mid with DATA); the directory, canonical, and the three paths. */
static char *
three_layers(const char *subdir, gboolean data, char **top, char **mid, char **base)
{
    g_autofree char *made = images_made(subdir,
        data ? "qemu-img create -q -f qcow2 base.qcow2 16M && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
               "qemu-io -c 'write -P 7 0 1M' mid.qcow2 >/dev/null && "
               "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2"
             : "qemu-img create -q -f qcow2 base.qcow2 16M && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
               "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2");
    char *dir = realpath(made, NULL);
    *top = g_build_filename(dir, "top.qcow2", NULL);
    *mid = g_build_filename(dir, "mid.qcow2", NULL);
    *base = g_build_filename(dir, "base.qcow2", NULL);
    return dir;
}

/* An image given to chain is an image: show names it and its chain, never
 * a domain, uuid or disk; a change sums itself up in one line naming the
 * images, draws its progress on stderr only when asked (stderr is no
 * terminal here), prints no XML and refuses --xml. */
static void
test_chain_image_target(void)
{
    g_autofree char *top = NULL, *mid = NULL, *base = NULL;
    g_autofree char *dir = three_layers("chain-image", TRUE, &top, &mid, &base);

    /* show: the image, then the layer table. */
    g_auto(VmlTestRun) show = { 0 };
    vmlease(&show, "chain", "show", top, NULL);
    g_assert_cmpint(show.status, ==, 0);
    int w = (int)strlen(base) + 2;   /* the IMAGE column: the longest path */
    g_autofree char *want = g_strdup_printf(
        "image %s (chain of 3 images):\n"
        "  LAYER  %-*sFORMAT  LEASE  HOLDERS\n"
        "  0      %-*sqcow2   -      -\n"
        "  1      %-*sqcow2   -      -\n"
        "  2      %-*sqcow2   -      -\n",
        top, w, "IMAGE", w, top, w, mid, w, base);
    g_assert_cmpstr(show.out, ==, want);
    g_assert_cmpstr(show.err, ==, "");

    g_auto(VmlTestRun) show_json = { 0 };
    vmlease(&show_json, "chain", "show", "--json", top, NULL);
    g_assert_cmpint(show_json.status, ==, 0);
    g_autoptr(JsonParser) sp = json_parser_new();
    g_autofree char *show_keys = json_members(show_json.out, sp);
    g_assert_cmpstr(show_keys, ==, "chain,image");
    JsonObject *so = json_node_get_object(json_parser_get_root(sp));
    g_assert_cmpstr(json_object_get_string_member(so, "image"), ==, top);
    JsonArray *chain = json_object_get_array_member(so, "chain");
    g_assert_cmpuint(json_array_get_length(chain), ==, 3);
    const char *layers[] = { top, mid, base };
    for (guint i = 0; i < 3; i++) {
        JsonObject *l = json_array_get_object_element(chain, i);
        g_assert_cmpstr(json_object_get_string_member(l, "path"), ==, layers[i]);
        g_assert_cmpstr(json_object_get_string_member(l, "lease"), ==, "-");
    }

    /* --xml: an image has no domain XML; refused before anything changes. */
    g_auto(VmlTestRun) xml = { 0 };
    vmlease(&xml, "chain", "commit", top, "--top", mid, "--xml", NULL);
    g_assert_cmpint(xml.status, ==, 1);
    g_assert_cmpstr(xml.out, ==, "");
    g_autofree char *xml_err = g_strdup_printf("vmlease: --xml: %s is an image, which has no "
                                               "domain XML (give a domain or a domain XML "
                                               "file)\n", top);
    g_assert_true(g_str_has_prefix(xml.err, xml_err));
    g_autofree char *still = backing_of(top);
    g_assert_cmpstr(still, ==, mid);

    /* A refusal names the image, not a disk. */
    g_auto(VmlTestRun) none = { 0 };
    vmlease(&none, "chain", "commit", base, NULL);
    g_assert_cmpint(none.status, ==, 4);
    g_autofree char *none_err = g_strdup_printf("vmlease: cannot commit %s: it has no backing "
                                                "image to commit into\n", base);
    g_assert_cmpstr(none.err, ==, none_err);

    /* The commit of mid, with progress: the summary alone on stdout, the
     * progress ending at 100 % on stderr. */
    g_auto(VmlTestRun) commit = { 0 };
    vmlease(&commit, "chain", "commit", top, "--top", mid, "--progress", NULL);
    g_assert_cmpint(commit.status, ==, 0);
    g_autofree char *words = g_strdup_printf("committed %s into %s: chain of 3 images is now 2",
                                             mid, base);
    g_autofree char *summary = summary_pattern(words, "16.0 MiB");
    assert_whole_match(commit.out, summary);
    g_autofree char *commit_progress = progress_pattern("Block commit");
    assert_whole_match(commit.err, commit_progress);
    g_autofree char *now = backing_of(top);
    g_assert_cmpstr(now, ==, base);

    /* Without --progress (and stderr no terminal), or with --no-progress
     * last, nothing on stderr; under --json the result is a document with
     * no domain in it. */
    g_auto(VmlTestRun) pull = { 0 };
    vmlease(&pull, "chain", "pull", "--progress", "--no-progress", "--json", top, NULL);
    g_assert_cmpint(pull.status, ==, 0);
    g_assert_cmpstr(pull.err, ==, "");
    g_autoptr(JsonParser) pp = json_parser_new();
    g_autofree char *pull_keys = json_members(pull.out, pp);
    g_assert_cmpstr(pull_keys, ==, "bytes,change,image,milliseconds,new_chain,old_chain,summary");
    JsonObject *po = json_node_get_object(json_parser_get_root(pp));
    g_assert_cmpstr(json_object_get_string_member(po, "change"), ==, "pull");
    g_assert_cmpstr(json_object_get_string_member(po, "image"), ==, top);
    g_assert_cmpint(json_object_get_int_member(po, "bytes"), ==, 16 * 1024 * 1024);
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(po, "old_chain")), ==, 2);
    JsonArray *after = json_object_get_array_member(po, "new_chain");
    g_assert_cmpuint(json_array_get_length(after), ==, 1);
    g_assert_cmpstr(json_array_get_string_element(after, 0), ==, top);
    g_autofree char *pull_words = g_strdup_printf("pulled 1 backing image into %s: chain of 2 "
                                                  "images is now 1", top);
    g_autofree char *pull_summary = summary_pattern(pull_words, "16.0 MiB");
    g_autofree char *pull_line = g_strdup_printf("%s\n",
                                                 json_object_get_string_member(po, "summary"));
    assert_whole_match(pull_line, pull_summary);
    g_autofree char *gone = backing_of(top);
    g_assert_null(gone);

    /* No domain word anywhere an image target printed. */
    const char *outputs[] = { show.out, show_json.out, xml.err, none.err, commit.out, pull.out };
    for (guint i = 0; i < G_N_ELEMENTS(outputs); i++) {
        if (strstr(outputs[i], "domain image") || strstr(outputs[i], "uuid") ||
            strstr(outputs[i], "vda") || strstr(outputs[i], "<domain") ||
            strstr(outputs[i], "\"domain\""))
            g_error("output %u shows an invented domain: %s", i, outputs[i]);
    }
}

/* A domain XML file: the summary names the disk and the domain; the new
 * XML comes only with --xml (after the summary, or in --json's "xml"). */
static void
test_chain_xml_target(void)
{
    g_autofree char *top = NULL, *mid = NULL, *base = NULL;
    g_autofree char *dir = three_layers("chain-xml", FALSE, &top, &mid, &base);
    g_autofree char *snap = g_build_filename(dir, "snap.qcow2", NULL);
    g_autofree char *xml_file = g_build_filename(dir, "dom-a.xml", NULL);
    g_autofree char *xml = g_strdup_printf(
        "<domain type='kvm'>\n"
        "  <name>dom-a</name>\n"
        "  <uuid>" UUID_A "</uuid>\n"
        "  <memory unit='KiB'>131072</memory>\n"
        "  <os><type>hvm</type></os>\n"
        "  <devices>\n"
        "    <disk type='file' device='disk'>\n"
        "      <driver name='qemu' type='qcow2'/>\n"
        "      <source file='%s'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "    </disk>\n"
        "  </devices>\n"
        "</domain>\n", top);
    g_assert_true(g_file_set_contents(xml_file, xml, -1, NULL));

    /* No --xml: the summary line and nothing else. */
    g_auto(VmlTestRun) commit = { 0 };
    vmlease(&commit, "chain", "commit", xml_file, "--top", mid, NULL);
    g_assert_cmpint(commit.status, ==, 0);
    g_assert_cmpstr(commit.err, ==, "");
    g_autofree char *words = g_strdup_printf("committed %s into %s (disk vda of domain dom-a): "
                                             "chain of 3 images is now 2", mid, base);
    g_autofree char *summary = summary_pattern(words, "16.0 MiB");
    assert_whole_match(commit.out, summary);

    /* --xml: the summary, then the new XML (the file itself is left as it
     * is: it names top only, the rest comes from the headers, top -> base
     * now). */
    g_auto(VmlTestRun) pull = { 0 };
    vmlease(&pull, "chain", "pull", "--xml", xml_file, NULL);
    g_assert_cmpint(pull.status, ==, 0);
    const char *nl = strchr(pull.out, '\n');
    g_assert_nonnull(nl);
    g_autofree char *first = g_strndup(pull.out, nl + 1 - pull.out);
    g_autofree char *pull_words = g_strdup_printf("pulled 1 backing image into %s (disk vda of "
                                                  "domain dom-a): chain of 2 images is now 1",
                                                  top);
    g_autofree char *pull_summary = summary_pattern(pull_words, "16.0 MiB");
    assert_whole_match(first, pull_summary);
    g_autofree char *source = g_strdup_printf("<source file=\"%s\"/>\n      <backingStore/>\n",
                                              top);
    g_assert_true(g_str_has_prefix(nl + 1, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    g_assert_nonnull(strstr(nl + 1, "<name>dom-a</name>"));
    g_assert_nonnull(strstr(nl + 1, source));
    g_assert_true(g_str_has_suffix(pull.out, "</domain>\n"));

    /* --json --xml: the XML in "xml"; a snapshot copies nothing (bytes
     * null, "done in"). */
    g_auto(VmlTestRun) snapshot = { 0 };
    vmlease(&snapshot, "chain", "snapshot", xml_file, "--file", snap, "--json", "--xml", NULL);
    g_assert_cmpint(snapshot.status, ==, 0);
    g_assert_cmpstr(snapshot.err, ==, "");
    g_autoptr(JsonParser) jp = json_parser_new();
    g_autofree char *keys = json_members(snapshot.out, jp);
    g_assert_cmpstr(keys, ==, "bytes,change,disk,domain,live,milliseconds,new_chain,old_chain,"
                              "summary,uuid,xml");
    JsonObject *o = json_node_get_object(json_parser_get_root(jp));
    g_assert_cmpstr(json_object_get_string_member(o, "change"), ==, "snapshot");
    g_assert_cmpstr(json_object_get_string_member(o, "domain"), ==, "dom-a");
    g_assert_cmpstr(json_object_get_string_member(o, "uuid"), ==, UUID_A);
    g_assert_cmpstr(json_object_get_string_member(o, "disk"), ==, "vda");
    g_assert_false(json_object_get_boolean_member(o, "live"));
    g_assert_true(json_node_is_null(json_object_get_member(o, "bytes")));
    g_autofree char *snap_words = g_strdup_printf("created the overlay %s on %s (disk vda of "
                                                  "domain dom-a): chain of 1 image is now 2",
                                                  snap, top);
    g_autofree char *snap_summary = summary_pattern(snap_words, NULL);
    g_autofree char *snap_line = g_strdup_printf("%s\n", json_object_get_string_member(o, "summary"));
    assert_whole_match(snap_line, snap_summary);
    g_autofree char *snap_source = g_strdup_printf("<source file=\"%s\"/>", snap);
    g_assert_nonnull(strstr(json_object_get_string_member(o, "xml"), snap_source));
    g_autofree char *snap_backing = backing_of(snap);
    g_assert_cmpstr(snap_backing, ==, top);

    /* --json without --xml: no "xml" member. */
    g_auto(VmlTestRun) rebase = { 0 };
    vmlease(&rebase, "chain", "rebase", xml_file, "--backing", "", "--json", NULL);
    g_assert_cmpint(rebase.status, ==, 0);
    g_autoptr(JsonParser) rp = json_parser_new();
    g_autofree char *rebase_keys = json_members(rebase.out, rp);
    g_assert_cmpstr(rebase_keys, ==, "bytes,change,disk,domain,live,milliseconds,new_chain,"
                                     "old_chain,summary,uuid");

    /* show takes no --xml. */
    g_auto(VmlTestRun) show = { 0 };
    vmlease(&show, "chain", "show", "--xml", xml_file, NULL);
    g_assert_cmpint(show.status, ==, 1);
    g_assert_true(g_str_has_prefix(show.err, "vmlease: --xml goes with a change"));
}

/* Write the 4 big-endian bytes VALUE at OFFSET of PATH. */
static void
poke32(const char *path, off_t offset, guint32 value)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint32 be = GUINT32_TO_BE(value);
    g_assert_cmpint(pwrite(fd, &be, sizeof(be), offset), ==, sizeof(be));
    close(fd);
}

/* inspect calls a corrupt image corrupt, naming the fault, and exits 6;
 * without vmleased it still reads the image, the leases unknown. */
static void
test_inspect_corrupt(void)
{
    g_autofree char *dir = images_made("corrupt",
                                       "qemu-img create -q -f qcow2 good.qcow2 1M && "
                                       "cp good.qcow2 cluster0.qcow2 && cp good.qcow2 ext.qcow2 && "
                                       "qemu-img create -q -f qcow2 a.qcow2 1M && "
                                       "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 && "
                                       "qemu-img rebase -u -f qcow2 -b b.qcow2 -F qcow2 a.qcow2");
    g_autofree char *good = g_build_filename(dir, "good.qcow2", NULL);
    g_autofree char *cluster0 = g_build_filename(dir, "cluster0.qcow2", NULL);
    g_autofree char *ext = g_build_filename(dir, "ext.qcow2", NULL);
    g_autofree char *loop = g_build_filename(dir, "b.qcow2", NULL);
    poke32(cluster0, 20, 0);             /* cluster_bits */
    poke32(ext, 112 + 4, 0x00ffffff);    /* the first extension's length */
    const struct { const char *path, *says; } cases[] = {
        { cluster0, "invalid qcow2 header: cluster_bits 0 outside 9..21" },
        { ext, "is 16777215 bytes long, past the header area" },
        { loop, "backing chain loops back to" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_auto(VmlTestRun) t = { 0 };
        vmlease(&t, "inspect", cases[i].path, NULL);
        g_assert_cmpint(t.status, ==, 6);
        g_autofree char *line = g_strdup_printf("verdict:");
        const char *v = strstr(t.out, line);
        g_assert_nonnull(v);
        if (!strstr(v, "corrupt: ") || !strstr(v, cases[i].says))
            g_error("case %u: expected 'corrupt: ...%s' in: %s", i, cases[i].says, t.out);
        g_auto(VmlTestRun) j = { 0 };
        vmlease(&j, "inspect", "--json", cases[i].path, NULL);
        g_assert_cmpint(j.status, ==, 6);
        g_autoptr(JsonParser) p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, j.out, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "corrupt");
        g_assert_nonnull(strstr(json_object_get_string_member(o, "reason"), cases[i].says));
    }
    g_auto(VmlTestRun) ok = { 0 };
    vmlease(&ok, "inspect", good, NULL);
    g_assert_cmpint(ok.status, ==, 0);
    g_assert_nonnull(strstr(ok.out, "verdict:"));
    g_assert_nonnull(strstr(ok.out, " free\n"));

    /* No vmleased (another root): the image read all the same. */
    g_autofree char *elsewhere = g_build_filename(daemon_->root, "no-daemon-here", NULL);
    const char *alone[] = { "env", NULL, g_getenv("VMLEASE_BIN"), "inspect", "--json", good, NULL };
    g_autofree char *root_env = g_strdup_printf("VMLEASE_ROOT=%s", elsewhere);
    alone[1] = root_env;
    g_auto(VmlTestRun) nd = { 0 };
    vml_test_run(&nd, NULL, alone);
    g_assert_cmpint(nd.status, ==, 0);
    g_assert_nonnull(strstr(nd.err, "vmlease: warning: "));
    g_autoptr(JsonParser) np = json_parser_new();
    g_assert_true(json_parser_load_from_data(np, nd.out, -1, NULL));
    JsonObject *no = json_node_get_object(json_parser_get_root(np));
    g_assert_cmpstr(json_object_get_string_member(no, "verdict"), ==, "unknown");
    g_assert_true(json_node_is_null(json_object_get_member(no, "owners")));
    g_assert_nonnull(strstr(json_object_get_string_member(no, "reason"),
                            "vmleased is not running"));
}

/* vmlease metrics --json: the daemon's counters and latency counts. */
static JsonObject *
metrics_now(void)
{
    g_auto(VmlTestRun) m = { 0 };
    vmlease(&m, "metrics", "--json", NULL);
    g_assert_cmpint(m.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, m.out, -1, NULL));
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static gint64
counter(JsonObject *m, const char *name)
{
    return json_object_get_int_member(json_object_get_object_member(m, "counters"), name);
}

static gint64
latency_count(JsonObject *m, const char *name)
{
    JsonArray *l = json_object_get_array_member(m, "latencies");
    for (guint i = 0; i < json_array_get_length(l); i++) {
        JsonObject *o = json_array_get_object_element(l, i);
        if (g_str_equal(json_object_get_string_member(o, "name"), name))
            return json_object_get_int_member(o, "count");
    }
    g_assert_not_reached();
}

/* Each call counted once, where it belongs: a grant, a conflict, a
 * release; the text form is OpenMetrics, ending in # EOF. */
static void
test_metrics(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "metrics.img");
    g_autoptr(JsonObject) before = metrics_now();
    pid_t a = vml_test_child_spawn(), b = vml_test_child_spawn();
    gint64 ha = vml_test_register("aaaaaaaa-0000-4000-8000-0000000000a1", "metrics-a", a);
    gint64 hb = vml_test_register("aaaaaaaa-0000-4000-8000-0000000000b1", "metrics-b", b);
    const gint64 holders[] = { ha, hb };
    for (guint i = 0; i < 2; i++) {
        g_autoptr(JsonObject) p = json_object_new();
        json_object_set_int_member(p, "holder", holders[i]);
        json_object_set_array_member(p, "resources", vml_test_resources("exclusive", img, NULL));
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL,
                                                NULL, &error);
        if (i == 0)
            g_assert_no_error(error);
        else
            g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    }
    g_autoptr(JsonObject) rel = json_object_new();
    json_object_set_int_member(rel, "holder", ha);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) rr = vml_test_call(FALSE, "io.vmlease.Lease.Release", rel, NULL, NULL,
                                             &error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) after = metrics_now();
    g_assert_cmpint(counter(after, "acquires") - counter(before, "acquires"), ==, 1);
    g_assert_cmpint(counter(after, "conflicts") - counter(before, "conflicts"), ==, 1);
    g_assert_cmpint(counter(after, "releases") - counter(before, "releases"), ==, 1);
    g_assert_cmpint(latency_count(after, "acquire") - latency_count(before, "acquire"), ==, 2);
    g_assert_cmpint(latency_count(after, "release") - latency_count(before, "release"), ==, 1);
    g_assert_cmpint(counter(after, "connections"), >, counter(before, "connections"));

    g_auto(VmlTestRun) t = { 0 };
    vmlease(&t, "metrics", NULL);
    g_assert_cmpint(t.status, ==, 0);
    g_assert_true(g_str_has_suffix(t.out, "\n# EOF\n"));
    g_assert_nonnull(strstr(t.out, "# TYPE vmlease_acquires counter\n"));
    g_assert_nonnull(strstr(t.out, "# TYPE vmlease_acquire_seconds histogram\n"));
    /* The +Inf bucket holds every call, as the count says. */
    g_autoptr(GRegex) inf = g_regex_new("vmlease_acquire_seconds_bucket\\{le=\"\\+Inf\"\\} "
                                        "([0-9]+)\n", 0, 0, NULL);
    g_autoptr(GRegex) cnt = g_regex_new("vmlease_acquire_seconds_count ([0-9]+)\n", 0, 0, NULL);
    g_autoptr(GMatchInfo) mi = NULL, mc = NULL;
    g_assert_true(g_regex_match(inf, t.out, 0, &mi));
    g_assert_true(g_regex_match(cnt, t.out, 0, &mc));
    g_autofree char *n_inf = g_match_info_fetch(mi, 1), *n_cnt = g_match_info_fetch(mc, 1);
    g_assert_cmpstr(n_inf, ==, n_cnt);
    vml_test_child_kill(a, SIGKILL);
    vml_test_child_kill(b, SIGKILL);
}

static void
test_status_inspect_and_exit_codes(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "inspect.img");
    GPid a = run_in_background("--exclusive", img);

    g_auto(VmlTestRun) s = { 0 };
    vmlease(&s, "status", "--json", NULL);
    g_assert_cmpint(s.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, s.out, -1, NULL));
    JsonObject *st = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpstr(json_object_get_string_member(st, "backend"), ==, "fcntl");
    g_assert_cmpint(json_object_get_int_member(st, "holders"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(st, "leases"), ==, 1);

    g_auto(VmlTestRun) i = { 0 };
    vmlease(&i, "inspect", img, NULL);
    g_assert_cmpint(i.status, ==, 0);
    g_autofree char *verdict = g_strdup_printf("in use by VM \"vmlease-run:sleep\"");
    g_assert_nonnull(strstr(i.out, verdict));

    g_auto(VmlTestRun) missing = { 0 };
    vmlease(&missing, "owners", "/nonexistent/disk.qcow2", NULL);
    g_assert_cmpint(missing.status, ==, 5);
    g_assert_nonnull(strstr(missing.err, "/nonexistent/disk.qcow2"));
    g_assert_cmpstr(missing.out, ==, "");

    /* Under --json the error is a document on stdout too. */
    g_auto(VmlTestRun) missing_json = { 0 };
    vmlease(&missing_json, "owners", "--json", "/nonexistent/disk.qcow2", NULL);
    g_assert_cmpint(missing_json.status, ==, 5);
    g_assert_nonnull(strstr(missing_json.err, "/nonexistent/disk.qcow2"));
    g_autoptr(JsonParser) ep = json_parser_new();
    g_assert_true(json_parser_load_from_data(ep, missing_json.out, -1, NULL));
    JsonObject *eo = json_object_get_object_member(json_node_get_object(json_parser_get_root(ep)),
                                                   "error");
    g_assert_nonnull(strstr(json_object_get_string_member(eo, "message"),
                            "/nonexistent/disk.qcow2"));
    g_assert_cmpint(json_object_get_int_member(eo, "exit_status"), ==, 5);

    /* A refusal says what is wrong and what would do, in words; no
     * method name but the error's in the JSON's "name". */
    g_auto(VmlTestRun) nobody = { 0 };
    const char *as_nobody[] = { "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                g_getenv("VMLEASE_BIN"), "force-unlock", "--json", img, NULL };
    /* uid 65534 may see the image and reach the socket, as on a host. */
    g_assert_cmpint(chmod(daemon_->root, 0755), ==, 0);
    vml_test_run(&nobody, NULL, as_nobody);
    g_assert_cmpint(chmod(daemon_->root, 0700), ==, 0);
    g_assert_cmpint(nobody.status, ==, 4);
    g_assert_cmpstr(nobody.err, ==, "vmlease: uid 65534 may not use vmleased's admin socket: only "
                                    "root may (or set admin_group in vmleased.conf to let a group "
                                    "in)\n");
    g_autoptr(JsonParser) np = json_parser_new();
    g_assert_true(json_parser_load_from_data(np, nobody.out, -1, NULL));
    JsonObject *no = json_object_get_object_member(json_node_get_object(json_parser_get_root(np)),
                                                   "error");
    g_assert_cmpstr(json_object_get_string_member(no, "name"), ==, "io.vmlease.PermissionDenied");
    g_assert_cmpint(json_object_get_int_member(no, "exit_status"), ==, 4);

    g_auto(VmlTestRun) usage = { 0 };
    vmlease(&usage, "run", "--exclusive", img, NULL);   /* no -- COMMAND */
    g_assert_cmpint(usage.status, ==, 1);

    g_auto(VmlTestRun) help = { 0 };
    vmlease(&help, "--help", NULL);
    g_assert_cmpint(help.status, ==, 0);
    g_assert_nonnull(strstr(help.out, "Exit status:"));
    stop_background(a);

    /* No daemon behind the socket: exit 2, saying so. */
    g_auto(VmlTestRun) down = { 0 };
    vmlease(&down, "status", "--admin-socket", "/nonexistent/vmleased-admin.sock", NULL);
    g_assert_cmpint(down.status, ==, 2);
    g_assert_nonnull(strstr(down.err, "/nonexistent/vmleased-admin.sock"));
}

/* vmlease stash: give a file, see it listed, take it into a command that
 * reads it through fd 3, and the error exits. */
static void
test_stash_commands(void)
{
    const char *owner = "cccccccc-1111-4222-8333-444444444444";
    g_autofree char *file = vml_test_make_image(daemon_, "stash.txt");
    g_assert_true(g_file_set_contents(file, "stashed bytes\n", -1, NULL));

    g_auto(VmlTestRun) give = { 0 };
    vmlease(&give, "stash", "give", "--owner", owner, "--name", "n1", file, NULL);
    g_assert_cmpint(give.status, ==, 0);
    g_autofree char *said = g_strdup_printf("stashed %s (read-write, offset 0) as \"n1\" for %s\n",
                                            file, owner);
    g_assert_cmpstr(give.out, ==, said);

    g_auto(VmlTestRun) again = { 0 };
    vmlease(&again, "stash", "give", "--owner", owner, "--name", "n1", file, NULL);
    g_assert_cmpint(again.status, ==, 4);
    g_assert_nonnull(strstr(again.err, "already has an fd named \"n1\""));

    g_auto(VmlTestRun) list = { 0 };
    vmlease(&list, "stash", "list", "--owner", owner, "--json", NULL);
    g_assert_cmpint(list.status, ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, list.out, -1, NULL));
    JsonArray *fds = json_object_get_array_member(json_node_get_object(json_parser_get_root(p)),
                                                  "fds");
    g_assert_cmpuint(json_array_get_length(fds), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(fds, 0), "path"),
                    ==, file);

    g_auto(VmlTestRun) take = { 0 };
    vmlease(&take, "stash", "take", "--owner", owner, "--name", "n1", "--",
            "sh", "-c", "cat <&3; echo \"fd $VMLEASE_FD\"; exit 7", NULL);
    g_assert_cmpint(take.status, ==, 7);
    g_assert_cmpstr(take.out, ==, "stashed bytes\nfd 3\n");

    g_auto(VmlTestRun) gone = { 0 };
    vmlease(&gone, "stash", "take", "--owner", owner, "--name", "n1", NULL);
    g_assert_cmpint(gone.status, ==, 5);
    g_autofree char *nothing = g_strdup_printf("vmlease: owner %s has nothing stashed\n", owner);
    g_assert_cmpstr(gone.err, ==, nothing);

    g_auto(VmlTestRun) usage = { 0 };
    vmlease(&usage, "stash", "give", "--owner", "not-a-uuid", "--name", "x", file, NULL);
    g_assert_cmpint(usage.status, ==, 1);
    g_assert_nonnull(strstr(usage.err, "--owner must be a domain uuid"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start(NULL);
    g_test_add_func("/cli/run-refused-names-holder", test_run_refused_names_holder);
    g_test_add_func("/cli/qemu-img-snapshot-refused-while-vm-runs",
                    test_qemu_img_snapshot_refused_while_vm_runs);
    g_test_add_func("/cli/run-leases-backing-chain", test_run_leases_backing_chain);
    g_test_add_func("/cli/owners-table-and-json", test_owners_table_and_json);
    g_test_add_func("/cli/chain-rebase-relative", test_chain_rebase_relative);
    g_test_add_func("/cli/chain-image-target", test_chain_image_target);
    g_test_add_func("/cli/chain-xml-target", test_chain_xml_target);
    g_test_add_func("/cli/inspect-corrupt", test_inspect_corrupt);
    g_test_add_func("/cli/metrics", test_metrics);
    g_test_add_func("/cli/status-inspect-and-exit-codes", test_status_inspect_and_exit_codes);
    g_test_add_func("/cli/stash-commands", test_stash_commands);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    return rc;
}
