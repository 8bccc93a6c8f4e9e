/* GET /config_dump: Envoy's admin.v3.ConfigDump in the proto3 JSON mapping (.proto field names,
 * as Envoy prints it), built from the active snapshot:
 *
 *   {"configs":[
 *     {"@type": ".../envoy.admin.v3.BootstrapConfigDump", "bootstrap": {...}, "last_updated": T},
 *     {"@type": ".../envoy.admin.v3.ClustersConfigDump",
 *      "static_clusters": [{"cluster": {"@type": ".../envoy.config.cluster.v3.Cluster", ...},
 *                           "last_updated": T}, ...]},
 *     {"@type": ".../envoy.admin.v3.ListenersConfigDump",
 *      "static_listeners": [{"listener": {"@type": ...Listener, ...}, "last_updated": T}, ...]},
 *     {"@type": ".../envoy.admin.v3.RoutesConfigDump",
 *      "static_route_configs": [{"route_config": {"@type": ...RouteConfiguration, ...},
 *                                "last_updated": T}, ...]},       (inline HCM route_configs)
 *   plus, for resources received over xDS (active ones: what the snapshot serves),
 *   "dynamic_active_clusters": [{"version_info": V, "cluster": {...}, "last_updated": T}],
 *   "dynamic_listeners": [{"name": N, "active_state": {"version_info": V, "listener": {...},
 *   "last_updated": T}}] and "dynamic_route_configs": [{"version_info": V, "route_config":
 *   {...}, "last_updated": T}], T being when remora accepted that version; versions still
 *   warming as "dynamic_warming_clusters" and listeners' "warming_state".
 *     {"@type": ".../envoy.admin.v3.SecretsConfigDump",
 *      "static_secrets": [{"name": N, "last_updated": T, "secret": {"@type": ...Secret, ...}}],
 *      "dynamic_active_secrets": [{"name": N, "version_info": V, "secret": {...},
 *                                  "last_updated": T}]}   (received over SDS)
 *   ]}
 *
 * Every message goes through rm_pbprint_json with RM_PBPRINT_REDACT: private keys, passwords
 * and other sensitive fields print as "[redacted]".  T is the server start time (static
 * resources are loaded once).  ?resource=, ?mask= and ?name_regex= are not supported (400). */
#include <stdio.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "proxy/admin/admin_int.h"
#include "proxy/config/pbprint.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/snapshot.h"

#define TYPE_PREFIX "type.googleapis.com/"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;

struct dump {
    struct rm_strbuf *sb;
    char last_updated[48]; /* RFC 3339 */
    bool failed;           /* a message nested too deep: the text is invalid */
};

/* Print <m>; <m> NULL prints {}. */
static void put_msg(struct dump *d, const ProtobufCMessage *m)
{
    if (!m) {
        rm_strbuf_puts(d->sb, "{}");
        return;
    }
    if (rm_pbprint_json(m, RM_PBPRINT_REDACT, d->sb) != RM_OK) d->failed = true;
}

/* Print <m> as an Any: {"@type": "type.googleapis.com/<full name>", fields...}. */
static void put_any(struct dump *d, const ProtobufCMessage *m)
{
    struct rm_strbuf tmp = RM_STRBUF_INIT;
    if (rm_pbprint_json(m, RM_PBPRINT_REDACT, &tmp) != RM_OK) d->failed = true;
    const char *s = rm_strbuf_str(&tmp);
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX);
    rm_strbuf_puts(d->sb, m->descriptor->name);
    rm_strbuf_putc(d->sb, '"');
    const char *body = strchr(s, '{');
    if (body) {
        body++;
        while (*body == ' ' || *body == '\n' || *body == '\t' || *body == '\r')
            body++;
        if (*body != '}') rm_strbuf_putc(d->sb, ',');
        rm_strbuf_puts(d->sb, body);
    } else {
        rm_strbuf_putc(d->sb, '}');
    }
    rm_strbuf_dispose(&tmp);
}

static void put_last_updated(struct dump *d)
{
    rm_strbuf_printf(d->sb, "\"last_updated\":\"%s\"", d->last_updated);
}

/* "version_info":V,"<key>":<Any>,"last_updated":T of a resource received over xDS (<box>:
 * the message, or its bytes, decoded for the time of printing). */
