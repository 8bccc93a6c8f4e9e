/* Route table compilation, the routes: RouteMatch, RouteAction (clusters, weighted clusters,
 * rewrites, timeouts), DirectResponseAction, RedirectAction and per-route header mutations.
 * Anything set that remora does not implement is an error naming its field path. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filters/percent.h"
#include "filters/retry_policy.h"
#include "proxy/http/route_int.h"

#define DEFAULT_ROUTE_TIMEOUT_MS 15000

static int unsupported(struct rm_route_ctx *c, const char *path, const char *field)
{
    char p[RM_RT_PATH];
    RT_PATH(p, path, "%s", field);
    return rm_error_set(c->err, "%s: not supported by remora", p);
}

static bool duration_nonzero(const Google__Protobuf__Duration *d)
{
    return d && (d->seconds != 0 || d->nanos != 0);
}

/* ---- clusters ----------------------------------------------------------------------------- */

static int resolve(struct rm_route_ctx *c, const char *name, const char *path, void **out)
{
    *out = c->resolve ? c->resolve(c->resolve_ctx, name) : NULL;
    if (!*out && c->resolve && c->validate_clusters)
        return rm_error_set(c->err, "%s: unknown cluster '%s'", path, name);
    return RM_OK;
}

static int cluster_weight(struct rm_route_ctx *c,
                          const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *cw,
                          const char *path, struct rm_weighted_cluster *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&cw->base, path, c->err) != RM_OK) return RM_ERR;
    if (*cw->cluster_header) return unsupported(c, path, "cluster_header");
    if (cw->metadata_match) return unsupported(c, path, "metadata_match");
    if (RM_RT_FILTER_CFGS(c, cw, path, &out->filter_cfgs) != RM_OK) return RM_ERR;
    RT_PATH(p, path, "name");
    if (!*cw->name) return rm_error_set(c->err, "%s: a cluster name is required", p);
    out->name = rm_rt_strdup(c, cw->name, strlen(cw->name), false);
    if (resolve(c, cw->name, p, &out->cluster) != RM_OK) return RM_ERR;
    if (cw->weight) {
        RT_PATH(p, path, "weight");
        if (rm_rt_check_unknown(&cw->weight->base, p, c->err) != RM_OK) return RM_ERR;
        out->weight = cw->weight->value;
    }
    if (cw->host_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL)
        out->host_rewrite_literal = rm_rt_strdup_opt(c, cw->host_rewrite_literal);
    struct rm_rt_hdr_lists l = RM_RT_HDR_LISTS(cw);
    return rm_rt_header_ops(c, &l, path, &out->headers);
}

static int weighted(struct rm_route_ctx *c, const Envoy__Config__Route__V3__WeightedCluster *wc,
                    const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&wc->base, path, c->err) != RM_OK) return RM_ERR;
    if (*wc->runtime_key_prefix) return unsupported(c, path, "runtime_key_prefix");
    if (wc->random_value_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__RANDOM_VALUE_SPECIFIER_HEADER_NAME)
        return unsupported(c, path, "header_name");
    /* total_weight is deprecated and ignored, as in Envoy: the sum of the weights is used */
    RT_PATH(p, path, "clusters");
    if (wc->n_clusters == 0) return rm_error_set(c->err, "%s: at least one cluster is required", p);
    r->weighted = rm_rt_alloc(c, wc->n_clusters * sizeof(*r->weighted));
    r->n_weighted = wc->n_clusters;
    r->total_weight = 0;
    for (size_t i = 0; i < wc->n_clusters; i++) {
        RT_PATH(p, path, "clusters[%zu]", i);
        if (cluster_weight(c, wc->clusters[i], p, &r->weighted[i]) != RM_OK) return RM_ERR;
        r->total_weight += r->weighted[i].weight;
    }
    if (r->total_weight > UINT32_MAX)
        return rm_error_set(c->err, "%s: the sum of the weights exceeds %u", path, UINT32_MAX);
    if (r->total_weight == 0)
        return rm_error_set(c->err, "%s: the sum of the weights must be greater than 0", path);
    return RM_OK;
}

