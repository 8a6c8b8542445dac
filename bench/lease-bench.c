/* lease-bench: latency, throughput and memory of a real vmleased.
 *
 * Starts its own daemon in a temporary VMLEASE_ROOT, measures, stops it and
 * removes the directory. Figures go to stdout as "name: value", one a line;
 * everything else goes to stderr. Any error reply aborts the run (exit 1):
 * a benchmark that silently measures errors is worthless.
 *
 * Requests are serialised once per call type and sent raw; only the first
 * reply of each kind is parsed in full, later ones get cheap string checks,
 * so the figures are the daemon's round trip, not json-glib's. */
#include "vml-client.h"
#include "vml-protocol.h"
#include "vml-lease-client.h"
#include "vml-error.h"
#include "vml-paths.h"
#include "vml-wire.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 1000
#define ITERATIONS 20000
/* Cap of one latency run, so a slow filesystem cannot stretch the whole
 * bench far past 30 s; fewer samples are then reported as such. */
#define LATENCY_BUDGET_NS (8 * G_GINT64_CONSTANT(1000000000))
#define RUN_NS (2 * G_GINT64_CONSTANT(1000000000))
#define N_CLIENTS 8
#define MANY_LEASES 10000
#define MANY_BATCH 1000      /* under the default max_resources_per_call */
#define RECOVERY_BATCH 200   /* lock fds one reply may carry: 253 */

/* Global so that die() can clean up from anywhere. */
static struct {
    char *root;
    char *log_path;
    pid_t daemon_pid;        /* what we started */
    pid_t serving_pid;       /* what answers (the same unless wrapped) */
    pid_t children[N_CLIENTS];
    gboolean is_child;       /* a forked client: leave the daemon alone */
} bench;

static gint64
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (gint64)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
print_figure(const char *name, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void
print_figure(const char *name, const char *format, ...)
{
    va_list ap;
    printf("%s: ", name);
    va_start(ap, format);
    vprintf(format, ap);
    va_end(ap);
    putchar('\n');
    /* Figures already measured survive a later failure. */
    fflush(stdout);
}

/* ---- daemon life -------------------------------------------------------- */

static int
remove_one(const char *path, G_GNUC_UNUSED const struct stat *st, G_GNUC_UNUSED int flag,
           G_GNUC_UNUSED struct FTW *ftw)
{
    if (remove(path) < 0)
        fprintf(stderr, "lease-bench: cannot remove %s: %s\n", path, g_strerror(errno));
    return 0;
}

static void
wait_or_kill(pid_t pid, int *status)
{
    /* Give it 5 s to shut down cleanly before insisting. */
    for (int i = 0; i < 500; i++) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        g_usleep(10000);
    }
    fprintf(stderr, "lease-bench: pid %d ignores SIGTERM, killing it\n", (int)pid);
    kill(pid, SIGKILL);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
}

/* Stop everything we started; FALSE if vmleased did not exit cleanly. */
static gboolean
cleanup(void)
{
    gboolean ok = TRUE;

    for (guint i = 0; i < N_CLIENTS; i++) {
        if (bench.children[i] > 0) {
            kill(bench.children[i], SIGKILL);
            while (waitpid(bench.children[i], NULL, 0) < 0 && errno == EINTR)
                ;
            bench.children[i] = 0;
        }
    }
    if (bench.daemon_pid > 0) {
        int status = 0;
        /* Under a wrapper, stop the daemon itself and let the wrapper end. */
        kill(bench.serving_pid > 0 ? bench.serving_pid : bench.daemon_pid, SIGTERM);
        wait_or_kill(bench.daemon_pid, &status);
        bench.daemon_pid = 0;
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "lease-bench: vmleased was killed by signal %d\n", WTERMSIG(status));
            ok = FALSE;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
            fprintf(stderr, "lease-bench: vmleased exited with status %d on SIGTERM\n",
                    WEXITSTATUS(status));
            ok = FALSE;
        }
    }
    if (bench.root) {
        nftw(bench.root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
        g_clear_pointer(&bench.root, g_free);
    }
    g_clear_pointer(&bench.log_path, g_free);
    return ok;
}

/* The end of the daemon's log: what it said before things went wrong. */
static void
dump_daemon_log(void)
{
    g_autofree char *log = NULL;
    gsize len;
    if (!bench.log_path || !g_file_get_contents(bench.log_path, &log, &len, NULL) || !len)
        return;
    gsize from = len > 4096 ? len - 4096 : 0;
    fprintf(stderr, "lease-bench: vmleased's log%s:\n%s", from ? " (tail)" : "", log + from);
}

