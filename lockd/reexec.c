#include "reexec.h"
#include "daemon-log.h"
#include "backends/backend.h"
#include "daemon-config.h"
#include "server.h"
#include "vml-conf.h"
#include "vml-error.h"
#include "vml-json-write.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

static gboolean
clear_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    return flags >= 0 && fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == 0;
}

void
vml_reexec_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGHUP);
}

void
vml_reload_config_free(VmlReloadConfig *rc)
{
    if (!rc)
        return;
    g_free(rc->text);
    g_free(rc->origin);
    g_free(rc);
}

/* The settings held leases live under: a reload may not change them. */
static const char *const fixed_keys[] = {
    "backend", "lockspace_dir", "state_dir", "socket_dir", NULL,
};

static gboolean
keeps_fixed(VmlConf *now, VmlConf *next, const char *key, const char *origin, GError **error)
{
    if (vml_conf_same_value(now, next, key))
        return TRUE;
    g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                "%s cannot change while vmleased runs, since the held leases live under it: "
                "restart vmleased to change it", key);
    if (next)
        vml_conf_prefix_key_error(next, key, error);
    else
        g_prefix_error(error, "%s: ", origin);
    return FALSE;
}

VmlReloadConfig *
vml_reexec_check_config(VmlDaemon *d, GError **error)
{
    g_autoptr(VmlReloadConfig) rc = g_new0(VmlReloadConfig, 1);
    if (!vml_daemon_config_read(d->config_path, &rc->text, &rc->len, &rc->origin, error))
        return NULL;
    g_autoptr(VmlDaemonConfig) next = vml_daemon_config_load_text(rc->text, rc->len,
                                                                  rc->origin, error);
    if (!next)
        return NULL;
    g_autoptr(VmlConf) now_conf = d->config_text
        ? vml_conf_new_from_data(d->config_text, d->config_len, d->config_origin, NULL) : NULL;
    g_autoptr(VmlConf) next_conf = rc->text
        ? vml_conf_new_from_data(rc->text, rc->len, rc->origin, NULL) : NULL;
    g_autoptr(GStrvBuilder) keys = g_strv_builder_new();
    g_strv_builder_addv(keys, (const char **)fixed_keys);
    vml_backend_add_config_keys(keys);
    g_auto(GStrv) fixed = g_strv_builder_end(keys);
    const char *origin = rc->origin ? rc->origin : d->config_origin;
    for (char **k = fixed; *k; k++) {
        if (!keeps_fixed(now_conf, next_conf, *k, origin ? origin : "the configuration", error))
            return NULL;
    }
    return g_steal_pointer(&rc);
}

gboolean
vml_reexec_state_config(JsonObject *state, VmlReloadConfig **rc, GError **error)
{
    *rc = NULL;
    JsonNode *n = json_object_get_member(state, "config");
    if (!n)
        return TRUE;
    JsonObject *c = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    const char *text = c ? json_object_get_string_member_with_default(c, "text", NULL) : NULL;
    const char *origin = c ? json_object_get_string_member_with_default(c, "origin", NULL) : NULL;
    if (!c || (text && !origin)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "handed-over state: malformed config");
        return FALSE;
    }
    *rc = g_new0(VmlReloadConfig, 1);
    if (text) {
        (*rc)->text = (char *)g_base64_decode(text, &(*rc)->len);
        (*rc)->origin = g_strdup(origin);
    }
    return TRUE;
}

void
vml_reexec(VmlDaemon *d, const VmlReloadConfig *rc)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GString) state = vml_lease_table_save(d->table, fds);
    int lease_fd, admin_fd;

    /* The table's JSON object ends in '}': add the daemon's own items. */
    vml_server_listen_fds(d->server, &lease_fd, &admin_fd);
    g_string_truncate(state, state->len - 1);
    g_string_append_printf(state, ",\"lease_socket_fd\":%d,\"admin_socket_fd\":%d"
                           ",\"instance_lock_fd\":%d,\"log_target\":\"%s\""
                           ",\"started\":%" G_GINT64_FORMAT ",\"reexecs\":%" G_GINT64_FORMAT,
                           lease_fd, admin_fd, d->instance_lock,
                           vml_log_target_name(vml_log_target()), d->started, d->reexecs + 1);
    /* The configuration as checked, whatever the file says by the time
     * the new image runs; base64: a config file need not be UTF-8. */
    if (rc->text) {
        g_autofree char *b64 = g_base64_encode((const guchar *)rc->text, rc->len);
        g_string_append_printf(state, ",\"config\":{\"text\":\"%s\",\"origin\":", b64);
        vml_json_write_string(state, rc->origin);
        g_string_append_c(state, '}');
    } else {
        g_string_append(state, ",\"config\":{\"text\":null}");
    }
    vml_server_hand_over(d->server, state, fds);
    vml_stash_save(d->stash, state, fds);
    g_string_append_c(state, '}');
    g_array_append_val(fds, lease_fd);
    g_array_append_val(fds, admin_fd);
    if (d->instance_lock >= 0)
        g_array_append_val(fds, d->instance_lock);

    int memfd = memfd_create("vmleased-state", 0);
    if (memfd < 0 || write(memfd, state->str, state->len) != (ssize_t)state->len ||
        lseek(memfd, 0, SEEK_SET) < 0) {
        g_warning("re-exec: cannot hand over state: %s", g_strerror(errno));
        if (memfd >= 0)
            close(memfd);
        return;
    }
    for (guint i = 0; i < fds->len; i++) {
        if (!clear_cloexec(g_array_index(fds, int, i))) {
            g_warning("re-exec: cannot keep fd %d open: %s",
                      g_array_index(fds, int, i), g_strerror(errno));
            close(memfd);
            return;
        }
    }
    g_autofree char *memfd_arg = g_strdup_printf("%d", memfd);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, d->exe);
    g_ptr_array_add(argv, (char *)"--foreground");
    if (d->config_path) {
        g_ptr_array_add(argv, (char *)"--config");
        g_ptr_array_add(argv, d->config_path);
    }
    g_ptr_array_add(argv, (char *)"--reexec-state");
    g_ptr_array_add(argv, memfd_arg);
    g_ptr_array_add(argv, NULL);

    g_message("re-executing %s with %u lease(s)", d->exe, vml_lease_table_n_leases(d->table));
    /* A SIGUSR1 or SIGHUP sent while the new image starts waits for its handler. */
    sigset_t usr1, old;
    vml_reexec_signals(&usr1);
    pthread_sigmask(SIG_BLOCK, &usr1, &old);
    execv(d->exe, (char **)argv->pdata);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    g_warning("re-exec of %s failed: %s; carrying on", d->exe, g_strerror(errno));
    close(memfd);
    for (guint i = 0; i < fds->len; i++)
        fcntl(g_array_index(fds, int, i), F_SETFD, FD_CLOEXEC);
}

JsonObject *
vml_reexec_read_state(int fd, GError **error)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    guint8 chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        g_byte_array_append(buf, chunk, n);
    close(fd);
    if (n < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "cannot read handed-over state: %s", g_strerror(errno));
        return NULL;
    }
    g_autoptr(JsonParser) p = json_parser_new_immutable();
    if (!json_parser_load_from_data(p, (const char *)buf->data, buf->len, error))
        return NULL;
    JsonNode *root = json_parser_get_root(p);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "handed-over state is not an object");
        return NULL;
    }
    return json_object_ref(json_node_get_object(root));
}
