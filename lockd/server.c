#include "server.h"
#include "daemon-log.h"
#include "metrics.h"
#include "fd-watch.h"
#include "vml-wire.h"
#include "vml-json-write.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Fair under load (docs/admin-guide.md has the whole story):
 *
 * - Connections: each non-root uid may have max_clients_per_uid on each
 *   socket; non-root connections together stop reserved_clients short of
 *   max_clients (room for root), those on the admin socket twice as short
 *   (room for the lease socket as well).
 * - Replies: a connection with OUT_QUEUE_MAX bytes of replies unsent, or a
 *   message's worth of fds, is neither dispatched nor read until its peer
 *   reads; with OUT_TOTAL_MAX queued for everybody, a non-root connection
 *   waits for each reply to go before its next call is dispatched.
 * - Turns: one connection gets DISPATCH_BATCH calls in a turn of the main
 *   loop; what it pipelined beyond that waits in its frame reader for the
 *   next turn, after everybody else's.
 * - Unfinished requests: the bytes held in non-root connections' frame
 *   readers stay within max_pending_request_bytes. At the limit a
 *   connection in the middle of a message is not read (it is "held"); one
 *   with nothing pending may still read READ_FRESH bytes, enough for any
 *   ordinary call. One held connection at a time, the longest held, is let
 *   past the limit to finish its message (the "finisher"), within
 *   FINISH_TIMEOUT_S, so that big messages cannot lock each other out; a
 *   finisher that does not finish is hung up on.
 * - Refusals and trouble are logged at a bounded rate (RateLog): the first
 *   line in full, then one summary per interval while it goes on. */
#define OUT_QUEUE_MAX (1024 * 1024)
#define OUT_TOTAL_MAX (32 * 1024 * 1024)
#define OUT_MSG_COST 64         /* bookkeeping of one queued reply, in bytes */
#define FLUSH_IOV_MAX 16        /* replies gathered into one sendmsg at most */
#define DISPATCH_BATCH 16
#define ACCEPT_BATCH 32
#define READ_CHUNK_MAX 65536
#define READ_FRESH 4096
#define FINISH_TIMEOUT_S 5
#define SEND_RETRY_MS 50
#define LISTEN_PAUSE_MS 100

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
    int answered;       /* since vml_conn_call_begin: -1 none, -2 a reply, else an error code */
    gboolean lease_socket;
    VmlAccess access;
    uid_t uid;
    pid_t pid;
    VmlCreds creds;     /* for opening images with the peer's rights */
    gboolean creds_read;  /* its groups too: read at the first need, root's never */
    VmlFrameReader *reader;
    gsize reader_counted;   /* its pending bytes as counted in server->pending_bytes */
    GQueue out;
    gsize out_bytes;    /* unsent reply bytes, plus OUT_MSG_COST a reply */
    guint out_fds;
    gboolean counted;   /* holds a place in the connection counts */
    GList *held;        /* its link in server->held: waiting for room */
    guint in_source;
    guint out_source;
    guint work_source;  /* whole messages left over for the next turn */
    guint hup_source;   /* held: not read, but a hang-up is noticed */
    guint retry_source; /* the kernel was short of memory for a send */
    gboolean closing;   /* close once out is empty */
    gint64 holder;      /* registered on this connection last; 0: none */
};

typedef enum {
    LOG_DENIED,         /* not allowed on the socket */
    LOG_LIMIT,          /* over a connection limit */
    LOG_ACCEPT,         /* accept() or SO_PEERCRED failed */
    LOG_HELD,           /* reads held back at max_pending_request_bytes */
    LOG_SEND,           /* a reply could not be sent (yet) */
    N_LOGS
} LogKind;

#define LOG_UIDS 4

/* One kind of event, logged at most once an interval: the first in full,
 * the rest counted (per uid, for the first LOG_UIDS uids) and summed up
 * when the interval is over. */
typedef struct {
    LogKind kind;
    gint64 interval_ms;
    GLogLevelFlags level;
    guint timer;        /* running while a window is open */
    gint64 since;
    guint more;
    struct { uid_t uid; guint n; } uids[LOG_UIDS];
    guint n_uids;
} RateLog;

struct _VmlServer {
    VmlDaemon *daemon;
    VmlMessageHandler handler;
    int lease_fd;
    int admin_fd;
    guint lease_source;
    guint admin_source;
    guint pause_source;
    GHashTable *conns;  /* VmlConn* set */
    gboolean freeing;
    /* Connections let in. */
    guint n_counted;
    guint n_nonroot;
    guint n_nonroot_admin;
    GHashTable *per_uid[2];   /* [lease_socket]: non-root uid -> connections */
    /* Unfinished requests of non-root connections. */
    gsize pending_bytes;
    GQueue held;              /* VmlConn*, longest held first */
    VmlConn *finisher;
    guint finish_timer;
    guint wake_source;
    gsize out_total;          /* queued reply bytes of all connections */
    RateLog logs[N_LOGS];
};

static void conn_free(VmlConn *c);
static void conn_flush(VmlConn *c);
static void conn_schedule(VmlConn *c);
static void finisher_pick(VmlServer *s);
static gboolean on_conn_in(int fd, GIOCondition cond, gpointer data);
static gboolean on_conn_work(gpointer data);