static void die(const char *format, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;

static void
die(const char *format, ...)
{
    va_list ap;
    fprintf(stderr, "lease-bench%s: ", bench.is_child ? " (client)" : "");
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (bench.is_child)
        _exit(1);
    dump_daemon_log();
    cleanup();
    exit(1);
}

static void
daemon_wait_ready(void)
{
    for (int i = 0; i < 500; i++) {
        int status;
        if (waitpid(bench.daemon_pid, &status, WNOHANG) == bench.daemon_pid) {
            bench.daemon_pid = 0;
            die("vmleased exited during start-up (status 0x%x)", status);
        }
        g_autoptr(VmlClient) admin = vml_client_connect_admin(NULL);
        if (admin) {
            g_autoptr(GError) error = NULL;
            g_autoptr(JsonObject) r = vml_client_call(admin, VML_METHOD_STATUS, NULL,
                                                      NULL, 0, NULL, NULL, &error);
            if (!r)
                die("io.vmlease.Admin.Status: %s", error->message);
            /* Memory is read from the pid that answers: it differs from
             * ours when the daemon runs under a wrapper (heaptrack, ...). */
            gint64 pid = json_object_get_int_member_with_default(r, "pid", 0);
            if (pid <= 0 || pid > G_MAXINT)
                die("io.vmlease.Admin.Status: bad pid %" G_GINT64_FORMAT, pid);
            bench.serving_pid = pid;
            if (pid != bench.daemon_pid)
                fprintf(stderr, "lease-bench: vmleased runs as pid %d under pid %d\n",
                        (int)pid, (int)bench.daemon_pid);
            return;
        }
        g_usleep(10000);
    }
    die("vmleased did not answer io.vmlease.Admin.Status within 5 s");
}

/* The lockspace's filesystem shapes the figures (every grant creates and
 * every release unlinks an owner record), so say which one it is. */
static void
describe_fs(const char *dir)
{
    static const struct { unsigned long magic; const char *name; } known[] = {
        { 0x01021994, "tmpfs" }, { 0xEF53, "ext2/3/4" }, { 0x58465342, "xfs" },
        { 0x9123683E, "btrfs" }, { 0x794c7630, "overlayfs" }, { 0x6969, "nfs" },
    };
    struct statfs sf;
    if (statfs(dir, &sf) < 0)
        return;
    const char *name = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(known); i++) {
        if ((unsigned long)sf.f_type == known[i].magic)
            name = known[i].name;
    }
    if (name)
        fprintf(stderr, "lease-bench: daemon root %s (%s; set TMPDIR to move it)\n", dir, name);
    else
        fprintf(stderr, "lease-bench: daemon root %s (filesystem magic 0x%lx; set TMPDIR to move it)\n",
                dir, (unsigned long)sf.f_type);
}

static void daemon_spawn(const char *bin);

static void
daemon_start(const char *bin)
{
    g_autoptr(GError) error = NULL;

    bench.root = g_dir_make_tmp("lease-bench-XXXXXX", &error);
    if (!bench.root)
        die("%s", error->message);
    g_autofree char *config = g_build_filename(bench.root, "vmleased.conf", NULL);
    /* A holder with 10,000 leases and room for more. */
    static const char conf[] = "max_leases_per_holder = 20000\n";
    if (!g_file_set_contents(config, conf, -1, &error))
        die("%s", error->message);
    describe_fs(bench.root);
    /* Both the daemon (inherited) and our client calls find it this way. */
    g_setenv("VMLEASE_ROOT", bench.root, TRUE);
    bench.log_path = g_build_filename(bench.root, "vmleased.log", NULL);
    daemon_spawn(bin);
}

