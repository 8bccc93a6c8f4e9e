/* YAML/JSON -> protobuf-c, driven by descriptors.  See pbjson.h for what is accepted.
 *
 * Messages are built in the layout protobuf_c_message_free_unpacked() expects (malloc'd
 * strings, arrays and sub-messages; array counts raised only after an element is complete;
 * a oneof case set only once its member is), so on any error the partly built tree is
 * simply freed from its root. */
#include "proxy/config/pbjson.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

/* Messages built per document: PJ_BUDGET_PER_NODE per YAML node plus PJ_BUDGET_EXTRA.  Only
 * aliases can make a document expand beyond its node count, so this bounds what an alias
 * "bomb" costs while leaving ample room for configs that reuse anchors. */
#define PJ_BUDGET_PER_NODE 8UL
#define PJ_BUDGET_EXTRA 100000UL

struct pj {
    yaml_document_t *doc;
    const char *file;
    struct rm_strbuf path; /* field path of the value being converted */
    struct rm_error *err;
    unsigned long budget;
    int depth;
};

struct pj_pair {
    yaml_node_t *key, *value;
};

struct pj_pairs {
    struct pj_pair *v;
    size_t n, cap;
};

static int parse_message(struct pj *c, const ProtobufCMessageDescriptor *d, yaml_node_t *node,
                         ProtobufCMessage **out);
static int parse_fields(struct pj *c, ProtobufCMessage *m, yaml_node_t *node, bool skip_type);

/* ---- small helpers ------------------------------------------------------------------------ */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) abort();
    return p;
}

static ProtobufCMessage *msg_new(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = xcalloc(1, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

static yaml_node_t *node_at(struct pj *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

static const char *text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_scalar(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE;
}

static bool is_plain(const yaml_node_t *n)
{
    return is_scalar(n) && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* YAML's null: an empty plain scalar, ~, null, Null, NULL. */
static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n)) return false;
    const char *s = text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* "FILE:LINE: PATH: what" (PATH omitted at the root).  Returns RM_ERR. */
static int fail(struct pj *c, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct pj *c, const yaml_node_t *at, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const char *path = rm_strbuf_str(&c->path);
    return rm_error_set(c->err, "%s:%lu: %s%s%s", c->file, (unsigned long)at->start_mark.line + 1,
                        path, *path ? ": " : "", what);
}

/* A short description of a node for "expected X, got Y". */
static const char *describe(const yaml_node_t *n, char *buf, size_t size)
{
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    size_t len = n->data.scalar.length;
    if (len > 60)
        snprintf(buf, size, "\"%.57s...\"", text(n));
    else
        snprintf(buf, size, "\"%s\"", text(n));
    return buf;
}

static int fail_expected(struct pj *c, const yaml_node_t *n, const char *what)
{
    char buf[80];
    return fail(c, n, "expected %s, got %s", what, describe(n, buf, sizeof(buf)));
}

static void path_push_field(struct pj *c, const char *name)
{
    if (c->path.len) rm_strbuf_putc(&c->path, '.');
    rm_strbuf_puts(&c->path, name);
}

/* Enter one level of nesting; RM_ERR (reported) when too deep or over budget. */
static int enter(struct pj *c, const yaml_node_t *n)
{
    if (++c->depth > RM_PB_MAX_DEPTH)
        return fail(c, n, "nested too deeply (more than %d levels)", RM_PB_MAX_DEPTH);
    if (c->budget-- == 0) return fail(c, n, "document too large (alias expansion?)");
    return RM_OK;
}

/* ---- mappings: pairs with merge keys resolved -------------------------------------------- */

static bool pairs_have_key(const struct pj_pairs *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(text(p->v[i].key), key) == 0) return true;
    return false;
}

static void pairs_add(struct pj_pairs *p, yaml_node_t *key, yaml_node_t *value)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->v = realloc(p->v, p->cap * sizeof(*p->v));
        if (!p->v) abort();
    }
    p->v[p->n++] = (struct pj_pair){key, value};
}

static bool is_merge_key(const yaml_node_t *k)
{
    return is_plain(k) && !strcmp(text(k), "<<");
}

