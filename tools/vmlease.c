/* vmlease: the administrator's command line for vmleased. This file holds
 * main(), the help texts and the helpers every subcommand shares. */
#include "vmlease-cli.h"
#include "output.h"
#include "vml-config.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-conf.h"
#include "vml-image-identity.h"
#include "vml-json-write.h"

#include <errno.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const VmlCliCommand *const commands[] = {
    &vml_cmd_status,
    &vml_cmd_metrics,
    &vml_cmd_log_level,
    &vml_cmd_owners,
    &vml_cmd_inspect,
    &vml_cmd_force_unlock,
    &vml_cmd_stash,
    &vml_cmd_hosts,
    &vml_cmd_run,
    &vml_cmd_chain,
};

/* ---- messages ----------------------------------------------------------- */

/* Set once a command was asked for --json: its errors go to stdout as
 * JSON too, so a script reading stdout always gets a document. */
static gboolean json_errors;

void
cli_json_errors(void)
{
    json_errors = TRUE;
}

/* "vmlease: MESSAGE" on stderr, after whatever stdout had so far; under
 * --json also {"error": {"name", "message", "exit_status"}} on stdout
 * (NAME: the daemon's error name, when it said one). */
static void
say_error(int code, const char *name, const char *msg)
{
    fflush(stdout);
    fprintf(stderr, "vmlease: %s\n", msg);
    if (!json_errors)
        return;
    g_autoptr(GString) out = g_string_new("{\"error\":{");
    if (name) {
        vml_json_write_member_string(out, TRUE, "name", name);
        g_string_append_c(out, ',');
    }
    vml_json_write_member_string(out, TRUE, "message", msg);
    vml_json_write_member_int(out, FALSE, "exit_status", code);
    g_string_append(out, "}}\n");
    fputs(out->str, stdout);
    fflush(stdout);
}

static void G_GNUC_PRINTF(2, 0)
print_error(int code, const char *format, va_list ap)
{
    g_autofree char *msg = g_strdup_vprintf(format, ap);
    say_error(code, NULL, msg);
}

void
cli_warning(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "vmlease: warning: %s\n", msg);
}

int
cli_error(int code, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    print_error(code, format, ap);
    va_end(ap);
    return code;
}

int
cli_usage_error(const VmlCliCommand *cmd, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    print_error(VML_EXIT_USAGE, format, ap);
    va_end(ap);
    fprintf(stderr, "Try 'vmlease %s%s--help' for more information.\n",
            cmd ? cmd->name : "", cmd ? " " : "");
    return VML_EXIT_USAGE;
}

static void
print_exit_status(FILE *out)
{
    fputs("Exit status:\n"
          "  0  success (for run: the exit status of COMMAND)\n"
          "  1  usage error\n"
          "  2  vmleased not reachable, or protocol error\n"
          "  3  lease conflict: the image is in use\n"
          "  4  other error reported by vmleased (invalid parameter, permission\n"
          "     denied, limit reached, backend error, ...)\n"
          "  5  path not found, or not a regular file or block device\n"
          "  6  inspect: the image is corrupt (the verdict names the fault)\n"
          "run exits with the status of COMMAND (128+N if signal N killed it),\n"
          "so 1-6 can then also come from COMMAND unless vmlease printed an\n"
          "error; 126 and 127 mean COMMAND could not be executed or found.\n",
          out);
}

static void
print_global_options(FILE *out)
{
    g_autofree char *lease = vml_default_lease_socket();
    g_autofree char *admin = vml_default_admin_socket();
    fprintf(out,
            "Global options (before or after the subcommand name):\n"
            "  --socket PATH        lease socket, used by run\n"
            "                       (default: %s)\n"
            "  --admin-socket PATH  admin socket, used by status, owners and inspect;\n"
            "                       they use --socket if only that is given\n"
            "                       (default: %s)\n"
            "  -h, --help           show help\n"
            "  --version            show the version\n"
            "Default paths follow $VMLEASE_ROOT when it is set.\n",
            lease, admin);
}

void
cli_print_help(const VmlCliCommand *cmd)
{
    if (cmd) {
        printf("Usage: vmlease [OPTIONS] %s %s\n\n%s\n", cmd->name, cmd->synopsis,
               cmd->description);
        print_global_options(stdout);
        fputc('\n', stdout);
        print_exit_status(stdout);
        return;
    }
    printf("Usage: vmlease [OPTIONS] SUBCOMMAND [ARGS...]\n\n"
           "Administer vmleased, the lease manager for VM disk images.\n\n"
           "Subcommands:\n");
    for (guint i = 0; i < G_N_ELEMENTS(commands); i++)
        printf("  %s %s\n      %s\n", commands[i]->name, commands[i]->synopsis,
               commands[i]->summary);
    printf("  help [SUBCOMMAND]\n      Show this help, or the help of SUBCOMMAND.\n\n");
    print_global_options(stdout);
    fputc('\n', stdout);
    print_exit_status(stdout);
}

