/* HTTP access logs (see access_log.h). */
#include "proxy/http/access_log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/loop.h"
#include "proxy/http/access_log_filter.h"
#include "proxy/http/headers.h"
#include "proxy/net/tls.h"

typedef Envoy__Config__Core__V3__SubstitutionFormatString FormatPb;
typedef Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog FilePb;
typedef Envoy__Extensions__AccessLoggers__Stream__V3__StdoutAccessLog StdoutPb;
typedef Envoy__Extensions__AccessLoggers__Stream__V3__StderrAccessLog StderrPb;

const char rm_alog_default_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/* ---- the format compiler ------------------------------------------------------------------ */

enum op {
    OP_LITERAL,
    OP_START_TIME,
    OP_REQ,
    OP_RESP,
    OP_TRAILER,
    OP_PROTOCOL,
    OP_RESPONSE_CODE,
    OP_RESPONSE_FLAGS,
    OP_RESPONSE_CODE_DETAILS,
    OP_BYTES_RECEIVED,
    OP_BYTES_SENT,
    OP_DURATION,
    OP_REQUEST_DURATION,
    OP_RESPONSE_DURATION,
    OP_UPSTREAM_HOST,
    OP_UPSTREAM_CLUSTER,
    OP_UPSTREAM_LOCAL_ADDRESS,
    OP_DOWNSTREAM_REMOTE_ADDRESS,
    OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    OP_DOWNSTREAM_LOCAL_ADDRESS,
    OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
    OP_ROUTE_NAME,
    OP_REQUESTED_SERVER_NAME,
    OP_HOSTNAME,
    OP_REQ_WITHOUT_QUERY,
    OP_CONNECTION_TERMINATION_DETAILS,
    OP_UPSTREAM_TRANSPORT_FAILURE_REASON,
    OP_UPSTREAM_REQUEST_ATTEMPT_COUNT,
    OP_CONNECTION_ID,
    OP_DOWNSTREAM_TLS_VERSION,
    OP_DOWNSTREAM_TLS_CIPHER,
    OP_DOWNSTREAM_PEER_URI_SAN,
    OP_DOWNSTREAM_LOCAL_URI_SAN,
    OP_UPSTREAM_PEER_URI_SAN,
    OP_NONE, /* known to Envoy, nothing in remora to print: always "-" */
};

enum arg { ARG_NONE, ARG_OPTIONAL, ARG_HEADER, ARG_REQUIRED };

static const struct opdef {
    const char *name;
    enum op op;
    enum arg arg;
    bool number; /* typed as a JSON number */
} opdefs[] = {
    {"START_TIME", OP_START_TIME, ARG_OPTIONAL, false},
    {"REQ", OP_REQ, ARG_HEADER, false},
    {"RESP", OP_RESP, ARG_HEADER, false},
    {"TRAILER", OP_TRAILER, ARG_HEADER, false},
    {"PROTOCOL", OP_PROTOCOL, ARG_NONE, false},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, ARG_NONE, true},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, ARG_NONE, false},
    {"RESPONSE_CODE_DETAILS", OP_RESPONSE_CODE_DETAILS, ARG_NONE, false},
    {"BYTES_RECEIVED", OP_BYTES_RECEIVED, ARG_NONE, true},
    {"BYTES_SENT", OP_BYTES_SENT, ARG_NONE, true},
    {"DURATION", OP_DURATION, ARG_NONE, true},
    {"REQUEST_DURATION", OP_REQUEST_DURATION, ARG_NONE, true},
    {"RESPONSE_DURATION", OP_RESPONSE_DURATION, ARG_NONE, true},
    {"UPSTREAM_HOST", OP_UPSTREAM_HOST, ARG_NONE, false},
    {"UPSTREAM_CLUSTER", OP_UPSTREAM_CLUSTER, ARG_NONE, false},
    {"UPSTREAM_LOCAL_ADDRESS", OP_UPSTREAM_LOCAL_ADDRESS, ARG_NONE, false},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, ARG_NONE, false},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, ARG_NONE, false},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, ARG_NONE,
     false},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
     ARG_NONE, false},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_DOWNSTREAM_LOCAL_ADDRESS, ARG_NONE, false},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, ARG_NONE,
     false},
    {"ROUTE_NAME", OP_ROUTE_NAME, ARG_NONE, false},
    {"REQUESTED_SERVER_NAME", OP_REQUESTED_SERVER_NAME, ARG_NONE, false},
    {"HOSTNAME", OP_HOSTNAME, ARG_NONE, false},
    {"REQ_WITHOUT_QUERY", OP_REQ_WITHOUT_QUERY, ARG_HEADER, false},
    /* set by network filters and codecs in Envoy; remora's never set one */
    {"CONNECTION_TERMINATION_DETAILS", OP_CONNECTION_TERMINATION_DETAILS, ARG_NONE, false},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", OP_UPSTREAM_TRANSPORT_FAILURE_REASON, ARG_NONE, false},
    {"UPSTREAM_REMOTE_ADDRESS", OP_UPSTREAM_HOST, ARG_NONE, false},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_UPSTREAM_REQUEST_ATTEMPT_COUNT, ARG_NONE, true},
    {"CONNECTION_ID", OP_CONNECTION_ID, ARG_NONE, true},
    {"DOWNSTREAM_TLS_VERSION", OP_DOWNSTREAM_TLS_VERSION, ARG_NONE, false},
    {"DOWNSTREAM_TLS_CIPHER", OP_DOWNSTREAM_TLS_CIPHER, ARG_NONE, false},
    {"DOWNSTREAM_PEER_URI_SAN", OP_DOWNSTREAM_PEER_URI_SAN, ARG_NONE, false},
    {"DOWNSTREAM_LOCAL_URI_SAN", OP_DOWNSTREAM_LOCAL_URI_SAN, ARG_NONE, false},
    {"UPSTREAM_PEER_URI_SAN", OP_UPSTREAM_PEER_URI_SAN, ARG_NONE, false},
    /* remora has no dynamic metadata and no filter state: "-" */
    {"DYNAMIC_METADATA", OP_NONE, ARG_REQUIRED, false},
    {"FILTER_STATE", OP_NONE, ARG_REQUIRED, false},
};

struct piece {
    enum op op;
    bool number;
    char *text; /* literal; the header name (lower case); START_TIME's strftime format */
    char *alt;  /* REQ/RESP/TRAILER: the alternative header, or NULL */
    size_t len; /* of text */
    size_t max; /* :N, 0 = no limit */
};

/* A text template: pieces in order. */
struct tmpl {
    struct piece *p;
    size_t n;
};

enum node_kind { NODE_TMPL, NODE_RAW, NODE_OBJECT };

/* JSON format: an object of keys to templates, raw JSON values or nested objects. */
struct node {
    char *key;      /* ',' then the JSON-encoded key and ':' (",\"k\":"), or NULL at the top */
    size_t key_len; /* of key */
    enum node_kind kind;
    struct tmpl t;    /* NODE_TMPL */
    char *raw;        /* NODE_RAW */
    struct node *kid; /* NODE_OBJECT: children */
    size_t n_kids;
};

struct rm_alog_format {
    bool json, omit_empty;
    struct tmpl t;    /* text */
    struct node root; /* json */
};

static void tmpl_dispose(struct tmpl *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->p[i].text);
        free(t->p[i].alt);
    }
    free(t->p);
    t->p = NULL;
    t->n = 0;
}

static void node_dispose(struct node *n)
{
    free(n->key);
    tmpl_dispose(&n->t);
    free(n->raw);
    for (size_t i = 0; i < n->n_kids; i++)
        node_dispose(&n->kid[i]);
    free(n->kid);
}

void rm_alog_format_free(struct rm_alog_format *f)
{
    if (!f) return;
    tmpl_dispose(&f->t);
    node_dispose(&f->root);
    free(f);
}

static struct piece *tmpl_push(struct tmpl *t)
{
    struct piece *np = realloc(t->p, (t->n + 1) * sizeof(*np));
    if (!np) abort();
    t->p = np;
    memset(&np[t->n], 0, sizeof(*np));
    return &np[t->n++];
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p) abort();
    return p;
}

/* A literal's text is followed by LIT_PAD zero bytes, so that put_tmpl copies a short one
 * with one fixed-size move (no memcpy call). */
#define LIT_PAD 16

static void push_literal(struct tmpl *t, const char *s, size_t n)
{
    if (!n) return;
    struct piece *q = t->n && t->p[t->n - 1].op == OP_LITERAL ? &t->p[t->n - 1] : NULL;
    if (!q) { /* "%%" splits literals: else join them */
        q = tmpl_push(t);
        q->op = OP_LITERAL;
    }
    char *np = realloc(q->text, q->len + n + LIT_PAD);
    if (!np) abort();
    memcpy(np + q->len, s, n);
    q->len += n;
    memset(np + q->len, 0, LIT_PAD);
    q->text = np;
}

