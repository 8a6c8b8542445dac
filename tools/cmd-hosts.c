/* vmlease hosts: the hosts of a shared (sanlock) lockspace and whether
 * each is live, failing or dead. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

static int
hosts_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_json_args(cmd, opts, argc, argv, &json, args);
    if (status >= 0)
        return status;
    if (args->len)
        return cli_usage_error(cmd, "unexpected argument '%s'", (const char *)args->pdata[0]);
    g_autoptr(VmlClient) client = cli_admin_client(opts, &status);
    if (!client)
        return status;
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) reply = vml_admin_hosts(client, &error);
    if (!reply)
        return cli_call_failed(error);
    if (json) {
        cli_print_json(reply);
        return VML_EXIT_OK;
    }
    JsonArray *hosts = cli_json_array(reply, "hosts");
    g_autoptr(CliTable) t = cli_table_new("HOST_ID", "HOST", "STATE", "GENERATION", "RENEWED",
                                          "", NULL);
    for (guint i = 0; hosts && i < json_array_get_length(hosts); i++) {
        JsonObject *h = cli_json_array_object(hosts, i);
        g_autofree char *id = g_strdup_printf("%" G_GINT64_FORMAT, cli_json_int(h, "host_id", 0));
        g_autofree char *gen = g_strdup_printf("%" G_GINT64_FORMAT,
                                               cli_json_int(h, "generation", 0));
        /* sanlock's timestamps are seconds of that host's monotonic clock. */
        g_autofree char *ts = g_strdup_printf("%" G_GINT64_FORMAT, cli_json_int(h, "timestamp", 0));
        g_autofree char *name = cli_sanitize(cli_json_string(h, "host", "?"));
        cli_table_add_row(t, id, name, cli_json_string(h, "state", "?"), gen, ts,
                          json_object_get_boolean_member_with_default(h, "this_host", FALSE)
                              ? "(this host)" : "");
    }
    printf("lockspace %s, this host is host_id %" G_GINT64_FORMAT "\n",
           cli_json_string(reply, "lockspace", "?"), cli_json_int(reply, "host_id", 0));
    cli_table_print(t, stdout);
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_hosts = {
    .name = "hosts",
    .synopsis = "[--json]",
    .summary = "Show the hosts of the shared lockspace and whether each is live.",
    .description =
        "For the sanlock backend: every host that has joined the lockspace, its\n"
        "host_id and name, its state as sanlock sees it (live, failing: not\n"
        "renewing lately, dead: its leases may be taken over, free, unknown), its\n"
        "host generation and the time of its last renewal (seconds on that host's\n"
        "monotonic clock). With the fcntl backend there are no hosts to show.\n\n"
        "Options:\n"
        "  --json  print {lockspace, host_id, hosts: [{host_id, host, machine_id,\n"
        "          state, generation, timestamp, this_host}]}\n",
    .run = hosts_run,
};
