/* The access log formatter's fast paths: the per-thread START_TIME cache (checked against the
 * uncached path), numbers, addresses, literals and JSON escaping done in place. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/http/access_log.h"
#include "proxy/http/headers.h"

static struct rm_alog_format *compile(const char *text)
{
    struct rm_error err = {{0}};
    struct rm_alog_format *f = rm_alog_format_text(text, false, "f", &err);
    cr_assert_not_null(f, "%s: %s", text, err.msg);
    return f;
}

/* The line of <f> for <in>, malloc'd. */
static char *line_of(const struct rm_alog_format *f, const struct rm_alog_info *in)
{
    struct rm_strbuf out = RM_STRBUF_INIT;
    rm_alog_format_line(f, in, &out);
    return rm_strbuf_steal(&out);
}

static void expect_line(const struct rm_alog_format *f, const struct rm_alog_info *in,
                        const char *want)
{
    char *got = line_of(f, in);
    cr_expect_str_eq(got, want);
    free(got);
}

static struct rm_alog_info at(time_t sec, long nsec)
{
    return (struct rm_alog_info){.start = {.tv_sec = sec, .tv_nsec = nsec},
                                 .duration_ms = -1,
                                 .req_duration_ms = -1,
                                 .resp_duration_ms = -1};
}

/* ---- START_TIME ------------------------------------------------------------------------------ */

#define T0 1700000000 /* 2023-11-14T22:13:20Z */

Test(alog_format, time_same_second_then_next)
{
    struct rm_alog_format *f = compile("[%START_TIME%] %START_TIME(%s.%3f)%");
    struct rm_alog_info in = at(T0, 123456789);
    expect_line(f, &in, "[2023-11-14T22:13:20.123Z] 1700000000.123");
    in = at(T0, 987654321); /* same second: the cached text, a new fraction */
    expect_line(f, &in, "[2023-11-14T22:13:20.987Z] 1700000000.987");
    in = at(T0, 0);
    expect_line(f, &in, "[2023-11-14T22:13:20.000Z] 1700000000.000");
    in = at(T0 + 1, 999999999); /* the next second */
    expect_line(f, &in, "[2023-11-14T22:13:21.999Z] 1700000001.999");
    in = at(T0, 5000000); /* back to an older second (a late line) */
    expect_line(f, &in, "[2023-11-14T22:13:20.005Z] 1700000000.005");
    in = at(T0 + 86400 * 48, 1000000); /* across a day and a month */
    expect_line(f, &in, "[2024-01-01T22:13:20.001Z] 1704147200.001");
    rm_alog_format_free(f);
}

Test(alog_format, time_formats_alternate_on_one_thread)
{
    /* more formats than the cache keeps: each line must still be its own format's */
    static const char *const texts[] = {
        "%START_TIME(%Y/%m/%d %H:%M:%E3S)%",
        "%START_TIME(%f|%6f|%1f)%",
        "%START_TIME%",
        "%START_TIME(%s)%",
        "%START_TIME(%H:%M:%S.%9f)%",
        "%START_TIME(%E1S %E9S)%",
    };
    static const char *const want[][2] = {
        {"2023/11/14 22:13:20.123", "2023/11/14 22:13:20.999"},
        {"123456789|123456|1", "999000001|999000|9"},
        {"2023-11-14T22:13:20.123Z", "2023-11-14T22:13:20.999Z"},
        {"1700000000", "1700000000"},
        {"22:13:20.123456789", "22:13:20.999000001"},
        {"20.1 20.123456789", "20.9 20.999000001"},
    };
    size_t n = sizeof(texts) / sizeof(texts[0]);
    struct rm_alog_format *f[6];
    for (size_t i = 0; i < n; i++)
        f[i] = compile(texts[i]);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++) {
            struct rm_alog_info in = at(T0, 123456789);
            expect_line(f[i], &in, want[i][0]);
            in = at(T0, 999000001);
            expect_line(f[i], &in, want[i][1]);
        }
        for (size_t i = 0; i < 2; i++) { /* two formats, line by line */
            struct rm_alog_info in = at(T0, 123456789);
            expect_line(f[0], &in, want[0][0]);
            expect_line(f[1], &in, want[1][0]);
        }
    }
    for (size_t i = 0; i < n; i++)
        rm_alog_format_free(f[i]);
}

