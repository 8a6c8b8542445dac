/* Backing-chain changes: what the planner (vml-chain-plan) decides for real
 * qcow2 chains described by domain XML fixtures, and how the lease side of
 * a chain transaction (vml-chain-leases) moves a holder's leases in a real
 * vmleased: all or nothing on prepare, exactly the new chain on finish,
 * exactly the old leases on abort. */
#include "harness.h"
#include "vml-chain-leases.h"
#include "vml-chain-plan.h"
#include "vml-client.h"
#include "vml-error.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VML_FIXTURES_DIR
#error "VML_FIXTURES_DIR must name tests/integration/fixtures"
#endif

#define UUID_A "aaaaaaaa-0000-4000-8000-000000000001"
#define UUID_B "bbbbbbbb-0000-4000-8000-000000000002"
#define UUID_OFFLINE "0ff0ff00-0000-4000-8000-000000000009"

static VmlTestDaemon *daemon_;

/* ---- images and fixtures ------------------------------------------------- */

typedef struct {
    char *dir;            /* canonical temporary directory holding the images */
    GHashTable *paths;    /* image name -> full path (owned here) */
    VmlDomain *dom;
} Fx;

static void
fx_setup(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *tmp = g_dir_make_tmp("vml-chain-XXXXXX", &error);
    g_assert_no_error(error);
    /* Canonical, so the paths in the XML are the keys vmleased and the
     * planner use, and the tests can compare them as strings. */
    char *real = realpath(tmp, NULL);
    g_assert_nonnull(real);
    fx->dir = g_strdup(real);
    free(real);
    fx->paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

static void
fx_teardown(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    g_clear_pointer(&fx->dom, vml_domain_free);
    const char *argv[] = { "rm", "-rf", fx->dir, NULL };
    g_autoptr(GError) error = NULL;
    gint status = 0;
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                 &status, &error);
    g_assert_no_error(error);
    g_hash_table_unref(fx->paths);
    g_free(fx->dir);
}

/* The full path of image NAME in the fixture's directory. */
static const char *
img(Fx *fx, const char *name)
{
    char *path = g_hash_table_lookup(fx->paths, name);
    if (!path) {
        path = g_build_filename(fx->dir, name, NULL);
        g_hash_table_insert(fx->paths, g_strdup(name), path);
    }
    return path;
}

/* qemu-img create -q -f qcow2 [-b BACKING -F qcow2] NAME 16M */
static void
qcow2(Fx *fx, const char *name, const char *backing)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    const char *head[] = { "qemu-img", "create", "-q", "-f", "qcow2" };
    for (guint i = 0; i < G_N_ELEMENTS(head); i++)
        g_ptr_array_add(argv, (char *)head[i]);
    if (backing) {
        g_ptr_array_add(argv, "-b");
        g_ptr_array_add(argv, (char *)img(fx, backing));
        g_ptr_array_add(argv, "-F");
        g_ptr_array_add(argv, "qcow2");
    }
    g_ptr_array_add(argv, (char *)img(fx, name));
    g_ptr_array_add(argv, "16M");
    g_ptr_array_add(argv, NULL);

    g_autoptr(GError) error = NULL;
    g_autofree char *err = NULL;
    gint status = 0;
    g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, &err,
                 &status, &error);
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(status, &error))
        g_error("qemu-img create %s: %s\n%s", name, error->message, err ? err : "");
}

/* Create the chain FIRST, ... (active image first, base last, NULL ended),
 * from the base up so every backing exists when named. */
static void
make_chain(Fx *fx, const char *first, ...)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    va_list ap;
    va_start(ap, first);
    for (const char *n = first; n; n = va_arg(ap, const char *))
        g_ptr_array_add(names, (char *)n);
    va_end(ap);
    for (guint i = names->len; i-- > 0;)
        qcow2(fx, names->pdata[i], i + 1 < names->len ? names->pdata[i + 1] : NULL);
}

/* Parse fixture FILE with @DIR@ replaced by the image directory. */
static void
fx_load(Fx *fx, const char *file)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(VML_FIXTURES_DIR, file, NULL);
    g_autofree char *text = NULL;
    g_file_get_contents(path, &text, NULL, &error);
    g_assert_no_error(error);
    g_auto(GStrv) parts = g_strsplit(text, "@DIR@", -1);
    g_autofree char *xml = g_strjoinv(fx->dir, parts);
    fx->dom = vml_domain_parse(xml, strlen(xml), file, &error);
    g_assert_no_error(error);
    g_assert_nonnull(fx->dom);
    g_assert_true(vml_domain_resolve_chains(fx->dom, &error));
    g_assert_no_error(error);
}

/* ---- planner helpers ----------------------------------------------------- */

static VmlChainPlan *
plan_ok(Fx *fx, const VmlChainRequest *req, GHashTable *frozen)
{
    g_autoptr(GError) error = NULL;
    VmlChainPlan *plan = vml_chain_plan_new(fx->dom, req, frozen, &error);
    g_assert_no_error(error);
    g_assert_nonnull(plan);
    g_assert_cmpint(plan->op, ==, req->op);
    g_assert_cmpint(plan->live, ==, req->live);
    return plan;
}

/* REQ is refused with CODE, the message holding every string given (NULL
 * ended). */
static void
plan_refused(Fx *fx, const VmlChainRequest *req, GHashTable *frozen, VmlErrorCode code,
             const char *first, ...)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlChainPlan) plan = vml_chain_plan_new(fx->dom, req, frozen, &error);
    g_assert_null(plan);
    g_assert_error(error, VML_ERROR, (gint)code);
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        if (!strstr(error->message, s))
            g_error("message \"%s\" lacks \"%s\"", error->message, s);
    }
    va_end(ap);
}

