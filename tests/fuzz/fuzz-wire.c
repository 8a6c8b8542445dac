/* libFuzzer target: the daemon's own server and dispatch, in-process, fed
 * through a socketpair, and the promise that every reply is strict JSON
 * (RFC 8259, lib/vml-json-strict.c), of the shape the interface gives it,
 * one reply per message.
 *
 * One daemon serves the whole run (LLVMFuzzerInitialize): the fcntl
 * backend, a lease table, a stash and the server, all under a temporary
 * VMLEASE_ROOT with a few images in ROOT/images. Each input is one client
 * connection, handed to the server with vml_server_add_connection.
 *
 * Input: messages separated by NUL bytes, as on the wire; bytes after the
 * last NUL are sent as a message cut short before the client hangs up. A
 * leading '#' puts the connection on the admin socket instead of the lease
 * socket; a leading '*' sends every message in one write (pipelining)
 * instead of one at a time, each waiting for its reply. In every message
 * these words are replaced before it goes out (tests/fuzz/wire.dict):
 *   @ROOT@     the temporary root (images in @ROOT@/images)
 *   @PID@      a process of this fuzzer's, made for the input; @PID2@ another
 *   @SELF@     the fuzzer's own pid (root's, so not the client's to register)
 *   @HOLDER@   the holder id of the last successful Register in this input
 *              (0 before one); @HOLDER1@ and @HOLDER2@ the first and second
 *   @FD@, @ROFD@, @PIPE@   removed, each attaching an fd to the message: the
 *              image a.raw read-write, read-only, and a pipe's read end
 *              (pipelined, all of them go with the one write), at most 8.
 *
 * Safety: this runs as root (it says so and exits otherwise), but the
 * client end of every socketpair is made with the effective uid and gid of
 * an unused uid, so the daemon treats the client as an unprivileged member
 * of its lease and admin groups. Register then accepts only processes of
 * that uid, which are the ones made here for each input (@PID@), killed
 * when the input is done. Their exit drops their holders and leases the
 * way a VM's exit does; the stash is made anew for each input. Root-only
 * paths (ForceUnlock, claim, status_file) are left out on purpose.
 *
 * FUZZ_WIRE_VERBOSE=1 shows every message and reply on stderr. */
#include "call-params.h"
#include "daemon.h"
#include "dispatch.h"
#include "server.h"
#include "vml-json-strict.h"
#include "vml-wire.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_MESSAGES 256     /* per input */
#define MAX_FDS 8            /* attached to one message */
#define MAX_CHILDREN 2       /* @PID@, @PID2@ */
#define MAX_HOLDERS 64       /* remembered per input */
#define SETTLE_ROUNDS 10000  /* main loop rounds before the daemon counts as stuck */
#define WIPE_EVERY 1024      /* inputs between clearing unused lock files */

static VmlDaemon D;
static char *root;
static char *images;
static uid_t client_uid;
static gid_t client_gid;
static GBytes *qcow2_pristine;   /* disk.qcow2's first bytes as qemu-img made them */
static guint64 n_inputs;
static int fd_baseline = -1;
static gboolean verbose;         /* FUZZ_WIRE_VERBOSE=1: show messages and replies */

/* ---- set-up ---------------------------------------------------------------- */

/* The daemon forks for each path a non-root client names and each image it
 * opens (both as the caller), and a fork copies the page tables of all this
 * process has touched: with ASan's default quarantine (256 MiB of freed
 * memory kept) each costs a few times more, and the whole run is half as
 * fast. 16 MiB still catches a use after a recent free. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "quarantine_size_mb=16";
}

static void
die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz-wire: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* A bug in the daemon says so with g_critical (json-glib's and GLib's
 * checks too): that is a finding. The rest is the daemon's chatter. */
static void
log_handler(G_GNUC_UNUSED const char *domain, GLogLevelFlags level, const char *message,
            G_GNUC_UNUSED gpointer data)
{
    if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR))
        die("the daemon logged a critical: %s", message);
}

