/* vmlease chain: show the backing chains of a domain (or an image) with
 * the lease and holders of every layer, and change a chain (commit, pull,
 * rebase, snapshot) as one transaction: prepare the leases, apply the change
 * through libvirt or qemu-img, then leave exactly the leases the new chain
 * needs; on any failure every lease goes back to what it was. A change ends
 * with a one-line summary (the new domain XML only on request). */
#include "vmlease-cli.h"
#include "vml-protocol.h"
#include "vml-lease-client.h"
#include "chain-apply.h"
#include "chain-progress.h"
#include "output.h"
#include "vml-chain-leases.h"
#include "vml-error.h"
#include "vml-paths.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *uri;       /* -c, --connect */
    const char *disk;
    const char *top;       /* --top, --image */
    const char *base;
    const char *backing;
    const char *file;
    const char *bandwidth; /* MiB/s for libvirt's block jobs */
    gboolean json;
    gboolean xml;          /* --xml: print the new domain XML too */
    int progress;          /* --progress 1, --no-progress 0, -1: when stderr is a terminal */
    const char *subject;   /* DOMAIN, XMLFILE or IMAGE */
} ChainArgs;

typedef enum {
    SUBJECT_DOMAIN,        /* a domain on the libvirt connection */
    SUBJECT_XML_FILE,      /* a domain XML file */
    SUBJECT_IMAGE,         /* an image file: no domain at all */
} SubjectKind;

/* What a chain command works on. */
typedef struct {
    SubjectKind kind;
    /* An image's is a stand-in domain (vml_domain_for_image) for the
     * planner: never shown. */
    VmlDomain *model;
    virDomainPtr dom;      /* a libvirt domain, else NULL */
    gboolean running;      /* ... that runs: changed live */
    const char *what;      /* how the subject is named in messages */
} Subject;

static void
subject_clear(Subject *s)
{
    g_clear_pointer(&s->model, vml_domain_free);
    g_clear_pointer(&s->dom, chain_lv_close);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Subject, subject_clear)

/* An existing file is a domain XML when it starts with '<', else an image;
 * anything else names a domain on the libvirt connection. */
static int
load_subject(const ChainArgs *a, Subject *s)
{
    g_autoptr(GError) error = NULL;
    s->what = a->subject;
    if (g_file_test(a->subject, G_FILE_TEST_EXISTS)) {
        char head[64] = "";
        FILE *f = fopen(a->subject, "r");
        if (!f)
            return cli_error(VML_EXIT_NOT_FOUND, "%s: %s", a->subject, g_strerror(errno));
        size_t n = fread(head, 1, sizeof head - 1, f);
        fclose(f);
        head[n] = '\0';
        const char *p = head;
        while (g_ascii_isspace(*p))
            p++;
        s->kind = *p == '<' ? SUBJECT_XML_FILE : SUBJECT_IMAGE;
        if (s->kind == SUBJECT_XML_FILE)
            s->model = vml_domain_parse_file(a->subject, &error);
        else
            s->model = vml_domain_for_image(a->subject, &error);
    } else {
        s->kind = SUBJECT_DOMAIN;
        gboolean not_found = FALSE;
        s->dom = chain_lv_lookup(a->uri, a->subject, &not_found, &error);
        if (!s->dom)
            return cli_error(not_found ? VML_EXIT_NOT_FOUND : VML_EXIT_FAILED, "%s",
                             error->message);
        int active = virDomainIsActive(s->dom);
        s->running = active == 1;
        g_autofree char *xml = chain_lv_xml(s->dom, !s->running, &error);
        if (xml)
            s->model = vml_domain_parse(xml, strlen(xml), a->subject, &error);
    }
    if (!s->model || !vml_domain_resolve_chains(s->model, &error))
        return cli_error(cli_exit_code(error), "%s", error->message);
    return -1;
}

/* The image an image subject is: the active image of its only disk. */
static const char *
subject_image(const Subject *s)
{
    VmlDisk *disk = s->model->disks->pdata[0];
    return ((VmlLayer *)disk->chain->pdata[0])->path;
}

