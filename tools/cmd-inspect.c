/* vmlease inspect: what an image is, who holds it (leases and QEMU locks),
 * what its header says about its use, and a verdict. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"
#include "vml-backing-chain.h"
#include "vml-image-verdict.h"
#include "vml-paths.h"
#include "vml-qcow2.h"
#include "vml-owner-text.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* What the image itself says, read without disturbing it. */
typedef struct {
    gint64 size;                 /* bytes, -1 unknown */
    char *open_error;            /* cannot be read at all */
    gboolean qcow2;
    VmlQcow2Header *header;      /* NULL: raw, unreadable or invalid */
    char *header_error;
    VmlImageOwner *owner;
    char *owner_error;
    VmlQemuLocks *qemu;
    char *qemu_error;
    GPtrArray *chain;
    char *chain_error;
} ImageFacts;

static void
image_facts_clear(ImageFacts *f)
{
    g_free(f->open_error);
    vml_qcow2_header_free(f->header);
    g_free(f->header_error);
    vml_image_owner_free(f->owner);
    g_free(f->owner_error);
    vml_qemu_locks_free(f->qemu);
    g_free(f->qemu_error);
    if (f->chain)
        g_ptr_array_unref(f->chain);
    g_free(f->chain_error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ImageFacts, image_facts_clear)

/* What makes the image no valid one (NULL: nothing found): a qcow2 header
 * that does not parse, an owner extension that does not, a backing chain
 * that loops or cannot be followed. */
static const char *
image_fault(const ImageFacts *f)
{
    return f->qcow2 && f->header_error ? f->header_error
         : f->owner_error ? f->owner_error
         : f->chain_error;
}

static void
read_facts(const char *path, ImageFacts *f)
{
    f->size = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        f->open_error = g_strdup(g_strerror(errno));
        return;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    f->size = end < 0 ? -1 : (gint64)end;

    g_autoptr(GError) error = NULL;
    gboolean not_qcow2;
    f->header = vml_qcow2_read(fd, path, &not_qcow2, &error);
    f->qcow2 = !not_qcow2;
    if (error)
        f->header_error = g_strdup(error->message);
    g_clear_error(&error);
    const VmlQcow2Ext *ext = f->header ? vml_qcow2_find_ext(f->header, VML_QCOW2_EXT_OWNER) : NULL;
    if (ext && !(f->owner = vml_image_owner_decode(ext->data, &error)))
        f->owner_error = g_strdup(error->message);
    g_clear_error(&error);

    if (!(f->qemu = vml_qemu_probe(fd, &error)))
        f->qemu_error = g_strdup(error->message);
    g_clear_error(&error);
    close(fd);

    if (f->header && !(f->chain = vml_backing_chain(path, &error)))
        f->chain_error = g_strdup(error->message);
}

static const char *
ext_name(guint32 type)
{
    switch (type) {
    case VML_QCOW2_EXT_BACKING_FORMAT: return "backing format";
    case VML_QCOW2_EXT_FEATURE_TABLE: return "feature name table";
    case VML_QCOW2_EXT_BITMAPS: return "bitmaps";
    case VML_QCOW2_EXT_ENCRYPTION: return "encryption";
    case VML_QCOW2_EXT_DATA_FILE: return "external data file";
    case VML_QCOW2_EXT_OWNER: return "vmlease owner";
    default: return "unknown";
    }
}

static JsonArray *
perm_array(guint perms)
{
    JsonArray *a = json_array_new();
    g_autofree char *text = vml_qemu_perms_text(perms);
    if (perms) {
        g_auto(GStrv) names = g_strsplit(text, ", ", -1);
        for (char **n = names; *n; n++)
            json_array_add_string_element(a, *n);
    }
    return a;
}

static JsonObject *
header_json(const VmlQcow2Header *h)
{
    JsonObject *j = json_object_new();
    json_object_set_int_member(j, "version", h->version);
    json_object_set_int_member(j, "cluster_size", (gint64)h->cluster_size);
    json_object_set_int_member(j, "virtual_size", (gint64)h->virtual_size);
    json_object_set_int_member(j, "header_length", h->header_length);
    json_object_set_int_member(j, "incompatible_features", (gint64)h->incompatible_features);
    json_object_set_int_member(j, "compatible_features", (gint64)h->compatible_features);
    json_object_set_boolean_member(j, "in_use",
                                   !!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE));
    if (h->backing_file)
        json_object_set_string_member(j, "backing_file", h->backing_file);
    else
        json_object_set_null_member(j, "backing_file");
    if (h->backing_format)
        json_object_set_string_member(j, "backing_format", h->backing_format);
    else
        json_object_set_null_member(j, "backing_format");
    JsonArray *exts = json_array_new();
    for (guint i = 0; i < h->extensions->len; i++) {
        const VmlQcow2Ext *e = h->extensions->pdata[i];
        JsonObject *x = json_object_new();
        g_autofree char *type = g_strdup_printf("0x%08x", e->type);
        json_object_set_string_member(x, "type", type);
        json_object_set_string_member(x, "name", ext_name(e->type));
        json_object_set_int_member(x, "length", (gint64)g_bytes_get_size(e->data));
        json_array_add_object_element(exts, x);
    }
    json_object_set_array_member(j, "extensions", exts);
    return j;
}

