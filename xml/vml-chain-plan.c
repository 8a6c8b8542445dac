/* Planning a backing-chain change: see vml-chain-plan.h. */
#include "vml-chain-plan.h"
#include "vml-backing-chain.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *
vml_chain_op_name(VmlChainOp op)
{
    switch (op) {
    case VML_CHAIN_COMMIT: return "commit";
    case VML_CHAIN_PULL: return "pull";
    case VML_CHAIN_REBASE: return "rebase";
    case VML_CHAIN_SNAPSHOT: return "snapshot";
    }
    return "?";
}

const char *
vml_lease_mode_name(VmlLeaseMode mode)
{
    switch (mode) {
    case VML_LEASE_NONE: return "none";
    case VML_LEASE_SHARED: return "shared";
    case VML_LEASE_EXCLUSIVE: return "exclusive";
    }
    return "?";
}

static void
chain_lease_free(gpointer data)
{
    VmlChainLease *l = data;
    g_free(l->path);
    g_free(l);
}

void
vml_chain_plan_free(VmlChainPlan *plan)
{
    if (!plan)
        return;
    g_clear_pointer(&plan->old_chain, g_ptr_array_unref);
    g_clear_pointer(&plan->new_chain, g_ptr_array_unref);
    g_clear_pointer(&plan->leases, g_ptr_array_unref);
    g_free(plan->new_backing);
    g_free(plan->new_backing_name);
    g_free(plan->new_backing_format);
    g_free(plan->file);
    g_free(plan);
}

static gboolean
same_image(const char *a, const char *b)
{
    if (g_strcmp0(a, b) == 0)
        return TRUE;
    g_autofree char *ca = vml_canonical_path(a);
    g_autofree char *cb = vml_canonical_path(b);
    return strcmp(ca, cb) == 0;
}

/* Index of PATH in CHAIN, or -1. */
static int
chain_find(GPtrArray *chain, const char *path)
{
    for (guint i = 0; i < chain->len; i++)
        if (same_image(((VmlLayer *)chain->pdata[i])->path, path))
            return (int)i;
    return -1;
}

static VmlLayer *
layer_copy(const VmlLayer *l)
{
    return vml_layer_new(l->type, l->path, l->format, l->from_xml);
}

/* Copies of CHAIN[FROM..TO) appended to OUT. */
static void
append_layers(GPtrArray *out, GPtrArray *chain, guint from, guint to)
{
    for (guint i = from; i < to && i < chain->len; i++)
        g_ptr_array_add(out, layer_copy(chain->pdata[i]));
}

static GPtrArray *
new_layer_array(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
}

gboolean
vml_chain_equal(GPtrArray *a, GPtrArray *b)
{
    if (a->len != b->len)
        return FALSE;
    for (guint i = 0; i < a->len; i++)
        if (!same_image(((VmlLayer *)a->pdata[i])->path, ((VmlLayer *)b->pdata[i])->path))
            return FALSE;
    return TRUE;
}

char *
vml_chain_describe(GPtrArray *chain)
{
    g_autoptr(GString) s = g_string_new(NULL);
    for (guint i = 0; i < chain->len; i++)
        g_string_append_printf(s, "%s%s", i ? " -> " : "", ((VmlLayer *)chain->pdata[i])->path);
    if (!chain->len)
        g_string_append(s, "(no image)");
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* How messages name the disk changed: "disk vda", or "image PATH" for a
 * lone image, whose model's disk target is a stand-in. */
static char *
disk_words(const VmlChainPlan *plan)
{
    if (plan->lone_image)
        return g_strdup_printf("image %s", ((VmlLayer *)plan->old_chain->pdata[0])->path);
    return g_strdup_printf("disk %s", plan->disk->target);
}

/* " on disk vda" after an image named in a message; nothing for a lone
 * image (that image is the whole subject). */
static char *
on_disk(const VmlChainPlan *plan)
{
    return plan->lone_image ? g_strdup("") : g_strdup_printf(" on disk %s", plan->disk->target);
}

/* The layer of the plan's old chain named by ARG (a path), or an error
 * listing the chain. */
static gboolean
find_layer(const VmlChainPlan *plan, const char *arg, const char *role, guint *index,
           GError **error)
{
    int i = chain_find(plan->old_chain, arg);
    if (i < 0) {
        g_autofree char *desc = vml_chain_describe(plan->old_chain);
        g_autofree char *disk = disk_words(plan);
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s %s is not in the chain of %s: %s", role, arg, disk, desc);
        return FALSE;
    }
    *index = (guint)i;
    return TRUE;
}

static gboolean
check_readable(const char *path, const char *role, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE, "%s %s cannot be read: %s",
                    role, path, g_strerror(errno));
        return FALSE;
    }
    close(fd);
    return TRUE;
}