/* ---- options ------------------------------------------------------------ */

/* Match "--NAME VALUE" or "--NAME=VALUE" at ARGV[*I]: 1 matched (*value set,
 * *i advanced past the value), 0 no match, -1 value missing. */
static int
option_value(const char *name, int argc, char **argv, int *i, const char **value)
{
    const char *arg = argv[*i];
    gsize len = strlen(name);
    if (strncmp(arg, name, len) != 0)
        return 0;
    if (arg[len] == '=') {
        *value = arg + len + 1;
        (*i)++;
        return 1;
    }
    if (arg[len] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[*i + 1];
    *i += 2;
    return 1;
}

VmlCliOptResult
cli_common_option(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv,
                  int *i, int *status)
{
    static const char *const names[] = { "--socket", "--admin-socket" };
    const char **targets[] = { &opts->lease_socket, &opts->admin_socket };

    if (g_str_equal(argv[*i], "--help") || g_str_equal(argv[*i], "-h")) {
        cli_print_help(cmd);
        *status = VML_EXIT_OK;
        return CLI_OPT_EXIT;
    }
    for (guint n = 0; n < G_N_ELEMENTS(names); n++) {
        int r = option_value(names[n], argc, argv, i, targets[n]);
        if (r < 0) {
            *status = cli_usage_error(cmd, "option %s needs a PATH", names[n]);
            return CLI_OPT_EXIT;
        }
        if (r > 0) {
            if (!**targets[n]) {
                *status = cli_usage_error(cmd, "option %s needs a non-empty PATH", names[n]);
                return CLI_OPT_EXIT;
            }
            return CLI_OPT_TAKEN;
        }
    }
    return CLI_OPT_NONE;
}

int
cli_parse_json_args(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv,
                    gboolean *json, GPtrArray *args)
{
    return cli_parse_flag_args(cmd, opts, argc, argv, json, NULL, NULL, args);
}

int
cli_parse_flag_args(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv,
                    gboolean *json, const char *flag_name, gboolean *flag, GPtrArray *args)
{
    gboolean options_done = FALSE;
    int status;

    *json = FALSE;
    if (flag)
        *flag = FALSE;
    for (int i = 1; i < argc;) {
        if (!options_done) {
            switch (cli_common_option(cmd, opts, argc, argv, &i, &status)) {
            case CLI_OPT_EXIT:
                return status;
            case CLI_OPT_TAKEN:
                continue;
            case CLI_OPT_NONE:
                break;
            }
            if (g_str_equal(argv[i], "--json")) {
                *json = TRUE;
                cli_json_errors();
                i++;
                continue;
            }
            if (flag_name && g_str_equal(argv[i], flag_name)) {
                *flag = TRUE;
                i++;
                continue;
            }
            if (g_str_equal(argv[i], "--")) {
                options_done = TRUE;
                i++;
                continue;
            }
            if (argv[i][0] == '-' && argv[i][1] != '\0')
                return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        }
        g_ptr_array_add(args, argv[i++]);
    }
    return -1;
}

/* ---- daemon ------------------------------------------------------------- */

VmlClient *
cli_connect_admin(const VmlCliOptions *opts, GError **error)
{
    /* Admin methods answer on both sockets: an explicit lease socket beats a
     * default admin socket that may belong to another daemon. */
    if (opts->admin_socket)
        return vml_client_connect(opts->admin_socket, error);
    if (opts->lease_socket)
        return vml_client_connect(opts->lease_socket, error);
    return vml_client_connect_admin(error);
}

VmlClient *
cli_connect_lease(const VmlCliOptions *opts, GError **error)
{
    if (opts->lease_socket)
        return vml_client_connect(opts->lease_socket, error);
    return vml_client_connect_lease(error);
}

int
cli_exit_code(const GError *error)
{
    if (error->domain != VML_ERROR)
        return VML_EXIT_FAILED;
    switch ((VmlErrorCode)error->code) {
    case VML_ERROR_CONFLICT:
    case VML_ERROR_IMAGE_BUSY:
        return VML_EXIT_CONFLICT;
    case VML_ERROR_NO_SUCH_IMAGE:
    case VML_ERROR_NO_SUCH_FD:
        return VML_EXIT_NOT_FOUND;
    case VML_ERROR_PROTOCOL:
    case VML_ERROR_INVALID_MESSAGE:
    case VML_ERROR_METHOD_NOT_FOUND:
    case VML_ERROR_INTERFACE_NOT_FOUND:
        /* We sent what we believe is valid: the daemon speaks another
         * protocol version, or the connection broke. */
        return VML_EXIT_DAEMON;
    default:
        return VML_EXIT_FAILED;
    }
}

int
cli_call_failed(const GError *error)
{
    int code = cli_exit_code(error);
    say_error(code, error->domain == VML_ERROR ? vml_error_name(error->code) : NULL,
              error->message);
    return code;
}

VmlClient *
cli_admin_client(const VmlCliOptions *opts, int *status)
{
    g_autoptr(GError) error = NULL;
    VmlClient *client = cli_connect_admin(opts, &error);
    if (!client)
        *status = cli_error(VML_EXIT_DAEMON, "%s", error->message);
    return client;
}

int
cli_run_admin_query(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv,
                    JsonObject *(*fetch)(VmlClient *client, GError **error),
                    void (*print_text)(JsonObject *reply))
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
    g_autoptr(JsonObject) reply = fetch(client, &error);
    if (!reply)
        return cli_call_failed(error);
    if (json)
        cli_print_json(reply);
    else
        print_text(reply);
    return VML_EXIT_OK;
}

