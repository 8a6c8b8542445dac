/* Domain XML: parse the storage model (disks, chains, leases) out of a
 * libvirt domain document, complete chains from image headers, and write a
 * new chain back into the document. */
#include "vml-domain.h"
#include "vml-backing-chain.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlsave.h>

#define XML_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOCDATA)

/* ---- layers, disks, leases ---------------------------------------------- */

VmlLayer *
vml_layer_new(VmlDiskType type, const char *path, const char *format, gboolean from_xml)
{
    VmlLayer *layer = g_new0(VmlLayer, 1);
    layer->type = type;
    layer->path = g_strdup(path);
    layer->format = g_strdup(format);
    layer->from_xml = from_xml;
    return layer;
}

void
vml_layer_free(VmlLayer *layer)
{
    if (!layer)
        return;
    g_free(layer->path);
    g_free(layer->format);
    g_free(layer);
}

static GPtrArray *
chain_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)vml_layer_free);
}

static void
disk_free(VmlDisk *disk)
{
    if (!disk)
        return;
    g_free(disk->device);
    g_free(disk->target);
    if (disk->chain)
        g_ptr_array_unref(disk->chain);
    g_free(disk);
}

static void
lease_free(VmlDomainLease *lease)
{
    if (!lease)
        return;
    g_free(lease->lockspace);
    g_free(lease->key);
    g_free(lease->path);
    g_free(lease);
}

void
vml_domain_free(VmlDomain *d)
{
    if (!d)
        return;
    /* The disks point into the document: drop them first. */
    if (d->disks)
        g_ptr_array_unref(d->disks);
    if (d->leases)
        g_ptr_array_unref(d->leases);
    if (d->doc)
        xmlFreeDoc(d->doc);
    g_free(d->name);
    g_free(d->uuid);
    g_free(d);
}

/* ---- small libxml2 helpers ---------------------------------------------- */

static gboolean
is_element(xmlNodePtr node, const char *name)
{
    return node && node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           xmlStrEqual(node->name, BAD_CAST name);
}

/* The first child element of NODE called NAME (no namespace). */
static xmlNodePtr
child(xmlNodePtr node, const char *name)
{
    for (xmlNodePtr c = node->children; c; c = c->next) {
        if (is_element(c, name))
            return c;
    }
    return NULL;
}

static gboolean
has_child_elements(xmlNodePtr node)
{
    for (xmlNodePtr c = node->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE)
            return TRUE;
    }
    return FALSE;
}

/* Attribute NAME of NODE in GLib memory; NULL when absent. */
static char *
prop(xmlNodePtr node, const char *name)
{
    if (!node)
        return NULL;
    xmlChar *v = xmlGetNoNsProp(node, BAD_CAST name);
    if (!v)
        return NULL;
    char *copy = g_strdup((const char *)v);
    xmlFree(v);
    return copy;
}

/* The text of NODE's child element NAME; NULL when absent or empty. */
static char *
child_text(xmlNodePtr node, const char *name)
{
    xmlNodePtr c = child(node, name);
    if (!c)
        return NULL;
    xmlChar *v = xmlNodeGetContent(c);
    char *copy = v && *v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return copy;
}

static VmlDiskType
disk_type_from_name(const char *name)
{
    /* libvirt takes a disk without type as a file. */
    if (!name || g_str_equal(name, "file"))
        return VML_DISK_FILE;
    if (g_str_equal(name, "block"))
        return VML_DISK_BLOCK;
    return VML_DISK_OTHER;
}

static const char *
disk_type_name(VmlDiskType type)
{
    return type == VML_DISK_BLOCK ? "block" : "file";
}

/* The attribute of <source> naming the image for a disk of TYPE. */
static const char *
source_attr(VmlDiskType type)
{
    return type == VML_DISK_BLOCK ? "dev" : "file";
}

/* ---- parsing ------------------------------------------------------------ */

typedef struct {
    gboolean doctype;     /* a DOCTYPE or entity declaration was seen */
    char *first_error;    /* "line N: message" of the first error */
} ParseState;