/* The format of every layer whose XML leaves it out, as qemu-img would
 * detect it: a plan must never hand qemu-img "-F raw" for a qcow2 image
 * (the guest would see its metadata as data). */
static gboolean
fill_formats(GPtrArray *chain, GError **error)
{
    for (guint i = 0; i < chain->len; i++) {
        VmlLayer *l = chain->pdata[i];
        if (l->format || (l->type == VML_DISK_FILE && !g_file_test(l->path, G_FILE_TEST_EXISTS)))
            continue;   /* a snapshot overlay does not exist yet: it is qcow2 */
        g_autoptr(GPtrArray) probed = vml_backing_chain_layers(l->path, NULL, error);
        if (!probed)
            return FALSE;
        l->format = g_strdup(((VmlBackingLayer *)probed->pdata[0])->format);
    }
    return TRUE;
}

/* ---- leases ------------------------------------------------------------- */

static VmlChainLease *
lease_entry(VmlChainPlan *plan, const char *path)
{
    g_autofree char *canon = vml_canonical_path(path);
    for (guint i = 0; i < plan->leases->len; i++) {
        VmlChainLease *l = plan->leases->pdata[i];
        if (strcmp(l->path, canon) == 0)
            return l;
    }
    VmlChainLease *l = g_new0(VmlChainLease, 1);
    l->path = g_steal_pointer(&canon);
    g_ptr_array_add(plan->leases, l);
    return l;
}

/* Raise PATH's lease to at least DURING and AFTER. */
static void
need(VmlChainPlan *plan, const char *path, VmlLeaseMode during, VmlLeaseMode after)
{
    VmlChainLease *l = lease_entry(plan, path);
    l->during = MAX(l->during, during);
    l->after = MAX(l->after, after);
}

const VmlChainLease *
vml_chain_plan_lease(const VmlChainPlan *plan, const char *path)
{
    g_autofree char *canon = vml_canonical_path(path);
    for (guint i = 0; i < plan->leases->len; i++) {
        const VmlChainLease *l = plan->leases->pdata[i];
        if (strcmp(l->path, canon) == 0)
            return l;
    }
    return NULL;
}

/* What a running VM holds for DISK with CHAIN: its active image exclusive
 * when written, every other layer shared. */
static VmlLeaseMode
vm_mode(const VmlDisk *disk, guint index)
{
    if (index == 0 && !disk->readonly && !disk->shareable)
        return VML_LEASE_EXCLUSIVE;
    return VML_LEASE_SHARED;
}

static void
plan_leases_live(VmlChainPlan *plan, VmlDomain *dom)
{
    /* Before and during: what the VM holds now, kept while libvirt works. */
    for (guint i = 0; i < plan->old_chain->len; i++)
        need(plan, ((VmlLayer *)plan->old_chain->pdata[i])->path, vm_mode(plan->disk, i),
             VML_LEASE_NONE);
    for (guint i = 0; i < plan->new_chain->len; i++)
        need(plan, ((VmlLayer *)plan->new_chain->pdata[i])->path, VML_LEASE_NONE,
             vm_mode(plan->disk, i));
    if (plan->op == VML_CHAIN_COMMIT)   /* QEMU writes into the base */
        need(plan, ((VmlLayer *)plan->old_chain->pdata[plan->base])->path,
             VML_LEASE_EXCLUSIVE, VML_LEASE_NONE);
    if (plan->op == VML_CHAIN_SNAPSHOT)
        need(plan, plan->file, vm_mode(plan->disk, 0), VML_LEASE_NONE);
    /* A layer leaving this disk's chain may still back another disk. */
    for (guint d = 0; d < dom->disks->len; d++) {
        VmlDisk *other = dom->disks->pdata[d];
        if (other == plan->disk)
            continue;
        for (guint i = 0; i < other->chain->len; i++) {
            const char *path = ((VmlLayer *)other->chain->pdata[i])->path;
            if (vml_chain_plan_lease(plan, path))
                need(plan, path, VML_LEASE_NONE, vm_mode(other, i));
        }
    }
}

