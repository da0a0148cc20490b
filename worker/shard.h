/* shard.h - which part of a model one tensor-/pipeline-parallel rank holds.
 *
 * Tensor parallelism (tp ranks) splits each attention layer by heads: rank r
 * gets query heads [q_head0, q_head0 + n_q_heads) and the KV heads they read
 * (n_kv_heads / tp of them, or one replicated KV head when tp exceeds the
 * KV head count); wq/wk/wv rows and wo columns follow. The MLP splits the
 * intermediate dimension: w_gate/w_up rows and w_down columns
 * [ff0, ff0 + n_ff). The row-split wo and w_down each leave a partial sum
 * that one all-reduce per sub-layer completes (worker/comm.h).
 *
 * Pipeline parallelism (pp stages) gives stage s the contiguous layers
 * [layer0, layer1): an even split by default (the first stages take one more
 * when it does not divide), or the per-stage counts of --pp-layers 3,2.
 *
 * Plain data; no threads.
 */
#ifndef LKV_WORKER_SHARD_H
#define LKV_WORKER_SHARD_H

#include <stdbool.h>

#include "common/status.h"
#include "format/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_SHARD_MAX_STAGES 64

typedef struct {
    int tp, tp_rank;       /* tensor-parallel size and this rank's index */
    int pp, pp_rank;       /* pipeline stages and this rank's stage */
    int layer0, layer1;    /* layers [layer0, layer1) of this stage */
    int q_head0, n_q_heads;
    int kv_head0, n_kv_heads;
    int ff0, n_ff;         /* MLP intermediate columns */
} lkv_shard_t;

/* The whole model on one rank (tp = pp = 1). */
lkv_shard_t lkv_shard_single(const lkv_model_config_t *cfg);

/* Work out rank (tp_rank, pp_rank)'s part of cfg. stage_layers: pp layer
 * counts (sum n_layers, each >= 1) or NULL for the even split.
 * Errors: LKV_ERR_INVALID when the model cannot be split that way (n_heads or
 * hidden_dim not divisible by tp, n_kv_heads and tp not dividing one another,
 * more stages than layers, bad stage_layers); the log says which sizes work. */
lkv_status_t lkv_shard_plan(const lkv_model_config_t *cfg, int tp, int tp_rank,
                            int pp, int pp_rank, const int *stage_layers,
                            lkv_shard_t *out);

/* Parse "3,2" into counts (at most max). Errors: LKV_ERR_INVALID. */
lkv_status_t lkv_shard_parse_layers(const char *text, int *counts, int max,
                                    int *n_p);

/* True if layer l is computed by this rank. */
static inline bool lkv_shard_has_layer(const lkv_shard_t *s, int l)
{
    return l >= s->layer0 && l < s->layer1;
}

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_SHARD_H */
