/* protobuf-c message -> JSON text in the proto3 JSON mapping (for /config_dump, logs, tests).
 *
 * The reverse walker of pbjson: fields are printed in field-number order and only when set
 * (proto3 JSON leaves out default scalars, empty lists and unset messages; a oneof member is
 * printed whenever it is the chosen one).  Spellings: enums by name (by number when the value
 * is not defined), 64-bit integers as strings, bytes as base64, NaN/Infinity as strings;
 * Any as {"@type": URL, fields of the payload...} (a WKT payload goes in "value"; a payload of
 * a type not in the registry as base64 in "value"), Duration as "1.500s", Timestamp as RFC 3339,
 * wrappers as plain values, Struct/Value/ListValue as the JSON they stand for.  Text printed
 * without RM_PBPRINT_REDACT parses back (rm_pbjson_parse_*) to the same message. */
#ifndef RM_CONFIG_PBPRINT_H
#define RM_CONFIG_PBPRINT_H

#include <protobuf-c/protobuf-c.h>

#include "proxy/config/strbuf.h"

enum {
    /** Field names as lowerCamelCase json names (as Envoy's /config_dump prints them) instead
     *  of the .proto snake_case names. */
    RM_PBPRINT_JSON_NAMES = 1 << 0,
    /** Two-space indentation, one member per line. */
    RM_PBPRINT_PRETTY = 1 << 1,
    /** Print every string/bytes value under a sensitive field (TLS private keys, passwords,
     *  session ticket keys, generic secrets) as "[redacted]" (bytes: its base64). */
    RM_PBPRINT_REDACT = 1 << 2,
};

/** Append the JSON for <m> to <out>.  RM_OK, or RM_ERR when messages nest deeper than
 *  RM_PB_MAX_DEPTH (the text is then cut short and invalid). */
int rm_pbprint_json(const ProtobufCMessage *m, unsigned flags, struct rm_strbuf *out);

#endif