static void
record_error(ParseState *st, const xmlError *e)
{
    if (!st || !e || e->level < XML_ERR_ERROR || st->first_error)
        return;
    g_autofree char *msg = g_strstrip(g_strdup(e->message ? e->message : "unknown error"));
    st->first_error = e->line > 0 ? g_strdup_printf("line %d: %s", e->line, msg)
                                  : g_steal_pointer(&msg);
}

/* Parser errors arrive with the parser context as data. */
static void
on_parser_error(void *data, xmlErrorPtr e)
{
    xmlParserCtxtPtr ctxt = data;
    record_error(ctxt ? ctxt->_private : NULL, e);
}

/* Errors libxml2 raises outside the parser context (thread-local
 * handler, installed only while we parse). */
static void
on_other_error(void *data, xmlErrorPtr e)
{
    record_error(data, e);
}

/* A DOCTYPE is where entities (billion laughs, external files) come from:
 * stop before its internal subset is even read. */
static void
on_doctype(void *data, const xmlChar *name, const xmlChar *external_id,
           const xmlChar *system_id)
{
    (void)name;
    (void)external_id;
    (void)system_id;
    xmlParserCtxtPtr ctxt = data;
    ((ParseState *)ctxt->_private)->doctype = TRUE;
    xmlStopParser(ctxt);
}

static void
on_entity_decl(void *data, const xmlChar *name, int type, const xmlChar *public_id,
               const xmlChar *system_id, xmlChar *content)
{
    (void)name;
    (void)type;
    (void)public_id;
    (void)system_id;
    (void)content;
    xmlParserCtxtPtr ctxt = data;
    ((ParseState *)ctxt->_private)->doctype = TRUE;
    xmlStopParser(ctxt);
}

static void
libxml_init(void)
{
    static gsize done;
    if (g_once_init_enter(&done)) {
        xmlInitParser();
        g_once_init_leave(&done, 1);
    }
}

static xmlDocPtr
read_document(const char *xml, gsize len, const char *what, GError **error)
{
    if (len > VML_DOMAIN_XML_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: %" G_GSIZE_FORMAT " bytes of XML, more than the limit of %d",
                    what, len, VML_DOMAIN_XML_MAX);
        return NULL;
    }
    libxml_init();
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "%s: cannot create an XML parser", what);
        return NULL;
    }
    ParseState st = { 0 };
    ctxt->_private = &st;
    ctxt->sax->serror = on_parser_error;
    ctxt->sax->internalSubset = on_doctype;
    ctxt->sax->externalSubset = on_doctype;
    ctxt->sax->entityDecl = on_entity_decl;

    xmlStructuredErrorFunc saved_func = xmlStructuredError;
    void *saved_data = xmlStructuredErrorContext;
    xmlSetStructuredErrorFunc(&st, on_other_error);
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, xml, (int)len, NULL, NULL, XML_OPTIONS);
    xmlSetStructuredErrorFunc(saved_data, saved_func);

    if (!st.first_error && !doc) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        if (e && e->code != XML_ERR_OK)
            record_error(&st, e);
    }
    xmlFreeParserCtxt(ctxt);

    /* Belt and braces: the stop above leaves no subset, but never accept one. */
    if (st.doctype || (doc && (doc->intSubset || doc->extSubset))) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: DOCTYPE and entities are not allowed", what);
        xmlFreeDoc(doc);
        g_free(st.first_error);
        return NULL;
    }
    if (!doc || st.first_error) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER, "%s: invalid XML: %s",
                    what, st.first_error ? st.first_error : "cannot parse");
        xmlFreeDoc(doc);
        g_free(st.first_error);
        return NULL;
    }
    return doc;
}

/* The layer described by element NODE (a <disk> or a <backingStore>) of
 * TYPE: its <source>, or NULL without error when it has none. */
static VmlLayer *
parse_layer(xmlNodePtr node, VmlDiskType type, const char *format, const char *what,
            const char *target, GError **error)
{
    g_autofree char *path = prop(child(node, "source"), source_attr(type));
    if (!path || !*path)
        return NULL;
    if (!g_path_is_absolute(path)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: disk %s: source path '%s' is not absolute", what, target, path);
        return NULL;
    }
    return vml_layer_new(type, path, format, TRUE);
}