static int cluster_specifier(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteAction *a,
                             const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    switch (a->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        RT_PATH(p, path, "cluster");
        if (!*a->cluster) return rm_error_set(c->err, "%s: must not be empty", p);
        r->cluster_name = rm_rt_strdup(c, a->cluster, strlen(a->cluster), false);
        return resolve(c, a->cluster, p, &r->cluster);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER:
        RT_PATH(p, path, "cluster_header");
        if (!rm_rt_header_name_ok(a->cluster_header))
            return rm_error_set(c->err, "%s: a valid header name is required", p);
        r->cluster_header = rm_rt_strdup(c, a->cluster_header, strlen(a->cluster_header), true);
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        RT_PATH(p, path, "weighted_clusters");
        return weighted(c, a->weighted_clusters, p, r);
    default:
        return rm_error_set(c->err,
                            "%s: one of cluster, cluster_header or weighted_clusters is required "
                            "(remora has no cluster_specifier_plugin)",
                            path);
    }
}

/* ---- request mirroring -------------------------------------------------------------------- */

static int mirror(struct rm_route_ctx *c,
                  const Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *m,
                  const char *path, struct rm_mirror_policy *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&m->base, path, c->err) != RM_OK) return RM_ERR;
    if (*m->cluster && *m->cluster_header)
        return rm_error_set(c->err, "%s: only one of cluster and cluster_header may be set", path);
    if (*m->cluster) {
        RT_PATH(p, path, "cluster");
        out->cluster_name = rm_rt_strdup(c, m->cluster, strlen(m->cluster), false);
        if (resolve(c, m->cluster, p, &out->cluster) != RM_OK) return RM_ERR;
    } else if (*m->cluster_header) {
        RT_PATH(p, path, "cluster_header");
        if (!rm_rt_header_name_ok(m->cluster_header))
            return rm_error_set(c->err, "%s: a valid header name is required", p);
        out->cluster_header = rm_rt_strdup(c, m->cluster_header, strlen(m->cluster_header), true);
    } else {
        return rm_error_set(c->err, "%s: one of cluster or cluster_header is required", path);
    }
    /* trace_sampled is accepted: remora does no tracing */
    struct rm_fraction f = {100, 100}; /* unset: every request */
    if (m->runtime_fraction) {
        /* remora has no runtime: the default_value decides, as Envoy with the key absent */
        RT_PATH(p, path, "runtime_fraction");
        if (rm_rt_check_unknown(&m->runtime_fraction->base, p, c->err) != RM_OK) return RM_ERR;
        RT_PATH(p, path, "runtime_fraction.default_value");
        if (rm_fraction_from_pb(m->runtime_fraction->default_value, p, &f, c->err) != RM_OK)
            return RM_ERR;
    }
    out->numerator = f.numerator;
    out->denominator = f.denominator;
    out->host_suffix = !m->disable_shadow_host_suffix_append;
    return RM_OK;
}