static char *lower_dup(const char *s, size_t n)
{
    char *p = xstrndup(s, n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)tolower((unsigned char)p[i]);
    return p;
}

/* One %COMMAND(arg):N% at s (after the '%'); *end gets the byte after the closing '%'. */
static int parse_op(struct tmpl *t, const char *s, const char **end, const char *path,
                    struct rm_error *err)
{
    const char *q = s;
    while ((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_')
        q++;
    size_t nlen = (size_t)(q - s);
    const struct opdef *d = NULL;
    for (size_t i = 0; i < sizeof(opdefs) / sizeof(opdefs[0]); i++) {
        if (strlen(opdefs[i].name) == nlen && memcmp(opdefs[i].name, s, nlen) == 0) d = &opdefs[i];
    }
    if (!d) {
        const char *pct = strchr(s, '%');
        int shown = pct ? (int)(pct - s) : (int)strlen(s);
        return rm_error_set(err, "%s: unknown command operator \"%%%.*s%%\" (remora supports %s)",
                            path, shown > 80 ? 80 : shown, s,
                            "START_TIME REQ RESP TRAILER PROTOCOL RESPONSE_CODE RESPONSE_FLAGS "
                            "RESPONSE_CODE_DETAILS BYTES_RECEIVED BYTES_SENT DURATION "
                            "REQUEST_DURATION RESPONSE_DURATION UPSTREAM_HOST UPSTREAM_CLUSTER "
                            "UPSTREAM_LOCAL_ADDRESS DOWNSTREAM_REMOTE_ADDRESS[_WITHOUT_PORT] "
                            "DOWNSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT] ROUTE_NAME "
                            "REQUESTED_SERVER_NAME HOSTNAME REQ_WITHOUT_QUERY "
                            "CONNECTION_TERMINATION_DETAILS UPSTREAM_TRANSPORT_FAILURE_REASON "
                            "UPSTREAM_REMOTE_ADDRESS UPSTREAM_REQUEST_ATTEMPT_COUNT "
                            "CONNECTION_ID DOWNSTREAM_TLS_VERSION DOWNSTREAM_TLS_CIPHER "
                            "DOWNSTREAM_PEER_URI_SAN DOWNSTREAM_LOCAL_URI_SAN "
                            "UPSTREAM_PEER_URI_SAN DYNAMIC_METADATA FILTER_STATE");
    }
    const char *arg = NULL;
    size_t alen = 0;
    if (*q == '(') {
        const char *close = strchr(q, ')');
        if (!close) return rm_error_set(err, "%s: %%%s(: missing ')'", path, d->name);
        arg = q + 1;
        alen = (size_t)(close - arg);
        q = close + 1;
    }
    if (d->arg == ARG_NONE && arg)
        return rm_error_set(err, "%s: %%%s%% takes no argument", path, d->name);
    if (d->arg == ARG_HEADER && (!arg || !alen))
        return rm_error_set(err, "%s: %%%s(header)%% needs a header name", path, d->name);
    if (d->arg == ARG_REQUIRED && (!arg || !alen))
        return rm_error_set(err, "%s: %%%s(...)%% needs an argument", path, d->name);
    size_t max = 0;
    if (*q == ':') {
        q++;
        if (!isdigit((unsigned char)*q))
            return rm_error_set(err, "%s: %%%s%%: a length after ':' expected", path, d->name);
        while (isdigit((unsigned char)*q)) {
            max = max * 10 + (size_t)(*q - '0');
            if (max > 1000000)
                return rm_error_set(err, "%s: %%%s%%: length too big", path, d->name);
            q++;
        }
    }
    if (*q != '%')
        return rm_error_set(err, "%s: %%%s: missing '%%' after the operator", path, d->name);
    *end = q + 1;
    struct piece *pc = tmpl_push(t);
    pc->op = d->op;
    pc->number = d->number;
    pc->max = max;
    if (d->arg == ARG_HEADER) {
        const char *qm = memchr(arg, '?', alen);
        size_t hlen = qm ? (size_t)(qm - arg) : alen;
        if (!hlen || (qm && qm + 1 == arg + alen))
            return rm_error_set(err, "%s: %%%s(%.*s)%%: empty header name", path, d->name,
                                (int)alen, arg);
        pc->text = lower_dup(arg, hlen);
        pc->len = hlen;
        if (qm) pc->alt = lower_dup(qm + 1, (size_t)(arg + alen - qm - 1));
    } else if (arg && alen) {
        pc->text = xstrndup(arg, alen);
        pc->len = alen;
    }
    return RM_OK;
}

static int compile_tmpl(struct tmpl *t, const char *s, const char *path, struct rm_error *err)
{
    while (*s) {
        const char *pct = strchr(s, '%');
        if (!pct) {
            push_literal(t, s, strlen(s));
            break;
        }
        push_literal(t, s, (size_t)(pct - s));
        if (pct[1] == '%') { /* "%%": a literal '%' */
            push_literal(t, "%", 1);
            s = pct + 2;
            continue;
        }
        if (parse_op(t, pct + 1, &s, path, err)) return RM_ERR;
    }
    return RM_OK;
}

struct rm_alog_format *rm_alog_format_text(const char *text, bool omit_empty, const char *path,
                                           struct rm_error *err)
{
    struct rm_alog_format *f = calloc(1, sizeof(*f));
    if (!f) abort();
    f->omit_empty = omit_empty;
    if (compile_tmpl(&f->t, text, path, err)) {
        rm_alog_format_free(f);
        return NULL;
    }
    return f;
}

/* Bytes that need escaping in a JSON string: control characters, '"', '\\' and DEL. */
static const bool json_specials[256] = {
    [0 ... 0x1f] = true,
    ['"'] = true,
    ['\\'] = true,
    [0x7f] = true,
};

static inline bool json_special(unsigned char c)
{
    return json_specials[c];
}

/* Has the word <w> a zero byte?  Exact for "any" (the borrow only disturbs higher bytes). */
static inline uint64_t zero_byte8(uint64_t w)
{
    return (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
}

/* Has the word <w> a byte that needs escaping? */
static inline bool json_special8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t ctl = (w - 0x20 * ones) & ~w & 0x8080808080808080ull; /* a byte < 0x20 */
    return ctl | zero_byte8(w ^ ('"' * ones)) | zero_byte8(w ^ ('\\' * ones)) |
           zero_byte8(w ^ (0x7f * ones));
}

/* How many of the <n> bytes at <s> need no escaping before the first that does, eight at a
 * time.  Reads whole words: up to 7 bytes past the <n>th, which must be readable (their
 * value does not matter). */
static inline size_t json_plain_len(const char *s, size_t n)
{
    static const unsigned char keep[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w, k;
        memcpy(&w, s + i, 8);
        if (n - i < 8) { /* the bytes past n become 'a' */
            memcpy(&k, keep + 8 - (n - i), 8);
            w = (w & k) | ('a' * 0x0101010101010101ull & ~k);
        }
        if (!json_special8(w)) continue;
        while (!json_special((unsigned char)s[i]))
            i++;
        return i;
    }
    return n;
}

/* Append <c>'s JSON escape: \" \\ \n or \u00XX. */
static void json_escape(struct rm_strbuf *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char *d = rm_strbuf_reserve(out, 6);
    d[0] = '\\';
    if (c == '"' || c == '\\' || c == '\n') {
        d[1] = c == '\n' ? 'n' : (char)c;
        rm_strbuf_added(out, 2);
        return;
    }
    memcpy(d + 1, "u00", 3);
    d[4] = hex[c >> 4];
    d[5] = hex[c & 15];
    rm_strbuf_added(out, 6);
}

/* Append <s> (<n> bytes) escaped, without quotes: the bytes between escapes in one copy. */
static void json_body(struct rm_strbuf *out, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (!json_special((unsigned char)s[i])) continue;
        rm_strbuf_append(out, s + run, i - run);
        json_escape(out, (unsigned char)s[i]);
        run = i + 1;
    }
    rm_strbuf_append(out, s + run, n - run);
}

static void json_str(struct rm_strbuf *out, const char *s, size_t n)
{
    rm_strbuf_putc(out, '"');
    json_body(out, s, n);
    rm_strbuf_putc(out, '"');
}

static int compile_object(struct node *n, const Google__Protobuf__Struct *s, const char *path,
                          int depth, struct rm_error *err);

static int compile_value(struct node *k, const Google__Protobuf__Value *v, const char *path,
                         int depth, struct rm_error *err)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        k->kind = NODE_TMPL;
        return compile_tmpl(&k->t, v->string_value, path, err);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        k->kind = NODE_OBJECT;
        return compile_object(k, v->struct_value, path, depth + 1, err);
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        rm_strbuf_printf(&sb, "%.17g", v->number_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        rm_strbuf_puts(&sb, v->bool_value ? "true" : "false");
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        rm_strbuf_puts(&sb, "null");
        break;
    default:
        return rm_error_set(err,
                            "%s: only strings, numbers, booleans, null and objects are "
                            "supported in json_format",
                            path);
    }
    k->kind = NODE_RAW;
    k->raw = rm_strbuf_steal(&sb);
    return RM_OK;
}