/* "P1 -> P2 -> ..." built here, not with the code under test. */
static char *
describe(GPtrArray *chain)
{
    g_autoptr(GString) s = g_string_new(NULL);
    for (guint i = 0; i < chain->len; i++)
        g_string_append_printf(s, "%s%s", i ? " -> " : "", ((VmlLayer *)chain->pdata[i])->path);
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* The chain of image paths FX's NAMES... (NULL ended) as describe() gives. */
static char *
names_chain(Fx *fx, const char *first, va_list ap)
{
    g_autoptr(GString) s = g_string_new(NULL);
    for (const char *n = first; n; n = va_arg(ap, const char *))
        g_string_append_printf(s, "%s%s", s->len ? " -> " : "", img(fx, n));
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* CHAIN is exactly the images FIRST, ... (NULL ended). */
static void
assert_chain(Fx *fx, GPtrArray *chain, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    g_autofree char *want = names_chain(fx, first, ap);
    va_end(ap);
    g_autofree char *got = describe(chain);
    g_assert_cmpstr(got, ==, want);
}

/* "A -> B -> A"-style text for a message check. */
static char *
path_text(Fx *fx, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    char *text = names_chain(fx, first, ap);
    va_end(ap);
    return text;
}

/* PLAN's leases are exactly the triples (image name, during, after) given,
 * NULL ended; each also found through vml_chain_plan_lease. */
static void
assert_leases(Fx *fx, const VmlChainPlan *plan, ...)
{
    va_list ap;
    va_start(ap, plan);
    guint n = 0;
    for (const char *name = va_arg(ap, const char *); name; name = va_arg(ap, const char *)) {
        VmlLeaseMode during = va_arg(ap, int), after = va_arg(ap, int);
        const char *path = img(fx, name);
        const VmlChainLease *found = NULL;
        for (guint i = 0; i < plan->leases->len; i++) {
            const VmlChainLease *l = plan->leases->pdata[i];
            if (g_str_equal(l->path, path)) {
                g_assert_null(found);   /* one entry per image */
                found = l;
            }
        }
        if (!found)
            g_error("plan has no lease for %s", path);
        g_assert_true(vml_chain_plan_lease(plan, path) == found);
        g_test_message("%s: during %s, after %s", name, vml_lease_mode_name(found->during),
                       vml_lease_mode_name(found->after));
        g_assert_cmpstr(vml_lease_mode_name(found->during), ==, vml_lease_mode_name(during));
        g_assert_cmpstr(vml_lease_mode_name(found->after), ==, vml_lease_mode_name(after));
        n++;
    }
    va_end(ap);
    g_assert_cmpuint(plan->leases->len, ==, n);
}

#define NONE VML_LEASE_NONE
#define SH VML_LEASE_SHARED
#define EX VML_LEASE_EXCLUSIVE

static void
chain5(Fx *fx)
{
    make_chain(fx, "A.qcow2", "B.qcow2", "C.qcow2", "D.qcow2", "E.qcow2", NULL);
    fx_load(fx, "chain5.xml");
    VmlDisk *vda = fx->dom->disks->pdata[0];
    /* The XML alone gives the whole chain: nothing read from headers. */
    g_assert_true(vda->chain_complete);
    assert_chain(fx, vda->chain, "A.qcow2", "B.qcow2", "C.qcow2", "D.qcow2", "E.qcow2", NULL);
    for (guint i = 0; i < vda->chain->len; i++)
        g_assert_true(((VmlLayer *)vda->chain->pdata[i])->from_xml);
}

/* ---- 1. rebase: cycles refused, legal rebases planned --------------------- */

static void
test_rebase_cycles(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    chain5(fx);
    const char *A = img(fx, "A.qcow2"), *B = img(fx, "B.qcow2"), *D = img(fx, "D.qcow2");
    const char *E = img(fx, "E.qcow2");

    /* A onto A: the image is its own backing. */
    VmlChainRequest req = { .op = VML_CHAIN_REBASE, .top = A, .backing = A };
    g_autofree char *c1 = path_text(fx, "A.qcow2", "A.qcow2", NULL);
    g_autofree char *m1 = g_strdup_printf("cannot rebase %s onto %s", A, A);
    g_autofree char *w1 = g_strdup_printf("cycle of 1 image: %s", c1);
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, m1, w1, NULL);

    /* B onto A: A is above B, so B -> A -> B. */
    req.top = B;
    g_autofree char *c2 = path_text(fx, "B.qcow2", "A.qcow2", "B.qcow2", NULL);
    g_autofree char *m2 = g_strdup_printf("cannot rebase %s onto %s", B, A);
    g_autofree char *w2 = g_strdup_printf("cycle of 2 images: %s", c2);
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, m2, w2, NULL);

    /* E (the base) onto A (the active image): the whole chain loops. */
    req.top = E;
    g_autofree char *c5 = path_text(fx, "E.qcow2", "A.qcow2", "B.qcow2", "C.qcow2", "D.qcow2",
                                    "E.qcow2", NULL);
    g_autofree char *m5 = g_strdup_printf("cannot rebase %s onto %s", E, A);
    g_autofree char *w5 = g_strdup_printf("cycle of 5 images: %s", c5);
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, m5, w5, NULL);

    /* D onto B: the cycle is the middle of the chain only. */
    req.top = D;
    req.backing = B;
    g_autofree char *c3 = path_text(fx, "D.qcow2", "B.qcow2", "C.qcow2", "D.qcow2", NULL);
    g_autofree char *w3 = g_strdup_printf("cycle of 3 images: %s", c3);
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, w3, NULL);

    /* C onto G, an image outside the domain whose header chain leads back
     * to A: the cycle is found through the headers (C -> G -> A -> B -> C). */
    qcow2(fx, "G.qcow2", "A.qcow2");
    req.top = img(fx, "C.qcow2");
    req.backing = img(fx, "G.qcow2");
    g_autofree char *c4 = path_text(fx, "C.qcow2", "G.qcow2", "A.qcow2", "B.qcow2", "C.qcow2",
                                    NULL);
    g_autofree char *w4 = g_strdup_printf("cycle of 4 images: %s", c4);
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, w4, NULL);

    /* No .top: the active image, here A onto itself again. */
    req.top = NULL;
    req.backing = A;
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, w1, NULL);
}

static void
test_rebase_legal(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    chain5(fx);
    const char *A = img(fx, "A.qcow2"), *C = img(fx, "C.qcow2");

    /* A onto C drops B from the chain; only A's header is rewritten. */
    VmlChainRequest req = { .op = VML_CHAIN_REBASE, .top = A, .backing = C };
    g_autoptr(VmlChainPlan) p1 = plan_ok(fx, &req, NULL);
    g_assert_cmpuint(p1->top, ==, 0);
    g_assert_cmpstr(p1->new_backing, ==, C);
    g_assert_cmpstr(p1->new_backing_format, ==, "qcow2");
    assert_chain(fx, p1->old_chain, "A.qcow2", "B.qcow2", "C.qcow2", "D.qcow2", "E.qcow2", NULL);
    assert_chain(fx, p1->new_chain, "A.qcow2", "C.qcow2", "D.qcow2", "E.qcow2", NULL);
    assert_leases(fx, p1,
                  "A.qcow2", EX, NONE,
                  "B.qcow2", SH, NONE,
                  "C.qcow2", SH, NONE,
                  "D.qcow2", SH, NONE,
                  "E.qcow2", SH, NONE, NULL);

    /* C onto a fresh standalone image F: the chain below C is replaced. */
    qcow2(fx, "F.qcow2", NULL);
    req.top = C;
    req.backing = img(fx, "F.qcow2");
    g_autoptr(VmlChainPlan) p2 = plan_ok(fx, &req, NULL);
    g_assert_cmpuint(p2->top, ==, 2);
    g_assert_cmpstr(p2->new_backing, ==, img(fx, "F.qcow2"));
    g_assert_cmpstr(p2->new_backing_format, ==, "qcow2");
    assert_chain(fx, p2->new_chain, "A.qcow2", "B.qcow2", "C.qcow2", "F.qcow2", NULL);
    assert_leases(fx, p2,
                  "A.qcow2", SH, NONE,
                  "B.qcow2", SH, NONE,
                  "C.qcow2", EX, NONE,
                  "D.qcow2", SH, NONE,
                  "E.qcow2", SH, NONE,
                  "F.qcow2", SH, NONE, NULL);

    /* B onto H, outside the domain and backed by E: H's chain comes from
     * its header and joins the old chain without a cycle. */
    qcow2(fx, "H.qcow2", "E.qcow2");
    req.top = img(fx, "B.qcow2");
    req.backing = img(fx, "H.qcow2");
    g_autoptr(VmlChainPlan) p3 = plan_ok(fx, &req, NULL);
    assert_chain(fx, p3->new_chain, "A.qcow2", "B.qcow2", "H.qcow2", "E.qcow2", NULL);
    assert_leases(fx, p3,
                  "A.qcow2", SH, NONE,
                  "B.qcow2", EX, NONE,
                  "C.qcow2", SH, NONE,
                  "D.qcow2", SH, NONE,
                  "E.qcow2", SH, NONE,
                  "H.qcow2", SH, NONE, NULL);

    /* D made standalone ("" : no backing). */
    req.top = img(fx, "D.qcow2");
    req.backing = "";
    g_autoptr(VmlChainPlan) p4 = plan_ok(fx, &req, NULL);
    g_assert_null(p4->new_backing);
    assert_chain(fx, p4->new_chain, "A.qcow2", "B.qcow2", "C.qcow2", "D.qcow2", NULL);
    assert_leases(fx, p4,
                  "A.qcow2", SH, NONE,
                  "B.qcow2", SH, NONE,
                  "C.qcow2", SH, NONE,
                  "D.qcow2", EX, NONE,
                  "E.qcow2", SH, NONE, NULL);
}

