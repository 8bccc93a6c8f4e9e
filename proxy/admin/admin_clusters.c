/* GET /clusters and GET /listeners, in Envoy's text and JSON (admin.v3.Clusters /
 * admin.v3.Listeners, proto3 JSON with the .proto field names) formats.
 *
 * The hosts are those of the cluster's current set (main thread: DNS clusters show their latest
 * addresses, LOGICAL_DNS where new connections go); per host, the counters come from struct
 * rm_host's atomics, the locality and priority from the load_assignment locality the host came
 * from.  Outlier detection: /failed_outlier_check in health_flags, the
 * success rates of the last interval, -1 (text) / absent (JSON) without enough data. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/admin/admin_int.h"
#include "proxy/config/pbutil.h"
#include "proxy/config/snapshot.h"
#include "proxy/upstream/original_dst.h"

/* ---- shared bits ------------------------------------------------------------------------ */

/* "127.0.0.1" / "::1" and the port of a socket address. */
static void ip_port(const struct sockaddr *ss, char *ip, size_t len, unsigned *port)
{
    snprintf(ip, len, "?");
    *port = 0;
    if (ss->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)len);
        *port = ntohs(a->sin_port);
    } else if (ss->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)len);
        *port = ntohs(a->sin6_port);
    }
}

/* An Address as Envoy prints one (a pipe: {"pipe":{"path":...}}, its name as in /clusters). */
static void json_address(struct rm_strbuf *sb, const struct sockaddr *ss)
{
    if (ss->sa_family == AF_UNIX) {
        char path[RM_SOCKADDR_STRLEN];
        rm_sockaddr_str(ss, path, sizeof(path));
        rm_strbuf_puts(sb, "{\"pipe\":{\"path\":");
        rm_admin_json_str(sb, path);
        rm_strbuf_puts(sb, "}}");
        return;
    }
    char ip[64];
    unsigned port;
    ip_port(ss, ip, sizeof(ip), &port);
    rm_strbuf_puts(sb, "{\"socket_address\":{\"address\":");
    rm_admin_json_str(sb, ip);
    rm_strbuf_printf(sb, ",\"port_value\":%u}}", port);
}

static bool want_json(const struct rm_admin_query *q, struct rm_admin_resp *r, const char *usage)
{
    const char *fmt = rm_admin_query_get(q, "format");
    if (fmt && strcmp(fmt, "json") == 0) {
        r->content_type = RM_ADMIN_CT_JSON;
        return true;
    }
    if (fmt && *fmt && strcmp(fmt, "text") != 0) rm_admin_resp_text(r, 400, usage);
    return false;
}

/* ---- circuit breakers ------------------------------------------------------------------- */

struct cb_limits {
    uint32_t max_connections, max_pending_requests, max_requests, max_retries;
};

/* The thresholds of <priority> (0 DEFAULT, 1 HIGH) the cluster enforces (Envoy's defaults for
 * unset ones), as parsed by the circuit breakers. */
static struct cb_limits cb_limits(const struct rm_cluster *c, int priority)
{
    struct cb_limits l = {1024, 1024, 1024, 3};
    const struct rm_cb *cb = c->cb[priority ? 1 : 0];
    if (!cb) return l;
    l.max_connections = cb->lim.max[RM_CB_CX];
    l.max_pending_requests = cb->lim.max[RM_CB_PENDING];
    l.max_requests = cb->lim.max[RM_CB_RQ];
    l.max_retries = cb->lim.max[RM_CB_RETRY];
    return l;
}

/* ---- host placement (locality, priority) ------------------------------------------------ */

struct host_place {
    const char *region, *zone, *sub_zone;
    uint32_t priority;
};

/* Where <h> sits in the cluster's load_assignment (its locality's index). */
static struct host_place host_place(const struct rm_cluster *c, const struct rm_host *h)
{
    struct host_place p = {"", "", "", 0};
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la =
        c->pb ? c->pb->load_assignment : NULL;
    if (!la || h->locality_idx < 0 || (size_t)h->locality_idx >= la->n_endpoints) return p;
    const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *e = la->endpoints[h->locality_idx];
    if (e->locality) {
        p.region = e->locality->region ? e->locality->region : "";
        p.zone = e->locality->zone ? e->locality->zone : "";
        p.sub_zone = e->locality->sub_zone ? e->locality->sub_zone : "";
    }
    p.priority = e->priority;
    return p;
}