/* How messages name DISK of the subject: "disk vda of domain dom-a", or
 * "image PATH" for an image. */
static char *
subject_disk_words(const Subject *s, const VmlDisk *disk)
{
    if (s->kind == SUBJECT_IMAGE)
        return g_strdup_printf("image %s", subject_image(s));
    return g_strdup_printf("disk %s of domain %s", disk->target, s->model->name);
}

/* ---- show --------------------------------------------------------------- */

/* Every layer of every disk as vmleased sees it ({resource, path,
 * owners}), by canonical path; NULL (and a warning) when vmleased cannot
 * be asked. */
static GHashTable *
layer_owners(const VmlCliOptions *opts, VmlDomain *model)
{
    JsonArray *paths = json_array_new();
    for (guint d = 0; d < model->disks->len; d++) {
        VmlDisk *disk = model->disks->pdata[d];
        for (guint i = 0; i < disk->chain->len; i++) {
            char *real = realpath(((VmlLayer *)disk->chain->pdata[i])->path, NULL);
            if (real)
                json_array_add_string_element(paths, real);
            free(real);
        }
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) client = cli_connect_admin(opts, &error);
    g_autoptr(JsonArray) resources = client ? vml_admin_owners(client, paths, &error) : NULL;
    if (!client)
        json_array_unref(paths);
    if (!resources) {
        cli_warning("leases not shown: %s", error->message);
        return NULL;
    }
    GHashTable *layers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                               (GDestroyNotify)json_object_unref);
    for (guint i = 0; resources && i < json_array_get_length(resources); i++) {
        JsonObject *r = cli_json_array_object(resources, i);
        /* By the path asked: its owners may hold it by another name. */
        const char *path = r ? cli_json_string(r, "path", NULL) : NULL;
        if (path && !g_hash_table_contains(layers, path))
            g_hash_table_insert(layers, g_strdup(path), json_object_ref(r));
    }
    return layers;
}

static JsonObject *
layer_of(GHashTable *layers, const char *path)
{
    if (!layers)
        return NULL;
    g_autofree char *canon = vml_canonical_path(path);
    return g_hash_table_lookup(layers, canon);
}

static JsonArray *
owners_of(GHashTable *layers, const char *path)
{
    JsonObject *r = layer_of(layers, path);
    JsonArray *o = r ? cli_json_array(r, "owners") : NULL;
    return o && json_array_get_length(o) ? o : NULL;
}

/* "exclusive", "shared" or "-" for nobody. */
static const char *
lease_of(JsonArray *owners)
{
    const char *lease = "-";   /* observers hold nothing */
    for (guint i = 0; owners && i < json_array_get_length(owners); i++) {
        const char *mode = cli_json_string(cli_json_array_object(owners, i), "mode", "");
        if (g_str_equal(mode, "exclusive"))
            return "exclusive";
        if (g_str_equal(mode, "shared"))
            lease = "shared";
    }
    return lease;
}

