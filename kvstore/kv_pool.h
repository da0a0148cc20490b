/* kv_pool.h - the worker's physical KV pools: memory behind the block
 * indices of kv_alloc.h.
 *
 * DEVICE tier: one backend allocation (mem_alloc) of n_blocks * block_bytes,
 * shared by all layers; block b lives at base + b * block_bytes, which is the
 * layout kernels.h's kv_write/attention expect, so the device base is the
 * `kv_pool` argument of those ops. HOST tier: one host_alloc allocation
 * (pinned on CUDA, plain memory on the CPU backend), same layout. REMOTE tier:
 * no local memory; reached through an lkv_kv_remote_t ops table that a
 * transport fills (UCX kvnode, issue 8); the pool only stores it.
 *
 * Ownership: the pool borrows the backend (which must outlive it) and owns its
 * two allocations; a remote handle is borrowed and must outlive the pool.
 * Threading: after create, every query is read-only and thread-safe.
 */
#ifndef LKV_KVSTORE_KV_POOL_H
#define LKV_KVSTORE_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kernels.h"
#include "kvstore/kv_alloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- remote tier interface (filled by a transport; no UCX code here) ---- */

typedef struct lkv_kv_remote_req lkv_kv_remote_req_t; /* opaque, per impl */

typedef struct {
    const char *name; /* "ucx", "fake", ... */
    /* Start copying n local layer-blocks to remote blocks (put) or remote
     * blocks into local memory (get). local[i] is a host-pool address (or a
     * device-pool address when local_is_device and the transport supports
     * it: LKV_ERR_UNSUPPORTED otherwise); every block is block_bytes long.
     * The arrays are copied; the memory must stay valid until the request
     * completes. Non-blocking; *req_p completes later. Errors:
     * LKV_ERR_INVALID (bad block), LKV_ERR_BUSY (too many requests: progress
     * and retry), peer errors (LKV_ERR_PEER_LOST, LKV_ERR_IO). */
    lkv_status_t (*put)(void *ctx, const lkv_kv_block_t *remote_blocks,
                        void *const *local, int n, size_t block_bytes,
                        int local_is_device, lkv_kv_remote_req_t **req_p);
    lkv_status_t (*get)(void *ctx, const lkv_kv_block_t *remote_blocks,
                        void *const *local, int n, size_t block_bytes,
                        int local_is_device, lkv_kv_remote_req_t **req_p);
    /* Drive communication (non-blocking). */
    lkv_status_t (*progress)(void *ctx);
    /* LKV_OK when req completed, LKV_AGAIN while in flight, or the error it
     * failed with. */
    lkv_status_t (*test)(void *ctx, lkv_kv_remote_req_t *req);
    /* Release a completed (or failed) request. */
    void (*req_free)(void *ctx, lkv_kv_remote_req_t *req);
} lkv_kv_remote_ops_t;

typedef struct {
    const lkv_kv_remote_ops_t *ops;
    void                      *ctx;
    int32_t                    n_blocks; /* remote capacity in layer-blocks */
} lkv_kv_remote_t;

/* ---- pools ---------------------------------------------------------------- */

typedef struct {
    size_t  block_bytes; /* lkv_kv_geometry_t.block_bytes */
    int32_t n_device_blocks;
    int32_t n_host_blocks; /* 0 = no host tier */
} lkv_kv_pool_config_t;

typedef struct lkv_kv_pool lkv_kv_pool_t;

/* Allocate the pools on backend `be`. remote may be NULL (no remote tier).
 * Errors: LKV_ERR_INVALID (block_bytes 0, negative counts, size overflow),
 * LKV_ERR_NOMEM (host memory) or the backend's error (LKV_ERR_DEVICE /
 * LKV_ERR_NOMEM) when the device pool does not fit: lower --device-kv-blocks.
 * Nothing is left allocated on error. */
lkv_status_t lkv_kv_pool_create(lkv_kern_backend_t *be,
                                const lkv_kv_pool_config_t *cfg,
                                const lkv_kv_remote_t *remote,
                                lkv_kv_pool_t **pool_p);
/* Free both allocations. The caller must first make sure no copy touching
 * the pools is in flight (lkv_kv_mover_destroy does). Accepts NULL. */
void lkv_kv_pool_destroy(lkv_kv_pool_t **pool_p);

/* Base of a tier's memory (NULL for REMOTE or an empty tier). The DEVICE base
 * is the kv_pool argument of kv_write/attention. */
void   *lkv_kv_pool_base(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier);
/* Address of block b of tier (NULL if out of range or REMOTE). */
void   *lkv_kv_pool_block_addr(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier,
                               lkv_kv_block_t b);
size_t  lkv_kv_pool_block_bytes(const lkv_kv_pool_t *pool);
int32_t lkv_kv_pool_n_blocks(const lkv_kv_pool_t *pool, lkv_kv_tier_t tier);
/* The remote tier handle (NULL when none). */
const lkv_kv_remote_t *lkv_kv_pool_remote(const lkv_kv_pool_t *pool);
lkv_kern_backend_t    *lkv_kv_pool_backend(const lkv_kv_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KVSTORE_KV_POOL_H */