static int compile_object(struct node *n, const Google__Protobuf__Struct *s, const char *path,
                          int depth, struct rm_error *err)
{
    if (depth > 16) return rm_error_set(err, "%s: json_format nested too deep", path);
    n->kid = calloc(s->n_fields + 1, sizeof(*n->kid));
    if (!n->kid) abort();
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        struct node *k = &n->kid[n->n_kids++];
        struct rm_strbuf key = RM_STRBUF_INIT;
        rm_strbuf_putc(&key, ',');
        json_str(&key, e->key, strlen(e->key));
        rm_strbuf_putc(&key, ':');
        k->key_len = key.len;
        k->key = rm_strbuf_steal(&key);
        char p[512];
        snprintf(p, sizeof(p), "%s.%s", path, e->key);
        if (!e->value) return rm_error_set(err, "%s: a value is required", p);
        if (compile_value(k, e->value, p, depth, err)) return RM_ERR;
    }
    return RM_OK;
}

static struct rm_alog_format *format_json(const Google__Protobuf__Struct *s, bool omit_empty,
                                          const char *path, struct rm_error *err)
{
    struct rm_alog_format *f = calloc(1, sizeof(*f));
    if (!f) abort();
    f->json = true;
    f->omit_empty = omit_empty;
    f->root.kind = NODE_OBJECT;
    if (compile_object(&f->root, s, path, 0, err)) {
        rm_alog_format_free(f);
        return NULL;
    }
    return f;
}

struct rm_alog_format *rm_alog_format_new(const FormatPb *pb, const char *path,
                                          struct rm_error *err)
{
    char p[512];
    if (!pb) return rm_alog_format_text(rm_alog_default_format, false, path, err);
    switch (pb->format_case) {
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT:
        snprintf(p, sizeof(p), "%s.text_format", path);
        return rm_alog_format_text(pb->text_format, pb->omit_empty_values, p, err);
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE: {
        snprintf(p, sizeof(p), "%s.text_format_source", path);
        const Envoy__Config__Core__V3__DataSource *ds = pb->text_format_source;
        if (ds->specifier_case != ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING) {
            rm_error_set(err, "%s: only inline_string is supported by remora", p);
            return NULL;
        }
        return rm_alog_format_text(ds->inline_string, pb->omit_empty_values, p, err);
    }
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT:
        snprintf(p, sizeof(p), "%s.json_format", path);
        return format_json(pb->json_format, pb->omit_empty_values, p, err);
    default:
        if (pb->content_type && pb->content_type[0]) break;
        return rm_alog_format_text(rm_alog_default_format, pb->omit_empty_values, path, err);
    }
    rm_error_set(err, "%s: one of text_format, text_format_source or json_format is required",
                 path);
    return NULL;
}

/* ---- formatting --------------------------------------------------------------------------- */

/* The value of header <name> in <h> (NULL: none).  A well-known name is looked up by its key:
 * one byte per entry, and nothing at all when the block's key bits say it is absent. */
static struct rm_str header_of(const struct rm_headers *h, const char *name, size_t len)
{
    if (!h) return (struct rm_str){0};
    enum rm_hkey k = rm_hkey_of(name, len);
    if (k > RM_HK_OTHER) return rm_headers_get_key(h, k);
    return rm_headers_get(h, name, len);
}

/* The decimal text of every byte value, built by the compiler: the digits, then the length in
 * the fourth byte. */
struct octet {
    char c[3];
    uint8_t len;
};
#define OCTET_C0(v) ((v) >= 100 ? '0' + (v) / 100 : (v) >= 10 ? '0' + (v) / 10 : '0' + (v))
#define OCTET_C1(v) ((v) >= 100 ? '0' + (v) / 10 % 10 : (v) >= 10 ? '0' + (v) % 10 : 0)
#define OCTET_C2(v) ((v) >= 100 ? '0' + (v) % 10 : 0)
#define OCTET(v)                                                                                   \
    {                                                                                              \
        {OCTET_C0(v), OCTET_C1(v), OCTET_C2(v)}, 1 + ((v) >= 10) + ((v) >= 100)                    \
    }
#define OCTET4(v) OCTET(v), OCTET((v) + 1), OCTET((v) + 2), OCTET((v) + 3)
#define OCTET16(v) OCTET4(v), OCTET4((v) + 4), OCTET4((v) + 8), OCTET4((v) + 12)
#define OCTET64(v) OCTET16(v), OCTET16((v) + 16), OCTET16((v) + 32), OCTET16((v) + 48)
static const struct octet octets[256] = {OCTET64(0), OCTET64(64), OCTET64(128), OCTET64(192)};

/* The dotted quad of <a> (network order), inet_ntop's text, at <d>: 16 bytes of room (each
 * number is copied as 4 bytes); returns the length. */
static size_t fmt_ipv4(char *d, const struct in_addr *a)
{
    const uint8_t *b = (const uint8_t *)&a->s_addr;
    char *q = d;
    for (int i = 0; i < 4; i++) {
        const struct octet *o = &octets[b[i]];
        memcpy(q, o, 4);
        q += o->len;
        *q++ = '.';
    }
    return (size_t)(q - d) - 1;
}

/* <v> (< 100) as two digits at <d>. */
static inline void fmt_2digits(char *d, unsigned v)
{
    if (v < 10) {
        d[0] = '0';
        d[1] = (char)('0' + v);
    } else {
        memcpy(d, octets[v].c, 2);
    }
}

/* <port> (< 65536) in decimal at <d> (8 bytes of room); returns the length. */
static size_t fmt_port(char *d, unsigned port)
{
    unsigned hi = port / 100, lo = port % 100;
    if (!hi) {
        memcpy(d, &octets[lo], 4);
        return octets[lo].len;
    }
    size_t n;
    if (hi < 256) {
        memcpy(d, &octets[hi], 4);
        n = octets[hi].len;
    } else { /* 25600..65535 */
        d[0] = (char)('0' + hi / 100);
        fmt_2digits(d + 1, hi % 100);
        n = 3;
    }
    fmt_2digits(d + n, lo);
    return n + 2;
}

/* "ip:port" / "[ip6]:port", or the address alone; *none when <sa> is neither family. */
static __attribute__((noinline)) void put_addr(struct rm_strbuf *out, const struct sockaddr *sa,
                                               bool port, bool *none)
{
    unsigned pn;
    char *d;
    size_t n;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        d = rm_strbuf_reserve(out, 16 + 1 + 8);
        n = fmt_ipv4(d, &a->sin_addr);
        pn = ntohs(a->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        d = rm_strbuf_reserve(out, INET6_ADDRSTRLEN + 3 + 8);
        n = port;
        d[0] = '[';
        inet_ntop(AF_INET6, &a->sin6_addr, d + n, INET6_ADDRSTRLEN);
        n += strlen(d + n);
        if (port) d[n++] = ']';
        pn = ntohs(a->sin6_port);
    } else {
        *none = true;
        return;
    }
    if (port) {
        d[n++] = ':';
        n += fmt_port(d + n, pn);
    }
    rm_strbuf_added(out, n);
}

/* START_TIME: strftime on UTC plus Envoy's %f / %Nf (fraction of a second, N digits, default
 * 9) and %EnS (seconds with n fractional digits). */
