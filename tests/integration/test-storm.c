/* A bounded crash-consistency storm (issue 13, item 7): a real vmleased
 * (fcntl backend, private VMLEASE_ROOT) is SIGKILLed and restarted, or
 * re-executed with SIGUSR1, at random moments while 12-24 holder processes
 * of every kind acquire, upgrade, downgrade, release and hand images over,
 * exit, are killed and fork. After every event the holders are quiesced,
 * requests whose reply was lost are resolved from Inquire (either outcome
 * is accepted, and the one found is recorded), and an invariant is checked
 * against what the daemon reports and against the kernel's OFD locks on
 * the lock files:
 *
 *  - every holder holds exactly the leases it was granted and did not
 *    release, each in its mode (Inquire, Admin.List and Admin.Owners);
 *  - an image held exclusively is write-locked on bytes 0 and 1 of its
 *    lock file, one held shared only is read-locked, a free one unlocked;
 *  - no two live holders hold conflicting grants, a released lease never
 *    comes back, and no lock is held without an owner listed;
 *  - besides: each lease of a holder that keeps its fds is locked through
 *    a description it shares with vmleased (and is still locked while
 *    vmleased is dead), vmleased keeps one description per lease, and a
 *    holder id is never given to two processes.
 *
 * Each holder is its own process, driven over a socketpair: the test
 * knows which replies each one received. Holder kinds: leases kept by the
 * daemon alone (no fds), plugin-style holders that take their lock fds and
 * keep them (fds=true, sometimes holder_fds=true), holders with a mailbox,
 * and holders forked from another holder (inheriting its fds) that
 * register themselves; holders also fork children that just keep what they
 * inherited. A control run without any signal comes first.
 *
 * A violation is printed with the event, what happened before it to the
 * holder and the image, and the open descriptions of the lock file. One
 * whose circumstances match a cause found before (known_causes[], each
 * naming the code it came from; all fixed since) is counted under it, so a
 * regression says what it is; the holders involved are then killed, so
 * that the storm goes on from a sane state. Every violation fails.
 *
 * VMLEASE_STORM_EVENTS (default 60) and VMLEASE_STORM_SEED override the
 * size and the seed; VMLEASE_STORM_CONTROL the control run's checkpoints
 * (default 12); VMLEASE_STORM_KEEP=1 keeps the daemon's root (and log);
 * VMLEASE_STORM_VERBOSE=1 prints everything that happened. */
#include "harness.h"
#include "vml-client.h"
#include "vml-error.h"
#include "vml-mailbox-socket.h"
#include "vml-paths.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_IMAGES 8
#define MIN_HOLDERS 12
#define MAX_HOLDERS 24
#define MAX_IN_FLIGHT 4
#define CHAN_MAX (256 * 1024)
#define HOLDER_CALL_TIMEOUT_MS 20000

enum { M_NONE = 0, M_SHARED = 1, M_EXCL = 2 };

static const char *const mode_names[] = { "none", "shared", "exclusive" };

/* ======================================================================
 * The holder processes
 * ====================================================================== */

typedef struct {
    int chan;           /* to the test */
    int lifeline;       /* EOF once the test is gone */
    VmlClient *conn;    /* persistent; reconnected when the daemon hung up */
    int mailbox;
    GHashTable *kept;   /* image path -> GArray of lock fds received for it */
} HolderProc;

/* Send a JSON object (and at most one fd) as one message. */
static gboolean
chan_send(int chan, JsonObject *msg, int fd)
{
    gsize len;
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), msg);
    g_autofree char *text = json_to_string(node, FALSE);
    len = strlen(text);
    struct iovec iov = { .iov_base = text, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n;
    while ((n = sendmsg(chan, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)len;
}

/* One message; NULL on EOF or error. *fd gets a passed fd or -1. */
static JsonObject *
chan_recv(int chan, int *fd)
{
    g_autofree char *buf = g_malloc(CHAN_MAX + 1);
    struct iovec iov = { .iov_base = buf, .iov_len = CHAN_MAX };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf) };
    ssize_t n;
    if (fd)
        *fd = -1;
    while ((n = recvmsg(chan, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(c), sizeof(int));
            if (fd)
                *fd = got;
            else
                close(got);
        }
    }
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, buf, n, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return NULL;
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static void
hp_keep(HolderProc *hp, const char *path, int fd)
{
    GArray *a = g_hash_table_lookup(hp->kept, path);
    if (!a) {
        a = g_array_new(FALSE, FALSE, sizeof(int));
        g_hash_table_insert(hp->kept, g_strdup(path), a);
    }
    g_array_append_val(a, fd);
    /* The newest fd of a resource is on the current lease's description;
     * a few older ones (unlocked since a release) stay, as in a VM. */
    while (a->len > 3) {
        close(g_array_index(a, int, 0));
        g_array_remove_index(a, 0);
    }
}

/* A forked child that only keeps what it inherited, until the test goes
 * or kills it. */
G_GNUC_NORETURN static void
keeper_main(int lifeline)
{
    for (;;) {
        struct pollfd p = { .fd = lifeline, .events = POLLIN };
        if (poll(&p, 1, -1) > 0)
            _exit(0);
    }
}

/* Perform one daemon call as this process and answer the test. */
static void
hp_call(HolderProc *hp, JsonObject *cmd)
{
    const char *method = json_object_get_string_member(cmd, "method");
    JsonObject *params = json_object_get_object_member(cmd, "params");
    gboolean with_mailbox = json_object_get_boolean_member_with_default(cmd, "mailbox", FALSE);
    g_autoptr(JsonObject) answer = json_object_new();

    if (hp->conn) {
        /* The daemon never speaks first: anything readable is its EOF. */
        struct pollfd p = { .fd = vml_client_get_fd(hp->conn), .events = POLLIN };
        if (poll(&p, 1, 0) != 0)
            g_clear_pointer(&hp->conn, vml_client_free);
    }
    if (!hp->conn) {
        g_autoptr(GError) error = NULL;
        hp->conn = vml_client_connect_lease(&error);
        if (!hp->conn) {
            json_object_set_string_member(answer, "status", "unsent");
            json_object_set_string_member(answer, "message", error->message);
            chan_send(hp->chan, answer, -1);
            return;
        }
        vml_client_set_timeout(hp->conn, HOLDER_CALL_TIMEOUT_MS);
    }
    if (with_mailbox && hp->mailbox < 0)
        hp->mailbox = vml_mailbox_socket_new(NULL);
    int send_fd = with_mailbox ? hp->mailbox : -1;
    GArray *fds = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) ep = NULL;
    g_autoptr(JsonObject) r = vml_client_call(hp->conn, method, params, send_fd >= 0 ? &send_fd : NULL,
                                              send_fd >= 0, &fds, &ep, &error);
    if (r) {
        json_object_set_string_member(answer, "status", "ok");
        struct stat st;
        if (with_mailbox && fstat(hp->mailbox, &st) == 0)
            json_object_set_int_member(answer, "mailbox_ino", (gint64)st.st_ino);
        json_object_set_object_member(answer, "reply", json_object_ref(r));
        guint n_fds = fds ? fds->len : 0;
        json_object_set_int_member(answer, "n_fds", n_fds);
        JsonArray *res = json_object_has_member(params, "resources")
            ? json_object_get_array_member(params, "resources") : NULL;
        for (guint i = 0; i < n_fds; i++) {
            int fd = g_array_index(fds, int, i);
            if (res && i < json_array_get_length(res))
                hp_keep(hp, json_object_get_string_member(
                                json_array_get_object_element(res, i), "path"), fd);
            else
                close(fd);
        }
        if (fds)
            g_array_unref(fds);
    } else if (error->domain == VML_ERROR && error->code == VML_ERROR_PROTOCOL) {
        /* Sent, and no answer: the daemon may or may not have done it. */
        json_object_set_string_member(answer, "status", "ambiguous");
        json_object_set_string_member(answer, "message", error->message);
        g_clear_pointer(&hp->conn, vml_client_free);
    } else {
        json_object_set_string_member(answer, "status", "error");
        json_object_set_string_member(answer, "error", vml_error_name(error->code));
        json_object_set_string_member(answer, "message", error->message);
    }
    chan_send(hp->chan, answer, -1);
}

G_GNUC_NORETURN static void holder_main(HolderProc *hp);

/* Fork: a keeper, or (with a channel passed along) a new holder process
 * that starts with everything this one has open. */
static void
hp_fork(HolderProc *hp, JsonObject *cmd, int child_chan)
{
    gboolean keeper = json_object_get_boolean_member_with_default(cmd, "keeper", TRUE);
    pid_t pid = fork();
    if (pid == 0) {
        close(hp->chan);
        if (hp->conn) {
            /* The parent's connection stays the parent's. */
            close(vml_client_get_fd(hp->conn));
            hp->conn = NULL;
        }
        if (keeper || child_chan < 0) {
            if (child_chan >= 0)
                close(child_chan);
            keeper_main(hp->lifeline);
        }
        hp->chan = child_chan;
        holder_main(hp);
    }
    if (child_chan >= 0)
        close(child_chan);
    g_autoptr(JsonObject) answer = json_object_new();
    json_object_set_string_member(answer, "status", pid > 0 ? "ok" : "error");
    json_object_set_int_member(answer, "pid", pid);
    chan_send(hp->chan, answer, -1);
}

static void
holder_main(HolderProc *hp)
{
    for (;;) {
        struct pollfd p[2] = { { .fd = hp->chan, .events = POLLIN },
                               { .fd = hp->lifeline, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (p[1].revents)
            _exit(0);
        int fd = -1;
        g_autoptr(JsonObject) cmd = chan_recv(hp->chan, &fd);
        if (!cmd)
            _exit(0);
        const char *op = json_object_get_string_member_with_default(cmd, "op", "");
        if (g_str_equal(op, "call"))
            hp_call(hp, cmd);
        else if (g_str_equal(op, "fork"))
            hp_fork(hp, cmd, fd);
        else if (g_str_equal(op, "exit"))
            _exit(0);
        if (fd >= 0 && !g_str_equal(op, "fork"))
            close(fd);
    }
}

/* ======================================================================
 * The test's model of every holder
 * ====================================================================== */

typedef enum { K_PLAIN, K_FDS, K_MAILBOX, K_CHILD } Kind;
static const char *const kind_names[] = { "plain", "fds", "mailbox", "forked" };

typedef enum { OP_REGISTER, OP_ACQUIRE, OP_RELEASE, OP_INQUIRE, OP_FORK } OpKind;

typedef struct _Holder Holder;

typedef struct {
    OpKind op;
    int want[N_IMAGES];       /* acquire: the mode asked (0: not named);
                                 release: 1 if named */
    gboolean all;             /* release: every lease */
    gboolean fds, holder_fds, mailbox;
    gboolean keeper;          /* fork */
    Holder *child;            /* fork of a holder process */
    Holder *then;             /* hand-over: once released, THEN acquires */
    int then_image, then_mode;
    char *desc;
    guint log_index;          /* its line in the event's log */
} Pending;

struct _Holder {
    int slot;
    Kind kind;
    pid_t pid;
    int chan;
    gint64 id;
    char uuid[37];
    gboolean registered;
    gboolean mailbox_ok;      /* vmleased took its mailbox, for certain */
    guint kills_at_register;  /* SIGKILLs of vmleased before it registered */
    gboolean dead;            /* exited or killed (by the test) */
    gboolean died_while_down; /* ... while vmleased was not running */
    guint died_event;         /* the event it died in (before its check) */
    gboolean died_unseen;     /* vmleased may have missed its exit: it died
                                 while vmleased was down, or just before a
                                 SIGKILL or re-exec */
    guint64 mailbox_ino;      /* its mailbox socket */
    Holder *origin;           /* the holder it was forked from */
    int mode[N_IMAGES];       /* granted and not released (at death: held then) */
    gboolean fd_backed[N_IMAGES]; /* the holder's own fds (or mailbox) keep it */
    gint released_at[N_IMAGES];   /* event of the last certain release, -1 */
    Pending *pending;
    Pending *unresolved;      /* its reply was lost */
    guint holder_fds_at[N_IMAGES]; /* 1 + the event of its last acquire with
                                      holder_fds naming the image, 0: none */
    int event_mode[N_IMAGES]; /* what it held when vmleased got the last signal */
};

typedef struct {
    pid_t pid;
    Holder *origin;
    gboolean dead;
} Keeper;

typedef struct {
    guint event;
    char *cls;
    char *text;
    const char *known;        /* the known cause, or NULL */
} Violation;

typedef struct {
    VmlTestDaemon *d;
    GRand *rng;
    gboolean control;
    char *paths[N_IMAGES];    /* canonical */
    char *keys[N_IMAGES];     /* their resource keys */
    char *lock_files[N_IMAGES];
    GPtrArray *holders;       /* Holder*, dead ones too */
    GPtrArray *keepers;       /* Keeper* */
    GPtrArray *violations;    /* Violation* */
    GHashTable *ids;          /* holder id -> pid it was given to */
    int lifeline[2];
    guint event;
    gboolean in_event;        /* between the burst and the check */
    gboolean checked;         /* the current event's check is done */
    gboolean daemon_down;
    char *event_desc;
    GPtrArray *log;           /* Entry*: what happened */
    guint event_entry;        /* the current event's line */
    guint verbose_from;
    /* figures */
    guint n_events, n_kill, n_usr1, n_ops, n_granted, n_conflicts, n_ambiguous,
          n_amb_done, n_amb_not, n_unsent, n_down_kills, n_forks;
} Storm;

static void kill_holder(Storm *s, Holder *h, const char *why);

static void
say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void
say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++)
        printf("# %s\n", *l);
    fflush(stdout);
}

