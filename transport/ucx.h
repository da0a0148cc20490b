/* ucx.h - the UCX (ucp) data plane: one UCP context + worker per process,
 * registered memory regions with packed rkeys, endpoints to kvnodes/peers,
 * and non-blocking put/get of lists of equally sized layer-blocks whose
 * completion is tested (or waited for) by the caller.
 *
 * Connection model (docs/ucx.md): worker addresses and rkeys are exchanged
 * out of band (the ZeroMQ control plane of transport/kvnode.h) and endpoints
 * are created with UCP_EP_PARAM_FIELD_REMOTE_ADDRESS. Listener/stream
 * connections are not used: with UCX 1.13 they disable shared memory.
 * Endpoints use UCP_ERR_HANDLING_MODE_PEER so a dead peer fails requests
 * instead of hanging them; lkv_ucx_create therefore sets
 * UCX_POSIX_ERROR_HANDLING=y and UCX_SYSV_ERROR_HANDLING=y (unless already
 * set), without which UCX silently drops shared memory for such endpoints.
 * Transport choice is UCX's: set UCX_TLS (sm,self | tcp) and UCX_NET_DEVICES
 * explicitly in deployments (the default hangs across network namespaces).
 *
 * Completion: an operation (lkv_ucx_op_t) covers a list of puts or gets on
 * one endpoint. A put list completes when the endpoint flush after it
 * completes (the data is in remote memory); a get list when every get has
 * landed. Every operation has a deadline (config op_timeout_ms): an
 * operation still in flight at its deadline fails with LKV_ERR_TIMEOUT and
 * its endpoint is marked failed and closed, so a caller never waits longer
 * than the timeout for a peer that died or became unreachable. Operations on
 * a failed endpoint fail at once with LKV_ERR_PEER_LOST.
 *
 * Threading: one lkv_ucx_t and everything created from it are used by one
 * thread at a time (the worker is created UCS_THREAD_MODE_SINGLE).
 * Hot path: ops come from a preallocated free list (no malloc per op).
 */
#ifndef LKV_TRANSPORT_UCX_H
#define LKV_TRANSPORT_UCX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int max_ops;       /* operations in flight at once (default 1024) */
    int op_timeout_ms; /* deadline of one operation (default 5000); env
                          LKV_UCX_TIMEOUT_MS overrides the default */
    bool wakeup;       /* request UCP_FEATURE_WAKEUP (kvnode: sleep on an
                          event fd while idle); default false */
} lkv_ucx_config_t;

lkv_ucx_config_t lkv_ucx_config_default(void);

typedef struct lkv_ucx    lkv_ucx_t;
typedef struct lkv_ucx_mr lkv_ucx_mr_t; /* registered memory region */
typedef struct lkv_ucx_ep lkv_ucx_ep_t; /* endpoint to a remote region */
typedef struct lkv_ucx_op lkv_ucx_op_t; /* one put/get list in flight */

/* Create the UCP context (RMA + AM) and one worker. Errors: LKV_ERR_INVALID
 * (config), LKV_ERR_NOMEM, LKV_ERR_IO (UCX could not start: the log names
 * UCX's reason; check UCX_TLS / UCX_NET_DEVICES). */
lkv_status_t lkv_ucx_create(const lkv_ucx_config_t *cfg, lkv_ucx_t **u_p);
/* Destroy endpoints' UCX state must be gone first (lkv_ucx_ep_destroy);
 * regions are deregistered by lkv_ucx_mr_destroy. NULL-safe, sets NULL. */
void lkv_ucx_destroy(lkv_ucx_t **u_p);

/* This worker's address (owned by u, valid until destroy). */
lkv_status_t lkv_ucx_address(lkv_ucx_t *u, const void **addr_p,
                             size_t *len_p);

/* Drive communication; returns the number of events progressed (>= 0). */
int lkv_ucx_progress(lkv_ucx_t *u);
/* The worker's event fd for poll() after lkv_ucx_arm (needs cfg.wakeup);
 * -1 when unavailable. */
int lkv_ucx_event_fd(lkv_ucx_t *u);
/* Arm the event fd. LKV_OK: armed, sleep on the fd. LKV_ERR_BUSY: events
 * are pending, progress again first. LKV_ERR_UNSUPPORTED without wakeup. */
lkv_status_t lkv_ucx_arm(lkv_ucx_t *u);

/* ---- memory ---- */

/* Register len bytes at base (base NULL: UCX allocates them, page aligned
 * and zeroed by the OS). Errors: LKV_ERR_INVALID (len 0), LKV_ERR_NOMEM,
 * LKV_ERR_IO. The region must be destroyed before u. */
