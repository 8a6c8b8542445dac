/* vmleased.conf: where the daemon keeps things and who may talk to it. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "vml-image-identity.h"

typedef struct {
    char *run_dir;
    char *lease_socket;
    char *admin_socket;
    char *lockspace_dir;
    char *state_dir;
    char *backend;            /* "fcntl" */
    gid_t lease_gid;          /* (gid_t)-1: root only */
    gid_t admin_gid;          /* (gid_t)-1: root only */
    guint max_clients;        /* connections of all clients together */
    guint max_clients_per_uid;  /* of one non-root uid, on each socket */
    guint reserved_clients;   /* non-root stop this short of max_clients, and
                                 on the admin socket twice this short */
    guint max_pending_request_bytes;  /* unfinished requests of non-root
                                         clients, all together */
    guint max_holders;
    guint max_leases_per_holder;
    guint max_resources_per_call;
    guint max_stash_per_owner;  /* fds in the stash, per owner and in all */
    guint max_stash_total;
    char *log_level;          /* "error", "warning", "info", "debug" */
    /* What the chosen backend read of its own keys (backend.h, load_config);
     * NULL without a config file. */
    gpointer backend_settings;
    VmlStorageName *storage_names;  /* shared_storage: NAME=/mount/point */
    guint n_storage_names;
} VmlDaemonConfig;

/* Load PATH (NULL: the default file, which may be missing). Unknown keys,
 * wrong types and unknown groups are errors. */
VmlDaemonConfig *vml_daemon_config_load(const char *path, GError **error);
/* The two halves of it: the text of PATH (NULL: the default file) with
 * the name it is known by in *ORIGIN, both NULL when there is no file
 * (the defaults); then that text (NULL: the defaults) loaded. */
gboolean vml_daemon_config_read(const char *path, char **text, gsize *len, char **origin,
                                GError **error);
VmlDaemonConfig *vml_daemon_config_load_text(const char *text, gsize len, const char *origin,
                                             GError **error);
void vml_daemon_config_free(VmlDaemonConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlDaemonConfig, vml_daemon_config_free)
