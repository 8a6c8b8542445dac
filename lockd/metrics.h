/* What vmleased counts while it runs, for io.vmlease.Admin.Metrics and
 * `vmlease metrics` (OpenMetrics text): events since it started (a re-exec
 * starts them again), and the latency of lease calls as histograms. One
 * process, one main loop: plain counters. */
#pragma once

#include <glib.h>

typedef enum {
    VML_COUNT_ACQUIRES,      /* Acquire calls granted */
    VML_COUNT_RELEASES,      /* Release calls done */
    VML_COUNT_CONFLICTS,     /* Acquire calls refused: held by another, or QEMU has it */
    VML_COUNT_CALL_ERRORS,   /* any other call answered with an error */
    VML_COUNT_MARKS,         /* in-use marks written into images */
    VML_COUNT_UNMARKS,       /* in-use marks cleared */
    VML_COUNT_PARKED,        /* leases parked (a pause, a migration) */
    VML_COUNT_RECOVERED,     /* leases found again at start (records, locks) */
    VML_COUNT_CONNECTIONS,   /* connections accepted */
    VML_N_COUNTERS
} VmlCounter;

typedef enum {
    VML_LATENCY_ACQUIRE,
    VML_LATENCY_RELEASE,
    VML_N_LATENCIES
} VmlLatency;

void vml_metrics_count(VmlCounter counter, guint64 n);
/* One call of kind LATENCY took USEC microseconds. */
void vml_metrics_observe(VmlLatency latency, gint64 usec);

/* The Metrics reply's parameters as JSON text into OUT:
 * "counters":{NAME:N,...},"latencies":[{"name","buckets":[{"le_us","count"}],
 * "count","sum_us"}] (buckets cumulative, the last one every call). */
void vml_metrics_write(GString *out);