static int
rnd(Storm *s, int n)
{
    return n <= 1 ? 0 : g_rand_int_range(s->rng, 0, n);
}

static gboolean
chance(Storm *s, int percent)
{
    return rnd(s, 100) < percent;
}

static char *
hname(const Holder *h)
{
    return g_strdup_printf("h%d(%s, pid %d, holder %" G_GINT64_FORMAT ")", h->slot,
                           kind_names[h->kind], (int)h->pid, h->id);
}

static const char *
img_name(int i)
{
    static const char *const names[] = { "img0", "img1", "img2", "img3",
                                         "img4", "img5", "img6", "img7" };
    return names[i];
}

/* One line of what happened: by whom (-1: the daemon, an event) and on
 * which images (a bit mask). */
typedef struct {
    guint event;
    int slot;
    guint images;
    char *text;
} Entry;

static void
entry_free(Entry *e)
{
    g_free(e->text);
    g_free(e);
}

static guint
log_line(Storm *s, const Holder *h, guint images, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static guint
log_line(Storm *s, const Holder *h, guint images, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    Entry *e = g_new0(Entry, 1);
    e->event = s->event;
    e->slot = h ? h->slot : -1;
    e->images = images;
    e->text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_ptr_array_add(s->log, e);
    return s->log->len - 1;
}

static void
log_append(Storm *s, guint index, const char *what)
{
    if (index >= s->log->len)
        return;
    Entry *e = s->log->pdata[index];
    char *old = e->text;
    e->text = g_strconcat(old, " -> ", what, NULL);
    g_free(old);
}

static guint
held_mask(const int *modes)
{
    guint m = 0;
    for (int i = 0; i < N_IMAGES; i++)
        m |= modes[i] ? 1u << i : 0;
    return m;
}

/* Causes found before and fixed: a violation that matches one is counted
 * under it and fails its case, naming what came back. Filled in by the
 * classifiers below. */
typedef struct {
    const char *id;
    const char *cause;
    guint seen;
} KnownCause;

static KnownCause known_causes[] = {
    { "holder-fds-description",
      "Acquire with holder_fds=true locks the first description of the lock file that the "
      "holder process has open, whoever's it is: one inherited over fork() from another "
      "holder is that holder's lease lock already (OFD locks never conflict with their own "
      "description), so two leases share it, conflicting modes included, and letting go of "
      "either (a release, or the rollback of an acquire that failed on another image) "
      "unlocks the other (lockd/backends/fcntl-backend.c holder_lock_fd with locked=FALSE, "
      "from fcntl_acquire)",
      0 },
    { "recovery-description",
      "after a SIGKILL the restart takes each lease back from the first description in the "
      "holder's fd table that holds any lock on the lock file: in a process forked from "
      "another holder that is the other holder's lease lock, so two leases share it and the "
      "holder's own locked description is left to nobody "
      "(lockd/backends/fcntl-backend.c holder_lock_fd with locked=TRUE, from fcntl_recover)",
      0 },
    { "orphan-after-down",
      "a holder died unseen (while vmleased was down, or just before a SIGKILL or re-exec) "
      "and a process it forked still has its lock description (or its mailbox) open: the "
      "next vmleased drops the dead holder's record, or closes the handed-over fd, without "
      "unlocking (lockd/lease-table.c restore_record, !h branch), and cannot reach a "
      "description it has no dup of; the image stays locked by a process that is no holder "
      "(Owners lists nobody, or at most names that process as unregistered)", 0 },
    { "stray-inherited",
      "after a restart or re-exec, recovery unlocks every lock on a lock file that a live "
      "holder's fds carry and its record does not name: in a holder forked from another one "
      "that is the other holder's lease lock, inherited over fork(), so the other holder "
      "keeps its lease with no lock and a second holder is granted the image "
      "(lockd/backends/fcntl-backend.c fcntl_drop_strays, called from restore_record)", 0 },
    { "torn-record",
      "a holder record that shrinks to less than half is written in two steps, a pwrite "
      "over the old content and then an ftruncate: a SIGKILL between the two leaves the new "
      "JSON followed by the old one's tail, which does not parse, and the restart skips the "
      "record, so a live holder and the leases it kept are forgotten (a lock kept by the "
      "daemon alone is gone for good) (lockd/record-store.c vml_record_store_write; "
      "lockd/lease-table.c vml_lease_table_restore skips a record that does not parse)", 0 },
    { "id-after-restart",
      "a holder id is handed out twice: after a SIGKILL the restarted vmleased takes its "
      "next id from state/state.json (saved up to 200 ms late) and from the records of "
      "holders still alive, so the id of a holder that registered after the last save and "
      "exited (or died while vmleased was down) is given to the next process that registers "
      "(lockd/lease-table.c vml_lease_table_restore, restore_record)", 0 },
};

static KnownCause *
known_cause(const char *id)
{
    for (guint i = 0; i < G_N_ELEMENTS(known_causes); i++) {
        if (g_str_equal(known_causes[i].id, id))
            return &known_causes[i];
    }
    return NULL;
}

/* What happened before a violation: the events, and what was done by
 * holder H or on image IMG (either may be absent), the latest last. */
static void
show_history(Storm *s, const Holder *h, int img)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new();
    guint events = 0;
    for (guint i = s->log->len; i-- > 0 && lines->len < 24;) {
        Entry *e = s->log->pdata[i];
        gboolean mine = (h && e->slot == h->slot) || (img >= 0 && (e->images & (1u << img)));
        if (e->slot < 0 && e->images == ~0u) {
            if (events++ >= 3 && !mine)
                continue;
        } else if (!mine && !(e->event == s->event && !h && img < 0)) {
            continue;
        }
        g_ptr_array_add(lines, e);
    }
    say("  what happened before (latest last):");
    for (guint i = lines->len; i-- > 0;) {
        Entry *e = lines->pdata[i];
        say("    e%u %s", e->event, e->text);
    }
}

static void
violation(Storm *s, const char *cls, const char *known, const Holder *h, int img,
          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    Violation *v = g_new0(Violation, 1);
    v->event = s->event;
    v->cls = g_strdup(cls);
    v->text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    KnownCause *kc = known ? known_cause(known) : NULL;
    v->known = kc ? kc->id : NULL;
    if (kc)
        kc->seen++;
    g_ptr_array_add(s->violations, v);
    say("VIOLATION %u [%s run, event %u (%s), %s]%s%s%s: %s", s->violations->len,
        s->control ? "control" : "storm", s->event, s->event_desc ? s->event_desc : "",
        cls, kc ? " (known: " : "", kc ? kc->id : "", kc ? ")" : "", v->text);
    show_history(s, h, img);
}

/* ---- processes ------------------------------------------------------------ */

/* Wait for PID to be gone: our child (or orphan, as subreaper) is reaped;
 * another holder's child (SIGCHLD ignored there) goes by itself. */
static void
reap(pid_t pid)
{
    for (int i = 0; i < 5000; i++) {
        pid_t r = waitpid(pid, NULL, 0);
        if (r == pid)
            return;
        if (r < 0 && errno == EINTR)
            continue;
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return;
        g_usleep(1000);
    }
    g_error("pid %d did not go away", (int)pid);
}

static void
kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    reap(pid);
}

static void
child_setup(Storm *s, int keep_chan)
{
    /* Only the channel, the lifeline and stdio stay open. */
    int chan = fcntl(keep_chan, F_DUPFD_CLOEXEC, 900);
    int life = fcntl(s->lifeline[0], F_DUPFD_CLOEXEC, 900);
    int low = MIN(chan, life), high = MAX(chan, life);
    close_range(3, low - 1, 0);
    close_range(low + 1, high - 1, 0);
    close_range(high + 1, ~0U, 0);
    s->lifeline[0] = life;
    HolderProc hp = { .chan = chan, .lifeline = life, .mailbox = -1,
                      .kept = g_hash_table_new(g_str_hash, g_str_equal) };
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGCHLD, SIG_IGN);   /* forked keepers never linger as zombies */
    holder_main(&hp);
}

static Holder *
holder_new(Storm *s, Kind kind, Holder *origin)
{
    Holder *h = g_new0(Holder, 1);
    h->slot = s->holders->len;
    h->kind = kind;
    h->origin = origin;
    h->chan = -1;
    for (int i = 0; i < N_IMAGES; i++)
        h->released_at[i] = -1;
    g_autofree char *u = g_uuid_string_random();
    g_strlcpy(h->uuid, u, sizeof(h->uuid));
    g_ptr_array_add(s->holders, h);
    return h;
}

static Holder *
spawn_holder(Storm *s, Kind kind)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), ==, 0);
    Holder *h = holder_new(s, kind, NULL);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        child_setup(s, sv[1]);
    close(sv[1]);
    h->pid = pid;
    h->chan = sv[0];
    return h;
}

/* ---- requests --------------------------------------------------------------- */

static guint
in_flight(Storm *s)
{
    guint n = 0;
    for (guint i = 0; i < s->holders->len; i++)
        n += ((Holder *)s->holders->pdata[i])->pending != NULL;
    return n;
}

static void
pending_free(Pending *p)
{
    if (!p)
        return;
    g_free(p->desc);
    g_free(p);
}

static JsonObject *
resource(Storm *s, int img, int mode)
{
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "path", s->paths[img]);
    if (mode)
        json_object_set_string_member(r, "mode", mode_names[mode]);
    return r;
}

static void
send_pending(Storm *s, Holder *h, Pending *p, JsonObject *cmd, int fd)
{
    g_assert_null(h->pending);
    h->pending = p;
    g_autofree char *who = hname(h);
    guint mask = 0;
    for (int i = 0; i < N_IMAGES; i++)
        mask |= p->want[i] ? 1u << i : 0;
    p->log_index = log_line(s, h, mask, "%s %s", who, p->desc);
    s->n_ops++;
    if (!chan_send(h->chan, cmd, fd)) {
        /* The holder is gone (killed while the test did not look). */
        h->pending = NULL;
        log_append(s, p->log_index, "holder gone");
        pending_free(p);
    }
}

static void
send_call(Storm *s, Holder *h, Pending *p, const char *method, JsonObject *params)
{
    g_autoptr(JsonObject) cmd = json_object_new();
    json_object_set_string_member(cmd, "op", "call");
    json_object_set_string_member(cmd, "method", method);
    json_object_set_object_member(cmd, "params", params);
    json_object_set_boolean_member(cmd, "mailbox", p->mailbox);
    send_pending(s, h, p, cmd, -1);
}

static void
op_register(Storm *s, Holder *h)
{
    Pending *p = g_new0(Pending, 1);
    p->op = OP_REGISTER;
    p->mailbox = h->kind == K_MAILBOX;
    p->desc = g_strdup_printf("register%s", p->mailbox ? " with a mailbox" : "");
    JsonObject *params = json_object_new();
    json_object_set_string_member(params, "uuid", h->uuid);
    g_autofree char *name = g_strdup_printf("h%d", h->slot);
    json_object_set_string_member(params, "name", name);
    json_object_set_int_member(params, "pid", h->pid);
    send_call(s, h, p, "io.vmlease.Lease.Register", params);
}

