/* GET /stats and GET /stats/prometheus: the stats registry (stats.h) in Envoy's formats.
 *
 *   text        "name: value" per line, sorted by name (counters and gauges together);
 *   json        {"stats":[{"name":N,"value":V},...]}, same order;
 *   prometheus  text exposition 0.0.4: counters, then gauges, each grouped by metric family
 *               ("# TYPE envoy_x counter" then its lines, a blank line after each group), with
 *               Envoy's default tag extraction for the prefixes remora uses:
 *                 cluster.<name>.x           envoy_cluster_x{envoy_cluster_name="<name>"}
 *                 http.<prefix>.x envoy_http_x{envoy_http_conn_manager_prefix="<prefix>"}
 *                 listener.<addr>.x          envoy_listener_x{envoy_listener_address="<addr>"}
 *                 ..._rq_<d>xx               ..._rq_xx{envoy_response_code_class="<d>",...}
 *               and every character outside [a-zA-Z0-9_] of the name turned into '_'.
 * Query: ?filter=REGEX (PCRE2, unanchored, on the full stat name), ?usedonly (non-zero values
 * only: the registry does not track "ever written"), ?format=text|json|prometheus. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <malloc.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/admin/admin_int.h"
#include "proxy/admin/stats.h"

struct stat_entry {
    char *name;
    enum rm_stat_type type;
    int64_t value;
    char *family; /* prometheus only: "envoy_cluster_upstream_rq_total" */
    char *labels; /* prometheus only: "envoy_cluster_name=\"backend\"" */
};

struct stat_list {
    struct stat_entry *v;
    size_t n, cap;
    bool used_only;
    pcre2_code *re;
    pcre2_match_data *md;
};

/* ---- collecting --------------------------------------------------------------------------- */

/* Envoy's server.* gauges that only the admin knows (its clock, the allocator's count):
 * refreshed when stats are read. */
static void refresh_server_stats(struct rm_admin *a)
{
    struct rm_stats *s = rm_stats_get("server.", rm_server_stat_defs, RM_SS__COUNT);
    uint64_t now = (uint64_t)time(NULL);
    rm_stat_set(s, RM_SS_UPTIME, now > a->start_time_s ? (int64_t)(now - a->start_time_s) : 0);
    rm_stat_set(s, RM_SS_LIVE, strcmp(rm_admin_state(a), "LIVE") == 0);
    if (a->concurrency) rm_stat_set(s, RM_SS_CONCURRENCY, a->concurrency);
    struct mallinfo2 mi = mallinfo2(); /* Envoy: bytes the allocator has handed out */
    rm_stat_set(s, RM_SS_MEMORY_ALLOCATED, (int64_t)(mi.uordblks + mi.hblkhd));
    rm_stats_release(s); /* the server holds the block for the process's life */
}

static void collect_one(void *ctx, const char *name, enum rm_stat_type t, int64_t value)
{
    struct stat_list *l = ctx;
    if (l->used_only && value == 0) return;
    if (l->re && pcre2_match(l->re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, l->md, NULL) < 0)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct stat_entry *v = realloc(l->v, cap * sizeof(*v));
        if (!v) abort();
        l->v = v;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) abort();
    l->v[l->n++] = (struct stat_entry){.name = copy, .type = t, .value = value};
}

static void list_dispose(struct stat_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].family);
        free(l->v[i].labels);
    }
    free(l->v);
    pcre2_match_data_free(l->md);
    pcre2_code_free(l->re);
}

static int by_name(const void *x, const void *y)
{
    return strcmp(((const struct stat_entry *)x)->name, ((const struct stat_entry *)y)->name);
}

/* Read the parameters shared by every format and collect the matching stats, sorted by name.
 * Returns false with <r> set to a 400 when the filter does not compile. */
static bool collect(struct rm_admin *a, const struct rm_admin_query *q, struct stat_list *l,
                    struct rm_admin_resp *r)
{
    memset(l, 0, sizeof(*l));
    l->used_only = rm_admin_query_get(q, "usedonly") != NULL;
    const char *filter = rm_admin_query_get(q, "filter");
    if (filter && *filter) {
        int code;
        PCRE2_SIZE off;
        l->re = pcre2_compile((PCRE2_SPTR)filter, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (!l->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof(msg));
            rm_admin_resp_text(r, 400, "");
            rm_strbuf_printf(&r->body, "Invalid regex: \"%s\": %s at offset %zu\n", filter,
                             (const char *)msg, (size_t)off);
            return false;
        }
        l->md = pcre2_match_data_create_from_pattern(l->re, NULL);
        if (!l->md) abort();
    }
    refresh_server_stats(a);
    rm_stats_foreach(collect_one, l);
    if (l->n) qsort(l->v, l->n, sizeof(*l->v), by_name);
    return true;
}

