/* remora-load: statistics and reports; see report.h for the contract. */
#include "bench/load/report.h"

#include <stdlib.h>
#include <string.h>

static const double pcts[] = {50, 90, 99, 99.9, 99.99};
static const char *const pct_names[] = {"p50", "p90", "p99", "p99.9", "p99.99"};
#define NPCT (sizeof(pcts) / sizeof(pcts[0]))

struct rml_stats *rml_stats_new(void)
{
    struct rml_stats *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    rml_hist_init(&s->latency);
    rml_hist_init(&s->connect);
    rml_hist_init(&s->lag);
    return s;
}

void rml_stats_free(struct rml_stats *s)
{
    free(s);
}

void rml_stats_merge(struct rml_stats *d, const struct rml_stats *s)
{
    d->sent += s->sent;
    d->completed += s->completed;
    d->succeeded += s->succeeded;
    d->failed += s->failed;
    d->unsent += s->unsent;
    for (int i = 0; i < RML_E__N; i++)
        d->errors[i] += s->errors[i];
    d->connect_errors += s->connect_errors;
    d->conns_opened += s->conns_opened;
    for (int i = 0; i < 600; i++)
        d->status[i] += s->status[i];
    for (int i = 0; i < RML_GRPC_CODES; i++)
        d->grpc[i] += s->grpc[i];
    d->grpc_other += s->grpc_other;
    d->grpc_missing += s->grpc_missing;
    d->bytes_rx += s->bytes_rx;
    d->bytes_tx += s->bytes_tx;
    if (s->t_last_done > d->t_last_done) d->t_last_done = s->t_last_done;
    rml_hist_merge(&d->latency, &s->latency);
    rml_hist_merge(&d->connect, &s->connect);
    rml_hist_merge(&d->lag, &s->lag);
}

static const char *protocol_name(const struct rml_config *cfg)
{
    if (cfg->h1) return cfg->tls ? "http/1.1+tls" : "http/1.1";
    return cfg->tls ? "h2" : "h2c";
}

static uint64_t status_class(const struct rml_stats *s, int cls)
{
    uint64_t n = 0;
    for (int i = cls * 100; i < cls * 100 + 100; i++)
        n += s->status[i];
    return n;
}

