/* Resource files for the reference control plane: see ads_files.h. */
#include "xds/ads_files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/strbuf.h"

typedef Envoy__Service__Discovery__V3__DiscoveryResponse DiscoveryResponse;

#define MAX_LIST_LINES 4096 /* lines remembered for messages about resources[i] */

/* What the top of a file looks like (read before the walker, to pick the message type). */
enum shape {
    SHAPE_EMPTY,  /* no document, or a null one */
    SHAPE_SINGLE, /* a resource (or something the walker will reject with a good message) */
    SHAPE_LIST,   /* a mapping with "resources" and no "@type" */
};

struct peek {
    enum shape shape;
    unsigned long line;                      /* of the root node */
    unsigned long item_line[MAX_LIST_LINES]; /* of resources[i], when a list */
    size_t nitems;
};

static bool null_scalar(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static void peek_list_lines(yaml_document_t *doc, yaml_node_t *seq, struct peek *pk)
{
    if (seq->type != YAML_SEQUENCE_NODE) return;
    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top && pk->nitems < MAX_LIST_LINES; it++)
        pk->item_line[pk->nitems++] = yaml_document_get_node(doc, *it)->start_mark.line + 1;
}

static void peek_root(yaml_document_t *doc, yaml_node_t *root, struct peek *pk)
{
    pk->line = root->start_mark.line + 1;
    if (null_scalar(root)) {
        pk->shape = SHAPE_EMPTY;
        return;
    }
    if (root->type != YAML_MAPPING_NODE) return;
    yaml_node_t *list = NULL;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k->type != YAML_SCALAR_NODE) continue;
        const char *key = (const char *)k->data.scalar.value;
        if (!strcmp(key, "@type")) return; /* a single resource */
        if (!strcmp(key, "resources")) list = yaml_document_get_node(doc, p->value);
    }
    if (!list) return;
    pk->shape = SHAPE_LIST;
    peek_list_lines(doc, list, pk);
}

/* Fill <pk>; invalid YAML leaves SHAPE_SINGLE, so that the walker reports it. */
static void peek(const char *text, size_t len, struct peek *pk)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    memset(pk, 0, sizeof(*pk));
    pk->shape = SHAPE_SINGLE;
    pk->line = 1;
    if (!yaml_parser_initialize(&parser)) abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (yaml_parser_load(&parser, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root)
            pk->shape = SHAPE_EMPTY;
        else
            peek_root(&doc, root, pk);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
}

/* ---- one resource ------------------------------------------------------------------------- */

const char *rm_ads_resource_name(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *field = strcmp(d->name, "envoy.config.endpoint.v3.ClusterLoadAssignment") == 0
                            ? "cluster_name"
                            : "name";
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    const char *v = *(char *const *)(const void *)((const char *)m + f->offset);
    return v ? v : "";
}

