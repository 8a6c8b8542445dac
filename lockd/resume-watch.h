/* While a VM's leases are parked, libvirt's status file of its domain is
 * watched (vml-domain-status.h). When a migration fails or is cancelled
 * during the switchover, QEMU resumes the source by itself, and libvirt,
 * finding the domain running, never asks for the leases back: the file
 * then says "running", and the leases are taken back. */
#pragma once

#include <glib.h>

typedef struct _VmlResumeWatch VmlResumeWatch;

/* FUNC(DATA) runs from the main loop once PATH says the domain runs; the
 * watch then stops by itself (free it from FUNC or later). */
VmlResumeWatch *vml_resume_watch_new(const char *path, GFunc func, gpointer data,
                                     GError **error);
void vml_resume_watch_free(VmlResumeWatch *w);
const char *vml_resume_watch_path(VmlResumeWatch *w);
