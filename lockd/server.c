#include "server.h"
#include "vml-wire.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct {
    char *data;
    gsize len;
    gsize off;
    int *fds;           /* dups, closed once sent */
    guint n_fds;
} OutMsg;

struct _VmlConn {
    VmlServer *server;
    int fd;
    gboolean lease_socket;
    VmlAccess access;
    uid_t uid;
    pid_t pid;
    VmlCreds creds;     /* for opening images with the peer's rights */
    VmlFrameReader *reader;
    GQueue out;
    guint in_source;
    guint out_source;
    gboolean closing;   /* close once out is empty */
};

#define LISTEN_PAUSE_MS 100

struct _VmlServer {
    VmlDaemon *daemon;
    int lease_fd;
    int admin_fd;
    guint lease_source;
    guint admin_source;
    guint pause_source;
    gint64 last_fd_warning;
    GHashTable *conns;  /* VmlConn* set */
};

static void conn_free(VmlConn *c);
static void conn_flush(VmlConn *c);

static void
out_msg_free(OutMsg *m)
{
    for (guint i = 0; i < m->n_fds; i++)
        close(m->fds[i]);
    g_free(m->fds);
    g_free(m->data);
    g_free(m);
}

VmlAccess
vml_conn_access(VmlConn *c)
{
    return c->access;
}

uid_t
vml_conn_uid(VmlConn *c)
{
    return c->uid;
}

const VmlCreds *
vml_conn_creds(VmlConn *c)
{
    return &c->creds;
}

gboolean
vml_conn_is_lease_socket(VmlConn *c)
{
    return c->lease_socket;
}

static void
conn_destroy(VmlConn *c)
{
    g_hash_table_remove(c->server->conns, c);
}

static void
conn_queue(VmlConn *c, JsonObject *msg, const int *fds, guint n_fds)
{
    OutMsg *m = g_new0(OutMsg, 1);
    gsize len;
    char *json = vml_json_to_string(msg, &len);
    m->data = g_realloc(json, len + 1);
    m->data[len] = '\0';
    m->len = len + 1;
    if (n_fds) {
        m->fds = g_new(int, n_fds);
        for (guint i = 0; i < n_fds; i++) {
            m->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (m->fds[i] < 0) {
                /* Never send fewer fds than promised. */
                m->n_fds = i;
                out_msg_free(m);
                g_autoptr(JsonObject) err = json_object_new();
                json_object_set_string_member(err, "error", vml_error_name(VML_ERROR_FAILED));
                JsonObject *p = json_object_new();
                json_object_set_string_member(p, "message", "out of file descriptors");
                json_object_set_object_member(err, "parameters", p);
                conn_queue(c, err, NULL, 0);
                return;
            }
        }
        m->n_fds = n_fds;
    }
    g_queue_push_tail(&c->out, m);
}

void
vml_conn_reply(VmlConn *c, JsonObject *params, const int *fds, guint n_fds)
{
    g_autoptr(JsonObject) msg = json_object_new();
    json_object_set_object_member(msg, "parameters", params ? params : json_object_new());
    conn_queue(c, msg, fds, n_fds);
}

void
vml_conn_error(VmlConn *c, VmlErrorCode code, JsonObject *params, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *text = g_strdup_vprintf(format, ap);
    va_end(ap);

    if (!params)
        params = json_object_new();
    json_object_set_string_member(params, "message", text);
    /* InvalidMessage(reason) as the interface declares it. */
    if (code == VML_ERROR_INVALID_MESSAGE && !json_object_has_member(params, "reason"))
        json_object_set_string_member(params, "reason", text);
    g_autoptr(JsonObject) msg = json_object_new();
    json_object_set_string_member(msg, "error", vml_error_name(code));
    json_object_set_object_member(msg, "parameters", params);
    conn_queue(c, msg, NULL, 0);
}

