#include "proxy/net/secrets.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/strmap.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

struct secret_entry {
    const Secret *pb; /* in the table's box */
    char path[160];   /* "<path>[i]", or "Secret <name>" */
};

struct rm_secrets {
    _Atomic unsigned refs;
    struct rm_pb_box *box;    /* a reference (NULL: the caller keeps the messages alive) */
    struct rm_pb_box **boxes; /* rm_secrets_new_boxed: a reference on each entry's box */
    struct secret_entry *v;   /* in definition order */
    size_t n;
    struct rm_strmap by_name; /* name -> entry in v */
};

int rm_secret_check(const Secret *s, const char *p, struct rm_error *err)
{
    if (!s->name || !s->name[0]) return rm_error_set(err, "%s.name: a secret needs a name", p);
    switch (s->type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE:
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT:
        return RM_OK;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_SESSION_TICKET_KEYS:
        return rm_error_set(err, "%s.session_ticket_keys: not supported by remora yet", p);
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_GENERIC_SECRET:
        return rm_error_set(err, "%s.generic_secret: not supported by remora", p);
    default:
        return rm_error_set(
            err, "%s: a secret needs tls_certificate or validation_context (\"%s\")", p, s->name);
    }
}

int rm_secrets_new(Secret *const *v, size_t n, struct rm_pb_box *box, const char *path,
                   struct rm_secrets **out, struct rm_error *err)
{
    *out = NULL;
    if (!n) return RM_OK;
    struct rm_secrets *s = calloc(1, sizeof(*s));
    if (!s) goto fail_oom;
    atomic_init(&s->refs, 1);
    if (!(s->v = calloc(n, sizeof(*s->v)))) goto fail_oom;
    s->box = box ? rm_pb_box_ref(box) : NULL;
    for (size_t i = 0; i < n; i++) {
        struct secret_entry *e = &s->v[s->n++];
        e->pb = v[i];
        snprintf(e->path, sizeof(e->path), "%s[%zu]", path, i);
        if (rm_secret_check(v[i], e->path, err)) goto fail;
        if (rm_strmap_get(&s->by_name, v[i]->name)) {
            rm_error_set(err, "%s.name: duplicate \"%s\"", e->path, v[i]->name);
            goto fail;
        }
        rm_strmap_put(&s->by_name, v[i]->name, e);
    }
    *out = s;
    return RM_OK;
fail_oom:
    rm_error_set(err, "%s: out of memory", path);
fail:
    rm_secrets_unref(s);
    return RM_ERR;
}

struct rm_secrets *rm_secrets_new_boxed(struct rm_pb_box *const *boxes, size_t n)
{
    if (!n) return NULL;
    struct rm_secrets *s = calloc(1, sizeof(*s));
    if (!s || !(s->v = calloc(n, sizeof(*s->v))) || !(s->boxes = calloc(n, sizeof(*s->boxes))))
        abort();
    atomic_init(&s->refs, 1);
    for (size_t i = 0; i < n; i++) {
        struct secret_entry *e = &s->v[s->n++];
        s->boxes[i] = rm_pb_box_ref(boxes[i]);
        e->pb = (const Secret *)boxes[i]->m;
        snprintf(e->path, sizeof(e->path), "Secret %s", e->pb->name);
        rm_strmap_put(&s->by_name, e->pb->name, e);
    }
    return s;
}

static const struct secret_entry *find(const struct rm_secrets *s, const char *name)
{
    return s && name ? rm_strmap_get(&s->by_name, name) : NULL;
}

const Secret *rm_secrets_find(const struct rm_secrets *s, const char *name)
{
    const struct secret_entry *e = find(s, name);
    return e ? e->pb : NULL;
}

const char *rm_secrets_path(const struct rm_secrets *s, const char *name)
{
    const struct secret_entry *e = find(s, name);
    return e ? e->path : "";
}

struct rm_secrets *rm_secrets_ref(struct rm_secrets *s)
{
    if (s) atomic_fetch_add(&s->refs, 1);
    return s;
}

void rm_secrets_unref(struct rm_secrets *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    rm_pb_box_unref(s->box);
    for (size_t i = 0; s->boxes && i < s->n; i++)
        rm_pb_box_unref(s->boxes[i]);
    free(s->boxes);
    rm_strmap_clear(&s->by_name);
    free(s->v);
    free(s);
}

/* ---- dynamic references ------------------------------------------------------------------- */

void rm_sds_refs_add(struct rm_sds_refs *r, const char *name, const struct rm_config_source *src)
{
    if (rm_sds_refs_has(r, name)) return;
    struct rm_sds_ref *v = realloc(r->v, (r->n + 1) * sizeof(*v));
    if (!v) abort();
    r->v = v;
    struct rm_sds_ref *e = &v[r->n++];
    if (!(e->name = strdup(name))) abort();
    rm_config_source_copy(&e->src, src);
}

void rm_sds_refs_merge(struct rm_sds_refs *r, const struct rm_sds_refs *from)
{
    for (size_t i = 0; from && i < from->n; i++)
        rm_sds_refs_add(r, from->v[i].name, &from->v[i].src);
}

bool rm_sds_refs_has(const struct rm_sds_refs *r, const char *name)
{
    for (size_t i = 0; r && i < r->n; i++) {
        if (strcmp(r->v[i].name, name) == 0) return true;
    }
    return false;
}

void rm_sds_refs_copy(struct rm_sds_refs *r, const struct rm_sds_refs *from)
{
    *r = (struct rm_sds_refs){0};
    rm_sds_refs_merge(r, from);
}

void rm_sds_refs_dispose(struct rm_sds_refs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].name);
        rm_config_source_dispose(&r->v[i].src);
    }
    free(r->v);
    *r = (struct rm_sds_refs){0};
}