int rm_rt_mirrors(struct rm_route_ctx *c,
                  Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *const *v, size_t n,
                  const char *path, struct rm_mirror_policies *out)
{
    char p[RM_RT_PATH];
    out->n = n;
    out->v = NULL;
    if (!n) return RM_OK;
    struct rm_mirror_policy *m = rm_rt_alloc(c, n * sizeof(*m));
    out->v = m;
    for (size_t i = 0; i < n; i++) {
        RT_PATH(p, path, "request_mirror_policies[%zu]", i);
        if (mirror(c, v[i], p, &m[i]) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

/* ---- RouteAction -------------------------------------------------------------------------- */

static int host_rewrite(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteAction *a,
                        const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    switch (a->host_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL:
        r->host_rewrite_literal = rm_rt_strdup_opt(c, a->host_rewrite_literal);
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE:
        RT_PATH(p, path, "auto_host_rewrite");
        if (rm_rt_check_unknown(&a->auto_host_rewrite->base, p, c->err) != RM_OK) return RM_ERR;
        r->auto_host_rewrite = a->auto_host_rewrite->value;
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_HEADER:
        RT_PATH(p, path, "host_rewrite_header");
        if (!rm_rt_header_name_ok(a->host_rewrite_header))
            return rm_error_set(c->err, "%s: a valid header name is required", p);
        r->host_rewrite_header =
            rm_rt_strdup(c, a->host_rewrite_header, strlen(a->host_rewrite_header), true);
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_PATH_REGEX:
        return unsupported(c, path, "host_rewrite_path_regex");
    default:
        return RM_OK;
    }
}

static int max_stream_duration(struct rm_route_ctx *c,
                               const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *m,
                               const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&m->base, path, c->err) != RM_OK) return RM_ERR;
    /* Istio sends {max_stream_duration: 0s, grpc_timeout_header_max: 0s}: zero = disabled */
    if (duration_nonzero(m->max_stream_duration))
        return unsupported(c, path, "max_stream_duration");
    if (duration_nonzero(m->grpc_timeout_header_offset))
        return unsupported(c, path, "grpc_timeout_header_offset");
    if (m->grpc_timeout_header_max) {
        RT_PATH(p, path, "grpc_timeout_header_max");
        r->has_max_grpc_timeout = true;
        return rm_rt_duration_ms(m->grpc_timeout_header_max, p, &r->max_grpc_timeout_ms, c->err);
    }
    return RM_OK;
}

/* max_grpc_timeout and grpc_timeout_offset are deprecated but still honoured/rejected. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static int timeouts(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteAction *a,
                    const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    r->timeout_ms = DEFAULT_ROUTE_TIMEOUT_MS;
    if (a->timeout) {
        RT_PATH(p, path, "timeout");
        if (rm_rt_duration_ms(a->timeout, p, &r->timeout_ms, c->err) != RM_OK) return RM_ERR;
    }
    if (a->idle_timeout) {
        RT_PATH(p, path, "idle_timeout");
        r->has_idle_timeout = true;
        if (rm_rt_duration_ms(a->idle_timeout, p, &r->idle_timeout_ms, c->err) != RM_OK)
            return RM_ERR;
    }
    if (duration_nonzero(a->grpc_timeout_offset))
        return unsupported(c, path, "grpc_timeout_offset");
    if (a->max_grpc_timeout) {
        RT_PATH(p, path, "max_grpc_timeout");
        r->has_max_grpc_timeout = true;
        if (rm_rt_duration_ms(a->max_grpc_timeout, p, &r->max_grpc_timeout_ms, c->err) != RM_OK)
            return RM_ERR;
    }
    if (a->max_stream_duration) { /* its grpc_timeout_header_max wins over max_grpc_timeout */
        RT_PATH(p, path, "max_stream_duration");
        return max_stream_duration(c, a->max_stream_duration, p, r);
    }
    return RM_OK;
}

#pragma GCC diagnostic pop

