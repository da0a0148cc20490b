/* router.c - lowest-predicted-TTFT instance choice (see router.h). */
#include "coordinator/router.h"

#include <stdint.h>

int64_t lkv_router_predict_ttft_ns(lkv_inst_t *in, int32_t n_prompt)
{
    lkv_sched_stats_t st;
    double            alpha, pf, dc, pressure, t;

    if (in == NULL || !lkv_inst_up(in)) {
        return INT64_MAX;
    }
    lkv_sched_stats(lkv_inst_sched(in), &st);
    alpha = st.alpha > 0 ? st.alpha : 1.0;
    /* prefill of everything queued ahead plus this prompt (Eq. 3, linear
     * and quadratic terms of the fitted model) */
    const lkv_sched_config_t *c = lkv_inst_sched_config(in);
    double pc[3] = {st.pf_coef[0], st.pf_coef[1], st.pf_coef[2]};
    if (pc[0] == 0 && pc[1] == 0 && pc[2] == 0) { /* not fitted yet: prior */
        pc[0] = c->pf_c0_ns;
        pc[1] = c->pf_c1_ns;
        pc[2] = c->pf_c2_ns;
    }
    double tokens = (double)lkv_inst_queued_tokens(in) + (double)n_prompt;
    pf = alpha * (pc[0] * (1.0 + st.n_waiting) + pc[1] * tokens +
                  pc[2] * (double)n_prompt * (double)n_prompt);
    /* decode steps interleaved with those prefills */
    dc = (c->dc_c0_ns + c->dc_c1_ns * st.n_running) *
         (st.dc_ratio > 0 ? st.dc_ratio : 1.0) * (1.0 + st.n_waiting);
    /* KV pressure: a nearly full device pool delays admission */
    int32_t tot = st.blocks_total[LKV_KV_TIER_DEVICE];
    pressure    = tot > 0 ? (double)st.blocks_used[LKV_KV_TIER_DEVICE] / tot
                          : 1.0;
    t = (pf + dc) * (1.0 + 2.0 * pressure * pressure);
    if (t < 0) {
        t = 0;
    }
    if (t > 9e18) {
        return INT64_MAX - 1;
    }
    return (int64_t)t;
}

int lkv_router_pick(lkv_inst_t *const *insts, int n_insts, int32_t n_prompt)
{
    int     best   = -1;
    int64_t best_t = INT64_MAX;

    for (int i = 0; i < n_insts; i++) {
        int64_t t = lkv_router_predict_ttft_ns(insts[i], n_prompt);
        if (t < best_t) {
            best   = i;
            best_t = t;
        }
    }
    return best;
}
