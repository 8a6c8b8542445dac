/* vmlease stash: give, take, list and drop the named fds vmleased keeps
 * for an owner (a domain uuid). */
#include "vmlease-cli.h"
#include "output.h"
#include "vmlease-stash.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *owner;
    const char *name;
    gboolean keep;
    gboolean json;
    GPtrArray *args;      /* operands, borrowed */
    char **command;       /* after "--", or NULL */
} StashArgs;

/* "--owner X", "--owner=X": the value, or NULL when ARGV[*I] is not OPT. */
static const char *
option_value(const char *opt, int argc, char **argv, int *i)
{
    gsize n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[(*i)++] + n + 1;
    if (argv[*i][n] != '\0' || *i + 1 >= argc)
        return NULL;
    *i += 2;
    return argv[*i - 1];
}

static int
parse(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv, StashArgs *a)
{
    int status;
    for (int i = 2; i < argc;) {
        switch (cli_common_option(cmd, opts, argc, argv, &i, &status)) {
        case CLI_OPT_EXIT:
            return status;
        case CLI_OPT_TAKEN:
            continue;
        case CLI_OPT_NONE:
            break;
        }
        const char *v;
        if ((v = option_value("--owner", argc, argv, &i))) {
            a->owner = v;
        } else if ((v = option_value("--name", argc, argv, &i))) {
            a->name = v;
        } else if (g_str_equal(argv[i], "--keep")) {
            a->keep = TRUE;
            i++;
        } else if (g_str_equal(argv[i], "--json")) {
            a->json = TRUE;
            cli_json_errors();
            i++;
        } else if (g_str_equal(argv[i], "--")) {
            a->command = argv + i + 1;
            if (!*a->command)
                return cli_usage_error(cmd, "-- needs a COMMAND");
            break;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error(cmd, "unknown option or missing value: '%s'", argv[i]);
        } else {
            g_ptr_array_add(a->args, argv[i++]);
        }
    }
    if (a->owner && !g_uuid_string_is_valid(a->owner))
        return cli_usage_error(cmd, "--owner must be a domain uuid");
    return -1;
}

static int
need(const VmlCliCommand *cmd, const StashArgs *a, gboolean name, guint n_args)
{
    if (!a->owner)
        return cli_usage_error(cmd, "--owner UUID is needed");
    if (name && !a->name)
        return cli_usage_error(cmd, "--name NAME is needed");
    if (a->args->len != n_args)
        return cli_usage_error(cmd, n_args ? "one FILE is needed" : "no operands expected");
    return -1;
}

/* "PATH (read-write, offset N)" of an fd we hold. */
static char *
describe_fd(int fd)
{
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *path = g_file_read_link(link, NULL);
    int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
    off_t off = lseek(fd, 0, SEEK_CUR);
    g_autofree char *clean = cli_sanitize(path ? path : "?");
    return g_strdup_printf("%s (%s, offset %lld)", clean,
                           acc == O_RDWR ? "read-write" : acc == O_WRONLY ? "write-only"
                                                                          : "read-only",
                           (long long)off);
}

static int
give(VmlClient *c, const StashArgs *a)
{
    const char *file = a->args->pdata[0];
    /* Read-write when we may: the stash is for images to reopen. */
    int fd = open(file, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EISDIR))
        fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return cli_error(VML_EXIT_NOT_FOUND, "%s: %s", file, g_strerror(errno));
    g_autoptr(GError) error = NULL;
    g_autofree char *what = describe_fd(fd);
    gboolean ok = vmlease_stash_give(c, a->owner, a->name, fd, a->keep, &error);
    close(fd);
    if (!ok)
        return cli_call_failed(error);
    printf("stashed %s as \"%s\" for %s%s\n", what, a->name, a->owner,
           a->keep ? " (kept after its holder exits)" : "");
    return VML_EXIT_OK;
}

static int
take(VmlClient *c, const StashArgs *a)
{
    g_autoptr(GError) error = NULL;
    int fd = vmlease_stash_take(c, a->owner, a->name, &error);
    if (fd < 0)
        return cli_call_failed(error);
    g_autofree char *what = describe_fd(fd);
    int status = VML_EXIT_OK;
    if (a->command) {
        status = cli_run_command(a->command, fd);
    } else {
        printf("took \"%s\": %s; nothing ran with it, so it is closed now\n", a->name, what);
    }
    close(fd);
    return status;
}

