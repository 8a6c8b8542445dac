#include "daemon-config.h"
#include "daemon-log.h"
#include "backends/backend.h"
#include "vml-conf.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-wire.h"

#include <grp.h>
#include <string.h>

static const char *const known_keys[] = {
    "lockspace_dir", "state_dir", "socket_dir", "backend",
    "lease_group", "admin_group", "max_clients", "max_clients_per_uid",
    "reserved_clients", "max_pending_request_bytes", "max_holders",
    "max_leases_per_holder", "max_resources_per_call", "max_stash_per_owner",
    "max_stash_total", "log_level", "shared_storage",
    NULL,
};

static gboolean
get_limit(VmlConf *conf, const char *key, guint *out, guint max, GError **error)
{
    return vml_conf_update_uint(conf, key, out, 1, max, NULL, error);
}

/* The connection limits: reserved_clients defaults to an eighth of
 * max_clients, at most 64, and must leave the admin socket's non-root
 * clients some room (max_clients - 2 * reserved_clients of it). */
static gboolean
get_client_limits(VmlConf *conf, VmlDaemonConfig *cfg, GError **error)
{
    gboolean reserved_set;
    if (!get_limit(conf, "max_clients", &cfg->max_clients, 65536, error) ||
        !get_limit(conf, "max_clients_per_uid", &cfg->max_clients_per_uid, 65536, error) ||
        !vml_conf_update_uint(conf, "reserved_clients", &cfg->reserved_clients, 0, 32767,
                      &reserved_set, error) ||
        !vml_conf_update_uint(conf, "max_pending_request_bytes", &cfg->max_pending_request_bytes,
                      2 * VML_MSG_MAX, 1u << 30, NULL, error))
        return FALSE;
    if (!reserved_set)
        cfg->reserved_clients = MIN(64, cfg->max_clients / 8);
    if (2 * cfg->reserved_clients >= cfg->max_clients) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "reserved_clients = %u leaves no room under max_clients = %u: non-root "
                    "clients of the admin socket may use max_clients - 2 * reserved_clients",
                    cfg->reserved_clients, cfg->max_clients);
        vml_conf_prefix_key_error(conf, reserved_set ? "reserved_clients" : "max_clients", error);
        return FALSE;
    }
    return TRUE;
}

static gboolean
get_group(VmlConf *conf, const char *key, gid_t *gid, GError **error)
{
    g_autofree char *name = NULL;

    if (!vml_conf_update_string(conf, key, &name, error))
        return FALSE;
    if (!name)
        return TRUE;
    struct group *gr = getgrnam(name);
    if (!gr) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "%s: no such group '%s'", key, name);
        vml_conf_prefix_key_error(conf, key, error);
        return FALSE;
    }
    *gid = gr->gr_gid;
    return TRUE;
}

static gboolean
check_log_level(VmlConf *conf, const char *level, GError **error)
{
    if (vml_log_level_known(level))
        return TRUE;
    g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                "log_level must be one of " VML_LOG_LEVEL_NAMES "; not '%s'", level);
    vml_conf_prefix_key_error(conf, "log_level", error);
    return FALSE;
}

gboolean
vml_daemon_config_read(const char *path, char **text, gsize *len, char **origin,
                       GError **error)
{
    g_autofree char *default_path = NULL;
    *text = NULL;
    *len = 0;
    *origin = NULL;
    if (!path) {
        default_path = vml_default_config_file();
        if (!g_file_test(default_path, G_FILE_TEST_EXISTS))
            return TRUE;
        path = default_path;
    }
    if (!vml_conf_read_file(path, text, len, error))
        return FALSE;
    *origin = g_strdup(path);
    return TRUE;
}

VmlDaemonConfig *
vml_daemon_config_load(const char *path, GError **error)
{
    g_autofree char *text = NULL, *origin = NULL;
    gsize len;
    if (!vml_daemon_config_read(path, &text, &len, &origin, error))
        return NULL;
    return vml_daemon_config_load_text(text, len, origin, error);
}

