#include "vml-client.h"
#include "vml-json-write.h"
#include "vml-json-request.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-wire.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 30000

struct _VmlClient {
    int fd;
    int timeout_ms;
    char *path;
    VmlFrameReader *reader;
    /* Why the last send failed, if it did: what a receive that gets no
     * reply at all reports, the daemon having hung up on us. */
    GError *send_error;
    /* Calls sent but not written yet (each ending in its NUL): calls
     * without fds go out together at the next receive, one write for a
     * Register and the call behind it. */
    GString *corked;
    guint awaiting;         /* calls sent whose replies are not read yet */
    gboolean broken;        /* a receive failed: replies may still come */
    VmlClientPool *pool;    /* where C goes back to when freed, if clean */
};

struct _VmlClientPool {
    gatomicrefcount ref;
    pid_t pid;              /* the process whose connections these are */
    char *path;
    guint max_idle;
    GMutex lock;
    GPtrArray *idle;
};

/* SO_RCVTIMEO of C's socket: MS (<= 0: none). */
static void
set_receive_timeout(VmlClient *c, int ms)
{
    struct timeval tv = { .tv_sec = ms > 0 ? ms / 1000 : 0,
                          .tv_usec = ms > 0 ? (ms % 1000) * 1000 : 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Write what is corked; FALSE (and C's send error) when it cannot go. */
static gboolean
flush(VmlClient *c)
{
    if (!c->corked || !c->corked->len)
        return TRUE;
    /* vml_wire_send adds the last NUL itself. */
    gboolean ok = vml_wire_send(c->fd, c->corked->str, c->corked->len - 1, NULL, 0,
                                &c->send_error);
    g_string_truncate(c->corked, 0);
    return ok;
}

VmlClient *
vml_client_connect(const char *socket_path, GError **error)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "socket path too long: %s", socket_path);
        return NULL;
    }
    strcpy(sa.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "cannot create socket: %s", g_strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int saved = errno;
        close(fd);
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "cannot connect to vmleased at %s: %s%s", socket_path,
                    g_strerror(saved),
                    (saved == ENOENT || saved == ECONNREFUSED)
                        ? " (is vmleased running?)" : "");
        return NULL;
    }
    VmlClient *c = g_new0(VmlClient, 1);
    c->fd = fd;
    c->timeout_ms = DEFAULT_TIMEOUT_MS;
    c->path = g_strdup(socket_path);
    c->reader = vml_frame_reader_new();
    set_receive_timeout(c, c->timeout_ms);
    return c;
}

VmlClient *
vml_client_connect_lease(GError **error)
{
    g_autofree char *path = vml_default_lease_socket();
    return vml_client_connect(path, error);
}

VmlClient *
vml_client_connect_admin(GError **error)
{
    g_autofree char *path = vml_default_admin_socket();
    return vml_client_connect(path, error);
}

static gboolean pool_keep(VmlClientPool *pool, VmlClient *c);
static void close_client(VmlClient *c);

void
vml_client_free(VmlClient *c)
{
    if (!c)
        return;
    flush(c);   /* a call nobody waits for still goes */
    VmlClientPool *pool = g_steal_pointer(&c->pool);
    gboolean kept = pool && pool_keep(pool, c);
    if (pool)
        vml_client_pool_unref(pool);
    if (!kept)
        close_client(c);
}

static void
close_client(VmlClient *c)
{
    if (c->corked)
        g_string_free(c->corked, TRUE);
    close(c->fd);
    g_free(c->path);
    vml_frame_reader_free(c->reader);
    g_clear_error(&c->send_error);
    g_free(c);
}

int
vml_client_get_fd(VmlClient *c)
{
    return c->fd;
}

void
vml_client_set_timeout(VmlClient *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
    set_receive_timeout(c, timeout_ms);
}