static int forward(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteAction *a,
                   const char *path, struct rm_route *r)
{
    if (rm_rt_check_unknown(&a->base, path, c->err) != RM_OK) return RM_ERR;
    r->action = RM_ROUTE_FORWARD;
    if (a->metadata_match) return unsupported(c, path, "metadata_match");
    if (a->regex_rewrite) return unsupported(c, path, "regex_rewrite");
    if (cluster_specifier(c, a, path, r) != RM_OK || host_rewrite(c, a, path, r) != RM_OK ||
        timeouts(c, a, path, r) != RM_OK)
        return RM_ERR;
    switch (a->cluster_not_found_response_code) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__NOT_FOUND:
        r->cluster_not_found_code = 404;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__INTERNAL_SERVER_ERROR:
        r->cluster_not_found_code = 500;
        break;
    default:
        r->cluster_not_found_code = 503;
        break;
    }
    if (*a->prefix_rewrite) {
        r->prefix_rewrite_len = strlen(a->prefix_rewrite);
        r->prefix_rewrite = rm_rt_strdup(c, a->prefix_rewrite, r->prefix_rewrite_len, false);
    }
    if (rm_rt_mirrors(c, a->request_mirror_policies, a->n_request_mirror_policies, path,
                      &r->mirrors) != RM_OK)
        return RM_ERR;
    r->priority = a->priority == ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH ? 1 : 0;
    r->retry_policy = a->retry_policy;
    char p[RM_RT_PATH];
    RT_PATH(p, path, "retry_policy");
    return rm_retry_policy_compile(c, a->retry_policy, p, &r->retry);
}

/* ---- DirectResponseAction ----------------------------------------------------------------- */

/* Read <file> into the table; a file longer than max_body bytes is an error. */
static int read_file(struct rm_route_ctx *c, const char *file, const char *path, char **out,
                     size_t *len)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rm_error_set(c->err, "%s: cannot open \"%s\": %s", path, file, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = RM_ERR;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rm_error_set(c->err, "%s: out of memory reading \"%s\"", path, file);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rm_error_set(c->err, "%s: cannot read \"%s\": %s", path, file, strerror(errno));
            goto fail;
        }
        if (k == 0) break;
        n += (size_t)k;
        if (n > c->max_body) {
            rm_error_set(c->err,
                         "%s: \"%s\" is larger than %llu bytes "
                         "(max_direct_response_body_size_bytes)",
                         path, file, (unsigned long long)c->max_body);
            goto fail;
        }
    }
    *out = rm_rt_strdup(c, buf ? buf : "", n, false);
    *len = n;
    rc = RM_OK;
fail:
    free(buf);
    close(fd);
    return rc;
}

static int data_source(struct rm_route_ctx *c, const Envoy__Config__Core__V3__DataSource *ds,
                       const char *path, char **out, size_t *len)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&ds->base, path, c->err) != RM_OK) return RM_ERR;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        RT_PATH(p, path, "filename");
        return read_file(c, ds->filename, p, out, len);
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        *len = ds->inline_bytes.len;
        *out = rm_rt_strdup(c, *len ? (const char *)ds->inline_bytes.data : "", *len, false);
        return RM_OK;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        *len = strlen(ds->inline_string);
        *out = rm_rt_strdup(c, ds->inline_string, *len, false);
        return RM_OK;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE: {
        RT_PATH(p, path, "environment_variable");
        const char *v = getenv(ds->environment_variable);
        if (!v)
            return rm_error_set(c->err, "%s: environment variable \"%s\" is not set", p,
                                ds->environment_variable);
        *len = strlen(v);
        *out = rm_rt_strdup(c, v, *len, false);
        return RM_OK;
    }
    default:
        return rm_error_set(c->err,
                            "%s: one of filename, inline_bytes, inline_string or "
                            "environment_variable is required",
                            path);
    }
}

static int direct(struct rm_route_ctx *c, const Envoy__Config__Route__V3__DirectResponseAction *d,
                  const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&d->base, path, c->err) != RM_OK) return RM_ERR;
    r->action = RM_ROUTE_DIRECT;
    RT_PATH(p, path, "status");
    if (d->status < 200 || d->status >= 600)
        return rm_error_set(c->err, "%s: %u is not in [200, 600)", p, d->status);
    r->direct_status = (uint16_t)d->status;
    if (!d->body) return RM_OK;
    RT_PATH(p, path, "body");
    if (data_source(c, d->body, p, &r->direct_body, &r->direct_body_len) != RM_OK) return RM_ERR;
    if (r->direct_body_len > c->max_body)
        return rm_error_set(c->err,
                            "%s: response body size is %zu bytes; maximum is %llu "
                            "(max_direct_response_body_size_bytes)",
                            p, r->direct_body_len, (unsigned long long)c->max_body);
    return RM_OK;
}

