/* A holder's record, written whole or patched (see holder-record.h). */
#include "holder-record.h"
#include "vml-json-write.h"
#include "vml-proc.h"

#include <string.h>

#define TERMINATOR "null]}"
/* Room a slot keeps beyond its text, so a lease changing (parked, a new
 * mode) usually fits where it is. */
#define SLOT_SLACK 48
#define SLOT_ALIGN 16

/* Where one lease's text is in the file, and what it said. Its lease
 * points at it (record_slot), so a write finds it without a lookup. */
typedef struct {
    gsize off, len;      /* the slot, its comma included */
    VmlMode mode;
    guint64 generation;
    gint64 since, parked_since;
    gboolean derived;
    char *parked;
} Slot;

struct _VmlRecordLayout {
    char *head;          /* the text before the first slot */
    /* The start of the head that names the holder, which stays as it was
     * registered: written once, not at every write (with the uid and the
     * program it was written with). */
    char *fixed;
    uid_t fixed_uid;
    const char *fixed_program;
    GHashTable *slots;   /* Slot* of the leases in the file (a set) */
    GPtrArray *dropped;  /* Slot* of leases dropped since: to blank */
    gsize tail;          /* where TERMINATOR starts */
    gsize live, blank;   /* bytes in slots of leases, and blanked */
};

static void
slot_free(Slot *s)
{
    g_free(s->parked);
    g_free(s);
}

void
vml_record_layout_free(VmlRecordLayout *x)
{
    if (!x)
        return;
    g_free(x->head);
    g_free(x->fixed);
    g_hash_table_unref(x->slots);
    g_ptr_array_unref(x->dropped);
    g_free(x);
}

void
vml_record_layout_forget(VmlRecordLayout *x, VmlLease *l)
{
    Slot *s = l->record_slot;
    l->record_slot = NULL;
    if (!x || !s)
        return;
    g_hash_table_steal(x->slots, s);
    g_ptr_array_add(x->dropped, s);
}

/* H's identity: host, holder, process, uid and program. */
static char *
head_fixed_text(const VmlHolder *h)
{
    GString *out = g_string_sized_new(384);
    g_string_append_c(out, '{');
    vml_json_write_member_string(out, TRUE, "host", vml_host_name());
    vml_json_write_member_string(out, FALSE, "machine_id", vml_host_machine_id());
    vml_json_write_member_string(out, FALSE, "boot_id", vml_host_boot_id());
    vml_holder_write_identity(out, h);
    vml_json_write_member_int(out, FALSE, "uid", h->uid);
    return g_string_free(out, FALSE);
}

void
vml_holder_write_identity(GString *out, const VmlHolder *h)
{
    vml_json_write_strict_member_string(out, FALSE, "uuid", h->uuid);
    vml_json_write_strict_member_string(out, FALSE, "name", h->name);
    vml_json_write_member_int(out, FALSE, "holder", h->id);
    vml_json_write_member_int(out, FALSE, "pid", h->pid);
    vml_json_write_member_int(out, FALSE, "start_time", (gint64)h->start_time);
    vml_json_write_member_int(out, FALSE, "since", h->since);
    if (h->program)
        vml_json_write_strict_member_string(out, FALSE, "program", h->program);
}

/* X's fixed text for H, made anew (into *BUILT) unless X has it. */
static const char *
head_fixed(VmlRecordLayout *x, const VmlHolder *h, char **built)
{
    if (x && x->fixed && x->fixed_uid == h->uid && x->fixed_program == h->program)
        return x->fixed;
    return *built = head_fixed_text(h);
}

static void
keep_fixed(VmlRecordLayout *x, const VmlHolder *h, const char *fixed)
{
    if (x->fixed == fixed)
        return;
    g_free(x->fixed);
    x->fixed = g_strdup(fixed);
    x->fixed_uid = h->uid;
    x->fixed_program = h->program;
}

/* Everything of H but its leases, up to the leases' '[': FIXED, then what
 * may change. */
static void
write_head(GString *out, const VmlHolder *h, const char *fixed)
{
    GHashTableIter it;
    gpointer key, path;
    gboolean first = TRUE;

    g_string_append(out, fixed);
    vml_json_write_member_string(out, FALSE, "on_lockfailure", h->on_lockfailure);
    if (h->mailbox)
        vml_json_write_member_int(out, FALSE, "mailbox_ino", (gint64)vml_mailbox_ino(h->mailbox));
    if (h->resume_watch)
        vml_json_write_member_string(out, FALSE, "status_file",
                                     vml_resume_watch_path(h->resume_watch));
    if (g_hash_table_size(h->observing)) {
        g_string_append(out, ",\"observing\":[");
        g_hash_table_iter_init(&it, h->observing);
        while (g_hash_table_iter_next(&it, &key, &path)) {
            g_string_append(out, first ? "{" : ",{");
            first = FALSE;
            vml_json_write_member_string(out, TRUE, "resource", key);
            vml_json_write_member_string(out, FALSE, "path", path);
            g_string_append_c(out, '}');
        }
        g_string_append_c(out, ']');
    }
    g_string_append(out, ",\"leases\":[");
}

