/* The owner header extension vmlease writes into a qcow2 image while a
 * writer holds it (extension type VML_QCOW2_EXT_OWNER, "vmle").
 *
 * Layout, all integers big-endian like the rest of qcow2 (docs/image-format.md):
 *    0  u32      layout version (1)
 *    4  u32      pid of the holder
 *    8  u64      pid start time (clock ticks after boot, /proc/PID/stat)
 *   16  u64      time set (seconds since the Unix epoch)
 *   24  u64      lease generation
 *   32  u8[16]   domain uuid (zero: none)
 *   48  u8[16]   machine-id
 *   64  u8[16]   boot-id
 *   80  hostname, program, domain name: each a u8 length and that many
 *       bytes of UTF-8, no NUL
 * Later layout versions may append fields; readers ignore what follows. */
#pragma once

#include <glib.h>

#define VML_IMAGE_OWNER_VERSION 1
#define VML_IMAGE_OWNER_FIXED 80
#define VML_IMAGE_OWNER_STRING_MAX 255

typedef struct {
    guint32 version;
    guint32 pid;
    guint64 start_time;
    gint64 time_set;
    guint64 generation;
    char *uuid;         /* "" when none */
    char *machine_id;   /* 32 hex digits */
    char *boot_id;      /* 8-4-4-4-12 */
    char *hostname;
    char *program;
    char *name;         /* domain name */
} VmlImageOwner;

void vml_image_owner_free(VmlImageOwner *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmlImageOwner, vml_image_owner_free)

/* Encode. Strings longer than 255 bytes are cut at a character boundary;
 * ids that do not parse are stored as zeros. */
GBytes *vml_image_owner_encode(const VmlImageOwner *o);
VmlImageOwner *vml_image_owner_decode(GBytes *data, GError **error);

/* For messages, as vml_owner_text() says an owner: VM "NAME" (uuid U, pid
 * P (PROGRAM) on host H, marked since T), or process "PROGRAM" (...) for a
 * mark of no VM; safe for a terminal. */
char *vml_image_owner_describe(const VmlImageOwner *o);

#include <json-glib/json-glib.h>
/* {pid, start_time, time_set, generation, uuid, machine_id, boot_id,
 *  host, program, name} */
JsonObject *vml_image_owner_to_json(const VmlImageOwner *o);