static int collect_pairs(struct pj *c, yaml_node_t *map, struct pj_pairs *out, int depth);

/* Add the pairs of merge source <src> (a mapping or a list of mappings) that <out> lacks. */
static int merge_from(struct pj *c, yaml_node_t *src, struct pj_pairs *out, int depth)
{
    if (src->type == YAML_MAPPING_NODE) {
        struct pj_pairs more = {0};
        int rc = collect_pairs(c, src, &more, depth + 1);
        for (size_t i = 0; rc == RM_OK && i < more.n; i++)
            if (!pairs_have_key(out, text(more.v[i].key)))
                pairs_add(out, more.v[i].key, more.v[i].value);
        free(more.v);
        return rc;
    }
    if (src->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = src->data.sequence.items.start;
             it < src->data.sequence.items.top; it++) {
            yaml_node_t *item = node_at(c, *it);
            if (item->type != YAML_MAPPING_NODE)
                return fail_expected(c, item, "a mapping to merge");
            if (merge_from(c, item, out, depth + 1) != RM_OK) return RM_ERR;
        }
        return RM_OK;
    }
    return fail_expected(c, src, "a mapping to merge");
}

/* The key/value pairs of mapping <map>: its own first, then those merged in by "<<" keys that
 * it does not override.  Keys must be scalars.  Duplicates among its own keys are kept (the
 * callers report them with their own words). */
static int collect_pairs(struct pj *c, yaml_node_t *map, struct pj_pairs *out, int depth)
{
    if (depth > RM_PB_MAX_DEPTH) return fail(c, map, "merge keys nested too deeply");
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
    for (yaml_node_pair_t *p = start; p < top; p++) {
        yaml_node_t *k = node_at(c, p->key);
        if (!is_scalar(k)) return fail(c, k, "mapping keys must be scalars");
        if (!is_merge_key(k)) pairs_add(out, k, node_at(c, p->value));
    }
    for (yaml_node_pair_t *p = start; p < top; p++)
        if (is_merge_key(node_at(c, p->key)) &&
            merge_from(c, node_at(c, p->value), out, depth) != RM_OK)
            return RM_ERR;
    return RM_OK;
}

/* ---- scalars ------------------------------------------------------------------------------ */

static int scalar_text(struct pj *c, const yaml_node_t *n, const char *what, const char **out)
{
    *out = "";
    if (!is_scalar(n)) return fail_expected(c, n, what);
    *out = text(n);
    return RM_OK;
}

/* A JSON number written with a fraction or exponent that is still an integer ("1e3", "5.0"). */
static bool integral_double(const char *s, double *out)
{
    if (!strpbrk(s, ".eE")) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v != floor(v)) return false;
    *out = v;
    return true;
}

/* Parse an integer scalar into *out, which must fit [min, max] (signed) or [0, umax]. */
static int parse_signed(struct pj *c, const yaml_node_t *n, int64_t min, int64_t max,
                        const char *type, int64_t *out)
{
    const char *s;
    if (scalar_text(c, n, "a number", &s) != RM_OK) return RM_ERR;
    char *end;
    double dv;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    bool ok = end != s && !*end && s[0] != ' ';
    if (!ok && integral_double(s, &dv)) {
        if (dv < (double)min || dv > (double)max)
            return fail(c, n, "value %s out of range for %s", s, type);
        *out = (int64_t)dv;
        return RM_OK;
    }
    if (!ok) return fail_expected(c, n, "a number");
    if (errno == ERANGE || v < min || v > max)
        return fail(c, n, "value %s out of range for %s", s, type);
    *out = v;
    return RM_OK;
}

static int parse_unsigned(struct pj *c, const yaml_node_t *n, uint64_t max, const char *type,
                          uint64_t *out)
{
    const char *s;
    if (scalar_text(c, n, "a number", &s) != RM_OK) return RM_ERR;
    char *end;
    double dv;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    bool ok = end != s && !*end && s[0] != ' ' && s[0] != '-';
    if (!ok && s[0] == '-' && end != s && !*end)
        return fail(c, n, "value %s out of range for %s", s, type);
    if (!ok && integral_double(s, &dv)) {
        if (dv < 0 || dv > (double)max) return fail(c, n, "value %s out of range for %s", s, type);
        *out = (uint64_t)dv;
        return RM_OK;
    }
    if (!ok) return fail_expected(c, n, "a number");
    if (errno == ERANGE || v > max) return fail(c, n, "value %s out of range for %s", s, type);
    *out = v;
    return RM_OK;
}