/* qemu-img reads every layer and writes only what the change rewrites. */
static void
plan_leases_offline(VmlChainPlan *plan)
{
    for (guint i = 0; i < plan->old_chain->len; i++)
        need(plan, ((VmlLayer *)plan->old_chain->pdata[i])->path, VML_LEASE_SHARED,
             VML_LEASE_NONE);
    for (guint i = 0; i < plan->new_chain->len; i++)
        need(plan, ((VmlLayer *)plan->new_chain->pdata[i])->path, VML_LEASE_SHARED,
             VML_LEASE_NONE);
    const char *written = NULL, *rewritten = NULL;
    switch (plan->op) {
    case VML_CHAIN_COMMIT:
        written = ((VmlLayer *)plan->old_chain->pdata[plan->base])->path;
        if (!plan->active)   /* the overlay of top gets base as its backing */
            rewritten = ((VmlLayer *)plan->old_chain->pdata[plan->top - 1])->path;
        break;
    case VML_CHAIN_PULL:
        written = ((VmlLayer *)plan->old_chain->pdata[0])->path;
        break;
    case VML_CHAIN_REBASE:
        written = ((VmlLayer *)plan->old_chain->pdata[plan->top])->path;
        break;
    case VML_CHAIN_SNAPSHOT:
        written = plan->file;
        break;
    }
    need(plan, written, VML_LEASE_EXCLUSIVE, VML_LEASE_NONE);
    if (rewritten)
        need(plan, rewritten, VML_LEASE_EXCLUSIVE, VML_LEASE_NONE);
}

/* ---- checks ------------------------------------------------------------- */

/* Images frozen by block jobs: those in FROZEN, and every layer of a disk
 * with a <mirror>. Refuses the plan if it touches one. */
static gboolean
check_frozen(const VmlChainPlan *plan, VmlDomain *dom, GHashTable *frozen, GError **error)
{
    for (guint i = 0; i < plan->leases->len; i++) {
        const VmlChainLease *l = plan->leases->pdata[i];
        const char *why = frozen ? g_hash_table_lookup(frozen, l->path) : NULL;
        g_autofree char *mirror_why = NULL;
        for (guint d = 0; !why && d < dom->disks->len; d++) {
            VmlDisk *disk = dom->disks->pdata[d];
            if (disk->has_mirror && chain_find(disk->chain, l->path) >= 0)
                why = mirror_why = g_strdup_printf("a block job (<mirror>) on disk %s", disk->target);
        }
        if (why) {
            g_autofree char *disk = disk_words(plan);
            g_set_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY,
                        "cannot %s %s: %s is frozen by %s; wait for the job to "
                        "finish or abort it (virsh blockjob --abort)",
                        vml_chain_op_name(plan->op), disk, l->path, why);
            return FALSE;
        }
    }
    return TRUE;
}

/* An image the change writes must not be read by another disk of the
 * domain: its leases are the same VM's and cannot tell. */
static gboolean
check_other_disks(const VmlChainPlan *plan, VmlDomain *dom, GError **error)
{
    for (guint i = 0; i < plan->leases->len; i++) {
        const VmlChainLease *l = plan->leases->pdata[i];
        gboolean written = l->during == VML_LEASE_EXCLUSIVE &&
                           !(plan->live && vm_mode(plan->disk, 0) == VML_LEASE_EXCLUSIVE &&
                             same_image(l->path, ((VmlLayer *)plan->old_chain->pdata[0])->path));
        for (guint d = 0; written && d < dom->disks->len; d++) {
            VmlDisk *other = dom->disks->pdata[d];
            if (other != plan->disk && chain_find(other->chain, l->path) >= 0) {
                g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                            "cannot %s disk %s: it writes %s, which disk %s of %s reads too",
                            vml_chain_op_name(plan->op), plan->disk->target, l->path,
                            other->target, dom->name);
                return FALSE;
            }
        }
    }
    return TRUE;
}

