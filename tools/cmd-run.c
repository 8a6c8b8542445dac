/* vmlease run: hold leases on images for as long as a command runs. */
#include "vmlease-cli.h"
#include "vml-protocol.h"
#include "vml-lease-client.h"
#include "output.h"
#include "vml-backing-chain.h"
#include "vml-error.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>
#include <sanlock.h>
#include <sanlock_resource.h>

typedef struct {
    const char *arg;   /* as typed */
    char *path;        /* canonical */
    const char *mode;  /* "exclusive", "shared" or "observe" */
} Image;

static gboolean
is_observed(const Image *img)
{
    return g_str_equal(img->mode, "observe");
}

static void
image_clear(gpointer data)
{
    g_free(((Image *)data)->path);
}

/* The holder we registered, kept to release (again) at the end. */
typedef struct {
    char *uuid;
    char *name;
    char *program;   /* what runs under the lease, for in-image owners */
    gint64 id;
} Holder;

static gboolean
register_holder(VmlClient *client, Holder *h, GError **error)
{
    VmlRegistration reg = { .uuid = h->uuid, .name = h->name, .pid = getpid(),
                            .program = h->program, .mailbox_fd = -1 };
    h->id = vml_lease_register(client, &reg, error);
    return h->id > 0;
}

static gboolean
release_holder(VmlClient *client, const Holder *h, GError **error)
{
    return vml_lease_release(client, h->id, NULL, NULL, error);
}

/* Release everything. If vmleased restarted meanwhile our connection or
 * holder id is gone: register again (finding the holder by pid) and release. */
static void
release_all(const VmlCliOptions *opts, VmlClient *client, Holder *h)
{
    g_autoptr(GError) error = NULL;
    if (release_holder(client, h, &error))
        return;
    if (cli_exit_code(error) == VML_EXIT_DAEMON ||
        g_error_matches(error, VML_ERROR, VML_ERROR_NO_SUCH_HOLDER)) {
        g_clear_error(&error);
        g_autoptr(VmlClient) again = cli_connect_lease(opts, &error);
        if (again && register_holder(again, h, &error) && release_holder(again, h, &error))
            return;
    }
    /* Not fatal: our exit releases whatever is left. */
    cli_warning("cannot release leases: %s", error->message);
}

static int
report_conflict(JsonObject *params, const GError *error)
{
    const char *resource = cli_json_string(params, "resource", NULL);
    const char *path = cli_json_string(params, "path", NULL);
    const char *mode = cli_json_string(params, "mode", NULL);
    JsonArray *owners = cli_json_array(params, "owners");
    if (!resource || !mode)
        return cli_error(VML_EXIT_CONFLICT, "%s", error->message);
    g_autofree char *res = cli_sanitize(resource);
    g_autofree char *named = path ? cli_sanitize(path) : NULL;
    g_autofree char *who = (owners && json_array_get_length(owners))
        ? cli_owners_describe_through(owners, cli_json_string(params, "canonical_path", NULL))
        : g_strdup("a holder vmleased does not know");
    if (named)
        return cli_error(VML_EXIT_CONFLICT, "cannot lock %s (resource %s) %s: in use by %s",
                         named, res, mode, who);
    return cli_error(VML_EXIT_CONFLICT, "cannot lock %s %s: in use by %s", res, mode, who);
}

/* Every backing image of the images named is read through them: lease it
 * shared (observe it, under an observed image), unless it is named itself.
 * Leased images go first, so a backing image of both is leased. */
static gboolean
add_backing_images(GArray *images, GHashTable *seen, int *status)
{
    guint named = images->len;
    for (guint k = 0; k < 2 * named; k++) {
        guint i = k % named;
        const Image *top = &g_array_index(images, Image, i);
        if (is_observed(top) != (k >= named))
            continue;
        const char *mode = is_observed(top) ? "observe" : "shared";
        g_autoptr(GError) error = NULL;
        const char *path = top->path;
        g_autoptr(GPtrArray) chain = vml_backing_chain(path, &error);
        if (!chain) {
            *status = cli_error(VML_EXIT_NOT_FOUND, "%s", error->message);
            return FALSE;
        }
        for (guint j = 0; j < chain->len; j++) {
            if (g_hash_table_contains(seen, chain->pdata[j]))
                continue;
            Image backing = { .arg = NULL, .path = g_strdup(chain->pdata[j]), .mode = mode };
            g_array_append_val(images, backing);
            Image *added = &g_array_index(images, Image, images->len - 1);
            g_hash_table_insert(seen, added->path, added->path);
        }
    }
    return TRUE;
}