static int parse_double(struct pj *c, const yaml_node_t *n, bool is_float, double *out)
{
    const char *s;
    if (scalar_text(c, n, "a number", &s) != RM_OK) return RM_ERR;
    if (!strcmp(s, "NaN") || !strcasecmp(s, ".nan")) {
        *out = NAN;
        return RM_OK;
    }
    if (!strcmp(s, "Infinity") || !strcasecmp(s, ".inf") || !strcasecmp(s, "+.inf")) {
        *out = INFINITY;
        return RM_OK;
    }
    if (!strcmp(s, "-Infinity") || !strcasecmp(s, "-.inf")) {
        *out = -INFINITY;
        return RM_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || s[0] == ' ' || !isfinite(v)) return fail_expected(c, n, "a number");
    if (errno == ERANGE || (is_float && fabs(v) > FLT_MAX))
        return fail(c, n, "value %s out of range for %s", s, is_float ? "float" : "double");
    *out = v;
    return RM_OK;
}

static int parse_bool(struct pj *c, const yaml_node_t *n, protobuf_c_boolean *out)
{
    const char *s;
    if (scalar_text(c, n, "true or false", &s) != RM_OK) return RM_ERR;
    if (!strcasecmp(s, "true"))
        *out = 1;
    else if (!strcasecmp(s, "false"))
        *out = 0;
    else
        return fail_expected(c, n, "true or false");
    return RM_OK;
}

/* "unknown enum value" with the list of names (as much as fits). */
static int fail_enum(struct pj *c, const yaml_node_t *n, const ProtobufCEnumDescriptor *e)
{
    struct rm_strbuf names = RM_STRBUF_INIT;
    for (unsigned i = 0; i < e->n_values && names.len < 300; i++)
        rm_strbuf_printf(&names, "%s%s", i ? ", " : "", e->values[i].name);
    int rc = fail(c, n, "unknown enum value \"%s\" (expected one of: %s)", text(n),
                  rm_strbuf_str(&names));
    rm_strbuf_dispose(&names);
    return rc;
}

static int parse_enum(struct pj *c, const yaml_node_t *n, const ProtobufCEnumDescriptor *e,
                      int *out)
{
    const char *s;
    if (scalar_text(c, n, "an enum value name", &s) != RM_OK) return RM_ERR;
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(e, s);
    if (!v) {
        char *end;
        errno = 0;
        long num = strtol(s, &end, 10);
        if (end != s && !*end && !errno && num >= INT32_MIN && num <= INT32_MAX)
            v = protobuf_c_enum_descriptor_get_value(e, (int)num);
    }
    if (!v) return fail_enum(c, n, e);
    *out = v->value;
    return RM_OK;
}

static int parse_string(struct pj *c, const yaml_node_t *n, char **out)
{
    const char *s;
    if (scalar_text(c, n, "a string", &s) != RM_OK) return RM_ERR;
    size_t len = n->data.scalar.length;
    char *copy = xcalloc(1, len + 1);
    memcpy(copy, s, len);
    *out = copy;
    return RM_OK;
}

static int parse_bytes(struct pj *c, const yaml_node_t *n, ProtobufCBinaryData *out)
{
    const char *s;
    if (scalar_text(c, n, "base64 bytes", &s) != RM_OK) return RM_ERR;
    if (rm_pb_base64_decode(s, n->data.scalar.length, &out->data, &out->len) != RM_OK)
        return fail_expected(c, n, "base64 bytes");
    return RM_OK;
}

/* ---- one value of a field ------------------------------------------------------------------ */

