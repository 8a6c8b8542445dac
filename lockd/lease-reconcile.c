#include "lease-reconcile.h"
#include "vml-str-hash.h"
#include "vml-backing-chain.h"
#include "vml-proc.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Which file a path or fd is, whatever its name in whichever mount
 * namespace: a regular file by device and inode, a block device by its
 * device number. NULL for anything else. */
static char *
file_identity(const struct stat *st)
{
    if (S_ISREG(st->st_mode))
        return g_strdup_printf("f%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    if (S_ISBLK(st->st_mode))
        return g_strdup_printf("b%ju", (uintmax_t)st->st_rdev);
    return NULL;
}

static char *
path_identity(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 ? file_identity(&st) : NULL;
}

/* The files a process has open, as identities, and the stat of each
 * regular one; read from /proc at the first question only, since most
 * reconciles have none to ask. */
typedef struct {
    pid_t pid;
    GHashTable *set;
    GArray *files;
} OpenFiles;

static void
open_files_clear(OpenFiles *o)
{
    g_clear_pointer(&o->set, g_hash_table_unref);
    g_clear_pointer(&o->files, g_array_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OpenFiles, open_files_clear)

static gboolean
add_open_file(int dirfd, const char *name, G_GNUC_UNUSED int num, gpointer data)
{
    OpenFiles *o = data;
    struct stat st;
    char *id = fstatat(dirfd, name, &st, 0) == 0 ? file_identity(&st) : NULL;
    if (id)
        g_hash_table_add(o->set, id);
    if (id && S_ISREG(st.st_mode))
        g_array_append_val(o->files, st);
    return TRUE;
}

static void
open_files_read(OpenFiles *o)
{
    if (o->set)
        return;
    o->set = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, NULL);
    o->files = g_array_new(FALSE, FALSE, sizeof(struct stat));
    vml_proc_each_fd_entry(o->pid, add_open_file, o);
}

/* The inode a file's resource key ends in ("file:FILESYSTEM:INODE"), 0
 * for any other key. */
static guint64
key_inode(const char *key)
{
    if (!g_str_has_prefix(key, "file:"))
        return 0;
    const char *digits = strrchr(key, ':') + 1;
    guint64 ino = 0;
    if (!*digits || !g_ascii_string_to_unsigned(digits, 10, 1, G_MAXUINT64, &ino, NULL))
        return 0;
    return ino;
}

/* The backing images of PATH into NEEDED, as resource key -> path. An
 * image to be held EXCLUSIVE is read through the fd its acquire's check
 * and mark will use. */
static void
add_chain(VmlLeaseTable *t, GHashTable *needed, const char *path, gboolean exclusive,
          gboolean *unknown)
{
    g_autoptr(GError) error = NULL;
    struct stat st;
    int fd = exclusive ? vml_lease_table_open_image(t, path, &st) : -1;
    gboolean is_qcow2 = TRUE;
    g_autoptr(GPtrArray) chain = fd >= 0
        ? vml_backing_chain_of_open(path, fd, &st, &is_qcow2, &error)
        : vml_backing_chain_of_canonical(path, &error);
    if (chain && !is_qcow2)
        vml_lease_table_image_not_qcow2(t, path);
    for (guint i = 0; chain && i < chain->len; i++) {
        char *key = vml_lease_table_image_key(t, chain->pdata[i], &error);
        if (!key)
            break;
        g_hash_table_insert(needed, key, g_strdup(chain->pdata[i]));
    }
    if (error) {
        /* A header we cannot read now (being rewritten, gone): keep what
         * we have rather than guess. */
        g_debug("backing chain of %s: %s", path, error->message);
        *unknown = TRUE;
    }
}

/* Backing images of every image H names, but those in EXCEPT, plus
 * those of the named requests in REQS. */
static GHashTable *
named_chains(VmlLeaseTable *t, VmlHolder *h, GHashTable *except, const VmlRequest *reqs,
             guint n_reqs, gboolean *unknown)
{
    GHashTable *needed = g_hash_table_new_full(vml_str_hash, g_str_equal, g_free, g_free);
    GHashTableIter it;
    gpointer value;
    *unknown = FALSE;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        if (!l->derived && l->path && !(except && g_hash_table_contains(except, l->key)))
            add_chain(t, needed, l->path, FALSE, unknown);
    }
    for (guint i = 0; i < n_reqs; i++) {
        if (!reqs[i].derived && reqs[i].path && !g_hash_table_contains(h->leases, reqs[i].key))
            add_chain(t, needed, reqs[i].path, reqs[i].mode == VML_MODE_EXCLUSIVE, unknown);
    }
    return needed;
}

/* Whether L's image is open in its holder's process. A file is looked
 * for by its key: the file leased, whatever its path names now. */
