/* Chain changes on a running domain, through libvirt's API. */
#include "chain-apply.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <libvirt/virterror.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A block job gets this long before we give up on it (and abort it). */
#define JOB_TIMEOUT_S 600
#define JOB_POLL_US 50000

/* libvirt would print every error to stderr; we report them ourselves. */
static void
quiet_errors(void *data, virErrorPtr err)
{
    (void)data;
    (void)err;
}

static void
set_lv_error(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void
set_lv_error(GError **error, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *what = g_strdup_vprintf(format, ap);
    va_end(ap);
    const char *why = virGetLastErrorMessage();
    g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: %s", what, why ? why : "libvirt failed");
}

virDomainPtr
chain_lv_lookup(const char *uri, const char *name, gboolean *not_found, GError **error)
{
    *not_found = FALSE;
    virSetErrorFunc(NULL, quiet_errors);
    virConnectPtr conn = virConnectOpen(uri);
    if (!conn) {
        set_lv_error(error, "cannot connect to libvirt%s%s", uri ? " at " : "", uri ? uri : "");
        return NULL;
    }
    virDomainPtr dom = virDomainLookupByName(conn, name);
    if (!dom)
        dom = virDomainLookupByUUIDString(conn, name);
    if (!dom) {
        *not_found = TRUE;
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s is neither an image, a domain XML file nor a domain on %s", name,
                    virConnectGetURI(conn) ? virConnectGetURI(conn) : "libvirt");
        virConnectClose(conn);
        return NULL;
    }
    /* The domain keeps a reference on its connection. */
    virConnectClose(conn);
    return dom;
}

void
chain_lv_close(virDomainPtr dom)
{
    if (dom)
        virDomainFree(dom);
}

char *
chain_lv_xml(virDomainPtr dom, gboolean inactive, GError **error)
{
    char *xml = virDomainGetXMLDesc(dom, inactive ? VIR_DOMAIN_XML_INACTIVE : 0);
    if (!xml) {
        set_lv_error(error, "cannot read the XML of domain %s", virDomainGetName(dom));
        return NULL;
    }
    char *copy = g_strdup(xml);
    free(xml);
    return copy;
}

static const char *
job_name(int type)
{
    switch (type) {
    case VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: return "pull";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: return "copy";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: return "commit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: return "active commit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP: return "backup";
    }
    return "block";
}

GHashTable *
chain_lv_frozen(virDomainPtr dom, VmlDomain *model, GError **error)
{
    GHashTable *frozen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (guint d = 0; d < model->disks->len; d++) {
        VmlDisk *disk = model->disks->pdata[d];
        if (!disk->chain->len)
            continue;
        virDomainBlockJobInfo info;
        int r = virDomainGetBlockJobInfo(dom, disk->target, &info, 0);
        if (r < 0) {
            set_lv_error(error, "cannot ask libvirt about block jobs on disk %s of %s",
                         disk->target, virDomainGetName(dom));
            g_hash_table_unref(frozen);
            return NULL;
        }
        if (r == 0)
            continue;
        for (guint i = 0; i < disk->chain->len; i++)
            g_hash_table_insert(frozen, vml_canonical_path(((VmlLayer *)disk->chain->pdata[i])->path),
                                g_strdup_printf("a running %s job on disk %s of domain %s",
                                                job_name(info.type), disk->target,
                                                virDomainGetName(dom)));
    }
    return frozen;
}

static volatile sig_atomic_t interrupted;

static void
on_interrupt(int sig)
{
    interrupted = sig;
}

/* Poll the job on TARGET until it is gone, telling PROGRESS (may be NULL)
 * how far it is; an active commit is pivoted once it has caught up.
 * SIGINT, SIGTERM or SIGHUP meanwhile cancel the job, so the transaction
 * can be aborted with the chain as it was. */
static gboolean
wait_job(virDomainPtr dom, const char *target, gboolean pivot, ChainProgress *progress,
         GError **error)
{
    gint64 deadline = g_get_monotonic_time() + JOB_TIMEOUT_S * G_USEC_PER_SEC;
    gboolean pivoted = FALSE;
    struct sigaction sa = { .sa_handler = on_interrupt };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    for (;;) {
        virDomainBlockJobInfo info;
        int r = virDomainGetBlockJobInfo(dom, target, &info, 0);
        if (r < 0) {
            set_lv_error(error, "lost track of the block job on disk %s", target);
            return FALSE;
        }
        if (r == 0)
            return TRUE;
        if (progress)
            chain_progress_set(progress, info.cur, info.end);
        if (pivot && !pivoted && info.end > 0 && info.cur == info.end) {
            if (virDomainBlockJobAbort(dom, target, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) == 0)
                pivoted = TRUE;
            /* Not ready after all (the guest wrote meanwhile): try again. */
        }
        if (interrupted && !pivoted) {
            /* Synchronous: the job is gone (or failed to go) on return. */
            virDomainBlockJobAbort(dom, target, 0);
            g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                        "interrupted by signal %d: cancelled the block job on disk %s",
                        (int)interrupted, target);
            return FALSE;
        }
        if (g_get_monotonic_time() > deadline) {
            virDomainBlockJobAbort(dom, target, 0);
            g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                        "the block job on disk %s did not finish within %d s; aborted it",
                        target, JOB_TIMEOUT_S);
            return FALSE;
        }
        g_usleep(JOB_POLL_US);
    }
}