static __attribute__((noinline)) void put_time_slow(struct rm_strbuf *out, const char *fmt,
                                                    const struct timespec *ts)
{
    struct tm tm;
    time_t sec = ts->tv_sec;
    gmtime_r(&sec, &tm);
    if (!fmt) {
        char b[64];
        strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
        rm_strbuf_printf(out, "%s.%03ldZ", b, ts->tv_nsec / 1000000);
        return;
    }
    char ex[512];
    size_t o = 0;
    for (const char *p = fmt; *p && o + 32 < sizeof(ex); p++) {
        unsigned digits = 0;
        const char *q = p + 1;
        if (*p == '%' && q[0] == 'E' && q[1] >= '1' && q[1] <= '9' && q[2] == 'S') {
            digits = (unsigned)(q[1] - '0');
            o += (size_t)snprintf(ex + o, sizeof(ex) - o, "%02d.", tm.tm_sec);
            p += 3;
        } else if (*p == '%' && (q[0] == 'f' || (q[0] >= '1' && q[0] <= '9' && q[1] == 'f'))) {
            digits = q[0] == 'f' ? 9 : (unsigned)(q[0] - '0');
            p += q[0] == 'f' ? 1 : 2;
        } else {
            if (*p == '%' && q[0]) { /* keep strftime's own "%x" together */
                ex[o++] = *p++;
            }
            ex[o++] = *p;
            continue;
        }
        char frac[16];
        snprintf(frac, sizeof(frac), "%09ld", ts->tv_nsec);
        memcpy(ex + o, frac, digits);
        o += digits;
    }
    ex[o] = 0;
    char b[1024];
    size_t n = strftime(b, sizeof(b), ex, &tm);
    rm_strbuf_append(out, b, n);
}

/* START_TIME's text for one second, per thread (as nginx's ngx_cached_time and Envoy's
 * formatter cache): put_time_slow's text with each fraction digit left as a mark, the byte
 * TIME_MARK + i for digit i (0..8) of tv_nsec printed as %09ld (control bytes no strftime
 * conversion writes: %t writes 9), and the offsets of the marks.  A line
 * in the same second copies the text and writes the marked digits: no gmtime_r, no strftime.
 * Entries are found by the format's text (a format freed and another compiled at the same
 * address must not hit), so a thread alternating between formats keeps one entry each. */
#define TIME_FORMATS 4   /* START_TIME formats a thread keeps cached at once */
#define TIME_FMT_MAX 64  /* longer formats are not cached */
#define TIME_TEXT_MAX 96 /* nor texts longer than this */
#define TIME_MARKS_MAX 24
#define TIME_MARK 0x10 /* 0x10..0x18 */

static const char default_time_fmt[] = "%Y-%m-%dT%H:%M:%S.%3fZ"; /* fmt NULL, valid tv_nsec */

struct time_entry {
    time_t sec;
    const char *src; /* default_time_fmt, or NULL: found by its text (strcmp) */
    bool used;
    uint8_t len, n_marks, digits; /* digits: the highest digit index marked + 1 */
    uint8_t mark[TIME_MARKS_MAX]; /* offsets in text */
    char fmt[TIME_FMT_MAX];       /* default_time_fmt for the default */
    char text[TIME_TEXT_MAX];
};

static __thread struct time_entry time_cache[TIME_FORMATS];
static __thread unsigned time_cache_next; /* the entry a new format takes */

/* <fmt> as put_time_slow expands it for <tm>, with the marks instead of the fraction digits,
 * into <e>; false if it does not fit (then put_time_slow writes the line). */
static __attribute__((noinline)) bool time_fill(struct time_entry *e, const char *fmt,
                                                const struct tm *tm)
{
    char ex[512];
    size_t o = 0;
    for (const char *p = fmt; *p && o + 32 < sizeof(ex); p++) {
        unsigned digits = 0;
        const char *q = p + 1;
        if (*p == '%' && q[0] == 'E' && q[1] >= '1' && q[1] <= '9' && q[2] == 'S') {
            digits = (unsigned)(q[1] - '0');
            o += (size_t)snprintf(ex + o, sizeof(ex) - o, "%02d.", tm->tm_sec);
            p += 3;
        } else if (*p == '%' && (q[0] == 'f' || (q[0] >= '1' && q[0] <= '9' && q[1] == 'f'))) {
            digits = q[0] == 'f' ? 9 : (unsigned)(q[0] - '0');
            p += q[0] == 'f' ? 1 : 2;
        } else {
            if (*p == '%' && q[0]) ex[o++] = *p++;
            ex[o++] = *p;
            continue;
        }
        for (unsigned i = 0; i < digits; i++)
            ex[o++] = (char)(TIME_MARK + i);
    }
    ex[o] = 0;
    size_t n = strftime(e->text, sizeof(e->text), ex, tm);
    if (!n && o) return false; /* too long for the entry (or an empty text: not worth it) */
    e->len = (uint8_t)n;
    e->n_marks = e->digits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e->text[i];
        if (c < TIME_MARK || c > TIME_MARK + 8) continue;
        if (e->n_marks == TIME_MARKS_MAX) return false;
        e->mark[e->n_marks++] = (uint8_t)i;
        if (c - TIME_MARK + 1u > e->digits) e->digits = (uint8_t)(c - TIME_MARK + 1);
    }
    return true;
}

/* The entry for <fmt> in second <sec>, filled on a miss; NULL when the format is not cached
 * (too long, or it holds a mark byte itself). */
static const struct time_entry *time_entry_for(const char *fmt, time_t sec)
{
    struct time_entry *same = NULL;
    for (unsigned i = 0; i < TIME_FORMATS; i++) {
        struct time_entry *e = &time_cache[i];
        if (!e->used || (e->src != fmt && strcmp(e->fmt, fmt) != 0)) continue;
        if (e->sec == sec) return e;
        same = e;
    }
    size_t flen = strlen(fmt);
    if (flen >= TIME_FMT_MAX) return NULL;
    for (size_t i = 0; i < flen; i++)
        if (fmt[i] >= TIME_MARK && fmt[i] <= TIME_MARK + 8) return NULL;
    struct time_entry *e = same ? same : &time_cache[time_cache_next++ % TIME_FORMATS];
    struct tm tm;
    gmtime_r(&sec, &tm);
    e->used = false;
    if (!time_fill(e, fmt, &tm)) return NULL;
    memcpy(e->fmt, fmt, flen + 1);
    e->src = fmt == default_time_fmt ? fmt : NULL; /* static: the pointer is the key */
    e->sec = sec;
    e->used = true;
    return e;
}

/* START_TIME: strftime on UTC plus Envoy's %f / %Nf / %EnS, as put_time_slow, from the
 * thread's cache. */
static void put_time(struct rm_strbuf *out, const char *fmt, const struct timespec *ts)
{
    long ns = ts->tv_nsec;
    const struct time_entry *e = NULL;
    if (ns >= 0 && ns < 1000000000) e = time_entry_for(fmt ? fmt : default_time_fmt, ts->tv_sec);
    if (!e) {
        put_time_slow(out, fmt, ts);
        return;
    }
    char *d = rm_strbuf_reserve(out, e->len);
    memcpy(d, e->text, e->len);
    if (e->n_marks) {
        static const uint32_t pow10[10] = {1,      10,      100,      1000,      10000,
                                           100000, 1000000, 10000000, 100000000, 1000000000};
        char frac[9]; /* the first e->digits digits of %09ld */
        uint32_t v = (uint32_t)ns / pow10[9 - e->digits];
        for (unsigned i = e->digits; i > 0; i--, v /= 10)
            frac[i - 1] = (char)('0' + v % 10);
        for (unsigned i = 0; i < e->n_marks; i++)
            d[e->mark[i]] = frac[d[e->mark[i]] - TIME_MARK];
    }
    rm_strbuf_added(out, e->len);
}

static char host_name[256];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void host_init(void)
{
    if (gethostname(host_name, sizeof(host_name) - 1) != 0) host_name[0] = 0;
}

static const char *hostname(void)
{
    pthread_once(&host_once, host_init);
    return host_name;
}

/* Append <s> with its spaces made '_' (Envoy's details have no whitespace). */
static void put_underscored(struct rm_strbuf *out, const char *s)
{
    for (; *s; s++)
        rm_strbuf_putc(out, *s == ' ' ? '_' : *s);
}

/* UPSTREAM_TRANSPORT_FAILURE_REASON (see rm_alog_info); false when there is none. */
static bool put_transport_failure(struct rm_strbuf *out, const struct rm_alog_info *in,
                                  bool underscored)
{
    char b[48];
    const char *s = in->transport_failure;
    if (!s && in->transport_errno > 0) {
        snprintf(b, sizeof(b), "delayed connect error: %d", in->transport_errno);
        s = b;
    }
    if (!s) return false;
    if (underscored)
        put_underscored(out, s);
    else
        rm_strbuf_puts(out, s);
    return true;
}