/* Walk DISK's nested <backingStore> elements into its chain. */
static gboolean
parse_backing_stores(VmlDisk *disk, const char *what, GError **error)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    VmlLayer *top = disk->chain->pdata[0];
    g_hash_table_add(seen, top->path);

    /* Iterative, never recursive: the nesting is hostile. */
    for (xmlNodePtr node = child(disk->node, "backingStore"); ;
         node = child(node, "backingStore")) {
        if (!node)
            return TRUE;   /* the XML does not say: the headers will */
        if (!has_child_elements(node)) {
            disk->chain_complete = TRUE;   /* <backingStore/>: nothing below */
            return TRUE;
        }
        if (disk->chain->len > VML_DOMAIN_CHAIN_MAX) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "%s: disk %s: <backingStore> nested deeper than %d",
                        what, disk->target, VML_DOMAIN_CHAIN_MAX);
            return FALSE;
        }
        g_autofree char *type_name = prop(node, "type");
        if (!type_name) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "%s: disk %s: <backingStore> without type", what, disk->target);
            return FALSE;
        }
        VmlDiskType type = disk_type_from_name(type_name);
        if (type == VML_DISK_OTHER) {
            /* network and the like: nothing below it is ours to lease. */
            disk->chain_complete = TRUE;
            return TRUE;
        }
        g_autofree char *format = prop(child(node, "format"), "type");
        g_autoptr(GError) local = NULL;
        VmlLayer *layer = parse_layer(node, type, format, what, disk->target, &local);
        if (local) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
        if (!layer) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "%s: disk %s: <backingStore> without <source %s=...>",
                        what, disk->target, source_attr(type));
            return FALSE;
        }
        g_ptr_array_add(disk->chain, layer);
        if (!g_hash_table_add(seen, layer->path)) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "%s: disk %s: backing chain loops back to %s",
                        what, disk->target, layer->path);
            return FALSE;
        }
    }
}

static VmlDisk *
parse_disk(xmlNodePtr node, guint index, const char *what, GError **error)
{
    g_autoptr(GPtrArray) holder = g_ptr_array_new_with_free_func((GDestroyNotify)disk_free);
    VmlDisk *disk = g_new0(VmlDisk, 1);
    g_ptr_array_add(holder, disk);
    disk->node = node;
    disk->chain = chain_new();

    g_autofree char *type_name = prop(node, "type");
    disk->type = disk_type_from_name(type_name);
    disk->device = prop(node, "device");
    if (!disk->device)
        disk->device = g_strdup("disk");
    disk->target = prop(child(node, "target"), "dev");
    if (!disk->target || !*disk->target) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: <disk> #%u has no <target dev=...>", what, index + 1);
        return NULL;
    }
    disk->readonly = child(node, "readonly") != NULL;
    disk->shareable = child(node, "shareable") != NULL;
    disk->has_mirror = child(node, "mirror") != NULL;

    if (disk->type == VML_DISK_OTHER) {
        disk->chain_complete = TRUE;   /* nothing we lease */
        return g_ptr_array_steal_index(holder, 0);
    }
    g_autofree char *format = prop(child(node, "driver"), "type");
    g_autoptr(GError) local = NULL;
    VmlLayer *top = parse_layer(node, disk->type, format, what, disk->target, &local);
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return NULL;
    }
    if (!top) {
        disk->chain_complete = TRUE;   /* no medium: an empty chain */
        return g_ptr_array_steal_index(holder, 0);
    }
    g_ptr_array_add(disk->chain, top);
    if (!parse_backing_stores(disk, what, error))
        return NULL;
    return g_ptr_array_steal_index(holder, 0);
}

static VmlDomainLease *
parse_lease(xmlNodePtr node, guint index, const char *what, GError **error)
{
    g_autoptr(GPtrArray) holder = g_ptr_array_new_with_free_func((GDestroyNotify)lease_free);
    VmlDomainLease *lease = g_new0(VmlDomainLease, 1);
    g_ptr_array_add(holder, lease);
    lease->lockspace = child_text(node, "lockspace");
    lease->key = child_text(node, "key");
    if (!lease->key) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: <lease> #%u has no <key>", what, index + 1);
        return NULL;
    }
    xmlNodePtr target = child(node, "target");
    lease->path = prop(target, "path");
    if (!lease->path || !*lease->path) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: lease %s has no <target path=...>", what, lease->key);
        return NULL;
    }
    g_autofree char *offset = prop(target, "offset");
    if (offset && !g_ascii_string_to_unsigned(offset, 10, 0, G_MAXUINT64, &lease->offset, NULL)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: lease %s: invalid offset '%s'", what, lease->key, offset);
        return NULL;
    }
    return g_ptr_array_steal_index(holder, 0);
}

