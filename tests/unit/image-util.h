/* Shared by the unit tests that make images with qemu-img and then lie in
 * their headers. */
#pragma once

#include <glib.h>
#include <sys/types.h>

/* Run the shell command CMD in DIR; assert it succeeds. */
void image_util_run(const char *dir, const char *cmd);
/* Write VALUE big-endian, WIDTH bytes, at OFFSET of PATH. */
void image_util_poke(const char *path, off_t offset, guint64 value, int width);