/* A uid no process runs as and no account has: the clients' own. */
static uid_t
unused_uid(void)
{
    g_autoptr(GHashTable) used = g_hash_table_new(g_direct_hash, g_direct_equal);
    g_autoptr(GDir) dir = g_dir_open("/proc", 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
        if (!g_ascii_isdigit(*name))
            continue;
        g_autofree char *path = g_strdup_printf("/proc/%s/status", name);
        g_autofree char *text = NULL;
        if (!g_file_get_contents(path, &text, NULL, NULL))
            continue;
        const char *line = strstr(text, "\nUid:");
        g_auto(GStrv) f = line ? g_strsplit_set(line + 5, " \t\n", 0) : NULL;
        for (guint i = 0; f && f[i]; i++) {
            if (*f[i])
                g_hash_table_add(used, GUINT_TO_POINTER((guint)g_ascii_strtoull(f[i], NULL, 10)));
        }
    }
    for (uid_t uid = 2000000000u; uid < 2000001000u; uid++) {
        if (!g_hash_table_contains(used, GUINT_TO_POINTER(uid)) && !getpwuid(uid) &&
            !getgrgid(uid))
            return uid;
    }
    die("no unused uid found");
    return 0;
}

static void
write_file(const char *path, const void *data, gsize len, mode_t mode)
{
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(path, data, len, &error))
        die("%s", error->message);
    if (chmod(path, mode) < 0)
        die("chmod %s: %s", path, g_strerror(errno));
}

/* ROOT/images: raw images, a qcow2 one when qemu-img is there, one the
 * client may not open for writing, a symlink, a directory. */
static void
make_images(void)
{
    images = g_build_filename(root, "images", NULL);
    if (g_mkdir_with_parents(images, 0755) < 0)
        die("mkdir %s: %s", images, g_strerror(errno));
    g_autofree guint8 *zeros = g_malloc0(65536);
    const char *const raws[] = { "a.raw", "b.raw" };
    for (guint i = 0; i < G_N_ELEMENTS(raws); i++) {
        g_autofree char *p = g_build_filename(images, raws[i], NULL);
        write_file(p, zeros, 65536, 0666);
    }
    g_autofree char *ro = g_build_filename(images, "root-only.raw", NULL);
    write_file(ro, zeros, 4096, 0644);
    g_autofree char *link = g_build_filename(images, "link.raw", NULL);
    if (symlink("a.raw", link) < 0)
        die("symlink %s: %s", link, g_strerror(errno));
    g_autofree char *dir = g_build_filename(images, "dir", NULL);
    if (g_mkdir_with_parents(dir, 0755) < 0)
        die("mkdir %s: %s", dir, g_strerror(errno));

    g_autofree char *qcow2 = g_build_filename(images, "disk.qcow2", NULL);
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", qcow2, "1M", NULL };
    int status = 0;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                      &status, NULL) || !g_spawn_check_wait_status(status, NULL)) {
        fprintf(stderr, "fuzz-wire: no qemu-img: running without a qcow2 image\n");
        return;
    }
    chmod(qcow2, 0666);
    char *data;
    gsize len;
    if (!g_file_get_contents(qcow2, &data, &len, NULL))
        die("cannot read %s", qcow2);
    qcow2_pristine = g_bytes_new_take(data, MIN(len, 65536));
}

static void
remove_root(void)
{
    if (!root)
        return;
    const char *argv[] = { "rm", "-rf", root, NULL };
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                 NULL, NULL);
}

