/* A string hash for the daemon's own tables, whose keys (resource keys,
 * paths) run to tens of bytes: eight bytes a step where g_str_hash takes
 * one, seeded per process so that nobody can precompute colliding names. */
#pragma once

#include <glib.h>

guint vml_str_hash(gconstpointer key);
