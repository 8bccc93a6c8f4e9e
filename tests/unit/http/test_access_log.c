/* The access log format compiler and formatter. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/http/access_log.h"
#include "proxy/http/headers.h"

static char *fmt(const char *text, const struct rm_alog_info *in)
{
    struct rm_error err = {{0}};
    struct rm_alog_format *f = rm_alog_format_text(text, false, "f", &err);
    cr_assert_not_null(f, "%s", err.msg);
    struct rm_strbuf out = RM_STRBUF_INIT;
    rm_alog_format_line(f, in, &out);
    rm_alog_format_free(f);
    return rm_strbuf_steal(&out);
}

static void expect(const char *text, const struct rm_alog_info *in, const char *want)
{
    char *got = fmt(text, in);
    cr_expect_str_eq(got, want, "%s", text);
    free(got);
}

Test(access_log, operators)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers req, resp;
    rm_headers_init(&req, &a);
    rm_headers_init(&resp, &a);
    rm_headers_add(&req, ":method", 7, "GET", 3);
    rm_headers_add(&req, ":path", 5, "/a/b", 4);
    rm_headers_add(&req, "user-agent", 10, "curl/8.0", 8);
    rm_headers_add(&resp, "x-envoy-upstream-service-time", 29, "3", 1);
    struct sockaddr_in peer = {
        .sin_family = AF_INET, .sin_port = htons(4242), .sin_addr.s_addr = htonl(0x7f000001)};
    struct rm_alog_info in = {
        .req = &req,
        .resp = &resp,
        .protocol = "HTTP/1.1",
        .status = 503,
        .resp_flags = "UF",
        .bytes_rx = 5,
        .bytes_tx = 91,
        .start = {.tv_sec = 1700000000, .tv_nsec = 123456789},
        .duration_ms = 12,
        .req_duration_ms = -1,
        .resp_duration_ms = 7,
        .upstream_host = "127.0.0.1:9",
        .upstream_cluster = "c1",
        .down_remote = (const struct sockaddr *)&peer,
    };
    expect("%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%", &in,
           "GET /a/b HTTP/1.1");
    expect("%REQ(USER-AGENT):4%|%REQ(X-NONE)%|%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", &in,
           "curl|-|3");
    expect("%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%", &in,
           "503 UF 5 91 12");
    expect("%REQUEST_DURATION% %RESPONSE_DURATION% %ROUTE_NAME% %TRAILER(grpc-status)%", &in,
           "- 7 - -");
    expect("%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS% "
           "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS%",
           &in, "127.0.0.1:9 c1 127.0.0.1:4242 127.0.0.1 -");
    expect("[%START_TIME%] 100%% %START_TIME(%Y/%m/%d %H:%M:%S.%3f)% %START_TIME(%s.%E2S)%", &in,
           "[2023-11-14T22:13:20.123Z] 100% 2023/11/14 22:13:20.123 1700000000.20.12");
    in.status = 0;
    in.resp_flags = NULL;
    expect("%RESPONSE_CODE% %RESPONSE_FLAGS%", &in, "0 -");
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(access_log, default_format)
{
    struct rm_alog_info in = {.protocol = "HTTP/2",
                              .status = 404,
                              .resp_flags = "NR",
                              .duration_ms = 1,
                              .req_duration_ms = -1,
                              .resp_duration_ms = -1};
    expect(rm_alog_default_format, &in,
           "[1970-01-01T00:00:00.000Z] \"- - HTTP/2\" 404 NR 0 0 1 - \"-\" \"-\" \"-\" \"-\" "
           "\"-\"\n");
}

static void expect_error(const char *text, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_alog_format *f = rm_alog_format_text(text, false, "x.text_format", &err);
    cr_expect_null(f, "%s", text);
    rm_alog_format_free(f);
    cr_expect(strstr(err.msg, want) != NULL, "%s: %s", text, err.msg);
    cr_expect(strncmp(err.msg, "x.text_format: ", 15) == 0, "%s", err.msg);
}

Test(access_log, errors)
{
    expect_error("a %NOPE% b", "unknown command operator \"%NOPE%\"");
    expect_error("%REQ(:path%", "missing ')'");
    expect_error("%REQ%", "needs a header name");
    expect_error("%PROTOCOL(x)%", "takes no argument");
    expect_error("%REQ(a):x%", "a length after ':'");
    expect_error("%PROTOCOL", "missing '%'");
}

Test(access_log, omit_empty)
{
    struct rm_error err = {{0}};
    struct rm_alog_format *f = rm_alog_format_text("[%UPSTREAM_HOST%]", true, "f", &err);
    cr_assert_not_null(f);
    struct rm_alog_info in = {.duration_ms = -1, .req_duration_ms = -1, .resp_duration_ms = -1};
    struct rm_strbuf out = RM_STRBUF_INIT;
    rm_alog_format_line(f, &in, &out);
    cr_expect_str_eq(rm_strbuf_str(&out), "[]");
    rm_strbuf_dispose(&out);
    rm_alog_format_free(f);
}
