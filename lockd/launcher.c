/* vmleased: the command that starts the daemon proper (vmleased-daemon).
 *
 * SIGUSR1 and SIGHUP ask vmleased for a re-exec, and their default action
 * ends the process. A handler cannot survive an exec, but a blocked mask
 * does, so the daemon keeps them blocked until its handler is in place.
 * What is left is the start of a process exec'd with them unblocked:
 * a dynamically linked daemon runs the loader and every library's
 * constructors (milliseconds) before any code of its own. This launcher is
 * static and has no C runtime: its very first instructions block both,
 * then it execs the daemon with them still blocked. Nothing else
 * happens here, so there is nothing else to get wrong.
 *
 * The daemon is looked for beside this file first (the build tree, or an
 * install that keeps both in one directory), then in VMLEASED_DAEMON. */
#include <signal.h>
#include <sys/syscall.h>

#if defined(__x86_64__) && defined(VMLEASE_FREESTANDING_LAUNCHER)

/* The kernel enters here with the stack holding argc, argv, envp. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call launcher_main\n"
        "  hlt\n");

static long
sys3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

static long
sys4(long nr, long a, long b, long c, long d)
{
    register long r10 __asm__("r10") = d;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

static unsigned long
length(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static void
say(const char *s)
{
    sys3(SYS_write, 2, (long)s, (long)length(s));
}

static const char daemon_name[] = "vmleased-daemon";

__attribute__((used, noreturn)) void launcher_main(long *sp);

void
launcher_main(long *sp)
{
    unsigned long usr1 = (1UL << (SIGUSR1 - 1)) | (1UL << (SIGHUP - 1));
    sys4(SYS_rt_sigprocmask, SIG_BLOCK, (long)&usr1, 0, sizeof(usr1));

    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;

    static char beside[4096];
    long n = sys3(SYS_readlink, (long)"/proc/self/exe", (long)beside,
                  (long)(sizeof(beside) - sizeof(daemon_name) - 1));
    while (n > 0 && beside[n - 1] != '/')
        n--;
    if (n > 0) {
        for (unsigned long i = 0; i < sizeof(daemon_name); i++)
            beside[n + i] = daemon_name[i];
        sys3(SYS_execve, (long)beside, (long)argv, (long)envp);
    }
    sys3(SYS_execve, (long)VMLEASED_DAEMON, (long)argv, (long)envp);
    say("vmleased: cannot execute " VMLEASED_DAEMON "\n");
    sys3(SYS_exit_group, 127, 0, 0);
    for (;;)
        ;
}

#else

/* Elsewhere: the same in C, after the C runtime's start (a shorter window
 * than the daemon's loader, not none). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
    (void)argc;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigaddset(&usr1, SIGHUP);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    static char beside[4096];
    ssize_t n = readlink("/proc/self/exe", beside, sizeof(beside) - 32);
    while (n > 0 && beside[n - 1] != '/')
        n--;
    if (n > 0) {
        strcpy(beside + n, "vmleased-daemon");
        execv(beside, argv);
    }
    execv(VMLEASED_DAEMON, argv);
    perror("vmleased: cannot execute " VMLEASED_DAEMON);
    return 127;
}

#endif
