/* abi-bench: lock-driver plugins driven through libvirt's lock-driver ABI
 * exactly as libvirtd drives them, side by side in one run.
 *
 *   abi-bench [--quick] [--rounds N] [--dir DIR] --plugin SO --config FILE [--plugin SO --config FILE]...
 *
 * Every plugin is dlopen()ed, its virLockDriverImpl read and drvInit called
 * with its config file. Each client has a process of its own standing in
 * for QEMU: a fresh abi-bench in child mode that, like libvirt's pre-exec
 * child, calls New (pid = itself) and Acquire(REGISTER_ONLY|RESTRICT) and
 * keeps what Acquire left open. Per cycle the bench then does what libvirtd
 * does for a running domain: New (uuid, name, id, pid of that process),
 * AddResource for its disk, Acquire, Release, Free. Acquire+Release and the
 * whole cycle are timed, on raw and on qcow2 images, with 1 and with 8
 * concurrent clients (threads, each with its own domain, process and
 * images), the plugins alternated round by round so machine noise hits all
 * alike. The floor, in the same rounds: connect to a trivial AF_UNIX echo
 * server (a child process) and two one-byte round trips.
 *
 * start4: a 4-disk domain start as libvirt does it: in the new process New +
 * 4 x AddResource + Acquire(REGISTER_ONLY|RESTRICT), then in libvirtd (at
 * resume) New + 4 x AddResource + Acquire for that pid; the sum of both.
 *
 * Figures go to stdout as "name: value" lines only; a plugin that cannot
 * run is skipped with a line on stderr and has no figures or ratios. */
#include "bench-util.h"
#include "libvirt-lock-driver.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PLUGINS 8
#define MAX_CLIENTS 8
#define N_FORMATS 2
#define N_CLIENT_CASES 2
#define N_CASES (N_FORMATS * N_CLIENT_CASES)
#define START_DISKS 4

static const char *const formats[N_FORMATS] = { "raw", "qcow2" };
static const int client_counts[N_CLIENT_CASES] = { 1, 8 };
static const char *const client_names[N_CLIENT_CASES] = { "1client", "8clients" };

typedef struct {
    GPid pid;
    int in_fd;    /* its stdin: closing it ends the process */
} Child;

typedef struct {
    char *name;
    char *path;
    char *config;
    VmlLockDriver *drv;
    gboolean ok;
    Child holders[MAX_CLIENTS];
    char *images[N_FORMATS][MAX_CLIENTS];
    char *start_images[START_DISKS];
    GArray *ar[N_CASES];      /* acquire+release, us */
    GArray *cycle[N_CASES];   /* New..Free, us */
    gint64 wall_ns[N_CASES];
    guint cycles[N_CASES];
    GArray *start4;
} Plugin;

static Plugin plugins[MAX_PLUGINS];
static guint n_plugins;
static char *self_exe;
static char *echo_path;
static GArray *floor_us[N_CLIENT_CASES];
static gint64 floor_wall_ns[N_CLIENT_CASES];
static guint floor_count[N_CLIENT_CASES];

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "abi-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* libvirt's plugins are modules of libvirt.so, which libvirtd initialises
 * before it loads them; do the same if the plugin pulled libvirt in. */
static VmlLockDriver *
load_plugin(const char *path, const char *config, GString *why)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        g_string_append_printf(why, "dlopen: %s", dlerror());
        return NULL;
    }
    int (*vir_init)(void) = (int (*)(void))dlsym(h, "virInitialize");
    if (vir_init)
        vir_init();
    VmlLockDriver *drv = dlsym(h, "virLockDriverImpl");
    if (!drv) {
        g_string_append(why, "no virLockDriverImpl");
        return NULL;
    }
    if (drv->version != VML_LOCK_DRIVER_VERSION) {
        g_string_append_printf(why, "driver version %u", drv->version);
        return NULL;
    }
    if (drv->drvInit(VML_LOCK_DRIVER_VERSION, config, 0) < 0) {
        g_string_append_printf(why, "drvInit(%s) failed", config);
        return NULL;
    }
    return drv;
}

