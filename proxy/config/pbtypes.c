#include "proxy/config/pbtypes.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"
#define MAX_DURATION_SECONDS 315576000000LL

/* ---- registry and Any ------------------------------------------------------------------ */

const ProtobufCMessageDescriptor *rm_pb_lookup_type_url(const char *type_url)
{
    static _Thread_local const ProtobufCMessageDescriptor *last; /* a response repeats a type */
    if (!type_url) return NULL;
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    if (last && strcmp(last->name, name) == 0) return last;
    for (size_t i = 0; i < rm_pb_registry_count; i++) {
        if (strcmp(rm_pb_registry[i]->name, name) == 0) return last = rm_pb_registry[i];
    }
    return NULL;
}

int rm_pb_any_unpack(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *expect,
                     ProtobufCMessage **out, struct rm_error *err)
{
    return rm_pb_any_unpack_with(any, expect, NULL, out, err);
}

int rm_pb_any_unpack_with(const Google__Protobuf__Any *any,
                          const ProtobufCMessageDescriptor *expect, ProtobufCAllocator *alloc,
                          ProtobufCMessage **out, struct rm_error *err)
{
    const char *url = any->type_url ? any->type_url : "";
    *out = NULL;
    const ProtobufCMessageDescriptor *d = rm_pb_lookup_type_url(url);
    if (!d) return rm_error_set(err, "unknown type \"%s\"", url);
    if (expect && d != expect)
        return rm_error_set(err, "expected type \"%s%s\", got \"%s\"", TYPE_URL_PREFIX,
                            expect->name, url);
    *out = protobuf_c_message_unpack(d, alloc, any->value.len, any->value.data);
    if (!*out) return rm_error_set(err, "cannot decode a \"%s\"", url);
    return RM_OK;
}

void rm_pb_any_pack(const ProtobufCMessage *m, Google__Protobuf__Any *any)
{
    const char *name = m->descriptor->name;
    size_t plen = strlen(TYPE_URL_PREFIX), nlen = strlen(name);
    char *url = malloc(plen + nlen + 1);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *data = n ? malloc(n) : NULL;
    if (!url || (n && !data)) abort();
    memcpy(url, TYPE_URL_PREFIX, plen);
    memcpy(url + plen, name, nlen + 1);
    if (n) protobuf_c_message_pack(m, data);
    any->type_url = url;
    any->value.len = n;
    any->value.data = data;
}

/* ---- unknown-field check --------------------------------------------------------------- */

static int check_msg(const ProtobufCMessage *m, struct rm_strbuf *path, int depth,
                     struct rm_error *err);

static int path_error(struct rm_error *err, const struct rm_strbuf *path, const char *what)
{
    return rm_error_set(err, "%s%s%s", rm_strbuf_str(path), path->len ? ": " : "", what);
}

static int check_any(const Google__Protobuf__Any *any, struct rm_strbuf *path, int depth,
                     struct rm_error *err)
{
    if (!rm_pb_lookup_type_url(any->type_url))
        return RM_OK; /* the validation of whatever holds it rejects unsupported types */
    ProtobufCMessage *inner;
    struct rm_error uerr;
    if (rm_pb_any_unpack(any, NULL, &inner, &uerr) != RM_OK) return path_error(err, path, uerr.msg);
    int rc = check_msg(inner, path, depth + 1, err);
    protobuf_c_message_free_unpacked(inner, NULL);
    return rc;
}

/* Path segment for element <i> of repeated message field <f>: ["key"] for string-keyed maps. */
static void append_elem(struct rm_strbuf *path, const ProtobufCMessageDescriptor *parent,
                        const ProtobufCFieldDescriptor *f, const ProtobufCMessage *elem, size_t i)
{
    if (rm_pb_is_map(parent, f) && elem->descriptor->fields[0].type == PROTOBUF_C_TYPE_STRING) {
        const char *key = *(char *const *)((const char *)elem + elem->descriptor->fields[0].offset);
        rm_strbuf_printf(path, "[\"%s\"]", key ? key : "");
    } else {
        rm_strbuf_printf(path, "[%zu]", i);
    }
}