/* RESPONSE_CODE_DETAILS: "reset{reason}" becomes "reset{reason,transport_failure}". */
static void put_details(struct rm_strbuf *out, const struct rm_alog_info *in, bool *none)
{
    const char *d = in->details;
    if (!d || !*d) {
        *none = true;
        return;
    }
    size_t n = strlen(d);
    if (d[n - 1] != '}') {
        rm_strbuf_append(out, d, n);
        return;
    }
    rm_strbuf_append(out, d, n - 1);
    size_t mark = out->len;
    rm_strbuf_putc(out, ',');
    if (!put_transport_failure(out, in, true)) rm_strbuf_truncate(out, mark);
    rm_strbuf_putc(out, '}');
}

/* The value of header <pc> in <h> (its alternative when it has none); REQ_WITHOUT_QUERY cuts
 * it at the '?'. */
static struct rm_str header_value(const struct piece *pc, const struct rm_headers *h)
{
    struct rm_str s = header_of(h, pc->text, pc->len);
    if (!s.p && pc->alt) s = header_of(h, pc->alt, strlen(pc->alt));
    if (s.p && pc->op == OP_REQ_WITHOUT_QUERY) {
        const char *q = memchr(s.p, '?', s.len);
        if (q) s.len = (size_t)(q - s.p);
    }
    return s;
}

/* Append piece <pc>'s value; *none is set when it has none (nothing appended then).  Inlined
 * into put_tmpl and put_value (a call per piece was a fifth of a line's cost); the rare, large
 * paths it reaches (put_addr, put_time's misses) stay out of line. */
static inline __attribute__((always_inline)) void
put_op(struct rm_strbuf *out, const struct piece *pc, const struct rm_alog_info *in, bool *none)
{
    struct rm_str s = {0};
    const char *cs = NULL;
    int64_t num = -1;
    switch (pc->op) {
    case OP_LITERAL:
        rm_strbuf_append(out, pc->text, pc->len);
        return;
    case OP_START_TIME:
        put_time(out, pc->text, &in->start);
        return;
    case OP_REQ:
    case OP_REQ_WITHOUT_QUERY:
        s = header_value(pc, in->req);
        break;
    case OP_RESP:
        s = header_value(pc, in->resp);
        break;
    case OP_TRAILER:
        s = header_value(pc, in->trailers);
        break;
    case OP_PROTOCOL:
        cs = in->protocol;
        break;
    case OP_RESPONSE_CODE:
        num = in->status;
        break;
    case OP_RESPONSE_FLAGS:
        cs = in->resp_flags;
        break;
    case OP_RESPONSE_CODE_DETAILS:
    case OP_UPSTREAM_TRANSPORT_FAILURE_REASON: {
        size_t mark = out->len;
        if (pc->op == OP_RESPONSE_CODE_DETAILS)
            put_details(out, in, none);
        else if (!put_transport_failure(out, in, false))
            *none = true;
        if (pc->max && out->len - mark > pc->max) rm_strbuf_truncate(out, mark + pc->max);
        return;
    }
    case OP_BYTES_RECEIVED:
        num = (int64_t)in->bytes_rx;
        break;
    case OP_BYTES_SENT:
        num = (int64_t)in->bytes_tx;
        break;
    case OP_DURATION:
        num = in->duration_ms;
        break;
    case OP_REQUEST_DURATION:
        num = in->req_duration_ms;
        break;
    case OP_RESPONSE_DURATION:
        num = in->resp_duration_ms;
        break;
    case OP_UPSTREAM_HOST:
        cs = in->upstream_host;
        break;
    case OP_UPSTREAM_CLUSTER:
        cs = in->upstream_cluster;
        break;
    case OP_UPSTREAM_LOCAL_ADDRESS:
        put_addr(out, in->upstream_local, true, none);
        return;
    case OP_DOWNSTREAM_REMOTE_ADDRESS:
    case OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
        if (in->down_pipe) {
            cs = in->down_pipe;
            break;
        }
        put_addr(out, in->down_remote, pc->op == OP_DOWNSTREAM_REMOTE_ADDRESS, none);
        return;
    case OP_DOWNSTREAM_LOCAL_ADDRESS:
    case OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
        if (in->down_pipe) {
            cs = in->down_pipe;
            break;
        }
        put_addr(out, in->down_local, pc->op == OP_DOWNSTREAM_LOCAL_ADDRESS, none);
        return;
    case OP_ROUTE_NAME:
        cs = in->route_name;
        break;
    case OP_REQUESTED_SERVER_NAME:
        cs = in->down_tls ? in->down_tls->sni : NULL;
        break;
    case OP_HOSTNAME:
        cs = hostname();
        break;
    case OP_UPSTREAM_REQUEST_ATTEMPT_COUNT:
        num = in->attempts;
        break;
    case OP_CONNECTION_ID:
        if (in->connection_id) num = (int64_t)in->connection_id;
        break;
    case OP_DOWNSTREAM_TLS_VERSION:
        cs = in->down_tls ? in->down_tls->version : NULL;
        break;
    case OP_DOWNSTREAM_TLS_CIPHER:
        cs = in->down_tls ? in->down_tls->cipher : NULL;
        break;
    case OP_DOWNSTREAM_PEER_URI_SAN:
        cs = in->down_tls ? in->down_tls->peer_uri_san : NULL;
        break;
    case OP_DOWNSTREAM_LOCAL_URI_SAN:
        cs = in->down_tls ? in->down_tls->local_uri_san : NULL;
        break;
    case OP_UPSTREAM_PEER_URI_SAN:
        cs = in->upstream_peer_uri_san;
        break;
    case OP_CONNECTION_TERMINATION_DETAILS:
    case OP_NONE:
        break;
    }
    if (cs && *cs) s = (struct rm_str){.p = cs, .len = strlen(cs)};
    if (s.p) {
        size_t n = pc->max && s.len > pc->max ? pc->max : s.len;
        rm_strbuf_append(out, s.p, n);
    } else if (num >= 0) {
        rm_strbuf_put_u64(out, (uint64_t)num);
    } else {
        *none = true;
    }
}

static inline void put_literal(struct rm_strbuf *out, const struct piece *pc)
{
    if (pc->len > LIT_PAD) {
        rm_strbuf_append(out, pc->text, pc->len);
        return;
    }
    memcpy(rm_strbuf_reserve(out, LIT_PAD), pc->text, LIT_PAD); /* the padding is overwritten */
    rm_strbuf_added(out, pc->len);
}

static void put_tmpl(struct rm_strbuf *out, const struct tmpl *t, const struct rm_alog_info *in,
                     bool omit_empty)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->p[i].op == OP_LITERAL) { /* half the pieces: no call */
            put_literal(out, &t->p[i]);
            continue;
        }
        bool none = false;
        put_op(out, &t->p[i], in, &none);
        if (none && !omit_empty) rm_strbuf_putc(out, '-');
    }
}

/* Escape the text of <out> from offset <i> (where the first byte that needs it is) on. */
static __attribute__((noinline)) void json_escape_rest(struct rm_strbuf *out, size_t i)
{
    size_t n = out->len - i;
    char *rest = malloc(n);
    if (!rest) abort();
    memcpy(rest, out->p + i, n);
    rm_strbuf_truncate(out, i);
    json_body(out, rest, n);
    free(rest);
}

/* JSON-escape, in place, what was appended to <out> from offset <from> on (usually nothing
 * needs it: then this is a scan, inline). */
static inline void json_escape_from(struct rm_strbuf *out, size_t from)
{
    rm_strbuf_reserve(out, 8); /* json_plain_len reads up to 7 bytes past the text */
    size_t i = json_plain_len(out->p + from, out->len - from) + from;
    if (i != out->len) json_escape_rest(out, i);
}

/* Is <pc>'s text never in need of a JSON escape (IP addresses: digits, hex, '.', ':', '[]';
 * the default START_TIME)?  Operators not listed here are scanned, and so is a pipe's path. */
static bool plain_text(const struct piece *pc, const struct rm_alog_info *in)
{
    switch (pc->op) {
    case OP_START_TIME:
        return !pc->text;
    case OP_DOWNSTREAM_REMOTE_ADDRESS:
    case OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
    case OP_DOWNSTREAM_LOCAL_ADDRESS:
    case OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
        return !in->down_pipe;
    case OP_UPSTREAM_LOCAL_ADDRESS:
        return true;
    default:
        return false;
    }
}

/* One value: a single operator is typed (a number, a string or null), anything else is the
 * JSON string of its text.  Formats straight into <out>.  False when the value is omitted
 * (omit_empty and no value: nothing appended). */
