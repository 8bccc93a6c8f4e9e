/* envoy.filters.http.rbac: role based access control (Istio's AuthorizationPolicy).
 *
 * The policies of `rules` (and of `shadow_rules`, which only count) are compiled once into
 * trees of permission and principal nodes.  Per request, with its headers: a policy matches
 * when one of its permissions and one of its principals match; ALLOW lets the request through
 * when some policy matches, DENY when none does, LOG always (as Envoy).  A denied request gets
 * 403 "RBAC: access denied", flag RBAC, details rbac_access_denied_matched_policy[<name>|none].
 * Policies are tried in name order (Envoy keeps them in a sorted map), so the policy named in
 * the details is the first matching one by name.
 *
 * What a node looks at: request headers (HeaderMatcher), the path without query string and
 * fragment (PathMatcher), the connection's local address (destination_ip / _port /
 * _port_range: the original destination when the listener restored it), its peer address
 * (direct_remote_ip, source_ip, remote_ip: remora does not take the client address from
 * x-forwarded-for), the SNI (requested_server_name; "" without one) and the peer certificate
 * (authenticated: its URI SANs, then its DNS SANs; without principal_name any certificate).
 * Envoy also matches the certificate's subject when no SAN matches: remora does not.
 * Rejected with their field path: metadata (remora has no dynamic metadata), CEL conditions,
 * matcher / uri_template / filter_state, audit logging, the xDS matcher API, per-rule stats.
 *
 * Stats (Envoy's): http.<stat_prefix>.rbac.<rules_stat_prefix>allowed / denied, and
 * http.<stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed / shadow_denied.
 * typed_per_filter_config takes an RBACPerRoute: its rbac replaces the filter's rules for that
 * route (counted in the filter's stats); an RBACPerRoute without rbac turns the filter off. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "filters/filter.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/hcm.h"
#include "proxy/http/route.h"
#include "proxy/net/tls.h"

typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBAC RbacFilter;
typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBACPerRoute RbacPerRoute;
typedef Envoy__Config__Rbac__V3__RBAC Rules;
typedef Envoy__Config__Rbac__V3__Policy Policy;
typedef Envoy__Config__Rbac__V3__Permission Permission;
typedef Envoy__Config__Rbac__V3__Principal Principal;
typedef Envoy__Config__Core__V3__CidrRange CidrRange;

#define DENIED_BODY "RBAC: access denied"
#define DENIED_NONE "rbac_access_denied_matched_policy[none]"
#define MAX_DEPTH 64 /* nesting of and/or/not: a config bound, not Envoy's */

/* One table for both blocks (rules_stat_prefix and shadow_rules_stat_prefix may be equal: the
 * same block then holds all four) */
enum { RB_ALLOWED, RB_DENIED, RB_SHADOW_ALLOWED, RB_SHADOW_DENIED, RB__COUNT };
static const struct rm_stat_def rbac_defs[RB__COUNT] = {
    [RB_ALLOWED] = {"allowed", RM_COUNTER},
    [RB_DENIED] = {"denied", RM_COUNTER},
    [RB_SHADOW_ALLOWED] = {"shadow_allowed", RM_COUNTER},
    [RB_SHADOW_DENIED] = {"shadow_denied", RM_COUNTER},
};

/* ---- compiled policies -------------------------------------------------------------------- */

enum node_kind {
    N_ANY,
    N_AND,
    N_OR,
    N_NOT,
    N_HEADER,
    N_PATH,
    N_DST_IP,
    N_DST_PORT,
    N_DST_PORT_RANGE,
    N_SNI,
    N_PEER_IP, /* direct_remote_ip, remote_ip, source_ip */
    N_AUTHENTICATED,
};

struct cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned len; /* prefix length in bits */
};

