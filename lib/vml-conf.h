/* Config files in libvirt's conf syntax:
 *
 *   # comment
 *   key = "string"
 *   key = 42
 *   key = [ "a", "b" ]     (lists of strings; may span lines, trailing comma ok)
 *
 * Keys are [A-Za-z_][A-Za-z0-9_.]*, each set at most once. A parse error names
 * the origin, line and column; an error about a value names its origin and
 * line. Every value is held until the VmlConf is freed.
 */
#pragma once

#include <glib.h>

typedef struct _VmlConf VmlConf;

VmlConf *vml_conf_new_from_data(const char *data, gsize len,
                                const char *origin, GError **error);
VmlConf *vml_conf_new_from_file(const char *path, GError **error);
/* PATH's text as vml_conf_new_from_file reads it (bounded in size), to
 * parse later with vml_conf_new_from_data. */
gboolean vml_conf_read_file(const char *path, char **text, gsize *len, GError **error);
void vml_conf_free(VmlConf *conf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlConf, vml_conf_free)

/* Getters: return TRUE and set *out when the key is present with the right
 * type; FALSE without error when absent (so the caller keeps its default);
 * FALSE with error (naming key, origin and line) when the type is wrong. */
gboolean vml_conf_get_string(VmlConf *conf, const char *key,
                             char **out, GError **error);
gboolean vml_conf_get_int(VmlConf *conf, const char *key,
                          gint64 *out, GError **error);
/* An int that must be 0 or 1. */
gboolean vml_conf_get_bool(VmlConf *conf, const char *key,
                           gboolean *out, GError **error);
gboolean vml_conf_get_string_list(VmlConf *conf, const char *key,
                                  GStrv *out, GError **error);

/* For settings with defaults: replace *FIELD (freeing the old string) or
 * set *FIELD only when KEY is present; FALSE only on a wrong type. */
gboolean vml_conf_update_string(VmlConf *conf, const char *key, char **field,
                                GError **error);
gboolean vml_conf_update_bool(VmlConf *conf, const char *key, gboolean *field,
                              GError **error);
/* An integer within [MIN, MAX] (VML_ERROR_CONFIG naming KEY otherwise);
 * *SET (may be NULL) says whether KEY was there. */
gboolean vml_conf_update_uint(VmlConf *conf, const char *key, guint *field, guint min,
                              guint max, gboolean *set, GError **error);
/* A string that must be an absolute path. */
gboolean vml_conf_update_abs_path(VmlConf *conf, const char *key, char **field,
                                  GError **error);

/* ERROR (set) is about KEY's value: prefix it with where KEY is set,
 * "ORIGIN:LINE: ", or "ORIGIN: " when it is not set there; a message that
 * starts with ORIGIN is left as it is. */
void vml_conf_prefix_key_error(VmlConf *conf, const char *key, GError **error);

/* Whether KEY has the same value in A and B (either may be NULL: no file),
 * or is set in neither. */
gboolean vml_conf_same_value(VmlConf *a, VmlConf *b, const char *key);
/* The line KEY is set on; 0 when it is not set. */
guint vml_conf_line(VmlConf *conf, const char *key);

/* Fails naming the first key (and its line) not in the NULL-terminated list. */
gboolean vml_conf_check_keys(VmlConf *conf, const char *const *known,
                             GError **error);
