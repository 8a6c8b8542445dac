/* Domain XML: disks, chains (from the XML and from qcow2 headers that the
 * real qemu-img wrote), leases, hostile documents, writing a chain back and
 * libvirt's schema. */
#include "vml-domain.h"
#include "vml-error.h"
#include "image-util.h"

#include <libxml/tree.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHEMA "/usr/share/libvirt/schemas/domain.rng"

static char *root;

/* A fresh directory for one test, so images never clash. */
static char *
test_dir(const char *name)
{
    char *dir = g_build_filename(root, name, NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    return dir;
}

static char *
at(const char *dir, const char *name)
{
    return g_build_filename(dir, name, NULL);
}

/* Fixture NAME with @DIR@ replaced by DIR. */
static char *
fixture(const char *name, const char *dir)
{
    g_autofree char *path = g_build_filename(FIXTURES_DIR, name, NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, &error));
    g_assert_no_error(error);
    g_autoptr(GString) s = g_string_new(text);
    g_string_replace(s, "@DIR@", dir, 0);
    return g_string_free(g_steal_pointer(&s), FALSE);
}

static VmlDomain *
parse_fixture(const char *name, const char *dir)
{
    g_autofree char *xml = fixture(name, dir);
    g_autoptr(GError) error = NULL;
    VmlDomain *d = vml_domain_parse(xml, strlen(xml), name, &error);
    g_assert_no_error(error);
    g_assert_nonnull(d);
    return d;
}

/* Parse XML (LEN bytes), expect failure, and return the message. */
static char *
parse_error(const char *xml, gsize len, const char *what)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse(xml, len, what, &error);
    g_assert_null(d);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    return g_strdup(error->message);
}

static char *
parse_error_str(const char *xml, const char *what)
{
    return parse_error(xml, strlen(xml), what);
}

static void
assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        g_error("expected '%s' in: %s", needle, haystack);
}

static void
assert_layer(VmlDisk *disk, guint i, VmlDiskType type, const char *path, const char *format,
             gboolean from_xml)
{
    g_assert_cmpuint(i, <, disk->chain->len);
    VmlLayer *layer = disk->chain->pdata[i];
    g_assert_cmpint(layer->type, ==, type);
    g_assert_cmpstr(layer->path, ==, path);
    g_assert_cmpstr(layer->format, ==, format);
    g_assert_cmpint(layer->from_xml, ==, from_xml);
}

