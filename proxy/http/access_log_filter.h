/* Access log filters, as Envoy's (AccessLog.filter: envoy.config.accesslog.v3.AccessLogFilter).
 *
 * A filter tree is compiled once, when the logger is built (config time, main thread), and is
 * immutable afterwards: every worker evaluates it, without locks, for each finished stream
 * before the line is formatted.  Semantics are Envoy's (source/common/access_log/
 * access_log_impl.cc), with what remora does not have stated per filter:
 *
 *   status_code_filter  the response status (0 when none was sent) against comparison.value
 *   duration_filter     the total stream duration in ms (false when unknown)
 *   not_health_check    always true: remora has no health-check filter, no request is one
 *   traceable_filter    always false: remora does no tracing
 *   runtime_filter      percent_sampled (0 % when absent) decided by x-request-id, else random
 *   and_filter/or_filter  in order, short-circuit
 *   header_filter       the route HeaderMatcher on the request headers
 *   response_flag_filter  any of the listed flags (any flag at all when the list is empty)
 *   grpc_status_filter  grpc-status of the trailers, else of the headers, else derived from
 *                       the HTTP status (Envoy's httpToGrpcStatus); for every request, gRPC
 *                       or not, as Envoy
 *   log_type_filter     remora logs once per stream, at its end: the type is DownstreamEnd
 *
 * remora has no runtime: a comparison's value.runtime_key and runtime_filter.runtime_key are
 * accepted and never override the defaults.  metadata_filter and extension_filter are rejected. */
#ifndef RM_HTTP_ACCESS_LOG_FILTER_H
#define RM_HTTP_ACCESS_LOG_FILTER_H

#include <stdbool.h>

#include "proxy/core/error.h"

struct rm_alog_info;
struct Envoy__Config__Accesslog__V3__AccessLogFilter;

/** A compiled filter tree. */
struct rm_alog_filter;

/** Compile AccessLogFilter <pb> found at <path> (e.g. "...access_log[0].filter").  <pb> is
 *  only read: the tree keeps nothing of it.  Returns the filter, or NULL with <err> naming the
 *  field at fault ("<path>.and_filter.filters[1].status_code_filter.comparison.op: ..."). */
struct rm_alog_filter *
rm_alog_filter_new(const struct Envoy__Config__Accesslog__V3__AccessLogFilter *pb, const char *path,
                   struct rm_error *err);
/** Free a filter (NULL is a no-op).  No evaluation may be running. */
void rm_alog_filter_free(struct rm_alog_filter *f);
/** Should the stream described by <in> be logged?  Any thread; no formatting and no malloc (a
 *  header_filter on a repeated request header joins its values in the request's arena, as
 *  route matching does). */
bool rm_alog_filter_eval(const struct rm_alog_filter *f, const struct rm_alog_info *in);

#endif