/* A format freed and another compiled (likely at the same address) in the same second. */
Test(alog_format, time_new_format_same_second)
{
    struct rm_alog_info in = at(T0, 250000000);
    for (int i = 0; i < 4; i++) {
        struct rm_alog_format *a = compile("%START_TIME(%Y-%m-%d %3f)%");
        expect_line(a, &in, "2023-11-14 250");
        rm_alog_format_free(a);
        struct rm_alog_format *b = compile("%START_TIME(%H.%M %3f)%");
        expect_line(b, &in, "22.13 250");
        rm_alog_format_free(b);
    }
}

/* Differential: the cached path against the uncached one.  A \x10 byte in a format keeps it
 * out of the cache (it is the cache's mark for a fraction digit) and strftime copies it, so
 * FORMAT + "\x10" gives the uncached line of FORMAT, then "\x10".  %t and %n write control
 * bytes themselves. */
Test(alog_format, time_cached_equals_uncached)
{
    static const char *const fmts[] = {
        "%Y-%m-%dT%H:%M:%S.%3fZ",
        "%s.%3f",
        "%f",
        "%1f%2f%3f%4f%5f%6f%7f%8f%9f",
        "%E1S|%E2S|%E3S|%E6S",
        "%%f %%E3S",
        "%a %b %e %j",
        "%3f%3f",
        "%E0S %10f",
        "no conversion",
        "%t%3f%n%f\x01\x09\x0f\x19",
        "\t%1f\t",
        "%H%%%M",
    };
    static const long nsecs[] = {0, 1, 9, 10, 999999999, 123456789, 500000000, 100};
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        char cached_text[128], slow_text[128];
        snprintf(cached_text, sizeof(cached_text), "%%START_TIME(%s)%%", fmts[i]);
        snprintf(slow_text, sizeof(slow_text), "%%START_TIME(%s\x10)%%", fmts[i]);
        struct rm_alog_format *fc = compile(cached_text), *fs = compile(slow_text);
        for (size_t j = 0; j < sizeof(nsecs) / sizeof(nsecs[0]); j++) {
            for (time_t sec = T0; sec < T0 + 2; sec++) {
                struct rm_alog_info in = at(sec, nsecs[j]);
                char *c = line_of(fc, &in), *s = line_of(fs, &in);
                size_t sl = strlen(s);
                cr_assert(sl > 0 && s[sl - 1] == '\x10', "%s", fmts[i]);
                s[sl - 1] = 0;
                cr_expect_str_eq(c, s, "format %s, nsec %ld", fmts[i], nsecs[j]);
                free(c);
                free(s);
            }
        }
        rm_alog_format_free(fc);
        rm_alog_format_free(fs);
    }
}

/* Control bytes in the text (from %t / %n, or in the format) are kept, never taken for the
 * cache's marks of fraction digits. */
Test(alog_format, time_control_bytes)
{
    static const char *const texts[] = {"%START_TIME(%t%3f%n)%", "%START_TIME(\x01\x09%1f\x18)%",
                                        "%START_TIME(\x10%2f)%"};
    static const char *const want[] = {"\t123\n",
                                       "\x01\x09"
                                       "1\x18",
                                       "\x10"
                                       "12"};
    for (int round = 0; round < 2; round++) { /* a miss, then a hit */
        for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
            struct rm_alog_format *f = compile(texts[i]);
            struct rm_alog_info in = at(T0, 123456789);
            expect_line(f, &in, want[i]);
            rm_alog_format_free(f);
        }
    }
}

