/* vmlease metrics: vmleased's counters and latencies in the OpenMetrics
 * text format, for a node exporter's textfile collector or a scrape. */
#include "vmlease-cli.h"
#include "vml-lease-client.h"
#include "output.h"

/* What each counter counts, for its # HELP line. */
static const struct {
    const char *name, *help;
} counter_help[] = {
    { "acquires", "Acquire calls granted" },
    { "releases", "Release calls done" },
    { "conflicts", "Acquire calls refused: the image is held by another, or a QEMU has it" },
    { "call_errors", "Calls answered with any other error" },
    { "marks", "In-use marks written into qcow2 images" },
    { "unmarks", "In-use marks cleared" },
    { "parked", "Leases parked (a pause, a migration)" },
    { "recovered", "Leases found again when vmleased started" },
    { "connections", "Connections accepted" },
};

static const char *
help_of(const char *name)
{
    for (guint i = 0; i < G_N_ELEMENTS(counter_help); i++) {
        if (g_str_equal(counter_help[i].name, name))
            return counter_help[i].help;
    }
    return name;
}

/* MICROSECONDS as OpenMetrics seconds. */
static char *
seconds(gint64 usec)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    return g_strdup(g_ascii_dtostr(buf, sizeof(buf), (double)usec / 1e6));
}

static void
print_openmetrics(JsonObject *reply)
{
    FILE *out = stdout;
    JsonObject *counters = json_object_get_object_member(reply, "counters");
    g_autoptr(GList) names = json_object_get_members(counters);
    for (GList *n = names; n; n = n->next) {
        const char *name = n->data;
        fprintf(out, "# TYPE vmlease_%s counter\n# HELP vmlease_%s %s\nvmlease_%s_total %"
                G_GINT64_FORMAT "\n", name, name, help_of(name), name,
                json_object_get_int_member(counters, name));
    }
    JsonArray *latencies = json_object_get_array_member(reply, "latencies");
    for (guint i = 0; i < json_array_get_length(latencies); i++) {
        JsonObject *l = cli_json_array_object(latencies, i);
        const char *name = l ? cli_json_string(l, "name", NULL) : NULL;
        if (!name)
            continue;
        fprintf(out, "# TYPE vmlease_%s_seconds histogram\n# HELP vmlease_%s_seconds "
                "Time vmleased took to answer %s calls\n", name, name, name);
        JsonArray *buckets = cli_json_array(l, "buckets");
        for (guint b = 0; buckets && b < json_array_get_length(buckets); b++) {
            JsonObject *o = cli_json_array_object(buckets, b);
            gint64 le = o ? cli_json_int(o, "le_us", -1) : -1;
            g_autofree char *bound = le < 0 ? g_strdup("+Inf") : seconds(le);
            fprintf(out, "vmlease_%s_seconds_bucket{le=\"%s\"} %" G_GINT64_FORMAT "\n", name,
                    bound, o ? cli_json_int(o, "count", 0) : 0);
        }
        g_autofree char *sum = seconds(cli_json_int(l, "sum_us", 0));
        fprintf(out, "vmlease_%s_seconds_sum %s\nvmlease_%s_seconds_count %" G_GINT64_FORMAT
                "\n", name, sum, name, cli_json_int(l, "count", 0));
    }
    fputs("# EOF\n", out);
}

static int
metrics_run(const VmlCliCommand *cmd, VmlCliOptions *opts, int argc, char **argv)
{
    return cli_run_admin_query(cmd, opts, argc, argv, vml_admin_metrics, print_openmetrics);
}

const VmlCliCommand vml_cmd_metrics = {
    .name = "metrics",
    .synopsis = "[--json]",
    .summary = "Print vmleased's counters and call latencies (OpenMetrics text).",
    .description =
        "Print what vmleased counted since it started (io.vmlease.Admin.Metrics) in\n"
        "the OpenMetrics text format: vmlease_NAME_total counters (acquires,\n"
        "releases, conflicts, call_errors, marks, unmarks, parked, recovered,\n"
        "connections) and the vmlease_acquire_seconds and vmlease_release_seconds\n"
        "histograms, ending with '# EOF'. For a node exporter's textfile collector:\n"
        "  vmlease metrics > /var/lib/prometheus/node-exporter/vmlease.prom\n\n"
        "Options:\n"
        "  --json  print the daemon's reply as JSON\n",
    .run = metrics_run,
};
