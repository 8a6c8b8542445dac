/* Hostile and malformed input against a real vmleased.
 *
 * One daemon serves the whole run. A long-lived holder (a sleeping child)
 * keeps an exclusive lease from the start; after every case the daemon must
 * still answer io.vmlease.Admin.Status on a fresh connection and still report
 * that lease. Each case runs in a subprocess of its own, so that a failed
 * assertion or a hang fails that case alone and the rest still run; if a case
 * kills the daemon, the run records the failure and starts a fresh one.
 * The daemon runs with the soft fd limit a systemd service gets (1024). */
#include "harness.h"
#include "vml-json-strict.h"
#include "vml-mailbox-socket.h"
#include "vml-paths.h"
#include "vml-wire.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define IO_TIMEOUT_S 5          /* longest wait for one reply */
#define CASE_TIMEOUT_S 30       /* a case subprocess is killed after this */

#define HELD_UUID "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a01"
#define SCRATCH_UUID "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a02"
#define FRESH_UUID "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a03"

#define INVALID_MESSAGE "io.vmlease.InvalidMessage"
#define INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define STATUS_MSG "{\"method\":\"io.vmlease.Admin.Status\"}"

/* What every case may rely on. The main process sets it up and hands it to
 * case subprocesses through the environment. */
static struct {
    VmlTestDaemon *d;       /* main process only */
    pid_t daemon_pid;
    pid_t child;            /* long-lived holder process */
    gint64 holder;
    char *image;            /* leased exclusively by holder for the whole run */
    pid_t scratch_child;    /* a holder that hostile Acquire/Release use */
    gint64 scratch;
    char *scratch_image;
    const char *root;
} S;

#define STATE_ENV "VMLEASE_HOSTILE_STATE"

/* ---- raw connections ---------------------------------------------------- */

typedef struct {
    int fd;
    GByteArray *in;     /* received bytes not yet handed out as replies */
} Raw;

static void
raw_free(Raw *r)
{
    if (r->fd >= 0)
        close(r->fd);
    g_byte_array_unref(r->in);
    g_free(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Raw, raw_free)

static Raw *
raw_connect_try(gboolean admin, GError **error)
{
    g_autofree char *path = admin ? vml_default_admin_socket() : vml_default_lease_socket();
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "socket: %s", g_strerror(errno));
        return NULL;
    }
    /* Time limits on every read and write: a daemon that hangs must fail the
     * case, not stall the run. */
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "connect %s: %s", path, g_strerror(errno));
        close(fd);
        return NULL;
    }
    Raw *r = g_new0(Raw, 1);
    r->fd = fd;
    r->in = g_byte_array_new();
    return r;
}

static Raw *
raw_connect(gboolean admin)
{
    g_autoptr(GError) error = NULL;
    Raw *r = raw_connect_try(admin, &error);
    g_assert_no_error(error);
    return r;
}

/* Write all of DATA; FALSE (errno kept) if the daemon hung up or stalled. */
static gboolean
raw_send_try(Raw *r, const void *data, gsize len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(r->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return FALSE;
        p += n;
        len -= n;
    }
    return TRUE;
}

static void
raw_send(Raw *r, const void *data, gsize len)
{
    /* Shows errno if the daemon hung up on us. */
    g_assert_no_errno(raw_send_try(r, data, len) ? 0 : -1);
}

/* Send TEXT as one message (TEXT plus its NUL). */
static void
raw_send_msg(Raw *r, const char *text)
{
    raw_send(r, text, strlen(text) + 1);
}

/* One sendmsg() of DATA with N_FDS fds attached. */
static void
raw_send_fds(Raw *r, const void *data, gsize len, const int *fds, guint n_fds)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    VmlFdControl control;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    g_assert_cmpuint(n_fds, <=, VML_FDS_MAX);
    vml_wire_attach_fds(&mh, &control, fds, n_fds);
    ssize_t n;
    do {
        n = sendmsg(r->fd, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    g_assert_cmpint(n, ==, (gssize)len);
}

typedef enum {
    RAW_REPLY,      /* a whole reply that is a JSON object */
    RAW_EOF,        /* the daemon closed the connection (read returned 0) */
    RAW_RESET,      /* closed with our bytes unread (ECONNRESET) */
    RAW_TIMEOUT,    /* nothing within IO_TIMEOUT_S */
    RAW_BAD,        /* a reply that is not a strict JSON object, or another error */
} RawResult;

static const char *
raw_result_name(RawResult res)
{
    static const char *const names[] = {
        [RAW_REPLY] = "a reply", [RAW_EOF] = "EOF (daemon hung up)",
        [RAW_RESET] = "ECONNRESET (daemon hung up)",
        [RAW_TIMEOUT] = "no answer within the time limit",
        [RAW_BAD] = "a malformed reply or a read error",
    };
    return names[res];
}

static RawResult
raw_recv(Raw *r, JsonObject **reply)
{
    *reply = NULL;
    for (;;) {
        guint8 *nul = r->in->len ? memchr(r->in->data, 0, r->in->len) : NULL;
        if (nul) {
            gsize len = nul - r->in->data;
            /* Every reply strict JSON (json-glib would take more). */
            g_autoptr(GError) strict_error = NULL;
            if (!vml_json_strict_check((const char *)r->in->data, len, &strict_error)) {
                g_test_message("reply: %s", strict_error->message);
                return RAW_BAD;
            }
            g_autoptr(JsonParser) parser = json_parser_new_immutable();
            gboolean ok = json_parser_load_from_data(parser, (const char *)r->in->data, len, NULL);
            g_byte_array_remove_range(r->in, 0, len + 1);
            JsonNode *root = ok ? json_parser_get_root(parser) : NULL;
            if (!root || !JSON_NODE_HOLDS_OBJECT(root))
                return RAW_BAD;
            *reply = json_object_ref(json_node_get_object(root));
            return RAW_REPLY;
        }
        guint8 buf[65536];
        ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            g_byte_array_append(r->in, buf, n);
            continue;
        }
        if (n == 0)
            return RAW_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return RAW_TIMEOUT;
        if (errno == ECONNRESET)
            return RAW_RESET;
        return RAW_BAD;
    }
}

/* The next reply, which must arrive. */
static JsonObject *
raw_read(Raw *r)
{
    JsonObject *reply;
    RawResult res = raw_recv(r, &reply);
    g_assert_cmpstr(raw_result_name(res), ==, raw_result_name(RAW_REPLY));
    return reply;
}

/* No further reply: the daemon hangs up. ECONNRESET counts as a hang-up too:
 * the kernel reports it when the daemon closes with our bytes still unread. */
static void
raw_assert_hangup(Raw *r)
{
    g_autoptr(JsonObject) reply = NULL;
    RawResult res = raw_recv(r, &reply);
    if (res == RAW_RESET)
        res = RAW_EOF;
    g_assert_cmpstr(raw_result_name(res), ==, raw_result_name(RAW_EOF));
}

/* ---- replies ------------------------------------------------------------ */

static const char *
member_string(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    if (!n || json_node_get_value_type(n) != G_TYPE_STRING)
        return NULL;
    return json_node_get_string(n);
}

static gint64
member_int(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    g_assert_nonnull(n);
    g_assert_true(json_node_get_value_type(n) == G_TYPE_INT64);
    return json_node_get_int(n);
}

static JsonArray *
member_array(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    g_assert_nonnull(n);
    g_assert_true(JSON_NODE_HOLDS_ARRAY(n));
    return json_node_get_array(n);
}

static JsonObject *
reply_params(JsonObject *reply)
{
    JsonNode *n = json_object_get_member(reply, "parameters");
    g_assert_nonnull(n);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(n));
    return json_node_get_object(n);
}

/* "NAME: message", "(success)", for assertion messages. */
static char *
reply_outcome(JsonObject *reply)
{
    const char *name = member_string(reply, "error");
    if (!name)
        return g_strdup("(success)");
    JsonNode *p = json_object_get_member(reply, "parameters");
    const char *msg = (p && JSON_NODE_HOLDS_OBJECT(p))
        ? member_string(json_node_get_object(p), "message") : NULL;
    return g_strdup_printf("%s: %s", name, msg ? msg : "(no message)");
}

static JsonObject *
assert_ok(JsonObject *reply)
{
    g_autofree char *outcome = reply_outcome(reply);
    g_assert_cmpstr(outcome, ==, "(success)");
    return reply_params(reply);
}

/* Assert REPLY is the error NAME and return its parameters. */
static JsonObject *
assert_error(JsonObject *reply, const char *name)
{
    const char *got = member_string(reply, "error");
    if (g_strcmp0(got, name) != 0) {
        g_autofree char *outcome = reply_outcome(reply);
        g_assert_cmpstr(outcome, ==, name);
    }
    JsonObject *p = reply_params(reply);
    /* The interface: every error carries a human message, and
     * InvalidMessage its reason. */
    g_assert_nonnull(member_string(p, "message"));
    if (g_str_equal(name, "io.vmlease.InvalidMessage"))
        g_assert_cmpstr(member_string(p, "reason"), ==, member_string(p, "message"));
    return p;
}

static void
assert_invalid_parameter(JsonObject *reply, const char *parameter)
{
    JsonObject *p = assert_error(reply, INVALID_PARAMETER);
    g_assert_cmpstr(member_string(p, "parameter"), ==, parameter);
}

static void
assert_status_reply(JsonObject *reply)
{
    JsonObject *p = assert_ok(reply);
    g_assert_cmpint(member_int(p, "pid"), ==, S.daemon_pid);
}

/* The same connection still serves: the bad message did not break framing. */
static void
assert_conn_serves(Raw *r)
{
    raw_send_msg(r, STATUS_MSG);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_status_reply(reply);
}

/* ---- calls -------------------------------------------------------------- */

/* {"method": METHOD, "parameters": PARAMS}; PARAMS is consumed. */
static char *
msg_new(const char *method, JsonObject *params)
{
    g_autoptr(JsonObject) m = json_object_new();
    json_object_set_string_member(m, "method", method);
    if (params)
        json_object_set_object_member(m, "parameters", params);
    return vml_json_to_string(m, NULL);
}

/* Send LEN bytes of DATA plus a NUL on a fresh connection; the one reply. */
static JsonObject *
call_bytes(gboolean admin, const char *data, gsize len)
{
    g_autoptr(Raw) r = raw_connect(admin);
    raw_send(r, data, len);
    raw_send(r, "", 1);
    return raw_read(r);
}

