/* The shared-storage backend: sanlock does the distributed part (delta
 * leases per host, paxos leases per resource); we never write consensus of
 * our own. Per resource a lease file <sha256>.lease in lease_dir, created
 * and initialised on first use (like libvirt's auto_disk_leases); per host
 * hosts/<host_id>.json mapping the host id to a name; per holder process a
 * <tag>.holder record next to the leases.
 *
 * A lease belongs to the holder process in sanlock itself: the holder must
 * have registered with sanlock (the plugin does so in the VM's process
 * before exec, vmlease run for itself), and sanlock releases its leases
 * when it exits and kills it if this host loses the lockspace. */
#include "backend.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-proc.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdint.h>
#include <stdlib.h>
#include <sanlock.h>
#include <sanlock_admin.h>
#include <sanlock_resource.h>
#include <sanlock_rv.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LEASE_SUFFIX ".lease"
#define LEASE_SIZE (1024 * 1024)

typedef struct {
    VmlBackend parent;
    char *ls_name;
    char *ls_path;
    char *lease_dir;
    guint host_id;
    guint io_timeout;
    int watch_sock;        /* our own registration: HUP when sanlock dies */
    guint watch_source;
    guint join_source;     /* until joined: join again if a join failed */
    gint64 join_started;
} SanlockBackend;

/* Each key has two sanlock leases in its lease file: A at offset 0 (the
 * only one earlier releases used) and B right after it. A plain acquire
 * takes both; parking an exclusive lease lets go of one, which only a
 * claim for the same domain takes (see backend.h), so some lease of the
 * two is held by the domain from the park to the parked holder's exit. */
enum { PART_A = 1, PART_B = 2, BOTH_PARTS = PART_A | PART_B };

struct _VmlLock {
    pid_t pid;
    struct sanlk_resource *res[2];   /* A, B */
    guint held;                      /* PART_A | PART_B */
};