static void
on_owner_gone(const char *uuid, G_GNUC_UNUSED gpointer data)
{
    vml_stash_owner_gone(D.stash, uuid);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (geteuid() != 0) {
        fprintf(stderr, "fuzz-wire: needs root, to give its clients an unprivileged uid "
                        "of their own (see the comment at the top of fuzz-wire.c)\n");
        exit(1);
    }
    signal(SIGPIPE, SIG_IGN);
    verbose = g_strcmp0(g_getenv("FUZZ_WIRE_VERBOSE"), "1") == 0;
    g_log_set_default_handler(log_handler, NULL);
    /* No supplementary groups to pass on to the clients' credentials. */
    if (setgroups(0, NULL) < 0)
        die("setgroups: %s", g_strerror(errno));
    client_uid = unused_uid();
    client_gid = (gid_t)client_uid;

    g_autoptr(GError) error = NULL;
    root = g_dir_make_tmp("vmlease-fuzz-wire-XXXXXX", &error);
    if (!root)
        die("%s", error->message);
    atexit(remove_root);
    chmod(root, 0755);
    g_setenv("VMLEASE_ROOT", root, TRUE);
    make_images();

    /* Small limits, so that fuzzing reaches them. */
    static const char conf[] =
        "backend = \"fcntl\"\n"
        "log_level = \"error\"\n"
        "max_clients = 8\n"
        "max_holders = 8\n"
        "max_leases_per_holder = 16\n"
        "max_resources_per_call = 16\n"
        "max_stash_per_owner = 4\n"
        "max_stash_total = 8\n";
    g_autofree char *conf_path = g_build_filename(root, "vmleased.conf", NULL);
    write_file(conf_path, conf, strlen(conf), 0644);
    D.cfg = vml_daemon_config_load(conf_path, &error);
    if (!D.cfg)
        die("%s", error->message);
    D.cfg->lease_gid = D.cfg->admin_gid = client_gid;
    D.started = g_get_real_time() / G_USEC_PER_SEC;
    D.backend = vml_backend_open(D.cfg, &error);
    if (!D.backend)
        die("%s", error->message);
    D.table = vml_lease_table_new(D.backend, D.cfg);
    D.stash = vml_stash_new(D.cfg->max_stash_per_owner, D.cfg->max_stash_total);
    vml_lease_table_set_owner_gone_func(D.table, on_owner_gone, NULL);
    g_mkdir_with_parents(D.cfg->state_dir, 0700);
    D.own_dirs = vml_call_own_dirs(D.cfg, D.backend);
    D.server = vml_server_new(&D, vml_dispatch, -1, -1, &error);
    if (!D.server)
        die("%s", error->message);
    return 0;
}

/* ---- one input's processes ---------------------------------------------- */

typedef struct {
    pid_t children[MAX_CHILDREN];
    gint64 holders[MAX_HOLDERS];    /* from successful Register replies */
    guint n_holders;
} Input;

/* Where the input's processes run: a fork of this (ASan) process costs
 * milliseconds to make and to end, so they share its memory instead and
 * make only system calls, each on a stack of its own. */
static char child_stacks[MAX_CHILDREN][64 * 1024] __attribute__((aligned(64)));
static int child_ready_fds[MAX_CHILDREN];

__attribute__((no_sanitize("address", "undefined")))
static int
child_main(void *arg)
{
    int ready = *(int *)arg;
    char ok = 1;
    syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (syscall(SYS_setresgid, client_gid, client_gid, client_gid) < 0 ||
        syscall(SYS_setresuid, client_uid, client_uid, client_uid) < 0)
        syscall(SYS_exit, 1);
    /* Nothing of the daemon's (lock files, sockets) stays open here, and
     * none of it is left by the time the fuzzer goes on. */
    if (ready > 3)
        syscall(SYS_close_range, 3u, (unsigned)ready - 1, 0u);
    syscall(SYS_close_range, (unsigned)ready + 1, ~0u, 0u);
    syscall(SYS_write, ready, &ok, 1);
    syscall(SYS_close, ready);
    for (;;)
        syscall(SYS_pause);
    return 0;
}

/* A process of the clients' uid that waits to be killed. */
static pid_t
spawn_child(guint i)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe: %s", g_strerror(errno));
    child_ready_fds[i] = p[1];
    /* Not CLONE_FILES: its fd table is a copy, which it empties. */
    pid_t pid = clone(child_main, child_stacks[i] + sizeof(child_stacks[i]),
                      CLONE_VM | SIGCHLD, &child_ready_fds[i]);
    if (pid < 0)
        die("clone: %s", g_strerror(errno));
    close(p[1]);
    char ok = 0;
    ssize_t n;
    do {
        n = read(p[0], &ok, 1);
    } while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n != 1)
        die("the child process did not start");
    return pid;
}

static pid_t
child_pid(Input *in, guint i)
{
    if (!in->children[i])
        in->children[i] = spawn_child(i);
    return in->children[i];
}

/* ---- the client end ------------------------------------------------------ */

typedef struct {
    int fd;
    GByteArray *in;     /* bytes of a reply not complete yet */
    guint replies;
    gboolean eof;
    Input *input;
} Client;

