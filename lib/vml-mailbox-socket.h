/* A VM's lock mailbox, as the plugin makes it in the QEMU child before
 * exec: an AF_UNIX datagram socket bound to an autobound name and
 * connected to itself, kept open across exec and never read. vmleased
 * keeps in its queue the locks it takes for the VM later from libvirtd
 * (hotplug, block jobs, a migration's claim), so that they too live
 * exactly as long as the VM (lockd/holder-mailbox.h). Nobody else can
 * send to it: a connected datagram socket takes only its peer's. */
#pragma once

#include <glib.h>

/* A new mailbox socket (close-on-exec), or -1 with ERROR. */
int vml_mailbox_socket_new(GError **error);
