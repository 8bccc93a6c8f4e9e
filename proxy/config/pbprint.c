/* Message -> proto3 JSON.  See pbprint.h. */
#include "proxy/config/pbprint.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "proxy/config/pbtypes.h"

#define REDACTED "[redacted]"

struct pp {
    struct rm_strbuf *out;
    unsigned flags;
    int indent;
    int depth;
};

/* Fields whose whole content is secret (Envoy marks them with a "sensitive" annotation). */
static const struct {
    const char *message, *field;
} sensitive_fields[] = {
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "private_key"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "password"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "pkcs12"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys", "keys"},
    {"envoy.extensions.transport_sockets.tls.v3.GenericSecret", "secret"},
};

static int print_message(struct pp *p, const ProtobufCMessage *m, bool redact);

static bool is_sensitive(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    for (size_t i = 0; i < sizeof(sensitive_fields) / sizeof(sensitive_fields[0]); i++)
        if (!strcmp(sensitive_fields[i].message, d->name) &&
            !strcmp(sensitive_fields[i].field, f->name))
            return true;
    return false;
}

/* ---- layout ------------------------------------------------------------------------------ */

static void newline(struct pp *p)
{
    if (!(p->flags & RM_PBPRINT_PRETTY)) return;
    rm_strbuf_putc(p->out, '\n');
    for (int i = 0; i < p->indent; i++)
        rm_strbuf_puts(p->out, "  ");
}

static void open_block(struct pp *p, char c)
{
    rm_strbuf_putc(p->out, c);
    p->indent++;
}

/* Before each member: the comma, then a new line when pretty. */
static void separator(struct pp *p, bool *first)
{
    if (!*first) rm_strbuf_putc(p->out, ',');
    *first = false;
    newline(p);
}

static void close_block(struct pp *p, char c, bool empty)
{
    p->indent--;
    if (!empty) newline(p);
    rm_strbuf_putc(p->out, c);
}

static void put_string(struct pp *p, const char *s, size_t n)
{
    rm_strbuf_putc(p->out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            rm_strbuf_puts(p->out, "\\\"");
            break;
        case '\\':
            rm_strbuf_puts(p->out, "\\\\");
            break;
        case '\n':
            rm_strbuf_puts(p->out, "\\n");
            break;
        case '\r':
            rm_strbuf_puts(p->out, "\\r");
            break;
        case '\t':
            rm_strbuf_puts(p->out, "\\t");
            break;
        default:
            if (c < 0x20)
                rm_strbuf_printf(p->out, "\\u%04x", c);
            else
                rm_strbuf_putc(p->out, (char)c);
        }
    }
    rm_strbuf_putc(p->out, '"');
}

static void put_cstring(struct pp *p, const char *s)
{
    put_string(p, s, strlen(s));
}

/* "name": (json or proto name) */
static void put_key(struct pp *p, const char *proto_name)
{
    if (p->flags & RM_PBPRINT_JSON_NAMES) {
        struct rm_strbuf name = RM_STRBUF_INIT;
        rm_pb_json_name(proto_name, &name);
        put_cstring(p, rm_strbuf_str(&name));
        rm_strbuf_dispose(&name);
    } else {
        put_cstring(p, proto_name);
    }
    rm_strbuf_puts(p->out, (p->flags & RM_PBPRINT_PRETTY) ? ": " : ":");
}

/* ---- scalars ------------------------------------------------------------------------------ */