lkv_status_t lkv_ucx_mr_create(lkv_ucx_t *u, void *base, size_t len,
                               lkv_ucx_mr_t **mr_p);
void         lkv_ucx_mr_destroy(lkv_ucx_t *u, lkv_ucx_mr_t **mr_p);
void        *lkv_ucx_mr_base(const lkv_ucx_mr_t *mr);
size_t       lkv_ucx_mr_len(const lkv_ucx_mr_t *mr);
/* The packed rkey (owned by mr) a peer passes to lkv_ucx_ep_create. */
lkv_status_t lkv_ucx_mr_rkey(const lkv_ucx_mr_t *mr, const void **rkey_p,
                             size_t *len_p);

/* ---- endpoints ---- */

/* Connect to the worker at peer_addr and unpack the rkey of its region
 * [remote_base, remote_base + remote_len). `name` labels log lines (copied).
 * Non-blocking: wire-up completes with the first operations. Errors:
 * LKV_ERR_INVALID (empty address/rkey, len 0), LKV_ERR_NOMEM,
 * LKV_ERR_PEER_LOST / LKV_ERR_IO (UCX rejected the address or rkey). */
lkv_status_t lkv_ucx_ep_create(lkv_ucx_t *u, const char *name,
                               const void *peer_addr, size_t addr_len,
                               const void *rkey, size_t rkey_len,
                               uint64_t remote_base, uint64_t remote_len,
                               lkv_ucx_ep_t **ep_p);
/* Close (flushing when healthy, forced when failed; bounded by the op
 * timeout). Operations on it must have completed or been released. */
void lkv_ucx_ep_destroy(lkv_ucx_t *u, lkv_ucx_ep_t **ep_p);
/* LKV_OK, or the error that failed the endpoint (then it stays failed). */
lkv_status_t lkv_ucx_ep_status(const lkv_ucx_ep_t *ep);
const char  *lkv_ucx_ep_name(const lkv_ucx_ep_t *ep);
/* Print the lanes UCX chose (which transport) to stderr. */
void lkv_ucx_ep_print(const lkv_ucx_ep_t *ep);

/* ---- operations ---- */

/* Start n transfers of `bytes` each between local[i] and remote offset
 * roff[i] (bytes from remote_base) of ep: put copies local -> remote, get
 * remote -> local. local memory need not be registered but must stay valid
 * until the op completes or is released. Non-blocking. Errors:
 * LKV_ERR_INVALID (n < 1, an offset range outside the remote region),
 * LKV_ERR_BUSY (max_ops in flight: test/release some and retry),
 * LKV_ERR_PEER_LOST (endpoint failed), LKV_ERR_IO. On error no op exists;
 * transfers already issued before the error are still drained safely. */
lkv_status_t lkv_ucx_put(lkv_ucx_t *u, lkv_ucx_ep_t *ep,
                         void *const *local, const uint64_t *roff, int n,
                         size_t bytes, lkv_ucx_op_t **op_p);
lkv_status_t lkv_ucx_get(lkv_ucx_t *u, lkv_ucx_ep_t *ep,
                         void *const *local, const uint64_t *roff, int n,
                         size_t bytes, lkv_ucx_op_t **op_p);

/* LKV_OK (done), LKV_AGAIN (in flight) or the error: LKV_ERR_PEER_LOST,
 * LKV_ERR_TIMEOUT (deadline passed: the endpoint is failed and closed),
 * LKV_ERR_IO. Progresses the worker. Non-blocking. */
lkv_status_t lkv_ucx_op_test(lkv_ucx_t *u, lkv_ucx_op_t *op);
/* Progress until op is no longer LKV_AGAIN (bounded by its deadline). */
lkv_status_t lkv_ucx_op_wait(lkv_ucx_t *u, lkv_ucx_op_t *op);
/* Release op (done or not: an op still in flight is recycled once UCX
 * reports its requests, the caller's memory must then stay valid until
 * lkv_ucx_op_test would have finished — use it after test/wait only).
 * NULL-safe. */
void lkv_ucx_op_release(lkv_ucx_t *u, lkv_ucx_op_t *op);

/* Number of operations in flight or awaiting release. */
int lkv_ucx_ops_in_use(const lkv_ucx_t *u);

/* Map a ucs_status_t (int) to lkv_status_t. */
lkv_status_t lkv_ucx_status(int ucs_status);

#ifdef __cplusplus
}
#endif

#endif /* LKV_TRANSPORT_UCX_H */