/* Acquire WANT (mode per image, 0: not named). */
static void
op_acquire(Storm *s, Holder *h, const int *want)
{
    Pending *p = g_new0(Pending, 1);
    p->op = OP_ACQUIRE;
    memcpy(p->want, want, sizeof(p->want));
    p->fds = h->kind == K_FDS || h->kind == K_CHILD;
    p->holder_fds = (h->kind == K_FDS && chance(s, 25)) || (h->kind == K_CHILD && chance(s, 50));
    JsonArray *res = json_array_new();
    g_autoptr(GString) d = g_string_new("acquire");
    /* In a random order: the all-or-nothing must not depend on it. */
    int order[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++)
        order[i] = i;
    for (int i = N_IMAGES - 1; i > 0; i--) {
        int j = rnd(s, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < N_IMAGES; k++) {
        int i = order[k];
        if (!want[i])
            continue;
        json_array_add_object_element(res, resource(s, i, want[i]));
        g_string_append_printf(d, " %s %s%s", img_name(i), mode_names[want[i]],
                               h->mode[i] && h->mode[i] != want[i]
                                   ? (want[i] == M_EXCL ? " (upgrade)" : " (downgrade)")
                                   : h->mode[i] ? " (held)" : "");
    }
    if (p->fds)
        g_string_append(d, p->holder_fds ? " [fds, holder_fds]" : " [fds]");
    p->desc = g_string_free(g_steal_pointer(&d), FALSE);
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "holder", h->id);
    json_object_set_array_member(params, "resources", res);
    if (p->fds)
        json_object_set_boolean_member(params, "fds", TRUE);
    if (p->holder_fds) {
        json_object_set_boolean_member(params, "holder_fds", TRUE);
        for (int i = 0; i < N_IMAGES; i++)
            h->holder_fds_at[i] = want[i] ? s->event + 1 : h->holder_fds_at[i];
    }
    send_call(s, h, p, "io.vmlease.Lease.Acquire", params);
}

/* Release NAMED (1 per image), or everything with ALL. */
static Pending *
op_release(Holder *h, const int *named, gboolean all)
{
    Pending *p = g_new0(Pending, 1);
    p->op = OP_RELEASE;
    p->all = all;
    g_autoptr(GString) d = g_string_new(all ? "release all" : "release");
    if (!all) {
        for (int i = 0; i < N_IMAGES; i++) {
            if (!named[i])
                continue;
            p->want[i] = 1;
            g_string_append_printf(d, " %s", img_name(i));
        }
    } else {
        for (int i = 0; i < N_IMAGES; i++)
            p->want[i] = h->mode[i] != M_NONE;
    }
    p->desc = g_string_free(g_steal_pointer(&d), FALSE);
    return p;
}

static void
send_release(Storm *s, Holder *h, Pending *p)
{
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "holder", h->id);
    if (!p->all) {
        JsonArray *res = json_array_new();
        for (int i = 0; i < N_IMAGES; i++) {
            if (p->want[i])
                json_array_add_object_element(res, resource(s, i, 0));
        }
        json_object_set_array_member(params, "resources", res);
    }
    send_call(s, h, p, "io.vmlease.Lease.Release", params);
}

static void
op_inquire(Storm *s, Holder *h)
{
    Pending *p = g_new0(Pending, 1);
    p->op = OP_INQUIRE;
    p->desc = g_strdup("inquire");
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "holder", h->id);
    send_call(s, h, p, "io.vmlease.Lease.Inquire", params);
}

static guint pump(Storm *s, int timeout_ms);

static void
op_fork(Storm *s, Holder *h, gboolean keeper)
{
    Pending *p = g_new0(Pending, 1);
    p->op = OP_FORK;
    p->keeper = keeper;
    int sv[2] = { -1, -1 };
    if (!keeper) {
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), ==, 0);
        p->child = holder_new(s, K_CHILD, h);
        p->child->chan = sv[0];
        p->desc = g_strdup_printf("fork h%d, a holder of its own", p->child->slot);
    } else {
        p->desc = g_strdup("fork a child that keeps what it inherits");
    }
    g_autoptr(JsonObject) cmd = json_object_new();
    json_object_set_string_member(cmd, "op", "fork");
    json_object_set_boolean_member(cmd, "keeper", keeper);
    s->n_forks++;
    Holder *child = p->child;
    send_pending(s, h, p, cmd, sv[1]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (child && !h->pending) {
        /* The parent was gone: so is the new holder. */
        child->dead = TRUE;
        close(child->chan);
        child->chan = -1;
    }
    /* Wait for the answer (no daemon in it: it comes at once), so that
     * no forked process can be left that the test does not know of. */
    for (int i = 0; i < 100 && h->pending && h->pending->op == OP_FORK; i++)
        pump(s, 100);
}

/* ---- replies ---------------------------------------------------------------- */

static int
parse_mode(const char *name)
{
    return g_strcmp0(name, "exclusive") == 0 ? M_EXCL : g_strcmp0(name, "shared") == 0 ? M_SHARED
                                                                                       : M_NONE;
}

static int
image_of(Storm *s, const char *key)
{
    for (int i = 0; i < N_IMAGES; i++) {
        if (g_strcmp0(s->keys[i], key) == 0)
            return i;
    }
    return -1;
}

/* Leases (an array of Lease objects) as a mode per image. */
static void
leases_modes(Storm *s, JsonArray *leases, int *modes)
{
    memset(modes, 0, sizeof(int) * N_IMAGES);
    for (guint i = 0; leases && i < json_array_get_length(leases); i++) {
        JsonObject *l = json_array_get_object_element(leases, i);
        int img = image_of(s, json_object_get_string_member_with_default(l, "resource", ""));
        if (img >= 0)
            modes[img] = parse_mode(json_object_get_string_member_with_default(l, "mode", ""));
    }
}

static char *
modes_text(const int *modes)
{
    GString *t = g_string_new(NULL);
    for (int i = 0; i < N_IMAGES; i++) {
        if (modes[i])
            g_string_append_printf(t, "%s%s %s", t->len ? ", " : "", img_name(i),
                                   mode_names[modes[i]]);
    }
    if (!t->len)
        g_string_append(t, "nothing");
    return g_string_free(t, FALSE);
}

/* The mode H would hold of IMG if its request in flight (or lost) were done. */
static int
mode_after(const Holder *h, const Pending *p, int img)
{
    if (!p)
        return h->mode[img];
    if (p->op == OP_ACQUIRE && p->want[img])
        return p->want[img];
    if (p->op == OP_RELEASE && p->want[img])
        return M_NONE;
    return h->mode[img];
}

/* What H holds of IMG for certain, whatever its open request does. */
static int
certain_mode(const Holder *h, int img)
{
    if (h->dead || !h->registered)
        return M_NONE;
    int m = h->mode[img];
    const Pending *p = h->pending ? h->pending : h->unresolved;
    return MIN(m, mode_after(h, p, img));
}

static gboolean
conflicts(int a, int b)
{
    return (a == M_EXCL && b != M_NONE) || (b == M_EXCL && a != M_NONE);
}

/* One fd on a lock file, in some process. */
typedef struct {
    pid_t pid;
    int fd;
    char lock;      /* 'W', 'R' or '-': what its description locks */
    int group;      /* fds with the same group share one description */
} FdRef;

/* Every fd of every process on IMG's lock file, grouped by description
 * (kcmp). *N_GROUPS gets the number of descriptions. */
static GArray *
scan_descriptions(Storm *s, int img, int *n_groups)
{
    GArray *all = g_array_new(FALSE, FALSE, sizeof(FdRef));
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *ent;
    while (proc && (ent = g_dir_read_name(proc))) {
        if (!g_ascii_isdigit(ent[0]))
            continue;
        g_autofree char *fddir = g_strdup_printf("/proc/%s/fd", ent);
        g_autoptr(GDir) fds = g_dir_open(fddir, 0, NULL);
        const char *fd;
        while (fds && (fd = g_dir_read_name(fds))) {
            g_autofree char *link = g_build_filename(fddir, fd, NULL);
            g_autofree char *target = g_file_read_link(link, NULL);
            if (g_strcmp0(target, s->lock_files[img]) != 0)
                continue;
            g_autofree char *info = g_strdup_printf("/proc/%s/fdinfo/%s", ent, fd);
            g_autofree char *text = NULL;
            g_file_get_contents(info, &text, NULL, NULL);
            FdRef f = { .pid = atoi(ent), .fd = atoi(fd), .group = -1,
                        .lock = !text || !strstr(text, "OFDLCK") ? '-'
                                : strstr(text, "WRITE") ? 'W' : 'R' };
            g_array_append_val(all, f);
        }
    }
    int groups = 0;
    for (guint i = 0; i < all->len; i++) {
        FdRef *x = &g_array_index(all, FdRef, i);
        for (guint j = 0; j < i && x->group < 0; j++) {
            FdRef *y = &g_array_index(all, FdRef, j);
            if (syscall(SYS_kcmp, x->pid, y->pid, KCMP_FILE, x->fd, y->fd) == 0)
                x->group = y->group;
        }
        if (x->group < 0)
            x->group = groups++;
    }
    *n_groups = groups;
    return all;
}

static Holder *
holder_of_pid(Storm *s, pid_t pid)
{
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (h->pid == pid)
            return h;
    }
    return NULL;
}

static Keeper *
keeper_of_pid(Storm *s, pid_t pid)
{
    for (guint i = 0; i < s->keepers->len; i++) {
        Keeper *k = s->keepers->pdata[i];
        if (k->pid == pid && !k->dead)
            return k;
    }
    return NULL;
}

static char *
pid_text(Storm *s, pid_t pid)
{
    if (pid == s->d->pid)
        return g_strdup("vmleased");
    Holder *h = holder_of_pid(s, pid);
    if (h)
        return g_strdup_printf("h%d", h->slot);
    Keeper *k = keeper_of_pid(s, pid);
    if (k)
        return g_strdup_printf("keeper(h%d)", k->origin->slot);
    return g_strdup_printf("pid %d", (int)pid);
}

/* Every open description of IMG's lock file, in every process, with the
 * lock it holds: "[who:fd ... lock R]" per description. */
static char *
descriptions_text(Storm *s, int img)
{
    int groups;
    g_autoptr(GArray) all = scan_descriptions(s, img, &groups);
    GString *out = g_string_new(NULL);
    for (int g = 0; g < groups; g++) {
        g_string_append_printf(out, "%s[", out->len ? " " : "");
        char lock = '-';
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            if (x->group != g)
                continue;
            g_autofree char *who = pid_text(s, x->pid);
            g_string_append_printf(out, "%s:%d ", who, x->fd);
            lock = x->lock;
        }
        g_string_append_printf(out, "lock %c]", lock);
    }
    if (!out->len)
        g_string_append(out, "none open");
    return g_string_free(out, FALSE);
}

/* vmleased keeps one fd per lease: two of one description mean two leases
 * on one description, so letting go of either unlocks the other. The
 * holders with that description open that hold IMG go into KILL. */
/* The description groups of which vmleased has two fds or more. */
static gboolean
any_doubled(Storm *s, GArray *all, int groups)
{
    for (int g = 0; g < groups; g++) {
        int ours = 0;
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            ours += x->group == g && x->pid == s->d->pid;
        }
        if (ours >= 2)
            return TRUE;
    }
    return FALSE;
}

static gboolean
shared_description(Storm *s, int img, const char *known, const char *after, GPtrArray *kill)
{
    int groups;
    g_autoptr(GArray) all = NULL;
    /* A reply's fds are dups, closed just after the send: that one may
     * still be open when its holder has passed the answer on. Only a
     * second fd that stays is a second lease. */
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt)
            g_usleep(25000);
        g_clear_pointer(&all, g_array_unref);
        all = scan_descriptions(s, img, &groups);
        if (!any_doubled(s, all, groups))
            return FALSE;
    }
    gboolean found = FALSE;
    for (int g = 0; g < groups; g++) {
        int ours = 0;
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            ours += x->group == g && x->pid == s->d->pid;
        }
        if (ours < 2)
            continue;
        found = TRUE;
        g_autoptr(GString) who = g_string_new(NULL);
        Holder *first = NULL;
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            if (x->group != g)
                continue;
            g_autofree char *name = pid_text(s, x->pid);
            g_string_append_printf(who, "%s%s:%d", who->len ? " " : "", name, x->fd);
            /* Every holder on it goes: killing one alone would unlock the
             * lease of another. */
            Holder *h = holder_of_pid(s, x->pid);
            if (h && !h->dead && kill && !g_ptr_array_find(kill, h, NULL)) {
                g_ptr_array_add(kill, h);
                first = first ? first : h;
            }
        }
        g_autofree char *descs = descriptions_text(s, img);
        violation(s, "two leases on one description", known, first, img,
                  "%s: after %s, vmleased has %d fds of one description of the lock file, "
                  "open in [%s]; all descriptions: %s", img_name(img), after, ours, who->str, descs);
    }
    return found;
}