/* Start vmleased on the bench's root (again, after a crash). */
static void
daemon_spawn(const char *bin)
{
    g_autofree char *config = g_build_filename(bench.root, "vmleased.conf", NULL);
    /* The daemon's log goes to a file, shown only when something fails. */
    int log_fd = open(bench.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        die("cannot create %s: %s", bench.log_path, g_strerror(errno));

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", g_strerror(errno));
    if (pid == 0) {
        /* Never outlive the bench, even if it is killed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        execl(bin, bin, "--foreground", "--config", config, (char *)NULL);
        fprintf(stderr, "lease-bench: cannot run %s: %s\n", bin, g_strerror(errno));
        _exit(127);
    }
    close(log_fd);
    bench.daemon_pid = pid;
    daemon_wait_ready();
}

static gint64
daemon_rss_kib(void)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)bench.serving_pid);
    g_autofree char *status = NULL;
    if (!g_file_get_contents(path, &status, NULL, NULL))
        die("cannot read %s", path);
    const char *line = strstr(status, "\nVmRSS:");
    if (!line)
        die("no VmRSS in %s", path);
    return g_ascii_strtoll(line + strlen("\nVmRSS:"), NULL, 10);
}

/* ---- talking to the daemon ---------------------------------------------- */

typedef struct {
    VmlClient *client;       /* owns the socket */
    int fd;
    VmlFrameReader *reader;
} Conn;

static void
conn_open(Conn *c, gboolean admin)
{
    g_autoptr(GError) error = NULL;
    c->client = admin ? vml_client_connect_admin(&error) : vml_client_connect_lease(&error);
    if (!c->client)
        die("%s", error->message);
    c->fd = vml_client_get_fd(c->client);
    c->reader = vml_frame_reader_new();
}

static void
conn_close(Conn *c)
{
    g_clear_pointer(&c->reader, vml_frame_reader_free);
    g_clear_pointer(&c->client, vml_client_free);
}

/* Send one serialised call and return the raw reply (NUL-terminated). Fds
 * that come with it go to *fds_out, or are an error when it is NULL. */
static char *
rpc(Conn *c, const char *req, gsize len, GArray **fds_out)
{
    g_autoptr(GError) error = NULL;
    char *msg;
    gsize msg_len;
    GArray *fds;

    if (!vml_wire_send(c->fd, req, len, NULL, 0, &error))
        die("%s", error->message);
    while (!vml_frame_reader_pop(c->reader, &msg, &msg_len, &fds)) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            die("poll: %s", g_strerror(errno));
        switch (vml_frame_reader_fill(c->reader, c->fd, &error)) {
        case VML_FILL_OK:
        case VML_FILL_AGAIN:
            break;
        case VML_FILL_EOF:
            die("vmleased closed the connection");
        case VML_FILL_ERROR:
            die("%s", error->message);
        }
    }
    if (fds_out) {
        *fds_out = fds;
    } else {
        guint n = fds->len;
        vml_fds_close(fds);
        if (n)
            die("unexpected fds (%u) with a reply: %.200s", n, msg);
    }
    return msg;
}

/* Die with the daemon's own words if REPLY is an error. A member named
 * "error" can only appear unescaped as a key, so strstr is exact enough. */
static void
check_error(const char *what, const char *reply)
{
    if (!strstr(reply, "\"error\""))
        return;
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, reply, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
        die("%s: malformed reply: %.200s", what, reply);
    JsonObject *obj = json_node_get_object(json_parser_get_root(parser));
    JsonObject *params = json_object_get_object_member(obj, "parameters");
    die("%s failed: %s: %s", what,
        json_object_get_string_member_with_default(obj, "error", "?"),
        params ? json_object_get_string_member_with_default(params, "message", "")
               : "(no message)");
}

/* The cheap check of the hot loops: no error, and MARKER in the reply. */
static void
expect(const char *what, const char *reply, const char *marker)
{
    check_error(what, reply);
    if (!strstr(reply, marker))
        die("%s: unexpected reply (no %s): %.200s", what, marker, reply);
}

/* Serialise {"method": METHOD, "parameters": PARAMS}; takes PARAMS. */
static char *
request(const char *method, JsonObject *params, gsize *len)
{
    g_autoptr(JsonObject) call = json_object_new();
    json_object_set_string_member(call, "method", method);
    json_object_set_object_member(call, "parameters", params);
    return vml_json_to_string(call, len);
}

/* A call whose reply we want parsed (outside of any timing). */
static JsonObject *
call_parsed(Conn *c, const char *method, JsonObject *params)
{
    gsize len;
    g_autofree char *req = request(method, params, &len);
    g_autofree char *reply = rpc(c, req, len, NULL);
    check_error(method, reply);
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, reply, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
        die("%s: malformed reply: %.200s", method, reply);
    JsonObject *params_out = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(parser)), "parameters");
    if (!params_out)
        die("%s: reply without parameters: %.200s", method, reply);
    return json_object_ref(params_out);
}

static gint64
register_self(Conn *c)
{
    g_autofree char *uuid = g_uuid_string_random();
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "uuid", uuid);
    json_object_set_string_member(p, "name", "lease-bench");
    json_object_set_int_member(p, "pid", getpid());
    g_autoptr(JsonObject) r = call_parsed(c, VML_METHOD_REGISTER, p);
    gint64 holder = json_object_get_int_member_with_default(r, "holder", 0);
    if (holder <= 0)
        die("io.vmlease.Lease.Register: no holder in the reply");
    return holder;
}

