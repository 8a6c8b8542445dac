/* Lease semantics against a real vmleased: who gets what, who is refused,
 * and that a refused multi-resource acquire leaves nothing behind. */
#include "harness.h"
#include "vml-error.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define UUID_A "aaaaaaaa-0000-4000-8000-000000000001"
#define UUID_B "bbbbbbbb-0000-4000-8000-000000000002"

static VmlTestDaemon *daemon_;


/* Acquire and return the reply (NULL on error, with *error / *eparams). */
static JsonObject *
acquire(VmlTestVm *vm, JsonArray *resources, JsonObject **eparams, GError **error)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", vm->holder);
    json_object_set_array_member(p, "resources", resources);
    return vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, eparams, error);
}

static void
acquire_ok(VmlTestVm *vm, const char *mode, const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = acquire(vm, vml_test_resources(mode, path, NULL), NULL, &error);
    g_assert_no_error(error);
    JsonArray *leases = json_object_get_array_member(r, "leases");
    g_assert_cmpuint(json_array_get_length(leases), ==, 1);
    g_autofree char *real = realpath(path, NULL);
    JsonObject *l = json_array_get_object_element(leases, 0);
    vml_test_assert_image(l, "path", real);
    g_assert_cmpstr(json_object_get_string_member(l, "mode"), ==, mode);
}

/* Assert a conflict whose only owner is OWNER in OWNER_MODE. */
static void
acquire_conflict(VmlTestVm *vm, const char *mode, const char *path, VmlTestVm *owner,
                 const char *owner_name, const char *owner_uuid, const char *owner_mode)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = acquire(vm, vml_test_resources(mode, path, NULL), &ep, &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_autofree char *real = realpath(path, NULL);
    vml_test_assert_image(ep, "canonical_path", real);
    g_assert_cmpstr(json_object_get_string_member(ep, "mode"), ==, mode);
    JsonArray *owners = json_object_get_array_member(ep, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, owner->pid);
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, owner_name);
    g_assert_cmpstr(json_object_get_string_member(o, "uuid"), ==, owner_uuid);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, owner_mode);
    g_assert_cmpstr(json_object_get_string_member(o, "host"), ==, g_get_host_name());
    /* The message alone must tell an admin who is in the way. */
    g_assert_nonnull(strstr(error->message, real));
    g_assert_nonnull(strstr(error->message, owner_name));
}

static void
test_exclusive_vs_exclusive(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "ex-ex.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");

    acquire_ok(&a, "exclusive", img);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    acquire_conflict(&b, "exclusive", img, &a, "vm-a", UUID_A, "exclusive");

    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(owners, 0), "pid"),
                    ==, a.pid);
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static void
test_shared_and_shared(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "sh-sh.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");

    acquire_ok(&a, "shared", img);
    acquire_ok(&b, "shared", img);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_RDLCK);
    g_autoptr(JsonArray) owners = vml_test_owners(img);
    g_assert_cmpuint(json_array_get_length(owners), ==, 2);
    g_autoptr(GHashTable) pids = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (guint i = 0; i < 2; i++) {
        JsonObject *o = json_array_get_object_element(owners, i);
        g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "shared");
        g_hash_table_add(pids, GINT_TO_POINTER(json_object_get_int_member(o, "pid")));
    }
    g_assert_true(g_hash_table_contains(pids, GINT_TO_POINTER(a.pid)));
    g_assert_true(g_hash_table_contains(pids, GINT_TO_POINTER(b.pid)));
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static void
test_shared_then_exclusive(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "sh-ex.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");
    acquire_ok(&a, "shared", img);
    acquire_conflict(&b, "exclusive", img, &a, "vm-a", UUID_A, "shared");
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static void
test_exclusive_then_shared(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "ex-sh.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");
    acquire_ok(&a, "exclusive", img);
    acquire_conflict(&b, "shared", img, &a, "vm-a", UUID_A, "exclusive");
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static JsonArray *
inquire(VmlTestVm *vm)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", vm->holder);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Inquire", p, NULL, NULL, &error);
    g_assert_no_error(error);
    return json_array_ref(json_object_get_array_member(r, "leases"));
}

