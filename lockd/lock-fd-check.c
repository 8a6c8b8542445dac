/* The VM process's hold on its lock fds, looked at after its exec
 * (lock-fd-check.h). */
#include "lock-fd-check.h"
#include "daemon-log.h"
#include "holder-mailbox.h"
#include "vml-proc.h"

#include <fcntl.h>
#include <sys/stat.h>

typedef struct {
    dev_t dev;
    ino_t ino;
    gboolean mailbox;   /* else a lock file */
    gboolean found;
} Wanted;

/* FD's file, as what the VM process should have open; FALSE if FD is none. */
static gboolean
want(GArray *wanted, int fd, gboolean mailbox)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return FALSE;
    g_array_append_val(wanted, ((Wanted){ st.st_dev, st.st_ino, mailbox, FALSE }));
    return TRUE;
}

typedef struct {
    GArray *wanted;   /* Wanted */
    guint seen;       /* fds the process has at all */
} Walk;

static gboolean
look_at_fd(int dirfd, const char *name, G_GNUC_UNUSED int num, gpointer data)
{
    Walk *w = data;
    struct stat st;
    w->seen++;
    if (fstatat(dirfd, name, &st, 0) < 0)
        return TRUE;
    for (guint i = 0; i < w->wanted->len; i++) {
        Wanted *x = &g_array_index(w->wanted, Wanted, i);
        if (x->dev == st.st_dev && x->ino == st.st_ino)
            x->found = TRUE;
    }
    return TRUE;
}

const char *
vml_lock_fds_name(VmlLockFds state)
{
    static const char *const names[] = {
        [VML_LOCK_FDS_UNCHECKED] = "unchecked", [VML_LOCK_FDS_KEPT] = "kept",
        [VML_LOCK_FDS_MISSING] = "missing", [VML_LOCK_FDS_NONE] = "none",
    };
    return names[state];
}

void
vml_lock_fd_check(VmlBackend *be, VmlHolder *h)
{
    guint64 dev, ino;
    if (h->lock_fds != VML_LOCK_FDS_UNCHECKED || !vml_proc_exe_id(h->pid, &dev, &ino) ||
        (dev == h->exe_dev && ino == h->exe_ino))
        return;   /* looked at, gone, or still the program that registered */

    /* What it should have: the mailbox, and each lock fd it was handed
     * that still holds one of its leases. */
    g_autoptr(GArray) wanted = g_array_new(FALSE, TRUE, sizeof(Wanted));
    if (h->mailbox)
        want(wanted, vml_mailbox_fd(h->mailbox), TRUE);
    guint n_locks = 0;
    if (h->handed) {
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init(&it, h->handed);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
            VmlLease *l = g_hash_table_lookup(h->leases, key);
            n_locks += l && be->ops->lock_fd && want(wanted, be->ops->lock_fd(l->lock), FALSE);
        }
    }
    if (wanted->len == 0) {
        h->lock_fds = VML_LOCK_FDS_NONE;
        return;
    }
    Walk w = { wanted, 0 };
    vml_proc_each_fd_entry(h->pid, look_at_fd, &w);
    if (w.seen == 0)
        return;   /* not to be looked at (or gone meanwhile): later */

    gboolean mailbox_lost = FALSE;
    guint locks_lost = 0;
    for (guint i = 0; i < wanted->len; i++) {
        const Wanted *x = &g_array_index(wanted, Wanted, i);
        if (x->found)
            continue;
        if (x->mailbox)
            mailbox_lost = TRUE;
        else
            locks_lost++;
    }
    if (!mailbox_lost && !locks_lost) {
        h->lock_fds = VML_LOCK_FDS_KEPT;
        vml_debug("VM %s (pid %d) keeps its mailbox and %u lock fd(s) after exec", h->name,
                  (int)h->pid, n_locks);
        return;
    }
    h->lock_fds = VML_LOCK_FDS_MISSING;
    g_autoptr(GString) what = g_string_new(NULL);
    if (mailbox_lost)
        g_string_append(what, "its lease mailbox");
    if (locks_lost)
        g_string_append_printf(what, "%s%u of its %u lock file(s)", mailbox_lost ? " and " : "",
                               locks_lost, n_locks);
    g_free(h->lock_fds_detail);
    h->lock_fds_detail = g_strdup_printf("%s closed at exec", what->str);
    vml_holder_event(G_LOG_LEVEL_WARNING, VML_EVENT_LOCK_FDS_MISSING, h, NULL, NULL, NULL, NULL,
                     "does not keep the fds that hold its leases: %s (a security policy "
                     "revalidating inherited fds, such as AppArmor's?). vmleased alone holds "
                     "its %u lease(s) now, and they end if vmleased dies; let QEMU's profile "
                     "keep them (vmleased(8), SECURITY POLICIES)", h->lock_fds_detail,
                     g_hash_table_size(h->leases));
}

static void
check_one(VmlHolder *h, gpointer be)
{
    vml_lock_fd_check(be, h);
}

void
vml_lock_fd_check_all(VmlBackend *be, VmlLeaseTable *t)
{
    vml_lease_table_foreach_holder(t, check_one, be);
}

static void
count_missing(VmlHolder *h, gpointer n)
{
    *(guint *)n += h->lock_fds == VML_LOCK_FDS_MISSING;
}

guint
vml_lock_fd_missing_count(VmlLeaseTable *t)
{
    guint n = 0;
    vml_lease_table_foreach_holder(t, count_missing, &n);
    return n;
}
