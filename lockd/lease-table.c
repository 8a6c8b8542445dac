#include "lease-table.h"
#include "daemon-log.h"
#include "lock-fd-check.h"
#include "metrics.h"
#include "vml-str-hash.h"
#include "holder-record.h"
#include "image-guard.h"
#include "vml-error.h"
#include "vml-json-write.h"
#include "vml-owner-text.h"
#include "vml-paths.h"
#include "vml-proc.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

struct _VmlLeaseTable {
    VmlBackend *backend;
    const VmlDaemonConfig *cfg;
    GHashTable *holders;        /* gint64* id -> VmlHolder* */
    GHashTable *by_pid;         /* pid -> VmlHolder* list (next_same_pid) */
    GHashTable *by_resource;    /* key -> VmlLease* list head; the key is
                                   freed with the list's last lease */
    GTree *resource_order;      /* the same keys, sorted: Owners pages */
    gint64 next_id;
    guint n_leases;
    gboolean shutting_down;     /* free without unlocking */
    GFunc changed;
    gpointer changed_data;
    void (*owner_gone)(const char *uuid, gpointer data);
    gpointer owner_gone_data;
    GHashTable *opened;         /* path -> GuardFile: images opened ahead of
                                   the next acquire (vml_lease_table_open_image) */
};

static void
changed(VmlLeaseTable *t)
{
    if (t->changed)
        t->changed(t, t->changed_data);
}

void
vml_lease_table_set_changed_func(VmlLeaseTable *t, GFunc func, gpointer data)
{
    t->changed = func;
    t->changed_data = data;
}

void
vml_lease_table_set_owner_gone_func(VmlLeaseTable *t,
                                    void (*func)(const char *uuid, gpointer data),
                                    gpointer data)
{
    t->owner_gone = func;
    t->owner_gone_data = data;
}

static gboolean
uuid_has_holder(VmlLeaseTable *t, const char *uuid)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        if (g_strcmp0(((VmlHolder *)value)->uuid, uuid) == 0)
            return TRUE;
    }
    return FALSE;
}

static gint64
now_s(void)
{
    return g_get_real_time() / G_USEC_PER_SEC;
}

/* ---- holder records -------------------------------------------------------- */

/* Stable per holder process, so a restarted daemon finds the same record. */
static char *
holder_tag(const char *machine_id, const char *boot_id, gint64 pid, guint64 start_time)
{
    g_autofree char *ident = g_strdup_printf("%s:%s:%" G_GINT64_FORMAT ":%" G_GUINT64_FORMAT,
                                             machine_id, boot_id, pid, start_time);
    g_autofree char *hash = vml_key_hash(ident);
    return g_strndup(hash, 32);
}

/* Put every lock of H into its mailbox, so that they all live in the VM
 * process, not in ours alone. While no lock that is in there went, the
 * new ones are added beside them; else the whole set is stored anew. */
static void
holder_fill_mailbox(VmlHolder *h)
{
    VmlBackend *be = h->table->backend;
    g_autoptr(GError) error = NULL;
    GHashTableIter it;
    gpointer value;

    if (!h->mailbox || !be->ops->lock_fds)
        return;
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GArray) added = g_array_new(FALSE, FALSE, sizeof(int));
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        int fd = be->ops->lock_fd(l->lock);
        if (fd >= 0)
            g_array_append_val(fds, fd);
        if (fd >= 0 && !l->in_mailbox)
            g_array_append_val(added, fd);
    }
    gboolean ok;
    if (!h->mailbox_stale && vml_mailbox_can_add(h->mailbox, added->len))
        ok = !added->len ||
             vml_mailbox_add(h->mailbox, (const int *)(void *)added->data, added->len, &error);
    else
        ok = vml_mailbox_store(h->mailbox, (const int *)(void *)fds->data, fds->len, &error);
    h->mailbox_stale = !ok;
    if (!ok) {
        g_warning("VM %s (pid %d): %s; its leases live in vmleased alone until the next change",
                  h->name, (int)h->pid, error->message);
        return;
    }
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value))
        ((VmlLease *)value)->in_mailbox = TRUE;
}

/* Write the holder's record: what a restart after a crash recovers, so
 * a grant is recorded before it is answered and a release before its
 * lock goes. */
static gboolean
holder_write_record(VmlHolder *h, GError **error)
{
    return vml_holder_record_write(h, h->table->backend, &h->record_layout, error);
}

/* Publish the holder's current leases: into its mailbox, then its
 * record. For changes that are no grant or release (parking, names),
 * where the lock stays what it was: a failed write is only said. */
static void
holder_publish(VmlHolder *h)
{
    g_autoptr(GError) error = NULL;
    holder_fill_mailbox(h);
    if (!holder_write_record(h, &error))
        g_warning("%s", error->message);
}

/* The record could not be written: the change is refused, and why. */
static void
record_refusal(GError **error, VmlHolder *h, const char *what, GError *cause)
{
    g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                "VM %s (pid %d): %s refused, as it cannot be recorded: %s", h->name,
                (int)h->pid, what, cause->message);
}

/* ---- leases and the resource index ---------------------------------------- */

void
vml_holder_event(GLogLevelFlags level, VmlEventKind kind, const VmlHolder *h, const char *key,
                 const char *path, const char *mode, const char *held_by,
                 const char *format, ...)
{
    if (!vml_log_enabled(level))
        return;
    g_autoptr(GString) text = g_string_sized_new(256);
    g_string_append(text, "VM ");
    g_string_append(text, h->name);
    g_string_append(text, " (uuid ");
    g_string_append(text, h->uuid);
    char pid[32];
    g_snprintf(pid, sizeof(pid), ", pid %d) ", (int)h->pid);
    g_string_append(text, pid);
    /* Into a buffer of ours first: vasprintf's growing buffer costs more
     * than the formatting (one line per lease call). */
    char what[1024];
    va_list ap;
    va_start(ap, format);
    int n = g_vsnprintf(what, sizeof(what), format, ap);
    va_end(ap);
    if (n >= 0 && (gsize)n < sizeof(what)) {
        g_string_append_len(text, what, n);
    } else {
        va_start(ap, format);
        g_string_append_vprintf(text, format, ap);
        va_end(ap);
    }
    VmlLogEvent e = { .kind = kind, .resource = key, .path = path, .mode = mode,
                      .domain = h->name, .uuid = h->uuid, .pid = h->pid, .held_by = held_by };
    vml_log_event_message(level, &e, text->str);
}

/* What an event names an image by: its path, else its resource key. */
static const char *
lease_named(const VmlLease *l)
{
    return l->path ? l->path : l->key;
}

/* L is let go for good (WHY: "released", "exited: released"). */
static void
lease_released_event(const VmlLease *l, const char *why)
{
    vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_RELEASE, l->holder, l->key, l->path,
                     vml_mode_name(l->mode), NULL,
                     "%s %s (%s, resource %s)", why, lease_named(l), vml_mode_name(l->mode),
                     l->key);
}

static VmlLease *
lease_add(VmlLeaseTable *t, VmlHolder *h, const char *key, const char *path, VmlMode mode,
          guint64 generation, gint64 since, VmlLock *lock)
{
    VmlLease *l = g_new0(VmlLease, 1);
    gpointer stored_key, head;

    if (!g_hash_table_lookup_extended(t->by_resource, key, &stored_key, &head)) {
        stored_key = g_strdup(key);
        head = NULL;
        g_tree_insert(t->resource_order, stored_key, stored_key);
    }
    l->holder = h;
    l->key = stored_key;
    l->path = g_strdup(path);
    l->mode = mode;
    l->generation = generation;
    l->since = since;
    vml_lease_touch(l);
    l->lock = lock;
    l->next = head;
    g_hash_table_insert(t->by_resource, stored_key, l);
    g_hash_table_insert(h->leases, stored_key, l);
    t->n_leases++;
    return l;
}

/* Unlock (or, at shutdown, just let go) and forget one lease. The caller
 * has already taken it out of its holder's table. */
static void
lease_drop(VmlLeaseTable *t, VmlLease *l)
{
    VmlLease *head = g_hash_table_lookup(t->by_resource, l->key);
    if (head == l && l->next) {
        g_hash_table_insert(t->by_resource, (char *)l->key, l->next);
    } else if (head == l) {
        g_hash_table_remove(t->by_resource, l->key);
        g_tree_remove(t->resource_order, l->key);
        g_free((char *)l->key);
    } else {
        for (VmlLease *p = head; p; p = p->next) {
            if (p->next == l) {
                p->next = l->next;
                break;
            }
        }
    }
    t->n_leases--;
    /* Its lock is in the mailbox still, and its fd number free for another. */
    if (l->in_mailbox)
        l->holder->mailbox_stale = TRUE;
    vml_record_layout_forget(l->holder->record_layout, l);
    if (l->record_dirty)
        g_ptr_array_remove_fast(l->holder->record_dirty, l);
    g_free(l->parked);
    g_free(l->path);
    if (t->shutting_down)
        t->backend->ops->forget(t->backend, l->lock);
    else
        t->backend->ops->release(t->backend, l->lock);
    g_free(l);
}

/* H on KEY (the image at PATH, may be NULL), as admins see an owner. */
static VmlOwner *
holder_owner(const VmlHolder *h, const char *key, const char *path)
{
    VmlOwner *o = g_new0(VmlOwner, 1);
    o->resource = g_strdup(key);
    o->path = g_strdup(path);
    o->host = g_strdup(vml_host_name());
    o->machine_id = g_strdup(vml_host_machine_id());
    o->boot_id = g_strdup(vml_host_boot_id());
    o->uuid = g_strdup(h->uuid);
    o->name = g_strdup(h->name);
    o->holder = h->id;
    o->pid = h->pid;
    o->start_time = h->start_time;
    o->since = h->since;
    return o;
}

