/* kv_geometry.c - layer-block byte geometry (see kv_geometry.h). */
#include "kvstore/kv_geometry.h"

#define LKV_LOG_MODULE "kv_geometry"
#include "common/log.h"

lkv_status_t lkv_kv_geometry_init(const lkv_model_config_t *mc,
                                  lkv_dtype_t dtype, int block_size,
                                  int tp_size, int tp_rank,
                                  lkv_kv_geometry_t *g)
{
    if (mc == NULL || g == NULL) {
        return LKV_ERR_INVALID;
    }
    if (block_size <= 0 || block_size > (1 << 20)) {
        LKV_LOG_ERROR("kv block size %d out of range (use 1..1048576, "
                      "default 16)",
                      block_size);
        return LKV_ERR_INVALID;
    }
    if (mc->n_layers <= 0 || mc->n_kv_heads <= 0 || mc->head_dim <= 0) {
        LKV_LOG_ERROR("model config has n_layers %d, n_kv_heads %d, head_dim "
                      "%d: all must be > 0",
                      mc->n_layers, mc->n_kv_heads, mc->head_dim);
        return LKV_ERR_INVALID;
    }
    if (dtype != LKV_DTYPE_F32 && dtype != LKV_DTYPE_F16 &&
        dtype != LKV_DTYPE_BF16) {
        LKV_LOG_ERROR("unknown kv dtype %d (use f32, f16 or bf16)", (int)dtype);
        return LKV_ERR_INVALID;
    }
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) {
        LKV_LOG_ERROR("tensor-parallel rank %d of %d is invalid", tp_rank,
                      tp_size);
        return LKV_ERR_INVALID;
    }
    int local, start;
    if (tp_size <= mc->n_kv_heads) {
        if (mc->n_kv_heads % tp_size != 0) {
            LKV_LOG_ERROR("tp %d does not divide the model's %d kv heads: "
                          "pick a tp that does",
                          tp_size, mc->n_kv_heads);
            return LKV_ERR_INVALID;
        }
        local = mc->n_kv_heads / tp_size;
        start = tp_rank * local;
    } else {
        if (tp_size % mc->n_kv_heads != 0) {
            LKV_LOG_ERROR("tp %d is not a multiple of the model's %d kv "
                          "heads: pick a tp that is",
                          tp_size, mc->n_kv_heads);
            return LKV_ERR_INVALID;
        }
        local = 1;
        start = tp_rank / (tp_size / mc->n_kv_heads);
    }
    lkv_kv_geometry_t out = {
        .n_layers         = mc->n_layers,
        .block_size       = block_size,
        .n_kv_heads       = mc->n_kv_heads,
        .n_kv_heads_local = local,
        .kv_head_start    = start,
        .head_dim         = mc->head_dim,
        .tp_size          = tp_size,
        .tp_rank          = tp_rank,
        .dtype            = dtype,
    };
    out.block_elems = 2 * (size_t)block_size * (size_t)local *
                      (size_t)mc->head_dim;
    out.block_bytes = out.block_elems * lkv_dtype_size(dtype);
    out.token_bytes = out.block_bytes / (size_t)block_size;
    *g              = out;
    return LKV_OK;
}

int64_t lkv_kv_geometry_blocks_in(const lkv_kv_geometry_t *g, uint64_t bytes)
{
    if (g == NULL || g->block_bytes == 0) {
        return 0;
    }
    return (int64_t)(bytes / g->block_bytes);
}

int lkv_kv_geometry_blocks_for(const lkv_kv_geometry_t *g, int64_t n_tokens)
{
    if (g == NULL || g->block_size <= 0 || n_tokens <= 0) {
        return 0;
    }
    return (int)((n_tokens + g->block_size - 1) / g->block_size);
}