/* A domain's identity: client C of the bench. */
static int
dom_new(VmlLockDriver *drv, VmlLockManager *man, int c, pid_t pid)
{
    char name[32];
    g_snprintf(name, sizeof(name), "abi-bench-%d", c);
    VmlLockParam params[4];
    memset(params, 0, sizeof(params));
    params[0].type = VML_LOCK_PARAM_UUID;
    params[0].key = "uuid";
    static const unsigned char uuid[16] = { 0xab, 0x1b, 0xe1, 0xc4, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0 };
    memcpy(params[0].value.uuid, uuid, 16);
    params[0].value.uuid[15] = (unsigned char)(c + 1);
    params[1].type = VML_LOCK_PARAM_STRING;
    params[1].key = "name";
    params[1].value.str = name;
    params[2].type = VML_LOCK_PARAM_UINT;
    params[2].key = "id";
    params[2].value.ui = (unsigned int)c + 1;
    params[3].type = VML_LOCK_PARAM_UINT;
    params[3].key = "pid";
    params[3].value.ui = (unsigned int)pid;
    man->driver = drv;
    man->privateData = NULL;
    return drv->drvNew(man, VML_LOCK_OBJECT_DOMAIN, 4, params, 0);
}

/* ---- child modes ---- */

/* Wait for EOF on stdin (the bench closed it or died), then exit. */
static void G_GNUC_NORETURN
child_wait_and_exit(void)
{
    char b[64];
    while (read(0, b, sizeof(b)) > 0)
        ;
    _exit(0);
}

/* --child SO CONFIG CLIENT DISK...: libvirt's pre-exec child of domain
 * CLIENT. Prints "ok NS" (the plugin time) or "fail", then holds. */
static int G_GNUC_NORETURN
child_main(int argc, char **argv)
{
    if (argc < 5)
        die("--child SO CONFIG CLIENT [DISK...]");
    g_autoptr(GString) why = g_string_new(NULL);
    VmlLockDriver *drv = load_plugin(argv[2], argv[3], why);
    if (!drv) {
        fprintf(stderr, "abi-bench child: %s: %s\n", argv[2], why->str);
        printf("fail\n");
        fflush(stdout);
        _exit(1);
    }
    int c = atoi(argv[4]);
    VmlLockManager man;
    int fd = -1;
    gint64 t0 = bench_now_ns();
    gboolean ok = dom_new(drv, &man, c, getpid()) == 0;
    for (int i = 5; ok && i < argc; i++)
        ok = drv->drvAddResource(&man, VML_LOCK_RESOURCE_DISK, argv[i], 0, NULL, 0) == 0;
    ok = ok && drv->drvAcquire(&man, NULL,
                               VML_LOCK_ACQUIRE_REGISTER_ONLY | VML_LOCK_ACQUIRE_RESTRICT, 0,
                               &fd) == 0;
    gint64 t1 = bench_now_ns();
    printf(ok ? "ok %" G_GINT64_FORMAT "\n" : "fail\n", t1 - t0);
    fflush(stdout);
    if (!ok)
        _exit(1);
    child_wait_and_exit();
}