static JsonObject *
lease_resource(const char *key, gboolean with_mode)
{
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "lockspace", "bench");
    json_object_set_string_member(r, "key", key);
    if (with_mode)
        json_object_set_string_member(r, "mode", "exclusive");
    return r;
}

/* ---- one Acquire + Release pair ----------------------------------------- */

typedef struct {
    char *key;
    gboolean fds;
    char *acquire;
    gsize acquire_len;
    char *release;
    gsize release_len;
} Pair;

static void
pair_init(Pair *p, gint64 holder, const char *key, gboolean fds)
{
    p->key = g_strdup(key);
    p->fds = fds;

    JsonObject *a = json_object_new();
    JsonArray *ar = json_array_new();
    json_object_set_int_member(a, "holder", holder);
    json_array_add_object_element(ar, lease_resource(key, TRUE));
    json_object_set_array_member(a, "resources", ar);
    if (fds)
        json_object_set_boolean_member(a, "fds", TRUE);
    p->acquire = request(VML_METHOD_ACQUIRE, a, &p->acquire_len);

    JsonObject *r = json_object_new();
    JsonArray *rr = json_array_new();
    json_object_set_int_member(r, "holder", holder);
    json_array_add_object_element(rr, lease_resource(key, FALSE));
    json_object_set_array_member(r, "resources", rr);
    p->release = request(VML_METHOD_RELEASE, r, &p->release_len);
}

static void
pair_clear(Pair *p)
{
    g_free(p->key);
    g_free(p->acquire);
    g_free(p->release);
}

static void
check_fds(const char *what, GArray *fds, guint want)
{
    guint n = fds->len;
    vml_fds_close(fds);
    if (n != want)
        die("%s: got %u fds with the reply, want %u", what, n, want);
}

/* The measured thing: two round trips, checked cheaply. */
static inline void
pair_run(Conn *c, const Pair *p)
{
    GArray *fds;
    g_autofree char *a = rpc(c, p->acquire, p->acquire_len, &fds);
    check_fds(VML_METHOD_ACQUIRE, fds, p->fds ? 1 : 0);
    expect(VML_METHOD_ACQUIRE, a, "\"leases\":[{");
    g_autofree char *r = rpc(c, p->release, p->release_len, NULL);
    expect(VML_METHOD_RELEASE, r, "\"released\":1}");
}

/* One pair with its replies parsed in full, so the cheap checks of
 * pair_run() stand on a reply known to be right. */
static void
pair_verify(Conn *c, const Pair *p)
{
    GArray *fds;
    g_autofree char *a = rpc(c, p->acquire, p->acquire_len, &fds);
    check_fds(VML_METHOD_ACQUIRE, fds, p->fds ? 1 : 0);
    check_error(VML_METHOD_ACQUIRE, a);

    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, a, -1, NULL))
        die("io.vmlease.Lease.Acquire: malformed reply: %.200s", a);
    JsonObject *params = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(parser)), "parameters");
    JsonArray *leases = params ? json_object_get_array_member(params, "leases") : NULL;
    g_autofree char *want = g_strdup_printf("lease:bench/%s", p->key);
    JsonObject *l = leases && json_array_get_length(leases) == 1
        ? json_array_get_object_element(leases, 0) : NULL;
    if (!l ||
        g_strcmp0(json_object_get_string_member_with_default(l, "resource", NULL), want) != 0 ||
        g_strcmp0(json_object_get_string_member_with_default(l, "mode", NULL), "exclusive") != 0 ||
        json_object_get_int_member_with_default(l, "generation", 0) < 1)
        die("io.vmlease.Lease.Acquire: unexpected reply: %.300s", a);

    g_autofree char *r = rpc(c, p->release, p->release_len, NULL);
    check_error(VML_METHOD_RELEASE, r);
    g_autoptr(JsonParser) rparser = json_parser_new_immutable();
    if (!json_parser_load_from_data(rparser, r, -1, NULL))
        die("io.vmlease.Lease.Release: malformed reply: %.200s", r);
    params = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(rparser)), "parameters");
    if (!params || json_object_get_int_member_with_default(params, "released", -1) != 1)
        die("io.vmlease.Lease.Release: unexpected reply: %.200s", r);
}

/* ---- measurements ------------------------------------------------------- */

