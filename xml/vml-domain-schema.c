/* Validation of a domain document against libvirt's RelaxNG schema. The
 * schema is large (domain.rng and everything it includes): each path is
 * parsed once and kept for the life of the process. */
#include "vml-domain.h"
#include "vml-error.h"

#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#define DEFAULT_SCHEMA "/usr/share/libvirt/schemas/domain.rng"
/* How many complaints the error quotes. */
#define MAX_MESSAGES 3

typedef struct {
    GString *text;   /* the first MAX_MESSAGES messages, "; " separated */
    guint count;     /* all of them */
} Complaints;

static void
on_error(void *data, xmlErrorPtr e)
{
    Complaints *c = data;
    if (!e || e->level < XML_ERR_ERROR)
        return;
    if (c->count++ >= MAX_MESSAGES)
        return;
    g_autofree char *msg = g_strstrip(g_strdup(e->message ? e->message : "unknown error"));
    if (c->text->len)
        g_string_append(c->text, "; ");
    if (e->line > 0)
        g_string_append_printf(c->text, "line %d: ", e->line);
    /* Elements we added have no line: the path says where. */
    xmlNodePtr node = e->node;
    if (node && node->type == XML_ELEMENT_NODE) {
        xmlChar *where = xmlGetNodePath(node);
        if (where)
            g_string_append_printf(c->text, "%s: ", (const char *)where);
        xmlFree(where);
    }
    g_string_append(c->text, msg);
}

static void
complaints_init(Complaints *c)
{
    c->text = g_string_new(NULL);
    c->count = 0;
}

/* The message, with how many more complaints were left out; frees C. */
static char *
complaints_take(Complaints *c)
{
    if (c->count > MAX_MESSAGES)
        g_string_append_printf(c->text, " (and %u more)", c->count - MAX_MESSAGES);
    if (!c->text->len)
        g_string_append(c->text, "no details");
    return g_string_free(c->text, FALSE);
}

/* Path -> xmlRelaxNGPtr, never freed. Validation also runs under LOCK:
 * libxml2 does not promise that one schema serves two validations at once. */
static GMutex lock;
static GHashTable *schemas;

static xmlRelaxNGPtr
load_schema(const char *path, GError **error)
{
    if (!schemas)
        schemas = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    xmlRelaxNGPtr schema = g_hash_table_lookup(schemas, path);
    if (schema)
        return schema;

    xmlInitParser();
    Complaints c;
    complaints_init(&c);
    xmlRelaxNGParserCtxtPtr pctxt = xmlRelaxNGNewParserCtxt(path);
    if (pctxt) {
        xmlRelaxNGSetParserStructuredErrors(pctxt, on_error, &c);
        /* Included grammars are parsed outside PCTXT's handler. */
        xmlStructuredErrorFunc saved_func = xmlStructuredError;
        void *saved_data = xmlStructuredErrorContext;
        xmlSetStructuredErrorFunc(&c, on_error);
        schema = xmlRelaxNGParse(pctxt);
        xmlSetStructuredErrorFunc(saved_data, saved_func);
        xmlRelaxNGFreeParserCtxt(pctxt);
    }
    g_autofree char *msg = complaints_take(&c);
    if (!schema) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot load the schema %s: %s",
                    path, msg);
        return NULL;
    }
    g_hash_table_insert(schemas, g_strdup(path), schema);
    return schema;
}

gboolean
vml_domain_validate(VmlDomain *d, const char *schema_path, GError **error)
{
    g_return_val_if_fail(d != NULL && d->doc != NULL, FALSE);
    if (!schema_path)
        schema_path = DEFAULT_SCHEMA;

    G_GNUC_UNUSED g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&lock);
    xmlRelaxNGPtr schema = load_schema(schema_path, error);
    if (!schema)
        return FALSE;
    xmlRelaxNGValidCtxtPtr vctxt = xmlRelaxNGNewValidCtxt(schema);
    if (!vctxt) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "cannot validate against %s: no validation context", schema_path);
        return FALSE;
    }
    Complaints c;
    complaints_init(&c);
    xmlRelaxNGSetValidStructuredErrors(vctxt, on_error, &c);
    int rc = xmlRelaxNGValidateDoc(vctxt, d->doc);
    xmlRelaxNGFreeValidCtxt(vctxt);
    g_autofree char *msg = complaints_take(&c);
    if (rc != 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_INVALID_PARAMETER,
                    "domain %s is not valid against %s: %s",
                    d->name ? d->name : "(unnamed)", schema_path, msg);
        return FALSE;
    }
    return TRUE;
}
