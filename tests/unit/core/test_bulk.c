#include <criterion/criterion.h>
#include <stdint.h>

#include "proxy/core/bulk.h"

Test(bulk, aligned_big_and_reusable)
{
    struct rm_bulk b = RM_BULK_INIT;
    char *prev = NULL;
    for (int i = 0; i < 100000; i++) { /* several chunks */
        char *p = rm_bulk_alloc(&b, 17);
        cr_assert_eq((uintptr_t)p % 16, 0);
        cr_assert(p != prev);
        p[16] = 1;
        prev = p;
    }
    char *big = rm_bulk_alloc(&b, 3u << 20); /* bigger than a chunk */
    big[(3u << 20) - 1] = 1;
    rm_bulk_dispose(&b);
    cr_assert_null(b.chunks);
    cr_assert_not_null(rm_bulk_alloc(&b, 8), "usable after dispose");
    rm_bulk_dispose(&b);
}