/* ---- RedirectAction ----------------------------------------------------------------------- */

static int redirect(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RedirectAction *rd,
                    const char *path, struct rm_route *r)
{
    static const uint16_t codes[] = {301, 302, 303, 307, 308};
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&rd->base, path, c->err) != RM_OK) return RM_ERR;
    r->action = RM_ROUTE_REDIRECT;
    if ((unsigned)rd->response_code >= sizeof(codes) / sizeof(codes[0])) {
        RT_PATH(p, path, "response_code");
        return rm_error_set(c->err, "%s: unknown value %d", p, (int)rd->response_code);
    }
    r->redirect_status = codes[rd->response_code];
    r->redirect_host = rm_rt_strdup_opt(c, rd->host_redirect);
    if (rd->port_redirect > 65535) {
        RT_PATH(p, path, "port_redirect");
        return rm_error_set(c->err, "%s: %u is not a port", p, rd->port_redirect);
    }
    r->redirect_port = rd->port_redirect;
    r->strip_query = rd->strip_query;
    if (rd->scheme_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT)
        r->redirect_scheme = rd->https_redirect ? rm_rt_strdup(c, "https", 5, false) : NULL;
    else if (rd->scheme_rewrite_specifier_case ==
             ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT)
        r->redirect_scheme = rm_rt_strdup_opt(c, rd->scheme_redirect);
    switch (rd->path_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT:
        r->redirect_path = rm_rt_strdup(c, rd->path_redirect, strlen(rd->path_redirect), false);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE:
        r->redirect_prefix = rm_rt_strdup(c, rd->prefix_rewrite, strlen(rd->prefix_rewrite), false);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_REGEX_REWRITE:
        return unsupported(c, path, "regex_rewrite");
    default:
        break;
    }
    return RM_OK;
}

/* ---- RouteMatch --------------------------------------------------------------------------- */

/* Envoy's rule for path_separated_prefix: ^[^?#]+[^?#/]$ */
static bool separated_prefix_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 2 && !strpbrk(s, "?#") && s[n - 1] != '/';
}

static int path_specifier(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteMatch *m,
                          const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    const char *s = NULL;
    switch (m->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        r->path_kind = RM_PATH_PREFIX;
        s = m->prefix;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        r->path_kind = RM_PATH_EXACT;
        s = m->path;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX:
        r->path_kind = RM_PATH_SEPARATED_PREFIX;
        s = m->path_separated_prefix;
        RT_PATH(p, path, "path_separated_prefix");
        if (!separated_prefix_ok(s))
            return rm_error_set(c->err,
                                "%s: \"%s\" must have no '?' or '#' and must not end "
                                "with '/'",
                                p, s);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX:
        r->path_kind = RM_PATH_REGEX;
        RT_PATH(p, path, "safe_regex");
        return rm_rt_regex(c, m->safe_regex, p, &r->path_re);
    default:
        return rm_error_set(c->err,
                            "%s: one of prefix, path, safe_regex or path_separated_prefix "
                            "is required (remora has no connect_matcher or "
                            "path_match_policy)",
                            path);
    }
    r->path_len = strlen(s);
    r->path = rm_rt_strdup(c, s, r->path_len, false);
    r->prefix_plain = r->path_kind == RM_PATH_PREFIX && !strpbrk(s, "?#");
    return RM_OK;
}