VmlDomain *
vml_domain_parse(const char *xml, gsize len, const char *what, GError **error)
{
    g_return_val_if_fail(xml != NULL, NULL);
    if (!what)
        what = "domain XML";
    xmlDocPtr doc = read_document(xml, len, what, error);
    if (!doc)
        return NULL;
    g_autoptr(VmlDomain) d = g_new0(VmlDomain, 1);
    d->doc = doc;
    d->disks = g_ptr_array_new_with_free_func((GDestroyNotify)disk_free);
    d->leases = g_ptr_array_new_with_free_func((GDestroyNotify)lease_free);

    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!is_element(root, "domain")) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: the root element is <%s>, not <domain>", what,
                    root ? (const char *)root->name : "");
        return NULL;
    }
    d->name = child_text(root, "name");
    d->uuid = child_text(root, "uuid");
    if (!d->name || !d->uuid) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER, "%s: <domain> has no <%s>",
                    what, !d->name ? "name" : "uuid");
        return NULL;
    }
    for (xmlNodePtr devices = root->children; devices; devices = devices->next) {
        if (!is_element(devices, "devices"))
            continue;
        for (xmlNodePtr n = devices->children; n; n = n->next) {
            if (is_element(n, "disk")) {
                VmlDisk *disk = parse_disk(n, d->disks->len, what, error);
                if (!disk)
                    return NULL;
                g_ptr_array_add(d->disks, disk);
            } else if (is_element(n, "lease")) {
                VmlDomainLease *lease = parse_lease(n, d->leases->len, what, error);
                if (!lease)
                    return NULL;
                g_ptr_array_add(d->leases, lease);
            }
        }
    }
    return g_steal_pointer(&d);
}

/* Read at most VML_DOMAIN_XML_MAX + 1 bytes: enough to refuse a larger
 * file without reading all of it. */
static char *
read_capped(const char *path, gsize *len, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER, "cannot open %s: %s",
                    path, g_strerror(errno));
        return NULL;
    }
    g_autoptr(GByteArray) buf = g_byte_array_new();
    guint8 chunk[65536];
    while (buf->len <= VML_DOMAIN_XML_MAX) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER, "cannot read %s: %s",
                        path, g_strerror(errno));
            close(fd);
            return NULL;
        }
        if (n == 0)
            break;
        g_byte_array_append(buf, chunk, (guint)n);
    }
    close(fd);
    *len = buf->len;
    g_byte_array_append(buf, (const guint8 *)"", 1);
    return (char *)g_byte_array_free(g_steal_pointer(&buf), FALSE);
}

VmlDomain *
vml_domain_parse_file(const char *path, GError **error)
{
    gsize len;
    g_autofree char *xml = read_capped(path, &len, error);
    if (!xml)
        return NULL;
    /* LEN counts only what was read: not the size of the file. */
    if (len > VML_DOMAIN_XML_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "%s: more than the limit of %d bytes of XML", path, VML_DOMAIN_XML_MAX);
        return NULL;
    }
    return vml_domain_parse(xml, len, path, error);
}

/* ---- chains from headers ------------------------------------------------ */