static bool put_value(struct rm_strbuf *out, const struct node *k, const struct rm_alog_info *in,
                      bool omit_empty)
{
    if (k->t.n == 1 && k->t.p[0].op != OP_LITERAL) { /* one operator: typed */
        const struct piece *pc = &k->t.p[0];
        bool none = false;
        size_t mark = out->len;
        if (!pc->number) rm_strbuf_putc(out, '"');
        size_t from = out->len;
        put_op(out, pc, in, &none);
        if (none) {
            rm_strbuf_truncate(out, mark);
            if (omit_empty) return false;
            rm_strbuf_append(out, "null", 4);
            return true;
        }
        if (pc->number) return true;
        if (!plain_text(pc, in)) json_escape_from(out, from);
    } else {
        rm_strbuf_putc(out, '"');
        size_t from = out->len;
        put_tmpl(out, &k->t, in, omit_empty);
        json_escape_from(out, from);
    }
    rm_strbuf_putc(out, '"');
    return true;
}

static void put_object(struct rm_strbuf *out, const struct node *n, const struct rm_alog_info *in,
                       bool omit_empty)
{
    rm_strbuf_putc(out, '{');
    bool first = true;
    for (size_t i = 0; i < n->n_kids; i++) {
        const struct node *k = &n->kid[i];
        size_t mark = out->len;
        rm_strbuf_append(out, k->key + first, k->key_len - first); /* the first without ',' */
        if (k->kind == NODE_RAW) {
            rm_strbuf_puts(out, k->raw);
        } else if (k->kind == NODE_OBJECT) {
            put_object(out, k, in, omit_empty);
        } else if (!put_value(out, k, in, omit_empty)) {
            rm_strbuf_truncate(out, mark);
            continue;
        }
        first = false;
    }
    rm_strbuf_putc(out, '}');
}

void rm_alog_format_line(const struct rm_alog_format *f, const struct rm_alog_info *in,
                         struct rm_strbuf *out)
{
    if (!f->json) {
        put_tmpl(out, &f->t, in, f->omit_empty);
        return;
    }
    put_object(out, &f->root, in, f->omit_empty);
    rm_strbuf_putc(out, '\n');
}

/* ---- sinks: files shared by path, per-thread buffers, one flush thread --------------------- */

/* Who touches what (each rule is relied on below):
 *   - A worker formats and appends its lines to its own slot of the sink (struct slot, one per
 *     thread and sink, found by rm_stats_shard) without any lock: slot.buf and the worker-side
 *     fields are the owning thread's alone.
 *   - It hands the bytes to the flush thread (handoff) when buf reaches FLUSH_AT, from its 1 s
 *     timer, and in rm_access_log_thread_cleanup / rm_access_log_flush_thread: under flush_lock
 *     the bytes move (a buffer swap, or an append when the flush thread has not taken the
 *     previous batch yet) into slot.queued.  Nothing else on the request path takes a lock.
 *   - The flush thread is the only one that calls write(2) on a log fd.  Each round it moves
 *     every queued batch into slot.out (its own, no lock), writes them without any lock held,
 *     and keeps what could not be written in slot.out for the next round (1 s later).
 *   - slot.held (bytes in queued + out) counts toward the 1 MiB cap of the slot, so a
 *     destination that stops draining (the flush thread blocked in write(2)) makes the worker
 *     drop lines instead of growing memory.
 * Lifetimes: a sink is freed (slots included) by the sink_unref that drops its last reference.
 * References are held by each rm_access_log using it, by each slot on a worker's dirty list,
 * and by each slot in the flush thread's custody (slot.custody: from its first hand-off until
 * queued and out are both empty again), so neither a worker nor the flush thread ever holds a
 * slot whose sink can go.  Lock order: flush_lock, then registry_lock. */

#define FLUSH_AT (64 * 1024)  /* a thread hands its buffer to the flush thread at this size */
#define BUF_CAP (1024 * 1024) /* and drops lines rather than hold more than this per sink */
#define FLUSH_MS 1000         /* Envoy's file_flush_interval */
#define MAX_SLOTS 257         /* per-thread buffers: rm_stats_shard (0 main, workers 1..256) */
#define EXIT_WAIT_S 5         /* rm_access_log_shutdown: how long a write may block the exit */

/* access_log.written: lines accepted into a buffer (written out unless a write fails when the
 *   process exits); .dropped: lines refused because the thread's bytes for that sink (its own
 *   buffer plus what the flush thread holds) would pass 1 MiB, and lines still unwritten when
 *   the flush thread stops; .write_failed: write(2) calls on a log fd that failed or wrote
 *   nothing, and failed reopens; .flushed_by_timer: buffers handed to the flush thread by a
 *   worker's 1 s timer (before they reached 64 KiB). */
enum { ST_WRITTEN, ST_DROPPED, ST_WRITE_FAILED, ST_FLUSHED_BY_TIMER, ST__COUNT };
static const struct rm_stat_def stat_defs[ST__COUNT] = {
    {"written", RM_COUNTER},
    {"dropped", RM_COUNTER},
    {"write_failed", RM_COUNTER},
    {"flushed_by_timer", RM_COUNTER},
};

struct slot {
    /* the owning thread only */
    struct rm_strbuf buf;    /* lines not handed off yet */
    struct slot *next_dirty; /* the owning thread's list */
    bool dirty;              /* listed; holds a reference on the sink */
    /* under flush_lock */
    struct rm_strbuf queued; /* handed off, not taken by the flush thread yet */
    /* fl.custody, or the flush thread's round: it reads those links without the lock (nobody
     * relinks a slot that is in custody) */
    struct slot *next_custody;
    bool custody; /* in the flush thread's care; holds a reference on the sink */
    /* the flush thread only */
    struct rm_strbuf out; /* being written; what a write left stays for the next round */
    /* bytes in queued + out: the owner adds (handoff), the flush thread subtracts what it wrote
     * or dropped.  Relaxed: the owner's reads see its own adds, and a stale subtraction only
     * makes it drop early, never hold more than BUF_CAP. */
    _Atomic size_t held;
    struct sink *sink; /* set at creation */
};

struct sink {
    char *path; /* NULL: stdout/stderr */
    int fd;     /* replaced in place (dup3) by a reopen; closed when the sink is freed */
    bool own_fd;
    unsigned refs;     /* under registry_lock */
    struct sink *next; /* the registry */
    _Atomic(struct slot *) slots[MAX_SLOTS];
};

struct rm_access_log {
    struct sink *sink;
    struct rm_alog_format *fmt;
    struct rm_alog_filter *filter; /* NULL: log every stream */
};

/* registry_lock: the registry list, every sink's refs, and fd replacement by reopen. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sink *registry;
static struct rm_stats *alog_stats; /* access_log.: taken with the first sink, kept */

/* flush_lock: every slot's queued and custody fields, and fl (the flush thread's state). */
static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flush_wake = PTHREAD_COND_INITIALIZER; /* to the flush thread */
static pthread_cond_t flush_done = PTHREAD_COND_INITIALIZER; /* from it: a round ended */
static struct {
    pthread_t thread;
    bool running;         /* started (by the first hand-off), not joined yet */
    bool stop;            /* rm_access_log_shutdown: write what is left and exit */
    bool kick;            /* something was handed off or asked since the round began */
    struct slot *custody; /* slots in custody, except those of the round in progress */
    uint64_t asked, done; /* rm_access_log_flush_thread: requests, and the last one served */
} fl;

static __thread struct slot *dirty_list;
static __thread struct rm_timer flush_timer;
static __thread struct rm_loop *flush_loop;
static __thread struct rm_strbuf line;

/* Shard 0 is shared by the main thread and the flush thread (its rm_stats_shard stays 0):
 * there the add is atomic. */
static void stat_add_shared(unsigned idx, int64_t n)
{
    atomic_fetch_add_explicit(&rm_stats_row(alog_stats, 0)[idx], n, memory_order_relaxed);
}

/* Count in access_log.<idx>; a worker owns its shard (the request path: inline, no atomic). */
static inline void stat_add(unsigned idx, int64_t n)
{
    if (__builtin_expect(rm_stats_shard == 0, 0)) {
        stat_add_shared(idx, n);
        return;
    }
    rm_stat_add(alog_stats, idx, n);
}

static struct sink *sink_get(const char *path, int std_fd, const char *where, struct rm_error *err)
{
    pthread_mutex_lock(&registry_lock);
    if (!alog_stats) alog_stats = rm_stats_get("access_log.", stat_defs, ST__COUNT);
    struct sink *s;
    for (s = registry; s; s = s->next) {
        if (path ? s->path && strcmp(s->path, path) == 0 : !s->path && s->fd == std_fd) break;
    }
    if (s) {
        s->refs++;
        pthread_mutex_unlock(&registry_lock);
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->fd = std_fd;
    if (path) {
        s->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            int e = errno;
            pthread_mutex_unlock(&registry_lock);
            free(s);
            rm_error_set(err, "%s: cannot open \"%s\": %s", where, path, strerror(e));
            return NULL;
        }
        s->own_fd = true;
        s->path = xstrndup(path, strlen(path));
    }
    s->refs = 1;
    s->next = registry;
    registry = s;
    pthread_mutex_unlock(&registry_lock);
    return s;
}