static char *
holders_of(JsonArray *owners)
{
    if (!owners)
        return g_strdup("-");
    g_autoptr(GPtrArray) sorted = cli_owners_sorted(owners);
    g_autoptr(GString) s = g_string_new(NULL);
    for (guint i = 0; i < sorted->len; i++) {
        JsonObject *o = sorted->pdata[i];
        g_autofree char *name = cli_sanitize(cli_json_string(o, "name", "?"));
        g_autofree char *host = cli_sanitize(cli_json_string(o, "host", "?"));
        g_string_append_printf(s, "%s%s (%s, pid %" G_GINT64_FORMAT " on %s)", i ? ", " : "",
                               name, cli_json_string(o, "mode", "?"), cli_json_int(o, "pid", 0),
                               host);
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}

static const char *
disk_access(const VmlDisk *disk)
{
    return disk->readonly ? "read-only" : disk->shareable ? "shareable" : "read-write";
}

/* CHAIN's layers as JSON: {index, path, format, from, resource, lease,
 * owners}. */
static JsonArray *
chain_json(GPtrArray *chain, GHashTable *owners)
{
    JsonArray *out = json_array_new();
    for (guint i = 0; i < chain->len; i++) {
        VmlLayer *l = chain->pdata[i];
        JsonObject *jl = json_object_new();
        json_object_set_int_member(jl, "index", i);
        json_object_set_string_member(jl, "path", l->path);
        if (l->format)
            json_object_set_string_member(jl, "format", l->format);
        json_object_set_string_member(jl, "from", l->from_xml ? "xml" : "header");
        JsonArray *o = owners_of(owners, l->path);
        JsonObject *r = layer_of(owners, l->path);
        if (r && cli_json_string(r, "resource", NULL))
            json_object_set_string_member(jl, "resource", cli_json_string(r, "resource", ""));
        json_object_set_string_member(jl, "lease", lease_of(o));
        json_object_set_array_member(jl, "owners", o ? json_array_ref(o) : json_array_new());
        json_array_add_object_element(out, jl);
    }
    return out;
}

static void
show_json(const Subject *s, GHashTable *owners)
{
    g_autoptr(JsonObject) out = json_object_new();
    if (s->kind == SUBJECT_IMAGE) {
        VmlDisk *disk = s->model->disks->pdata[0];
        json_object_set_string_member(out, "image", subject_image(s));
        json_object_set_array_member(out, "chain", chain_json(disk->chain, owners));
        cli_print_json(out);
        return;
    }
    json_object_set_string_member(out, "domain", s->model->name);
    json_object_set_string_member(out, "uuid", s->model->uuid);
    json_object_set_boolean_member(out, "running", s->running);
    JsonArray *disks = json_array_new();
    for (guint d = 0; d < s->model->disks->len; d++) {
        VmlDisk *disk = s->model->disks->pdata[d];
        JsonObject *jd = json_object_new();
        json_object_set_string_member(jd, "target", disk->target);
        json_object_set_string_member(jd, "access", disk_access(disk));
        json_object_set_boolean_member(jd, "block_job", disk->has_mirror);
        json_object_set_array_member(jd, "chain", chain_json(disk->chain, owners));
        json_array_add_object_element(disks, jd);
    }
    json_object_set_array_member(out, "disks", disks);
    cli_print_json(out);
}

/* CHAIN as an indented table: each layer's image, format, lease, holders. */
static void
show_chain_table(GPtrArray *chain, GHashTable *owners)
{
    g_autoptr(CliTable) table = cli_table_new("  LAYER", "IMAGE", "FORMAT", "LEASE", "HOLDERS",
                                              NULL);
    for (guint i = 0; i < chain->len; i++) {
        VmlLayer *l = chain->pdata[i];
        JsonArray *o = owners_of(owners, l->path);
        g_autofree char *index = g_strdup_printf("  %u", i);
        g_autofree char *holders = holders_of(o);
        cli_table_add_row(table, index, l->path, l->format ? l->format : "?", lease_of(o),
                          holders);
    }
    cli_table_print(table, stdout);
}

static int
chain_show(const VmlCliOptions *opts, const ChainArgs *a)
{
    g_auto(Subject) s = { 0 };
    int status = load_subject(a, &s);
    if (status >= 0)
        return status;
    g_autoptr(GHashTable) owners = layer_owners(opts, s.model);
    if (a->json) {
        show_json(&s, owners);
        return VML_EXIT_OK;
    }
    if (s.kind == SUBJECT_IMAGE) {
        VmlDisk *disk = s.model->disks->pdata[0];
        g_autofree char *image = cli_sanitize(subject_image(&s));
        printf("image %s (chain of %u image%s):\n", image, disk->chain->len,
               disk->chain->len == 1 ? "" : "s");
        show_chain_table(disk->chain, owners);
        return VML_EXIT_OK;
    }
    g_autofree char *name = cli_sanitize(s.model->name);
    printf("domain %s (uuid %s%s)\n", name, s.model->uuid,
           s.dom ? (s.running ? ", running" : ", shut off") : "");
    for (guint d = 0; d < s.model->disks->len; d++) {
        VmlDisk *disk = s.model->disks->pdata[d];
        g_autofree char *target = cli_sanitize(disk->target);
        printf("disk %s (%s%s):\n", target, disk_access(disk),
               disk->has_mirror ? ", block job running" : "");
        if (!disk->chain->len)
            printf("  (no local image)\n");
        else
            show_chain_table(disk->chain, owners);
    }
    return VML_EXIT_OK;
}

/* ---- changes ------------------------------------------------------------ */

/* The holder id of the running VM of MODEL: a holder with its uuid,
 * preferably the one leasing the disk's active image. */
static gint64
vm_holder(const VmlCliOptions *opts, const VmlDomain *model, const VmlDisk *disk, GError **error)
{
    g_autoptr(VmlClient) admin = cli_connect_admin(opts, error);
    if (!admin)
        return 0;
    g_autoptr(JsonObject) reply = vml_admin_list(admin, error);
    if (!reply)
        return 0;
    g_autofree char *active = vml_canonical_path(((VmlLayer *)disk->chain->pdata[0])->path);
    gint64 found = 0;
    JsonArray *holders = cli_json_array(reply, "holders");
    for (guint i = 0; holders && i < json_array_get_length(holders); i++) {
        JsonObject *h = cli_json_array_object(holders, i);
        if (!h || g_strcmp0(cli_json_string(h, "uuid", NULL), model->uuid) != 0)
            continue;
        if (!found)
            found = cli_json_int(h, "holder", 0);
        JsonArray *leases = cli_json_array(h, "leases");
        for (guint j = 0; leases && j < json_array_get_length(leases); j++)
            if (g_strcmp0(cli_json_string(cli_json_array_object(leases, j), "path", NULL),
                          active) == 0)
                return cli_json_int(h, "holder", 0);
    }
    if (!found)
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_HOLDER,
                    "domain %s runs but holds no leases in vmleased (is lock_manager = "
                    "\"vmlease\" set in qemu.conf?)", model->name);
    return found;
}

