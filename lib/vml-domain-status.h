/* libvirt's status file of a running domain (<state_dir>/<name>.xml, e.g.
 * /run/libvirt/qemu/NAME.xml): what libvirt itself records of the domain's
 * run state and its current async job. The lock-driver calls do not say
 * why libvirt pauses a domain, or whether a start is an incoming
 * migration, and nothing at all is called when QEMU resumes a migration's
 * source by itself after a failure; this file says. Only the two
 * attributes are read (plain text, no XML parser: the file is libvirt's,
 * written by root). */
#pragma once

#include <glib.h>

/* STATE_DIR/NAME.xml, or NULL for a NAME that is not a plain file name. */
char *vml_domain_status_path(const char *state_dir, const char *name);

/* The domain's async job in TEXT (the file's content) is JOB ("migration
 * in", "migration out", "save", ...). */
gboolean vml_domain_status_has_job(const char *text, const char *job);

/* TEXT says the domain runs (<domstatus state='running'>). */
gboolean vml_domain_status_running(const char *text);
