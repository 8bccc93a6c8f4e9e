/* remora-load: open-loop schedule; see sched.h for the contract. */
#include "bench/load/sched.h"

#include <math.h>

uint64_t rml_sched_slot_time(const struct rml_sched *s, uint64_t k)
{
    return s->t0 + (uint64_t)llround((double)k * s->interval);
}

/* The first slot whose time is >= t. */
static uint64_t index_at(const struct rml_sched *s, uint64_t t)
{
    if (t <= s->t0) return 0;
    if (t == UINT64_MAX) return UINT64_MAX;
    uint64_t k = (uint64_t)ceil((double)(t - s->t0) / s->interval);
    while (k > 0 && rml_sched_slot_time(s, k - 1) >= t)
        k--;
    while (rml_sched_slot_time(s, k) < t)
        k++;
    return k;
}

void rml_sched_init(struct rml_sched *s, uint64_t t0, double rate, uint64_t t_stop,
                    uint64_t measure_from, uint64_t n)
{
    s->t0 = t0;
    s->interval = 1e9 / rate;
    s->next = 0;
    s->t_stop = t_stop;
    s->limit = UINT64_MAX;
    if (n > 0) s->limit = index_at(s, measure_from) + n;
}

uint64_t rml_sched_next_time(const struct rml_sched *s)
{
    if (s->next >= s->limit) return UINT64_MAX;
    uint64_t t = rml_sched_slot_time(s, s->next);
    return t >= s->t_stop ? UINT64_MAX : t;
}

int rml_sched_due(const struct rml_sched *s, uint64_t now)
{
    return rml_sched_next_time(s) <= now;
}

uint64_t rml_sched_take(struct rml_sched *s)
{
    return rml_sched_slot_time(s, s->next++);
}

int rml_sched_exhausted(const struct rml_sched *s)
{
    return rml_sched_next_time(s) == UINT64_MAX;
}

uint64_t rml_sched_untaken(const struct rml_sched *s, uint64_t from, uint64_t to)
{
    uint64_t a = index_at(s, from), b = index_at(s, to);
    if (a < s->next) a = s->next;
    if (b > s->limit) b = s->limit;
    if (s->t_stop != UINT64_MAX) {
        uint64_t c = index_at(s, s->t_stop);
        if (b > c) b = c;
    }
    return b > a ? b - a : 0;
}
