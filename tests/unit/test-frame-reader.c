/* The frame reader's fds (lib/vml-wire): whatever one read brings, each
 * message gets exactly the fds it was sent with. Over a real AF_UNIX
 * stream socketpair; the sender writes a message with fds alone, as every
 * sender of ours does (vml_wire_send, the daemon's replies). */
#include "vml-wire.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    int s[2];                /* [0] sends, [1] reads */
    VmlFrameReader *reader;
} Pair;

static void
pair_init(Pair *p)
{
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->s), ==, 0);
    p->reader = vml_frame_reader_new();
}

static void
pair_clear(Pair *p)
{
    close(p->s[0]);
    close(p->s[1]);
    vml_frame_reader_free(p->reader);
}

/* A fresh fd whose inode tells it apart: a pipe's read end. */
static int
marked_fd(ino_t *ino)
{
    int fds[2];
    g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
    close(fds[1]);
    struct stat st;
    g_assert_cmpint(fstat(fds[0], &st), ==, 0);
    *ino = st.st_ino;
    return fds[0];
}

static void
send_msg(Pair *p, const char *text, const int *fds, guint n)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vml_wire_send(p->s[0], text, strlen(text), fds, n, &error));
    g_assert_no_error(error);
}

/* Pop the next message: it must be TEXT with fds of exactly INOS. */
static void
expect(Pair *p, const char *text, const ino_t *inos, guint n)
{
    char *msg;
    gsize len;
    GArray *fds;
    while (!vml_frame_reader_pop(p->reader, &msg, &len, &fds)) {
        g_autoptr(GError) error = NULL;
        g_assert_cmpint(vml_frame_reader_fill_wait(p->reader, p->s[1], &error), ==,
                        VML_FILL_OK);
    }
    g_assert_cmpstr(msg, ==, text);
    g_assert_cmpuint(fds->len, ==, n);
    for (guint i = 0; i < n; i++) {
        struct stat st;
        g_assert_cmpint(fstat(g_array_index(fds, int, i), &st), ==, 0);
        g_assert_cmpuint(st.st_ino, ==, inos[i]);
    }
    g_free(msg);
    vml_fds_close(fds);
}

/* Two replies queued before the reader looks, the second with an fd (a
 * Register reply and the Acquire's behind it): one read takes both, and
 * the fd is the second's. */
static void
test_fd_with_second_of_one_read(void)
{
    Pair p;
    pair_init(&p);
    ino_t ino;
    int fd = marked_fd(&ino);
    send_msg(&p, "{\"first\":1}", NULL, 0);
    send_msg(&p, "{\"second\":2}", &fd, 1);
    close(fd);
    expect(&p, "{\"first\":1}", NULL, 0);
    expect(&p, "{\"second\":2}", &ino, 1);
    pair_clear(&p);
}

/* Messages with fds back to back, and plain ones between: each its own. */
static void
test_each_message_its_fds(void)
{
    Pair p;
    pair_init(&p);
    ino_t a, b;
    int fa = marked_fd(&a), fb = marked_fd(&b);
    send_msg(&p, "{\"a\":1}", &fa, 1);
    send_msg(&p, "{\"b\":2}", &fb, 1);
    send_msg(&p, "{\"c\":3}", NULL, 0);
    send_msg(&p, "{\"d\":4}", NULL, 0);
    int both[2] = { fa, fb };
    ino_t inos[2] = { a, b };
    send_msg(&p, "{\"e\":5}", both, 2);
    close(fa);
    close(fb);
    expect(&p, "{\"a\":1}", &a, 1);
    expect(&p, "{\"b\":2}", &b, 1);
    expect(&p, "{\"c\":3}", NULL, 0);
    expect(&p, "{\"d\":4}", NULL, 0);
    expect(&p, "{\"e\":5}", inos, 2);
    pair_clear(&p);
}

/* One message whose fds came in two writes before its NUL: all its own. */
static void
test_fds_of_one_message_in_two_writes(void)
{
    Pair p;
    pair_init(&p);
    ino_t a, b;
    int fa = marked_fd(&a), fb = marked_fd(&b);
    struct iovec iov = { .iov_base = (char *)"{\"x\":", .iov_len = 5 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    VmlFdControl control;
    vml_wire_attach_fds(&mh, &control, &fa, 1);
    g_assert_cmpint(sendmsg(p.s[0], &mh, 0), ==, 5);
    g_autoptr(GError) error = NULL;
    g_assert_cmpint(vml_frame_reader_fill_wait(p.reader, p.s[1], &error), ==, VML_FILL_OK);
    send_msg(&p, "1}", &fb, 1);
    close(fa);
    close(fb);
    ino_t inos[2] = { a, b };
    expect(&p, "{\"x\":1}", inos, 2);
    pair_clear(&p);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/frame-reader/fd-with-second-of-one-read", test_fd_with_second_of_one_read);
    g_test_add_func("/frame-reader/each-message-its-fds", test_each_message_its_fds);
    g_test_add_func("/frame-reader/fds-of-one-message-in-two-writes",
                    test_fds_of_one_message_in_two_writes);
    return g_test_run();
}