static VmlOwner *
lease_owner(const VmlLease *l)
{
    VmlOwner *o = holder_owner(l->holder, l->key, l->path);
    o->mode = l->mode;
    o->since = l->since;
    o->generation = l->generation;
    o->parked = g_strdup(l->parked);
    o->parked_since = l->parked_since;
    return o;
}

static VmlOwner *
observer_owner(const VmlHolder *h, const char *key, const char *path)
{
    VmlOwner *o = holder_owner(h, key, path);
    o->observer = TRUE;
    return o;
}

/* Undo record of one step of an acquire. */
typedef struct {
    VmlLease *lease;
    gboolean added;      /* new lease (else: mode changed or unparked) */
    gboolean unparked;   /* was parked: park it again */
    VmlMode old_mode;
    guint64 old_generation;
} AcquireStep;

/* ---- the in-image mark ------------------------------------------------------- */

/* The program name for an owner extension: as registered, else what the
 * holder runs now. */
static char *
holder_program(const VmlHolder *h)
{
    if (h->program)
        return g_strdup(h->program);
    g_autofree char *exe_link = g_strdup_printf("/proc/%d/exe", (int)h->pid);
    g_autofree char *exe = g_file_read_link(exe_link, NULL);
    return exe ? g_path_get_basename(exe) : g_strdup("");
}

/* An image of one acquire, opened once for its chain read, its check and
 * its mark. */
typedef struct {
    int fd;
    gboolean writable;
    gboolean unheld;      /* the check found no QEMU lock on it */
    gboolean not_qcow2;   /* its header, read on FD, is no qcow2 header */
    struct stat st;
} GuardFile;

static void
guard_file_free(gpointer data)
{
    GuardFile *g = data;
    if (g->fd >= 0)
        close(g->fd);
    g_free(g);
}

static GHashTable *
guard_files_new(void)
{
    return g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, guard_file_free);
}

/* PATH opened for its mark and checks (fd -1 if it cannot be). */
static GuardFile *
guard_file_open(const char *path)
{
    GuardFile *g = g_new0(GuardFile, 1);
    g->fd = vml_image_guard_open(path, &g->writable, &g->st);
    return g;
}

int
vml_lease_table_open_image(VmlLeaseTable *t, const char *path, struct stat *st)
{
    GuardFile *g = guard_file_open(path);
    /* A block device is opened for writing only once its lease is had:
     * closing such an fd makes udev probe the device again. */
    if (g->fd >= 0 && !S_ISREG(g->st.st_mode)) {
        guard_file_free(g);
        return -1;
    }
    if (!t->opened)
        t->opened = guard_files_new();
    g_hash_table_replace(t->opened, g_strdup(path), g);
    *st = g->st;
    return g->fd;
}

void
vml_lease_table_image_not_qcow2(VmlLeaseTable *t, const char *path)
{
    GuardFile *g = t->opened ? g_hash_table_lookup(t->opened, path) : NULL;
    if (g)
        g->not_qcow2 = TRUE;
}

/* Whether an in-use mark must reach stable storage before the grant or
 * release that set or cleared it is answered (docs/image-format.md). */
static gboolean
marks_durable(const VmlLeaseTable *t)
{
    return t->backend->ops->cross_host;
}

static void
lease_mark(VmlLease *l, const GuardFile *g)
{
    const VmlHolder *h = l->holder;
    g_autofree char *program = holder_program(h);
    VmlImageOwner o = {
        .pid = (guint32)h->pid,
        .start_time = h->start_time,
        .time_set = now_s(),
        .generation = l->generation,
        .uuid = h->uuid,
        .machine_id = (char *)vml_host_machine_id(),
        .boot_id = (char *)vml_host_boot_id(),
        .hostname = (char *)vml_host_name(),
        .program = program,
        .name = h->name,
    };
    /* Not qcow2 a moment ago, under no lease: there is no header of ours
     * to write, and none will appear that this mark must cover. */
    if (g && g->not_qcow2) {
        l->unmarkable = TRUE;
        return;
    }
    l->unmarkable = !vml_image_guard_mark(l->path, g ? g->fd : -1, g ? &g->st : NULL,
                                          g && g->unheld, &o, marks_durable(h->table));
}

/* H's exclusive hold on the image at PATH ends: clear its mark, or
 * remember to once the QEMU that still has the image open is gone. */
static void
holder_unmark(VmlHolder *h, const char *path)
{
    if (!vml_image_guard_unmark(path, (guint32)h->pid, h->start_time, h->uuid,
                                marks_durable(h->table)))
        g_ptr_array_add(h->pending_unmarks, g_strdup(path));
}

static void
lease_unmark(VmlLeaseTable *t, const VmlLease *l)
{
    if (!t->shutting_down && l->mode == VML_MODE_EXCLUSIVE && l->path && !l->unmarkable)
        holder_unmark(l->holder, l->path);
}

/* Clear the marks left while a QEMU still held the image. When the holder
 * has EXITED, its own QEMU is gone too; a mark still blocked then is left
 * for `vmlease force-unlock`. */
static void
holder_retry_unmarks(VmlHolder *h, gboolean exited)
{
    for (guint i = h->pending_unmarks->len; i-- > 0;) {
        const char *key = h->pending_unmarks->pdata[i];
        VmlLease *l = g_hash_table_lookup(h->leases, key);
        gboolean done = (l && l->mode == VML_MODE_EXCLUSIVE) ||   /* taken again since: its
                                                                     own release clears it */
                        vml_image_guard_unmark(key, (guint32)h->pid, h->start_time, h->uuid,
                                               marks_durable(h->table));
        if (!done && exited)
            g_warning("%s: in-use mark of exited pid %d left set: the image is still held",
                      key, (int)h->pid);
        if (done || exited)
            g_ptr_array_remove_index_fast(h->pending_unmarks, i);
    }
}

void
vml_lease_table_retry_unmarks(VmlHolder *h)
{
    holder_retry_unmarks(h, FALSE);
}

/* Before granting exclusive leases on images: refuse when a QEMU that no
 * holder of the image accounts for has it open for writing. Each image
 * checked is left open in IMAGES (by path) for its mark. */
static gboolean
check_images(VmlLeaseTable *t, VmlHolder *h, GArray *steps, GHashTable *images,
             JsonObject **params, GError **error)
{
    for (guint i = 0; i < steps->len; i++) {
        const VmlLease *l = g_array_index(steps, AcquireStep, i).lease;
        if (l->mode != VML_MODE_EXCLUSIVE || !l->path)
            continue;
        GuardFile *g = g_hash_table_lookup(images, l->path);
        if (!g) {
            g = guard_file_open(l->path);
            g_hash_table_replace(images, g_strdup(l->path), g);
        }
        g_autoptr(GArray) known = g_array_new(FALSE, FALSE, sizeof(pid_t));
        g_array_append_val(known, h->pid);
        for (const VmlLease *o = g_hash_table_lookup(t->by_resource, l->key); o; o = o->next)
            g_array_append_val(known, o->holder->pid);
        if (l->grant == VML_GRANT_CLAIMED) {
            /* The QEMU that parked it (the migration's source) still has
             * the image open until the switchover ends. */
            g_autoptr(GPtrArray) owners = vml_lease_table_owners(t, l->key);
            for (guint j = 0; j < owners->len; j++) {
                const VmlOwner *o = owners->pdata[j];
                pid_t pid = (pid_t)o->pid;
                if (g_strcmp0(o->uuid, h->uuid) == 0)
                    g_array_append_val(known, pid);
            }
        }
        if (!vml_image_guard_check(l->path, g->fd, (const pid_t *)(void *)known->data,
                                   known->len, &g->unheld, params, error)) {
            if (*params) {
                json_object_set_string_member(*params, "path", l->path);
                json_object_set_string_member(*params, "resource", l->key);
            }
            return FALSE;
        }
    }
    return TRUE;
}

/* ---- holders ---------------------------------------------------------------- */

/* Let go of every lease of H; WHY, unless shutting down, is logged. */
static void
holder_drop_leases(VmlHolder *h, const char *why)
{
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        g_hash_table_iter_steal(&it);
        if (!h->table->shutting_down)
            lease_released_event(value, why);
        lease_unmark(h->table, value);
        lease_drop(h->table, value);
    }
}

static void
holder_free(VmlHolder *h)
{
    VmlLeaseTable *t = h->table;

    VmlHolder *first = g_hash_table_lookup(t->by_pid, GINT_TO_POINTER(h->pid));
    if (first == h && h->next_same_pid)
        g_hash_table_insert(t->by_pid, GINT_TO_POINTER(h->pid), h->next_same_pid);
    else if (first == h)
        g_hash_table_remove(t->by_pid, GINT_TO_POINTER(h->pid));
    for (VmlHolder *o = first; o && o != h; o = o->next_same_pid) {
        if (o->next_same_pid == h)
            o->next_same_pid = h->next_same_pid;
    }

    holder_drop_leases(h, "exited: released");
    if (!t->shutting_down)
        holder_retry_unmarks(h, TRUE);
    g_hash_table_unref(h->leases);
    g_hash_table_unref(h->observing);
    g_clear_pointer(&h->handed, g_hash_table_unref);
    vml_record_layout_free(h->record_layout);
    g_ptr_array_unref(h->record_dirty);
    if (h->record)
        vml_record_store_close(&t->backend->records, h->record, !t->shutting_down);
    vml_holder_watch_free(h->watch);
    vml_mailbox_free(h->mailbox);
    vml_resume_watch_free(h->resume_watch);
    g_free(h->tag);
    g_free(h->uuid);
    g_free(h->name);
    g_free(h->on_lockfailure);
    g_free(h->program);
    g_free(h->lock_fds_detail);
    g_ptr_array_unref(h->pending_unmarks);
    g_free(h);
}

