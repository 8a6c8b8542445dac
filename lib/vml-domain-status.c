#include "vml-domain-status.h"

#include <string.h>

char *
vml_domain_status_path(const char *state_dir, const char *name)
{
    if (!name || !*name || strchr(name, '/') || g_str_equal(name, ".") || g_str_equal(name, ".."))
        return NULL;
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    return g_build_filename(state_dir, file, NULL);
}

/* TEXT has ATTR='VALUE' or ATTR="VALUE" inside the first element named
 * ELEMENT. */
static gboolean
has_attribute(const char *text, const char *element, const char *attr, const char *value)
{
    g_autofree char *open = g_strdup_printf("<%s ", element);
    const char *start = text ? strstr(text, open) : NULL;
    const char *end = start ? strchr(start, '>') : NULL;
    if (!end)
        return FALSE;
    g_autofree char *tag = g_strndup(start, end - start);
    g_autofree char *single = g_strdup_printf(" %s='%s'", attr, value);
    g_autofree char *dbl = g_strdup_printf(" %s=\"%s\"", attr, value);
    return strstr(tag, single) || strstr(tag, dbl);
}

gboolean
vml_domain_status_has_job(const char *text, const char *job)
{
    return has_attribute(text, "job", "async", job);
}

gboolean
vml_domain_status_running(const char *text)
{
    return has_attribute(text, "domstatus", "state", "running");
}
