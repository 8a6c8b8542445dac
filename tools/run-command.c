/* Run a command for vmlease: wait for it, pass signals on, and make sure
 * it does not outlive us. */
#include "vmlease-cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Write TEXT to /proc/self/FILE. */
static gboolean
write_proc_self(const char *file, const char *text)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/%s", file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    gboolean ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Without root, a user namespace of our own (our uid and gid mapped to
 * themselves, so the command runs as who it is) lets us own a mount
 * namespace; it gives no rights over anything outside. */
static gboolean
own_namespaces(void)
{
    if (geteuid() == 0)
        return unshare(CLONE_NEWNS) == 0;
    char map[64];
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
        return FALSE;
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    if (!write_proc_self("uid_map", map) || !write_proc_self("setgroups", "deny"))
        return FALSE;
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    return write_proc_self("gid_map", map);
}

/* In the child: its own mount namespace, READ_ONLY bound read-only. */
static gboolean
make_read_only(const char *const *read_only)
{
    if (!own_namespaces()) {
        dprintf(STDERR_FILENO, "vmlease: cannot make a mount namespace for the command: %s\n",
                strerror(errno));
        return FALSE;
    }
    /* Nothing we mount may reach the rest of the system. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        dprintf(STDERR_FILENO, "vmlease: cannot make mounts private: %s\n", strerror(errno));
        return FALSE;
    }
    for (const char *const *p = read_only; *p; p++) {
        if (mount(*p, *p, NULL, MS_BIND, NULL) < 0 ||
            mount(NULL, *p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
            dprintf(STDERR_FILENO, "vmlease: cannot make %s read-only for the command: %s\n",
                    *p, strerror(errno));
            return FALSE;
        }
    }
    return TRUE;
}

int
cli_run_command(char **command, int pass_fd)
{
    return cli_run_command_read_only(command, pass_fd, NULL);
}

int
cli_run_command_read_only(char **command, int pass_fd, const char *const *read_only)
{
    static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP };
    sigset_t wait_set, old_mask;

    /* An inherited SIG_IGN would make the kernel reap the child for us. */
    signal(SIGCHLD, SIG_DFL);
    sigemptyset(&wait_set);
    sigaddset(&wait_set, SIGCHLD);
    for (guint i = 0; i < G_N_ELEMENTS(forwarded); i++)
        sigaddset(&wait_set, forwarded[i]);
    /* Blocked before fork: no signal can slip in between fork and wait. */
    sigprocmask(SIG_BLOCK, &wait_set, &old_mask);

    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        int saved = errno;
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        return cli_error(VML_EXIT_FAILED, "cannot fork: %s", g_strerror(saved));
    }
    if (child == 0) {
        /* COMMAND must not outlive its leases: if we die, it gets SIGTERM. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(128 + SIGTERM);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        if (read_only && *read_only && !make_read_only(read_only))
            _exit(126);
        if (pass_fd >= 0) {
            if (dup2(pass_fd, CLI_PASSED_FD) < 0)
                _exit(126);
            setenv("VMLEASE_FD", G_STRINGIFY(CLI_PASSED_FD), 1);
        }
        execvp(command[0], command);
        int saved = errno;
        dprintf(STDERR_FILENO, "vmlease: cannot run %s: %s\n", command[0], strerror(saved));
        _exit(saved == ENOENT ? 127 : 126);
    }

    int status = 0;
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&wait_set, &si);
        if (sig < 0)
            continue;   /* EINTR from a stop/continue */
        if (sig == SIGCHLD) {
            pid_t r = waitpid(child, &status, WNOHANG);
            if (r == child)
                break;
            continue;
        }
        /* A signal from the terminal (SI_KERNEL) already reached COMMAND,
         * which shares our process group: sending it again would make ^C
         * count twice. */
        if (si.si_code != SI_KERNEL)
            kill(child, sig);
    }
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
