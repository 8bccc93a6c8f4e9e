/* Envoy's FractionalPercent decisions and untrusted-number parsing, shared by filters.
 *
 * A fraction is numerator / denominator with the denominator 100, 10 000 or 1 000 000
 * (envoy.type.v3.FractionalPercent); a request is picked when rnd % denominator < numerator,
 * Envoy's ProtobufPercentHelper::evaluateFractionalPercent (a numerator at or above the
 * denominator always picks).  Pure functions: the caller supplies the random value. */
#ifndef RM_FILTERS_PERCENT_H
#define RM_FILTERS_PERCENT_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/error.h"
#include "proxy/http/headers.h"

struct Envoy__Type__V3__FractionalPercent;

struct rm_fraction {
    uint32_t numerator;
    uint32_t denominator; /* 100, 10000 or 1000000 */
};

/** <pb> (NULL = unset: 0/100, as Envoy reads an absent message) at <path> -> <out>.  RM_OK, or
 *  RM_ERR for an unknown denominator or unknown fields. */
int rm_fraction_from_pb(const struct Envoy__Type__V3__FractionalPercent *pb, const char *path,
                        struct rm_fraction *out, struct rm_error *err);

/** Is the request with random value <rnd> picked? */
static inline bool rm_fraction_hit(struct rm_fraction f, uint64_t rnd)
{
    return f.numerator >= f.denominator || rnd % f.denominator < f.numerator;
}

/** Always / never picked (no random value needed). */
static inline bool rm_fraction_always(struct rm_fraction f)
{
    return f.numerator >= f.denominator;
}
static inline bool rm_fraction_never(struct rm_fraction f)
{
    return f.numerator == 0;
}

/** absl::SimpleAtoi for an unsigned 64-bit value: optional ASCII whitespace around, optional
 *  '+', decimal digits, no overflow.  False if <s> is not such a number. */
bool rm_parse_simple_u64(struct rm_str s, uint64_t *out);

/** Envoy's HeaderPercentageProvider: <configured> with its numerator replaced by the header
 *  value's when that is a valid uint32 and smaller; <configured> when <hdr> is absent (p NULL)
 *  or invalid. */
struct rm_fraction rm_fraction_from_header(struct rm_fraction configured, struct rm_str hdr);

#endif
