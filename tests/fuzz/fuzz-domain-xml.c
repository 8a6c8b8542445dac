/* libFuzzer target: the domain XML parser (vml_domain_parse), and the
 * promise that a chain written back with vml_domain_set_chain reads back the
 * same. Nothing here touches the filesystem (no vml_domain_resolve_chains,
 * no find_disk by path). */
#include "vml-domain.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlerror.h>

static void
quiet(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    xmlInitParser();
    xmlSetGenericErrorFunc(NULL, quiet);
    return 0;
}

/* A refusal must say why. */
static void
assert_error(const GError *error)
{
    if (!error || !error->message || !*error->message)
        abort();
}

/* What vml_domain_parse promises of a model it returns. */
static void
assert_model(const VmlDomain *d)
{
    if (!d->doc || !d->name || !d->uuid || !d->disks || !d->leases)
        abort();
    for (guint i = 0; i < d->disks->len; i++) {
        const VmlDisk *disk = d->disks->pdata[i];
        if (!disk->target || !*disk->target || !disk->device || !disk->chain || !disk->node)
            abort();
        if (disk->type == VML_DISK_OTHER && disk->chain->len != 0)
            abort();
        /* The active image and at most VML_DOMAIN_CHAIN_MAX <backingStore>
         * levels below it (tests/unit/test-domain-xml.c test_chain_depth). */
        if (disk->chain->len > VML_DOMAIN_CHAIN_MAX + 1)
            abort();
        for (guint j = 0; j < disk->chain->len; j++) {
            const VmlLayer *layer = disk->chain->pdata[j];
            if (!layer->path || !g_path_is_absolute(layer->path) || !layer->from_xml ||
                layer->type == VML_DISK_OTHER)
                abort();
        }
    }
    for (guint i = 0; i < d->leases->len; i++) {
        const VmlDomainLease *lease = d->leases->pdata[i];
        if (!lease->key || !*lease->key || !lease->path || !*lease->path)
            abort();
    }
}

static GPtrArray *
copy_chain(const GPtrArray *chain)
{
    GPtrArray *copy = g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
    for (guint i = 0; i < chain->len; i++) {
        const VmlLayer *l = chain->pdata[i];
        g_ptr_array_add(copy, vml_layer_new(l->type, l->path, l->format, l->from_xml));
    }
    return copy;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse((const char *)data, size, "fuzz", &error);
    if (!d) {
        assert_error(error);
        return 0;
    }
    if (error)
        abort();   /* a model and an error at once */
    assert_model(d);

    /* Write every chain back as it is, print, read again. */
    for (guint i = 0; i < d->disks->len; i++) {
        VmlDisk *disk = d->disks->pdata[i];
        if (disk->chain->len == 0)
            continue;
        g_autoptr(GPtrArray) chain = copy_chain(disk->chain);
        vml_domain_set_chain(d, disk, chain);
    }
    g_autofree char *text = vml_domain_to_string(d);
    if (!text)
        abort();
    g_autoptr(GError) again_error = NULL;
    g_autoptr(VmlDomain) again = vml_domain_parse(text, strlen(text), "fuzz-again",
                                                  &again_error);
    if (!again)
        abort();   /* we wrote something we cannot read back */
    assert_model(again);
    if (again->disks->len != d->disks->len || again->leases->len != d->leases->len ||
        g_strcmp0(again->name, d->name) != 0 || g_strcmp0(again->uuid, d->uuid) != 0)
        abort();
    for (guint i = 0; i < d->disks->len; i++) {
        const VmlDisk *a = d->disks->pdata[i];
        const VmlDisk *b = again->disks->pdata[i];
        if (a->chain->len != b->chain->len || g_strcmp0(a->target, b->target) != 0)
            abort();
        for (guint j = 0; j < a->chain->len; j++) {
            const VmlLayer *x = a->chain->pdata[j];
            const VmlLayer *y = b->chain->pdata[j];
            if (g_strcmp0(x->path, y->path) != 0 || x->type != y->type ||
                g_strcmp0(x->format, y->format) != 0)
                abort();
        }
    }
    return 0;
}
