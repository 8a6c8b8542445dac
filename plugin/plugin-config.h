/* qemu-vmlease.conf: the plugin's settings (libvirt conf syntax), from the
 * path libvirt hands to drvInit. */
#pragma once

#include <glib.h>

typedef struct {
    gboolean require_lease_for_disks; /* lock every disk (else: <lease> only) */
    gboolean protect_backing_chain;   /* shared leases on backing images */
    gboolean readonly_shared;         /* readonly_disks = "shared" (else "ignore") */
    char *lockspace_dir;              /* must match vmleased's, if given */
    char *backend;                    /* "fcntl" or "sanlock" */
    gboolean on_sanlock;              /* VM processes register with sanlock */
    char *killpath;                   /* sanlock runs it to apply on_lockfailure */
    char *socket_dir;                 /* where vmleased listens */
    char *libvirt_state_dir;          /* libvirt's domain status files, to
                                         tell a migration from a pause */
} VmlPluginConfig;

/* A missing file means the defaults. */
VmlPluginConfig *vml_plugin_config_load(const char *path, GError **error);
void vml_plugin_config_free(VmlPluginConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlPluginConfig, vml_plugin_config_free)
