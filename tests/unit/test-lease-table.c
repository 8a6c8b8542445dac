/* lockd's lease table driven in-process, with no vmleased running: the
 * real fcntl backend on a lockspace in a temporary directory, real image
 * files and real OFD locks, and holders that are live processes (this one
 * and children that wait to be killed). Requests are built the way
 * dispatch.c builds them: the key from vml_lease_table_image_key(), the
 * canonical path, and the name as given. The lock files are judged from
 * here through descriptions of our own (F_OFD_GETLK), never through the
 * table. */
#include "holder-mailbox.h"
#include "lease-reconcile.h"
#include "lease-table.h"
#include "vml-error.h"
#include "vml-image-owner.h"
#include "vml-mailbox-socket.h"
#include "vml-paths.h"
#include "vml-qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_CHILDREN 2

static const char UUID_A[] = "11111111-1111-4111-8111-111111111111";
static const char UUID_B[] = "22222222-2222-4222-8222-222222222222";
static const char UUID_C[] = "33333333-3333-4333-8333-333333333333";

typedef struct {
    char *root;          /* canonical: what the table's paths compare with */
    char *images;        /* root/images, outside every daemon directory */
    char *disk;          /* images/disk.qcow2: qcow2 v3, so it gets the mark */
    char *raw;           /* images/disk.raw */
    VmlDaemonConfig *cfg;
    VmlBackend *backend;
    VmlLeaseTable *table;
    pid_t children[N_CHILDREN];   /* holder processes besides this one */
} Fixture;

/* ---- processes -------------------------------------------------------- */

/* A process that only waits to be killed (and dies with us). It keeps no
 * fd of ours: a lock description it shared would outlive our release. */
static pid_t
spawn_waiter(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        syscall(SYS_close_range, 3u, ~0u, 0u);
        for (;;)
            pause();
    }
    return pid;
}

static void
reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* A pid that named a process a moment ago and names none now. */
static pid_t
exited_pid(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        _exit(0);
    reap(pid);
    return pid;
}

/* ---- files ------------------------------------------------------------- */

static void
run_qemu_img_create(const char *format, const char *path)
{
    const char *argv[] = { "qemu-img", "create", "-q", "-f", format, path, "1M", NULL };
    g_autoptr(GError) error = NULL;
    int status = -1;
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                 &status, &error);
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
}

static void
remove_tree(const char *dir)
{
    const char *argv[] = { "rm", "-rf", dir, NULL };
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                 NULL, NULL);
}

/* KEY's lock file, named as the fcntl backend names it. */
static char *
lock_file_of(Fixture *f, const char *key)
{
    g_autofree char *hash = vml_key_hash(key);
    g_autofree char *name = g_strconcat(hash, ".lock", NULL);
    return g_build_filename(f->cfg->lockspace_dir, name, NULL);
}

/* The strongest lock anyone has on the lease bytes (0 and 1) of KEY's lock
 * file, as an unrelated description of ours sees it: F_WRLCK, F_RDLCK or
 * F_UNLCK. */
static short
lock_state(Fixture *f, const char *key)
{
    g_autofree char *path = lock_file_of(f, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 2 };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    close(fd);
    if (fl.l_type != F_UNLCK)
        g_assert_cmpint(fl.l_pid, ==, -1);   /* an OFD lock, not a process lock */
    return fl.l_type;
}

static guint
count_lock_files(Fixture *f)
{
    g_autoptr(GDir) d = g_dir_open(f->cfg->lockspace_dir, 0, NULL);
    g_assert_nonnull(d);
    guint n = 0;
    for (const char *name; (name = g_dir_read_name(d));)
        n += g_str_has_suffix(name, ".lock");
    return n;
}

/* The in-use mark of the qcow2 image at PATH: the owner's pid, 0 if none. */
static guint32
marked_pid(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    gboolean not_qcow2 = FALSE;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlQcow2Header) h = vml_qcow2_read(fd, path, &not_qcow2, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_nonnull(h);
    const VmlQcow2Ext *ext = vml_qcow2_find_ext(h, VML_QCOW2_EXT_OWNER);
    gboolean in_use = (h->compatible_features & VML_QCOW2_COMPAT_IN_USE) != 0;
    /* The bit and the extension come and go together. */
    g_assert_cmpint(in_use, ==, ext != NULL);
    if (!ext)
        return 0;
    g_autoptr(VmlImageOwner) o = vml_image_owner_decode(ext->data, &error);
    g_assert_no_error(error);
    return o->pid;
}

/* ---- the table's side ------------------------------------------------ */

/* A request for the image named GIVEN, as dispatch.c's resource_key()
 * makes it: resource key, canonical path, and the name as written. */