void
vml_conn_error_gerror(VmlConn *c, const GError *error, JsonObject *params)
{
    VmlErrorCode code = error->domain == VML_ERROR ? (VmlErrorCode)error->code : VML_ERROR_FAILED;
    vml_conn_error(c, code, params, "%s", error->message);
}

static gboolean
on_conn_out(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    VmlConn *c = data;
    c->out_source = 0;
    conn_flush(c);
    return G_SOURCE_REMOVE;
}

static gboolean on_conn_in(int fd, GIOCondition cond, gpointer data);

/* Write what we can; stop reading while replies are stuck (backpressure). */
static void
conn_flush(VmlConn *c)
{
    OutMsg *m;
    while ((m = g_queue_peek_head(&c->out))) {
        struct iovec iov = { .iov_base = m->data + m->off, .iov_len = m->len - m->off };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        VmlFdControl control;
        if (m->n_fds && m->off == 0)
            vml_wire_attach_fds(&mh, &control, m->fds, m->n_fds);
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->out_source)
                    c->out_source = g_unix_fd_add(c->fd, G_IO_OUT, on_conn_out, c);
                if (c->in_source) {
                    g_source_remove(c->in_source);
                    c->in_source = 0;
                }
                return;
            }
            conn_destroy(c);
            return;
        }
        m->off += n;
        if (m->off < m->len)
            continue;
        g_queue_pop_head(&c->out);
        out_msg_free(m);
    }
    if (c->closing) {
        conn_destroy(c);
        return;
    }
    if (!c->in_source)
        c->in_source = g_unix_fd_add(c->fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_conn_in, c);
}

static gboolean
on_conn_in(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    VmlConn *c = data;
    g_autoptr(GError) error = NULL;

    switch (vml_frame_reader_fill(c->reader, c->fd, &error)) {
    case VML_FILL_AGAIN:
        return G_SOURCE_CONTINUE;
    case VML_FILL_EOF:
        c->in_source = 0;
        conn_destroy(c);
        return G_SOURCE_REMOVE;
    case VML_FILL_ERROR:
        /* Framing is lost: say why, then hang up. */
        c->in_source = 0;
        vml_conn_error(c, VML_ERROR_INVALID_MESSAGE, NULL, "%s", error->message);
        c->closing = TRUE;
        conn_flush(c);
        return G_SOURCE_REMOVE;
    case VML_FILL_OK:
        break;
    }

    char *msg;
    gsize len;
    GArray *fds;
    /* Dispatch may queue replies; keep c alive across it via the set. */
    while (g_hash_table_contains(c->server->conns, c) && !c->closing &&
           vml_frame_reader_pop(c->reader, &msg, &len, &fds)) {
        vml_dispatch(c->server->daemon, c, msg, len, fds);
        g_free(msg);
    }
    if (!g_hash_table_contains(c->server->conns, c))
        return G_SOURCE_REMOVE;
    guint keep = c->in_source;
    conn_flush(c);
    /* conn_flush may have removed this source (backpressure) or c itself. */
    return keep ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static void
conn_free(VmlConn *c)
{
    if (c->in_source)
        g_source_remove(c->in_source);
    if (c->out_source)
        g_source_remove(c->out_source);
    g_queue_clear_full(&c->out, (GDestroyNotify)out_msg_free);
    vml_frame_reader_free(c->reader);
    close(c->fd);
    g_free(c);
}

static gboolean
peer_in_group(int fd, gid_t primary, gid_t group)
{
    if (group == (gid_t)-1)
        return FALSE;
    if (primary == group)
        return TRUE;
    gid_t groups[256];
    socklen_t len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
        return FALSE;
    for (guint i = 0; i < len / sizeof(gid_t); i++) {
        if (groups[i] == group)
            return TRUE;
    }
    return FALSE;
}

static gboolean on_lease_listen(int fd, GIOCondition cond, gpointer data);
static gboolean on_admin_listen(int fd, GIOCondition cond, gpointer data);

static void
listen_resume(VmlServer *s)
{
    if (!s->lease_source)
        s->lease_source = g_unix_fd_add(s->lease_fd, G_IO_IN, on_lease_listen, s);
    if (!s->admin_source)
        s->admin_source = g_unix_fd_add(s->admin_fd, G_IO_IN, on_admin_listen, s);
}

static gboolean
on_listen_pause_over(gpointer data)
{
    VmlServer *s = data;
    s->pause_source = 0;
    listen_resume(s);
    return G_SOURCE_REMOVE;
}

/* Out of fds: accepting again at once would spin. Stop listening for a
 * moment (pending clients wait in the backlog) and say so once. */
static void
listen_pause(VmlServer *s, int err)
{
    if (s->pause_source)
        return;
    gint64 now = g_get_monotonic_time();
    if (now - s->last_fd_warning > 10 * G_USEC_PER_SEC) {
        g_warning("cannot accept clients: %s; pausing for %d ms", g_strerror(err),
                  LISTEN_PAUSE_MS);
        s->last_fd_warning = now;
    }
    if (s->lease_source)
        g_source_remove(s->lease_source);
    if (s->admin_source)
        g_source_remove(s->admin_source);
    s->lease_source = s->admin_source = 0;
    s->pause_source = g_timeout_add(LISTEN_PAUSE_MS, on_listen_pause_over, s);
}

static void conn_setup(VmlServer *s, int fd, gboolean lease_socket);

static void
accept_one(VmlServer *s, int listen_fd, gboolean lease_socket)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            listen_pause(s, errno);
        else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            g_warning("accept: %s", g_strerror(errno));
        return;
    }
    conn_setup(s, fd, lease_socket);
}