static void drop_pending(Holder *h);

static Holder *stray_dropped(Storm *s, int img, Holder **other);

/* H's lease lost its lock while OTHER, a holder holding nothing on IMG,
 * had its description open too (over fork()): which way? One of them
 * asked for IMG with holder_fds since the last check: H took OTHER's
 * description (then OTHER let go of it), or OTHER took H's and let go
 * again (the rollback of an acquire that failed on another image
 * unlocks the description it borrowed): that cause. Else a restart or
 * re-exec since the last check dropped it as OTHER's stray; else no
 * known cause. */
static const char *
unlock_cause(Storm *s, const Holder *h, const Holder *other, int img)
{
    if (!other)
        return NULL;
    guint now = s->event + 1;
    if (other->holder_fds_at[img] == now)
        return "holder-fds-description";
    if (s->event_desc && !g_str_has_prefix(s->event_desc, "checkpoint"))
        return "stray-inherited";
    if (h && h->holder_fds_at[img] == now)
        return "holder-fds-description";
    return NULL;
}

/* H was just granted WANT: nobody else alive may hold a conflicting lease.
 * Conflicts on images of SHARED (found on one description with another
 * lease) are of that known cause. Both sides go into KILL. */
static void
check_grant(Storm *s, Holder *h, const Pending *p, guint shared, GPtrArray *kill)
{
    for (int img = 0; img < N_IMAGES; img++) {
        if (!p->want[img])
            continue;
        for (guint j = 0; j < s->holders->len; j++) {
            Holder *o = s->holders->pdata[j];
            if (o == h)
                continue;
            int m = certain_mode(o, img);
            if (!conflicts(p->want[img], m))
                continue;
            g_autofree char *hn = hname(h), *on = hname(o);
            g_autofree char *descs = descriptions_text(s, img);
            Holder *g = NULL;
            const char *known = shared & (1u << img) ? "holder-fds-description"
                              : stray_dropped(s, img, &g) == o ? unlock_cause(s, o, g, img) : NULL;
            violation(s, "conflicting grant", known, h, img,
                      "%s was granted %s %s (%s) while %s holds it %s%s; descriptions: %s",
                      hn, img_name(img), mode_names[p->want[img]], p->desc, on, mode_names[m],
                      g ? " (its lease's description, open in another holder too over fork() "
                          "that holds nothing there, is unlocked)" : "", descs);
            /* Neither can be trusted any more: both go, so the storm goes
             * on from a state that is sane. */
            if (!g_ptr_array_find(kill, o, NULL))
                g_ptr_array_add(kill, o);
            if (!g_ptr_array_find(kill, h, NULL))
                g_ptr_array_add(kill, h);
        }
    }
}

static void
kill_all(Storm *s, GPtrArray *kill, const char *why)
{
    for (guint i = 0; i < kill->len; i++)
        kill_holder(s, kill->pdata[i], why);
    g_ptr_array_set_size(kill, 0);
}

/* A grant just answered: its descriptions and its conflicts. */
static void
grant_checks(Storm *s, Holder *h, const Pending *p)
{
    g_autoptr(GPtrArray) kill = g_ptr_array_new();
    guint shared = 0;
    for (int img = 0; p->holder_fds && img < N_IMAGES; img++) {
        if (p->want[img] && shared_description(s, img, "holder-fds-description", p->desc, kill))
            shared |= 1u << img;
    }
    check_grant(s, h, p, shared, kill);
    kill_all(s, kill, "(it shares a description with another lease, or has a conflicting grant)");
}

/* An id handed out again after a restart of vmleased: its next id came
 * from the state file, up to 200 ms old, and from the records of holders
 * still alive (lockd/lease-table.c vml_lease_table_restore). */
static const char *
known_reuse(Storm *s, const Holder *old)
{
    return old->dead && s->n_kill > old->kills_at_register ? "id-after-restart" : NULL;
}

static void
remember_id(Storm *s, Holder *h)
{
    Holder *old = g_hash_table_lookup(s->ids, &h->id);
    if (old && old != h) {
        g_autofree char *hn = hname(h), *on = hname(old);
        violation(s, "holder id reused", known_reuse(s, old), h, -1,
                  "%s was given holder id %" G_GINT64_FORMAT ", given before to %s (%s)",
                  hn, h->id, on, old->dead ? "dead now" : "alive");
    }
    if (!old) {
        gint64 *k = g_new(gint64, 1);
        *k = h->id;
        g_hash_table_insert(s->ids, k, h);
    }
}

static void start_handover(Storm *s, Pending *p);

static void
handle_answer(Storm *s, Holder *h, JsonObject *a)
{
    Pending *p = g_steal_pointer(&h->pending);
    const char *status = json_object_get_string_member_with_default(a, "status", "");
    const char *err = json_object_get_string_member_with_default(a, "error", "");
    JsonObject *reply = json_object_has_member(a, "reply")
        ? json_object_get_object_member(a, "reply") : NULL;
    g_autofree char *hn = hname(h);

    if (h->dead) {
        pending_free(p);
        return;
    }
    if (p->op == OP_FORK) {
        pid_t pid = json_object_get_int_member_with_default(a, "pid", -1);
        g_autofree char *what = g_strdup_printf("pid %d", (int)pid);
        log_append(s, p->log_index, what);
        if (pid <= 0) {
            violation(s, "test", NULL, h, -1, "%s could not fork", hn);
        } else if (p->keeper) {
            Keeper *k = g_new0(Keeper, 1);
            k->pid = pid;
            k->origin = h;
            g_ptr_array_add(s->keepers, k);
        } else {
            p->child->pid = pid;
        }
        pending_free(p);
        return;
    }
    if (g_str_equal(status, "ambiguous")) {
        s->n_ambiguous++;
        log_append(s, p->log_index, "no answer (ambiguous)");
        if (!s->in_event)
            violation(s, "request dropped", NULL, h, -1,
                      "%s: %s got no answer while nothing happened to vmleased: %s", hn,
                      p->desc, json_object_get_string_member_with_default(a, "message", ""));
        h->unresolved = p;
        return;
    }
    if (g_str_equal(status, "unsent")) {
        s->n_unsent++;
        log_append(s, p->log_index, "not sent (vmleased down)");
        pending_free(p);
        return;
    }
    if (g_str_equal(status, "error")) {
        const char *msg = json_object_get_string_member_with_default(a, "message", "");
        const char *in_use = strstr(msg, "in use by ");
        g_autofree char *what = in_use ? g_strdup_printf("%s (%s)", err, in_use)
                                       : g_strdup_printf("%s", err);
        log_append(s, p->log_index, what);
        gboolean expected = p->op == OP_ACQUIRE && g_str_equal(err, "io.vmlease.Conflict");
        if (expected) {
            s->n_conflicts++;
        } else {
            g_autofree char *held = modes_text(h->mode);
            violation(s, "unexpected error", NULL, h, -1, "%s: %s failed with %s: %s (it holds %s)",
                      hn, p->desc, err, msg, held);
        }
        pending_free(p);
        return;
    }

    /* ok */
    switch (p->op) {
    case OP_REGISTER:
        h->id = json_object_get_int_member_with_default(reply, "holder", 0);
        h->registered = TRUE;
        h->mailbox_ok = p->mailbox;
        h->kills_at_register = s->n_kill;
        h->mailbox_ino = json_object_get_int_member_with_default(a, "mailbox_ino", 0);
        remember_id(s, h);
        {
            g_autofree char *what = g_strdup_printf("holder %" G_GINT64_FORMAT, h->id);
            log_append(s, p->log_index, what);
        }
        break;
    case OP_ACQUIRE: {
        s->n_granted++;
        int got[N_IMAGES];
        leases_modes(s, json_object_get_array_member(reply, "leases"), got);
        log_append(s, p->log_index, "granted");
        for (int i = 0; i < N_IMAGES; i++) {
            if (p->want[i] && got[i] != p->want[i])
                violation(s, "grant", NULL, h, i, "%s: %s was answered with %s %s", hn, p->desc,
                          img_name(i), mode_names[got[i]]);
        }
        gint64 n_fds = json_object_get_int_member_with_default(a, "n_fds", 0);
        int named = 0;
        for (int i = 0; i < N_IMAGES; i++)
            named += p->want[i] != 0;
        if (p->fds && n_fds != named)
            violation(s, "grant", NULL, h, -1, "%s: %s came with %d fds for %d resources", hn,
                      p->desc, (int)n_fds, named);
        for (int i = 0; i < N_IMAGES; i++) {
            if (!p->want[i])
                continue;
            h->mode[i] = p->want[i];
            h->fd_backed[i] = h->fd_backed[i] || h->mailbox_ok || (p->fds && n_fds == named);
        }
        grant_checks(s, h, p);
        break;
    }
    case OP_RELEASE: {
        gint64 n = json_object_get_int_member_with_default(reply, "released", -1);
        int named = 0;
        for (int i = 0; i < N_IMAGES; i++)
            named += p->want[i] != 0;
        g_autofree char *what = g_strdup_printf("released %d", (int)n);
        log_append(s, p->log_index, what);
        if (n != named) {
            g_autofree char *held = modes_text(h->mode);
            violation(s, "release", NULL, h, -1, "%s: %s released %d, not %d (it holds %s)", hn,
                      p->desc, (int)n, named, held);
        }
        for (int i = 0; i < N_IMAGES; i++) {
            if (!p->want[i])
                continue;
            h->mode[i] = M_NONE;
            h->fd_backed[i] = FALSE;
            h->released_at[i] = s->event;
        }
        if (p->then)
            start_handover(s, p);
        break;
    }
    case OP_INQUIRE: {
        int got[N_IMAGES];
        leases_modes(s, json_object_get_array_member(reply, "leases"), got);
        log_append(s, p->log_index, "answered");
        if (memcmp(got, h->mode, sizeof(got)) != 0) {
            g_autofree char *exp = modes_text(h->mode), *seen = modes_text(got);
            violation(s, "inquire", NULL, h, -1, "%s: Inquire says %s, it was granted %s", hn, seen, exp);
        }
        break;
    }
    case OP_FORK:
        break;
    }
    pending_free(p);
}

/* Read every answer there is, waiting up to TIMEOUT_MS for the first. */
static guint
pump(Storm *s, int timeout_ms)
{
    g_autofree struct pollfd *pfd = g_new0(struct pollfd, s->holders->len);
    g_autofree Holder **who = g_new0(Holder *, s->holders->len);
    guint n = 0, done = 0;
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (!h->pending || h->chan < 0)
            continue;
        pfd[n].fd = h->chan;
        pfd[n].events = POLLIN;
        who[n++] = h;
    }
    if (!n)
        return 0;
    int r = poll(pfd, n, timeout_ms);
    if (r <= 0)
        return 0;
    for (guint i = 0; i < n; i++) {
        Holder *h = who[i];
        if (!pfd[i].revents || !h->pending)
            continue;
        g_autoptr(JsonObject) a = chan_recv(h->chan, NULL);
        if (!a) {
            /* Its process is gone. */
            if (!h->dead) {
                g_autofree char *hn = hname(h);
                violation(s, "test", NULL, h, -1, "%s died by itself", hn);
                h->dead = TRUE;
            }
            drop_pending(h);
            continue;
        }
        handle_answer(s, h, a);
        done++;
    }
    return done;
}

static void
quiesce(Storm *s, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    while (in_flight(s) && g_get_monotonic_time() < deadline)
        pump(s, 100);
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (!h->pending)
            continue;
        g_autofree char *hn = hname(h);
        violation(s, "stuck", NULL, h, -1, "%s: no answer to %s within %d s", hn, h->pending->desc,
                  timeout_ms / 1000);
        kill_holder(s, h, "stuck");
    }
}

