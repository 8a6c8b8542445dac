/* vmlease force-unlock: have vmleased clear an image's stale in-use mark. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

static int
force_unlock_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json, force;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_flag_args(cmd, opts, argc, argv, &json, "--force", &force, args);
    if (status >= 0)
        return status;
    if (args->len != 1)
        return cli_usage_error(cmd, "force-unlock takes one PATH");

    struct stat st;
    g_autofree char *path = cli_resolve_image(args->pdata[0], &st, &status);
    if (!path)
        return status;
    g_autoptr(VmlClient) client = cli_admin_client(opts, &status);
    if (!client)
        return status;
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) reply = vml_admin_force_unlock(client, path, force, NULL, &error);
    if (!reply)
        return cli_call_failed(error);
    if (json) {
        cli_print_json(reply);
        return VML_EXIT_OK;
    }
    gboolean cleared = json_object_get_boolean_member_with_default(reply, "cleared", FALSE);
    g_autofree char *reason = cli_sanitize(cli_json_string(reply, "reason", ""));
    if (cleared)
        printf("%s: cleared the in-use mark (%s)\n", path, reason);
    else
        printf("%s: nothing cleared: %s\n", path, reason);
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_force_unlock = {
    .name = "force-unlock",
    .synopsis = "[--force] [--json] PATH",
    .summary = "Clear the stale in-use mark of the qcow2 image PATH (root).",
    .description =
        "Ask vmleased to clear the in-use bit and owner record in PATH's qcow2\n"
        "header. Without --force only a stale mark is cleared: no lease is held on\n"
        "the image, no QEMU has it open, and the process that set it is gone (or\n"
        "its host has rebooted since). A live mark, or one set by another host,\n"
        "is refused (exit 3) with what would have been cleared. Even with --force\n"
        "the header is never rewritten while a QEMU holds the image. Leases are\n"
        "not touched: a lock dies with its holder, it cannot go stale.\n\n"
        "Options:\n"
        "  --force  clear a live or unverifiable mark too\n"
        "  --json   print {resource, cleared, verdict, reason, owner}\n",
    .run = force_unlock_run,
};