/* ---- 2. frozen images ---------------------------------------------------- */

static void
test_frozen_mirror(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    qcow2(fx, "copy.qcow2", NULL);
    qcow2(fx, "other.qcow2", "base.qcow2");
    make_chain(fx, "solo.qcow2", "solo-base.qcow2", NULL);
    fx_load(fx, "mirror.xml");
    g_assert_true(((VmlDisk *)fx->dom->disks->pdata[0])->has_mirror);
    g_assert_false(((VmlDisk *)fx->dom->disks->pdata[1])->has_mirror);

    /* vda's own job: the first image the commit touches (top) is named,
     * with the disk of the job. */
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .disk = "vda", .top = img(fx, "mid.qcow2"),
                            .live = TRUE };
    g_autofree char *m1 = g_strdup_printf("cannot commit disk vda: %s is frozen by a block job "
                                          "(<mirror>) on disk vda", img(fx, "top.qcow2"));
    plan_refused(fx, &req, NULL, VML_ERROR_IMAGE_BUSY, m1, "virsh blockjob --abort", NULL);
    req.live = FALSE;
    plan_refused(fx, &req, NULL, VML_ERROR_IMAGE_BUSY, m1, NULL);

    /* vdb shares base with vda: committing into it is refused too, naming
     * base and vda's job, though vdb itself has none. */
    VmlChainRequest req_b = { .op = VML_CHAIN_COMMIT, .disk = "vdb", .live = TRUE };
    g_autofree char *m2 = g_strdup_printf("cannot commit disk vdb: %s is frozen by a block job "
                                          "(<mirror>) on disk vda", img(fx, "base.qcow2"));
    plan_refused(fx, &req_b, NULL, VML_ERROR_IMAGE_BUSY, m2, NULL);

    /* vdc shares nothing with the job: planned. */
    VmlChainRequest req_c = { .op = VML_CHAIN_COMMIT, .disk = "vdc", .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req_c, NULL);
    g_assert_true(plan->active);
    assert_chain(fx, plan->new_chain, "solo-base.qcow2", NULL);
}

static void
test_frozen_table(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    qcow2(fx, "elsewhere.qcow2", NULL);
    fx_load(fx, "dom-a.xml");
    const char *reason = "a block copy job of domain dom-z";
    g_autoptr(GHashTable) frozen = g_hash_table_new(g_str_hash, g_str_equal);

    /* Frozen images the plan does not touch do not matter. */
    g_hash_table_insert(frozen, (char *)img(fx, "elsewhere.qcow2"), (char *)reason);
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = img(fx, "mid.qcow2"), .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, frozen);
    assert_chain(fx, plan->new_chain, "top.qcow2", "base.qcow2", NULL);

    /* base frozen: refused, with the reason and the image. */
    g_hash_table_insert(frozen, (char *)img(fx, "base.qcow2"), (char *)reason);
    g_autofree char *m = g_strdup_printf("cannot commit disk vda: %s is frozen by %s",
                                         img(fx, "base.qcow2"), reason);
    plan_refused(fx, &req, frozen, VML_ERROR_IMAGE_BUSY, m, NULL);
    req.live = FALSE;
    plan_refused(fx, &req, frozen, VML_ERROR_IMAGE_BUSY, m, NULL);
    /* A pull into top reads base too (as the rest of the chain). */
    VmlChainRequest pull = { .op = VML_CHAIN_PULL, .live = TRUE };
    g_autofree char *mp = g_strdup_printf("cannot pull disk vda: %s is frozen by %s",
                                          img(fx, "base.qcow2"), reason);
    plan_refused(fx, &pull, frozen, VML_ERROR_IMAGE_BUSY, mp, NULL);
}

/* ---- 3. commit leases ---------------------------------------------------- */