static JsonObject *
call_text(gboolean admin, const char *text)
{
    return call_bytes(admin, text, strlen(text));
}

static JsonObject *
call(gboolean admin, const char *method, JsonObject *params)
{
    g_autofree char *text = msg_new(method, params);
    return call_text(admin, text);
}

/* A message the daemon must refuse whole (io.vmlease.InvalidMessage), after
 * which the same connection still serves. */
static void
expect_invalid_message(const char *data, gsize len)
{
    g_autoptr(Raw) r = raw_connect(FALSE);
    raw_send(r, data, len);
    raw_send(r, "", 1);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_error(reply, INVALID_MESSAGE);
    assert_conn_serves(r);
}

static void
expect_invalid_message_text(const char *text)
{
    expect_invalid_message(text, strlen(text));
}

static JsonObject *
resource_path(const char *path, const char *mode)
{
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "path", path);
    if (mode)
        json_object_set_string_member(r, "mode", mode);
    return r;
}

/* Acquire for HOLDER with RESOURCES (consumed). */
static JsonObject *
acquire(gint64 holder, JsonArray *resources)
{
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    json_object_set_array_member(p, "resources", resources);
    return call(FALSE, "io.vmlease.Lease.Acquire", p);
}

/* Acquire for the scratch holder of a single path resource. */
static JsonObject *
acquire_path(const char *path)
{
    JsonArray *a = json_array_new();
    json_array_add_object_element(a, resource_path(path, "exclusive"));
    return acquire(S.scratch, a);
}

/* A bad Acquire must leave nothing behind: the scratch holder holds nothing. */
static void
assert_scratch_holds_nothing(void)
{
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", S.scratch);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Inquire", p);
    g_assert_cmpuint(json_array_get_length(member_array(assert_ok(reply), "leases")), ==, 0);
}

static JsonObject *
register_params(const char *uuid, const char *name, gint64 pid)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "uuid", uuid);
    json_object_set_string_member(p, "name", name);
    json_object_set_int_member(p, "pid", pid);
    return p;
}

static guint
count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    g_assert_nonnull(dir);
    guint n = 0;
    while (g_dir_read_name(dir))
        n++;
    return n;
}

/* Wait (up to 3 s) until the daemon has at most MAX fds open. The daemon
 * closes things in its own time, so poll; a leak never gets there. */
static void
assert_daemon_fds_at_most(guint max)
{
    guint n = 0;
    for (int i = 0; i < 300; i++) {
        n = count_fds(S.daemon_pid);
        if (n <= max)
            return;
        g_usleep(10000);
    }
    g_assert_cmpuint(n, <=, max);
}

/* Open N fds (of /dev/null) to send as SCM_RIGHTS passengers. */
static int *
open_fds(guint n)
{
    int *fds = g_new(int, n);
    for (guint i = 0; i < n; i++) {
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fds[i], >=, 0);
    }
    return fds;
}

static void
close_fds(int *fds, guint n)
{
    for (guint i = 0; i < n; i++)
        close(fds[i]);
    g_free(fds);
}

/* A Status message padded with spaces to exactly LEN bytes (NUL excluded). */
static char *
padded_status(gsize len)
{
    const char *head = "{\"method\":\"io.vmlease.Admin.Status\"";
    gsize hlen = strlen(head);
    g_assert_cmpuint(len, >, hlen + 1);
    char *m = g_malloc(len + 1);
    memcpy(m, head, hlen);
    memset(m + hlen, ' ', len - hlen - 1);
    m[len - 1] = '}';
    m[len] = '\0';
    return m;
}

/* LEN bytes of the start of a message that never ends (no NUL, no close). */
static char *
endless_message(gsize len)
{
    const char *head = "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{\"pad\":\"";
    char *m = g_malloc(len);
    memset(m, 'a', len);
    memcpy(m, head, strlen(head));
    return m;
}