static void
assert_valid(VmlDomain *d)
{
    g_autoptr(GError) error = NULL;
    gboolean ok = vml_domain_validate(d, SCHEMA, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

/* The three images of the system disk of three-disks.xml, and the others. */
static void
make_three_disk_images(const char *dir)
{
    image_util_run(dir, "qemu-img create -q -f raw base.raw 1M && "
                        "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && "
                        "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
                        "qemu-img create -q -f raw ro.raw 1M && "
                        "qemu-img create -q -f raw shared.raw 1M");
}

static void
test_three_disks(void)
{
    g_autofree char *dir = test_dir("three-disks");
    make_three_disk_images(dir);
    g_autoptr(VmlDomain) d = parse_fixture("three-disks.xml", dir);
    g_autofree char *top = at(dir, "top.qcow2");
    g_autofree char *mid = at(dir, "mid.qcow2");
    g_autofree char *base = at(dir, "base.raw");
    g_autofree char *ro = at(dir, "ro.raw");
    g_autofree char *shared = at(dir, "shared.raw");

    g_assert_cmpstr(d->name, ==, "three-disks");
    g_assert_cmpstr(d->uuid, ==, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
    g_assert_cmpuint(d->disks->len, ==, 4);
    g_assert_cmpuint(d->leases->len, ==, 0);

    VmlDisk *vda = d->disks->pdata[0];
    g_assert_cmpint(vda->type, ==, VML_DISK_FILE);
    g_assert_cmpstr(vda->device, ==, "disk");
    g_assert_cmpstr(vda->target, ==, "vda");
    g_assert_false(vda->readonly);
    g_assert_false(vda->shareable);
    g_assert_false(vda->has_mirror);
    g_assert_true(vda->chain_complete);
    g_assert_cmpuint(vda->chain->len, ==, 3);
    assert_layer(vda, 0, VML_DISK_FILE, top, "qcow2", TRUE);
    assert_layer(vda, 1, VML_DISK_FILE, mid, "qcow2", TRUE);
    assert_layer(vda, 2, VML_DISK_FILE, base, "raw", TRUE);
    g_assert_true(xmlStrEqual(vda->node->name, BAD_CAST "disk"));

    VmlDisk *vdb = d->disks->pdata[1];
    g_assert_cmpstr(vdb->target, ==, "vdb");
    g_assert_true(vdb->readonly);
    g_assert_false(vdb->shareable);
    g_assert_true(vdb->chain_complete);
    g_assert_cmpuint(vdb->chain->len, ==, 1);
    assert_layer(vdb, 0, VML_DISK_FILE, ro, "raw", TRUE);

    VmlDisk *sda = d->disks->pdata[2];
    g_assert_cmpint(sda->type, ==, VML_DISK_BLOCK);
    g_assert_cmpstr(sda->target, ==, "sda");
    g_assert_false(sda->readonly);
    g_assert_true(sda->shareable);
    g_assert_false(sda->chain_complete);   /* no <backingStore/>: unknown */
    g_assert_cmpuint(sda->chain->len, ==, 1);
    assert_layer(sda, 0, VML_DISK_BLOCK, shared, "raw", TRUE);

    VmlDisk *hdc = d->disks->pdata[3];
    g_assert_cmpint(hdc->type, ==, VML_DISK_FILE);
    g_assert_cmpstr(hdc->device, ==, "cdrom");
    g_assert_cmpstr(hdc->target, ==, "hdc");
    g_assert_true(hdc->readonly);
    g_assert_cmpuint(hdc->chain->len, ==, 0);

    /* Only sda needs its header: a raw image, so nothing more. */
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_domain_resolve_chains(d, &error));
    g_assert_no_error(error);
    g_assert_true(sda->chain_complete);
    g_assert_cmpuint(sda->chain->len, ==, 1);
    g_assert_cmpuint(vda->chain->len, ==, 3);
    g_assert_cmpuint(hdc->chain->len, ==, 0);

    assert_valid(d);
}

/* sub/top.qcow2 -> mid.qcow2 -> base.raw, all named relative to sub/, and
 * sub/other.qcow2 -> mid.qcow2. */
static void
make_header_images(const char *dir)
{
    image_util_run(dir, "mkdir -p sub && cd sub && "
                        "qemu-img create -q -f raw base.raw 1M && "
                        "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && "
                        "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
                        "qemu-img create -q -f qcow2 -b ./mid.qcow2 -F qcow2 other.qcow2");
}

static void
test_chain_from_headers(void)
{
    g_autofree char *dir = test_dir("headers");
    make_header_images(dir);
    g_autoptr(VmlDomain) d = parse_fixture("headers.xml", dir);
    g_autofree char *top = at(dir, "sub/top.qcow2");
    g_autofree char *mid = at(dir, "sub/mid.qcow2");
    g_autofree char *base = at(dir, "sub/base.raw");

    VmlDisk *vda = d->disks->pdata[0];
    g_assert_false(vda->chain_complete);
    g_assert_cmpuint(vda->chain->len, ==, 1);

    g_autoptr(GError) error = NULL;
    g_assert_true(vml_domain_resolve_chains(d, &error));
    g_assert_no_error(error);
    g_assert_true(vda->chain_complete);
    g_assert_cmpuint(vda->chain->len, ==, 3);
    assert_layer(vda, 0, VML_DISK_FILE, top, "qcow2", TRUE);
    assert_layer(vda, 1, VML_DISK_FILE, mid, "qcow2", FALSE);
    assert_layer(vda, 2, VML_DISK_FILE, base, "raw", FALSE);
}

static void
test_partial_chain(void)
{
    g_autofree char *dir = test_dir("partial");
    make_header_images(dir);
    g_autoptr(VmlDomain) d = parse_fixture("headers.xml", dir);
    g_autofree char *other = at(dir, "sub/other.qcow2");
    g_autofree char *mid = at(dir, "sub/mid.qcow2");
    g_autofree char *base = at(dir, "sub/base.raw");

    VmlDisk *vdb = d->disks->pdata[1];
    g_assert_cmpstr(vdb->target, ==, "vdb");
    g_assert_false(vdb->chain_complete);
    g_assert_cmpuint(vdb->chain->len, ==, 2);

    g_autoptr(GError) error = NULL;
    g_assert_true(vml_domain_resolve_chains(d, &error));
    g_assert_no_error(error);
    g_assert_true(vdb->chain_complete);
    g_assert_cmpuint(vdb->chain->len, ==, 3);
    assert_layer(vdb, 0, VML_DISK_FILE, other, "qcow2", TRUE);
    assert_layer(vdb, 1, VML_DISK_FILE, mid, "qcow2", TRUE);
    assert_layer(vdb, 2, VML_DISK_FILE, base, "raw", FALSE);
}

/* A raw image's content is the guest's: one that looks like qcow2 with a
 * backing file must not pull that file into the chain when the XML or the
 * parent's header says it is raw (QEMU never looks inside it). */
static void
test_declared_raw_not_probed(void)
{
    g_autofree char *dir = test_dir("declared-raw");
    image_util_run(dir, "qemu-img create -q -f qcow2 secret.qcow2 1M && "
                        "qemu-img create -q -f qcow2 -b secret.qcow2 -F qcow2 forged.img && "
                        "qemu-img create -q -f qcow2 -b forged.img -F raw top.qcow2");
    g_autofree char *top = at(dir, "top.qcow2");
    g_autofree char *forged = at(dir, "forged.img");
    g_autofree char *xml = g_strdup_printf(
        "<domain><name>raw</name><uuid>u</uuid><devices>"
        "<disk type='file'><driver name='qemu' type='qcow2'/><source file='%s'/>"
        "<target dev='vda'/></disk>"
        "<disk type='file'><driver name='qemu' type='raw'/><source file='%s'/>"
        "<target dev='vdb'/></disk>"
        "<disk type='file'><source file='%s'/><target dev='vdc'/></disk>"
        "</devices></domain>", top, forged, forged);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse(xml, strlen(xml), "raw.xml", &error);
    g_assert_no_error(error);
    g_assert_true(vml_domain_resolve_chains(d, &error));
    g_assert_no_error(error);

    VmlDisk *vda = d->disks->pdata[0];
    g_assert_cmpuint(vda->chain->len, ==, 2);
    assert_layer(vda, 1, VML_DISK_FILE, forged, "raw", FALSE);
    VmlDisk *vdb = d->disks->pdata[1];
    g_assert_true(vdb->chain_complete);
    g_assert_cmpuint(vdb->chain->len, ==, 1);
    assert_layer(vdb, 0, VML_DISK_FILE, forged, "raw", TRUE);
    /* No <driver type>: the format is detected, and the header followed. */
    VmlDisk *vdc = d->disks->pdata[2];
    g_assert_cmpuint(vdc->chain->len, ==, 2);
    assert_layer(vdc, 0, VML_DISK_FILE, forged, "qcow2", TRUE);

    g_autoptr(VmlDomain) lone = vml_domain_for_image(top, &error);
    g_assert_no_error(error);
    VmlDisk *disk = lone->disks->pdata[0];
    g_assert_cmpuint(disk->chain->len, ==, 2);
    assert_layer(disk, 1, VML_DISK_FILE, forged, "raw", FALSE);
}

static void
test_leases_and_mirror(void)
{
    g_autofree char *dir = test_dir("leases");
    g_autoptr(VmlDomain) d = parse_fixture("leases-mirror.xml", dir);
    g_autofree char *a = at(dir, "leases/a");
    g_autofree char *b = at(dir, "leases/b");
    g_autofree char *src = at(dir, "copy-src.qcow2");

    g_assert_cmpuint(d->leases->len, ==, 2);
    VmlDomainLease *la = d->leases->pdata[0];
    g_assert_cmpstr(la->lockspace, ==, "vmlease");
    g_assert_cmpstr(la->key, ==, "disk-a");
    g_assert_cmpstr(la->path, ==, a);
    g_assert_cmpuint(la->offset, ==, 0);
    VmlDomainLease *lb = d->leases->pdata[1];
    g_assert_cmpstr(lb->lockspace, ==, "other");
    g_assert_cmpstr(lb->key, ==, "disk-b");
    g_assert_cmpstr(lb->path, ==, b);
    g_assert_cmpuint(lb->offset, ==, 1048576);

    g_assert_cmpuint(d->disks->len, ==, 2);
    VmlDisk *vda = d->disks->pdata[0];
    VmlDisk *vdb = d->disks->pdata[1];
    g_assert_true(vda->has_mirror);
    g_assert_false(vdb->has_mirror);
    /* The mirror's <source> is not the disk's. */
    g_assert_cmpuint(vda->chain->len, ==, 1);
    assert_layer(vda, 0, VML_DISK_FILE, src, "qcow2", TRUE);
    assert_valid(d);

    /* A lease without key, one with a bad offset. */
    g_autofree char *m1 = parse_error_str(
        "<domain><name>n</name><uuid>u</uuid><devices>"
        "<lease><lockspace>s</lockspace><target path='/l'/></lease>"
        "</devices></domain>", "leases.xml");
    g_assert_cmpstr(m1, ==, "leases.xml: <lease> #1 has no <key>");
    g_autofree char *m2 = parse_error_str(
        "<domain><name>n</name><uuid>u</uuid><devices>"
        "<lease><key>k</key><target path='/l' offset='-1'/></lease>"
        "</devices></domain>", "leases.xml");
    g_assert_cmpstr(m2, ==, "leases.xml: lease k: invalid offset '-1'");
}

static void
test_find_disk(void)
{
    g_autofree char *dir = test_dir("find");
    make_three_disk_images(dir);
    g_autoptr(VmlDomain) d = parse_fixture("three-disks.xml", dir);
    g_autoptr(GError) error = NULL;

    VmlDisk *disk = vml_domain_find_disk(d, "vdb", &error);
    g_assert_no_error(error);
    g_assert_true(disk == d->disks->pdata[1]);
    /* By path: another spelling of the same file. */
    image_util_run(dir, "ln -s top.qcow2 link.qcow2");
    g_autofree char *link = at(dir, "link.qcow2");
    disk = vml_domain_find_disk(d, link, &error);
    g_assert_no_error(error);
    g_assert_true(disk == d->disks->pdata[0]);
    g_autofree char *dotted = at(dir, "./shared.raw");
    disk = vml_domain_find_disk(d, dotted, &error);
    g_assert_no_error(error);
    g_assert_true(disk == d->disks->pdata[2]);
    /* A backing image is not a disk. */
    g_autofree char *mid = at(dir, "mid.qcow2");
    g_assert_null(vml_domain_find_disk(d, mid, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_autofree char *want = g_strdup_printf(
        "domain three-disks has no disk %s (its disks: vda, vdb, sda, hdc)", mid);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);
    g_assert_null(vml_domain_find_disk(d, "vdz", &error));
    g_assert_cmpstr(error->message, ==,
                    "domain three-disks has no disk vdz (its disks: vda, vdb, sda, hdc)");
}

static void
test_entities_refused(void)
{
    g_autofree char *laughs = fixture("billion-laughs.xml", "/unused");
    g_autofree char *m1 = parse_error_str(laughs, "laughs.xml");
    g_assert_cmpstr(m1, ==, "laughs.xml: DOCTYPE and entities are not allowed");

    g_autofree char *xxe = fixture("xxe.xml", "/unused");
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse(xxe, strlen(xxe), "xxe.xml", &error);
    g_assert_null(d);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_assert_cmpstr(error->message, ==, "xxe.xml: DOCTYPE and entities are not allowed");
    g_assert_null(strstr(error->message, "root:"));

    /* An external DTD alone, and a parameter entity: refused the same way. */
    g_autofree char *m2 = parse_error_str(
        "<!DOCTYPE domain SYSTEM \"file:///etc/passwd\">\n"
        "<domain><name>n</name><uuid>u</uuid></domain>", "dtd.xml");
    g_assert_cmpstr(m2, ==, "dtd.xml: DOCTYPE and entities are not allowed");
    g_autofree char *m3 = parse_error_str(
        "<!DOCTYPE domain [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]>\n"
        "<domain><name>n</name><uuid>u</uuid></domain>", "pe.xml");
    g_assert_cmpstr(m3, ==, "pe.xml: DOCTYPE and entities are not allowed");
    /* Without a DOCTYPE an entity reference is just an error. */
    g_autofree char *m4 = parse_error_str(
        "<domain>\n<name>&xxe;</name><uuid>u</uuid></domain>", "undeclared.xml");
    assert_contains(m4, "undeclared.xml: invalid XML: line 2: Entity 'xxe' not defined");
}

static void
test_size_limit(void)
{
    gsize len = VML_DOMAIN_XML_MAX + 1;
    g_autofree char *big = g_malloc(len + 1);
    static const char head[] = "<domain><name>n</name><uuid>u</uuid><!--";
    static const char tail[] = "--></domain>";
    memset(big, ' ', len);
    memcpy(big, head, strlen(head));
    memcpy(big + len - strlen(tail), tail, strlen(tail));
    big[len] = '\0';
    g_autofree char *msg = parse_error(big, len, "big.xml");
    g_autofree char *want = g_strdup_printf("big.xml: %d bytes of XML, more than the limit of %d",
                                            VML_DOMAIN_XML_MAX + 1, VML_DOMAIN_XML_MAX);
    g_assert_cmpstr(msg, ==, want);

    /* One byte less is parsed. */
    memcpy(big + len - 1 - strlen(tail), tail, strlen(tail));
    big[len - 1] = '\0';
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse(big, len - 1, "big.xml", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(d->name, ==, "n");

    /* From a file, too (read no further than the limit). */
    g_autofree char *dir = test_dir("size");
    g_autofree char *path = at(dir, "big.xml");
    big[len - 1] = ' ';
    g_assert_true(g_file_set_contents(path, big, len, NULL));
    g_autoptr(VmlDomain) none = vml_domain_parse_file(path, &error);
    g_assert_null(none);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_autofree char *want_file = g_strdup_printf("%s: more than the limit of %d bytes of XML",
                                                 path, VML_DOMAIN_XML_MAX);
    g_assert_cmpstr(error->message, ==, want_file);
}

static void
test_parse_file(void)
{
    g_autofree char *dir = test_dir("file");
    g_autofree char *xml = fixture("three-disks.xml", dir);
    g_autofree char *path = at(dir, "dom.xml");
    g_assert_true(g_file_set_contents(path, xml, -1, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse_file(path, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(d->disks->len, ==, 4);
    g_autofree char *gone = at(dir, "gone.xml");
    g_assert_null(vml_domain_parse_file(gone, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    assert_contains(error->message, gone);
}

static void
test_bad_documents(void)
{
    static const struct { const char *xml; const char *says; } cases[] = {
        { "<domain>\n  <name>x</name>\n  <uuid>y</uuid>\n</domian>\n",
          "bad.xml: invalid XML: line 4: Opening and ending tag mismatch: domain line 1 and domian" },
        { "", "bad.xml: invalid XML: " },
        { "<network><name>x</name><uuid>y</uuid></network>",
          "bad.xml: the root element is <network>, not <domain>" },
        { "<domain><uuid>y</uuid></domain>", "bad.xml: <domain> has no <name>" },
        { "<domain><name></name><uuid>y</uuid></domain>", "bad.xml: <domain> has no <name>" },
        { "<domain><name>x</name></domain>", "bad.xml: <domain> has no <uuid>" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk><source file='/a'/><target dev='vda'/></disk>"
          "<disk device='cdrom'><target bus='ide'/></disk>"
          "</devices></domain>",
          "bad.xml: <disk> #2 has no <target dev=...>" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk type='file'><source file='images/a.qcow2'/><target dev='vda'/></disk>"
          "</devices></domain>",
          "bad.xml: disk vda: source path 'images/a.qcow2' is not absolute" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk type='block'><source dev='/dev/a'/><target dev='sdb'/>"
          "<backingStore type='file'><format type='raw'/><source file='b.raw'/></backingStore>"
          "</disk></devices></domain>",
          "bad.xml: disk sdb: source path 'b.raw' is not absolute" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk type='file'><source file='/i/top.qcow2'/><target dev='vdc'/>"
          "<backingStore type='file'><source file='/i/mid.qcow2'/>"
          "<backingStore type='file'><source file='/i/top.qcow2'/><backingStore/>"
          "</backingStore></backingStore></disk></devices></domain>",
          "bad.xml: disk vdc: backing chain loops back to /i/top.qcow2" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk type='file'><source file='/i/top.qcow2'/><target dev='vdd'/>"
          "<backingStore><source file='/i/mid.qcow2'/></backingStore>"
          "</disk></devices></domain>",
          "bad.xml: disk vdd: <backingStore> without type" },
        { "<domain><name>x</name><uuid>y</uuid><devices>"
          "<disk type='file'><source file='/i/top.qcow2'/><target dev='vde'/>"
          "<backingStore type='file'><format type='raw'/></backingStore>"
          "</disk></devices></domain>",
          "bad.xml: disk vde: <backingStore> without <source file=...>" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *msg = parse_error_str(cases[i].xml, "bad.xml");
        if (!g_str_has_prefix(msg, cases[i].says))
            g_error("case %u: expected '%s' in: %s", i, cases[i].says, msg);
    }
}

/* A disk whose XML chain nests DEPTH backing stores (then <backingStore/>). */
static char *
deep_domain(guint depth)
{
    g_autoptr(GString) s = g_string_new(
        "<domain><name>deep</name><uuid>u</uuid><devices><disk type='file'>"
        "<source file='/i/0.qcow2'/><target dev='vdq'/>");
    for (guint i = 1; i <= depth; i++)
        g_string_append_printf(s, "<backingStore type='file'><format type='qcow2'/>"
                                  "<source file='/i/%u.qcow2'/>", i);
    g_string_append(s, "<backingStore/>");
    for (guint i = 1; i <= depth; i++)
        g_string_append(s, "</backingStore>");
    g_string_append(s, "</disk></devices></domain>");
    return g_string_free(g_steal_pointer(&s), FALSE);
}

static void
test_chain_depth(void)
{
    g_autofree char *ok = deep_domain(VML_DOMAIN_CHAIN_MAX);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_parse(ok, strlen(ok), "deep.xml", &error);
    g_assert_no_error(error);
    VmlDisk *disk = d->disks->pdata[0];
    g_assert_cmpuint(disk->chain->len, ==, VML_DOMAIN_CHAIN_MAX + 1);
    g_assert_true(disk->chain_complete);

    g_autofree char *deep = deep_domain(VML_DOMAIN_CHAIN_MAX + 1);
    g_autofree char *msg = parse_error_str(deep, "deep.xml");
    g_autofree char *want = g_strdup_printf("deep.xml: disk vdq: <backingStore> nested deeper than %d",
                                            VML_DOMAIN_CHAIN_MAX);
    g_assert_cmpstr(msg, ==, want);
}

/* A one-disk domain whose disk vdx is PATH with no chain in the XML. */
static VmlDomain *
one_disk(const char *path, const char *backing)
{
    g_autofree char *bs = backing
        ? g_strdup_printf("<backingStore type='file'><format type='qcow2'/>"
                          "<source file='%s'/></backingStore>", backing)
        : g_strdup("");
    g_autofree char *xml = g_strdup_printf(
        "<domain><name>one</name><uuid>u</uuid><devices><disk type='file'>"
        "<driver name='qemu' type='qcow2'/><source file='%s'/>%s<target dev='vdx'/>"
        "</disk></devices></domain>", path, bs);
    g_autoptr(GError) error = NULL;
    VmlDomain *d = vml_domain_parse(xml, strlen(xml), "one.xml", &error);
    g_assert_no_error(error);
    return d;
}

static void
test_header_loop(void)
{
    g_autofree char *dir = test_dir("header-loop");
    image_util_run(dir, "qemu-img create -q -f qcow2 b.qcow2 1M && "
                        "qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 a.qcow2 && "
                        "qemu-img rebase -q -u -f qcow2 -b a.qcow2 -F qcow2 b.qcow2");
    g_autofree char *a = at(dir, "a.qcow2");
    g_autoptr(VmlDomain) d = one_disk(a, NULL);
    g_autoptr(GError) error = NULL;
    g_assert_false(vml_domain_resolve_chains(d, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_autofree char *want = g_strdup_printf(
        "domain one: disk vdx: %s: backing chain loops back to %s", a, a);
    g_assert_cmpstr(error->message, ==, want);

    /* The headers lead back into the part the XML gave: y (XML) -> x
     * (XML, chain open) -> y (header). y's own header has no backing. */
    image_util_run(dir, "qemu-img create -q -f qcow2 y.qcow2 1M && "
                        "qemu-img create -q -f qcow2 -b y.qcow2 -F qcow2 x.qcow2");
    g_autofree char *x = at(dir, "x.qcow2");
    g_autofree char *y = at(dir, "y.qcow2");
    g_autoptr(VmlDomain) d2 = one_disk(y, x);
    g_clear_error(&error);
    g_assert_false(vml_domain_resolve_chains(d2, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_autofree char *want2 = g_strdup_printf(
        "domain one: disk vdx: %s: backing chain loops back to %s", x, y);
    g_assert_cmpstr(error->message, ==, want2);
}

static void
test_header_missing_backing(void)
{
    g_autofree char *dir = test_dir("header-missing");
    image_util_run(dir, "qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 -u orphan.qcow2 1M");
    g_autofree char *orphan = at(dir, "orphan.qcow2");
    g_autofree char *gone = at(dir, "gone.qcow2");
    g_autoptr(VmlDomain) d = one_disk(orphan, NULL);
    g_autoptr(GError) error = NULL;
    g_assert_false(vml_domain_resolve_chains(d, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    g_autofree char *want = g_strdup_printf(
        "domain one: disk vdx: %s: backing file %s: No such file or directory", orphan, gone);
    g_assert_cmpstr(error->message, ==, want);
    VmlDisk *disk = d->disks->pdata[0];
    g_assert_false(disk->chain_complete);

    /* The active image itself missing. */
    g_autoptr(VmlDomain) d2 = one_disk(gone, NULL);
    g_clear_error(&error);
    g_assert_false(vml_domain_resolve_chains(d2, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    assert_contains(error->message, gone);
}

static void
test_set_chain(void)
{
    g_autofree char *dir = test_dir("set-chain");
    make_three_disk_images(dir);
    image_util_run(dir, "qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 snap.qcow2");
    g_autoptr(VmlDomain) d = parse_fixture("three-disks.xml", dir);
    g_autofree char *snap = at(dir, "snap.qcow2");
    g_autofree char *top = at(dir, "top.qcow2");
    g_autofree char *mid = at(dir, "mid.qcow2");
    g_autofree char *base = at(dir, "base.raw");
    g_autofree char *shared = at(dir, "shared.raw");

    /* A snapshot on vda: snap over the old chain. */
    VmlDisk *vda = d->disks->pdata[0];
    {
        g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_FILE, snap, "qcow2", FALSE));
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_FILE, top, "qcow2", TRUE));
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_FILE, mid, "qcow2", TRUE));
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_FILE, base, "raw", FALSE));
        vml_domain_set_chain(d, vda, chain);
    }   /* the caller's chain is gone: the disk has its own copy */
    g_assert_cmpuint(vda->chain->len, ==, 4);
    g_assert_true(vda->chain_complete);
    assert_layer(vda, 0, VML_DISK_FILE, snap, "qcow2", FALSE);
    assert_layer(vda, 3, VML_DISK_FILE, base, "raw", FALSE);

    /* sda, a block disk, becomes a file disk with a qcow2 overlay; the
     * cdrom gets a medium. */
    VmlDisk *sda = d->disks->pdata[2];
    VmlDisk *hdc = d->disks->pdata[3];
    {
        g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_FILE, snap, "qcow2", FALSE));
        g_ptr_array_add(chain, vml_layer_new(VML_DISK_BLOCK, shared, "raw", TRUE));
        vml_domain_set_chain(d, sda, chain);
        g_autoptr(GPtrArray) iso = g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
        g_ptr_array_add(iso, vml_layer_new(VML_DISK_FILE, "/srv/iso/install.iso", "raw", FALSE));
        vml_domain_set_chain(d, hdc, iso);
    }
    g_assert_cmpint(sda->type, ==, VML_DISK_FILE);
    assert_valid(d);

    g_autofree char *text = vml_domain_to_string(d);
    g_autofree char *expect_vda = g_strdup_printf(
        "    <disk type=\"file\" device=\"disk\">\n"
        "      <driver name=\"qemu\" type=\"qcow2\"/>\n"
        "      <source file=\"%s\"/>\n"
        "      <backingStore type=\"file\">\n"
        "        <format type=\"qcow2\"/>\n"
        "        <source file=\"%s\"/>\n"
        "        <backingStore type=\"file\">\n"
        "          <format type=\"qcow2\"/>\n"
        "          <source file=\"%s\"/>\n"
        "          <backingStore type=\"file\">\n"
        "            <format type=\"raw\"/>\n"
        "            <source file=\"%s\"/>\n"
        "            <backingStore/>\n"
        "          </backingStore>\n"
        "        </backingStore>\n"
        "      </backingStore>\n"
        "      <target dev=\"vda\" bus=\"virtio\"/>\n"
        "    </disk>\n", snap, top, mid, base);
    assert_contains(text, expect_vda);
    g_autofree char *expect_sda = g_strdup_printf(
        "      <source file=\"%s\"/>\n"
        "      <backingStore type=\"block\">\n"
        "        <format type=\"raw\"/>\n"
        "        <source dev=\"%s\"/>\n"
        "        <backingStore/>\n"
        "      </backingStore>\n", snap, shared);
    assert_contains(text, expect_sda);
    assert_contains(text, "<source file=\"/srv/iso/install.iso\"/>");

    /* Round trip: the text parses to the same chains. */
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) again = vml_domain_parse(text, strlen(text), "again", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(again->disks->len, ==, 4);
    VmlDisk *vda2 = again->disks->pdata[0];
    g_assert_true(vda2->chain_complete);
    g_assert_cmpuint(vda2->chain->len, ==, 4);
    assert_layer(vda2, 0, VML_DISK_FILE, snap, "qcow2", TRUE);
    assert_layer(vda2, 1, VML_DISK_FILE, top, "qcow2", TRUE);
    assert_layer(vda2, 2, VML_DISK_FILE, mid, "qcow2", TRUE);
    assert_layer(vda2, 3, VML_DISK_FILE, base, "raw", TRUE);
    VmlDisk *sda2 = again->disks->pdata[2];
    g_assert_cmpint(sda2->type, ==, VML_DISK_FILE);
    g_assert_true(sda2->shareable);
    g_assert_cmpuint(sda2->chain->len, ==, 2);
    assert_layer(sda2, 1, VML_DISK_BLOCK, shared, "raw", TRUE);
    VmlDisk *hdc2 = again->disks->pdata[3];
    g_assert_cmpuint(hdc2->chain->len, ==, 1);
    assert_layer(hdc2, 0, VML_DISK_FILE, "/srv/iso/install.iso", "raw", TRUE);
    assert_valid(again);

    /* Ejecting: an empty chain drops <source>. */
    g_autoptr(GPtrArray) none = g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
    vml_domain_set_chain(again, hdc2, none);
    g_assert_cmpuint(hdc2->chain->len, ==, 0);
    g_autofree char *ejected = vml_domain_to_string(again);
    g_assert_null(strstr(ejected, "install.iso"));
    assert_valid(again);
}

static void
test_for_image(void)
{
    g_autofree char *dir = test_dir("for-image");
    make_header_images(dir);
    /* Named through a symlinked directory: the model holds real paths. */
    image_util_run(dir, "ln -s sub alias");
    g_autofree char *via = at(dir, "alias/top.qcow2");
    g_autofree char *real_dir = realpath(dir, NULL);
    g_autofree char *top = at(real_dir, "sub/top.qcow2");
    g_autofree char *mid = at(real_dir, "sub/mid.qcow2");
    g_autofree char *base = at(real_dir, "sub/base.raw");

    g_autoptr(GError) error = NULL;
    g_autoptr(VmlDomain) d = vml_domain_for_image(via, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(d->name, ==, "image");
    g_assert_cmpuint(strlen(d->uuid), ==, 36);
    g_assert_cmpuint(d->disks->len, ==, 1);
    VmlDisk *vda = d->disks->pdata[0];
    g_assert_cmpstr(vda->target, ==, "vda");
    g_assert_cmpstr(vda->device, ==, "disk");
    g_assert_true(vda->chain_complete);
    g_assert_cmpuint(vda->chain->len, ==, 3);
    assert_layer(vda, 0, VML_DISK_FILE, top, "qcow2", FALSE);
    assert_layer(vda, 1, VML_DISK_FILE, mid, "qcow2", FALSE);
    assert_layer(vda, 2, VML_DISK_FILE, base, "raw", FALSE);
    assert_valid(d);
    /* Nothing left to read; the same image, the same uuid. */
    g_assert_true(vml_domain_resolve_chains(d, &error));
    g_assert_no_error(error);
    g_autoptr(VmlDomain) same = vml_domain_for_image(top, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(same->uuid, ==, d->uuid);

    g_autofree char *text = vml_domain_to_string(d);
    g_autoptr(VmlDomain) again = vml_domain_parse(text, strlen(text), "again", &error);
    g_assert_no_error(error);
    VmlDisk *vda2 = again->disks->pdata[0];
    g_assert_true(vda2->chain_complete);
    g_assert_cmpuint(vda2->chain->len, ==, 3);
    assert_layer(vda2, 2, VML_DISK_FILE, base, "raw", TRUE);

    /* A raw image: a one-layer chain. */
    g_autoptr(VmlDomain) raw = vml_domain_for_image(base, &error);
    g_assert_no_error(error);
    VmlDisk *rd = raw->disks->pdata[0];
    g_assert_cmpuint(rd->chain->len, ==, 1);
    assert_layer(rd, 0, VML_DISK_FILE, base, "raw", FALSE);
    assert_valid(raw);

    g_autofree char *gone = at(dir, "gone.qcow2");
    g_assert_null(vml_domain_for_image(gone, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    assert_contains(error->message, gone);
}

static void
test_schema_refuses(void)
{
    g_autofree char *dir = test_dir("schema");
    g_autoptr(VmlDomain) d = parse_fixture("three-disks.xml", dir);
    VmlDisk *vdb = d->disks->pdata[1];
    xmlNewChild(vdb->node, NULL, BAD_CAST "bogus", NULL);
    g_autoptr(GError) error = NULL;
    g_assert_false(vml_domain_validate(d, NULL, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    assert_contains(error->message, "domain three-disks is not valid against " SCHEMA ": ");
    assert_contains(error->message, "Extra element devices in interleave");
    assert_contains(error->message, "/domain/devices: ");

    g_clear_error(&error);
    g_assert_false(vml_domain_validate(d, "/nonexistent/domain.rng", &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_FAILED);
    assert_contains(error->message, "cannot load the schema /nonexistent/domain.rng");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img) {
        g_print("1..0 # SKIP qemu-img is not installed\n");
        return 0;
    }
    if (!g_file_test(SCHEMA, G_FILE_TEST_EXISTS)) {
        g_print("1..0 # SKIP %s is not installed\n", SCHEMA);
        return 0;
    }
    root = g_dir_make_tmp("vmlease-domain-XXXXXX", NULL);
    g_test_add_func("/domain-xml/three-disks", test_three_disks);
    g_test_add_func("/domain-xml/chain-from-headers", test_chain_from_headers);
    g_test_add_func("/domain-xml/partial-chain", test_partial_chain);
    g_test_add_func("/domain-xml/declared-raw-not-probed", test_declared_raw_not_probed);
    g_test_add_func("/domain-xml/leases-and-mirror", test_leases_and_mirror);
    g_test_add_func("/domain-xml/find-disk", test_find_disk);
    g_test_add_func("/domain-xml/entities-refused", test_entities_refused);
    g_test_add_func("/domain-xml/size-limit", test_size_limit);
    g_test_add_func("/domain-xml/parse-file", test_parse_file);
    g_test_add_func("/domain-xml/bad-documents", test_bad_documents);
    g_test_add_func("/domain-xml/chain-depth", test_chain_depth);
    g_test_add_func("/domain-xml/header-loop", test_header_loop);
    g_test_add_func("/domain-xml/header-missing-backing", test_header_missing_backing);
    g_test_add_func("/domain-xml/set-chain", test_set_chain);
    g_test_add_func("/domain-xml/for-image", test_for_image);
    g_test_add_func("/domain-xml/schema-refuses", test_schema_refuses);
    int rc = g_test_run();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", root);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(root);
    return rc;
}
