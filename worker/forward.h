/* forward.h - the batched Llama forward pass over a paged KV pool whose block
 * tables are per layer.
 *
 * One call runs several sequences together: each brings n_tokens new tokens
 * at positions pos0 .. pos0+n_tokens-1 (a prefill chunk or one decode token),
 * all mixed in one batch. K/V live in one pool of layer-blocks (kernels.h
 * layout); for every layer the caller supplies each sequence's block table of
 * that layer (table_fn), so a sequence's layers may sit in different blocks,
 * and a layer may be swapped for staging blocks by the before_layer hook.
 *
 * Per layer l the order is: norm + QKV + RoPE, before_layer(l) (wait for
 * prefetches, swap in staging tables), table_fn for each sequence, kv_write,
 * kv_done(l) (layer l's K/V for this step are final: start offload copies
 * that overlap the rest of the pass), attention, output projection, MLP.
 *
 * All scratch is preallocated at create time for cfg.max_batch_tokens tokens,
 * cfg.max_seqs sequences and cfg.max_logit_rows logit rows: the pass itself
 * does not allocate. Logits are computed only for the rows asked for.
 *
 * Threading: one forward object per step thread; not thread-safe. Hooks run
 * on the calling thread.
 */
#ifndef LKV_WORKER_FORWARD_H
#define LKV_WORKER_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kernels.h"
#include "worker/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int         max_batch_tokens;   /* tokens per pass, all sequences */
    int         max_seqs;           /* sequences per pass */
    int         max_logit_rows;     /* logit rows per pass (>= 1) */
    int         max_blocks_per_seq; /* block-table width of one layer */
    int         block_size;         /* tokens per layer-block */
    lkv_dtype_t kv_dtype;           /* dtype of the KV pool */
} lkv_fwd_config_t;

/* max_batch_tokens 512, max_seqs 64, max_logit_rows 64,
 * max_blocks_per_seq 64, block_size 16, kv_dtype f32 */
lkv_fwd_config_t lkv_fwd_config_default(void);

typedef struct {
    int32_t        n_tokens; /* >= 1 */
    const int32_t *tokens;   /* (n_tokens) host */
    int32_t        pos0;     /* position of tokens[0] */
    int32_t        n_logits; /* logits for the last n_logits tokens:
                                0, 1 (sampling) or n_tokens (scoring) */
} lkv_fwd_seq_t;

/* The block table of layer `layer` of batch sequence `seq_idx`: device-pool
 * block indices covering positions 0 .. pos0+n_tokens-1 (host memory, valid
 * until the next call of the function). */
typedef lkv_status_t (*lkv_fwd_table_fn)(void *ctx, int seq_idx, int layer,
                                         const int32_t **blocks_p,
                                         int *n_blocks_p);
/* A per-layer hook; an error aborts the pass with that status. */
typedef lkv_status_t (*lkv_fwd_layer_fn)(void *ctx, int layer);

typedef struct {
    int                  n_seqs;
    const lkv_fwd_seq_t *seqs;
    void                *kv_pool; /* backend memory: the device block pool */
    lkv_fwd_table_fn     table;   /* required */
    lkv_fwd_layer_fn     before_layer; /* optional */
    lkv_fwd_layer_fn     kv_done;      /* optional */
    void                *ctx;
} lkv_fwd_batch_t;

typedef struct lkv_fwd lkv_fwd_t;

/* Errors: LKV_ERR_INVALID (bad config), LKV_ERR_NOMEM / LKV_ERR_DEVICE
 * (scratch allocation). The model is borrowed and must outlive f. */
lkv_status_t lkv_fwd_create(const lkv_model_t *m, const lkv_fwd_config_t *cfg,
                            lkv_fwd_t **f_p);
void         lkv_fwd_destroy(lkv_fwd_t **f_p);

const lkv_fwd_config_t *lkv_fwd_config(const lkv_fwd_t *f);

/* Run one pass. On success *n_rows_p is the number of logit rows produced:
 * the rows of sequence 0 first (its last n_logits tokens in order), then
 * sequence 1, ... Errors: LKV_ERR_INVALID (batch over the configured limits,
 * token id out of range, a block table too short for the positions),
 * or the status of a failing hook or kernel. Blocks until the pass's compute
 * is queued (on the CPU backend: done). */
lkv_status_t lkv_fwd_run(lkv_fwd_t *f, const lkv_fwd_batch_t *b,
                         int *n_rows_p);

/* The logits of the last pass: (n_rows, vocab) f32 in backend memory. */
const float *lkv_fwd_logits(const lkv_fwd_t *f);

/* Copy logit rows row0 .. row0+n-1 of the last pass to host memory (blocks
 * until the pass is done). Errors: LKV_ERR_INVALID (rows out of range). */
lkv_status_t lkv_fwd_logits_download(lkv_fwd_t *f, int row0, int n,
                                     float *host);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_FORWARD_H */