/* ---- logging at a bounded rate ------------------------------------------ */

static const char *
rate_log_what(LogKind kind)
{
    switch (kind) {
    case LOG_DENIED: return "refused %u more connections in the last %.0f s: not allowed on their socket";
    case LOG_LIMIT:  return "refused %u more connections in the last %.0f s: over a connection limit";
    case LOG_ACCEPT: return "could not accept %u more clients in the last %.0f s";
    case LOG_HELD:   return "held back %u more reads of unfinished requests in the last %.0f s "
                            "(max_pending_request_bytes)";
    case LOG_SEND:   return "could not send %u more replies in the last %.0f s";
    case N_LOGS:     break;
    }
    g_assert_not_reached();
}

static void
rate_log_summary(RateLog *l)
{
    g_autoptr(GString) who = g_string_new(NULL);
    guint named = 0;
    for (guint i = 0; i < l->n_uids; i++) {
        if (l->uids[i].uid == (uid_t)-1)
            continue;
        g_string_append_printf(who, "%s uid %u: %u", who->len ? "," : "",
                               (unsigned)l->uids[i].uid, l->uids[i].n);
        named += l->uids[i].n;
    }
    if (who->len && named < l->more)
        g_string_append_printf(who, ", others: %u", l->more - named);
    double secs = (g_get_monotonic_time() - l->since) / (double)G_USEC_PER_SEC;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    g_autofree char *text = g_strdup_printf(rate_log_what(l->kind), l->more, MAX(secs, 1.0));
#pragma GCC diagnostic pop
    g_log(G_LOG_DOMAIN, l->level, "%s%s%s%s", text, who->len ? " (" : "",
          who->len ? who->str + 1 : "", who->len ? ")" : "");
    l->more = 0;
    l->n_uids = 0;
    l->since = g_get_monotonic_time();
}

static gboolean
on_rate_log_tick(gpointer data)
{
    RateLog *l = data;
    if (!l->more) {
        l->timer = 0;   /* quiet for an interval: the next one is logged in full */
        return G_SOURCE_REMOVE;
    }
    rate_log_summary(l);
    return G_SOURCE_CONTINUE;
}

/* Log an event of KIND caused by UID ((uid_t)-1: nobody in particular). */
static void G_GNUC_PRINTF(4, 5)
rate_log(VmlServer *s, LogKind kind, uid_t uid, const char *format, ...)
{
    RateLog *l = &s->logs[kind];
    if (!l->timer) {
        va_list ap;
        va_start(ap, format);
        g_autofree char *text = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_log(G_LOG_DOMAIN, l->level, "%s", text);
        l->since = g_get_monotonic_time();
        l->timer = g_timeout_add(l->interval_ms, on_rate_log_tick, l);
        return;
    }
    l->more++;
    for (guint i = 0; i < l->n_uids; i++) {
        if (l->uids[i].uid == uid) {
            l->uids[i].n++;
            return;
        }
    }
    if (l->n_uids < LOG_UIDS) {
        l->uids[l->n_uids].uid = uid;
        l->uids[l->n_uids].n = 1;
        l->n_uids++;
    }
}

static void
rate_logs_init(VmlServer *s)
{
    static const struct { gint64 ms; GLogLevelFlags level; } kinds[N_LOGS] = {
        [LOG_DENIED] = { 1000, G_LOG_LEVEL_MESSAGE },
        [LOG_LIMIT] = { 1000, G_LOG_LEVEL_MESSAGE },
        [LOG_ACCEPT] = { 10000, G_LOG_LEVEL_WARNING },
        [LOG_HELD] = { 10000, G_LOG_LEVEL_MESSAGE },
        [LOG_SEND] = { 1000, G_LOG_LEVEL_WARNING },
    };
    for (guint i = 0; i < N_LOGS; i++)
        s->logs[i] = (RateLog){ .kind = i, .interval_ms = kinds[i].ms, .level = kinds[i].level };
}

/* On the way out: what was only counted so far is said now. */
static void
rate_logs_flush(VmlServer *s)
{
    for (guint i = 0; i < N_LOGS; i++) {
        if (s->logs[i].more)
            rate_log_summary(&s->logs[i]);
        if (s->logs[i].timer)
            g_source_remove(s->logs[i].timer);
        s->logs[i].timer = 0;
    }
}

/* ---- replies ------------------------------------------------------------- */

/* A reply this big leaves its tree's memory with malloc, not the system. */
#define TRIM_AFTER_BYTES (256 * 1024)

static void
out_msg_free(OutMsg *m)
{
    gboolean big = m->len >= TRIM_AFTER_BYTES;
    for (guint i = 0; i < m->n_fds; i++)
        close(m->fds[i]);
    g_free(m->fds);
    g_free(m->data);
    g_free(m);
    if (big)
        malloc_trim(0);
}

VmlAccess
vml_conn_access(VmlConn *c)
{
    return c->access;
}

pid_t
vml_conn_pid(VmlConn *c)
{
    return c->pid;
}

gint64
vml_conn_holder(VmlConn *c)
{
    return c->holder;
}

void
vml_conn_set_holder(VmlConn *c, gint64 holder)
{
    c->holder = holder;
}

