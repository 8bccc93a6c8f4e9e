#include "proxy/config/pbutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "envoy/config/core/v3/address.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/core/bulk.h"

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

/* A unix domain socket (Envoy's PipeInstance): "@name" is the abstract name "\0name" (its
 * address ends with the name, no NUL), a file path takes the whole sockaddr_un. */
static int pipe_address(const Envoy__Config__Core__V3__Pipe *pp, const char *path,
                        struct sockaddr_storage *out, socklen_t *len, struct rm_error *err)
{
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    size_t n = pp->path ? strlen(pp->path) : 0;
    if (n == 0)
        return rm_error_set(err,
                            "%s.pipe.path: required (a socket file, or @name for an abstract "
                            "socket)",
                            path);
    if (n >= sizeof(un->sun_path))
        return rm_error_set(err,
                            "%s.pipe.path: \"%s\" exceeds maximum UNIX domain socket path size "
                            "of %zu",
                            path, pp->path, sizeof(un->sun_path));
    if (pp->mode > 0777)
        return rm_error_set(err, "%s.pipe.mode: %u (0%o) is not a file mode (at most 0777)", path,
                            pp->mode, pp->mode);
    bool abstract = pp->path[0] == '@';
    if (abstract && pp->mode)
        return rm_error_set(err,
                            "%s.pipe.mode: cannot set mode for abstract AF_UNIX sockets (\"%s\")",
                            path, pp->path);
    memset(out, 0, sizeof(*out));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, pp->path, n);
    if (abstract) un->sun_path[0] = 0;
    *len = abstract ? (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n) : sizeof(*un);
    return RM_OK;
}

uint32_t rm_pb_pipe_mode(const struct Envoy__Config__Core__V3__Address *a)
{
    return a && a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE ? a->pipe->mode
                                                                                  : 0;
}

int rm_pb_address(const struct Envoy__Config__Core__V3__Address *a, const char *path,
                  struct sockaddr_storage *out, socklen_t *len, struct rm_error *err)
{
    if (!a) return rm_error_set(err, "%s: address is required", path);
    if (a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE)
        return pipe_address(a->pipe, path, out, len, err);
    if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return rm_error_set(err, "%s: socket_address or pipe is required", path);
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

static void *bulk_alloc(void *data, size_t n)
{
    return rm_bulk_alloc(data, n);
}

static void bulk_free(void *data, void *p) {}

ProtobufCAllocator rm_pb_bulk_allocator(struct rm_bulk *b)
{
    return (ProtobufCAllocator){.alloc = bulk_alloc, .free = bulk_free, .allocator_data = b};
}

struct rm_pb_box *rm_pb_box_new(ProtobufCMessage *m)
{
    struct rm_pb_box *b = malloc(sizeof(*b));
    if (!b) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->m = m;
    b->desc = m->descriptor;
    b->bytes = NULL;
    b->len = 0;
    return b;
}

struct rm_pb_box *rm_pb_box_new_bytes(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                                      size_t n)
{
    struct rm_pb_box *b = malloc(sizeof(*b));
    uint8_t *copy = malloc(n ? n : 1);
    if (!b || !copy) {
        free(b);
        free(copy);
        return NULL;
    }
    memcpy(copy, p, n);
    atomic_init(&b->refs, 1);
    b->m = NULL;
    b->desc = d;
    b->bytes = copy;
    b->len = n;
    return b;
}

const ProtobufCMessage *rm_pb_box_open(const struct rm_pb_box *b)
{
    return b->m ? b->m : protobuf_c_message_unpack(b->desc, NULL, b->len, b->bytes);
}

void rm_pb_box_close(const struct rm_pb_box *b, const ProtobufCMessage *m)
{
    if (m && m != b->m) protobuf_c_message_free_unpacked((ProtobufCMessage *)m, NULL);
}

struct rm_pb_box *rm_pb_box_ref(struct rm_pb_box *b)
{
    if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void rm_pb_box_unref(struct rm_pb_box *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    if (b->m) protobuf_c_message_free_unpacked(b->m, NULL);
    free(b->bytes);
    free(b);
}

/* A varint at p[*off..n); -1 when truncated or longer than 10 bytes. */
static int wire_varint(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*off >= n) return -1;
        uint8_t b = p[(*off)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

int rm_pb_wire_bytes_field(const uint8_t *p, size_t n, uint32_t field, const uint8_t **s,
                           size_t *len)
{
    size_t off = 0;
    while (off < n) {
        uint64_t key, v;
        if (wire_varint(p, n, &off, &key) || (key >> 3) == 0) return -1;
        switch (key & 7) {
        case 0: /* varint */
            if (wire_varint(p, n, &off, &v)) return -1;
            break;
        case 1: /* 64-bit */
            if (n - off < 8) return -1;
            off += 8;
            break;
        case 2: /* length-delimited */
            if (wire_varint(p, n, &off, &v) || v > n - off) return -1;
            if ((key >> 3) == field) {
                *s = p + off;
                *len = (size_t)v;
                return 1;
            }
            off += (size_t)v;
            break;
        case 5: /* 32-bit */
            if (n - off < 4) return -1;
            off += 4;
            break;
        default: /* groups are not proto3 */
            return -1;
        }
    }
    return 0;
}