/* Check a map entry: its own fields, then its value (when a message) at the same path. */
static int check_entry(const ProtobufCMessage *e, struct rm_strbuf *path, int depth,
                       struct rm_error *err)
{
    if (e->n_unknown_fields) return check_msg(e, path, depth, err);
    const ProtobufCFieldDescriptor *vf = &e->descriptor->fields[1];
    if (vf->type != PROTOBUF_C_TYPE_MESSAGE) return RM_OK;
    const ProtobufCMessage *v = *(ProtobufCMessage *const *)((const char *)e + vf->offset);
    return v ? check_msg(v, path, depth + 1, err) : RM_OK;
}

/* Check the message(s) held by field <f> of <m>. */
static int check_field(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                       struct rm_strbuf *path, int depth, struct rm_error *err)
{
    const char *base = (const char *)m;
    size_t mark = path->len;
    if (mark) rm_strbuf_putc(path, '.');
    rm_strbuf_puts(path, f->name);
    size_t field_mark = path->len;
    int rc = RM_OK;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n = *(const size_t *)(base + f->quantifier_offset);
        ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
        bool map = rm_pb_is_map(m->descriptor, f);
        for (size_t i = 0; i < n && rc == RM_OK; i++) {
            append_elem(path, m->descriptor, f, arr[i], i);
            rc = map ? check_entry(arr[i], path, depth + 1, err)
                     : check_msg(arr[i], path, depth + 1, err);
            rm_strbuf_truncate(path, field_mark);
        }
    } else {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
        if (sub) rc = check_msg(sub, path, depth + 1, err);
    }
    rm_strbuf_truncate(path, mark);
    return rc;
}

static int check_msg(const ProtobufCMessage *m, struct rm_strbuf *path, int depth,
                     struct rm_error *err)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > RM_PB_MAX_DEPTH) return path_error(err, path, "messages nested too deeply");
    if (m->n_unknown_fields) {
        char what[512];
        snprintf(what, sizeof(what), "unsupported field #%u of %s", m->unknown_fields[0].tag,
                 d->name);
        return path_error(err, path, what);
    }
    if (d == &google__protobuf__any__descriptor)
        return check_any((const Google__Protobuf__Any *)m, path, depth, err);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        if (check_field(m, f, path, depth, err) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

/* No unknown field anywhere under <m>, and no Any (whose payload needs decoding): the common
 * case, told without building a path per field (an xDS response holds thousands of messages).
 * false: maybe not, check_msg looks with paths. */
static bool clean(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > RM_PB_MAX_DEPTH || m->n_unknown_fields || d == &google__protobuf__any__descriptor)
        return false;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                if (!clean(arr[k], depth + 1)) return false;
            }
        } else {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
            if (sub && !clean(sub, depth + 1)) return false;
        }
    }
    return true;
}

int rm_pb_check_no_unknown(const ProtobufCMessage *m, const char *path, struct rm_error *err)
{
    if (clean(m, 0)) return RM_OK;
    struct rm_strbuf sb = RM_STRBUF_INIT;
    if (path) rm_strbuf_puts(&sb, path);
    int rc = check_msg(m, &sb, 0, err);
    rm_strbuf_dispose(&sb);
    return rc;
}

int rm_pb_check_named(const ProtobufCMessage *m, const struct rm_pb_field_name *names, size_t n,
                      const char *path, struct rm_error *err)
{
    for (size_t i = 0; i < m->n_unknown_fields; i++)
        for (size_t j = 0; j < n; j++)
            if (names[j].num == m->unknown_fields[i].tag)
                return rm_error_set(err, "%s.%s: not supported by remora", path, names[j].name);
    return rm_pb_check_no_unknown(m, path, err);
}

/* ---- descriptors ------------------------------------------------------------------------- */