static gboolean
resolve_disk(VmlDomain *d, VmlDisk *disk, GError **error)
{
    VmlLayer *last = disk->chain->pdata[disk->chain->len - 1];
    g_autoptr(GPtrArray) layers = vml_backing_chain_layers(last->path, last->format, error);
    if (!layers) {
        g_prefix_error(error, "domain %s: disk %s: ", d->name, disk->target);
        return FALSE;
    }
    /* The headers may lead back into the part the XML gave. */
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, free, NULL);
    for (guint i = 0; i + 1 < disk->chain->len; i++) {
        VmlLayer *layer = disk->chain->pdata[i];
        char *real = realpath(layer->path, NULL);
        if (real)
            g_hash_table_add(seen, real);
    }
    VmlBackingLayer *first = layers->pdata[0];
    if (!last->format)
        last->format = g_strdup(first->format);
    for (guint i = 1; i < layers->len; i++) {
        VmlBackingLayer *b = layers->pdata[i];
        if (g_hash_table_contains(seen, b->path)) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "domain %s: disk %s: %s: backing chain loops back to %s",
                        d->name, disk->target, last->path, b->path);
            return FALSE;
        }
        if (disk->chain->len > VML_DOMAIN_CHAIN_MAX) {
            g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                        "domain %s: disk %s: backing chain deeper than %d",
                        d->name, disk->target, VML_DOMAIN_CHAIN_MAX);
            return FALSE;
        }
        g_ptr_array_add(disk->chain,
                        vml_layer_new(b->block ? VML_DISK_BLOCK : VML_DISK_FILE, b->path,
                                      b->format, FALSE));
    }
    disk->chain_complete = TRUE;
    return TRUE;
}

gboolean
vml_domain_resolve_chains(VmlDomain *d, GError **error)
{
    for (guint i = 0; i < d->disks->len; i++) {
        VmlDisk *disk = d->disks->pdata[i];
        if (disk->type == VML_DISK_OTHER || disk->chain_complete || disk->chain->len == 0)
            continue;
        if (!resolve_disk(d, disk, error))
            return FALSE;
    }
    return TRUE;
}

/* ---- lookup ------------------------------------------------------------- */

VmlDisk *
vml_domain_find_disk(VmlDomain *d, const char *name, GError **error)
{
    for (guint i = 0; i < d->disks->len; i++) {
        VmlDisk *disk = d->disks->pdata[i];
        if (g_str_equal(disk->target, name))
            return disk;
    }
    /* A path: compare canonical names, falling back to the text when a
     * file does not exist (yet). */
    g_autofree char *real = realpath(name, NULL);
    for (guint i = 0; i < d->disks->len; i++) {
        VmlDisk *disk = d->disks->pdata[i];
        if (disk->chain->len == 0)
            continue;
        VmlLayer *top = disk->chain->pdata[0];
        g_autofree char *top_real = realpath(top->path, NULL);
        if (g_str_equal(top->path, name) ||
            (real && top_real && g_str_equal(real, top_real)))
            return disk;
    }
    g_autoptr(GString) targets = g_string_new(NULL);
    for (guint i = 0; i < d->disks->len; i++) {
        VmlDisk *disk = d->disks->pdata[i];
        g_string_append_printf(targets, "%s%s", i ? ", " : "", disk->target);
    }
    g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                "domain %s has no disk %s (its disks: %s)", d->name, name,
                targets->len ? targets->str : "none");
    return NULL;
}

/* ---- writing a chain back ----------------------------------------------- */

/* Remove the whitespace-only text under NODE: libvirt ignores it. */
static void
strip_blanks(xmlNodePtr node)
{
    xmlNodePtr c = node->children;
    while (c) {
        xmlNodePtr next = c->next;
        if (c->type == XML_TEXT_NODE && xmlIsBlankNode(c)) {
            xmlUnlinkNode(c);
            xmlFreeNode(c);
        } else if (c->type == XML_ELEMENT_NODE) {
            strip_blanks(c);
        }
        c = next;
    }
}

/* Indent the children of NODE (itself at INDENT) by INDENT + UNIT, the
 * way libvirt prints them. Elements holding text are left alone. */
static void
indent_children(xmlNodePtr node, const char *indent, const char *unit)
{
    gboolean elements = FALSE;
    for (xmlNodePtr c = node->children; c; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
            return;
        elements |= c->type == XML_ELEMENT_NODE;
    }
    if (!elements)
        return;
    g_autofree char *inner = g_strconcat(indent, unit, NULL);
    g_autofree char *before = g_strconcat("\n", inner, NULL);
    g_autofree char *after = g_strconcat("\n", indent, NULL);
    for (xmlNodePtr c = node->children; c; c = c->next) {
        xmlAddPrevSibling(c, xmlNewDocText(node->doc, BAD_CAST before));
        if (c->type == XML_ELEMENT_NODE)
            indent_children(c, inner, unit);
    }
    xmlAddChild(node, xmlNewDocText(node->doc, BAD_CAST after));
}