static char *
repeat(char c, gsize n)
{
    char *s = g_malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ==== cases: framing ===================================================== */

static void
case_truncated_then_close(void)
{
    /* Half a message, then close: the daemon drops it and carries on. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    const char *half = "{\"method\":\"io.vmlease.Lease.Register\",\"parameters\":{\"uuid\":\"6f1c";
    raw_send(r, half, strlen(half));
}

static void
case_truncated_then_shutdown(void)
{
    /* Half a message and end of input: no reply, just a hang-up. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    const char *half = "{\"method\":\"io.vmlease.Admin.Status\",\"para";
    raw_send(r, half, strlen(half));
    g_assert_cmpint(shutdown(r->fd, SHUT_WR), ==, 0);
    g_autoptr(JsonObject) reply = NULL;
    RawResult res = raw_recv(r, &reply);
    g_assert_cmpstr(raw_result_name(res), ==, raw_result_name(RAW_EOF));
}

static void
case_oversized_no_nul(void)
{
    /* One byte over the limit and no end in sight: say why, then hang up.
     * All our bytes are read by then, so the hang-up is a clean EOF. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    gsize len = VML_MSG_MAX + 1;
    g_autofree char *big = endless_message(len);
    raw_send(r, big, len);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_error(reply, INVALID_MESSAGE);
    g_autoptr(JsonObject) nothing = NULL;
    RawResult res = raw_recv(r, &nothing);
    g_assert_cmpstr(raw_result_name(res), ==, raw_result_name(RAW_EOF));
}

static void
case_oversized_nul_after_2mib(void)
{
    /* The NUL comes after 2 MiB, then a valid call: the daemon must give up at
     * the limit, not buffer to the NUL, and never answer the call behind it. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    gsize len = 2 * 1024 * 1024;
    g_autofree char *big = endless_message(len);
    g_autoptr(GByteArray) all = g_byte_array_new();
    g_byte_array_append(all, (guint8 *)big, len);
    g_byte_array_append(all, (const guint8 *)"", 1);
    g_byte_array_append(all, (const guint8 *)STATUS_MSG, sizeof(STATUS_MSG));
    /* The daemon hangs up midway: our send may fail, that is expected. */
    (void)raw_send_try(r, all->data, all->len);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_error(reply, INVALID_MESSAGE);
    raw_assert_hangup(r);
}

static void
case_message_at_limit(void)
{
    /* Exactly VML_MSG_MAX bytes is allowed. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autofree char *m = padded_status(VML_MSG_MAX);
    raw_send(r, m, VML_MSG_MAX + 1);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_status_reply(reply);
    assert_conn_serves(r);
}

static void
case_message_one_over_limit(void)
{
    /* VML_MSG_MAX + 1 bytes, then its NUL: over the limit, whether or not
     * the NUL happens to arrive in the same read as the last byte. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autofree char *m = padded_status(VML_MSG_MAX + 1);
    (void)raw_send_try(r, m, VML_MSG_MAX + 2);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_error(reply, INVALID_MESSAGE);
    raw_assert_hangup(r);
}

static void
case_empty_message(void)
{
    expect_invalid_message("", 0);
}

static void
case_pipelined(void)
{
    /* 50 calls in one write: 50 replies, in order. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autoptr(GByteArray) all = g_byte_array_new();
    for (int i = 0; i < 50; i++)
        g_byte_array_append(all, (const guint8 *)STATUS_MSG, sizeof(STATUS_MSG));
    raw_send(r, all->data, all->len);
    for (int i = 0; i < 50; i++) {
        g_autoptr(JsonObject) reply = raw_read(r);
        assert_status_reply(reply);
    }
    g_assert_cmpuint(r->in->len, ==, 0);
    assert_conn_serves(r);
}

static void
case_pipelined_with_garbage(void)
{
    /* A bad message among good ones gets its error in its place; the good
     * ones around it are answered. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autoptr(GByteArray) all = g_byte_array_new();
    for (int i = 0; i < 21; i++) {
        if (i == 10)
            g_byte_array_append(all, (const guint8 *)"}{garbage", sizeof("}{garbage"));
        else
            g_byte_array_append(all, (const guint8 *)STATUS_MSG, sizeof(STATUS_MSG));
    }
    raw_send(r, all->data, all->len);
    for (int i = 0; i < 21; i++) {
        g_autoptr(JsonObject) reply = raw_read(r);
        if (i == 10)
            assert_error(reply, INVALID_MESSAGE);
        else
            assert_status_reply(reply);
    }
}

static void
case_slow_client(void)
{
    /* A client stuck halfway through a message must not hold up others. */
    g_autoptr(Raw) slow = raw_connect(FALSE);
    const char *part1 = "{\"method\":\"io.vmlease.Admin.St";
    const char *part2 = "atus\"}";
    raw_send(slow, part1, strlen(part1));

    for (int i = 0; i < 3; i++) {
        g_autoptr(Raw) other = raw_connect(TRUE);
        assert_conn_serves(other);
        JsonObject *p = json_object_new();
        json_object_set_int_member(p, "holder", S.holder);
        g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Inquire", p);
        g_assert_cmpuint(json_array_get_length(member_array(assert_ok(reply), "leases")), ==, 1);
    }
    /* The slow client's message is still whole once it ends. */
    raw_send(slow, part2, strlen(part2) + 1);
    g_autoptr(JsonObject) reply = raw_read(slow);
    assert_status_reply(reply);
}

static void
case_client_never_reads(void)
{
    /* A client that floods calls and never reads its replies: the daemon
     * stops reading it (backpressure) but serves everyone else, and frees
     * everything once it goes away. */
    g_autoptr(Raw) sync = raw_connect(FALSE);
    assert_conn_serves(sync);
    guint base = count_fds(S.daemon_pid);

    g_autoptr(Raw) flood = raw_connect(FALSE);
    g_assert_cmpint(fcntl(flood->fd, F_SETFL, O_NONBLOCK), ==, 0);
    g_autoptr(GByteArray) batch = g_byte_array_new();
    for (int i = 0; i < 200; i++)
        g_byte_array_append(batch, (const guint8 *)STATUS_MSG, sizeof(STATUS_MSG));
    gsize sent = 0;
    while (sent < 16 * 1024 * 1024) {
        ssize_t n = send(flood->fd, batch->data, batch->len, MSG_NOSIGNAL);
        if (n > 0) {
            sent += n;
            continue;
        }
        g_assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
        struct pollfd pfd = { .fd = flood->fd, .events = POLLOUT };
        if (poll(&pfd, 1, 300) == 0)
            break;      /* the daemon stopped reading us: backpressure */
    }
    g_test_message("flooded %" G_GSIZE_FORMAT " bytes before the daemon stopped reading", sent);

    {
        g_autoptr(Raw) other = raw_connect(TRUE);
        assert_conn_serves(other);
    }
    assert_conn_serves(sync);

    g_clear_pointer(&flood, raw_free);
    assert_daemon_fds_at_most(base);
}

/* ==== cases: not a call ================================================== */

static void
case_not_json(void)
{
    expect_invalid_message_text("hello, vmleased");
}

static void
case_json_array(void)
{
    expect_invalid_message_text("[{\"method\":\"io.vmlease.Admin.Status\"}]");
}

static void
case_json_string(void)
{
    expect_invalid_message_text("\"io.vmlease.Admin.Status\"");
}

static void
case_json_scalars(void)
{
    expect_invalid_message_text("42");
    expect_invalid_message_text("null");
    expect_invalid_message_text("true");
}

static void
case_trailing_garbage(void)
{
    expect_invalid_message_text(STATUS_MSG " xyz");
}

static void
case_two_objects_in_one_message(void)
{
    /* One message is one object. json-glib stops after the first object, so a
     * second call glued to it (a client that forgot a NUL) would vanish. */
    expect_invalid_message_text(STATUS_MSG "{\"method\":\"io.vmlease.Admin.List\"}");
}

static void
case_missing_method(void)
{
    expect_invalid_message_text("{\"parameters\":{}}");
    expect_invalid_message_text("{}");
}

static void
case_method_not_string(void)
{
    expect_invalid_message_text("{\"method\":42}");
    expect_invalid_message_text("{\"method\":null}");
    expect_invalid_message_text("{\"method\":true}");
    expect_invalid_message_text("{\"method\":[\"io.vmlease.Admin.Status\"]}");
    expect_invalid_message_text("{\"method\":{\"name\":\"io.vmlease.Admin.Status\"}}");
}

static void
case_parameters_not_object(void)
{
    expect_invalid_message_text("{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":[]}");
    expect_invalid_message_text("{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":\"x\"}");
    expect_invalid_message_text("{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":7}");
    expect_invalid_message_text("{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":false}");
}

static void
case_unknown_method(void)
{
    const char *const names[] = {
        "io.vmlease.Lease.Steal", "io.vmlease.Admin.status", "io.vmlease.Admin.Status ",
        "org.varlink.service.Nope", "io.vmlease.Stash.Steal",
    };
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autoptr(JsonObject) reply = call(FALSE, names[i], NULL);
        JsonObject *p = assert_error(reply, METHOD_NOT_FOUND);
        g_assert_cmpstr(member_string(p, "method"), ==, names[i]);
    }
    /* A method of no interface served: the interface is what is not found. */
    const struct { const char *method, *iface; } elsewhere[] = {
        { "", "" }, { "io.vmlease.Leases.Acquire", "io.vmlease.Leases" },
        { "io.vmlease", "io" }, { "Status", "Status" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(elsewhere); i++) {
        g_autoptr(JsonObject) reply = call(FALSE, elsewhere[i].method, NULL);
        JsonObject *p = assert_error(reply, INTERFACE_NOT_FOUND);
        g_assert_cmpstr(member_string(p, "interface"), ==, elsewhere[i].iface);
    }
}

static void
case_huge_method_name(void)
{
    g_autofree char *tail = repeat('A', 100 * 1024);
    g_autofree char *name = g_strconcat("io.vmlease.Admin.", tail, NULL);
    g_autoptr(JsonObject) reply = call(FALSE, name, NULL);
    JsonObject *p = assert_error(reply, METHOD_NOT_FOUND);
    g_assert_cmpstr(member_string(p, "method"), ==, name);
    /* The human message stays short. */
    g_assert_cmpuint(strlen(member_string(p, "message")), <, 1024);
}

static void
case_invalid_utf8(void)
{
    static const char in_param[] =
        "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{\"x\":\"a\xff\xfe" "b\"}}";
    static const char in_method[] = "{\"method\":\"io.vmlease.Admin.Sta\xff\xfe" "tus\"}";
    static const char overlong[] = "{\"method\":\"io.vmlease.Admin.Status\",\"x\":\"\xc0\xaf\"}";
    expect_invalid_message(in_param, sizeof(in_param) - 1);
    expect_invalid_message(in_method, sizeof(in_method) - 1);
    expect_invalid_message(overlong, sizeof(overlong) - 1);
}

/* A method name with control characters, terminal escapes or bytes that
 * are not UTF-8: the reply, which names the method back, is strict JSON all
 * the same (raw_read checks), says MethodNotFound or InvalidMessage, and the
 * connection and the daemon go on serving. */
static void
case_method_control_chars(void)
{
    GString *every = g_string_new("{\"method\":\"io.vmlease.Admin.");
    for (guint c = 1; c < 0x20; c++)
        g_string_append_printf(every, "\\u%04x", c);
    g_string_append(every, "\\u007f\"}");
    GString *long_name = g_string_new("{\"method\":\"");
    for (guint i = 0; i < 150; i++)
        g_string_append(long_name, "\xc3\xa9\\u001f");   /* cut at 200 bytes somewhere */
    g_string_append(long_name, "\"}");
    const char *const msgs[] = {
        "{\"method\":\"io.vmlease.Admin.Sta\\u001ftus\"}",
        every->str,
        "{\"method\":\"\\u001b[2J\\u001b]0;owned\\u0007\\r\\n\"}",
        long_name->str,
        "{\"method\":\"io.vmlease.Admin.Sta\x1ftus\"}",             /* raw, not escaped */
        "{\"method\":\"io.vmlease.Admin.\xc3\x28\xed\xa0\x80\"}",    /* not UTF-8 */
        "{\"method\":\"io.vmlease.Admin.\xff\\u001f\"}",
        "{\"method\":\"io.vmlease.Admin.\\ud800x\\u001f\"}",        /* lone surrogate */
        "{\"method\":\"io.vmlease.Admin.\\udc00\"}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(msgs); i++) {
        g_autoptr(Raw) r = raw_connect(FALSE);
        raw_send_msg(r, msgs[i]);
        g_autoptr(JsonObject) reply = raw_read(r);
        const char *err = member_string(reply, "error");
        if (g_strcmp0(err, METHOD_NOT_FOUND) != 0 && g_strcmp0(err, INTERFACE_NOT_FOUND) != 0)
            err = INVALID_MESSAGE;
        JsonObject *p = assert_error(reply, err);
        if (!g_str_equal(err, INVALID_MESSAGE)) {
            /* The name comes back as the client sent it: the method, or
             * the interface (all before its last dot) of one not served. */
            g_autoptr(JsonParser) parser = json_parser_new();
            g_assert_true(json_parser_load_from_data(parser, msgs[i], -1, NULL));
            const char *sent = json_object_get_string_member(
                json_node_get_object(json_parser_get_root(parser)), "method");
            const char *dot = strrchr(sent, '.');
            g_autofree char *iface = dot ? g_strndup(sent, dot - sent) : g_strdup(sent);
            if (g_str_equal(err, METHOD_NOT_FOUND))
                g_assert_cmpstr(member_string(p, "method"), ==, sent);
            else
                g_assert_cmpstr(member_string(p, "interface"), ==, iface);
            /* The human message carries none of its control characters. */
            for (const char *m = member_string(p, "message"); *m; m++)
                g_assert_true((guchar)*m >= 0x20 && *m != 0x7f);
        }
        assert_conn_serves(r);
    }
    g_string_free(every, TRUE);
    g_string_free(long_name, TRUE);
}

static void
case_path_nul_escape(void)
{
    /* \u0000 would cut the path short inside json-glib. */
    g_autofree char *text = g_strdup_printf(
        "{\"method\":\"io.vmlease.Lease.Acquire\",\"parameters\":{\"holder\":%" G_GINT64_FORMAT
        ",\"resources\":[{\"path\":\"%s\\u0000/x\"}]}}", S.scratch, S.scratch_image);
    expect_invalid_message_text(text);
    assert_scratch_holds_nothing();
}

static void
case_deep_nesting_bare(void)
{
    g_autofree char *deep = repeat('[', 100000);
    expect_invalid_message_text(deep);
}

static void
case_deep_nesting_in_parameters(void)
{
    g_autofree char *open = repeat('[', 100000);
    g_autofree char *close = repeat(']', 100000);
    g_autofree char *text = g_strconcat(
        "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{\"x\":", open, close, "}}", NULL);
    expect_invalid_message_text(text);
}

static void
case_nesting_just_over_limit(void)
{
    /* 33 levels: the outer object, parameters and 31 arrays. */
    g_autofree char *open = repeat('[', 31);
    g_autofree char *close = repeat(']', 31);
    g_autofree char *text = g_strconcat(
        "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{\"x\":", open, close, "}}", NULL);
    expect_invalid_message_text(text);
}

/* json-glib also takes 'single-quoted' strings and comments, neither of them
 * JSON. A '"' inside either must not blind the daemon's own checks. */
static void
case_deep_nesting_behind_single_quote(void)
{
    g_autofree char *open = repeat('[', 100000);
    g_autofree char *close = repeat(']', 100000);
    g_autofree char *text = g_strconcat(
        "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{\"q\":'\"',\"x\":",
        open, close, "}}", NULL);
    expect_invalid_message_text(text);
}

static void
case_deep_nesting_behind_comment(void)
{
    g_autofree char *open = repeat('[', 100000);
    g_autofree char *close = repeat(']', 100000);
    g_autofree char *text = g_strconcat(
        "{\"method\":\"io.vmlease.Admin.Status\",\"parameters\":{/*\"*/\"x\":",
        open, close, "}}", NULL);
    expect_invalid_message_text(text);
}

static void
case_nul_escape_behind_single_quote(void)
{
    g_autofree char *text = g_strdup_printf(
        "{\"method\":\"io.vmlease.Admin.Owners\",\"parameters\":{\"q\":'\"',"
        "\"paths\":[\"%s\\u0000/x\"]}}", S.image);
    expect_invalid_message_text(text);
}

static void
case_lone_surrogate(void)
{
    /* json-glib turns a lone low surrogate into bytes that are not UTF-8; a
     * name like that must not get into the holder table (every List reply
     * would carry it, and clients' JSON parsers refuse such replies). Either
     * refusal is right: the whole message, or the name. */
    g_autofree char *text = g_strdup_printf(
        "{\"method\":\"io.vmlease.Lease.Register\",\"parameters\":{\"uuid\":\"" FRESH_UUID "\","
        "\"name\":\"vm\\udc00x\",\"pid\":%d}}", (int)getpid());
    g_autoptr(JsonObject) reply = call_text(FALSE, text);
    const char *err = member_string(reply, "error");
    if (g_strcmp0(err, INVALID_MESSAGE) != 0)
        assert_invalid_parameter(reply, "name");
    g_autoptr(JsonObject) list = call(TRUE, "io.vmlease.Admin.List", NULL);
    assert_ok(list);
}

/* ==== cases: Register ==================================================== */

static void
case_register_pid_string(void)
{
    g_autofree char *pid = g_strdup_printf("%d", (int)getpid());
    JsonObject *p = register_params(FRESH_UUID, "vm", 0);
    json_object_set_string_member(p, "pid", pid);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register", p);
    assert_invalid_parameter(reply, "pid");
}

static void
case_register_pid_float(void)
{
    /* Our own pid as a number that is not an integer in JSON terms. */
    const char *const suffixes[] = { ".5", ".0", "e0" };
    for (guint i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        g_autofree char *text = g_strdup_printf(
            "{\"method\":\"io.vmlease.Lease.Register\",\"parameters\":{\"uuid\":\"" FRESH_UUID
            "\",\"name\":\"vm\",\"pid\":%d%s}}", (int)getpid(), suffixes[i]);
        g_autoptr(JsonObject) reply = call_text(FALSE, text);
        assert_invalid_parameter(reply, "pid");
    }
}

static void
case_register_pid_out_of_range(void)
{
    const gint64 pids[] = { 0, -1, G_MININT64, (gint64)INT_MAX + 1, G_GINT64_CONSTANT(1) << 40 };
    for (guint i = 0; i < G_N_ELEMENTS(pids); i++) {
        g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                           register_params(FRESH_UUID, "vm", pids[i]));
        assert_invalid_parameter(reply, "pid");
    }
}