static int parse_int_elem(struct pj *c, const ProtobufCFieldDescriptor *f, yaml_node_t *n,
                          void *slot)
{
    int64_t sv;
    uint64_t uv;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (parse_signed(c, n, INT32_MIN, INT32_MAX, "int32", &sv) != RM_OK) return RM_ERR;
        *(int32_t *)slot = (int32_t)sv;
        return RM_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (parse_signed(c, n, INT64_MIN, INT64_MAX, "int64", &sv) != RM_OK) return RM_ERR;
        *(int64_t *)slot = sv;
        return RM_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (parse_unsigned(c, n, UINT32_MAX, "uint32", &uv) != RM_OK) return RM_ERR;
        *(uint32_t *)slot = (uint32_t)uv;
        return RM_OK;
    default:
        if (parse_unsigned(c, n, UINT64_MAX, "uint64", &uv) != RM_OK) return RM_ERR;
        *(uint64_t *)slot = uv;
        return RM_OK;
    }
}

/* Convert <n> into the storage <slot> of one value of field <f> (an array element for
 * repeated fields).  On error nothing is left in <slot> that needs freeing. */
static int parse_elem(struct pj *c, const ProtobufCFieldDescriptor *f, yaml_node_t *n, void *slot)
{
    double d;
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
        if (parse_double(c, n, true, &d) != RM_OK) return RM_ERR;
        *(float *)slot = (float)d;
        return RM_OK;
    case PROTOBUF_C_TYPE_DOUBLE:
        return parse_double(c, n, false, (double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        return parse_bool(c, n, (protobuf_c_boolean *)slot);
    case PROTOBUF_C_TYPE_ENUM:
        return parse_enum(c, n, f->descriptor, (int *)slot);
    case PROTOBUF_C_TYPE_STRING:
        return parse_string(c, n, (char **)slot);
    case PROTOBUF_C_TYPE_BYTES:
        return parse_bytes(c, n, (ProtobufCBinaryData *)slot);
    case PROTOBUF_C_TYPE_MESSAGE:
        return parse_message(c, f->descriptor, n, (ProtobufCMessage **)slot);
    default:
        return parse_int_elem(c, f, n, slot);
    }
}

/* Whether YAML null means "not set" for values of field <f> (not for google.protobuf.Value). */
static bool null_is_unset(const ProtobufCFieldDescriptor *f)
{
    return f->type != PROTOBUF_C_TYPE_MESSAGE || rm_pb_wkt_of(f->descriptor) != RM_PB_WKT_VALUE;
}

static int parse_repeated(struct pj *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                          yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE) return fail_expected(c, n, "a list");
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0) return RM_OK;
    size_t size = rm_pb_elem_size(f->type), mark = c->path.len;
    size_t *np = (size_t *)((char *)m + f->quantifier_offset);
    char *arr = xcalloc(count, size);
    *(void **)((char *)m + f->offset) = arr;
    *np = 0;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        rm_strbuf_printf(&c->path, "[%zu]", i);
        if (is_null(item) && null_is_unset(f))
            return fail(c, item, "null is not allowed in a list");
        if (parse_elem(c, f, item, arr + i * size) != RM_OK) return RM_ERR;
        (*np)++;
        rm_strbuf_truncate(&c->path, mark);
    }
    return RM_OK;
}

/* Did an earlier pair of <p> (before index <i>) have the same key? */
static bool earlier_key(const struct pj_pairs *p, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(text(p->v[j].key), text(p->v[i].key)) == 0) return true;
    return false;
}

/* One map entry message from a key/value pair; *out NULL on error. */
static int parse_entry(struct pj *c, const ProtobufCMessageDescriptor *ed, const struct pj_pair *p,
                       ProtobufCMessage **out)
{
    ProtobufCMessage *e = msg_new(ed);
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    *out = NULL;
    if (parse_elem(c, kf, p->key, (char *)e + kf->offset) != RM_OK) goto fail;
    if (!(is_null(p->value) && null_is_unset(vf)) &&
        parse_elem(c, vf, p->value, (char *)e + vf->offset) != RM_OK)
        goto fail;
    *out = e;
    return RM_OK;
fail:
    protobuf_c_message_free_unpacked(e, NULL);
    return RM_ERR;
}