static gboolean
read_reply(VmlClient *c, char **msg, gsize *len, GArray **fds, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)c->timeout_ms * 1000;
    gboolean first = TRUE;
    while (!vml_frame_reader_pop(c->reader, msg, len, fds)) {
        /* A blocking read bounded by SO_RCVTIMEO (a poll and a read in
         * one); after the first, bounded by what is left of the timeout. */
        gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
        if (!first && c->timeout_ms > 0)
            set_receive_timeout(c, (int)MAX(1, left_ms));
        first = FALSE;
        VmlFillResult got = c->timeout_ms > 0 && left_ms <= 0
            ? VML_FILL_AGAIN : vml_frame_reader_fill_wait(c->reader, c->fd, error);
        switch (got) {
        case VML_FILL_OK:
            break;
        case VML_FILL_AGAIN:
            g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                        "vmleased did not answer within %d s on %s",
                        c->timeout_ms / 1000, c->path);
            return FALSE;
        case VML_FILL_EOF:
            g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                        "vmleased closed the connection on %s", c->path);
            return FALSE;
        case VML_FILL_ERROR:
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
vml_client_send(VmlClient *c, const char *method, JsonObject *params, const int *fds,
                guint n_fds, GError **error)
{
    /* Written around PARAMS, not wrapped in an object of its own. */
    g_autoptr(GString) call = g_string_sized_new(256);
    g_string_append(call, "{\"method\":");
    vml_json_write_strict_string(call, method);
    g_string_append(call, ",\"parameters\":");
    vml_json_write_object(call, params);
    g_string_append_c(call, '}');
    g_clear_error(&c->send_error);
    c->awaiting++;
    if (!n_fds) {
        if (!c->corked)
            c->corked = g_string_sized_new(512);
        g_string_append_len(c->corked, call->str, (gssize)call->len + 1);
        return TRUE;
    }
    if (flush(c) && vml_wire_send(c->fd, call->str, call->len, fds, n_fds, &c->send_error))
        return TRUE;
    if (error)
        *error = g_error_copy(c->send_error);
    return FALSE;
}

static JsonObject *receive(VmlClient *c, GArray **fds_out, JsonObject **error_params,
                           VmlReplyPeekFunc peek, gpointer peek_data, gboolean *got_reply,
                           GError **error);

JsonObject *
vml_client_call(VmlClient *c, const char *method, JsonObject *params,
                const int *fds, guint n_fds, GArray **fds_out,
                JsonObject **error_params, GError **error)
{
    /* A daemon that refuses us says why before it hangs up, so its answer
     * is read even when our own send failed (receive reports the send's
     * error when none came). */
    vml_client_send(c, method, params, fds, n_fds, NULL);
    return vml_client_receive(c, fds_out, error_params, error);
}

static JsonObject *
receive_reporting(VmlClient *c, GArray **fds_out, JsonObject **error_params,
                  VmlReplyPeekFunc peek, gpointer peek_data, GError **error)
{
    flush(c);   /* a failure is C's send error, reported below if no reply comes */
    gboolean got_reply;
    g_autoptr(GError) local = NULL;
    JsonObject *r = receive(c, fds_out, error_params, peek, peek_data, &got_reply, &local);
    if (!got_reply && c->send_error) {
        g_propagate_error(error, g_error_copy(c->send_error));
        return NULL;
    }
    if (local)
        g_propagate_error(error, g_steal_pointer(&local));
    return r;
}

JsonObject *
vml_client_receive(VmlClient *c, GArray **fds_out, JsonObject **error_params, GError **error)
{
    return receive_reporting(c, fds_out, error_params, NULL, NULL, error);
}

JsonObject *
vml_client_receive_peek(VmlClient *c, VmlReplyPeekFunc peek, gpointer peek_data,
                        GError **error)
{
    return receive_reporting(c, NULL, NULL, peek, peek_data, error);
}

gboolean
vml_client_flush(VmlClient *c, GError **error)
{
    if (flush(c))
        return TRUE;
    if (error)
        *error = g_error_copy(c->send_error);
    return FALSE;
}

