/* The protocol's methods: the handler main.c gives the server. */
#pragma once

#include "server.h"

/* A VmlMessageHandler: parse MSG, check who may call what, run the method
 * and reply; closes whatever of FDS the method did not keep. */
void vml_dispatch(VmlDaemon *daemon, VmlConn *conn, const char *msg, gsize len, GArray *fds);