/* ---- holders dying ---------------------------------------------------------- */

/* Forget H's request: a holder it was forking will never be known. */
static void
drop_pending(Holder *h)
{
    Pending *p = g_steal_pointer(&h->pending);
    if (p && p->child && p->child->pid <= 0) {
        p->child->dead = TRUE;
        if (p->child->chan >= 0)
            close(p->child->chan);
        p->child->chan = -1;
    }
    pending_free(p);
}

static void
kill_holder(Storm *s, Holder *h, const char *why)
{
    if (h->dead)
        return;
    h->dead = TRUE;
    h->died_while_down = h->died_unseen = s->daemon_down;
    h->died_event = s->checked ? s->event + 1 : s->event;
    drop_pending(h);
    pending_free(g_steal_pointer(&h->unresolved));
    g_autofree char *hn = hname(h);
    g_autofree char *held = modes_text(h->mode);
    log_line(s, h, held_mask(h->mode), "%s killed%s%s (held: %s)", hn, why ? " " : "",
             why ? why : "", held);
    if (h->pid > 0)
        kill_and_reap(h->pid);
    if (h->chan >= 0)
        close(h->chan);
    h->chan = -1;
}

static void
holder_exit(Storm *s, Holder *h)
{
    g_autoptr(JsonObject) cmd = json_object_new();
    json_object_set_string_member(cmd, "op", "exit");
    chan_send(h->chan, cmd, -1);
    g_autofree char *hn = hname(h);
    g_autofree char *held = modes_text(h->mode);
    log_line(s, h, held_mask(h->mode), "%s exits (held: %s)", hn, held);
    h->dead = TRUE;
    h->died_while_down = h->died_unseen = s->daemon_down;
    h->died_event = s->checked ? s->event + 1 : s->event;
    reap(h->pid);
    close(h->chan);
    h->chan = -1;
}

static void
kill_keeper(Storm *s, Keeper *k)
{
    if (k->dead)
        return;
    k->dead = TRUE;
    log_line(s, k->origin, 0, "keeper pid %d (forked from h%d) killed", (int)k->pid,
             k->origin->slot);
    kill_and_reap(k->pid);
}

/* ---- choosing what to do ------------------------------------------------------ */

static guint
n_live(Storm *s)
{
    guint n = 0;
    for (guint i = 0; i < s->holders->len; i++)
        n += !((Holder *)s->holders->pdata[i])->dead;
    return n;
}

static gboolean
idle(const Holder *h)
{
    return !h->dead && !h->pending && !h->unresolved && h->pid > 0;
}

static Holder *
pick_idle(Storm *s, Holder *not)
{
    g_autoptr(GPtrArray) c = g_ptr_array_new();
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (idle(h) && h->registered && h != not)
            g_ptr_array_add(c, h);
    }
    return c->len ? c->pdata[rnd(s, c->len)] : NULL;
}

static int
pick_held(Storm *s, const Holder *h, int mode)
{
    int c[N_IMAGES], n = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        if (mode ? h->mode[i] == mode : h->mode[i] != M_NONE)
            c[n++] = i;
    }
    return n ? c[rnd(s, n)] : -1;
}

static void
random_acquire(Storm *s, Holder *h)
{
    int want[N_IMAGES] = { 0 };
    int r = rnd(s, 10), k = r < 6 ? 1 : r < 9 ? 2 : 3;
    for (int j = 0; j < k; j++) {
        int img = rnd(s, N_IMAGES);
        /* A forked holder often asks for what the holder it came from has. */
        if (h->origin && !h->origin->dead && chance(s, 40)) {
            int o = pick_held(s, h->origin, 0);
            img = o >= 0 ? o : img;
        }
        want[img] = chance(s, 35) ? M_EXCL : M_SHARED;
    }
    op_acquire(s, h, want);
}

static int
n_held(const Holder *h)
{
    int n = 0;
    for (int i = 0; i < N_IMAGES; i++)
        n += h->mode[i] != M_NONE;
    return n;
}

static void
start_handover(Storm *s, Pending *p)
{
    Holder *b = p->then;
    if (!idle(b) || !b->registered) {
        log_line(s, b, 1u << p->then_image, "hand-over of %s to h%d dropped: h%d is busy",
                 img_name(p->then_image),
                 b->slot, b->slot);
        return;
    }
    int want[N_IMAGES] = { 0 };
    want[p->then_image] = p->then_mode;
    op_acquire(s, b, want);
    log_append(s, b->pending ? b->pending->log_index : s->log->len, "(hand-over)");
}

static void
random_op(Storm *s)
{
    /* Holders still to register come first. */
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (idle(h) && !h->registered) {
            op_register(s, h);
            return;
        }
    }
    Holder *h = pick_idle(s, NULL);
    if (!h)
        return;
    int r = rnd(s, 100);
    guint live = n_live(s);
    /* Who holds much lets go more often. */
    if (n_held(h) >= 3 && chance(s, 40))
        r = 44 + rnd(s, 24);
    if (r < 26) {
        random_acquire(s, h);
    } else if (r < 36) {
        int img = pick_held(s, h, M_SHARED);
        if (img < 0) {
            random_acquire(s, h);
            return;
        }
        int want[N_IMAGES] = { 0 };
        want[img] = M_EXCL;
        op_acquire(s, h, want);
    } else if (r < 44) {
        int img = pick_held(s, h, M_EXCL);
        if (img < 0) {
            random_acquire(s, h);
            return;
        }
        int want[N_IMAGES] = { 0 };
        want[img] = M_SHARED;
        op_acquire(s, h, want);
    } else if (r < 58) {
        int img = pick_held(s, h, 0);
        if (img < 0) {
            random_acquire(s, h);
            return;
        }
        int named[N_IMAGES] = { 0 };
        named[img] = 1;
        int other = pick_held(s, h, 0);
        if (other >= 0 && chance(s, 30))
            named[other] = 1;
        send_release(s, h, op_release(h, named, chance(s, 12)));
    } else if (r < 68) {
        /* Hand-over: H lets go of X, then B takes it. */
        int img = pick_held(s, h, 0);
        Holder *b = pick_idle(s, h);
        if (img < 0 || !b) {
            random_acquire(s, h);
            return;
        }
        int named[N_IMAGES] = { 0 };
        named[img] = 1;
        Pending *p = op_release(h, named, FALSE);
        p->then = b;
        p->then_image = img;
        p->then_mode = chance(s, 60) ? M_EXCL : M_SHARED;
        char *d = g_strdup_printf("%s (hand-over to h%d, %s)", p->desc, b->slot,
                                  mode_names[p->then_mode]);
        g_free(p->desc);
        p->desc = d;
        send_release(s, h, p);
    } else if (r < 74) {
        op_inquire(s, h);
    } else if (r < 80) {
        if (h->kind == K_PLAIN || live >= MAX_HOLDERS) {
            random_acquire(s, h);
            return;
        }
        op_fork(s, h, chance(s, 55));
    } else if (r < 84) {
        g_autoptr(GPtrArray) c = g_ptr_array_new();
        for (guint i = 0; i < s->keepers->len; i++) {
            Keeper *k = s->keepers->pdata[i];
            if (!k->dead)
                g_ptr_array_add(c, k);
        }
        if (!c->len) {
            random_acquire(s, h);
            return;
        }
        kill_keeper(s, c->pdata[rnd(s, c->len)]);
    } else if (r < 90) {
        if (live <= MIN_HOLDERS) {
            random_acquire(s, h);
            return;
        }
        if (chance(s, 50))
            holder_exit(s, h);
        else
            kill_holder(s, h, NULL);
    } else {
        if (live >= MAX_HOLDERS) {
            random_acquire(s, h);
            return;
        }
        static const Kind kinds[] = { K_PLAIN, K_FDS, K_FDS, K_MAILBOX, K_MAILBOX };
        Holder *n = spawn_holder(s, kinds[rnd(s, G_N_ELEMENTS(kinds))]);
        op_register(s, n);
    }
}

/* ---- talking to the daemon as the test ---------------------------------------- */

static JsonObject *
daemon_call(gboolean admin, const char *method, JsonObject *params, GError **error)
{
    for (int i = 0; i < 500; i++) {
        g_autoptr(VmlClient) c = admin ? vml_client_connect_admin(NULL)
                                       : vml_client_connect_lease(NULL);
        if (c) {
            vml_client_set_timeout(c, 20000);
            return vml_client_call(c, method, params, NULL, 0, NULL, NULL, error);
        }
        g_usleep(10000);
    }
    g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "vmleased takes no connection");
    return NULL;
}

static gint64
status_int(Storm *s, const char *member)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = daemon_call(TRUE, "io.vmlease.Admin.Status", NULL, &error);
    if (!r) {
        violation(s, "daemon", NULL, NULL, -1, "Admin.Status: %s", error->message);
        return -1;
    }
    return json_object_get_int_member_with_default(r, member, -1);
}

/* H's holder record in the lockspace: "absent", "torn" (it does not
 * parse: a shorter record written over a longer one, and the daemon killed
 * before the ftruncate that ends it), or "whole". */
static const char *
record_state(Storm *s, const Holder *h, char **tail)
{
    g_autofree char *dir = g_build_filename(s->d->root, "lockspace", NULL);
    g_autofree char *needle = g_strdup_printf("\"pid\":%d,", (int)h->pid);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *ent;
    while (d && (ent = g_dir_read_name(d))) {
        if (!g_str_has_suffix(ent, ".holder"))
            continue;
        g_autofree char *path = g_build_filename(dir, ent, NULL);
        g_autofree char *text = NULL;
        gsize len;
        if (!g_file_get_contents(path, &text, &len, NULL) || !strstr(text, needle))
            continue;
        g_autoptr(JsonParser) p = json_parser_new();
        if (json_parser_load_from_data(p, text, len, NULL))
            return "whole";
        *tail = g_strdup(len > 40 ? text + len - 40 : text);
        return "torn";
    }
    return "absent";
}

/* vmleased does not know live holder H any more (WHAT says how that
 * showed): say why if the lockspace tells, and let H go, so that what it
 * held is free again for the rest of the storm. */
static void
holder_lost(Storm *s, Holder *h, const char *what)
{
    g_autofree char *hn = hname(h), *held = modes_text(h->mode), *tail = NULL;
    const char *rec = record_state(s, h, &tail);
    g_autofree char *why = tail ? g_strdup_printf("; its record is torn, ending in '%s'", tail)
                                : g_strdup_printf("; its record is %s", rec);
    violation(s, "holder lost", g_str_equal(rec, "torn") ? "torn-record" : NULL, h, -1,
              "%s: %s (it holds %s)%s", hn, what, held, why);
    kill_holder(s, h, "(vmleased lost it)");
}

/* Inquire for H: a mode per image; FALSE (with a violation, and H killed)
 * if vmleased does not know H. */
static gboolean
inquire(Storm *s, Holder *h, int *modes)
{
    g_autoptr(JsonObject) p = json_object_new();
    json_object_set_int_member(p, "holder", h->id);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = daemon_call(FALSE, "io.vmlease.Lease.Inquire", p, &error);
    if (!r) {
        g_autofree char *what = g_strdup_printf("Inquire fails: %s", error->message);
        holder_lost(s, h, what);
        return FALSE;
    }
    leases_modes(s, json_object_get_array_member(r, "leases"), modes);
    return TRUE;
}

typedef struct {
    gint64 id;
    pid_t pid;
    char *name;
    int mode[N_IMAGES];
} Listed;

static void
listed_free(Listed *l)
{
    g_free(l->name);
    g_free(l);
}

/* Admin.List: pid -> Listed. */
static GHashTable *
list_holders(Storm *s)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) r = daemon_call(TRUE, "io.vmlease.Admin.List", NULL, &error);
    if (!r) {
        violation(s, "daemon", NULL, NULL, -1, "Admin.List: %s", error->message);
        return NULL;
    }
    GHashTable *map = g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)listed_free);
    JsonArray *a = json_object_get_array_member(r, "holders");
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        Listed *l = g_new0(Listed, 1);
        l->id = json_object_get_int_member(o, "holder");
        l->pid = json_object_get_int_member(o, "pid");
        l->name = g_strdup(json_object_get_string_member_with_default(o, "name", ""));
        leases_modes(s, json_object_get_array_member(o, "leases"), l->mode);
        g_hash_table_insert(map, GINT_TO_POINTER(l->pid), l);
    }
    return map;
}

