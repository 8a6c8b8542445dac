/* vmlease inspect: an image's lock identity and who holds it. */
#include "vmlease-cli.h"
#include "output.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* Size in bytes, or -1 with ERRNO_OUT set. stat() says 0 for a block device:
 * ask the device itself. */
static gint64
image_size(const char *path, const struct stat *st, int *errno_out)
{
    if (S_ISREG(st->st_mode))
        return st->st_size;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *errno_out = errno;
        return -1;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    *errno_out = errno;
    close(fd);
    return end < 0 ? -1 : (gint64)end;
}

static int
inspect_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_json_args(cmd, opts, argc, argv, &json, args);
    if (status >= 0)
        return status;
    if (args->len > 1)
        return cli_usage_error(cmd, "inspect takes one PATH");
    if (args->len == 0)
        return cli_usage_error(cmd, "inspect needs a PATH");
    const char *arg = args->pdata[0];

    struct stat st;
    g_autofree char *path = cli_resolve_image(arg, &st, &status);
    if (!path)
        return status;
    int size_errno = 0;
    gint64 size = image_size(path, &st, &size_errno);

    g_autoptr(JsonObject) params = json_object_new();
    JsonArray *paths = json_array_new();
    json_array_add_string_element(paths, path);
    json_object_set_array_member(params, "paths", paths);
    g_autoptr(JsonObject) reply = cli_call_admin(opts, "io.vmlease.Admin.Owners", params, &status);
    if (!reply)
        return status;
    JsonArray *resources = cli_json_array(reply, "resources");
    JsonObject *res = (resources && json_array_get_length(resources) == 1)
        ? cli_json_array_object(resources, 0) : NULL;
    JsonArray *owners = cli_json_array(res, "owners");
    if (!owners)
        return cli_error(VML_EXIT_DAEMON, "malformed Owners reply from vmleased");

    /* The daemon's key is authoritative: it is what the lock file is named
     * after (today the canonical path; the qcow2 layer may change that). */
    const char *resource = cli_json_string(res, "resource", path);
    g_autofree char *hash = vml_key_hash(resource);
    g_autofree char *lock_file = g_strdup_printf("%s.lock", hash);
    const char *type = S_ISBLK(st.st_mode) ? "block" : "regular";
    g_autofree char *who = cli_owners_describe(owners);
    g_autofree char *verdict = json_array_get_length(owners)
        ? g_strdup_printf("in use by %s", who) : g_strdup("free");

    if (json) {
        g_autoptr(JsonObject) out = json_object_new();
        json_object_set_string_member(out, "path", path);
        json_object_set_string_member(out, "resource", resource);
        json_object_set_string_member(out, "lock_file", lock_file);
        if (size >= 0)
            json_object_set_int_member(out, "size", size);
        else
            json_object_set_null_member(out, "size");
        json_object_set_string_member(out, "type", type);
        json_object_set_array_member(out, "owners", json_array_ref(owners));
        json_object_set_string_member(out, "verdict", verdict);
        cli_print_json(out);
        return VML_EXIT_OK;
    }
    g_autoptr(CliFields) f = cli_fields_new();
    cli_fields_add(f, "path", "%s", path);
    cli_fields_add(f, "resource", "%s", resource);
    cli_fields_add(f, "lock file", "%s", lock_file);
    if (size >= 0)
        cli_fields_add(f, "size", "%" G_GINT64_FORMAT, size);
    else
        cli_fields_add(f, "size", "unknown (%s)", g_strerror(size_errno));
    cli_fields_add(f, "type", "%s", type);
    cli_fields_add(f, "owners", "%u", json_array_get_length(owners));
    cli_fields_add(f, "verdict", "%s", verdict);
    cli_fields_print(f, stdout);
    return VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_inspect = {
    .name = "inspect",
    .synopsis = "[--json] PATH",
    .summary = "Show the lock identity of the image PATH and who holds it.",
    .description =
        "Show the image's canonical path, its resource key, the name of its lock\n"
        "file in the lockspace (SHA-256 of the key + \".lock\"), its size in bytes\n"
        "and type (regular or block), the number of owners, and a verdict: either\n"
        "  free\n"
        "or \"in use by \" and, for each owner, separated by \"; \",\n"
        "  VM \"NAME\" (uuid UUID, pid PID on host HOST, MODE since TIME)\n\n"
        "Options:\n"
        "  --json  print {path, resource, lock_file, size, type, owners, verdict}\n",
    .run = inspect_run,
};