/* Decide what the peer may do (SO_PEERCRED) and start serving it. */
static void
conn_setup(VmlServer *s, int fd, gboolean lease_socket)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        close(fd);
        return;
    }
    const VmlDaemonConfig *cfg = s->daemon->cfg;
    VmlConn *c = g_new0(VmlConn, 1);
    c->server = s;
    c->fd = fd;
    c->lease_socket = lease_socket;
    c->uid = cr.uid;
    c->pid = cr.pid;
    if (!vml_creds_of_peer(fd, &c->creds)) {
        c->creds.uid = cr.uid;
        c->creds.gid = cr.gid;
    }
    c->reader = vml_frame_reader_new();
    g_queue_init(&c->out);
    g_hash_table_add(s->conns, c);

    if (cr.uid == 0)
        c->access = lease_socket ? VML_ACCESS_LEASE : VML_ACCESS_ROOT;
    else if (peer_in_group(fd, cr.gid, lease_socket ? cfg->lease_gid : cfg->admin_gid))
        c->access = lease_socket ? VML_ACCESS_LEASE : VML_ACCESS_READ;

    if (c->access == VML_ACCESS_NONE) {
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "uid", cr.uid);
        g_message("refused connection from uid %u (pid %d) on the %s socket",
                  (unsigned)cr.uid, (int)cr.pid, lease_socket ? "lease" : "admin");
        vml_conn_error(c, VML_ERROR_PERMISSION_DENIED, p,
                       "uid %u may not use vmleased's %s socket (root%s only)",
                       (unsigned)cr.uid, lease_socket ? "lease" : "admin",
                       (lease_socket ? cfg->lease_gid : cfg->admin_gid) != (gid_t)-1
                           ? " or the configured group" : "");
        c->closing = TRUE;
        conn_flush(c);
        return;
    }
    if (g_hash_table_size(s->conns) > cfg->max_clients) {
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "limit", "max_clients");
        json_object_set_int_member(p, "value", cfg->max_clients);
        vml_conn_error(c, VML_ERROR_LIMIT, p,
                       "too many clients (max_clients = %u)", cfg->max_clients);
        c->closing = TRUE;
        conn_flush(c);
        return;
    }
    c->in_source = g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_conn_in, c);
}

static gboolean
on_lease_listen(int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    accept_one(data, fd, TRUE);
    return G_SOURCE_CONTINUE;
}

