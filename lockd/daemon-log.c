/* vmleased's log writer (daemon-log.h). */
#include "daemon-log.h"
#include "vml-paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *name;
    GLogLevelFlags threshold;   /* the least severe level let through */
} levels[] = {
    { "error", G_LOG_LEVEL_CRITICAL },
    { "warning", G_LOG_LEVEL_WARNING },
    { "info", G_LOG_LEVEL_INFO },
    { "debug", G_LOG_LEVEL_DEBUG },
};

/* Read by every log call, set by SetLogLevel: an index into levels. */
static gint level_index = 2;
static VmlLogTarget target = VML_LOG_STDERR;
static gboolean stderr_journal;   /* stderr is a stream into the journal */
static int journal_fd = -1;
static char *journal_path;   /* read once: every entry goes there */
static guint journal_dropped;  /* entries the journal had no room for */

/* Each event has a MESSAGE_ID of its own, fixed for ever, so that a
 * reader can pick one kind of event whatever the wording of its text. */
static const struct {
    const char *name;
    const char *message_id;
} events[] = {
    [VML_EVENT_ACQUIRE] = { "acquire", "27e2bb61a2f2432d9df62615ec3a513d" },
    [VML_EVENT_RELEASE] = { "release", "68aadfde88944beb9a6a42be46640dbc" },
    [VML_EVENT_CONFLICT] = { "conflict", "67f491cbe21742f9ae92a41756b7edaf" },
    [VML_EVENT_LEASE_LOST] = { "lease-lost", "0b417891b4ff40a7b51bfcae85250721" },
    [VML_EVENT_PARK] = { "park", "2943026a5ad0407c8d7f6075da9295d6" },
    [VML_EVENT_LOCK_FDS_MISSING] = { "lock-fds-missing", "3bd0a2659a104ac8ab187be1a65a551f" },
};

/* LEVEL's index in levels, or -1. */
static int
level_find(const char *level)
{
    for (guint i = 0; i < G_N_ELEMENTS(levels); i++) {
        if (g_strcmp0(level, levels[i].name) == 0)
            return (int)i;
    }
    return -1;
}

gboolean
vml_log_level_known(const char *level)
{
    return level_find(level) >= 0;
}

gboolean
vml_log_set_level(const char *level)
{
    int i = level_find(level);
    if (i < 0)
        return FALSE;
    g_atomic_int_set(&level_index, i);
    return TRUE;
}

const char *
vml_log_level(void)
{
    return levels[g_atomic_int_get(&level_index)].name;
}

gboolean
vml_log_enabled(GLogLevelFlags level)
{
    GLogLevelFlags lvl = level & G_LOG_LEVEL_MASK;
    return lvl && lvl <= levels[g_atomic_int_get(&level_index)].threshold;
}

static int
syslog_priority(GLogLevelFlags level)
{
    GLogLevelFlags lvl = level & G_LOG_LEVEL_MASK;
    return lvl <= G_LOG_LEVEL_CRITICAL ? LOG_ERR
         : lvl == G_LOG_LEVEL_WARNING ? LOG_WARNING
         : lvl == G_LOG_LEVEL_MESSAGE ? LOG_NOTICE
         : lvl == G_LOG_LEVEL_INFO ? LOG_INFO : LOG_DEBUG;
}

static const char *
level_word(GLogLevelFlags level)
{
    /* By syslog priority: LOG_ERR 3, LOG_WARNING 4, LOG_NOTICE 5, ... */
    static const char *const words[] = { "error", "error", "error", "error", "warning",
                                         "notice", "info", "debug" };
    return words[syslog_priority(level)];
}

/* ---- the journal's native protocol ------------------------------------------
 * One datagram per entry: KEY=VALUE lines, or for a value with a newline
 * in it KEY, a newline, its length (64-bit little endian), the value and
 * a newline. */

static void
journal_field(GString *out, const char *key, const char *value, gssize len)
{
    gsize n = len < 0 ? strlen(value) : (gsize)len;
    if (!memchr(value, '\n', n)) {
        g_string_append_printf(out, "%s=", key);
        g_string_append_len(out, value, n);
        g_string_append_c(out, '\n');
        return;
    }
    guint64 le = GUINT64_TO_LE((guint64)n);
    g_string_append_printf(out, "%s\n", key);
    g_string_append_len(out, (const char *)&le, sizeof(le));
    g_string_append_len(out, value, n);
    g_string_append_c(out, '\n');
}

