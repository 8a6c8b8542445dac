/* vmleased: holds leases on VM disk images on behalf of the VM processes. */
#include "call-params.h"
#include "daemon-log.h"
#include "daemon.h"
#include "instance-lock.h"
#include "systemd-service.h"
#include "reexec.h"
#include "vml-paths.h"
#include "dispatch.h"
#include "server.h"
#include "vml-config.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Start-up failed: say why where the operator will look (stderr, or syslog
 * once daemonized), naming the config file for configuration errors, and
 * return the exit status. Not g_critical(): that may abort on purpose. */
static int
startup_failed(const char *config_path, const GError *error)
{
    g_autofree char *where = NULL;
    if (error->domain == VML_ERROR && error->code == VML_ERROR_CONFIG &&
        !g_str_has_prefix(error->message, "/"))
        where = g_strdup_printf("%s: ", config_path ? config_path : "(default configuration)");
    g_autofree char *text = g_strconcat(where ? where : "", error->message, NULL);
    GLogField message = { "MESSAGE", text, -1 };
    g_log_structured_array(G_LOG_LEVEL_CRITICAL, &message, 1);
    return 1;
}

static void
on_table_changed(G_GNUC_UNUSED gpointer table, gpointer data)
{
    VmlDaemon *d = data;
    if (d->state)
        vml_state_file_schedule(d->state);
}

static gboolean
on_quit_signal(gpointer data)
{
    VmlDaemon *d = data;
    g_message("shutting down; leases stay with their holders");
    vml_systemd_notify("STOPPING=1");
    g_main_loop_quit(d->loop);
    return G_SOURCE_CONTINUE;
}

static void
on_backend_lost(G_GNUC_UNUSED VmlBackend *be, gpointer data)
{
    VmlDaemon *d = data;
    vml_lease_table_fence(d->table);
}

/* The last holder process of a domain has gone: so has its stash. */
static void
on_owner_gone(const char *uuid, gpointer data)
{
    VmlDaemon *d = data;
    vml_stash_owner_gone(d->stash, uuid);
}

static gboolean
on_reexec_signal(gpointer data)
{
    VmlDaemon *d = data;
    vml_systemd_notify("RELOADING=1");
    d->reexec_requested = TRUE;
    g_main_loop_quit(d->loop);
    return G_SOURCE_CONTINUE;
}

/* Every client, lock and stashed fd costs an fd: take all we may have. */
static void
raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            g_warning("cannot raise the open-file limit: %s", g_strerror(errno));
    }
}

/* Fork into the background; the parent exits once the child is serving. */
static int
daemonize(void)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        char c;
        close(pipefd[1]);
        _exit(read(pipefd[0], &c, 1) == 1 ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    close(pipefd[0]);
    setsid();
    vml_log_daemonized();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    return pipefd[1];
}

/* SIGUSR1 and SIGHUP ask for a re-exec and must never find us without a
 * handler (their default ends the process): blocked by the vmleased
 * launcher from its first instruction on and so while our loader runs
 * (launcher.c), blocked here again for a daemon started without it, and
 * across the exec of a re-exec, they wait until the handler is in place. */
__attribute__((constructor)) static void
block_reexec_signal(void)
{
    sigset_t usr1;
    vml_reexec_signals(&usr1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
}

/* A reload asked for: re-exec with the configuration file as it is now,
 * once it is known to load; else say why and go on as we are. */
static void
reload(VmlDaemon *d)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlReloadConfig) rc = vml_reexec_check_config(d, &error);
    if (!rc) {
        g_warning("reload refused: %s; vmleased carries on with the configuration it has",
                  error->message);
        vml_systemd_notify("READY=1");
        return;
    }
    vml_reexec(d, rc);
    vml_systemd_notify("READY=1");   /* the re-exec failed: serving on as we are */
}