static int
cmp_gint64(const void *a, const void *b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted V, PERMILLE in 1..1000. */
static double
percentile_us(const gint64 *v, guint n, guint permille)
{
    guint64 rank = ((guint64)n * permille + 999) / 1000;
    return v[rank ? rank - 1 : 0] / 1000.0;
}

/* Prints PREFIX_p50_us and the rest; returns the p50 in microseconds. */
static double
bench_latency(Conn *c, const Pair *p, guint warmup, guint iterations, gint64 budget,
              const char *prefix)
{
    fprintf(stderr, "lease-bench: %s: %u pairs after %u warm-up%s\n",
            prefix, iterations, warmup, p->fds ? " (with fds)" : "");
    for (guint i = 0; i < warmup; i++)
        pair_run(c, p);
    g_autofree gint64 *ns = g_new(gint64, iterations);
    gint64 total = 0, deadline = now_ns() + budget;
    guint n = 0;
    while (n < iterations) {
        gint64 t0 = now_ns();
        pair_run(c, p);
        gint64 t1 = now_ns();
        ns[n++] = t1 - t0;
        total += t1 - t0;
        if (t1 > deadline)
            break;
    }
    if (n < iterations)
        fprintf(stderr, "lease-bench: %s: time budget of %.1f s spent after %u pairs\n",
                prefix, budget / 1e9, n);
    qsort(ns, n, sizeof(*ns), cmp_gint64);

    g_autofree char *name = NULL;
#define FIGURE(suffix, value) \
    (g_free(name), name = g_strconcat(prefix, suffix, NULL), \
     print_figure(name, "%.1f", (value)))
    FIGURE("_p50_us", percentile_us(ns, n, 500));
    FIGURE("_p99_us", percentile_us(ns, n, 990));
    FIGURE("_p999_us", percentile_us(ns, n, 999));
    FIGURE("_max_us", ns[n - 1] / 1000.0);
    FIGURE("_mean_us", total / 1000.0 / n);
#undef FIGURE
    g_free(name);
    name = g_strconcat(prefix, "_samples", NULL);
    print_figure(name, "%u", n);
    return percentile_us(ns, n, 500);
}

/* The floor under every figure above: one AF_UNIX round trip between two
 * processes with no daemon work at all. On a VM, cross-CPU wake-ups can
 * cost more than everything vmleased does. */
static void
bench_socket_floor(guint iterations)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair: %s", g_strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", g_strerror(errno));
    if (pid == 0) {
        char b;
        close(sv[0]);
        while (read(sv[1], &b, 1) == 1 && write(sv[1], &b, 1) == 1)
            ;
        _exit(0);
    }
    close(sv[1]);
    g_autofree gint64 *ns = g_new(gint64, iterations);
    for (guint i = 0; i < iterations; i++) {
        char b = 'x';
        gint64 t0 = now_ns();
        if (write(sv[0], &b, 1) != 1 || read(sv[0], &b, 1) != 1)
            die("socket floor: %s", g_strerror(errno));
        ns[i] = now_ns() - t0;
    }
    close(sv[0]);
    int status;
    waitpid(pid, &status, 0);
    qsort(ns, iterations, sizeof(*ns), cmp_gint64);
    print_figure("socket_roundtrip_p50_us", "%.1f", percentile_us(ns, iterations, 500));
}

/* Pin PID to CPU (or, with CPU < 0, let it run anywhere again). */
static void
pin(pid_t pid, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (cpu < 0 ? i < (int)sysconf(_SC_NPROCESSORS_ONLN) : i == cpu)
            CPU_SET(i, &set);
    }
    if (sched_setaffinity(pid, sizeof(set), &set) < 0)
        die("sched_setaffinity(%d): %s", (int)pid, g_strerror(errno));
}

/* Pairs back to back until END; returns how many, *elapsed from START. */
static guint64
run_until(Conn *c, const Pair *p, gint64 start, gint64 end, gint64 *elapsed)
{
    guint64 ops = 0;
    gint64 t;
    do {
        pair_run(c, p);
        ops++;
        t = now_ns();
    } while (t < end);
    *elapsed = t - start;
    return ops;
}

static void
bench_throughput(Conn *c, const Pair *p, gint64 duration)
{
    fprintf(stderr, "lease-bench: throughput, 1 client, %.1f s\n", duration / 1e9);
    gint64 start = now_ns(), elapsed;
    guint64 ops = run_until(c, p, start, start + duration, &elapsed);
    print_figure("throughput_ops_s", "%.0f", ops * 1e9 / elapsed);
}

typedef struct {
    gint64 start, end;
} ClientGo;

typedef struct {
    guint64 ops;
    gint64 elapsed;
} ClientResult;