static void
case_register_pid_gone(void)
{
    /* A pid that just exited (and was reaped): no such process. */
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        _exit(0);
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                       register_params(FRESH_UUID, "vm", pid));
    JsonObject *p = assert_error(reply, "io.vmlease.NoSuchProcess");
    g_assert_cmpint(member_int(p, "pid"), ==, pid);
}

static void
case_register_uuid_malformed(void)
{
    const char *const uuids[] = {
        "not-a-uuid", "",
        "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a0",      /* one digit short */
        "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a011",    /* one digit long */
        "6f1c1b8e2f4a4c1e9a570d4f3c2b1a01",         /* no dashes */
        "{6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a01}",
        "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a0g",     /* not hex */
        "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a01\n",
        "6f1c1b8e-2f4a-4c1e-9a57-0d4f3c2b1a01/../../etc/passwd",
    };
    for (guint i = 0; i < G_N_ELEMENTS(uuids); i++) {
        g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                           register_params(uuids[i], "vm", getpid()));
        assert_invalid_parameter(reply, "uuid");
    }
    JsonObject *p = register_params(FRESH_UUID, "vm", getpid());
    json_object_set_int_member(p, "uuid", 42);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register", p);
    assert_invalid_parameter(reply, "uuid");
}

static void
case_register_name_control_chars(void)
{
    const char *const names[] = { "vm\001", "vm\nforged log line", "vm\x7f", "\t" };
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                           register_params(FRESH_UUID, names[i], getpid()));
        assert_invalid_parameter(reply, "name");
    }
}

static void
case_register_name_too_long(void)
{
    g_autofree char *name = repeat('n', 100 * 1024);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                       register_params(FRESH_UUID, name, getpid()));
    assert_invalid_parameter(reply, "name");
}

static void
case_register_program_bad(void)
{
    g_autofree char *long_program = repeat('p', 300);
    const char *const programs[] = { "qemu\nforged", "qemu\001", long_program };
    for (guint i = 0; i < G_N_ELEMENTS(programs); i++) {
        JsonObject *p = register_params(FRESH_UUID, "vm", getpid());
        json_object_set_string_member(p, "program", programs[i]);
        g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register", p);
        assert_invalid_parameter(reply, "program");
    }
}

/* ForceUnlock (root on the admin socket) with parameters that are wrong in
 * type or point at things that are not images. */
static void
case_force_unlock_bad_params(void)
{
    g_autoptr(JsonObject) missing = call(TRUE, "io.vmlease.Admin.ForceUnlock", NULL);
    assert_invalid_parameter(missing, "path");
    const char *const relative[] = { "disk.qcow2", "/tmp/../etc/passwd", "" };
    for (guint i = 0; i < G_N_ELEMENTS(relative); i++) {
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "path", relative[i]);
        g_autoptr(JsonObject) reply = call(TRUE, "io.vmlease.Admin.ForceUnlock", p);
        assert_invalid_parameter(reply, "path");
    }
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "path", S.scratch_image);
    json_object_set_string_member(p, "force", "yes");
    g_autoptr(JsonObject) bad_force = call(TRUE, "io.vmlease.Admin.ForceUnlock", p);
    assert_invalid_parameter(bad_force, "force");
    const char *const not_images[] = { "/tmp", "/dev/null" };
    for (guint i = 0; i < G_N_ELEMENTS(not_images); i++) {
        JsonObject *q = json_object_new();
        json_object_set_string_member(q, "path", not_images[i]);
        g_autoptr(JsonObject) reply = call(TRUE, "io.vmlease.Admin.ForceUnlock", q);
        JsonObject *e = assert_error(reply, "io.vmlease.NoSuchImage");
        g_assert_nonnull(strstr(member_string(e, "message"), "is not a regular file or block device"));
    }
}

/* A file posing as qcow2 with a lying header: BadImage naming what is
 * wrong, and the file is not written. */
static void
case_force_unlock_lying_header(void)
{
    g_autofree char *path = g_build_filename(S.root, "liar.qcow2", NULL);
    guint8 h[512] = { 0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3 };
    h[23] = 16;          /* cluster_bits */
    h[103] = 104;        /* header_length */
    h[54] = 0x10;        /* refcount table at 4096: inside the header cluster */
    h[59] = 1;           /* refcount_table_clusters */
    g_assert_true(g_file_set_contents(path, (const char *)h, sizeof(h), NULL));
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "path", path);
    json_object_set_boolean_member(p, "force", TRUE);
    g_autoptr(JsonObject) reply = call(TRUE, "io.vmlease.Admin.ForceUnlock", p);
    JsonObject *e = assert_error(reply, "io.vmlease.BadImage");
    g_assert_cmpstr(member_string(e, "path"), ==, path);
    g_assert_nonnull(strstr(member_string(e, "message"),
                            "invalid qcow2 header: refcount table offset 4096 is not a "
                            "cluster boundary after the header cluster"));
    g_autofree char *after = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &after, &len, NULL));
    g_assert_cmpmem(after, len, h, sizeof(h));
}

static void
case_register_hijack_pid(void)
{
    /* The held VM's pid under another uuid: refused; the lease stays put
     * (checked after every case). The interface's InvalidParameter names its
     * parameter: either of the two that clash will do. */
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Register",
                                       register_params(FRESH_UUID, "intruder", S.child));
    JsonObject *p = assert_error(reply, INVALID_PARAMETER);
    const char *param = member_string(p, "parameter");
    g_assert_nonnull(param);
    g_assert_true(g_str_equal(param, "pid") || g_str_equal(param, "uuid"));
}

/* An Acquire of the scratch image exclusively that names no holder. */
static char *
holderless_acquire_msg(void)
{
    JsonObject *p = json_object_new();
    JsonArray *a = json_array_new();
    json_array_add_object_element(a, resource_path(S.scratch_image, "exclusive"));
    json_object_set_array_member(p, "resources", a);
    return msg_new("io.vmlease.Lease.Acquire", p);
}

/* Register and the call behind it sent in one write, as the plugin does:
 * two replies in order, and the holderless call acts for the holder the
 * connection registered. */
static void
case_register_then_call(void)
{
    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autofree char *reg = msg_new("io.vmlease.Lease.Register",
                                   register_params(SCRATCH_UUID, "scratch-vm", S.scratch_child));
    g_autofree char *acq = holderless_acquire_msg();
    g_autoptr(GString) both = g_string_new(NULL);
    g_string_append_len(both, reg, (gssize)strlen(reg) + 1);
    g_string_append_len(both, acq, (gssize)strlen(acq) + 1);
    raw_send(r, both->str, both->len);
    g_autoptr(JsonObject) first = raw_read(r);
    g_assert_cmpint(member_int(assert_ok(first), "holder"), ==, S.scratch);
    g_autoptr(JsonObject) second = raw_read(r);
    JsonArray *leases = member_array(assert_ok(second), "leases");
    g_assert_cmpuint(json_array_get_length(leases), ==, 1);
    JsonObject *l = json_array_get_object_element(leases, 0);
    g_assert_cmpstr(member_string(l, "mode"), ==, "exclusive");
    g_assert_cmpstr(member_string(l, "grant"), ==, "new");
    /* Held by the scratch holder, as another connection sees it. */
    JsonObject *q = json_object_new();
    json_object_set_int_member(q, "holder", S.scratch);
    g_autoptr(JsonObject) inq = call(FALSE, "io.vmlease.Lease.Inquire", q);
    g_assert_cmpuint(json_array_get_length(member_array(assert_ok(inq), "leases")), ==, 1);
    /* And let go of the same way. */
    raw_send_msg(r, "{\"method\":\"io.vmlease.Lease.Release\",\"parameters\":{}}");
    g_autoptr(JsonObject) rel = raw_read(r);
    g_assert_cmpint(member_int(assert_ok(rel), "released"), ==, 1);
}

/* A call naming no holder on a connection that registered none, or whose
 * last Register failed, acts for nobody. */
