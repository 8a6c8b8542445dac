/* vmlease.so: libvirt's lock manager "vmlease". libvirt hands us a domain
 * (New), its disks and leases (AddResource), and asks to Acquire in the
 * QEMU child before exec, or in libvirtd for a running domain (resume,
 * hotplug), and to Release/Inquire with a state string. Every lease is
 * held by vmleased on behalf of the QEMU pid; in the child we also keep
 * the locked fds open across exec, so the leases outlive any crash of
 * vmleased or libvirtd. */
#include "libvirt-lock-driver.h"
#include "vml-protocol.h"
#include "vml-lease-client.h"
#include "vml-mailbox-socket.h"
#include "lease-state.h"
#include "plugin-config.h"
#include "vml-backing-chain.h"
#include "vml-client.h"
#include "vml-domain-status.h"
#include "vml-error.h"
#include "vml-wire.h"

#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdint.h>
#include <sanlock.h>
#include <sanlock_resource.h>

/* libvirt's own error values (public in virterror.h). */
#define VIR_FROM_LOCKING 42
#define VIR_ERR_INTERNAL_ERROR 1
#define VIR_ERR_OPERATION_INVALID 55
#define VIR_ERR_CONFIG_UNSUPPORTED 67
#define VIR_ERR_RESOURCE_BUSY 87

typedef struct {
    char *path;         /* disk */
    char *lockspace;    /* lease */
    char *key;          /* lease */
    gboolean shared;
    gboolean from_chain; /* a backing image we added, not libvirt */
} Resource;

typedef struct {
    char uuid[37];
    char *name;
    pid_t pid;
    GPtrArray *resources;   /* Resource* */
    gboolean restricted;
} Domain;

static VmlPluginConfig *config;
/* libvirtd's idle connections to vmleased, for its next lock calls. */
static VmlClientPool *pool;
#define POOL_MAX_IDLE 4

/* Report through libvirt's error machinery when we run inside libvirtd,
 * so `virsh start` shows our message; to stderr otherwise. */
static void G_GNUC_PRINTF(2, 3)
report(int code, const char *format, ...)
{
    typedef void (*ReportFunc)(int, int, const char *, const char *, size_t, const char *, ...);
    static ReportFunc func;
    va_list ap;
    va_start(ap, format);
    g_autofree char *text = g_strdup_vprintf(format, ap);
    va_end(ap);
    if (!func)
        func = (ReportFunc)dlsym(RTLD_DEFAULT, "virReportErrorHelper");
    if (func)
        func(VIR_FROM_LOCKING, code, __FILE__, __func__, __LINE__, "%s", text);
    else
        g_printerr("vmlease: %s\n", text);
}

static int
report_gerror(const char *what, const GError *error)
{
    int code = VIR_ERR_INTERNAL_ERROR;
    if (error->domain == VML_ERROR && error->code == VML_ERROR_CONFLICT)
        code = VIR_ERR_RESOURCE_BUSY;
    report(code, "%s: %s", what, error->message);
    return -1;
}

static void
resource_free(Resource *r)
{
    g_free(r->path);
    g_free(r->lockspace);
    g_free(r->key);
    g_free(r);
}

/* ---- driver entry points ------------------------------------------------- */

static int
vml_init(unsigned int version, const char *config_file, unsigned int flags)
{
    g_autoptr(GError) error = NULL;
    if (version / 1000000 != VML_LOCK_DRIVER_VERSION / 1000000) {
        report(VIR_ERR_INTERNAL_ERROR, "vmlease: unsupported lock driver ABI %u", version);
        return -1;
    }
    (void)flags;
    if (config)
        return 0;   /* loaded again for another libvirt driver */
    /* Register and initialise json-glib's GTypes now, in libvirtd: in the
     * QEMU child after fork, taking GType's locks could deadlock on one
     * that another libvirtd thread held at the moment of the fork. */
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    g_autoptr(JsonGenerator) generator = json_generator_new();
    config = vml_plugin_config_load(config_file, &error);
    if (!config) {
        report(VIR_ERR_CONFIG_UNSUPPORTED, "vmlease: %s", error->message);
        return -1;
    }
    g_autofree char *path = g_build_filename(config->socket_dir, "vmleased.sock", NULL);
    pool = vml_client_pool_new(path, POOL_MAX_IDLE);
    return 0;
}