static void
sanlock_error(GError **error, int code, int rv, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static void
sanlock_error(GError **error, int code, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const char *why = rv > -200 ? g_strerror(-rv) : "sanlock error";
    g_set_error(error, VML_ERROR, code, "%s: %s (sanlock %d)", what, why, rv);
}

static void
copy_name(char *dst, const char *src)
{
    g_strlcpy(dst, src, SANLK_NAME_LEN);
}

static void
fill_lockspace(SanlockBackend *be, struct sanlk_lockspace *ls, guint host_id)
{
    memset(ls, 0, sizeof(*ls));
    copy_name(ls->name, be->ls_name);
    ls->host_id = host_id;
    g_strlcpy(ls->host_id_disk.path, be->ls_path, SANLK_PATH_LEN);
}

/* sanlock's view of lease PART (0: A, 1: B) of a resource: lockspace, name
 * (the key's hash, cut to sanlock's 47 characters; B's ends in "-b") and
 * its place in the lease file. */
static struct sanlk_resource *
resource_new(SanlockBackend *be, const char *key, VmlMode mode, guint part)
{
    struct sanlk_resource *res = g_malloc0(sizeof(*res) + sizeof(struct sanlk_disk));
    g_autofree char *hash = vml_key_hash(key);
    copy_name(res->lockspace_name, be->ls_name);
    if (part == 0) {
        copy_name(res->name, hash);
    } else {
        g_autofree char *name = g_strdup_printf("%.45s-b", hash);
        copy_name(res->name, name);
    }
    res->num_disks = 1;
    res->flags = mode == VML_MODE_SHARED ? SANLK_RES_SHARED : 0;
    g_autofree char *path = g_strdup_printf("%s/%s" LEASE_SUFFIX, be->lease_dir, hash);
    g_strlcpy(res->disks[0].path, path, SANLK_PATH_LEN);
    res->disks[0].offset = part * LEASE_SIZE;
    return res;
}

static void
lock_free(VmlLock *l)
{
    g_free(l->res[0]);
    g_free(l->res[1]);
    g_free(l);
}

static VmlLock *
lock_new(SanlockBackend *be, const char *key, VmlMode mode, pid_t pid)
{
    VmlLock *l = g_new0(VmlLock, 1);
    l->pid = pid;
    l->res[0] = resource_new(be, key, mode, 0);
    l->res[1] = resource_new(be, key, mode, 1);
    return l;
}

/* The parts of MASK, as sanlock's resource array. */
static int
parts(VmlLock *l, guint mask, struct sanlk_resource **out)
{
    int n = 0;
    if (mask & PART_A)
        out[n++] = l->res[0];
    if (mask & PART_B)
        out[n++] = l->res[1];
    return n;
}

/* Serialise initialisation between hosts: an fcntl lock on a file in the
 * shared directory (NFS passes those on too). */
static int
init_lock(SanlockBackend *be, GError **error)
{
    g_autofree char *path = g_build_filename(be->lease_dir, ".init-lock", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fd < 0 || fcntl(fd, F_OFD_SETLKW, &fl) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot lock %s: %s", path,
                    g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Make sure RES's lease file exists and carries a lease. */
static gboolean
ensure_resource(SanlockBackend *be, struct sanlk_resource *res, GError **error)
{
    g_autofree struct sanlk_resource *probe = g_memdup2(res, sizeof(*res) + sizeof(struct sanlk_disk));
    if (sanlock_read_resource(probe, 0) == 0)
        return TRUE;
    int lock = init_lock(be, error);
    if (lock < 0)
        return FALSE;
    gboolean ok = TRUE;
    memcpy(probe, res, sizeof(*res) + sizeof(struct sanlk_disk));
    if (sanlock_read_resource(probe, 0) != 0) {
        /* Nobody initialised it (or a first try died half-way). */
        int fd = open(res->disks[0].path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 ||
            (st.st_size < 2 * LEASE_SIZE && ftruncate(fd, 2 * LEASE_SIZE) < 0)) {
            g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot create lease file %s: %s",
                        res->disks[0].path, g_strerror(errno));
            ok = FALSE;
        }
        if (fd >= 0)
            close(fd);
        struct sanlk_resource *init = g_memdup2(res, sizeof(*res) + sizeof(struct sanlk_disk));
        init->flags = 0;
        int rv = ok ? sanlock_write_resource(init, 0, 0, 0) : 0;
        g_free(init);
        if (rv < 0) {
            sanlock_error(error, VML_ERROR_BACKEND, rv, "cannot initialise lease %s",
                          res->disks[0].path);
            ok = FALSE;
        }
    }
    close(lock);
    return ok;
}

/* Joined, or why not. */
static gboolean
check_joined(SanlockBackend *be, GError **error)
{
    struct sanlk_lockspace ls;
    fill_lockspace(be, &ls, be->host_id);
    int rv = sanlock_inq_lockspace(&ls, 0);
    if (rv == 0)
        return TRUE;
    if (rv == -EINPROGRESS)
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "host %u is still joining sanlock lockspace %s (for %" G_GINT64_FORMAT
                    " s; it takes a few io_timeouts): try again shortly", be->host_id,
                    be->ls_name, (g_get_monotonic_time() - be->join_started) / G_USEC_PER_SEC);
    else
        sanlock_error(error, VML_ERROR_BACKEND, rv,
                      "host %u has not joined sanlock lockspace %s (is sanlock running? "
                      "restart vmleased to join again)", be->host_id, be->ls_name);
    return FALSE;
}

/* Another holder has it: on another host, or (-EEXIST) another process on
 * this one, since sanlock keeps one lease per resource and host. */
static gboolean
is_conflict(int rv)
{
    return rv == SANLK_ACQUIRE_IDLIVE || rv == SANLK_ACQUIRE_OWNED ||
           rv == SANLK_ACQUIRE_OTHER || rv == SANLK_ACQUIRE_SHRETRY ||
           rv == SANLK_ACQUIRE_OWNED_RETRY || rv == -EAGAIN || rv == -EBUSY ||
           rv == -EEXIST;
}

/* Two hosts taking a shared lease at once race in paxos: each takes the
 * lease itself for a moment to add its mode block, so the other may see it
 * "owned by another host" (or be asked outright to retry). */
static gboolean
worth_retry(int rv, VmlMode mode)
{
    return rv == SANLK_ACQUIRE_SHRETRY || rv == SANLK_ACQUIRE_OWNED_RETRY || rv == -EAGAIN ||
           (mode == VML_MODE_SHARED &&
            (rv == SANLK_ACQUIRE_OWNED || rv == SANLK_ACQUIRE_IDLIVE ||
             rv == SANLK_ACQUIRE_OTHER));
}

/* How long a shared request keeps trying: a racing host holds the paxos
 * lease for a few of sanlock's disk round trips. An exclusive holder
 * elsewhere costs a shared request this long before it is refused. */
#define ACQUIRE_RETRY_FOR_MS 4000
#define ACQUIRE_RETRY_MS 200

static guint64
lease_version(struct sanlk_resource *res)
{
    g_autofree struct sanlk_resource *r = g_memdup2(res, sizeof(*res) + sizeof(struct sanlk_disk));
    return sanlock_read_resource(r, 0) == 0 ? r->lver : 0;
}

/* Take MASK of L's parts for L's pid, retrying through paxos races. */
static int
acquire_parts(VmlLock *l, guint mask, VmlMode mode)
{
    struct sanlk_resource *res[2];
    int n = parts(l, mask, res);
    int rv = sanlock_acquire(-1, l->pid, 0, n, res, NULL);
    gint64 give_up = g_get_monotonic_time() + ACQUIRE_RETRY_FOR_MS * 1000;
    while (worth_retry(rv, mode) && g_get_monotonic_time() < give_up) {
        g_usleep(g_random_int_range(ACQUIRE_RETRY_MS / 2, ACQUIRE_RETRY_MS * 3 / 2) * 1000);
        rv = sanlock_acquire(-1, l->pid, 0, n, res, NULL);
    }
    return rv;
}

static void
acquire_error(GError **error, int rv, const char *key, pid_t pid)
{
    if (is_conflict(rv))
        g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "%s is held by another holder", key);
    else if (rv == -ESRCH || rv == -ENOENT)
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "process %d is not registered with sanlock: a holder must call "
                    "sanlock_register() first (the vmlease plugin and vmlease run do)",
                    (int)pid);
    else
        sanlock_error(error, VML_ERROR_BACKEND, rv, "sanlock cannot lease %s", key);
}

