#include "force-unlock.h"
#include "image-guard.h"
#include "vml-error.h"
#include "vml-image-verdict.h"
#include "vml-owner-text.h"
#include "vml-qcow2.h"

#include <fcntl.h>
#include <unistd.h>

/* The owners of KEY as vml_owner_text() says them, "; "-separated, or "". */
static char *
lease_holders_text(VmlLeaseTable *t, const char *key)
{
    g_autoptr(GPtrArray) owners = vml_lease_table_owners(t, key);
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < owners->len; i++) {
        g_autoptr(JsonObject) j = vml_owner_to_json(owners->pdata[i]);
        g_autofree char *text = vml_owner_text(j);
        g_string_append_printf(s, "%s%s", s->len ? "; " : "", text);
    }
    return g_string_free(s, FALSE);
}

static JsonObject *
result(const char *key, const char *path, gboolean cleared, VmlVerdict verdict, const char *reason,
       const VmlImageOwner *owner)
{
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "resource", key);
    json_object_set_string_member(r, "path", path);
    json_object_set_boolean_member(r, "cleared", cleared);
    json_object_set_string_member(r, "verdict", vml_verdict_name(verdict));
    json_object_set_string_member(r, "reason", reason);
    if (owner)
        json_object_set_object_member(r, "owner", vml_image_owner_to_json(owner));
    return r;
}

static gboolean
clear_mark(int fd, const char *key, const char *path, VmlLeaseTable *t, gboolean force,
           JsonObject **reply, JsonObject **params, GError **error)
{
    gboolean not_qcow2;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, error);
    if (!h && !not_qcow2)
        return FALSE;
    const VmlQcow2Ext *ext = h ? vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER) : NULL;
    gboolean bit = h && (h->compatible_features & VML_QCOW2_COMPAT_IN_USE);
    if (!ext && !bit) {
        *reply = result(key, path, FALSE, VML_VERDICT_FREE,
                        not_qcow2 ? "not a qcow2 image: it carries no in-use mark"
                                  : "no in-use mark to clear", NULL);
        return TRUE;
    }
    g_autoptr(VmlImageOwner) owner = ext ? vml_image_owner_decode(ext->data, NULL) : NULL;
    g_autofree char *holders = lease_holders_text(t, key);
    g_autoptr(GError) probe_error = NULL;
    g_autoptr(VmlQemuLocks) qemu = vml_qemu_probe(fd, &probe_error);
    if (!qemu) {
        g_propagate_error(error, g_steal_pointer(&probe_error));
        return FALSE;
    }
    g_autofree char *reason = NULL;
    VmlVerdict verdict = vml_image_verdict(bit, owner, holders, qemu, &reason);
    g_autofree char *marked_by = owner ? vml_image_owner_describe(owner)
                                       : g_strdup("nobody on record");

    *params = result(key, path, FALSE, verdict, reason, owner);
    if (vml_qemu_locks_busy(qemu)) {
        g_autofree char *who = vml_qemu_locks_describe(qemu);
        g_set_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY,
                    "%s is open in %s: its header is not rewritten while QEMU holds it "
                    "(QEMU writes back the header it read); would have cleared the in-use "
                    "mark of %s", path, who, marked_by);
        return FALSE;
    }
    if (verdict != VML_VERDICT_STALE && !force) {
        g_set_error(error, VML_ERROR, VML_ERROR_IMAGE_BUSY,
                    "%s: %s; would have cleared the in-use mark of %s (use --force to "
                    "clear it anyway)", path, reason, marked_by);
        return FALSE;
    }
    g_clear_pointer(params, json_object_unref);
    h->compatible_features &= ~VML_QCOW2_COMPAT_IN_USE;
    vml_qcow2_remove_ext(h, VML_QCOW2_EXT_OWNER);
    if (!vml_qcow2_write(fd, path, h, error))
        return FALSE;
    g_message("force-unlock %s%s: cleared the in-use mark of %s (%s)", path,
              force ? " --force" : "", marked_by, reason);
    *reply = result(key, path, TRUE, verdict, reason, owner);
    return TRUE;
}

gboolean
vml_force_unlock(VmlLeaseTable *t, const char *key, const char *path, gboolean force,
                 JsonObject **reply, JsonObject **params, GError **error)
{
    int fd = vml_image_open(path, O_RDWR, error);
    if (fd < 0)
        return FALSE;
    gboolean ok = clear_mark(fd, key, path, t, force, reply, params, error);
    close(fd);
    return ok;
}