static void put_dynamic(struct dump *d, const char *version, const char *key,
                        const struct rm_pb_box *box, uint64_t updated_ms)
{
    rm_strbuf_puts(d->sb, "\"version_info\":");
    rm_admin_json_str(d->sb, version ? version : "");
    rm_strbuf_printf(d->sb, ",\"%s\":", key);
    const ProtobufCMessage *m = rm_pb_box_open(box);
    if (m)
        put_any(d, m);
    else
        d->failed = true;
    rm_pb_box_close(box, m);
    struct rm_strbuf ts = RM_STRBUF_INIT;
    rm_pb_timestamp_format((int64_t)(updated_ms / 1000), (int32_t)(updated_ms % 1000) * 1000000,
                           &ts);
    rm_strbuf_printf(d->sb, ",\"last_updated\":\"%s\"", rm_strbuf_str(&ts));
    rm_strbuf_dispose(&ts);
}

/* ---- sections ----------------------------------------------------------------------------- */

static void dump_bootstrap(struct dump *d, const struct rm_snapshot *snap)
{
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX "envoy.admin.v3.BootstrapConfigDump\","
                          "\"bootstrap\":");
    put_msg(d, snap && snap->bootstrap ? &snap->bootstrap->base : NULL);
    rm_strbuf_putc(d->sb, ',');
    put_last_updated(d);
    rm_strbuf_putc(d->sb, '}');
}

static void dump_clusters(struct dump *d, const struct rm_snapshot *snap)
{
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX "envoy.admin.v3.ClustersConfigDump\"");
    size_t n = snap ? snap->n_clusters : 0, shown = 0;
    for (size_t i = 0; i < n; i++) {
        const struct rm_cluster *c = snap->clusters[i];
        if (!c->pb || c->version_info) continue;
        rm_strbuf_puts(d->sb, shown++ ? ",{\"cluster\":" : ",\"static_clusters\":[{\"cluster\":");
        put_any(d, &c->pb->base);
        rm_strbuf_putc(d->sb, ',');
        put_last_updated(d);
        rm_strbuf_putc(d->sb, '}');
    }
    if (shown) rm_strbuf_putc(d->sb, ']');
    size_t dyn = 0;
    for (size_t i = 0; i < n; i++) {
        const struct rm_cluster *c = snap->clusters[i];
        if (!c->pb_box || !c->version_info) continue;
        rm_strbuf_puts(d->sb, dyn++ ? ",{" : ",\"dynamic_active_clusters\":[{");
        put_dynamic(d, c->version_info, "cluster", c->pb_box, c->last_updated_ms);
        rm_strbuf_putc(d->sb, '}');
    }
    if (dyn) rm_strbuf_putc(d->sb, ']');
    for (size_t i = 0; snap && i < snap->n_warming_clusters; i++) {
        const struct rm_dyn_res *w = &snap->warming_clusters[i];
        rm_strbuf_puts(d->sb, i ? ",{" : ",\"dynamic_warming_clusters\":[{");
        put_dynamic(d, w->version_info, "cluster", w->pb, w->last_updated_ms);
        rm_strbuf_putc(d->sb, '}');
    }
    rm_strbuf_puts(d->sb, snap && snap->n_warming_clusters ? "]}" : "}");
}

/* The warming version of LDS listener <name> in <snap>, or NULL. */
static const struct rm_dyn_res *warming_listener(const struct rm_snapshot *snap, const char *name)
{
    for (size_t i = 0; snap && i < snap->n_warming_listeners; i++) {
        if (strcmp(snap->warming_listeners[i].name, name) == 0) return &snap->warming_listeners[i];
    }
    return NULL;
}

static void put_warming_state(struct dump *d, const struct rm_dyn_res *w)
{
    rm_strbuf_puts(d->sb, ",\"warming_state\":{");
    put_dynamic(d, w->version_info, "listener", w->pb, w->last_updated_ms);
    rm_strbuf_putc(d->sb, '}');
}

static const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *
static_resources(const struct rm_snapshot *snap)
{
    return snap && snap->bootstrap ? snap->bootstrap->static_resources : NULL;
}