/* This process, as the holder of an offline change. */
static gint64
register_self(VmlClient *client, VmlChainOp op, GError **error)
{
    g_autofree char *uuid = g_uuid_string_random();
    g_autofree char *name = g_strdup_printf("vmlease chain %s", vml_chain_op_name(op));
    VmlRegistration reg = { .uuid = uuid, .name = name, .pid = getpid(),
                            .program = "vmlease chain", .mailbox_fd = -1 };
    return vml_lease_register(client, &reg, error);
}

/* ---- the result of a change ---------------------------------------------- */

/* The domain's new XML, checked against libvirt's schema; a shut-off
 * libvirt domain gets it as its new definition. */
static char *
new_domain_xml(Subject *s, const VmlChainPlan *plan, GError **error)
{
    g_autoptr(VmlDomain) live = NULL;
    VmlDomain *result = s->model;
    if (s->running) {
        g_autofree char *xml = chain_lv_xml(s->dom, FALSE, error);
        result = live = xml ? vml_domain_parse(xml, strlen(xml), s->what, error) : NULL;
        if (!result) {
            g_prefix_error(error, "the change is applied, but: ");
            return NULL;
        }
    } else {
        vml_domain_set_chain(s->model, plan->disk, plan->new_chain);
    }
    if (!vml_domain_validate(result, NULL, error)) {
        g_prefix_error(error, "the change is applied, but the new XML is not valid for "
                       "libvirt: ");
        return NULL;
    }
    g_autofree char *xml = vml_domain_to_string(result);
    if (s->dom && !s->running && !chain_lv_define(s->dom, xml, error)) {
        g_prefix_error(error, "the images are changed, but: ");
        return NULL;
    }
    return g_steal_pointer(&xml);
}

