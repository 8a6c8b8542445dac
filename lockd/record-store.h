/* The holder records: one file <tag>.holder per holder process in one
 * directory, named by a stable tag of that process, published for admins
 * and for other hosts. Each backend says where (the fcntl lockspace, or
 * sanlock's lease directory on the shared storage) by initializing the
 * store in its VmlBackend; the core reads and writes them here alone. */
#pragma once

#include <glib.h>

typedef struct _VmlRecord VmlRecord;   /* one holder's published record */

typedef struct {
    char *dir;
    int dirfd;
    /* The record names last listed, while the directory's mtime says no
     * entry came or went since: the directory also holds a lock file per
     * resource, and listing 10,000 of them per Owners call was its cost. */
    GPtrArray *names;
    struct timespec names_mtime;
} VmlRecordStore;

/* Create DIR if needed and open it. */
gboolean vml_record_store_init(VmlRecordStore *rd, const char *dir, GError **error);
void vml_record_store_clear(VmlRecordStore *rd);

/* The record of TAG, created empty if it is not there. */
VmlRecord *vml_record_store_open(VmlRecordStore *rd, const char *tag, GError **error);
/* Replace its content with DATA. */
gboolean vml_record_store_write(VmlRecordStore *rd, VmlRecord *r, const char *data, gsize len,
                              GError **error);
/* DATA over [OFF, OFF+LEN), room for it taken first (a full disk fails
 * the write, never cuts it short). */
gboolean vml_record_store_patch(VmlRecordStore *rd, VmlRecord *r, gsize off, const char *data,
                              gsize len, GError **error);
/* Close; with REMOVE the record is deleted too. */
void vml_record_store_close(VmlRecordStore *rd, VmlRecord *r, gboolean remove);
/* Every record's text (GBytes), every host's, but those whose tag is in
 * SKIP (may be NULL): the caller's own, which it knows better than any
 * file. */
GPtrArray *vml_record_store_all(VmlRecordStore *rd, GHashTable *skip, GError **error);
void vml_record_store_remove(VmlRecordStore *rd, const char *tag);