static int parse_map(struct pj *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE) return fail_expected(c, n, "a mapping");
    struct pj_pairs pairs = {0};
    size_t *np = (size_t *)((char *)m + f->quantifier_offset), mark = c->path.len;
    int rc = collect_pairs(c, n, &pairs, 0);
    if (rc != RM_OK || pairs.n == 0) goto out;
    ProtobufCMessage **arr = xcalloc(pairs.n, sizeof(*arr));
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
    *np = 0;
    for (size_t i = 0; i < pairs.n && rc == RM_OK; i++) {
        rm_strbuf_printf(&c->path, "[\"%s\"]", text(pairs.v[i].key));
        if (earlier_key(&pairs, i))
            rc = fail(c, pairs.v[i].key, "key given twice");
        else if ((rc = parse_entry(c, f->descriptor, &pairs.v[i], &arr[*np])) == RM_OK)
            (*np)++;
        if (rc == RM_OK) rm_strbuf_truncate(&c->path, mark);
    }
out:
    free(pairs.v);
    return rc;
}

/* Field <f> of <m> from node <n> (its path already pushed). */
static int parse_field(struct pj *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                       yaml_node_t *n)
{
    if (is_null(n) && null_is_unset(f)) return RM_OK; /* proto3 JSON: null leaves the field unset */
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return rm_pb_is_map(m->descriptor, f) ? parse_map(c, m, f, n) : parse_repeated(c, m, f, n);
    if (parse_elem(c, f, n, (char *)m + f->offset) != RM_OK) return RM_ERR;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
    return RM_OK;
}

/* Check <f> against fields already seen in this mapping: twice, or a second oneof member. */
static int check_seen(struct pj *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                      const yaml_node_t *key, unsigned char *seen)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (seen[f - d->fields]) return fail(c, key, "field \"%s\" given twice", f->name);
    seen[f - d->fields] = 1;
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) return RM_OK;
    uint32_t set = *(uint32_t *)((char *)m + f->quantifier_offset);
    if (set == 0 || set == f->id) return RM_OK;
    const ProtobufCFieldDescriptor *other = protobuf_c_message_descriptor_get_field(d, set);
    return fail(c, key, "only one of \"%s\" and \"%s\" may be set", other ? other->name : "?",
                f->name);
}

/* The fields of <m> from mapping <n>; "@type" is skipped when <skip_type> (inside an Any). */
static int parse_fields(struct pj *c, ProtobufCMessage *m, yaml_node_t *n, bool skip_type)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (n->type != YAML_MAPPING_NODE) return fail_expected(c, n, "a mapping");
    struct pj_pairs pairs = {0};
    unsigned char *seen = xcalloc(d->n_fields, 1);
    size_t mark = c->path.len;
    int rc = collect_pairs(c, n, &pairs, 0);
    for (size_t i = 0; i < pairs.n && rc == RM_OK; i++) {
        const char *key = text(pairs.v[i].key);
        if (skip_type && strcmp(key, "@type") == 0) continue;
        const ProtobufCFieldDescriptor *f = rm_pb_field_by_json_name(d, key);
        if (!f) {
            rc = fail(c, pairs.v[i].key, "unknown field \"%s\"", key);
            break;
        }
        if ((rc = check_seen(c, m, f, pairs.v[i].key, seen)) != RM_OK) break;
        path_push_field(c, f->name);
        rc = parse_field(c, m, f, pairs.v[i].value);
        if (rc == RM_OK) rm_strbuf_truncate(&c->path, mark);
    }
    free(pairs.v);
    free(seen);
    return rc;
}

/* ---- well-known types ---------------------------------------------------------------------- */

/* The value of key <name> among the pairs of mapping <n>, or NULL. */
static yaml_node_t *lookup_key(const struct pj_pairs *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(text(p->v[i].key), name) == 0) return p->v[i].value;
    return NULL;
}