/* Acquire every image in one call; the lock fds land in *FDS. */
static int
acquire(VmlClient *client, const Holder *h, GArray *images, gboolean want_fds, GArray **fds)
{
    JsonArray *resources = json_array_new();
    guint n_leased = 0;
    for (guint i = 0; i < images->len; i++) {
        Image *img = &g_array_index(images, Image, i);
        if (is_observed(img))
            continue;
        n_leased++;
        JsonObject *r = json_object_new();
        json_object_set_string_member(r, "path", img->path);
        json_object_set_string_member(r, "mode", img->mode);
        json_array_add_object_element(resources, r);
    }
    /* The fds keep the locks alive even if vmleased crashes. */
    VmlAcquireFlags flags = { .fds = want_fds };
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) error_params = NULL;
    g_autoptr(JsonArray) leases = vml_lease_acquire(client, h->id, resources, &flags, fds,
                                                    &error_params, &error);
    if (!leases) {
        if (g_error_matches(error, VML_ERROR, VML_ERROR_CONFLICT))
            return report_conflict(error_params, error);
        return cli_call_failed(error);
    }
    for (guint i = 0; *fds && i < (*fds)->len; i++) {
        int fd = g_array_index(*fds, int, i);
        /* Ours alone: COMMAND must not hold the locks past our release. */
        fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    }
    guint n_fds = *fds ? (*fds)->len : 0;
    if (want_fds && n_fds != n_leased)
        cli_warning("vmleased sent %u lock fds for %u leases", n_fds, n_leased);
    return VML_EXIT_OK;
}

/* Register the observed images: listed as read by us, holding nothing. */
static int
observe(VmlClient *client, const Holder *h, GArray *images)
{
    JsonArray *resources = json_array_new();
    for (guint i = 0; i < images->len; i++) {
        Image *img = &g_array_index(images, Image, i);
        if (!is_observed(img))
            continue;
        JsonObject *r = json_object_new();
        json_object_set_string_member(r, "path", img->path);
        json_array_add_object_element(resources, r);
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonArray) observing = vml_lease_observe(client, h->id, resources, &error);
    return observing ? VML_EXIT_OK : cli_call_failed(error);
}


/* Ask vmleased for its backend; on sanlock register this process. */
static gboolean
register_with_lock_service(VmlClient *client, gboolean *on_sanlock)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) st = vml_admin_status(client, &error);
    if (!st) {
        cli_call_failed(error);
        return FALSE;
    }
    *on_sanlock = g_strcmp0(cli_json_string(st, "backend", ""), "sanlock") == 0;
    if (!*on_sanlock)
        return TRUE;
    int sock = sanlock_register();
    if (sock < 0) {
        cli_warning("cannot register with sanlock: %s", g_strerror(-sock));
        return FALSE;
    }
    /* Kept open for our life, not passed to COMMAND. */
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    return TRUE;
}

static void
fds_close(GArray *fds)
{
    for (guint i = 0; fds && i < fds->len; i++)
        close(g_array_index(fds, int, i));
    if (fds)
        g_array_unref(fds);
}