/* The shortest of %.{min..max}g that reads back as <v> (as a float when <is_float>). */
static void put_number(struct pp *p, double v, bool is_float)
{
    if (isnan(v)) {
        rm_strbuf_puts(p->out, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        rm_strbuf_puts(p->out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char buf[40];
    for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) break;
    }
    rm_strbuf_puts(p->out, buf);
}

static void put_enum(struct pp *p, const ProtobufCEnumDescriptor *e, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(e, v);
    if (ev)
        put_cstring(p, ev->name);
    else
        rm_strbuf_printf(p->out, "%d", v);
}

static void put_bytes(struct pp *p, const ProtobufCBinaryData *b, bool redact)
{
    rm_strbuf_putc(p->out, '"');
    if (redact)
        rm_pb_base64_encode((const uint8_t *)REDACTED, strlen(REDACTED), p->out);
    else
        rm_pb_base64_encode(b->data, b->len, p->out);
    rm_strbuf_putc(p->out, '"');
}

/* One value of field <f> stored at <v>. */
static int put_value(struct pp *p, const ProtobufCFieldDescriptor *f, const void *v, bool redact)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rm_strbuf_printf(p->out, "%" PRId32, *(const int32_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rm_strbuf_printf(p->out, "%" PRIu32, *(const uint32_t *)v);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rm_strbuf_printf(p->out, "\"%" PRId64 "\"", *(const int64_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rm_strbuf_printf(p->out, "\"%" PRIu64 "\"", *(const uint64_t *)v);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_number(p, *(const float *)v, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_number(p, *(const double *)v, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        rm_strbuf_puts(p->out, *(const protobuf_c_boolean *)v ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM:
        put_enum(p, f->descriptor, *(const int *)v);
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        put_cstring(p, redact ? REDACTED : s ? s : "");
        break;
    }
    case PROTOBUF_C_TYPE_BYTES:
        put_bytes(p, v, redact);
        break;
    case PROTOBUF_C_TYPE_MESSAGE:
        return print_message(p, *(ProtobufCMessage *const *)v, redact);
    }
    return RM_OK;
}

/* ---- fields ------------------------------------------------------------------------------- */

/* Is singular field <f> of <m> set (proto3: non-default; oneof: chosen; optional: has_)? */
static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    const void *v = base + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) return *(ProtobufCMessage *const *)v != NULL;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)v;
        return s && *s;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
    switch (f->type) {
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)v)->len != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)v != 0 || signbit(*(const float *)v);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)v != 0 || signbit(*(const double *)v);
    default: {
        size_t n = rm_pb_elem_size(f->type);
        static const char zero[8];
        return memcmp(v, zero, n) != 0;
    }
    }
}

static int print_array(struct pp *p, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                       bool redact)
{
    const char *base = (const char *)m;
    size_t n = *(const size_t *)(base + f->quantifier_offset), size = rm_pb_elem_size(f->type);
    const char *arr = *(const char *const *)(base + f->offset);
    bool first = true;
    open_block(p, '[');
    for (size_t i = 0; i < n; i++) {
        separator(p, &first);
        if (put_value(p, f, arr + i * size, redact) != RM_OK) return RM_ERR;
    }
    close_block(p, ']', first);
    return RM_OK;
}

/* A map key as a JSON string (numbers and bools spelled as text). */
static void put_map_key(struct pp *p, const ProtobufCFieldDescriptor *kf, const void *k)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)k;
        put_cstring(p, s ? s : "");
    } else {
        struct rm_strbuf *saved = p->out, tmp = RM_STRBUF_INIT;
        p->out = &tmp;
        put_value(p, kf, k, false);
        p->out = saved;
        const char *t = rm_strbuf_str(&tmp);
        if (t[0] == '"')
            rm_strbuf_puts(p->out, t);
        else
            put_cstring(p, t);
        rm_strbuf_dispose(&tmp);
    }
    rm_strbuf_puts(p->out, (p->flags & RM_PBPRINT_PRETTY) ? ": " : ":");
}

static int print_map(struct pp *p, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                     bool redact)
{
    const char *base = (const char *)m;
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    bool first = true;
    open_block(p, '{');
    for (size_t i = 0; i < n; i++) {
        const char *e = (const char *)arr[i];
        separator(p, &first);
        put_map_key(p, kf, e + kf->offset);
        if (vf->type == PROTOBUF_C_TYPE_MESSAGE && !*(ProtobufCMessage *const *)(e + vf->offset))
            /* an entry without a value holds the default message */
            rm_strbuf_puts(p->out, rm_pb_wkt_of(vf->descriptor) == RM_PB_WKT_VALUE ? "null" : "{}");
        else if (put_value(p, vf, e + vf->offset, redact) != RM_OK)
            return RM_ERR;
    }
    close_block(p, '}', first);
    return RM_OK;
}