/* An entry's first fields, every entry's. */
static GString *
journal_entry_new(int priority)
{
    GString *out = g_string_sized_new(256);
    g_string_append_printf(out, "PRIORITY=%d\nSYSLOG_IDENTIFIER=vmleased\n", priority);
    return out;
}

/* A journal field name: upper case, digits and '_', not starting with '_'. */
static gboolean
journal_key_ok(const char *key)
{
    if (!key[0] || key[0] == '_' || strlen(key) > 64)
        return FALSE;
    for (const char *p = key; *p; p++) {
        if (!g_ascii_isupper(*p) && !g_ascii_isdigit(*p) && *p != '_')
            return FALSE;
    }
    return TRUE;
}

static gboolean
journal_send(GLogLevelFlags level, const GLogField *fields, gsize n_fields)
{
    if (journal_fd < 0)
        journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (!journal_path)
        journal_path = vml_default_journal_socket();
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (journal_fd < 0 || strlen(journal_path) >= sizeof(addr.sun_path))
        return FALSE;
    memcpy(addr.sun_path, journal_path, strlen(journal_path));

    g_autoptr(GString) out = journal_entry_new(syslog_priority(level));
    for (gsize i = 0; i < n_fields; i++) {
        const GLogField *f = &fields[i];
        /* Ours are strings; GLib's own bookkeeping fields stay out. */
        if (!f->value || g_str_equal(f->key, "PRIORITY") ||
            g_str_equal(f->key, "GLIB_OLD_LOG_API") || !journal_key_ok(f->key))
            continue;
        journal_field(out, f->key, f->value, f->length);
    }
    /* Never wait for the journal: a daemon that blocks in a log call holds
     * up every lease call. An entry it has no room for is counted, and the
     * count is told in the next entry that gets through. */
    if (journal_dropped) {
        g_autoptr(GString) note = journal_entry_new(LOG_WARNING);
        g_autofree char *text = g_strdup_printf("%u log entries were dropped: the journal did "
                                                "not take them in time", journal_dropped);
        journal_field(note, "MESSAGE", text, -1);
        if (sendto(journal_fd, note->str, note->len, MSG_NOSIGNAL | MSG_DONTWAIT,
                   (struct sockaddr *)&addr, sizeof(addr)) == (gssize)note->len)
            journal_dropped = 0;
    }
    if (sendto(journal_fd, out->str, out->len, MSG_NOSIGNAL | MSG_DONTWAIT,
               (struct sockaddr *)&addr, sizeof(addr)) == (gssize)out->len)
        return TRUE;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        journal_dropped++;
        return TRUE;
    }
    return FALSE;
}

static const char *
field_value(const GLogField *fields, gsize n_fields, const char *key)
{
    for (gsize i = 0; i < n_fields; i++) {
        if (g_str_equal(fields[i].key, key) && fields[i].length < 0)
            return fields[i].value;
    }
    return NULL;
}

static void
text_send(GLogLevelFlags level, const char *message)
{
    if (target != VML_LOG_STDERR && !stderr_journal) {
        syslog(syslog_priority(level), "%s", message);
        return;
    }
    /* An entry per lease call: the time is made once a second, and the
     * line goes out in one write (a line never splits between writers). */
    static time_t stamped;
    static char stamp[32];
    time_t now = time(NULL);
    if (now != stamped) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%F %T", &tm);
        stamped = now;
    }
    /* Appended, not printf'd: copying the message through vfprintf costs
     * more than all the rest of the line. */
    char pid[16];
    g_snprintf(pid, sizeof(pid), "%d", (int)getpid());
    g_autoptr(GString) line = g_string_sized_new(64 + strlen(message));
    g_string_append(line, stamp);
    g_string_append(line, " vmleased[");
    g_string_append(line, pid);
    g_string_append(line, "]: ");
    g_string_append(line, level_word(level));
    g_string_append(line, ": ");
    g_string_append(line, message);
    g_string_append_c(line, '\n');
    for (gsize done = 0; done < line->len;) {
        gssize n = write(STDERR_FILENO, line->str + done, line->len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;   /* nowhere left to say it */
        done += (gsize)n;
    }
}