static void
on_holder_exit(gpointer data)
{
    VmlHolder *h = data;
    VmlLeaseTable *t = h->table;
    g_info("holder %" G_GINT64_FORMAT " (VM %s, pid %d) exited: releasing %u lease(s)",
           h->id, h->name, (int)h->pid, g_hash_table_size(h->leases));
    g_autofree char *uuid = g_strdup(h->uuid);
    g_hash_table_remove(t->holders, &h->id);
    if (t->owner_gone && !uuid_has_holder(t, uuid))
        t->owner_gone(uuid, t->owner_gone_data);
    changed(t);
}

static VmlHolder *
holder_new(VmlLeaseTable *t, gint64 id, const char *uuid, const char *name,
           pid_t pid, guint64 start_time, gint64 since, GError **error)
{
    VmlHolder *h = g_new0(VmlHolder, 1);
    h->watch = vml_holder_watch_new(pid, start_time, on_holder_exit, h, error);
    if (!h->watch) {
        g_free(h);
        return NULL;
    }
    h->tag = holder_tag(vml_host_machine_id(), vml_host_boot_id(), pid, start_time);
    h->record = vml_record_store_open(&t->backend->records, h->tag, error);
    if (!h->record) {
        vml_holder_watch_free(h->watch);
        g_free(h->tag);
        g_free(h);
        return NULL;
    }
    h->id = id;
    h->uuid = g_strdup(uuid);
    h->name = g_strdup(name);
    h->pid = pid;
    h->start_time = start_time;
    h->since = since;
    h->on_lockfailure = g_strdup("default");
    h->table = t;
    h->leases = g_hash_table_new(vml_str_hash, g_str_equal);
    h->observing = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, g_free);
    h->record_dirty = g_ptr_array_new();
    h->pending_unmarks = g_ptr_array_new_with_free_func(g_free);
    g_hash_table_insert(t->holders, &h->id, h);
    h->next_same_pid = g_hash_table_lookup(t->by_pid, GINT_TO_POINTER(pid));
    g_hash_table_insert(t->by_pid, GINT_TO_POINTER(pid), h);
    t->next_id = MAX(t->next_id, id + 1);
    return h;
}

static VmlHolder *
find_process(VmlLeaseTable *t, pid_t pid, guint64 start_time)
{
    for (VmlHolder *h = g_hash_table_lookup(t->by_pid, GINT_TO_POINTER(pid)); h;
         h = h->next_same_pid) {
        if (h->start_time == start_time)
            return h;
    }
    return NULL;
}

/* The holder of PID whose process has not exited: that process, since the
 * pid cannot have been reused meanwhile; NULL if there is none. */
static VmlHolder *
find_running(VmlLeaseTable *t, pid_t pid)
{
    for (VmlHolder *h = g_hash_table_lookup(t->by_pid, GINT_TO_POINTER(pid)); h;
         h = h->next_same_pid) {
        if (vml_holder_watch_running(h->watch))
            return h;
    }
    return NULL;
}

VmlLeaseTable *
vml_lease_table_new(VmlBackend *backend, const VmlDaemonConfig *cfg)
{
    VmlLeaseTable *t = g_new0(VmlLeaseTable, 1);
    t->backend = backend;
    t->cfg = cfg;
    t->holders = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
                                       (GDestroyNotify)holder_free);
    t->by_pid = g_hash_table_new(g_direct_hash, g_direct_equal);
    t->by_resource = g_hash_table_new(vml_str_hash, g_str_equal);
    t->resource_order = g_tree_new((GCompareFunc)strcmp);
    t->next_id = 1;
    return t;
}

void
vml_lease_touch(VmlLease *l)
{
    if (l->record_dirty)
        return;
    l->record_dirty = TRUE;
    g_ptr_array_add(l->holder->record_dirty, l);
}

gint64
vml_lease_table_next_id(VmlLeaseTable *t)
{
    return t->next_id;
}

char *
vml_lease_table_key_of_stat(VmlLeaseTable *t, const struct stat *st)
{
    return vml_image_identity_stat(st, t->cfg->storage_names, t->cfg->n_storage_names, NULL);
}

char *
vml_lease_table_image_key(VmlLeaseTable *t, const char *path, GError **error)
{
    return vml_image_identity_of_path(path, t->cfg->storage_names, t->cfg->n_storage_names,
                                      error);
}

void
vml_lease_table_free(VmlLeaseTable *t)
{
    if (!t)
        return;
    t->shutting_down = TRUE;
    g_hash_table_unref(t->holders);
    g_hash_table_unref(t->by_pid);
    g_hash_table_unref(t->by_resource);
    g_tree_unref(t->resource_order);
    g_clear_pointer(&t->opened, g_hash_table_unref);
    g_free(t);
}

VmlHolder *
vml_lease_table_register(VmlLeaseTable *t, const char *uuid, const char *name,
                         pid_t pid, const char *on_lockfailure, const char *program,
                         uid_t caller, GError **error)
{
    guint64 start_time;
    uid_t runs_as = 0;
    /* A running holder of this pid needs no /proc read. */
    VmlHolder *h = find_running(t, pid);
    if (h)
        start_time = h->start_time;
    else if (!vml_proc_start_time(pid, &start_time, error))
        return NULL;
    if (caller != 0 && !vml_proc_uid(pid, &runs_as, error))
        return NULL;
    /* Nobody holds leases on behalf of another user's process (pid 1
     * holding a disk forever). */
    if (caller != 0 && caller != runs_as) {
        g_set_error(error, VML_ERROR, VML_ERROR_PERMISSION_DENIED,
                    "uid %u may register only its own processes; pid %d runs as uid %u",
                    (unsigned)caller, (int)pid, (unsigned)runs_as);
        return NULL;
    }

    if (!h)
        h = find_process(t, pid, start_time);
    if (h && caller != 0 && caller != h->uid) {
        g_set_error(error, VML_ERROR, VML_ERROR_PERMISSION_DENIED,
                    "process %d is registered already by uid %u", (int)pid, (unsigned)h->uid);
        return NULL;
    }
    if (h) {
        if (g_strcmp0(h->uuid, uuid) != 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "process %d is already registered for VM %s (uuid %s)",
                        (int)pid, h->name, h->uuid);
            return NULL;
        }
        if (on_lockfailure && g_strcmp0(h->on_lockfailure, on_lockfailure) != 0) {
            g_free(h->on_lockfailure);
            h->on_lockfailure = g_strdup(on_lockfailure);
            holder_publish(h);
            changed(t);
        }
        return h;
    }
    if (g_hash_table_size(t->holders) >= t->cfg->max_holders) {
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "too many holders (max_holders = %u)", t->cfg->max_holders);
        return NULL;
    }
    h = holder_new(t, t->next_id, uuid, name, pid, start_time, now_s(), error);
    if (h) {
        h->uid = caller;
        /* New in this daemon: it has none of our lock fds yet. */
        h->handed = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, NULL);
        if (on_lockfailure) {
            g_free(h->on_lockfailure);
            h->on_lockfailure = g_strdup(on_lockfailure);
        }
        h->program = g_strdup(program);
        if (!vml_proc_exe_id(pid, &h->exe_dev, &h->exe_ino))
            h->exe_dev = h->exe_ino = 0;
        g_info("registered holder %" G_GINT64_FORMAT ": VM %s (uuid %s, pid %d)",
               h->id, name, uuid, (int)pid);
        holder_publish(h);
        changed(t);
    }
    return h;
}

void
vml_lease_table_handed(VmlHolder *h, GPtrArray *leases, pid_t pid)
{
    if (pid != h->pid) {
        g_clear_pointer(&h->handed, g_hash_table_unref);
        return;
    }
    for (guint i = 0; h->handed && i < leases->len; i++)
        g_hash_table_add(h->handed, g_strdup(((VmlLease *)leases->pdata[i])->key));
}

VmlHolder *
vml_lease_table_lookup(VmlLeaseTable *t, gint64 id, GError **error)
{
    VmlHolder *h = g_hash_table_lookup(t->holders, &id);
    if (!h)
        g_set_error(error, VML_ERROR, VML_ERROR_NO_SUCH_HOLDER,
                    "no holder %" G_GINT64_FORMAT " (it exited or was never registered)", id);
    return h;
}

void
vml_lease_table_set_mailbox(VmlLeaseTable *t, VmlHolder *h, VmlMailbox *mailbox)
{
    vml_mailbox_free(h->mailbox);
    h->mailbox = mailbox;
    h->mailbox_stale = TRUE;
    holder_publish(h);
    changed(t);
}

gboolean
vml_lock_failure_valid(const char *action)
{
    static const char *const actions[] = { "default", "poweroff", "restart", "pause", "ignore", NULL };
    return g_strv_contains(actions, action);
}

/* ---- owners ----------------------------------------------------------------- */

/* The images a holder record lists as observed (vml_record_parse leaves
 * them out): resource key -> canonical path, into OUT. */
static void
record_observed(JsonObject *record, GHashTable *out)
{
    JsonNode *n = json_object_get_member(record, "observing");
    JsonArray *a = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonNode *en = json_array_get_element(a, i);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
        const char *key = o ? json_object_get_string_member_with_default(o, "resource", NULL)
                            : NULL;
        const char *path = o ? json_object_get_string_member_with_default(o, "path", NULL)
                             : NULL;
        if (key && path && g_path_is_absolute(path))
            g_hash_table_insert(out, g_strdup(key), g_strdup(path));
    }
}