/* What the change did, in words: "committed TOP into BASE", ... */
static char *
change_words(const VmlChainPlan *plan)
{
    GPtrArray *old = plan->old_chain;
    const char *active = ((VmlLayer *)old->pdata[0])->path;
    const char *top = ((VmlLayer *)old->pdata[plan->top])->path;
    switch (plan->op) {
    case VML_CHAIN_COMMIT:
        return g_strdup_printf("committed %s into %s", top,
                               ((VmlLayer *)old->pdata[plan->base])->path);
    case VML_CHAIN_PULL: {
        guint pulled = plan->base - 1;   /* the layers between active and base */
        return g_strdup_printf("pulled %u backing image%s into %s", pulled,
                               pulled == 1 ? "" : "s", active);
    }
    case VML_CHAIN_REBASE:
        if (!plan->new_backing)
            return g_strdup_printf("rebased %s onto no backing image", top);
        return g_strdup_printf("rebased %s onto %s", top, plan->new_backing);
    case VML_CHAIN_SNAPSHOT:
        return g_strdup_printf("created the overlay %s on %s", plan->file, active);
    }
    return g_strdup("changed the chain");
}

/* The summary of a change, one line:
 *   committed TOP into BASE (disk vda of domain dom-a): chain of 3 images
 *   is now 2, 16.0 MiB in 0.3 s
 * an image subject names no disk or domain; a change that copies no data
 * (a snapshot) ends "done in 0.1 s". */
static char *
summary_line(const Subject *s, const VmlChainPlan *plan, const ChainProgress *progress)
{
    g_autoptr(GString) line = g_string_new(NULL);
    g_autofree char *what = change_words(plan);
    g_string_append(line, what);
    if (s->kind != SUBJECT_IMAGE)
        g_string_append_printf(line, " (disk %s of domain %s)", plan->disk->target,
                               s->model->name);
    guint before = plan->old_chain->len, after = plan->new_chain->len;
    g_string_append_printf(line, ": chain of %u image%s is now %u", before,
                           before == 1 ? "" : "s", after);
    g_autofree char *took = cli_format_seconds(chain_progress_elapsed(progress));
    guint64 bytes = plan->op == VML_CHAIN_SNAPSHOT ? 0 : chain_progress_length(progress);
    if (bytes) {
        g_autofree char *size = cli_format_bytes(bytes);
        g_string_append_printf(line, ", %s in %s", size, took);
    } else {
        g_string_append_printf(line, ", done in %s", took);
    }
    return cli_sanitize(line->str);
}

static JsonArray *
paths_json(GPtrArray *chain)
{
    JsonArray *out = json_array_new();
    for (guint i = 0; i < chain->len; i++)
        json_array_add_string_element(out, ((VmlLayer *)chain->pdata[i])->path);
    return out;
}

/* {"change", "image" | "domain", "uuid", "disk", "live", "old_chain",
 *  "new_chain", "bytes", "milliseconds", "summary"[, "xml"]} */
static void
change_json(const Subject *s, const VmlChainPlan *plan, const ChainProgress *progress,
            const char *summary, const char *xml)
{
    g_autoptr(JsonObject) out = json_object_new();
    json_object_set_string_member(out, "change", vml_chain_op_name(plan->op));
    if (s->kind == SUBJECT_IMAGE) {
        json_object_set_string_member(out, "image", subject_image(s));
    } else {
        json_object_set_string_member(out, "domain", s->model->name);
        json_object_set_string_member(out, "uuid", s->model->uuid);
        json_object_set_string_member(out, "disk", plan->disk->target);
        json_object_set_boolean_member(out, "live", s->running);
    }
    json_object_set_array_member(out, "old_chain", paths_json(plan->old_chain));
    json_object_set_array_member(out, "new_chain", paths_json(plan->new_chain));
    guint64 bytes = plan->op == VML_CHAIN_SNAPSHOT ? 0 : chain_progress_length(progress);
    if (bytes)
        json_object_set_int_member(out, "bytes", (gint64)bytes);
    else
        json_object_set_null_member(out, "bytes");
    json_object_set_int_member(out, "milliseconds", chain_progress_elapsed(progress) / 1000);
    json_object_set_string_member(out, "summary", summary);
    if (xml)
        json_object_set_string_member(out, "xml", xml);
    cli_print_json(out);
}

