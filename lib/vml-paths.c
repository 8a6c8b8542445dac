#include "vml-paths.h"
#include "vml-error.h"
#include "vml-config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *
vml_root(void)
{
    const char *root = g_getenv("VMLEASE_ROOT");
    return (root && *root) ? root : NULL;
}

char *
vml_default_dir(VmlDirKind kind)
{
    const char *root = vml_root();
    static const char *const leaf[] = {
        [VML_DIR_RUN] = "run",
        [VML_DIR_LOCKSPACE] = "lockspace",
        [VML_DIR_STATE] = "state",
    };

    if (root)
        return g_build_filename(root, leaf[kind], NULL);
    switch (kind) {
    case VML_DIR_RUN:
        return g_build_filename(VMLEASE_RUNSTATEDIR, "vmlease", NULL);
    case VML_DIR_LOCKSPACE:
        return g_build_filename(VMLEASE_LOCALSTATEDIR, "lib", "vmlease", "lockspace", NULL);
    case VML_DIR_STATE:
        return g_build_filename(VMLEASE_LOCALSTATEDIR, "lib", "vmlease", "state", NULL);
    }
    g_assert_not_reached();
}

char *
vml_default_lease_socket(void)
{
    g_autofree char *dir = vml_default_dir(VML_DIR_RUN);
    return g_build_filename(dir, "vmleased.sock", NULL);
}

char *
vml_default_admin_socket(void)
{
    g_autofree char *dir = vml_default_dir(VML_DIR_RUN);
    return g_build_filename(dir, "vmleased-admin.sock", NULL);
}

char *
vml_default_config_file(void)
{
    const char *root = vml_root();
    if (root)
        return g_build_filename(root, "vmleased.conf", NULL);
    return g_build_filename(VMLEASE_SYSCONFDIR, "vmlease", "vmleased.conf", NULL);
}

char *
vml_default_journal_socket(void)
{
    const char *root = vml_root();
    if (root)
        return g_build_filename(root, "journal.sock", NULL);
    return g_strdup("/run/systemd/journal/socket");
}

char *
vml_key_hash(const char *key)
{
    return g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);
}

gboolean
vml_path_check(const char *path, gsize len, GError **error)
{
    if (len == 0 || path[0] != '/') {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "path must be absolute");
        return FALSE;
    }
    if (len >= PATH_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "path is longer than %d bytes", PATH_MAX - 1);
        return FALSE;
    }
    if (memchr(path, '\0', len)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "path contains a NUL byte");
        return FALSE;
    }
    if (!g_utf8_validate(path, len, NULL)) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "path is not valid UTF-8");
        return FALSE;
    }
    /* Walk the components: reject "", "." and ".." (except the lone "/"). */
    const char *p = path + 1;
    const char *end = path + len;
    while (p < end) {
        const char *slash = memchr(p, '/', end - p);
        gsize clen = (slash ? slash : end) - p;
        if (clen == 0 && (slash || p != path + 1)) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "path has an empty component");
            return FALSE;
        }
        if ((clen == 1 && p[0] == '.') || (clen == 2 && p[0] == '.' && p[1] == '.')) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "path has a '%.*s' component", (int)clen, p);
            return FALSE;
        }
        if (!slash)
            break;
        p = slash + 1;
        if (p == end) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "path ends with '/'");
            return FALSE;
        }
    }
    return TRUE;
}

char *
vml_canonical_path(const char *path)
{
    char *real = realpath(path, NULL);
    char *copy = g_strdup(real ? real : path);
    free(real);
    return copy;
}