/* The observers a record lists, on KEY (NULL: all), into OUT. */
static void
record_observers(JsonObject *record, const VmlOwner *id, const char *key, GPtrArray *out)
{
    g_autoptr(GHashTable) observed = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free,
                                                           g_free);
    record_observed(record, observed);
    GHashTableIter it;
    gpointer res, path;
    g_hash_table_iter_init(&it, observed);
    while (g_hash_table_iter_next(&it, &res, &path)) {
        if (key && g_strcmp0(res, key) != 0)
            continue;
        VmlOwner *obs = vml_owner_copy(id);
        g_free(obs->resource);
        obs->resource = g_strdup(res);
        obs->path = g_strdup(path);
        obs->observer = TRUE;
        g_ptr_array_add(out, obs);
    }
}

/* Append to OUT the owners from the lockspace records (KEY NULL: all),
 * minus this daemon's own holders and records of local processes that are
 * gone; with OBSERVERS, the observers they list too. */
static void
record_owners(VmlLeaseTable *t, const char *key, gboolean observers, GPtrArray *out)
{
    /* Our own holders' records say nothing we do not know: not read. */
    g_autoptr(GHashTable) ours = g_hash_table_new(vml_str_hash, g_str_equal);
    GHashTableIter hi;
    gpointer hv;
    g_hash_table_iter_init(&hi, t->holders);
    while (g_hash_table_iter_next(&hi, NULL, &hv))
        g_hash_table_add(ours, ((VmlHolder *)hv)->tag);
    g_autoptr(GPtrArray) records = vml_record_store_all(&t->backend->records, ours, NULL);

    for (guint i = 0; records && i < records->len; i++) {
        gsize len;
        const char *data = g_bytes_get_data(records->pdata[i], &len);
        g_autoptr(JsonParser) p = json_parser_new_immutable();
        if (!json_parser_load_from_data(p, data, len, NULL) ||
            !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
            continue;   /* caught mid-write, or not ours to read */
        g_autoptr(GPtrArray) owners = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
        g_autoptr(VmlOwner) id = vml_record_parse(json_node_get_object(json_parser_get_root(p)),
                                                  owners, NULL, NULL);
        if (!id)
            continue;
        gboolean here = vml_owner_is_this_host(id) &&
                        g_strcmp0(id->boot_id, vml_host_boot_id()) == 0;
        if (here && (find_process(t, id->pid, id->start_time) ||
                     !vml_proc_is_same(id->pid, id->start_time)))
            continue;
        for (guint j = 0; j < owners->len; j++) {
            VmlOwner *o = owners->pdata[j];
            if (!key || g_strcmp0(o->resource, key) == 0)
                g_ptr_array_add(out, g_steal_pointer(&owners->pdata[j]));
        }
        if (observers)
            record_observers(json_node_get_object(json_parser_get_root(p)), id, key, out);
    }
}

GPtrArray *
vml_lease_table_owners(VmlLeaseTable *t, const char *key)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    for (VmlLease *l = g_hash_table_lookup(t->by_resource, key); l; l = l->next)
        g_ptr_array_add(out, lease_owner(l));
    record_owners(t, key, FALSE, out);
    /* Nobody to name, yet it may be locked: name whoever keeps the lock. */
    if (out->len == 0) {
        g_ptr_array_unref(out);
        return vml_lease_table_lockers(t, key);
    }
    return out;
}

GPtrArray *
vml_lease_table_lockers(VmlLeaseTable *t, const char *key)
{
    if (t->backend->ops->lockers)
        return t->backend->ops->lockers(t->backend, key);
    return g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
}

static void
add_owner(GHashTable *map, VmlOwner *o)
{
    GPtrArray *owners = g_hash_table_lookup(map, o->resource);
    if (!owners) {
        owners = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
        g_hash_table_insert(map, g_strdup(o->resource), owners);
    }
    g_ptr_array_add(owners, o);
}

static int
compare_keys(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GHashTable *
vml_lease_table_all_owners(VmlLeaseTable *t, GPtrArray *only, const char *after, guint max,
                           char **next, GPtrArray **order)
{
    GHashTable *map = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)g_ptr_array_unref);
    g_autoptr(GPtrArray) others = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    GHashTableIter it;
    gpointer key, value;

    /* One pass over the lockspace for every resource, not one per key. */
    record_owners(t, NULL, TRUE, others);
    /* Which resources, in key order; owners are made for a page only.
     * A page's keys are among the first MAX + 1 after AFTER of each of
     * the three sources (leases held here, observers, records), so only
     * those are gathered and sorted, not every key there is. */
    g_autoptr(GHashTable) keys = g_hash_table_new(vml_str_hash, g_str_equal);
    if (only) {
        for (guint i = 0; i < only->len; i++)
            g_hash_table_add(keys, only->pdata[i]);
    } else {
        GTreeNode *n = after ? g_tree_upper_bound(t->resource_order, after)
                             : g_tree_node_first(t->resource_order);
        for (guint i = 0; n && (!max || i <= max); i++, n = g_tree_node_next(n))
            g_hash_table_add(keys, g_tree_node_key(n));
        g_hash_table_iter_init(&it, t->holders);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            GHashTableIter oi;
            g_hash_table_iter_init(&oi, ((VmlHolder *)value)->observing);
            while (g_hash_table_iter_next(&oi, &key, NULL))
                if (!after || strcmp(key, after) > 0)
                    g_hash_table_add(keys, key);
        }
        for (guint i = 0; i < others->len; i++) {
            const char *k = ((VmlOwner *)others->pdata[i])->resource;
            if (!after || strcmp(k, after) > 0)
                g_hash_table_add(keys, (gpointer)k);
        }
    }
    g_autoptr(GPtrArray) sorted = g_ptr_array_sized_new(g_hash_table_size(keys));
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &key, NULL))
        g_ptr_array_add(sorted, key);
    g_ptr_array_sort(sorted, compare_keys);
    if (next)
        *next = NULL;
    if (!only && max && sorted->len > max) {
        g_ptr_array_set_size(sorted, max);
        if (next)
            *next = g_strdup(sorted->pdata[max - 1]);
    }
    g_autoptr(GHashTable) page = g_hash_table_new(vml_str_hash, g_str_equal);
    for (guint i = 0; i < sorted->len; i++) {
        const char *k = sorted->pdata[i];
        g_hash_table_add(page, (gpointer)k);
        for (VmlLease *l = g_hash_table_lookup(t->by_resource, k); l; l = l->next)
            add_owner(map, lease_owner(l));
    }
    /* Observers after the holders, one pass over the holders for the page. */
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlHolder *h = value;
        GHashTableIter oi;
        gpointer path;
        g_hash_table_iter_init(&oi, h->observing);
        while (g_hash_table_iter_next(&oi, &key, &path))
            if (g_hash_table_contains(page, key))
                add_owner(map, observer_owner(h, key, path));
    }
    for (guint i = 0; i < others->len; i++) {
        if (g_hash_table_contains(page, ((VmlOwner *)others->pdata[i])->resource))
            add_owner(map, g_steal_pointer(&others->pdata[i]));
    }
    if (order) {
        *order = g_ptr_array_sized_new(sorted->len);
        for (guint i = 0; i < sorted->len; i++) {
            gpointer mine;
            if (g_hash_table_lookup_extended(map, sorted->pdata[i], &mine, NULL))
                g_ptr_array_add(*order, mine);
        }
    }
    return map;
}

const char *
vml_holder_held_key(VmlHolder *h, const VmlRequest *req)
{
    if (!req->path || g_hash_table_contains(h->leases, req->key))
        return req->key;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        if (g_strcmp0(l->path, req->path) == 0)
            return l->key;
    }
    return req->key;
}

gboolean
vml_lease_table_observe(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs, guint n_reqs,
                        GError **error)
{
    g_autoptr(GPtrArray) added = g_ptr_array_new();
    for (guint i = 0; i < n_reqs; i++) {
        if (!reqs[i].path) {
            g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                        "only images (paths) can be observed, not a <lease>'s key");
            return FALSE;
        }
    }
    for (guint i = 0; i < n_reqs; i++) {
        if (g_hash_table_contains(h->observing, reqs[i].key))
            continue;
        g_hash_table_insert(h->observing, g_strdup(reqs[i].key), g_strdup(reqs[i].path));
        g_ptr_array_add(added, reqs[i].key);
    }
    g_autoptr(GError) local = NULL;
    if (added->len && !holder_write_record(h, &local)) {
        for (guint i = 0; i < added->len; i++)
            g_hash_table_remove(h->observing, added->pdata[i]);
        record_refusal(error, h, "observing", local);
        return FALSE;
    }
    for (guint i = 0; i < n_reqs; i++)
        g_info("VM %s (pid %d) observes %s (resource %s), holding nothing", h->name,
               (int)h->pid, reqs[i].path, reqs[i].key);
    if (added->len)
        changed(t);
    return TRUE;
}

