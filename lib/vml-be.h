/* Big-endian integers in byte buffers (qcow2 and our own extension). */
#pragma once

#include <glib.h>
#include <string.h>

static inline guint32
vml_be32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static inline guint64
vml_be64(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static inline void
vml_put_be32(guint8 *p, guint32 v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static inline void
vml_put_be64(guint8 *p, guint64 v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}