static void
test_commit_live(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a.xml");

    /* mid into base: QEMU writes base, top gets base as backing. */
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = img(fx, "mid.qcow2"),
                            .base = img(fx, "base.qcow2"), .live = TRUE };
    g_autoptr(VmlChainPlan) p1 = plan_ok(fx, &req, NULL);
    g_assert_false(p1->active);
    g_assert_cmpuint(p1->top, ==, 1);
    g_assert_cmpuint(p1->base, ==, 2);
    g_assert_true(p1->disk == fx->dom->disks->pdata[0]);
    assert_chain(fx, p1->old_chain, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    assert_chain(fx, p1->new_chain, "top.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p1,
                  "top.qcow2", EX, EX,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", EX, SH, NULL);
    /* base defaults to the backing of top: the same plan. */
    req.base = NULL;
    g_autoptr(VmlChainPlan) p1d = plan_ok(fx, &req, NULL);
    g_assert_cmpuint(p1d->base, ==, 2);
    assert_chain(fx, p1d->new_chain, "top.qcow2", "base.qcow2", NULL);

    /* Active commit (libvirt pivots to base): base ends up the active
     * image, exclusive. */
    VmlChainRequest act = { .op = VML_CHAIN_COMMIT, .top = img(fx, "top.qcow2"),
                            .base = img(fx, "base.qcow2"), .live = TRUE };
    g_autoptr(VmlChainPlan) p2 = plan_ok(fx, &act, NULL);
    g_assert_true(p2->active);
    g_assert_cmpuint(p2->top, ==, 0);
    g_assert_cmpuint(p2->base, ==, 2);
    assert_chain(fx, p2->new_chain, "base.qcow2", NULL);
    assert_leases(fx, p2,
                  "top.qcow2", EX, NONE,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", EX, EX, NULL);

    /* No top, no base: the active image into its backing. */
    VmlChainRequest dflt = { .op = VML_CHAIN_COMMIT, .live = TRUE };
    g_autoptr(VmlChainPlan) p3 = plan_ok(fx, &dflt, NULL);
    g_assert_true(p3->active);
    assert_chain(fx, p3->new_chain, "mid.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p3,
                  "top.qcow2", EX, NONE,
                  "mid.qcow2", EX, EX,
                  "base.qcow2", SH, SH, NULL);
}

static void
test_commit_live_headers(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* The same commit when the XML gives only the active image: the chain
     * comes from the headers and the plan is the same. */
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a-headers.xml");
    VmlDisk *vda = fx->dom->disks->pdata[0];
    assert_chain(fx, vda->chain, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    g_assert_false(((VmlLayer *)vda->chain->pdata[1])->from_xml);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = img(fx, "mid.qcow2"), .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    assert_chain(fx, plan->new_chain, "top.qcow2", "base.qcow2", NULL);
    assert_leases(fx, plan,
                  "top.qcow2", EX, EX,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", EX, SH, NULL);
}

static void
test_commit_offline(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a.xml");

    /* mid into base: base written, top's header rewritten (new backing),
     * the rest only read; nothing kept after. */
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = img(fx, "mid.qcow2"),
                            .base = img(fx, "base.qcow2") };
    g_autoptr(VmlChainPlan) p1 = plan_ok(fx, &req, NULL);
    g_assert_false(p1->active);
    assert_chain(fx, p1->new_chain, "top.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p1,
                  "top.qcow2", EX, NONE,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", EX, NONE, NULL);

    /* Active image into its backing: no overlay to rewrite. */
    VmlChainRequest act = { .op = VML_CHAIN_COMMIT };
    g_autoptr(VmlChainPlan) p2 = plan_ok(fx, &act, NULL);
    g_assert_true(p2->active);
    assert_chain(fx, p2->new_chain, "mid.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p2,
                  "top.qcow2", SH, NONE,
                  "mid.qcow2", EX, NONE,
                  "base.qcow2", SH, NONE, NULL);
}

static void
test_commit_offline_deep(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* C..D into E on A -> B -> C -> D -> E: E written, B (the overlay of
     * C) rewritten, A, C, D read. */
    chain5(fx);
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = img(fx, "C.qcow2"),
                            .base = img(fx, "E.qcow2") };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_assert_cmpuint(plan->top, ==, 2);
    g_assert_cmpuint(plan->base, ==, 4);
    assert_chain(fx, plan->new_chain, "A.qcow2", "B.qcow2", "E.qcow2", NULL);
    assert_leases(fx, plan,
                  "A.qcow2", SH, NONE,
                  "B.qcow2", EX, NONE,
                  "C.qcow2", SH, NONE,
                  "D.qcow2", SH, NONE,
                  "E.qcow2", EX, NONE, NULL);

    /* The same commit live: the VM keeps A, E is written then shared. */
    req.live = TRUE;
    g_autoptr(VmlChainPlan) live = plan_ok(fx, &req, NULL);
    assert_leases(fx, live,
                  "A.qcow2", EX, EX,
                  "B.qcow2", SH, SH,
                  "C.qcow2", SH, NONE,
                  "D.qcow2", SH, NONE,
                  "E.qcow2", EX, SH, NULL);
}

/* ---- 4. requests that do not fit ----------------------------------------- */

static void
test_errors(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    qcow2(fx, "stray.qcow2", NULL);
    fx_load(fx, "dom-a.xml");
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2"), *stray = img(fx, "stray.qcow2");
    g_autofree char *chain = path_text(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);

    /* A base outside the chain: the message lists the chain. */
    VmlChainRequest c1 = { .op = VML_CHAIN_COMMIT, .base = stray };
    g_autofree char *m1 = g_strdup_printf("base %s is not in the chain of disk vda: %s",
                                          stray, chain);
    plan_refused(fx, &c1, NULL, VML_ERROR_INVALID_PARAMETER, m1, NULL);
    /* The same for top. */
    VmlChainRequest c2 = { .op = VML_CHAIN_COMMIT, .top = stray };
    g_autofree char *m2 = g_strdup_printf("top %s is not in the chain of disk vda: %s",
                                          stray, chain);
    plan_refused(fx, &c2, NULL, VML_ERROR_INVALID_PARAMETER, m2, NULL);
    /* A base above top. */
    VmlChainRequest c3 = { .op = VML_CHAIN_COMMIT, .top = mid, .base = top };
    g_autofree char *m3 = g_strdup_printf("base %s is not below top %s", top, mid);
    plan_refused(fx, &c3, NULL, VML_ERROR_INVALID_PARAMETER, m3, NULL);
    /* Nothing below the base to commit into. */
    VmlChainRequest c4 = { .op = VML_CHAIN_COMMIT, .top = base };
    g_autofree char *m4 = g_strdup_printf("cannot commit %s on disk vda: it has no backing image",
                                          base);
    plan_refused(fx, &c4, NULL, VML_ERROR_INVALID_PARAMETER, m4, NULL);

    /* A new backing that does not exist. */
    g_autofree char *missing = g_build_filename(fx->dir, "missing.qcow2", NULL);
    VmlChainRequest r1 = { .op = VML_CHAIN_REBASE, .backing = missing };
    g_autofree char *mr1 = g_strdup_printf("new backing %s cannot be read", missing);
    plan_refused(fx, &r1, NULL, VML_ERROR_NO_SUCH_IMAGE, mr1, g_strerror(ENOENT), NULL);
    /* A relative one: from the rebased image's directory, as qemu-img
     * takes it, and written as given; one that is not there names where
     * it was looked for. */
    VmlChainRequest r2 = { .op = VML_CHAIN_REBASE, .backing = "base.qcow2" };
    g_autoptr(VmlChainPlan) p2 = plan_ok(fx, &r2, NULL);
    g_assert_cmpstr(p2->new_backing, ==, base);
    g_assert_cmpstr(p2->new_backing_name, ==, "base.qcow2");
    assert_chain(fx, p2->new_chain, "top.qcow2", "base.qcow2", NULL);
    VmlChainRequest r2b = { .op = VML_CHAIN_REBASE, .backing = "missing.qcow2" };
    plan_refused(fx, &r2b, NULL, VML_ERROR_NO_SUCH_IMAGE, mr1, NULL);
    /* None at all. */
    VmlChainRequest r3 = { .op = VML_CHAIN_REBASE };
    plan_refused(fx, &r3, NULL, VML_ERROR_INVALID_PARAMETER, "rebase needs the new backing",
                 NULL);
    /* Live, libvirt can only rebase the active image within its chain. */
    VmlChainRequest r4 = { .op = VML_CHAIN_REBASE, .backing = stray, .live = TRUE };
    g_autofree char *mr4 = g_strdup_printf("(%s is outside the chain)", stray);
    plan_refused(fx, &r4, NULL, VML_ERROR_INVALID_PARAMETER,
                 "a running domain can only rebase its active image", mr4, NULL);
    /* ... which works (blockpull with a base). */
    VmlChainRequest r5 = { .op = VML_CHAIN_REBASE, .backing = base, .live = TRUE };
    g_autoptr(VmlChainPlan) p5 = plan_ok(fx, &r5, NULL);
    g_assert_cmpuint(p5->base, ==, 2);
    assert_chain(fx, p5->new_chain, "top.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p5,
                  "top.qcow2", EX, EX,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", SH, SH, NULL);

    /* A snapshot onto an existing file. */
    VmlChainRequest s1 = { .op = VML_CHAIN_SNAPSHOT, .file = stray };
    g_autofree char *ms1 = g_strdup_printf("the new overlay %s exists already", stray);
    plan_refused(fx, &s1, NULL, VML_ERROR_INVALID_PARAMETER, ms1, NULL);
    /* ... and onto a new one: planned, nothing created. */
    const char *snap = img(fx, "snap.qcow2");
    VmlChainRequest s2 = { .op = VML_CHAIN_SNAPSHOT, .file = snap };
    g_autoptr(VmlChainPlan) p6 = plan_ok(fx, &s2, NULL);
    g_assert_cmpstr(p6->file, ==, snap);
    g_assert_false(g_file_test(snap, G_FILE_TEST_EXISTS));
    assert_chain(fx, p6->new_chain, "snap.qcow2", "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p6,
                  "top.qcow2", SH, NONE,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", SH, NONE,
                  "snap.qcow2", EX, NONE, NULL);

    /* A pull with nothing to pull: the base is top's backing already. */
    VmlChainRequest u1 = { .op = VML_CHAIN_PULL, .base = mid };
    g_autofree char *mu1 = g_strdup_printf("nothing to pull into %s on disk vda: the base is its "
                                           "backing already", top);
    plan_refused(fx, &u1, NULL, VML_ERROR_INVALID_PARAMETER, mu1, NULL);
    /* ... or the base is the active image itself. */
    VmlChainRequest u2 = { .op = VML_CHAIN_PULL, .base = top };
    plan_refused(fx, &u2, NULL, VML_ERROR_INVALID_PARAMETER, mu1, NULL);
    /* A pull down to base: mid's data goes into top. */
    VmlChainRequest u3 = { .op = VML_CHAIN_PULL, .base = base };
    g_autoptr(VmlChainPlan) p7 = plan_ok(fx, &u3, NULL);
    assert_chain(fx, p7->new_chain, "top.qcow2", "base.qcow2", NULL);
    assert_leases(fx, p7,
                  "top.qcow2", EX, NONE,
                  "mid.qcow2", SH, NONE,
                  "base.qcow2", SH, NONE, NULL);

    /* A disk that is not there. */
    VmlChainRequest d1 = { .op = VML_CHAIN_COMMIT, .disk = "vdz" };
    plan_refused(fx, &d1, NULL, VML_ERROR_INVALID_PARAMETER,
                 "domain dom-a has no disk vdz (its disks: vda)", NULL);
}

static void
test_errors_single_image(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* A pull on an image without backing: nothing to pull. */
    qcow2(fx, "top.qcow2", NULL);
    fx_load(fx, "dom-a-headers.xml");
    assert_chain(fx, ((VmlDisk *)fx->dom->disks->pdata[0])->chain, "top.qcow2", NULL);
    VmlChainRequest u = { .op = VML_CHAIN_PULL };
    g_autofree char *m = g_strdup_printf("nothing to pull into %s on disk vda: it has no backing "
                                         "image", img(fx, "top.qcow2"));
    plan_refused(fx, &u, NULL, VML_ERROR_INVALID_PARAMETER, m, NULL);
}

/* A lone image's model (vml_domain_for_image) has a stand-in disk vda:
 * refusals name the image instead, or no disk at all. */
static void
test_errors_lone_image(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "base.qcow2", NULL);
    qcow2(fx, "stray.qcow2", NULL);
    const char *top = img(fx, "top.qcow2"), *base = img(fx, "base.qcow2");
    const char *stray = img(fx, "stray.qcow2");
    g_autoptr(GError) error = NULL;
    fx->dom = vml_domain_for_image(top, &error);
    g_assert_no_error(error);
    g_assert_true(fx->dom->lone_image);

    VmlChainRequest c1 = { .op = VML_CHAIN_COMMIT, .top = stray };
    g_autofree char *m1 = g_strdup_printf("top %s is not in the chain of image %s: %s -> %s",
                                          stray, top, top, base);
    plan_refused(fx, &c1, NULL, VML_ERROR_INVALID_PARAMETER, m1, NULL);
    VmlChainRequest c2 = { .op = VML_CHAIN_COMMIT, .top = base };
    g_autofree char *m2 = g_strdup_printf("cannot commit %s: it has no backing image to commit "
                                          "into", base);
    plan_refused(fx, &c2, NULL, VML_ERROR_INVALID_PARAMETER, m2, NULL);
    VmlChainRequest c3 = { .op = VML_CHAIN_COMMIT, .top = base, .base = top };
    g_autofree char *m3 = g_strdup_printf("cannot commit: base %s is not below top %s", top, base);
    plan_refused(fx, &c3, NULL, VML_ERROR_INVALID_PARAMETER, m3, NULL);
    VmlChainRequest u1 = { .op = VML_CHAIN_PULL, .base = base };
    g_autofree char *mu1 = g_strdup_printf("nothing to pull into %s: the base is its backing "
                                           "already", top);
    plan_refused(fx, &u1, NULL, VML_ERROR_INVALID_PARAMETER, mu1, NULL);
    VmlChainRequest ok = { .op = VML_CHAIN_COMMIT };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &ok, NULL);
    g_assert_true(plan->lone_image);
}

/* Two disks of one domain read the same base: the VM's own leases cannot
 * tell, so the planner refuses any change that writes it. */
static void
test_base_of_two_disks(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    make_chain(fx, "other.qcow2", "base.qcow2", NULL);
    fx_load(fx, "shared-base.xml");
    g_autofree char *msg_a = g_strdup_printf("cannot commit disk vda: it writes %s, which disk "
                                             "vdb of dom-shared reads too", img(fx, "base.qcow2"));
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .disk = "vda", .top = img(fx, "mid.qcow2"),
                            .live = TRUE };
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, msg_a, NULL);
    req.live = FALSE;
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER, msg_a, NULL);
    g_autofree char *msg_b = g_strdup_printf("cannot commit disk vdb: it writes %s, which disk "
                                             "vda of dom-shared reads too", img(fx, "base.qcow2"));
    VmlChainRequest req_b = { .op = VML_CHAIN_COMMIT, .disk = "vdb", .live = TRUE };
    plan_refused(fx, &req_b, NULL, VML_ERROR_INVALID_PARAMETER, msg_b, NULL);
    /* Committing top into mid writes only vda's own layer. */
    VmlChainRequest ok = { .op = VML_CHAIN_COMMIT, .disk = "vda", .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &ok, NULL);
    assert_chain(fx, plan->new_chain, "mid.qcow2", "base.qcow2", NULL);
}

