#include "state-file.h"
#include "vml-error.h"
#include "vml-proc.h"
#include "vml-wire.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

/* Long enough to coalesce a burst; the holder records, written at every
 * change, cover what a crash loses in between. */
#define SAVE_DELAY_MS 200
#define STATE_MAX (64 * 1024 * 1024)
/* Holder ids a saved state reserves: a restart after a crash starts past
 * them, so the file is written again only every this many registrations. */
#define ID_RESERVE 1024

struct _VmlStateFile {
    char *path;
    VmlLeaseTable *table;
    guint timer;
    gint64 reserved;      /* next_holder as last saved; 0: nothing saved */
};

VmlStateFile *
vml_state_file_new(const char *dir, VmlLeaseTable *table, GError **error)
{
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "cannot create state directory %s: %s", dir, g_strerror(errno));
        return NULL;
    }
    VmlStateFile *sf = g_new0(VmlStateFile, 1);
    sf->path = g_build_filename(dir, "state.json", NULL);
    sf->table = table;
    return sf;
}

void
vml_state_file_free(VmlStateFile *sf)
{
    if (!sf)
        return;
    if (sf->timer)
        g_source_remove(sf->timer);
    g_free(sf->path);
    g_free(sf);
}

/* Temp file and rename: a reader sees the old state or the new, never a
 * mix. No fsync: the state only matters within this boot (a host crash
 * takes every holder with it), and fsync stalls the main loop. */
/* WHOLE: the table too (at shutdown and re-exec). Else only what a start
 * after a crash reads from here, this boot and the holder ids it must
 * start past: everything else comes from the holder records and the
 * locks, so a table of any size costs nothing between changes. */
static gboolean
save(VmlStateFile *sf, gboolean whole, GError **error)
{
    g_autoptr(GString) state = NULL;
    if (whole) {
        state = vml_lease_table_save(sf->table, NULL);
    } else {
        gint64 next = vml_lease_table_next_id(sf->table);
        if (sf->reserved && next < sf->reserved)
            return TRUE;
        sf->reserved = next + ID_RESERVE;
        state = g_string_new(NULL);
        g_string_printf(state, "{\"version\":1,\"boot_id\":\"%s\",\"next_holder\":%"
                        G_GINT64_FORMAT ",\"holders\":[]}", vml_host_boot_id(), sf->reserved);
    }
    g_autofree char *tmp = g_strconcat(sf->path, ".tmp", NULL);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    gboolean ok = fd >= 0 && write(fd, state->str, state->len) == (ssize_t)state->len;
    if (fd >= 0 && close(fd) < 0)
        ok = FALSE;
    if (!ok || rename(tmp, sf->path) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot write %s: %s",
                    sf->path, g_strerror(errno));
        unlink(tmp);
        return FALSE;
    }
    /* Hand back what a burst (a big acquire, this save) made malloc keep. */
    if (whole)
        malloc_trim(0);
    return TRUE;
}

static gboolean
on_timer(gpointer data)
{
    VmlStateFile *sf = data;
    g_autoptr(GError) error = NULL;
    sf->timer = 0;
    if (!save(sf, FALSE, &error))
        g_warning("cannot save state: %s", error->message);
    return G_SOURCE_REMOVE;
}

void
vml_state_file_schedule(VmlStateFile *sf)
{
    if (!sf->timer)
        sf->timer = g_timeout_add(SAVE_DELAY_MS, on_timer, sf);
}

gboolean
vml_state_file_flush(VmlStateFile *sf, GError **error)
{
    if (!sf->timer)
        return TRUE;
    g_source_remove(sf->timer);
    sf->timer = 0;
    return save(sf, TRUE, error);
}

JsonObject *
vml_state_file_load(VmlStateFile *sf)
{
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) error = NULL;

    if (!g_file_get_contents(sf->path, &data, &len, &error)) {
        if (!g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
            g_warning("cannot read %s: %s", sf->path, error->message);
        return NULL;
    }
    g_autoptr(JsonParser) p = json_parser_new_immutable();
    if (len > STATE_MAX || !json_parser_load_from_data(p, data, len, &error) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        g_warning("ignoring unreadable %s%s%s (owner records will be used)", sf->path,
                  error ? ": " : "", error ? error->message : "");
        return NULL;
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}
