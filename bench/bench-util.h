/* What the small benchmark programs share: a clock, a fatal error, and
 * percentiles printed as "name_p50_us: value" lines. */
#pragma once

#include <glib.h>

gint64 bench_now_ns(void);
/* "PROGRAM: WHAT: MESSAGE" on stderr, exit 1. */
void bench_die(const char *what, const GError *error) G_GNUC_NORETURN;
/* Sort US (N samples, microseconds) and print NAME_p50_us and NAME_p99_us. */
void bench_print_p50(const char *name, double *us, guint n);