/* The summary (or its JSON), and the new domain XML with --xml. */
static int
report_change(Subject *s, const VmlChainPlan *plan, const ChainProgress *progress,
              const ChainArgs *a)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *xml = NULL;
    /* A shut-off domain's definition must follow whether printed or not. */
    if (a->xml || (s->dom && !s->running)) {
        xml = new_domain_xml(s, plan, &error);
        if (!xml)
            return cli_error(VML_EXIT_FAILED, "%s", error->message);
    }
    g_autofree char *summary = summary_line(s, plan, progress);
    if (a->json) {
        change_json(s, plan, progress, summary, a->xml ? xml : NULL);
        return VML_EXIT_OK;
    }
    printf("%s\n", summary);
    if (a->xml)
        fputs(xml, stdout);
    return VML_EXIT_OK;
}

/* ---- a change ----------------------------------------------------------- */

/* The image whose length the data work goes through (what QEMU counts its
 * progress in); NULL for a snapshot, which copies nothing. */
static const char *
walked_image(const VmlChainPlan *plan)
{
    switch (plan->op) {
    case VML_CHAIN_COMMIT:
    case VML_CHAIN_REBASE:
        return ((VmlLayer *)plan->old_chain->pdata[plan->top])->path;
    case VML_CHAIN_PULL:
        return ((VmlLayer *)plan->old_chain->pdata[0])->path;
    case VML_CHAIN_SNAPSHOT:
        break;
    }
    return NULL;
}

/* The progress of applying PLAN, drawn with DRAW (a snapshot has nothing
 * to draw, only its time is taken). */
static ChainProgress *
work_progress(const VmlChainPlan *plan, gboolean draw)
{
    static const char *const labels[] = {
        [VML_CHAIN_COMMIT] = "Block commit", [VML_CHAIN_PULL] = "Block pull",
        [VML_CHAIN_REBASE] = "Block rebase", [VML_CHAIN_SNAPSHOT] = "Snapshot",
    };
    const char *walked = walked_image(plan);
    guint64 length = 0;
    /* Unknown (not qcow2) is no error: there is just no size to tell. */
    if (walked && !chain_image_virtual_size(walked, &length, NULL))
        length = 0;
    return chain_progress_new(labels[plan->op], length, draw && walked);
}

static int
chain_change(const VmlCliCommand *cmd, const VmlCliOptions *opts, VmlChainOp op,
             const ChainArgs *a, unsigned long bandwidth)
{
    g_auto(Subject) s = { 0 };
    int status = load_subject(a, &s);
    if (status >= 0)
        return status;
    if (a->xml && s.kind == SUBJECT_IMAGE)
        return cli_usage_error(cmd, "--xml: %s is an image, which has no domain XML (give a "
                               "domain or a domain XML file)", a->subject);

    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) frozen = s.running ? chain_lv_frozen(s.dom, s.model, &error) : NULL;
    if (s.running && !frozen)
        return cli_error(VML_EXIT_FAILED, "%s", error->message);
    VmlChainRequest req = {
        .op = op, .disk = a->disk, .top = a->top, .base = a->base,
        .backing = a->backing, .file = a->file, .live = s.running,
    };
    g_autoptr(VmlChainPlan) plan = vml_chain_plan_new(s.model, &req, frozen, &error);
    if (!plan)
        return cli_error(cli_exit_code(error), "%s", error->message);

    g_autoptr(VmlClient) client = cli_connect_lease(opts, &error);
    if (!client)
        return cli_error(VML_EXIT_DAEMON, "%s", error->message);
    gint64 holder = s.running ? vm_holder(opts, s.model, plan->disk, &error)
                              : register_self(client, op, &error);
    if (!holder)
        return cli_error(cli_exit_code(error), "%s", error->message);

    /* prepare */
    if (op == VML_CHAIN_SNAPSHOT && !chain_create_overlay(plan, s.running, &error))
        return cli_error(VML_EXIT_FAILED, "%s", error->message);
    g_autoptr(VmlChainLeases) leases = vml_chain_leases_new(client, holder, plan);
    if (!vml_chain_leases_prepare(leases, NULL, &error)) {
        if (plan->file)
            unlink(plan->file);
        g_autofree char *disk = subject_disk_words(&s, plan->disk);
        return cli_error(cli_exit_code(error), "cannot %s %s: %s", vml_chain_op_name(op), disk,
                         error->message);
    }

    /* commit: progress on stderr, never on stdout; by default only where
     * someone watches (a terminal) and not under --json */
    gboolean draw = a->progress > 0 || (a->progress < 0 && !a->json && isatty(STDERR_FILENO));
    g_autoptr(ChainProgress) progress = work_progress(plan, draw);
    gboolean applied = s.running ? chain_lv_apply(s.dom, plan, bandwidth, progress, &error)
                                 : chain_qemu_img_apply(plan, progress, &error);
    chain_progress_end(progress, applied);
    if (!applied) {
        g_autoptr(GError) undo = NULL;
        /* A job that still writes keeps what it needs: the leases are
         * stronger than before, never weaker than the job. */
        if (s.running && chain_lv_job_running(s.dom, plan->disk->target))
            cli_warning("a block job still runs on disk %s: its leases stay as "
                      "prepared", plan->disk->target);
        else if (!vml_chain_leases_abort(leases, &undo))
            cli_warning("%s", undo->message);
        if (plan->file)
            unlink(plan->file);
        return cli_error(VML_EXIT_FAILED, "%s", error->message);
    }
    if (!vml_chain_leases_finish(leases, &error))
        return cli_error(cli_exit_code(error), "the %s is applied, but the leases could not "
                         "follow: %s", vml_chain_op_name(op), error->message);
    return report_change(&s, plan, progress, a);
}

