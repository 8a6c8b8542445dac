/* Opening an image for a client, with the client's rights: vmleased runs
 * as root, and must not hand a lease-group member an fd on a file that
 * member could not open itself. The path (canonical, from the lease's key)
 * is opened with no symlink followed anywhere in it, so a directory
 * swapped for a symlink between the lease and the open fails the open
 * instead of opening another file. */
#pragma once

#include <glib.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct {
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    guint n_groups;
} VmlCreds;

/* The credentials of the peer of the unix socket FD: CR (its SO_PEERCRED,
 * which the caller has read already) and its groups (SO_PEERGROUPS). */
void vml_creds_of_peer(int fd, const struct ucred *cr, VmlCreds *creds);

/* Open PATH with FLAGS (O_RDONLY or O_RDWR; O_CLOEXEC is added) as CREDS
 * would (NULL or uid 0: as ourselves): in a short-lived child that takes
 * on CREDS, the fd passed back. -1 with ERROR (VML_ERROR_PERMISSION_DENIED
 * for EACCES/EPERM, VML_ERROR_NO_SUCH_IMAGE otherwise). */
int vml_open_as(const char *path, int flags, const VmlCreds *creds, GError **error);

/* An O_PATH fd on PATH, symlinks followed but no /proc magic link
 * (/proc/self/fd/N and the like): -1 with errno (ELOOP for one). */
int vml_open_path_no_magic(const char *path);

/* An O_PATH fd on PATH (symlinks followed, no magic links) as CREDS
 * resolve it: fails
 * where CREDS may not look (a directory it cannot search), so nobody
 * learns through vmleased what exists there. Errors as vml_open_as. */
int vml_open_path_as(const char *path, const VmlCreds *creds, GError **error);