/* ---- paths -------------------------------------------------------------- */

char *
cli_image_key(const char *path, GError **error)
{
    /* The names vmleased would use: its config's shared_storage. */
    g_autofree char *conf_path = vml_default_config_file();
    g_autoptr(VmlConf) conf = g_file_test(conf_path, G_FILE_TEST_EXISTS)
        ? vml_conf_new_from_file(conf_path, NULL) : NULL;
    VmlStorageName *names = NULL;
    guint n = 0;
    /* A list vmleased would refuse to start with names nothing. */
    if (conf && !vml_storage_names_from_conf(conf, &names, &n, NULL))
        n = 0;
    char *key = vml_image_identity_of_path(path, names, n, error);
    vml_storage_names_free(names, n);
    return key;
}

char *
cli_resolve_image(const char *arg, struct stat *st, int *status)
{
    char *real = realpath(arg, NULL);
    if (!real) {
        *status = cli_error(VML_EXIT_NOT_FOUND, "%s: %s", arg, g_strerror(errno));
        return NULL;
    }
    g_autofree char *path = g_strdup(real);
    free(real);
    if (stat(path, st) < 0) {
        *status = cli_error(VML_EXIT_NOT_FOUND, "%s: %s", arg, g_strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
        *status = cli_error(VML_EXIT_NOT_FOUND, "%s: not a regular file or block device",
                            arg);
        return NULL;
    }
    return g_steal_pointer(&path);
}

/* ---- main --------------------------------------------------------------- */

static const VmlCliCommand *
find_command(const char *name)
{
    for (guint i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (g_str_equal(commands[i]->name, name))
            return commands[i];
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    VmlCliOptions opts = { 0 };
    int status;
    int i = 1;

    setlocale(LC_ALL, "");
    while (i < argc && argv[i][0] == '-') {
        if (g_str_equal(argv[i], "--version")) {
            printf("vmlease %s\n", VMLEASE_VERSION);
            return VML_EXIT_OK;
        }
        switch (cli_common_option(NULL, &opts, argc, argv, &i, &status)) {
        case CLI_OPT_EXIT:
            return status;
        case CLI_OPT_TAKEN:
            continue;
        case CLI_OPT_NONE:
            return cli_usage_error(NULL, "unknown option '%s'", argv[i]);
        }
    }
    if (i >= argc)
        return cli_usage_error(NULL, "no subcommand given");

    const char *name = argv[i];
    if (g_str_equal(name, "help")) {
        if (i + 2 < argc)
            return cli_usage_error(NULL, "help takes at most one SUBCOMMAND");
        const VmlCliCommand *cmd = NULL;
        if (i + 1 < argc && !(cmd = find_command(argv[i + 1])))
            return cli_usage_error(NULL, "unknown subcommand '%s'", argv[i + 1]);
        cli_print_help(cmd);
        return VML_EXIT_OK;
    }
    const VmlCliCommand *cmd = find_command(name);
    if (!cmd)
        return cli_usage_error(NULL, "unknown subcommand '%s'", name);
    status = cmd->run(cmd, &opts, argc - i, argv + i);
    /* A full disk or closed pipe must not pass for success. */
    if (fflush(stdout) != 0 && status == VML_EXIT_OK)
        return cli_error(VML_EXIT_FAILED, "cannot write output: %s", g_strerror(errno));
    return status;
}