static void
show_and_die(const char *what, const char *reply, gsize len)
{
    g_autofree char *shown = g_strescape(g_strndup(reply, len), NULL);
    die("%s: %s", what, shown);
}

/* One reply: strict JSON, of the interface's shape. */
static void
check_reply(Client *c, const char *text, gsize len)
{
    g_autoptr(GError) error = NULL;
    if (verbose)
        fprintf(stderr, "<- %.*s\n", (int)len, text);
    if (!vml_json_strict_check(text, len, &error))
        show_and_die(error->message, text, len);

    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, text, len, &error))
        show_and_die("strict JSON that json-glib cannot read", text, len);
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    JsonNode *params = json_object_get_member(o, "parameters");
    if (!params || !JSON_NODE_HOLDS_OBJECT(params))
        show_and_die("a reply without a parameters object", text, len);
    JsonObject *p = json_node_get_object(params);
    JsonNode *err = json_object_get_member(o, "error");
    if (err) {
        if (json_node_get_value_type(err) != G_TYPE_STRING)
            show_and_die("an error name that is not a string", text, len);
        JsonNode *msg = json_object_get_member(p, "message");
        if (!msg || json_node_get_value_type(msg) != G_TYPE_STRING)
            show_and_die("an error without a message", text, len);
        if (g_str_equal(json_node_get_string(err), "io.vmlease.InvalidMessage") &&
            g_strcmp0(json_object_get_string_member_with_default(p, "reason", NULL),
                      json_node_get_string(msg)) != 0)
            show_and_die("InvalidMessage without its reason", text, len);
        return;
    }
    /* A Register's reply: remember the holder for @HOLDER@. */
    JsonNode *h = json_object_get_member(p, "holder");
    if (h && json_node_get_value_type(h) == G_TYPE_INT64 && json_object_get_size(p) == 1 &&
        c->input->n_holders < MAX_HOLDERS)
        c->input->holders[c->input->n_holders++] = json_node_get_int(h);
}

/* Read what the daemon sent; TRUE if there was anything. */
static gboolean
drain(Client *c)
{
    static guint8 buf[65536];
    gboolean got = FALSE;
    while (!c->eof) {
        VmlFdControl control;
        struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
        };
        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno != ECONNRESET)
            die("recvmsg: %s", g_strerror(errno));
        for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm;
             cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            guint nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (guint i = 0; i < nfd; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                close(fd);
            }
        }
        if (n <= 0) {
            c->eof = TRUE;   /* ECONNRESET: it hung up with our bytes unread */
            break;
        }
        got = TRUE;
        g_byte_array_append(c->in, buf, n);
        guint8 *nul;
        while ((nul = memchr(c->in->data, 0, c->in->len))) {
            gsize len = nul - c->in->data;
            check_reply(c, (const char *)c->in->data, len);
            c->replies++;
            g_byte_array_remove_range(c->in, 0, len + 1);
        }
    }
    return got;
}

/* Run the daemon (and read its replies, if C) until nothing happens. */
static void
settle(Client *c)
{
    for (guint round = 0; round < SETTLE_ROUNDS; round++) {
        gboolean busy = FALSE;
        for (guint i = 0; i < SETTLE_ROUNDS && g_main_context_iteration(NULL, FALSE); i++)
            busy = TRUE;
        if (c && drain(c))
            busy = TRUE;
        if (!busy)
            return;
    }
    die("the daemon does not settle");
}

/* Send LEN bytes, FDS with the first of them, reading replies whenever
 * the socket is full. Stops if the daemon hangs up. */
static void
send_bytes(Client *c, const char *data, gsize len, const int *fds, guint n_fds)
{
    gsize off = 0;
    gboolean fds_sent = (n_fds == 0);
    guint stuck = 0;
    while (off < len && !c->eof) {
        struct iovec iov = { .iov_base = (char *)data + off, .iov_len = len - off };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        VmlFdControl control;
        if (!fds_sent)
            vml_wire_attach_fds(&mh, &control, fds, n_fds);
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            settle(c);
            if (++stuck > SETTLE_ROUNDS)
                die("the daemon stopped reading");
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            settle(c);
            c->eof = TRUE;
            return;
        }
        if (n < 0)
            die("sendmsg: %s", g_strerror(errno));
        fds_sent = TRUE;
        off += n;
        stuck = 0;
    }
}

