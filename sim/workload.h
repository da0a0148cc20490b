/* workload.h - request streams for the simulator: Poisson arrivals (seeded)
 * or a trace's own arrival times, with prompt/output lengths from a Vidur
 * trace CSV (ShareGPT, arXiv summarization, BWB, Azure conv/code) or fixed.
 * Threading: plain functions; the result array belongs to the caller.
 */
#ifndef LKV_SIM_WORKLOAD_H
#define LKV_SIM_WORKLOAD_H

#include <stdint.h>

#include "common/status.h"

typedef struct {
    int64_t arrival_ns;
    int32_t prompt_len;
    int32_t output_len; /* max_tokens: the trace's decode length (>= 1) */
} lkv_sim_req_t;

typedef struct {
    const char *trace; /* NULL: fixed lengths; a name (sharegpt, arxiv,
                          bwb, azure-conv, azure-code) resolved under
                          data_dir/traces/, or a path to a CSV with
                          num_prefill_tokens,num_decode_tokens[,arrived_at] */
    const char *data_dir;
    int32_t     prompt_len; /* fixed lengths (trace == NULL) */
    int32_t     output_len;
    double      rate; /* requests/s, Poisson; 0: the trace's own
                         arrived_at times (replay) x time_scale */
    double  time_scale;
    int64_t n_requests; /* trace rows are shuffled (seeded) and reused
                           cyclically when n exceeds them */
    uint64_t seed;
    int32_t  max_total;  /* > 0: shrink prompt and output in proportion
                            so prompt + output <= max_total (as Vidur) */
    double prompt_scale; /* multiply trace prompt lengths (1.0) */
} lkv_sim_workload_config_t;

lkv_sim_workload_config_t lkv_sim_workload_config_default(void);

/* Generate the stream. *reqs_p (malloc'd, caller frees) has *n_p entries in
 * arrival order. Errors: LKV_ERR_INVALID (bad numbers, replay without an
 * arrived_at column; logged), LKV_ERR_NOTFOUND/FORMAT (trace file),
 * LKV_ERR_NOMEM. */
lkv_status_t lkv_sim_workload_generate(const lkv_sim_workload_config_t *cfg,
                                       lkv_sim_req_t **reqs_p, int64_t *n_p);

/* splitmix64: the simulator's deterministic PRNG. */
uint64_t lkv_sim_rand_u64(uint64_t *state);
double   lkv_sim_rand_unit(uint64_t *state); /* [0, 1) */

#endif /* LKV_SIM_WORKLOAD_H */
