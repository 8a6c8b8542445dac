#include "vml-image-verdict.h"
#include "vml-proc.h"

const char *
vml_verdict_name(VmlVerdict v)
{
    switch (v) {
    case VML_VERDICT_FREE: return "free";
    case VML_VERDICT_IN_USE: return "in-use";
    case VML_VERDICT_UNKNOWN: return "unknown";
    case VML_VERDICT_STALE: return "stale";
    case VML_VERDICT_CORRUPT: return "corrupt";
    }
    return "unknown";
}

/* Why the mark left by OWNER no longer stands for a live use, or NULL
 * when its process still runs. *FOREIGN is set when it cannot be told. */
static char *
owner_gone_reason(const VmlImageOwner *o, gboolean *foreign)
{
    *foreign = FALSE;
    if (g_strcmp0(o->machine_id, vml_host_machine_id()) != 0) {
        *foreign = TRUE;
        return NULL;
    }
    if (g_strcmp0(o->boot_id, vml_host_boot_id()) != 0)
        return g_strdup_printf("host %s rebooted since it was set (boot-id differs)", o->hostname);
    if (!vml_proc_is_same((pid_t)o->pid, o->start_time))
        return g_strdup_printf("pid %u is gone", o->pid);
    return NULL;
}

VmlVerdict
vml_image_verdict(gboolean in_use_bit, const VmlImageOwner *owner,
                  const char *lease_holders, const VmlQemuLocks *qemu, char **text)
{
    if (lease_holders && *lease_holders) {
        *text = g_strdup_printf("in use by %s", lease_holders);
        return VML_VERDICT_IN_USE;
    }
    if (qemu && vml_qemu_locks_busy(qemu)) {
        g_autofree char *who = vml_qemu_locks_describe(qemu);
        *text = g_strdup_printf("in use by %s, which holds no lease", who);
        return VML_VERDICT_IN_USE;
    }
    if (!in_use_bit && !owner) {
        *text = g_strdup("free");
        return VML_VERDICT_FREE;
    }
    if (!owner) {
        *text = g_strdup("stale: the in-use bit is set without an owner record, "
                         "and no lease is held");
        return VML_VERDICT_STALE;
    }
    g_autofree char *who = vml_image_owner_describe(owner);
    gboolean foreign;
    g_autofree char *gone = owner_gone_reason(owner, &foreign);
    if (foreign) {
        *text = g_strdup_printf("marked in use by %s, another host: its processes "
                                "cannot be checked from here", who);
        return VML_VERDICT_UNKNOWN;
    }
    if (gone)
        *text = g_strdup_printf("stale: %s (was %s)", gone, who);
    else
        *text = g_strdup_printf("stale: no lease held (marked by %s, which still runs)", who);
    return VML_VERDICT_STALE;
}