static VmlRequest
image_request(Fixture *f, const char *given, VmlMode mode)
{
    g_autoptr(GError) error = NULL;
    VmlRequest r = { .given = given, .mode = mode };
    r.key = vml_lease_table_image_key(f->table, given, &error);
    g_assert_no_error(error);
    g_assert_nonnull(r.key);
    char *real = realpath(given, NULL);
    g_assert_nonnull(real);
    r.path = g_strdup(real);
    free(real);
    return r;
}

static void
request_clear(VmlRequest *r)
{
    g_free(r->key);
    g_free(r->path);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmlRequest, request_clear)

static VmlHolder *
register_holder(Fixture *f, const char *uuid, const char *name, pid_t pid)
{
    g_autoptr(GError) error = NULL;
    VmlHolder *h = vml_lease_table_register(f->table, uuid, name, pid, NULL, "test-lease-table",
                                            getuid(), &error);
    g_assert_no_error(error);
    g_assert_nonnull(h);
    g_assert_cmpint(h->pid, ==, pid);
    g_assert_cmpstr(h->uuid, ==, uuid);
    return h;
}

/* Acquire R alone for H and expect it granted as GRANT: the lease. */
static VmlLease *
acquire_ok(Fixture *f, VmlHolder *h, const VmlRequest *r, VmlGrant grant)
{
    g_autoptr(GError) error = NULL;
    JsonObject *conflict = NULL;
    g_autoptr(GPtrArray) leases = vml_lease_table_acquire(f->table, h, r, 1, FALSE, FALSE,
                                                          &conflict, &error);
    g_assert_no_error(error);
    g_assert_null(conflict);
    g_assert_nonnull(leases);
    g_assert_cmpuint(leases->len, ==, 1);
    VmlLease *l = leases->pdata[0];
    g_assert_true(l->holder == h);
    g_assert_cmpstr(l->key, ==, r->key);
    g_assert_cmpstr(l->path, ==, r->path);
    g_assert_cmpint(l->mode, ==, r->mode);
    g_assert_cmpint(l->grant, ==, grant);
    g_assert_null(l->parked);
    g_assert_true(g_hash_table_lookup(h->leases, r->key) == l);
    return l;
}

/* Acquire R for H and expect the conflict error, naming R's given path,
 * its mode and OWNER (the holder in the way). */
static void
acquire_refused(Fixture *f, VmlHolder *h, const VmlRequest *r, guint n_owners,
                const VmlHolder *owner)
{
    g_autoptr(GError) error = NULL;
    JsonObject *conflict = NULL;
    GPtrArray *leases = vml_lease_table_acquire(f->table, h, r, 1, FALSE, FALSE, &conflict,
                                                &error);
    g_assert_null(leases);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_autofree char *head = g_strdup_printf("cannot lock %s (resource %s) %s: in use by ",
                                            r->given, r->key, vml_mode_name(r->mode));
    g_assert_true(g_str_has_prefix(error->message, head));
    g_autofree char *who = g_strdup_printf("VM \"%s\" (uuid %s, pid %d ", owner->name,
                                           owner->uuid, (int)owner->pid);
    g_assert_nonnull(strstr(error->message, who));

    /* The parameters the daemon sends with the error. */
    g_assert_nonnull(conflict);
    g_assert_cmpstr(json_object_get_string_member(conflict, "path"), ==, r->given);
    g_assert_cmpstr(json_object_get_string_member(conflict, "canonical_path"), ==, r->path);
    g_assert_cmpstr(json_object_get_string_member(conflict, "resource"), ==, r->key);
    g_assert_cmpstr(json_object_get_string_member(conflict, "mode"), ==,
                    vml_mode_name(r->mode));
    JsonArray *owners = json_object_get_array_member(conflict, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, n_owners);
    json_object_unref(conflict);
}

/* The owners of KEY are exactly HOLDERS (n of them) in MODE. */
static void
assert_owners(Fixture *f, const char *key, VmlMode mode, VmlHolder *const *holders, guint n)
{
    g_autoptr(GPtrArray) owners = vml_lease_table_owners(f->table, key);
    g_assert_cmpuint(owners->len, ==, n);
    for (guint i = 0; i < n; i++) {
        const VmlOwner *o = NULL;
        for (guint j = 0; j < owners->len && !o; j++) {
            const VmlOwner *c = owners->pdata[j];
            if (c->holder == holders[i]->id)
                o = c;
        }
        g_assert_nonnull(o);
        g_assert_cmpstr(o->resource, ==, key);
        g_assert_cmpint(o->pid, ==, holders[i]->pid);
        g_assert_cmpuint(o->start_time, ==, holders[i]->start_time);
        g_assert_cmpstr(o->uuid, ==, holders[i]->uuid);
        g_assert_cmpstr(o->name, ==, holders[i]->name);
        g_assert_cmpint(o->mode, ==, mode);
        g_assert_null(o->parked);
        g_assert_false(o->observer);
        g_assert_false(o->unregistered);
    }
}