static void
test_two_disks(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    make_chain(fx, "solo.qcow2", "solo-base.qcow2", NULL);
    fx_load(fx, "two-disks.xml");
    g_assert_cmpuint(fx->dom->disks->len, ==, 3);

    /* No disk named: refused, naming the candidates (not the empty cdrom). */
    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .live = TRUE };
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER,
                 "domain dom-two has several disks: name one with --disk (vda, vdb)", NULL);
    /* The empty cdrom has nothing to change. */
    req.disk = "sda";
    plan_refused(fx, &req, NULL, VML_ERROR_INVALID_PARAMETER,
                 "disk sda has no local image to commit", NULL);

    /* Named by target, or by its active image: only that disk's chain. */
    req.disk = "vdb";
    g_autoptr(VmlChainPlan) p1 = plan_ok(fx, &req, NULL);
    g_assert_cmpstr(p1->disk->target, ==, "vdb");
    assert_chain(fx, p1->new_chain, "solo-base.qcow2", NULL);
    assert_leases(fx, p1,
                  "solo.qcow2", EX, NONE,
                  "solo-base.qcow2", EX, EX, NULL);
    req.disk = img(fx, "top.qcow2");
    g_autoptr(VmlChainPlan) p2 = plan_ok(fx, &req, NULL);
    g_assert_cmpstr(p2->disk->target, ==, "vda");
    assert_chain(fx, p2->new_chain, "mid.qcow2", "base.qcow2", NULL);
}