static int
vml_deinit(void)
{
    g_clear_pointer(&pool, vml_client_pool_unref);
    g_clear_pointer(&config, vml_plugin_config_free);
    return 0;
}

static int
vml_new(VmlLockManager *man, unsigned int type, size_t nparams, VmlLockParam *params,
        unsigned int flags)
{
    (void)flags;
    if (type != VML_LOCK_OBJECT_DOMAIN) {
        report(VIR_ERR_INTERNAL_ERROR, "vmlease: unsupported object type %u", type);
        return -1;
    }
    Domain *d = g_new0(Domain, 1);
    d->resources = g_ptr_array_new_with_free_func((GDestroyNotify)resource_free);
    for (size_t i = 0; i < nparams; i++) {
        const VmlLockParam *p = &params[i];
        if (g_str_equal(p->key, "uuid") && p->type == VML_LOCK_PARAM_UUID) {
            const unsigned char *u = p->value.uuid;
            g_snprintf(d->uuid, sizeof(d->uuid),
                       "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                       u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
                       u[10], u[11], u[12], u[13], u[14], u[15]);
        } else if (g_str_equal(p->key, "name") &&
                   (p->type == VML_LOCK_PARAM_STRING || p->type == VML_LOCK_PARAM_CSTRING)) {
            d->name = g_strdup(p->value.cstr);
        } else if (g_str_equal(p->key, "pid") && p->type == VML_LOCK_PARAM_UINT) {
            d->pid = (pid_t)p->value.ui;
        }
    }
    if (!d->uuid[0] || !d->name) {
        report(VIR_ERR_INTERNAL_ERROR, "vmlease: domain without uuid or name");
        g_ptr_array_unref(d->resources);
        g_free(d->name);
        g_free(d);
        return -1;
    }
    man->privateData = d;
    return 0;
}

static void
vml_free(VmlLockManager *man)
{
    Domain *d = man->privateData;
    if (!d)
        return;
    g_ptr_array_unref(d->resources);
    g_free(d->name);
    g_free(d);
    man->privateData = NULL;
}

static const char *
param_string(size_t nparams, VmlLockParam *params, const char *key)
{
    for (size_t i = 0; i < nparams; i++) {
        if (g_str_equal(params[i].key, key) &&
            (params[i].type == VML_LOCK_PARAM_STRING || params[i].type == VML_LOCK_PARAM_CSTRING))
            return params[i].value.cstr;
    }
    return NULL;
}

/* Add disk PATH (shared or not) once: a path named again keeps the
 * stronger mode. */
static void
add_disk(Domain *d, const char *path, gboolean shared, gboolean from_chain)
{
    for (guint i = 0; i < d->resources->len; i++) {
        Resource *r = d->resources->pdata[i];
        if (r->path && g_str_equal(r->path, path)) {
            r->shared = r->shared && shared;
            r->from_chain = r->from_chain && from_chain;
            return;
        }
    }
    Resource *r = g_new0(Resource, 1);
    r->path = g_strdup(path);
    r->shared = shared;
    r->from_chain = from_chain;
    g_ptr_array_add(d->resources, r);
}