Test(alog_format, time_uncached_cases)
{
    /* a fraction outside [0, 1e9): printf's text, as before the cache */
    struct rm_alog_format *f = compile("%START_TIME% %START_TIME(%3f)%");
    struct rm_alog_info in = at(T0, 1500000000);
    expect_line(f, &in, "2023-11-14T22:13:20.1500Z 150");
    in = at(T0, -1);
    expect_line(f, &in, "2023-11-14T22:13:20.000Z -00");
    rm_alog_format_free(f);
    /* a format too long for the cache */
    f = compile(
        "%START_TIME(%Y.%m.%d.%H.%M.%S.%3f.................................................."
        "...........)%");
    in = at(T0, 42000000);
    expect_line(
        f, &in,
        "2023.11.14.22.13.20.042.............................................................");
    rm_alog_format_free(f);
    /* a text too long for the cache (short format, long expansion) */
    f = compile("%START_TIME(%c %c %c %c %3f)%");
    in = at(T0, 7000000);
    expect_line(
        f, &in,
        "Tue Nov 14 22:13:20 2023 Tue Nov 14 22:13:20 2023 Tue Nov 14 22:13:20 2023 Tue Nov "
        "14 22:13:20 2023 007");
    rm_alog_format_free(f);
}

/* ---- numbers, addresses, literals -------------------------------------------------------------
 */

Test(alog_format, numbers)
{
    struct rm_alog_format *f =
        compile("%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %REQUEST_DURATION%");
    struct rm_alog_info in = at(0, 0);
    in.duration_ms = 0;
    expect_line(f, &in, "0 0 0 0 -");
    in.status = 599;
    in.bytes_rx = (uint64_t)INT64_MAX;
    in.bytes_tx = 10000000000ull;
    in.duration_ms = 9;
    in.req_duration_ms = 10;
    expect_line(f, &in, "599 9223372036854775807 10000000000 9 10");
    in.bytes_rx = UINT64_MAX; /* past INT64_MAX: "-", as printf's branch had it */
    in.bytes_tx = (uint64_t)INT64_MAX + 1;
    expect_line(f, &in, "599 - - 9 10");
    rm_alog_format_free(f);
}

static void expect_addr(const struct sockaddr *sa, const char *with_port, const char *without)
{
    struct rm_alog_format *f =
        compile("%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%");
    struct rm_alog_info in = at(0, 0);
    in.down_remote = sa;
    char want[256];
    snprintf(want, sizeof(want), "%s|%s", with_port, without);
    expect_line(f, &in, want);
    rm_alog_format_free(f);
}

Test(alog_format, ipv4_addresses)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    expect_addr((struct sockaddr *)&a, "0.0.0.0:0", "0.0.0.0");
    a.sin_addr.s_addr = htonl(0xffffffff);
    a.sin_port = htons(65535);
    expect_addr((struct sockaddr *)&a, "255.255.255.255:65535", "255.255.255.255");
    a.sin_addr.s_addr = htonl(0x0a006407);
    a.sin_port = htons(80);
    expect_addr((struct sockaddr *)&a, "10.0.100.7:80", "10.0.100.7");
    for (unsigned v = 0; v < 256; v++) { /* every octet value, in every position */
        a.sin_addr.s_addr = htonl(v << 24 | ((v + 1) & 255) << 16 | ((v * 7) & 255) << 8 | v);
        a.sin_port = htons((uint16_t)(v * 257));
        char ip[INET_ADDRSTRLEN], want[64];
        inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
        snprintf(want, sizeof(want), "%s:%u", ip, v * 257);
        expect_addr((struct sockaddr *)&a, want, ip);
    }
}

Test(alog_format, every_port)
{
    struct rm_alog_format *f = compile("%DOWNSTREAM_LOCAL_ADDRESS%");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0a80001)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "fe80::1", &a6.sin6_addr);
    struct rm_alog_info in = at(0, 0);
    for (unsigned port = 0; port < 65536; port++) {
        a.sin_port = a6.sin6_port = htons((uint16_t)port);
        char want[64];
        snprintf(want, sizeof(want), "192.168.0.1:%u", port);
        in.down_local = (const struct sockaddr *)&a;
        char *got = line_of(f, &in);
        cr_assert_str_eq(got, want);
        free(got);
        snprintf(want, sizeof(want), "[fe80::1]:%u", port);
        in.down_local = (const struct sockaddr *)&a6;
        got = line_of(f, &in);
        cr_assert_str_eq(got, want);
        free(got);
    }
    rm_alog_format_free(f);
}

