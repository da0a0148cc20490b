/* kv_geometry.h - byte geometry of a layer-block for one model and TP shard.
 *
 * A layer-block holds K then V of block_size tokens of ONE layer of this
 * rank's KV heads (the layout kernels.h's kv_write/attention expect):
 *   K (block_size, n_kv_heads_local, head_dim), V the same shape,
 *   block_bytes = 2 * block_size * n_kv_heads_local * head_dim * dtype_bytes.
 * Tensor parallel: with tp <= n_kv_heads each rank holds n_kv_heads / tp
 * heads (n_kv_heads % tp must be 0); with tp > n_kv_heads each KV head is
 * replicated on tp / n_kv_heads ranks (tp % n_kv_heads must be 0) and every
 * rank holds one.
 * Threading: plain data and pure functions.
 */
#ifndef LKV_KVSTORE_KV_GEOMETRY_H
#define LKV_KVSTORE_KV_GEOMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "format/model_file.h"
#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int         n_layers;         /* layers of the model */
    int         block_size;       /* tokens per layer-block */
    int         n_kv_heads;       /* KV heads of the model */
    int         n_kv_heads_local; /* KV heads on this rank */
    int         kv_head_start;    /* first model KV head held by this rank */
    int         head_dim;
    int         tp_size;
    int         tp_rank;
    lkv_dtype_t dtype;            /* KV cache element type */
    size_t      block_elems;      /* 2 * block_size * n_kv_heads_local * head_dim */
    size_t      block_bytes;      /* block_elems * dtype size */
    size_t      token_bytes;      /* one token of one layer: block_bytes / block_size */
} lkv_kv_geometry_t;

/* Fill *g for model `mc`, KV dtype, block_size tokens, TP shard tp_rank of
 * tp_size. LKV_ERR_INVALID (with one log line saying what to change) for
 * block_size <= 0, a model without KV heads or head_dim, tp_size < 1,
 * tp_rank outside 0..tp_size-1, or a TP degree that does not divide (or is
 * not a multiple of) n_kv_heads. *g is written only on success. */
lkv_status_t lkv_kv_geometry_init(const lkv_model_config_t *mc,
                                  lkv_dtype_t dtype, int block_size,
                                  int tp_size, int tp_rank,
                                  lkv_kv_geometry_t *g);

/* Layer-blocks (of this geometry) that fit in `bytes`. */
int64_t lkv_kv_geometry_blocks_in(const lkv_kv_geometry_t *g, uint64_t bytes);

/* Layer-blocks one layer of a sequence of n_tokens needs. */
int lkv_kv_geometry_blocks_for(const lkv_kv_geometry_t *g, int64_t n_tokens);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KVSTORE_KV_GEOMETRY_H */