static int
vml_add_resource(VmlLockManager *man, unsigned int type, const char *name,
                 size_t nparams, VmlLockParam *params, unsigned int flags)
{
    Domain *d = man->privateData;
    gboolean shared = (flags & (VML_LOCK_RESOURCE_READONLY | VML_LOCK_RESOURCE_SHARED)) != 0;

    if (type == VML_LOCK_RESOURCE_DISK) {
        if (!config->require_lease_for_disks ||
            ((flags & VML_LOCK_RESOURCE_READONLY) && !config->readonly_shared))
            return 0;
        /* The chain walk resolves the image's name too: no realpath() of
         * our own unless it fails (then as before: a name that does not
         * resolve is kept as given, a chain that cannot be read refused). */
        g_autofree char *real = NULL;
        g_autoptr(GPtrArray) chain = config->protect_backing_chain
            ? vml_backing_chain_resolved(name, &real, NULL) : NULL;
        if (!chain) {
            char *r = realpath(name, NULL);
            real = r ? g_strdup(r) : NULL;
            free(r);
        }
        add_disk(d, real ? real : name, shared, FALSE);
        if (config->protect_backing_chain && real) {
            /* Nobody may write a layer this domain reads. */
            g_autoptr(GError) error = NULL;
            if (!chain)
                chain = vml_backing_chain(real, &error);
            if (!chain) {
                report(VIR_ERR_CONFIG_UNSUPPORTED, "vmlease: domain %s: %s", d->name,
                       error->message);
                return -1;
            }
            for (guint i = 0; i < chain->len; i++)
                add_disk(d, chain->pdata[i], TRUE, TRUE);
        }
        return 0;
    }
    if (type != VML_LOCK_RESOURCE_LEASE) {
        report(VIR_ERR_INTERNAL_ERROR, "vmlease: unsupported resource type %u", type);
        return -1;
    }
    const char *lockspace = param_string(nparams, params, "lockspace");
    if (!lockspace) {
        report(VIR_ERR_CONFIG_UNSUPPORTED, "vmlease: lease %s has no lockspace", name);
        return -1;
    }
    Resource *r = g_new0(Resource, 1);
    r->lockspace = g_strdup(lockspace);
    r->key = g_strdup(name);
    r->shared = shared;
    g_ptr_array_add(d->resources, r);
    return 0;
}

/* Connect to vmleased and register the domain's process; the holder id. */
static const char *
lock_failure_name(int action)
{
    static const char *const names[] = {
        [VML_LOCK_FAILURE_DEFAULT] = "default", [VML_LOCK_FAILURE_POWEROFF] = "poweroff",
        [VML_LOCK_FAILURE_RESTART] = "restart", [VML_LOCK_FAILURE_PAUSE] = "pause",
        [VML_LOCK_FAILURE_IGNORE] = "ignore",
    };
    return action >= 0 && action < (int)G_N_ELEMENTS(names) ? names[action] : NULL;
}

/* The call that follows Register on its connection, sent right behind it
 * (holder 0: the one registered) so that both take one round trip; its
 * reply is read by the caller, after Register's. */
typedef gboolean (*FollowUp)(VmlClient *c, gpointer data, GError **error);

/* ACTION < 0: leave the holder's on_lockfailure as it is. MAILBOX >= 0
 * goes to vmleased with the registration. With CHECK_LOCKSPACE, a
 * lockspace_dir in qemu-vmlease.conf must be the one vmleased uses: two
 * daemons on two lockspaces would not see each other's leases (vmleased
 * refuses the Register, and so whatever follows). THEN (may be NULL)
 * sends the follow-up call. */
static VmlClient *
connect_holder(Domain *d, pid_t pid, int action, int mailbox, gboolean check_lockspace,
               FollowUp then, gpointer then_data, gint64 *holder, GError **error)
{
    g_autoptr(VmlClient) c = vml_client_pool_connect(pool, error);
    if (!c)
        return NULL;
    VmlRegistration reg = {
        .uuid = d->uuid,
        .name = d->name,
        .pid = pid,
        /* The pid is QEMU's, but before exec it still runs libvirtd's image. */
        .program = "qemu (libvirt)",
        .on_lockfailure = lock_failure_name(action),
        .mailbox_fd = mailbox,
        .lockspace = check_lockspace ? config->lockspace_dir : NULL,
    };
    if (!then) {
        *holder = vml_lease_register(c, &reg, error);
        return *holder ? g_steal_pointer(&c) : NULL;
    }
    /* A failed send is the daemon hanging up: its Register reply says why
     * (or, if none came, the receive reports the failed send). */
    g_autoptr(GError) send_error = NULL;
    gboolean sent = vml_lease_register_send(c, &reg, &send_error) &&
                    then(c, then_data, &send_error);
    *holder = vml_lease_register_finish(c, &reg, error);
    /* Registered, but the follow-up did not go: the connection goes. */
    if (*holder && !sent) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "cannot send to vmleased: %s",
                    send_error ? send_error->message : "connection lost");
        *holder = 0;
    }
    return *holder ? g_steal_pointer(&c) : NULL;
}

/* D's resources as the protocol wants them; without WITH_CHAIN only those
 * libvirt named (a released disk's backing images may still back others). */
