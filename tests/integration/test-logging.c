/* vmleased's log, read where an administrator reads it: the journal's
 * native socket (a datagram socket of the test's, bound where a daemon
 * under VMLEASE_ROOT looks for journald) and stderr. One entry per
 * acquire, release and conflict, with the fields of both sides; levels
 * changed at run time by `vmlease log-level` and back at a reload. */
#include "harness.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define UUID_A "5d0c7d4e-1111-4a3b-9c1e-00000000000a"
#define UUID_B "5d0c7d4e-2222-4a3b-9c1e-00000000000b"

typedef struct {
    VmlTestDaemon d;
    int journal;        /* our end: the daemon's journal socket */
    char *log;          /* its stderr */
} Journaled;

/* A daemon whose stderr is "the journal" (JOURNAL_STREAM names it, as
 * systemd does) and whose native journal socket is ours. */
static Journaled *
journaled_start(void)
{
    Journaled *j = g_new0(Journaled, 1);
    g_autoptr(GError) error = NULL;
    j->d.root = g_dir_make_tmp("vmlease-log-XXXXXX", &error);
    g_assert_no_error(error);
    j->d.config = g_build_filename(j->d.root, "vmleased.conf", NULL);
    g_assert_true(g_file_set_contents(j->d.config, "log_level = \"info\"\n", -1, NULL));
    g_setenv("VMLEASE_ROOT", j->d.root, TRUE);

    j->journal = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(j->journal, >=, 0);
    g_autofree char *where = vml_default_journal_socket();
    g_assert_true(g_str_has_prefix(where, j->d.root));
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_strlcpy(addr.sun_path, where, sizeof(addr.sun_path));
    g_assert_cmpint(bind(j->journal, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);

    j->log = g_build_filename(j->d.root, "vmleased.log", NULL);
    int logfd = open(j->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    g_assert_cmpint(logfd, >=, 0);
    struct stat st;
    g_assert_cmpint(fstat(logfd, &st), ==, 0);
    g_autofree char *stream = g_strdup_printf("%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT,
                                              (guint64)st.st_dev, (guint64)st.st_ino);
    const char *argv[] = { g_getenv("VMLEASED_BIN"), "--foreground", "--config", j->d.config,
                           NULL };
    g_auto(GStrv) envp = g_get_environ();
    envp = g_environ_setenv(envp, "JOURNAL_STREAM", stream, TRUE);
    gboolean ok = g_spawn_async_with_fds(NULL, (char **)argv, envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                         vml_test_die_with_parent, NULL, &j->d.pid, -1, logfd, logfd,
                                         &error);
    close(logfd);
    g_assert_no_error(error);
    g_assert_true(ok);
    vml_test_daemon_wait_ready(&j->d);
    return j;
}

static void
journaled_stop(Journaled *j)
{
    kill(j->d.pid, SIGTERM);
    int status;
    g_assert_cmpint(waitpid(j->d.pid, &status, 0), ==, j->d.pid);
    g_spawn_close_pid(j->d.pid);
    close(j->journal);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", j->d.root);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(j->d.root);
    g_free(j->d.config);
    g_free(j->log);
    g_free(j);
}

/* One native-protocol datagram as KEY -> VALUE (both forms of a field). */
static GHashTable *
entry_parse(const char *buf, gsize len)
{
    GHashTable *e = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        g_assert_nonnull(nl);
        const char *eq = memchr(p, '=', nl - p);
        if (eq) {
            g_hash_table_insert(e, g_strndup(p, eq - p), g_strndup(eq + 1, nl - eq - 1));
            p = nl + 1;
            continue;
        }
        guint64 n;
        g_assert_cmpint(end - (nl + 1), >=, 8);
        memcpy(&n, nl + 1, 8);
        n = GUINT64_FROM_LE(n);
        const char *v = nl + 9;
        g_assert_cmpint((gint64)(end - v), >=, (gint64)n + 1);
        g_assert_cmpint(v[n], ==, '\n');
        g_hash_table_insert(e, g_strndup(p, nl - p), g_strndup(v, n));
        p = v + n + 1;
    }
    return e;
}

/* Every entry that arrives within MS milliseconds of the last one. */
static GPtrArray *
entries_read(Journaled *j, int ms)
{
    GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)g_hash_table_unref);
    struct pollfd pfd = { .fd = j->journal, .events = POLLIN };
    static char buf[65536];
    while (poll(&pfd, 1, ms) == 1) {
        gssize n = recv(j->journal, buf, sizeof(buf), 0);
        g_assert_cmpint(n, >, 0);
        g_ptr_array_add(all, entry_parse(buf, n));
    }
    return all;
}

