/* Varlink framing: a message is one JSON object followed by a NUL byte.
 * File descriptors travel with SCM_RIGHTS beside the message's first bytes. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <sys/socket.h>

#define VML_MSG_MAX (1024 * 1024)  /* bytes of one message, NUL excluded */
#define VML_FDS_MAX 253            /* SCM_MAX_FD */

/* Room for the most fds one message may carry. */
typedef union {
    char buf[CMSG_SPACE(sizeof(int) * VML_FDS_MAX)];
    struct cmsghdr align;
} VmlFdControl;

/* Attach FDS (at most VML_FDS_MAX) to MH as SCM_RIGHTS, in CONTROL. */
void vml_wire_attach_fds(struct msghdr *mh, VmlFdControl *control,
                         const int *fds, guint n_fds);

/* Serialise an object to compact, strict JSON (RFC 8259: valid UTF-8, control
 * characters escaped) whatever its strings hold; newly allocated, LEN (may
 * be NULL) excludes the NUL. */
char *vml_json_to_string(JsonObject *object, gsize *len);

/* Send the whole message (json plus its NUL terminator) on a blocking socket,
 * fds attached to the first sendmsg. */
gboolean vml_wire_send(int sock, const char *json, gsize len,
                       const int *fds, guint n_fds, GError **error);

typedef struct _VmlFrameReader VmlFrameReader;

VmlFrameReader *vml_frame_reader_new(void);
void vml_frame_reader_free(VmlFrameReader *reader);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlFrameReader, vml_frame_reader_free)

typedef enum {
    VML_FILL_OK,     /* read some bytes (maybe a whole message) */
    VML_FILL_AGAIN,  /* non-blocking socket had nothing */
    VML_FILL_EOF,    /* peer closed; a partial message in the buffer is lost */
    VML_FILL_ERROR,  /* read error, a message over VML_MSG_MAX, or over
                      * VML_FDS_MAX fds queued for one message */
} VmlFillResult;

/* One recvmsg() into the buffer; received fds are queued (CLOEXEC). Pop
 * every whole message before calling it again: the size limit is checked
 * on the first message in the buffer. Errors are VML_ERROR_PROTOCOL (broken
 * framing, or the socket failed), or VML_ERROR_LIMIT when this process ran
 * out of something (fds for the ones sent along, kernel memory); see
 * vml_frame_reader_errno(). */
VmlFillResult vml_frame_reader_fill(VmlFrameReader *reader, int sock, GError **error);
/* The same, reading at most MAX bytes (1 or more; at most 64 KiB are read
 * in any case), for a caller that budgets the bytes it holds. */
VmlFillResult vml_frame_reader_fill_max(VmlFrameReader *reader, int sock, gsize max,
                                        GError **error);
/* The same, waiting for data as long as SOCK's SO_RCVTIMEO lets it
 * (VML_FILL_AGAIN: that ran out), in one call instead of a poll and a read. */
VmlFillResult vml_frame_reader_fill_wait(VmlFrameReader *reader, int sock, GError **error);
/* After VML_FILL_ERROR: the errno behind it (EMFILE when the fds sent along
 * could not be taken for want of fds, ECONNRESET, ...), or 0 when the peer
 * broke the framing. */
int vml_frame_reader_errno(VmlFrameReader *reader);

/* Pop one complete message, if any: *msg is NUL-terminated, *len excludes the
 * NUL. Queued fds go with it into *fds (an int GArray, may be empty); the
 * caller owns and must close them. Returns FALSE when no message is complete. */
gboolean vml_frame_reader_pop(VmlFrameReader *reader, char **msg, gsize *len, GArray **fds);

/* Bytes buffered and not yet popped: complete messages and the start of
 * the next one. */
gsize vml_frame_reader_pending(VmlFrameReader *reader);
/* A complete message waits to be popped. */
gboolean vml_frame_reader_has_message(VmlFrameReader *reader);

/* Close every fd in an int GArray and free it. */
void vml_fds_close(GArray *fds);