/* The payload of an Any whose type has a special JSON form: {"@type": ..., "value": X}. */
static int parse_any_wkt(struct pj *c, const struct pj_pairs *p, yaml_node_t *n,
                         const ProtobufCMessageDescriptor *d, ProtobufCMessage **inner)
{
    for (size_t i = 0; i < p->n; i++) {
        const char *k = text(p->v[i].key);
        if (strcmp(k, "@type") != 0 && strcmp(k, "value") != 0)
            return fail(c, p->v[i].key, "unknown field \"%s\"", k);
    }
    yaml_node_t *v = lookup_key(p, "value");
    if (!v) return fail(c, n, "an Any of type %s needs its payload in \"value\"", d->name);
    return parse_message(c, d, v, inner);
}

static int parse_any(struct pj *c, Google__Protobuf__Any *any, yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE) return fail_expected(c, n, "a mapping with \"@type\"");
    struct pj_pairs pairs = {0};
    ProtobufCMessage *inner = NULL;
    int rc = collect_pairs(c, n, &pairs, 0);
    if (rc != RM_OK) goto out;
    yaml_node_t *t = lookup_key(&pairs, "@type");
    const char *url;
    if (!t) {
        rc = fail(c, n, "missing \"@type\" (an Any needs its type URL)");
        goto out;
    }
    if ((rc = scalar_text(c, t, "a type URL", &url)) != RM_OK) goto out;
    const ProtobufCMessageDescriptor *d = rm_pb_lookup_type_url(url);
    if (!d) {
        rc = fail(c, t, "unknown type \"%s\" in \"@type\"", url);
        goto out;
    }
    if (rm_pb_wkt_of(d) != RM_PB_WKT_NONE) {
        rc = parse_any_wkt(c, &pairs, n, d, &inner);
    } else {
        inner = msg_new(d);
        rc = parse_fields(c, inner, n, true);
    }
    if (rc == RM_OK) rm_pb_any_pack(inner, any);
out:
    if (inner) protobuf_c_message_free_unpacked(inner, NULL);
    free(pairs.v);
    return rc;
}

static int parse_duration(struct pj *c, Google__Protobuf__Duration *dur, yaml_node_t *n)
{
    const char *s;
    if (scalar_text(c, n, "a duration such as \"1.5s\"", &s) != RM_OK) return RM_ERR;
    if (rm_pb_duration_parse(s, &dur->seconds, &dur->nanos) != RM_OK)
        return fail_expected(c, n, "a duration such as \"1.5s\"");
    return RM_OK;
}

static int parse_timestamp(struct pj *c, Google__Protobuf__Timestamp *ts, yaml_node_t *n)
{
    const char *s;
    if (scalar_text(c, n, "an RFC 3339 time", &s) != RM_OK) return RM_ERR;
    if (rm_pb_timestamp_parse(s, &ts->seconds, &ts->nanos) != RM_OK)
        return fail_expected(c, n, "an RFC 3339 time such as \"2024-01-02T03:04:05Z\"");
    return RM_OK;
}

/* A plain scalar that is a JSON/YAML number. */
static bool plain_number(const yaml_node_t *n, double *out)
{
    if (!is_plain(n)) return false;
    const char *s = text(n);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || s[0] == ' ' || strpbrk(s, "xXnN"))
        return false; /* rejects hex, "nan", "inf": those stay strings */
    *out = v;
    return true;
}

static int parse_value(struct pj *c, Google__Protobuf__Value *v, yaml_node_t *n)
{
    if (n->type == YAML_MAPPING_NODE) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        return parse_message(c, &google__protobuf__struct__descriptor, n,
                             (ProtobufCMessage **)&v->struct_value);
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        return parse_message(c, &google__protobuf__list_value__descriptor, n,
                             (ProtobufCMessage **)&v->list_value);
    }
    const char *s = text(n);
    if (is_null(n)) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
    } else if (is_plain(n) && (!strcasecmp(s, "true") || !strcasecmp(s, "false"))) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = s[0] == 't' || s[0] == 'T';
    } else if (plain_number(n, &v->number_value)) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    } else {
        if (parse_string(c, n, &v->string_value) != RM_OK) return RM_ERR;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    }
    return RM_OK;
}