static void
assert_no_owners(Fixture *f, const char *key)
{
    g_autoptr(GPtrArray) owners = vml_lease_table_owners(f->table, key);
    g_assert_cmpuint(owners->len, ==, 0);
}

static void
assert_counts(Fixture *f, guint holders, guint leases)
{
    g_assert_cmpuint(vml_lease_table_n_holders(f->table), ==, holders);
    g_assert_cmpuint(vml_lease_table_n_leases(f->table), ==, leases);
}

/* ---- fixture ------------------------------------------------------------ */

static void
fixture_set_up(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *tmp = g_dir_make_tmp("vmlease-lease-table-XXXXXX", &error);
    g_assert_no_error(error);
    char *real = realpath(tmp, NULL);
    g_assert_nonnull(real);
    f->root = g_strdup(real);
    free(real);
    f->images = g_build_filename(f->root, "images", NULL);
    g_assert_cmpint(g_mkdir(f->images, 0700), ==, 0);
    f->disk = g_build_filename(f->images, "disk.qcow2", NULL);
    f->raw = g_build_filename(f->images, "disk.raw", NULL);
    run_qemu_img_create("qcow2", f->disk);
    run_qemu_img_create("raw", f->raw);

    /* The daemon's own loader, so every limit is its default; only the
     * directories move into the temporary one. */
    g_autofree char *conf_path = g_build_filename(f->root, "vmleased.conf", NULL);
    g_autofree char *conf = g_strdup_printf("backend = \"fcntl\"\n"
                                            "lockspace_dir = \"%s/lockspace\"\n"
                                            "state_dir = \"%s/state\"\n"
                                            "socket_dir = \"%s/run\"\n",
                                            f->root, f->root, f->root);
    g_assert_true(g_file_set_contents(conf_path, conf, -1, &error));
    f->cfg = vml_daemon_config_load(conf_path, &error);
    g_assert_no_error(error);
    g_assert_nonnull(f->cfg);
    f->backend = vml_backend_open(f->cfg, &error);
    g_assert_no_error(error);
    g_assert_nonnull(f->backend);
    f->table = vml_lease_table_new(f->backend, f->cfg);

    /* Before any lock is taken, so that none is inherited. */
    for (guint i = 0; i < N_CHILDREN; i++)
        f->children[i] = spawn_waiter();
    assert_counts(f, 0, 0);
}

static void
fixture_tear_down(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    /* vml_lease_table_free() lets go without unlocking (the daemon's
     * holders keep their leases across its restart): release first. */
    g_autoptr(GList) holders = vml_lease_table_holders(f->table);
    for (GList *it = holders; it; it = it->next) {
        g_autoptr(GError) error = NULL;
        guint released;
        g_assert_true(vml_lease_table_release(f->table, it->data, NULL, 0, &released, &error));
        g_assert_no_error(error);
    }
    g_assert_cmpuint(vml_lease_table_n_leases(f->table), ==, 0);
    vml_lease_table_free(f->table);
    f->backend->ops->close(f->backend);
    vml_daemon_config_free(f->cfg);
    for (guint i = 0; i < N_CHILDREN; i++) {
        kill(f->children[i], SIGKILL);
        reap(f->children[i]);
    }
    remove_tree(f->root);
    g_free(f->raw);
    g_free(f->disk);
    g_free(f->images);
    g_free(f->root);
}

/* ---- cases ------------------------------------------------------------- */

/* 1. One holder takes an image exclusive. */
static void
test_exclusive_grant(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    assert_counts(f, 1, 0);
    g_assert_cmpuint(count_lock_files(f), ==, 0);

    g_auto(VmlRequest) r = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    g_assert_true(g_str_has_prefix(r.key, "file:"));
    VmlLease *l = acquire_ok(f, a, &r, VML_GRANT_NEW);
    g_assert_cmpstr(l->path, ==, f->disk);
    g_assert_cmpuint(l->generation, ==, 1);   /* the lock file's first exclusive grant */
    assert_counts(f, 1, 1);
    VmlHolder *const owners[] = { a };
    assert_owners(f, r.key, VML_MODE_EXCLUSIVE, owners, 1);
    g_assert_cmpuint(count_lock_files(f), ==, 1);
    g_assert_cmpint(lock_state(f, r.key), ==, F_WRLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)getpid());

    /* Asked again: held already, nothing new taken. */
    l = acquire_ok(f, a, &r, VML_GRANT_HELD);
    g_assert_cmpuint(l->generation, ==, 1);
    assert_counts(f, 1, 1);
    g_assert_cmpint(lock_state(f, r.key), ==, F_WRLCK);

    /* Registering the same process again is the same holder. */
    g_assert_true(register_holder(f, UUID_A, "vm-a", getpid()) == a);
    assert_counts(f, 1, 1);
}