/* The members for the set fields of <m>, inside an object already opened. */
static int print_fields(struct pp *p, const ProtobufCMessage *m, bool redact, bool *first)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool rd = redact || ((p->flags & RM_PBPRINT_REDACT) && is_sensitive(d, f));
        int rc;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (*(const size_t *)((const char *)m + f->quantifier_offset) == 0) continue;
            separator(p, first);
            put_key(p, f->name);
            rc = rm_pb_is_map(d, f) ? print_map(p, f, m, rd) : print_array(p, f, m, rd);
        } else {
            if (!field_present(m, f)) continue;
            separator(p, first);
            put_key(p, f->name);
            rc = put_value(p, f, (const char *)m + f->offset, rd);
        }
        if (rc != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

/* ---- messages ----------------------------------------------------------------------------- */

static int print_any(struct pp *p, const Google__Protobuf__Any *any, bool redact)
{
    ProtobufCMessage *inner = NULL;
    bool first = true;
    int rc = RM_OK;
    open_block(p, '{');
    separator(p, &first);
    put_cstring(p, "@type");
    rm_strbuf_puts(p->out, (p->flags & RM_PBPRINT_PRETTY) ? ": " : ":");
    put_cstring(p, any->type_url ? any->type_url : "");
    if (rm_pb_any_unpack(any, NULL, &inner, NULL) != RM_OK) {
        separator(p, &first);
        put_key(p, "value");
        put_bytes(p, &any->value, redact);
    } else if (rm_pb_wkt_of(inner->descriptor) != RM_PB_WKT_NONE) {
        separator(p, &first);
        put_key(p, "value");
        rc = print_message(p, inner, redact);
    } else {
        rc = print_fields(p, inner, redact, &first);
    }
    if (inner) protobuf_c_message_free_unpacked(inner, NULL);
    close_block(p, '}', false);
    return rc;
}

static int print_value_wkt(struct pp *p, const Google__Protobuf__Value *v, bool redact)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        put_number(p, v->number_value, false);
        return RM_OK;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        put_cstring(p, redact ? REDACTED : v->string_value);
        return RM_OK;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        rm_strbuf_puts(p->out, v->bool_value ? "true" : "false");
        return RM_OK;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return print_message(p, &v->struct_value->base, redact);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        return print_message(p, &v->list_value->base, redact);
    default:
        rm_strbuf_puts(p->out, "null");
        return RM_OK;
    }
}

static int print_body(struct pp *p, const ProtobufCMessage *m, bool redact)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *f0 = &d->fields[0];
    bool first = true;
    int rc;
    switch (rm_pb_wkt_of(d)) {
    case RM_PB_WKT_ANY:
        return print_any(p, (const Google__Protobuf__Any *)m, redact);
    case RM_PB_WKT_DURATION: {
        const Google__Protobuf__Duration *du = (const Google__Protobuf__Duration *)m;
        rm_strbuf_putc(p->out, '"');
        rm_pb_duration_format(du->seconds, du->nanos, p->out);
        rm_strbuf_putc(p->out, '"');
        return RM_OK;
    }
    case RM_PB_WKT_TIMESTAMP: {
        const Google__Protobuf__Timestamp *ts = (const Google__Protobuf__Timestamp *)m;
        rm_strbuf_putc(p->out, '"');
        rm_pb_timestamp_format(ts->seconds, ts->nanos, p->out);
        rm_strbuf_putc(p->out, '"');
        return RM_OK;
    }
    case RM_PB_WKT_WRAPPER:
        return put_value(p, f0, (const char *)m + f0->offset, redact);
    case RM_PB_WKT_STRUCT:
        return print_map(p, f0, m, redact);
    case RM_PB_WKT_LIST:
        return print_array(p, f0, m, redact);
    case RM_PB_WKT_VALUE:
        return print_value_wkt(p, (const Google__Protobuf__Value *)m, redact);
    default:
        open_block(p, '{');
        rc = print_fields(p, m, redact, &first);
        close_block(p, '}', first);
        return rc;
    }
}

static int print_message(struct pp *p, const ProtobufCMessage *m, bool redact)
{
    if (++p->depth > RM_PB_MAX_DEPTH) return RM_ERR;
    int rc = print_body(p, m, redact);
    p->depth--;
    return rc;
}

int rm_pbprint_json(const ProtobufCMessage *m, unsigned flags, struct rm_strbuf *out)
{
    struct pp p = {.out = out, .flags = flags};
    return print_message(&p, m, false);
}
