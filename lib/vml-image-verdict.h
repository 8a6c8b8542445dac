/* Is an image free, in use, or marked by a use that is gone? One answer
 * for `vmlease inspect` and for the daemon's force-unlock checks. */
#pragma once

#include <glib.h>

#include "vml-image-owner.h"
#include "vml-qemu-probe.h"

typedef enum {
    VML_VERDICT_FREE,       /* no lease, no QEMU, no mark */
    VML_VERDICT_IN_USE,     /* a lease or a QEMU holds it */
    VML_VERDICT_UNKNOWN,    /* marked by another host: cannot be checked here */
    VML_VERDICT_STALE,      /* marked, but the use is gone */
    VML_VERDICT_CORRUPT,    /* its header (or chain) is not a valid image's */
} VmlVerdict;

const char *vml_verdict_name(VmlVerdict v);

/* IN_USE_BIT and OWNER (may be NULL) from the image header; LEASE_HOLDERS
 * a description of the current lease holders (NULL or "" when none);
 * QEMU the lock probe (may be NULL). Returns the verdict and sets *TEXT
 * to a sentence: "in use by ...", "stale: pid 123 is gone", ... */
VmlVerdict vml_image_verdict(gboolean in_use_bit, const VmlImageOwner *owner,
                             const char *lease_holders, const VmlQemuLocks *qemu,
                             char **text);