static int
run_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    g_autoptr(GArray) images = g_array_new(FALSE, TRUE, sizeof(Image));
    g_array_set_clear_func(images, image_clear);
    const char *mode_flag = NULL;
    guint n_for_mode = 0;
    int command_at = -1;
    int status;

    for (int i = 1; i < argc;) {
        if (g_str_equal(argv[i], "--")) {
            command_at = i + 1;
            break;
        }
        switch (cli_common_option(cmd, opts, argc, argv, &i, &status)) {
        case CLI_OPT_EXIT:
            return status;
        case CLI_OPT_TAKEN:
            continue;
        case CLI_OPT_NONE:
            break;
        }
        if (g_str_equal(argv[i], "--exclusive") || g_str_equal(argv[i], "--shared") ||
            g_str_equal(argv[i], "--observe")) {
            if (mode_flag && n_for_mode == 0)
                return cli_usage_error(cmd, "%s needs at least one PATH", mode_flag);
            mode_flag = argv[i++];
            n_for_mode = 0;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        if (!mode_flag)
            return cli_usage_error(cmd, "give --exclusive, --shared or --observe before PATH '%s'",
                                   argv[i]);
        Image img = { .arg = argv[i++], .mode = mode_flag + 2 };
        g_array_append_val(images, img);
        n_for_mode++;
    }
    if (mode_flag && n_for_mode == 0)
        return cli_usage_error(cmd, "%s needs at least one PATH", mode_flag);
    if (images->len == 0)
        return cli_usage_error(cmd, "run needs --exclusive, --shared or --observe and a PATH");
    if (command_at < 0)
        return cli_usage_error(cmd, "missing '--' before COMMAND");
    if (command_at >= argc)
        return cli_usage_error(cmd, "missing COMMAND after '--'");
    char **command = argv + command_at;

    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < images->len; i++) {
        Image *img = &g_array_index(images, Image, i);
        struct stat st;
        img->path = cli_resolve_image(img->arg, &st, &status);
        if (!img->path)
            return status;
        const char *first = g_hash_table_lookup(seen, img->path);
        if (first)
            return cli_usage_error(cmd, "%s and %s are the same image %s", first, img->arg,
                                   img->path);
        g_hash_table_insert(seen, img->path, (gpointer)img->arg);
    }
    if (!add_backing_images(images, seen, &status))
        return status;

    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) client = cli_connect_lease(opts, &error);
    if (!client)
        return cli_error(VML_EXIT_DAEMON, "%s", error->message);
    g_autofree char *base = g_path_get_basename(command[0]);
    g_autofree char *clean = cli_sanitize(base);
    /* The daemon caps names; a path-long basename is no use in a table. */
    g_autofree char *short_base = g_utf8_substring(clean, 0, MIN(g_utf8_strlen(clean, -1), 200));
    g_autofree char *uuid = g_uuid_string_random();
    g_autofree char *name = g_strconcat("vmlease-run:", short_base, NULL);
    Holder holder = { .uuid = uuid, .name = name, .program = short_base };
    if (!register_holder(client, &holder, &error))
        return cli_call_failed(error);

    guint n_observed = 0;
    g_autoptr(GPtrArray) read_only = g_ptr_array_new();
    for (guint i = 0; i < images->len; i++) {
        const Image *img = &g_array_index(images, Image, i);
        if (is_observed(img)) {
            n_observed++;
            g_ptr_array_add(read_only, img->path);
        }
    }
    g_ptr_array_add(read_only, NULL);
    /* On sanlock a lease belongs to a process registered with sanlock:
     * this one (sanlock fences it, and COMMAND dies with it). */
    gboolean on_sanlock = FALSE;
    if (n_observed < images->len && !register_with_lock_service(client, &on_sanlock))
        return VML_EXIT_DAEMON;
    GArray *fds = NULL;
    status = n_observed < images->len ? acquire(client, &holder, images, !on_sanlock, &fds)
                                      : VML_EXIT_OK;
    if (status == VML_EXIT_OK && n_observed)
        status = observe(client, &holder, images);
    if (status != VML_EXIT_OK) {
        release_all(opts, client, &holder);
        fds_close(fds);
        return status;
    }
    status = cli_run_command_read_only(command, -1, (const char *const *)read_only->pdata);
    release_all(opts, client, &holder);
    fds_close(fds);
    return status;
}

const VmlCliCommand vml_cmd_run = {
    .name = "run",
    .synopsis = "(--exclusive|--shared|--observe) PATH... [(--exclusive|--shared|--observe) PATH...] -- COMMAND [ARGS...]",
    .summary = "Run COMMAND while holding leases on the images.",
    .description =
        "Register with vmleased as holder \"vmlease-run:BASENAME-OF-COMMAND\" (a\n"
        "random uuid, this process's pid), acquire every image in one call (all\n"
        "or none), run COMMAND with stdin, stdout and stderr inherited, then\n"
        "release the leases and exit with COMMAND's exit status (128+N if signal\n"
        "N killed it). Each mode flag applies to the paths after it, up to the\n"
        "next mode flag:\n"
        "  vmlease run --exclusive top.qcow2 --shared base.qcow2 -- qemu-img ...\n"
        "vmlease keeps the lock fds vmleased hands over, so the leases outlive a\n"
        "crash of vmleased. SIGINT, SIGTERM and SIGHUP sent to vmlease are passed\n"
        "on to COMMAND (unless ignored, as under nohup); if vmlease dies, COMMAND\n"
        "gets SIGTERM. When an image is in use, vmlease names it and every holder\n"
        "and exits with 3 without running COMMAND. The backing images of every\n"
        "PATH (read from its qcow2 header) are leased shared as well, unless they\n"
        "are named themselves.\n\n"
        "--observe reads images without a lease, as `qemu-img info -U` or\n"
        "libguestfs' readonly=true do: nothing is locked, a VM holding the image\n"
        "exclusively is neither blocked nor blocks, and `vmlease owners` lists\n"
        "this command as an observer. COMMAND gets a mount namespace of its own\n"
        "(without root, inside a user namespace mapping only the caller's uid and\n"
        "gid) where each observed path (and its backing images) is bind-mounted\n"
        "read-only over itself: writing through that path fails with EROFS; if\n"
        "that cannot be set up, COMMAND does not run (exit 126). What it reads may be torn or changing while the VM writes;\n"
        "it must never write (docs/resource-identity.md).\n\n"
        "Options:\n"
        "  --exclusive PATH...  lock the following images for this command alone\n"
        "  --shared PATH...     lock the following images shared (read-only users)\n"
        "  --observe PATH...    read the following images holding nothing\n",
    .run = run_run,
};