/* 2. A second holder finds the image held exclusive: refused either way. */
static void
test_exclusive_conflict(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    g_assert_cmpint(a->id, !=, b->id);
    assert_counts(f, 2, 0);
    g_auto(VmlRequest) ex = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    g_auto(VmlRequest) sh = image_request(f, f->disk, VML_MODE_SHARED);
    acquire_ok(f, a, &ex, VML_GRANT_NEW);
    assert_counts(f, 2, 1);

    VmlHolder *const owners[] = { a };
    acquire_refused(f, b, &ex, 1, a);
    assert_counts(f, 2, 1);
    acquire_refused(f, b, &sh, 1, a);
    assert_counts(f, 2, 1);

    assert_owners(f, ex.key, VML_MODE_EXCLUSIVE, owners, 1);
    g_assert_cmpuint(g_hash_table_size(b->leases), ==, 0);
    g_assert_cmpuint(g_hash_table_size(a->leases), ==, 1);
    g_assert_cmpint(lock_state(f, ex.key), ==, F_WRLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)getpid());
    /* The refusals left no lock file besides the one. */
    g_assert_cmpuint(count_lock_files(f), ==, 1);
}

/* 3. Shared beside shared; exclusive against them, from a third holder or
 * as an upgrade of one of them. */
static void
test_shared(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    VmlHolder *c = register_holder(f, UUID_C, "vm-c", f->children[1]);
    assert_counts(f, 3, 0);
    g_auto(VmlRequest) sh = image_request(f, f->disk, VML_MODE_SHARED);
    g_auto(VmlRequest) ex = image_request(f, f->disk, VML_MODE_EXCLUSIVE);

    VmlLease *la = acquire_ok(f, a, &sh, VML_GRANT_NEW);
    assert_counts(f, 3, 1);
    VmlLease *lb = acquire_ok(f, b, &sh, VML_GRANT_NEW);
    assert_counts(f, 3, 2);
    /* Shared grants do not count: generation stays where the file has it. */
    g_assert_cmpuint(la->generation, ==, 0);
    g_assert_cmpuint(lb->generation, ==, 0);
    VmlHolder *const both[] = { a, b };
    assert_owners(f, sh.key, VML_MODE_SHARED, both, 2);
    g_assert_cmpint(lock_state(f, sh.key), ==, F_RDLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, 0);   /* only exclusive marks */

    acquire_refused(f, c, &ex, 2, a);
    assert_counts(f, 3, 2);
    g_assert_cmpuint(g_hash_table_size(c->leases), ==, 0);

    /* An upgrade against the other sharer fails and is undone. */
    acquire_refused(f, a, &ex, 1, b);
    assert_counts(f, 3, 2);
    g_assert_cmpint(la->mode, ==, VML_MODE_SHARED);
    assert_owners(f, sh.key, VML_MODE_SHARED, both, 2);
    g_assert_cmpint(lock_state(f, sh.key), ==, F_RDLCK);
    g_assert_cmpuint(count_lock_files(f), ==, 1);
}

/* 4. A release unlocks the file and clears the mark; the next holder gets
 * the image, with the generation moved on. */