/* The error parameters of a conflict, and a message naming every owner. */
static JsonObject *
conflict_params(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *r, VmlMode mode,
                GError **error)
{
    const char *key = r->key;
    JsonObject *p = json_object_new();
    JsonArray *owners = json_array_new();
    g_autoptr(GPtrArray) all = vml_lease_table_owners(t, key);
    g_autoptr(GString) who = g_string_new(NULL);

    for (guint i = 0; i < all->len; i++) {
        VmlOwner *o = all->pdata[i];
        if (o->holder == h->id && o->pid == h->pid && o->start_time == h->start_time)
            continue;
        JsonObject *j = vml_owner_to_json(o);
        json_array_add_object_element(owners, j);
        g_autofree char *text = vml_owner_text(j);
        g_string_append_printf(who, "%s%s", who->len ? "; " : "", text);
        /* Another name of the same image: say which. */
        if (o->path && g_strcmp0(o->path, r->path) != 0)
            g_string_append_printf(who, ", through %s", o->path);
    }
    const char *named = r->given ? r->given : r->path ? r->path : key;
    g_autofree char *resolved = r->path ? g_strdup_printf(" (resource %s)", key)
                                        : g_strdup("");
    const char *held_by = who->len ? who->str : "a holder vmleased does not know";
    g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "cannot lock %s%s %s: in use by %s",
                named, resolved, vml_mode_name(mode), held_by);
    vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_CONFLICT, h, key, r->path, vml_mode_name(mode),
                     held_by, "refused %s%s %s: in use by %s", named, resolved,
                     vml_mode_name(mode), held_by);
    if (r->path) {
        json_object_set_string_member(p, "path", named);
        json_object_set_string_member(p, "canonical_path", r->path);
    }
    json_object_set_string_member(p, "resource", key);
    json_object_set_string_member(p, "mode", vml_mode_name(mode));
    json_object_set_array_member(p, "owners", owners);
    return p;
}

/* ---- acquire and release ---------------------------------------------------- */

static void
rollback(VmlLeaseTable *t, VmlHolder *h, GArray *steps)
{
    for (guint i = steps->len; i-- > 0;) {
        AcquireStep *s = &g_array_index(steps, AcquireStep, i);
        if (s->added) {
            g_hash_table_steal(h->leases, s->lease->key);
            lease_drop(t, s->lease);
        } else if (s->unparked) {
            /* Its record still says parked: nothing was published. */
            t->backend->ops->park(t->backend, s->lease->lock, s->lease->mode);
            s->lease->grant = VML_GRANT_HELD;
        } else {
            /* An upgrade undone is a downgrade: it cannot conflict. */
            guint64 gen;
            t->backend->ops->change_mode(t->backend, s->lease->lock, s->lease->key,
                                         s->old_mode, &gen, NULL);
            s->lease->mode = s->old_mode;
            s->lease->generation = s->old_generation;
            vml_lease_touch(s->lease);
        }
    }
}

/* KEY is held by others only as parked leases of H's domain (and shared
 * beside them), so H, its next process, may claim it. */
static gboolean
claimable(VmlLeaseTable *t, VmlHolder *h, const char *key)
{
    g_autoptr(GPtrArray) owners = vml_lease_table_owners(t, key);
    gboolean parked = FALSE;
    for (guint i = 0; i < owners->len; i++) {
        const VmlOwner *o = owners->pdata[i];
        if (o->holder == h->id && o->pid == h->pid && o->start_time == h->start_time)
            continue;
        if (g_strcmp0(o->uuid, h->uuid) != 0 || (o->mode == VML_MODE_EXCLUSIVE && !o->parked))
            return FALSE;
        parked = parked || o->parked;
    }
    return parked;
}

GPtrArray *
vml_lease_table_acquire(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs,
                        guint n_reqs, gboolean holder_fds, gboolean claim,
                        JsonObject **conflict, GError **error)
{
    VmlBackend *be = t->backend;
    /* Whatever was opened ahead for this acquire is used (and closed) here. */
    g_autoptr(GHashTable) images = t->opened ? g_steal_pointer(&t->opened) : guard_files_new();
    /* Each request's lease, looked up once (a new one once it is added). */
    g_autofree VmlLease **held = g_new(VmlLease *, n_reqs);
    guint n_new = 0;
    for (guint i = 0; i < n_reqs; i++) {
        held[i] = g_hash_table_lookup(h->leases, reqs[i].key);
        n_new += !held[i];
    }
    if (g_hash_table_size(h->leases) + n_new > t->cfg->max_leases_per_holder) {
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "holder %" G_GINT64_FORMAT " would hold more than %u leases "
                    "(max_leases_per_holder)", h->id, t->cfg->max_leases_per_holder);
        return NULL;
    }

    g_autoptr(GArray) steps = g_array_new(FALSE, FALSE, sizeof(AcquireStep));

    gint64 since = now_s();
    for (guint i = 0; i < n_reqs; i++) {
        if (held[i])
            held[i]->grant = VML_GRANT_HELD;
    }
    /* Downgrades go last: once done they could not be undone safely. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !check_images(t, h, steps, images, conflict, error)) {
            rollback(t, h, steps);
            return NULL;
        }
        for (guint i = 0; i < n_reqs; i++) {
            const VmlRequest *r = &reqs[i];
            /* A key asked for twice is added by the first. */
            VmlLease *l = held[i] ? held[i] : (held[i] = g_hash_table_lookup(h->leases, r->key));
            g_autoptr(GError) local = NULL;
            guint64 gen;

            if (pass == 0 && l && l->parked && l->grant == VML_GRANT_HELD) {
                /* In use again: take back what parking let go, unless the
                 * domain's next process claimed it meanwhile. */
                AcquireStep s = { .lease = l, .unparked = TRUE };
                if (!be->ops->unpark(be, l->lock, l->key, l->mode, &local)) {
                    rollback(t, h, steps);
                    if (local->code == VML_ERROR_CONFLICT)
                        *conflict = conflict_params(t, h, r, l->mode, error);
                    else
                        g_propagate_error(error, g_steal_pointer(&local));
                    return NULL;
                }
                l->grant = VML_GRANT_UNPARKED;
                g_array_append_val(steps, s);
            }
            if (l && (l->mode == r->mode ||
                      (r->at_least && l->mode == VML_MODE_EXCLUSIVE)))
                continue;
            gboolean downgrade = l && r->mode == VML_MODE_SHARED;
            if (downgrade != (pass == 1))
                continue;
            if (l) {
                AcquireStep s = { .lease = l, .old_mode = l->mode, .old_generation = l->generation };
                if (be->ops->change_mode(be, l->lock, l->key, r->mode, &gen, &local)) {
                    l->mode = r->mode;
                    l->generation = gen;
                    vml_lease_touch(l);
                    g_array_append_val(steps, s);
                    continue;
                }
            } else {
                /* Its own fds are looked through only where ours may be. */
                int pidfd = holder_fds && (!h->handed || g_hash_table_contains(h->handed, r->key))
                    ? vml_holder_watch_pidfd(h->watch) : -1;
                VmlGrant grant = VML_GRANT_NEW;
                VmlLock *lock = be->ops->acquire(be, r->key, r->mode, h->pid, pidfd, &gen, &local);
                if (!lock && claim && local->code == VML_ERROR_CONFLICT && be->ops->claim &&
                    claimable(t, h, r->key)) {
                    g_clear_error(&local);
                    lock = be->ops->claim(be, r->key, r->mode, h->pid, pidfd, &gen, &local);
                    grant = VML_GRANT_CLAIMED;
                }
                if (lock) {
                    AcquireStep s = { .lease = lease_add(t, h, r->key, r->path, r->mode, gen, since, lock),
                                      .added = TRUE };
                    s.lease->grant = grant;
                    g_array_append_val(steps, s);
                    continue;
                }
            }
            rollback(t, h, steps);
            if (local->code == VML_ERROR_CONFLICT)
                *conflict = conflict_params(t, h, r, r->mode, error);
            else
                g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
    }

    /* Named wins: a backing image libvirt names (a commit's base) is the
     * holder's until libvirt lets it go. */
    gboolean roles_changed = FALSE;
    g_autoptr(GArray) was_derived = g_array_sized_new(FALSE, FALSE, sizeof(gboolean), n_reqs);
    for (guint i = 0; i < n_reqs; i++) {
        VmlLease *l = held[i] ? held[i] : (held[i] = g_hash_table_lookup(h->leases, reqs[i].key));
        gboolean taken = l->grant == VML_GRANT_NEW || l->grant == VML_GRANT_CLAIMED;
        gboolean derived = reqs[i].derived && (taken || l->derived);
        roles_changed = roles_changed || derived != l->derived;
        g_array_append_val(was_derived, l->derived);
        l->derived = derived;
        vml_lease_touch(l);
    }
    /* Recorded before it is answered (and before any mark): a crash
     * from here on brings back what the caller is about to be told. */
    if (steps->len || roles_changed) {
        holder_fill_mailbox(h);
        g_autoptr(GError) local = NULL;
        if (!holder_write_record(h, &local)) {
            for (guint i = 0; i < n_reqs; i++) {
                VmlLease *l = held[i];
                l->derived = g_array_index(was_derived, gboolean, i);
                vml_lease_touch(l);
            }
            rollback(t, h, steps);
            holder_fill_mailbox(h);
            record_refusal(error, h, "the lease", local);
            return NULL;
        }
    }

    gboolean unparked = FALSE;
    for (guint i = 0; i < steps->len; i++) {
        const AcquireStep *s = &g_array_index(steps, AcquireStep, i);
        const VmlLease *l = s->lease;
        if (s->unparked) {
            unparked = TRUE;
            vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_ACQUIRE, h, l->key, l->path,
                             vml_mode_name(l->mode), NULL,
                             "took back its parked lease on %s (%s, resource %s)", lease_named(l),
                             vml_mode_name(l->mode), l->key);
            g_clear_pointer(&s->lease->parked, g_free);
            s->lease->parked_since = 0;
            vml_lease_touch(s->lease);
            g_clear_pointer(&h->resume_watch, vml_resume_watch_free);
            continue;
        }
        if (l->grant == VML_GRANT_CLAIMED)
            vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_ACQUIRE, h, l->key, l->path,
                             vml_mode_name(l->mode), NULL,
                             "claimed the lease its domain parked on %s (%s, resource %s, "
                             "generation %" G_GUINT64_FORMAT ")", lease_named(l),
                             vml_mode_name(l->mode), l->key, l->generation);
        else if (s->added)
            vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_ACQUIRE, h, l->key, l->path,
                             vml_mode_name(l->mode), NULL,
                             "acquired %s %s (resource %s, generation %" G_GUINT64_FORMAT ")",
                             lease_named(l), vml_mode_name(l->mode), l->key, l->generation);
        else
            vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_ACQUIRE, h, l->key, l->path,
                             vml_mode_name(l->mode), NULL,
                             "changed its lease on %s from %s to %s (resource %s)", lease_named(l),
                             vml_mode_name(s->old_mode), vml_mode_name(l->mode), l->key);
        if (s->lease->mode == VML_MODE_EXCLUSIVE && s->lease->path) {
            const GuardFile *g = g_hash_table_lookup(images, s->lease->path);
            lease_mark(s->lease, g && g->writable ? g : NULL);
        }
        else if (!s->added && s->old_mode == VML_MODE_EXCLUSIVE && s->lease->path &&
                 !s->lease->unmarkable)
            holder_unmark(h, s->lease->path);   /* downgraded */
    }

    GPtrArray *out = g_ptr_array_sized_new(n_reqs);
    for (guint i = 0; i < n_reqs; i++)
        g_ptr_array_add(out, held[i]);
    if (unparked)
        holder_publish(h);   /* no longer parked: the lock says so already */
    if (steps->len || roles_changed)
        changed(t);
    return out;
}