/* The one entry of ALL with VMLEASE_EVENT=EVENT. */
static GHashTable *
only_event(GPtrArray *all, const char *event)
{
    GHashTable *found = NULL;
    for (guint i = 0; i < all->len; i++) {
        if (g_strcmp0(g_hash_table_lookup(all->pdata[i], "VMLEASE_EVENT"), event) != 0)
            continue;
        if (found)
            g_error("two %s entries", event);
        found = all->pdata[i];
    }
    if (!found)
        g_error("no %s entry among %u", event, all->len);
    return found;
}

static void
assert_field(GHashTable *e, const char *key, const char *value)
{
    g_assert_cmpstr(g_hash_table_lookup(e, key), ==, value);
}

static JsonObject *
call_ok(const char *method, JsonObject *params)
{
    g_autoptr(GError) error = NULL;
    JsonObject *r = vml_test_call(FALSE, method, params, NULL, NULL, &error);
    g_assert_no_error(error);
    return r;
}

static void
acquire(gint64 holder, const char *path, const char *mode, gboolean granted)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", vml_test_resources(mode, path, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    if (granted)
        g_assert_no_error(error);
    else
        g_assert_null(r);
}

static void
release_all(gint64 holder)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    g_autoptr(JsonObject) r = call_ok("io.vmlease.Lease.Release", p);
}

static char *
cli(const char *const *args, int expect_status)
{
    const char *argv[8] = { g_getenv("VMLEASE_BIN") };
    for (guint i = 0; args[i]; i++)
        argv[i + 1] = args[i];
    g_auto(VmlTestRun) r = { 0 };
    vml_test_run(&r, NULL, argv);
    if (r.status != expect_status)
        g_error("vmlease %s: status %d, not %d; stderr: %s", args[0], r.status, expect_status,
                r.err);
    return g_strdup(r.out);
}

/* Acquire, conflict and release each come as one journal entry with the
 * fields of both sides, and nothing of it goes to stderr. */
static void
test_journal_entries(void)
{
    Journaled *j = journaled_start();
    g_autoptr(GPtrArray) boot = entries_read(j, 100);
    g_assert_cmpuint(boot->len, >=, 1);   /* "serving on ..." */
    assert_field(boot->pdata[boot->len - 1], "SYSLOG_IDENTIFIER", "vmleased");
    assert_field(boot->pdata[boot->len - 1], "PRIORITY", "5");

    g_autofree char *disk = vml_test_make_image(&j->d, "disk.img");
    g_autofree char *key = vml_test_resource_key(disk);
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    VmlTestVm b = vml_test_vm_new(UUID_B, "dom-b");
    acquire(a.holder, disk, "exclusive", TRUE);
    acquire(b.holder, disk, "shared", FALSE);
    release_all(a.holder);
    g_autoptr(GPtrArray) got = entries_read(j, 200);

    GHashTable *e = only_event(got, "acquire");
    g_autofree char *msg = g_strdup_printf("VM dom-a (uuid %s, pid %d) acquired %s exclusive "
                                           "(resource %s, generation 1)", UUID_A, (int)a.pid,
                                           disk, key);
    assert_field(e, "MESSAGE", msg);
    assert_field(e, "MESSAGE_ID", "27e2bb61a2f2432d9df62615ec3a513d");
    assert_field(e, "PRIORITY", "6");
    assert_field(e, "VMLEASE_RESOURCE", key);
    assert_field(e, "VMLEASE_PATH", disk);
    assert_field(e, "VMLEASE_MODE", "exclusive");
    assert_field(e, "VMLEASE_DOMAIN", "dom-a");
    assert_field(e, "VMLEASE_UUID", UUID_A);
    g_autofree char *pid_a = g_strdup_printf("%d", (int)a.pid);
    assert_field(e, "VMLEASE_PID", pid_a);
    g_assert_null(g_hash_table_lookup(e, "GLIB_OLD_LOG_API"));

    /* The refused side in the fields, the holder named in the text. */
    e = only_event(got, "conflict");
    assert_field(e, "MESSAGE_ID", "67f491cbe21742f9ae92a41756b7edaf");
    assert_field(e, "VMLEASE_DOMAIN", "dom-b");
    assert_field(e, "VMLEASE_UUID", UUID_B);
    assert_field(e, "VMLEASE_MODE", "shared");
    const char *held_by = g_hash_table_lookup(e, "VMLEASE_HELD_BY");
    g_assert_nonnull(held_by);
    g_assert_nonnull(strstr(held_by, "dom-a"));
    g_assert_nonnull(strstr(held_by, pid_a));
    g_autofree char *refused = g_strdup_printf("VM dom-b (uuid %s, pid %d) refused %s "
                                               "(resource %s) shared: in use by %s", UUID_B,
                                               (int)b.pid, disk, key, held_by);
    assert_field(e, "MESSAGE", refused);

    e = only_event(got, "release");
    g_autofree char *released = g_strdup_printf("VM dom-a (uuid %s, pid %d) released %s "
                                                "(exclusive, resource %s)", UUID_A, (int)a.pid,
                                                disk, key);
    assert_field(e, "MESSAGE", released);
    assert_field(e, "MESSAGE_ID", "68aadfde88944beb9a6a42be46640dbc");

    /* A VM that exits: its lease's release says so. */
    acquire(b.holder, disk, "shared", TRUE);
    g_ptr_array_unref(entries_read(j, 100));
    vml_test_vm_free(&b);
    g_autoptr(GPtrArray) exited = entries_read(j, 300);
    e = only_event(exited, "release");
    g_autofree char *gone = g_strdup_printf("VM dom-b (uuid %s, pid %d) exited: released %s "
                                            "(shared, resource %s)", UUID_B, (int)b.pid, disk,
                                            key);
    assert_field(e, "MESSAGE", gone);

    /* The journal had it all: stderr has none of it. */
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(j->log, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "");
    vml_test_vm_free(&a);
    journaled_stop(j);
}