/* Both leases of KEY exist, or ERROR. */
static VmlLock *
prepare_lock(SanlockBackend *be, const char *key, VmlMode mode, pid_t pid, GError **error)
{
    if (!check_joined(be, error))
        return NULL;
    VmlLock *l = lock_new(be, key, mode, pid);
    if (!ensure_resource(be, l->res[0], error) || !ensure_resource(be, l->res[1], error)) {
        lock_free(l);
        return NULL;
    }
    return l;
}

static VmlLock *
sanlock_acquire_lock(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid,
                     G_GNUC_UNUSED int pidfd, guint64 *generation, GError **error)
{
    VmlLock *l = prepare_lock((SanlockBackend *)parent, key, mode, pid, error);
    if (!l)
        return NULL;
    /* One call: sanlock takes both or neither. */
    int rv = acquire_parts(l, BOTH_PARTS, mode);
    if (rv < 0) {
        g_info("sanlock acquire %s %s for pid %d: %d", key, vml_mode_name(mode), (int)pid, rv);
        acquire_error(error, rv, key, pid);
        lock_free(l);
        return NULL;
    }
    l->held = BOTH_PARTS;
    *generation = lease_version(l->res[0]);
    return l;
}

/* Parking keeps A (or whichever one a claim gave us) and lets B go. */
static void
sanlock_park(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, VmlMode mode)
{
    if (mode != VML_MODE_EXCLUSIVE || l->held != BOTH_PARTS)
        return;
    int rv = sanlock_release(-1, l->pid, 0, 1, &l->res[1]);
    if (rv < 0)
        g_warning("sanlock cannot let go of the claim lease %s for pid %d: %d; the lease "
                  "stays whole", l->res[1]->name, (int)l->pid, rv);
    else
        l->held = PART_A;
}

static gboolean
sanlock_unpark(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, const char *key, VmlMode mode,
               GError **error)
{
    if (mode != VML_MODE_EXCLUSIVE || l->held == BOTH_PARTS)
        return TRUE;
    guint missing = BOTH_PARTS & ~l->held;
    int rv = acquire_parts(l, missing, mode);
    if (rv < 0) {
        acquire_error(error, rv, key, l->pid);
        return FALSE;
    }
    l->held = BOTH_PARTS;
    return TRUE;
}

