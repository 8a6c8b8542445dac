/* The client's connection pool (lib/vml-client) against a small server
 * thread that answers every request with an empty reply and notes which
 * connection each request came on: a clean connection is used again, and
 * one with a reply unread, one the server hung up on or spoke on unasked,
 * one beyond max_idle, and any in a forked child never are. */
#include "vml-client.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONNS 16

typedef struct {
    char *dir;
    char *path;
    int listen_fd;
    int wake[2];              /* a byte: stop */
    GThread *thread;
    GMutex lock;
    int conns[MAX_CONNS];
    guint n_conns;            /* accepted so far */
    GArray *request_conn;     /* per request: the index of its connection */
    gboolean hang_up;         /* close a connection after each reply */
    gboolean chatter;         /* send an unasked message after each reply */
    guint slow_request;       /* 1 + the index of a request answered 50 ms late */
} Server;

static void
answer(Server *s, guint idx, int fd)
{
    static const char reply[] = "{\"parameters\":{}}";
    /* The client may have gone (a reply it would not wait for). */
    gboolean sent = send(fd, reply, sizeof(reply), MSG_NOSIGNAL) == (ssize_t)sizeof(reply);
    if (sent && s->chatter) {
        /* After the client has read its reply and put the connection back. */
        g_usleep(20000);
        send(fd, reply, sizeof(reply), MSG_NOSIGNAL);
    }
    if (s->hang_up) {
        close(fd);
        s->conns[idx] = -1;
    }
}

static gpointer
serve(gpointer data)
{
    Server *s = data;
    GString *in[MAX_CONNS] = { NULL };
    for (;;) {
        struct pollfd p[MAX_CONNS + 2];
        guint map[MAX_CONNS + 2];
        nfds_t n = 0;
        p[n++] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
        p[n++] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
        for (guint i = 0; i < s->n_conns; i++) {
            if (s->conns[i] >= 0) {
                map[n] = i;
                p[n++] = (struct pollfd){ .fd = s->conns[i], .events = POLLIN };
            }
        }
        g_assert_cmpint(poll(p, n, -1), >, 0);
        if (p[0].revents)
            break;
        if (p[1].revents) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            g_assert_cmpint(fd, >=, 0);
            g_mutex_lock(&s->lock);
            g_assert_cmpuint(s->n_conns, <, MAX_CONNS);
            in[s->n_conns] = g_string_new(NULL);
            s->conns[s->n_conns++] = fd;
            g_mutex_unlock(&s->lock);
        }
        for (nfds_t k = 2; k < n; k++) {
            if (!p[k].revents)
                continue;
            guint i = map[k];
            char buf[4096];
            ssize_t got = read(s->conns[i], buf, sizeof(buf));
            if (got <= 0) {
                close(s->conns[i]);
                s->conns[i] = -1;
                continue;
            }
            g_string_append_len(in[i], buf, got);
            char *nul;
            while (s->conns[i] >= 0 && (nul = memchr(in[i]->str, '\0', in[i]->len))) {
                g_string_erase(in[i], 0, nul - in[i]->str + 1);
                g_mutex_lock(&s->lock);
                g_array_append_val(s->request_conn, i);
                gboolean slow = s->request_conn->len == s->slow_request;
                g_mutex_unlock(&s->lock);
                if (slow)
                    g_usleep(50000);
                answer(s, i, s->conns[i]);
            }
        }
    }
    for (guint i = 0; i < s->n_conns; i++) {
        if (s->conns[i] >= 0)
            close(s->conns[i]);
        g_string_free(in[i], TRUE);
    }
    return NULL;
}

static Server *
server_new(void)
{
    Server *s = g_new0(Server, 1);
    s->dir = g_dir_make_tmp("client-pool-XXXXXX", NULL);
    s->path = g_build_filename(s->dir, "s.sock", NULL);
    s->request_conn = g_array_new(FALSE, FALSE, sizeof(guint));
    g_mutex_init(&s->lock);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, s->path, sizeof(sa.sun_path));
    g_assert_cmpint(bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(listen(s->listen_fd, 16), ==, 0);
    g_assert_cmpint(pipe2(s->wake, O_CLOEXEC), ==, 0);
    s->thread = g_thread_new("server", serve, s);
    return s;
}

static void
server_free(Server *s)
{
    g_assert_cmpint(write(s->wake[1], "x", 1), ==, 1);
    g_thread_join(s->thread);
    close(s->wake[0]);
    close(s->wake[1]);
    close(s->listen_fd);
    unlink(s->path);
    g_rmdir(s->dir);
    g_array_unref(s->request_conn);
    g_mutex_clear(&s->lock);
    g_free(s->path);
    g_free(s->dir);
    g_free(s);
}

static guint
accepted(Server *s)
{
    g_mutex_lock(&s->lock);
    guint n = s->n_conns;
    g_mutex_unlock(&s->lock);
    return n;
}

/* The connection index of request I. */
static guint
conn_of(Server *s, guint i)
{
    g_mutex_lock(&s->lock);
    g_assert_cmpuint(i, <, s->request_conn->len);
    guint c = g_array_index(s->request_conn, guint, i);
    g_mutex_unlock(&s->lock);
    return c;
}