VmlDaemonConfig *
vml_daemon_config_load_text(const char *text, gsize len, const char *path, GError **error)
{
    g_autoptr(VmlDaemonConfig) cfg = g_new0(VmlDaemonConfig, 1);
    g_autoptr(VmlConf) conf = NULL;

    cfg->run_dir = vml_default_dir(VML_DIR_RUN);
    cfg->lockspace_dir = vml_default_dir(VML_DIR_LOCKSPACE);
    cfg->state_dir = vml_default_dir(VML_DIR_STATE);
    cfg->backend = g_strdup("fcntl");
    cfg->lease_gid = (gid_t)-1;
    cfg->admin_gid = (gid_t)-1;
    cfg->max_clients = 1024;
    cfg->max_clients_per_uid = 64;
    cfg->reserved_clients = 64;
    cfg->max_pending_request_bytes = 16 * 1024 * 1024;
    cfg->max_holders = 65536;
    cfg->max_leases_per_holder = 16384;
    cfg->max_resources_per_call = 1024;
    cfg->max_stash_per_owner = 1024;
    cfg->max_stash_total = 16384;
    cfg->log_level = g_strdup("info");

    if (text) {
        conf = vml_conf_new_from_data(text, len, path, error);
        if (!conf)
            return NULL;
        /* Each backend's own keys too, whichever is chosen. */
        g_autoptr(GStrvBuilder) keys = g_strv_builder_new();
        g_strv_builder_addv(keys, (const char **)known_keys);
        vml_backend_add_config_keys(keys);
        g_auto(GStrv) known = g_strv_builder_end(keys);
        if (!vml_conf_check_keys(conf, (const char *const *)known, error))
            return NULL;
        if (!vml_conf_update_abs_path(conf, "lockspace_dir", &cfg->lockspace_dir, error) ||
            !vml_conf_update_abs_path(conf, "state_dir", &cfg->state_dir, error) ||
            !vml_conf_update_abs_path(conf, "socket_dir", &cfg->run_dir, error) ||
            !get_group(conf, "lease_group", &cfg->lease_gid, error) ||
            !get_group(conf, "admin_group", &cfg->admin_gid, error) ||
            !get_client_limits(conf, cfg, error) ||
            !get_limit(conf, "max_holders", &cfg->max_holders, 1 << 20, error) ||
            !get_limit(conf, "max_leases_per_holder", &cfg->max_leases_per_holder, 1 << 20, error) ||
            !get_limit(conf, "max_resources_per_call", &cfg->max_resources_per_call, 1 << 16, error) ||
            !get_limit(conf, "max_stash_per_owner", &cfg->max_stash_per_owner, 1 << 20, error) ||
            !get_limit(conf, "max_stash_total", &cfg->max_stash_total, 1 << 20, error) ||
            !vml_conf_update_string(conf, "backend", &cfg->backend, error) ||
            !vml_conf_update_string(conf, "log_level", &cfg->log_level, error) ||
            !check_log_level(conf, cfg->log_level, error) ||
            !vml_backend_load_config(cfg->backend, conf, &cfg->backend_settings, error) ||
            /* shared_storage: one name per shared filesystem, the same on
             * every host whatever its mount point there. */
            !vml_storage_names_from_conf(conf, &cfg->storage_names, &cfg->n_storage_names,
                                         error)) {
            /* Parse errors name the file already; our own checks do not. */
            if (!g_str_has_prefix((*error)->message, path))
                g_prefix_error(error, "%s: ", path);
            return NULL;
        }
        /* What the chosen backend misses: said at the line choosing it. */
        if (!vml_backend_check_config(cfg, error)) {
            vml_conf_prefix_key_error(conf, "backend", error);
            return NULL;
        }
    }
    if (!text && !vml_backend_load_config(cfg->backend, NULL, &cfg->backend_settings, error))
        return NULL;
    cfg->lease_socket = g_build_filename(cfg->run_dir, "vmleased.sock", NULL);
    cfg->admin_socket = g_build_filename(cfg->run_dir, "vmleased-admin.sock", NULL);
    return g_steal_pointer(&cfg);
}

void
vml_daemon_config_free(VmlDaemonConfig *cfg)
{
    if (!cfg)
        return;
    g_free(cfg->run_dir);
    g_free(cfg->lease_socket);
    g_free(cfg->admin_socket);
    g_free(cfg->lockspace_dir);
    g_free(cfg->state_dir);
    /* The settings first: the backend's name says whose they are. */
    vml_backend_free_config(cfg->backend, cfg->backend_settings);
    g_free(cfg->backend);
    g_free(cfg->log_level);
    vml_storage_names_free(cfg->storage_names, cfg->n_storage_names);
    g_free(cfg);
}