static char *
snapshot_xml(virDomainPtr dom, const VmlChainPlan *plan, GError **error)
{
    g_autofree char *xml = chain_lv_xml(dom, FALSE, error);
    if (!xml)
        return NULL;
    g_autoptr(VmlDomain) model = vml_domain_parse(xml, strlen(xml), virDomainGetName(dom), error);
    if (!model)
        return NULL;
    g_autoptr(GString) s = g_string_new("<domainsnapshot>\n"
                                        "  <description>vmlease chain snapshot</description>\n"
                                        "  <disks>\n");
    for (guint i = 0; i < model->disks->len; i++) {
        VmlDisk *disk = model->disks->pdata[i];
        g_autofree char *target = g_markup_escape_text(disk->target, -1);
        if (strcmp(disk->target, plan->disk->target) != 0) {
            /* Every other disk stays as it is. */
            g_string_append_printf(s, "    <disk name='%s' snapshot='no'/>\n", target);
            continue;
        }
        g_autofree char *file = g_markup_escape_text(plan->file, -1);
        g_string_append_printf(s, "    <disk name='%s' snapshot='external' type='file'>\n"
                                  "      <driver type='qcow2'/>\n"
                                  "      <source file='%s'/>\n"
                                  "    </disk>\n", target, file);
    }
    g_string_append(s, "  </disks>\n</domainsnapshot>\n");
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* The disk's chain as libvirt now sees it must be the planned one. */
static gboolean
check_result(virDomainPtr dom, const VmlChainPlan *plan, GError **error)
{
    g_autofree char *xml = chain_lv_xml(dom, FALSE, error);
    if (!xml)
        return FALSE;
    g_autoptr(VmlDomain) model = vml_domain_parse(xml, strlen(xml), virDomainGetName(dom), error);
    if (!model || !vml_domain_resolve_chains(model, error))
        return FALSE;
    VmlDisk *disk = vml_domain_find_disk(model, plan->disk->target, error);
    if (!disk)
        return FALSE;
    if (!vml_chain_equal(disk->chain, plan->new_chain)) {
        g_autofree char *got = vml_chain_describe(disk->chain);
        g_autofree char *want = vml_chain_describe(plan->new_chain);
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "the %s on disk %s of %s ended with the chain %s, not %s; see "
                    "libvirtd's log", vml_chain_op_name(plan->op), plan->disk->target,
                    virDomainGetName(dom), got, want);
        return FALSE;
    }
    return TRUE;
}

gboolean
chain_lv_job_running(virDomainPtr dom, const char *target)
{
    virDomainBlockJobInfo info;
    /* Unknown counts as running: the caller then keeps the leases. */
    return virDomainGetBlockJobInfo(dom, target, &info, 0) != 0;
}

gboolean
chain_lv_apply(virDomainPtr dom, const VmlChainPlan *plan, unsigned long bandwidth,
               ChainProgress *progress, GError **error)
{
    const char *target = plan->disk->target;
    const char *name = virDomainGetName(dom);
    GPtrArray *old = plan->old_chain;
    const char *base = plan->base < old->len ? ((VmlLayer *)old->pdata[plan->base])->path : NULL;
    int r = 0;

    switch (plan->op) {
    case VML_CHAIN_COMMIT: {
        const char *top = ((VmlLayer *)old->pdata[plan->top])->path;
        r = virDomainBlockCommit(dom, target, base, top, bandwidth,
                                 plan->active ? VIR_DOMAIN_BLOCK_COMMIT_ACTIVE : 0);
        if (r < 0) {
            set_lv_error(error, "libvirt refused to commit %s into %s on disk %s of %s",
                         top, base, target, name);
            return FALSE;
        }
        if (!wait_job(dom, target, plan->active, progress, error))
            return FALSE;
        break;
    }
    case VML_CHAIN_PULL:
    case VML_CHAIN_REBASE:
        /* A live rebase is a pull down to a layer of the chain. */
        r = base ? virDomainBlockRebase(dom, target, base, bandwidth, 0)
                 : virDomainBlockPull(dom, target, bandwidth, 0);
        if (r < 0) {
            set_lv_error(error, "libvirt refused to pull into disk %s of %s%s%s", target, name,
                         base ? " down to " : "", base ? base : "");
            return FALSE;
        }
        if (!wait_job(dom, target, FALSE, progress, error))
            return FALSE;
        break;
    case VML_CHAIN_SNAPSHOT: {
        g_autofree char *xml = snapshot_xml(dom, plan, error);
        if (!xml)
            return FALSE;
        /* The overlay exists already (it had to, to be leased). */
        virDomainSnapshotPtr snap = virDomainSnapshotCreateXML(
            dom, xml, VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT |
                      VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC);
        if (!snap) {
            set_lv_error(error, "libvirt refused the snapshot of disk %s of %s into %s", target,
                         name, plan->file);
            return FALSE;
        }
        virDomainSnapshotFree(snap);
        break;
    }
    }
    return check_result(dom, plan, error);
}

gboolean
chain_lv_define(virDomainPtr dom, const char *xml, GError **error)
{
    virDomainPtr defined = virDomainDefineXML(virDomainGetConnect(dom), xml);
    if (!defined) {
        set_lv_error(error, "cannot store the new definition of %s", virDomainGetName(dom));
        return FALSE;
    }
    virDomainFree(defined);
    return TRUE;
}
