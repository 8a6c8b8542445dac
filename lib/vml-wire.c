#include "vml-wire.h"
#include "vml-error.h"
#include "vml-json-write.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Read in 64 KiB steps: a whole request normally arrives in one go. */
#define READ_CHUNK 65536

/* Fds received and the message they came with: the one starting at AT
 * in the buffer. A stream hands a sender's fds to the read that takes the
 * first byte of the write they were sent with, and ends that read with
 * the write's first segment; every sender here writes a message with fds
 * alone, from its first byte. So the fds of a read belong to the last
 * message that starts in it, however many whole messages came before. */
typedef struct {
    gsize at;
    GArray *fds;
} FdBatch;

struct _VmlFrameReader {
    GByteArray *buf;
    gsize start;     /* bytes of buf already handed out as messages */
    gsize scanned;   /* buf[start, scanned) is known to hold no NUL */
    GQueue fds;      /* FdBatch*, oldest first, waiting for their messages */
    int error_errno; /* behind the last VML_FILL_ERROR; 0: framing */
};

static void
fd_batch_free(FdBatch *b)
{
    vml_fds_close(b->fds);
    g_free(b);
}

char *
vml_json_to_string(JsonObject *object, gsize *len)
{
    /* Not json-glib's generator: it sends invalid UTF-8 and U+001F in a
     * string as they are, and a client's bytes (an unknown method's name)
     * come back in replies. */
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, object);
    GString *out = g_string_sized_new(256);
    vml_json_write_node(out, node);
    if (len)
        *len = out->len;
    return g_string_free(out, FALSE);
}

void
vml_wire_attach_fds(struct msghdr *mh, VmlFdControl *control, const int *fds, guint n_fds)
{
    memset(control, 0, sizeof(*control));
    if (n_fds == 0) {
        mh->msg_control = NULL;
        mh->msg_controllen = 0;
        return;
    }
    mh->msg_control = control->buf;
    mh->msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
}

gboolean
vml_wire_send(int sock, const char *json, gsize len,
              const int *fds, guint n_fds, GError **error)
{
    gsize total = len + 1;
    gsize off = 0;
    gboolean fds_sent = (n_fds == 0);

    if (n_fds > VML_FDS_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL, "too many fds (%u)", n_fds);
        return FALSE;
    }
    while (off < total) {
        static const char nul = '\0';
        struct iovec iov[2];
        int niov = 0;
        if (off < len) {
            iov[niov].iov_base = (char *)json + off;
            iov[niov].iov_len = len - off;
            niov++;
        }
        iov[niov].iov_base = (char *)&nul;
        iov[niov].iov_len = 1;
        niov++;

        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = niov };
        VmlFdControl control;
        if (!fds_sent)
            vml_wire_attach_fds(&mh, &control, fds, n_fds);
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                        "cannot send message: %s", g_strerror(errno));
            return FALSE;
        }
        fds_sent = TRUE;
        off += n;
    }
    return TRUE;
}

VmlFrameReader *
vml_frame_reader_new(void)
{
    VmlFrameReader *r = g_new0(VmlFrameReader, 1);
    r->buf = g_byte_array_sized_new(4096);
    g_queue_init(&r->fds);
    return r;
}

void
vml_fds_close(GArray *fds)
{
    if (!fds)
        return;
    for (guint i = 0; i < fds->len; i++)
        close(g_array_index(fds, int, i));
    g_array_unref(fds);
}

void
vml_frame_reader_free(VmlFrameReader *r)
{
    if (!r)
        return;
    g_byte_array_unref(r->buf);
    g_queue_clear_full(&r->fds, (GDestroyNotify)fd_batch_free);
    g_free(r);
}

gsize
vml_frame_reader_pending(VmlFrameReader *r)
{
    return r->buf->len - r->start;
}

int
vml_frame_reader_errno(VmlFrameReader *r)
{
    return r->error_errno;
}

/* Offset of the first NUL at or after scanned, or buf->len; each byte is
 * looked at once however the message arrives. */
static gsize
find_nul(VmlFrameReader *r)
{
    guint8 *nul = memchr(r->buf->data + r->scanned, '\0', r->buf->len - r->scanned);
    r->scanned = nul ? (gsize)(nul - r->buf->data) : r->buf->len;
    return r->scanned;
}

gboolean
vml_frame_reader_has_message(VmlFrameReader *r)
{
    return find_nul(r) < r->buf->len;
}

/* The kernel set MSG_CTRUNC although CONTROL had room for SCM_MAX_FD fds,
 * all one message can carry: it could not install them here. Say why. */
static void
set_fds_lost_error(VmlFrameReader *r, GError **error)
{
    int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);
    int err = probe < 0 ? errno : 0;
    if (probe >= 0)
        close(probe);
    if (err == EMFILE || err == ENFILE) {
        r->error_errno = err;
        g_set_error(error, VML_ERROR, VML_ERROR_LIMIT,
                    "out of file descriptors (%s): the ones sent with the message "
                    "could not be received", g_strerror(err));
        return;
    }
    r->error_errno = 0;
    g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                "the file descriptors sent with the message could not be received "
                "(refused by the kernel's security policy?)");
}

static VmlFillResult fill(VmlFrameReader *r, int sock, gsize max, int flags, GError **error);

VmlFillResult
vml_frame_reader_fill(VmlFrameReader *r, int sock, GError **error)
{
    return fill(r, sock, READ_CHUNK, MSG_DONTWAIT, error);
}

