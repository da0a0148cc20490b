/* engine.h - the offline engine behind `layerkv run`: a small local scheduler
 * that places KV blocks with kvstore/kv_alloc, builds step plans (all
 * requests admitted FCFS as KV memory allows, chunked prefill then decode,
 * continuous batching) and runs them on a step executor.
 *
 * Layer-wise offload (issue 3): with an offload policy, the chosen layers of
 * each sequence leave the device in its last prefill step (OFFLOAD moves that
 * overlap the following layers) and come back either by RELOAD (the sequence
 * decodes again once every layer is resident; reloads start when the device
 * pool has room for all of the sequence's offloaded layers) or by STAGE every
 * decode step (streamed into device staging blocks, the new token's KV
 * written back to the host copy).
 *
 * Threading: one thread.
 */
#ifndef LKV_WORKER_ENGINE_H
#define LKV_WORKER_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"
#include "kvstore/kv_pool.h"
#include "worker/model.h"
#include "worker/step_exec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LKV_OFFLOAD_NONE        = 0,
    LKV_OFFLOAD_INTERLEAVE  = 1, /* odd layers leave, even layers stay */
    LKV_OFFLOAD_ALL_BUT_ONE = 2, /* every layer but layer 0 leaves */
    LKV_OFFLOAD_RANDOM      = 3, /* each layer leaves with p = 1/2, per
                                    sequence, from offload_seed */
} lkv_offload_policy_t;

typedef enum {
    LKV_DECODE_RELOAD = 0,
    LKV_DECODE_STREAM = 1,
} lkv_decode_mode_t;

typedef struct {
    int                  block_size;       /* tokens per layer-block */
    int32_t              n_device_blocks;  /* device pool capacity */
    int32_t              n_host_blocks;    /* host pool capacity */
    int                  max_seqs;         /* sequences running at once */
    int                  max_batch_tokens; /* tokens per step */
    int                  max_ctx;          /* 0: the model's max_seq_len */
    lkv_offload_policy_t offload;
    uint64_t             offload_seed;     /* for LKV_OFFLOAD_RANDOM */
    lkv_decode_mode_t    decode_mode;
    lkv_dtype_t          kv_dtype;
    /* optional REMOTE tier (issue 8; borrowed, must outlive the engine):
     * offloaded layers of a sequence go to the host pool while it has room,
     * else to the remote tier (all of them with n_host_blocks == 0). When
     * remote KV is lost (a reload/stage
     * fails with LKV_ERR_PEER_LOST/TIMEOUT) the engine stops using the
     * remote tier and recomputes the sequence on the device (prompt +
     * tokens so far, preempting the latest sequences by recompute when
     * the device pool is short); after two losses the request fails with
     * LKV_ERR_PEER_LOST. A failed offload keeps the layer on the device. */
    const lkv_kv_remote_t *remote;
    int32_t              n_remote_blocks;
} lkv_engine_config_t;

/* block 16, 1024 device blocks, 1024 host blocks, 16 seqs, 256 tokens per
 * step, model context, no offload, reload, f32 KV */
lkv_engine_config_t lkv_engine_config_default(void);

/* Parse "none|interleave|all-but-one|random:SEED". LKV_ERR_INVALID if bad. */
lkv_status_t lkv_engine_parse_offload(const char *text,
                                      lkv_offload_policy_t *policy_p,
                                      uint64_t *seed_p);
/* Whether `layer` of the seq_index-th sequence is offloaded by the policy. */
bool lkv_engine_layer_offloaded(lkv_offload_policy_t policy, uint64_t seed,
                                int n_layers, int seq_index, int layer);

typedef struct {
    const int32_t      *prompt;     /* (n_prompt) token ids, BOS included */
    int                 n_prompt;   /* >= 1 */
    int                 max_tokens; /* tokens to generate (>= 1) */
    lkv_plan_sampling_t sampling;
} lkv_engine_request_t;

/* Called for every generated token of request `req` (stop tokens are not
 * reported), then once with token -1 and the request's final status when it
 * ends. */
typedef void (*lkv_engine_token_fn)(void *ctx, int req, int32_t token,
                                    lkv_status_t status);

typedef struct {
    int64_t prefill_tokens, prefill_ns; /* steps that carried prefill */
    int64_t decode_tokens, decode_ns;   /* decode-only steps */
    int64_t decode_steps;
    int64_t steps;
    int64_t bytes_d2h, bytes_h2d;
    int64_t n_offloads, n_reloads, n_stages;
    int64_t compute_ns;
    /* steps that offloaded layers: their forward time, the device->host
     * link's busy time during them, and their wall time (overlap shows as
     * offload_step_ns close to max(compute, copy), not their sum) */
    int64_t offload_steps;
    int64_t offload_compute_ns, offload_copy_ns, offload_step_ns;
} lkv_engine_stats_t;

typedef struct lkv_engine lkv_engine_t;

/* Errors: LKV_ERR_INVALID (config), LKV_ERR_NOMEM, LKV_ERR_DEVICE. The model
 * is borrowed and must outlive e. */
lkv_status_t lkv_engine_create(const lkv_model_t *m,
                               const lkv_engine_config_t *cfg,
                               lkv_engine_t **e_p);
void         lkv_engine_destroy(lkv_engine_t **e_p);

/* The context length the engine serves (<= model max_seq_len). */
int lkv_engine_max_ctx(const lkv_engine_t *e);

/* Run every request to completion. A request stops at a stop token of the
 * model config, after max_tokens, or at the context length. Errors:
 * LKV_ERR_TOOLONG (a prompt longer than the context; nothing runs),
 * LKV_ERR_INVALID (bad request), LKV_ERR_NOSPACE (the KV pools are too small
 * for even one sequence to make progress), or a step failure. Per-request
 * failures are reported through fn and do not stop the others. */
lkv_status_t lkv_engine_generate(lkv_engine_t *e,
                                 const lkv_engine_request_t *reqs, int n_reqs,
                                 lkv_engine_token_fn fn, void *ctx);

void lkv_engine_stats(const lkv_engine_t *e, lkv_engine_stats_t *stats_p);

/* The step executor (tests inspect logits of the last step through it). */
lkv_step_exec_t *lkv_engine_step_exec(lkv_engine_t *e);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_ENGINE_H */