static gboolean
read_all(int fd, void *buf, gsize len)
{
    for (gsize off = 0; off < len;) {
        ssize_t n = read(fd, (char *)buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        off += n;
    }
    return TRUE;
}

static gboolean
write_all(int fd, const void *buf, gsize len)
{
    for (gsize off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        off += n;
    }
    return TRUE;
}

/* A forked client: own connection, own holder, own key. */
G_GNUC_NORETURN static void
client_main(guint index, guint warmup, int go_fd, int result_fd)
{
    Conn c = { 0 };
    Pair p;
    bench.is_child = TRUE;
    conn_open(&c, FALSE);
    gint64 holder = register_self(&c);
    g_autofree char *key = g_strdup_printf("c%u-k0", index);
    pair_init(&p, holder, key, FALSE);
    pair_verify(&c, &p);
    for (guint i = 0; i < warmup; i++)
        pair_run(&c, &p);

    ClientGo go;
    if (!write_all(result_fd, "r", 1) || !read_all(go_fd, &go, sizeof(go)))
        _exit(1);
    /* Everyone starts at the same instant. */
    struct timespec ts = { .tv_sec = go.start / 1000000000, .tv_nsec = go.start % 1000000000 };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
    ClientResult res;
    res.ops = run_until(&c, &p, go.start, go.end, &res.elapsed);
    if (!write_all(result_fd, &res, sizeof(res)))
        _exit(1);
    _exit(0);
}

static void
bench_clients(guint warmup, gint64 duration)
{
    int go_fds[N_CLIENTS], result_fds[N_CLIENTS];

    fprintf(stderr, "lease-bench: throughput, %u clients, %.1f s\n", N_CLIENTS, duration / 1e9);
    fflush(stdout);
    fflush(stderr);
    for (guint i = 0; i < N_CLIENTS; i++) {
        int go[2], result[2];
        if (pipe2(go, O_CLOEXEC) < 0 || pipe2(result, O_CLOEXEC) < 0)
            die("pipe: %s", g_strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", g_strerror(errno));
        if (pid == 0) {
            /* Only our own pipes: a sibling's must see EOF when it should. */
            for (guint k = 0; k < i; k++) {
                close(go_fds[k]);
                close(result_fds[k]);
            }
            close(go[1]);
            close(result[0]);
            client_main(i, warmup, go[0], result[1]);
        }
        bench.children[i] = pid;
        close(go[0]);
        close(result[1]);
        go_fds[i] = go[1];
        result_fds[i] = result[0];
    }

    for (guint i = 0; i < N_CLIENTS; i++) {
        char ready;
        if (!read_all(result_fds[i], &ready, 1))
            die("client %u failed before the start", i);
    }
    ClientGo go;
    go.start = now_ns() + 20 * 1000000;
    go.end = go.start + duration;
    for (guint i = 0; i < N_CLIENTS; i++) {
        if (!write_all(go_fds[i], &go, sizeof(go)))
            die("client %u is gone", i);
    }

    double total = 0;
    for (guint i = 0; i < N_CLIENTS; i++) {
        ClientResult res;
        if (!read_all(result_fds[i], &res, sizeof(res)))
            die("client %u failed during the run", i);
        total += res.ops * 1e9 / res.elapsed;
        close(go_fds[i]);
        close(result_fds[i]);
        int status;
        while (waitpid(bench.children[i], &status, 0) < 0 && errno == EINTR)
            ;
        bench.children[i] = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die("client %u exited with status 0x%x", i, status);
    }
    print_figure("throughput_ops_s_8clients", "%.0f", total);
}

static gint64
status_leases(Conn *admin)
{
    g_autoptr(JsonObject) r = call_parsed(admin, VML_METHOD_STATUS, json_object_new());
    return json_object_get_int_member_with_default(r, "leases", -1);
}

/* Every held resource's owners, page after page, through the client
 * library `vmlease owners` uses (vml_admin_owners). */
static void
bench_owners_pages(guint want, const char *figure)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmlClient) admin = vml_client_connect_admin(&error);
    if (!admin)
        die("cannot connect to the admin socket: %s", error->message);
    gint64 t0 = now_ns();
    g_autoptr(JsonArray) all = vml_admin_owners(admin, NULL, &error);
    gint64 ns = now_ns() - t0;
    if (!all)
        die("io.vmlease.Admin.Owners: %s", error->message);
    guint seen = json_array_get_length(all);
    if (seen < want)
        die("io.vmlease.Admin.Owners: %u resources, want at least %u", seen, want);
    print_figure(figure, "%.1f", ns / 1e6);
}

/* A restart after a crash: WANT leases held through this process's lock
 * fds, vmleased SIGKILLed, started again; how long until it serves with
 * every lease back. */