static int match(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteMatch *m,
                 const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    if (!m) return rm_error_set(c->err, "%s: required", path);
    if (rm_rt_check_unknown(&m->base, path, c->err) != RM_OK) return RM_ERR;
    if (m->runtime_fraction) return unsupported(c, path, "runtime_fraction");
    if (path_specifier(c, m, path, r) != RM_OK) return RM_ERR;
    r->case_sensitive = true;
    if (m->case_sensitive) {
        RT_PATH(p, path, "case_sensitive");
        if (rm_rt_check_unknown(&m->case_sensitive->base, p, c->err) != RM_OK) return RM_ERR;
        r->case_sensitive = m->case_sensitive->value; /* ignored for safe_regex, as in Envoy */
    }
    if (m->grpc) {
        RT_PATH(p, path, "grpc");
        if (rm_rt_check_unknown(&m->grpc->base, p, c->err) != RM_OK) return RM_ERR;
        r->grpc_only = true;
    }
    r->n_headers = m->n_headers;
    r->headers = m->n_headers ? rm_rt_alloc(c, m->n_headers * sizeof(*r->headers)) : NULL;
    for (size_t i = 0; i < m->n_headers; i++) {
        RT_PATH(p, path, "headers[%zu]", i);
        if (rm_rt_header_matcher(c, m->headers[i], p, &r->headers[i]) != RM_OK) return RM_ERR;
    }
    r->n_query = m->n_query_parameters;
    r->query = r->n_query ? rm_rt_alloc(c, r->n_query * sizeof(*r->query)) : NULL;
    for (size_t i = 0; i < r->n_query; i++) {
        RT_PATH(p, path, "query_parameters[%zu]", i);
        if (rm_rt_query_matcher(c, m->query_parameters[i], p, &r->query[i]) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

/* ---- Route -------------------------------------------------------------------------------- */

static int action(struct rm_route_ctx *c, const Envoy__Config__Route__V3__Route *rt,
                  const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    switch (rt->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        RT_PATH(p, path, "route");
        return forward(c, rt->route, p, r);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT:
        RT_PATH(p, path, "redirect");
        return redirect(c, rt->redirect, p, r);
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE:
        RT_PATH(p, path, "direct_response");
        return direct(c, rt->direct_response, p, r);
    default:
        return rm_error_set(c->err,
                            "%s: one of route, redirect or direct_response is required "
                            "(remora has no filter_action or non_forwarding_action)",
                            path);
    }
}

static int route(struct rm_route_ctx *c, const Envoy__Config__Route__V3__Route *rt,
                 const char *path, struct rm_route *r)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&rt->base, path, c->err) != RM_OK) return RM_ERR;
    /* metadata is accepted: it is data for filters and logs, it changes no routing */
    /* decorator names the route's tracing span: remora does no tracing, so it has no effect (an
     * Envoy without a tracer ignores it too); Envoy's validation is kept */
    if (rt->decorator && !*rt->decorator->operation)
        return rm_error_set(c->err, "%s.decorator.operation: must not be empty", path);
    if (RM_RT_FILTER_CFGS(c, rt, path, &r->filter_cfgs) != RM_OK) return RM_ERR;
    if (rt->per_request_buffer_limit_bytes)
        r->per_request_buffer_limit = rt->per_request_buffer_limit_bytes->value;
    if (*rt->stat_prefix) return unsupported(c, path, "stat_prefix");
    r->name = rm_rt_strdup_opt(c, rt->name);
    RT_PATH(p, path, "match");
    if (match(c, rt->match, p, r) != RM_OK || action(c, rt, path, r) != RM_OK) return RM_ERR;
    struct rm_rt_hdr_lists l = RM_RT_HDR_LISTS(rt);
    return rm_rt_header_ops(c, &l, path, &r->headers_ops);
}

int rm_rt_routes(struct rm_route_ctx *c, Envoy__Config__Route__V3__Route *const *routes, size_t n,
                 const char *path, struct rm_route **out)
{
    char p[RM_RT_PATH];
    *out = n ? rm_rt_alloc(c, n * sizeof(**out)) : NULL;
    for (size_t i = 0; i < n; i++) {
        RT_PATH(p, path, "routes[%zu]", i);
        if (route(c, routes[i], p, &(*out)[i]) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}