/* The lock type a newcomer runs into on byte OFF of image IMG's lock file. */
static int
kernel_lock(Storm *s, int img, off_t off)
{
    int fd = open(s->lock_files[img], O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return F_UNLCK;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };
    int r = fcntl(fd, F_OFD_GETLK, &fl);
    close(fd);
    g_assert_cmpint(r, ==, 0);
    return fl.l_type;
}

static const char *
lock_name(int type)
{
    return type == F_WRLCK ? "write-locked" : type == F_RDLCK ? "read-locked" : "unlocked";
}

/* ---- resolving lost replies ------------------------------------------------------ */

static void
resolve(Storm *s)
{
    g_autoptr(GHashTable) listed = NULL;
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        Pending *p = h->unresolved;
        if (!p || h->dead)
            continue;
        g_autofree char *hn = hname(h);
        if (p->op == OP_REGISTER) {
            if (!listed)
                listed = list_holders(s);
            Listed *l = listed ? g_hash_table_lookup(listed, GINT_TO_POINTER(h->pid)) : NULL;
            if (l) {
                h->id = l->id;
                h->registered = TRUE;
                h->kills_at_register = s->n_kill - (s->event_desc && g_str_has_prefix(s->event_desc, "SIGKILL"));
                remember_id(s, h);
                s->n_amb_done++;
                g_autofree char *what = g_strdup_printf("resolved: registered as holder %"
                                                        G_GINT64_FORMAT, h->id);
                log_append(s, p->log_index, what);
            } else {
                s->n_amb_not++;
                log_append(s, p->log_index, "resolved: not registered");
            }
            pending_free(g_steal_pointer(&h->unresolved));
            continue;
        }
        int seen[N_IMAGES], after[N_IMAGES];
        if (!inquire(s, h, seen)) {
            pending_free(g_steal_pointer(&h->unresolved));
            continue;
        }
        for (int img = 0; img < N_IMAGES; img++)
            after[img] = mode_after(h, p, img);
        gboolean was_before = memcmp(seen, h->mode, sizeof(seen)) == 0;
        gboolean was_after = memcmp(seen, after, sizeof(seen)) == 0;
        if (was_after && !was_before) {
            s->n_amb_done++;
            log_append(s, p->log_index, "resolved: done");
            for (int img = 0; img < N_IMAGES; img++) {
                if (p->op == OP_RELEASE && p->want[img]) {
                    h->released_at[img] = s->event;
                    h->fd_backed[img] = FALSE;
                } else if (p->op == OP_ACQUIRE && p->want[img] && !h->mode[img]) {
                    /* It never got the fd: a mailbox holder has it all the same. */
                    h->fd_backed[img] = h->mailbox_ok;
                }
                h->mode[img] = after[img];
            }
            if (p->op == OP_ACQUIRE)
                grant_checks(s, h, p);
        } else if (was_before) {
            s->n_amb_not++;
            log_append(s, p->log_index, was_after ? "resolved: no change either way"
                                                  : "resolved: not done");
        } else {
            g_autofree char *b = modes_text(h->mode), *a = modes_text(after),
                            *x = modes_text(seen);
            violation(s, "lost reply", NULL, h, -1,
                      "%s: after %s without an answer it holds %s: neither before (%s) nor "
                      "after (%s)", hn, p->desc, x, b, a);
            /* Go on from what the daemon says. */
            memcpy(h->mode, seen, sizeof(seen));
            for (int img = 0; img < N_IMAGES; img++)
                h->fd_backed[img] = h->fd_backed[img] && seen[img];
        }
        pending_free(g_steal_pointer(&h->unresolved));
    }
}

/* ---- the invariant ------------------------------------------------------------ */

/* A process forked from dead holder D (a keeper or a holder) still lives. */
static gboolean
has_live_offspring(Storm *s, const Holder *d)
{
    for (guint i = 0; i < s->keepers->len; i++) {
        const Keeper *k = s->keepers->pdata[i];
        if (k->dead)
            continue;
        for (const Holder *x = k->origin; x; x = x->origin)
            if (x == d)
                return TRUE;
    }
    for (guint i = 0; i < s->holders->len; i++) {
        const Holder *h = s->holders->pdata[i];
        if (h->dead || h->pid <= 0)
            continue;
        for (const Holder *x = h->origin; x; x = x->origin)
            if (x == d)
                return TRUE;
    }
    return FALSE;
}

/* PID is a live process forked (maybe over generations) from holder D. */
static gboolean
is_offspring(Storm *s, pid_t pid, const Holder *d)
{
    const Holder *from = NULL;
    Keeper *k = keeper_of_pid(s, pid);
    Holder *h = k ? NULL : holder_of_pid(s, pid);
    if (k)
        from = k->origin;
    else if (h && !h->dead)
        from = h->origin;
    for (const Holder *x = from; x; x = x->origin)
        if (x == d)
            return TRUE;
    return FALSE;
}

static gboolean
has_socket_open(pid_t pid, guint64 ino)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int)pid);
    g_autofree char *want = g_strdup_printf("socket:[%" G_GUINT64_FORMAT "]", ino);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *ent;
    while (d && (ent = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(dir, ent, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        if (g_strcmp0(target, want) == 0)
            return TRUE;
    }
    return FALSE;
}

/* IMG is locked with no owner because holder D died while vmleased could not
 * see it (down, or between its last look and a SIGKILL or re-exec) and a
 * process D forked keeps D's locked description: every locked description
 * of IMG is open only in D's offspring, or (a mailbox holder) none is in
 * any fd table and an offspring keeps D's mailbox socket. */
static Holder *
orphaning_holder(Storm *s, int img)
{
    int groups;
    g_autoptr(GArray) all = scan_descriptions(s, img, &groups);
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *d = s->holders->pdata[i];
        if (!d->dead || !d->died_unseen || !d->mode[img] || d->kind == K_PLAIN)
            continue;
        gboolean any_locked = FALSE, only_offspring = TRUE;
        for (guint j = 0; j < all->len; j++) {
            FdRef *x = &g_array_index(all, FdRef, j);
            if (x->lock == '-')
                continue;
            any_locked = TRUE;
            only_offspring = only_offspring && is_offspring(s, x->pid, d);
        }
        if (any_locked && only_offspring)
            return d;
        if (any_locked || !d->mailbox_ino)
            continue;
        for (guint j = 0; j < s->keepers->len; j++) {
            Keeper *k = s->keepers->pdata[j];
            if (!k->dead && is_offspring(s, k->pid, d) && has_socket_open(k->pid, d->mailbox_ino))
                return d;
        }
        for (guint j = 0; j < s->holders->len; j++) {
            Holder *h = s->holders->pdata[j];
            if (!h->dead && h->pid > 0 && is_offspring(s, h->pid, d) &&
                has_socket_open(h->pid, d->mailbox_ino))
                return d;
        }
    }
    return NULL;
}

/* Holder H's lease on IMG has lost its lock, and the description of that
 * lease (vmleased's fd is on it) is open in G, another live holder that
 * does not hold IMG (a description is shared between processes only over
 * fork()): a restart or re-exec took it for a stray lock of G's and
 * unlocked it. Returns H, and G in *OTHER. */
static Holder *
stray_dropped(Storm *s, int img, Holder **other)
{
    int groups;
    g_autoptr(GArray) all = scan_descriptions(s, img, &groups);
    for (int g = 0; g < groups; g++) {
        gboolean ours = FALSE, locked = FALSE;
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            if (x->group != g)
                continue;
            ours = ours || x->pid == s->d->pid;
            locked = locked || x->lock != '-';
        }
        if (!ours || locked)
            continue;
        for (guint i = 0; i < all->len; i++) {
            FdRef *x = &g_array_index(all, FdRef, i);
            Holder *h = x->group == g ? holder_of_pid(s, x->pid) : NULL;
            if (!h || h->dead || !h->registered || !h->mode[img])
                continue;
            for (guint j = 0; j < all->len; j++) {
                FdRef *y = &g_array_index(all, FdRef, j);
                Holder *o = y->group == g ? holder_of_pid(s, y->pid) : NULL;
                if (o && o != h && !o->dead && o->registered &&
                    (!o->mode[img] || !o->event_mode[img])) {
                    *other = o;
                    return h;
                }
            }
        }
    }
    return NULL;
}

/* Another live holder than H that holds nothing on IMG has open one of
 * H's unlocked descriptions of IMG's lock file (shared over fork()). */
static Holder *
unlocked_sharer(Storm *s, GArray *all, int groups, const Holder *h, int img)
{
    for (int g = 0; g < groups; g++) {
        gboolean mine = FALSE, locked = FALSE;
        Holder *other = NULL;
        for (guint j = 0; j < all->len; j++) {
            FdRef *x = &g_array_index(all, FdRef, j);
            if (x->group != g)
                continue;
            mine = mine || x->pid == h->pid;
            locked = locked || x->lock != '-';
            Holder *o = holder_of_pid(s, x->pid);
            if (o && o != h && !o->dead && o->registered && (!o->mode[img] || !o->event_mode[img]))
                other = o;
        }
        if (mine && !locked && other)
            return other;
    }
    return NULL;
}

/* Each lease a holder took with fds=true is locked through a description
 * the holder and vmleased share, in its mode: a lock that went from under
 * it is seen here even while others' locks on the image hide it from a
 * probe, and so is a lease that vmleased alone carries now (a SIGKILL
 * would release it). A holder whose lease is so goes into KILL. */
static void
check_lease_descriptions(Storm *s, GPtrArray *kill)
{
    for (int img = 0; img < N_IMAGES; img++) {
        int groups = 0;
        g_autoptr(GArray) all = NULL;
        for (guint i = 0; i < s->holders->len; i++) {
            Holder *h = s->holders->pdata[i];
            if (h->dead || !h->registered || !h->mode[img] || !h->fd_backed[img] ||
                h->kind == K_MAILBOX || h->mailbox_ok)
                continue;
            if (!all)
                all = scan_descriptions(s, img, &groups);
            char lock = 0;
            for (int g = 0; g < groups && lock != (h->mode[img] == M_EXCL ? 'W' : 'R'); g++) {
                gboolean ours = FALSE, mine = FALSE;
                char l = '-';
                for (guint j = 0; j < all->len; j++) {
                    FdRef *x = &g_array_index(all, FdRef, j);
                    if (x->group != g)
                        continue;
                    ours = ours || x->pid == s->d->pid;
                    mine = mine || x->pid == h->pid;
                    l = x->lock;
                }
                if (ours && mine)
                    lock = l;
            }
            if (lock == (h->mode[img] == M_EXCL ? 'W' : 'R'))
                continue;
            Holder *other = unlocked_sharer(s, all, groups, h, img);
            g_autofree char *hn = hname(h), *descs = descriptions_text(s, img);
            g_autofree char *why = other
                ? g_strdup_printf(" (h%d, which shares one of its descriptions over fork(), "
                                  "holds nothing there)", other->slot)
                : g_strdup("");
            violation(s, "lease without its lock", unlock_cause(s, h, other, img), h, img,
                      "%s, %s %s: %s%s; descriptions: %s", hn, img_name(img),
                      mode_names[h->mode[img]],
                      !lock ? "vmleased alone carries it now, the holder's fds do not"
                      : lock == '-' ? "the description vmleased and the holder share locks nothing"
                      : "the description vmleased and the holder share has the wrong lock",
                      why, descs);
            if (!g_ptr_array_find(kill, h, NULL))
                g_ptr_array_add(kill, h);
        }
    }
}

/* Kill what D forked: its descriptions die with them. */
static void
kill_offspring(Storm *s, const Holder *d)
{
    for (guint i = 0; i < s->keepers->len; i++) {
        Keeper *k = s->keepers->pdata[i];
        for (const Holder *x = k->origin; x && !k->dead; x = x->origin) {
            if (x == d)
                kill_keeper(s, k);
        }
    }
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        for (const Holder *x = h->origin; x && !h->dead; x = x->origin) {
            if (x == d)
                kill_holder(s, h, "(forked from a holder that died unseen by vmleased)");
        }
    }
}