struct node {
    enum node_kind kind;
    struct node *kids; /* N_AND, N_OR: n of them; N_NOT: one */
    size_t n;
    union {
        struct rm_header_match header; /* N_HEADER */
        struct rm_str_match str;       /* N_PATH, N_SNI, N_AUTHENTICATED (when has_str) */
        struct cidr cidr;              /* N_DST_IP, N_PEER_IP */
        struct {
            int64_t lo, hi; /* N_DST_PORT_RANGE: [lo, hi); N_DST_PORT: lo */
        } port;
    } u;
    bool has_str; /* N_AUTHENTICATED with a principal_name */
};

struct policy {
    const char *name;
    const char *details; /* rbac_access_denied_matched_policy[<name>] */
    struct node perms;   /* an OR of the permissions */
    struct node ids;     /* an OR of the principals */
};

enum rbac_action { ACT_ALLOW, ACT_DENY, ACT_LOG };

struct rules {
    enum rbac_action action;
    struct policy *v; /* sorted by name */
    size_t n;
};

/* A compiled RBAC filter config (listener level or per route). */
struct rbac_config {
    bool has_rules, has_shadow; /* unset rules: the filter lets everything through */
    bool disabled;              /* per route: an RBACPerRoute without rbac */
    struct rules rules, shadow;
    struct rm_stats *stats, *shadow_stats; /* listener level only (NULL per route) */
    struct rm_route_parts *parts;          /* every node, string and matcher */
};

struct rbac {
    struct rm_filter base;
};

/* ---- config ------------------------------------------------------------------------------- */

struct cc {
    struct rm_route_parts *parts;
    struct rm_error *err;
};

/* Envoy fields remora does not implement (absent from its .proto subset), by message. */
static const struct rm_pb_field_name filter_fields[] = {{4, "matcher"}, {5, "shadow_matcher"}};
static const struct rm_pb_field_name rules_fields[] = {{3, "audit_logging_options"}};
static const struct rm_pb_field_name policy_fields[] = {{3, "condition"}, {4, "checked_condition"}};
static const struct rm_pb_field_name perm_fields[] = {{12, "matcher"}, {13, "uri_template"}};
static const struct rm_pb_field_name id_fields[] = {{12, "filter_state"}};
#define CHECK_FIELDS(m, tab, path, err)                                                            \
    rm_pb_check_named(&(m)->base, (tab), sizeof(tab) / sizeof((tab)[0]), (path), (err))

static int cidr(struct cc *c, const CidrRange *r, const char *path, struct cidr *out)
{
    if (rm_pb_check_no_unknown(&r->base, path, c->err)) return RM_ERR;
    if (inet_pton(AF_INET, r->address_prefix, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, r->address_prefix, out->addr) == 1)
        out->family = AF_INET6;
    else
        return rm_error_set(c->err, "%s.address_prefix: not an IP address: \"%s\"", path,
                            r->address_prefix);
    unsigned max = out->family == AF_INET ? 32 : 128;
    out->len = r->prefix_len ? r->prefix_len->value : 0; /* Envoy: unset is 0 */
    if (out->len > max)
        return rm_error_set(c->err, "%s.prefix_len: %u is over %u", path, out->len, max);
    return RM_OK;
}