uid_t
vml_conn_uid(VmlConn *c)
{
    return c->uid;
}

const VmlCreds *
vml_conn_creds(VmlConn *c)
{
    /* Root's opens are vmleased's own (open-as.h): no groups needed. */
    if (!c->creds_read && c->creds.uid != 0) {
        struct ucred cr = { .pid = c->pid, .uid = c->creds.uid, .gid = c->creds.gid };
        vml_creds_of_peer(c->fd, &cr, &c->creds);
        c->creds_read = TRUE;
    }
    return &c->creds;
}

gboolean
vml_conn_is_lease_socket(VmlConn *c)
{
    return c->lease_socket;
}

/* C has not been freed meanwhile (S: its server, taken before). */
static gboolean
conn_alive(VmlServer *s, VmlConn *c)
{
    return g_hash_table_contains(s->conns, c);
}

static void
conn_destroy(VmlConn *c)
{
    g_hash_table_remove(c->server->conns, c);
}

static void
out_count(VmlConn *c, gssize bytes, int fds)
{
    c->out_bytes += bytes;
    c->server->out_total += bytes;
    c->out_fds += fds;
}

/* The name of the limit behind an errno that says we ran out of something. */
static const char *
errno_limit(int err)
{
    return err == EMFILE ? "RLIMIT_NOFILE" : err == ENFILE ? "fs.file-max" : "memory";
}

static void conn_queue(VmlConn *c, JsonObject *msg, const int *fds, guint n_fds);

/* Queue JSON (LEN bytes, taken) with FDS (dups are sent). */
static void
conn_queue_text(VmlConn *c, char *json, gsize len, const int *fds, guint n_fds)
{
    OutMsg *m = g_new0(OutMsg, 1);
    m->data = g_realloc(json, len + 1);
    m->data[len] = '\0';
    m->len = len + 1;
    if (n_fds) {
        m->fds = g_new(int, n_fds);
        for (guint i = 0; i < n_fds; i++) {
            m->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (m->fds[i] < 0) {
                /* Never send fewer fds than promised. */
                int err = errno;
                m->n_fds = i;
                out_msg_free(m);
                g_autoptr(JsonObject) e = json_object_new();
                JsonObject *p = json_object_new();
                gboolean short_of = err == EMFILE || err == ENFILE || err == ENOMEM;
                if (short_of)
                    json_object_set_string_member(p, "limit", errno_limit(err));
                g_autofree char *text = g_strdup_printf(
                    "cannot send the reply's %u file descriptors: %s", n_fds, g_strerror(err));
                json_object_set_string_member(p, "message", text);
                json_object_set_string_member(e, "error", vml_error_name(
                    short_of ? VML_ERROR_LIMIT : VML_ERROR_FAILED));
                json_object_set_object_member(e, "parameters", p);
                conn_queue(c, e, NULL, 0);
                return;
            }
        }
        m->n_fds = n_fds;
    }
    g_queue_push_tail(&c->out, m);
    out_count(c, m->len + OUT_MSG_COST, m->n_fds);
}

static void
conn_queue(VmlConn *c, JsonObject *msg, const int *fds, guint n_fds)
{
    gsize len;
    char *json = vml_json_to_string(msg, &len);
    conn_queue_text(c, json, len, fds, n_fds);
}

#define REPLY_HEAD "{\"parameters\":"

GString *
vml_conn_reply_start(gsize size)
{
    GString *out = g_string_sized_new(sizeof(REPLY_HEAD) + size + 1);
    g_string_append_len(out, REPLY_HEAD, sizeof(REPLY_HEAD) - 1);
    return out;
}

void
vml_conn_reply_text(VmlConn *c, GString *out, const int *fds, guint n_fds)
{
    g_assert(g_str_has_prefix(out->str, REPLY_HEAD));
    g_string_append_c(out, '}');
    c->answered = -2;
    gsize len = out->len;
    conn_queue_text(c, g_string_free(out, FALSE), len, fds, n_fds);
}

void
vml_conn_reply(VmlConn *c, JsonObject *params, const int *fds, guint n_fds)
{
    /* Written around PARAMS, not wrapped in an object of its own. */
    g_autoptr(JsonObject) owned = params;
    c->answered = -2;
    GString *out = g_string_sized_new(256);
    g_string_append(out, "{\"parameters\":");
    vml_json_write_object(out, owned);
    g_string_append_c(out, '}');
    gsize len = out->len;
    conn_queue_text(c, g_string_free(out, FALSE), len, fds, n_fds);
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
    c->answered = (int)code;
    conn_queue(c, msg, NULL, 0);
}

void
vml_conn_call_begin(VmlConn *c)
{
    c->answered = -1;
}

int
vml_conn_call_outcome(VmlConn *c)
{
    return c->answered;
}

void
vml_conn_error_gerror(VmlConn *c, const GError *error, JsonObject *params)
{
    VmlErrorCode code = error->domain == VML_ERROR ? (VmlErrorCode)error->code : VML_ERROR_FAILED;
    vml_conn_error(c, code, params, "%s", error->message);
}

/* A reply's fds cannot go (ETOOMANYREFS: too many fds in flight): send an
 * error saying so in its place, rather than the reply without them. */