int
main(int argc, char **argv)
{
    gboolean foreground = FALSE, version = FALSE;
    g_autofree char *config_path = NULL;
    int reexec_fd = -1;
    sigset_t usr1;
    vml_reexec_signals(&usr1);
    GOptionEntry entries[] = {
        { "foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground, "Stay in the foreground, log to stderr", NULL },
        { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path, NULL, "FILE" },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
        { "reexec-state", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT, &reexec_fd, NULL, NULL },
        { NULL }
    };
    /* The default this build really reads (its sysconfdir, or VMLEASE_ROOT's). */
    g_autofree char *default_config = vml_default_config_file();
    g_autofree char *config_help = g_strdup_printf("Configuration file (default: %s)",
                                                   default_config);
    for (GOptionEntry *e = entries; e->long_name; e++) {
        if (g_str_equal(e->long_name, "config"))
            e->description = config_help;
    }
    g_autoptr(GOptionContext) ctx = g_option_context_new("- lease manager for VM disk images");
    g_autoptr(GError) error = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        fprintf(stderr, "vmleased: %s\n", error->message);
        return 1;
    }
    if (version) {
        printf("vmleased %s\n", VMLEASE_VERSION);
        return 0;
    }
    vml_log_init();
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    VmlDaemon d = { 0 };
    d.config_path = config_path;
    /* A re-exec'd image runs with the configuration its parent checked. */
    g_autoptr(JsonObject) state = NULL;
    g_autoptr(VmlReloadConfig) handed = NULL;
    if (reexec_fd >= 0) {
        state = vml_reexec_read_state(reexec_fd, &error);
        if (!state || !vml_reexec_state_config(state, &handed, &error)) {
            g_prefix_error(&error, "re-exec: ");
            return startup_failed(config_path, error);
        }
    }
    if (handed) {
        d.config_text = g_steal_pointer(&handed->text);
        d.config_len = handed->len;
        d.config_origin = g_steal_pointer(&handed->origin);
    } else if (!vml_daemon_config_read(config_path, &d.config_text, &d.config_len,
                                       &d.config_origin, &error)) {
        fprintf(stderr, "vmleased: %s\n", error->message);
        return 1;
    }
    d.cfg = vml_daemon_config_load_text(d.config_text, d.config_len, d.config_origin, &error);
    if (!d.cfg) {
        fprintf(stderr, "vmleased: %s\n", error->message);
        return 1;
    }
    vml_log_set_level(d.cfg->log_level);   /* checked by the config's loader */
    VmlLogTarget handed_target;
    if (state && vml_log_target_from_name(json_object_get_string_member_with_default(
                                              state, "log_target", NULL), &handed_target))
        vml_log_set_target(handed_target);
    d.exe = g_file_read_link("/proc/self/exe", NULL);
    if (!d.exe || g_str_has_suffix(d.exe, " (deleted)"))
        d.exe = g_strdup(argv[0]);
    d.started = g_get_real_time() / G_USEC_PER_SEC;

    /* Before anything is bound or opened: a second daemon says whose
     * sockets these are and leaves them alone. A re-exec'd image has the
     * lock already, handed over. */
    d.instance_lock = state ? json_object_get_int_member_with_default(state, "instance_lock_fd", -1)
                            : -1;
    if (d.instance_lock >= 0) {
        fcntl(d.instance_lock, F_SETFD, FD_CLOEXEC);
    } else if ((d.instance_lock = vml_instance_lock_take(d.cfg->run_dir, &error)) < 0) {
        fprintf(stderr, "vmleased: %s\n", error->message);
        return 1;
    }

    int ready_fd = -1;
    if (!foreground && reexec_fd < 0) {
        ready_fd = daemonize();
        if (ready_fd < 0) {
            fprintf(stderr, "vmleased: cannot daemonize: %s\n", g_strerror(errno));
            return 1;
        }
    }
    if (reexec_fd < 0)
        vml_instance_lock_write_pid(d.instance_lock);

    d.backend = vml_backend_open(d.cfg, &error);
    if (!d.backend)
        return startup_failed(config_path, error);
    d.table = vml_lease_table_new(d.backend, d.cfg);
    d.stash = vml_stash_new(d.cfg->max_stash_per_owner, d.cfg->max_stash_total);
    d.requests = vml_request_cache_new();
    d.state = vml_state_file_new(d.cfg->state_dir, d.table, &error);
    if (!d.state)
        return startup_failed(config_path, error);
    /* Canonical once, here (the backend and the state file made them): checked per request. */
    d.own_dirs = vml_call_own_dirs(d.cfg, d.backend);

    int lease_fd = -1, admin_fd = -1;
    if (reexec_fd >= 0) {
        lease_fd = json_object_get_int_member_with_default(state, "lease_socket_fd", -1);
        admin_fd = json_object_get_int_member_with_default(state, "admin_socket_fd", -1);
        d.started = json_object_get_int_member_with_default(state, "started", d.started);
        d.reexecs = json_object_get_int_member_with_default(state, "reexecs", 0);
        /* Ours again: not to be passed on to anything we might spawn. */
        if (lease_fd >= 0)
            fcntl(lease_fd, F_SETFD, FD_CLOEXEC);
        if (admin_fd >= 0)
            fcntl(admin_fd, F_SETFD, FD_CLOEXEC);
    } else if (!vml_systemd_listen_fds(d.cfg->lease_socket, d.cfg->admin_socket, &lease_fd,
                                       &admin_fd, &error)) {
        return startup_failed(config_path, error);
    } else {
        state = vml_state_file_load(d.state);
    }
    vml_lease_table_set_changed_func(d.table, on_table_changed, &d);
    vml_lease_table_set_owner_gone_func(d.table, on_owner_gone, &d);
    d.backend->lost = on_backend_lost;
    d.backend->lost_data = &d;
    vml_lease_table_restore(d.table, state, reexec_fd >= 0);
    if (reexec_fd >= 0)
        vml_stash_restore(d.stash, state);

    d.server = vml_server_new(&d, vml_dispatch, lease_fd, admin_fd, &error);
    if (!d.server)
        return startup_failed(config_path, error);
    if (reexec_fd >= 0)
        vml_server_adopt(d.server, state);
    d.loop = g_main_loop_new(NULL, FALSE);
    g_unix_signal_add(SIGTERM, on_quit_signal, &d);
    g_unix_signal_add(SIGINT, on_quit_signal, &d);
    g_unix_signal_add(SIGUSR1, on_reexec_signal, &d);
    g_unix_signal_add(SIGHUP, on_reexec_signal, &d);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);

    g_message("serving on %s and %s (backend %s, lockspace %s)",
              d.cfg->lease_socket, d.cfg->admin_socket, d.backend->ops->name,
              d.backend->lockspace);
    if (ready_fd >= 0) {
        if (write(ready_fd, "1", 1) != 1) {
            /* The parent is gone; nothing to tell. */
        }
        close(ready_fd);
    }
    /* Serving (again, after a re-exec: the same main pid says so). */
    vml_systemd_notify("READY=1");

    for (;;) {
        g_main_loop_run(d.loop);
        if (!vml_state_file_flush(d.state, &error)) {
            g_warning("cannot save state: %s", error->message);
            g_clear_error(&error);
        }
        if (!d.reexec_requested)
            break;
        d.reexec_requested = FALSE;
        reload(&d);
    }

    vml_server_free(d.server);
    vml_state_file_free(d.state);
    vml_lease_table_free(d.table);
    vml_stash_free(d.stash, TRUE);
    vml_request_cache_free(d.requests);
    d.backend->ops->close(d.backend);
    g_main_loop_unref(d.loop);
    g_free(d.exe);
    g_strfreev(d.own_dirs);
    vml_daemon_config_free(d.cfg);
    g_free(d.config_text);
    g_free(d.config_origin);
    close(d.instance_lock);
    return 0;
}
