#include "proxy/core/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t key_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static struct rm_strmap_ent **slot(const struct rm_strmap *m, const char *key)
{
    struct rm_strmap_ent **pp = &m->b[key_hash(key) & (m->nb - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

void *rm_strmap_get(const struct rm_strmap *m, const char *key)
{
    if (!m->nb) return NULL;
    struct rm_strmap_ent *e = *slot(m, key);
    return e ? e->value : NULL;
}

static void grow(struct rm_strmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 16;
    struct rm_strmap_ent **b = calloc(nb, sizeof(*b));
    if (!b) abort();
    for (size_t i = 0; i < m->nb; i++) {
        for (struct rm_strmap_ent *e = m->b[i], *next; e; e = next) {
            next = e->next;
            struct rm_strmap_ent **pp = &b[key_hash(e->key) & (nb - 1)];
            e->next = *pp;
            *pp = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

struct rm_strmap_ent *rm_strmap_put(struct rm_strmap *m, const char *key, void *value)
{
    if (m->n >= m->nb) grow(m);
    struct rm_strmap_ent **pp = slot(m, key);
    if (!*pp) {
        size_t len = strlen(key);
        struct rm_strmap_ent *e = malloc(sizeof(*e) + len + 1);
        if (!e) abort();
        e->next = NULL;
        memcpy(e->key, key, len + 1);
        *pp = e;
        m->n++;
    }
    (*pp)->value = value;
    return *pp;
}

void *rm_strmap_del(struct rm_strmap *m, const char *key)
{
    if (!m->nb) return NULL;
    struct rm_strmap_ent **pp = slot(m, key);
    struct rm_strmap_ent *e = *pp;
    if (!e) return NULL;
    *pp = e->next;
    void *v = e->value;
    free(e);
    m->n--;
    return v;
}

void rm_strmap_clear(struct rm_strmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (struct rm_strmap_ent *e = m->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->b);
    *m = (struct rm_strmap)RM_STRMAP_INIT;
}

static struct rm_strmap_ent *from_bucket(const struct rm_strmap *m, size_t *i)
{
    for (; *i < m->nb; (*i)++) {
        if (m->b[*i]) return m->b[*i];
    }
    return NULL;
}

struct rm_strmap_ent *rm_strmap_first(const struct rm_strmap *m, size_t *i)
{
    *i = 0;
    return from_bucket(m, i);
}

struct rm_strmap_ent *rm_strmap_next(const struct rm_strmap *m, struct rm_strmap_ent *e, size_t *i)
{
    if (e->next) return e->next;
    (*i)++;
    return from_bucket(m, i);
}
