/* remora: a service-mesh sidecar proxy driven by Envoy's v3 configuration API. */
#include <malloc.h>

#include "proxy/server/server.h"

int main(int argc, char **argv)
{
    /* glibc trims the heap top on every free of a chunk near it, and a proxy frees and takes
     * back the same few buffers thousands of times a second: keep 1 MiB of slack instead of
     * paying an madvise + page faults per request. */
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    struct rm_options o;
    int rc = rm_options_parse(&o, argc, argv);
    if (rc) return rc > 0 ? 0 : 1;
    return rm_server_run(&o);
}
