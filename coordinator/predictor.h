/* predictor.h - output-length predictor for the SLO-aware scheduler (m̂_r of
 * Eq. 1): a high quantile of the output lengths of recently finished
 * requests, per prompt-length bucket (powers of two), conditioned on the
 * tokens a request has already produced, clipped by what it may still emit.
 *
 * Each bucket's window (and the union of all windows) is kept sorted as
 * samples arrive, so observe is O(window) and a prediction is a binary
 * search: cheap enough to query per request per step.
 *
 * Threading: not thread-safe; owned by one scheduler. No allocation after
 * create.
 */
#ifndef LKV_COORDINATOR_PREDICTOR_H
#define LKV_COORDINATOR_PREDICTOR_H

#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_PRED_BUCKETS 32 /* bucket b holds prompts of [2^b, 2^(b+1)) */

typedef struct {
    float quantile; /* in (0, 1]; 0.9 = p90 (conservative protects TPOT) */
    int   window;   /* finished requests remembered per bucket (>= 1) */
    int   prior;    /* remaining tokens guessed when there is no history */
    int   min_samples; /* below this a bucket borrows from all buckets */
} lkv_pred_config_t;

lkv_pred_config_t lkv_pred_config_default(void); /* 0.9, 64, 128, 4 */

typedef struct lkv_pred lkv_pred_t;

/* LKV_ERR_INVALID (bad field), LKV_ERR_NOMEM. */
lkv_status_t lkv_pred_create(const lkv_pred_config_t *cfg, lkv_pred_t **p_p);
void         lkv_pred_destroy(lkv_pred_t **p_p);

/* Record a finished request: prompt length and total output tokens. Values
 * < 1 are ignored. */
void lkv_pred_observe(lkv_pred_t *p, int32_t n_prompt, int32_t n_output);

/* Predicted tokens still to come for a request with n_prompt prompt tokens
 * that has produced n_generated tokens and may produce at most max_remaining
 * more: the quantile of remembered outputs longer than n_generated, minus
 * n_generated; the prior when none; always in [min(1, max_remaining),
 * max_remaining]. O(log window); does not modify p. */
int32_t lkv_pred_remaining(const lkv_pred_t *p, int32_t n_prompt,
                           int32_t n_generated, int32_t max_remaining);

/* Samples remembered in total (tests, metrics). */
int lkv_pred_count(const lkv_pred_t *p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_PREDICTOR_H */