static JsonObject *
qemu_json(const VmlQemuLocks *q)
{
    JsonObject *j = json_object_new();
    json_object_set_array_member(j, "perms", perm_array(q->perms));
    json_object_set_array_member(j, "unshared", perm_array(q->unshared));
    JsonArray *holders = json_array_new();
    for (guint i = 0; i < q->holders->len; i++) {
        const VmlQemuHolder *h = q->holders->pdata[i];
        JsonObject *x = json_object_new();
        json_object_set_int_member(x, "pid", h->pid);
        json_object_set_string_member(x, "command", h->command);
        json_object_set_array_member(x, "perms", perm_array(h->perms));
        json_object_set_array_member(x, "unshared", perm_array(h->unshared));
        json_array_add_object_element(holders, x);
    }
    json_object_set_array_member(j, "holders", holders);
    return j;
}

static void
set_string_or_null(JsonObject *j, const char *name, const char *value)
{
    if (value)
        json_object_set_string_member(j, name, value);
    else
        json_object_set_null_member(j, name);
}

/* The owners among OWNERS whose VM process does not keep the fds that
 * hold its leases (List's lock_fds "missing"): [{name, pid, detail}]. */
static JsonArray *
lock_fds_missing(VmlClient *client, JsonArray *owners)
{
    JsonArray *out = json_array_new();
    g_autoptr(JsonObject) list = owners && json_array_get_length(owners)
        ? vml_admin_list(client, NULL) : NULL;
    JsonArray *holders = list ? cli_json_array(list, "holders") : NULL;
    for (guint i = 0; holders && i < json_array_get_length(holders); i++) {
        JsonObject *h = cli_json_array_object(holders, i);
        if (!h || g_strcmp0(cli_json_string(h, "lock_fds", NULL), "missing") != 0)
            continue;
        for (guint k = 0; k < json_array_get_length(owners); k++) {
            JsonObject *o = cli_json_array_object(owners, k);
            if (!o || cli_json_int(o, "pid", -1) != cli_json_int(h, "pid", -2) ||
                g_strcmp0(cli_json_string(o, "uuid", NULL), cli_json_string(h, "uuid", "")) != 0)
                continue;
            JsonObject *m = json_object_new();
            json_object_set_string_member(m, "name", cli_json_string(h, "name", ""));
            json_object_set_int_member(m, "pid", cli_json_int(h, "pid", 0));
            json_object_set_string_member(m, "detail", cli_json_string(h, "lock_fds_detail", ""));
            json_array_add_object_element(out, m);
            break;
        }
    }
    return out;
}

static void
print_json(const char *path, const char *resource, const char *lock_file, const char *type,
           const ImageFacts *f, JsonArray *owners, JsonArray *missing, VmlVerdict verdict,
           const char *reason)
{
    g_autoptr(JsonObject) out = json_object_new();
    json_object_set_string_member(out, "path", path);
    json_object_set_string_member(out, "resource", resource);
    json_object_set_string_member(out, "lock_file", lock_file);
    if (f->size >= 0)
        json_object_set_int_member(out, "size", f->size);
    else
        json_object_set_null_member(out, "size");
    json_object_set_string_member(out, "type", type);
    set_string_or_null(out, "error", f->open_error);
    json_object_set_string_member(out, "format", f->open_error ? "unknown"
                                                 : f->qcow2 ? "qcow2" : "raw");
    if (f->header)
        json_object_set_object_member(out, "qcow2", header_json(f->header));
    else
        json_object_set_null_member(out, "qcow2");
    set_string_or_null(out, "header_error", f->header_error);
    JsonArray *chain = json_array_new();
    for (guint i = 0; f->chain && i < f->chain->len; i++)
        json_array_add_string_element(chain, f->chain->pdata[i]);
    json_object_set_array_member(out, "backing_chain", chain);
    set_string_or_null(out, "backing_chain_error", f->chain_error);
    if (f->owner)
        json_object_set_object_member(out, "owner", vml_image_owner_to_json(f->owner));
    else
        json_object_set_null_member(out, "owner");
    set_string_or_null(out, "owner_error", f->owner_error);
    if (owners)
        json_object_set_array_member(out, "owners", json_array_ref(owners));
    else
        json_object_set_null_member(out, "owners");   /* unknown: no daemon */
    json_object_set_array_member(out, "lock_fds_missing", json_array_ref(missing));
    if (f->qemu)
        json_object_set_object_member(out, "qemu", qemu_json(f->qemu));
    else
        json_object_set_null_member(out, "qemu");
    json_object_set_string_member(out, "verdict", vml_verdict_name(verdict));
    json_object_set_string_member(out, "reason", reason);
    cli_print_json(out);
}