static void dump_listeners(struct dump *d, const struct rm_snapshot *snap)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = static_resources(snap);
    size_t n = sr ? sr->n_listeners : 0;
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX "envoy.admin.v3.ListenersConfigDump\"");
    for (size_t i = 0; i < n; i++) {
        rm_strbuf_puts(d->sb, i ? ",{\"listener\":" : ",\"static_listeners\":[{\"listener\":");
        put_any(d, &sr->listeners[i]->base);
        rm_strbuf_putc(d->sb, ',');
        put_last_updated(d);
        rm_strbuf_putc(d->sb, '}');
    }
    if (n) rm_strbuf_putc(d->sb, ']');
    size_t dyn = 0;
    for (size_t i = 0; snap && i < snap->n_listeners; i++) {
        const struct rm_listener_cfg *lc = snap->listeners[i];
        if (!lc->dynamic) continue;
        rm_strbuf_puts(d->sb, dyn++ ? ",{\"name\":" : ",\"dynamic_listeners\":[{\"name\":");
        rm_admin_json_str(d->sb, lc->name);
        rm_strbuf_puts(d->sb, ",\"active_state\":{");
        put_dynamic(d, lc->version_info, "listener", lc->pb_box, lc->last_updated_ms);
        rm_strbuf_putc(d->sb, '}');
        const struct rm_dyn_res *w = warming_listener(snap, lc->name);
        if (w) put_warming_state(d, w);
        rm_strbuf_putc(d->sb, '}');
    }
    for (size_t i = 0; snap && i < snap->n_warming_listeners; i++) { /* not active yet */
        const struct rm_dyn_res *w = &snap->warming_listeners[i];
        bool active = false;
        for (size_t j = 0; j < snap->n_listeners && !active; j++)
            active = snap->listeners[j]->dynamic && strcmp(snap->listeners[j]->name, w->name) == 0;
        if (active) continue;
        rm_strbuf_puts(d->sb, dyn++ ? ",{\"name\":" : ",\"dynamic_listeners\":[{\"name\":");
        rm_admin_json_str(d->sb, w->name);
        put_warming_state(d, w);
        rm_strbuf_putc(d->sb, '}');
    }
    rm_strbuf_puts(d->sb, dyn ? "]}" : "}");
}

/* Print the inline route_config of one network filter if it is an HttpConnectionManager. */
static void route_of_filter(struct dump *d, const Envoy__Config__Listener__V3__Filter *f,
                            size_t *shown)
{
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
        !f->typed_config ||
        rm_pb_lookup_type_url(f->typed_config->type_url) !=
            &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor)
        return;
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(
            f->typed_config,
            &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
            &m, NULL) != RM_OK)
        return;
    const Hcm *hcm = (const Hcm *)m;
    if (hcm->route_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG &&
        hcm->route_config) {
        rm_strbuf_puts(d->sb, (*shown)++ ? ",{\"route_config\":"
                                         : ",\"static_route_configs\":[{\"route_config\":");
        put_any(d, &hcm->route_config->base);
        rm_strbuf_putc(d->sb, ',');
        put_last_updated(d);
        rm_strbuf_putc(d->sb, '}');
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void routes_of_chain(struct dump *d, const Envoy__Config__Listener__V3__FilterChain *fc,
                            size_t *shown)
{
    for (size_t i = 0; fc && i < fc->n_filters; i++)
        route_of_filter(d, fc->filters[i], shown);
}

static void dump_routes(struct dump *d, const struct rm_snapshot *snap)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = static_resources(snap);
    size_t shown = 0;
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX "envoy.admin.v3.RoutesConfigDump\"");
    for (size_t i = 0; sr && i < sr->n_listeners; i++) {
        const Envoy__Config__Listener__V3__Listener *l = sr->listeners[i];
        for (size_t j = 0; j < l->n_filter_chains; j++)
            routes_of_chain(d, l->filter_chains[j], &shown);
        routes_of_chain(d, l->default_filter_chain, &shown);
    }
    if (shown) rm_strbuf_putc(d->sb, ']');
    for (size_t i = 0; snap && i < snap->n_routes; i++) {
        const struct rm_dyn_res *r = &snap->routes[i];
        rm_strbuf_puts(d->sb, i ? ",{" : ",\"dynamic_route_configs\":[{");
        put_dynamic(d, r->version_info, "route_config", r->pb, r->last_updated_ms);
        rm_strbuf_putc(d->sb, '}');
    }
    rm_strbuf_puts(d->sb, snap && snap->n_routes ? "]}" : "}");
}

