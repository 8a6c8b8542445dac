/* Printing helpers shared by the vmlease subcommands: aligned tables and
 * "key: value" blocks, pretty JSON, times, and owner descriptions. Output is
 * deterministic for a given input so tests can assert it. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>

/* A text table: every column padded to its widest cell, columns two spaces
 * apart, no trailing blanks. Cells are copied with control characters
 * replaced by '?'. */
typedef struct _CliTable CliTable;

CliTable *cli_table_new(const char *first_header, ...) G_GNUC_NULL_TERMINATED;
/* Exactly as many cells as the table has columns. */
void cli_table_add_row(CliTable *table, const char *first_cell, ...);
guint cli_table_n_rows(CliTable *table);
/* Header line, then one line per row. */
void cli_table_print(CliTable *table, FILE *out);
void cli_table_free(CliTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CliTable, cli_table_free)

/* "key:   value" lines, values aligned one column after the longest key. */
typedef struct _CliFields CliFields;

CliFields *cli_fields_new(void);
void cli_fields_add(CliFields *fields, const char *key, const char *format, ...)
    G_GNUC_PRINTF(3, 4);
void cli_fields_print(CliFields *fields, FILE *out);
void cli_fields_free(CliFields *fields);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CliFields, cli_fields_free)

/* Pretty JSON (two-space indent) and a newline, to stdout. */
void cli_print_json(JsonObject *object);

/* Local time as "YYYY-MM-DD HH:MM:SS". */
char *cli_format_time(gint64 unix_time);
/* A duration as "5s", "2m 3s", "1h 0m 3s" or "2d 1h 0m 3s". */
char *cli_format_duration(gint64 seconds);
/* A size as "512 B", "1.5 KiB", "64.0 MiB", "2.0 GiB": binary units, one
 * decimal, the same in every locale. */
char *cli_format_bytes(guint64 bytes);
/* A duration in microseconds as seconds with one decimal: "0.3 s". */
char *cli_format_seconds(gint64 microseconds);
/* A copy with control characters replaced by '?', safe for a terminal. */
char *cli_sanitize(const char *text);

/* Members of a reply, tolerating absent or ill-typed ones. */
const char *cli_json_string(JsonObject *object, const char *name, const char *fallback);
gint64 cli_json_int(JsonObject *object, const char *name, gint64 fallback);
JsonArray *cli_json_array(JsonObject *object, const char *name);
JsonObject *cli_json_array_object(JsonArray *array, guint index);

/* The owner objects of OWNERS (borrowed) oldest first, ties by uuid. */
GPtrArray *cli_owners_sorted(JsonArray *owners);

/* One owner as
 *   VM "NAME" (uuid UUID, pid PID on host HOST, MODE since YYYY-MM-DD HH:MM:SS)
 * and a list of them, sorted as above, joined by "; ". */
char *cli_owner_describe(JsonObject *owner);
char *cli_owners_describe(JsonArray *owners);
/* The same, adding ", through PATH" for an owner holding the image by
 * another name than ASKED (a canonical path; NULL: never). */
char *cli_owners_describe_through(JsonArray *owners, const char *asked);
