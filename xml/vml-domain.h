/* A libvirt domain's storage, read from its XML with libxml2: every <disk>
 * with its backing chain, and the <lease> elements. The XML is hostile
 * input: no network, no external entities, no DTD, a size limit, and every
 * attribute we rely on checked. The parsed document is kept so a chain
 * change can be written back into it (vml_domain_set_chain). */
#pragma once

#include <glib.h>
#include <libxml/tree.h>

/* Documents larger than this are refused before parsing. */
#define VML_DOMAIN_XML_MAX (4 * 1024 * 1024)
/* Deepest <backingStore> nesting (and header chain) accepted. */
#define VML_DOMAIN_CHAIN_MAX 64

typedef enum {
    VML_DISK_FILE,
    VML_DISK_BLOCK,
    VML_DISK_OTHER,     /* network, volume, nvme, ...: nothing we lease */
} VmlDiskType;

/* One image of a chain. */
typedef struct {
    VmlDiskType type;   /* file or block (a layer of another type ends the chain) */
    char *path;         /* absolute, as written (XML) or resolved (headers) */
    char *format;       /* "qcow2", "raw", ...; NULL when unknown */
    gboolean from_xml;  /* given by the XML (else read from image headers) */
} VmlLayer;

typedef struct {
    VmlDiskType type;
    char *device;       /* disk, cdrom, floppy, lun */
    char *target;       /* <target dev=...>, e.g. "vda"; never NULL */
    gboolean readonly;
    gboolean shareable;
    /* [0] is the disk's <source> (the active image), then its backing
     * images, nearest first. Empty when the disk has no source (an empty
     * cdrom) or is not a file/block disk. */
    GPtrArray *chain;   /* VmlLayer* */
    /* The XML says where the chain ends (an empty <backingStore/> at the
     * bottom); otherwise vml_domain_resolve_chains reads the rest from the
     * images' headers. */
    gboolean chain_complete;
    gboolean has_mirror;   /* <mirror>: a block job (copy, active commit) runs */
    xmlNodePtr node;       /* the <disk> element, owned by the document */
} VmlDisk;

typedef struct {
    char *lockspace;
    char *key;
    char *path;         /* <target path=...> */
    guint64 offset;
} VmlDomainLease;

typedef struct {
    xmlDocPtr doc;
    char *name;
    char *uuid;
    GPtrArray *disks;   /* VmlDisk* in document order */
    GPtrArray *leases;  /* VmlDomainLease* */
    /* Made by vml_domain_for_image: the domain, its name, uuid and disk
     * target are stand-ins that messages must not show. */
    gboolean lone_image;
} VmlDomain;

void vml_layer_free(VmlLayer *layer);
VmlLayer *vml_layer_new(VmlDiskType type, const char *path, const char *format, gboolean from_xml);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlLayer, vml_layer_free)

/* Parse domain XML (LEN bytes; WHAT names it in errors, e.g. the file or
 * the domain). Errors are VML_ERROR_INVALID_PARAMETER with a message
 * naming WHAT and, where there is one, the line. */
VmlDomain *vml_domain_parse(const char *xml, gsize len, const char *what, GError **error);
VmlDomain *vml_domain_parse_file(const char *path, GError **error);
/* A one-disk model of a lone image (no domain), so the planner can work on
 * an image as on a domain: the document is a minimal domain (name "image",
 * one <disk> with target "vda" whose chain is read from the headers) valid
 * against libvirt's schema; lone_image is set. */
VmlDomain *vml_domain_for_image(const char *path, GError **error);
void vml_domain_free(VmlDomain *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlDomain, vml_domain_free)

/* Complete each file/block disk's chain from the qcow2 headers where the
 * XML does not say where it ends: relative backing names are resolved
 * against the directory of the image naming them, the depth is limited to
 * VML_DOMAIN_CHAIN_MAX and a loop is an error naming the image. */
gboolean vml_domain_resolve_chains(VmlDomain *d, GError **error);

/* The disk whose target dev is NAME, or whose active image is the path NAME
 * (compared after realpath); NULL with an error listing the disks. */
VmlDisk *vml_domain_find_disk(VmlDomain *d, const char *name, GError **error);

/* Replace DISK's chain by CHAIN (VmlLayer*, [0] the new active image) in the
 * model and in the document: <source>, <driver type>, and a nested
 * <backingStore> per backing layer ending with an empty <backingStore/>. */
void vml_domain_set_chain(VmlDomain *d, VmlDisk *disk, GPtrArray *chain);

/* The document as XML text (formatted). */
char *vml_domain_to_string(VmlDomain *d);

/* Validate the document against libvirt's RelaxNG schema SCHEMA (NULL:
 * /usr/share/libvirt/schemas/domain.rng); the error quotes the first
 * complaints. */
gboolean vml_domain_validate(VmlDomain *d, const char *schema, GError **error);
