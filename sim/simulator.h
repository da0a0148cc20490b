/* simulator.h - `layerkv sim`: the real scheduler (coordinator/scheduler.h)
 * and kvstore allocator of K instances driven by a simulated clock, with
 * the cost-model executor (sim_exec.h) in place of the workers and a router
 * in front. Event-driven: time jumps from one arrival or step end to the
 * next; nothing is allocated per token.
 * Threading: lkv_sim_run is synchronous and single-threaded.
 */
#ifndef LKV_SIM_SIMULATOR_H
#define LKV_SIM_SIMULATOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "coordinator/scheduler.h"
#include "sim/cost_model.h"
#include "sim/workload.h"

typedef enum {
    LKV_SIM_ROUTE_LEAST_TTFT  = 0, /* lowest predicted TTFT (queue + KV) */
    LKV_SIM_ROUTE_ROUND_ROBIN = 1,
} lkv_sim_route_t;

typedef struct {
    lkv_sim_cost_config_t     cost;
    lkv_sim_workload_config_t work;
    lkv_sched_policy_t        policy;
    int                       instances;
    lkv_sim_route_t           route;
    double                    ttft_slo_s; /* for metrics and the scheduler */
    double                    tpot_slo_s;
    double                    host_gib;   /* host KV tier per GPU */
    int32_t                   num_blocks; /* > 0: device pool in ALL-layer
                                             blocks (Vidur's num_blocks) */
    int   max_seqs;                       /* batch size cap */
    int   max_batch_tokens;
    bool  chunked_prefill;
    int   chunk_tokens;
    float watermark;
    /* ablations */
    bool        no_slo_scheduler; /* layerkv offload, SLO-blind admission */
    bool        sync_offload;     /* copies not overlapped with compute */
    bool        contiguous_layers; /* offload layers 0..k-1 */
    int         staging_window; /* prefill staging window W; -1 = the
                                   scheduler's default */
    int         decode_mode;  /* lkv_sched_decode_mode_t */
    int         offload_rule; /* lkv_sched_offload_rule_t */
    const char *csv_path;     /* per-request CSV, or NULL */
    bool        quiet;
} lkv_sim_config_t;

lkv_sim_config_t lkv_sim_config_default(void);

typedef struct {
    int64_t  n_requests, n_completed, n_failed, n_rejected;
    double   mean_ttft_s, p50_ttft_s, p90_ttft_s, p99_ttft_s;
    double   mean_queue_s, p99_queue_s, mean_prefill_s;
    double   mean_tpot_s, p50_tpot_s, p99_tpot_s;
    double   mean_e2e_s;
    double   slo_violation_rate, ttft_attainment, tpot_attainment;
    double   throughput_tok_s, throughput_req_s, makespan_s;
    int64_t  output_tokens;
    uint64_t preemptions, offload_moves, reload_moves, stage_moves,
        anti_starvation_admits;
    int64_t  offloaded_bytes, reloaded_bytes, staged_bytes;
    uint64_t steps, wait_steps;
    double   mean_offloaded_layers; /* over requests */
    double   frac_offloaded;        /* requests with >= 1 offloaded layer */
    double   link_d2h_util, link_h2d_util, compute_util;
    double   copy_tail_s;   /* step time beyond compute (copies) */
    int32_t  device_blocks; /* per instance, layer-blocks */
    double   sim_wall_s;
} lkv_sim_result_t;

/* Run the whole simulation. Errors: LKV_ERR_INVALID (bad config; logged),
 * LKV_ERR_NOTFOUND/FORMAT (data files), LKV_ERR_NOMEM, LKV_ERR_INTERNAL (the
 * scheduler stalled: no progress possible; logged with the state). */
lkv_status_t lkv_sim_run(const lkv_sim_config_t *cfg, lkv_sim_result_t *out);

/* Write the result as JSON (bench's schema at the top level). */
void lkv_sim_result_write_json(const lkv_sim_result_t *r,
                               const lkv_sim_config_t *cfg, FILE *f);

#endif /* LKV_SIM_SIMULATOR_H */