Test(alog_format, ipv6_and_other_addresses)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    inet_pton(AF_INET6, "::1", &a.sin6_addr);
    expect_addr((struct sockaddr *)&a, "[::1]:8080", "::1");
    inet_pton(AF_INET6, "2001:db8::ff00:42:8329", &a.sin6_addr);
    a.sin6_port = 0;
    expect_addr((struct sockaddr *)&a, "[2001:db8::ff00:42:8329]:0", "2001:db8::ff00:42:8329");
    inet_pton(AF_INET6, "::ffff:1.2.3.4", &a.sin6_addr);
    a.sin6_port = htons(65535);
    expect_addr((struct sockaddr *)&a, "[::ffff:1.2.3.4]:65535", "::ffff:1.2.3.4");
    struct sockaddr_storage none = {.ss_family = AF_UNSPEC};
    expect_addr((struct sockaddr *)&none, "-", "-");
    expect_addr(NULL, "-", "-");
}

Test(alog_format, literals)
{
    struct rm_alog_info in = at(0, 0);
    in.protocol = "HTTP/2";
    struct rm_alog_format *f = compile("0123456789abcdef%PROTOCOL%0123456789abcdefg%PROTOCOL%"
                                       "x%%y%%%%z 100%% %PROTOCOL%%%");
    expect_line(f, &in, "0123456789abcdefHTTP/20123456789abcdefgHTTP/2x%y%%z 100% HTTP/2%");
    rm_alog_format_free(f);
    f = compile("%%");
    expect_line(f, &in, "%");
    rm_alog_format_free(f);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static struct rm_alog_format *compile_json(const char *yaml, bool omit_empty)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(
        yaml, strlen(yaml), "t.yaml",
        &envoy__config__core__v3__substitution_format_string__descriptor, &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    Envoy__Config__Core__V3__SubstitutionFormatString *pb = (void *)m;
    pb->omit_empty_values = omit_empty;
    struct rm_alog_format *f = rm_alog_format_new(pb, "f", &err);
    protobuf_c_message_free_unpacked(m, NULL);
    cr_assert_not_null(f, "%s", err.msg);
    return f;
}

/* <s> as a JSON string, the straightforward way (the formatter's reference). */
static void json_ref(char *out, size_t size, const char *s)
{
    size_t o = 0;
    out[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\%c", c);
        else if (c == '\n')
            o += (size_t)snprintf(out + o, size - o, "\\n");
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        else
            out[o++] = (char)c;
    }
    out[o++] = '"';
    out[o] = 0;
}

Test(alog_format, json_escapes_at_every_offset)
{
    struct rm_alog_format *f = compile_json(
        "{json_format: {v: '%REQ(x-v)%', t: 'a=%REQ(x-v)%;', n: '%BYTES_SENT%'}}", false);
    static const char specials[] = {'"', '\\', '\n', '\x01', '\x1f', '\x7f', '\t'};
    struct rm_arena a;
    rm_arena_init(&a);
    for (size_t len = 1; len <= 24; len++) {
        for (size_t pos = 0; pos <= len; pos++) { /* pos == len: no special byte at all */
            for (size_t k = 0; k < sizeof(specials); k++) {
                char v[32];
                for (size_t i = 0; i < len; i++)
                    v[i] = (char)(i % 2 ? 'b' : 0xc3); /* UTF-8 lead bytes pass as they are */
                if (pos < len) v[pos] = specials[k];
                v[len] = 0;
                struct rm_headers req;
                rm_headers_init(&req, &a);
                rm_headers_add(&req, "x-v", 3, v, len);
                struct rm_alog_info in = at(0, 0);
                in.req = &req;
                in.bytes_tx = len;
                char ev[256], et[256], t[64], want[640];
                json_ref(ev, sizeof(ev), v);
                snprintf(t, sizeof(t), "a=%s;", v);
                json_ref(et, sizeof(et), t);
                snprintf(want, sizeof(want), "{\"v\":%s,\"t\":%s,\"n\":%zu}\n", ev, et, len);
                expect_line(f, &in, want);
                if (pos == len) break;
            }
        }
    }
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
    rm_alog_format_free(f);
}

Test(alog_format, json_values)
{
    const char *yaml = "{json_format: {time: '%START_TIME%', code: '%RESPONSE_CODE%', "
                       "host: '%UPSTREAM_HOST%', none: '%ROUTE_NAME%', mixed: 'x %ROUTE_NAME% y', "
                       "raw: 1.5, flag: true, obj: {peer: '%DOWNSTREAM_REMOTE_ADDRESS%', "
                       "rx: '%BYTES_RECEIVED%', in: {d: '%DURATION%'}}, last: '%PROTOCOL%', "
                       "up: '%UPSTREAM_LOCAL_ADDRESS%'}}";
    struct sockaddr_in peer = {
        .sin_family = AF_INET, .sin_port = htons(4242), .sin_addr.s_addr = htonl(0x7f000001)};
    struct rm_alog_info in = at(T0, 1000000);
    in.status = 200;
    in.upstream_host = "10.1.2.3:\"80\"";
    in.down_remote = (const struct sockaddr *)&peer;
    in.protocol = "HTTP/1.1";
    struct sockaddr_in6 up = {.sin6_family = AF_INET6, .sin6_port = htons(41000)};
    inet_pton(AF_INET6, "fd00::a:1", &up.sin6_addr);
    in.upstream_local = (const struct sockaddr *)&up;
    struct rm_alog_format *f = compile_json(yaml, false);
    expect_line(f, &in,
                "{\"time\":\"2023-11-14T22:13:20.001Z\",\"code\":200,"
                "\"host\":\"10.1.2.3:\\\"80\\\"\",\"none\":null,\"mixed\":\"x - y\",\"raw\":1.5,"
                "\"flag\":true,\"obj\":{\"peer\":\"127.0.0.1:4242\",\"rx\":0,\"in\":{\"d\":null}},"
                "\"last\":\"HTTP/1.1\",\"up\":\"[fd00::a:1]:41000\"}\n");
    rm_alog_format_free(f);
    f = compile_json(yaml, true); /* omit_empty_values: no key for a value that has none */
    in.protocol = NULL;
    expect_line(f, &in,
                "{\"time\":\"2023-11-14T22:13:20.001Z\",\"code\":200,"
                "\"host\":\"10.1.2.3:\\\"80\\\"\",\"mixed\":\"x  y\",\"raw\":1.5,"
                "\"flag\":true,\"obj\":{\"peer\":\"127.0.0.1:4242\",\"rx\":0,\"in\":{}},"
                "\"up\":\"[fd00::a:1]:41000\"}\n");
    rm_alog_format_free(f);
    f = compile_json("{json_format: {a: '%ROUTE_NAME%', b: '%ROUTE_NAME%'}}", true);
    expect_line(f, &in, "{}\n");
    rm_alog_format_free(f);
}

/* Lines appended to one buffer, as the sink's per-thread buffer does: no stale bytes between. */
Test(alog_format, lines_appended)
{
    struct rm_alog_format *f = compile_json("{json_format: {p: '%PROTOCOL%'}}", false);
    struct rm_alog_format *t = compile("%PROTOCOL% %START_TIME(%3f)%\n");
    struct rm_strbuf out = RM_STRBUF_INIT;
    struct rm_alog_info in = at(T0, 5000000);
    in.protocol = "HTTP/2";
    for (int i = 0; i < 100; i++) {
        rm_alog_format_line(f, &in, &out);
        rm_alog_format_line(t, &in, &out);
    }
    const char *pair = "{\"p\":\"HTTP/2\"}\nHTTP/2 005\n";
    cr_assert_eq(out.len, 100 * strlen(pair));
    for (int i = 0; i < 100; i++)
        cr_assert(memcmp(out.p + i * strlen(pair), pair, strlen(pair)) == 0);
    rm_strbuf_dispose(&out);
    rm_alog_format_free(f);
    rm_alog_format_free(t);
}
