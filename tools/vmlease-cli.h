/* Shared declarations of the vmlease administrator CLI: exit codes, the
 * subcommand table, and helpers every subcommand uses (vmlease.c). */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/stat.h>

#include "vml-client.h"

/* Exit status of vmlease (documented in --help). run passes COMMAND's own
 * status through instead of VML_EXIT_OK. */
typedef enum {
    VML_EXIT_OK = 0,
    VML_EXIT_USAGE = 1,       /* bad command line */
    VML_EXIT_DAEMON = 2,      /* vmleased not reachable, or protocol error */
    VML_EXIT_CONFLICT = 3,    /* lease conflict: the image is in use */
    VML_EXIT_FAILED = 4,      /* any other error vmleased reported */
    VML_EXIT_NOT_FOUND = 5,   /* path not found or not an image */
    VML_EXIT_CORRUPT = 6,     /* inspect: the image's header or chain is corrupt */
} VmlExitCode;

/* Options valid before and after the subcommand name. */
typedef struct {
    const char *lease_socket;  /* --socket, NULL for the default */
    const char *admin_socket;  /* --admin-socket, NULL for the default */
} VmlCliOptions;

typedef struct _VmlCliCommand VmlCliCommand;
struct _VmlCliCommand {
    const char *name;
    const char *synopsis;     /* arguments after "vmlease NAME" */
    const char *summary;      /* one line for the command list */
    const char *description;  /* paragraph(s) and options for NAME --help */
    /* ARGV[0] is the command name; returns the exit status. */
    int (*run)(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv);
};

extern const VmlCliCommand vml_cmd_status;
extern const VmlCliCommand vml_cmd_metrics;
extern const VmlCliCommand vml_cmd_log_level;
extern const VmlCliCommand vml_cmd_owners;
extern const VmlCliCommand vml_cmd_inspect;
extern const VmlCliCommand vml_cmd_force_unlock;
extern const VmlCliCommand vml_cmd_stash;
extern const VmlCliCommand vml_cmd_hosts;
extern const VmlCliCommand vml_cmd_run;
extern const VmlCliCommand vml_cmd_chain;

/* Print "vmlease: MESSAGE" to stderr and return CODE; once
 * cli_json_errors() was called, also {"error": {"message": MESSAGE,
 * "exit_status": CODE}} on stdout (with "name", the daemon's error name,
 * for a failed call). */
int cli_error(int code, const char *format, ...) G_GNUC_PRINTF(2, 3);
/* "vmlease: warning: MESSAGE" on stderr only: the command goes on. */
void cli_warning(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* The command was asked for --json: errors are JSON on stdout too. */
void cli_json_errors(void);
/* A usage error: the message plus a hint at --help; returns VML_EXIT_USAGE. */
int cli_usage_error(const VmlCliCommand *cmd, const char *format, ...) G_GNUC_PRINTF(2, 3);
/* Print CMD's help (or the general help if CMD is NULL) to stdout. */
void cli_print_help(const VmlCliCommand *cmd);

typedef enum {
    CLI_OPT_NONE,   /* not a common option: the caller looks at it */
    CLI_OPT_TAKEN,  /* consumed (with its value); *i points past it */
    CLI_OPT_EXIT,   /* --help printed or a usage error: return *status */
} VmlCliOptResult;

/* Handle --socket, --admin-socket (as "--opt VALUE" or "--opt=VALUE") and
 * --help/-h at ARGV[*I]. */
VmlCliOptResult cli_common_option(const VmlCliCommand *cmd, VmlCliOptions *opts,
                                  int argc, char **argv, int *i, int *status);

/* The command line of a subcommand that takes --json, the common options
 * and operands (after "--" everything is an operand): sets *json, appends
 * the operands to ARGS. Returns -1 to go on, or the status to exit with. */
int cli_parse_json_args(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc,
                        char **argv, gboolean *json, GPtrArray *args);
/* The same with one more boolean option FLAG_NAME (such as "--force"). */
int cli_parse_flag_args(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc,
                        char **argv, gboolean *json, const char *flag_name,
                        gboolean *flag, GPtrArray *args);

/* Connect to the admin socket (--admin-socket, else --socket, else the
 * default) or the lease socket (--socket, else the default). */
VmlClient *cli_connect_admin(const VmlCliOptions *opts, GError **error);
/* The same, or NULL after the error was printed, with *STATUS the exit
 * code to return. */
VmlClient *cli_admin_client(const VmlCliOptions *opts, int *status);
/* A command that takes nothing but --json: one question to the admin
 * socket (FETCH), its reply printed as JSON or by PRINT_TEXT. */
int cli_run_admin_query(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv,
                        JsonObject *(*fetch)(VmlClient *client, GError **error),
                        void (*print_text)(JsonObject *reply));
VmlClient *cli_connect_lease(const VmlCliOptions *opts, GError **error);

/* Where cli_run_command() puts PASS_FD in the command (VMLEASE_FD says so). */
#define CLI_PASSED_FD 3

/* Fork and exec COMMAND (with PASS_FD as its fd 3 unless -1); wait for it,
 * forwarding SIGINT, SIGTERM and SIGHUP; it gets SIGTERM if we die. Returns
 * its exit status, 128+N if signal N killed it. */
int cli_run_command(char **command, int pass_fd);
/* The same with every path of READ_ONLY (NULL-terminated, canonical) made
 * read-only for COMMAND: it runs in a mount namespace of its own (without
 * root, inside a user namespace that maps only our own uid and gid) where
 * each is bind-mounted read-only over itself; COMMAND does not run if that
 * cannot be done. */
int cli_run_command_read_only(char **command, int pass_fd, const char *const *read_only);

/* The exit code for an error from vml_client_call(). */
int cli_exit_code(const GError *error);
/* Report a failed vml_client_call() and return its exit code. */
int cli_call_failed(const GError *error);

/* Resolve the image path ARG (as typed) to its canonical absolute path and
 * stat it. A missing path, or one that is not a regular file or block
 * device, is reported (naming ARG) and *status set to VML_EXIT_NOT_FOUND. */
char *cli_resolve_image(const char *arg, struct stat *st, int *status);
/* The resource key vmleased gives the image at PATH, worked out here (with
 * the shared_storage names of vmleased's default config file). */
char *cli_image_key(const char *path, GError **error);
