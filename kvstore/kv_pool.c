/* kv_pool.c - device and host KV pools on a kernels backend (see kv_pool.h).
 * Threading: immutable after create. */
#include "kvstore/kv_pool.h"

#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "kv_pool"
#include "common/log.h"

struct lkv_kv_pool {
    lkv_kern_backend_t *be;
    size_t              block_bytes;
    int32_t             n_blocks[LKV_KV_TIER_COUNT];
    void               *base[LKV_KV_TIER_COUNT]; /* [REMOTE] stays NULL */
    lkv_kv_remote_t     remote;
    int                 have_remote;
};

/* Largest host buffer of zeros zero_pools uploads from at a time. */
#define ZERO_CHUNK_BYTES ((size_t)16 << 20)

/* Layer-blocks go to a remote tier whole, the unwritten tail of a partly
 * filled block included: start both pools zeroed so that no stale process
 * memory ever leaves the node (and memory checkers see defined bytes). The
 * device pool is written through the backend, from one bounded buffer of
 * zeros (a GPU pool can be far larger than spare host memory). */
static lkv_status_t zero_pools(lkv_kv_pool_t *p)
{
    size_t       dev   = (size_t)p->n_blocks[LKV_KV_TIER_DEVICE] * p->block_bytes;
    size_t       chunk = dev < ZERO_CHUNK_BYTES ? dev : ZERO_CHUNK_BYTES;
    uint8_t     *base  = p->base[LKV_KV_TIER_DEVICE];
    void        *zero;
    lkv_status_t st = LKV_OK;

    if (p->base[LKV_KV_TIER_HOST] != NULL) {
        memset(p->base[LKV_KV_TIER_HOST], 0,
               (size_t)p->n_blocks[LKV_KV_TIER_HOST] * p->block_bytes);
    }
    if (dev == 0) {
        return LKV_OK;
    }
    zero = calloc(1, chunk);
    if (zero == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (size_t off = 0; off < dev && st == LKV_OK; off += chunk) {
        size_t n = dev - off < chunk ? dev - off : chunk;

        st = LKV_KERN_CALL(p->be, mem_upload, base + off, zero, n);
    }
    free(zero);
    return st;
}

lkv_status_t lkv_kv_pool_create(lkv_kern_backend_t *be,
                                const lkv_kv_pool_config_t *cfg,
                                const lkv_kv_remote_t *remote,
                                lkv_kv_pool_t **pool_p)
{
    lkv_status_t st;

    if (be == NULL || be->ops == NULL || cfg == NULL || pool_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (cfg->block_bytes == 0 || cfg->n_device_blocks < 0 ||
        cfg->n_host_blocks < 0) {
        LKV_LOG_ERROR("kv pool needs block_bytes > 0 and block counts >= 0 "
                      "(got %zu bytes, %d device, %d host blocks)",
                      cfg->block_bytes, (int)cfg->n_device_blocks,
                      (int)cfg->n_host_blocks);
        return LKV_ERR_INVALID;
    }
    if (remote != NULL &&
        (remote->ops == NULL || remote->ops->put == NULL ||
         remote->ops->get == NULL || remote->ops->test == NULL ||
         remote->ops->req_free == NULL || remote->n_blocks < 0)) {
        LKV_LOG_ERROR("kv pool: remote tier ops table is incomplete");
        return LKV_ERR_INVALID;
    }
    int32_t counts[2] = {cfg->n_device_blocks, cfg->n_host_blocks};
    for (int t = 0; t < 2; t++) {
        if ((size_t)counts[t] > SIZE_MAX / cfg->block_bytes) {
            LKV_LOG_ERROR("kv pool of %d blocks x %zu bytes overflows",
                          (int)counts[t], cfg->block_bytes);
            return LKV_ERR_INVALID;
        }
    }
    lkv_kv_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return LKV_ERR_NOMEM;
    }
    p->be                              = be;
    p->block_bytes                     = cfg->block_bytes;
    p->n_blocks[LKV_KV_TIER_DEVICE]    = cfg->n_device_blocks;
    p->n_blocks[LKV_KV_TIER_HOST]      = cfg->n_host_blocks;
    if (remote != NULL) {
        p->remote                       = *remote;
        p->have_remote                  = 1;
        p->n_blocks[LKV_KV_TIER_REMOTE] = remote->n_blocks;
    }
    if (cfg->n_device_blocks > 0) {
        size_t bytes = (size_t)cfg->n_device_blocks * cfg->block_bytes;
        st = LKV_KERN_CALL(be, mem_alloc, bytes, &p->base[LKV_KV_TIER_DEVICE]);
        if (st < 0) {
            LKV_LOG_ERROR("cannot allocate the device kv pool (%d blocks, "
                          "%.1f MiB): %s; lower --device-kv-blocks",
                          (int)cfg->n_device_blocks,
                          (double)bytes / (1 << 20), lkv_status_str(st));
            goto fail;
        }
    }
    if (cfg->n_host_blocks > 0) {
        size_t bytes = (size_t)cfg->n_host_blocks * cfg->block_bytes;
        st = LKV_KERN_CALL(be, host_alloc, bytes, &p->base[LKV_KV_TIER_HOST]);
        if (st < 0) {
            LKV_LOG_ERROR("cannot allocate the host kv pool (%d blocks, "
                          "%.1f MiB): %s; lower --host-kv-blocks",
                          (int)cfg->n_host_blocks, (double)bytes / (1 << 20),
                          lkv_status_str(st));
            goto fail;
        }
    }
    if (remote != NULL) {
        LKV_CHECK_GOTO(zero_pools(p), st, fail);
    }
    *pool_p = p;
    return LKV_OK;
fail:
    lkv_kv_pool_destroy(&p);
    return st;
}

void lkv_kv_pool_destroy(lkv_kv_pool_t **pool_p)
{
    if (pool_p == NULL || *pool_p == NULL) {
        return;
    }
    lkv_kv_pool_t *p = *pool_p;
    if (p->base[LKV_KV_TIER_DEVICE] != NULL && p->be->ops->mem_free != NULL) {
        p->be->ops->mem_free(p->be, p->base[LKV_KV_TIER_DEVICE]);
    }
    if (p->base[LKV_KV_TIER_HOST] != NULL && p->be->ops->host_free != NULL) {
        p->be->ops->host_free(p->be, p->base[LKV_KV_TIER_HOST]);
    }
    free(p);
    *pool_p = NULL;
}

void *lkv_kv_pool_base(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier)
{
    if (pool == NULL || tier < 0 || tier >= LKV_KV_TIER_COUNT) {
        return NULL;
    }
    return pool->base[tier];
}

void *lkv_kv_pool_block_addr(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier,
                             lkv_kv_block_t b)
{
    if (pool == NULL || tier < 0 || tier >= LKV_KV_TIER_COUNT ||
        pool->base[tier] == NULL || b < 0 || b >= pool->n_blocks[tier]) {
        return NULL;
    }
    return (char *)pool->base[tier] + (size_t)b * pool->block_bytes;
}

size_t lkv_kv_pool_block_bytes(const lkv_kv_pool_t *pool)
{
    return pool != NULL ? pool->block_bytes : 0;
}

int32_t lkv_kv_pool_n_blocks(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier)
{
    if (pool == NULL || tier < 0 || tier >= LKV_KV_TIER_COUNT) {
        return 0;
    }
    return pool->n_blocks[tier];
}

const lkv_kv_remote_t *lkv_kv_pool_remote(const lkv_kv_pool_t *pool)
{
    return pool != NULL && pool->have_remote ? &pool->remote : NULL;
}

lkv_kern_backend_t *lkv_kv_pool_backend(const lkv_kv_pool_t *pool)
{
    return pool != NULL ? pool->be : NULL;
}
