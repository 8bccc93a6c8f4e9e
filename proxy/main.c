/* remora: a service-mesh sidecar proxy driven by Envoy's v3 configuration API. */
#include "proxy/server/server.h"

int main(int argc, char **argv)
{
    struct rm_options o;
    int rc = rm_options_parse(&o, argc, argv);
    if (rc) return rc > 0 ? 0 : 1;
    return rm_server_run(&o);
}
