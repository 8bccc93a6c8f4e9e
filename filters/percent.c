#include "filters/percent.h"

#include "envoy/type/v3/percent.pb-c.h"
#include "proxy/config/pbtypes.h"

int rm_fraction_from_pb(const Envoy__Type__V3__FractionalPercent *pb, const char *path,
                        struct rm_fraction *out, struct rm_error *err)
{
    static const uint32_t denominators[] = {100, 10000, 1000000};
    *out = (struct rm_fraction){0, 100};
    if (!pb) return RM_OK;
    if (rm_pb_check_no_unknown(&pb->base, path, err)) return RM_ERR;
    if ((unsigned)pb->denominator >= sizeof(denominators) / sizeof(denominators[0]))
        return rm_error_set(err, "%s.denominator: unknown value %d", path, (int)pb->denominator);
    out->numerator = pb->numerator;
    out->denominator = denominators[pb->denominator];
    return RM_OK;
}

static bool space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

bool rm_parse_simple_u64(struct rm_str s, uint64_t *out)
{
    size_t i = 0, end = s.len;
    if (!s.p) return false;
    while (i < end && space(s.p[i]))
        i++;
    while (end > i && space(s.p[end - 1]))
        end--;
    if (i < end && s.p[i] == '+') i++;
    if (i == end) return false;
    uint64_t v = 0;
    for (; i < end; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') return false;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

struct rm_fraction rm_fraction_from_header(struct rm_fraction configured, struct rm_str hdr)
{
    uint64_t v;
    if (!hdr.p || !rm_parse_simple_u64(hdr, &v) || v > UINT32_MAX) return configured;
    if (v < configured.numerator) configured.numerator = (uint32_t)v;
    return configured;
}
