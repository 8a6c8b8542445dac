/* The progress of a chain change's data work: see chain-progress.h. */
#include "chain-progress.h"
#include "output.h"

#include <stdio.h>
#include <string.h>

/* Redraw at most this often: a job polled every 50 ms need not repaint the
 * terminal (or fill a log) as often. */
#define REDRAW_US (200 * 1000)
/* No rate before this much time went by: the first samples say nothing. */
#define RATE_AFTER_US (100 * 1000)

struct _ChainProgress {
    char *label;
    gboolean draw;
    guint64 length;      /* expected bytes, from the caller */
    guint64 cur, end;    /* the last report */
    gboolean in_bytes;   /* cur and end count bytes (else only their ratio means anything) */
    gint64 start, stop;  /* monotonic; stop is 0 until the end */
    gint64 drawn_at;     /* when the line was last drawn, 0: never */
    gsize drawn_width;   /* its width, to blank what a shorter line leaves */
};

ChainProgress *
chain_progress_new(const char *label, guint64 length, gboolean draw)
{
    ChainProgress *p = g_new0(ChainProgress, 1);
    p->label = g_strdup(label);
    p->length = length;
    p->draw = draw;
    p->start = g_get_monotonic_time();
    return p;
}

void
chain_progress_free(ChainProgress *p)
{
    if (!p)
        return;
    chain_progress_end(p, FALSE);
    g_free(p->label);
    g_free(p);
}

gint64
chain_progress_elapsed(const ChainProgress *p)
{
    return (p->stop ? p->stop : g_get_monotonic_time()) - p->start;
}

guint64
chain_progress_length(const ChainProgress *p)
{
    return p->in_bytes && p->end ? p->end : p->length;
}

static void
draw(ChainProgress *p, gboolean force)
{
    gint64 now = g_get_monotonic_time();
    if (!p->draw || (!force && p->drawn_at && now - p->drawn_at < REDRAW_US))
        return;
    guint percent = p->end ? (guint)((double)p->cur * 100 / (double)p->end) : 0;
    g_autoptr(GString) line = g_string_new(NULL);
    g_string_printf(line, "%s: [%3u %%]", p->label, percent);
    gint64 elapsed = chain_progress_elapsed(p);
    if (p->in_bytes && elapsed >= RATE_AFTER_US) {
        /* In double: bytes times microseconds would overflow past 16 TiB. */
        double per_second = (double)p->cur * G_USEC_PER_SEC / (double)elapsed;
        g_autofree char *rate = cli_format_bytes((guint64)per_second);
        g_string_append_printf(line, " %s/s", rate);
    }
    gsize width = line->len;
    if (width < p->drawn_width)
        g_string_append_printf(line, "%*s", (int)(p->drawn_width - width), "");
    /* stdout first: what it holds belongs before this line. */
    fflush(stdout);
    fprintf(stderr, "\r%s", line->str);
    fflush(stderr);
    p->drawn_width = width;
    p->drawn_at = now;
}

void
chain_progress_set(ChainProgress *p, guint64 cur, guint64 end)
{
    if (p->stop)
        return;
    p->cur = MIN(cur, end);
    p->end = end;
    p->in_bytes = TRUE;
    draw(p, FALSE);
}

void
chain_progress_set_fraction(ChainProgress *p, double fraction)
{
    if (p->stop)
        return;
    fraction = CLAMP(fraction, 0.0, 1.0);
    /* Without a length, a ratio in ten-thousandths: a percentage, no rate. */
    p->in_bytes = p->length > 0;
    p->end = p->in_bytes ? p->length : 10000;
    p->cur = (guint64)(fraction * (double)p->end);
    draw(p, FALSE);
}

void
chain_progress_end(ChainProgress *p, gboolean done)
{
    if (p->stop)
        return;
    p->stop = g_get_monotonic_time();
    if (done) {
        if (!p->end) {
            /* Done before the first report: what was expected is what it was. */
            p->in_bytes = p->length > 0;
            p->end = p->in_bytes ? p->length : 1;
        }
        p->cur = p->end;
        draw(p, TRUE);
    }
    if (p->drawn_at)
        fputc('\n', stderr);
}