/* --echo PATH: the floor's server, one poll loop echoing every byte. */
static int G_GNUC_NORETURN
echo_main(const char *path)
{
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    unlink(path);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 64) < 0)
        die("echo server %s: %s", path, g_strerror(errno));
    printf("ok 0\n");
    fflush(stdout);
    struct pollfd pf[66];
    int n = 2;
    pf[0] = (struct pollfd){ .fd = 0, .events = POLLIN };
    pf[1] = (struct pollfd){ .fd = l, .events = POLLIN };
    for (;;) {
        if (poll(pf, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (pf[0].revents)
            _exit(0);
        for (int i = n - 1; i >= 2; i--) {
            if (!pf[i].revents)
                continue;
            char b[256];
            ssize_t r = read(pf[i].fd, b, sizeof(b));
            if (r > 0 && write(pf[i].fd, b, (size_t)r) == r)
                continue;
            if (r < 0 && errno == EAGAIN)
                continue;
            close(pf[i].fd);
            pf[i] = pf[--n];
        }
        if (pf[1].revents) {
            int s;
            while (n < 66 && (s = accept4(l, NULL, NULL, SOCK_CLOEXEC)) >= 0)
                pf[n++] = (struct pollfd){ .fd = s, .events = POLLIN };
        }
    }
}

/* ---- the parent ---- */

/* Start a child mode of ourselves; wait for its "ok NS" line. */
static gboolean
spawn_child(const char *const *args, Child *child, gint64 *ns)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, self_exe);
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, (char *)*a);
    g_ptr_array_add(argv, NULL);
    int out = -1;
    g_autoptr(GError) error = NULL;
    gboolean ok = g_spawn_async_with_pipes(NULL, (char **)argv->pdata, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &child->pid,
                                           &child->in_fd, &out, NULL, &error);
    g_ptr_array_free(argv, TRUE);
    if (!ok) {
        fprintf(stderr, "abi-bench: spawn: %s\n", error->message);
        return FALSE;
    }
    char line[64] = "";
    size_t got = 0;
    while (got < sizeof(line) - 1) {
        struct pollfd pf = { .fd = out, .events = POLLIN };
        if (poll(&pf, 1, 60000) <= 0)
            break;
        ssize_t r = read(out, line + got, sizeof(line) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        line[got] = '\0';
        if (strchr(line, '\n'))
            break;
    }
    close(out);
    if (strncmp(line, "ok ", 3) == 0) {
        if (ns)
            *ns = g_ascii_strtoll(line + 3, NULL, 10);
        return TRUE;
    }
    close(child->in_fd);
    kill(child->pid, SIGKILL);
    waitpid(child->pid, NULL, 0);
    child->pid = 0;
    return FALSE;
}

static void
stop_child(Child *child)
{
    if (child->pid <= 0)
        return;
    close(child->in_fd);
    int status;
    for (int i = 0; i < 500; i++) {
        if (waitpid(child->pid, &status, WNOHANG) == child->pid) {
            child->pid = 0;
            return;
        }
        g_usleep(10000);
    }
    kill(child->pid, SIGKILL);
    waitpid(child->pid, &status, 0);
    child->pid = 0;
}

/* One cycle of client C: libvirtd on a running domain. */
static gboolean
run_cycle(Plugin *p, int c, const char *disk, double *ar_us, double *cycle_us)
{
    VmlLockManager man;
    gint64 t0 = bench_now_ns();
    if (dom_new(p->drv, &man, c, p->holders[c].pid) < 0) {
        fprintf(stderr, "abi-bench: %s: New failed\n", p->name);
        return FALSE;
    }
    gboolean ok = FALSE;
    if (p->drv->drvAddResource(&man, VML_LOCK_RESOURCE_DISK, disk, 0, NULL, 0) < 0) {
        fprintf(stderr, "abi-bench: %s: AddResource(%s) failed\n", p->name, disk);
        goto out;
    }
    gint64 t1 = bench_now_ns();
    if (p->drv->drvAcquire(&man, NULL, 0, 0, NULL) < 0) {
        fprintf(stderr, "abi-bench: %s: Acquire(%s) failed\n", p->name, disk);
        goto out;
    }
    if (p->drv->drvRelease(&man, NULL, 0) < 0) {
        fprintf(stderr, "abi-bench: %s: Release(%s) failed\n", p->name, disk);
        goto out;
    }
    gint64 t2 = bench_now_ns();
    ok = TRUE;
    p->drv->drvFree(&man);
    gint64 t3 = bench_now_ns();
    *ar_us = (double)(t2 - t1) / 1000.0;
    *cycle_us = (double)(t3 - t0) / 1000.0;
    return TRUE;
out:
    p->drv->drvFree(&man);
    return ok;
}

/* The floor: connect + two round trips. */
static gboolean
run_floor(double *us)
{
    gint64 t0 = bench_now_ns();
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_strlcpy(sa.sun_path, echo_path, sizeof(sa.sun_path));
    gboolean ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    for (int i = 0; ok && i < 2; i++) {
        char b = 'x';
        ok = write(s, &b, 1) == 1 && read(s, &b, 1) == 1;
    }
    if (s >= 0)
        close(s);
    *us = (double)(bench_now_ns() - t0) / 1000.0;
    return ok;
}