/* One more reference on <s>, on which the caller holds one already. */
static void sink_ref(struct sink *s)
{
    pthread_mutex_lock(&registry_lock);
    s->refs++;
    pthread_mutex_unlock(&registry_lock);
}

/* Drop a reference; the last one frees the sink and its slots (any thread: by then no slot is
 * dirty or in custody, and the lock orders this after their last use). */
static void sink_unref(struct sink *s)
{
    if (!s) return;
    pthread_mutex_lock(&registry_lock);
    if (--s->refs) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    for (struct sink **pp = &registry; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    for (size_t i = 0; i < MAX_SLOTS; i++) {
        struct slot *sl = atomic_load(&s->slots[i]);
        if (!sl) continue;
        rm_strbuf_dispose(&sl->buf);
        rm_strbuf_dispose(&sl->queued);
        rm_strbuf_dispose(&sl->out);
        free(sl);
    }
    if (s->own_fd) close(s->fd);
    free(s->path);
    free(s);
}

static void strbuf_swap(struct rm_strbuf *a, struct rm_strbuf *b)
{
    struct rm_strbuf t = *a;
    *a = *b;
    *b = t;
}

/* Drop the first <n> bytes of <b>. */
static void strbuf_consume(struct rm_strbuf *b, size_t n)
{
    if (n == b->len) {
        rm_strbuf_truncate(b, 0);
    } else if (n) {
        memmove(b->p, b->p + n, b->len - n);
        rm_strbuf_truncate(b, b->len - n);
    }
}

/* ---- the flush thread ---- */

/* Set by rm_access_log_shutdown when a write blocked the exit too long; it then sends
 * SIGRTMIN to the flush thread (the only thread that does not block it; its handler does
 * nothing and has no SA_RESTART) until the thread is gone, so a blocked write(2) returns. */
static atomic_bool flush_abort;

static void on_abort_signal(int sig)
{
    (void)sig;
}

/* Write sl->out (whole, retrying short writes); what cannot be written stays.  Flush thread,
 * no lock held. */
static void out_write(struct slot *sl)
{
    struct rm_strbuf *b = &sl->out;
    size_t off = 0;
    while (off < b->len) {
        if (atomic_load_explicit(&flush_abort, memory_order_relaxed)) break;
        ssize_t n = write(sl->sink->fd, b->p + off, b->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            stat_add(ST_WRITE_FAILED, 1);
            break;
        }
        off += (size_t)n;
    }
    strbuf_consume(b, off);
    atomic_fetch_sub_explicit(&sl->held, off, memory_order_relaxed);
    if (!b->len && b->cap > 2 * FLUSH_AT) rm_strbuf_dispose(b); /* a backlog: don't keep it */
}

/* The process is exiting and <b> (sl->out or sl->queued) will not be written: count its lines
 * as dropped and free it.  The flush thread, or the main thread once it is gone. */
static void buf_drop(struct slot *sl, struct rm_strbuf *b)
{
    int64_t lines = 0;
    for (const char *p = b->p, *end = b->p + b->len; p && p < end; lines++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    if (lines) stat_add(ST_DROPPED, lines);
    atomic_fetch_sub_explicit(&sl->held, b->len, memory_order_relaxed);
    rm_strbuf_dispose(b);
}

/* One round: take the custody list, move each queued batch to out, write them all with no
 * lock held, then give back what still has bytes and release the rest.  Called and returns
 * with flush_lock held. */
static void flush_round(void)
{
    fl.kick = false;
    uint64_t serving = fl.asked;
    bool stopping = fl.stop;
    struct slot *round = fl.custody;
    fl.custody = NULL;
    for (struct slot *sl = round; sl; sl = sl->next_custody) {
        if (!sl->out.len) {
            strbuf_swap(&sl->out, &sl->queued);
        } else if (sl->queued.len) {
            rm_strbuf_append(&sl->out, sl->queued.p, sl->queued.len);
            rm_strbuf_truncate(&sl->queued, 0);
        }
    }
    pthread_mutex_unlock(&flush_lock);
    for (struct slot *sl = round; sl; sl = sl->next_custody) {
        if (sl->out.len) out_write(sl);
        if (sl->out.len && stopping) buf_drop(sl, &sl->out);
    }
    pthread_mutex_lock(&flush_lock);
    struct slot *released = NULL;
    for (struct slot *sl = round, *next; sl; sl = next) {
        next = sl->next_custody;
        if (sl->queued.len || sl->out.len) {
            sl->next_custody = fl.custody;
            fl.custody = sl;
        } else {
            sl->custody = false;
            sl->next_custody = released;
            released = sl;
        }
    }
    fl.done = serving;
    pthread_cond_broadcast(&flush_done);
    if (!released) return;
    pthread_mutex_unlock(&flush_lock);
    /* A worker may hand this slot off again as soon as custody is cleared: it then takes a new
     * reference, so the one dropped here is never the last while the slot is in use. */
    for (struct slot *sl = released, *next; sl; sl = next) {
        next = sl->next_custody;
        sink_unref(sl->sink);
    }
    pthread_mutex_lock(&flush_lock);
}

static void *flush_main(void *arg)
{
    (void)arg;
    sigset_t abort_sig;
    sigemptyset(&abort_sig);
    sigaddset(&abort_sig, SIGRTMIN);
    pthread_sigmask(SIG_UNBLOCK, &abort_sig, NULL);
    pthread_mutex_lock(&flush_lock);
    for (;;) {
        while (!fl.kick && !fl.stop) {
            if (!fl.custody) {
                pthread_cond_wait(&flush_wake, &flush_lock);
                continue;
            }
            /* a write left bytes behind: try again in FLUSH_MS */
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_sec += FLUSH_MS / 1000;
            if (pthread_cond_timedwait(&flush_wake, &flush_lock, &t) == ETIMEDOUT) break;
        }
        flush_round();
        if (fl.stop && !fl.custody && !fl.kick) break;
    }
    pthread_mutex_unlock(&flush_lock);
    return NULL;
}

/* Start the flush thread, flush_lock held.  Signals are blocked in it (the main thread reads
 * them from a signalfd) but SIGRTMIN (flush_abort).  On failure the bytes stay queued, under
 * the cap, for the next try. */
static void flush_start(void)
{
    struct sigaction sa = {.sa_handler = on_abort_signal}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGRTMIN, &sa, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    fl.running = pthread_create(&fl.thread, NULL, flush_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Give the bytes of <sl>'s buffer to the flush thread.  Owning thread; takes flush_lock (and
 * registry_lock for the custody reference) once per batch, never per line. */
static void handoff(struct slot *sl)
{
    size_t n = sl->buf.len;
    if (!n) return;
    pthread_mutex_lock(&flush_lock);
    if (!sl->queued.len) {
        strbuf_swap(&sl->queued, &sl->buf); /* buf takes the empty one back */
    } else {                                /* the flush thread is behind: add to its batch */
        rm_strbuf_append(&sl->queued, sl->buf.p, n);
        rm_strbuf_truncate(&sl->buf, 0);
    }
    atomic_fetch_add_explicit(&sl->held, n, memory_order_relaxed);
    if (!sl->custody) {
        sl->custody = true;
        sink_ref(sl->sink); /* we hold one (dirty): the sink is alive */
        sl->next_custody = fl.custody;
        fl.custody = sl;
    }
    fl.kick = true;
    if (!fl.running) flush_start();
    pthread_cond_signal(&flush_wake);
    pthread_mutex_unlock(&flush_lock);
}

/* Hand off every dirty buffer of this thread and drop the references their listing held. */
static void handoff_all(void)
{
    struct slot *sl = dirty_list;
    dirty_list = NULL;
    while (sl) {
        struct slot *next = sl->next_dirty;
        handoff(sl);
        sl->dirty = false;
        sl->next_dirty = NULL;
        /* The last reference only if nothing is queued (custody holds one) and the loggers
         * are gone: the sink goes, and no other thread can see it. */
        sink_unref(sl->sink);
        sl = next;
    }
}

void rm_access_log_flush_thread(void)
{
    handoff_all();
    pthread_mutex_lock(&flush_lock);
    if (fl.running) {
        uint64_t want = ++fl.asked;
        fl.kick = true;
        pthread_cond_signal(&flush_wake);
        while (fl.done < want)
            pthread_cond_wait(&flush_done, &flush_lock);
    }
    pthread_mutex_unlock(&flush_lock);
}

void rm_access_log_shutdown(void)
{
    pthread_mutex_lock(&flush_lock);
    if (!fl.running) {
        pthread_mutex_unlock(&flush_lock);
        return;
    }
    fl.stop = true;
    pthread_cond_signal(&flush_wake);
    pthread_mutex_unlock(&flush_lock);
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += EXIT_WAIT_S;
    if (pthread_timedjoin_np(fl.thread, NULL, &t) != 0) {
        /* blocked in write(2) (a pipe nobody reads): interrupt it, and again should the signal
         * land before the write (the flag stops the next one) */
        atomic_store(&flush_abort, true);
        do {
            pthread_kill(fl.thread, SIGRTMIN);
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_nsec += 100 * 1000 * 1000;
            if (t.tv_nsec >= 1000 * 1000 * 1000) {
                t.tv_sec++;
                t.tv_nsec -= 1000 * 1000 * 1000;
            }
        } while (pthread_timedjoin_np(fl.thread, NULL, &t) != 0);
        atomic_store(&flush_abort, false);
    }
    pthread_mutex_lock(&flush_lock); /* the thread left nothing in custody */
    fl.running = fl.stop = false;
    pthread_mutex_unlock(&flush_lock);
}

/* ---- the workers' side ---- */

static void on_flush_timer(struct rm_timer *t)
{
    (void)t;
    for (struct slot *sl = dirty_list; sl; sl = sl->next_dirty)
        if (sl->buf.len) stat_add(ST_FLUSHED_BY_TIMER, 1);
    handoff_all();
}

void rm_access_log_thread_cleanup(struct rm_loop *loop)
{
    if (loop && flush_loop == loop) rm_timer_stop(loop, &flush_timer);
    flush_loop = NULL;
    handoff_all(); /* written by the flush thread; rm_access_log_shutdown waits for it */
    rm_strbuf_dispose(&line);
}

static struct slot *my_slot(struct sink *s)
{
    unsigned i = rm_stats_shard < MAX_SLOTS ? rm_stats_shard : MAX_SLOTS - 1;
    struct slot *sl = atomic_load_explicit(&s->slots[i], memory_order_acquire);
    if (sl) return sl;
    sl = calloc(1, sizeof(*sl));
    if (!sl) abort();
    sl->sink = s;
    atomic_store_explicit(&s->slots[i], sl, memory_order_release);
    return sl;
}

void rm_access_log_write(const struct rm_access_log *l, struct rm_loop *loop,
                         const struct rm_alog_info *in)
{
    if (l->filter && !rm_alog_filter_eval(l->filter, in)) return;
    rm_strbuf_truncate(&line, 0);
    rm_alog_format_line(l->fmt, in, &line);
    struct slot *sl = my_slot(l->sink);
    size_t held = atomic_load_explicit(&sl->held, memory_order_relaxed);
    if (sl->buf.len + line.len + held > BUF_CAP) {
        stat_add(ST_DROPPED, 1);
        return;
    }
    rm_strbuf_append(&sl->buf, rm_strbuf_str(&line), line.len);
    stat_add(ST_WRITTEN, 1);
    if (!sl->dirty) {
        sink_ref(sl->sink);
        sl->dirty = true;
        sl->next_dirty = dirty_list;
        dirty_list = sl;
    }
    if (sl->buf.len >= FLUSH_AT) handoff(sl);
    if (loop && !flush_loop) flush_loop = loop;
    if (flush_loop && !rm_timer_armed(&flush_timer))
        rm_timer_start(flush_loop, &flush_timer, FLUSH_MS, on_flush_timer);
    if (line.cap > 64 * 1024) rm_strbuf_dispose(&line); /* one huge line: don't keep it */
}

void rm_access_log_reopen_all(void)
{
    pthread_mutex_lock(&registry_lock);
    for (struct sink *s = registry; s; s = s->next) {
        if (!s->path) continue;
        int fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            stat_add(ST_WRITE_FAILED, 1);
            continue;
        }
        /* Atomic for the flush thread: a write(2) in progress finishes on the old file, the
         * next one goes to the new file.  s->fd itself never changes. */
        dup3(fd, s->fd, O_CLOEXEC);
        close(fd);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- loggers ------------------------------------------------------------------------------ */

#define FILE_TYPE "envoy.extensions.access_loggers.file.v3.FileAccessLog"
#define STDOUT_TYPE "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
#define STDERR_TYPE "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"

static struct rm_alog_format *file_format(const FilePb *f, const char *p, struct rm_error *err)
{
    char fp[512];
    switch (f->access_log_format_case) {
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_FORMAT:
        snprintf(fp, sizeof(fp), "%s.format", p);
        return rm_alog_format_text(f->format, false, fp, err);
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_JSON_FORMAT:
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT: {
        bool typed =
            f->access_log_format_case ==
            ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT;
        snprintf(fp, sizeof(fp), "%s.%s", p, typed ? "typed_json_format" : "json_format");
        return format_json(typed ? f->typed_json_format : f->json_format, false, fp, err);
    }
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT:
        snprintf(fp, sizeof(fp), "%s.log_format", p);
        return rm_alog_format_new(f->log_format, fp, err);
    default:
        return rm_alog_format_new(NULL, p, err);
    }
}

struct rm_access_log *rm_access_log_new(const Envoy__Config__Accesslog__V3__AccessLog *pb,
                                        const char *path, struct rm_error *err)
{
    char p[512];
    if (pb->config_type_case !=
            ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG ||
        !pb->typed_config) {
        rm_error_set(err,
                     "%s.typed_config: required (a FileAccessLog, StdoutAccessLog or "
                     "StderrAccessLog)",
                     path);
        return NULL;
    }
    snprintf(p, sizeof(p), "%s.typed_config", path);
    const char *url = pb->typed_config->type_url;
    const char *slash = strrchr(url, '/');
    const char *type = slash ? slash + 1 : url;
    struct rm_access_log *l = calloc(1, sizeof(*l));
    if (!l) abort();
    ProtobufCMessage *m = NULL;
    if (pb->filter) {
        char fp[600];
        snprintf(fp, sizeof(fp), "%s.filter", path);
        if (!(l->filter = rm_alog_filter_new(pb->filter, fp, err))) goto fail;
    }
    if (strcmp(type, FILE_TYPE) == 0) {
        if (rm_pb_any_unpack(
                pb->typed_config,
                &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor, &m, err))
            goto fail;
        const FilePb *f = (const FilePb *)m;
        if (!f->path || !f->path[0]) {
            rm_error_set(err, "%s.path: required", p);
            goto fail;
        }
        if (!(l->fmt = file_format(f, p, err))) goto fail;
        char pp[600];
        snprintf(pp, sizeof(pp), "%s.path", p);
        if (!(l->sink = sink_get(f->path, -1, pp, err))) goto fail;
    } else if (strcmp(type, STDOUT_TYPE) == 0 || strcmp(type, STDERR_TYPE) == 0) {
        bool out = strcmp(type, STDOUT_TYPE) == 0;
        const ProtobufCMessageDescriptor *d =
            out ? &envoy__extensions__access_loggers__stream__v3__stdout_access_log__descriptor
                : &envoy__extensions__access_loggers__stream__v3__stderr_access_log__descriptor;
        if (rm_pb_any_unpack(pb->typed_config, d, &m, err)) goto fail;
        /* both messages have the same layout: one log_format field */
        const FormatPb *lf =
            out ? ((const StdoutPb *)m)->log_format : ((const StderrPb *)m)->log_format;
        char fp[600];
        snprintf(fp, sizeof(fp), "%s.log_format", p);
        if (!(l->fmt = rm_alog_format_new(lf, fp, err))) goto fail;
        if (!(l->sink = sink_get(NULL, out ? 1 : 2, p, err))) goto fail;
    } else {
        rm_error_set(err,
                     "%s: access logger \"%s\" (type %s) is not supported by remora (supported: "
                     "envoy.access_loggers.file, envoy.access_loggers.stdout, "
                     "envoy.access_loggers.stderr)",
                     p, pb->name ? pb->name : "", type);
        goto fail;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return l;
fail:
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    rm_access_log_free(l);
    return NULL;
}

void rm_access_log_free(struct rm_access_log *l)
{
    if (!l) return;
    rm_alog_format_free(l->fmt);
    rm_alog_filter_free(l->filter);
    sink_unref(l->sink);
    free(l);
}