static void
test_release(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    g_auto(VmlRequest) ex = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    acquire_ok(f, a, &ex, VML_GRANT_NEW);
    assert_counts(f, 2, 1);

    const char *const keys[] = { ex.key };
    guint released = 99;
    g_assert_true(vml_lease_table_release(f->table, a, keys, 1, &released, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(released, ==, 1);
    assert_counts(f, 2, 0);   /* the holder stays registered */
    g_assert_cmpuint(g_hash_table_size(a->leases), ==, 0);
    assert_no_owners(f, ex.key);
    g_assert_cmpuint(count_lock_files(f), ==, 1);   /* the file stays, unlocked */
    g_assert_cmpint(lock_state(f, ex.key), ==, F_UNLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, 0);

    /* Released twice: not held, and nothing changes. */
    g_assert_false(vml_lease_table_release(f->table, a, keys, 1, &released, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_NOT_HELD);
    g_assert_nonnull(strstr(error->message, ex.key));
    g_assert_cmpuint(released, ==, 0);
    g_clear_error(&error);
    assert_counts(f, 2, 0);

    VmlLease *l = acquire_ok(f, b, &ex, VML_GRANT_NEW);
    g_assert_cmpuint(l->generation, ==, 2);
    assert_counts(f, 2, 1);
    VmlHolder *const owners[] = { b };
    assert_owners(f, ex.key, VML_MODE_EXCLUSIVE, owners, 1);
    g_assert_cmpint(lock_state(f, ex.key), ==, F_WRLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)f->children[0]);
}

/* How many of our own fds have the file at PATH open. */
static guint
fds_open_on(const char *path)
{
    struct stat want;
    g_assert_cmpint(stat(path, &want), ==, 0);
    g_autoptr(GDir) d = g_dir_open("/proc/self/fd", 0, NULL);
    g_assert_nonnull(d);
    guint n = 0;
    for (const char *name; (name = g_dir_read_name(d));) {
        g_autofree char *link = g_build_filename("/proc/self/fd", name, NULL);
        struct stat st;
        n += stat(link, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino;
    }
    return n;
}

/* An image opened ahead of its acquire (for the chain read) is what the
 * check and the mark use; the acquire closes it whether it is granted or
 * refused; an image found not to be qcow2 on it gets no mark. */
static void
test_opened_ahead(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    g_auto(VmlRequest) ex = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    struct stat st;
    int fd = vml_lease_table_open_image(f->table, ex.path, &st);
    g_assert_cmpint(fd, >=, 0);
    g_assert_true(S_ISREG(st.st_mode));
    g_assert_cmpuint(fds_open_on(f->disk), ==, 1);
    acquire_ok(f, a, &ex, VML_GRANT_NEW);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)getpid());
    g_assert_cmpuint(fds_open_on(f->disk), ==, 0);

    /* Refused: closed all the same, the mark still a's. */
    g_assert_cmpint(vml_lease_table_open_image(f->table, ex.path, &st), >=, 0);
    acquire_refused(f, b, &ex, 1, a);
    g_assert_cmpuint(fds_open_on(f->disk), ==, 0);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)getpid());

    /* Said to be no qcow2 image (as the chain read found it a moment
     * ago): no header is read or written under the lease, even though
     * this one is qcow2 now. */
    g_autoptr(GError) error = NULL;
    guint released;
    const char *const keys[] = { ex.key };
    g_assert_true(vml_lease_table_release(f->table, a, keys, 1, &released, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(marked_pid(f->disk), ==, 0);
    g_assert_cmpint(vml_lease_table_open_image(f->table, ex.path, &st), >=, 0);
    vml_lease_table_image_not_qcow2(f->table, ex.path);
    VmlLease *l = acquire_ok(f, b, &ex, VML_GRANT_NEW);
    g_assert_true(l->unmarkable);
    g_assert_cmpuint(marked_pid(f->disk), ==, 0);
    g_assert_cmpuint(fds_open_on(f->disk), ==, 0);

    /* A block device or anything else is not opened ahead. */
    g_assert_cmpint(vml_lease_table_open_image(f->table, "/dev/null", &st), ==, -1);
}

/* libvirt lets go of an image the holder's process still has open (an
 * old top under a new overlay): it stays, shared and derived, for as long
 * as that process has the leased file open, even once its path names
 * another file; closed, the next reconcile lets it go. */
static void
test_release_while_open(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    g_auto(VmlRequest) ex = image_request(f, f->raw, VML_MODE_EXCLUSIVE);
    g_autoptr(GError) error = NULL;
    JsonObject *conflict = NULL;
    g_autoptr(GPtrArray) got = vml_reconcile_acquire(f->table, a, &ex, 1, FALSE, FALSE,
                                                     &conflict, &error);
    g_assert_no_error(error);
    g_assert_nonnull(got);
    int fd = open(f->raw, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);

    /* The path names another file now; ours still has the leased one. */
    g_autofree char *other = g_build_filename(f->images, "other.raw", NULL);
    g_assert_true(g_file_set_contents(other, "x", 1, NULL));
    g_assert_cmpint(rename(other, f->raw), ==, 0);

    guint released = 99;
    const char *const keys[] = { ex.key };
    g_assert_true(vml_reconcile_release(f->table, a, keys, 1, &released, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(released, ==, 0);
    VmlLease *l = g_hash_table_lookup(a->leases, ex.key);
    g_assert_nonnull(l);
    g_assert_true(l->derived);
    VmlHolder *const only_a[] = { a };
    assert_owners(f, ex.key, VML_MODE_SHARED, only_a, 1);
    g_assert_cmpint(lock_state(f, ex.key), ==, F_RDLCK);

    /* Closed: nothing needs it, the next reconcile releases it. */
    close(fd);
    g_assert_true(vml_reconcile_release(f->table, a, NULL, 0, &released, &error));
    g_assert_no_error(error);
    assert_no_owners(f, ex.key);
    g_assert_cmpint(lock_state(f, ex.key), ==, F_UNLCK);
}

/* Take every message out of the mailbox socket FD: the inodes of the
 * files its fds are, each at most once; *N_MESSAGES how many there were. */
static GHashTable *
drain_mailbox(int fd, guint *n_messages)
{
    GHashTable *inodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    *n_messages = 0;
    for (;;) {
        char text[64];
        struct iovec iov = { .iov_base = text, .iov_len = sizeof(text) };
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * 253)];
        } ctl;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                              .msg_controllen = sizeof(ctl.buf) };
        if (recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
            break;
        (*n_messages)++;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            guint k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (guint i = 0; i < k; i++) {
                int got;
                memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                struct stat st;
                g_assert_cmpint(fstat(got, &st), ==, 0);
                gint64 ino = (gint64)st.st_ino;
                g_assert_true(g_hash_table_add(inodes, g_memdup2(&ino, sizeof(ino))));
                close(got);
            }
        }
    }
    return inodes;
}

