/* What a chain command spends before it touches a lease: parsing a domain
 * XML, completing chains from qcow2 headers (3 layers, and the deepest
 * chain accepted), planning a commit, and validating the result against
 * libvirt's RelaxNG schema (the first validation loads the schema).
 * Prints "name: value" figures. Needs qemu-img. */
#include "bench-util.h"
#include "vml-chain-plan.h"
#include "vml-domain.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 200

static void
sh(const char *cmd)
{
    if (system(cmd) != 0)
        bench_die(cmd, NULL);
}

/* LAYERS qcow2 images in DIR, l0 on top of l1 ... on top of lN-1. */
static void
make_chain(const char *dir, guint layers)
{
    g_autofree char *bottom = g_strdup_printf("cd '%s' && qemu-img create -q -f qcow2 l%u.qcow2 1M",
                                              dir, layers - 1);
    sh(bottom);
    for (guint i = layers - 1; i-- > 0;) {
        g_autofree char *cmd = g_strdup_printf(
            "cd '%s' && qemu-img create -q -f qcow2 -b l%u.qcow2 -F qcow2 l%u.qcow2", dir, i + 1, i);
        sh(cmd);
    }
}

static char *
domain_xml(const char *top)
{
    return g_strdup_printf(
        "<domain type='qemu'><name>bench</name>"
        "<uuid>11111111-2222-4333-8444-555555555555</uuid>"
        "<memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>"
        "<video><model type='none'/></video><memballoon model='none'/></devices></domain>",
        top);
}

int
main(void)
{
    g_set_prgname("chain-bench");
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("chain-bench-XXXXXX", &error);
    if (!dir)
        bench_die("tmpdir", error);
    g_autofree char *dir3 = g_build_filename(dir, "three", NULL);
    g_autofree char *dir64 = g_build_filename(dir, "deep", NULL);
    g_mkdir(dir3, 0700);
    g_mkdir(dir64, 0700);
    make_chain(dir3, 3);
    make_chain(dir64, VML_DOMAIN_CHAIN_MAX);
    g_autofree char *top3 = g_build_filename(dir3, "l0.qcow2", NULL);
    g_autofree char *top64 = g_build_filename(dir64, "l0.qcow2", NULL);
    g_autofree char *xml3 = domain_xml(top3);
    g_autofree char *xml64 = domain_xml(top64);

    double parse[ROUNDS], resolve3[ROUNDS], resolve64[ROUNDS], plan[ROUNDS], validate[ROUNDS];
    double first_validate = 0;
    for (guint r = 0; r < ROUNDS; r++) {
        gint64 t0 = bench_now_ns();
        g_autoptr(VmlDomain) d = vml_domain_parse(xml3, strlen(xml3), "bench", &error);
        gint64 t1 = bench_now_ns();
        if (!d || !vml_domain_resolve_chains(d, &error))
            bench_die("parse", error);
        gint64 t2 = bench_now_ns();
        VmlChainRequest req = { .op = VML_CHAIN_COMMIT, .disk = "vda",
                                .top = ((VmlLayer *)((VmlDisk *)d->disks->pdata[0])->chain->pdata[1])->path,
                                .live = TRUE };
        g_autoptr(VmlChainPlan) p = vml_chain_plan_new(d, &req, NULL, &error);
        gint64 t3 = bench_now_ns();
        if (!p)
            bench_die("plan", error);
        vml_domain_set_chain(d, p->disk, p->new_chain);
        gint64 t4 = bench_now_ns();
        if (!vml_domain_validate(d, NULL, &error))
            bench_die("validate", error);
        gint64 t5 = bench_now_ns();
        parse[r] = (t1 - t0) / 1e3;
        resolve3[r] = (t2 - t1) / 1e3;
        plan[r] = (t3 - t2) / 1e3;
        validate[r] = (t5 - t4) / 1e3;
        if (r == 0)
            first_validate = validate[r];

        g_autoptr(VmlDomain) deep = vml_domain_parse(xml64, strlen(xml64), "bench", &error);
        gint64 t6 = bench_now_ns();
        if (!deep || !vml_domain_resolve_chains(deep, &error))
            bench_die("deep chain", error);
        resolve64[r] = (bench_now_ns() - t6) / 1e3;
    }
    printf("rounds: %d\n", ROUNDS);
    bench_print_p50("parse_domain_xml", parse, ROUNDS);
    bench_print_p50("resolve_chain_3_layers", resolve3, ROUNDS);
    printf("resolve_chain_layers_deep: %d\n", VML_DOMAIN_CHAIN_MAX);
    bench_print_p50("resolve_chain_deep", resolve64, ROUNDS);
    bench_print_p50("plan_commit", plan, ROUNDS);
    printf("validate_first_with_schema_load_us: %.1f\n", first_validate);
    bench_print_p50("validate", validate + 1, ROUNDS - 1);

    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
    sh(rm);
    return 0;
}