/* H holds every one of KEYS (NULL: nothing asked, so yes). */
static gboolean
holds_all(VmlHolder *h, const char *const *keys, guint n_keys, GError **error)
{
    for (guint i = 0; keys && i < n_keys; i++) {
        if (!g_hash_table_contains(h->leases, keys[i])) {
            g_set_error(error, VML_ERROR, VML_ERROR_NOT_HELD,
                        "holder %" G_GINT64_FORMAT " (VM %s) holds no lease on %s",
                        h->id, h->name, keys[i]);
            return FALSE;
        }
    }
    return TRUE;
}

/* Mark H's leases KEYS (NULL: all) LEAVING or not. Only the leases named
 * are touched: a release costs no more for a holder of many. */
static void
set_leaving(VmlHolder *h, const char *const *keys, guint n_keys, gboolean leaving)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    for (guint i = 0; keys ? i < n_keys : g_hash_table_iter_next(&it, NULL, &value); i++) {
        VmlLease *l = keys ? g_hash_table_lookup(h->leases, keys[i]) : value;
        l->leaving = leaving;
        vml_lease_touch(l);
    }
}

gboolean
vml_lease_table_release(VmlLeaseTable *t, VmlHolder *h, const char *const *keys,
                        guint n_keys, guint *released, GError **error)
{
    *released = 0;
    if (!holds_all(h, keys, n_keys, error))
        return FALSE;
    if (!keys && g_hash_table_size(h->observing)) {
        /* Observing holds nothing: no lock to order the record against. */
        g_hash_table_remove_all(h->observing);
        holder_publish(h);
        changed(t);
    }
    if (!keys && g_hash_table_size(h->leases) == 0)
        return TRUE;
    /* Recorded gone before the locks go: a crash between must not bring
     * back a lease whose release the caller may have been told of. */
    set_leaving(h, keys, n_keys, TRUE);
    g_autoptr(GError) local = NULL;
    gboolean recorded = holder_write_record(h, &local);
    set_leaving(h, keys, n_keys, FALSE);
    if (!recorded) {
        record_refusal(error, h, "the release", local);
        return FALSE;
    }
    if (!keys) {
        *released = g_hash_table_size(h->leases);
        holder_drop_leases(h, "released");
    } else {
        for (guint i = 0; i < n_keys; i++) {
            VmlLease *l = g_hash_table_lookup(h->leases, keys[i]);
            if (!l)
                continue;   /* listed twice */
            g_hash_table_steal(h->leases, keys[i]);
            lease_released_event(l, "released");
            lease_unmark(t, l);
            lease_drop(t, l);
            (*released)++;
        }
    }
    if (*released) {
        holder_fill_mailbox(h);
        changed(t);
    }
    return TRUE;
}

/* libvirt's status file says the paused domain runs again, and nobody
 * asked for its leases: take them back. */
static void
on_domain_resumed(G_GNUC_UNUSED gpointer watch, gpointer data)
{
    VmlHolder *h = data;
    g_autoptr(GArray) reqs = g_array_new(FALSE, FALSE, sizeof(VmlRequest));
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        VmlRequest r = { .key = (char *)l->key, .path = l->path, .mode = l->mode,
                         .derived = l->derived };
        if (l->parked)
            g_array_append_val(reqs, r);
    }
    g_autoptr(GError) error = NULL;
    JsonObject *conflict = NULL;
    g_autoptr(GPtrArray) back = reqs->len
        ? vml_lease_table_acquire(h->table, h, (VmlRequest *)(void *)reqs->data, reqs->len,
                                  FALSE, FALSE, &conflict, &error)
        : NULL;
    if (conflict)
        json_object_unref(conflict);
    if (reqs->len && !back)
        g_critical("VM %s (pid %d) runs again after its migration failed, but its parked "
                   "leases cannot be taken back: %s", h->name, (int)h->pid, error->message);
    else if (reqs->len)
        g_info("VM %s (pid %d) runs again (libvirt's status file says so): took back %u "
               "parked lease(s)", h->name, (int)h->pid, reqs->len);
    g_clear_pointer(&h->resume_watch, vml_resume_watch_free);
    holder_publish(h);
}

static void
watch_for_resume(VmlHolder *h, const char *status_file)
{
    g_autoptr(GError) error = NULL;
    if (!status_file || h->resume_watch)
        return;
    h->resume_watch = vml_resume_watch_new(status_file, on_domain_resumed, h, &error);
    if (!h->resume_watch)
        g_warning("VM %s (pid %d): %s; a failed migration that QEMU resumes by itself "
                  "leaves its leases parked until libvirt acquires them", h->name,
                  (int)h->pid, error->message);
}

gboolean
vml_lease_table_park(VmlLeaseTable *t, VmlHolder *h, const char *const *keys, guint n_keys,
                     const char *reason, const char *status_file, guint *parked,
                     guint *released, GError **error)
{
    VmlBackend *be = t->backend;
    *parked = *released = 0;
    if (!holds_all(h, keys, n_keys, error))
        return FALSE;
    if (!be->ops->park)
        return vml_lease_table_release(t, h, keys, n_keys, released, error);

    g_autoptr(GPtrArray) todo = g_ptr_array_new();
    if (keys) {
        for (guint i = 0; i < n_keys; i++)
            g_ptr_array_add(todo, g_hash_table_lookup(h->leases, keys[i]));
    } else {
        GHashTableIter it;
        gpointer value;
        g_hash_table_iter_init(&it, h->leases);
        while (g_hash_table_iter_next(&it, NULL, &value))
            g_ptr_array_add(todo, value);
    }
    gint64 now = now_s();
    watch_for_resume(h, status_file);
    for (guint i = 0; i < todo->len; i++) {
        VmlLease *l = todo->pdata[i];
        if (!l->parked)
            l->parked_since = now;
        g_free(l->parked);
        l->parked = g_strdup(reason);
        vml_lease_touch(l);
    }
    /* The record says "parked" before any part of a lock is let go: a
     * claimer that finds the part free also finds whose domain it is for. */
    holder_publish(h);
    for (guint i = 0; i < todo->len; i++) {
        VmlLease *l = todo->pdata[i];
        be->ops->park(be, l->lock, l->mode);
    }
    *parked = todo->len;
    for (guint i = 0; i < todo->len; i++) {
        const VmlLease *l = todo->pdata[i];
        vml_holder_event(G_LOG_LEVEL_INFO, VML_EVENT_PARK, h, l->key, l->path,
                         vml_mode_name(l->mode), NULL,
                         "parked its lease on %s (%s, resource %s): %s; only its domain may "
                         "take it", lease_named(l), vml_mode_name(l->mode), l->key, reason);
    }
    if (todo->len) {
        vml_metrics_count(VML_COUNT_PARKED, todo->len);
        changed(t);
    }
    return TRUE;
}

/* ---- lost leases ------------------------------------------------------------ */

/* The backend can no longer keep the leases (sanlock died): stop every
 * holder as its domain asked (<on_lockfailure>) before another host may take
 * its leases over. Without a watchdog this is all that stands between a
 * running writer and a second one. */
void
vml_lease_table_fence(VmlLeaseTable *t)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        VmlHolder *h = value;
        if (g_hash_table_size(h->leases) == 0)
            continue;
        const char *action = h->on_lockfailure;
        int sig = g_str_equal(action, "ignore") ? 0 : g_str_equal(action, "pause") ? SIGSTOP
                                                                                  : SIGKILL;
        if (sig && syscall(SYS_pidfd_send_signal, vml_holder_watch_pidfd(h->watch), sig,
                           NULL, 0) < 0)
            g_critical("cannot stop pid %d of VM %s: %s", (int)h->pid, h->name,
                       g_strerror(errno));
        else
            g_critical("leases lost: VM %s (pid %d, %u lease(s)): on_lockfailure %s, %s",
                       h->name, (int)h->pid, g_hash_table_size(h->leases), action,
                       sig == SIGKILL ? "killed" : sig == SIGSTOP ? "stopped" : "left running");
        GHashTableIter leases;
        gpointer value;
        g_hash_table_iter_init(&leases, h->leases);
        while (g_hash_table_iter_next(&leases, NULL, &value)) {
            const VmlLease *l = value;
            vml_holder_event(G_LOG_LEVEL_CRITICAL, VML_EVENT_LEASE_LOST, h, l->key, l->path,
                             vml_mode_name(l->mode), NULL,
                             "lost its lease on %s (resource %s): the backend can no longer "
                             "keep it", lease_named(l), l->key);
        }
    }
}