static void
case_holderless_needs_register(void)
{
    g_autofree char *acquire_scratch = holderless_acquire_msg();

    g_autoptr(Raw) fresh = raw_connect(FALSE);
    raw_send_msg(fresh, acquire_scratch);
    g_autoptr(JsonObject) none = raw_read(fresh);
    assert_invalid_parameter(none, "holder");

    g_autoptr(Raw) r = raw_connect(FALSE);
    g_autofree char *good = msg_new("io.vmlease.Lease.Register",
                                    register_params(SCRATCH_UUID, "scratch-vm", S.scratch_child));
    raw_send_msg(r, good);
    g_autoptr(JsonObject) ok = raw_read(r);
    g_assert_cmpint(member_int(assert_ok(ok), "holder"), ==, S.scratch);
    g_autofree char *bad = msg_new("io.vmlease.Lease.Register",
                                   register_params("not-a-uuid", "scratch-vm", S.scratch_child));
    raw_send_msg(r, bad);
    g_autoptr(JsonObject) refused = raw_read(r);
    assert_invalid_parameter(refused, "uuid");
    raw_send_msg(r, acquire_scratch);
    g_autoptr(JsonObject) after = raw_read(r);
    assert_invalid_parameter(after, "holder");
    assert_scratch_holds_nothing();
}

/* A client configured for another lockspace: Register is refused naming
 * both, and the call sent behind it acts for nobody. */
static void
case_register_wrong_lockspace(void)
{
    g_autoptr(Raw) r = raw_connect(FALSE);
    JsonObject *rp = register_params(SCRATCH_UUID, "scratch-vm", S.scratch_child);
    json_object_set_string_member(rp, "lockspace", "/elsewhere/lockspace");
    g_autofree char *reg = msg_new("io.vmlease.Lease.Register", rp);
    g_autofree char *acq = holderless_acquire_msg();
    raw_send_msg(r, reg);
    raw_send_msg(r, acq);
    g_autoptr(JsonObject) first = raw_read(r);
    JsonObject *e = assert_error(first, INVALID_PARAMETER);
    g_assert_cmpstr(member_string(e, "parameter"), ==, "lockspace");
    g_autofree char *ls = g_build_filename(S.root, "lockspace", NULL);
    g_autofree char *want = g_strdup_printf(
        "vmleased uses lockspace %s, but the client's configuration (qemu-vmlease.conf) says "
        "lockspace_dir = \"/elsewhere/lockspace\"", ls);
    g_assert_cmpstr(member_string(e, "message"), ==, want);
    g_autoptr(JsonObject) second = raw_read(r);
    assert_invalid_parameter(second, "holder");
    assert_scratch_holds_nothing();
}

static void
case_register_on_admin_socket(void)
{
    /* Lease methods exist only on the lease socket, even for root. */
    const char *const methods[] = {
        "io.vmlease.Lease.Register", "io.vmlease.Lease.Acquire",
        "io.vmlease.Lease.Release", "io.vmlease.Lease.Inquire",
    };
    for (guint i = 0; i < G_N_ELEMENTS(methods); i++) {
        JsonObject *params;
        if (i == 0) {
            params = register_params(FRESH_UUID, "vm", getpid());
        } else {
            /* Well-formed calls naming the held VM and its image. */
            params = json_object_new();
            json_object_set_int_member(params, "holder", S.holder);
            JsonArray *a = json_array_new();
            json_array_add_object_element(a, resource_path(S.image, "exclusive"));
            json_object_set_array_member(params, "resources", a);
        }
        g_autoptr(JsonObject) reply = call(TRUE, methods[i], params);
        JsonObject *p = assert_error(reply, "io.vmlease.PermissionDenied");
        g_assert_cmpint(member_int(p, "uid"), ==, getuid());
    }
}

/* ==== cases: Acquire, Release, Owners ==================================== */

static void
case_holder_negative(void)
{
    const gint64 holders[] = { -1, 0, G_MININT64 };
    for (guint i = 0; i < G_N_ELEMENTS(holders); i++) {
        JsonArray *a = json_array_new();
        json_array_add_object_element(a, resource_path(S.scratch_image, NULL));
        g_autoptr(JsonObject) reply = acquire(holders[i], a);
        assert_invalid_parameter(reply, "holder");
    }
}

static void
case_holder_huge(void)
{
    const gint64 huge = G_GINT64_CONSTANT(1) << 62;
    JsonArray *a = json_array_new();
    json_array_add_object_element(a, resource_path(S.scratch_image, NULL));
    g_autoptr(JsonObject) reply = acquire(huge, a);
    JsonObject *p = assert_error(reply, "io.vmlease.NoSuchHolder");
    g_assert_cmpint(member_int(p, "holder"), ==, huge);
}

static void
case_holder_wrong_type(void)
{
    const char *const holders[] = { "\"1\"", "1.0", "true", "null", "[1]", "{\"id\":1}" };
    for (guint i = 0; i < G_N_ELEMENTS(holders); i++) {
        g_autofree char *text = g_strdup_printf(
            "{\"method\":\"io.vmlease.Lease.Inquire\",\"parameters\":{\"holder\":%s}}", holders[i]);
        g_autoptr(JsonObject) reply = call_text(FALSE, text);
        assert_invalid_parameter(reply, "holder");
    }
}

static void
case_holder_beyond_int64(void)
{
    /* Integers outside int64 must not wrap onto real holder ids (json-glib
     * reads -18446744073709551615 as 1). Refusing the message whole or the
     * parameter are both right; answering for some holder is not. */
    const char *const holders[] = {
        "-18446744073709551615", "18446744073709551617",
        "9223372036854775808", "-9223372036854775809",
    };
    for (guint i = 0; i < G_N_ELEMENTS(holders); i++) {
        g_autofree char *text = g_strdup_printf(
            "{\"method\":\"io.vmlease.Lease.Inquire\",\"parameters\":{\"holder\":%s}}", holders[i]);
        g_autoptr(JsonObject) reply = call_text(FALSE, text);
        const char *err = member_string(reply, "error");
        g_test_message("holder %s: %s", holders[i], err ? err : "(success)");
        if (g_strcmp0(err, INVALID_MESSAGE) != 0)
            assert_invalid_parameter(reply, "holder");
    }
}

static void
case_resources_not_array(void)
{
    const char *const values[] = { "\"/etc/passwd\"", "{}", "42", "true" };
    for (guint i = 0; i < G_N_ELEMENTS(values); i++) {
        g_autofree char *text = g_strdup_printf(
            "{\"method\":\"io.vmlease.Lease.Acquire\",\"parameters\":{\"holder\":%" G_GINT64_FORMAT
            ",\"resources\":%s}}", S.scratch, values[i]);
        g_autoptr(JsonObject) reply = call_text(FALSE, text);
        assert_invalid_parameter(reply, "resources");
    }
    assert_scratch_holds_nothing();
}

static void
case_resource_not_object(void)
{
    /* ["PATH"], [["PATH"]], [null], [1] */
    JsonArray *as_string = json_array_new();
    json_array_add_string_element(as_string, S.scratch_image);
    JsonArray *inner = json_array_new();
    json_array_add_string_element(inner, S.scratch_image);
    JsonArray *nested = json_array_new();
    json_array_add_array_element(nested, inner);
    JsonArray *with_null = json_array_new();
    json_array_add_null_element(with_null);
    JsonArray *with_int = json_array_new();
    json_array_add_int_element(with_int, 1);
    JsonArray *const arrays[] = { as_string, nested, with_null, with_int };
    for (guint i = 0; i < G_N_ELEMENTS(arrays); i++) {
        g_autoptr(JsonObject) reply = acquire(S.scratch, arrays[i]);
        assert_invalid_parameter(reply, "resources");
    }
    assert_scratch_holds_nothing();
}

static void
case_mode_bogus(void)
{
    const char *const modes[] = { "bogus", "", "EXCLUSIVE", "exclusive\n", "shared,exclusive" };
    for (guint i = 0; i < G_N_ELEMENTS(modes); i++) {
        JsonArray *a = json_array_new();
        json_array_add_object_element(a, resource_path(S.scratch_image, modes[i]));
        g_autoptr(JsonObject) reply = acquire(S.scratch, a);
        assert_invalid_parameter(reply, "mode");
    }
    assert_scratch_holds_nothing();
}

static void
case_fds_not_bool(void)
{
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", S.scratch);
    JsonArray *a = json_array_new();
    json_array_add_object_element(a, resource_path(S.scratch_image, NULL));
    json_object_set_array_member(p, "resources", a);
    json_object_set_string_member(p, "fds", "yes");
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Acquire", p);
    assert_invalid_parameter(reply, "fds");
    assert_scratch_holds_nothing();
}

static void
case_path_dotdot(void)
{
    g_autofree char *base = g_path_get_basename(S.scratch_image);
    g_autofree char *rootbase = g_path_get_basename(S.root);
    g_autofree char *p1 = g_strdup_printf("%s/../%s/%s", S.root, rootbase, base);
    g_autofree char *p2 = g_strdup_printf("%s/./%s", S.root, base);
    g_autofree char *p3 = g_strdup_printf("%s//%s", S.root, base);
    g_autofree char *p4 = g_strdup_printf("%s/", S.scratch_image);
    g_autofree char *p5 = g_strdup_printf("%s/..", S.scratch_image);
    const char *const paths[] = { p1, p2, p3, p4, p5 };
    for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autoptr(JsonObject) reply = acquire_path(paths[i]);
        assert_invalid_parameter(reply, "path");
    }
    assert_scratch_holds_nothing();
}

static void
case_path_relative(void)
{
    g_autofree char *base = g_path_get_basename(S.scratch_image);
    g_autofree char *dot = g_strconcat("./", base, NULL);
    const char *const paths[] = { base, dot, "", "~root/disk.img", "../../etc/passwd" };
    for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autoptr(JsonObject) reply = acquire_path(paths[i]);
        assert_invalid_parameter(reply, "path");
    }
    assert_scratch_holds_nothing();
}

static void
case_path_too_long(void)
{
    g_autofree char *tail = repeat('a', PATH_MAX + 16);
    g_autofree char *path = g_strconcat("/", tail, NULL);
    g_autoptr(JsonObject) reply = acquire_path(path);
    assert_invalid_parameter(reply, "path");
    assert_scratch_holds_nothing();
}

static void
case_path_directory(void)
{
    g_autoptr(JsonObject) reply = acquire_path(S.root);
    JsonObject *p = assert_error(reply, "io.vmlease.NoSuchImage");
    g_assert_cmpstr(member_string(p, "path"), ==, S.root);
    assert_scratch_holds_nothing();
}

