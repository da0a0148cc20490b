/* kv_remote_ucx.h - the REMOTE KV tier over UCX: an lkv_kv_remote_ops_t
 * (kv_pool.h) that stores layer-blocks in one or more kvnodes
 * (transport/kvnode.h).
 *
 * Remote block indices are global across the nodes: node 0 holds blocks
 * [0, n_0), node 1 [n_0, n_0 + n_1), ...; block b of a node lives at byte
 * offset b_local * block_bytes of its registered region. The metadata (which
 * block is free) stays with the kvstore allocator that owns the REMOTE tier;
 * this object only moves bytes.
 *
 * Failure: a node whose endpoint fails (peer died, unreachable, a transfer
 * past the UCX op timeout, LKV_UCX_TIMEOUT_MS) is marked down for good;
 * transfers touching it fail with LKV_ERR_PEER_LOST at once, and test()
 * never reports LKV_AGAIN past the timeout. Callers treat a failed transfer
 * as lost KV (offload: keep the device copy; reload: recompute or fail).
 *
 * Threading: one thread (the step thread) uses the object and its ops.
 */
#ifndef LKV_KVSTORE_KV_REMOTE_UCX_H
#define LKV_KVSTORE_KV_REMOTE_UCX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kvstore/kv_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_KV_REMOTE_MAX_NODES 16

typedef struct {
    const char *const *endpoints;   /* kvnode control endpoints (ZeroMQ) */
    int                n_endpoints; /* 1..LKV_KV_REMOTE_MAX_NODES */
    size_t             block_bytes; /* layer-block size */
    int                connect_timeout_ms; /* per kvnode query (default
                                              3000 when 0) */
    /* local "device" memory is host memory (CPU backend): device-pool
     * addresses may be used directly. Otherwise local_is_device transfers
     * are LKV_ERR_UNSUPPORTED (stage through the host pool). */
    bool               device_is_host;
} lkv_kv_remote_ucx_config_t;

typedef struct lkv_kv_remote_ucx lkv_kv_remote_ucx_t;

/* Query every kvnode, connect to it and size the tier. Errors:
 * LKV_ERR_INVALID (config), LKV_ERR_TIMEOUT (a kvnode did not answer: the
 * message names it), LKV_ERR_NOSPACE (a node smaller than one block),
 * LKV_ERR_PEER_LOST / LKV_ERR_IO (UCX could not reach it), LKV_ERR_NOMEM. */
lkv_status_t lkv_kv_remote_ucx_create(const lkv_kv_remote_ucx_config_t *cfg,
                                      lkv_kv_remote_ucx_t **r_p);
/* Wait (bounded) for transfers in flight, disconnect, free. NULL-safe. */
void lkv_kv_remote_ucx_destroy(lkv_kv_remote_ucx_t **r_p);

/* Re-cut the nodes' regions into blocks of block_bytes (a worker connects
 * and probes before it knows its model's block size). Only while no
 * transfer is in flight, before handle() is taken. Errors: LKV_ERR_INVALID,
 * LKV_ERR_BUSY (transfers in flight), LKV_ERR_NOSPACE (a node smaller than
 * one block; logged with what to do). */
lkv_status_t lkv_kv_remote_ucx_resize(lkv_kv_remote_ucx_t *r,
                                      size_t block_bytes);
/* Summed registered capacity of the nodes, in bytes. */
uint64_t     lkv_kv_remote_ucx_bytes(const lkv_kv_remote_ucx_t *r);

/* The remote tier handle for lkv_kv_pool_create (borrows r). */
void lkv_kv_remote_ucx_handle(lkv_kv_remote_ucx_t *r, lkv_kv_remote_t *out);

int32_t lkv_kv_remote_ucx_n_blocks(const lkv_kv_remote_ucx_t *r);
int     lkv_kv_remote_ucx_n_nodes(const lkv_kv_remote_ucx_t *r);
/* Whether node i is up (false once it failed). */
bool    lkv_kv_remote_ucx_node_up(const lkv_kv_remote_ucx_t *r, int i);
/* The node holding global block b (-1 if out of range). */
int     lkv_kv_remote_ucx_node_of(const lkv_kv_remote_ucx_t *r, int32_t b);

/* Measure the put and get bandwidth (bytes/s) to node 0 with n_blocks
 * transfers of scratch memory (blocking; used at start-up for the
 * offload-volume bound). Writes remote blocks [0, n_blocks): call it before
 * any block is in use. */
lkv_status_t lkv_kv_remote_ucx_probe(lkv_kv_remote_ucx_t *r, int n_blocks,
                                     double *put_bps, double *get_bps);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KVSTORE_KV_REMOTE_UCX_H */
