/* How far the data work of a chain change (a block job, a qemu-img run)
 * has got: measured for the summary line, and drawn on stderr when asked,
 * the way `virsh blockcommit --verbose` does, one line rewritten with \r:
 *   Block commit: [ 42 %] 12.3 MiB/s
 * ended by "[100 %]" and a newline once the work is done. */
#pragma once

#include <glib.h>

typedef struct _ChainProgress ChainProgress;

/* LABEL leads the line ("Block commit"); LENGTH is the bytes the work is
 * expected to go through (0: not known); DRAW: draw on stderr. The clock
 * starts here. */
ChainProgress *chain_progress_new(const char *label, guint64 length, gboolean draw);
void chain_progress_free(ChainProgress *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ChainProgress, chain_progress_free)

/* CUR of END bytes are done (libvirt's block job cursor; END may grow, as
 * it does during an active commit). */
void chain_progress_set(ChainProgress *p, guint64 cur, guint64 end);
/* FRACTION (0..1) of the work is done (qemu-img -p says no more); in bytes
 * of the length when it is known. */
void chain_progress_set_fraction(ChainProgress *p, double fraction);
/* The work stopped: with DONE the line shows 100 %; either way it is ended
 * with a newline, so what is printed next starts on a line of its own.
 * Stops the clock. Further calls do nothing. */
void chain_progress_end(ChainProgress *p, gboolean done);

/* The bytes the work went through: the last END reported, else the length
 * given (0: not known). */
guint64 chain_progress_length(const ChainProgress *p);
/* Microseconds from chain_progress_new to chain_progress_end (or now). */
gint64 chain_progress_elapsed(const ChainProgress *p);
