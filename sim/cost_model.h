/* cost_model.h - GPU step-time and link-time model for the simulator, built
 * from Vidur's measured operator profiles (data/vidur/, see its README) plus
 * a PCIe model for KV offload/reload.
 *
 * Per transformer layer, for one step's batch (all times per GPU):
 *   token ops(T)      piecewise-linear in T over Vidur's mlp.csv grid (sum of
 *                     the QKV/O/MLP GEMMs, norms, rope, act, add medians; T
 *                     rounded up to a multiple of 8 as Vidur does); linear
 *                     extrapolation past the profiled maximum;
 *   decode attention  Vidur's A100 table (bilinear in batch x mean KV rounded
 *                     up to 64) when the head shape per GPU matches the one
 *                     profiled (32 q / 4 kv heads of dim 128) and the point is
 *                     inside the grid; elsewhere a roofline t0 + bytes/BW_eff
 *                     with t0, BW_eff fitted to that table;
 *   prefill attention the same with flops = 4*hq*d*c*(kv + c/2) and F_eff;
 *                     several prefills collapse to one of c = sqrt(sum c_i^2),
 *                     kv = sum kv_i (Vidur's rule); x1.1 batching overhead for
 *                     GQA models when more than one sequence (Vidur);
 *   all-reduce        2 per layer when TP > 1, NCCL medians by message size
 *                     (T * hidden * 2 bytes) + 0.02 ms launch (Vidur).
 * Per step: + send/recv per pipeline hop, + optional CPU overheads (Vidur's
 * A100 cpu_overheads.csv, by batch size).
 * Link: one copy of `bytes` per direction takes latency + bytes / bandwidth;
 * the two directions are independent (full duplex).
 *
 * Threading: immutable after create; queries may run from any thread.
 */
#ifndef LKV_SIM_COST_MODEL_H
#define LKV_SIM_COST_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    const char *name;    /* short name used on the command line */
    const char *hf_name; /* Vidur / Hugging Face name */
    int         n_layers;
    int         hidden;
    int         n_heads;
    int         n_kv_heads;
    int         head_dim;
    int         ffn;
    int         vocab;
    double      n_params; /* total parameters */
    int         max_context;
} lkv_sim_model_t;

/* NULL when unknown. lkv_sim_model_list() prints the names. */
const lkv_sim_model_t *lkv_sim_model_find(const char *name);
const char            *lkv_sim_model_names(void); /* "llama2-7b, ..." */

typedef struct {
    const char *data_dir; /* holds profiles/ and traces/ (data/vidur) */
    const char *model;    /* lkv_sim_model_t name */
    const char *gpu;      /* "a100" | "h100" (80 GB SXM) */
    const char *net_node; /* NULL: "<gpu>_dgx" */
    int         tp;       /* tensor-parallel degree (profiled: 1,2,4,8) */
    int         pp;       /* pipeline stages (latency model only) */
    int         block_size;
    double      mem_gib;  /* GPU memory; 0: 80 */
    double      mem_util; /* fraction usable (vLLM gpu_memory_utilization) */
    double      act_reserve_gib;  /* <0: estimate from max_batch_tokens */
    int         max_batch_tokens; /* for the activation estimate */
    double      link_gbps;        /* host link GB/s per direction per GPU */
    double      link_latency_us;  /* per copy (one layer of one sequence) */
    bool        cpu_overheads;    /* add Vidur's CPU overhead per step */
    double      attn_scale;       /* multiplier on attention time (1.0) */
} lkv_sim_cost_config_t;

lkv_sim_cost_config_t lkv_sim_cost_config_default(void);

typedef struct lkv_sim_cost lkv_sim_cost_t;

/* Errors: LKV_ERR_INVALID (unknown model/gpu, TP not profiled or not dividing
 * the heads; logged with the choices), LKV_ERR_NOTFOUND/FORMAT (profile
 * files), LKV_ERR_NOSPACE (weights leave no memory for the KV cache). */
lkv_status_t lkv_sim_cost_create(const lkv_sim_cost_config_t *cfg,
                                 lkv_sim_cost_t             **c_p);
void         lkv_sim_cost_destroy(lkv_sim_cost_t **c_p);

/* The batch of one step, summarised. */
typedef struct {
    int32_t n_tokens;       /* T: prefill chunk tokens + 1 per decode seq */
    int32_t n_decode;       /* decode sequences */
    int64_t decode_kv_sum;  /* sum of their KV lengths (tokens cached) */
    int32_t n_prefill;      /* prefill (chunk) sequences */
    double  prefill_c2_sum; /* sum of chunk^2 */
    int64_t prefill_kv_sum; /* sum of tokens cached before each chunk */
} lkv_sim_batch_t;

/* Time of one transformer layer for the batch (ns), all-reduces included. */
double lkv_sim_cost_layer_ns(const lkv_sim_cost_t *c, const lkv_sim_batch_t *b);
/* Per-step time outside the layers (ns): pipeline hops, CPU overheads. */
double lkv_sim_cost_step_extra_ns(const lkv_sim_cost_t  *c,
                                  const lkv_sim_batch_t *b);
/* Whole step without copies: n_layers * layer + extra. */
double lkv_sim_cost_step_ns(const lkv_sim_cost_t *c, const lkv_sim_batch_t *b);
/* One host-link copy of `bytes` (per GPU) in one direction (ns). */
double lkv_sim_cost_copy_ns(const lkv_sim_cost_t *c, int64_t bytes);

/* Geometry and capacity. */
const lkv_sim_model_t *lkv_sim_cost_model(const lkv_sim_cost_t *c);
int64_t
lkv_sim_cost_block_bytes(const lkv_sim_cost_t *c); /* 1 layer-block/GPU */
int32_t lkv_sim_cost_device_blocks(const lkv_sim_cost_t *c); /* layer-blocks */
double  lkv_sim_cost_kv_gib(const lkv_sim_cost_t *c); /* KV memory / GPU */
double  lkv_sim_cost_weights_gib(const lkv_sim_cost_t *c);
double  lkv_sim_cost_link_bytes_per_s(const lkv_sim_cost_t *c);
/* Fitted roofline constants (for the docs and tests). */
void lkv_sim_cost_attn_fit(const lkv_sim_cost_t *c, double *dec_t0_ns,
                           double *dec_bw_bytes_per_s, double *pf_t0_ns,
                           double *pf_flops_per_s);
/* Human-readable one-paragraph summary (static buffer inside c). */
const char *lkv_sim_cost_describe(const lkv_sim_cost_t *c);

#endif /* LKV_SIM_COST_MODEL_H */
