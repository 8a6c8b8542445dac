#include "plugin-config.h"
#include "vml-conf.h"
#include "vml-config.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <string.h>

static const char *const known_keys[] = {
    "require_lease_for_disks", "protect_backing_chain", "readonly_disks",
    "lockspace_dir", "backend", "socket_dir", "killpath", "libvirt_state_dir", NULL,
};

/* ERROR is about KEY: say where KEY is set (CONF, from PATH; NULL when
 * there is no file, and the value a default). NULL, for returning. */
static VmlPluginConfig *
config_error(VmlConf *conf, const char *path, const char *key, GError **error)
{
    if (conf)
        vml_conf_prefix_key_error(conf, key, error);
    else
        g_prefix_error(error, "%s: ", path ? path : "qemu-vmlease.conf defaults");
    return NULL;
}

VmlPluginConfig *
vml_plugin_config_load(const char *path, GError **error)
{
    g_autoptr(VmlPluginConfig) cfg = g_new0(VmlPluginConfig, 1);
    g_autoptr(VmlConf) conf = NULL;
    g_autofree char *readonly = g_strdup("shared");

    cfg->require_lease_for_disks = TRUE;
    cfg->protect_backing_chain = TRUE;
    cfg->backend = g_strdup("fcntl");
    cfg->socket_dir = vml_default_dir(VML_DIR_RUN);
    cfg->killpath = g_strdup(VMLEASE_LIBEXECDIR "/vmlease-killpath");
    cfg->libvirt_state_dir = g_strdup("/run/libvirt/qemu");

    if (path && g_file_test(path, G_FILE_TEST_EXISTS)) {
        conf = vml_conf_new_from_file(path, error);
        if (!conf || !vml_conf_check_keys(conf, known_keys, error) ||
            !vml_conf_update_bool(conf, "require_lease_for_disks", &cfg->require_lease_for_disks, error) ||
            !vml_conf_update_bool(conf, "protect_backing_chain", &cfg->protect_backing_chain, error) ||
            !vml_conf_update_string(conf, "readonly_disks", &readonly, error) ||
            !vml_conf_update_string(conf, "lockspace_dir", &cfg->lockspace_dir, error) ||
            !vml_conf_update_string(conf, "backend", &cfg->backend, error) ||
            !vml_conf_update_string(conf, "socket_dir", &cfg->socket_dir, error) ||
            !vml_conf_update_string(conf, "killpath", &cfg->killpath, error) ||
            !vml_conf_update_string(conf, "libvirt_state_dir", &cfg->libvirt_state_dir, error))
            return NULL;
    }
    if (g_strcmp0(readonly, "shared") != 0 && g_strcmp0(readonly, "ignore") != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "readonly_disks must be \"shared\" or \"ignore\", not \"%s\"", readonly);
        return config_error(conf, path, "readonly_disks", error);
    }
    cfg->readonly_shared = g_str_equal(readonly, "shared");
    if (!g_path_is_absolute(cfg->libvirt_state_dir)) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "libvirt_state_dir must be an absolute path");
        return config_error(conf, path, "libvirt_state_dir", error);
    }
    if (g_strcmp0(cfg->backend, "fcntl") != 0 && g_strcmp0(cfg->backend, "sanlock") != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "backend must be \"fcntl\" or \"sanlock\", not \"%s\"", cfg->backend);
        return config_error(conf, path, "backend", error);
    }
    cfg->on_sanlock = g_str_equal(cfg->backend, "sanlock");
    /* sanlock copies it into a fixed 128-byte field. */
    if (!g_path_is_absolute(cfg->killpath) || strlen(cfg->killpath) >= 128) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "killpath must be an absolute path under 128 bytes");
        return config_error(conf, path, "killpath", error);
    }
    if (!g_path_is_absolute(cfg->socket_dir) ||
        (cfg->lockspace_dir && !g_path_is_absolute(cfg->lockspace_dir))) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "socket_dir and lockspace_dir must be absolute paths");
        return config_error(conf, path,
                            g_path_is_absolute(cfg->socket_dir) ? "lockspace_dir" : "socket_dir",
                            error);
    }
    return g_steal_pointer(&cfg);
}

void
vml_plugin_config_free(VmlPluginConfig *cfg)
{
    if (!cfg)
        return;
    g_free(cfg->lockspace_dir);
    g_free(cfg->backend);
    g_free(cfg->killpath);
    g_free(cfg->libvirt_state_dir);
    g_free(cfg->socket_dir);
    g_free(cfg);
}