/* ---- formats and live limits --------------------------------------------- */

static void
test_bug_rebase_format(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* The XML need not say a backing store's format; the new backing's
     * format must then come from the image, not default to raw (qemu-img
     * rebase -F raw onto a qcow2 image shows its metadata as guest data). */
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a-noformat.xml");
    VmlDisk *vda = fx->dom->disks->pdata[0];
    assert_chain(fx, vda->chain, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    g_assert_null(((VmlLayer *)vda->chain->pdata[2])->format);   /* the XML does not say */
    VmlChainRequest req = { .op = VML_CHAIN_REBASE, .backing = img(fx, "base.qcow2") };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    assert_chain(fx, plan->new_chain, "top.qcow2", "base.qcow2", NULL);
    g_assert_cmpstr(plan->new_backing_format, ==, "qcow2");
    g_assert_cmpstr(((VmlLayer *)plan->new_chain->pdata[1])->format, ==, "qcow2");
}

static void
test_bug_live_rebase_standalone(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* libvirt can only rebase a running domain's active image; making a
     * lower layer standalone ("" backing) is no exception. */
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a.xml");
    VmlChainRequest req = { .op = VML_CHAIN_REBASE, .top = img(fx, "mid.qcow2"), .backing = "",
                            .live = TRUE };
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlChainPlan) plan = vml_chain_plan_new(fx->dom, &req, NULL, &error);
    g_assert_null(plan);
    g_assert_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER);
    g_assert_nonnull(strstr(error->message, "a running domain can only rebase its active image"));
}

/* ---- daemon helpers ------------------------------------------------------ */

/* VM acquires the (path, mode) pairs given, NULL ended, in one call. */
static void
acquire(VmlTestVm *vm, ...)
{
    JsonArray *res = json_array_new();
    va_list ap;
    va_start(ap, vm);
    for (const char *path = va_arg(ap, const char *); path; path = va_arg(ap, const char *)) {
        JsonObject *r = json_object_new();
        json_object_set_string_member(r, "path", path);
        json_object_set_string_member(r, "mode", va_arg(ap, const char *));
        json_array_add_object_element(res, r);
    }
    va_end(ap);
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", vm->holder);
    json_object_set_array_member(p, "resources", res);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
}

/* HOLDER's leases by Inquire: resource -> mode. */
static GHashTable *
inquire(gint64 holder)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Inquire", p, NULL, NULL,
                                            &error);
    g_assert_no_error(error);
    GHashTable *held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    JsonArray *leases = json_object_get_array_member(r, "leases");
    for (guint i = 0; i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        g_assert_true(g_hash_table_insert(held,
                                          g_strdup(json_object_get_string_member(l, "path")),
                                          g_strdup(json_object_get_string_member(l, "mode"))));
    }
    return held;
}

/* HOLDER holds exactly the (path, mode) pairs given, NULL ended. */
static void
assert_held(gint64 holder, ...)
{
    g_autoptr(GHashTable) held = inquire(holder);
    va_list ap;
    va_start(ap, holder);
    guint n = 0;
    for (const char *path = va_arg(ap, const char *); path; path = va_arg(ap, const char *)) {
        const char *mode = va_arg(ap, const char *);
        const char *have = g_hash_table_lookup(held, path);
        if (!have)
            g_error("holder %" G_GINT64_FORMAT " holds no lease on %s", holder, path);
        g_test_message("%s: %s", path, have);
        g_assert_cmpstr(have, ==, mode);
        n++;
    }
    va_end(ap);
    g_assert_cmpuint(g_hash_table_size(held), ==, n);
}

/* HOLDER's leases as Admin.List shows them: resource -> "mode generation
 * since", everything an unchanged lease keeps. */
static GHashTable *
listed(gint64 holder)
{
    g_autoptr(JsonObject) h = vml_test_list_holder("holder", holder);
    GHashTable *out = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    JsonArray *leases = json_object_get_array_member(h, "leases");
    for (guint j = 0; j < json_array_get_length(leases); j++) {
        JsonObject *l = json_array_get_object_element(leases, j);
        g_hash_table_insert(out, g_strdup(json_object_get_string_member(l, "path")),
                            g_strdup_printf("%s generation %" G_GINT64_FORMAT
                                            " since %" G_GINT64_FORMAT,
                                            json_object_get_string_member(l, "mode"),
                                            json_object_get_int_member(l, "generation"),
                                            json_object_get_int_member(l, "since")));
    }
    return out;
}

static void
assert_same_leases(GHashTable *before, GHashTable *after)
{
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, before);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        g_test_message("%s: %s", (char *)key, (char *)value);
        g_assert_cmpstr(g_hash_table_lookup(after, key), ==, value);
    }
    g_assert_cmpuint(g_hash_table_size(after), ==, g_hash_table_size(before));
}

static VmlClient *
lease_client(void)
{
    g_autoptr(GError) error = NULL;
    VmlClient *c = vml_client_connect_lease(&error);
    g_assert_no_error(error);
    return c;
}