/* ---- queries ---------------------------------------------------------------- */

static gint
holder_cmp(gconstpointer a, gconstpointer b)
{
    gint64 x = ((const VmlHolder *)a)->id, y = ((const VmlHolder *)b)->id;
    return x < y ? -1 : x > y;
}

GList *
vml_lease_table_holders(VmlLeaseTable *t)
{
    return g_list_sort(g_hash_table_get_values(t->holders), holder_cmp);
}

void
vml_lease_table_foreach_holder(VmlLeaseTable *t, void (*func)(VmlHolder *h, gpointer data),
                               gpointer data)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value))
        func(value, data);
}

guint
vml_lease_table_n_holders(VmlLeaseTable *t)
{
    return g_hash_table_size(t->holders);
}

guint
vml_lease_table_n_leases(VmlLeaseTable *t)
{
    return t->n_leases;
}

void
vml_lease_write_json(GString *out, const VmlLease *l, gboolean grant)
{
    vml_json_write_strict_member_string(out, TRUE, "resource", l->key);
    if (l->path)
        vml_json_write_strict_member_string(out, FALSE, "path", l->path);
    vml_json_write_member_string(out, FALSE, "mode", vml_mode_name(l->mode));
    vml_json_write_member_int(out, FALSE, "generation", (gint64)l->generation);
    vml_json_write_member_int(out, FALSE, "since", l->since);
    if (l->parked) {
        vml_json_write_strict_member_string(out, FALSE, "parked", l->parked);
        vml_json_write_member_int(out, FALSE, "parked_since", l->parked_since);
    }
    if (grant)
        vml_json_write_member_string(out, FALSE, "grant", vml_grant_name(l->grant));
}

const char *
vml_grant_name(VmlGrant grant)
{
    static const char *const names[] = {
        [VML_GRANT_HELD] = "held", [VML_GRANT_NEW] = "new",
        [VML_GRANT_UNPARKED] = "unparked", [VML_GRANT_CLAIMED] = "claimed",
    };
    return names[grant];
}

void
vml_holder_write_json_summary(GString *out, const VmlHolder *h)
{
    GHashTableIter it;
    gpointer value;
    gboolean first = TRUE;

    g_string_append_c(out, '{');
    vml_json_write_strict_member_string(out, TRUE, "on_lockfailure", h->on_lockfailure);
    vml_holder_write_identity(out, h);
    vml_json_write_strict_member_string(out, FALSE, "lock_fds", vml_lock_fds_name(h->lock_fds));
    if (h->lock_fds_detail)
        vml_json_write_strict_member_string(out, FALSE, "lock_fds_detail", h->lock_fds_detail);
    g_string_append(out, ",\"leases\":[");
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        g_string_append(out, first ? "{" : ",{");
        first = FALSE;
        vml_lease_write_json(out, value, FALSE);
        g_string_append_c(out, '}');
    }
    g_string_append(out, "]}");
}

/* ---- state: save and restore ------------------------------------------------ */

GString *
vml_lease_table_save(VmlLeaseTable *t, GArray *fds)
{
    GString *s = g_string_sized_new(4096);
    GHashTableIter it;
    gpointer value;
    gboolean first = TRUE;

    g_string_append_c(s, '{');
    vml_json_write_member_int(s, TRUE, "version", 1);
    vml_json_write_member_string(s, FALSE, "boot_id", vml_host_boot_id());
    vml_json_write_member_int(s, FALSE, "next_holder", t->next_id);
    g_string_append(s, ",\"holders\":[");
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        if (!first)
            g_string_append_c(s, ',');
        first = FALSE;
        vml_holder_write_json(s, value, t->backend, fds);
    }
    g_string_append(s, "]}");
    return s;
}

/* Holder for a saved or recorded identity, if its process still lives. */
static VmlHolder *
restore_holder(VmlLeaseTable *t, const VmlOwner *id)
{
    VmlHolder *h = find_process(t, id->pid, id->start_time);
    if (h)
        return h;
    if (!vml_proc_is_same(id->pid, id->start_time))
        return NULL;
    gint64 hid = id->holder;
    if (hid <= 0 || g_hash_table_contains(t->holders, &hid))
        hid = t->next_id;
    return holder_new(t, hid, id->uuid, id->name, id->pid, id->start_time, id->since, NULL);
}