enum rm_pb_wkt rm_pb_wkt_of(const ProtobufCMessageDescriptor *d)
{
    static const ProtobufCMessageDescriptor *const wrappers[] = {
        &google__protobuf__double_value__descriptor, &google__protobuf__float_value__descriptor,
        &google__protobuf__int64_value__descriptor,  &google__protobuf__uint64_value__descriptor,
        &google__protobuf__int32_value__descriptor,  &google__protobuf__uint32_value__descriptor,
        &google__protobuf__bool_value__descriptor,   &google__protobuf__string_value__descriptor,
        &google__protobuf__bytes_value__descriptor,
    };
    if (d == &google__protobuf__any__descriptor) return RM_PB_WKT_ANY;
    if (d == &google__protobuf__duration__descriptor) return RM_PB_WKT_DURATION;
    if (d == &google__protobuf__timestamp__descriptor) return RM_PB_WKT_TIMESTAMP;
    if (d == &google__protobuf__struct__descriptor) return RM_PB_WKT_STRUCT;
    if (d == &google__protobuf__list_value__descriptor) return RM_PB_WKT_LIST;
    if (d == &google__protobuf__value__descriptor) return RM_PB_WKT_VALUE;
    for (size_t i = 0; i < sizeof(wrappers) / sizeof(wrappers[0]); i++)
        if (d == wrappers[i]) return RM_PB_WKT_WRAPPER;
    return RM_PB_WKT_NONE;
}

/* Does <s> start with the json_name-style spelling of <snake> (protoc: drop '_', upper-case the
 * character after it; <upper_first> also upper-cases the first)?  Returns the rest of <s>, or
 * NULL on a mismatch. */
static const char *match_camel(const char *snake, const char *s, bool upper_first)
{
    bool upper = upper_first;
    for (const char *n = snake; *n; n++) {
        if (*n == '_') {
            upper = true;
            continue;
        }
        char want = upper ? (char)toupper((unsigned char)*n) : *n;
        upper = false;
        if (*s++ != want) return NULL;
    }
    return s;
}

bool rm_pb_is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
        strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0)
        return false;
    /* protoc names the entry <Parent>.<CamelCaseField>Entry */
    size_t plen = strlen(parent->name);
    if (strncmp(e->name, parent->name, plen) != 0 || e->name[plen] != '.') return false;
    const char *rest = match_camel(f->name, e->short_name, true);
    return rest && strcmp(rest, "Entry") == 0;
}

size_t rm_pb_elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default: /* 32-bit integers and enums */
        return 4;
    }
}

const ProtobufCFieldDescriptor *rm_pb_field_by_json_name(const ProtobufCMessageDescriptor *d,
                                                         const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (f) return f;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *rest = match_camel(d->fields[i].name, name, false);
        if (rest && !*rest) return &d->fields[i];
    }
    return NULL;
}

void rm_pb_json_name(const char *proto_name, struct rm_strbuf *out)
{
    bool upper = false;
    for (const char *n = proto_name; *n; n++) {
        if (*n == '_') {
            upper = true;
            continue;
        }
        rm_strbuf_putc(out, upper ? (char)toupper((unsigned char)*n) : *n);
        upper = false;
    }
}

/* ---- Duration and Timestamp text --------------------------------------------------------- */

/* Parse ".ddd" (1..9 digits) at *s into nanoseconds; advances *s.  No dot: 0. */
static int parse_fraction(const char **s, int32_t *nanos)
{
    *nanos = 0;
    if (**s != '.') return RM_OK;
    (*s)++;
    int digits = 0;
    int32_t v = 0;
    while (isdigit((unsigned char)**s)) {
        if (++digits > 9) return RM_ERR;
        v = v * 10 + (**s - '0');
        (*s)++;
    }
    if (digits == 0) return RM_ERR;
    for (; digits < 9; digits++)
        v *= 10;
    *nanos = v;
    return RM_OK;
}

int rm_pb_duration_parse(const char *s, int64_t *seconds, int32_t *nanos)
{
    bool neg = *s == '-';
    if (neg) s++;
    if (!isdigit((unsigned char)*s)) return RM_ERR;
    int64_t sec = 0;
    while (isdigit((unsigned char)*s)) {
        sec = sec * 10 + (*s++ - '0');
        if (sec > MAX_DURATION_SECONDS) return RM_ERR;
    }
    int32_t ns;
    if (parse_fraction(&s, &ns) != RM_OK || strcmp(s, "s") != 0) return RM_ERR;
    *seconds = neg ? -sec : sec;
    *nanos = neg ? -ns : ns;
    return RM_OK;
}