static VmlLock *
sanlock_claim(VmlBackend *parent, const char *key, VmlMode mode, pid_t pid,
              G_GNUC_UNUSED int pidfd, guint64 *generation, GError **error)
{
    VmlLock *l = prepare_lock((SanlockBackend *)parent, key, mode, pid, error);
    if (!l)
        return NULL;
    int rv = 0;
    const guint tries[] = { PART_B, PART_A };
    for (guint i = 0; i < G_N_ELEMENTS(tries); i++) {
        if ((rv = acquire_parts(l, tries[i], mode)) == 0) {
            l->held = tries[i];
            /* A's version counts the grants, whoever holds B. */
            *generation = lease_version(l->res[0]);
            return l;
        }
    }
    acquire_error(error, rv, key, pid);
    lock_free(l);
    return NULL;
}

static VmlLock *
sanlock_adopt(G_GNUC_UNUSED VmlBackend *parent, const char *key, G_GNUC_UNUSED VmlMode *mode,
              G_GNUC_UNUSED gboolean *parked, int fd, GError **error)
{
    if (fd >= 0)
        close(fd);
    g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "%s: sanlock leases carry no fds", key);
    return NULL;
}

/* After a restart: sanlock still holds the leases for the process if it
 * lives; ask it which. */
static VmlLock *
sanlock_recover(VmlBackend *parent, const char *key, VmlMode *modep, gboolean *parked,
                pid_t pid, G_GNUC_UNUSED int pidfd, G_GNUC_UNUSED GArray *candidates,
                guint64 *generation, GError **error)
{
    SanlockBackend *be = (SanlockBackend *)parent;
    char *state = NULL;
    int count = 0;
    int rv = sanlock_inquire(-1, pid, 0, &count, &state);
    VmlLock *l = lock_new(be, key, *modep, pid);
    for (guint i = 0; i < 2; i++) {
        g_autofree char *needle = g_strdup_printf("%s:%s:", l->res[i]->lockspace_name,
                                                  l->res[i]->name);
        if (rv == 0 && state && strstr(state, needle))
            l->held |= i == 0 ? PART_A : PART_B;
    }
    free(state);
    if (!l->held) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "sanlock holds no lease on %s for pid %d", key, (int)pid);
        lock_free(l);
        return NULL;
    }
    *parked = *parked && *modep == VML_MODE_EXCLUSIVE && l->held != BOTH_PARTS;
    *generation = lease_version(l->res[0]);
    return l;
}

static gboolean
sanlock_change_mode(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l, const char *key,
                    VmlMode mode, guint64 *generation, GError **error)
{
    guint32 want = mode == VML_MODE_SHARED ? SANLK_RES_SHARED : 0;
    struct sanlk_resource *res[2];
    int n = parts(l, l->held, res);
    for (int i = 0; i < n; i++) {
        guint32 old = res[i]->flags;
        res[i]->flags = want;
        int rv = sanlock_convert(-1, l->pid, 0, res[i]);
        if (rv == 0)
            continue;
        res[i]->flags = old;
        for (int j = 0; j < i; j++) {   /* back to where it was: cannot conflict */
            res[j]->flags = old;
            sanlock_convert(-1, l->pid, 0, res[j]);
        }
        if (is_conflict(rv))
            g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT, "%s is shared with another host",
                        key);
        else
            sanlock_error(error, VML_ERROR_BACKEND, rv, "sanlock cannot convert %s", key);
        return FALSE;
    }
    *generation = lease_version(l->res[0]);
    return TRUE;
}

static void
sanlock_release_lock(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l)
{
    /* Fails harmlessly when the holder has exited: sanlock let go then. */
    struct sanlk_resource *res[2];
    int n = parts(l, l->held, res);
    if (n)
        sanlock_release(-1, l->pid, 0, n, res);
    lock_free(l);
}

static void
sanlock_forget(G_GNUC_UNUSED VmlBackend *parent, VmlLock *l)
{
    lock_free(l);
}

static int
sanlock_lock_fd(G_GNUC_UNUSED VmlLock *l)
{
    return -1;
}

/* ---- hosts ------------------------------------------------------------- */