/* ---- command line ------------------------------------------------------- */

static const struct {
    const char *name;
    VmlChainOp op;
} verbs[] = {
    { "commit", VML_CHAIN_COMMIT },
    { "pull", VML_CHAIN_PULL },
    { "rebase", VML_CHAIN_REBASE },
    { "snapshot", VML_CHAIN_SNAPSHOT },
};

static int
chain_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    ChainArgs a = { .progress = -1 };
    const char *verb = NULL;
    struct {
        const char *name;
        const char **value;
    } options[] = {
        { "--connect", &a.uri }, { "-c", &a.uri }, { "--disk", &a.disk }, { "--top", &a.top },
        { "--image", &a.top }, { "--base", &a.base }, { "--backing", &a.backing },
        { "--file", &a.file }, { "--bandwidth", &a.bandwidth },
    };
    int status = 0;
    for (int i = 1; i < argc;) {
        switch (cli_common_option(cmd, opts, argc, argv, &i, &status)) {
        case CLI_OPT_TAKEN:
            continue;
        case CLI_OPT_EXIT:
            return status;
        case CLI_OPT_NONE:
            break;
        }
        const char *arg = argv[i];
        gboolean taken = FALSE;
        for (guint o = 0; o < G_N_ELEMENTS(options) && !taken; o++) {
            gsize len = strlen(options[o].name);
            if (strncmp(arg, options[o].name, len) != 0 || (arg[len] && arg[len] != '='))
                continue;
            if (arg[len] == '=') {
                *options[o].value = arg + len + 1;
                i++;
            } else if (i + 1 < argc) {
                *options[o].value = argv[i + 1];
                i += 2;
            } else {
                return cli_usage_error(cmd, "option %s needs a value", options[o].name);
            }
            taken = TRUE;
        }
        if (taken)
            continue;
        if (g_str_equal(arg, "--json")) {
            a.json = TRUE;
            cli_json_errors();
        } else if (g_str_equal(arg, "--xml")) {
            a.xml = TRUE;
        } else if (g_str_equal(arg, "--progress") || g_str_equal(arg, "--no-progress")) {
            a.progress = g_str_equal(arg, "--progress");   /* the last one counts */
        } else if (arg[0] == '-' && arg[1]) {
            return cli_usage_error(cmd, "unknown option %s", arg);
        } else if (!verb) {
            verb = arg;
        } else if (!a.subject) {
            a.subject = arg;
        } else {
            return cli_usage_error(cmd, "unexpected argument %s", arg);
        }
        i++;
    }
    if (!verb)
        return cli_usage_error(cmd, "missing the action (show, commit, pull, rebase, snapshot)");
    if (!a.subject)
        return cli_usage_error(cmd, "missing DOMAIN, XMLFILE or IMAGE");
    if (g_str_equal(verb, "show")) {
        if (a.xml)
            return cli_usage_error(cmd, "--xml goes with a change (commit, pull, rebase, "
                                   "snapshot), not with show");
        return chain_show(opts, &a);
    }
    for (guint v = 0; v < G_N_ELEMENTS(verbs); v++) {
        if (!g_str_equal(verb, verbs[v].name))
            continue;
        if (verbs[v].op == VML_CHAIN_REBASE && !a.backing)
            return cli_usage_error(cmd, "rebase needs --backing IMAGE (or --backing '' for none)");
        if (verbs[v].op == VML_CHAIN_SNAPSHOT && !a.file)
            return cli_usage_error(cmd, "snapshot needs --file NEW-OVERLAY");
        guint64 bandwidth = 0;
        if (a.bandwidth && !g_ascii_string_to_unsigned(a.bandwidth, 10, 1, G_MAXUINT32,
                                                       &bandwidth, NULL))
            return cli_usage_error(cmd, "--bandwidth needs a whole number of MiB/s, not '%s'",
                                   a.bandwidth);
        return chain_change(cmd, opts, verbs[v].op, &a, (unsigned long)bandwidth);
    }
    return cli_usage_error(cmd, "unknown action %s", verb);
}

