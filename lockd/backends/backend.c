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

gboolean
vml_backend_check_config(const VmlDaemonConfig *cfg, GError **error)
{
    const VmlBackendOps *ops = find(cfg->backend);
    return !ops || !ops->check_config || ops->check_config(cfg, error);
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