static void
dom_a(Fx *fx)
{
    make_chain(fx, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    fx_load(fx, "dom-a.xml");
    g_assert_cmpstr(fx->dom->uuid, ==, UUID_A);
    g_assert_cmpstr(fx->dom->name, ==, "dom-a");
}

/* ---- 5. a refused commit leaves every lease as it was --------------------- */

static void
test_commit_conflict(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    dom_a(fx);
    qcow2(fx, "b-own.qcow2", NULL);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2"), *own = img(fx, "b-own.qcow2");

    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a"), b = vml_test_vm_new(UUID_B, "dom-b");
    acquire(&a, top, "exclusive", mid, "shared", base, "shared", NULL);
    acquire(&b, base, "shared", own, "exclusive", NULL);
    g_autoptr(GHashTable) a_before = listed(a.holder);
    g_autoptr(GHashTable) b_before = listed(b.holder);
    g_assert_cmpuint(g_hash_table_size(a_before), ==, 3);
    g_assert_cmpuint(g_hash_table_size(b_before), ==, 2);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = mid, .base = base, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(JsonObject) conflict = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_false(vml_chain_leases_prepare(t, &conflict, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    /* The message alone tells who is in the way of what. */
    g_test_message("conflict: %s", error->message);
    g_assert_nonnull(strstr(error->message, base));
    g_assert_nonnull(strstr(error->message, "dom-b"));
    g_assert_null(strstr(error->message, "dom-a"));   /* A is not its own obstacle */

    g_assert_nonnull(conflict);
    vml_test_assert_image(conflict, "canonical_path", base);
    g_assert_cmpstr(json_object_get_string_member(conflict, "mode"), ==, "exclusive");
    JsonArray *owners = json_object_get_array_member(conflict, "owners");
    g_assert_cmpuint(json_array_get_length(owners), ==, 1);
    JsonObject *o = json_array_get_object_element(owners, 0);
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, "dom-b");
    g_assert_cmpstr(json_object_get_string_member(o, "uuid"), ==, UUID_B);
    g_assert_cmpint(json_object_get_int_member(o, "pid"), ==, b.pid);
    g_assert_cmpstr(json_object_get_string_member(o, "mode"), ==, "shared");

    /* Nothing moved, for either holder: same resources, modes,
     * generations and grant times. */
    g_autoptr(GHashTable) a_after = listed(a.holder);
    g_autoptr(GHashTable) b_after = listed(b.holder);
    assert_same_leases(a_before, a_after);
    assert_same_leases(b_before, b_after);
    /* An abort after a failed prepare has nothing to undo. */
    g_clear_error(&error);
    g_assert_true(vml_chain_leases_abort(t, &error));
    g_assert_no_error(error);
    g_autoptr(GHashTable) a_aborted = listed(a.holder);
    assert_same_leases(a_before, a_aborted);
    g_autoptr(JsonArray) base_owners = vml_test_owners(base);
    g_assert_cmpuint(json_array_get_length(base_owners), ==, 2);

    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

static void
test_commit_conflict_new_lease(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* A holds only top and base (not mid): prepare must take mid and
     * upgrade base in one Acquire, so the conflict on base leaves no lease
     * on mid behind. */
    dom_a(fx);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a"), b = vml_test_vm_new(UUID_B, "dom-b");
    acquire(&a, top, "exclusive", base, "shared", NULL);
    acquire(&b, base, "shared", NULL);
    g_autoptr(GHashTable) a_before = listed(a.holder);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = mid, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(GError) error = NULL;
    g_assert_false(vml_chain_leases_prepare(t, NULL, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "dom-b"));
    g_autoptr(GHashTable) a_after = listed(a.holder);
    assert_same_leases(a_before, a_after);
    g_autoptr(JsonArray) mid_owners = vml_test_owners(mid);
    g_assert_cmpuint(json_array_get_length(mid_owners), ==, 0);
    vml_test_vm_free(&a);
    vml_test_vm_free(&b);
}

/* ---- 6. success path ----------------------------------------------------- */

static void
test_commit_finish(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    dom_a(fx);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    acquire(&a, top, "exclusive", mid, "shared", base, "shared", NULL);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = mid, .base = base, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(JsonObject) conflict = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_chain_leases_prepare(t, &conflict, &error));
    g_assert_no_error(error);
    g_assert_null(conflict);
    /* While QEMU commits: base is A's alone. */
    assert_held(a.holder, top, "exclusive", mid, "shared", base, "exclusive", NULL);
    g_autoptr(GHashTable) cur = vml_chain_leases_current(client, a.holder, &error);
    g_assert_no_error(error);
    g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(cur, base)), ==, VML_LEASE_EXCLUSIVE);

    /* Applied: exactly the new chain top -> base, as a running VM holds it. */
    g_assert_true(vml_chain_leases_finish(t, &error));
    g_assert_no_error(error);
    assert_held(a.holder, top, "exclusive", base, "shared", NULL);
    g_autoptr(JsonArray) mid_owners = vml_test_owners(mid);
    g_assert_cmpuint(json_array_get_length(mid_owners), ==, 0);
    vml_test_vm_free(&a);
}

static void
test_active_commit_finish(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* After an active commit (pivot) the VM writes base: only base stays,
     * exclusive. */
    dom_a(fx);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    acquire(&a, top, "exclusive", mid, "shared", base, "shared", NULL);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .base = base, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_assert_true(plan->active);
    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_chain_leases_prepare(t, NULL, &error));
    g_assert_no_error(error);
    assert_held(a.holder, top, "exclusive", mid, "shared", base, "exclusive", NULL);
    g_assert_true(vml_chain_leases_finish(t, &error));
    g_assert_no_error(error);
    assert_held(a.holder, base, "exclusive", NULL);
    vml_test_vm_free(&a);
}

/* ---- 7. abort path ------------------------------------------------------- */

static void
test_commit_abort(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    dom_a(fx);
    qcow2(fx, "unrelated.qcow2", NULL);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2"), *unrelated = img(fx, "unrelated.qcow2");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    /* A lease the plan does not touch must survive everything. */
    acquire(&a, top, "exclusive", mid, "shared", base, "shared", unrelated, "exclusive", NULL);
    g_autoptr(GHashTable) before = inquire(a.holder);
    g_autoptr(GHashTable) unrelated_before = listed(a.holder);

    VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .top = mid, .base = base, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_chain_leases_prepare(t, NULL, &error));
    g_assert_no_error(error);
    assert_held(a.holder, top, "exclusive", mid, "shared", base, "exclusive",
                unrelated, "exclusive", NULL);

    g_assert_true(vml_chain_leases_abort(t, &error));
    g_assert_no_error(error);
    assert_held(a.holder, top, "exclusive", mid, "shared", base, "shared",
                unrelated, "exclusive", NULL);
    g_autoptr(GHashTable) after = inquire(a.holder);
    assert_same_leases(before, after);
    /* Untouched leases keep their generation and grant time too. */
    g_autoptr(GHashTable) now = listed(a.holder);
    g_assert_cmpstr(g_hash_table_lookup(now, unrelated), ==,
                    g_hash_table_lookup(unrelated_before, unrelated));
    g_assert_cmpstr(g_hash_table_lookup(now, top), ==,
                    g_hash_table_lookup(unrelated_before, top));
    g_assert_cmpstr(g_hash_table_lookup(now, mid), ==,
                    g_hash_table_lookup(unrelated_before, mid));
    /* A second abort has nothing left to undo. */
    g_assert_true(vml_chain_leases_abort(t, &error));
    g_assert_no_error(error);
    assert_held(a.holder, top, "exclusive", mid, "shared", base, "shared",
                unrelated, "exclusive", NULL);
    vml_test_vm_free(&a);
}