/* The backing chain below PATH: from the domain model if PATH is a layer
 * of one of its disks, else from the image headers. */
static GPtrArray *
chain_below(VmlDomain *dom, const char *path, char **format, GError **error)
{
    for (guint d = 0; d < dom->disks->len; d++) {
        VmlDisk *disk = dom->disks->pdata[d];
        int i = chain_find(disk->chain, path);
        if (i >= 0) {
            GPtrArray *below = new_layer_array();
            append_layers(below, disk->chain, i + 1, disk->chain->len);
            *format = g_strdup(((VmlLayer *)disk->chain->pdata[i])->format);
            return below;
        }
    }
    g_autoptr(VmlDomain) lone = vml_domain_for_image(path, error);
    if (!lone)
        return NULL;
    VmlDisk *disk = lone->disks->pdata[0];
    GPtrArray *below = new_layer_array();
    append_layers(below, disk->chain, 1, disk->chain->len);
    *format = disk->chain->len ? g_strdup(((VmlLayer *)disk->chain->pdata[0])->format) : NULL;
    return below;
}

/* Rebasing IMAGE (old_chain[top]) onto BACKING makes a cycle when IMAGE,
 * or a layer above it, is reachable from BACKING. */
static gboolean
check_cycle(const VmlChainPlan *plan, const char *backing, GPtrArray *below, GError **error)
{
    const char *image = ((VmlLayer *)plan->old_chain->pdata[plan->top])->path;
    for (guint k = 0; k <= plan->top; k++) {
        const char *above = ((VmlLayer *)plan->old_chain->pdata[k])->path;
        guint length = 0;
        if (same_image(backing, above))
            length = 1;
        for (guint i = 0; !length && i < below->len; i++)
            if (same_image(((VmlLayer *)below->pdata[i])->path, above))
                length = i + 2;
        if (!length)
            continue;
        length += plan->top - k;   /* from the reached layer down to image */
        g_autoptr(GString) path = g_string_new(image);
        g_string_append_printf(path, " -> %s", backing);
        for (guint i = 0; i < below->len && !same_image(backing, above); i++) {
            const char *p = ((VmlLayer *)below->pdata[i])->path;
            g_string_append_printf(path, " -> %s", p);
            if (same_image(p, above))
                break;
        }
        for (guint j = k + 1; j <= plan->top; j++)
            g_string_append_printf(path, " -> %s", ((VmlLayer *)plan->old_chain->pdata[j])->path);
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "cannot rebase %s onto %s: it would make a cycle of %u image%s: %s",
                    image, backing, length, length == 1 ? "" : "s", path->str);
        return FALSE;
    }
    return TRUE;
}

/* ---- the operations ------------------------------------------------------ */

static gboolean
plan_commit(VmlChainPlan *plan, const VmlChainRequest *req, GError **error)
{
    GPtrArray *old = plan->old_chain;
    plan->top = 0;
    if (req->top && !find_layer(plan, req->top, "top", &plan->top, error))
        return FALSE;
    plan->base = plan->top + 1;
    if (req->base && !find_layer(plan, req->base, "base", &plan->base, error))
        return FALSE;
    g_autofree char *on = on_disk(plan);
    if (plan->base >= old->len) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "cannot commit %s%s: it has no backing image to commit into",
                    ((VmlLayer *)old->pdata[plan->top])->path, on);
        return FALSE;
    }
    if (plan->base <= plan->top) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "cannot commit%s: base %s is not below top %s", on,
                    ((VmlLayer *)old->pdata[plan->base])->path,
                    ((VmlLayer *)old->pdata[plan->top])->path);
        return FALSE;
    }
    plan->active = plan->top == 0;
    if (plan->active && (plan->disk->readonly || plan->disk->shareable)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "cannot commit the active image of disk %s: the disk is %s",
                    plan->disk->target, plan->disk->readonly ? "read-only" : "shareable");
        return FALSE;
    }
    if (!check_readable(((VmlLayer *)old->pdata[plan->base])->path, "base", error))
        return FALSE;
    append_layers(plan->new_chain, old, 0, plan->top);
    append_layers(plan->new_chain, old, plan->base, old->len);
    return TRUE;
}