static double per_s(uint64_t n, double secs)
{
    return secs > 0 ? (double)n / secs : 0.0;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

/* ---- text ------------------------------------------------------------------------------- */

static void text_hist(FILE *out, const char *name, const struct rml_hist *h)
{
    if (h->count == 0) {
        fprintf(out, "%-14s no samples\n", name);
        return;
    }
    fprintf(out, "%-14s min %.1f  mean %.1f  stdev %.1f  max %.1f  (%llu samples)\n", name,
            us(h->min), rml_hist_mean(h) / 1000.0, rml_hist_stdev(h) / 1000.0, us(h->max),
            (unsigned long long)h->count);
    fprintf(out, "%-14s", "");
    for (size_t i = 0; i < NPCT; i++)
        fprintf(out, " %s %.1f ", pct_names[i], us(rml_hist_percentile(h, pcts[i])));
    fputc('\n', out);
}

void rml_report_text(FILE *out, const struct rml_config *cfg, const struct rml_stats *s,
                     const struct rml_summary *sum)
{
    fprintf(out, "remora-load %s %s: %u connection%s x %u stream%s, %u thread%s, ", cfg->url,
            protocol_name(cfg), cfg->conns, cfg->conns == 1 ? "" : "s", cfg->streams,
            cfg->streams == 1 ? "" : "s", cfg->threads, cfg->threads == 1 ? "" : "s");
    if (cfg->rate > 0)
        fprintf(out, "open loop at %.1f req/s", cfg->rate);
    else
        fprintf(out, "closed loop");
    if (cfg->new_conn) fprintf(out, ", a new connection per request");
    fprintf(out, "%s\n",
            sum->gave_up       ? " (gave up: target unreachable)"
            : sum->interrupted ? " (interrupted)"
                               : "");
    fprintf(out, "finished in %.3fs: %.1f req/s, %.2f MB/s in, %.2f MB/s out\n", sum->duration_s,
            per_s(s->completed, sum->duration_s), per_s(s->bytes_rx, sum->duration_s) / 1e6,
            per_s(s->bytes_tx, sum->duration_s) / 1e6);
    fprintf(out, "requests:      %llu sent, %llu completed, %llu succeeded, %llu failed",
            (unsigned long long)s->sent, (unsigned long long)s->completed,
            (unsigned long long)s->succeeded, (unsigned long long)s->failed);
    if (cfg->rate > 0) fprintf(out, ", %llu unsent", (unsigned long long)s->unsent);
    fputc('\n', out);
    fprintf(out, "errors:        %llu connect, %llu reset, %llu timeout, %llu protocol\n",
            (unsigned long long)s->connect_errors, (unsigned long long)s->errors[RML_E_RESET],
            (unsigned long long)s->errors[RML_E_TIMEOUT],
            (unsigned long long)s->errors[RML_E_PROTOCOL]);
    fprintf(out, "status codes:  %llu 2xx, %llu 3xx, %llu 4xx, %llu 5xx",
            (unsigned long long)status_class(s, 2), (unsigned long long)status_class(s, 3),
            (unsigned long long)status_class(s, 4), (unsigned long long)status_class(s, 5));
    const char *sep = " (";
    for (int i = 0; i < 600; i++) {
        if (!s->status[i]) continue;
        if (i == 0)
            fprintf(out, "%sinvalid: %llu", sep, (unsigned long long)s->status[i]);
        else
            fprintf(out, "%s%d: %llu", sep, i, (unsigned long long)s->status[i]);
        sep = ", ";
    }
    fprintf(out, "%s\n", sep[0] == ',' ? ")" : "");
    if (cfg->grpc) {
        fprintf(out, "grpc-status:  ");
        for (int i = 0; i < RML_GRPC_CODES; i++)
            if (s->grpc[i]) fprintf(out, " %d: %llu", i, (unsigned long long)s->grpc[i]);
        fprintf(out, " other: %llu, missing: %llu\n", (unsigned long long)s->grpc_other,
                (unsigned long long)s->grpc_missing);
    }
    if (cfg->rate > 0)
        fprintf(out, "rate:          target %.1f req/s, sent %.1f req/s, completed %.1f req/s\n",
                cfg->rate, per_s(s->sent, sum->send_window_s),
                per_s(s->completed, sum->duration_s));
    text_hist(out, "latency (us):", &s->latency);
    if (cfg->rate > 0) text_hist(out, "send lag (us):", &s->lag);
    text_hist(out, "connect (us):", &s->connect);
    fprintf(out, "connections:   %llu opened, %llu failed attempts\n",
            (unsigned long long)s->conns_opened, (unsigned long long)s->connect_errors);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static void json_str(FILE *out, const char *v)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void json_hist(FILE *out, const char *key, const struct rml_hist *h)
{
    fprintf(out, ",\n  \"%s\": {\"count\": %llu, \"min\": %.3f, \"mean\": %.3f, \"stdev\": %.3f",
            key, (unsigned long long)h->count, h->count ? us(h->min) : 0.0,
            rml_hist_mean(h) / 1000.0, rml_hist_stdev(h) / 1000.0);
    for (size_t i = 0; i < NPCT; i++)
        fprintf(out, ", \"%s\": %.3f", pct_names[i], us(rml_hist_percentile(h, pcts[i])));
    fprintf(out, ", \"max\": %.3f}", us(h->max));
}

static void json_num_or_null(FILE *out, int present, double v)
{
    if (present)
        fprintf(out, "%.6g", v);
    else
        fputs("null", out);
}

void rml_report_json(FILE *out, const struct rml_config *cfg, const struct rml_stats *s,
                     const struct rml_summary *sum)
{
    fprintf(out, "{\n  \"tool\": \"remora-load\",\n  \"config\": {\"url\": ");
    json_str(out, cfg->url);
    fprintf(out, ", \"paths\": [");
    for (size_t i = 0; i < cfg->nreqs; i++) {
        fputs(i ? ", " : "", out);
        json_str(out, cfg->reqs[i].path);
    }
    fprintf(out,
            "], \"protocol\": \"%s\", \"connections\": %u, \"streams\": %u, "
            "\"threads\": %u, \"mode\": \"%s\", \"new_conn\": %s, \"requests\": ",
            protocol_name(cfg), cfg->conns, cfg->streams, cfg->threads,
            cfg->rate > 0 ? "open" : "closed", cfg->new_conn ? "true" : "false");
    json_num_or_null(out, cfg->n > 0, (double)cfg->n);
    fputs(", \"duration_s\": ", out);
    json_num_or_null(out, cfg->n == 0, (double)cfg->duration_ns / 1e9);
    fputs(", \"rate\": ", out);
    json_num_or_null(out, cfg->rate > 0, cfg->rate);
    fprintf(out, ", \"warmup_s\": %.6g, \"timeout_s\": ", (double)cfg->warmup_ns / 1e9);
    json_num_or_null(out, cfg->timeout_ns > 0, (double)cfg->timeout_ns / 1e9);
    fprintf(out, ", \"method\": ");
    json_str(out, cfg->method);
    fprintf(out, ", \"grpc\": %s},\n", cfg->grpc ? "true" : "false");
    fprintf(out, "  \"interrupted\": %s,\n  \"gave_up\": %s,\n  \"duration_s\": %.6f,\n",
            sum->interrupted ? "true" : "false", sum->gave_up ? "true" : "false", sum->duration_s);
    fprintf(out,
            "  \"requests\": {\"sent\": %llu, \"completed\": %llu, \"succeeded\": %llu, "
            "\"failed\": %llu, \"unsent\": %llu},\n",
            (unsigned long long)s->sent, (unsigned long long)s->completed,
            (unsigned long long)s->succeeded, (unsigned long long)s->failed,
            (unsigned long long)s->unsent);
    fprintf(out,
            "  \"errors\": {\"connect\": %llu, \"reset\": %llu, \"timeout\": %llu, "
            "\"protocol\": %llu},\n",
            (unsigned long long)s->connect_errors, (unsigned long long)s->errors[RML_E_RESET],
            (unsigned long long)s->errors[RML_E_TIMEOUT],
            (unsigned long long)s->errors[RML_E_PROTOCOL]);
    fprintf(out,
            "  \"status\": {\"2xx\": %llu, \"3xx\": %llu, \"4xx\": %llu, \"5xx\": %llu, "
            "\"invalid\": %llu, \"codes\": {",
            (unsigned long long)status_class(s, 2), (unsigned long long)status_class(s, 3),
            (unsigned long long)status_class(s, 4), (unsigned long long)status_class(s, 5),
            (unsigned long long)s->status[0]);
    const char *sep = "";
    for (int i = 100; i < 600; i++)
        if (s->status[i]) {
            fprintf(out, "%s\"%d\": %llu", sep, i, (unsigned long long)s->status[i]);
            sep = ", ";
        }
    fprintf(out, "}},\n  \"grpc_status\": {");
    sep = "";
    for (int i = 0; i < RML_GRPC_CODES; i++)
        if (s->grpc[i]) {
            fprintf(out, "%s\"%d\": %llu", sep, i, (unsigned long long)s->grpc[i]);
            sep = ", ";
        }
    fprintf(out, "%s\"other\": %llu, \"missing\": %llu},\n", sep, (unsigned long long)s->grpc_other,
            (unsigned long long)s->grpc_missing);
    fprintf(out, "  \"rate\": {\"target\": ");
    json_num_or_null(out, cfg->rate > 0, cfg->rate);
    fprintf(out, ", \"sent\": %.3f, \"achieved\": %.3f},\n",
            per_s(s->sent, cfg->rate > 0 ? sum->send_window_s : sum->duration_s),
            per_s(s->completed, sum->duration_s));
    fprintf(out,
            "  \"throughput\": {\"bytes_rx\": %llu, \"bytes_tx\": %llu, \"rx_bytes_per_s\": "
            "%.1f, \"tx_bytes_per_s\": %.1f},\n",
            (unsigned long long)s->bytes_rx, (unsigned long long)s->bytes_tx,
            per_s(s->bytes_rx, sum->duration_s), per_s(s->bytes_tx, sum->duration_s));
    fprintf(out, "  \"connections\": {\"opened\": %llu, \"connect_errors\": %llu}",
            (unsigned long long)s->conns_opened, (unsigned long long)s->connect_errors);
    json_hist(out, "latency_us", &s->latency);
    json_hist(out, "connect_us", &s->connect);
    json_hist(out, "sched_lag_us", &s->lag);
    fputs("\n}\n", out);
}

void rml_report_progress(FILE *out, double elapsed_s, uint64_t done, uint64_t done_delta,
                         uint64_t errors, uint64_t inflight, double dt_s)
{
    fprintf(out, "[%6.1fs] %10.1f req/s  %12llu done  %8llu errors  %6llu in flight\n", elapsed_s,
            dt_s > 0 ? (double)done_delta / dt_s : 0.0, (unsigned long long)done,
            (unsigned long long)errors, (unsigned long long)inflight);
    fflush(out);
}