static int
list(VmlClient *c, const StashArgs *a)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonArray) fds = vmlease_stash_list(c, a->owner, &error);
    if (!fds)
        return cli_call_failed(error);
    if (a->json) {
        g_autoptr(JsonObject) out = json_object_new();
        json_object_set_array_member(out, "fds", json_array_ref(fds));
        cli_print_json(out);
        return VML_EXIT_OK;
    }
    g_autoptr(CliTable) t = cli_table_new("OWNER", "NAME", "PATH", "ACCESS", "OFFSET", "KEEP",
                                          "SINCE", NULL);
    for (guint i = 0; i < json_array_get_length(fds); i++) {
        JsonObject *e = cli_json_array_object(fds, i);
        g_autofree char *offset = g_strdup_printf("%" G_GINT64_FORMAT, cli_json_int(e, "offset", -1));
        g_autofree char *since = cli_format_time(cli_json_int(e, "since", 0));
        cli_table_add_row(t, cli_json_string(e, "owner", "?"), cli_json_string(e, "name", "?"),
                          cli_json_string(e, "path", "?"), cli_json_string(e, "access", "?"),
                          offset,
                          json_object_get_boolean_member_with_default(e, "keep", FALSE)
                              ? "yes" : "no", since);
    }
    if (cli_table_n_rows(t))
        cli_table_print(t, stdout);
    else
        printf("nothing stashed\n");
    return VML_EXIT_OK;
}

static int
drop(VmlClient *c, const StashArgs *a)
{
    g_autoptr(GError) error = NULL;
    if (!vmlease_stash_drop(c, a->owner, a->name, &error))
        return cli_call_failed(error);
    printf("dropped \"%s\" of %s\n", a->name, a->owner);
    return VML_EXIT_OK;
}

static int
stash_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    if (argc < 2 || g_str_equal(argv[1], "--help") || g_str_equal(argv[1], "-h")) {
        if (argc < 2)
            return cli_usage_error(cmd, "give, take, list or drop?");
        cli_print_help(cmd);
        return VML_EXIT_OK;
    }
    const char *verb = argv[1];
    g_autoptr(GPtrArray) operands = g_ptr_array_new();
    StashArgs a = { .args = operands };
    int status = parse(cmd, opts, argc, argv, &a);
    if (status >= 0)
        return status;
    gboolean is_give = g_str_equal(verb, "give"), is_take = g_str_equal(verb, "take");
    gboolean is_list = g_str_equal(verb, "list"), is_drop = g_str_equal(verb, "drop");
    if (!is_give && !is_take && !is_list && !is_drop)
        return cli_usage_error(cmd, "unknown stash command '%s'", verb);
    if (a.command && !is_take)
        return cli_usage_error(cmd, "only take runs a COMMAND");
    if (!is_list && (status = need(cmd, &a, TRUE, is_give ? 1 : 0)) >= 0)
        return status;
    if (is_list && a.args->len)
        return cli_usage_error(cmd, "list takes no operands");

    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) c = cli_connect_lease(opts, &error);
    if (!c)
        return cli_error(VML_EXIT_DAEMON, "%s", error->message);
    if (is_give)
        return give(c, &a);
    if (is_take)
        return take(c, &a);
    if (is_list)
        return list(c, &a);
    return drop(c, &a);
}

const VmlCliCommand vml_cmd_stash = {
    .name = "stash",
    .synopsis = "give|take|list|drop --owner UUID [--name NAME] ...",
    .summary = "Keep named open files in vmleased for a domain (the fd stash).",
    .description =
        "  vmlease stash give --owner UUID --name NAME [--keep] FILE\n"
        "      open FILE (read-write if allowed, else read-only) and stash it\n"
        "  vmlease stash take --owner UUID --name NAME [-- COMMAND [ARGS...]]\n"
        "      take the fd out of the stash and run COMMAND with it as fd 3\n"
        "      (VMLEASE_FD=3), exiting with COMMAND's status; without COMMAND,\n"
        "      say what it was and close it\n"
        "  vmlease stash list [--owner UUID] [--json]\n"
        "  vmlease stash drop --owner UUID --name NAME\n"
        "An owner belongs to the uid that first stashed for it; only that uid and\n"
        "root may use it. Without --keep an fd is dropped when the owner's last\n"
        "holder process exits. Uses the lease socket.\n",
    .run = stash_run,
};