static void
print_text(const char *path, const char *resource, const char *lock_file, const char *type,
           const ImageFacts *f, JsonArray *owners, JsonArray *missing, const char *reason)
{
    g_autoptr(CliFields) out = cli_fields_new();
    cli_fields_add(out, "path", "%s", path);
    cli_fields_add(out, "resource", "%s", resource);
    cli_fields_add(out, "lock file", "%s", lock_file);
    if (f->size >= 0)
        cli_fields_add(out, "size", "%" G_GINT64_FORMAT, f->size);
    cli_fields_add(out, "type", "%s", type);
    const VmlQcow2Header *h = f->header;
    if (f->open_error)
        cli_fields_add(out, "format", "unknown (cannot read: %s)", f->open_error);
    else if (!f->qcow2)
        cli_fields_add(out, "format", "raw");
    else if (!h)
        cli_fields_add(out, "format", "qcow2 (%s)", f->header_error);
    else
        cli_fields_add(out, "format", "qcow2 version %u, cluster size %" G_GUINT64_FORMAT
                       ", virtual size %" G_GUINT64_FORMAT, h->version, h->cluster_size,
                       h->virtual_size);
    if (h) {
        g_autoptr(GString) chain = g_string_new(NULL);
        for (guint i = 0; f->chain && i < f->chain->len; i++)
            g_string_append_printf(chain, " -> %s", (char *)f->chain->pdata[i]);
        if (f->chain_error)
            cli_fields_add(out, "backing chain", "(%s)", f->chain_error);
        else
            cli_fields_add(out, "backing chain", "%s", chain->len ? chain->str + 4 : "none");
        gboolean bit = !!(h->compatible_features & VML_QCOW2_COMPAT_IN_USE);
        cli_fields_add(out, "in-use bit", "%s", bit ? "set" : "clear");
    }
    if (f->owner) {
        g_autofree char *who = vml_image_owner_describe(f->owner);
        cli_fields_add(out, "marked by", "%s, generation %" G_GUINT64_FORMAT, who,
                       f->owner->generation);
    } else if (f->owner_error) {
        cli_fields_add(out, "marked by", "(%s)", f->owner_error);
    }
    g_autofree char *leases = owners ? cli_owners_describe(owners) : NULL;
    cli_fields_add(out, "leases", "%s", !owners ? "unknown (vmleased is not running)"
                                        : json_array_get_length(owners) ? leases : "none");
    if (f->qemu && f->qemu->holders->len) {
        for (guint i = 0; i < f->qemu->holders->len; i++) {
            const VmlQemuHolder *q = f->qemu->holders->pdata[i];
            g_autofree char *perms = vml_qemu_perms_text(q->perms);
            g_autofree char *denied = vml_qemu_perms_text(q->unshared);
            cli_fields_add(out, "qemu lock", "pid %d (%s): holds %s; denies %s", (int)q->pid,
                           q->program, perms, denied);
        }
    } else if (f->qemu && vml_qemu_locks_busy(f->qemu)) {
        g_autofree char *perms = vml_qemu_perms_text(f->qemu->perms);
        cli_fields_add(out, "qemu lock", "held by a process not on this host: %s", perms);
    } else {
        cli_fields_add(out, "qemu lock", "%s", f->qemu_error ? f->qemu_error : "none");
    }
    cli_fields_add(out, "verdict", "%s", reason);
    cli_fields_print(out, stdout);
    for (guint i = 0; i < json_array_get_length(missing); i++) {
        JsonObject *m = cli_json_array_object(missing, i);
        g_autofree char *name = vml_text_sanitize(cli_json_string(m, "name", ""));
        g_autofree char *detail = vml_text_sanitize(cli_json_string(m, "detail", ""));
        printf("warning: VM %s (pid %" G_GINT64_FORMAT ") does not keep the fds that hold its "
               "leases: %s\n", name, cli_json_int(m, "pid", 0), detail);
    }
}

