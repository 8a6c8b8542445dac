/* libvirt's domain status file, as libvirt 9.0 writes it (trimmed), and
 * what it must not be mistaken for. */
#include "vml-domain-status.h"

static const char *const migrating_out =
    "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n"
    "<domstatus state='paused' reason='migration' pid='4242'>\n"
    "  <monitor path='/var/lib/libvirt/qemu/domain-1-A/monitor.sock' type='unix'/>\n"
    "  <job type='none' async='migration out' phase='perform3' flags='0x8'>\n"
    "  </job>\n"
    "  <domain type='kvm' id='1'>\n    <name>A</name>\n"
    "    <description>job async='migration in' state='running'</description>\n"
    "  </domain>\n</domstatus>\n";

static void
test_job_and_state(void)
{
    g_assert_true(vml_domain_status_has_job(migrating_out, "migration out"));
    g_assert_false(vml_domain_status_has_job(migrating_out, "migration in"));
    g_assert_false(vml_domain_status_running(migrating_out));
    const char *running = "<domstatus state=\"running\" reason=\"unpaused\" pid=\"1\">\n"
                          "<job type=\"none\" async=\"migration in\"/></domstatus>";
    g_assert_true(vml_domain_status_running(running));
    g_assert_true(vml_domain_status_has_job(running, "migration in"));
}

static void
test_not_fooled(void)
{
    /* Text elsewhere in the file (a description, the domain's name) is
     * not the attribute; nor is a prefix of the value. */
    g_assert_false(vml_domain_status_has_job("<domstatus state='paused'>"
                                             "<name>async='migration in'</name>", "migration in"));
    g_assert_false(vml_domain_status_running("<domstatus state='runningish'>"));
    g_assert_false(vml_domain_status_running("<domstatus xstate='running'>"));
    g_assert_false(vml_domain_status_running(""));
    g_assert_false(vml_domain_status_running(NULL));
    g_assert_false(vml_domain_status_has_job(NULL, "save"));
}

static void
test_path(void)
{
    g_autofree char *p = vml_domain_status_path("/run/libvirt/qemu", "dom-a");
    g_assert_cmpstr(p, ==, "/run/libvirt/qemu/dom-a.xml");
    g_assert_null(vml_domain_status_path("/run/libvirt/qemu", "../etc/shadow"));
    g_assert_null(vml_domain_status_path("/run/libvirt/qemu", ".."));
    g_assert_null(vml_domain_status_path("/run/libvirt/qemu", ""));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/domain-status/job-and-state", test_job_and_state);
    g_test_add_func("/domain-status/not-fooled", test_not_fooled);
    g_test_add_func("/domain-status/path", test_path);
    return g_test_run();
}