static JsonArray *
resources_json(Domain *d, gboolean with_chain)
{
    JsonArray *a = json_array_new();
    for (guint i = 0; i < d->resources->len; i++) {
        Resource *r = d->resources->pdata[i];
        if (r->from_chain && !with_chain)
            continue;
        JsonObject *o = json_object_new();
        if (r->path) {
            json_object_set_string_member(o, "path", r->path);
        } else {
            json_object_set_string_member(o, "lockspace", r->lockspace);
            json_object_set_string_member(o, "key", r->key);
        }
        json_object_set_string_member(o, "mode", r->shared ? "shared" : "exclusive");
        /* A backing image a block job made exclusive must stay so; and it
         * is held for the images above it, not because libvirt named it. */
        if (r->from_chain) {
            json_object_set_boolean_member(o, "at_least", TRUE);
            json_object_set_boolean_member(o, "derived", TRUE);
        }
        json_array_add_object_element(a, o);
    }
    return a;
}

/* Release RESOURCES (a Resource array; NULL: everything the holder has).
 * One call each, because libvirt's context may name a disk we never took
 * (a readonly disk under readonly_disks = "ignore"): that one is skipped. */
static gboolean
release_resources(VmlClient *c, gint64 holder, JsonArray *resources, GError **error)
{
    guint n = resources ? json_array_get_length(resources) : 1;
    for (guint i = 0; i < n; i++) {
        g_autoptr(GError) local = NULL;
        JsonArray *one = NULL;
        if (resources) {
            one = json_array_new();
            json_array_add_element(one, json_node_copy(json_array_get_element(resources, i)));
        }
        if (!vml_lease_release(c, holder, one, NULL, &local) &&
            !g_error_matches(local, VML_ERROR, VML_ERROR_NOT_HELD)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean
release_call(VmlClient *c, gint64 holder, JsonArray *resources, const char *park,
             const char *status_file, GError **error);

/* A refused resume: what it took anew or claimed goes, what it took back
 * from its own park is parked again; the domain stays paused. */
static void
undo_resume(VmlClient *c, gint64 holder, JsonArray *leases)
{
    g_autoptr(JsonArray) gone = json_array_new();
    for (guint i = 0; i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        const char *grant = json_object_get_string_member_with_default(l, "grant", "");
        if (g_str_equal(grant, "new") || g_str_equal(grant, "claimed")) {
            JsonObject *o = json_object_new();
            /* An image by its path; the daemon keys it by identity. */
            json_object_set_string_member(o, "path",
                json_object_get_string_member_with_default(
                    l, "path", json_object_get_string_member(l, "resource")));
            json_array_add_object_element(gone, o);
        }
    }
    if (json_array_get_length(gone))
        release_resources(c, holder, gone, NULL);
    release_call(c, holder, NULL, "paused", NULL, NULL);
}

/* Release for HOLDER: with PARK ("paused", "migrating") park all its
 * leases for the domain; else let go of RESOURCES (taken; an empty cdrom
 * names none), each unless the VM still reads it (an old top under a new
 * snapshot), and of the backing images nothing needs any more. */
static gboolean
release_call(VmlClient *c, gint64 holder, JsonArray *resources, const char *park,
             const char *status_file, GError **error)
{
    VmlReleaseFlags flags = {
        .park = park,
        /* Watched while parked: QEMU may resume a failed migration's source
         * by itself, and libvirt then never asks for the leases back. */
        .status_file = park && getuid() == 0 ? status_file : NULL,
        .reconcile = !park,
    };
    if (park && resources)
        json_array_unref(resources);
    return vml_lease_release(c, holder, park ? NULL : resources, &flags, error);
}

/* A resume or incoming migration: every exclusive lease that comes back
 * (taken back from its park, claimed from the migration's source, or
 * taken anew because its parked holder was gone) must come back at the
 * saved generation or the one after (one exclusive grant: ours); anything
 * later means someone else held it exclusively meanwhile. A lease this
 * process held all along proves itself: a state left over from an older
 * process (a failed migration) must not trap a cold start. */
static gboolean
check_generations(Domain *d, const char *state, JsonArray *leases, GError **error)
{
    g_autoptr(GHashTable) saved = vml_lease_state_decode(state, error);
    if (!saved)
        return FALSE;
    for (guint i = 0; i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        if (g_strcmp0(json_object_get_string_member_with_default(l, "grant", ""), "held") == 0)
            continue;
        const char *key = json_object_get_string_member_with_default(l, "resource", "");
        guint64 *was = g_hash_table_lookup(saved, key);
        gint64 now = json_object_get_int_member_with_default(l, "generation", 0);
        if (was && (guint64)now != *was + 1 && (guint64)now != *was) {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFLICT,
                        "%s was written by another holder while domain %s was paused or "
                        "migrating (lease generation %" G_GUINT64_FORMAT " then, %" G_GINT64_FORMAT
                        " now)", key, d->name, *was + 1, now);
            return FALSE;
        }
    }
    return TRUE;
}

/* Acquire every resource of D for HOLDER; with IN_OWNER the locked fds are
 * left open (not CLOEXEC) so that they pass into QEMU across exec. */
/* A conflict whose every owner is this same domain (same uuid, another
 * process) is the source of an incoming migration, not a second VM. */
static gboolean
conflict_is_own_domain(Domain *d, JsonObject *conflict)
{
    JsonArray *owners = conflict ? json_object_get_array_member(conflict, "owners") : NULL;
    if (!owners || json_array_get_length(owners) == 0)
        return FALSE;
    for (guint i = 0; i < json_array_get_length(owners); i++) {
        JsonObject *o = json_array_get_object_element(owners, i);
        if (!o || g_strcmp0(json_object_get_string_member_with_default(o, "uuid", ""),
                            d->uuid) != 0)
            return FALSE;
    }
    return TRUE;
}

/* In the VM's process before exec: register it with sanlock, which then
 * holds its leases, releases them when it exits, and fences it (through
 * our killpath helper applying <on_lockfailure>) if this host loses the
 * lockspace. The registration socket passes into QEMU across exec. */
static gboolean
register_with_sanlock(Domain *d, int action, GError **error)
{
    int sock = sanlock_register();
    if (sock < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                    "cannot register the process of domain %s with sanlock: %s", d->name,
                    g_strerror(-sock));
        return FALSE;
    }
    fcntl(sock, F_SETFD, 0);
    const char *name = lock_failure_name(action);
    if (name && !g_str_equal(name, "default")) {
        char args[128];
        g_snprintf(args, sizeof(args), "%s %s", d->uuid, name);
        int rv = sanlock_killpath(sock, 0, config->killpath, args);
        if (rv < 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_BACKEND,
                        "cannot give sanlock the killpath %s for domain %s: %s",
                        config->killpath, d->name, g_strerror(-rv));
            return FALSE;
        }
    }
    return TRUE;
}