/* ---- live snapshot ------------------------------------------------------- */

static void
test_snapshot_reused_overlay(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    /* vmleased leases only existing images, so the overlay is made (as for
     * virsh snapshot-create --reuse-external) between planning and
     * prepare; then the VM ends up writing the overlay only. */
    dom_a(fx);
    const char *top = img(fx, "top.qcow2"), *mid = img(fx, "mid.qcow2");
    const char *base = img(fx, "base.qcow2"), *snap = img(fx, "snap.qcow2");
    VmlTestVm a = vml_test_vm_new(UUID_A, "dom-a");
    acquire(&a, top, "exclusive", mid, "shared", base, "shared", NULL);

    VmlChainRequest req = { .op = VML_CHAIN_SNAPSHOT, .file = snap, .live = TRUE };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    assert_chain(fx, plan->new_chain, "snap.qcow2", "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
    assert_leases(fx, plan,
                  "top.qcow2", EX, SH,
                  "mid.qcow2", SH, SH,
                  "base.qcow2", SH, SH,
                  "snap.qcow2", EX, EX, NULL);
    qcow2(fx, "snap.qcow2", "top.qcow2");

    g_autoptr(VmlClient) client = lease_client();
    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, a.holder, plan);
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_chain_leases_prepare(t, NULL, &error));
    g_assert_no_error(error);
    assert_held(a.holder, snap, "exclusive", top, "exclusive", mid, "shared", base, "shared",
                NULL);
    g_assert_true(vml_chain_leases_finish(t, &error));
    g_assert_no_error(error);
    assert_held(a.holder, snap, "exclusive", top, "shared", mid, "shared", base, "shared", NULL);
    vml_test_vm_free(&a);
}

/* ---- 8. offline holder --------------------------------------------------- */

static void
test_offline_rebase(Fx *fx, G_GNUC_UNUSED gconstpointer data)
{
    chain5(fx);
    const char *A = img(fx, "A.qcow2"), *B = img(fx, "B.qcow2"), *C = img(fx, "C.qcow2");
    const char *D = img(fx, "D.qcow2"), *E = img(fx, "E.qcow2");
    /* The process applying the change (qemu-img's parent) is the holder. */
    VmlTestVm tool = vml_test_vm_new(UUID_OFFLINE, "vmlease-rebase");
    assert_held(tool.holder, NULL);

    VmlChainRequest req = { .op = VML_CHAIN_REBASE, .top = C, .backing = E };
    g_autoptr(VmlChainPlan) plan = plan_ok(fx, &req, NULL);
    assert_chain(fx, plan->new_chain, "A.qcow2", "B.qcow2", "C.qcow2", "E.qcow2", NULL);
    g_autoptr(VmlClient) client = lease_client();

    g_autoptr(VmlChainLeases) t = vml_chain_leases_new(client, tool.holder, plan);
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_chain_leases_prepare(t, NULL, &error));
    g_assert_no_error(error);
    assert_held(tool.holder, A, "shared", B, "shared", C, "exclusive", D, "shared", E, "shared",
                NULL);
    g_assert_true(vml_chain_leases_abort(t, &error));
    g_assert_no_error(error);
    assert_held(tool.holder, NULL);

    /* Done for real: finish leaves nothing either (offline: after NONE). */
    g_autoptr(VmlChainLeases) t2 = vml_chain_leases_new(client, tool.holder, plan);
    g_assert_true(vml_chain_leases_prepare(t2, NULL, &error));
    g_assert_no_error(error);
    assert_held(tool.holder, A, "shared", B, "shared", C, "exclusive", D, "shared", E, "shared",
                NULL);
    g_assert_true(vml_chain_leases_finish(t2, &error));
    g_assert_no_error(error);
    assert_held(tool.holder, NULL);

    /* A running VM on the chain stops the offline change before it starts. */
    VmlTestVm vm = vml_test_vm_new(UUID_A, "dom-chain5-vm");
    acquire(&vm, A, "exclusive", B, "shared", NULL);
    g_autoptr(VmlChainLeases) t3 = vml_chain_leases_new(client, tool.holder, plan);
    g_autoptr(JsonObject) conflict = NULL;
    g_assert_false(vml_chain_leases_prepare(t3, &conflict, &error));
    g_assert_error(error, VML_ERROR, VML_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "dom-chain5-vm"));
    vml_test_assert_image(conflict, "canonical_path", A);
    assert_held(tool.holder, NULL);
    vml_test_vm_free(&vm);
    vml_test_vm_free(&tool);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    daemon_ = vml_test_daemon_start(NULL);
#define ADD(path, fn) g_test_add(path, Fx, NULL, fx_setup, fn, fx_teardown)
    ADD("/chain-plan/rebase-cycles", test_rebase_cycles);
    ADD("/chain-plan/rebase-legal", test_rebase_legal);
    ADD("/chain-plan/frozen-mirror", test_frozen_mirror);
    ADD("/chain-plan/base-of-two-disks", test_base_of_two_disks);
    ADD("/chain-plan/frozen-table", test_frozen_table);
    ADD("/chain-plan/commit-live", test_commit_live);
    ADD("/chain-plan/commit-live-headers", test_commit_live_headers);
    ADD("/chain-plan/commit-offline", test_commit_offline);
    ADD("/chain-plan/commit-offline-deep", test_commit_offline_deep);
    ADD("/chain-plan/errors", test_errors);
    ADD("/chain-plan/errors-single-image", test_errors_single_image);
    ADD("/chain-plan/errors-lone-image", test_errors_lone_image);
    ADD("/chain-plan/two-disks", test_two_disks);
    ADD("/chain-leases/commit-conflict", test_commit_conflict);
    ADD("/chain-leases/commit-conflict-new-lease", test_commit_conflict_new_lease);
    ADD("/chain-leases/commit-finish", test_commit_finish);
    ADD("/chain-leases/active-commit-finish", test_active_commit_finish);
    ADD("/chain-leases/commit-abort", test_commit_abort);
    ADD("/chain-leases/offline-rebase", test_offline_rebase);
    ADD("/chain-leases/snapshot-reused-overlay", test_snapshot_reused_overlay);
    ADD("/chain-plan/rebase-format-probed", test_bug_rebase_format);
    ADD("/chain-plan/live-rebase-standalone-refused", test_bug_live_rebase_standalone);
#undef ADD
    int rc = g_test_run();
    vml_test_daemon_stop(daemon_);
    return rc;
}
