/* Resource files for the reference control plane: a directory of Envoy resources written in
 * the proto3 JSON mapping (YAML or JSON), read with the same walker as the bootstrap
 * (proxy/config/pbjson.h).
 *
 * Every regular file in the directory whose name ends in .yaml, .yml or .json and does not
 * start with '.' is read, in name order (subdirectories are not).  A file holds either
 *   - one resource: a mapping with "@type" (an Any), e.g.
 *       "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
 *       name: backend
 *       ...
 *   - or a list: a mapping with "resources" (a DiscoveryResponse, as Envoy's file-based
 *     subscriptions read): resources: [ {"@type": ..., ...}, ... ].  "version_info" is accepted
 *     and ignored (the store makes versions), "type_url", if given, must match every
 *     resource's; any other field is an error;
 *   - or nothing (empty, or only comments): no resources.
 * A resource's name is its message's "name" field ("cluster_name" for a ClusterLoadAssignment);
 * it must not be empty, and (type, name) must be unique across the directory.
 *
 * Errors name the file, the line and the field path ("dir/c.yaml:7: resources[1].lb_policy:
 * unknown enum value ..."), as the bootstrap's do. */
#ifndef RM_XDS_ADS_FILES_H
#define RM_XDS_ADS_FILES_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "proxy/core/error.h"
#include "xds/ads_store.h"

/** Add the resources of the file text <text>/<len> to <out>; <name> is the file name used in
 *  errors and as the resources' origin.  Returns RM_OK, or RM_ERR with <err> (resources added
 *  before the error stay in <out>). */
int rm_ads_load_text(const char *text, size_t len, const char *name, struct rm_ads_set *out,
                     struct rm_error *err);

/** Read every resource file of <dir> into <out> (initialised here; on RM_ERR it is left empty).
 *  *nfiles (may be NULL) gets the number of files read.  Returns RM_OK or RM_ERR with <err>. */
int rm_ads_load_dir(const char *dir, struct rm_ads_set *out, size_t *nfiles, struct rm_error *err);

/** The name of a resource message <m>: "name", or "cluster_name" for a ClusterLoadAssignment.
 *  NULL when the type has no such string field; "" when unset. */
const char *rm_ads_resource_name(const ProtobufCMessage *m);

#endif