/* The address /clusters shows for host <idx> of the cluster's current set: where its new
 * connections go (a LOGICAL_DNS host follows the latest answer). */
static const struct sockaddr *shown_addr(const struct rm_host_set *hs, size_t idx, const char **str)
{
    socklen_t len;
    const struct sockaddr *sa = rm_host_set_connect_addr(hs, hs->hosts[idx], &len);
    *str = hs->logical && sa == &hs->logical->addr.sa ? hs->logical->str : hs->hosts[idx]->addr_str;
    return sa;
}

/* The hosts /clusters lists (a reference; NULL when out of memory): the current set, or an
 * ORIGINAL_DST cluster's live hosts. */
static struct rm_host_set *shown_hosts(const struct rm_cluster *c)
{
    return c->odst ? rm_odst_hosts(c) : rm_host_set_ref(c->hs);
}

/* ---- host counters ---------------------------------------------------------------------- */

struct host_stat {
    const char *name;
    size_t off; /* of the _Atomic int64_t in struct rm_host */
    bool gauge;
};

/* Alphabetical, as Envoy's text output sorts them. */
static const struct host_stat host_stats[] = {
    {"cx_active", offsetof(struct rm_host, cx_active), true},
    {"cx_connect_fail", offsetof(struct rm_host, cx_connect_fail), false},
    {"cx_total", offsetof(struct rm_host, cx_total), false},
    {"rq_active", offsetof(struct rm_host, rq_active), true},
    {"rq_error", offsetof(struct rm_host, rq_error), false},
    {"rq_success", offsetof(struct rm_host, rq_success), false},
    {"rq_timeout", offsetof(struct rm_host, rq_timeout), false},
    {"rq_total", offsetof(struct rm_host, rq_total), false},
};

#define N_HOST_STATS (sizeof(host_stats) / sizeof(host_stats[0]))

static long long host_stat(const struct rm_host *h, const struct host_stat *s)
{
    const _Atomic int64_t *p = (const _Atomic int64_t *)(const void *)((const char *)h + s->off);
    return (long long)atomic_load_explicit(p, memory_order_relaxed);
}

/* A double as Envoy's fmt "{}" prints it: the shortest fixed notation that reads back the same
 * (success rates are in [-1, 100]). */
static void put_double(struct rm_strbuf *sb, double v)
{
    char buf[64];
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*f", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    rm_strbuf_puts(sb, buf);
}

static const char *eds_flags(enum rm_health h)
{
    switch (h) {
    case RM_HEALTH_UNHEALTHY:
    case RM_HEALTH_DRAINING:
    case RM_HEALTH_TIMEOUT:
        return "/failed_eds_health";
    case RM_HEALTH_DEGRADED:
        return "/degraded_eds_health";
    case RM_HEALTH_UNKNOWN:
    case RM_HEALTH_HEALTHY:
        break;
    }
    return "";
}

/* Envoy's HostUtility::healthFlagsToString: the flags in enum order (FAILED_ACTIVE_HC,
 * FAILED_OUTLIER_CHECK, FAILED_EDS_HEALTH, DEGRADED_EDS_HEALTH, PENDING_ACTIVE_HC,
 * ACTIVE_HC_TIMEOUT), or "healthy". */
static void put_health_flags(struct rm_strbuf *sb, const struct rm_host *h)
{
    bool ejected = rm_outlier_ejected(&h->outlier);
    const char *eds = eds_flags(h->health);
    unsigned hc = rm_host_hc_flags(h);
    if (!ejected && !*eds && !hc) {
        rm_strbuf_puts(sb, "healthy");
        return;
    }
    if (hc & RM_HOST_FAILED_ACTIVE_HC) rm_strbuf_puts(sb, "/failed_active_hc");
    if (ejected) rm_strbuf_puts(sb, "/failed_outlier_check");
    rm_strbuf_puts(sb, eds);
    if (hc & RM_HOST_PENDING_ACTIVE_HC) rm_strbuf_puts(sb, "/pending_active_hc");
    if (hc & RM_HOST_ACTIVE_HC_TIMEOUT) rm_strbuf_puts(sb, "/active_hc_timeout");
}

