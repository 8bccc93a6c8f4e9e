/* remora-load: open-loop schedule.
 *
 * One schedule per worker thread: slot k is due at t0 + k * interval (monotonic ns), for slots
 * k < limit whose time is before t_stop.  Slots are taken in order; the number of slots that
 * are due but not yet taken is the backlog.  A request sent for a slot measures its latency
 * from the slot's time, not from when it could finally be sent, so a stall on the target
 * shows in the latency (no coordinated omission).  O(1) state, whatever the backlog.
 */
#ifndef REMORA_BENCH_LOAD_SCHED_H
#define REMORA_BENCH_LOAD_SCHED_H

#include <stdint.h>

struct rml_sched {
    uint64_t t0;     /* time of slot 0 */
    double interval; /* ns between slots */
    uint64_t next;   /* the next slot to take */
    uint64_t limit;  /* slots >= limit never come (UINT64_MAX: no limit) */
    uint64_t t_stop; /* slots at or after this time never come (UINT64_MAX: none) */
};

/* Schedule `rate` slots per second starting at `t0`.  `measure_from`/`n`: when n > 0, only n
 * slots at or after measure_from come (earlier ones, the warm-up, are unlimited). */
void rml_sched_init(struct rml_sched *s, uint64_t t0, double rate, uint64_t t_stop,
                    uint64_t measure_from, uint64_t n);

/* Time of slot k. */
uint64_t rml_sched_slot_time(const struct rml_sched *s, uint64_t k);

/* Time of the next slot, or UINT64_MAX when no slot is left. */
uint64_t rml_sched_next_time(const struct rml_sched *s);

/* 1 when the next slot exists and is due at `now`. */
int rml_sched_due(const struct rml_sched *s, uint64_t now);

/* Take the next slot (the caller checked rml_sched_due or _next_time); returns its time. */
uint64_t rml_sched_take(struct rml_sched *s);

/* 1 when every slot has been taken (never with neither limit nor t_stop). */
int rml_sched_exhausted(const struct rml_sched *s);

/* Number of slots with a time in [from, to) that were never taken. */
uint64_t rml_sched_untaken(const struct rml_sched *s, uint64_t from, uint64_t to);

#endif