/* Bring one lease back under our control; FD >= 0 is a re-exec hand-over. */
static void
restore_lease(VmlLeaseTable *t, VmlHolder *h, const VmlOwner *o, int fd, GArray *candidates)
{
    VmlBackend *be = t->backend;
    g_autoptr(GError) error = NULL;
    guint64 gen = o->generation;
    VmlMode mode = o->mode;
    gboolean parked = o->parked != NULL;

    if (g_hash_table_contains(h->leases, o->resource)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    VmlLock *lock = fd >= 0
        ? be->ops->adopt(be, o->resource, &mode, &parked, fd, &error)
        : be->ops->recover(be, o->resource, &mode, &parked, h->pid,
                           vml_holder_watch_pidfd(h->watch), candidates, &gen, &error);
    if (!lock) {
        vml_holder_event(G_LOG_LEVEL_WARNING, VML_EVENT_LEASE_LOST, h, o->resource, o->path,
                         vml_mode_name(o->mode), NULL,
                         "lost its lease on %s (resource %s) while vmleased was down: %s",
                         o->path ? o->path : o->resource, o->resource, error->message);
        return;
    }
    if (o->mode == VML_MODE_EXCLUSIVE && gen != o->generation)
        g_warning("%s: generation moved from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                  " while vmleased was down", o->resource, o->generation, gen);
    if (mode != o->mode)
        g_warning("%s: VM %s (pid %d) holds it %s, not %s as recorded: the lock wins",
                  o->resource, h->name, (int)h->pid, vml_mode_name(mode), vml_mode_name(o->mode));
    VmlLease *l = lease_add(t, h, o->resource, o->path, mode, gen, o->since, lock);
    l->derived = o->derived;
    if (parked) {
        l->parked = g_strdup(o->parked);
        l->parked_since = o->parked_since;
    }
}

static void
close_fd_at(gpointer p)
{
    close(*(int *)p);
}

/* Restore one record (from the state file or the lockspace). */
static void
restore_record(VmlLeaseTable *t, JsonObject *record, gboolean with_fds, GHashTable *gone_keys)
{
    g_autoptr(GPtrArray) owners = g_ptr_array_new_with_free_func((GDestroyNotify)vml_owner_free);
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(VmlOwner) id = vml_record_parse(record, owners, fds, NULL);

    if (!id)
        return;
    gboolean here = vml_owner_is_this_host(id);
    gboolean this_boot = g_strcmp0(id->boot_id, vml_host_boot_id()) == 0;
    VmlHolder *h = here && this_boot ? restore_holder(t, id) : NULL;
    const char *action = json_object_get_string_member_with_default(record, "on_lockfailure", NULL);
    if (h && action && vml_lock_failure_valid(action)) {
        g_free(h->on_lockfailure);
        h->on_lockfailure = g_strdup(action);
    }
    const char *status_file = json_object_get_string_member_with_default(record, "status_file",
                                                                         NULL);
    /* Unknown (an older record): root's alone, the safe side. */
    gint64 uid = json_object_get_int_member_with_default(record, "uid", 0);
    if (h && uid >= 0 && uid <= G_MAXUINT32)
        h->uid = (uid_t)uid;
    const char *program = json_object_get_string_member_with_default(record, "program", NULL);
    if (h && program && strlen(program) <= VML_PROGRAM_MAX && g_utf8_validate(program, -1, NULL)) {
        g_free(h->program);
        h->program = g_strdup(program);
    }
    if (!h && here) {
        /* A local holder that is gone (or from an earlier boot): stale.
         * Its VM exited while we were down: clear the marks it left. */
        for (guint i = 0; i < owners->len; i++) {
            const VmlOwner *o = owners->pdata[i];
            if (o->mode == VML_MODE_EXCLUSIVE && o->path &&
                !vml_image_guard_unmark(o->path, (guint32)id->pid, id->start_time, id->uuid,
                                        marks_durable(t)))
                g_info("%s: the in-use mark of exited pid %d stays while a QEMU holds it",
                       o->path, (int)id->pid);
        }
        g_autofree char *tag = holder_tag(id->machine_id, id->boot_id, id->pid, id->start_time);
        vml_record_store_remove(&t->backend->records, tag);
        /* A process it forked may keep its mailbox, and so its locks. */
        gint64 gone_ino = json_object_get_int_member_with_default(record, "mailbox_ino", 0);
        g_autoptr(VmlMailbox) kept = gone_ino > 0 ? vml_mailbox_find_anywhere((guint64)gone_ino)
                                                  : NULL;
        GArray *left = kept ? vml_mailbox_contents(kept, NULL) : NULL;
        if (left)
            g_array_set_clear_func(left, close_fd_at);   /* at the last unref */
        for (guint i = 0; i < owners->len; i++) {
            const char *key = ((VmlOwner *)owners->pdata[i])->resource;
            if (!g_hash_table_contains(gone_keys, key))
                g_hash_table_insert(gone_keys, g_strdup(key), left ? g_array_ref(left) : NULL);
        }
        if (left)
            g_array_unref(left);
    }
    /* The VM process's mailbox holds the locks taken for it from libvirtd. */
    g_autoptr(GArray) candidates = NULL;
    gint64 ino = json_object_get_int_member_with_default(record, "mailbox_ino", 0);
    if (h && !h->mailbox && ino > 0) {
        h->mailbox = vml_mailbox_find(h->pid, vml_holder_watch_pidfd(h->watch), (guint64)ino);
        h->mailbox_stale = TRUE;
    }
    if (h && h->mailbox)
        candidates = vml_mailbox_contents(h->mailbox, NULL);
    if (h && t->backend->ops->recover_batch)
        t->backend->ops->recover_batch(t->backend, TRUE);
    for (guint i = 0; i < owners->len; i++) {
        int fd = with_fds ? g_array_index(fds, int, i) : -1;
        if (h) {
            restore_lease(t, h, owners->pdata[i], fd, candidates);
        } else if (fd >= 0) {
            /* Handed over by a re-exec for a holder that died meanwhile:
             * its lease goes as it would have with us running. */
            const VmlOwner *o = owners->pdata[i];
            VmlMode mode = o->mode;
            gboolean parked = FALSE;
            VmlLock *lock = t->backend->ops->adopt(t->backend, o->resource, &mode, &parked,
                                                   fd, NULL);
            if (lock)
                t->backend->ops->release(t->backend, lock);
        }
    }
    if (h && t->backend->ops->recover_batch)
        t->backend->ops->recover_batch(t->backend, FALSE);
    for (guint i = 0; candidates && i < candidates->len; i++)
        close(g_array_index(candidates, int, i));
    /* What it observed: nothing to lock, only to list. */
    if (h)
        record_observed(record, h->observing);
    /* Still parked after the restart: watch for the domain running again. */
    if (!h || !status_file || !g_path_is_absolute(status_file))
        return;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        if (((VmlLease *)value)->parked) {
            watch_for_resume(h, status_file);
            break;
        }
    }
}

static void
fds_unref(GArray *fds)
{
    if (fds)
        g_array_unref(fds);
}

/* Once every record is back: what the locks say beyond the records.
 * A live holder's fds may carry a lock its record does not name (a grant
 * or release cut short between lock and record); a holder that died
 * unseen may have left its lock in a process it forked. Both go, as they
 * would have with vmleased running; a description that is a live lease's
 * (shared over fork) is never unlocked: strays only on resources nobody
 * holds, orphans sparing the live leases' descriptions. */
static void
restore_sweep(VmlLeaseTable *t, GHashTable *gone_keys)
{
    VmlBackend *be = t->backend;
    g_autofree const char **held = (const char **)g_hash_table_get_keys_as_array(
        t->by_resource, NULL);
    guint n_held = g_hash_table_size(t->by_resource);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (be->ops->drop_strays && g_hash_table_iter_next(&it, NULL, &value)) {
        VmlHolder *h = value;
        g_autoptr(GArray) candidates = h->mailbox ? vml_mailbox_contents(h->mailbox, NULL)
                                                  : NULL;
        be->ops->drop_strays(be, h->pid, vml_holder_watch_pidfd(h->watch), candidates, held,
                             n_held);
        for (guint i = 0; candidates && i < candidates->len; i++)
            close(g_array_index(candidates, int, i));
    }
    gpointer key;
    g_hash_table_iter_init(&it, gone_keys);
    while (be->ops->release_orphans && g_hash_table_iter_next(&it, &key, &value)) {
        g_autoptr(GArray) live = g_array_new(FALSE, FALSE, sizeof(int));
        for (VmlLease *l = g_hash_table_lookup(t->by_resource, key); l; l = l->next) {
            int fd = be->ops->lock_fd(l->lock);
            if (fd >= 0)
                g_array_append_val(live, fd);
        }
        be->ops->release_orphans(be, key, value, (const int *)(void *)live->data, live->len);
    }
}

/* Move a lease of the release before identities, keyed by its canonical
 * path, onto its image's resource key: lock the new key in the same mode
 * (parked as it was), record it, and only then unlock the old one, so the
 * image is held all along. Left as it was if the new key cannot be had:
 * then another holder took the same image by another name, which is said
 * loudly. */
static void
rekey_legacy(VmlLeaseTable *t, VmlHolder *h, VmlLease *old)
{
    VmlBackend *be = t->backend;
    g_autoptr(GError) error = NULL;
    g_autofree char *key = vml_lease_table_image_key(t, old->path, &error);
    if (!key || g_hash_table_contains(h->leases, key)) {
        g_warning("lease of VM %s (pid %d) on %s stays under its old key: %s", h->name,
                  (int)h->pid, old->path, key ? "its image is held under the new key too"
                                              : error->message);
        return;
    }
    guint64 gen = old->generation;
    VmlLock *lock = be->ops->acquire(be, key, old->mode, h->pid, -1, &gen, &error);
    if (!lock) {
        g_warning("lease of VM %s (pid %d) on %s stays under its old key; its resource %s "
                  "cannot be had: %s", h->name, (int)h->pid, old->path, key, error->message);
        return;
    }
    if (old->parked && be->ops->park)
        be->ops->park(be, lock, old->mode);
    /* The generation it was handed over with stays: a resume checks it. */
    VmlLease *l = lease_add(t, h, key, old->path, old->mode, old->generation, old->since, lock);
    l->derived = old->derived;
    l->parked = g_strdup(old->parked);
    l->parked_since = old->parked_since;
    old->leaving = TRUE;
    vml_lease_touch(old);
    if (!holder_write_record(h, &error)) {
        /* Unrecorded, the new lock could not be found after a crash. */
        g_warning("lease of VM %s (pid %d) on %s stays under its old key: %s", h->name,
                  (int)h->pid, old->path, error->message);
        old->leaving = FALSE;
        vml_lease_touch(old);
        g_hash_table_steal(h->leases, l->key);
        lease_drop(t, l);
        return;
    }
    g_hash_table_steal(h->leases, old->key);
    g_info("lease of VM %s (pid %d) on %s: resource %s (was keyed by its path)", h->name,
           (int)h->pid, l->path, l->key);
    lease_drop(t, old);
}

/* Every lease restored from an older release's records or state, keyed
 * by path, onto its resource key. */
static void
rekey_all_legacy(VmlLeaseTable *t)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        VmlHolder *h = value;
        g_autoptr(GPtrArray) legacy = g_ptr_array_new();
        GHashTableIter li;
        gpointer lv;
        g_hash_table_iter_init(&li, h->leases);
        while (g_hash_table_iter_next(&li, NULL, &lv)) {
            if (vml_key_is_legacy_path(((VmlLease *)lv)->key))
                g_ptr_array_add(legacy, lv);
        }
        for (guint i = 0; i < legacy->len; i++)
            rekey_legacy(t, h, legacy->pdata[i]);
    }
}

void
vml_lease_table_restore(VmlLeaseTable *t, JsonObject *state, gboolean reexec)
{
    /* key -> the dead holder's mailbox contents (dups), or NULL */
    g_autoptr(GHashTable) gone_keys = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free,
                                                            (GDestroyNotify)fds_unref);
    if (state && g_strcmp0(json_object_get_string_member_with_default(state, "boot_id", ""),
                           vml_host_boot_id()) == 0) {
        t->next_id = MAX(t->next_id,
                         json_object_get_int_member_with_default(state, "next_holder", 1));
        /* After a crash the state file is a snapshot up to 200 ms old: the
         * holder records (written before every reply) and the kernel's locks
         * are the truth, so only a re-exec's fresh state (with its fds) is
         * restored from. */
        JsonNode *hn = reexec ? json_object_get_member(state, "holders") : NULL;
        JsonArray *holders = hn && JSON_NODE_HOLDS_ARRAY(hn) ? json_node_get_array(hn) : NULL;
        for (guint i = 0; holders && i < json_array_get_length(holders); i++) {
            JsonNode *n = json_array_get_element(holders, i);
            if (JSON_NODE_HOLDS_OBJECT(n))
                restore_record(t, json_node_get_object(n), reexec, gone_keys);
        }
    }

    /* After a crash the state file's next id may be older than the last
     * registration, and a holder that has exited left no record: start
     * past any id this boot can have seen (one per microsecond at most),
     * so no client's stale id names a new holder. */
    g_autoptr(GPtrArray) records = vml_record_store_all(&t->backend->records, NULL, NULL);
    gboolean ran_before = (records && records->len) ||
        (state && g_strcmp0(json_object_get_string_member_with_default(state, "boot_id", ""),
                            vml_host_boot_id()) == 0);
    if (!reexec && ran_before) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        t->next_id = MAX(t->next_id, (gint64)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    }
    /* The records are written at every change, so they also cover what
     * came after the last state save; they show dead holders too. */
    for (guint i = 0; records && i < records->len; i++) {
        gsize len;
        const char *data = g_bytes_get_data(records->pdata[i], &len);
        g_autoptr(JsonParser) p = json_parser_new_immutable();
        if (json_parser_load_from_data(p, data, len, NULL) &&
            JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
            restore_record(t, json_node_get_object(json_parser_get_root(p)), FALSE, gone_keys);
    }
    restore_sweep(t, gone_keys);
    rekey_all_legacy(t);

    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, t->holders);
    while (g_hash_table_iter_next(&it, NULL, &value))
        holder_publish(value);
    g_info("restored %u holder(s) with %u lease(s)",
           g_hash_table_size(t->holders), t->n_leases);
    vml_metrics_count(VML_COUNT_RECOVERED, t->n_leases);
    changed(t);
}
