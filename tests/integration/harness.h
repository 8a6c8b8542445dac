/* Start and stop a real vmleased under a private VMLEASE_ROOT for tests.
 * The binary comes from $VMLEASED_BIN (set by meson test). Starting a daemon
 * also sets VMLEASE_ROOT in this process, so vml_client_connect_lease() and
 * the vmlease CLI ($VMLEASE_BIN) find it. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/types.h>

typedef struct {
    char *root;         /* temporary directory, removed by stop */
    char *config;       /* root/vmleased.conf */
    GPid pid;
} VmlTestDaemon;

/* CONFIG_TEXT (may be NULL) is written to root/vmleased.conf. */
VmlTestDaemon *vml_test_daemon_start(const char *config_text);
/* Start the daemon again on the same root (after a kill). */
void vml_test_daemon_restart(VmlTestDaemon *d);
/* Send SIG and reap the process. */
void vml_test_daemon_kill(VmlTestDaemon *d, int sig);
/* Wait until the daemon answers on its lease socket (up to 5 s). */
void vml_test_daemon_wait_ready(VmlTestDaemon *d);
/* SIGTERM, reap, remove the root. */
void vml_test_daemon_stop(VmlTestDaemon *d);

/* A GSpawnChildSetupFunc: the child is killed when the test dies, so a
 * failed test leaves no daemon behind. */
void vml_test_die_with_parent(gpointer data);
/* What the daemon logged so far (root/vmleased.log). */
char *vml_test_daemon_log(VmlTestDaemon *d);
/* The holder whose integer MEMBER ("holder", "pid") is VALUE in
 * Admin.List's reply (a new reference); fails the test if none is. */
JsonObject *vml_test_list_holder(const char *member, gint64 value);

/* Make an empty file under the root and return its path. */
char *vml_test_make_image(VmlTestDaemon *d, const char *name);

/* Call a method on the lease socket (admin socket if ADMIN), asserting the
 * connection works. Returns reply params, or NULL with *error set. */
JsonObject *vml_test_call(gboolean admin, const char *method, JsonObject *params,
                          GArray **fds_out, JsonObject **error_params, GError **error);

/* Fork a child that just sleeps (a stand-in VM process); kill it with
 * vml_test_child_kill. */
pid_t vml_test_child_spawn(void);
void vml_test_child_kill(pid_t pid, int sig);

/* Fork a holder process that registers itself and acquires RESOURCES
 * (consumed) with fds, keeping them open like a VM would; returns once the
 * leases are held (asserts they were granted). */
pid_t vml_test_holder_spawn(const char *uuid, const char *name, JsonArray *resources);
/* A child that runs SETUP(DATA) and then stays (paused, dying with the
 * test) keeping whatever it opened; asserts that SETUP returned TRUE. */
pid_t vml_test_keeper_spawn(gboolean (*setup)(gpointer data), gpointer data);
/* In such a child: register this process as UUID/NAME with the daemon of
 * $VMLEASE_ROOT and acquire RESOURCES with their lock fds, kept open. */
gboolean vml_test_register_and_acquire(const char *uuid, const char *name,
                                       JsonArray *resources);

/* The lock type another process would run into on the lock file of PATH's
 * resource key (F_UNLCK, F_RDLCK or F_WRLCK), tested with F_OFD_GETLK. */
/* A command's outcome: exit status (it must exit, not die), its output. */
typedef struct {
    int status;
    char *out;
    char *err;
} VmlTestRun;
void vml_test_run_clear(VmlTestRun *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmlTestRun, vml_test_run_clear)
/* Run ARGV (NULL-terminated; ARGV[0] looked up in PATH) in DIR (NULL:
 * here) with TZ=UTC, dying with the test; logged as a test message. */
void vml_test_run(VmlTestRun *r, const char *dir, const char *const *argv);

/* The resource key vmleased gives the image at PATH (no shared_storage). */
char *vml_test_resource_key(const char *path);
/* O (a lease, conflict or owners entry) names the image at PATH: its
 * "resource" is PATH's key and its member PATH_MEMBER the canonical path. */
void vml_test_assert_image(JsonObject *o, const char *path_member, const char *path);
/* The lock file name (in a lockspace) of the image at PATH: the SHA-256
 * of its resource key, ".lock". */
char *vml_test_lock_file_name(const char *path);
int vml_test_lock_state(VmlTestDaemon *d, const char *path);

/* Owners of PATH via io.vmlease.Admin.Owners: the owners array (ref'd). */
JsonArray *vml_test_owners(const char *path);
/* MEMBER (an integer) of the daemon's Status. */
gint64 vml_test_status_int(const char *member);

/* Poll until PATH has N owners; FALSE if it did not within TIMEOUT_MS. */
gboolean vml_test_wait_owners(const char *path, guint n, guint timeout_ms);

/* Register PID as holder (uuid, name) and return its holder id. */
gint64 vml_test_register(const char *uuid, const char *name, pid_t pid);

/* A stand-in VM: a sleeping child registered as holder (uuid, name). */
typedef struct {
    pid_t pid;
    gint64 holder;
} VmlTestVm;

VmlTestVm vml_test_vm_new(const char *uuid, const char *name);
/* SIGKILL it: its leases go with it. */
void vml_test_vm_free(VmlTestVm *vm);

/* Build a resources array with one path resource in MODE. */
JsonArray *vml_test_resources(const char *mode, ...) G_GNUC_NULL_TERMINATED;