/* One lease's object, without the closing brace; with FD >= 0 its "fd". */
static void
write_lease_open(GString *out, const VmlLease *l, int fd)
{
    g_string_append_c(out, '{');
    vml_json_write_member_string(out, TRUE, "resource", l->key);
    if (l->path)
        vml_json_write_member_string(out, FALSE, "path", l->path);
    vml_json_write_member_string(out, FALSE, "mode", vml_mode_name(l->mode));
    vml_json_write_member_int(out, FALSE, "generation", (gint64)l->generation);
    vml_json_write_member_int(out, FALSE, "since", l->since);
    if (l->parked) {
        vml_json_write_member_string(out, FALSE, "parked", l->parked);
        vml_json_write_member_int(out, FALSE, "parked_since", l->parked_since);
    }
    if (l->derived)
        g_string_append(out, ",\"derived\":true");
    if (fd >= 0)
        vml_json_write_member_int(out, FALSE, "fd", fd);
}

void
vml_holder_write_json(GString *out, const VmlHolder *h, VmlBackend *be, GArray *fds)
{
    GHashTableIter it;
    gpointer value;

    g_autofree char *fixed = head_fixed_text(h);
    write_head(out, h, fixed);
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        if (l->leaving)
            continue;
        int fd = fds ? be->ops->lock_fd(l->lock) : -1;
        if (fds)
            g_array_append_val(fds, fd);
        write_lease_open(out, l, fds ? fd : -1);
        g_string_append(out, "},");
    }
    g_string_append(out, TERMINATOR);
}

/* L's slot text: its object padded with spaces to LEN (0: to its own size
 * plus slack) and a comma. FALSE if it does not fit LEN. */
static gboolean
slot_text(GString *out, const VmlLease *l, gsize len)
{
    g_string_truncate(out, 0);
    write_lease_open(out, l, -1);
    gsize need = out->len + 2;   /* '}' ',' */
    if (!len)
        len = (need + SLOT_SLACK + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    if (need > len)
        return FALSE;
    gsize at = out->len;
    g_string_set_size(out, len);
    memset(out->str + at, ' ', len - 2 - at);
    out->str[len - 2] = '}';
    out->str[len - 1] = ',';
    return TRUE;
}

static gboolean
slot_matches(const Slot *s, const VmlLease *l)
{
    return s->mode == l->mode && s->generation == l->generation && s->since == l->since &&
           s->parked_since == l->parked_since && s->derived == l->derived &&
           g_strcmp0(s->parked, l->parked) == 0;
}

static void
slot_note(Slot *s, const VmlLease *l)
{
    s->mode = l->mode;
    s->generation = l->generation;
    s->since = l->since;
    s->parked_since = l->parked_since;
    s->derived = l->derived;
    g_free(s->parked);
    s->parked = g_strdup(l->parked);
}

/* A new slot for L at the end of OUT, which starts at offset BASE of the
 * file (ONE: scratch). */
static void
add_slot(VmlRecordLayout *x, VmlLease *l, GString *out, gsize base, GString *one)
{
    slot_text(one, l, 0);
    Slot *s = g_new0(Slot, 1);
    s->off = base + out->len;
    s->len = one->len;
    slot_note(s, l);
    g_hash_table_add(x->slots, s);
    l->record_slot = s;
    g_string_append_len(out, one->str, one->len);
    x->live += one->len;
}

/* Every change of H is in its record now. */
static void
clear_dirty(VmlHolder *h)
{
    for (guint i = 0; i < h->record_dirty->len; i++)
        ((VmlLease *)h->record_dirty->pdata[i])->record_dirty = FALSE;
    g_ptr_array_set_size(h->record_dirty, 0);
}

static gboolean
write_whole(VmlHolder *h, VmlBackend *be, VmlRecordLayout **layout, GString *head,
            const char *fixed, GError **error)
{
    g_autoptr(GString) text = g_string_new(head->str);
    g_autoptr(GString) one = g_string_sized_new(256);
    VmlRecordLayout *x = g_new0(VmlRecordLayout, 1);
    x->slots = g_hash_table_new_full(NULL, NULL, (GDestroyNotify)slot_free, NULL);
    x->dropped = g_ptr_array_new_with_free_func((GDestroyNotify)slot_free);
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        VmlLease *l = value;
        l->record_slot = NULL;
        if (l->leaving)
            continue;
        add_slot(x, l, text, 0, one);
    }
    x->tail = text->len;
    g_string_append(text, TERMINATOR);
    x->head = g_strdup(head->str);
    keep_fixed(x, h, fixed);
    g_clear_pointer(layout, vml_record_layout_free);
    if (!vml_record_store_write(&be->records, h->record, text->str, text->len, error)) {
        vml_record_layout_free(x);
        return FALSE;
    }
    *layout = x;
    clear_dirty(h);
    return TRUE;
}

