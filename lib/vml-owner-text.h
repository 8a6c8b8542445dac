/* One way to say who holds a lease, in every message: the daemon's
 * Conflict, the CLI's tables and errors, libvirt's error through the
 * plugin. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* TEXT safe for a terminal: control characters become '?', invalid UTF-8
 * is made valid (names come from records written on other hosts). */
char *vml_text_sanitize(const char *text);

/* Local time, "YYYY-MM-DD HH:MM:SS". */
char *vml_text_time(gint64 unix_time);

/* An owner as the protocol's Owner object has it:
 * VM "NAME" (uuid U, pid P on host H, MODE since T[, parked for the
 * domain (REASON) since T]); a lock nobody registered is
 * process "PROGRAM" (pid P on host H, a lock held MODE that no VM
 * registered with vmleased). */
char *vml_owner_text(JsonObject *owner);
