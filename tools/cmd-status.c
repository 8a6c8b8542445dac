/* vmlease status: what vmleased reports about itself. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

#include <string.h>

static int
status_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
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
    g_autoptr(JsonObject) reply = vml_admin_status(client, &error);
    if (!reply)
        return cli_call_failed(error);

    if (json) {
        cli_print_json(reply);
        return VML_EXIT_OK;
    }
    gint64 started = cli_json_int(reply, "started", 0);
    g_autofree char *since = cli_format_time(started);
    g_autofree char *uptime = cli_format_duration(g_get_real_time() / G_USEC_PER_SEC - started);
    g_autoptr(CliFields) f = cli_fields_new();
    cli_fields_add(f, "version", "%s", cli_json_string(reply, "version", "?"));
    cli_fields_add(f, "pid", "%" G_GINT64_FORMAT, cli_json_int(reply, "pid", 0));
    cli_fields_add(f, "backend", "%s", cli_json_string(reply, "backend", "?"));
    cli_fields_add(f, "lockspace", "%s", cli_json_string(reply, "lockspace", "?"));
    cli_fields_add(f, "host", "%s", cli_json_string(reply, "host", "?"));
    cli_fields_add(f, "started", "%s", since);
    cli_fields_add(f, "uptime", "%s", uptime);
    cli_fields_add(f, "reexecs", "%" G_GINT64_FORMAT, cli_json_int(reply, "reexecs", 0));
    cli_fields_add(f, "holders", "%" G_GINT64_FORMAT, cli_json_int(reply, "holders", 0));
    cli_fields_add(f, "leases", "%" G_GINT64_FORMAT, cli_json_int(reply, "leases", 0));
    cli_fields_print(f, stdout);
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_status = {
    .name = "status",
    .synopsis = "[--json]",
    .summary = "Show the daemon's version, pid, backend, lockspace, host and load.",
    .description =
        "Show what vmleased reports about itself (io.vmlease.Admin.Status):\n"
        "version, daemon pid, backend, lockspace, host, start time, uptime,\n"
        "re-executions, and the number of holders and leases.\n\n"
        "Options:\n"
        "  --json  print the daemon's reply as JSON\n",
    .run = status_run,
};
