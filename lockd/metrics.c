#include "metrics.h"
#include "vml-json-write.h"

static const char *const counter_names[VML_N_COUNTERS] = {
    [VML_COUNT_ACQUIRES] = "acquires",
    [VML_COUNT_RELEASES] = "releases",
    [VML_COUNT_CONFLICTS] = "conflicts",
    [VML_COUNT_CALL_ERRORS] = "call_errors",
    [VML_COUNT_MARKS] = "marks",
    [VML_COUNT_UNMARKS] = "unmarks",
    [VML_COUNT_PARKED] = "parked",
    [VML_COUNT_RECOVERED] = "recovered",
    [VML_COUNT_CONNECTIONS] = "connections",
};

static const char *const latency_names[VML_N_LATENCIES] = {
    [VML_LATENCY_ACQUIRE] = "acquire",
    [VML_LATENCY_RELEASE] = "release",
};

/* Upper bounds in microseconds; one more bucket holds the rest. */
static const gint64 bounds_us[] = { 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000,
                                    1000000 };
#define N_BUCKETS (G_N_ELEMENTS(bounds_us) + 1)

static struct {
    guint64 counters[VML_N_COUNTERS];
    struct {
        guint64 buckets[N_BUCKETS];   /* not cumulative here */
        guint64 count;
        guint64 sum_us;
    } latencies[VML_N_LATENCIES];
} m;

void
vml_metrics_count(VmlCounter counter, guint64 n)
{
    m.counters[counter] += n;
}

void
vml_metrics_observe(VmlLatency latency, gint64 usec)
{
    guint b = 0;
    while (b < G_N_ELEMENTS(bounds_us) && usec > bounds_us[b])
        b++;
    m.latencies[latency].buckets[b]++;
    m.latencies[latency].count++;
    m.latencies[latency].sum_us += (guint64)MAX(usec, 0);
}

void
vml_metrics_write(GString *out)
{
    g_string_append(out, "\"counters\":{");
    for (guint i = 0; i < VML_N_COUNTERS; i++)
        vml_json_write_member_int(out, i == 0, counter_names[i], (gint64)m.counters[i]);
    g_string_append(out, "},\"latencies\":[");
    for (guint l = 0; l < VML_N_LATENCIES; l++) {
        g_string_append(out, l ? ",{" : "{");
        vml_json_write_member_string(out, TRUE, "name", latency_names[l]);
        g_string_append(out, ",\"buckets\":[");
        guint64 sum = 0;
        for (guint b = 0; b < N_BUCKETS; b++) {
            sum += m.latencies[l].buckets[b];
            g_string_append(out, b ? ",{" : "{");
            /* The last bucket has no bound: +Inf, said as -1. */
            vml_json_write_member_int(out, TRUE, "le_us",
                                      b < G_N_ELEMENTS(bounds_us) ? bounds_us[b] : -1);
            vml_json_write_member_int(out, FALSE, "count", (gint64)sum);
            g_string_append_c(out, '}');
        }
        g_string_append_c(out, ']');
        vml_json_write_member_int(out, FALSE, "count", (gint64)m.latencies[l].count);
        vml_json_write_member_int(out, FALSE, "sum_us", (gint64)m.latencies[l].sum_us);
        g_string_append_c(out, '}');
    }
    g_string_append_c(out, ']');
}