/* ---- text and JSON ------------------------------------------------------------------------ */

static void render_text(const struct stat_list *l, struct rm_strbuf *sb)
{
    for (size_t i = 0; i < l->n; i++)
        rm_strbuf_printf(sb, "%s: %lld\n", l->v[i].name, (long long)l->v[i].value);
}

static void render_json(const struct stat_list *l, struct rm_strbuf *sb)
{
    rm_strbuf_puts(sb, "{\"stats\":[");
    for (size_t i = 0; i < l->n; i++) {
        rm_strbuf_puts(sb, i ? ",{\"name\":" : "{\"name\":");
        rm_admin_json_str(sb, l->v[i].name);
        rm_strbuf_printf(sb, ",\"value\":%lld}", (long long)l->v[i].value);
    }
    rm_strbuf_puts(sb, "]}\n");
}

/* ---- prometheus --------------------------------------------------------------------------- */

struct prom_tag {
    const char *name;
    const char *value;
    size_t len;
};

#define PROM_MAX_TAGS 4

/* Take "<seg>." after <prefix> out of the name: the segment becomes tag <tag>.  <rest> points
 * after the prefix; returns the remainder (after the segment's dot) or NULL if no segment. */
static const char *take_segment(const char *rest, const char *tag, struct prom_tag *tags,
                                unsigned *nt)
{
    const char *dot = strchr(rest, '.');
    if (!dot || *nt >= PROM_MAX_TAGS) return NULL;
    tags[(*nt)++] = (struct prom_tag){tag, rest, (size_t)(dot - rest)};
    return dot + 1;
}

static bool in_set(char c, const char *set)
{
    return c && strchr(set, c) != NULL;
}

/* Envoy's listener address extractor: ([_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*)\. with
 * the longest match first (an IPv4 "0.0.0.0_10000", an IPv6 "[__1]_10000"); ':' is accepted
 * too, for stat prefixes spelled "listener.127.0.0.1:10000.". */
static const char *take_listener_addr(const char *rest, struct prom_tag *tags, unsigned *nt)
{
    const char *end = rest, *last_dot = NULL;
    while (in_set(*end, "_:.0123456789")) {
        if (*end == '.') last_dot = end;
        end++;
    }
    if (!last_dot || last_dot == rest) {
        end = rest;
        while (in_set(*end, "_:[]aAbBcCdDeEfF0123456789"))
            end++;
        if (*end != '.' || end == rest) return NULL;
        last_dot = end;
    }
    if (*nt >= PROM_MAX_TAGS) return NULL;
    tags[(*nt)++] = (struct prom_tag){"envoy_listener_address", rest, (size_t)(last_dot - rest)};
    return last_dot + 1;
}

/* Split a stat name into the tag-extracted name (in <base>, dotted) and its tags. */
static void extract_tags(const char *name, struct rm_strbuf *base, struct prom_tag *tags,
                         unsigned *nt)
{
    const char *rest = NULL;
    *nt = 0;
    if (strncmp(name, "cluster.", 8) == 0 &&
        (rest = take_segment(name + 8, "envoy_cluster_name", tags, nt))) {
        rm_strbuf_puts(base, "cluster.");
    } else if (strncmp(name, "http.", 5) == 0 &&
               (rest = take_segment(name + 5, "envoy_http_conn_manager_prefix", tags, nt))) {
        rm_strbuf_puts(base, "http.");
    } else if (strncmp(name, "listener.", 9) == 0 &&
               (rest = take_listener_addr(name + 9, tags, nt))) {
        rm_strbuf_puts(base, "listener.");
        const char *more;
        if (strncmp(rest, "http.", 5) == 0 &&
            (more = take_segment(rest + 5, "envoy_http_conn_manager_prefix", tags, nt))) {
            rm_strbuf_puts(base, "http.");
            rest = more;
        }
    } else {
        rest = name;
    }
    rm_strbuf_puts(base, rest);
    /* "..._rq_2xx" -> "..._rq_xx" {envoy_response_code_class="2"}, listed first as Envoy does */
    size_t n = base->len;
    const char *b = rm_strbuf_str(base);
    if (n >= 7 && memcmp(b + n - 7, "_rq_", 4) == 0 && b[n - 3] >= '0' && b[n - 3] <= '9' &&
        memcmp(b + n - 2, "xx", 2) == 0 && *nt < PROM_MAX_TAGS) {
        static const char digits[] = "0123456789";
        memmove(tags + 1, tags, *nt * sizeof(*tags));
        tags[0] = (struct prom_tag){"envoy_response_code_class", &digits[b[n - 3] - '0'], 1};
        (*nt)++;
        rm_strbuf_truncate(base, n - 3);
        rm_strbuf_puts(base, "xx");
    }
}

