/* step_exec.h - the worker's step executor: applies one lkv_step_plan_t
 * (common/step_plan.h) to the physical KV pools and runs the forward pass.
 *
 * The executor owns the physical pools (kvstore/kv_pool.h: a device pool of
 * n_device_blocks layer-blocks in backend memory, a host pool of
 * n_host_blocks in host_alloc memory), a kvstore/kv_mover.h copy engine over
 * them, the worker-side per-layer block tables (worker/seq_table.h) and a
 * forward pass (worker/forward.h). Per step it:
 *   1. applies `appends`; starts RELOAD copies (host -> device, background,
 *      they may complete in a later step; a sequence in the batch whose layer
 *      is still reloading waits for it before that layer) and STAGE copies
 *      (host -> device staging blocks, waited for before their layer);
 *   2. runs the forward pass; right after layer l's K/V are written it starts
 *      the OFFLOAD copies of layer l (device -> host) and writes the staged
 *      blocks that received new tokens back to their home tier, overlapping
 *      the rest of the pass;
 *   3. samples the sequences that ask for it;
 *   4. waits for the step's offload and stage copies (a step ends when its
 *      copies are done), polls reloads and reports every move that
 *      completed.
 * `finished` sequences are dropped at the start of the step (a reload still
 * in flight for one completes into blocks the scheduler keeps reserved until
 * it is reported).
 * The executor never frees KV blocks: the scheduler does, after a move is
 * reported done. Moves are layer-granular; copies of consecutive blocks are
 * coalesced.
 *
 * Plan contract (what the scheduler must do with kvstore/kv_alloc):
 *  - a STAGE move covers every block of the layer after this plan's appends
 *    (append the new token's block in the home tier first, then
 *    stage_begin); a stage is reported done in the step that carries it,
 *    after the write-back of the blocks that got new tokens;
 *  - OFFLOAD moves are reported in the step that carries them; RELOADs in
 *    that or a later step (a run with no sequences collects them);
 *  - a layer has at most one move in flight and gets no appends while it
 *    moves (kv_alloc's MOVING state);
 *  - the REMOTE tier exists when cfg.remote is set (issue 8): it plays the
 *    host's role for offloads, reloads, stages and appends; without it,
 *    moves to or from REMOTE are reported failed. A stage or reload that
 *    fails (e.g. its kvnode died) fails only its own sequence in that step
 *    (res->seqs[i].status), not the whole batch.
 *
 * Threading: one step thread; copies run on the backend's copy queues.
 */
#ifndef LKV_WORKER_STEP_EXEC_H
#define LKV_WORKER_STEP_EXEC_H

#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"
#include "kvstore/kv_pool.h"
#include "worker/forward.h"
#include "worker/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int         block_size;           /* tokens per layer-block */
    int32_t     n_device_blocks;      /* device pool capacity (>= 1) */
    int32_t     n_host_blocks;        /* host pool capacity (>= 0) */
    int         max_seqs;             /* live sequences, and per step */
    int         max_batch_tokens;     /* tokens per step */
    int         max_blocks_per_layer; /* per (seq, layer) table */
    lkv_dtype_t kv_dtype;
    /* optional REMOTE tier (kvstore/kv_remote_ucx.h; borrowed, must outlive
     * the executor): offloads may go device -> remote and reloads/stages
     * come back remote -> device. NULL = no remote tier. */
    const lkv_kv_remote_t *remote;
} lkv_step_exec_config_t;

/* block_size 16, 256 device blocks, 256 host blocks, 16 seqs, 512 tokens,
 * 64 blocks per layer, f32 */
lkv_step_exec_config_t lkv_step_exec_config_default(void);

typedef struct lkv_step_exec lkv_step_exec_t;

/* Errors: LKV_ERR_INVALID (config), LKV_ERR_NOMEM / LKV_ERR_DEVICE (pools).
 * The model is borrowed and must outlive x. */
lkv_status_t lkv_step_exec_create(const lkv_model_t *m,
                                  const lkv_step_exec_config_t *cfg,
                                  lkv_step_exec_t **x_p);
/* Waits for every copy in flight, then frees everything. */
void         lkv_step_exec_destroy(lkv_step_exec_t **x_p);

/* Execute one plan. The state of `finished` sequences is dropped first (a
 * sequence id may be finished and started again in one plan; copies still
 * reading a finished sequence's blocks complete and are reported as usual).
 * res is filled even when a sequence fails (its status in
 * res->seqs[i].status); its arrays belong to x and stay valid until the next
 * call. Returns res->status: LKV_OK, or LKV_ERR_INVALID for a plan that does
 * not match the worker's state (an append to a layer of another tier, block
 * indices outside a pool; nothing of the plan runs then), or the status of a
 * failed forward pass (every sequence of the step fails with it). A move
 * that cannot run (bad blocks, a layer in the wrong tier, the remote tier)
 * is reported in moves_failed and does not fail the step. Blocks for the
 * step's compute and copies. */
lkv_status_t lkv_step_exec_run(lkv_step_exec_t *x, const lkv_step_plan_t *plan,
                               lkv_step_result_t *res);

/* Block until every copy in flight (reloads included) is done; the next
 * run reports them. */
lkv_status_t lkv_step_exec_sync(lkv_step_exec_t *x);

/* Number of moves started and not yet reported. */
int lkv_step_exec_moves_in_flight(const lkv_step_exec_t *x);

/* The forward pass (for logits of the last step, in tests). */
lkv_fwd_t *lkv_step_exec_forward(lkv_step_exec_t *x);

/* Cumulative copy statistics since create. */
typedef struct {
    int64_t bytes_d2h, bytes_h2d;
    int64_t n_offloads, n_reloads, n_stages;
    int64_t steps;
    int64_t compute_ns, step_ns;
    /* time the copy links were busy (kv_mover accounting; an upper bound
     * for transfers observed by polling) */
    int64_t d2h_busy_ns, h2d_busy_ns;
} lkv_step_exec_stats_t;

void lkv_step_exec_stats(const lkv_step_exec_t *x,
                         lkv_step_exec_stats_t *stats_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_STEP_EXEC_H */