static void
case_path_missing(void)
{
    g_autofree char *path = g_build_filename(S.root, "no-such-image.qcow2", NULL);
    g_autoptr(JsonObject) reply = acquire_path(path);
    JsonObject *p = assert_error(reply, "io.vmlease.NoSuchImage");
    g_assert_cmpstr(member_string(p, "path"), ==, path);
    assert_scratch_holds_nothing();
}

static void
case_path_special_files(void)
{
    /* Not images: a character device, a FIFO (must not be opened: that would
     * block), a symlink loop, a dangling symlink. */
    g_autofree char *tag = g_strdup_printf("%d", (int)getpid());
    g_autofree char *fifo = g_strdup_printf("%s/fifo-%s", S.root, tag);
    g_autofree char *loop_a = g_strdup_printf("%s/loop-a-%s", S.root, tag);
    g_autofree char *loop_b = g_strdup_printf("%s/loop-b-%s", S.root, tag);
    g_autofree char *dangling = g_strdup_printf("%s/dangling-%s", S.root, tag);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    g_assert_cmpint(symlink(loop_b, loop_a), ==, 0);
    g_assert_cmpint(symlink(loop_a, loop_b), ==, 0);
    g_assert_cmpint(symlink("/nonexistent/disk.img", dangling), ==, 0);
    const char *const paths[] = { "/dev/null", fifo, loop_a, dangling };
    for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autoptr(JsonObject) reply = acquire_path(paths[i]);
        JsonObject *p = assert_error(reply, "io.vmlease.NoSuchImage");
        g_assert_cmpstr(member_string(p, "path"), ==, paths[i]);
    }
    assert_scratch_holds_nothing();
}

static void
case_path_and_key(void)
{
    JsonObject *both = resource_path(S.scratch_image, NULL);
    json_object_set_string_member(both, "lockspace", "ls");
    json_object_set_string_member(both, "key", "k");
    JsonObject *no_key = json_object_new();
    json_object_set_string_member(no_key, "lockspace", "ls");
    JsonObject *empty = json_object_new();
    json_object_set_string_member(empty, "lockspace", "");
    json_object_set_string_member(empty, "key", "");
    JsonObject *nothing = json_object_new();
    JsonObject *const entries[] = { both, no_key, empty, nothing };
    for (guint i = 0; i < G_N_ELEMENTS(entries); i++) {
        JsonArray *a = json_array_new();
        json_array_add_object_element(a, entries[i]);
        g_autoptr(JsonObject) reply = acquire(S.scratch, a);
        assert_invalid_parameter(reply, "resources");
    }
    assert_scratch_holds_nothing();
}

static void
case_empty_resources(void)
{
    g_autoptr(JsonObject) reply = acquire(S.scratch, json_array_new());
    assert_invalid_parameter(reply, "resources");
    assert_scratch_holds_nothing();
}

static void
case_duplicate_resource(void)
{
    /* The same image twice, also under another name (a symlink), also in
     * two modes: all name one resource twice. */
    g_autofree char *link = g_strdup_printf("%s/link-%d.img", S.root, (int)getpid());
    g_assert_cmpint(symlink(S.scratch_image, link), ==, 0);
    const char *const second[] = { S.scratch_image, link, S.scratch_image };
    const char *const modes[] = { "exclusive", "exclusive", "shared" };
    for (guint i = 0; i < G_N_ELEMENTS(second); i++) {
        JsonArray *a = json_array_new();
        json_array_add_object_element(a, resource_path(S.scratch_image, "exclusive"));
        json_array_add_object_element(a, resource_path(second[i], modes[i]));
        g_autoptr(JsonObject) reply = acquire(S.scratch, a);
        assert_invalid_parameter(reply, "resources");
    }
    assert_scratch_holds_nothing();
}

static void
case_too_many_resources(void)
{
    JsonArray *a = json_array_new();
    for (int i = 0; i < 1025; i++)
        json_array_add_object_element(a, resource_path(S.scratch_image, NULL));
    g_autoptr(JsonObject) reply = acquire(S.scratch, a);
    JsonObject *p = assert_error(reply, "io.vmlease.LimitReached");
    g_assert_cmpstr(member_string(p, "limit"), ==, "max_resources_per_call");
    g_assert_cmpint(member_int(p, "value"), ==, 1024);
    assert_scratch_holds_nothing();
}

static void
case_steal_held_image(void)
{
    /* Another holder asking for the held image, in either mode, is told who
     * has it. */
    g_autofree char *canon = realpath(S.image, NULL);
    const char *const modes[] = { "exclusive", "shared" };
    for (guint i = 0; i < G_N_ELEMENTS(modes); i++) {
        JsonArray *a = json_array_new();
        json_array_add_object_element(a, resource_path(S.image, modes[i]));
        g_autoptr(JsonObject) reply = acquire(S.scratch, a);
        JsonObject *p = assert_error(reply, "io.vmlease.Conflict");
        vml_test_assert_image(p, "canonical_path", canon);
        g_assert_cmpstr(member_string(p, "mode"), ==, modes[i]);
        JsonArray *owners = member_array(p, "owners");
        g_assert_cmpuint(json_array_get_length(owners), ==, 1);
        JsonObject *o = json_array_get_object_element(owners, 0);
        g_assert_cmpint(member_int(o, "pid"), ==, S.child);
    }
    assert_scratch_holds_nothing();
}

static void
case_release_others_lease(void)
{
    /* Another holder cannot release the held lease by naming it. */
    g_autofree char *canon = realpath(S.image, NULL);
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", S.scratch);
    JsonArray *a = json_array_new();
    json_array_add_object_element(a, resource_path(S.image, NULL));
    json_object_set_array_member(p, "resources", a);
    g_autoptr(JsonObject) reply = call(FALSE, "io.vmlease.Lease.Release", p);
    JsonObject *ep = assert_error(reply, "io.vmlease.NotHeld");
    vml_test_assert_image(ep, "path", canon);

    /* Release-all of an empty holder releases nothing. */
    JsonObject *p2 = json_object_new();
    json_object_set_int_member(p2, "holder", S.scratch);
    g_autoptr(JsonObject) reply2 = call(FALSE, "io.vmlease.Lease.Release", p2);
    g_assert_cmpint(member_int(assert_ok(reply2), "released"), ==, 0);
}

static void
case_owners_bad_paths(void)
{
    const char *const forms[] = {
        "[1]", "[null]", "[[\"/x\"]]", "\"/x\"", "{}", "[\"relative.img\"]",
    };
    for (guint i = 0; i < G_N_ELEMENTS(forms); i++) {
        g_autofree char *text = g_strdup_printf(
            "{\"method\":\"io.vmlease.Admin.Owners\",\"parameters\":{\"paths\":%s}}", forms[i]);
        g_autoptr(JsonObject) reply = call_text(TRUE, text);
        assert_invalid_parameter(reply, "paths");
    }
}

static void
case_interface_description_bad(void)
{
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "interface", "org.example.nope");
    g_autoptr(JsonObject) reply = call(FALSE, "org.varlink.service.GetInterfaceDescription", p);
    JsonObject *ep = assert_error(reply, INTERFACE_NOT_FOUND);
    g_assert_cmpstr(member_string(ep, "interface"), ==, "org.example.nope");

    g_autofree char *long_name = repeat('i', 4096);
    const char *const bad[] = { "io.vmlease\001", long_name };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        JsonObject *q = json_object_new();
        json_object_set_string_member(q, "interface", bad[i]);
        g_autoptr(JsonObject) r2 = call(FALSE, "org.varlink.service.GetInterfaceDescription", q);
        assert_invalid_parameter(r2, "interface");
    }
}

/* ==== cases: file descriptors and connections ============================ */

/* Register with a mailbox that is none, or one the holder does not keep
 * (whoever had it could read the holder's lock fds out of it): refused,
 * nothing stays behind, the holder's leases are as they were. */