static void put_sanitized(struct rm_strbuf *sb, const char *s)
{
    for (; *s; s++) {
        char c = *s;
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        rm_strbuf_putc(sb, ok ? c : '_');
    }
}

/* Label values escape '\\', '"' and newlines (exposition format 0.0.4). */
static void put_label_value(struct rm_strbuf *sb, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' || p[i] == '"') rm_strbuf_putc(sb, '\\');
        if (p[i] == '\n') {
            rm_strbuf_puts(sb, "\\n");
            continue;
        }
        rm_strbuf_putc(sb, p[i]);
    }
}

static void prom_name(struct stat_entry *e)
{
    struct rm_strbuf base = RM_STRBUF_INIT, fam = RM_STRBUF_INIT, labels = RM_STRBUF_INIT;
    struct prom_tag tags[PROM_MAX_TAGS];
    unsigned nt;
    extract_tags(e->name, &base, tags, &nt);
    rm_strbuf_puts(&fam, "envoy_");
    put_sanitized(&fam, rm_strbuf_str(&base));
    for (unsigned i = 0; i < nt; i++) {
        if (i) rm_strbuf_putc(&labels, ',');
        rm_strbuf_printf(&labels, "%s=\"", tags[i].name);
        put_label_value(&labels, tags[i].value, tags[i].len);
        rm_strbuf_putc(&labels, '"');
    }
    rm_strbuf_dispose(&base);
    e->family = rm_strbuf_steal(&fam);
    e->labels = rm_strbuf_steal(&labels);
}

static int by_type_family_name(const void *x, const void *y)
{
    const struct stat_entry *a = x, *b = y;
    if (a->type != b->type) return a->type == RM_COUNTER ? -1 : 1;
    int c = strcmp(a->family, b->family);
    return c ? c : strcmp(a->name, b->name);
}

static void render_prometheus(struct stat_list *l, struct rm_strbuf *sb)
{
    for (size_t i = 0; i < l->n; i++)
        prom_name(&l->v[i]);
    if (l->n) qsort(l->v, l->n, sizeof(*l->v), by_type_family_name);
    for (size_t i = 0; i < l->n; i++) {
        const struct stat_entry *e = &l->v[i];
        bool first = i == 0 || e->type != l->v[i - 1].type || strcmp(e->family, l->v[i - 1].family);
        if (first)
            rm_strbuf_printf(sb, "# TYPE %s %s\n", e->family,
                             e->type == RM_COUNTER ? "counter" : "gauge");
        rm_strbuf_printf(sb, "%s{%s} %lld\n", e->family, e->labels, (long long)e->value);
        bool last =
            i + 1 == l->n || e->type != l->v[i + 1].type || strcmp(e->family, l->v[i + 1].family);
        if (last) rm_strbuf_putc(sb, '\n');
    }
}

/* ---- endpoints ---------------------------------------------------------------------------- */

enum stats_format { FMT_TEXT, FMT_JSON, FMT_PROMETHEUS };

static void serve(struct rm_admin *a, const struct rm_admin_query *q, enum stats_format f,
                  struct rm_admin_resp *r)
{
    struct stat_list l;
    if (collect(a, q, &l, r)) {
        switch (f) {
        case FMT_TEXT:
            render_text(&l, &r->body);
            break;
        case FMT_JSON:
            r->content_type = RM_ADMIN_CT_JSON;
            render_json(&l, &r->body);
            break;
        case FMT_PROMETHEUS:
            r->content_type = RM_ADMIN_CT_PROMETHEUS;
            render_prometheus(&l, &r->body);
            break;
        }
    }
    list_dispose(&l);
}

void rm_admin_handle_stats(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                           struct rm_admin_resp *r)
{
    const char *fmt = rm_admin_query_get(q, "format");
    enum stats_format f;
    if (!fmt || !*fmt || strcmp(fmt, "text") == 0) {
        f = FMT_TEXT;
    } else if (strcmp(fmt, "json") == 0) {
        f = FMT_JSON;
    } else if (strcmp(fmt, "prometheus") == 0) {
        f = FMT_PROMETHEUS;
    } else {
        rm_admin_resp_text(r, 400, "usage: /stats?format=(json|prometheus|text)\n");
        return;
    }
    serve(a, q, f, r);
}

void rm_admin_handle_prometheus(struct rm_admin *a, const char *method,
                                const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    serve(a, q, FMT_PROMETHEUS, r);
}
