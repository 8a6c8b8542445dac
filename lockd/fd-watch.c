#include "fd-watch.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct {
    guint id;
    int fd;
    GIOCondition condition;
    GUnixFDSourceFunc func;
    gpointer data;
} Watch;

/* The watches of one fd, and what epoll is asked to report for it. */
typedef struct {
    int fd;
    guint32 serial;       /* told apart from a later fd of the same number */
    guint32 events;       /* registered with epoll */
    GPtrArray *watches;   /* Watch*, borrowed from the table */
} FdEntry;

static struct {
    int epfd;
    GSource *source;
    GHashTable *by_id;    /* id -> Watch* (owned) */
    GHashTable *by_fd;    /* fd -> FdEntry* (owned) */
    guint next_id;
    guint32 next_serial;
} mux = { .epfd = -1 };

static guint32
epoll_events(GIOCondition c)
{
    return (c & G_IO_IN ? EPOLLIN : 0) | (c & G_IO_OUT ? EPOLLOUT : 0) |
           (c & G_IO_PRI ? EPOLLPRI : 0);
}

static GIOCondition
io_condition(guint32 e)
{
    return (e & EPOLLIN ? G_IO_IN : 0) | (e & EPOLLOUT ? G_IO_OUT : 0) |
           (e & EPOLLPRI ? G_IO_PRI : 0) | (e & EPOLLHUP ? G_IO_HUP : 0) |
           (e & EPOLLERR ? G_IO_ERR : 0);
}

/* Tell epoll what ENTRY's watches want now (nothing: the fd leaves). */
static void
entry_update(FdEntry *e)
{
    guint32 want = 0;
    for (guint i = 0; i < e->watches->len; i++)
        want |= epoll_events(((Watch *)e->watches->pdata[i])->condition);
    struct epoll_event ev = { .events = want,
                              .data.u64 = ((guint64)e->serial << 32) | (guint32)e->fd };
    if (!e->watches->len) {
        epoll_ctl(mux.epfd, EPOLL_CTL_DEL, e->fd, &ev);
        return;
    }
    if (want == e->events)
        return;
    e->events = want;
    if (epoll_ctl(mux.epfd, EPOLL_CTL_MOD, e->fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(mux.epfd, EPOLL_CTL_ADD, e->fd, &ev);
}

static void
entry_free(gpointer data)
{
    FdEntry *e = data;
    g_ptr_array_unref(e->watches);
    g_free(e);
}

/* Every ready fd's watches, each called at most once a turn. */
static gboolean
mux_dispatch(G_GNUC_UNUSED GSource *source, G_GNUC_UNUSED GSourceFunc callback,
             G_GNUC_UNUSED gpointer data)
{
    struct epoll_event evs[64];
    int n = epoll_wait(mux.epfd, evs, G_N_ELEMENTS(evs), 0);
    for (int i = 0; i < n; i++) {
        int fd = (int)(guint32)evs[i].data.u64;
        guint32 serial = (guint32)(evs[i].data.u64 >> 32);
        FdEntry *e = g_hash_table_lookup(mux.by_fd, GINT_TO_POINTER(fd));
        if (!e || e->serial != serial)
            continue;   /* gone (or another file now) since epoll saw it */
        GIOCondition got = io_condition(evs[i].events);
        /* By id: a callback may end any watch, its own too, or close fds. */
        guint n_ids = e->watches->len;
        guint ids[n_ids ? n_ids : 1];
        for (guint k = 0; k < n_ids; k++)
            ids[k] = ((Watch *)e->watches->pdata[k])->id;
        for (guint k = 0; k < n_ids; k++) {
            Watch *w = g_hash_table_lookup(mux.by_id, GUINT_TO_POINTER(ids[k]));
            if (!w)
                continue;
            GIOCondition met = got & (w->condition | G_IO_HUP | G_IO_ERR);
            if (!met)
                continue;
            if (!w->func(w->fd, met, w->data))
                vml_fd_watch_remove(ids[k]);
        }
    }
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs mux_funcs = { .dispatch = mux_dispatch };

static void
mux_init(void)
{
    if (mux.source)
        return;
    mux.epfd = epoll_create1(EPOLL_CLOEXEC);
    g_assert(mux.epfd >= 0);
    mux.by_id = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    mux.by_fd = g_hash_table_new_full(NULL, NULL, NULL, entry_free);
    mux.next_id = 1;
    mux.source = g_source_new(&mux_funcs, sizeof(GSource));
    g_source_set_name(mux.source, "vmleased fd watches");
    /* Not blocked while it dispatches: blocking takes its fd out of the
     * poll set and puts it back, waking the loop both times. */
    g_source_set_can_recurse(mux.source, TRUE);
    g_source_add_unix_fd(mux.source, mux.epfd, G_IO_IN);
    g_source_attach(mux.source, NULL);
}

guint
vml_fd_watch_add(int fd, GIOCondition condition, GUnixFDSourceFunc func, gpointer data)
{
    mux_init();
    Watch *w = g_new0(Watch, 1);
    w->id = mux.next_id++;
    if (!mux.next_id)
        mux.next_id = 1;
    w->fd = fd;
    w->condition = condition;
    w->func = func;
    w->data = data;
    g_hash_table_insert(mux.by_id, GUINT_TO_POINTER(w->id), w);
    FdEntry *e = g_hash_table_lookup(mux.by_fd, GINT_TO_POINTER(fd));
    if (!e) {
        e = g_new0(FdEntry, 1);
        e->fd = fd;
        e->serial = ++mux.next_serial;
        e->watches = g_ptr_array_new();
        g_hash_table_insert(mux.by_fd, GINT_TO_POINTER(fd), e);
        struct epoll_event ev = { .events = epoll_events(condition),
                                  .data.u64 = ((guint64)e->serial << 32) | (guint32)fd };
        e->events = ev.events;
        if (epoll_ctl(mux.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            g_warning("cannot watch fd %d: %s", fd, g_strerror(errno));
    }
    g_ptr_array_add(e->watches, w);
    entry_update(e);
    return w->id;
}

static gboolean
watch_remove(guint id, gboolean closing)
{
    Watch *w = mux.by_id ? g_hash_table_lookup(mux.by_id, GUINT_TO_POINTER(id)) : NULL;
    if (!w)
        return FALSE;
    FdEntry *e = g_hash_table_lookup(mux.by_fd, GINT_TO_POINTER(w->fd));
    g_ptr_array_remove_fast(e->watches, w);
    if (e->watches->len || !closing)
        entry_update(e);
    if (!e->watches->len)
        g_hash_table_remove(mux.by_fd, GINT_TO_POINTER(w->fd));
    g_hash_table_remove(mux.by_id, GUINT_TO_POINTER(id));
    return TRUE;
}

gboolean
vml_fd_watch_remove(guint id)
{
    return watch_remove(id, FALSE);
}

gboolean
vml_fd_watch_remove_closing(guint id)
{
    return watch_remove(id, TRUE);
}