static void
out_msg_replace_fds_lost(VmlConn *c, OutMsg *m, int err)
{
    g_autoptr(JsonObject) e = json_object_new();
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "limit", "RLIMIT_NOFILE");
    g_autofree char *text = g_strdup_printf("cannot send the reply's %u file descriptors: %s",
                                            m->n_fds, g_strerror(err));
    json_object_set_string_member(p, "message", text);
    json_object_set_string_member(e, "error", vml_error_name(VML_ERROR_LIMIT));
    json_object_set_object_member(e, "parameters", p);
    gsize len;
    char *json = vml_json_to_string(e, &len);
    out_count(c, (gssize)(len + 1) - (gssize)m->len, -(int)m->n_fds);
    for (guint i = 0; i < m->n_fds; i++)
        close(m->fds[i]);
    g_clear_pointer(&m->fds, g_free);
    m->n_fds = 0;
    g_free(m->data);
    m->data = g_realloc(json, len + 1);
    m->data[len] = '\0';
    m->len = len + 1;
}

static gboolean
on_conn_out(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    VmlConn *c = data;
    VmlServer *s = c->server;
    /* Ended now, not on return: the flush may close the fd. */
    vml_fd_watch_remove(c->out_source);
    c->out_source = 0;
    conn_flush(c);
    if (conn_alive(s, c))
        conn_schedule(c);
    return G_SOURCE_REMOVE;
}

static gboolean
on_send_retry(gpointer data)
{
    VmlConn *c = data;
    VmlServer *s = c->server;
    c->retry_source = 0;
    conn_flush(c);
    if (conn_alive(s, c))
        conn_schedule(c);
    return G_SOURCE_REMOVE;
}

/* Write what we can. May free C (see conn_alive). */
static void
conn_flush(VmlConn *c)
{
    OutMsg *m;
    while ((m = g_queue_peek_head(&c->out))) {
        /* Queued replies go in one sendmsg, but a reply with fds goes
         * alone: the reader gives a read's fds to the last message that
         * starts in it (vml-wire.c). */
        gboolean alone = m->n_fds && m->off == 0;
        struct iovec iov[FLUSH_IOV_MAX];
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 0 };
        for (GList *l = c->out.head; l && mh.msg_iovlen < FLUSH_IOV_MAX; l = l->next) {
            OutMsg *q = l->data;
            if (q != m && (q->n_fds || alone))
                break;
            iov[mh.msg_iovlen++] = (struct iovec){ .iov_base = q->data + q->off,
                                                   .iov_len = q->len - q->off };
        }
        VmlFdControl control;
        if (alone)
            vml_wire_attach_fds(&mh, &control, m->fds, m->n_fds);
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err == EAGAIN) {
                if (!c->out_source)
                    c->out_source = vml_fd_watch_add(c->fd, G_IO_OUT, on_conn_out, c);
                return;
            }
            if (err == ETOOMANYREFS && m->n_fds && m->off == 0) {
                rate_log(c->server, LOG_SEND, c->uid,
                         "cannot send file descriptors to uid %u (pid %d): %s; "
                         "it gets LimitReached instead", (unsigned)c->uid, (int)c->pid,
                         g_strerror(err));
                out_msg_replace_fds_lost(c, m, err);
                continue;
            }
            if (err == ENOBUFS || err == ENOMEM) {
                rate_log(c->server, LOG_SEND, c->uid,
                         "cannot send a reply to uid %u (pid %d) for now: %s; trying again",
                         (unsigned)c->uid, (int)c->pid, g_strerror(err));
                if (!c->retry_source)
                    c->retry_source = g_timeout_add(SEND_RETRY_MS, on_send_retry, c);
                return;
            }
            if (err != EPIPE && err != ECONNRESET)
                rate_log(c->server, LOG_SEND, c->uid,
                         "cannot send a reply to uid %u (pid %d): %s; hanging up",
                         (unsigned)c->uid, (int)c->pid, g_strerror(err));
            conn_destroy(c);
            return;
        }
        out_count(c, -n, 0);
        /* Written: whole messages off the queue, the rest of a part one
         * kept for the next send. */
        while (n > 0 && (m = g_queue_peek_head(&c->out))) {
            gsize take = MIN((gsize)n, m->len - m->off);
            m->off += take;
            n -= (ssize_t)take;
            if (m->off < m->len)
                break;
            g_queue_pop_head(&c->out);
            out_count(c, -OUT_MSG_COST, -(int)m->n_fds);
            out_msg_free(m);
        }
    }
    if (c->closing)
        conn_destroy(c);
}

/* ---- reading and dispatching --------------------------------------------- */

static gsize
pending_room(VmlServer *s)
{
    gsize budget = s->daemon->cfg->max_pending_request_bytes;
    return s->pending_bytes < budget ? budget - s->pending_bytes : 0;
}

static gboolean
on_wake_held(gpointer data)
{
    VmlServer *s = data;
    s->wake_source = 0;
    /* Each one looks for room again when it reads; who finds none is held
     * again, at the back. */
    while (!g_queue_is_empty(&s->held) && pending_room(s) >= READ_FRESH) {
        VmlConn *c = g_queue_pop_head(&s->held);
        c->held = NULL;
        conn_schedule(c);
    }
    return G_SOURCE_REMOVE;
}