/* Static secrets, found through the descriptor (static_resources.secrets, if this build has
 * the field), so this file does not depend on the TLS protos. */
static void dump_secrets(struct dump *d, const struct rm_snapshot *snap)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = static_resources(snap);
    rm_strbuf_puts(d->sb, "{\"@type\":\"" TYPE_PREFIX "envoy.admin.v3.SecretsConfigDump\"");
    const ProtobufCFieldDescriptor *f =
        sr ? protobuf_c_message_descriptor_get_field_by_name(sr->base.descriptor, "secrets") : NULL;
    size_t n = 0;
    ProtobufCMessage *const *v = NULL;
    if (f && f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        n = *(const size_t *)(const void *)((const char *)sr + f->quantifier_offset);
        v = *(ProtobufCMessage *const *const *)(const void *)((const char *)sr + f->offset);
    }
    for (size_t i = 0; i < n; i++) {
        const ProtobufCFieldDescriptor *nf =
            protobuf_c_message_descriptor_get_field_by_name(v[i]->descriptor, "name");
        const char *name = NULL;
        if (nf && nf->type == PROTOBUF_C_TYPE_STRING && nf->label != PROTOBUF_C_LABEL_REPEATED)
            name = *(char *const *)(const void *)((const char *)v[i] + nf->offset);
        rm_strbuf_puts(d->sb, i ? ",{\"name\":" : ",\"static_secrets\":[{\"name\":");
        rm_admin_json_str(d->sb, name ? name : "");
        rm_strbuf_putc(d->sb, ',');
        put_last_updated(d);
        rm_strbuf_puts(d->sb, ",\"secret\":");
        put_any(d, v[i]);
        rm_strbuf_putc(d->sb, '}');
    }
    if (n) rm_strbuf_putc(d->sb, ']');
    for (size_t i = 0; snap && i < snap->n_dyn_secrets; i++) {
        const struct rm_dyn_res *s = &snap->dyn_secrets[i];
        rm_strbuf_puts(d->sb, i ? ",{\"name\":" : ",\"dynamic_active_secrets\":[{\"name\":");
        rm_admin_json_str(d->sb, s->name);
        rm_strbuf_putc(d->sb, ',');
        put_dynamic(d, s->version_info, "secret", s->pb, s->last_updated_ms);
        rm_strbuf_putc(d->sb, '}');
    }
    rm_strbuf_puts(d->sb, snap && snap->n_dyn_secrets ? "]}" : "}");
}

void rm_admin_handle_config_dump(struct rm_admin *a, const char *method,
                                 const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    static const char *const unsupported[] = {"resource", "mask", "name_regex"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        if (rm_admin_query_get(q, unsupported[i])) {
            rm_admin_resp_text(r, 400, "");
            rm_strbuf_printf(&r->body, "/config_dump?%s= is not supported by remora yet\n",
                             unsupported[i]);
            return;
        }
    }
    struct dump d = {.sb = &r->body};
    struct rm_strbuf ts = RM_STRBUF_INIT;
    rm_pb_timestamp_format((int64_t)a->start_time_s, 0, &ts);
    snprintf(d.last_updated, sizeof(d.last_updated), "%s", rm_strbuf_str(&ts));
    rm_strbuf_dispose(&ts);

    struct rm_snapshot *snap = rm_admin_snapshot(a);
    rm_strbuf_puts(d.sb, "{\"configs\":[");
    dump_bootstrap(&d, snap);
    rm_strbuf_putc(d.sb, ',');
    dump_clusters(&d, snap);
    rm_strbuf_putc(d.sb, ',');
    dump_listeners(&d, snap);
    rm_strbuf_putc(d.sb, ',');
    dump_routes(&d, snap);
    rm_strbuf_putc(d.sb, ',');
    dump_secrets(&d, snap);
    rm_strbuf_puts(d.sb, "]}\n");
    if (snap) rm_snapshot_unref(snap);
    if (d.failed) {
        rm_admin_resp_text(r, 500, "config_dump: configuration nested too deep to print\n");
        return;
    }
    r->content_type = RM_ADMIN_CT_JSON;
}