static double host_success_rate(const struct rm_host *h, enum rm_outlier_origin o)
{
    return h->outlier.x ? h->outlier.x->success_rate[o] : -1;
}

static const char *eds_health_status(enum rm_health h)
{
    switch (h) {
    case RM_HEALTH_UNHEALTHY:
        return "UNHEALTHY";
    case RM_HEALTH_DRAINING:
        return "DRAINING";
    case RM_HEALTH_TIMEOUT:
        return "TIMEOUT";
    case RM_HEALTH_DEGRADED:
        return "DEGRADED";
    case RM_HEALTH_UNKNOWN:
    case RM_HEALTH_HEALTHY:
        break;
    }
    return "HEALTHY";
}

/* ---- /clusters text --------------------------------------------------------------------- */

static void text_cb(struct rm_strbuf *sb, const char *name, const char *prio, struct cb_limits l)
{
    rm_strbuf_printf(sb, "%s::%s_priority::max_connections::%u\n", name, prio, l.max_connections);
    rm_strbuf_printf(sb, "%s::%s_priority::max_pending_requests::%u\n", name, prio,
                     l.max_pending_requests);
    rm_strbuf_printf(sb, "%s::%s_priority::max_requests::%u\n", name, prio, l.max_requests);
    rm_strbuf_printf(sb, "%s::%s_priority::max_retries::%u\n", name, prio, l.max_retries);
}

static void text_host(struct rm_strbuf *sb, const struct rm_cluster *c,
                      const struct rm_host_set *hs, size_t idx)
{
    const struct rm_host *h = hs->hosts[idx];
    const char *n = c->name, *a;
    shown_addr(hs, idx, &a);
    struct host_place p = host_place(c, h);
    for (size_t i = 0; i < N_HOST_STATS; i++)
        rm_strbuf_printf(sb, "%s::%s::%s::%lld\n", n, a, host_stats[i].name,
                         host_stat(h, &host_stats[i]));
    rm_strbuf_printf(sb, "%s::%s::hostname::%s\n", n, a, h->hostname ? h->hostname : "");
    rm_strbuf_printf(sb, "%s::%s::health_flags::", n, a);
    put_health_flags(sb, h);
    rm_strbuf_putc(sb, '\n');
    rm_strbuf_printf(sb, "%s::%s::weight::%u\n", n, a, h->weight);
    rm_strbuf_printf(sb, "%s::%s::region::%s\n", n, a, p.region);
    rm_strbuf_printf(sb, "%s::%s::zone::%s\n", n, a, p.zone);
    rm_strbuf_printf(sb, "%s::%s::sub_zone::%s\n", n, a, p.sub_zone);
    rm_strbuf_printf(sb, "%s::%s::canary::false\n", n, a);
    rm_strbuf_printf(sb, "%s::%s::priority::%u\n", n, a, p.priority);
    rm_strbuf_printf(sb, "%s::%s::success_rate::", n, a);
    put_double(sb, host_success_rate(h, RM_OUTLIER_EXTERNAL));
    rm_strbuf_printf(sb, "\n%s::%s::local_origin_success_rate::", n, a);
    put_double(sb, host_success_rate(h, RM_OUTLIER_LOCAL));
    rm_strbuf_putc(sb, '\n');
}

/* Envoy's addOutlierInfo ("{:g}"), only for clusters with outlier detection. */
static void text_outlier(struct rm_strbuf *sb, const struct rm_cluster *c)
{
    const struct rm_outlier *d = c->outlier;
    if (!d) return;
    rm_strbuf_printf(sb, "%s::outlier::success_rate_average::%g\n", c->name,
                     d->sr_average[RM_OUTLIER_EXTERNAL]);
    rm_strbuf_printf(sb, "%s::outlier::success_rate_ejection_threshold::%g\n", c->name,
                     d->sr_threshold[RM_OUTLIER_EXTERNAL]);
    rm_strbuf_printf(sb, "%s::outlier::local_origin_success_rate_average::%g\n", c->name,
                     d->sr_average[RM_OUTLIER_LOCAL]);
    rm_strbuf_printf(sb, "%s::outlier::local_origin_success_rate_ejection_threshold::%g\n", c->name,
                     d->sr_threshold[RM_OUTLIER_LOCAL]);
}