static void
wake_held_soon(VmlServer *s)
{
    if (!s->freeing && !s->wake_source && !g_queue_is_empty(&s->held) &&
        pending_room(s) >= READ_FRESH)
        s->wake_source = g_idle_add(on_wake_held, s);
}

static void
finisher_done(VmlServer *s)
{
    s->finisher = NULL;
    if (s->finish_timer)
        g_source_remove(s->finish_timer);
    s->finish_timer = 0;
    finisher_pick(s);
}

/* Recount C's pending bytes after its reader changed. */
static void
pending_update(VmlConn *c)
{
    if (c->uid == 0)
        return;
    VmlServer *s = c->server;
    gsize now = vml_frame_reader_pending(c->reader);
    gboolean fell = now < c->reader_counted;
    s->pending_bytes = s->pending_bytes - c->reader_counted + now;
    c->reader_counted = now;
    if (s->finisher == c && vml_frame_reader_has_message(c->reader))
        finisher_done(s);
    if (fell)
        wake_held_soon(s);
}

static gboolean
on_finish_timeout(gpointer data)
{
    VmlServer *s = data;
    VmlConn *c = s->finisher;
    s->finish_timer = 0;
    s->finisher = NULL;
    const VmlDaemonConfig *cfg = s->daemon->cfg;
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "limit", "max_pending_request_bytes");
    json_object_set_int_member(p, "value", cfg->max_pending_request_bytes);
    rate_log(s, LOG_HELD, c->uid,
             "hanging up on uid %u (pid %d): its message was let past "
             "max_pending_request_bytes and did not end within %d s",
             (unsigned)c->uid, (int)c->pid, FINISH_TIMEOUT_S);
    vml_conn_error(c, VML_ERROR_LIMIT, p,
                   "message not finished within %d s while unfinished requests are at "
                   "max_pending_request_bytes = %u", FINISH_TIMEOUT_S,
                   cfg->max_pending_request_bytes);
    c->closing = TRUE;
    conn_flush(c);
    if (conn_alive(s, c))
        conn_schedule(c);
    finisher_pick(s);
    return G_SOURCE_REMOVE;
}

/* At the limit, with nobody finishing: the longest-held connection may go
 * past it to finish its message. */
static void
finisher_pick(VmlServer *s)
{
    if (s->freeing || s->finisher || g_queue_is_empty(&s->held) ||
        pending_room(s) >= READ_FRESH)
        return;
    VmlConn *c = g_queue_pop_head(&s->held);
    c->held = NULL;
    s->finisher = c;
    s->finish_timer = g_timeout_add_seconds(FINISH_TIMEOUT_S, on_finish_timeout, s);
    conn_schedule(c);
}

static void
conn_hold(VmlConn *c)
{
    VmlServer *s = c->server;
    g_queue_push_tail(&s->held, c);
    c->held = g_queue_peek_tail_link(&s->held);
    rate_log(s, LOG_HELD, c->uid,
             "unfinished requests of non-root clients are at max_pending_request_bytes = %u: "
             "holding back uid %u (pid %d) and any other in the middle of a message",
             s->daemon->cfg->max_pending_request_bytes, (unsigned)c->uid, (int)c->pid);
    finisher_pick(s);
}

/* Replies are piling up unread: no more calls from C for now. */
static gboolean
conn_blocked(VmlConn *c)
{
    return c->out_bytes >= OUT_QUEUE_MAX || c->out_fds >= VML_FDS_MAX ||
           (c->uid != 0 && c->out_bytes > 0 && c->server->out_total >= OUT_TOTAL_MAX);
}

static gboolean
on_conn_hup(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    VmlConn *c = data;
    vml_fd_watch_remove(c->hup_source);   /* before the fd is closed */
    c->hup_source = 0;
    conn_destroy(c);
    return G_SOURCE_REMOVE;
}

/* Watch for what C can do next: dispatch what its reader holds (next
 * turn), read, or neither (closing, replies piling up, held). */
static void
conn_schedule(VmlConn *c)
{
    gboolean go = !c->closing && !conn_blocked(c);
    gboolean has_msg = go && vml_frame_reader_has_message(c->reader);
    gboolean want_work = go && has_msg;
    gboolean want_in = go && !has_msg && !c->held;

    if (want_work && !c->work_source)
        c->work_source = g_idle_add_full(G_PRIORITY_DEFAULT, on_conn_work, c, NULL);
    else if (!want_work && c->work_source) {
        g_source_remove(c->work_source);
        c->work_source = 0;
    }
    if (want_in && !c->in_source)
        c->in_source = vml_fd_watch_add(c->fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_conn_in, c);
    else if (!want_in && c->in_source) {
        vml_fd_watch_remove(c->in_source);
        c->in_source = 0;
    }
    /* A held client that hangs up gives its bytes back at once. */
    gboolean want_hup = c->held && !c->closing;
    if (want_hup && !c->hup_source)
        c->hup_source = vml_fd_watch_add(c->fd, G_IO_HUP | G_IO_ERR, on_conn_hup, c);
    else if (!want_hup && c->hup_source) {
        vml_fd_watch_remove(c->hup_source);
        c->hup_source = 0;
    }
}