/* The body of message <m> from <n>, by how its type is spelled in JSON. */
static int parse_body(struct pj *c, ProtobufCMessage *m, yaml_node_t *n)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *f0 = &d->fields[0];
    switch (rm_pb_wkt_of(d)) {
    case RM_PB_WKT_ANY:
        return parse_any(c, (Google__Protobuf__Any *)m, n);
    case RM_PB_WKT_DURATION:
        return parse_duration(c, (Google__Protobuf__Duration *)m, n);
    case RM_PB_WKT_TIMESTAMP:
        return parse_timestamp(c, (Google__Protobuf__Timestamp *)m, n);
    case RM_PB_WKT_WRAPPER:
        return parse_elem(c, f0, n, (char *)m + f0->offset);
    case RM_PB_WKT_STRUCT:
        return parse_map(c, m, f0, n);
    case RM_PB_WKT_LIST:
        return parse_repeated(c, m, f0, n);
    case RM_PB_WKT_VALUE:
        return parse_value(c, (Google__Protobuf__Value *)m, n);
    default:
        return parse_fields(c, m, n, false);
    }
}

/* A new message of type <d> from node <n> into *out (NULL on error). */
static int parse_message(struct pj *c, const ProtobufCMessageDescriptor *d, yaml_node_t *n,
                         ProtobufCMessage **out)
{
    *out = NULL;
    if (enter(c, n) != RM_OK) return RM_ERR;
    ProtobufCMessage *m = msg_new(d);
    int rc = parse_body(c, m, n);
    c->depth--;
    if (rc != RM_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return RM_ERR;
    }
    *out = m;
    return RM_OK;
}

/* ---- documents ---------------------------------------------------------------------------- */

static int yaml_fail(const yaml_parser_t *p, const char *name, struct rm_error *err)
{
    const yaml_mark_t *mk = p->problem ? &p->problem_mark : &p->context_mark;
    return rm_error_set(err, "%s:%lu: invalid YAML: %s%s%s", name, (unsigned long)mk->line + 1,
                        p->problem ? p->problem : "parse error", p->context ? " " : "",
                        p->context ? p->context : "");
}

/* Fail unless the parser holds no further document. */
static int expect_single_document(yaml_parser_t *p, const char *name, struct rm_error *err)
{
    yaml_document_t next;
    if (!yaml_parser_load(p, &next)) return yaml_fail(p, name, err);
    yaml_node_t *root = yaml_document_get_root_node(&next);
    unsigned long line = root ? (unsigned long)root->start_mark.line + 1 : 0;
    yaml_document_delete(&next);
    if (root) return rm_error_set(err, "%s:%lu: only one YAML document is allowed", name, line);
    return RM_OK;
}

static int convert_document(yaml_document_t *doc, const char *name,
                            const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                            struct rm_error *err)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root) return rm_error_set(err, "%s: empty document", name);
    unsigned long nodes = (unsigned long)(doc->nodes.top - doc->nodes.start);
    struct pj c = {.doc = doc,
                   .file = name,
                   .err = err,
                   .budget = nodes * PJ_BUDGET_PER_NODE + PJ_BUDGET_EXTRA};
    int rc = parse_message(&c, d, root, out);
    rm_strbuf_dispose(&c.path);
    return rc;
}

int rm_pbjson_parse_string(const char *text_in, size_t len, const char *name,
                           const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                           struct rm_error *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = RM_ERR;
    *out = NULL;
    if (!yaml_parser_initialize(&parser)) abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text_in, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_fail(&parser, name, err);
        goto out_parser;
    }
    rc = expect_single_document(&parser, name, err);
    if (rc == RM_OK) rc = convert_document(&doc, name, d, out, err);
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
    return rc;
}

int rm_pbjson_parse_file(const char *path, const ProtobufCMessageDescriptor *d,
                         ProtobufCMessage **out, struct rm_error *err)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    char chunk[16384];
    size_t n;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return rm_error_set(err, "%s: cannot open: %s", path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rm_strbuf_append(&sb, chunk, n);
    int read_error = ferror(f);
    fclose(f);
    int rc = read_error ? rm_error_set(err, "%s: read error", path)
                        : rm_pbjson_parse_string(rm_strbuf_str(&sb), sb.len, path, d, out, err);
    rm_strbuf_dispose(&sb);
    return rc;
}
