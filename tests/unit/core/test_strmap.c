#include <criterion/criterion.h>
#include <stdio.h>

#include "proxy/core/strmap.h"

Test(strmap, put_get_del_and_iterate_many)
{
    struct rm_strmap m = RM_STRMAP_INIT;
    static int vals[5000];
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "cluster-%d", i);
        vals[i] = i;
        rm_strmap_put(&m, k, &vals[i]);
    }
    cr_assert_eq(m.n, 5000);
    rm_strmap_put(&m, "cluster-7", &vals[8]); /* replace */
    cr_assert_eq(m.n, 5000);
    cr_assert_eq(*(int *)rm_strmap_get(&m, "cluster-7"), 8);
    cr_assert_eq(*(int *)rm_strmap_get(&m, "cluster-4999"), 4999);
    cr_assert_null(rm_strmap_get(&m, "cluster-5000"));
    for (int i = 0; i < 5000; i += 2) {
        snprintf(k, sizeof(k), "cluster-%d", i);
        cr_assert_not_null(rm_strmap_del(&m, k));
    }
    cr_assert_null(rm_strmap_del(&m, "cluster-0"), "already gone");
    cr_assert_eq(m.n, 2500);
    size_t it, seen = 0;
    long sum = 0;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m, &it); e; e = rm_strmap_next(&m, e, &it)) {
        seen++;
        sum += *(int *)e->value;
        int n;
        cr_assert_eq(sscanf(e->key, "cluster-%d", &n), 1);
        cr_assert(n % 2 == 1, "deleted key %s still iterated", e->key);
    }
    cr_assert_eq(seen, 2500);
    cr_assert_eq(sum, 2500L * 2500 - 7 + 8); /* odd numbers 1..4999, cluster-7 holds 8 */
    rm_strmap_clear(&m);
    cr_assert_eq(m.n, 0);
    cr_assert_null(rm_strmap_get(&m, "cluster-1"));
    size_t i2;
    cr_assert_null(rm_strmap_first(&m, &i2));
}
