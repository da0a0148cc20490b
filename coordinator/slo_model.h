/* slo_model.h - the time models behind the SLO-aware scheduler
 * (docs/scheduling.md):
 *
 *  Eq. 3  prefill time  T_pf = alpha * f(x),  f(x) = c0 + c1*x1 + c2*x2
 *         x1 = sum of prefill tokens in the step, x2 = sum over prefill
 *         chunks of c*(o+c) (chunk c at offset o: attention pairs), so f is
 *         quadratic in tokens. f is refitted by least squares from measured
 *         steps (a window of recent samples); alpha is a running ratio of
 *         measured / f, the online correction of the paper's empirical
 *         factor.
 *  t_d    decode step time = ratio * (d0 + d1*n_seqs + d2*ctx_tokens), with
 *         ratio a running measured/predicted correction.
 *  Eq. 1  TPOT slack of a running request:
 *         D_r = S_tpot*(g_r + m_r) - tau_r - m_r*t_d
 *         (g_r: tokens after the first, tau_r: time since the first token).
 *
 * Pure arithmetic on caller-supplied numbers; no clock. Threading: not
 * thread-safe; one owner. No allocation after create.
 */
#ifndef LKV_COORDINATOR_SLO_MODEL_H
#define LKV_COORDINATOR_SLO_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double pf[3];    /* prior c0 (ns), c1 (ns/token), c2 (ns/pair) */
    double alpha;    /* initial alpha (> 0) */
    double dc[3];    /* decode d0 (ns), d1 (ns/seq), d2 (ns/ctx token) */
    bool   adapt;    /* refit f, update alpha and the decode ratio */
    int    window;   /* prefill samples kept for the fit (>= 8) */
    double ewma;     /* weight of a new sample in alpha / ratio (0.2) */
} lkv_slo_model_config_t;

lkv_slo_model_config_t lkv_slo_model_config_default(void);

typedef struct lkv_slo_model lkv_slo_model_t;

lkv_status_t lkv_slo_model_create(const lkv_slo_model_config_t *cfg,
                                  lkv_slo_model_t **m_p);
void         lkv_slo_model_destroy(lkv_slo_model_t **m_p);

/* Eq. 3: predicted prefill time (ns) of a step's prefill part; 0 if x1 <= 0. */
double lkv_slo_prefill_ns(const lkv_slo_model_t *m, double x1, double x2);
/* Predicted decode step time (ns); 0 if n_seqs <= 0. */
double lkv_slo_decode_ns(const lkv_slo_model_t *m, int n_seqs,
                         double ctx_tokens);

/* Feed a measured prefill part (ns) with its features. */
void lkv_slo_observe_prefill(lkv_slo_model_t *m, double x1, double x2,
                             double measured_ns);
/* Feed a measured pure-decode step. */
void lkv_slo_observe_decode(lkv_slo_model_t *m, int n_seqs, double ctx_tokens,
                            double measured_ns);

/* Eq. 1. tpot_slo_ns <= 0 means no SLO: returns +inf (INFINITY). */
double lkv_slo_tpot_slack_ns(double tpot_slo_ns, double g, double m_hat,
                             double tau_ns, double t_d_ns);

/* Current state (metrics). */
double lkv_slo_alpha(const lkv_slo_model_t *m);
void   lkv_slo_prefill_coef(const lkv_slo_model_t *m, double out[3]);
double lkv_slo_decode_ratio(const lkv_slo_model_t *m);
int    lkv_slo_fits(const lkv_slo_model_t *m); /* refits done */

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_SLO_MODEL_H */