VmlFillResult
vml_frame_reader_fill_max(VmlFrameReader *r, int sock, gsize max, GError **error)
{
    return fill(r, sock, max, MSG_DONTWAIT, error);
}

VmlFillResult
vml_frame_reader_fill_wait(VmlFrameReader *r, int sock, GError **error)
{
    return fill(r, sock, READ_CHUNK, 0, error);
}

static VmlFillResult
fill(VmlFrameReader *r, int sock, gsize max, int flags, GError **error)
{
    guint8 chunk[READ_CHUNK];
    struct iovec iov = { .iov_base = chunk, .iov_len = CLAMP(max, 1, sizeof(chunk)) };
    VmlFdControl control;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    ssize_t n;

    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
    } while (n < 0 && errno == EINTR);

    r->error_errno = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return VML_FILL_AGAIN;
        r->error_errno = errno;
        gboolean short_of = errno == ENOMEM || errno == ENOBUFS;
        g_set_error(error, VML_ERROR, short_of ? VML_ERROR_LIMIT : VML_ERROR_PROTOCOL,
                    "cannot read message: %s", g_strerror(errno));
        return VML_FILL_ERROR;
    }
    GArray *got = NULL;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            guint nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *p = (int *)CMSG_DATA(cm);
            if (!got)
                got = g_array_new(FALSE, FALSE, sizeof(int));
            for (guint i = 0; i < nfd; i++) {
                int fd;
                memcpy(&fd, p + i, sizeof(int));
                g_array_append_val(got, fd);
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        /* Asked while what did come is still open: it may be why. */
        set_fds_lost_error(r, error);
        vml_fds_close(got);
        return VML_FILL_ERROR;
    }
    if (n == 0) {
        vml_fds_close(got);
        return VML_FILL_EOF;
    }

    /* Drop the messages already handed out once they are half the buffer:
     * every byte is moved at most once on average, however many messages
     * one read brings. */
    if (r->start > 0 && r->start >= r->buf->len - r->start) {
        g_byte_array_remove_range(r->buf, 0, r->start);
        r->scanned -= r->start;
        for (GList *l = r->fds.head; l; l = l->next)
            ((FdBatch *)l->data)->at -= r->start;
        r->start = 0;
    }
    g_byte_array_append(r->buf, chunk, n);
    if (got) {
        /* The last message starting in this read: after its last NUL but
         * one at the very end; with none, the message it went on with. */
        gsize at = r->start;
        for (gsize i = r->buf->len - 1; i > r->start; i--) {
            if (r->buf->data[i - 1] == '\0') {
                at = i;
                break;
            }
        }
        FdBatch *last = g_queue_peek_tail(&r->fds);
        if (last && last->at == at) {
            /* More fds for a message that brought some already. */
            g_array_append_vals(last->fds, got->data, got->len);
            g_array_unref(got);
        } else {
            FdBatch *b = g_new0(FdBatch, 1);
            b->at = at;
            b->fds = got;
            g_queue_push_tail(&r->fds, b);
        }
    }
    /* The limit applies to the first message in the buffer, up to its NUL
     * if that came in this read too. Callers pop every whole message before
     * they read again, so any later one in this read is under 64 KiB, and
     * is measured once it comes first. */
    if (find_nul(r) - r->start > VML_MSG_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                    "message longer than %d bytes", VML_MSG_MAX);
        return VML_FILL_ERROR;
    }
    /* fds pile up until their message ends: no more than one message may carry. */
    FdBatch *last = g_queue_peek_tail(&r->fds);
    if (last && last->fds->len > VML_FDS_MAX) {
        g_set_error(error, VML_ERROR, VML_ERROR_PROTOCOL,
                    "more than %d file descriptors sent with one message", VML_FDS_MAX);
        return VML_FILL_ERROR;
    }
    return VML_FILL_OK;
}

gboolean
vml_frame_reader_pop(VmlFrameReader *r, char **msg, gsize *len, GArray **fds)
{
    gsize end = find_nul(r);
    if (end == r->buf->len)
        return FALSE;
    gsize mlen = end - r->start;
    *msg = g_malloc(mlen + 1);
    memcpy(*msg, r->buf->data + r->start, mlen + 1);
    *len = mlen;
    /* This message's fds, if it came with any; fds no message of ours
     * claims (a sender breaking the rule above) are closed. */
    *fds = NULL;
    FdBatch *b;
    while ((b = g_queue_peek_head(&r->fds)) && b->at <= end) {
        g_queue_pop_head(&r->fds);
        if (b->at == r->start && !*fds)
            *fds = g_steal_pointer(&b->fds);
        fd_batch_free(b);
    }
    if (!*fds)
        *fds = g_array_new(FALSE, FALSE, sizeof(int));
    r->start = r->scanned = end + 1;
    if (r->start == r->buf->len) {
        /* All handed out: start afresh, giving back what a big message took. */
        if (r->buf->len > READ_CHUNK) {
            g_byte_array_unref(r->buf);
            r->buf = g_byte_array_sized_new(4096);
        } else {
            g_byte_array_set_size(r->buf, 0);
        }
        for (GList *l = r->fds.head; l; l = l->next)
            ((FdBatch *)l->data)->at -= end + 1;
        r->start = r->scanned = 0;
    }
    return TRUE;
}