typedef struct {
    Domain *d;
    VmlAcquireFlags flags;
} AcquireCall;

static AcquireCall
acquire_call(Domain *d, const char *state, gboolean in_owner)
{
    AcquireCall a = { d, {
        /* On sanlock the lease lives in sanlock, for the registered process. */
        .fds = in_owner && !config->on_sanlock,
        /* From libvirtd (resume, hotplug): lock through QEMU's own fds
         * where it has them, so the lease lives in QEMU again. */
        .holder_fds = !in_owner,
        /* A resume with state may be a migration's destination: it takes
         * over the leases its domain's source parked. Never in the child:
         * the source still runs while the destination's QEMU starts. */
        .claim = !in_owner && state && *state,
        /* From libvirtd, bring the held set to what the images need now:
         * libvirt names one image at a time and never a backing image. */
        .reconcile = !in_owner,
    } };
    return a;
}

/* FollowUp: D's Acquire. */
static gboolean
send_acquire(VmlClient *c, gpointer data, GError **error)
{
    AcquireCall *a = data;
    return vml_lease_acquire_send(c, 0, resources_json(a->d, TRUE), &a->flags, error);
}

/* The reply to the Acquire send_acquire sent for HOLDER. CONFLICT, if
 * given, receives a conflict's error parameters. */