/* Dispatch up to DISPATCH_BATCH whole messages, then send the replies.
 * May free C. */
static void
conn_dispatch_some(VmlConn *c)
{
    VmlServer *s = c->server;
    for (guint i = 0; i < DISPATCH_BATCH && !c->closing && !conn_blocked(c); i++) {
        char *msg;
        gsize len;
        GArray *fds;
        if (!vml_frame_reader_pop(c->reader, &msg, &len, &fds))
            break;
        pending_update(c);
        s->handler(s->daemon, c, msg, len, fds);
        g_free(msg);
        /* Dispatch may have hung up on C. */
        if (!conn_alive(s, c))
            return;
    }
    conn_flush(c);
}

static gboolean
on_conn_work(gpointer data)
{
    VmlConn *c = data;
    VmlServer *s = c->server;
    guint self = c->work_source;
    conn_dispatch_some(c);
    if (!conn_alive(s, c))
        return G_SOURCE_REMOVE;
    conn_schedule(c);
    return c->work_source == self ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* The frame reader failed: say why if there is anyone to tell, then hang
 * up. May free C. */
static void
conn_read_failed(VmlConn *c, const GError *error)
{
    int err = vml_frame_reader_errno(c->reader);
    if (error->domain == VML_ERROR && error->code == VML_ERROR_LIMIT) {
        /* Not the client's fault: we ran out of fds or memory. */
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "limit", errno_limit(err));
        rate_log(c->server, LOG_SEND, c->uid, "reading from uid %u (pid %d): %s",
                 (unsigned)c->uid, (int)c->pid, error->message);
        vml_conn_error(c, VML_ERROR_LIMIT, p, "%s", error->message);
    } else if (err != 0) {
        /* The socket itself failed (ECONNRESET, ...): nobody to tell. */
        conn_destroy(c);
        return;
    } else {
        /* Framing is lost. */
        vml_conn_error(c, VML_ERROR_INVALID_MESSAGE, NULL, "%s", error->message);
    }
    c->closing = TRUE;
    conn_flush(c);
}

static gboolean
on_conn_in(G_GNUC_UNUSED int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    VmlConn *c = data;
    VmlServer *s = c->server;
    guint self = c->in_source;
    g_autoptr(GError) error = NULL;

    /* How much we may take in: all a read brings for root and for the
     * finisher; for others what max_pending_request_bytes leaves, and
     * READ_FRESH at least when nothing of theirs is pending. */
    gsize max = READ_CHUNK_MAX;
    if (c->uid != 0 && c != s->finisher) {
        gsize room = pending_room(s);
        if (c->reader_counted == 0)
            room = MAX(room, READ_FRESH);
        if (room == 0) {
            conn_hold(c);
            conn_schedule(c);
            return c->in_source == self ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
        }
        max = MIN(max, room);
    }
    switch (vml_frame_reader_fill_max(c->reader, c->fd, max, &error)) {
    case VML_FILL_AGAIN:
        return G_SOURCE_CONTINUE;
    case VML_FILL_EOF:
        conn_destroy(c);
        return G_SOURCE_REMOVE;
    case VML_FILL_ERROR:
        conn_read_failed(c, error);
        if (!conn_alive(s, c))
            return G_SOURCE_REMOVE;
        conn_schedule(c);
        return c->in_source == self ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
    case VML_FILL_OK:
        break;
    }
    pending_update(c);
    conn_dispatch_some(c);
    if (!conn_alive(s, c))
        return G_SOURCE_REMOVE;
    conn_schedule(c);
    return c->in_source == self ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static void
conn_free(VmlConn *c)
{
    vml_debug("client pid %d (uid %u) of the %s socket is gone", (int)c->pid, (unsigned)c->uid,
              c->lease_socket ? "lease" : "admin");
    VmlServer *s = c->server;
    /* Its fd is closed below, and nothing else has its description. */
    if (c->in_source)
        vml_fd_watch_remove_closing(c->in_source);
    if (c->out_source)
        vml_fd_watch_remove_closing(c->out_source);
    if (c->work_source)
        g_source_remove(c->work_source);
    if (c->retry_source)
        g_source_remove(c->retry_source);
    if (c->hup_source)
        vml_fd_watch_remove_closing(c->hup_source);
    if (c->held)
        g_queue_delete_link(&s->held, c->held);
    if (c->counted) {
        s->n_counted--;
        if (c->uid != 0) {
            s->n_nonroot--;
            if (!c->lease_socket)
                s->n_nonroot_admin--;
            GHashTable *t = s->per_uid[c->lease_socket];
            gpointer key = GUINT_TO_POINTER(c->uid);
            guint n = GPOINTER_TO_UINT(g_hash_table_lookup(t, key));
            if (n > 1)
                g_hash_table_insert(t, key, GUINT_TO_POINTER(n - 1));
            else
                g_hash_table_remove(t, key);
        }
    }
    s->out_total -= c->out_bytes;
    s->pending_bytes -= c->reader_counted;
    g_queue_clear_full(&c->out, (GDestroyNotify)out_msg_free);
    vml_frame_reader_free(c->reader);
    close(c->fd);
    gboolean was_finisher = s->finisher == c;
    gboolean had_pending = c->reader_counted > 0;
    g_free(c);
    if (was_finisher)
        finisher_done(s);
    if (had_pending)
        wake_held_soon(s);
}

/* ---- accepting ----------------------------------------------------------- */

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
        s->lease_source = vml_fd_watch_add(s->lease_fd, G_IO_IN, on_lease_listen, s);
    if (!s->admin_source)
        s->admin_source = vml_fd_watch_add(s->admin_fd, G_IO_IN, on_admin_listen, s);
}

