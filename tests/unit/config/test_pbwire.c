/* rm_pb_wire_bytes_field: reading a resource's name (field 1) without unpacking it. */
#include <criterion/criterion.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/config/pbutil.h"

Test(pbwire, finds_the_name_after_other_fields)
{
    Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    c.name = "backend";
    c.alt_stat_name = "alt"; /* another string field, after the name on the wire */
    c.lb_policy = 1;         /* a varint */
    uint8_t buf[256];
    size_t n = envoy__config__cluster__v3__cluster__pack(&c, buf);
    const uint8_t *s;
    size_t len;
    cr_assert_eq(rm_pb_wire_bytes_field(buf, n, 1, &s, &len), 1);
    cr_assert_eq(len, 7);
    cr_assert(memcmp(s, "backend", 7) == 0);
    cr_assert_eq(rm_pb_wire_bytes_field(buf, n, 28, &s, &len), 1, "alt_stat_name is field 28");
    cr_assert_eq(len, 3);
    cr_assert_eq(rm_pb_wire_bytes_field(buf, n, 2, &s, &len), 0, "no such field");
}

Test(pbwire, malformed_bytes)
{
    const uint8_t *s;
    size_t len;
    const uint8_t truncated_len[] = {0x0a, 0x05, 'a', 'b'}; /* field 1, length 5, 2 bytes */
    const uint8_t bad_wire_type[] = {0x0b};                 /* field 1, start group */
    const uint8_t long_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0x01}; /* > 10 bytes */
    const uint8_t field_zero[] = {0x02, 0x00};
    cr_assert_eq(rm_pb_wire_bytes_field(truncated_len, sizeof(truncated_len), 1, &s, &len), -1);
    cr_assert_eq(rm_pb_wire_bytes_field(bad_wire_type, sizeof(bad_wire_type), 1, &s, &len), -1);
    cr_assert_eq(rm_pb_wire_bytes_field(long_varint, sizeof(long_varint), 1, &s, &len), -1);
    cr_assert_eq(rm_pb_wire_bytes_field(field_zero, sizeof(field_zero), 1, &s, &len), -1);
    cr_assert_eq(rm_pb_wire_bytes_field(NULL, 0, 1, &s, &len), 0, "empty message");
}
