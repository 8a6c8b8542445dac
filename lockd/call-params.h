/* One call being served, and the checks of its parameters: each refusal
 * is the protocol's error reply (InvalidParameter naming the parameter,
 * LimitReached, NoSuchImage, ...) sent here, so a method only returns. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "daemon.h"
#include "server.h"

#define VML_CALL_NAME_MAX 1024    /* a VM's name */
#define VML_CALL_FIELD_MAX 256    /* a <lease>'s lockspace or key */

typedef struct {
    VmlDaemon *d;
    VmlConn *conn;
    JsonObject *params;
    GArray *fds;          /* that came with the message; a method that keeps
                             one sets its slot to -1 */
    /* A holder whose leases' canonical paths may answer for themselves
     * (a root caller's release, see call_path_key); NULL: none. */
    VmlHolder *held_paths;
} VmlCall;

/* Reply InvalidParameter(NAME) "parameter 'NAME' REASON"; FALSE. */
gboolean call_param_error(VmlCall *call, const char *name, const char *reason);

/* The member NAME of OBJ into *OUT, or a refusal (FALSE): a string of at
 * most MAX_LEN bytes without control characters (NULL when absent and not
 * REQUIRED); an integer in [MIN, MAX] (required); a boolean (FALSE when
 * absent); an array of at most max_resources_per_call entries. */
gboolean call_get_string(VmlCall *call, JsonObject *obj, const char *name, gboolean required,
                         gsize max_len, const char **out);
gboolean call_get_int(VmlCall *call, JsonObject *obj, const char *name, gint64 min, gint64 max,
                      gint64 *out);
gboolean call_get_bool(VmlCall *call, JsonObject *obj, const char *name, gboolean *out);
gboolean call_get_array(VmlCall *call, JsonObject *obj, const char *name, gboolean required,
                        JsonArray **out);

/* LimitReached(limit, value) parameters for a limit from the config. */
JsonObject *call_limit_params(const char *limit, guint value);
gboolean call_is_uuid(const char *s);

/* Resolve an image path to its resource key, which every name of the
 * image shares (vml-image-identity.h); *CANONICAL (may be NULL) gets the
 * path with every symlink resolved, what the image is opened by. NULL
 * after a refusal. */
char *call_path_key(VmlCall *call, const char *what, const char *path, char **canonical);

/* The holder the call names ("holder", else the connection's), if the
 * caller may act for it; NULL after a refusal. */
VmlHolder *call_get_holder(VmlCall *call);

/* The "resources" parameter as VmlRequests (NULL after a refusal); with
 * _named, it must name at least one. */
GArray *call_get_requests(VmlCall *call, gboolean required);
GArray *call_get_named_requests(VmlCall *call);

/* The daemon's own directories (lockspace, state, holder records), made
 * canonical once they exist: no request may name a file in them. */
GStrv vml_call_own_dirs(const VmlDaemonConfig *cfg, const VmlBackend *backend);