typedef struct {
    Plugin *p;       /* NULL: the floor */
    int client;
    int fmt;
    guint n;
    double *ar, *cycle;
    gboolean ok;
    pthread_barrier_t *start;
} Worker;

static void *
worker_run(void *opaque)
{
    Worker *w = opaque;
    pthread_barrier_wait(w->start);
    w->ok = TRUE;
    for (guint i = 0; i < w->n && w->ok; i++) {
        if (!w->p)
            w->ok = run_floor(&w->ar[i]);
        else if (!w->p->ok)
            w->ok = FALSE;   /* another client found it broken */
        else if (!(w->ok = run_cycle(w->p, w->client, w->p->images[w->fmt][w->client],
                                     &w->ar[i], &w->cycle[i])))
            w->p->ok = FALSE;
    }
    return NULL;
}

/* N cycles on each of NCLIENTS concurrent clients of P (NULL: floor). */
static void
run_case(Plugin *p, int fmt, int ci, guint n)
{
    int nclients = client_counts[ci];
    Worker w[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nclients + 1);
    for (int c = 0; c < nclients; c++) {
        w[c] = (Worker){ .p = p, .client = c, .fmt = fmt, .n = n, .start = &start,
                         .ar = g_new0(double, n), .cycle = g_new0(double, n) };
        if (pthread_create(&th[c], NULL, worker_run, &w[c]) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&start);
    gint64 t0 = bench_now_ns();
    for (int c = 0; c < nclients; c++)
        pthread_join(th[c], NULL);
    gint64 wall = bench_now_ns() - t0;
    pthread_barrier_destroy(&start);
    gboolean ok = TRUE;
    for (int c = 0; c < nclients; c++)
        ok = ok && w[c].ok;
    int k = fmt * N_CLIENT_CASES + ci;
    for (int c = 0; c < nclients; c++) {
        if (ok && p) {
            g_array_append_vals(p->ar[k], w[c].ar, n);
            g_array_append_vals(p->cycle[k], w[c].cycle, n);
        } else if (ok) {
            g_array_append_vals(floor_us[ci], w[c].ar, n);
        }
        g_free(w[c].ar);
        g_free(w[c].cycle);
    }
    if (!ok && p) {
        fprintf(stderr, "abi-bench: %s: failed on %s with %s; skipped from here on\n", p->name,
                formats[fmt], client_names[ci]);
        p->ok = FALSE;
    } else if (!ok) {
        die("floor: %s", g_strerror(errno));
    } else if (p) {
        p->wall_ns[k] += wall;
        p->cycles[k] += n * (guint)nclients;
    } else {
        floor_wall_ns[ci] += wall;
        floor_count[ci] += n * (guint)nclients;
    }
}

/* One 4-disk domain start: the new process's calls, then libvirtd's at
 * resume; untimed: Release and the process's end (a destroy). */
static gboolean
run_start4(Plugin *p)
{
    char client[8];
    g_snprintf(client, sizeof(client), "%d", MAX_CLIENTS);
    const char *args[5 + START_DISKS + 1] = { "--child", p->path, p->config, client };
    for (int i = 0; i < START_DISKS; i++)
        args[4 + i] = p->start_images[i];
    args[4 + START_DISKS] = NULL;
    Child child = { 0 };
    gint64 child_ns = 0;
    if (!spawn_child(args, &child, &child_ns)) {
        fprintf(stderr, "abi-bench: %s: the new domain process's Acquire failed\n", p->name);
        return FALSE;
    }
    VmlLockManager man;
    gint64 t0 = bench_now_ns();
    gboolean ok = dom_new(p->drv, &man, MAX_CLIENTS, child.pid) == 0;
    for (int i = 0; ok && i < START_DISKS; i++)
        ok = p->drv->drvAddResource(&man, VML_LOCK_RESOURCE_DISK, p->start_images[i], 0, NULL,
                                    0) == 0;
    ok = ok && p->drv->drvAcquire(&man, NULL, 0, 0, NULL) == 0;
    gint64 t1 = bench_now_ns();
    if (ok)
        ok = p->drv->drvRelease(&man, NULL, 0) == 0;
    if (man.privateData)
        p->drv->drvFree(&man);
    stop_child(&child);
    if (!ok) {
        fprintf(stderr, "abi-bench: %s: 4-disk start failed\n", p->name);
        return FALSE;
    }
    double us = (double)(child_ns + (t1 - t0)) / 1000.0;
    g_array_append_val(p->start4, us);
    return TRUE;
}

static void
copy_file(const char *from, const char *to)
{
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) error = NULL;
    if (!g_file_get_contents(from, &data, &len, &error) ||
        !g_file_set_contents(to, data, (gssize)len, &error))
        die("%s", error->message);
}