static gboolean
plan_pull(VmlChainPlan *plan, const VmlChainRequest *req, GError **error)
{
    GPtrArray *old = plan->old_chain;
    plan->top = 0;
    plan->base = old->len;
    if (req->base && !find_layer(plan, req->base, "base", &plan->base, error))
        return FALSE;
    if (plan->base <= 1) {
        g_autofree char *on = on_disk(plan);
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "nothing to pull into %s%s: %s", ((VmlLayer *)old->pdata[0])->path, on,
                    old->len <= 1 ? "it has no backing image" : "the base is its backing already");
        return FALSE;
    }
    if (plan->base < old->len &&
        !check_readable(((VmlLayer *)old->pdata[plan->base])->path, "base", error))
        return FALSE;
    append_layers(plan->new_chain, old, 0, 1);
    append_layers(plan->new_chain, old, plan->base, old->len);
    return TRUE;
}

static gboolean
plan_rebase(VmlChainPlan *plan, VmlDomain *dom, const VmlChainRequest *req, GError **error)
{
    GPtrArray *old = plan->old_chain;
    plan->top = 0;
    if (req->top && !find_layer(plan, req->top, "image", &plan->top, error))
        return FALSE;
    if (!req->backing) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "rebase needs the new backing image (\"\" for none)");
        return FALSE;
    }
    if (plan->live && plan->top != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "a running domain can only rebase its active image, not %s",
                    ((VmlLayer *)old->pdata[plan->top])->path);
        return FALSE;
    }
    append_layers(plan->new_chain, old, 0, plan->top + 1);
    if (!*req->backing) {
        plan->base = old->len;   /* live: a full pull */
        return TRUE;   /* the layer becomes standalone */
    }
    /* A relative name is the image's, as qemu-img rebase -b takes it: from
     * the directory of the image rebased, and written into its header as
     * given. */
    g_autofree char *joined = NULL;
    const char *backing = req->backing;
    if (!g_path_is_absolute(backing)) {
        g_autofree char *dir = g_path_get_dirname(((VmlLayer *)old->pdata[plan->top])->path);
        backing = joined = g_build_filename(dir, req->backing, NULL);
    }
    if (!check_readable(backing, "new backing", error))
        return FALSE;
    g_autoptr(GError) local = NULL;
    g_autofree char *format = NULL;
    g_autoptr(GPtrArray) below = chain_below(dom, backing, &format, &local);
    if (below && !format) {
        g_autoptr(GPtrArray) probed = vml_backing_chain_layers(backing, NULL, &local);
        if (probed)
            format = g_strdup(((VmlBackingLayer *)probed->pdata[0])->format);
        else
            g_clear_pointer(&below, g_ptr_array_unref);
    }
    if (!below) {
        g_set_error(error, VML_ERROR, local->code, "cannot rebase onto %s: %s",
                    backing, local->message);
        return FALSE;
    }
    if (!check_cycle(plan, backing, below, error))
        return FALSE;
    plan->new_backing = vml_canonical_path(backing);
    plan->new_backing_name = g_strdup(req->backing);
    plan->new_backing_format = g_steal_pointer(&format);
    g_ptr_array_add(plan->new_chain, vml_layer_new(VML_DISK_FILE, plan->new_backing,
                                                   plan->new_backing_format, FALSE));
    append_layers(plan->new_chain, below, 0, below->len);
    if (plan->live) {
        /* libvirt rebases the active image onto a layer of its chain. */
        int at = chain_find(old, backing);
        if (at <= 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "a running domain can only rebase its active image onto a layer "
                        "of its own chain (%s is outside the chain); copy the disk "
                        "(virsh blockcopy) instead", backing);
            return FALSE;
        }
        plan->base = (guint)at;
    }
    return TRUE;
}