static void text_cluster(struct rm_strbuf *sb, const struct rm_cluster *c)
{
    rm_strbuf_printf(sb, "%s::observability_name::%s\n", c->name,
                     c->stat_name ? c->stat_name : c->name);
    text_outlier(sb, c);
    text_cb(sb, c->name, "default", cb_limits(c, 0));
    text_cb(sb, c->name, "high", cb_limits(c, 1));
    rm_strbuf_printf(sb, "%s::added_via_api::false\n", c->name);
    struct rm_host_set *hs = shown_hosts(c);
    for (size_t i = 0; hs && i < hs->n; i++)
        text_host(sb, c, hs, i);
    rm_host_set_unref(hs);
}

/* ---- /clusters JSON --------------------------------------------------------------------- */

static void json_threshold(struct rm_strbuf *sb, const char *prio, struct cb_limits l)
{
    rm_strbuf_putc(sb, '{');
    if (prio) rm_strbuf_printf(sb, "\"priority\":\"%s\",", prio);
    rm_strbuf_printf(sb,
                     "\"max_connections\":%u,\"max_pending_requests\":%u,\"max_requests\":%u,"
                     "\"max_retries\":%u}",
                     l.max_connections, l.max_pending_requests, l.max_requests, l.max_retries);
}

/* ,"<name>":{"value":v} (type.v3.Percent) when <v> was computed (≥ 0). */
static void json_percent(struct rm_strbuf *sb, const char *name, double v)
{
    if (v < 0) return;
    rm_strbuf_printf(sb, ",\"%s\":{\"value\":", name);
    put_double(sb, v);
    rm_strbuf_putc(sb, '}');
}

static void json_host(struct rm_strbuf *sb, const struct rm_cluster *c,
                      const struct rm_host_set *hs, size_t idx)
{
    const struct rm_host *h = hs->hosts[idx];
    struct host_place p = host_place(c, h);
    const char *unused;
    rm_strbuf_puts(sb, "{\"address\":");
    json_address(sb, shown_addr(hs, idx, &unused));
    rm_strbuf_puts(sb, ",\"stats\":[");
    /* counters first, then gauges, as Envoy lists them */
    bool first = true;
    for (int gauges = 0; gauges < 2; gauges++) {
        for (size_t i = 0; i < N_HOST_STATS; i++) {
            if (host_stats[i].gauge != (bool)gauges) continue;
            rm_strbuf_printf(sb, "%s{\"name\":\"%s\",\"value\":\"%lld\"%s}", first ? "" : ",",
                             host_stats[i].name, host_stat(h, &host_stats[i]),
                             gauges ? ",\"type\":\"GAUGE\"" : "");
            first = false;
        }
    }
    unsigned hc = rm_host_hc_flags(h);
    rm_strbuf_printf(sb, "],\"health_status\":{%s%s\"eds_health_status\":\"%s\"%s%s}",
                     hc & RM_HOST_FAILED_ACTIVE_HC ? "\"failed_active_health_check\":true," : "",
                     rm_outlier_ejected(&h->outlier) ? "\"failed_outlier_check\":true," : "",
                     eds_health_status(h->health),
                     hc & RM_HOST_PENDING_ACTIVE_HC ? ",\"pending_active_hc\":true" : "",
                     hc & RM_HOST_ACTIVE_HC_TIMEOUT ? ",\"active_hc_timeout\":true" : "");
    json_percent(sb, "success_rate", host_success_rate(h, RM_OUTLIER_EXTERNAL));
    rm_strbuf_printf(sb, ",\"weight\":%u", h->weight);
    if (h->hostname && *h->hostname) {
        rm_strbuf_puts(sb, ",\"hostname\":");
        rm_admin_json_str(sb, h->hostname);
    }
    if (p.priority) rm_strbuf_printf(sb, ",\"priority\":%u", p.priority);
    json_percent(sb, "local_origin_success_rate", host_success_rate(h, RM_OUTLIER_LOCAL));
    rm_strbuf_puts(sb, ",\"locality\":{");
    const char *sep = "";
    const char *keys[] = {"region", "zone", "sub_zone"};
    const char *vals[] = {p.region, p.zone, p.sub_zone};
    for (int i = 0; i < 3; i++) {
        if (!*vals[i]) continue;
        rm_strbuf_printf(sb, "%s\"%s\":", sep, keys[i]);
        rm_admin_json_str(sb, vals[i]);
        sep = ",";
    }
    rm_strbuf_puts(sb, "}}");
}