/* The whitespace before NODE on its line, when NODE starts a line. */
static char *
line_indent(xmlNodePtr node)
{
    xmlNodePtr prev = node->prev;
    if (!prev || prev->type != XML_TEXT_NODE || !xmlIsBlankNode(prev))
        return NULL;
    const char *text = (const char *)prev->content;
    const char *nl = strrchr(text, '\n');
    return nl ? g_strdup(nl + 1) : NULL;
}

/* Lay out DISK after a rewrite. A hand-formatted document (whitespace
 * between elements) keeps its style; the serializer does not indent
 * inside elements that hold text, so we do. A compact one is left for
 * xmlDocDumpFormatMemory to indent. */
static void
layout_disk(xmlNodePtr disk)
{
    g_autofree char *indent = line_indent(disk);
    /* The document's step: from the first child of <disk> as written. */
    g_autofree char *unit = NULL;
    for (xmlNodePtr c = disk->children; indent && c && !unit; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        g_autofree char *child_indent = line_indent(c);
        if (child_indent && g_str_has_prefix(child_indent, indent) &&
            strlen(child_indent) > strlen(indent))
            unit = g_strdup(child_indent + strlen(indent));
        break;
    }
    strip_blanks(disk);
    if (indent)
        indent_children(disk, indent, unit ? unit : "  ");
}

static void
set_source(xmlNodePtr source, const VmlLayer *layer)
{
    /* The other kind's attribute and a stale index must not survive. */
    xmlUnsetProp(source, BAD_CAST "file");
    xmlUnsetProp(source, BAD_CAST "dev");
    xmlUnsetProp(source, BAD_CAST "index");
    xmlSetProp(source, BAD_CAST source_attr(layer->type), BAD_CAST layer->path);
}

void
vml_domain_set_chain(VmlDomain *d, VmlDisk *disk, GPtrArray *chain)
{
    g_return_if_fail(d != NULL && disk != NULL && chain != NULL);
    for (guint i = 0; i < chain->len; i++) {
        const VmlLayer *layer = chain->pdata[i];
        g_return_if_fail(layer->type != VML_DISK_OTHER && layer->path);
    }
    xmlNodePtr node = disk->node;

    /* Old backing stores go, whatever the new chain. */
    for (xmlNodePtr bs; (bs = child(node, "backingStore"));) {
        xmlUnlinkNode(bs);
        xmlFreeNode(bs);
    }
    xmlNodePtr source = child(node, "source");
    /* A network (or other) source's attributes and hosts mean nothing to
     * a file or block disk: start that one afresh. */
    if (source && (chain->len == 0 || disk->type == VML_DISK_OTHER)) {
        xmlUnlinkNode(source);
        xmlFreeNode(source);
        source = NULL;
    }
    if (chain->len > 0) {
        const VmlLayer *top = chain->pdata[0];
        xmlSetProp(node, BAD_CAST "type", BAD_CAST disk_type_name(top->type));
        disk->type = top->type;
        xmlNodePtr driver = child(node, "driver");
        if (top->format) {
            if (!driver) {
                driver = xmlNewNode(NULL, BAD_CAST "driver");
                xmlSetProp(driver, BAD_CAST "name", BAD_CAST "qemu");
                if (node->children)
                    xmlAddPrevSibling(node->children, driver);
                else
                    xmlAddChild(node, driver);
            }
            xmlSetProp(driver, BAD_CAST "type", BAD_CAST top->format);
        }
        if (!source) {
            source = xmlNewNode(NULL, BAD_CAST "source");
            if (driver)
                xmlAddNextSibling(driver, source);
            else if (node->children)
                xmlAddPrevSibling(node->children, source);
            else
                xmlAddChild(node, source);
        }
        set_source(source, top);

        /* Nested like libvirt writes it, right after <source>. */
        xmlNodePtr parent = NULL;
        for (guint i = 1; i <= chain->len; i++) {
            xmlNodePtr bs = xmlNewNode(NULL, BAD_CAST "backingStore");
            if (parent)
                xmlAddChild(parent, bs);
            else
                xmlAddNextSibling(source, bs);
            parent = bs;
            if (i == chain->len)
                break;   /* the empty one: the chain ends here */
            const VmlLayer *layer = chain->pdata[i];
            xmlSetProp(bs, BAD_CAST "type", BAD_CAST disk_type_name(layer->type));
            if (layer->format) {
                xmlNodePtr fmt = xmlNewChild(bs, NULL, BAD_CAST "format", NULL);
                xmlSetProp(fmt, BAD_CAST "type", BAD_CAST layer->format);
            }
            xmlNodePtr src = xmlNewChild(bs, NULL, BAD_CAST "source", NULL);
            set_source(src, layer);
        }
    }

    layout_disk(node);

    /* The model follows; CHAIN stays the caller's. */
    g_autoptr(GPtrArray) copy = chain_new();
    for (guint i = 0; i < chain->len; i++) {
        const VmlLayer *layer = chain->pdata[i];
        g_ptr_array_add(copy, vml_layer_new(layer->type, layer->path, layer->format,
                                            layer->from_xml));
    }
    g_ptr_array_unref(disk->chain);
    disk->chain = g_steal_pointer(&copy);
    disk->chain_complete = TRUE;
}

