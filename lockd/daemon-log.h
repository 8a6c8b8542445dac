/* vmleased's log. Every message, g_message() and friends included, goes
 * through one GLib structured-log writer: to the journal with its fields
 * when the journal is where our output goes, else as text on stderr (in
 * the foreground) or to syslog (daemonized). The threshold (log_level)
 * can change while the daemon runs (io.vmlease.Admin.SetLogLevel). */
#pragma once

#include <glib.h>

typedef enum {
    VML_LOG_STDERR,
    VML_LOG_SYSLOG,
    VML_LOG_JOURNAL,
} VmlLogTarget;

/* Install the writer: to the journal if stderr is connected to it
 * (systemd's JOURNAL_STREAM names stderr), else to stderr. */
void vml_log_init(void);
/* Stderr is gone (daemonize): the journal if it runs, else syslog. */
void vml_log_daemonized(void);
VmlLogTarget vml_log_target(void);
/* Where a re-exec'd image writes: as its parent did (stderr may be
 * /dev/null by then, and JOURNAL_STREAM says nothing of it). */
void vml_log_set_target(VmlLogTarget target);
const char *vml_log_target_name(VmlLogTarget target);
gboolean vml_log_target_from_name(const char *name, VmlLogTarget *target);

/* The levels are error, warning, info and debug (vmleased.conf's
 * log_level); FALSE for any other name (the level stays). */
#define VML_LOG_LEVEL_NAMES "error, warning, info, debug"
gboolean vml_log_level_known(const char *level);
gboolean vml_log_set_level(const char *level);
const char *vml_log_level(void);
gboolean vml_log_enabled(GLogLevelFlags level);

/* Debug lines cost nothing unless asked for: not even their formatting. */
#define vml_debug(...) G_STMT_START { \
        if (vml_log_enabled(G_LOG_LEVEL_DEBUG)) \
            g_debug(__VA_ARGS__); \
    } G_STMT_END

/* A lease event, with the fields a journal reader filters by
 * (VMLEASE_EVENT=conflict, VMLEASE_RESOURCE=..., VMLEASE_UUID=...).
 * Unset members are left out. */
typedef enum {
    VML_EVENT_ACQUIRE,
    VML_EVENT_RELEASE,
    VML_EVENT_CONFLICT,
    VML_EVENT_LEASE_LOST,
    VML_EVENT_PARK,
    VML_EVENT_LOCK_FDS_MISSING,
} VmlEventKind;

typedef struct {
    VmlEventKind kind;
    const char *resource;
    const char *path;
    const char *mode;
    const char *domain;     /* the VM's name */
    const char *uuid;
    gint64 pid;             /* 0: none */
    const char *held_by;    /* a conflict's other side, as text */
} VmlLogEvent;

/* Log E at LEVEL with MESSAGE. */
void vml_log_event_message(GLogLevelFlags level, const VmlLogEvent *e, const char *message);