static gboolean
write_host_entry(SanlockBackend *be, GError **error)
{
    g_autofree char *dir = g_build_filename(be->lease_dir, "hosts", NULL);
    g_autofree char *path = g_strdup_printf("%s/%u.json", dir, be->host_id);
    g_autofree char *text = g_strdup_printf("{\"host_id\":%u,\"host\":\"%s\",\"machine_id\":\"%s\"}\n",
                                            be->host_id, vml_host_name(), vml_host_machine_id());
    if (g_mkdir_with_parents(dir, 0700) < 0 ||
        !g_file_set_contents(path, text, -1, error)) {
        if (error && !*error)
            g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot create %s: %s", dir,
                        g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* host id -> {host, machine_id} from hosts/<id>.json */
static JsonObject *
host_entry(SanlockBackend *be, guint64 host_id)
{
    g_autofree char *path = g_strdup_printf("%s/hosts/%" G_GUINT64_FORMAT ".json", be->lease_dir,
                                            host_id);
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_mapped_file(p, path, NULL))
        return NULL;
    JsonNode *root = json_parser_get_root(p);
    return root && JSON_NODE_HOLDS_OBJECT(root) ? json_object_ref(json_node_get_object(root))
                                                : NULL;
}

static const char *
host_state_name(guint32 flags)
{
    switch (flags & SANLK_HOST_MASK) {
    case SANLK_HOST_LIVE: return "live";
    case SANLK_HOST_FAIL: return "failing";
    case SANLK_HOST_DEAD: return "dead";
    case SANLK_HOST_FREE: return "free";
    default: return "unknown";
    }
}

static JsonObject *
sanlock_hosts(VmlBackend *parent, GError **error)
{
    SanlockBackend *be = (SanlockBackend *)parent;
    struct sanlk_host *hss = NULL;
    int n = 0;
    int rv = sanlock_get_hosts(be->ls_name, 0, &hss, &n, 0);
    if (rv < 0) {
        sanlock_error(error, VML_ERROR_BACKEND, rv, "cannot read the hosts of lockspace %s",
                      be->ls_name);
        return NULL;
    }
    JsonArray *out = json_array_new();
    for (int i = 0; i < n; i++) {
        JsonObject *h = json_object_new();
        g_autoptr(JsonObject) entry = host_entry(be, hss[i].host_id);
        json_object_set_int_member(h, "host_id", (gint64)hss[i].host_id);
        json_object_set_string_member(h, "host", entry
            ? json_object_get_string_member_with_default(entry, "host", "?") : "?");
        json_object_set_string_member(h, "machine_id", entry
            ? json_object_get_string_member_with_default(entry, "machine_id", "") : "");
        json_object_set_string_member(h, "state", host_state_name(hss[i].flags));
        json_object_set_int_member(h, "generation", (gint64)hss[i].generation);
        json_object_set_int_member(h, "timestamp", (gint64)hss[i].timestamp);
        json_object_set_boolean_member(h, "this_host", hss[i].host_id == be->host_id);
        json_array_add_object_element(out, h);
    }
    free(hss);
    JsonObject *reply = json_object_new();
    json_object_set_string_member(reply, "lockspace", be->ls_name);
    json_object_set_int_member(reply, "host_id", be->host_id);
    json_object_set_array_member(reply, "hosts", out);
    return reply;
}

/* ---- open, join, watch --------------------------------------------------- */

static gboolean
on_sanlock_gone(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    SanlockBackend *be = data;
    be->watch_source = 0;
    g_critical("the connection to sanlock broke: sanlock is gone, and with it the "
               "renewal of this host's leases");
    if (be->parent.lost)
        be->parent.lost(&be->parent, be->parent.lost_data);
    return G_SOURCE_REMOVE;
}

/* Initialise the lockspace area if nobody has (under the init lock). */
static gboolean
ensure_lockspace(SanlockBackend *be, GError **error)
{
    struct sanlk_lockspace ls;
    fill_lockspace(be, &ls, 0);
    guint32 io_timeout = 0;
    if (sanlock_read_lockspace(&ls, 0, &io_timeout) == 0)
        return TRUE;
    int lock = init_lock(be, error);
    if (lock < 0)
        return FALSE;
    fill_lockspace(be, &ls, 0);
    int rv = sanlock_read_lockspace(&ls, 0, &io_timeout);
    if (rv == SANLK_LEADER_MAGIC || rv == SANLK_LEADER_READ) {
        fill_lockspace(be, &ls, 0);
        rv = sanlock_write_lockspace(&ls, 0, 0, be->io_timeout);
        if (rv == 0)
            g_message("initialised sanlock lockspace %s in %s (io_timeout %u s)", be->ls_name,
                      be->ls_path, be->io_timeout);
    }
    close(lock);
    if (rv < 0) {
        sanlock_error(error, VML_ERROR_BACKEND, rv, "cannot use lockspace %s in %s",
                      be->ls_name, be->ls_path);
        return FALSE;
    }
    return TRUE;
}

static void sanlock_close(VmlBackend *parent);

/* An asynchronous join can fail later (slow storage missing a deadline)
 * and sanlock then forgets the lockspace: try again until joined rather
 * than refuse every lease until someone restarts vmleased. */
static gboolean
keep_joining(gpointer data)
{
    SanlockBackend *be = data;
    struct sanlk_lockspace ls;
    fill_lockspace(be, &ls, be->host_id);
    int rv = sanlock_inq_lockspace(&ls, 0);
    if (rv == 0) {
        g_message("joined sanlock lockspace %s as host %u after %" G_GINT64_FORMAT " s",
                  be->ls_name, be->host_id,
                  (g_get_monotonic_time() - be->join_started) / G_USEC_PER_SEC);
        be->join_source = 0;
        return G_SOURCE_REMOVE;
    }
    if (rv == -EINPROGRESS)
        return G_SOURCE_CONTINUE;
    rv = sanlock_add_lockspace_timeout(&ls, SANLK_ADD_ASYNC, be->io_timeout);
    g_warning("joining sanlock lockspace %s as host %u failed; joining again (%d)",
              be->ls_name, be->host_id, rv);
    return G_SOURCE_CONTINUE;
}

/* The shared lockspace's settings: this host's id, the lockspace file and
 * the lease directory on the shared storage, and a name sanlock takes. */
/* ---- settings: this host in the shared lockspace ------------------------ */

static const char *const sanlock_config_keys[] = {
    "host_id", "lockspace_name", "lockspace_path", "lease_dir", "io_timeout", NULL,
};

typedef struct {
    guint host_id;          /* 1..2000; 0: not set */
    char *lockspace_name;   /* sanlock's name of the lockspace */
    char *lockspace_path;   /* its delta-lease area on the shared storage */
    char *lease_dir;        /* per-resource lease files and holder records */
    guint io_timeout;       /* sanlock's io_timeout, seconds */
} SanlockSettings;

static void
sanlock_free_config(gpointer data)
{
    SanlockSettings *st = data;
    g_free(st->lockspace_name);
    g_free(st->lockspace_path);
    g_free(st->lease_dir);
    g_free(st);
}

static gpointer
sanlock_load_config(VmlConf *conf, GError **error)
{
    SanlockSettings *st = g_new0(SanlockSettings, 1);
    st->lockspace_name = g_strdup("vmlease");
    st->io_timeout = 10;
    if (conf &&
        (!vml_conf_update_uint(conf, "host_id", &st->host_id, 1, 2000, NULL, error) ||
         !vml_conf_update_uint(conf, "io_timeout", &st->io_timeout, 1, 300, NULL, error) ||
         !vml_conf_update_string(conf, "lockspace_name", &st->lockspace_name, error) ||
         !vml_conf_update_abs_path(conf, "lockspace_path", &st->lockspace_path, error) ||
         !vml_conf_update_abs_path(conf, "lease_dir", &st->lease_dir, error))) {
        sanlock_free_config(st);
        return NULL;
    }
    return st;
}

static gboolean
sanlock_check_config(gconstpointer settings, GError **error)
{
    const SanlockSettings *st = settings;
    const char *missing = !st->host_id ? "host_id (1..2000, unique per host)"
                        : !st->lockspace_path ? "lockspace_path (on the shared storage)"
                        : !st->lease_dir ? "lease_dir (a directory on the shared storage)"
                        : NULL;
    if (missing) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "backend \"sanlock\" needs %s", missing);
        return FALSE;
    }
    if (!*st->lockspace_name || strlen(st->lockspace_name) > 47 ||
        strchr(st->lockspace_name, ':')) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                    "lockspace_name must be 1 to 47 characters without ':'");
        return FALSE;
    }
    return TRUE;
}

