/* libFuzzer target: the qcow2 header parser, and the promise that a header
 * it accepts survives a mark and an unmark with everything else intact. */
#include "vml-image-owner.h"
#include "vml-qcow2.h"

#include <stdint.h>
#include <string.h>

static GBytes *
owner_bytes(void)
{
    VmlImageOwner o = {
        .pid = 4242, .start_time = 99, .time_set = 1700000000, .generation = 7,
        .uuid = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
        .machine_id = (char *)"0123456789abcdef0123456789abcdef",
        .boot_id = (char *)"6f1e5a2c-0d3b-4c8e-9a7f-1b2c3d4e5f60",
        .hostname = (char *)"fuzz", .program = (char *)"fuzz", .name = (char *)"vm",
    };
    return vml_image_owner_encode(&o);
}

/* The input with AREA laid over its start, as the file would be after the
 * write. */
static guint8 *
overlay(const uint8_t *data, size_t size, GBytes *area, size_t *out_size)
{
    gsize n;
    const guint8 *a = g_bytes_get_data(area, &n);
    *out_size = MAX(size, n);
    guint8 *buf = g_malloc0(*out_size);
    memcpy(buf, data, size);
    memcpy(buf, a, n);
    return buf;
}

/* Every extension but ours, in order and byte for byte. */
static void
assert_same_others(const VmlQcow2Header *a, const VmlQcow2Header *b)
{
    guint j = 0;
    for (guint i = 0; i < a->extensions->len; i++) {
        const VmlQcow2Ext *x = a->extensions->pdata[i];
        if (x->type == VML_QCOW2_EXT_OWNER)
            continue;
        while (j < b->extensions->len &&
               ((const VmlQcow2Ext *)b->extensions->pdata[j])->type == VML_QCOW2_EXT_OWNER)
            j++;
        if (j >= b->extensions->len)
            __builtin_trap();
        const VmlQcow2Ext *y = b->extensions->pdata[j++];
        if (x->type != y->type || !g_bytes_equal(x->data, y->data))
            __builtin_trap();
    }
    for (; j < b->extensions->len; j++) {
        if (((const VmlQcow2Ext *)b->extensions->pdata[j])->type != VML_QCOW2_EXT_OWNER)
            __builtin_trap();
    }
}

static void
assert_same_header(const VmlQcow2Header *a, const VmlQcow2Header *b)
{
    if (g_strcmp0(a->backing_file, b->backing_file) != 0 ||
        g_strcmp0(a->backing_format, b->backing_format) != 0 ||
        a->version != b->version || a->cluster_bits != b->cluster_bits ||
        a->virtual_size != b->virtual_size || a->header_length != b->header_length ||
        a->incompatible_features != b->incompatible_features)
        __builtin_trap();
    assert_same_others(a, b);
}

/* Write H over the input, parse the result again; NULL when H could not be
 * serialized (no room, or not to be rewritten). */
static VmlQcow2Header *
rewrite(const VmlQcow2Header *h, const uint8_t *data, size_t size)
{
    g_autoptr(GBytes) area = vml_qcow2_serialize(h, NULL);
    if (!area)
        return NULL;
    if (g_bytes_get_size(area) > h->cluster_size)
        __builtin_trap();   /* a rewrite must stay in the header cluster */
    size_t n;
    g_autofree guint8 *buf = overlay(data, size, area, &n);
    g_autoptr(GError) error = NULL;
    VmlQcow2Header *again = vml_qcow2_parse(buf, n, n, &error);
    if (!again)
        __builtin_trap();   /* we wrote something we cannot read back */
    return again;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_parse(data, size, size, &error);
    if (!h)
        return 0;
    const VmlQcow2Ext *ext = vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER);
    if (ext) {
        g_autoptr(VmlImageOwner) o = vml_image_owner_decode(ext->data, NULL);
        g_autofree char *text = o ? vml_image_owner_describe(o) : NULL;
        if (text && !*text)
            __builtin_trap();
    }

    /* Mark. */
    g_autoptr(GBytes) owner = owner_bytes();
    h->compatible_features |= VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_set_ext(h, VML_QCOW2_EXT_OWNER, owner);
    g_autoptr(VmlQcow2Header) marked = rewrite(h, data, size);
    if (!marked)
        return 0;
    assert_same_header(h, marked);
    const VmlQcow2Ext *m = vml_qcow2_find_ext(marked, VML_QCOW2_EXT_OWNER);
    if (!m || !g_bytes_equal(m->data, owner))
        __builtin_trap();
    if (marked->version >= 3 && !(marked->compatible_features & VML_QCOW2_COMPAT_IN_USE))
        __builtin_trap();
    g_autoptr(VmlImageOwner) back = vml_image_owner_decode(m->data, NULL);
    if (!back || back->pid != 4242 || back->generation != 7)
        __builtin_trap();

    /* Unmark: no owner left, the rest unchanged. */
    marked->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_remove_ext(marked, VML_QCOW2_EXT_OWNER);
    g_autoptr(VmlQcow2Header) cleared = rewrite(marked, data, size);
    if (!cleared)
        __builtin_trap();   /* smaller than what fitted a moment ago */
    if (vml_qcow2_find_ext(cleared, VML_QCOW2_EXT_OWNER) ||
        (cleared->compatible_features & VML_QCOW2_COMPAT_IN_USE))
        __builtin_trap();
    assert_same_header(h, cleared);
    return 0;
}
