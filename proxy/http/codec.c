#include "proxy/http/codec.h"

const char *rm_reset_reason_str(enum rm_reset_reason r)
{
    switch (r) {
    case RM_RESET_LOCAL:
        return "local reset";
    case RM_RESET_REMOTE:
        return "remote reset";
    case RM_RESET_PROTOCOL:
        return "protocol error";
    case RM_RESET_CONNECTION_FAILURE:
        return "connection failure";
    case RM_RESET_CONNECTION_TERMINATION:
        return "connection termination";
    case RM_RESET_REFUSED:
        return "refused stream";
    case RM_RESET_OVERFLOW:
        return "overflow";
    case RM_RESET_TIMEOUT:
        return "timeout";
    }
    return "unknown";
}