/* A connected pair whose client end has the clients' uid and gid. */
static Client *
client_new(gboolean lease_socket, Input *input)
{
    int sv[2];
    if (setegid(client_gid) < 0 || seteuid(client_uid) < 0)
        die("seteuid: %s", g_strerror(errno));
    int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
    int err = errno;
    if (seteuid(0) < 0 || setegid(0) < 0)
        die("seteuid back: %s", g_strerror(errno));
    if (rc < 0)
        die("socketpair: %s", g_strerror(err));
    vml_server_add_connection(D.server, sv[0], lease_socket);
    Client *c = g_new0(Client, 1);
    c->fd = sv[1];
    c->in = g_byte_array_new();
    c->input = input;
    return c;
}

/* Hang up and wait for the daemon to do the same. */
static void
client_close(Client *c)
{
    shutdown(c->fd, SHUT_WR);
    for (guint i = 0; i < SETTLE_ROUNDS && !c->eof; i++)
        settle(c);
    if (!c->eof)
        die("the daemon did not close the connection after the client hung up");
    if (c->in->len)
        show_and_die("a reply cut short", (const char *)c->in->data, c->in->len);
    close(c->fd);
    g_byte_array_unref(c->in);
    g_free(c);
}

/* ---- messages ------------------------------------------------------------ */

static int
open_fd(const char *token)
{
    if (g_str_equal(token, "@PIPE@")) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return -1;
        close(p[1]);
        return p[0];
    }
    g_autofree char *a = g_build_filename(images, "a.raw", NULL);
    return open(a, (g_str_equal(token, "@FD@") ? O_RDWR : O_RDONLY) | O_CLOEXEC);
}

static void
replace_int(GString *s, const char *word, gint64 value)
{
    if (!strstr(s->str, word))
        return;
    char num[24];
    g_snprintf(num, sizeof(num), "%" G_GINT64_FORMAT, value);
    g_string_replace(s, word, num, 0);
}

/* The message with its words replaced, the fds it asks for in FDS. */
static GString *
expand(Input *in, const guint8 *data, gsize len, GArray *fds)
{
    GString *s = g_string_new_len((const char *)data, len);
    if (!memchr(data, '@', len))
        return s;
    g_string_replace(s, "@ROOT@", root, 0);
    if (strstr(s->str, "@PID2@"))
        replace_int(s, "@PID2@", child_pid(in, 1));
    if (strstr(s->str, "@PID@"))
        replace_int(s, "@PID@", child_pid(in, 0));
    replace_int(s, "@SELF@", getpid());
    replace_int(s, "@HOLDER1@", in->n_holders > 0 ? in->holders[0] : 0);
    replace_int(s, "@HOLDER2@", in->n_holders > 1 ? in->holders[1] : 0);
    replace_int(s, "@HOLDER@", in->n_holders ? in->holders[in->n_holders - 1] : 0);
    static const char *const tokens[] = { "@FD@", "@ROFD@", "@PIPE@" };
    for (guint t = 0; t < G_N_ELEMENTS(tokens); t++) {
        char *at;
        while ((at = strstr(s->str, tokens[t]))) {
            g_string_erase(s, at - s->str, strlen(tokens[t]));
            int fd = fds->len < MAX_FDS ? open_fd(tokens[t]) : -1;
            if (fd >= 0)
                g_array_append_val(fds, fd);
        }
    }
    return s;
}

static void
close_fds(GArray *fds)
{
    for (guint i = 0; i < fds->len; i++)
        close(g_array_index(fds, int, i));
    g_array_set_size(fds, 0);
}

/* ---- between inputs ------------------------------------------------------ */

static int
count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Unused lock files pile up, one per resource key ever named. */
static void
wipe_lock_files(void)
{
    g_autoptr(GDir) dir = g_dir_open(D.cfg->lockspace_dir, 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
        if (g_str_has_suffix(name, ".lock")) {
            g_autofree char *p = g_build_filename(D.cfg->lockspace_dir, name, NULL);
            unlink(p);
        }
    }
}