static gboolean
on_listen_pause_over(gpointer data)
{
    VmlServer *s = data;
    s->pause_source = 0;
    listen_resume(s);
    return G_SOURCE_REMOVE;
}

/* Out of fds or memory: accepting again at once would spin. Stop listening
 * for a moment (pending clients wait in the backlog) and say why. */
static void
listen_pause(VmlServer *s, int err)
{
    if (s->pause_source)
        return;
    g_autofree char *which = NULL;
    struct rlimit rl;
    if (err == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        which = g_strdup_printf(" (RLIMIT_NOFILE %llu)", (unsigned long long)rl.rlim_cur);
    rate_log(s, LOG_ACCEPT, (uid_t)-1, "cannot accept clients: %s%s; pausing for %d ms",
             g_strerror(err), which ? which : "", LISTEN_PAUSE_MS);
    if (s->lease_source)
        vml_fd_watch_remove(s->lease_source);
    if (s->admin_source)
        vml_fd_watch_remove(s->admin_source);
    s->lease_source = s->admin_source = 0;
    s->pause_source = g_timeout_add(LISTEN_PAUSE_MS, on_listen_pause_over, s);
}

static void conn_setup(VmlServer *s, int fd, gboolean lease_socket);

/* Take up to ACCEPT_BATCH clients off the backlog: a flood of connects
 * drains fast, and the rest of the loop still gets its turn. */
static void
accept_some(VmlServer *s, int listen_fd, gboolean lease_socket)
{
    for (guint i = 0; i < ACCEPT_BATCH && !s->pause_source; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
                listen_pause(s, err);
            else if (err != EAGAIN)
                rate_log(s, LOG_ACCEPT, (uid_t)-1, "accept on the %s socket: %s",
                         lease_socket ? "lease" : "admin", g_strerror(err));
            return;
        }
        vml_metrics_count(VML_COUNT_CONNECTIONS, 1);
        conn_setup(s, fd, lease_socket);
    }
}

/* Refuse C with LimitReached(LIMIT, VALUE, uid, ...): TEXT says which. */
static void
conn_refuse_limit(VmlConn *c, const char *limit, guint value, JsonObject *extra,
                  const char *text)
{
    JsonObject *p = extra ? extra : json_object_new();
    json_object_set_string_member(p, "limit", limit);
    json_object_set_int_member(p, "value", value);
    json_object_set_int_member(p, "uid", c->uid);
    json_object_set_string_member(p, "socket", c->lease_socket ? "lease" : "admin");
    rate_log(c->server, LOG_LIMIT, c->uid,
             "refused connection from uid %u (pid %d) on the %s socket: %s",
             (unsigned)c->uid, (int)c->pid, c->lease_socket ? "lease" : "admin", text);
    vml_conn_error(c, VML_ERROR_LIMIT, p, "%s", text);
}

/* Is there room for C? If not, it has been told why. */
static gboolean
conn_admit(VmlConn *c)
{
    VmlServer *s = c->server;
    const VmlDaemonConfig *cfg = s->daemon->cfg;
    const char *sock = c->lease_socket ? "lease" : "admin";
    gboolean root = c->uid == 0;
    GHashTable *t = s->per_uid[c->lease_socket];
    gpointer key = GUINT_TO_POINTER(c->uid);
    guint mine = root ? 0 : GPOINTER_TO_UINT(g_hash_table_lookup(t, key));
    guint share = cfg->max_clients - cfg->reserved_clients;
    guint admin_share = cfg->max_clients - 2 * cfg->reserved_clients;

    if (!root && mine >= cfg->max_clients_per_uid) {
        g_autofree char *text = g_strdup_printf(
            "uid %u has %u connections to the %s socket open already "
            "(max_clients_per_uid = %u)", (unsigned)c->uid, mine, sock,
            cfg->max_clients_per_uid);
        conn_refuse_limit(c, "max_clients_per_uid", cfg->max_clients_per_uid, NULL, text);
        return FALSE;
    }
    if (s->n_counted >= cfg->max_clients) {
        g_autofree char *text = g_strdup_printf("too many clients (max_clients = %u)",
                                                cfg->max_clients);
        conn_refuse_limit(c, "max_clients", cfg->max_clients, NULL, text);
        return FALSE;
    }
    if (!root && (s->n_nonroot >= share ||
                  (!c->lease_socket && s->n_nonroot_admin >= admin_share))) {
        gboolean whole = s->n_nonroot >= share;
        g_autofree char *text = whole
            ? g_strdup_printf("too many clients: non-root connections may take %u of "
                              "max_clients = %u (reserved_clients = %u are kept for root)",
                              share, cfg->max_clients, cfg->reserved_clients)
            : g_strdup_printf("too many clients: non-root connections to the admin socket "
                              "may take %u of max_clients = %u (2 x reserved_clients = %u "
                              "are kept for root and the lease socket)", admin_share,
                              cfg->max_clients, 2 * cfg->reserved_clients);
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "max_clients", cfg->max_clients);
        json_object_set_int_member(p, "share", whole ? share : admin_share);
        conn_refuse_limit(c, "reserved_clients", cfg->reserved_clients, p, text);
        return FALSE;
    }
    c->counted = TRUE;
    s->n_counted++;
    if (!root) {
        s->n_nonroot++;
        if (!c->lease_socket)
            s->n_nonroot_admin++;
        g_hash_table_insert(t, key, GUINT_TO_POINTER(mine + 1));
    }
    return TRUE;
}

