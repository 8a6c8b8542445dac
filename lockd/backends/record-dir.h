/* Holder records kept as files in a directory, shared by the backends
 * (backend.h describes what the ops do with them). */
#pragma once

#include <glib.h>

#include "backend.h"

typedef struct {
    char *dir;
    int dirfd;
    /* The record names last listed, while the directory's mtime says no
     * entry came or went since: the directory also holds a lock file per
     * resource, and listing 10,000 of them per Owners call was its cost. */
    GPtrArray *names;
    struct timespec names_mtime;
} VmlRecordDir;

/* Create DIR if needed and open it. */
gboolean vml_record_dir_init(VmlRecordDir *rd, const char *dir, GError **error);
void vml_record_dir_clear(VmlRecordDir *rd);

VmlRecord *vml_record_dir_open(VmlRecordDir *rd, const char *tag, GError **error);
gboolean vml_record_dir_write(VmlRecordDir *rd, VmlRecord *r, const char *data, gsize len,
                              GError **error);
/* DATA over [OFF, OFF+LEN), room for it allocated first. */
gboolean vml_record_dir_patch(VmlRecordDir *rd, VmlRecord *r, gsize off, const char *data,
                              gsize len, GError **error);
void vml_record_dir_close(VmlRecordDir *rd, VmlRecord *r, gboolean remove);
/* Every record's text (GBytes) but those whose tag is in SKIP (may be
 * NULL): the caller's own, which it knows better than any file. */
GPtrArray *vml_record_dir_all(VmlRecordDir *rd, GHashTable *skip, GError **error);
void vml_record_dir_remove(VmlRecordDir *rd, const char *tag);
