/* io.vmlease.Lease.OpenImage and Reopen: an image fd never comes without
 * the lease that allows it (read-write: exclusive, read-only: shared), and
 * a reopen that fails leaves the lease, the stash and the caller's fd as
 * they were. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "fd-stash.h"
#include "lease-table.h"
#include "open-as.h"

/* Lease KEY (the resource of the image at canonical PATH) for H in MODE
 * and open PATH to match;
 * a holder already holding it exclusively keeps that for a read-only open.
 * Returns the fd, or -1 (*PARAMS: a conflict's parameters, may be NULL). */
int vml_image_open_leased(VmlLeaseTable *t, VmlHolder *h, const char *key,
                          const char *path, VmlMode mode,
                          const VmlCreds *creds, JsonObject **params, GError **error);

/* Reopen PATH (resource KEY), open as OLD_FD (consumed: it goes to the stash under
 * STASH_NAME for the holder's uuid, and stays there on success), in MODE.
 * CREDS are the caller's: the file is opened with its rights, and its uid
 * owns the stash entry; *LIMIT names the stash limit hit. */
int vml_image_reopen(VmlLeaseTable *t, VmlStash *stash, VmlHolder *h, const char *key,
                     const char *path, int old_fd, VmlMode mode, const char *stash_name,
                     const VmlCreds *creds, const char **limit, JsonObject **params,
                     GError **error);