const VmlCliCommand vml_cmd_chain = {
    .name = "chain",
    .synopsis = "show|commit|pull|rebase|snapshot DOMAIN|XMLFILE|IMAGE [OPTIONS]",
    .summary = "Show backing chains with their leases; change a chain as a transaction.",
    .description =
        "show      every disk's chain: each layer's image, format, lease and holders\n"
        "commit    write the layers from --top (default: the active image) down to\n"
        "          above --base (default: top's backing) into base; they leave\n"
        "          the chain\n"
        "pull      copy the layers above --base (default: all) into the active image\n"
        "rebase    give --image (default: the active image) the new backing\n"
        "          --backing IMAGE ('' for none)\n"
        "snapshot  put the new overlay --file PATH on top of the active image\n\n"
        "DOMAIN is a domain name or uuid on the libvirt connection (-c URI): a\n"
        "running domain is changed through libvirt (block commit, pull, rebase,\n"
        "disk-only external snapshot), one that is shut off with qemu-img and its\n"
        "definition updated. XMLFILE (domain XML) and IMAGE are changed with\n"
        "qemu-img. A change is refused before anything is touched when an image is\n"
        "missing, when it would make a cycle, when a block job runs on the disk, or\n"
        "when a lease it needs is held by someone else (a commit base shared by\n"
        "another VM): the error names the holders. If applying fails, every lease\n"
        "goes back to what it was. On success one line sums the change up, e.g.\n"
        "  committed TOP into BASE (disk vda of domain dom-a): chain of 3 images\n"
        "  is now 2, 16.0 MiB in 0.3 s\n"
        "(an IMAGE names no disk or domain); a shut-off domain's definition is\n"
        "updated.\n\n"
        "Options:\n"
        "  -c, --connect URI  libvirt connection (default: libvirt's default)\n"
        "  --disk DISK        target (vda) or active image; needed with several disks\n"
        "  --top, --image IMAGE, --base IMAGE, --backing IMAGE, --file PATH\n"
        "  --bandwidth MIB/S  cap a running domain's block job (commit, pull)\n"
        "  --xml              after the summary, print the new domain XML, checked\n"
        "                     against libvirt's schema (not for an IMAGE)\n"
        "  --progress         show the progress of commit, pull and rebase on stderr:\n"
        "                     \"Block commit: [ 42 %] 12.3 MiB/s\", rewritten in place;\n"
        "                     the default when stderr is a terminal, without --json\n"
        "  --no-progress      never show it\n"
        "  --json             print JSON: show, the chains; a change, what it did\n"
        "                     (with --xml, the new XML in its \"xml\" member)\n\n"
        "SIGINT, SIGTERM or SIGHUP while a running domain's block job works cancel\n"
        "the job, and the leases go back to what they were.\n",
    .run = chain_run,
};