static int path_matcher(struct cc *c, const Envoy__Type__Matcher__V3__PathMatcher *pm,
                        const char *path, struct rm_str_match *out)
{
    char p[600];
    if (rm_pb_check_no_unknown(&pm->base, path, c->err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.path", path);
    if (!pm->path) return rm_error_set(c->err, "%s: required", p);
    return rm_route_parts_str_matcher(c->parts, pm->path, p, out, c->err);
}

static int permission(struct cc *c, const Permission *pb, const char *path, unsigned depth,
                      struct node *out);
static int principal(struct cc *c, const Principal *pb, const char *path, unsigned depth,
                     struct node *out);

/* The kids of an and/or node (<field> names them in paths). */
static int perm_set(struct cc *c, const Envoy__Config__Rbac__V3__Permission__Set *set,
                    enum node_kind kind, const char *path, unsigned depth, struct node *out)
{
    char p[600];
    if (rm_pb_check_no_unknown(&set->base, path, c->err)) return RM_ERR;
    if (!set->n_rules) return rm_error_set(c->err, "%s.rules: at least one is required", path);
    if (set->n_rules == 1) { /* Istio wraps single rules in sets: the rule itself, one eval */
        snprintf(p, sizeof(p), "%s.rules[0]", path);
        return permission(c, set->rules[0], p, depth + 1, out);
    }
    out->kind = kind;
    out->n = set->n_rules;
    out->kids = rm_route_parts_alloc(c->parts, set->n_rules * sizeof(*out->kids));
    for (size_t i = 0; i < set->n_rules; i++) {
        snprintf(p, sizeof(p), "%s.rules[%zu]", path, i);
        if (permission(c, set->rules[i], p, depth + 1, &out->kids[i])) return RM_ERR;
    }
    return RM_OK;
}

static int id_set(struct cc *c, const Envoy__Config__Rbac__V3__Principal__Set *set,
                  enum node_kind kind, const char *path, unsigned depth, struct node *out)
{
    char p[600];
    if (rm_pb_check_no_unknown(&set->base, path, c->err)) return RM_ERR;
    if (!set->n_ids) return rm_error_set(c->err, "%s.ids: at least one is required", path);
    if (set->n_ids == 1) {
        snprintf(p, sizeof(p), "%s.ids[0]", path);
        return principal(c, set->ids[0], p, depth + 1, out);
    }
    out->kind = kind;
    out->n = set->n_ids;
    out->kids = rm_route_parts_alloc(c->parts, set->n_ids * sizeof(*out->kids));
    for (size_t i = 0; i < set->n_ids; i++) {
        snprintf(p, sizeof(p), "%s.ids[%zu]", path, i);
        if (principal(c, set->ids[i], p, depth + 1, &out->kids[i])) return RM_ERR;
    }
    return RM_OK;
}

static int permission(struct cc *c, const Permission *pb, const char *path, unsigned depth,
                      struct node *out)
{
    char p[600];
    if (depth > MAX_DEPTH)
        return rm_error_set(c->err, "%s: nested deeper than %d", path, MAX_DEPTH);
    if (CHECK_FIELDS(pb, perm_fields, path, c->err)) return RM_ERR;
#define F(name) (snprintf(p, sizeof(p), "%s." name, path), p)
    switch (pb->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        return perm_set(c, pb->and_rules, N_AND, F("and_rules"), depth, out);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        return perm_set(c, pb->or_rules, N_OR, F("or_rules"), depth, out);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        if (!pb->any) return rm_error_set(c->err, "%s: must be true", F("any"));
        out->kind = N_ANY;
        return RM_OK;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        out->kind = N_HEADER;
        return rm_route_parts_header_matcher(c->parts, pb->header, F("header"), &out->u.header,
                                             c->err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        out->kind = N_PATH;
        return path_matcher(c, pb->url_path, F("url_path"), &out->u.str);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        out->kind = N_DST_IP;
        return cidr(c, pb->destination_ip, F("destination_ip"), &out->u.cidr);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        if (pb->destination_port > 65535)
            return rm_error_set(c->err, "%s: over 65535", F("destination_port"));
        out->kind = N_DST_PORT;
        out->u.port.lo = pb->destination_port;
        return RM_OK;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE:
        if (rm_pb_check_no_unknown(&pb->destination_port_range->base, F("destination_port_range"),
                                   c->err))
            return RM_ERR;
        out->kind = N_DST_PORT_RANGE;
        out->u.port.lo = pb->destination_port_range->start;
        out->u.port.hi = pb->destination_port_range->end;
        return RM_OK;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME:
        out->kind = N_SNI;
        return rm_route_parts_str_matcher(c->parts, pb->requested_server_name,
                                          F("requested_server_name"), &out->u.str, c->err);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        out->kind = N_NOT;
        out->n = 1;
        out->kids = rm_route_parts_alloc(c->parts, sizeof(*out->kids));
        return permission(c, pb->not_rule, F("not_rule"), depth + 1, out->kids);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_METADATA:
        return rm_error_set(c->err, "%s: not supported by remora (no dynamic metadata)",
                            F("metadata"));
    default:
        return rm_error_set(c->err, "%s: a rule is required", path);
    }
}

static int principal(struct cc *c, const Principal *pb, const char *path, unsigned depth,
                     struct node *out)
{
    char p[600];
    if (depth > MAX_DEPTH)
        return rm_error_set(c->err, "%s: nested deeper than %d", path, MAX_DEPTH);
    if (CHECK_FIELDS(pb, id_fields, path, c->err)) return RM_ERR;
    switch (pb->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        return id_set(c, pb->and_ids, N_AND, F("and_ids"), depth, out);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        return id_set(c, pb->or_ids, N_OR, F("or_ids"), depth, out);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        if (!pb->any) return rm_error_set(c->err, "%s: must be true", F("any"));
        out->kind = N_ANY;
        return RM_OK;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED: {
        const Envoy__Config__Rbac__V3__Principal__Authenticated *a = pb->authenticated;
        out->kind = N_AUTHENTICATED;
        if (rm_pb_check_no_unknown(&a->base, F("authenticated"), c->err)) return RM_ERR;
        if (!a->principal_name) return RM_OK;
        out->has_str = true;
        return rm_route_parts_str_matcher(c->parts, a->principal_name,
                                          F("authenticated.principal_name"), &out->u.str, c->err);
    }
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        out->kind = N_PEER_IP;
        return cidr(c, pb->source_ip, F("source_ip"), &out->u.cidr);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        out->kind = N_PEER_IP;
        return cidr(c, pb->direct_remote_ip, F("direct_remote_ip"), &out->u.cidr);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        out->kind = N_PEER_IP;
        return cidr(c, pb->remote_ip, F("remote_ip"), &out->u.cidr);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        out->kind = N_HEADER;
        return rm_route_parts_header_matcher(c->parts, pb->header, F("header"), &out->u.header,
                                             c->err);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        out->kind = N_PATH;
        return path_matcher(c, pb->url_path, F("url_path"), &out->u.str);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        out->kind = N_NOT;
        out->n = 1;
        out->kids = rm_route_parts_alloc(c->parts, sizeof(*out->kids));
        return principal(c, pb->not_id, F("not_id"), depth + 1, out->kids);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA:
        return rm_error_set(c->err, "%s: not supported by remora (no dynamic metadata)",
                            F("metadata"));
    default:
        return rm_error_set(c->err, "%s: an identifier is required", path);
    }
#undef F
}

static int policy(struct cc *c, const char *name, const Policy *pb, const char *path,
                  struct policy *out)
{
    char p[600];
    if (CHECK_FIELDS(pb, policy_fields, path, c->err)) return RM_ERR;
    if (!pb->n_permissions)
        return rm_error_set(c->err, "%s.permissions: at least one is required", path);
    if (!pb->n_principals)
        return rm_error_set(c->err, "%s.principals: at least one is required", path);
    out->name = rm_route_parts_strdup(c->parts, name);
    size_t dl = strlen(name) + sizeof("rbac_access_denied_matched_policy[]");
    char *d = rm_route_parts_alloc(c->parts, dl);
    snprintf(d, dl, "rbac_access_denied_matched_policy[%s]", name);
    out->details = d;
    /* an OR of each list; a list of one is its node itself */
    struct node *perms = &out->perms, *ids = &out->ids;
    struct node *pk = perms, *ik = ids;
    if (pb->n_permissions > 1) {
        perms->kind = N_OR;
        perms->n = pb->n_permissions;
        pk = perms->kids = rm_route_parts_alloc(c->parts, perms->n * sizeof(*pk));
    }
    for (size_t i = 0; i < pb->n_permissions; i++) {
        snprintf(p, sizeof(p), "%s.permissions[%zu]", path, i);
        if (permission(c, pb->permissions[i], p, 1, &pk[i])) return RM_ERR;
    }
    if (pb->n_principals > 1) {
        ids->kind = N_OR;
        ids->n = pb->n_principals;
        ik = ids->kids = rm_route_parts_alloc(c->parts, ids->n * sizeof(*ik));
    }
    for (size_t i = 0; i < pb->n_principals; i++) {
        snprintf(p, sizeof(p), "%s.principals[%zu]", path, i);
        if (principal(c, pb->principals[i], p, 1, &ik[i])) return RM_ERR;
    }
    return RM_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

static int rules(struct cc *c, const Rules *pb, const char *path, struct rules *out)
{
    char p[600];
    if (CHECK_FIELDS(pb, rules_fields, path, c->err)) return RM_ERR;
    switch (pb->action) {
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW:
        out->action = ACT_ALLOW;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY:
        out->action = ACT_DENY;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG:
        out->action = ACT_LOG;
        break;
    default:
        return rm_error_set(c->err, "%s.action: unknown value %d", path, (int)pb->action);
    }
    /* in name order, as Envoy's std::map; the entries are sorted in a copy of the array */
    size_t n = pb->n_policies;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry **e =
        rm_route_parts_alloc(c->parts, (n ? n : 1) * sizeof(*e));
    memcpy(e, pb->policies, n * sizeof(*e));
    qsort(e, n, sizeof(*e), entry_cmp);
    out->n = n;
    out->v = rm_route_parts_alloc(c->parts, (n ? n : 1) * sizeof(*out->v));
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof(p), "%s.policies[\"%s\"]", path, e[i]->key);
        if (i && strcmp(e[i]->key, e[i - 1]->key) == 0)
            return rm_error_set(c->err, "%s: duplicate policy name", p);
        if (!e[i]->value) return rm_error_set(c->err, "%s: empty policy", p);
        if (policy(c, e[i]->key, e[i]->value, p, &out->v[i])) return RM_ERR;
    }
    return RM_OK;
}

static void rbac_config_free(void *p)
{
    struct rbac_config *cfg = p;
    if (!cfg) return;
    rm_route_parts_free(cfg->parts);
    rm_stats_release(cfg->stats);
    rm_stats_release(cfg->shadow_stats);
    free(cfg);
}

/* The filter's RBAC message into <cfg>; <prefix>: the chain's stats prefix ("http.<p>."), NULL
 * per route (no stats of its own). */
static int compile(struct rbac_config *cfg, const RbacFilter *pb, const char *prefix,
                   const char *path, struct rm_error *err)
{
    char p[600];
    struct cc c = {.parts = cfg->parts, .err = err};
    if (CHECK_FIELDS(pb, filter_fields, path, err)) return RM_ERR;
    if (pb->track_per_rule_stats)
        return rm_error_set(err, "%s.track_per_rule_stats: not supported by remora", path);
    if (pb->rules) {
        snprintf(p, sizeof(p), "%s.rules", path);
        cfg->has_rules = true;
        if (rules(&c, pb->rules, p, &cfg->rules)) return RM_ERR;
    }
    if (pb->shadow_rules) {
        snprintf(p, sizeof(p), "%s.shadow_rules", path);
        cfg->has_shadow = true;
        if (rules(&c, pb->shadow_rules, p, &cfg->shadow)) return RM_ERR;
    }
    if (prefix) {
        char sp[800];
        snprintf(sp, sizeof(sp), "%srbac.%s", prefix, pb->rules_stat_prefix);
        cfg->stats = rm_stats_get(sp, rbac_defs, RB__COUNT);
        snprintf(sp, sizeof(sp), "%srbac.%s", prefix, pb->shadow_rules_stat_prefix);
        cfg->shadow_stats = rm_stats_get(sp, rbac_defs, RB__COUNT);
    }
    return RM_OK;
}

static struct rbac_config *config_new(void)
{
    struct rbac_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) abort();
    cfg->parts = rm_route_parts_new();
    return cfg;
}

static void *unpack_fail(struct rbac_config *cfg)
{
    rbac_config_free(cfg);
    return NULL;
}

static void *rbac_config_new_in(const struct rm_filter_chain_info *chain,
                                const Google__Protobuf__Any *any, const char *path,
                                struct rm_error *err)
{
    char p[600];
    snprintf(p, sizeof(p), "%s.typed_config", path);
    struct rbac_config *cfg = config_new();
    if (!any) { /* an empty RBAC: no rules, the filter lets everything through */
        const RbacFilter empty = ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
        if (compile(cfg, &empty, chain->stats_prefix, p, err)) return unpack_fail(cfg);
        return cfg;
    }
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(any, &envoy__extensions__filters__http__rbac__v3__rbac__descriptor, &m,
                         err)) {
        rm_error_prefix(err, "%s: ", p);
        return unpack_fail(cfg);
    }
    int rc = compile(cfg, (const RbacFilter *)m, chain->stats_prefix, p, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc ? unpack_fail(cfg) : cfg;
}

static void *rbac_route_config_new(const Google__Protobuf__Any *any, const char *path,
                                   struct rm_error *err)
{
    struct rbac_config *cfg = config_new();
    ProtobufCMessage *m;
    if (!any ||
        rm_pb_any_unpack(
            any, &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor, &m, err)) {
        if (!any) rm_error_set(err, "an RBACPerRoute is required");
        rm_error_prefix(err, "%s: ", path);
        return unpack_fail(cfg);
    }
    const RbacPerRoute *pr = (const RbacPerRoute *)m;
    int rc = rm_pb_check_no_unknown(&pr->base, path, err);
    if (!rc && pr->rbac) {
        char p[600];
        snprintf(p, sizeof(p), "%s.rbac", path);
        rc = compile(cfg, pr->rbac, NULL, p, err);
    } else if (!rc) {
        cfg->disabled = true; /* Envoy: an RBACPerRoute without rbac turns the filter off */
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc ? unpack_fail(cfg) : cfg;
}

/* ---- matching ----------------------------------------------------------------------------- */

/* What the nodes of one request look at, gathered on first use. */
struct input {
    struct rm_hcm_stream *hs;
    const struct rm_headers *req;
    struct rm_hcm_conn *hc;
    bool facts;         /* rm_hcm_conn_facts called */
    bool have_path;     /* path set */
    struct rm_str path; /* :path up to its query string or fragment (p NULL: no :path) */
};

static const struct rm_hcm_conn *facts(struct input *in)
{
    if (!in->facts) {
        rm_hcm_conn_facts(in->hc);
        in->facts = true;
    }
    return in->hc;
}

static bool cidr_match(const struct cidr *r, const struct sockaddr_in6 *sa)
{
    const uint8_t *a;
    if (sa->sin6_family == AF_INET && r->family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sin6_family == AF_INET6 && r->family == AF_INET6)
        a = sa->sin6_addr.s6_addr;
    else
        return false;
    unsigned full = r->len / 8, bits = r->len % 8;
    if (memcmp(a, r->addr, full) != 0) return false;
    if (!bits) return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[full] & mask) == (r->addr[full] & mask);
}

static int port_of(const struct sockaddr_in6 *sa)
{
    if (sa->sin6_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sin6_family == AF_INET6) return ntohs(sa->sin6_port);
    return -1;
}

static bool path_match(const struct rm_str_match *m, struct input *in)
{
    if (!in->have_path) { /* once per request */
        struct rm_str p = rm_headers_get_key(in->req, RM_HK_PATH);
        size_t n = 0;
        while (n < p.len && p.p[n] != '?' && p.p[n] != '#')
            n++;
        in->path = (struct rm_str){p.p, n};
        in->have_path = true;
    }
    return in->path.p && rm_str_match_eval(m, in->path.p, in->path.len);
}

/* authenticated: a peer certificate (the connection's TLS facts, read once per connection),
 * and with a principal_name one of its URI then DNS SANs matching it. */
static bool authenticated(const struct node *nd, struct input *in)
{
    const struct rm_tls_info *ti = facts(in)->tls_info;
    if (!ti || !ti->peer_sans) return false;
    if (!nd->has_str) return true;
    for (const char *s = ti->peer_sans; *s; s += strlen(s) + 1)
        if (rm_str_match_eval(&nd->u.str, s, strlen(s))) return true;
    return false;
}

static bool eval(const struct node *nd, struct input *in)
{
    switch (nd->kind) {
    case N_ANY:
        return true;
    case N_AND:
        for (size_t i = 0; i < nd->n; i++)
            if (!eval(&nd->kids[i], in)) return false;
        return true;
    case N_OR:
        for (size_t i = 0; i < nd->n; i++)
            if (eval(&nd->kids[i], in)) return true;
        return false;
    case N_NOT:
        return !eval(nd->kids, in);
    case N_HEADER:
        return rm_header_match_eval(&nd->u.header, in->req);
    case N_PATH:
        return path_match(&nd->u.str, in);
    case N_DST_IP:
        return cidr_match(&nd->u.cidr, &facts(in)->local_addr);
    case N_DST_PORT:
        return port_of(&facts(in)->local_addr) == nd->u.port.lo;
    case N_DST_PORT_RANGE: {
        int port = port_of(&facts(in)->local_addr);
        return port >= 0 && port >= nd->u.port.lo && port < nd->u.port.hi;
    }
    case N_PEER_IP:
        return cidr_match(&nd->u.cidr, &facts(in)->peer_addr);
    case N_SNI: {
        const struct rm_tls_info *ti = facts(in)->tls_info;
        const char *sni = ti && ti->sni ? ti->sni : "";
        return rm_str_match_eval(&nd->u.str, sni, strlen(sni));
    }
    case N_AUTHENTICATED:
        return authenticated(nd, in);
    }
    return false;
}

/* Is the request allowed by <r>?  *matched gets the first matching policy (name order). */
static bool decide(const struct rules *r, struct input *in, const struct policy **matched)
{
    *matched = NULL;
    for (size_t i = 0; i < r->n && !*matched; i++)
        if (eval(&r->v[i].perms, in) && eval(&r->v[i].ids, in)) *matched = &r->v[i];
    switch (r->action) {
    case ACT_ALLOW:
        return *matched != NULL;
    case ACT_DENY:
        return *matched == NULL;
    default:
        return true;
    }
}

static enum rm_filter_status rbac_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                     bool end)
{
    const struct rbac_config *top = f->config, *cfg = rm_filter_route_config(f);
    if (!cfg) cfg = top;
    if (cfg->disabled) return RM_FILTER_CONTINUE;
    struct input in = {.hs = f->stream, .req = h, .hc = f->stream->hc};
    const struct policy *matched;
    if (cfg->has_shadow) {
        bool ok = decide(&cfg->shadow, &in, &matched);
        rm_stat_inc(top->shadow_stats, ok ? RB_SHADOW_ALLOWED : RB_SHADOW_DENIED);
    }
    if (!cfg->has_rules) return RM_FILTER_CONTINUE;
    if (decide(&cfg->rules, &in, &matched)) {
        rm_stat_inc(top->stats, RB_ALLOWED);
        return RM_FILTER_CONTINUE;
    }
    rm_stat_inc(top->stats, RB_DENIED);
    struct rm_local_reply r = {
        .status = 403,
        .grpc_status = -1,
        .flags = "RBAC",
        .details = matched ? matched->details : DENIED_NONE,
        .body = DENIED_BODY,
    };
    rm_filter_reply_ex(f, &r);
    return RM_FILTER_STOP;
}

const struct rm_filter_ops rm_filter_rbac = {
    .name = "envoy.filters.http.rbac",
    .type_url = "envoy.extensions.filters.http.rbac.v3.RBAC",
    .config_new_in = rbac_config_new_in,
    .config_free = rbac_config_free,
    .route_config_new = rbac_route_config_new,
    .route_config_free = rbac_config_free,
    .instance_size = sizeof(struct rbac),
    .on_request_headers = rbac_on_request_headers,
};
