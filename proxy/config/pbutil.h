/* Small helpers for reading Envoy protobuf messages into internal config. */
#ifndef RM_CONFIG_PBUTIL_H
#define RM_CONFIG_PBUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"

struct Google__Protobuf__Duration;
struct Google__Protobuf__UInt32Value;
struct Google__Protobuf__BoolValue;
struct Envoy__Config__Core__V3__Address;

/** Duration in ms (rounded up from sub-ms), or <dflt> when unset; saturates at UINT32_MAX. */
uint32_t rm_pb_duration_ms(const struct Google__Protobuf__Duration *d, uint32_t dflt);
uint32_t rm_pb_u32(const struct Google__Protobuf__UInt32Value *v, uint32_t dflt);
bool rm_pb_bool(const struct Google__Protobuf__BoolValue *v, bool dflt);
/** Turn a socket_address (IP literal + port) into a sockaddr; errors name <path>. */
int rm_pb_address(const struct Envoy__Config__Core__V3__Address *a, const char *path,
                  struct sockaddr_storage *out, socklen_t *len, struct rm_error *err);

#endif
