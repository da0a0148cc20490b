/* kvnode.h - the remote host-memory KV tier daemon (`layerkv kvnode`) and
 * the client call that discovers one.
 *
 * A kvnode registers one block of host memory with UCX and publishes, on a
 * ZeroMQ ROUTER control socket, what a worker needs to reach it one-sidedly:
 * its UCX worker address, the packed rkey of the region, the region's base
 * address and size. Workers then put/get layer-blocks with transport/ucx.h;
 * the kvnode only progresses its UCX worker (tcp and shared-memory
 * transports emulate RMA with active messages handled by the target). It
 * keeps no allocation metadata: which block belongs to whom is decided by the
 * coordinator's kvstore allocator (REMOTE tier).
 *
 * Control protocol (msgpack maps, one frame; unknown fields ignored):
 *   request  {"v":1, "op":"info"}      -> {"v":1, "ok":true, "addr":bin,
 *            "rkey":bin, "base":uint, "bytes":uint, "block_bytes":uint}
 *   request  {"v":1, "op":"ping"}      -> {"v":1, "ok":true}
 *   anything else                      -> {"v":1, "ok":false, "error":str}
 *
 * Threading: a kvnode is driven by one thread (lkv_kvnode_serve or
 * lkv_kvnode_run_once); lkv_kvnode_query is thread-safe (own ZMQ context).
 */
#ifndef LKV_TRANSPORT_KVNODE_H
#define LKV_TRANSPORT_KVNODE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *listen;         /* ZeroMQ endpoint, e.g. tcp://0.0.0.0:7400 */
    uint64_t    capacity_bytes; /* registered host memory */
    uint64_t    block_bytes;    /* advertised block size hint (0 = none);
                                   capacity is rounded down to a multiple */
    bool        busy_poll;      /* progress UCX without sleeping (one core
                                   busy; lowest latency) instead of
                                   sleeping on the UCX event fd when idle */
} lkv_kvnode_config_t;

typedef struct lkv_kvnode lkv_kvnode_t;

/* Map and register the memory, start UCX, bind the control socket.
 * Errors: LKV_ERR_INVALID (capacity 0 or smaller than one block, bad
 * endpoint), LKV_ERR_BUSY (endpoint in use), LKV_ERR_NOMEM, LKV_ERR_IO. */
lkv_status_t lkv_kvnode_create(const lkv_kvnode_config_t *cfg,
                               lkv_kvnode_t **n_p);
void         lkv_kvnode_destroy(lkv_kvnode_t **n_p);

/* The endpoint actually bound (resolves tcp://host:*). */
const char *lkv_kvnode_endpoint(const lkv_kvnode_t *n);
/* Base of the registered memory (tests inspect it). */
void       *lkv_kvnode_memory(const lkv_kvnode_t *n);

/* Progress UCX and answer control requests for at most timeout_ms
 * (0 = one non-blocking pass). */
lkv_status_t lkv_kvnode_run_once(lkv_kvnode_t *n, int timeout_ms);
/* Serve until *stop becomes non-zero (a signal handler sets it). */
lkv_status_t lkv_kvnode_serve(lkv_kvnode_t *n, volatile sig_atomic_t *stop);

/* ---- client side ---- */

typedef struct {
    void    *addr; /* UCX worker address (malloc'ed) */
    size_t   addr_len;
    void    *rkey; /* packed rkey (malloc'ed) */
    size_t   rkey_len;
    uint64_t base;  /* remote virtual address of the region */
    uint64_t bytes; /* region size */
    uint64_t block_bytes;
} lkv_kvnode_info_t;

/* Ask the kvnode at endpoint for its info, waiting at most timeout_ms.
 * Errors: LKV_ERR_TIMEOUT (no answer: is `layerkv kvnode` running there?),
 * LKV_ERR_PROTOCOL (malformed answer), LKV_ERR_INVALID (bad endpoint),
 * LKV_ERR_NOMEM, LKV_ERR_IO. On success free with lkv_kvnode_info_free. */
lkv_status_t lkv_kvnode_query(const char *endpoint, int timeout_ms,
                              lkv_kvnode_info_t *info);
void         lkv_kvnode_info_free(lkv_kvnode_info_t *info);

#ifdef __cplusplus
}
#endif

#endif /* LKV_TRANSPORT_KVNODE_H */