static gboolean
plan_snapshot(VmlChainPlan *plan, const VmlChainRequest *req, GError **error)
{
    if (!req->file || !g_path_is_absolute(req->file)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "snapshot needs the new overlay as an absolute path");
        return FALSE;
    }
    struct stat st;
    if (lstat(req->file, &st) == 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "the new overlay %s exists already", req->file);
        return FALSE;
    }
    g_autofree char *dir = g_path_get_dirname(req->file);
    if (access(dir, W_OK) != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "cannot create %s: %s: %s", req->file, dir, g_strerror(errno));
        return FALSE;
    }
    if (plan->disk->readonly || plan->disk->shareable) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "cannot snapshot disk %s: it is %s", plan->disk->target,
                    plan->disk->readonly ? "read-only" : "shareable");
        return FALSE;
    }
    if (!check_readable(((VmlLayer *)plan->old_chain->pdata[0])->path, "image", error))
        return FALSE;
    /* The overlay's directory is canonical; the file comes later. */
    g_autofree char *real_dir = vml_canonical_path(dir);
    g_autofree char *name = g_path_get_basename(req->file);
    plan->file = g_build_filename(real_dir, name, NULL);
    g_ptr_array_add(plan->new_chain, vml_layer_new(VML_DISK_FILE, plan->file, "qcow2", FALSE));
    append_layers(plan->new_chain, plan->old_chain, 0, plan->old_chain->len);
    return TRUE;
}

VmlChainPlan *
vml_chain_plan_new(VmlDomain *dom, const VmlChainRequest *req, GHashTable *frozen,
                   GError **error)
{
    VmlDisk *disk = NULL;
    if (req->disk) {
        disk = vml_domain_find_disk(dom, req->disk, error);
        if (!disk)
            return NULL;
    } else {
        g_autoptr(GString) targets = g_string_new(NULL);
        guint n = 0;
        for (guint i = 0; i < dom->disks->len; i++) {
            VmlDisk *d = dom->disks->pdata[i];
            if (!d->chain->len)
                continue;
            g_string_append_printf(targets, "%s%s", n++ ? ", " : "", d->target);
            disk = d;
        }
        if (n > 1) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "domain %s has several disks: name one with --disk (%s)", dom->name,
                        targets->str);
            return NULL;
        }
        if (!disk) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "domain %s has no disk with an image", dom->name);
            return NULL;
        }
    }
    if (!disk->chain->len || (disk->type != VML_DISK_FILE && disk->type != VML_DISK_BLOCK)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "disk %s has no local image to %s", disk->target, vml_chain_op_name(req->op));
        return NULL;
    }

    g_autoptr(VmlChainPlan) plan = g_new0(VmlChainPlan, 1);
    plan->op = req->op;
    plan->live = req->live;
    plan->lone_image = dom->lone_image;
    plan->disk = disk;
    plan->old_chain = new_layer_array();
    append_layers(plan->old_chain, disk->chain, 0, disk->chain->len);
    plan->new_chain = new_layer_array();
    plan->leases = g_ptr_array_new_with_free_func(chain_lease_free);

    gboolean ok = FALSE;
    switch (req->op) {
    case VML_CHAIN_COMMIT: ok = plan_commit(plan, req, error); break;
    case VML_CHAIN_PULL: ok = plan_pull(plan, req, error); break;
    case VML_CHAIN_REBASE: ok = plan_rebase(plan, dom, req, error); break;
    case VML_CHAIN_SNAPSHOT: ok = plan_snapshot(plan, req, error); break;
    }
    if (!ok || !fill_formats(plan->old_chain, error) || !fill_formats(plan->new_chain, error))
        return NULL;
    if (plan->live)
        plan_leases_live(plan, dom);
    else
        plan_leases_offline(plan);
    if (!check_frozen(plan, dom, frozen, error) || !check_other_disks(plan, dom, error))
        return NULL;
    return g_steal_pointer(&plan);
}
