/* The access log format compiler and formatter. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/http/access_log.h"
#include "proxy/http/headers.h"
#include "proxy/net/tls.h"

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

/* Istio's default proxy access log format (meshConfig accessLogFile, TEXT). */
static const char istio_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% "
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

Test(access_log, istio_default_format)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers req, resp;
    rm_headers_init(&req, &a);
    rm_headers_init(&resp, &a);
    rm_headers_add(&req, ":method", 7, "GET", 3);
    rm_headers_add(&req, ":path", 5, "/new?q=1", 8);
    rm_headers_add(&req, "x-envoy-original-path", 21, "/old?q=1", 8);
    rm_headers_add(&req, ":authority", 10, "svc.ns", 6);
    rm_headers_add(&req, "x-request-id", 12, "rid", 3);
    rm_headers_add(&resp, "x-envoy-upstream-service-time", 29, "2", 1);
    struct sockaddr_in up_local = {
        .sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(0x7f000001)};
    struct sockaddr_in6 down_local = {
        .sin6_family = AF_INET6, .sin6_port = htons(10000), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr_in down_remote = {
        .sin_family = AF_INET, .sin_port = htons(5555), .sin_addr.s_addr = htonl(0x0a000002)};
    struct rm_tls_info tls = {
        .version = "TLSv1.3", .cipher = "TLS_AES_128_GCM_SHA256", .sni = "svc.example.com"};
    struct rm_alog_info in = {
        .req = &req,
        .resp = &resp,
        .protocol = "HTTP/2",
        .status = 200,
        .details = "via_upstream",
        .bytes_rx = 3,
        .bytes_tx = 10,
        .start = {.tv_sec = 1700000000},
        .duration_ms = 4,
        .upstream_host = "127.0.0.1:8080",
        .upstream_cluster = "outbound|80||svc.ns",
        .route_name = "default",
        .upstream_local = (const struct sockaddr *)&up_local,
        .down_local = (const struct sockaddr *)&down_local,
        .down_remote = (const struct sockaddr *)&down_remote,
        .down_tls = &tls,
    };
    expect(istio_format, &in,
           "[2023-11-14T22:13:20.000Z] \"GET /old?q=1 HTTP/2\" 200 - via_upstream - \"-\" 3 10 4 2 "
           "\"-\" \"-\" \"rid\" \"svc.ns\" \"127.0.0.1:8080\" outbound|80||svc.ns "
           "127.0.0.1:40000 [::1]:10000 10.0.0.2:5555 svc.example.com default\n");
    /* a local reply after a refused connect: the transport failure reason, in the details too */
    struct rm_alog_info f = {
        .status = 503,
        .resp_flags = "UF",
        .details = "upstream_reset_before_response_started{connection_failure}",
        .transport_errno = 111,
        .duration_ms = 1,
    };
    expect("%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
           "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %UPSTREAM_LOCAL_ADDRESS% "
           "%REQUESTED_SERVER_NAME%",
           &f,
           "upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111} "
           "- \"delayed connect error: 111\" - -");
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(access_log, details_and_transport_failure)
{
    struct rm_alog_info in = {.duration_ms = -1, .req_duration_ms = -1, .resp_duration_ms = -1};
    expect("%RESPONSE_CODE_DETAILS%|%UPSTREAM_TRANSPORT_FAILURE_REASON%", &in, "-|-");
    in.details = "route_not_found";
    in.transport_errno = 111; /* only an upstream reset's "{…}" takes the reason */
    expect("%RESPONSE_CODE_DETAILS%", &in, "route_not_found");
    in.details = "upstream_reset_before_response_started{connection_failure}";
    in.transport_errno = 0;
    expect("%RESPONSE_CODE_DETAILS%", &in,
           "upstream_reset_before_response_started{connection_failure}");
    in.transport_failure = "TLS error: certificate verify failed"; /* wins over the errno */
    in.transport_errno = 111;
    expect("%RESPONSE_CODE_DETAILS%|%UPSTREAM_TRANSPORT_FAILURE_REASON%|"
           "%UPSTREAM_TRANSPORT_FAILURE_REASON:9%|%RESPONSE_CODE_DETAILS:8%",
           &in,
           "upstream_reset_before_response_started{connection_failure,TLS_error:_certificate_"
           "verify_failed}|TLS error: certificate verify failed|TLS error|upstream");
}

Test(access_log, more_operators)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers req;
    rm_headers_init(&req, &a);
    rm_headers_add(&req, ":path", 5, "/p/q?x=1&y=2", 12);
    rm_headers_add(&req, "x-plain", 7, "v", 1);
    struct sockaddr_in6 up6 = {
        .sin6_family = AF_INET6, .sin6_port = htons(443), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct rm_tls_info tls = {.version = "TLSv1.2",
                              .cipher = "ECDHE-RSA-AES128-GCM-SHA256",
                              .peer_uri_san = "spiffe://cluster.local/ns/a/sa/b",
                              .local_uri_san = "spiffe://cluster.local/ns/c/sa/d"};
    struct rm_alog_info in = {
        .req = &req,
        .duration_ms = -1,
        .req_duration_ms = -1,
        .resp_duration_ms = -1,
        .upstream_host = "[::1]:443",
        .upstream_local = (const struct sockaddr *)&up6,
        .down_tls = &tls,
        .connection_id = 42,
        .attempts = 2,
        .upstream_peer_uri_san = "spiffe://cluster.local/ns/e/sa/f",
    };
    expect("%REQ_WITHOUT_QUERY(:PATH)% %REQ_WITHOUT_QUERY(X-NONE?:PATH):4% "
           "%REQ_WITHOUT_QUERY(X-PLAIN)% %REQ_WITHOUT_QUERY(X-NONE)%",
           &in, "/p/q /p/q v -");
    expect("%UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_LOCAL_ADDRESS% %CONNECTION_ID% "
           "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
           &in, "[::1]:443 [::1]:443 42 2");
    expect("%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %DOWNSTREAM_PEER_URI_SAN% "
           "%DOWNSTREAM_LOCAL_URI_SAN% %REQUESTED_SERVER_NAME%",
           &in,
           "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 spiffe://cluster.local/ns/a/sa/b "
           "spiffe://cluster.local/ns/c/sa/d -");
    expect("%UPSTREAM_PEER_URI_SAN% %DYNAMIC_METADATA(istio.mixer:status)% "
           "%FILTER_STATE(wasm.upstream_peer:PLAIN):10% %CONNECTION_TERMINATION_DETAILS%",
           &in, "spiffe://cluster.local/ns/e/sa/f - - -");
    in.down_tls = NULL;
    in.upstream_peer_uri_san = NULL;
    in.connection_id = 0;
    in.attempts = 0;
    expect("%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% %CONNECTION_ID% "
           "%UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_PEER_URI_SAN%",
           &in, "- - - 0 -");
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(access_log, more_operators_errors)
{
    expect_error("%DYNAMIC_METADATA%", "needs an argument");
    expect_error("%FILTER_STATE()%", "needs an argument");
    expect_error("%CONNECTION_TERMINATION_DETAILS(x)%", "takes no argument");
    expect_error("%REQ_WITHOUT_QUERY%", "needs a header name");
    expect_error("%DOWNSTREAM_PEER_SUBJECT%", "unknown command operator");
}

Test(access_log, more_operators_json_types)
{
    struct rm_error err = {{0}};
    Google__Protobuf__Value v_id = GOOGLE__PROTOBUF__VALUE__INIT,
                            v_d = GOOGLE__PROTOBUF__VALUE__INIT,
                            v_n = GOOGLE__PROTOBUF__VALUE__INIT;
    v_id.kind_case = v_d.kind_case = v_n.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v_id.string_value = "%CONNECTION_ID%";
    v_d.string_value = "%RESPONSE_CODE_DETAILS%";
    v_n.string_value = "%UPSTREAM_REQUEST_ATTEMPT_COUNT%";
    Google__Protobuf__Struct__FieldsEntry e_id = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          e_d = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          e_n = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    e_id.key = "id";
    e_id.value = &v_id;
    e_d.key = "details";
    e_d.value = &v_d;
    e_n.key = "attempts";
    e_n.value = &v_n;
    Google__Protobuf__Struct__FieldsEntry *fields[] = {&e_id, &e_d, &e_n};
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    st.n_fields = 3;
    st.fields = fields;
    Envoy__Config__Core__V3__SubstitutionFormatString pb =
        ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__INIT;
    pb.format_case = ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT;
    pb.json_format = &st;
    struct rm_alog_format *f = rm_alog_format_new(&pb, "f", &err);
    cr_assert_not_null(f, "%s", err.msg);
    struct rm_alog_info in = {.duration_ms = -1,
                              .req_duration_ms = -1,
                              .resp_duration_ms = -1,
                              .details = "upstream_reset_before_response_started{overflow}",
                              .connection_id = 7,
                              .attempts = 1};
    struct rm_strbuf out = RM_STRBUF_INIT;
    rm_alog_format_line(f, &in, &out);
    cr_expect_str_eq(rm_strbuf_str(&out),
                     "{\"id\":7,\"details\":\"upstream_reset_before_response_started{overflow}\","
                     "\"attempts\":1}\n");
    rm_strbuf_dispose(&out);
    rm_alog_format_free(f);
}