static VmlBackend *
sanlock_open(const VmlDaemonConfig *cfg, GError **error)
{
    guint32 version = 0, proto = 0;
    int rv = sanlock_version(0, &version, &proto);
    if (rv < 0) {
        sanlock_error(error, VML_ERROR_BACKEND, rv,
                      "cannot reach the sanlock daemon: start it first (systemctl start "
                      "wdmd sanlock)");
        return NULL;
    }
    const SanlockSettings *st = cfg->backend_settings;
    if (!st || !sanlock_check_config(st, error))
        return NULL;
    SanlockBackend *be = g_new0(SanlockBackend, 1);
    be->parent.ops = &vml_sanlock_backend_ops;
    be->ls_name = g_strdup(st->lockspace_name);
    be->ls_path = g_strdup(st->lockspace_path);
    be->parent.lockspace = g_strdup_printf("%s (%s)", be->ls_name, be->ls_path);
    be->lease_dir = g_strdup(st->lease_dir);
    be->host_id = st->host_id;
    be->io_timeout = st->io_timeout;
    be->watch_sock = -1;
    if (!vml_record_store_init(&be->parent.records, st->lease_dir, error) ||
        !write_host_entry(be, error) || !ensure_lockspace(be, error)) {
        sanlock_close(&be->parent);
        return NULL;
    }
    struct sanlk_lockspace ls;
    fill_lockspace(be, &ls, be->host_id);
    be->join_started = g_get_monotonic_time();
    rv = sanlock_inq_lockspace(&ls, 0);
    if (rv != 0 && rv != -EINPROGRESS) {
        rv = sanlock_add_lockspace_timeout(&ls, SANLK_ADD_ASYNC, be->io_timeout);
        if (rv < 0 && rv != -EEXIST && rv != -EINPROGRESS) {
            sanlock_error(error, VML_ERROR_BACKEND, rv, "cannot join lockspace %s as host %u",
                          be->ls_name, be->host_id);
            sanlock_close(&be->parent);
            return NULL;
        }
        g_message("joining sanlock lockspace %s as host %u (sanlock %u.%u.%u)", be->ls_name,
                  be->host_id, version >> 24, (version >> 16) & 0xff, (version >> 8) & 0xff);
        be->join_source = g_timeout_add_seconds(MAX(1u, be->io_timeout), keep_joining, be);
    }
    /* A registration of our own: its socket hangs up when sanlock dies. */
    be->watch_sock = sanlock_register();
    if (be->watch_sock >= 0) {
        fcntl(be->watch_sock, F_SETFD, FD_CLOEXEC);
        be->watch_source = g_unix_fd_add(be->watch_sock, G_IO_HUP | G_IO_ERR, on_sanlock_gone, be);
    }
    return &be->parent;
}

