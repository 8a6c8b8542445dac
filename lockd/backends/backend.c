#include "backend.h"
#include "vml-error.h"

static const VmlBackendOps *const backends[] = {
    &vml_fcntl_backend_ops,
    &vml_sanlock_backend_ops,
};

static const VmlBackendOps *
find(const char *name)
{
    for (guint i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (g_strcmp0(backends[i]->name, name) == 0)
            return backends[i];
    }
    return NULL;
}

void
vml_backend_add_config_keys(GStrvBuilder *keys)
{
    for (guint i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (backends[i]->config_keys)
            g_strv_builder_addv(keys, (const char **)backends[i]->config_keys);
    }
}

gboolean
vml_backend_load_config(const char *chosen, VmlConf *conf, gpointer *settings, GError **error)
{
    *settings = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(backends); i++) {
        const VmlBackendOps *ops = backends[i];
        if (!ops->load_config)
            continue;
        gpointer s = ops->load_config(conf, error);
        if (!s) {
            vml_backend_free_config(chosen, g_steal_pointer(settings));
            return FALSE;
        }
        if (g_strcmp0(ops->name, chosen) == 0)
            *settings = s;
        else
            ops->free_config(s);
    }
    return TRUE;
}

void
vml_backend_free_config(const char *chosen, gpointer settings)
{
    const VmlBackendOps *ops = find(chosen);
    if (settings && ops && ops->free_config)
        ops->free_config(settings);
}

gboolean
vml_backend_check_config(const VmlDaemonConfig *cfg, GError **error)
{
    const VmlBackendOps *ops = find(cfg->backend);
    return !ops || !ops->check_config || ops->check_config(cfg->backend_settings, error);
}

VmlBackend *
vml_backend_open(const VmlDaemonConfig *cfg, GError **error)
{
    const VmlBackendOps *ops = find(cfg->backend);
    if (ops)
        return ops->open(cfg, error);
    g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                "unknown backend '%s' (this build has: fcntl, sanlock)", cfg->backend);
    return NULL;
}
