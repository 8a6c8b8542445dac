#include "instance-lock.h"
#include "vml-error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* The pid the lock file names, 0 if it names none (yet). */
static long
named_pid(int fd)
{
    char text[32] = { 0 };
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    if (n <= 0)
        return 0;
    char *end;
    long pid = strtol(text, &end, 10);
    return end != text && pid > 0 ? pid : 0;
}

int
vml_instance_lock_take(const char *run_dir, GError **error)
{
    if (g_mkdir_with_parents(run_dir, 0755) < 0) {
        int err = errno;
        g_set_error(error, VML_ERROR, VML_ERROR_CONFIG, "cannot create %s: %s", run_dir,
                    g_strerror(err));
        return -1;
    }
    g_autofree char *path = g_build_filename(run_dir, "vmleased.pid", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot open %s: %s", path,
                    g_strerror(err));
        return -1;
    }
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return fd;
    int err = errno;
    long pid = err == EAGAIN || err == EACCES ? named_pid(fd) : 0;
    close(fd);
    if (err != EAGAIN && err != EACCES)
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED, "cannot lock %s: %s", path,
                    g_strerror(err));
    else if (pid)
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "vmleased is already running as pid %ld on %s: stop it first "
                    "(systemctl stop vmleased), or give this one another socket_dir",
                    pid, run_dir);
    else
        g_set_error(error, VML_ERROR, VML_ERROR_FAILED,
                    "another vmleased is starting on %s (%s is locked): stop it first, or "
                    "give this one another socket_dir", run_dir, path);
    return -1;
}

void
vml_instance_lock_write_pid(int fd)
{
    char text[32];
    int n = g_snprintf(text, sizeof(text), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)n, 0) != n)
        g_warning("cannot write the pid file: %s", g_strerror(errno));
}
