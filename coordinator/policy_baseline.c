/* policy_baseline.c - vLLM V0 admission: FCFS, a request is admitted only
 * when device blocks for ALL layers of its whole prompt fit and at least the
 * watermark stays free (BlockSpaceManager.can_allocate); it never offloads.
 * Preemption by recompute is shared code (sched_plan.c). Threading: one
 * owner thread.
 */
#include "coordinator/sched_impl.h"

static void baseline_begin(lkv_sched_t *s, sched_step_t *st)
{
    (void)s;
    (void)st; /* no TPOT model: t_allow stays +inf */
}

static lkv_status_t baseline_admit(lkv_sched_t *s, sched_step_t *st,
                                   sched_req_t *q, int c, int *n_off_p,
                                   bool *anti_p)
{
    int64_t need = (int64_t)s->cfg.n_layers * sched_blocks_for(s, q->n_total) +
                   sched_prefill_reserve(s);

    (void)st;
    (void)c; /* with chunking vLLM still checks the whole prompt */
    *n_off_p = 0;
    *anti_p  = false;
    /* the watermark protects running requests; with none, use it all */
    if ((int64_t)sched_device_free(s) - need <
        (s->running.n > 0 ? s->watermark_blocks : 0)) {
        return LKV_AGAIN;
    }
    return LKV_OK;
}

const sched_policy_ops_t lkv_sched_policy_baseline = {
    .name            = "baseline",
    .begin_admission = baseline_begin,
    .admit           = baseline_admit,
    .partial         = NULL,
};