static void
case_register_mailbox_hostile(void)
{
    g_autoptr(Raw) r = raw_connect(FALSE);
    assert_conn_serves(r);
    guint base = count_fds(S.daemon_pid);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int pair[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
    int ours = vml_mailbox_socket_new(NULL);
    struct { int fds[2]; guint n; } tries[] = {
        { { devnull }, 1 }, { { pair[0] }, 1 }, { { ours }, 1 }, { { ours, devnull }, 2 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(tries); i++) {
        g_autofree char *msg = msg_new("io.vmlease.Lease.Register",
                                       register_params(SCRATCH_UUID, "scratch-vm", S.scratch_child));
        raw_send_fds(r, msg, strlen(msg) + 1, tries[i].fds, tries[i].n);
        g_autoptr(JsonObject) reply = raw_read(r);
        assert_invalid_parameter(reply, "mailbox");
    }
    close(devnull);
    close(pair[0]);
    close(pair[1]);
    close(ours);
    assert_daemon_fds_at_most(base);
    assert_conn_serves(r);
}

/* Paths through /proc or /dev/fd name what the daemon has open, and the
 * daemon's own directories hold its records: never a resource. */
static void
case_paths_into_the_daemon(void)
{
    g_autofree char *lockspace = g_build_filename(S.root, "lockspace", NULL);
    g_autoptr(GDir) dir = g_dir_open(lockspace, 0, NULL);
    g_assert_nonnull(dir);
    g_autofree char *record = NULL;
    for (const char *e; (e = g_dir_read_name(dir));) {
        if (g_str_has_suffix(e, ".holder")) {
            record = g_build_filename(lockspace, e, NULL);
            break;
        }
    }
    g_assert_nonnull(record);
    g_autofree char *via_fd = g_strdup_printf("/proc/%d/fd/0", (int)S.daemon_pid);
    g_autofree char *dotdot = g_strdup_printf("%s/../lockspace/%s", lockspace,
                                              strrchr(record, '/') + 1);
    const char *const paths[] = { "/proc/self/fd/3", "/dev/fd/3", via_fd, record, dotdot };
    for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autoptr(JsonObject) reply = acquire_path(paths[i]);
        assert_invalid_parameter(reply, "path");
    }
}

static void
case_fds_with_status(void)
{
    /* fds sent along with a call that takes none: answered normally, and
     * the daemon closes every one of them. */
    g_autoptr(Raw) r = raw_connect(FALSE);
    assert_conn_serves(r);
    guint base = count_fds(S.daemon_pid);
    const guint n = 50;
    int *fds = open_fds(n);
    raw_send_fds(r, STATUS_MSG, sizeof(STATUS_MSG), fds, n);
    close_fds(fds, n);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_status_reply(reply);
    assert_daemon_fds_at_most(base);
    assert_conn_serves(r);
    assert_daemon_fds_at_most(base);
}

/* Stash.Give with the wrong number of fds, bad owners and names: refused,
 * and not one fd stays behind in the daemon. */
static void
case_stash_give_bad(void)
{
    g_autoptr(Raw) r = raw_connect(FALSE);
    assert_conn_serves(r);
    guint base = count_fds(S.daemon_pid);
    static const struct { guint n_fds; const char *params; const char *parameter; } cases[] = {
        { 0, "{\"owner\":\"" FRESH_UUID "\",\"name\":\"x\"}", "fd" },
        { 2, "{\"owner\":\"" FRESH_UUID "\",\"name\":\"x\"}", "fd" },
        { 1, "{\"owner\":\"not-a-uuid\",\"name\":\"x\"}", "owner" },
        { 1, "{\"owner\":\"" FRESH_UUID "\",\"name\":\"\"}", "name" },
        { 1, "{\"owner\":\"" FRESH_UUID "\",\"name\":\"a\\nb\"}", "name" },
        { 1, "{\"owner\":\"" FRESH_UUID "\",\"name\":\"x\",\"keep\":1}", "keep" },
        { 1, "{\"name\":\"x\"}", "owner" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *msg = g_strdup_printf("{\"method\":\"io.vmlease.Stash.Give\","
                                               "\"parameters\":%s}", cases[i].params);
        int *fds = open_fds(cases[i].n_fds);
        raw_send_fds(r, msg, strlen(msg) + 1, fds, cases[i].n_fds);
        close_fds(fds, cases[i].n_fds);
        g_autoptr(JsonObject) reply = raw_read(r);
        assert_invalid_parameter(reply, cases[i].parameter);
    }
    assert_daemon_fds_at_most(base);
    g_autoptr(JsonObject) list = call(FALSE, "io.vmlease.Stash.List", NULL);
    g_assert_cmpuint(json_array_get_length(member_array(assert_ok(list), "fds")), ==, 0);
}

static void
case_fds_with_truncated_message(void)
{
    /* fds with the start of a message that never ends: closed with the
     * connection. */
    g_autoptr(Raw) sync = raw_connect(FALSE);
    assert_conn_serves(sync);
    guint base = count_fds(S.daemon_pid);
    g_autoptr(Raw) r = raw_connect(FALSE);
    const guint n = 50;
    int *fds = open_fds(n);
    const char *half = "{\"method\":\"io.vmlease.Admin.Sta";
    raw_send_fds(r, half, strlen(half), fds, n);
    close_fds(fds, n);
    assert_conn_serves(sync);   /* give the daemon a turn to read r */
    g_clear_pointer(&r, raw_free);
    assert_daemon_fds_at_most(base);
}

static void
case_fd_flood(void)
{
    /* One message can carry at most VML_FDS_MAX fds. A client that piles up
     * more before its NUL (253 per sendmsg, three times) must be told and
     * cut off, not allowed to pin fds in the daemon up to its RLIMIT_NOFILE
     * (at which point accept() and every lock-file open fail for everyone). */
    g_autoptr(Raw) sync = raw_connect(FALSE);
    assert_conn_serves(sync);
    guint base = count_fds(S.daemon_pid);
    g_autoptr(Raw) r = raw_connect(FALSE);
    int *fds = open_fds(VML_FDS_MAX);
    raw_send_fds(r, "{", 1, fds, VML_FDS_MAX);
    raw_send_fds(r, " ", 1, fds, VML_FDS_MAX);
    raw_send_fds(r, " ", 1, fds, 1);
    close_fds(fds, VML_FDS_MAX);
    g_autoptr(JsonObject) reply = raw_read(r);
    assert_error(reply, INVALID_MESSAGE);
    raw_assert_hangup(r);
    g_clear_pointer(&r, raw_free);
    assert_daemon_fds_at_most(base);
}

static void
case_connection_flood(void)
{
    /* More clients than max_clients (1024): the extra ones are refused with
     * LimitReached(limit, value) and hung up on; those let in are served; and
     * once they go, a new client is served again. The daemon runs with a soft
     * fd limit of 1024 (see start_daemon): it must see to having the fds that
     * max_clients promises, and never stall on running out of them. */
    const guint n = 1100;
    /* This side needs the fds too, whatever soft limit it was started with. */
    struct rlimit rl;
    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n + 64) {
        g_test_skip("RLIMIT_NOFILE hard limit too low for 1100 clients");
        return;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < n + 64) {
        rl.rlim_cur = n + 64;
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    }
    g_autoptr(GPtrArray) conns = g_ptr_array_new_with_free_func((GDestroyNotify)raw_free);
    for (guint i = 0; i < n; i++)
        g_ptr_array_add(conns, raw_connect(FALSE));
    guint served = 0, refused = 0;
    for (guint i = 0; i < n; i++) {
        Raw *r = conns->pdata[i];
        (void)raw_send_try(r, STATUS_MSG, sizeof(STATUS_MSG));
        g_autoptr(JsonObject) reply = raw_read(r);
        if (!member_string(reply, "error")) {
            assert_status_reply(reply);
            served++;
            continue;
        }
        JsonObject *p = assert_error(reply, "io.vmlease.LimitReached");
        g_assert_cmpstr(member_string(p, "limit"), ==, "max_clients");
        g_assert_cmpint(member_int(p, "value"), ==, 1024);
        raw_assert_hangup(r);
        refused++;
    }
    g_test_message("%u served, %u refused", served, refused);
    g_assert_cmpuint(served + refused, ==, n);
    g_assert_cmpuint(refused, >=, n - 1024);
    g_assert_cmpuint(served, >=, 1000);
    g_ptr_array_set_size(conns, 0);

    /* The daemon takes the hang-ups in its own time: wait until a new client
     * gets in again (and leave it so for the check after this case). */
    for (int i = 0; i < 300; i++) {
        g_autoptr(Raw) r = raw_connect(FALSE);
        raw_send_msg(r, STATUS_MSG);
        g_autoptr(JsonObject) reply = raw_read(r);
        if (!member_string(reply, "error"))
            return;
        g_usleep(10000);
    }
    g_assert_not_reached();
}

/* ==== the run ============================================================ */

typedef void (*CaseFunc)(void);
typedef struct {
    const char *path;
    CaseFunc func;
} Case;

static const Case cases[] = {
    { "/hostile/framing/truncated-then-close", case_truncated_then_close },
    { "/hostile/framing/truncated-then-shutdown", case_truncated_then_shutdown },
    { "/hostile/framing/oversized-no-nul", case_oversized_no_nul },
    { "/hostile/framing/oversized-nul-after-2mib", case_oversized_nul_after_2mib },
    { "/hostile/framing/message-at-limit", case_message_at_limit },
    { "/hostile/framing/message-one-over-limit", case_message_one_over_limit },
    { "/hostile/framing/empty-message", case_empty_message },
    { "/hostile/framing/pipelined-50", case_pipelined },
    { "/hostile/framing/pipelined-with-garbage", case_pipelined_with_garbage },
    { "/hostile/framing/slow-client", case_slow_client },
    { "/hostile/framing/client-never-reads", case_client_never_reads },
    { "/hostile/message/not-json", case_not_json },
    { "/hostile/message/json-array", case_json_array },
    { "/hostile/message/json-string", case_json_string },
    { "/hostile/message/json-scalars", case_json_scalars },
    { "/hostile/message/trailing-garbage", case_trailing_garbage },
    { "/hostile/message/two-objects", case_two_objects_in_one_message },
    { "/hostile/message/missing-method", case_missing_method },
    { "/hostile/message/method-not-string", case_method_not_string },
    { "/hostile/message/parameters-not-object", case_parameters_not_object },
    { "/hostile/stash/give-bad", case_stash_give_bad },
    { "/hostile/message/unknown-method", case_unknown_method },
    { "/hostile/message/huge-method-name", case_huge_method_name },
    { "/hostile/message/invalid-utf8", case_invalid_utf8 },
    { "/hostile/message/method-control-chars", case_method_control_chars },
    { "/hostile/message/path-nul-escape", case_path_nul_escape },
    { "/hostile/message/deep-nesting", case_deep_nesting_bare },
    { "/hostile/message/deep-nesting-in-parameters", case_deep_nesting_in_parameters },
    { "/hostile/message/nesting-just-over-limit", case_nesting_just_over_limit },
    { "/hostile/message/deep-nesting-behind-single-quote", case_deep_nesting_behind_single_quote },
    { "/hostile/message/deep-nesting-behind-comment", case_deep_nesting_behind_comment },
    { "/hostile/message/nul-escape-behind-single-quote", case_nul_escape_behind_single_quote },
    { "/hostile/message/lone-surrogate", case_lone_surrogate },
    { "/hostile/register/pid-string", case_register_pid_string },
    { "/hostile/register/pid-float", case_register_pid_float },
    { "/hostile/register/pid-out-of-range", case_register_pid_out_of_range },
    { "/hostile/register/pid-gone", case_register_pid_gone },
    { "/hostile/register/uuid-malformed", case_register_uuid_malformed },
    { "/hostile/register/name-control-chars", case_register_name_control_chars },
    { "/hostile/register/name-too-long", case_register_name_too_long },
    { "/hostile/register/program-bad", case_register_program_bad },
    { "/hostile/force-unlock/bad-params", case_force_unlock_bad_params },
    { "/hostile/force-unlock/lying-header", case_force_unlock_lying_header },
    { "/hostile/register/hijack-pid", case_register_hijack_pid },
    { "/hostile/register/on-admin-socket", case_register_on_admin_socket },
    { "/hostile/register/then-call", case_register_then_call },
    { "/hostile/register/holderless-needs-register", case_holderless_needs_register },
    { "/hostile/register/wrong-lockspace", case_register_wrong_lockspace },
    { "/hostile/acquire/holder-negative", case_holder_negative },
    { "/hostile/acquire/holder-huge", case_holder_huge },
    { "/hostile/acquire/holder-wrong-type", case_holder_wrong_type },
    { "/hostile/acquire/holder-beyond-int64", case_holder_beyond_int64 },
    { "/hostile/acquire/resources-not-array", case_resources_not_array },
    { "/hostile/acquire/resource-not-object", case_resource_not_object },
    { "/hostile/acquire/mode-bogus", case_mode_bogus },
    { "/hostile/acquire/fds-not-bool", case_fds_not_bool },
    { "/hostile/acquire/path-dotdot", case_path_dotdot },
    { "/hostile/acquire/path-relative", case_path_relative },
    { "/hostile/acquire/path-too-long", case_path_too_long },
    { "/hostile/acquire/path-directory", case_path_directory },
    { "/hostile/acquire/path-missing", case_path_missing },
    { "/hostile/acquire/path-special-files", case_path_special_files },
    { "/hostile/acquire/path-and-key", case_path_and_key },
    { "/hostile/acquire/empty-resources", case_empty_resources },
    { "/hostile/acquire/duplicate-resource", case_duplicate_resource },
    { "/hostile/acquire/too-many-resources", case_too_many_resources },
    { "/hostile/acquire/steal-held-image", case_steal_held_image },
    { "/hostile/release/others-lease", case_release_others_lease },
    { "/hostile/admin/owners-bad-paths", case_owners_bad_paths },
    { "/hostile/admin/interface-description-bad", case_interface_description_bad },
    { "/hostile/fds/with-status", case_fds_with_status },
    { "/hostile/fds/register-mailbox", case_register_mailbox_hostile },
    { "/hostile/paths/into-the-daemon", case_paths_into_the_daemon },
    { "/hostile/fds/with-truncated-message", case_fds_with_truncated_message },
    { "/hostile/fds/flood", case_fd_flood },
    { "/hostile/connections/flood", case_connection_flood },
};

static void
export_state(void)
{
    g_autofree char *state = g_strdup_printf(
        "%d\n%d\n%" G_GINT64_FORMAT "\n%d\n%" G_GINT64_FORMAT "\n%s\n%s",
        (int)S.daemon_pid, (int)S.child, S.holder, (int)S.scratch_child, S.scratch,
        S.image, S.scratch_image);
    g_setenv(STATE_ENV, state, TRUE);
}

static void
import_state(void)
{
    const char *state = g_getenv(STATE_ENV);
    g_assert_nonnull(state);
    g_auto(GStrv) f = g_strsplit(state, "\n", -1);
    g_assert_cmpuint(g_strv_length(f), ==, 7);
    S.daemon_pid = atoi(f[0]);
    S.child = atoi(f[1]);
    S.holder = g_ascii_strtoll(f[2], NULL, 10);
    S.scratch_child = atoi(f[3]);
    S.scratch = g_ascii_strtoll(f[4], NULL, 10);
    S.image = g_strdup(f[5]);
    S.scratch_image = g_strdup(f[6]);
    S.root = g_getenv("VMLEASE_ROOT");
}

/* The long-lived holder and its lease, and the scratch holder. */
static void
setup_baseline(void)
{
    static guint generation;
    generation++;
    S.daemon_pid = S.d->pid;
    S.root = S.d->root;
    g_autofree char *held = g_strdup_printf("held-%u.img", generation);
    g_autofree char *scratch = g_strdup_printf("scratch-%u.img", generation);
    g_free(S.image);
    g_free(S.scratch_image);
    S.image = vml_test_make_image(S.d, held);
    S.scratch_image = vml_test_make_image(S.d, scratch);

    S.child = vml_test_child_spawn();
    S.holder = vml_test_register(HELD_UUID, "held-vm", S.child);
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", S.holder);
    json_object_set_array_member(p, "resources", vml_test_resources("exclusive", S.image, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = vml_test_call(FALSE, "io.vmlease.Lease.Acquire", p,
                                            NULL, NULL, &error);
    json_object_unref(p);
    g_assert_no_error(error);

    S.scratch_child = vml_test_child_spawn();
    S.scratch = vml_test_register(SCRATCH_UUID, "scratch-vm", S.scratch_child);
    export_state();
}

static void
kill_children(void)
{
    vml_test_child_kill(S.child, SIGKILL);
    vml_test_child_kill(S.scratch_child, SIGKILL);
}

/* Start (or restart) the daemon with the fd limit systemd gives a service
 * by default (soft 1024), the limit it meets in production; the hard limit,
 * and this process's own limit, stay as they are. */
static void
start_daemon(void)
{
    struct rlimit saved, lowered;
    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
    lowered = saved;
    lowered.rlim_cur = MIN((rlim_t)1024, saved.rlim_max);
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &lowered), ==, 0);
    if (!S.d)
        S.d = vml_test_daemon_start(NULL);
    else
        vml_test_daemon_restart(S.d);
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
}

/* After a case broke the daemon: a fresh daemon on the same root, a fresh
 * baseline, so that the remaining cases still test something. */
static void
reset_baseline(void)
{
    kill_children();
    vml_test_daemon_kill(S.d, SIGKILL);
    start_daemon();
    setup_baseline();
}

static gboolean
daemon_serves(char **why)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Raw) r = raw_connect_try(TRUE, &error);
    if (!r) {
        *why = g_strdup(error->message);
        return FALSE;
    }
    g_autoptr(JsonObject) status = NULL;
    RawResult res = raw_send_try(r, STATUS_MSG, sizeof(STATUS_MSG))
        ? raw_recv(r, &status) : RAW_BAD;
    if (res != RAW_REPLY) {
        *why = g_strdup_printf("Status: %s", raw_result_name(res));
        return FALSE;
    }
    if (member_string(status, "error")) {
        g_autofree char *outcome = reply_outcome(status);
        *why = g_strdup_printf("Status: %s", outcome);
        return FALSE;
    }

    /* The lease taken at the start is still the held VM's. */
    g_autoptr(JsonObject) params = json_object_new();
    JsonArray *paths = json_array_new();
    json_array_add_string_element(paths, S.image);
    json_object_set_array_member(params, "paths", paths);
    g_autofree char *text = msg_new("io.vmlease.Admin.Owners", json_object_ref(params));
    g_autoptr(JsonObject) owners = NULL;
    res = raw_send_try(r, text, strlen(text) + 1) ? raw_recv(r, &owners) : RAW_BAD;
    if (res != RAW_REPLY) {
        *why = g_strdup_printf("Owners: %s", raw_result_name(res));
        return FALSE;
    }
    if (member_string(owners, "error")) {
        g_autofree char *outcome = reply_outcome(owners);
        *why = g_strdup_printf("Owners: %s", outcome);
        return FALSE;
    }
    JsonNode *rn = json_object_get_member(reply_params(owners), "resources");
    JsonArray *ra = (rn && JSON_NODE_HOLDS_ARRAY(rn)) ? json_node_get_array(rn) : NULL;
    JsonObject *res0 = (ra && json_array_get_length(ra) == 1)
        ? json_array_get_object_element(ra, 0) : NULL;
    JsonNode *on = res0 ? json_object_get_member(res0, "owners") : NULL;
    JsonArray *oa = (on && JSON_NODE_HOLDS_ARRAY(on)) ? json_node_get_array(on) : NULL;
    if (!oa || json_array_get_length(oa) != 1) {
        *why = g_strdup_printf("Owners of %s: not exactly one owner", S.image);
        return FALSE;
    }
    JsonObject *o = json_array_get_object_element(oa, 0);
    JsonNode *pid = json_object_get_member(o, "pid");
    if (!pid || json_node_get_value_type(pid) != G_TYPE_INT64 ||
        json_node_get_int(pid) != S.child ||
        g_strcmp0(member_string(o, "mode"), "exclusive") != 0) {
        *why = g_strdup_printf("Owners of %s: the owner is no longer pid %d (exclusive)",
                               S.image, (int)S.child);
        return FALSE;
    }
    return TRUE;
}