char *
vml_domain_to_string(VmlDomain *d)
{
    xmlChar *buf = NULL;
    int size = 0;
    /* Always UTF-8, whatever the input declared: a UTF-16 dump is full of
     * NUL bytes, and the text goes to libvirt and terminals. */
    xmlDocDumpFormatMemoryEnc(d->doc, &buf, &size, "UTF-8", 1);
    char *copy = g_strndup((const char *)buf, size > 0 ? (gsize)size : 0);
    xmlFree(buf);
    return copy;
}

/* ---- a lone image ------------------------------------------------------- */

/* A UUID derived from the image's path: the same image always gets the
 * same one (version 5 layout, SHA-256 based). */
static char *
uuid_for_path(const char *path)
{
    g_autofree char *hex = g_compute_checksum_for_string(G_CHECKSUM_SHA256, path, -1);
    hex[12] = '5';
    hex[16] = "89ab"[g_ascii_xdigit_value(hex[16]) & 3];
    return g_strdup_printf("%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
                           hex + 20);
}

VmlDomain *
vml_domain_for_image(const char *path, GError **error)
{
    g_autoptr(GPtrArray) layers = vml_backing_chain_layers(path, NULL, error);
    if (!layers)
        return NULL;
    if (layers->len - 1 > VML_DOMAIN_CHAIN_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE,
                    "%s: backing chain deeper than %d", path, VML_DOMAIN_CHAIN_MAX);
        return NULL;
    }
    VmlBackingLayer *top = layers->pdata[0];
    VmlDiskType type = top->block ? VML_DISK_BLOCK : VML_DISK_FILE;
    g_autofree char *uuid = uuid_for_path(top->path);
    g_autofree char *escaped = g_markup_escape_text(top->path, -1);
    g_autofree char *xml = g_strdup_printf(
        "<domain type='qemu'>\n"
        "  <name>image</name>\n"
        "  <uuid>%s</uuid>\n"
        "  <memory unit='KiB'>131072</memory>\n"
        "  <os>\n"
        "    <type>hvm</type>\n"
        "  </os>\n"
        "  <devices>\n"
        "    <disk type='%s' device='disk'>\n"
        "      <driver name='qemu' type='%s'/>\n"
        "      <source %s='%s'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "    </disk>\n"
        "  </devices>\n"
        "</domain>\n",
        uuid, disk_type_name(type), top->format, source_attr(type), escaped);
    g_autoptr(VmlDomain) d = vml_domain_parse(xml, strlen(xml), top->path, error);
    if (!d)
        return NULL;
    g_autoptr(GPtrArray) chain = chain_new();
    for (guint i = 0; i < layers->len; i++) {
        VmlBackingLayer *b = layers->pdata[i];
        g_ptr_array_add(chain, vml_layer_new(b->block ? VML_DISK_BLOCK : VML_DISK_FILE,
                                             b->path, b->format, FALSE));
    }
    vml_domain_set_chain(d, d->disks->pdata[0], chain);
    d->lone_image = TRUE;
    return g_steal_pointer(&d);
}
