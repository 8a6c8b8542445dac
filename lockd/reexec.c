#include "reexec.h"
#include "server.h"

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
vml_reexec(VmlDaemon *d)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GString) state = vml_lease_table_save(d->table, fds);
    int lease_fd, admin_fd;

    /* The table's JSON object ends in '}': add the daemon's own items. */
    vml_server_listen_fds(d->server, &lease_fd, &admin_fd);
    g_string_truncate(state, state->len - 1);
    g_string_append_printf(state, ",\"lease_socket_fd\":%d,\"admin_socket_fd\":%d"
                           ",\"started\":%" G_GINT64_FORMAT ",\"reexecs\":%" G_GINT64_FORMAT,
                           lease_fd, admin_fd, d->started, d->reexecs + 1);
    vml_server_hand_over(d->server, state, fds);
    vml_stash_save(d->stash, state, fds);
    g_string_append_c(state, '}');
    g_array_append_val(fds, lease_fd);
    g_array_append_val(fds, admin_fd);

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
    /* A SIGUSR1 sent while the new image starts waits for its handler. */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
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