static void
test_multi_resource_all_or_none(void)
{
    g_autofree char *i1 = vml_test_make_image(daemon_, "multi-1.img");
    g_autofree char *i2 = vml_test_make_image(daemon_, "multi-2.img");
    g_autofree char *i3 = vml_test_make_image(daemon_, "multi-3.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");

    acquire_ok(&b, "exclusive", i2);

    JsonArray *res = vml_test_resources("exclusive", i1, i2, NULL);
    JsonObject *r3 = json_object_new();
    json_object_set_string_member(r3, "path", i3);
    json_object_set_string_member(r3, "mode", "shared");
    json_array_add_object_element(res, r3);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = acquire(&a, res, &ep, &error);
    g_assert_null(r);
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_autofree char *real2 = realpath(i2, NULL);
    vml_test_assert_image(ep, "canonical_path", real2);

    /* Nothing taken: no owners on 1 and 3, A holds nothing, locks free. */
    g_autoptr(JsonArray) o1 = vml_test_owners(i1);
    g_autoptr(JsonArray) o3 = vml_test_owners(i3);
    g_assert_cmpuint(json_array_get_length(o1), ==, 0);
    g_assert_cmpuint(json_array_get_length(o3), ==, 0);
    g_autoptr(JsonArray) held = inquire(&a);
    g_assert_cmpuint(json_array_get_length(held), ==, 0);
    g_assert_cmpint(vml_test_lock_state(daemon_, i1), ==, F_UNLCK);
    g_assert_cmpint(vml_test_lock_state(daemon_, i3), ==, F_UNLCK);
    /* and B still has its lease */
    g_assert_cmpint(vml_test_lock_state(daemon_, i2), ==, F_WRLCK);
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static void
test_release_lets_others_in(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "release.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");
    acquire_ok(&a, "exclusive", img);

    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", a.holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", img, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Release", p, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int_member(r, "released"), ==, 1);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_UNLCK);

    acquire_ok(&b, "exclusive", img);
    /* Releasing what is not held is an error naming the resource. */
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r2 = vml_test_call(FALSE, "io.vmlease.Lease.Release", p, NULL, &ep, &error);
    g_assert_null(r2);
    g_assert_error(error, VML_ERROR, VML_ERROR_NOT_HELD);
    g_autofree char *real = realpath(img, NULL);
    vml_test_assert_image(ep, "path", real);
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static gint64
generation_of(JsonObject *reply)
{
    JsonArray *leases = json_object_get_array_member(reply, "leases");
    return json_object_get_int_member(json_array_get_object_element(leases, 0), "generation");
}

static void
test_generation_and_upgrade(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "gen.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a"), b = vml_test_vm_new(UUID_B, "vm-b");
    g_autoptr(GError) error = NULL;

    g_autoptr(JsonObject) r1 = acquire(&a, vml_test_resources("exclusive", img, NULL), NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(generation_of(r1), ==, 1);
    /* Asking again for what is held changes nothing. */
    g_autoptr(JsonObject) r2 = acquire(&a, vml_test_resources("exclusive", img, NULL), NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(generation_of(r2), ==, 1);
    /* Downgrade, let B share, then A's upgrade must fail and stay shared. */
    g_autoptr(JsonObject) r3 = acquire(&a, vml_test_resources("shared", img, NULL), NULL, &error);
    g_assert_no_error(error);
    acquire_ok(&b, "shared", img);
    acquire_conflict(&a, "exclusive", img, &b, "vm-b", UUID_B, "shared");
    g_autoptr(JsonArray) held = inquire(&a);
    g_assert_cmpuint(json_array_get_length(held), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(held, 0), "mode"),
                    ==, "shared");
    /* B leaves: the upgrade succeeds and bumps the generation. */
    vml_test_vm_free(&b);
    g_assert_true(vml_test_wait_owners(img, 1, 1000));
    g_autoptr(JsonObject) r4 = acquire(&a, vml_test_resources("exclusive", img, NULL), NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(generation_of(r4), ==, 2);
    vml_test_vm_free(&a);
}

static void
test_fds_carry_the_lock(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "fds.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a");
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", a.holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", img, NULL));
    json_object_set_boolean_member(p, "fds", TRUE);
    GArray *fds = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, &fds, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(fds);
    g_assert_cmpuint(fds->len, ==, 1);
    int fd = g_array_index(fds, int, 0);
    /* It is the lock file, and the lock is on that very description:
     * re-locking through it cannot conflict. */
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
    g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
    close(fd);
    g_array_unref(fds);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);
    vml_test_vm_free(&a);
}

static void
test_at_least_keeps_exclusive(void)
{
    g_autofree char *img = vml_test_make_image(daemon_, "at-least.img");
    VmlTestVm a = vml_test_vm_new(UUID_A, "vm-a");
    acquire_ok(&a, "exclusive", img);

    /* "shared, at least": the exclusive lease already satisfies it. */
    JsonArray *res = vml_test_resources("shared", img, NULL);
    json_object_set_boolean_member(json_array_get_object_element(res, 0), "at_least", TRUE);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = acquire(&a, res, NULL, &error);
    g_assert_no_error(error);
    JsonObject *l = json_array_get_object_element(json_object_get_array_member(r, "leases"), 0);
    g_assert_cmpstr(json_object_get_string_member(l, "mode"), ==, "exclusive");
    g_assert_cmpint(json_object_get_int_member(l, "generation"), ==, 1);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_WRLCK);

    /* A plain "shared" downgrades. */
    acquire_ok(&a, "shared", img);
    g_assert_cmpint(vml_test_lock_state(daemon_, img), ==, F_RDLCK);
    vml_test_vm_free(&a);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start(NULL);
    g_test_add_func("/leases/exclusive-vs-exclusive", test_exclusive_vs_exclusive);
    g_test_add_func("/leases/shared-and-shared", test_shared_and_shared);
    g_test_add_func("/leases/shared-then-exclusive", test_shared_then_exclusive);
    g_test_add_func("/leases/exclusive-then-shared", test_exclusive_then_shared);
    g_test_add_func("/leases/multi-resource-all-or-none", test_multi_resource_all_or_none);
    g_test_add_func("/leases/release-lets-others-in", test_release_lets_others_in);
    g_test_add_func("/leases/generation-and-upgrade", test_generation_and_upgrade);
    g_test_add_func("/leases/fds-carry-the-lock", test_fds_carry_the_lock);
    g_test_add_func("/leases/at-least-keeps-exclusive", test_at_least_keeps_exclusive);
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    return rc;
}