/* The end of the daemon's log (the harness keeps it in root/vmleased.log),
 * to show why it died. */
static void
print_daemon_log_tail(void)
{
    g_autofree char *path = g_build_filename(S.d->root, "vmleased.log", NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    guint n = g_strv_length(lines);
    for (guint i = n > 11 ? n - 11 : 0; i < n; i++) {
        if (*lines[i])
            g_printerr("# vmleased.log: %s\n", lines[i]);
    }
}

/* After every case: the daemon lives, serves a new client and still holds
 * the long-lived lease. */
static void
check_daemon(void)
{
    int status;
    if (waitpid(S.d->pid, &status, WNOHANG) == S.d->pid) {
        S.d->pid = 0;
        g_autofree char *how = WIFSIGNALED(status)
            ? g_strdup_printf("killed by signal %d (%s)", WTERMSIG(status),
                              g_strsignal(WTERMSIG(status)))
            : g_strdup_printf("exit status %d", WEXITSTATUS(status));
        g_test_fail_printf("vmleased died: %s", how);
        g_printerr("# vmleased died (%s); starting a new one for the remaining cases\n", how);
        print_daemon_log_tail();
        reset_baseline();
        return;
    }
    g_autofree char *why = NULL;
    if (!daemon_serves(&why)) {
        g_test_fail_printf("vmleased no longer serves: %s", why);
        g_printerr("# vmleased no longer serves (%s); starting a new one\n", why);
        print_daemon_log_tail();
        reset_baseline();
    }
}

static void
run_case(gconstpointer data)
{
    const Case *c = data;
    if (g_test_subprocess()) {
        c->func();
        return;
    }
    g_test_trap_subprocess(NULL, CASE_TIMEOUT_S * G_USEC_PER_SEC,
                           G_TEST_SUBPROCESS_INHERIT_STDERR);
    if (!g_test_trap_has_passed())
        g_test_fail_printf("%s: the case failed (its message is above)", c->path);
    check_daemon();
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++)
        g_test_add_data_func(cases[i].path, &cases[i], run_case);

    if (g_test_subprocess()) {
        import_state();
        return g_test_run();
    }

    /* Peers hang up on purpose here; errors, not signals, please. */
    signal(SIGPIPE, SIG_IGN);
    start_daemon();
    setup_baseline();
    /* A failed case is recorded and the run goes on to the next one. */
    g_test_set_nonfatal_assertions();
    int rc = g_test_run();
    kill_children();
    vml_test_daemon_stop(S.d);
    g_free(S.image);
    g_free(S.scratch_image);
    return rc;
}
