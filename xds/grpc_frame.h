/* gRPC over HTTP/2, the wire helpers: message framing and deframing, grpc-timeout, status
 * codes and their mappings, grpc-message decoding.  Pure functions and a small deframer; no
 * I/O, no loop.  The protocol is grpc/grpc doc/PROTOCOL-HTTP2.md; the HTTP-to-gRPC status
 * table is doc/http-grpc-status-mapping.md.
 *
 * Length-prefixed message: 1 byte compressed flag (0 here: remora never negotiates
 * grpc-encoding), 4 bytes big-endian length, then the message bytes.  Several messages may
 * share an HTTP/2 DATA frame and one message may span many: the deframer takes the DATA bytes
 * in whatever pieces they come and hands out complete messages. */
#ifndef RM_XDS_GRPC_FRAME_H
#define RM_XDS_GRPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/buf.h"
#include "proxy/http/codec.h"

#define RM_GRPC_PREFIX_LEN 5
#define RM_GRPC_DEFAULT_MAX_RECV (4u * 1024 * 1024) /* as gRPC's default receive limit */
#define RM_GRPC_TIMEOUT_MAX 16                      /* buffer size for a grpc-timeout value */

/** gRPC status codes (google.rpc.Code). */
enum rm_grpc_code {
    RM_GRPC_OK = 0,
    RM_GRPC_CANCELLED = 1,
    RM_GRPC_UNKNOWN = 2,
    RM_GRPC_INVALID_ARGUMENT = 3,
    RM_GRPC_DEADLINE_EXCEEDED = 4,
    RM_GRPC_NOT_FOUND = 5,
    RM_GRPC_ALREADY_EXISTS = 6,
    RM_GRPC_PERMISSION_DENIED = 7,
    RM_GRPC_RESOURCE_EXHAUSTED = 8,
    RM_GRPC_FAILED_PRECONDITION = 9,
    RM_GRPC_ABORTED = 10,
    RM_GRPC_OUT_OF_RANGE = 11,
    RM_GRPC_UNIMPLEMENTED = 12,
    RM_GRPC_INTERNAL = 13,
    RM_GRPC_UNAVAILABLE = 14,
    RM_GRPC_DATA_LOSS = 15,
    RM_GRPC_UNAUTHENTICATED = 16,
};

/** "UNAVAILABLE" for 14 …; "UNKNOWN_CODE" for a value outside 0..16. */
const char *rm_grpc_code_name(int code);

/* ---- framing ------------------------------------------------------------------------------ */

/** Write the prefix of an uncompressed message of <len> bytes into <out>. */
void rm_grpc_prefix_write(uint8_t out[RM_GRPC_PREFIX_LEN], uint32_t len);

/** Reassembles messages from DATA bytes.  Holds no memory while between messages; a message
 *  that arrives in pieces is gathered in .buf (grown to its size, released after it). */
struct rm_grpc_deframer {
    struct rm_buf buf;    /* bytes of the message being gathered, prefix included */
    uint32_t max;         /* largest message accepted (bytes after the prefix) */
    size_t need;          /* prefix + length of the message in .buf; 0 while the prefix is
                             incomplete */
    bool consume_pending; /* the last message returned lives in .buf: drop it next call */
    uint32_t bad_len;     /* the length that was over .max (after RM_GRPC_DEFRAME_TOO_LARGE) */
    uint8_t bad_flag;     /* the flag byte (after RM_GRPC_DEFRAME_COMPRESSED / BAD_FLAG) */
};

enum rm_grpc_deframe_result {
    RM_GRPC_DEFRAME_MORE = 0,        /* input used up; an incomplete message may be buffered */
    RM_GRPC_DEFRAME_MSG = 1,         /* one complete message in *msg / *len */
    RM_GRPC_DEFRAME_TOO_LARGE = -1,  /* a prefix announced more than .max bytes */
    RM_GRPC_DEFRAME_COMPRESSED = -2, /* flag 1: compressed, and nothing was negotiated */
    RM_GRPC_DEFRAME_BAD_FLAG = -3,   /* flag neither 0 nor 1 */
};

/** <max> 0 means RM_GRPC_DEFAULT_MAX_RECV. */
void rm_grpc_deframer_init(struct rm_grpc_deframer *d, uint32_t max);
void rm_grpc_deframer_dispose(struct rm_grpc_deframer *d);
/** Take bytes from (*p, *n), advancing them, until a message is complete (returns
 *  RM_GRPC_DEFRAME_MSG with *msg and *len set: valid until the next call or dispose, pointing into
 *  the input when the message was contiguous there — no copy — or into the deframer) or the
 *  input is used up (RM_GRPC_DEFRAME_MORE).  Errors are final: the deframer must not be fed
 *  again.  Call it again with the remaining input after each message. */
int rm_grpc_deframe(struct rm_grpc_deframer *d, const uint8_t **p, size_t *n, const uint8_t **msg,
                    size_t *len);
/** Bytes of an incomplete message held (nonzero at end of stream = truncated message). */
size_t rm_grpc_deframer_partial(const struct rm_grpc_deframer *d);

/* ---- headers ------------------------------------------------------------------------------ */

/** Format a deadline <ms> from now as a grpc-timeout value ("1500m"; at most 8 digits, so a
 *  larger value moves to S, M then H, rounded up; capped at 99999999H).  <out> gets a NUL-
 *  terminated string; returns its length. */
size_t rm_grpc_timeout_format(uint64_t ms, char out[RM_GRPC_TIMEOUT_MAX]);
/** Parse a grpc-timeout value into milliseconds (n/u units round up to whole ms).  Returns 0,
 *  or -1 when malformed (empty, more than 8 digits, unknown unit). */
int rm_grpc_timeout_parse(const char *p, size_t n, uint64_t *ms);

/** Parse a grpc-status value (decimal digits, at most 9); returns the code or -1. */
int rm_grpc_status_parse(const char *p, size_t n);
/** The gRPC status for a non-200 HTTP :status without grpc-status (the spec's table): 400
 *  INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429 502 503 504
 *  UNAVAILABLE, anything else UNKNOWN. */
int rm_grpc_status_from_http(int http_status);
/** The gRPC status for a stream reset the codec reported (no grpc-status came): connection
 *  failure or loss and REFUSED_STREAM -> UNAVAILABLE, a reset by the peer -> CANCELLED (the
 *  codec does not tell the RST_STREAM code apart; servers reset with CANCEL), protocol errors
 *  -> INTERNAL, header overflow -> RESOURCE_EXHAUSTED, local -> CANCELLED, timeout ->
 *  DEADLINE_EXCEEDED. */
int rm_grpc_status_from_reset(enum rm_reset_reason r);
/** Is this content-type gRPC?  "application/grpc", optionally followed by "+<subtype>" or
 *  ";params" (ASCII case-insensitive). */
bool rm_grpc_content_type_ok(const char *p, size_t n);
/** Percent-decode a grpc-message value into <out> (room for n + 1 bytes), NUL-terminated;
 *  returns the decoded length.  A malformed escape is kept literally, as the spec asks
 *  (never an error); so is "%00" (the result is a C string). */
size_t rm_grpc_message_decode(const char *in, size_t n, char *out);
/** Percent-encode a grpc-message value (bytes outside 0x20..0x7e and '%' become %XX) into
 *  <out> (room for 3 * n + 1 bytes), NUL-terminated; returns the encoded length. */
size_t rm_grpc_message_encode(const char *in, size_t n, char *out);

#endif
