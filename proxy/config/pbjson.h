/* YAML/JSON text -> protobuf-c message, in the proto3 JSON mapping Envoy users write.
 *
 * One generic converter driven by protobuf-c descriptors (no per-message code): libyaml parses
 * the text (JSON is YAML), and each mapping becomes the message its descriptor says.
 *
 * What is accepted, field by field:
 *   - field names in snake_case (as in the .proto) or lowerCamelCase (the json_name);
 *   - integers as numbers or strings ("5", "-3", "1e3" when integral); 64-bit ones too;
 *   - floats/doubles as numbers or strings, incl. "NaN", "Infinity", "-Infinity", .inf;
 *   - bools as true/false; strings as any scalar; bytes as base64 (standard or URL-safe);
 *   - enums by value name or number (undefined numbers are rejected);
 *   - repeated fields as sequences, map fields as mappings, `null` as "not set";
 *   - at most one member of a oneof;
 *   - well-known types: Any as {"@type": "type.googleapis.com/NAME", fields of NAME...}
 *     (NAME must be in the registry, see pbtypes.h; a WKT payload goes in "value"), Duration as
 *     "1.5s", Timestamp as RFC 3339, wrappers (UInt32Value...) as plain values, Struct/Value/
 *     ListValue as free-form YAML, Empty as {};
 *   - YAML anchors, aliases and merge keys ("<<: *base").
 *
 * Errors read "FILE:LINE: PATH: problem", e.g.
 *   remora.yaml:12: static_resources.clusters[0].lb_policy: unknown enum value "FASTEST" (...)
 *   remora.yaml:3: node: unknown field "foo"
 *   remora.yaml:9: admin.address.socket_address.port_value: value 99999999999 out of range for
 * uint32 PATH uses the .proto field names, [i] for list elements and ["key"] for map entries; the
 * inside of an Any continues the path of the Any field. */
#ifndef RM_CONFIG_PBJSON_H
#define RM_CONFIG_PBJSON_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "proxy/config/pbtypes.h"
#include "proxy/core/error.h"

/** Read the YAML or JSON file <path> as a message of type <d>.  On RM_OK *out is a new message
 *  (free with protobuf_c_message_free_unpacked(*out, NULL)); on RM_ERR *out is NULL and <err>
 *  (may be NULL) says what and where.  The file must hold exactly one YAML document: the JSON
 *  form of <d> (a mapping, except for well-known types: a string for a Duration...). */
int rm_pbjson_parse_file(const char *path, const ProtobufCMessageDescriptor *d,
                         ProtobufCMessage **out, struct rm_error *err);

/** Same, from <len> bytes of <text>; <name_for_errors> stands for FILE in messages. */
int rm_pbjson_parse_string(const char *text, size_t len, const char *name_for_errors,
                           const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                           struct rm_error *err);

#endif
