/* vmlease hosts: the hosts of a shared (sanlock) lockspace and whether
 * each is live, failing or dead. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

static void
print_hosts(JsonObject *reply)
{
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
}

static int
hosts_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    return cli_run_admin_query(cmd, opts, argc, argv, vml_admin_hosts, print_hosts);
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
