/* vmlease owners: who holds leases, on the given images or on everything. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

/* The name to show an image by: the path asked by, else the one its
 * first owner holds it through, else (a <lease>) the resource itself. */
static const char *
image_name(JsonObject *resource, const char *asked)
{
    if (asked)
        return asked;
    JsonArray *owners = cli_json_array(resource, "owners");
    JsonObject *first = owners && json_array_get_length(owners)
        ? cli_json_array_object(owners, 0) : NULL;
    const char *path = first ? cli_json_string(first, "path", NULL) : NULL;
    return path ? path : cli_json_string(resource, "resource", "?");
}

static gint
resource_cmp(gconstpointer a, gconstpointer b)
{
    JsonObject *x = *(JsonObject *const *)a, *y = *(JsonObject *const *)b;
    return g_strcmp0(image_name(x, NULL), image_name(y, NULL));
}

static void
add_rows(CliTable *table, JsonObject *resource, const char *asked)
{
    g_autoptr(GPtrArray) sorted = cli_owners_sorted(cli_json_array(resource, "owners"));
    for (guint i = 0; i < sorted->len; i++) {
        JsonObject *o = sorted->pdata[i];
        g_autofree char *pid = g_strdup_printf("%" G_GINT64_FORMAT, cli_json_int(o, "pid", 0));
        g_autofree char *since = cli_format_time(cli_json_int(o, "since", 0));
        /* A parked lease still keeps everyone else out, for its domain. */
        g_autofree char *state = cli_json_string(o, "parked", NULL)
            ? g_strdup_printf("parked:%s", cli_json_string(o, "parked", "?"))
            : g_strdup(g_strcmp0(cli_json_string(o, "mode", NULL), "observer") == 0
                           ? "observing" : "in use");
        /* Each owner by the name it holds the image through. */
        const char *through = cli_json_string(o, "path", NULL);
        g_autofree char *image = asked && through && g_strcmp0(through, asked) != 0
            ? g_strdup_printf("%s (as %s)", asked, through)
            : g_strdup(asked ? asked : through ? through : image_name(resource, NULL));
        cli_table_add_row(table, image, cli_json_string(resource, "resource", "?"),
                          cli_json_string(o, "mode", "?"), state, cli_json_string(o, "host", "?"),
                          cli_json_string(o, "name", "?"), cli_json_string(o, "uuid", "?"),
                          pid, since);
    }
}

/* Owners of PATHS (taken; NULL: everything, all pages) as one reply. */
static JsonObject *
owners_all_pages(const VmlCliOptions *opts, JsonArray *paths, int *status)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) client = cli_connect_admin(opts, &error);
    if (!client) {
        if (paths)
            json_array_unref(paths);
        *status = cli_error(VML_EXIT_DAEMON, "%s", error->message);
        return NULL;
    }
    JsonArray *resources = vml_admin_owners(client, paths, &error);
    if (!resources) {
        *status = cli_call_failed(error);
        return NULL;
    }
    JsonObject *all = json_object_new();
    json_object_set_array_member(all, "resources", resources);
    return all;
}

static int
owners_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_json_args(cmd, opts, argc, argv, &json, args);
    if (status >= 0)
        return status;

    /* Resolve locally first: the error names the path as typed, and a typo
     * is reported even when the daemon is down. */
    JsonArray *paths = NULL;
    if (args->len) {
        paths = json_array_new();
        for (guint i = 0; i < args->len; i++) {
            struct stat st;
            char *path = cli_resolve_image(args->pdata[i], &st, &status);
            if (!path) {
                json_array_unref(paths);
                return status;
            }
            json_array_add_string_element(paths, path);
            g_free(path);
        }
    }
    g_autoptr(GPtrArray) canonical = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; paths && i < json_array_get_length(paths); i++)
        g_ptr_array_add(canonical, g_strdup(json_array_get_string_element(paths, i)));

    g_autoptr(JsonObject) reply = owners_all_pages(opts, paths, &status);
    if (!reply)
        return status;
    JsonArray *resources = cli_json_array(reply, "resources");

    if (json) {
        cli_print_json(reply);
        return VML_EXIT_OK;
    }
    g_autoptr(GPtrArray) sorted = g_ptr_array_new();
    for (guint i = 0; i < json_array_get_length(resources); i++) {
        JsonObject *r = cli_json_array_object(resources, i);
        if (r)
            g_ptr_array_add(sorted, r);
    }
    /* With paths the rows follow the command line; without, resource order. */
    if (!args->len)
        g_ptr_array_sort(sorted, resource_cmp);
    g_autoptr(CliTable) table = cli_table_new("IMAGE", "RESOURCE", "MODE", "STATE", "HOST", "VM",
                                              "UUID", "PID", "SINCE", NULL);
    for (guint i = 0; i < sorted->len; i++)
        add_rows(table, sorted->pdata[i], args->len ? canonical->pdata[i] : NULL);
    if (cli_table_n_rows(table))
        cli_table_print(table, stdout);
    else if (args->len)
        printf("no leases on %s%s\n", (const char *)canonical->pdata[0],
               args->len > 1 ? " or the other images named" : "");
    else
        printf("no leases held\n");
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_owners = {
    .name = "owners",
    .synopsis = "[--json] [PATH...]",
    .summary = "List who holds leases on the images PATH..., or on every resource.",
    .description =
        "List the owners of leases (io.vmlease.Admin.Owners): one row per owner\n"
        "with columns IMAGE, RESOURCE, MODE, STATE, HOST, VM, UUID, PID and SINCE\n"
        "(local time). IMAGE is the path (PATH as resolved, or the name the owner\n"
        "took the lease by; \"P (as Q)\" when the owner holds P's image through\n"
        "another name Q); RESOURCE is what every name of the image resolves to\n"
        "(docs/resource-identity.md); MODE is exclusive, shared or observer.\n"
        "An observer (vmlease run --observe) reads the image holding nothing:\n"
        "its STATE is \"observing\". Otherwise STATE is \"in use\", or\n"
        "\"parked:paused\" / \"parked:migrating\" for a\n"
        "lease kept for its domain while libvirt pauses or migrates it: nobody\n"
        "else can take it, and it goes when the VM's process exits.\n"
        "Owners known only from the lockspace (other hosts, or holders that\n"
        "survived a daemon crash) are included. Without PATH every held\n"
        "resource is listed; with nothing held nothing is printed.\n\n"
        "Options:\n"
        "  --json  print the daemon's reply {\"resources\": [...]} as JSON\n",
    .run = owners_run,
};