/* *GOT_REPLY: whether a message came at all (else ERROR says why not). */
static JsonObject *
receive(VmlClient *c, GArray **fds_out, JsonObject **error_params, VmlReplyPeekFunc peek,
        gpointer peek_data, gboolean *got_reply, GError **error)
{
    g_autofree char *msg = NULL;
    gsize len;
    GArray *rfds = NULL;
    *got_reply = read_reply(c, &msg, &len, &rfds, error);
    if (!*got_reply) {
        c->broken = TRUE;
        return NULL;
    }
    if (c->awaiting)
        c->awaiting--;
    if (peek)
        peek(msg, len, peek_data);

    /* The daemon writes strict JSON: the strict parser reads it at a
     * fraction of json-glib's cost, and takes no GType lock (the plugin
     * calls from a QEMU child between fork and exec). */
    g_autoptr(JsonObject) reply = vml_json_parse_object(msg, len, NULL);
    if (!reply) {
        vml_fds_close(rfds);
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "malformed reply from vmleased");
        return NULL;
    }
    JsonNode *pnode = json_object_get_member(reply, "parameters");
    JsonObject *rparams = (pnode && JSON_NODE_HOLDS_OBJECT(pnode))
        ? json_object_ref(json_node_get_object(pnode)) : json_object_new();

    JsonNode *enode = json_object_get_member(reply, "error");
    if (enode) {
        const char *name = JSON_NODE_HOLDS_VALUE(enode) ? json_node_get_string(enode) : NULL;
        const char *text = json_object_has_member(rparams, "message")
            ? json_object_get_string_member_with_default(rparams, "message", NULL) : NULL;
        g_set_error(error, VML_ERROR, vml_error_code_from_name(name ? name : ""),
                    "%s", text ? text : (name ? name : "unknown error"));
        vml_fds_close(rfds);
        if (error_params)
            *error_params = rparams;
        else
            json_object_unref(rparams);
        return NULL;
    }
    if (fds_out)
        *fds_out = rfds;
    else
        vml_fds_close(rfds);
    return rparams;
}

/* ---- a pool of idle connections ------------------------------------------ */

VmlClientPool *
vml_client_pool_new(const char *socket_path, guint max_idle)
{
    VmlClientPool *pool = g_new0(VmlClientPool, 1);
    g_atomic_ref_count_init(&pool->ref);
    pool->pid = getpid();
    pool->path = g_strdup(socket_path);
    pool->max_idle = max_idle;
    g_mutex_init(&pool->lock);
    pool->idle = g_ptr_array_new();
    return pool;
}

static VmlClientPool *
pool_ref(VmlClientPool *pool)
{
    g_atomic_ref_count_inc(&pool->ref);
    return pool;
}

void
vml_client_pool_unref(VmlClientPool *pool)
{
    if (!pool || !g_atomic_ref_count_dec(&pool->ref))
        return;
    /* A forked child has copies of the idle fds: closing those is its
     * own business, but never through a lock another thread of its
     * parent may have held at fork(). */
    if (getpid() == pool->pid)
        g_mutex_clear(&pool->lock);
    for (guint i = 0; i < pool->idle->len; i++)
        close_client(pool->idle->pdata[i]);
    g_ptr_array_unref(pool->idle);
    g_free(pool->path);
    g_free(pool);
}

/* Nothing came on an idle connection, not even the daemon hanging up
 * (a restarted or re-executed vmleased closes it): safe to send on. */
static gboolean
still_quiet(VmlClient *c)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
    return poll(&p, 1, 0) == 0;
}

VmlClient *
vml_client_pool_connect(VmlClientPool *pool, GError **error)
{
    /* Only the process that made the pool uses it: a child between fork()
     * and exec() connects on its own, and never takes the pool's lock. */
    gboolean ours = getpid() == pool->pid;
    while (ours) {
        g_mutex_lock(&pool->lock);
        VmlClient *c = pool->idle->len ? g_ptr_array_steal_index_fast(pool->idle,
                                                                       pool->idle->len - 1)
                                       : NULL;
        g_mutex_unlock(&pool->lock);
        if (!c)
            break;
        if (still_quiet(c)) {
            c->pool = pool_ref(pool);
            return c;
        }
        close_client(c);
    }
    VmlClient *c = vml_client_connect(pool->path, error);
    if (c && ours)
        c->pool = pool_ref(pool);
    return c;
}

/* C back into POOL if the next call can start on it as on a new
 * connection: every reply read, nothing unsent, no failure. */
static gboolean
pool_keep(VmlClientPool *pool, VmlClient *c)
{
    if (getpid() != pool->pid || c->send_error || c->broken || c->awaiting ||
        (c->corked && c->corked->len) || c->timeout_ms != DEFAULT_TIMEOUT_MS ||
        vml_frame_reader_pending(c->reader))
        return FALSE;
    g_mutex_lock(&pool->lock);
    gboolean kept = pool->idle->len < pool->max_idle;
    if (kept)
        g_ptr_array_add(pool->idle, c);
    g_mutex_unlock(&pool->lock);
    return kept;
}
