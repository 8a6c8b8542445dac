#include "image-util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

void
image_util_run(const char *dir, const char *cmd)
{
    g_autofree char *full = g_strdup_printf("cd '%s' && %s", dir, cmd);
    g_assert_cmpint(system(full), ==, 0);
}

void
image_util_poke(const char *path, off_t offset, guint64 value, int width)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    guint8 b[8];
    for (int i = 0; i < width; i++)
        b[i] = value >> (8 * (width - 1 - i));
    g_assert_cmpint(pwrite(fd, b, width, offset), ==, width);
    close(fd);
}
