/* vmlease status: what vmleased reports about itself. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

#include <string.h>

static void
print_status(JsonObject *reply)
{
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
    cli_fields_add(f, "log level", "%s", cli_json_string(reply, "log_level", "?"));
    gint64 lost = cli_json_int(reply, "holders_without_lock_fds", 0);
    cli_fields_add(f, "holders without lock fds", lost ? "%" G_GINT64_FORMAT " (their leases "
                   "live in vmleased alone: see SECURITY POLICIES in vmleased(8))"
                   : "%" G_GINT64_FORMAT, lost);
    cli_fields_print(f, stdout);
}

static int
status_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    return cli_run_admin_query(cmd, opts, argc, argv, vml_admin_status, print_status);
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