static void
bench_recovery(Conn *c, Conn *admin, const char *bin, gint64 holder, guint want)
{
    g_autoptr(GArray) kept = g_array_new(FALSE, FALSE, sizeof(int));
    for (guint b = 0; b < want; b += RECOVERY_BATCH) {
        JsonObject *p = json_object_new();
        JsonArray *res = json_array_new();
        json_object_set_int_member(p, "holder", holder);
        json_object_set_boolean_member(p, "fds", TRUE);
        for (guint i = b; i < MIN(want, b + RECOVERY_BATCH); i++) {
            char key[32];
            g_snprintf(key, sizeof(key), "r%05u", i);
            json_array_add_object_element(res, lease_resource(key, TRUE));
        }
        json_object_set_array_member(p, "resources", res);
        gsize len;
        g_autofree char *req = request(VML_METHOD_ACQUIRE, p, &len);
        GArray *fds = NULL;
        g_autofree char *reply = rpc(c, req, len, &fds);
        check_error(VML_METHOD_ACQUIRE, reply);
        g_array_append_vals(kept, fds->data, fds->len);
        g_array_unref(fds);
    }
    if (kept->len != want)
        die("io.vmlease.Lease.Acquire: %u lock fds for %u leases", kept->len, want);
    conn_close(admin);
    conn_close(c);
    kill(bench.serving_pid, SIGKILL);
    while (waitpid(bench.daemon_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    bench.daemon_pid = 0;
    gint64 t0 = now_ns();
    daemon_spawn(bin);
    conn_open(admin, TRUE);
    gint64 held = status_leases(admin);
    gint64 ns = now_ns() - t0;
    if (held != want)
        die("after the restart vmleased holds %" G_GINT64_FORMAT " leases, want %u", held, want);
    print_figure("recover_10000_ms", "%.1f", ns / 1e6);
    conn_open(c, FALSE);
    for (guint i = 0; i < kept->len; i++)
        close(g_array_index(kept, int, i));
}

static void
bench_many(Conn *c, Conn *admin, gint64 holder, double p50_none, guint warmup,
           guint iterations)
{
    const guint n_batches = MANY_LEASES / MANY_BATCH;
    g_autofree char **reqs = g_new0(char *, n_batches);
    g_autofree gsize *lens = g_new0(gsize, n_batches);
    g_autofree char **replies = g_new0(char *, n_batches);

    fprintf(stderr, "lease-bench: %u leases in batches of %u\n", MANY_LEASES, MANY_BATCH);
    for (guint b = 0; b < n_batches; b++) {
        JsonObject *p = json_object_new();
        JsonArray *res = json_array_new();
        json_object_set_int_member(p, "holder", holder);
        for (guint i = 0; i < MANY_BATCH; i++) {
            char key[32];
            g_snprintf(key, sizeof(key), "m%05u", b * MANY_BATCH + i);
            json_array_add_object_element(res, lease_resource(key, TRUE));
        }
        json_object_set_array_member(p, "resources", res);
        reqs[b] = request(VML_METHOD_ACQUIRE, p, &lens[b]);
    }

    gint64 t0 = now_ns();
    for (guint b = 0; b < n_batches; b++) {
        replies[b] = rpc(c, reqs[b], lens[b], NULL);
        check_error(VML_METHOD_ACQUIRE, replies[b]);
    }
    gint64 acquire_ns = now_ns() - t0;

    /* Full checks after the clock stopped. */
    for (guint b = 0; b < n_batches; b++) {
        g_autoptr(JsonParser) parser = json_parser_new_immutable();
        if (!json_parser_load_from_data(parser, replies[b], -1, NULL))
            die("io.vmlease.Lease.Acquire: malformed reply");
        JsonObject *params = json_object_get_object_member(
            json_node_get_object(json_parser_get_root(parser)), "parameters");
        JsonArray *leases = params ? json_object_get_array_member(params, "leases") : NULL;
        if (!leases || json_array_get_length(leases) != MANY_BATCH)
            die("io.vmlease.Lease.Acquire: batch %u: want %u leases in the reply", b, MANY_BATCH);
        g_free(replies[b]);
        g_free(reqs[b]);
    }
    gint64 held = status_leases(admin);
    if (held != MANY_LEASES)
        die("io.vmlease.Admin.Status says %" G_GINT64_FORMAT " leases, want %u",
            held, MANY_LEASES);
    print_figure("acquire_10000_ms", "%.1f", acquire_ns / 1e6);
    bench_owners_pages(MANY_LEASES, "owners_10000_ms");
    /* What one more lease costs a holder that has 10,000 already. */
    Pair more;
    pair_init(&more, holder, "k-one-more", FALSE);
    pair_verify(c, &more);
    double p50_held = bench_latency(c, &more, warmup / 4 + 1, iterations / 4 + 1,
                                    LATENCY_BUDGET_NS / 4, "acquire_release_10000_held");
    pair_clear(&more);
    print_figure("acquire_release_10000_held_over_none", "%.2f", p50_held / p50_none);
    /* Let the deferred state-file save (50 ms after a change) run first:
     * its peak belongs to the steady state. */
    g_usleep(300 * 1000);
    print_figure("rss_kib_10000_leases", "%" G_GINT64_FORMAT, daemon_rss_kib());

    /* Release without resources: everything the holder has. */
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "holder", holder);
    gsize len;
    g_autofree char *req = request(VML_METHOD_RELEASE, p, &len);
    t0 = now_ns();
    g_autofree char *reply = rpc(c, req, len, NULL);
    gint64 release_ns = now_ns() - t0;
    g_autofree char *want = g_strdup_printf("\"released\":%u}", MANY_LEASES);
    expect(VML_METHOD_RELEASE, reply, want);
    print_figure("release_10000_ms", "%.1f", release_ns / 1e6);
    g_usleep(300 * 1000);
    print_figure("rss_kib_after_release", "%" G_GINT64_FORMAT, daemon_rss_kib());
}

/* ---- main --------------------------------------------------------------- */

static const char *
daemon_path(const char *option)
{
    if (option)
        return option;
    const char *env = g_getenv("VMLEASED_BIN");
    if (env && *env)
        return env;
#ifdef VMLEASED_BUILD_PATH
    return VMLEASED_BUILD_PATH;
#else
    return NULL;
#endif
}

int
main(int argc, char **argv)
{
    gboolean quick = FALSE;
    g_autofree char *daemon_opt = NULL;
    GOptionEntry entries[] = {
        { "quick", 'q', 0, G_OPTION_ARG_NONE, &quick,
          "Cut iterations and run times 10x (smoke test)", NULL },
        { "daemon", 'd', 0, G_OPTION_ARG_FILENAME, &daemon_opt,
          "vmleased binary (default: $VMLEASED_BIN, else the one built with this bench)", "PATH" },
        G_OPTION_ENTRY_NULL
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- measure a real vmleased");
    g_autoptr(GError) error = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        fprintf(stderr, "lease-bench: %s\n", error->message);
        return 2;
    }
    const char *bin = daemon_path(daemon_opt);
    if (!bin) {
        fprintf(stderr, "lease-bench: no vmleased: use --daemon PATH or set VMLEASED_BIN\n");
        return 2;
    }
    if (!g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE)) {
        fprintf(stderr, "lease-bench: %s is not an executable\n", bin);
        return 2;
    }
    guint scale = quick ? 10 : 1;
    guint warmup = WARMUP / scale, iterations = ITERATIONS / scale;
    gint64 duration = RUN_NS / scale;

    /* A daemon that dies must show up as an error, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "lease-bench: starting %s\n", bin);
    daemon_start(bin);
    print_figure("rss_kib_idle", "%" G_GINT64_FORMAT, daemon_rss_kib());

    Conn c = { 0 }, admin = { 0 };
    conn_open(&c, FALSE);
    conn_open(&admin, TRUE);
    gint64 holder = register_self(&c);

    Pair plain, with_fds;
    pair_init(&plain, holder, "k0", FALSE);
    pair_init(&with_fds, holder, "k1", TRUE);
    pair_verify(&c, &plain);
    pair_verify(&c, &with_fds);

    double p50_none = bench_latency(&c, &plain, warmup, iterations, LATENCY_BUDGET_NS / scale,
                                    "acquire_release");
    bench_latency(&c, &with_fds, warmup, iterations, LATENCY_BUDGET_NS / scale,
                  "acquire_release_fds");
    bench_socket_floor(iterations);
    /* The same pairs with client and daemon on one CPU: no cross-CPU
     * wake-up, so this is what the daemon's own work costs. */
    pin(bench.serving_pid, 0);
    pin(0, 0);
    bench_latency(&c, &plain, warmup, iterations, LATENCY_BUDGET_NS / scale,
                  "acquire_release_same_cpu");
    pin(bench.serving_pid, -1);
    pin(0, -1);
    bench_throughput(&c, &plain, duration);
    bench_clients(warmup, duration);
    bench_many(&c, &admin, holder, p50_none, warmup, iterations);
    bench_recovery(&c, &admin, bin, holder, MANY_LEASES);

    pair_clear(&plain);
    pair_clear(&with_fds);
    conn_close(&admin);
    conn_close(&c);
    return cleanup() ? 0 : 1;
}
