#include "vml-mailbox-socket.h"
#include "vml-error.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
vml_mailbox_socket_new(GError **error)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    socklen_t len = sizeof(addr);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    /* An address length of just the family asks for an autobound name. */
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(sa_family_t)) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0 ||
        connect(fd, (struct sockaddr *)&addr, len) < 0) {
        int err = errno;
        g_set_error(error, VML_ERROR, VML_ERROR_BACKEND, "cannot make the VM's lock mailbox: %s",
                    g_strerror(err));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}