static void
sanlock_close(VmlBackend *parent)
{
    SanlockBackend *be = (SanlockBackend *)parent;
    if (be->watch_source)
        g_source_remove(be->watch_source);
    if (be->join_source)
        g_source_remove(be->join_source);
    if (be->watch_sock >= 0)
        close(be->watch_sock);
    vml_record_store_clear(&be->parent.records);
    g_free(be->ls_name);
    g_free(be->ls_path);
    g_free(be->parent.lockspace);
    g_free(be->lease_dir);
    g_free(be);
}

/* ---- host state of an owner record ------------------------------------- */

static char *
sanlock_owner_host_state(VmlBackend *parent, const char *machine_id)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) reply = sanlock_hosts(parent, &error);
    JsonArray *hosts = reply ? json_object_get_array_member(reply, "hosts") : NULL;
    for (guint i = 0; hosts && i < json_array_get_length(hosts); i++) {
        JsonObject *h = json_array_get_object_element(hosts, i);
        if (g_strcmp0(json_object_get_string_member(h, "machine_id"), machine_id) == 0)
            return g_strdup(json_object_get_string_member(h, "state"));
    }
    return NULL;
}

const VmlBackendOps vml_sanlock_backend_ops = {
    .name = "sanlock",
    .cross_host = TRUE,
    .config_keys = sanlock_config_keys,
    .load_config = sanlock_load_config,
    .free_config = sanlock_free_config,
    .check_config = sanlock_check_config,
    .open = sanlock_open,
    .close = sanlock_close,
    .acquire = sanlock_acquire_lock,
    .adopt = sanlock_adopt,
    .recover = sanlock_recover,
    .change_mode = sanlock_change_mode,
    .park = sanlock_park,
    .unpark = sanlock_unpark,
    .claim = sanlock_claim,
    .release = sanlock_release_lock,
    .forget = sanlock_forget,
    .lock_fd = sanlock_lock_fd,
    .hosts = sanlock_hosts,
    .owner_host_state = sanlock_owner_host_state,
};