/* log-level changes what is written at once; a reload goes back to the
 * configuration's level. */
static void
test_log_level_at_run_time(void)
{
    Journaled *j = journaled_start();
    g_ptr_array_unref(entries_read(j, 100));
    g_autofree char *disk = vml_test_make_image(&j->d, "disk.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    g_ptr_array_unref(entries_read(j, 100));   /* "registered holder ..." */

    g_autofree char *now = cli((const char *[]){ "log-level", NULL }, 0);
    g_assert_cmpstr(now, ==, "info\n");
    g_autofree char *set = cli((const char *[]){ "log-level", "warning", NULL }, 0);
    g_assert_cmpstr(set, ==, "log level warning (was info) until vmleased reloads or restarts\n");
    g_autoptr(GPtrArray) said = entries_read(j, 100);
    g_assert_cmpuint(said->len, ==, 0);   /* its own notice is below warning now */
    acquire(a.holder, disk, "exclusive", TRUE);
    release_all(a.holder);
    g_autoptr(GPtrArray) quiet = entries_read(j, 200);
    g_assert_cmpuint(quiet->len, ==, 0);

    g_autofree char *debug = cli((const char *[]){ "log-level", "--json", "debug", NULL }, 0);
    g_assert_nonnull(strstr(debug, "\"log_level\" : \"debug\""));
    g_assert_nonnull(strstr(debug, "\"previous\" : \"warning\""));
    acquire(a.holder, disk, "exclusive", TRUE);
    g_autoptr(GPtrArray) loud = entries_read(j, 200);
    guint debug_lines = 0;
    gboolean acquire_call = FALSE;
    for (guint i = 0; i < loud->len; i++) {
        const char *prio = g_hash_table_lookup(loud->pdata[i], "PRIORITY");
        const char *m = g_hash_table_lookup(loud->pdata[i], "MESSAGE");
        if (g_strcmp0(prio, "7") == 0) {
            debug_lines++;
            acquire_call = acquire_call ||
                (g_str_has_prefix(m, "io.vmlease.Lease.Acquire from pid ") &&
                 strstr(m, "(uid 0): answered in "));
        }
    }
    g_assert_cmpuint(debug_lines, >=, 3);   /* connect, the call, hang-up */
    g_assert_true(acquire_call);
    only_event(loud, "acquire");

    /* Bad levels: refused by the CLI and, sent anyway, by the daemon. */
    g_autofree char *bad = cli((const char *[]){ "log-level", "loud", NULL }, 1);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_string_member(p, "level", "verbose");
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = vml_test_call(TRUE, "io.vmlease.Admin.SetLogLevel", p, NULL, &ep,
                                            &error);
    g_assert_null(r);
    g_assert_nonnull(ep);
    g_assert_cmpstr(json_object_get_string_member(ep, "parameter"), ==, "level");
    g_autofree char *still = cli((const char *[]){ "log-level", NULL }, 0);
    g_assert_cmpstr(still, ==, "debug\n");

    /* A reload: the configuration's level again. */
    g_ptr_array_unref(entries_read(j, 100));
    kill(j->d.pid, SIGHUP);
    /* Read as journald does, so that nothing is dropped. */
    for (int i = 0; i < 500 && vml_test_status_int("reexecs") != 1; i++)
        g_ptr_array_unref(entries_read(j, 10));
    g_assert_cmpint(vml_test_status_int("reexecs"), ==, 1);
    g_autofree char *back = cli((const char *[]){ "log-level", NULL }, 0);
    g_assert_cmpstr(back, ==, "info\n");
    /* ... still to the journal after the re-exec. */
    release_all(a.holder);
    g_autoptr(GPtrArray) after = entries_read(j, 200);
    only_event(after, "release");
    vml_test_vm_free(&a);
    journaled_stop(j);
}

/* A journal that does not read (full queue) never holds up a call: its
 * entries are dropped and the next one that gets through says how many. */
static void
test_journal_full_never_blocks(void)
{
    Journaled *j = journaled_start();
    g_autofree char *debug = cli((const char *[]){ "log-level", "debug", NULL }, 0);
    /* Each call logs 3 debug lines; the queue holds 10 (max_dgram_qlen). */
    for (int i = 0; i < 40; i++)
        g_assert_cmpint(vml_test_status_int("holders"), ==, 0);
    g_autoptr(GPtrArray) queued = entries_read(j, 50);
    g_assert_cmpint(vml_test_status_int("holders"), ==, 0);
    g_autoptr(GPtrArray) after = entries_read(j, 200);
    g_ptr_array_extend_and_steal(queued, g_steal_pointer(&after));
    /* The queue held 10; whatever came once there was room again says how
     * many did not fit, once. */
    GHashTable *note = NULL;
    for (guint i = 0; i < queued->len; i++) {
        const char *m = g_hash_table_lookup(queued->pdata[i], "MESSAGE");
        if (g_str_has_suffix(m, " log entries were dropped: the journal did not take them "
                                "in time")) {
            g_assert_null(note);
            note = queued->pdata[i];
        }
    }
    g_assert_nonnull(note);
    g_assert_cmpint(atoi(g_hash_table_lookup(note, "MESSAGE")), >=, 40 * 3 - 20);
    assert_field(note, "PRIORITY", "4");
    journaled_stop(j);
}

/* No journal: the same lines as text on stderr. */
static void
test_stderr_text(void)
{
    VmlTestDaemon *d = vml_test_daemon_start(NULL);
    g_autofree char *disk = vml_test_make_image(d, "disk.img");
    g_autofree char *key = vml_test_resource_key(disk);
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    VmlTestVm b = vml_test_vm_new(UUID_B, "dom-b");
    acquire(a.holder, disk, "exclusive", TRUE);
    acquire(b.holder, disk, "exclusive", FALSE);
    g_autofree char *log = g_build_filename(d->root, "vmleased.log", NULL);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_autofree char *acq = g_strdup_printf("]: info: VM dom-a (uuid %s, pid %d) acquired %s "
                                           "exclusive (resource %s, generation 1)\n", UUID_A,
                                           (int)a.pid, disk, key);
    g_assert_nonnull(strstr(text, acq));
    g_autofree char *conf = g_strdup_printf("]: info: VM dom-b (uuid %s, pid %d) refused %s "
                                            "(resource %s) exclusive: in use by ", UUID_B,
                                            (int)b.pid, disk, key);
    g_assert_nonnull(strstr(text, conf));
    g_assert_null(strstr(text, "debug:"));
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
    vml_test_daemon_stop(d);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/logging/journal-entries", test_journal_entries);
    g_test_add_func("/logging/log-level-at-run-time", test_log_level_at_run_time);
    g_test_add_func("/logging/journal-full-never-blocks", test_journal_full_never_blocks);
    g_test_add_func("/logging/stderr-text", test_stderr_text);
    return g_test_run();
}