/* Append ".ddd", ".dddddd" or ".ddddddddd" for 0 < ns < 1e9 (nothing for 0). */
static void format_fraction(int32_t ns, struct rm_strbuf *out)
{
    if (ns == 0) return;
    if (ns % 1000000 == 0)
        rm_strbuf_printf(out, ".%03d", (int)(ns / 1000000));
    else if (ns % 1000 == 0)
        rm_strbuf_printf(out, ".%06d", (int)(ns / 1000));
    else
        rm_strbuf_printf(out, ".%09d", (int)ns);
}

void rm_pb_duration_format(int64_t seconds, int32_t nanos, struct rm_strbuf *out)
{
    if (seconds < 0 || nanos < 0) {
        rm_strbuf_putc(out, '-');
        seconds = seconds < 0 ? -seconds : seconds;
        nanos = nanos < 0 ? -nanos : nanos;
    }
    rm_strbuf_printf(out, "%lld", (long long)seconds);
    format_fraction(nanos, out);
    rm_strbuf_putc(out, 's');
}

/* Read exactly <n> digits at *s into *v. */
static int read_digits(const char **s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*s)++) {
        if (!isdigit((unsigned char)**s)) return RM_ERR;
        *v = *v * 10 + (**s - '0');
    }
    return RM_OK;
}

/* Read <n> digits then the separator <sep> ('\0' = none). */
static int read_field(const char **s, int n, char sep, int *v)
{
    if (read_digits(s, n, v) != RM_OK) return RM_ERR;
    if (!sep) return RM_OK;
    if (**s != sep && !(sep == 'T' && **s == 't')) return RM_ERR;
    (*s)++;
    return RM_OK;
}

/* "Z", "z" or "+HH:MM"/"-HH:MM" at <s> (the whole rest) into seconds east of UTC. */
static int parse_offset(const char *s, long *offset)
{
    *offset = 0;
    if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') return RM_OK;
    if (s[0] != '+' && s[0] != '-') return RM_ERR;
    int sign = s[0] == '-' ? -1 : 1, hh, mm;
    s++;
    if (read_field(&s, 2, ':', &hh) || read_field(&s, 2, '\0', &mm) || *s || hh > 23 || mm > 59)
        return RM_ERR;
    *offset = sign * (hh * 3600L + mm * 60L);
    return RM_OK;
}

int rm_pb_timestamp_parse(const char *s, int64_t *seconds, int32_t *nanos)
{
    int y, mo, d, h, mi, se;
    if (read_field(&s, 4, '-', &y) || read_field(&s, 2, '-', &mo) || read_field(&s, 2, 'T', &d) ||
        read_field(&s, 2, ':', &h) || read_field(&s, 2, ':', &mi) || read_field(&s, 2, '\0', &se))
        return RM_ERR;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59)
        return RM_ERR;
    int32_t ns;
    long offset;
    if (parse_fraction(&s, &ns) != RM_OK || parse_offset(s, &offset) != RM_OK) return RM_ERR;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    *seconds = (int64_t)timegm(&tm) - offset;
    *nanos = ns;
    return RM_OK;
}

void rm_pb_timestamp_format(int64_t seconds, int32_t nanos, struct rm_strbuf *out)
{
    time_t t = (time_t)seconds;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        rm_strbuf_puts(out, "invalid");
        return;
    }
    rm_strbuf_printf(out, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    format_fraction(nanos, out);
    rm_strbuf_putc(out, 'Z');
}

/* ---- base64 ------------------------------------------------------------------------------ */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void rm_pb_base64_encode(const uint8_t *p, size_t n, struct rm_strbuf *out)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {b64_chars[(v >> 18) & 63], b64_chars[(v >> 12) & 63],
                     i + 1 < n ? b64_chars[(v >> 6) & 63] : '=',
                     i + 2 < n ? b64_chars[v & 63] : '='};
        rm_strbuf_append(out, q, 4);
    }
}

/* The 6-bit value of a base64 character (either alphabet), or -1. */
static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

int rm_pb_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len)
{
    uint8_t *buf = n ? malloc(n) : NULL; /* 3/4 of n would do */
    size_t len = 0, pad = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (n && !buf) abort();
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (isspace((unsigned char)c)) continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) goto fail;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[len++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6 || pad > 2) /* a lone trailing character cannot encode a byte */
        goto fail;
    if (len == 0) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *out_len = len;
    return RM_OK;
fail:
    free(buf);
    return RM_ERR;
}