/* Decide what the peer may do (SO_PEERCRED) and start serving it. */
static void
conn_setup(VmlServer *s, int fd, gboolean lease_socket)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        rate_log(s, LOG_ACCEPT, (uid_t)-1,
                 "cannot tell who a client of the %s socket is (SO_PEERCRED): %s; hanging up",
                 lease_socket ? "lease" : "admin", g_strerror(errno));
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
    /* The groups only when an open as the peer needs them. */
    c->creds.uid = cr.uid;
    c->creds.gid = cr.gid;
    c->reader = vml_frame_reader_new();
    g_queue_init(&c->out);
    g_hash_table_add(s->conns, c);

    if (cr.uid == 0)
        c->access = lease_socket ? VML_ACCESS_LEASE : VML_ACCESS_ROOT;
    else if (peer_in_group(fd, cr.gid, lease_socket ? cfg->lease_gid : cfg->admin_gid))
        c->access = lease_socket ? VML_ACCESS_LEASE : VML_ACCESS_READ;

    if (c->access == VML_ACCESS_NONE) {
        gboolean group = (lease_socket ? cfg->lease_gid : cfg->admin_gid) != (gid_t)-1;
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "uid", cr.uid);
        rate_log(s, LOG_DENIED, cr.uid,
                 "refused connection from uid %u (pid %d) on the %s socket: not root%s",
                 (unsigned)cr.uid, (int)cr.pid, lease_socket ? "lease" : "admin",
                 !group ? "" : lease_socket ? " nor in lease_group" : " nor in admin_group");
        const char *key = lease_socket ? "lease_group" : "admin_group";
        g_autofree char *members = NULL;
        if (group) {
            struct group *gr = getgrgid(lease_socket ? cfg->lease_gid : cfg->admin_gid);
            members = gr ? g_strdup_printf("root and members of group %s (%s)", gr->gr_name, key)
                         : g_strdup_printf("root and members of its %s", key);
        }
        vml_conn_error(c, VML_ERROR_PERMISSION_DENIED, p,
                       group ? "uid %u may not use vmleased's %s socket: %s may"
                             : "uid %u may not use vmleased's %s socket: only root may (or set "
                               "%s in vmleased.conf to let a group in)",
                       (unsigned)cr.uid, lease_socket ? "lease" : "admin",
                       group ? members : key);
        c->closing = TRUE;
        conn_flush(c);
        return;
    }
    vml_debug("client pid %d (uid %u) connected to the %s socket", (int)cr.pid,
              (unsigned)cr.uid, lease_socket ? "lease" : "admin");
    if (!conn_admit(c)) {
        c->closing = TRUE;
        conn_flush(c);
        return;
    }
    conn_schedule(c);
    /* A client writes its call right after connect(), so it is usually
     * here already: read it now rather than a loop turn later (what is not
     * here yet comes through the watch). C may be gone after this. */
    if (c->in_source)
        on_conn_in(c->fd, G_IO_IN, c);
}

static gboolean
on_lease_listen(int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    accept_some(data, fd, TRUE);
    return G_SOURCE_CONTINUE;
}

static gboolean
on_admin_listen(int fd, G_GNUC_UNUSED GIOCondition cond, gpointer data)
{
    accept_some(data, fd, FALSE);
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
vml_server_new(VmlDaemon *daemon, VmlMessageHandler handler, int lease_fd, int admin_fd,
               GError **error)
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
    s->handler = handler;
    s->lease_fd = lease_fd;
    s->admin_fd = admin_fd;
    s->conns = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                     (GDestroyNotify)conn_free, NULL);
    for (guint i = 0; i < 2; i++)
        s->per_uid[i] = g_hash_table_new(g_direct_hash, g_direct_equal);
    g_queue_init(&s->held);
    rate_logs_init(s);
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
        vml_fd_watch_remove(s->lease_source);
    if (s->admin_source)
        vml_fd_watch_remove(s->admin_source);
    if (s->pause_source)
        g_source_remove(s->pause_source);
    s->freeing = TRUE;
    g_hash_table_unref(s->conns);
    if (s->finish_timer)
        g_source_remove(s->finish_timer);
    if (s->wake_source)
        g_source_remove(s->wake_source);
    for (guint i = 0; i < 2; i++)
        g_hash_table_unref(s->per_uid[i]);
    rate_logs_flush(s);
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
