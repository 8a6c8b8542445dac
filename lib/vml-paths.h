/* Where sockets, lockspace and state live. With VMLEASE_ROOT=DIR set in the
 * environment every component uses DIR/run, DIR/lockspace and DIR/state, so
 * tests and demos never touch the system's /run or /var. */
#pragma once

#include <glib.h>

typedef enum {
    VML_DIR_RUN,
    VML_DIR_LOCKSPACE,
    VML_DIR_STATE,
} VmlDirKind;

/* Newly allocated path of a directory (honours VMLEASE_ROOT). */
char *vml_default_dir(VmlDirKind kind);
char *vml_default_lease_socket(void);
char *vml_default_admin_socket(void);
/* The config file read when --config is not given. */
char *vml_default_config_file(void);
/* Where journald takes native entries (VMLEASE_ROOT/journal.sock under a root). */
char *vml_default_journal_socket(void);

/* The canonical form of PATH (realpath) where it exists, else a copy of
 * PATH itself: images compare by this. */
char *vml_canonical_path(const char *path);

/* SHA-256 hex of a resource key: the lock file name stem. */
char *vml_key_hash(const char *key);

/* An absolute, normalised path: starts with '/', no "." or ".." component,
 * no empty component, no NUL, at most PATH_MAX. Error says what is wrong. */
gboolean vml_path_check(const char *path, gsize len, GError **error);