static void
make_template(const char *dir, const char *fmt)
{
    g_autofree char *path = g_strdup_printf("%s/template.%s", dir, fmt);
    const char *argv[] = { "qemu-img", "create", "-q", "-f", fmt, path, "1M", NULL };
    int status;
    g_autoptr(GError) error = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                      &status, &error) ||
        !g_spawn_check_wait_status(status, &error))
        die("qemu-img create %s: %s", path, error->message);
}

/* Everything P needs: images, one held process per client, a warm-up. */
static gboolean
setup_plugin(Plugin *p, const char *dir)
{
    g_autoptr(GString) why = g_string_new(NULL);
    if (!(p->drv = load_plugin(p->path, p->config, why))) {
        fprintf(stderr, "abi-bench: %s: cannot run: %s; skipped\n", p->name, why->str);
        return FALSE;
    }
    for (int f = 0; f < N_FORMATS; f++) {
        g_autofree char *tmpl = g_strdup_printf("%s/template.%s", dir, formats[f]);
        for (int c = 0; c < MAX_CLIENTS; c++) {
            p->images[f][c] = g_strdup_printf("%s/%s-c%d.%s", dir, p->name, c, formats[f]);
            copy_file(tmpl, p->images[f][c]);
        }
    }
    g_autofree char *tmpl = g_strdup_printf("%s/template.qcow2", dir);
    for (int i = 0; i < START_DISKS; i++) {
        p->start_images[i] = g_strdup_printf("%s/%s-start%d.qcow2", dir, p->name, i);
        copy_file(tmpl, p->start_images[i]);
    }
    for (int c = 0; c < MAX_CLIENTS; c++) {
        char client[8];
        g_snprintf(client, sizeof(client), "%d", c);
        const char *args[] = { "--child", p->path, p->config, client, NULL };
        if (!spawn_child(args, &p->holders[c], NULL)) {
            fprintf(stderr, "abi-bench: %s: cannot run: the domain process's register-only "
                            "Acquire failed; skipped\n", p->name);
            return FALSE;
        }
    }
    for (int k = 0; k < N_CASES; k++) {
        p->ar[k] = g_array_new(FALSE, FALSE, sizeof(double));
        p->cycle[k] = g_array_new(FALSE, FALSE, sizeof(double));
    }
    p->start4 = g_array_new(FALSE, FALSE, sizeof(double));
    /* Warm-up, untimed: every client, every format (sanlock.so creates its
     * lease files on first use). */
    for (int f = 0; f < N_FORMATS; f++) {
        for (int c = 0; c < MAX_CLIENTS; c++) {
            double a, b;
            if (!run_cycle(p, c, p->images[f][c], &a, &b)) {
                fprintf(stderr, "abi-bench: %s: cannot run: a %s cycle failed; skipped\n",
                        p->name, formats[f]);
                return FALSE;
            }
        }
    }
    if (!run_start4(p)) {
        fprintf(stderr, "abi-bench: %s: cannot run a 4-disk start; skipped\n", p->name);
        return FALSE;
    }
    g_array_set_size(p->start4, 0);
    return TRUE;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
p50_of(GArray *a)
{
    if (!a || a->len == 0)
        return -1;
    qsort(a->data, a->len, sizeof(double), cmp_double);
    return g_array_index(a, double, a->len / 2);
}

/* NAME_p50_us and NAME_p99_us of A, if it has samples. */
static void
print_pct(const char *name, GArray *a)
{
    if (a->len > 0)
        bench_print_p50(name, (double *)a->data, a->len);
}

static Plugin *
plugin_named(const char *name)
{
    for (guint i = 0; i < n_plugins; i++)
        if (plugins[i].ok && g_str_equal(plugins[i].name, name))
            return &plugins[i];
    return NULL;
}

static void
print_ratio(const char *other, const char *what, double num, double den)
{
    if (num > 0 && den > 0)
        printf("vmlease_over_%s_%s: %.2f\n", other, what, num / den);
}

int
main(int argc, char **argv)
{
    if (argc >= 2 && g_str_equal(argv[1], "--child"))
        child_main(argc, argv);
    if (argc == 3 && g_str_equal(argv[1], "--echo"))
        echo_main(argv[2]);
    g_set_prgname("abi-bench");
    signal(SIGPIPE, SIG_IGN);

    gboolean quick = FALSE;
    guint rounds = 0;
    const char *dir_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (g_str_equal(a, "--quick")) {
            quick = TRUE;
        } else if (g_str_equal(a, "--rounds") && i + 1 < argc) {
            rounds = (guint)atoi(argv[++i]);
        } else if (g_str_equal(a, "--dir") && i + 1 < argc) {
            dir_arg = argv[++i];
        } else if (g_str_equal(a, "--plugin") && i + 1 < argc) {
            if (n_plugins == MAX_PLUGINS)
                die("at most %d plugins", MAX_PLUGINS);
            Plugin *p = &plugins[n_plugins++];
            p->path = g_canonicalize_filename(argv[++i], NULL);
            g_autofree char *base = g_path_get_basename(p->path);
            p->name = g_str_has_suffix(base, ".so") ? g_strndup(base, strlen(base) - 3)
                                                   : g_strdup(base);
        } else if (g_str_equal(a, "--config") && i + 1 < argc && n_plugins > 0) {
            plugins[n_plugins - 1].config = g_canonicalize_filename(argv[++i], NULL);
        } else {
            fprintf(stderr, "usage: abi-bench [--quick] [--rounds N] [--dir DIR] "
                            "--plugin SO --config FILE [--plugin SO --config FILE]...\n");
            return 2;
        }
    }
    for (guint i = 0; i < n_plugins; i++)
        if (!plugins[i].config)
            die("--plugin %s has no --config", plugins[i].path);
    if (!rounds)
        rounds = quick ? 2 : 20;
    /* Per client per round: 1 client, 8 clients; 4-disk starts per round. */
    guint n1 = quick ? 5 : 25, n8 = quick ? 2 : 6, nstart = quick ? 1 : 4;

    self_exe = g_file_read_link("/proc/self/exe", NULL);
    if (!self_exe)
        die("cannot read /proc/self/exe");
    g_autofree char *dir = NULL;
    g_autoptr(GError) error = NULL;
    if (dir_arg) {
        dir = g_canonicalize_filename(dir_arg, NULL);
        g_mkdir_with_parents(dir, 0700);
    } else if (!(dir = g_dir_make_tmp("abi-bench-XXXXXX", &error))) {
        die("%s", error->message);
    }
    make_template(dir, "raw");
    make_template(dir, "qcow2");

    echo_path = g_strdup_printf("%s/echo.sock", dir);
    Child echo = { 0 };
    const char *echo_args[] = { "--echo", echo_path, NULL };
    if (!spawn_child(echo_args, &echo, NULL))
        die("the echo server did not start");
    for (int ci = 0; ci < N_CLIENT_CASES; ci++)
        floor_us[ci] = g_array_new(FALSE, FALSE, sizeof(double));

    for (guint i = 0; i < n_plugins; i++)
        plugins[i].ok = setup_plugin(&plugins[i], dir);

    /* Rounds: every case, the plugins (and the floor) in an order rotated
     * each round; then the 4-disk starts, also rotated. */
    guint n_runners = n_plugins + 1;
    for (guint r = 0; r < rounds; r++) {
        for (int f = 0; f < N_FORMATS; f++) {
            for (int ci = 0; ci < N_CLIENT_CASES; ci++) {
                guint n = client_counts[ci] == 1 ? n1 : n8;
                for (guint j = 0; j < n_runners; j++) {
                    guint idx = (j + r) % n_runners;
                    if (idx == n_plugins) {
                        if (f == 0)
                            run_case(NULL, f, ci, n);
                    } else if (plugins[idx].ok) {
                        run_case(&plugins[idx], f, ci, n);
                    }
                }
            }
        }
        for (guint s = 0; s < nstart; s++) {
            for (guint j = 0; j < n_plugins; j++) {
                Plugin *p = &plugins[(j + r) % n_plugins];
                if (p->ok && !run_start4(p))
                    p->ok = FALSE;
            }
        }
    }

    /* Figures. */
    double floor_p50[N_CLIENT_CASES];
    for (int ci = 0; ci < N_CLIENT_CASES; ci++) {
        g_autofree char *name = g_strdup_printf("floor_%s", client_names[ci]);
        floor_p50[ci] = p50_of(floor_us[ci]);
        print_pct(name, floor_us[ci]);
        printf("%s_per_s: %.1f\n", name,
               (double)floor_count[ci] * 1e9 / (double)MAX(floor_wall_ns[ci], 1));
    }
    double p50[MAX_PLUGINS][N_CASES + 1];
    for (guint i = 0; i < n_plugins; i++) {
        Plugin *p = &plugins[i];
        if (!p->ok)
            continue;
        for (int f = 0; f < N_FORMATS; f++) {
            for (int ci = 0; ci < N_CLIENT_CASES; ci++) {
                int k = f * N_CLIENT_CASES + ci;
                g_autofree char *name = g_strdup_printf("%s_%s_%s", p->name, formats[f],
                                                        client_names[ci]);
                g_autofree char *cname = g_strdup_printf("%s_cycle", name);
                p50[i][k] = p50_of(p->ar[k]);
                print_pct(name, p->ar[k]);
                print_pct(cname, p->cycle[k]);
                printf("%s_cycles_per_s: %.1f\n", name,
                       (double)p->cycles[k] * 1e9 / (double)MAX(p->wall_ns[k], 1));
            }
        }
        g_autofree char *sname = g_strdup_printf("%s_start4", p->name);
        p50[i][N_CASES] = p50_of(p->start4);
        print_pct(sname, p->start4);
    }
    Plugin *vml = plugin_named("vmlease");
    if (vml) {
        guint vi = (guint)(vml - plugins);
        const char *others[] = { "lockd", "sanlock" };
        for (guint o = 0; o < G_N_ELEMENTS(others); o++) {
            Plugin *op = plugin_named(others[o]);
            if (!op)
                continue;
            guint oi = (guint)(op - plugins);
            for (int f = 0; f < N_FORMATS; f++)
                for (int ci = 0; ci < N_CLIENT_CASES; ci++) {
                    int k = f * N_CLIENT_CASES + ci;
                    g_autofree char *what = g_strdup_printf("%s_%s", formats[f], client_names[ci]);
                    print_ratio(others[o], what, p50[vi][k], p50[oi][k]);
                }
            print_ratio(others[o], "start4", p50[vi][N_CASES], p50[oi][N_CASES]);
        }
        for (int f = 0; f < N_FORMATS; f++)
            for (int ci = 0; ci < N_CLIENT_CASES; ci++) {
                int k = f * N_CLIENT_CASES + ci;
                g_autofree char *what = g_strdup_printf("%s_%s", formats[f], client_names[ci]);
                print_ratio("floor", what, p50[vi][k], floor_p50[ci]);
            }
    }
    fflush(stdout);

    for (guint i = 0; i < n_plugins; i++)
        for (int c = 0; c < MAX_CLIENTS; c++)
            stop_child(&plugins[i].holders[c]);
    stop_child(&echo);
    unlink(echo_path);
    return 0;
}