/* Add one Any-carried resource; <where> is "FILE:LINE: PATH" for messages. */
static int add_any(const Google__Protobuf__Any *any, const char *where, const char *origin,
                   struct rm_ads_set *out, struct rm_error *err)
{
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(any, NULL, &m, err) != RM_OK) return rm_error_prefix(err, "%s: ", where);
    const char *name = rm_ads_resource_name(m);
    int rc = RM_OK;
    if (!name)
        rc = rm_error_set(err, "%s: %s is not a resource type with a name", where,
                          m->descriptor->name);
    else if (!*name)
        rc = rm_error_set(
            err, "%s: %s has no name (field %s)", where, rm_ads_type_short(any->type_url),
            strstr(m->descriptor->name, "ClusterLoadAssignment") ? "cluster_name" : "name");
    else
        rc = rm_ads_set_add(out, any->type_url, name, any->value.data, any->value.len, origin, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static int load_single(const char *text, size_t len, const char *name, const struct peek *pk,
                       struct rm_ads_set *out, struct rm_error *err)
{
    ProtobufCMessage *m;
    if (rm_pbjson_parse_string(text, len, name, &google__protobuf__any__descriptor, &m, err) !=
        RM_OK)
        return RM_ERR;
    char where[1100];
    snprintf(where, sizeof(where), "%s:%lu", name, pk->line);
    int rc = add_any((Google__Protobuf__Any *)m, where, name, out, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* The list form may only use resources (and the harmless version_info / type_url). */
static int check_list_fields(const DiscoveryResponse *r, const char *name, unsigned long line,
                             struct rm_error *err)
{
    const char *bad = r->canary                  ? "canary"
                      : r->nonce && *r->nonce    ? "nonce"
                      : r->control_plane         ? "control_plane"
                      : r->n_resource_errors > 0 ? "resource_errors"
                                                 : NULL;
    if (bad)
        return rm_error_set(err,
                            "%s:%lu: %s: not allowed in a resource file (only resources, "
                            "version_info and type_url)",
                            name, line, bad);
    return RM_OK;
}

static int load_list(const char *text, size_t len, const char *name, const struct peek *pk,
                     struct rm_ads_set *out, struct rm_error *err)
{
    ProtobufCMessage *m;
    if (rm_pbjson_parse_string(text, len, name,
                               &envoy__service__discovery__v3__discovery_response__descriptor, &m,
                               err) != RM_OK)
        return RM_ERR;
    const DiscoveryResponse *r = (const DiscoveryResponse *)m;
    int rc = check_list_fields(r, name, pk->line, err);
    for (size_t i = 0; rc == RM_OK && i < r->n_resources; i++) {
        char where[1100];
        unsigned long line = i < pk->nitems ? pk->item_line[i] : pk->line;
        snprintf(where, sizeof(where), "%s:%lu: resources[%zu]", name, line, i);
        const char *want = r->type_url;
        if (want && *want && strcmp(want, r->resources[i]->type_url) != 0)
            rc = rm_error_set(err, "%s: type %s, but the file's type_url is %s", where,
                              r->resources[i]->type_url, want);
        else
            rc = add_any(r->resources[i], where, name, out, err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int rm_ads_load_text(const char *text, size_t len, const char *name, struct rm_ads_set *out,
                     struct rm_error *err)
{
    struct peek *pk = malloc(sizeof(*pk));
    if (!pk) abort();
    peek(text, len, pk);
    int rc = RM_OK;
    if (pk->shape == SHAPE_SINGLE)
        rc = load_single(text, len, name, pk, out, err);
    else if (pk->shape == SHAPE_LIST)
        rc = load_list(text, len, name, pk, out, err);
    free(pk);
    return rc;
}

/* ---- a directory -------------------------------------------------------------------------- */

static bool wanted_name(const char *n)
{
    size_t len = strlen(n);
    if (n[0] == '.') return false;
    static const char *const ext[] = {".yaml", ".yml", ".json"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        size_t el = strlen(ext[i]);
        if (len > el && strcmp(n + len - el, ext[i]) == 0) return true;
    }
    return false;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The wanted file names of <dir>, sorted (malloc'd array of malloc'd names). */
static int list_dir(const char *dir, char ***names, size_t *n, struct rm_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return rm_error_set(err, "%s: cannot open the directory: %s", dir, strerror(errno));
    char **v = NULL;
    size_t cnt = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!wanted_name(e->d_name)) continue;
        char **nv = realloc(v, (cnt + 1) * sizeof(*v));
        if (!nv) abort();
        v = nv;
        v[cnt++] = strdup(e->d_name);
    }
    closedir(d);
    if (cnt) qsort(v, cnt, sizeof(*v), name_cmp);
    *names = v;
    *n = cnt;
    return RM_OK;
}

static int read_file(const char *path, struct rm_strbuf *sb, bool *skip, struct rm_error *err)
{
    struct stat st;
    *skip = false;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) { /* removed since the listing (or a dangling link) */
            *skip = true;
            return RM_OK;
        }
        return rm_error_set(err, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        *skip = true;
        return RM_OK;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return rm_error_set(err, "%s: cannot open: %s", path, strerror(errno));
    char chunk[16384];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rm_strbuf_append(sb, chunk, k);
    bool bad = ferror(f);
    fclose(f);
    return bad ? rm_error_set(err, "%s: read error", path) : RM_OK;
}

static int load_one(const char *dir, const char *fname, struct rm_ads_set *out, size_t *nfiles,
                    struct rm_error *err)
{
    struct rm_strbuf path = RM_STRBUF_INIT, text = RM_STRBUF_INIT;
    rm_strbuf_printf(&path, "%s/%s", dir, fname);
    bool skip;
    int rc = read_file(rm_strbuf_str(&path), &text, &skip, err);
    if (rc == RM_OK && !skip) {
        rc = rm_ads_load_text(text.len ? rm_strbuf_str(&text) : "", text.len, rm_strbuf_str(&path),
                              out, err);
        (*nfiles)++;
    }
    rm_strbuf_dispose(&path);
    rm_strbuf_dispose(&text);
    return rc;
}

int rm_ads_load_dir(const char *dir, struct rm_ads_set *out, size_t *nfiles, struct rm_error *err)
{
    char **names = NULL;
    size_t n = 0, files = 0;
    rm_ads_set_init(out);
    if (list_dir(dir, &names, &n, err) != RM_OK) return RM_ERR;
    int rc = RM_OK;
    for (size_t i = 0; i < n; i++) {
        if (rc == RM_OK) rc = load_one(dir, names[i], out, &files, err);
        free(names[i]);
    }
    free(names);
    if (rc != RM_OK) rm_ads_set_dispose(out);
    if (nfiles) *nfiles = files;
    return rc;
}
