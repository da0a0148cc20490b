/* kv_mover.h - asynchronous layer copies between KV tiers.
 *
 * A transfer copies the blocks of ONE layer of one sequence (a list of
 * source and destination block indices and a tier pair, exactly what a
 * step-plan move or an lkv_kv_copy_t carries) on the backend's copy queues:
 * DEVICE->HOST on LKV_KERN_QUEUE_D2H (offload), HOST->DEVICE on
 * LKV_KERN_QUEUE_H2D (reload, stage/prefetch). Runs of blocks that are
 * contiguous in both tiers are merged into one copy. Each transfer owns a
 * completion event recorded after its copies, so the compute queue can wait
 * for a prefetched layer (queue_wait(COMPUTE, lkv_kv_mover_event(x))) and the
 * step can poll for finished offloads. Transfers to or from the REMOTE tier go
 * through the pool's lkv_kv_remote_t ops (issue 8); without one they are
 * LKV_ERR_UNSUPPORTED.
 *
 * On the CPU backend the copy-queue threads (kernels/cpu/cpu_queue.c) are the
 * mover's threads, and `--link-gbps` caps them (link emulation: every output
 * that used it must say so).
 *
 * The mover never frees or allocates blocks: the caller (kv_alloc's owner)
 * keeps source blocks pinned until the transfer is reported done, which is
 * what "no copy reads a block that is being freed" relies on.
 *
 * Ownership: the mover borrows the pool (and through it the backend); both
 * must outlive it. Handles (lkv_kv_xfer_t) belong to the mover; a handle is
 * valid from submit until the lkv_kv_mover_poll call that reports it.
 * Threading: every function is thread-safe (one internal mutex, never held
 * while blocking); a handle may be waited on from one thread while another
 * submits or polls, but not after the poll that reported it.
 */
#ifndef LKV_KVSTORE_KV_MOVER_H
#define LKV_KVSTORE_KV_MOVER_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/kernels.h"
#include "kvstore/kv_alloc.h"
#include "kvstore/kv_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int max_inflight; /* transfers in flight at once (default 256) */
    int max_blocks;   /* blocks per transfer (default 65536) */
} lkv_kv_mover_config_t;

lkv_kv_mover_config_t lkv_kv_mover_config_default(void);

typedef struct {
    uint64_t              tag; /* caller's id (a plan move_id), reported back */
    lkv_kv_tier_t         src_tier;
    lkv_kv_tier_t         dst_tier;
    int                   n_blocks;
    const lkv_kv_block_t *src; /* (n_blocks), read during submit only */
    const lkv_kv_block_t *dst; /* (n_blocks), read during submit only */
    /* Optional: the copies start only after this event completes (e.g. one
     * recorded on the COMPUTE queue after layer l wrote its KV). Does not
     * block the caller for local tiers; blocks the caller in submit for the
     * REMOTE tier. NULL = start at once. */
    lkv_kern_event_t     *after;
} lkv_kv_mover_req_t;

typedef struct lkv_kv_mover lkv_kv_mover_t;
typedef struct lkv_kv_xfer  lkv_kv_xfer_t;

/* Create a mover over `pool`'s tiers. Errors: LKV_ERR_INVALID (bad config),
 * LKV_ERR_NOMEM, or the backend's error creating events. */
lkv_status_t lkv_kv_mover_create(lkv_kv_pool_t *pool,
                                 const lkv_kv_mover_config_t *cfg,
                                 lkv_kv_mover_t **m_p);
/* Wait for every transfer in flight (blocking), then free everything.
 * Accepts NULL. */
void lkv_kv_mover_destroy(lkv_kv_mover_t **m_p);

/* Queue the copies of one transfer; returns at once. *x_p (may be NULL when
 * the caller only polls) receives the handle. All-or-nothing: on error
 * nothing is in flight. Errors: LKV_ERR_INVALID (same tier, n_blocks < 1 or
 * > max_blocks, a block index outside its tier's pool, NULL arrays),
 * LKV_ERR_BUSY (max_inflight transfers in flight: poll, then retry),
 * LKV_ERR_UNSUPPORTED (REMOTE tier without remote ops), backend/transport
 * errors. */
lkv_status_t lkv_kv_mover_submit(lkv_kv_mover_t *m,
                                 const lkv_kv_mover_req_t *req,
                                 lkv_kv_xfer_t **x_p);

/* The completion event of a local transfer (NULL for REMOTE transfers);
 * valid while the handle is. */
lkv_kern_event_t *lkv_kv_mover_event(const lkv_kv_xfer_t *x);
uint64_t          lkv_kv_mover_tag(const lkv_kv_xfer_t *x);

/* LKV_OK when x finished, LKV_AGAIN while in flight, or its error. */
lkv_status_t lkv_kv_mover_test(lkv_kv_mover_t *m, lkv_kv_xfer_t *x);
/* Block until x finished; its status. */
lkv_status_t lkv_kv_mover_wait(lkv_kv_mover_t *m, lkv_kv_xfer_t *x);

typedef struct {
    uint64_t      tag;
    lkv_status_t  status; /* LKV_OK or why the copy failed */
    lkv_kv_tier_t src_tier;
    lkv_kv_tier_t dst_tier;
    int           n_blocks;
} lkv_kv_mover_done_t;

/* Report up to max finished transfers (in submit order among the finished
 * ones) into out, release their handles, set *n_p. Never blocks. */
lkv_status_t lkv_kv_mover_poll(lkv_kv_mover_t *m, lkv_kv_mover_done_t *out,
                               int max, int *n_p);
/* Transfers submitted and not yet reported by poll. */
int lkv_kv_mover_inflight(lkv_kv_mover_t *m);

/* Accounting since create, per (src tier, dst tier) pair: [src][dst].
 * busy_ns estimates the time the link spent on the pair's transfers: from
 * max(submit, previous completion of the pair) to the moment completion was
 * observed (test/wait/poll), so it is exact for waited transfers and an upper
 * bound for polled ones. */
typedef struct {
    uint64_t n_xfers[LKV_KV_TIER_COUNT][LKV_KV_TIER_COUNT];
    uint64_t n_copies[LKV_KV_TIER_COUNT][LKV_KV_TIER_COUNT]; /* after merging */
    uint64_t bytes[LKV_KV_TIER_COUNT][LKV_KV_TIER_COUNT];
    uint64_t busy_ns[LKV_KV_TIER_COUNT][LKV_KV_TIER_COUNT];
    uint64_t n_failed;
} lkv_kv_mover_stats_t;

void lkv_kv_mover_stats(lkv_kv_mover_t *m, lkv_kv_mover_stats_t *stats_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KVSTORE_KV_MOVER_H */
