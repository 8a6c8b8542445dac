#include "bench-util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

gint64
bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (gint64)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
bench_die(const char *what, const GError *error)
{
    fprintf(stderr, "%s: %s: %s\n", g_get_prgname() ? g_get_prgname() : "bench", what,
            error ? error->message : "failed");
    exit(1);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void
bench_print_p50(const char *name, double *us, guint n)
{
    qsort(us, n, sizeof(double), cmp_double);
    printf("%s_p50_us: %.1f\n", name, us[n / 2]);
    printf("%s_p99_us: %.1f\n", name, us[(n * 99) / 100]);
}
