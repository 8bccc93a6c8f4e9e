#include "proxy/config/pbutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "envoy/config/core/v3/address.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

uint32_t rm_pb_duration_ms(const struct Google__Protobuf__Duration *d, uint32_t dflt)
{
    if (!d) return dflt;
    if (d->seconds < 0 || (d->seconds == 0 && d->nanos <= 0)) return 0;
    uint64_t ms = (uint64_t)d->seconds * 1000u + ((uint64_t)d->nanos + 999999u) / 1000000u;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

uint32_t rm_pb_u32(const struct Google__Protobuf__UInt32Value *v, uint32_t dflt)
{
    return v ? v->value : dflt;
}

bool rm_pb_bool(const struct Google__Protobuf__BoolValue *v, bool dflt)
{
    return v ? v->value : dflt;
}

int rm_pb_address(const struct Envoy__Config__Core__V3__Address *a, const char *path,
                  struct sockaddr_storage *out, socklen_t *len, struct rm_error *err)
{
    if (!a) return rm_error_set(err, "%s: address is required", path);
    if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return rm_error_set(err, "%s: only socket_address is supported by remora", path);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return rm_error_set(err, "%s.socket_address.protocol: only TCP is supported", path);
    if (sa->port_specifier_case !=
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return rm_error_set(
            err, "%s.socket_address.port_value: required (named_port is not supported)", path);
    if (sa->port_value > 65535)
        return rm_error_set(err, "%s.socket_address.port_value: %u is not a valid port", path,
                            sa->port_value);
    if (sa->resolver_name && sa->resolver_name[0])
        return rm_error_set(err, "%s.socket_address.resolver_name: not supported by remora", path);
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, sa->address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)sa->port_value);
        *len = sizeof(*v4);
        return RM_OK;
    }
    if (inet_pton(AF_INET6, sa->address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)sa->port_value);
        *len = sizeof(*v6);
        return RM_OK;
    }
    return rm_error_set(err,
                        "%s.socket_address.address: \"%s\" is not an IP address (names need a "
                        "STRICT_DNS or LOGICAL_DNS cluster)",
                        path, sa->address);
}
