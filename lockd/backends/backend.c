#include "backend.h"
#include "vml-error.h"

static const VmlBackendOps *const backends[] = {
    &vml_fcntl_backend_ops,
    &vml_sanlock_backend_ops,
};

VmlBackend *
vml_backend_open(const VmlDaemonConfig *cfg, GError **error)
{
    for (guint i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (g_strcmp0(backends[i]->name, cfg->backend) == 0)
            return backends[i]->open(cfg, error);
    }
    g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                "unknown backend '%s' (this build has: fcntl, sanlock)", cfg->backend);
    return NULL;
}