/* A pooled client that has made one call, still out of the pool. */
static VmlClient *
called_client(VmlClientPool *pool)
{
    g_autoptr(GError) error = NULL;
    VmlClient *c = vml_client_pool_connect(pool, &error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) r = vml_client_call(c, "io.vmlease.Admin.Status", NULL, NULL, 0,
                                              NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(r);
    return c;
}

/* One call on a pooled client, which then goes back (or not). */
static void
call_once(VmlClientPool *pool)
{
    vml_client_free(called_client(pool));
}

/* Wait until the server saw N requests (it answers from its thread). */
static void
wait_requests(Server *s, guint n)
{
    for (int i = 0; i < 2000; i++) {
        g_mutex_lock(&s->lock);
        guint have = s->request_conn->len;
        g_mutex_unlock(&s->lock);
        if (have >= n)
            return;
        g_usleep(1000);
    }
    g_assert_not_reached();
}

static void
test_reused(void)
{
    Server *s = server_new();
    VmlClientPool *pool = vml_client_pool_new(s->path, 4);
    for (int i = 0; i < 3; i++)
        call_once(pool);
    g_assert_cmpuint(accepted(s), ==, 1);
    g_assert_cmpuint(conn_of(s, 0), ==, 0);
    g_assert_cmpuint(conn_of(s, 2), ==, 0);
    vml_client_pool_unref(pool);
    server_free(s);
}

/* The next call through POOL (the server's request N) goes on a second,
 * new connection; then POOL and S go. */
static void
assert_next_call_connects_anew(Server *s, VmlClientPool *pool, guint n)
{
    call_once(pool);
    g_assert_cmpuint(accepted(s), ==, 2);
    g_assert_cmpuint(conn_of(s, n), ==, 1);
    vml_client_pool_unref(pool);
    server_free(s);
}

static void
test_unread_reply_not_kept(void)
{
    Server *s = server_new();
    s->slow_request = 2;   /* not there yet when the client is freed */
    VmlClientPool *pool = vml_client_pool_new(s->path, 4);
    {
        g_autoptr(GError) error = NULL;
        g_autoptr(VmlClient) c = vml_client_pool_connect(pool, &error);
        g_assert_no_error(error);
        g_assert_true(vml_client_send(c, "io.vmlease.Admin.Status", NULL, NULL, 0, &error));
        g_assert_true(vml_client_send(c, "io.vmlease.Admin.Status", NULL, NULL, 0, &error));
        g_autoptr(JsonObject) r = vml_client_receive(c, NULL, NULL, &error);
        g_assert_no_error(error);
        /* The second reply is still coming: C must not serve another call. */
    }
    wait_requests(s, 2);
    assert_next_call_connects_anew(s, pool, 2);
}

/* A server that hung up (HANG_UP) or spoke unasked (CHATTER, 20 ms after
 * its reply) on the idle connection: the next call connects anew. */
static void
assert_idle_not_taken(gboolean hang_up, gboolean chatter)
{
    Server *s = server_new();
    s->hang_up = hang_up;
    s->chatter = chatter;
    VmlClientPool *pool = vml_client_pool_new(s->path, 4);
    call_once(pool);
    g_usleep(60000);   /* what the server does after its reply is in by now */
    assert_next_call_connects_anew(s, pool, 1);
}

static void
test_hung_up_not_taken(void)
{
    assert_idle_not_taken(TRUE, FALSE);
}

static void
test_unasked_message_not_taken(void)
{
    assert_idle_not_taken(FALSE, TRUE);
}

static void
test_max_idle(void)
{
    Server *s = server_new();
    VmlClientPool *pool = vml_client_pool_new(s->path, 2);
    VmlClient *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = called_client(pool);
    for (int i = 0; i < 3; i++)
        vml_client_free(c[i]);   /* the third finds the pool full: closed */
    g_assert_cmpuint(accepted(s), ==, 3);
    for (int i = 0; i < 3; i++)
        c[i] = called_client(pool);
    g_assert_cmpuint(accepted(s), ==, 4);
    for (int i = 0; i < 3; i++)
        vml_client_free(c[i]);
    vml_client_pool_unref(pool);
    server_free(s);
}

static void
test_forked_child_connects_anew(void)
{
    Server *s = server_new();
    VmlClientPool *pool = vml_client_pool_new(s->path, 4);
    call_once(pool);   /* connection 0, now idle in the pool */
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        g_autoptr(GError) error = NULL;
        VmlClient *c = vml_client_pool_connect(pool, &error);
        JsonObject *r = c ? vml_client_call(c, "io.vmlease.Admin.Status", NULL, NULL, 0, NULL,
                                            NULL, &error) : NULL;
        _exit(r ? 0 : 1);
    }
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wait_requests(s, 2);
    g_assert_cmpuint(conn_of(s, 1), ==, 1);   /* the child's own */
    call_once(pool);                            /* the parent's idle one again */
    g_assert_cmpuint(conn_of(s, 2), ==, 0);
    g_assert_cmpuint(accepted(s), ==, 2);
    vml_client_pool_unref(pool);
    server_free(s);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/client-pool/reused", test_reused);
    g_test_add_func("/client-pool/unread-reply-not-kept", test_unread_reply_not_kept);
    g_test_add_func("/client-pool/hung-up-not-taken", test_hung_up_not_taken);
    g_test_add_func("/client-pool/unasked-message-not-taken", test_unasked_message_not_taken);
    g_test_add_func("/client-pool/max-idle", test_max_idle);
    g_test_add_func("/client-pool/forked-child-connects-anew", test_forked_child_connects_anew);
    return g_test_run();
}