static void json_cluster(struct rm_strbuf *sb, const struct rm_cluster *c)
{
    rm_strbuf_puts(sb, "{\"name\":");
    rm_admin_json_str(sb, c->name);
    if (c->outlier)
        json_percent(sb, "success_rate_ejection_threshold",
                     c->outlier->sr_threshold[RM_OUTLIER_EXTERNAL]);
    rm_strbuf_puts(sb, ",\"host_statuses\":[");
    struct rm_host_set *hs = shown_hosts(c);
    for (size_t i = 0; hs && i < hs->n; i++) {
        if (i) rm_strbuf_putc(sb, ',');
        json_host(sb, c, hs, i);
    }
    rm_host_set_unref(hs);
    rm_strbuf_putc(sb, ']');
    if (c->outlier)
        json_percent(sb, "local_origin_success_rate_ejection_threshold",
                     c->outlier->sr_threshold[RM_OUTLIER_LOCAL]);
    rm_strbuf_puts(sb, ",\"circuit_breakers\":{\"thresholds\":[");
    json_threshold(sb, NULL, cb_limits(c, 0));
    rm_strbuf_putc(sb, ',');
    json_threshold(sb, "HIGH", cb_limits(c, 1));
    rm_strbuf_puts(sb, "]},\"observability_name\":");
    rm_admin_json_str(sb, c->stat_name ? c->stat_name : c->name);
    rm_strbuf_putc(sb, '}');
}

void rm_admin_handle_clusters(struct rm_admin *a, const char *method,
                              const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    bool json = want_json(q, r, "usage: /clusters?format=(text|json)\n");
    if (r->status != 200) return;
    struct rm_snapshot *snap = rm_admin_snapshot(a);
    size_t n = snap ? snap->n_clusters : 0;
    if (json) rm_strbuf_puts(&r->body, "{\"cluster_statuses\":[");
    for (size_t i = 0; i < n; i++) {
        if (json && i) rm_strbuf_putc(&r->body, ',');
        if (json)
            json_cluster(&r->body, snap->clusters[i]);
        else
            text_cluster(&r->body, snap->clusters[i]);
    }
    if (json) rm_strbuf_puts(&r->body, "]}\n");
    if (snap) rm_snapshot_unref(snap);
}

/* ---- /listeners --------------------------------------------------------------------------- */

void rm_admin_handle_listeners(struct rm_admin *a, const char *method,
                               const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    bool json = want_json(q, r, "usage: /listeners?format=(text|json)\n");
    if (r->status != 200) return;
    struct rm_snapshot *snap = rm_admin_snapshot(a);
    size_t n = snap ? snap->n_listeners : 0;
    if (json) rm_strbuf_puts(&r->body, "{\"listener_statuses\":[");
    for (size_t i = 0; i < n; i++) {
        const struct rm_listener_cfg *l = snap->listeners[i];
        const char *name = l->name ? l->name : l->addr_str;
        if (!json) {
            rm_strbuf_printf(&r->body, "%s::%s\n", name, l->addr_str);
            continue;
        }
        rm_strbuf_puts(&r->body, i ? ",{\"name\":" : "{\"name\":");
        rm_admin_json_str(&r->body, name);
        rm_strbuf_puts(&r->body, ",\"local_address\":");
        json_address(&r->body, (const struct sockaddr *)&l->addr);
        rm_strbuf_putc(&r->body, '}');
    }
    if (json) rm_strbuf_puts(&r->body, "]}\n");
    if (snap) rm_snapshot_unref(snap);
}
