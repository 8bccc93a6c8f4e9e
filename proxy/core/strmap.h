/* A string-keyed hash map (chained, power-of-two buckets, FNV-1a): what the config layers use
 * to find resources by name in O(1) whatever the mesh size.  Keys are copied; values are the
 * caller's.  Single-threaded. */
#ifndef RM_CORE_STRMAP_H
#define RM_CORE_STRMAP_H

#include <stddef.h>

struct rm_strmap_ent {
    struct rm_strmap_ent *next;
    void *value;
    char key[];
};

struct rm_strmap {
    struct rm_strmap_ent **b;
    size_t nb, n;
};

#define RM_STRMAP_INIT                                                                             \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/** The value of <key>, or NULL. */
void *rm_strmap_get(const struct rm_strmap *m, const char *key);
/** Set <key> to <value> (a new entry, or the existing one's value replaced).  Returns the
 *  entry (its key stays valid until it is deleted).  Aborts when out of memory. */
struct rm_strmap_ent *rm_strmap_put(struct rm_strmap *m, const char *key, void *value);
/** Remove <key>; returns its value, or NULL when absent. */
void *rm_strmap_del(struct rm_strmap *m, const char *key);
/** Free the entries (not the values). */
void rm_strmap_clear(struct rm_strmap *m);

/** Iterate: for (e = rm_strmap_first(m, &i); e; e = rm_strmap_next(m, e, &i)).  Deleting the
 *  current entry during the walk is not allowed (collect keys first). */
struct rm_strmap_ent *rm_strmap_first(const struct rm_strmap *m, size_t *i);
struct rm_strmap_ent *rm_strmap_next(const struct rm_strmap *m, struct rm_strmap_ent *e, size_t *i);

#endif