static gboolean
on_admin_listen(int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    accept_one(data, fd, FALSE);
    return G_SOURCE_CONTINUE;
}

/* Access is decided per peer with SO_PEERCRED, so the socket file itself is
 * open to all: a refused peer gets an error that says why. */
static int
listen_on(const char *path, GError **error)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "socket: %s", g_strerror(errno));
        return -1;
    }
    unlink(path);
    mode_t old = umask(0);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || chmod(path, 0666) < 0 || listen(fd, 128) < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "cannot listen on %s: %s", path, g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

VmlServer *
vml_server_new(VmlDaemon *daemon, int lease_fd, int admin_fd, GError **error)
{
    const VmlDaemonConfig *cfg = daemon->cfg;

    if (lease_fd < 0 || admin_fd < 0) {
        if (g_mkdir_with_parents(cfg->run_dir, 0755) < 0) {
            g_set_error(error, VML_ERROR, VML_ERROR_CONFIG,
                        "cannot create %s: %s", cfg->run_dir, g_strerror(errno));
            return NULL;
        }
        lease_fd = listen_on(cfg->lease_socket, error);
        if (lease_fd < 0)
            return NULL;
        admin_fd = listen_on(cfg->admin_socket, error);
        if (admin_fd < 0) {
            close(lease_fd);
            return NULL;
        }
    }
    VmlServer *s = g_new0(VmlServer, 1);
    s->daemon = daemon;
    s->lease_fd = lease_fd;
    s->admin_fd = admin_fd;
    s->conns = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                     (GDestroyNotify)conn_free, NULL);
    listen_resume(s);
    return s;
}

void
vml_server_listen_fds(VmlServer *s, int *lease_fd, int *admin_fd)
{
    *lease_fd = s->lease_fd;
    *admin_fd = s->admin_fd;
}

void
vml_server_free(VmlServer *s)
{
    if (!s)
        return;
    if (s->lease_source)
        g_source_remove(s->lease_source);
    if (s->admin_source)
        g_source_remove(s->admin_source);
    if (s->pause_source)
        g_source_remove(s->pause_source);
    g_hash_table_unref(s->conns);
    close(s->lease_fd);
    close(s->admin_fd);
    g_free(s);
}

void
vml_server_hand_over(VmlServer *s, GString *json, GArray *fds)
{
    GHashTableIter it;
    gpointer key;
    gboolean first = TRUE;

    g_string_append(json, ",\"connections\":[");
    g_hash_table_iter_init(&it, s->conns);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        VmlConn *c = key;
        /* A reply still queued or half a request read cannot be carried
         * across: that peer sees the connection close, as on a crash. */
        if (!g_queue_is_empty(&c->out) || c->closing ||
            vml_frame_reader_pending(c->reader) != 0)
            continue;
        g_string_append_printf(json, "%s{\"fd\":%d,\"lease\":%s}", first ? "" : ",",
                               c->fd, c->lease_socket ? "true" : "false");
        g_array_append_val(fds, c->fd);
        first = FALSE;
    }
    g_string_append_c(json, ']');
}

void
vml_server_add_connection(VmlServer *s, int fd, gboolean lease_socket)
{
    conn_setup(s, fd, lease_socket);
}

void
vml_server_adopt(VmlServer *s, JsonObject *state)
{
    JsonNode *n = json_object_get_member(state, "connections");
    JsonArray *conns = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;

    for (guint i = 0; conns && i < json_array_get_length(conns); i++) {
        JsonNode *e = json_array_get_element(conns, i);
        if (!JSON_NODE_HOLDS_OBJECT(e))
            continue;
        JsonObject *o = json_node_get_object(e);
        int fd = json_object_get_int_member_with_default(o, "fd", -1);
        if (fd < 0)
            continue;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conn_setup(s, fd, json_object_get_boolean_member_with_default(o, "lease", FALSE));
    }
}