static gint64
lock_file_inode(Fixture *f, const char *key)
{
    g_autofree char *path = lock_file_of(f, key);
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    return (gint64)st.st_ino;
}

/* A holder's mailbox holds exactly the locks it holds, whatever the order
 * of grants and releases: a lock taken is added beside the others, a
 * release leaves only what stays (the lock that went is no longer in
 * there, though another lock may now have its fd number). */
static void
test_mailbox_holds_the_current_set(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    g_autoptr(GError) error = NULL;
    int sock = vml_mailbox_socket_new(&error);
    g_assert_no_error(error);
    VmlMailbox *m = vml_mailbox_new(dup(sock), &error);
    g_assert_no_error(error);
    vml_lease_table_set_mailbox(f->table, a, m);
    g_autofree char *third = g_build_filename(f->images, "third.raw", NULL);
    g_assert_true(g_file_set_contents(third, "", 0, NULL));
    g_auto(VmlRequest) ra = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    g_auto(VmlRequest) rb = image_request(f, f->raw, VML_MODE_EXCLUSIVE);
    g_auto(VmlRequest) rc = image_request(f, third, VML_MODE_SHARED);

    acquire_ok(f, a, &ra, VML_GRANT_NEW);
    acquire_ok(f, a, &rb, VML_GRANT_NEW);
    guint released;
    const char *const keys_a[] = { ra.key };
    g_assert_true(vml_lease_table_release(f->table, a, keys_a, 1, &released, &error));
    g_assert_no_error(error);
    acquire_ok(f, a, &rc, VML_GRANT_NEW);

    guint n_messages;
    g_autoptr(GHashTable) inodes = drain_mailbox(sock, &n_messages);
    g_assert_cmpuint(g_hash_table_size(inodes), ==, 2);
    gint64 b_ino = lock_file_inode(f, rb.key), c_ino = lock_file_inode(f, rc.key);
    g_assert_true(g_hash_table_contains(inodes, &b_ino));
    g_assert_true(g_hash_table_contains(inodes, &c_ino));
    g_assert_cmpuint(n_messages, >=, 1);
    g_assert_cmpuint(n_messages, <=, 2);

    /* Everything released: an empty mailbox (refilled first: the drain
     * above was ours, not the daemon's). */
    vml_lease_table_set_mailbox(f->table, a, vml_mailbox_new(dup(sock), &error));
    g_assert_no_error(error);
    g_assert_true(vml_lease_table_release(f->table, a, NULL, 0, &released, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(released, ==, 2);
    g_autoptr(GHashTable) none = drain_mailbox(sock, &n_messages);
    g_assert_cmpuint(g_hash_table_size(none), ==, 0);
    g_assert_cmpuint(n_messages, ==, 0);
    close(sock);
}

/* 5. A hard link and a symlink are the image itself: one key, one lease. */
static void
test_other_names(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *hard = g_build_filename(f->images, "hard.raw", NULL);
    g_autofree char *sym = g_build_filename(f->root, "sym.raw", NULL);
    g_assert_cmpint(link(f->raw, hard), ==, 0);
    g_assert_cmpint(symlink(f->raw, sym), ==, 0);

    g_autofree char *key = vml_lease_table_image_key(f->table, f->raw, &error);
    g_assert_no_error(error);
    g_autofree char *hard_key = vml_lease_table_image_key(f->table, hard, &error);
    g_assert_no_error(error);
    g_autofree char *sym_key = vml_lease_table_image_key(f->table, sym, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(hard_key, ==, key);
    g_assert_cmpstr(sym_key, ==, key);
    g_autofree char *disk_key = vml_lease_table_image_key(f->table, f->disk, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(disk_key, !=, key);

    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    g_auto(VmlRequest) by_hard = image_request(f, hard, VML_MODE_EXCLUSIVE);
    g_auto(VmlRequest) by_sym = image_request(f, sym, VML_MODE_EXCLUSIVE);
    g_assert_cmpstr(by_hard.path, ==, hard);     /* a hard link is a name of its own */
    g_assert_cmpstr(by_sym.path, ==, f->raw);    /* a symlink resolves to its target */
    acquire_ok(f, a, &by_hard, VML_GRANT_NEW);
    assert_counts(f, 2, 1);

    acquire_refused(f, b, &by_sym, 1, a);
    assert_counts(f, 2, 1);
    {
        /* The message says which other name the image is held through. */
        g_autoptr(GError) conflict_error = NULL;
        JsonObject *conflict = NULL;
        g_assert_null(vml_lease_table_acquire(f->table, b, &by_sym, 1, FALSE, FALSE, &conflict,
                                              &conflict_error));
        g_autofree char *through = g_strdup_printf(", through %s", hard);
        g_assert_nonnull(strstr(conflict_error->message, through));
        json_object_unref(conflict);
    }
    VmlHolder *const owners[] = { a };
    assert_owners(f, key, VML_MODE_EXCLUSIVE, owners, 1);
    g_assert_cmpint(lock_state(f, key), ==, F_WRLCK);
    g_assert_cmpuint(count_lock_files(f), ==, 1);

    /* A holds it under the key, whichever name it is released by. */
    g_auto(VmlRequest) by_raw = image_request(f, f->raw, VML_MODE_EXCLUSIVE);
    g_assert_cmpstr(vml_holder_held_key(a, &by_raw), ==, key);
}

/* 6. Names that are no image: refused where the daemon refuses them, and
 * nothing held moves. */
static void
test_bad_input(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    g_auto(VmlRequest) ex = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    acquire_ok(f, a, &ex, VML_GRANT_NEW);
    assert_counts(f, 1, 1);
    VmlHolder *const owners[] = { a };

    g_autofree char *missing = g_build_filename(f->images, "missing.qcow2", NULL);
    const char *relative = "vmlease-test-no-such-dir/disk.qcow2";
    struct {
        const char *path;
        char *message;   /* what vml_lease_table_image_key() says */
    } cases[] = {
        { missing, g_strdup_printf("%s: %s", missing, g_strerror(ENOENT)) },
        { relative, g_strdup_printf("%s: %s", relative, g_strerror(ENOENT)) },
        { "", g_strdup_printf(": %s", g_strerror(ENOENT)) },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *message = cases[i].message;
        g_test_message("path '%s'", cases[i].path);

        /* What dispatch.c checks first: only the missing file is a
         * well-formed path. */
        gboolean well_formed = vml_path_check(cases[i].path, strlen(cases[i].path), &error);
        if (cases[i].path == missing) {
            g_assert_no_error(error);
            g_assert_true(well_formed);
        } else {
            g_assert_false(well_formed);
            g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
            g_assert_cmpstr(error->message, ==, "path must be absolute");
            g_clear_error(&error);
        }

        /* The table's own resolution: no key, the name in the message. */
        g_autofree char *key = vml_lease_table_image_key(f->table, cases[i].path, &error);
        g_assert_null(key);
        g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
        g_assert_cmpstr(error->message, ==, message);

        assert_counts(f, 1, 1);
        assert_owners(f, ex.key, VML_MODE_EXCLUSIVE, owners, 1);
        g_assert_cmpint(lock_state(f, ex.key), ==, F_WRLCK);
        g_assert_cmpuint(count_lock_files(f), ==, 1);
    }

    /* A directory exists but is no image. */
    {
        g_autoptr(GError) error = NULL;
        g_autofree char *key = vml_lease_table_image_key(f->table, f->images, &error);
        g_assert_null(key);
        g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_IMAGE);
    }

    /* A holder must be a live process. */
    {
        g_autoptr(GError) error = NULL;
        pid_t gone = exited_pid();
        g_assert_null(vml_lease_table_register(f->table, UUID_B, "vm-b", gone, NULL, NULL,
                                               getuid(), &error));
        g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS);
        g_autofree char *says = g_strdup_printf("pid %d", (int)gone);
        g_assert_nonnull(strstr(error->message, says));
    }
    /* One process is one VM's holder. */
    {
        g_autoptr(GError) error = NULL;
        g_assert_null(vml_lease_table_register(f->table, UUID_B, "vm-b", getpid(), NULL, NULL,
                                               getuid(), &error));
        g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
        g_assert_nonnull(strstr(error->message, UUID_A));
    }
    /* No holder under an id never handed out. */
    {
        g_autoptr(GError) error = NULL;
        g_assert_null(vml_lease_table_lookup(f->table, vml_lease_table_next_id(f->table),
                                             &error));
        g_assert_error(error, VML_ERROR, VML_ERROR_NO_SUCH_HOLDER);
        g_assert_true(vml_lease_table_lookup(f->table, a->id, NULL) == a);
    }
    assert_counts(f, 1, 1);
    assert_owners(f, ex.key, VML_MODE_EXCLUSIVE, owners, 1);
    g_assert_cmpint(lock_state(f, ex.key), ==, F_WRLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, (guint32)getpid());
}

static gboolean
on_timeout(gpointer data)
{
    *(gboolean *)data = TRUE;
    return G_SOURCE_REMOVE;
}

/* 7. The counts through one holder's whole life, and its end as the
 * daemon sees it: the process exits and the main loop hears of it. */
static void
test_counts_and_exit(Fixture *f, G_GNUC_UNUSED gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    assert_counts(f, 0, 0);
    VmlHolder *a = register_holder(f, UUID_A, "vm-a", getpid());
    assert_counts(f, 1, 0);
    VmlHolder *b = register_holder(f, UUID_B, "vm-b", f->children[0]);
    assert_counts(f, 2, 0);

    g_auto(VmlRequest) disk = image_request(f, f->disk, VML_MODE_EXCLUSIVE);
    g_auto(VmlRequest) raw = image_request(f, f->raw, VML_MODE_SHARED);
    /* Two at once, all or nothing: both granted, in request order. */
    const VmlRequest both[] = { disk, raw };
    JsonObject *conflict = NULL;
    g_autoptr(GPtrArray) leases = vml_lease_table_acquire(f->table, b, both, 2, FALSE, FALSE,
                                                          &conflict, &error);
    g_assert_no_error(error);
    g_assert_nonnull(leases);
    g_assert_cmpuint(leases->len, ==, 2);
    g_assert_cmpstr(((VmlLease *)leases->pdata[0])->key, ==, disk.key);
    g_assert_cmpstr(((VmlLease *)leases->pdata[1])->key, ==, raw.key);
    assert_counts(f, 2, 2);

    /* A's pair fails on the disk: the raw image it got first goes too. */
    const VmlRequest a_pair[] = { raw, disk };
    g_assert_null(vml_lease_table_acquire(f->table, a, a_pair, 2, FALSE, FALSE, &conflict,
                                          &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_clear_error(&error);
    g_clear_pointer(&conflict, json_object_unref);
    assert_counts(f, 2, 2);
    g_assert_cmpuint(g_hash_table_size(a->leases), ==, 0);
    VmlHolder *const only_b[] = { b };
    assert_owners(f, raw.key, VML_MODE_SHARED, only_b, 1);

    acquire_ok(f, a, &raw, VML_GRANT_NEW);
    assert_counts(f, 2, 3);
    VmlHolder *const a_and_b[] = { a, b };
    assert_owners(f, raw.key, VML_MODE_SHARED, a_and_b, 2);

    /* B's process dies: its holder goes once the loop sees the pidfd. */
    kill(b->pid, SIGKILL);
    gboolean timed_out = FALSE;
    guint timer = g_timeout_add_seconds(10, on_timeout, &timed_out);
    while (vml_lease_table_n_holders(f->table) == 2 && !timed_out)
        g_main_context_iteration(NULL, TRUE);
    g_assert_false(timed_out);
    g_source_remove(timer);
    b = NULL;   /* freed with its holder */
    assert_counts(f, 1, 1);
    assert_no_owners(f, disk.key);
    g_assert_cmpint(lock_state(f, disk.key), ==, F_UNLCK);
    g_assert_cmpuint(marked_pid(f->disk), ==, 0);
    VmlHolder *const only_a[] = { a };
    assert_owners(f, raw.key, VML_MODE_SHARED, only_a, 1);
    g_assert_cmpint(lock_state(f, raw.key), ==, F_RDLCK);

    guint released = 0;
    g_assert_true(vml_lease_table_release(f->table, a, NULL, 0, &released, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(released, ==, 1);
    assert_counts(f, 1, 0);
    g_assert_cmpint(lock_state(f, raw.key), ==, F_UNLCK);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, func) \
    g_test_add(path, Fixture, NULL, fixture_set_up, func, fixture_tear_down)
    ADD("/lease-table/exclusive-grant", test_exclusive_grant);
    ADD("/lease-table/exclusive-conflict", test_exclusive_conflict);
    ADD("/lease-table/shared", test_shared);
    ADD("/lease-table/release", test_release);
    ADD("/lease-table/opened-ahead", test_opened_ahead);
    ADD("/lease-table/release-while-open", test_release_while_open);
    ADD("/lease-table/mailbox-holds-the-current-set", test_mailbox_holds_the_current_set);
    ADD("/lease-table/other-names", test_other_names);
    ADD("/lease-table/bad-input", test_bad_input);
    ADD("/lease-table/counts-and-exit", test_counts_and_exit);
#undef ADD
    return g_test_run();
}