/* Wait until vmleased lists no dead holder (it sees exits through pidfds). */
static void
wait_dead_gone(Storm *s)
{
    for (int round = 0; round < 300; round++) {
        g_autoptr(GHashTable) listed = list_holders(s);
        if (!listed)
            return;
        gboolean any = FALSE;
        for (guint i = 0; i < s->holders->len && !any; i++) {
            Holder *h = s->holders->pdata[i];
            any = h->dead && h->pid > 0 && g_hash_table_contains(listed, GINT_TO_POINTER(h->pid));
        }
        if (!any)
            return;
        g_usleep(10000);
    }
}

static void
check(Storm *s)
{
    wait_dead_gone(s);
    /* First: no two leases on one description (a restart adopts what it
     * finds in the holder's fd table). Those found go, before the rest. */
    g_autoptr(GPtrArray) kill = g_ptr_array_new();
    gboolean after_kill = s->event_desc && g_str_has_prefix(s->event_desc, "SIGKILL");
    for (int img = 0; img < N_IMAGES; img++)
        shared_description(s, img, after_kill ? "recovery-description" : NULL,
                           after_kill ? "the restart" : "this event", kill);
    if (kill->len) {
        kill_all(s, kill, "(it shares a description with another lease)");
        wait_dead_gone(s);
    }
    check_lease_descriptions(s, kill);
    if (kill->len) {
        kill_all(s, kill, "(its lease lost its lock)");
        wait_dead_gone(s);
    }
    g_autoptr(GPtrArray) orphaners = g_ptr_array_new();
    g_autoptr(GPtrArray) unlockeds = g_ptr_array_new();
    g_autoptr(GHashTable) listed = list_holders(s);
    if (!listed)
        return;
    gboolean lost = FALSE;
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (h->dead || !h->registered)
            continue;
        g_autofree char *hn = hname(h);
        Listed *l = g_hash_table_lookup(listed, GINT_TO_POINTER(h->pid));
        int seen[N_IMAGES];
        if (!inquire(s, h, seen)) {
            lost = TRUE;
            continue;
        }
        if (!l) {
            holder_lost(s, h, "Inquire answers, but Admin.List does not list it");
            lost = TRUE;
            continue;
        } else if (l->id != h->id) {
            violation(s, "holder id changed", NULL, h, -1, "%s is listed as holder %" G_GINT64_FORMAT,
                      hn, l->id);
        } else if (memcmp(l->mode, seen, sizeof(seen)) != 0) {
            g_autofree char *a = modes_text(l->mode), *b = modes_text(seen);
            violation(s, "list vs inquire", NULL, h, -1, "%s: Admin.List says %s, Inquire %s", hn, a, b);
        }
        for (int img = 0; img < N_IMAGES; img++) {
            if (seen[img] == h->mode[img])
                continue;
            const char *what = !h->mode[img] && h->released_at[img] >= 0
                                   ? "a released lease came back"
                               : !h->mode[img] ? "a lease it was never granted"
                               : !seen[img]    ? "a granted lease is gone"
                                               : "the mode changed";
            g_autofree char *extra = h->released_at[img] >= 0 && !h->mode[img]
                ? g_strdup_printf(" (released at event %d)", h->released_at[img])
                : g_strdup("");
            violation(s, "holder leases", NULL, h, img, "%s, %s: %s: granted %s, Inquire says %s%s", hn,
                      img_name(img), what, mode_names[h->mode[img]], mode_names[seen[img]], extra);
        }
    }
    if (lost)
        wait_dead_gone(s);
    int expect[N_IMAGES] = { 0 };     /* strongest mode held */
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        for (int img = 0; img < N_IMAGES && !h->dead && h->registered; img++)
            expect[img] = MAX(expect[img], h->mode[img]);
    }
    /* Nobody else is listed: dead holders are gone, with their leases. */
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, listed);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Listed *l = value;
        Holder *found = NULL;
        for (guint i = 0; i < s->holders->len && !found; i++) {
            Holder *h = s->holders->pdata[i];
            if (h->pid == l->pid)
                found = h;
        }
        if (found && !found->dead && found->registered)
            continue;
        g_autofree char *m = modes_text(l->mode);
        g_autofree char *hn = found ? hname(found) : g_strdup_printf("pid %d", (int)l->pid);
        violation(s, "dead holder listed", NULL, found, -1, "%s (%s) is listed as holder %" G_GINT64_FORMAT
                  " holding %s", hn, found ? (found->dead ? "dead" : "not registered") : "unknown",
                  l->id, m);
    }

    /* Admin.Owners of every image, against the model and the kernel. */
    g_autoptr(JsonObject) op = json_object_new();
    JsonArray *paths = json_array_new();
    for (int img = 0; img < N_IMAGES; img++)
        json_array_add_string_element(paths, s->paths[img]);
    json_object_set_array_member(op, "paths", paths);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonObject) owners = daemon_call(TRUE, "io.vmlease.Admin.Owners", op, &error);
    if (!owners) {
        violation(s, "daemon", NULL, NULL, -1, "Admin.Owners: %s", error->message);
        return;
    }
    JsonArray *res = json_object_get_array_member(owners, "resources");
    for (int img = 0; img < N_IMAGES; img++) {
        JsonArray *oa = NULL;
        for (guint i = 0; res && i < json_array_get_length(res); i++) {
            JsonObject *r = json_array_get_object_element(res, i);
            if (g_strcmp0(json_object_get_string_member_with_default(r, "resource", ""),
                          s->keys[img]) == 0)
                oa = json_object_get_array_member(r, "owners");
        }
        g_autoptr(GString) want = g_string_new(NULL), got = g_string_new(NULL),
                           lockers = g_string_new(NULL);
        guint n_want = 0, n_ok = 0, n_got = 0, n_all = oa ? json_array_get_length(oa) : 0;
        int n_excl = 0, n_shared = 0;
        for (guint i = 0; i < s->holders->len; i++) {
            Holder *h = s->holders->pdata[i];
            if (h->dead || !h->registered || !h->mode[img])
                continue;
            n_want++;
            g_string_append_printf(want, "%sh%d %s", want->len ? ", " : "", h->slot,
                                   mode_names[h->mode[img]]);
            for (guint j = 0; j < n_all; j++) {
                JsonObject *o = json_array_get_object_element(oa, j);
                if (json_object_get_boolean_member_with_default(o, "unregistered", FALSE))
                    continue;
                if (json_object_get_int_member(o, "pid") == h->pid &&
                    parse_mode(json_object_get_string_member(o, "mode")) == h->mode[img])
                    n_ok++;
            }
        }
        for (guint j = 0; j < n_all; j++) {
            JsonObject *o = json_array_get_object_element(oa, j);
            int m = parse_mode(json_object_get_string_member(o, "mode"));
            if (json_object_get_boolean_member_with_default(o, "unregistered", FALSE)) {
                /* A process that keeps a lock and is no holder: named, but
                 * no owner (the kernel check below says so). */
                g_autofree char *pn = pid_text(s, json_object_get_int_member(o, "pid"));
                g_string_append_printf(lockers, "%s%s (%s, unregistered) %s",
                                       lockers->len ? ", " : "", pn,
                                       json_object_get_string_member_with_default(o, "program", "?"),
                                       mode_names[m]);
                continue;
            }
            n_got++;
            n_excl += m == M_EXCL;
            n_shared += m == M_SHARED;
            g_string_append_printf(got, "%s%s (pid %d) %s", got->len ? ", " : "",
                                   json_object_get_string_member_with_default(o, "name", "?"),
                                   (int)json_object_get_int_member(o, "pid"), mode_names[m]);
        }
        if (n_ok != n_want || n_got != n_want)
            violation(s, "owners", NULL, NULL, img, "%s: Owners lists [%s], granted are [%s]", img_name(img),
                      got->len ? got->str : "nobody", want->len ? want->str : "nobody");
        if (n_excl > 1 || (n_excl && n_shared))
            violation(s, "conflicting owners", NULL, NULL, img, "%s: Owners lists [%s]", img_name(img),
                      got->str);

        /* The kernel: both lease bytes as the strongest grant says. */
        int b0 = kernel_lock(s, img, 0), b1 = kernel_lock(s, img, 1);
        int want_lock = expect[img] == M_EXCL ? F_WRLCK : expect[img] == M_SHARED ? F_RDLCK
                                                                                  : F_UNLCK;
        if (b0 == want_lock && b1 == want_lock)
            continue;
        Holder *orphaner = !expect[img] && !n_got ? orphaning_holder(s, img) : NULL;
        Holder *forked = NULL;
        Holder *unlocked = expect[img] && !orphaner ? stray_dropped(s, img, &forked) : NULL;
        const char *what = !expect[img] && !n_got
                               ? (lockers->len ? "a lock that no holder owns" : "a lock without an owner listed")
                         : expect[img] && b0 == F_UNLCK && b1 == F_UNLCK ? "a lease without its lock"
                                                                         : "the wrong lock";
        g_autofree char *on = orphaner ? hname(orphaner) : NULL;
        g_autofree char *why = orphaner
            ? g_strdup_printf(" (%s held it %s and died %s; a process it forked keeps its "
                              "description%s)", on, mode_names[orphaner->mode[img]],
                              orphaner->died_while_down ? "while vmleased was down"
                                                        : "just before the event",
                              orphaner->kind == K_MAILBOX ? " or mailbox" : "")
            : g_strdup("");
        g_autofree char *who = descriptions_text(s, img);
        g_autofree char *named = lockers->len ? g_strdup_printf("; Owners names %s", lockers->str)
                                              : g_strdup("");
        if (unlocked) {
            g_free(why);
            why = g_strdup_printf(" (the description of h%d's lease is open in h%d too, over "
                                  "fork(), which holds nothing there)", unlocked->slot, forked->slot);
        }
        violation(s, "kernel lock", orphaner ? "orphan-after-down" : unlocked ? unlock_cause(s, unlocked, forked, img) : NULL,
                  orphaner ? orphaner : unlocked, img,
                  "%s: %s: byte 0 %s, byte 1 %s; granted are [%s]%s%s; descriptions: %s",
                  img_name(img), what, lock_name(b0), lock_name(b1),
                  want->len ? want->str : "nobody", why, named, who);
        if (orphaner)
            g_ptr_array_add(orphaners, orphaner);
        if (unlocked)
            g_ptr_array_add(unlockeds, unlocked);
    }
    /* What orphaned a lock goes now, once every image was checked, and so
     * does a holder whose lease is no longer locked. */
    for (guint i = 0; i < orphaners->len; i++)
        kill_offspring(s, orphaners->pdata[i]);
    for (guint i = 0; i < unlockeds->len; i++)
        kill_holder(s, unlockeds->pdata[i], "(its lease lost its lock)");
}

/* With vmleased dead, every lease a holder keeps through its own fds or its
 * mailbox is still locked (README: killing vmleased does not release). */
static void
check_while_down(Storm *s)
{
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (h->dead || !h->registered || h->pending || h->unresolved)
            continue;
        for (int img = 0; img < N_IMAGES; img++) {
            if (!h->mode[img] || !h->fd_backed[img])
                continue;
            int b0 = kernel_lock(s, img, 0), b1 = kernel_lock(s, img, 1);
            int want = h->mode[img] == M_EXCL ? F_WRLCK : F_RDLCK;
            if ((b0 == want || (want == F_RDLCK && b0 == F_WRLCK)) &&
                (b1 == want || (want == F_RDLCK && b1 == F_WRLCK)))
                continue;
            g_autofree char *hn = hname(h);
            int groups;
            g_autoptr(GArray) all = scan_descriptions(s, img, &groups);
            Holder *other = unlocked_sharer(s, all, groups, h, img);
            violation(s, "lock lost with vmleased", unlock_cause(s, h, other, img), h, img,
                      "%s, %s %s (kept by its %s): with vmleased killed, byte 0 %s, byte 1 %s", hn,
                      img_name(img), mode_names[h->mode[img]],
                      h->kind == K_MAILBOX ? "mailbox" : "fds", lock_name(b0), lock_name(b1));
        }
    }
}

/* ---- the run ------------------------------------------------------------------- */

