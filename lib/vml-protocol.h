/* The protocol's vocabulary, shared by vmleased and every client: method
 * names (docs/io.vmlease.{Lease,Stash,Admin}.varlink), beside the error names (vml-error.h)
 * and the lease modes (VmlMode, vml_mode_name/vml_mode_parse). A name is
 * spelt here once; the daemon's method table and the typed calls of
 * vml-lease-client.h use these. */
#pragma once

#define VML_METHOD_REGISTER       "io.vmlease.Lease.Register"
#define VML_METHOD_ACQUIRE        "io.vmlease.Lease.Acquire"
#define VML_METHOD_RELEASE        "io.vmlease.Lease.Release"
#define VML_METHOD_INQUIRE        "io.vmlease.Lease.Inquire"
#define VML_METHOD_OBSERVE        "io.vmlease.Lease.Observe"
#define VML_METHOD_OPEN_IMAGE     "io.vmlease.Lease.OpenImage"
#define VML_METHOD_REOPEN         "io.vmlease.Lease.Reopen"

#define VML_METHOD_STASH_GIVE     "io.vmlease.Stash.Give"
#define VML_METHOD_STASH_TAKE     "io.vmlease.Stash.Take"
#define VML_METHOD_STASH_PEEK     "io.vmlease.Stash.Peek"
#define VML_METHOD_STASH_LIST     "io.vmlease.Stash.List"
#define VML_METHOD_STASH_DROP     "io.vmlease.Stash.Drop"

#define VML_METHOD_LIST           "io.vmlease.Admin.List"
#define VML_METHOD_OWNERS         "io.vmlease.Admin.Owners"
#define VML_METHOD_STATUS         "io.vmlease.Admin.Status"
#define VML_METHOD_HOSTS          "io.vmlease.Admin.Hosts"
#define VML_METHOD_METRICS        "io.vmlease.Admin.Metrics"
#define VML_METHOD_FORCE_UNLOCK   "io.vmlease.Admin.ForceUnlock"
#define VML_METHOD_SET_LOG_LEVEL  "io.vmlease.Admin.SetLogLevel"

#define VML_METHOD_GET_INFO       "org.varlink.service.GetInfo"
#define VML_METHOD_GET_INTERFACE_DESCRIPTION "org.varlink.service.GetInterfaceDescription"