static int
inspect_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    gboolean json;
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    int status = cli_parse_json_args(cmd, opts, argc, argv, &json, args);
    if (status >= 0)
        return status;
    if (args->len != 1)
        return cli_usage_error(cmd, "inspect takes one PATH");

    struct stat st;
    g_autofree char *path = cli_resolve_image(args->pdata[0], &st, &status);
    if (!path)
        return status;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) client = cli_connect_admin(opts, &error);
    g_autoptr(JsonArray) resources = NULL;
    g_autofree char *local_key = NULL;
    JsonArray *owners = NULL;   /* NULL: not known (no daemon) */
    const char *resource;
    if (client) {
        JsonArray *paths = json_array_new();
        json_array_add_string_element(paths, path);
        resources = vml_admin_owners(client, paths, &error);
        if (!resources)
            return cli_call_failed(error);
        JsonObject *res = (resources && json_array_get_length(resources) == 1)
            ? cli_json_array_object(resources, 0) : NULL;
        owners = cli_json_array(res, "owners");
        if (!owners)
            return cli_error(VML_EXIT_DAEMON, "malformed Owners reply from vmleased");
        /* The daemon's key is authoritative: it is what the lock file is named after. */
        resource = cli_json_string(res, "resource", path);
    } else {
        /* The image can still be looked at; only the leases are unknown. */
        cli_warning("%s: leases not shown; the resource key is worked out here",
                  error->message);
        g_clear_error(&error);
        local_key = cli_image_key(path, &error);
        if (!local_key)
            return cli_error(VML_EXIT_NOT_FOUND, "%s", error->message);
        resource = local_key;
    }

    g_auto(ImageFacts) facts = { 0 };
    read_facts(path, &facts);
    g_autofree char *hash = vml_key_hash(resource);
    g_autofree char *lock_file = g_strdup_printf("%s.lock", hash);
    const char *type = S_ISBLK(st.st_mode) ? "block" : "regular";
    /* An observer holds nothing: it makes no image in use. */
    g_autoptr(JsonArray) holding = json_array_new();
    for (guint i = 0; owners && i < json_array_get_length(owners); i++) {
        JsonObject *o = cli_json_array_object(owners, i);
        if (o && g_strcmp0(cli_json_string(o, "mode", NULL), "observer") != 0)
            json_array_add_object_element(holding, json_object_ref(o));
    }
    g_autofree char *holders = cli_owners_describe(holding);
    gboolean bit = facts.header &&
                   (facts.header->compatible_features & VML_QCOW2_COMPAT_IN_USE);
    g_autofree char *reason = NULL;
    VmlVerdict verdict = vml_image_verdict(bit, facts.owner, holders, facts.qemu, &reason);
    if (!client && (verdict == VML_VERDICT_STALE || verdict == VML_VERDICT_FREE)) {
        /* No lease seen is no proof that none is held: leases outlive
         * vmleased in their holders' fds. */
        g_free(reason);
        reason = g_strdup_printf("%s, and vmleased is not running to say whether a lease is "
                                 "held", verdict == VML_VERDICT_FREE
                                     ? "no in-use mark and no QEMU lock on the image"
                                     : "marked in use");
        verdict = VML_VERDICT_UNKNOWN;
    }

    /* A fault is the verdict, whoever uses the image: named first. */
    const char *fault = image_fault(&facts);
    if (fault) {
        g_autofree char *use = reason;
        reason = verdict == VML_VERDICT_IN_USE ? g_strdup_printf("corrupt: %s; %s", fault, use)
                                               : g_strdup_printf("corrupt: %s", fault);
        verdict = VML_VERDICT_CORRUPT;
    }

    g_autoptr(JsonArray) missing = client ? lock_fds_missing(client, owners) : json_array_new();
    if (json)
        print_json(path, resource, lock_file, type, &facts, owners, missing, verdict, reason);
    else
        print_text(path, resource, lock_file, type, &facts, owners, missing, reason);
    return fault ? VML_EXIT_CORRUPT : VML_EXIT_OK;
}

const VmlCliCommand vml_cmd_inspect = {
    .name = "inspect",
    .synopsis = "[--json] PATH",
    .summary = "Show what the image PATH is, who holds it, and whether it is in use.",
    .description =
        "Show the image's canonical path, resource key and lock file (SHA-256 of\n"
        "the key + \".lock\"), size and type; for qcow2 its version, cluster and\n"
        "virtual size, backing chain, the in-use bit and the owner record vmleased\n"
        "wrote into the header; the current leases; the processes on this host\n"
        "holding QEMU's image locks and with which permissions; and a verdict:\n"
        "  free\n"
        "  in use by OWNERS              (a lease, or a QEMU without one)\n"
        "  marked in use by ... another host: ... cannot be checked from here\n"
        "  stale: WHY (was OWNER)        (the bit is set but the use is gone: the\n"
        "                                 host rebooted, the pid is gone, or no\n"
        "                                 lease is held)\n"
        "Nothing is locked or written. Reading the image and /proc needs root.\n\n"
        "Options:\n"
        "  --json  print {path, resource, lock_file, size, type, format, qcow2,\n"
        "          header_error, backing_chain, owner, owners, qemu, verdict\n"
        "          (free, in-use, unknown or stale), reason}\n",
    .run = inspect_run,
};