static Storm *
storm_new(gboolean control, guint32 seed)
{
    Storm *s = g_new0(Storm, 1);
    s->control = control;
    s->rng = g_rand_new_with_seed(seed);
    s->holders = g_ptr_array_new();
    s->keepers = g_ptr_array_new_with_free_func(g_free);
    s->violations = g_ptr_array_new();
    s->ids = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    s->log = g_ptr_array_new_with_free_func((GDestroyNotify)entry_free);
    g_assert_cmpint(pipe2(s->lifeline, O_CLOEXEC), ==, 0);
    s->d = vml_test_daemon_start(NULL);
    for (int i = 0; i < N_IMAGES; i++) {
        g_autofree char *name = g_strdup_printf("%s.img", img_name(i));
        g_autofree char *path = vml_test_make_image(s->d, name);
        s->paths[i] = realpath(path, NULL);
        s->keys[i] = vml_test_resource_key(s->paths[i]);
        g_autofree char *lock = vml_test_lock_file_name(s->paths[i]);
        s->lock_files[i] = g_build_filename(s->d->root, "lockspace", lock, NULL);
    }
    return s;
}

static void
storm_end(Storm *s)
{
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (!h->dead)
            kill_holder(s, h, "at the end");
    }
    for (guint i = 0; i < s->keepers->len; i++)
        kill_keeper(s, s->keepers->pdata[i]);
    close(s->lifeline[1]);
    close(s->lifeline[0]);
    if (g_getenv("VMLEASE_STORM_KEEP")) {
        say("kept %s (vmleased pid %d still runs)", s->d->root, (int)s->d->pid);
    } else {
        vml_test_daemon_stop(s->d);
    }
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        pending_free(h->pending);
        pending_free(h->unresolved);
        g_free(h);
    }
    g_ptr_array_unref(s->holders);
    g_ptr_array_unref(s->keepers);
    g_ptr_array_unref(s->log);
    g_hash_table_unref(s->ids);
    for (int i = 0; i < N_IMAGES; i++) {
        free(s->paths[i]);
        g_free(s->keys[i]);
        g_free(s->lock_files[i]);
    }
    for (guint i = 0; i < s->violations->len; i++) {
        Violation *v = s->violations->pdata[i];
        g_free(v->cls);
        g_free(v->text);
        g_free(v);
    }
    g_ptr_array_unref(s->violations);
    g_free(s->event_desc);
    g_rand_free(s->rng);
    g_free(s);
}

static guint
n_unknown(Storm *s)
{
    guint n = 0;
    for (guint i = 0; i < s->violations->len; i++)
        n += ((Violation *)s->violations->pdata[i])->known == NULL;
    return n;
}

/* A few requests at once, to be caught in the middle by the event. */
static void
burst(Storm *s)
{
    int n = 1 + rnd(s, 5);
    for (int i = 0; i < n && in_flight(s) < 2 * MAX_IN_FLIGHT; i++)
        random_op(s);
    g_usleep(rnd(s, 2000));
}

/* Holders that died since the last check may die unseen by vmleased;
 * and what every holder holds as the signal goes. */
static void
mark_unseen(Storm *s)
{
    for (guint i = 0; i < s->holders->len; i++) {
        Holder *h = s->holders->pdata[i];
        if (h->dead && h->died_event == s->event)
            h->died_unseen = TRUE;
        memcpy(h->event_mode, h->mode, sizeof(h->mode));
    }
}

/* The event happens now: say so in the log (and in every violation). */
static void
set_event(Storm *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void
set_event(Storm *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(s->event_desc);
    s->event_desc = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    s->event_entry = log_line(s, NULL, ~0u, "=== event %u: %s", s->event, s->event_desc);
}

static void
event_sigkill(Storm *s)
{
    set_event(s, "SIGKILL with %u request(s) in flight", in_flight(s));
    mark_unseen(s);
    vml_test_daemon_kill(s->d, SIGKILL);
    s->daemon_down = TRUE;
    s->n_kill++;
    check_while_down(s);
    if (chance(s, 35)) {
        /* A holder dies while nobody watches it: prefer one that forked. */
        g_autoptr(GPtrArray) c = g_ptr_array_new();
        for (guint i = 0; i < s->holders->len; i++) {
            Holder *h = s->holders->pdata[i];
            if (!h->dead && h->pid > 0 && h->registered &&
                (has_live_offspring(s, h) || chance(s, 25)))
                g_ptr_array_add(c, h);
        }
        if (c->len && n_live(s) > MIN_HOLDERS / 2) {
            Holder *h = c->pdata[rnd(s, c->len)];
            kill_holder(s, h, has_live_offspring(s, h)
                                  ? "while vmleased was down (a process it forked lives on)"
                                  : "while vmleased was down");
            s->n_down_kills++;
        }
    }
    g_usleep(rnd(s, 3000));
    vml_test_daemon_restart(s->d);
    s->daemon_down = FALSE;
    log_line(s, NULL, ~0u, "=== vmleased restarted (pid %d)", (int)s->d->pid);
}

static void
event_sigusr1(Storm *s, gint64 reexecs_before, pid_t pid_before)
{
    set_event(s, "SIGUSR1 with %u request(s) in flight", in_flight(s));
    mark_unseen(s);
    kill(s->d->pid, SIGUSR1);
    s->n_usr1++;
    for (int i = 0; i < 1000; i++) {
        int status;
        if (waitpid(s->d->pid, &status, WNOHANG) == s->d->pid) {
            violation(s, "daemon", NULL, NULL, -1, "vmleased died on SIGUSR1 (wait status %d)", status);
            s->d->pid = 0;
            vml_test_daemon_restart(s->d);
            return;
        }
        /* Keep the holders' answers flowing while it re-executes. */
        pump(s, 0);
        if (status_int(s, "reexecs") > reexecs_before)
            break;
        g_usleep(10000);
    }
    if (status_int(s, "reexecs") <= reexecs_before)
        violation(s, "daemon", NULL, NULL, -1, "vmleased did not re-execute within 10 s");
    if (status_int(s, "pid") != pid_before)
        violation(s, "daemon", NULL, NULL, -1, "vmleased's pid changed across the re-exec");
    log_line(s, NULL, ~0u, "=== vmleased re-executed");
}

static void
storm_run(Storm *s, guint n_events)
{
    guint n0 = MIN_HOLDERS + rnd(s, MAX_HOLDERS - MIN_HOLDERS + 1);
    static const Kind kinds[] = { K_PLAIN, K_FDS, K_MAILBOX };
    for (guint i = 0; i < n0; i++)
        spawn_holder(s, kinds[i % G_N_ELEMENTS(kinds)]);
    say("%s run: %u holders, %u images, %u %s", s->control ? "control" : "storm", n0, N_IMAGES,
        n_events, s->control ? "checkpoints (no signal at all)" : "events");
    gint64 t0 = g_get_monotonic_time();

    for (s->event = 1; s->event <= n_events; s->event++) {
        s->checked = FALSE;
        int n_ops = 8 + rnd(s, 40);
        for (int i = 0; i < n_ops; i++) {
            while (in_flight(s) >= MAX_IN_FLIGHT)
                pump(s, 200);
            random_op(s);
            pump(s, 0);
        }
        /* In the control run nothing may go unanswered. */
        s->in_event = !s->control;
        gboolean kill9 = chance(s, 50);
        gint64 reexecs = 0;
        pid_t pid = 0;
        if (!s->control && !kill9) {
            reexecs = status_int(s, "reexecs");
            pid = status_int(s, "pid");
        }
        burst(s);
        if (s->control)
            set_event(s, "checkpoint with %u request(s) in flight", in_flight(s));
        else if (kill9) {
            event_sigkill(s);
        } else {
            event_sigusr1(s, reexecs, pid);
        }
        s->n_events++;
        quiesce(s, 45000);
        resolve(s);
        check(s);
        s->checked = TRUE;
        s->in_event = FALSE;
        if (g_getenv("VMLEASE_STORM_VERBOSE")) {
            for (guint i = s->verbose_from; i < s->log->len; i++)
                say("  v e%u %s", ((Entry *)s->log->pdata[i])->event,
                    ((Entry *)s->log->pdata[i])->text);
            s->verbose_from = s->log->len;
        }
        if (s->event % 50 == 0)
            say("  ... %u events, %u violations, %.1f s", s->event, s->violations->len,
                (g_get_monotonic_time() - t0) / 1e6);
    }
    say("%s: %u %s (%u SIGKILL, %u SIGUSR1), %u violations",
        s->control ? "control" : "storm", s->n_events, s->control ? "checkpoints" : "events",
        s->n_kill, s->n_usr1, s->violations->len);
    g_autoptr(GString) by = g_string_new(NULL);
    for (guint k = 0; k <= G_N_ELEMENTS(known_causes); k++) {
        const char *id = k < G_N_ELEMENTS(known_causes) ? known_causes[k].id : NULL;
        guint n = 0;
        for (guint i = 0; i < s->violations->len; i++)
            n += ((Violation *)s->violations->pdata[i])->known == id;
        if (n)
            g_string_append_printf(by, "%s%s %u", by->len ? ", " : "",
                                   id ? id : "of no known cause", n);
    }
    if (by->len)
        say("  violations: %s", by->str);
    say("  %u requests, %u grants, %u conflicts, %u lost replies (%u done, %u not), %u not sent, "
        "%u forks, %u holders in all (%u killed while vmleased was down), %.1f s",
        s->n_ops, s->n_granted, s->n_conflicts, s->n_ambiguous, s->n_amb_done, s->n_amb_not,
        s->n_unsent, s->n_forks, s->holders->len, s->n_down_kills,
        (g_get_monotonic_time() - t0) / 1e6);
}

static guint32 seed_;
static guint n_events_ = 60, n_control_ = 12;
static guint unknown_control_, unknown_storm_;
static gboolean no_kcmp_;

/* The checker tells descriptions apart with kcmp(KCMP_FILE). */
static gboolean
kcmp_works(void)
{
    int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int b = fcntl(a, F_DUPFD_CLOEXEC, 0), c = open("/dev/null", O_RDONLY | O_CLOEXEC);
    gboolean ok = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b) == 0 &&
                  syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, c) > 0;
    close(a);
    close(b);
    close(c);
    return ok;
}

/* Both runs first (GLib stops at the first failed case, and the known
 * causes are to be reported either way); the verdicts come after. */
static void
test_runs(void)
{
    if (!kcmp_works()) {
        no_kcmp_ = TRUE;
        g_test_skip("kcmp(KCMP_FILE) does not work here: lock descriptions cannot be told apart");
        return;
    }
    Storm *s = storm_new(TRUE, seed_ ^ 0x5eed);
    storm_run(s, n_control_);
    unknown_control_ = n_unknown(s);
    storm_end(s);
    s = storm_new(FALSE, seed_);
    storm_run(s, n_events_);
    unknown_storm_ = n_unknown(s);
    storm_end(s);
}

static void
test_control(void)
{
    if (no_kcmp_)
        g_test_skip("no storm ran");
    else if (unknown_control_)
        g_test_fail_printf("control run: %u violations without a kill", unknown_control_);
}

static void
test_storm(void)
{
    if (no_kcmp_)
        g_test_skip("no storm ran");
    else if (unknown_storm_)
        g_test_fail_printf("%u violations of the crash-consistency invariant", unknown_storm_);
}

static void
test_known(gconstpointer data)
{
    const KnownCause *kc = data;
    if (kc->seen) {
        g_test_fail_printf("%u violation(s) of a cause fixed before (a regression): %s",
                           kc->seen, kc->cause);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    const char *e = g_getenv("VMLEASE_STORM_EVENTS");
    if (e && *e)
        n_events_ = (guint)g_ascii_strtoull(e, NULL, 10);
    const char *c = g_getenv("VMLEASE_STORM_CONTROL");
    if (c && *c)
        n_control_ = (guint)g_ascii_strtoull(c, NULL, 10);
    const char *sd = g_getenv("VMLEASE_STORM_SEED");
    seed_ = sd && *sd ? (guint32)g_ascii_strtoull(sd, NULL, 0)
                      : (guint32)(g_get_real_time() ^ getpid());
    say("storm seed %u (VMLEASE_STORM_SEED=%u repeats the choices, not the timing)", seed_, seed_);
    /* Holders' forked children whose holder dies come to us, to be reaped. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    g_test_add_func("/storm/runs", test_runs);
    for (guint i = 0; i < G_N_ELEMENTS(known_causes); i++) {
        g_autofree char *path = g_strdup_printf("/storm/known-%s", known_causes[i].id);
        g_test_add_data_func(path, &known_causes[i], test_known);
    }
    g_test_add_func("/storm/control", test_control);
    g_test_add_func("/storm/crash", test_storm);
    return g_test_run();
}