/* One write over [OFF, OFF+LEN). */
static gboolean
patch(VmlHolder *h, VmlBackend *be, gsize off, const char *data, gsize len, GError **error)
{
    return vml_record_store_patch(&be->records, h->record, off, data, len, error);
}

/* Spaces over slot S (no longer in X's set; freed). */
static gboolean
blank(VmlHolder *h, VmlBackend *be, VmlRecordLayout *x, Slot *s, GError **error)
{
    g_autofree char *spaces = g_malloc(s->len);
    memset(spaces, ' ', s->len);
    gboolean ok = patch(h, be, s->off, spaces, s->len, error);
    x->live -= s->len;
    x->blank += s->len;
    slot_free(s);
    return ok;
}

/* How many writes a patch of X for H's touched leases takes. One write is
 * all of a change or none of it, whenever vmleased is killed; two are
 * not (a release of two leases, killed between them, would leave one). */
static guint
patch_writes(VmlHolder *h, VmlRecordLayout *x, GString *scratch)
{
    guint writes = x->dropped->len;
    gboolean append = FALSE;
    for (guint i = 0; i < h->record_dirty->len; i++) {
        VmlLease *l = h->record_dirty->pdata[i];
        Slot *s = l->record_slot;
        if (l->leaving)
            writes += s != NULL;
        else if (s && slot_matches(s, l))
            continue;
        else if (s && slot_text(scratch, l, s->len))
            writes++;
        else {
            writes += s != NULL;
            append = TRUE;
        }
    }
    return writes + append;
}

/* Buffer N of three kept for record writes, emptied: the daemon writes
 * records from its main thread only, one at a time, and a buffer per
 * write would be three allocations each time. */
static GString *
scratch(guint n)
{
    static GString *buffers[3];
    if (!buffers[n])
        buffers[n] = g_string_sized_new(512);
    /* A record with thousands of leases leaves no huge buffer behind. */
    if (buffers[n]->allocated_len > 65536) {
        g_string_free(buffers[n], TRUE);
        buffers[n] = g_string_sized_new(512);
    }
    return g_string_truncate(buffers[n], 0);
}

gboolean
vml_holder_record_write(VmlHolder *h, VmlBackend *be, VmlRecordLayout **layout, GError **error)
{
    if (!h->record)
        return TRUE;
    VmlRecordLayout *x = *layout;
    g_autofree char *built = NULL;
    const char *fixed = head_fixed(x, h, &built);
    GString *head = scratch(0);
    write_head(head, h, fixed);
    /* Whole: the first time, when the holder itself changed, after a
     * failure, without patches from the backend, once blanks outweigh the
     * leases, or when the change would take more than one write. */
    GString *one = scratch(1);
    if (!x || strcmp(x->head, head->str) != 0 ||
        x->blank > x->live + 4096 || patch_writes(h, x, one) > 1)
        return write_whole(h, be, layout, head, fixed, error);

    gboolean ok = TRUE;
    /* Gone or going first: a release is recorded before its lock goes. */
    while (ok && x->dropped->len)
        ok = blank(h, be, x, g_ptr_array_steal_index_fast(x->dropped, 0), error);

    /* Of the leases touched since the last write: changed ones in place
     * where they fit; the rest (and new ones) go to the end, in one write
     * with the terminator. */
    GString *appended = scratch(2);
    for (guint i = 0; ok && i < h->record_dirty->len; i++) {
        VmlLease *l = h->record_dirty->pdata[i];
        Slot *s = l->record_slot;
        if (l->leaving) {
            if (s) {
                l->record_slot = NULL;
                g_hash_table_steal(x->slots, s);
                ok = blank(h, be, x, s, error);
            }
            continue;
        }
        if (s && slot_matches(s, l))
            continue;
        if (s && slot_text(one, l, s->len)) {
            ok = patch(h, be, s->off, one->str, one->len, error);
            slot_note(s, l);
            continue;
        }
        if (s) {
            l->record_slot = NULL;
            g_hash_table_steal(x->slots, s);
            ok = blank(h, be, x, s, error);
        }
        add_slot(x, l, appended, x->tail, one);
    }
    if (ok && appended->len) {
        g_string_append(appended, TERMINATOR);
        ok = patch(h, be, x->tail, appended->str, appended->len, error);
        x->tail += appended->len - strlen(TERMINATOR);
    }
    if (!ok)
        g_clear_pointer(layout, vml_record_layout_free);
    else
        clear_dirty(h);
    return ok;
}
