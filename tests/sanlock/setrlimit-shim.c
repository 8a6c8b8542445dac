/* Preloaded into the test's sanlock daemons: this machine forbids raising
 * RLIMIT_MEMLOCK and RLIMIT_RTPRIO even for root, and sanlock gives up when
 * it cannot. A failing setrlimit() reports success instead. Tests only:
 * real hosts need nothing of the sort. */
/* The build asks for 64-bit file offsets, which renames setrlimit() in the
 * headers; the symbol sanlock calls is the plain one. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <sys/resource.h>

int
setrlimit(__rlimit_resource_t resource, const struct rlimit *limit)
{
    int (*real)(__rlimit_resource_t, const struct rlimit *) = dlsym(RTLD_NEXT, "setrlimit");
    real(resource, limit);
    return 0;
}