static GLogWriterOutput
write_entry(GLogLevelFlags level, const GLogField *fields, gsize n_fields,
            G_GNUC_UNUSED gpointer data)
{
    if (!vml_log_enabled(level))
        return G_LOG_WRITER_HANDLED;
    const char *message = field_value(fields, n_fields, "MESSAGE");
    if (!message)
        message = "(no message)";
    /* A journal that went away: the entry goes to syslog rather than nowhere. */
    if (target == VML_LOG_JOURNAL && journal_send(level, fields, n_fields))
        return G_LOG_WRITER_HANDLED;
    text_send(level, message);
    return G_LOG_WRITER_HANDLED;
}

/* Systemd connects stderr to the journal and says so in JOURNAL_STREAM
 * (DEVICE:INODE of that stream): only then is stderr the journal. */
static gboolean
stderr_is_journal(void)
{
    const char *stream = g_getenv("JOURNAL_STREAM");
    guint64 dev, ino;
    struct stat st;
    if (!stream || sscanf(stream, "%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT, &dev, &ino) != 2)
        return FALSE;
    return fstat(STDERR_FILENO, &st) == 0 && (guint64)st.st_dev == dev &&
           (guint64)st.st_ino == ino;
}

void
vml_log_init(void)
{
    stderr_journal = stderr_is_journal();
    target = stderr_journal ? VML_LOG_JOURNAL : VML_LOG_STDERR;
    g_log_set_writer_func(write_entry, NULL, NULL);
}

void
vml_log_daemonized(void)
{
    g_autofree char *where = vml_default_journal_socket();
    struct stat st;
    openlog("vmleased", LOG_PID, LOG_DAEMON);
    stderr_journal = FALSE;
    target = stat(where, &st) == 0 && S_ISSOCK(st.st_mode) ? VML_LOG_JOURNAL : VML_LOG_SYSLOG;
}

VmlLogTarget
vml_log_target(void)
{
    return target;
}

void
vml_log_set_target(VmlLogTarget t)
{
    if (t == VML_LOG_SYSLOG || t == VML_LOG_JOURNAL)
        openlog("vmleased", LOG_PID, LOG_DAEMON);
    target = t;
}

static const char *const target_names[] = {
    [VML_LOG_STDERR] = "stderr", [VML_LOG_SYSLOG] = "syslog", [VML_LOG_JOURNAL] = "journal",
};

const char *
vml_log_target_name(VmlLogTarget t)
{
    return target_names[t];
}

gboolean
vml_log_target_from_name(const char *name, VmlLogTarget *t)
{
    for (guint i = 0; i < G_N_ELEMENTS(target_names); i++) {
        if (g_strcmp0(name, target_names[i]) == 0) {
            *t = (VmlLogTarget)i;
            return TRUE;
        }
    }
    return FALSE;
}

void
vml_log_event_message(GLogLevelFlags level, const VmlLogEvent *e, const char *message)
{
    if (!vml_log_enabled(level))
        return;
    char pid[24] = "";
    if (e->pid > 0)
        g_snprintf(pid, sizeof(pid), "%" G_GINT64_FORMAT, e->pid);
    GLogField fields[10];
    gsize n = 0;
#define FIELD(k, v) \
    if (v) \
        fields[n++] = (GLogField){ .key = (k), .value = (v), .length = -1 }
    FIELD("MESSAGE", message);
    FIELD("MESSAGE_ID", events[e->kind].message_id);
    FIELD("VMLEASE_EVENT", events[e->kind].name);
    FIELD("VMLEASE_RESOURCE", e->resource);
    FIELD("VMLEASE_PATH", e->path);
    FIELD("VMLEASE_MODE", e->mode);
    FIELD("VMLEASE_DOMAIN", e->domain);
    FIELD("VMLEASE_UUID", e->uuid);
    FIELD("VMLEASE_HELD_BY", e->held_by);
#undef FIELD
    if (e->pid > 0)
        fields[n++] = (GLogField){ .key = "VMLEASE_PID", .value = pid, .length = -1 };
    g_log_structured_array(level, fields, n);
}