static gboolean
acquire_resources(Domain *d, VmlClient *c, gint64 holder, const char *state,
                  gboolean in_owner, JsonObject **conflict, GError **error)
{
    GArray *fds = NULL;
    g_autoptr(JsonArray) leases = vml_lease_acquire_finish(c, &fds, conflict, error);
    if (!leases)
        return FALSE;
    if (state && *state && !check_generations(d, state, leases, error)) {
        vml_fds_close(fds);
        undo_resume(c, holder, leases);
        return FALSE;
    }
    for (guint i = 0; fds && i < fds->len; i++) {
        int lock_fd = g_array_index(fds, int, i);
        if (in_owner)
            fcntl(lock_fd, F_SETFD, 0);   /* leaked on purpose: it keeps the lease */
        else
            close(lock_fd);
    }
    if (fds)
        g_array_unref(fds);
    return TRUE;
}

/* libvirt's status file of domain D (vml-domain-status.h), or NULL. */
static char *
domain_status(Domain *d)
{
    g_autofree char *path = vml_domain_status_path(config->libvirt_state_dir, d->name);
    char *text = NULL;
    if (!path || !g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    return text;
}

/* Why libvirt releases with state: an outgoing migration shows in the
 * domain's status file as its async job; anything else is a pause. */
static const char *
park_reason(Domain *d)
{
    g_autofree char *status = domain_status(d);
    return vml_domain_status_has_job(status, "migration out") ? "migrating" : "paused";
}

static int
vml_acquire(VmlLockManager *man, const char *state, unsigned int flags, int action, int *fd)
{
    Domain *d = man->privateData;
    g_autoptr(GError) error = NULL;
    g_autofree char *what = g_strdup_printf("cannot acquire leases for domain %s", d->name);
    pid_t pid = d->pid > 0 ? d->pid : getpid();
    gint64 holder = 0;

    if (fd)
        *fd = -1;
    if (d->restricted) {
        report(VIR_ERR_OPERATION_INVALID, "%s: lock calls are restricted in this process", what);
        return -1;
    }
    /* on_lockfailure goes to vmleased with the holder, for backends whose
     * leases can be lost. */
    gboolean in_owner = pid == getpid();
    int mailbox = -1;
    if (in_owner && !config->on_sanlock && (mailbox = vml_mailbox_socket_new(&error)) < 0)
        return report_gerror(what, error);
    /* libvirt starts QEMU paused and asks the child only to register,
     * acquiring at resume from libvirtd. We take the leases in the child
     * all the same: a conflict then fails the start with our message
     * before QEMU opens (and trips over) the image, and the locked fds go
     * into QEMU across exec. The later acquire finds them held. */
    gboolean register_only = (flags & VML_LOCK_ACQUIRE_REGISTER_ONLY) != 0;
    gboolean acquiring = !(register_only && !in_owner) && d->resources->len > 0;
    /* The Acquire goes right behind Register, but on sanlock the child
     * registers with sanlock in between. */
    gboolean between = in_owner && config->on_sanlock;
    AcquireCall acq = acquire_call(d, state, in_owner);
    g_autoptr(VmlClient) c = connect_holder(d, pid, action, mailbox, TRUE,
                                            acquiring && !between ? send_acquire : NULL, &acq,
                                            &holder, &error);
    if (!c) {
        if (mailbox >= 0)
            close(mailbox);
        return report_gerror(what, error);
    }
    if (mailbox >= 0)
        fcntl(mailbox, F_SETFD, 0);   /* into QEMU across exec, on purpose */
    if (between && !register_with_sanlock(d, action, &error))
        return report_gerror(what, error);
    g_autoptr(JsonObject) conflict = NULL;
    if (acquiring && between && !vml_lease_acquire_send(c, holder, resources_json(d, TRUE),
                                                        &acq.flags, &error))
        return report_gerror(what, error);
    if (acquiring && !acquire_resources(d, c, holder, state, in_owner, &conflict, &error)) {
        /* An incoming migration: the source (this domain) holds the disks
         * until it stops; libvirt acquires with its state on resume. Only
         * then: a cold start of a domain that runs elsewhere is refused. */
        g_autofree char *status = register_only ? domain_status(d) : NULL;
        if (!(register_only && conflict_is_own_domain(d, conflict) &&
              vml_domain_status_has_job(status, "migration in")))
            return report_gerror(what, error);
    }
    if (flags & VML_LOCK_ACQUIRE_RESTRICT)
        d->restricted = TRUE;
    return 0;
}

/* The holder of D's process (or of libvirtd, before there is one), with
 * the connection it was found on. */
static VmlClient *
connect_domain(Domain *d, FollowUp then, gpointer then_data, gint64 *holder, GError **error)
{
    return connect_holder(d, d->pid > 0 ? d->pid : getpid(), -1, -1, FALSE, then, then_data,
                          holder, error);
}

/* FollowUp: Inquire. */
static gboolean
send_inquire(VmlClient *c, G_GNUC_UNUSED gpointer data, GError **error)
{
    return vml_lease_inquire_send(c, 0, error);
}

/* FollowUp: the Release of what libvirt named of D (see vml_release). */
static gboolean
send_release(VmlClient *c, gpointer data, GError **error)
{
    VmlReleaseFlags flags = { .reconcile = TRUE };
    return vml_lease_release_send(c, 0, resources_json(data, FALSE), &flags, error);
}

/* The current state of the domain's leases, or NULL (with ERROR) if it
 * cannot be had. *gone is set when the process has exited already. */
static char *
current_state(Domain *d, VmlClient **client, gint64 *holder, gboolean *gone, GError **error)
{
    *gone = FALSE;
    g_autoptr(VmlClient) c = connect_domain(d, send_inquire, NULL, holder, error);
    if (!c) {
        *gone = g_error_matches(*error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS);
        return NULL;
    }
    g_autoptr(JsonArray) leases = vml_lease_inquire_finish(c, error);
    if (!leases)
        return NULL;
    if (client)
        *client = g_steal_pointer(&c);
    return vml_lease_state_encode(leases);
}

static int
vml_release(VmlLockManager *man, char **state, unsigned int flags)
{
    Domain *d = man->privateData;
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) c = NULL;
    gint64 holder;
    gboolean gone;

    (void)flags;
    if (!state) {
        /* No state to hand back: nothing to inquire first. */
        c = connect_domain(d, send_release, d, &holder, &error);
        if (!c && g_error_matches(error, VML_ERROR, VML_ERROR_NO_SUCH_PROCESS))
            return 0;   /* gone: vmleased saw it exit */
        if (!c || !vml_lease_release_finish(c, &error)) {
            g_autofree char *what = g_strdup_printf("cannot release leases of domain %s",
                                                    d->name);
            return report_gerror(what, error);
        }
        return 0;
    }
    *state = NULL;
    g_autofree char *s = current_state(d, &c, &holder, &gone, &error);
    if (!s) {
        /* A process that is gone has no leases left: vmleased saw it exit. */
        if (gone)
            return 0;
        g_autofree char *what = g_strdup_printf("cannot release leases of domain %s", d->name);
        return report_gerror(what, error);
    }
    /* With state (pause, a migration's switchover, managedsave): park every
     * lease for the domain, so that nobody else can take it before this
     * process resumes or the destination claims it; it goes when this
     * process exits. Without (above): only what libvirt named: a disk
     * detach names just that disk, and its backing images may back other
     * layers still. They go when the domain's process does. */
    g_autofree char *status = vml_domain_status_path(config->libvirt_state_dir, d->name);
    if (!release_call(c, holder, NULL, park_reason(d), status, &error)) {
        g_autofree char *what = g_strdup_printf("cannot park leases of domain %s", d->name);
        return report_gerror(what, error);
    }
    *state = g_steal_pointer(&s);
    return 0;
}

static int
vml_inquire(VmlLockManager *man, char **state, unsigned int flags)
{
    Domain *d = man->privateData;
    g_autoptr(GError) error = NULL;
    gint64 holder;
    gboolean gone;

    (void)flags;
    *state = current_state(d, NULL, &holder, &gone, &error);
    if (!*state && !gone) {
        g_autofree char *what = g_strdup_printf("cannot inquire leases of domain %s", d->name);
        return report_gerror(what, error);
    }
    return 0;
}

G_MODULE_EXPORT VmlLockDriver virLockDriverImpl = {
    .version = VML_LOCK_DRIVER_VERSION,
    .flags = VML_LOCK_DRIVER_USES_STATE,
    .drvInit = vml_init,
    .drvDeinit = vml_deinit,
    .drvNew = vml_new,
    .drvFree = vml_free,
    .drvAddResource = vml_add_resource,
    .drvAcquire = vml_acquire,
    .drvRelease = vml_release,
    .drvInquire = vml_inquire,
};
