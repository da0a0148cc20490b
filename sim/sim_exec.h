/* sim_exec.h - the simulated worker of one instance: executes a step plan
 * on the cost model instead of a GPU and returns the step result the real
 * worker would (dummy tokens; timings; completed moves).
 *
 * Timeline of one step (as the worker overlaps it, DESIGN.md section 4):
 *  - STAGE copies (host -> device) are queued on the H2D link at step start
 *    in layer order; layer l starts after layer l-1 and after its stages;
 *  - after layer l is computed, its OFFLOAD copies (and the write-back of
 *    staged blocks written this step) are queued on the D2H link; compute
 *    continues with layer l+1 (with sync_offload compute waits for them);
 *  - RELOAD copies are queued on the H2D link behind the stages and run in
 *    the background; they are reported done in the step during which they
 *    finish (or in a wait step);
 *  - the step ends when compute and every OFFLOAD/STAGE copy of the step are
 *    done. Each link direction is a FIFO queue; copies of one (seq, layer)
 *    take latency + bytes / bandwidth (cost_model.h); the two directions are
 *    independent (full duplex).
 * Threading: one owner thread per executor.
 */
#ifndef LKV_SIM_SIM_EXEC_H
#define LKV_SIM_SIM_EXEC_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"
#include "sim/cost_model.h"

typedef struct lkv_sim_exec lkv_sim_exec_t;

typedef struct {
    const lkv_sim_cost_t *cost; /* borrowed; outlives the executor */
    int                   block_size;
    bool                  sync_offload; /* compute waits for each offload */
} lkv_sim_exec_config_t;

typedef struct {
    uint64_t steps, wait_steps;
    int64_t  compute_ns; /* sum of compute time */
    int64_t  stall_ns;   /* compute waiting for copies (stage, sync) */
    int64_t  bytes_d2h, bytes_h2d;
    int64_t  d2h_busy_ns, h2d_busy_ns;
    int64_t  tail_ns; /* step time beyond compute spent on copies */
} lkv_sim_exec_stats_t;

lkv_status_t lkv_sim_exec_create(const lkv_sim_exec_config_t *cfg,
                                 lkv_sim_exec_t             **e_p);
void         lkv_sim_exec_destroy(lkv_sim_exec_t **e_p);

/* Execute `plan` starting at now_ns. A plan without sequences is a wait
 * step: it ends at the earliest in-flight copy completion, or at
 * wait_until_ns if that is earlier (an arrival), but never before now_ns.
 * Fills *res (arrays owned by the executor, valid until the next call) and
 * *end_ns. Errors: LKV_ERR_INVALID (malformed plan: a move with a bad layer
 * or block count; logged), LKV_ERR_NOMEM. */
lkv_status_t lkv_sim_exec_step(lkv_sim_exec_t *e, const lkv_step_plan_t *plan,
                               int64_t now_ns, int64_t wait_until_ns,
                               lkv_step_result_t *res, int64_t *end_ns);

/* Background copies still in flight. */
int  lkv_sim_exec_pending(const lkv_sim_exec_t *e);
void lkv_sim_exec_stats(const lkv_sim_exec_t *e, lkv_sim_exec_stats_t *out);

#endif /* LKV_SIM_SIM_EXEC_H */