static gboolean
still_open(VmlLeaseTable *t, OpenFiles *open, const VmlLease *l)
{
    guint64 ino = key_inode(l->key);
    if (ino) {
        open_files_read(open);
        for (guint i = 0; i < open->files->len; i++) {
            const struct stat *st = &g_array_index(open->files, struct stat, i);
            if ((guint64)st->st_ino != ino)
                continue;
            g_autofree char *key = vml_lease_table_key_of_stat(t, st);
            if (g_strcmp0(key, l->key) == 0)
                return TRUE;
        }
        return FALSE;
    }
    g_autofree char *id = path_identity(l->path);
    if (!id)
        return FALSE;
    open_files_read(open);
    return g_hash_table_contains(open->set, id);
}

/* Release H's derived leases that neither NEEDED nor its process's open
 * files account for. */
static void
drop_unneeded(VmlLeaseTable *t, VmlHolder *h, GHashTable *needed, OpenFiles *open)
{
    g_autoptr(GPtrArray) gone = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, h->leases);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const VmlLease *l = value;
        if (l->derived && !g_hash_table_contains(needed, l->key) && !still_open(t, open, l))
            g_ptr_array_add(gone, (gpointer)l->key);
    }
    if (!gone->len)
        return;
    g_autoptr(GError) error = NULL;
    guint released;
    g_info("VM %s (pid %d): %u image(s) left its chains: releasing", h->name, (int)h->pid,
           gone->len);
    if (!vml_lease_table_release(t, h, (const char *const *)gone->pdata, gone->len, &released,
                                 &error))
        g_warning("%s", error->message);
}

GPtrArray *
vml_reconcile_acquire(VmlLeaseTable *t, VmlHolder *h, const VmlRequest *reqs, guint n_reqs,
                      gboolean holder_fds, gboolean claim, JsonObject **conflict,
                      GError **error)
{
    gboolean unknown;
    g_autoptr(GHashTable) needed = named_chains(t, h, NULL, reqs, n_reqs, &unknown);
    g_autoptr(GArray) all = g_array_new(FALSE, FALSE, sizeof(VmlRequest));
    g_autoptr(GHashTable) asked = g_hash_table_new(vml_str_hash, g_str_equal);
    g_array_append_vals(all, reqs, n_reqs);
    for (guint i = 0; i < n_reqs; i++)
        g_hash_table_add(asked, reqs[i].key);
    GHashTableIter it;
    gpointer key, path;
    g_hash_table_iter_init(&it, needed);
    while (g_hash_table_iter_next(&it, &key, &path)) {
        if (g_hash_table_contains(asked, key))
            continue;
        VmlRequest r = { .key = key, .path = path, .mode = VML_MODE_SHARED, .at_least = TRUE,
                         .derived = TRUE };
        g_array_append_val(all, r);
    }
    GPtrArray *leases = vml_lease_table_acquire(t, h, (VmlRequest *)(void *)all->data, all->len,
                                                holder_fds, claim, conflict, error);
    if (!leases)
        return NULL;
    if (!unknown) {
        g_auto(OpenFiles) open = { .pid = h->pid };
        drop_unneeded(t, h, needed, &open);
    }
    vml_lease_table_retry_unmarks(h);
    return leases;
}

gboolean
vml_reconcile_release(VmlLeaseTable *t, VmlHolder *h, const char *const *keys, guint n_keys,
                      guint *released, GError **error)
{
    g_autoptr(GHashTable) letting_go = g_hash_table_new(vml_str_hash, g_str_equal);
    for (guint i = 0; i < n_keys; i++) {
        if (g_hash_table_contains(h->leases, keys[i]))
            g_hash_table_add(letting_go, (gpointer)keys[i]);
    }
    gboolean unknown;
    g_autoptr(GHashTable) needed = named_chains(t, h, letting_go, NULL, 0, &unknown);
    g_auto(OpenFiles) open = { .pid = h->pid };
    g_autoptr(GPtrArray) gone = g_ptr_array_new();
    g_autoptr(GArray) keep = g_array_new(FALSE, FALSE, sizeof(VmlRequest));
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, letting_go);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        VmlLease *l = g_hash_table_lookup(h->leases, key);
        if (unknown || g_hash_table_contains(needed, key) || still_open(t, &open, l)) {
            /* Still read by the VM (an old top under a new snapshot):
             * it stays, shared, until nothing needs it. */
            l->derived = TRUE;
            vml_lease_touch(l);
            VmlRequest r = { .key = key, .path = l->path, .mode = VML_MODE_SHARED,
                             .derived = TRUE };
            g_array_append_val(keep, r);
        } else {
            g_ptr_array_add(gone, key);
        }
    }
    *released = 0;
    if (keep->len) {
        JsonObject *conflict = NULL;
        g_autoptr(GPtrArray) kept = vml_lease_table_acquire(t, h, (VmlRequest *)(void *)keep->data,
                                                            keep->len, FALSE, FALSE, &conflict,
                                                            error);
        if (conflict)
            json_object_unref(conflict);
        if (!kept)   /* a downgrade cannot conflict; the backend failed */
            return FALSE;
    }
    if (gone->len && !vml_lease_table_release(t, h, (const char *const *)gone->pdata, gone->len,
                                              released, error))
        return FALSE;
    if (!unknown)
        drop_unneeded(t, h, needed, &open);
    vml_lease_table_retry_unmarks(h);
    return TRUE;
}
