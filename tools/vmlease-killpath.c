/* vmlease-killpath UUID ACTION: run by sanlock (set by the vmlease plugin
 * with sanlock_killpath) when this host can no longer renew its leases, to
 * apply the domain's <on_lockfailure> before sanlock resorts to SIGKILL:
 *   poweroff, restart  destroy the domain (a restart would need the lease)
 *   pause              suspend it and give up its leases, so sanlock lets
 *                      the paused QEMU live
 *   ignore             leave it (sanlock will kill it when its grace ends)
 * It talks to libvirt through virsh, as root, on qemu:///system. */
#include "vml-config.h"

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <sanlock.h>
#include <sanlock_resource.h>
#include <stdlib.h>
#include <errno.h>
#include <syslog.h>

static gboolean
virsh(char **out, const char *verb, const char *uuid)
{
    const char *argv[] = { "virsh", "-q", "-c", "qemu:///system", verb, uuid, NULL };
    g_autoptr(GError) error = NULL;
    int status = 0;
    g_autofree char *err = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, &err,
                      &status, &error) ||
        !g_spawn_check_wait_status(status, &error)) {
        syslog(LOG_ERR, "virsh %s %s failed: %s %s", verb, uuid,
               error ? error->message : "", err ? err : "");
        return FALSE;
    }
    return TRUE;
}

/* Release every lease of the domain's QEMU, found by its pid file. */
static gboolean
release_leases(const char *uuid)
{
    g_autofree char *name = NULL;
    if (!virsh(&name, "domname", uuid))
        return FALSE;
    g_strstrip(name);
    g_autofree char *pidfile = g_strdup_printf("/run/libvirt/qemu/%s.pid", name);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(pidfile, &text, NULL, NULL))
        return FALSE;
    int pid = atoi(text);
    int rv = pid > 0 ? sanlock_release(-1, pid, SANLK_REL_ALL, 0, NULL) : -ESRCH;
    if (rv < 0)
        syslog(LOG_ERR, "cannot release the leases of domain %s (pid %d): %d", uuid, pid, rv);
    return rv == 0;
}

int
main(int argc, char **argv)
{
    openlog("vmlease-killpath", LOG_PID, LOG_DAEMON);
    if (argc != 3 || !g_uuid_string_is_valid(argv[1])) {
        fprintf(stderr, "usage: vmlease-killpath UUID poweroff|restart|pause|ignore\n");
        return 2;
    }
    const char *uuid = argv[1], *action = argv[2];
    syslog(LOG_CRIT, "leases of domain %s lost: on_lockfailure %s", uuid, action);
    if (g_str_equal(action, "ignore"))
        return 0;
    if (g_str_equal(action, "pause"))
        return virsh(NULL, "suspend", uuid) && release_leases(uuid) ? 0 : 1;
    if (g_str_equal(action, "poweroff") || g_str_equal(action, "restart"))
        return virsh(NULL, "destroy", uuid) ? 0 : 1;
    fprintf(stderr, "vmlease-killpath: unknown action '%s'\n", action);
    return 2;
}
