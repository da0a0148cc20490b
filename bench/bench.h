/* bench.h - the `layerkv bench` load generator: drives a running layerkv
 * server through liblayerkv with a precomputed arrival sequence (Poisson,
 * evenly spaced, burst or a trace's own times; lengths fixed or from a
 * Vidur trace), records per-request latencies (server-reported TTFT split
 * into queueing and prefill, TPOT, E2E; client-side TTFT too), and
 * summarises them with the same metric names and definitions as
 * `layerkv sim` (sim/simulator.c), so the JSON of one sits beside the other.
 *
 * Threading: lkv_bench_run blocks the calling thread (it paces submissions
 * and prints progress); liblayerkv's I/O thread runs the event callback,
 * which only updates records under a mutex. Everything else is plain
 * functions over caller-owned arrays.
 */
#ifndef LKV_BENCH_BENCH_H
#define LKV_BENCH_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "layerkv/client.h"

/* One request to send: arrival offset from the start of the run. */
typedef struct {
    int64_t arrival_ns;
    int32_t prompt_len; /* prompt tokens (sent as token ids) */
    int32_t output_len; /* max_tokens */
} lkv_bench_req_t;

typedef enum {
    LKV_BENCH_PENDING = 0, /* not finished (run stopped early) */
    LKV_BENCH_OK,          /* done: stop or length */
    LKV_BENCH_REJECTED,    /* error before acceptance (LKV_ERR_REJECTED,
                              _BUSY, _TOOLONG, ...) */
    LKV_BENCH_FAILED,      /* done with error/cancelled, or a local error
                              (timeout, submit failure) */
} lkv_bench_outcome_t;

/* What happened to one request. Times in seconds; server_* from the done
 * frame (arrival at the server), client_* from this process's clock
 * relative to the request's scheduled arrival. */
typedef struct {
    lkv_bench_outcome_t outcome;
    lkv_status_t        status; /* error status, LKV_OK otherwise */
    int32_t  n_prompt_tokens;   /* as the server counted them */
    int32_t  n_tokens;          /* generated */
    int32_t  n_token_events;    /* TOKEN events seen */
    double   ttft_s, queue_s, tpot_s; /* server-reported */
    double   e2e_s;                   /* scheduled arrival -> done event */
    double   client_ttft_s;           /* scheduled arrival -> first token */
    double   submit_delay_s;          /* scheduled arrival -> submit */
    double   finish_s;                /* done event, from run start */
    char     finish_reason[16];
} lkv_bench_record_t;

typedef struct {
    double ttft_slo_s; /* 0: no TTFT target */
    double tpot_slo_s; /* 0: no TPOT target */
    /* request parameters */
    double ttft_slo_ms_req; /* sent per request when > 0 (server default
                               otherwise) */
    double tpot_slo_ms_req;
    int32_t token_lo, token_hi; /* prompt token ids drawn from [lo, hi] */
    float   temperature;        /* 0 = greedy; else seeded per request */
    uint64_t seed;
    /* pacing */
    int    max_inflight;   /* 0 = unlimited (open loop) */
    double drain_timeout_s; /* after the last submission, give up waiting
                               after this long (0 = wait for all; the
                               client's server timeout still bounds it) */
    bool   progress;        /* live "\r" line on stderr, once per second */
    const char *label;      /* progress prefix, e.g. "rate 2.0" */
} lkv_bench_config_t;

lkv_bench_config_t lkv_bench_config_default(void);

/* Send reqs[0..n) through client c at their arrival times (wall clock from
 * the call) and fill recs[0..n) (caller-allocated). Blocks until every
 * request has its terminal event or the drain timeout passed (then pending
 * requests are cancelled and stay LKV_BENCH_PENDING -> counted failed).
 * *wall_s_p (may be NULL) gets the run's duration.
 * Errors: LKV_ERR_INVALID (NULL args, n < 0, bad token range),
 * LKV_ERR_NOMEM. A request the server rejects is an outcome, not an error. */
lkv_status_t lkv_bench_run(lkv_client_t *c, const lkv_bench_config_t *cfg,
                           const lkv_bench_req_t *reqs, int64_t n,
                           lkv_bench_record_t *recs, double *wall_s_p);

/* Deterministic prompt: len token ids in [lo, hi] from (seed, index). */
void lkv_bench_make_prompt(uint64_t seed, int64_t index, int32_t len,
                           int32_t lo, int32_t hi, int32_t *out);

/* Summary; names and definitions as lkv_sim_result_t (see sim/simulator.c):
 * means and percentiles over completed requests; TPOT over those with >= 2
 * tokens; slo_violation_rate over all requests (rejected and failed count
 * as violations); throughput over makespan = first arrival -> last done. */
typedef struct {
    int64_t n_requests, n_completed, n_failed, n_rejected;
    double  mean_ttft_s, p50_ttft_s, p90_ttft_s, p99_ttft_s;
    double  mean_queue_s, p99_queue_s, mean_prefill_s;
    double  mean_tpot_s, p50_tpot_s, p99_tpot_s;
    double  mean_e2e_s;
    double  slo_violation_rate, ttft_attainment, tpot_attainment;
    double  throughput_tok_s, throughput_req_s, makespan_s;
    int64_t output_tokens, prompt_tokens;
    /* client-side view */
    double mean_client_ttft_s, p99_client_ttft_s, mean_submit_delay_s;
} lkv_bench_summary_t;

/* Errors: LKV_ERR_INVALID (NULL), LKV_ERR_NOMEM. */
lkv_status_t lkv_bench_summarise(const lkv_bench_req_t *reqs,
                                 const lkv_bench_record_t *recs, int64_t n,
                                 double ttft_slo_s, double tpot_slo_s,
                                 lkv_bench_summary_t *out);

/* Percentile (q in [0,1]) of a sorted array with linear interpolation, as
 * the simulator computes it; 0 when n == 0. */
double lkv_bench_pct(const double *sorted, int64_t n, double q);

/* Write the summary's metric keys as JSON members ("  \"key\": value,\n"
 * each, indent spaces first); the caller writes the braces and any
 * run-description keys. */
void lkv_bench_summary_write_json(const lkv_bench_summary_t *s, int indent,
                                  FILE *f);

/* Per-request CSV: the simulator's columns (id, arrival_s, prompt_len,
 * output_len, instance, status, ttft_s, queue_s, tpot_s, e2e_s,
 * n_generated, preemptions, offloaded_layers, slo_violated) followed by
 * bench-only ones (rate, prefill_s, client_ttft_s, submit_delay_s,
 * finish_reason, error). rate tags the run in a sweep; header when
 * with_header. */
void lkv_bench_write_csv(const lkv_bench_req_t *reqs,
                         const lkv_bench_record_t *recs, int64_t n,
                         double rate, double ttft_slo_s, double tpot_slo_s,
                         bool with_header, FILE *f);

#endif /* LKV_BENCH_BENCH_H */
