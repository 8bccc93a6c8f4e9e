/* Small helpers for reading Envoy protobuf messages into internal config. */
#ifndef RM_CONFIG_PBUTIL_H
#define RM_CONFIG_PBUTIL_H

#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
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
/** Turn a socket_address (IP literal + port) or a pipe (a unix socket: a file path, or "@name"
 *  for an abstract one, Envoy's rule) into a sockaddr; errors name <path>. */
int rm_pb_address(const struct Envoy__Config__Core__V3__Address *a, const char *path,
                  struct sockaddr_storage *out, socklen_t *len, struct rm_error *err);
/** The file mode a pipe address asks for its socket file (0: leave it as bind made it; always
 *  0 for anything but a pipe). */
uint32_t rm_pb_pipe_mode(const struct Envoy__Config__Core__V3__Address *a);

/** Find the first length-delimited field <field> of the serialized message <p>/<n> without
 *  unpacking it (how a resource's name, field 1 of every xDS resource type, is read before
 *  deciding whether to parse the rest).  Returns 1 with *s and *len pointing into <p>, 0 when the
 *  message has no such field, -1 when the bytes are not a well-formed message. */
int rm_pb_wire_bytes_field(const uint8_t *p, size_t n, uint32_t field, const uint8_t **s,
                           size_t *len);

struct rm_bulk;
/** A protobuf-c allocator drawing from <b> (frees are no-ops: rm_bulk_dispose frees all), for
 *  messages decoded only to be read and dropped. */
ProtobufCAllocator rm_pb_bulk_allocator(struct rm_bulk *b);

/** A refcounted unpacked message: what config objects built from a message hold so the message
 *  outlives every one of them (a bootstrap shared by the static clusters of many snapshots, a
 *  Cluster received over CDS).  The last unref frees the message, on any thread. */
struct rm_pb_box {
    _Atomic unsigned refs;
    ProtobufCMessage *m; /* the message, or NULL when only its bytes are kept: */
    const ProtobufCMessageDescriptor *desc;
    uint8_t *bytes; /* the serialized message (a tenth of the unpacked size, or less) */
    size_t len;
};

/** Box <m> (ownership passes, also on failure: NULL when out of memory, <m> freed). */
struct rm_pb_box *rm_pb_box_new(ProtobufCMessage *m);
/** Box a copy of the serialized message <p>/<n> of type <d>, unpacked only when someone reads
 *  it (rm_pb_box_open): for what is kept just to be shown (/config_dump).  NULL when out of
 *  memory. */
struct rm_pb_box *rm_pb_box_new_bytes(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                                      size_t n);
/** The boxed message: b->m, or a fresh unpack of the bytes (NULL if they do not decode or
 *  memory is short).  Give it back with rm_pb_box_close. */
const ProtobufCMessage *rm_pb_box_open(const struct rm_pb_box *b);
void rm_pb_box_close(const struct rm_pb_box *b, const ProtobufCMessage *m);
/** Another reference; NULL is returned as is. */
struct rm_pb_box *rm_pb_box_ref(struct rm_pb_box *b);
/** Drop a reference; NULL is a no-op. */
void rm_pb_box_unref(struct rm_pb_box *b);

#endif
