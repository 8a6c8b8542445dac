/* One GError domain for all of vmlease, and the mapping between its codes
 * and the varlink error names that travel on the wire. */
#pragma once

#include <glib.h>

#define VML_ERROR (vml_error_quark())
GQuark vml_error_quark(void);

typedef enum {
    VML_ERROR_FAILED,            /* io.vmlease.Failed */
    VML_ERROR_CONFLICT,          /* io.vmlease.Conflict */
    VML_ERROR_INVALID_PARAMETER, /* org.varlink.service.InvalidParameter */
    VML_ERROR_METHOD_NOT_FOUND,  /* org.varlink.service.MethodNotFound */
    VML_ERROR_INVALID_MESSAGE,   /* io.vmlease.InvalidMessage */
    VML_ERROR_PERMISSION_DENIED, /* io.vmlease.PermissionDenied */
    VML_ERROR_NO_SUCH_HOLDER,    /* io.vmlease.NoSuchHolder */
    VML_ERROR_NO_SUCH_PROCESS,   /* io.vmlease.NoSuchProcess */
    VML_ERROR_NO_SUCH_IMAGE,     /* io.vmlease.NoSuchImage */
    VML_ERROR_NOT_HELD,          /* io.vmlease.NotHeld */
    VML_ERROR_LIMIT,             /* io.vmlease.LimitReached */
    VML_ERROR_BACKEND,           /* io.vmlease.BackendError */
    VML_ERROR_BAD_IMAGE,         /* io.vmlease.BadImage */
    VML_ERROR_IMAGE_BUSY,        /* io.vmlease.ImageBusy */
    VML_ERROR_NO_SUCH_FD,        /* io.vmlease.NoSuchFd */
    VML_ERROR_FD_EXISTS,         /* io.vmlease.FdExists */
    VML_ERROR_INTERFACE_NOT_FOUND, /* org.varlink.service.InterfaceNotFound */
    VML_ERROR_CONFIG,            /* local only: bad configuration */
    VML_ERROR_PROTOCOL,          /* local only: broken framing or reply */
} VmlErrorCode;

const char *vml_error_name(VmlErrorCode code);
VmlErrorCode vml_error_code_from_name(const char *name);
