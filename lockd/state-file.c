#include "state-file.h"
#include "vml-error.h"
#include "vml-wire.h"

#include <errno.h>

/* Long enough to coalesce a burst, short enough that a crash loses little
 * (and the lockspace records cover that gap anyway). */
#define SAVE_DELAY_MS 50
#define STATE_MAX (64 * 1024 * 1024)

struct _VmlStateFile {
    char *path;
    VmlLeaseTable *table;
    guint timer;
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

static gboolean
save(VmlStateFile *sf, GError **error)
{
    g_autoptr(JsonObject) state = vml_lease_table_save(sf->table, NULL);
    gsize len;
    g_autofree char *data = vml_json_to_string(state, &len);
    return g_file_set_contents_full(sf->path, data, len,
                                    G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                    0600, error);
}

static gboolean
on_timer(gpointer data)
{
    VmlStateFile *sf = data;
    g_autoptr(GError) error = NULL;
    sf->timer = 0;
    if (!save(sf, &error))
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
    return save(sf, error);
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
