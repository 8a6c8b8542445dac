/* vmlease log-level: what vmleased logs, read or changed while it runs. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"
#include "vml-error.h"

static int
log_level_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_json_args(cmd, opts, argc, argv, &json, args);
    if (status >= 0)
        return status;
    if (args->len > 1)
        return cli_usage_error(cmd, "unexpected argument '%s'", (const char *)args->pdata[1]);
    const char *level = args->len ? args->pdata[0] : NULL;
    static const char *const levels[] = { "error", "warning", "info", "debug", NULL };
    if (level && !g_strv_contains(levels, level))
        return cli_usage_error(cmd, "LEVEL must be one of error, warning, info, debug; not '%s'",
                               level);
    g_autoptr(VmlClient) client = cli_admin_client(opts, &status);
    if (!client)
        return status;
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) reply = level ? vml_admin_set_log_level(client, level, &error)
                                        : vml_admin_status(client, &error);
    if (!reply)
        return cli_call_failed(error);
    const char *now = cli_json_string(reply, level ? "level" : "log_level", NULL);
    if (!now) {
        g_autoptr(GError) old = g_error_new(VML_ERROR, VML_ERROR_PROTOCOL,
                                            "this vmleased does not say its log level "
                                            "(it predates log-level)");
        return cli_call_failed(old);
    }
    if (json) {
        g_autoptr(JsonObject) out = json_object_new();
        json_object_set_string_member(out, "log_level", now);
        if (level)
            json_object_set_string_member(out, "previous", cli_json_string(reply, "previous", ""));
        cli_print_json(out);
    } else if (level) {
        printf("log level %s (was %s) until vmleased reloads or restarts\n", now,
               cli_json_string(reply, "previous", "?"));
    } else {
        printf("%s\n", now);
    }
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_log_level = {
    .name = "log-level",
    .synopsis = "[--json] [LEVEL]",
    .summary = "Show vmleased's log level, or set it (root) while it runs.",
    .description =
        "Without LEVEL, print the level vmleased logs at now. With LEVEL (error,\n"
        "warning, info or debug) vmleased logs at that level from now on, until\n"
        "it reloads (SIGHUP, SIGUSR1) or restarts: then log_level of\n"
        "vmleased.conf applies again. Setting it is for root only.\n\n"
        "Options:\n"
        "  --json  print {\"log_level\": LEVEL} (and \"previous\" when set)\n",
    .run = log_level_run,
};