/* The input's processes go, and with them their holders and leases, as
 * when VMs exit; the stash starts empty, the qcow2 image unmarked. */
static void
reset(Input *in)
{
    for (guint i = 0; i < MAX_CHILDREN; i++) {
        if (!in->children[i])
            continue;
        kill(in->children[i], SIGKILL);
        while (waitpid(in->children[i], NULL, 0) < 0 && errno == EINTR)
            ;
    }
    for (guint i = 0; i < SETTLE_ROUNDS && vml_lease_table_n_holders(D.table) > 0; i++)
        settle(NULL);
    if (vml_lease_table_n_holders(D.table) > 0)
        die("%u holder(s) left after their processes exited",
            vml_lease_table_n_holders(D.table));
    if (vml_lease_table_n_leases(D.table) > 0)
        die("%u lease(s) left with no holder", vml_lease_table_n_leases(D.table));
    vml_stash_free(D.stash, TRUE);
    D.stash = vml_stash_new(D.cfg->max_stash_per_owner, D.cfg->max_stash_total);

    if (qcow2_pristine) {
        g_autofree char *p = g_build_filename(images, "disk.qcow2", NULL);
        gsize len;
        const guint8 *want = g_bytes_get_data(qcow2_pristine, &len);
        g_autofree guint8 *now = g_malloc(len);
        int fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            die("%s: %s", p, g_strerror(errno));
        if (pread(fd, now, len, 0) != (ssize_t)len || memcmp(now, want, len) != 0) {
            if (pwrite(fd, want, len, 0) != (ssize_t)len)
                die("cannot restore %s", p);
        }
        close(fd);
    }
    if (++n_inputs % WIPE_EVERY == 0)
        wipe_lock_files();

    /* Everything the input opened is closed again. */
    int n = count_fds();
    if (fd_baseline < 0)
        fd_baseline = n;
    else if (n > fd_baseline + 16)
        die("%d fds open after an input, %d after the first: a leak", n, fd_baseline);
}

/* ---- the input ----------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gboolean admin = FALSE, pipelined = FALSE;
    while (size > 0 && (*data == '#' || *data == '*')) {
        if (*data == '#')
            admin = TRUE;
        else
            pipelined = TRUE;
        data++;
        size--;
    }
    Input in = { 0 };
    Client *c = client_new(!admin, &in);
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    GString *batch = pipelined ? g_string_new(NULL) : NULL;
    const guint8 *p = data, *end = data + size;
    guint n_messages = 0, n_whole = 0;

    while (p < end && !c->eof && n_messages < MAX_MESSAGES) {
        const guint8 *nul = memchr(p, 0, end - p);
        gsize len = nul ? (gsize)(nul - p) : (gsize)(end - p);
        GString *msg = expand(&in, p, len, fds);
        p += len + (nul ? 1 : 0);
        if (verbose)
            fprintf(stderr, "-> %.*s%s (%u fds)\n", (int)msg->len, msg->str, nul ? "" : " (cut short)",
                    fds->len);
        if (nul) {
            g_string_append_len(msg, "", 1);   /* the NUL that ends it */
            n_whole++;
        }
        if (batch) {
            /* Every fd asked for goes with the one write: the daemon sees
             * them all with the first message. */
            g_string_append_len(batch, msg->str, msg->len);
        } else {
            guint before = c->replies;
            send_bytes(c, msg->str, msg->len, (const int *)(void *)fds->data, fds->len);
            close_fds(fds);
            settle(c);
            guint got = c->replies - before;
            /* One reply for each whole message; none for one cut short.
             * After a hang-up, whatever it managed to say. */
            if (got > 1 || (!nul && got != 0) || (nul && got == 0 && !c->eof))
                die("%u replies to message %u of the input", got, n_messages);
        }
        g_string_free(msg, TRUE);
        n_messages++;
    }
    if (batch) {
        send_bytes(c, batch->str, batch->len, (const int *)(void *)fds->data, fds->len);
        close_fds(fds);
        settle(c);
        if (c->replies > n_whole || (c->replies < n_whole && !c->eof))
            die("%u replies to %u messages", c->replies, n_whole);
        g_string_free(batch, TRUE);
    }
    client_close(c);
    reset(&in);
    return 0;
}
