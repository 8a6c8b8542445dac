/* The ABI between libvirt and a lock-manager plugin, version 1.
 *
 * libvirt does not install this header: it is written here from the layout
 * libvirt publishes in its source (src/locking/lock_driver.h), and the
 * libvirt tests check it against a real libvirtd. libvirt dlopen()s the
 * plugin from <libdir>/libvirt/lock-driver/NAME.so and reads the driver
 * table from the exported symbol virLockDriverImpl. */
#pragma once

#include <stddef.h>

/* 1.0.0: major * 1000000 + minor * 1000 + micro */
#define VML_LOCK_DRIVER_VERSION 1000000

/* Driver flags: the plugin can carry lease state across pause/migration. */
#define VML_LOCK_DRIVER_USES_STATE (1u << 0)

/* The only kind of object supervised: a guest domain's process. */
#define VML_LOCK_OBJECT_DOMAIN 0

/* Resource types and flags for drvAddResource. */
#define VML_LOCK_RESOURCE_DISK 0
#define VML_LOCK_RESOURCE_LEASE 1
#define VML_LOCK_RESOURCE_READONLY (1u << 0)
#define VML_LOCK_RESOURCE_SHARED (1u << 1)

/* drvAcquire flags. */
#define VML_LOCK_ACQUIRE_REGISTER_ONLY (1u << 0)  /* register the pid, lock nothing */
#define VML_LOCK_ACQUIRE_RESTRICT (1u << 1)       /* no further lock calls from here */

/* drvNew flags. */
#define VML_LOCK_NEW_STARTED (1u << 0)            /* domain was just started */

/* What libvirt wants done when a lease is lost (the domain's
 * <on_lockfailure>): an int enum. */
enum {
    VML_LOCK_FAILURE_DEFAULT = 0,
    VML_LOCK_FAILURE_POWEROFF,
    VML_LOCK_FAILURE_RESTART,
    VML_LOCK_FAILURE_PAUSE,
    VML_LOCK_FAILURE_IGNORE,
};

/* Types of the typed parameters given to drvNew and drvAddResource. */
enum {
    VML_LOCK_PARAM_STRING,
    VML_LOCK_PARAM_CSTRING,
    VML_LOCK_PARAM_INT,
    VML_LOCK_PARAM_LONG,
    VML_LOCK_PARAM_UINT,
    VML_LOCK_PARAM_ULONG,
    VML_LOCK_PARAM_DOUBLE,
    VML_LOCK_PARAM_UUID,
};

typedef struct {
    int type;
    const char *key;
    union {
        int iv;
        long long l;
        unsigned int ui;
        unsigned long long ul;
        double d;
        char *str;
        const char *cstr;
        unsigned char uuid[16];
    } value;
} VmlLockParam;

typedef struct _VmlLockDriver VmlLockDriver;

/* One supervised object; privateData is the plugin's. */
typedef struct {
    VmlLockDriver *driver;
    void *privateData;
} VmlLockManager;

struct _VmlLockDriver {
    unsigned int version;
    unsigned int flags;

    /* Once per libvirt driver that loads the plugin; -1 refuses. */
    int (*drvInit)(unsigned int version, const char *configFile, unsigned int flags);
    int (*drvDeinit)(void);

    /* A context for one object; params: uuid (UUID), name (STRING),
     * id (UINT), pid (UINT), uri (CSTRING). */
    int (*drvNew)(VmlLockManager *man, unsigned int type, size_t nparams,
                  VmlLockParam *params, unsigned int flags);
    void (*drvFree)(VmlLockManager *man);

    /* A disk (name: its path) or a lease (name: its key; params lockspace,
     * path, offset), before the object is locked. */
    int (*drvAddResource)(VmlLockManager *man, unsigned int type, const char *name,
                          size_t nparams, VmlLockParam *params, unsigned int flags);

    /* Called in the process that will own the locks (the QEMU child before
     * exec) or in libvirtd for a running domain. *fd may return an fd
     * that is deliberately left open in that process. */
    int (*drvAcquire)(VmlLockManager *man, const char *state, unsigned int flags,
                      int action, int *fd);
    int (*drvRelease)(VmlLockManager *man, char **state, unsigned int flags);
    int (*drvInquire)(VmlLockManager *man, char **state, unsigned int flags);
};
