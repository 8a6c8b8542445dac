/* Planning a backing-chain change (commit, pull, rebase, snapshot) on one
 * disk of a domain model: which layers it touches, what the chain becomes,
 * and which lease every image needs while it is applied and afterwards.
 * Planning checks everything that can be checked without taking a lease:
 * the images exist, the change makes no cycle, no touched image is frozen
 * by a running block job. It changes nothing. */
#pragma once

#include "vml-domain.h"

typedef enum {
    VML_CHAIN_COMMIT,    /* data of top..above base into base; top..above base leave */
    VML_CHAIN_PULL,      /* data of the layers above base into the active image */
    VML_CHAIN_REBASE,    /* one layer gets a new backing image */
    VML_CHAIN_SNAPSHOT,  /* a new overlay on top of the active image */
} VmlChainOp;

typedef enum {
    VML_LEASE_NONE,
    VML_LEASE_SHARED,
    VML_LEASE_EXCLUSIVE,
} VmlLeaseMode;

typedef struct {
    VmlChainOp op;
    const char *disk;      /* target dev or active image; NULL: the only disk */
    const char *top;       /* commit: the top layer (default: the active
                              image); rebase: the layer rebased (default:
                              the active image) */
    const char *base;      /* commit: default the backing of top; pull:
                              the layer that stays as backing (NULL: none) */
    const char *backing;   /* rebase: the new backing image ("" : none; a
                              relative name is from the rebased image's
                              directory, as qemu-img rebase -b takes it) */
    const char *file;      /* snapshot: the new overlay (must not exist) */
    /* A running domain, changed through libvirt by its own VM holder
     * (which holds the chain leases already); otherwise an offline change
     * made with qemu-img by a holder that holds nothing before. */
    gboolean live;
} VmlChainRequest;

/* The lease one image needs. */
typedef struct {
    char *path;
    VmlLeaseMode during;   /* while the change is applied */
    VmlLeaseMode after;    /* once it is applied (offline: NONE) */
} VmlChainLease;

typedef struct {
    VmlChainOp op;
    gboolean live;
    gboolean lone_image;    /* planned on vml_domain_for_image's model: the
                               messages name the image, not a disk */
    VmlDisk *disk;          /* borrowed from the domain */
    GPtrArray *old_chain;   /* VmlLayer*, copies of the disk's chain */
    GPtrArray *new_chain;   /* VmlLayer*: the disk's chain afterwards */
    /* commit, pull: indexes of top and base in old_chain (base == len:
     * none); rebase: top is the layer rebased; snapshot: both 0. */
    guint top;
    guint base;
    gboolean active;        /* commit of the active image (libvirt pivots) */
    char *new_backing;      /* rebase: the new backing (NULL: none), canonical */
    char *new_backing_name; /* ... as the caller named it (relative: from the
                               directory of the image rebased), what its
                               header gets */
    char *new_backing_format;
    char *file;             /* snapshot: the new overlay. It does not exist
                               when planned; vmleased leases existing files
                               only, so the caller creates it (qemu-img
                               create) before vml_chain_leases_prepare and
                               removes it on abort. */
    GPtrArray *leases;      /* VmlChainLease*, every image touched */
} VmlChainPlan;

void vml_chain_plan_free(VmlChainPlan *plan);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlChainPlan, vml_chain_plan_free)

const char *vml_chain_op_name(VmlChainOp op);
const char *vml_lease_mode_name(VmlLeaseMode mode);

/* Plan REQ on DOM (chains resolved). FROZEN maps canonical image paths to
 * why they are frozen (a running block job; may be NULL); disks with a
 * <mirror> are frozen too. Errors: VML_ERROR_INVALID_PARAMETER for a
 * request that does not fit the chain or would make a cycle, NO_SUCH_IMAGE
 * for a missing or unreadable image, IMAGE_BUSY for a frozen one. */
VmlChainPlan *vml_chain_plan_new(VmlDomain *dom, const VmlChainRequest *req,
                                 GHashTable *frozen, GError **error);

/* The lease PATH needs (NULL if the plan does not touch it). */
const VmlChainLease *vml_chain_plan_lease(const VmlChainPlan *plan, const char *path);

/* Whether chains A and B (VmlLayer*) hold the same images in order. */
gboolean vml_chain_equal(GPtrArray *a, GPtrArray *b);

/* "A -> B -> C" for a chain of VmlLayer*. */
char *vml_chain_describe(GPtrArray *chain);
