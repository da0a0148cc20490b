/* slo_model.c - prefill/decode time models and TPOT slack; see slo_model.h. */
#include "coordinator/slo_model.h"

#include <math.h>
#include <stdlib.h>

#define LKV_LOG_MODULE "slo"
#include "common/log.h"

#define REFIT_EVERY 8

typedef struct {
    double x1, x2, y;
} sample_t;

struct lkv_slo_model {
    lkv_slo_model_config_t cfg;
    double                 c[3];  /* current f */
    double                 alpha;
    double                 ratio; /* decode correction */
    sample_t              *ring;  /* (window) */
    int                    n, next, since_fit, fits;
};

lkv_slo_model_config_t lkv_slo_model_config_default(void)
{
    /* A 7B model on an A100-class GPU: ~0.1 ms/token linear, small
     * attention term, 20 ms decode floor. Only a prior: it is refitted. */
    lkv_slo_model_config_t c = {
        .pf     = {5e6, 1.0e5, 2.0},
        .alpha  = 1.0,
        .dc     = {2.0e7, 1.0e5, 10.0},
        .adapt  = true,
        .window = 64,
        .ewma   = 0.2,
    };
    return c;
}

static bool finite_nonneg(double x)
{
    return isfinite(x) && x >= 0.0;
}

lkv_status_t lkv_slo_model_create(const lkv_slo_model_config_t *cfg,
                                  lkv_slo_model_t **m_p)
{
    lkv_slo_model_t *m;

    if (cfg == NULL || m_p == NULL) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < 3; i++) {
        if (!finite_nonneg(cfg->pf[i]) || !finite_nonneg(cfg->dc[i])) {
            LKV_LOG_ERROR("time model coefficients must be finite and >= 0");
            return LKV_ERR_INVALID;
        }
    }
    if (!(cfg->alpha > 0.0) || !isfinite(cfg->alpha) || cfg->window < 8 ||
        cfg->window > 1 << 16 || !(cfg->ewma > 0.0) || cfg->ewma > 1.0) {
        LKV_LOG_ERROR("time model: alpha must be > 0, window in [8,65536], "
                      "ewma in (0,1]");
        return LKV_ERR_INVALID;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return LKV_ERR_NOMEM;
    }
    m->ring = calloc((size_t)cfg->window, sizeof(*m->ring));
    if (m->ring == NULL) {
        free(m);
        return LKV_ERR_NOMEM;
    }
    m->cfg   = *cfg;
    m->c[0]  = cfg->pf[0];
    m->c[1]  = cfg->pf[1];
    m->c[2]  = cfg->pf[2];
    m->alpha = cfg->alpha;
    m->ratio = 1.0;
    *m_p     = m;
    return LKV_OK;
}

void lkv_slo_model_destroy(lkv_slo_model_t **m_p)
{
    if (m_p == NULL || *m_p == NULL) {
        return;
    }
    free((*m_p)->ring);
    free(*m_p);
    *m_p = NULL;
}

static double f_raw(const lkv_slo_model_t *m, double x1, double x2)
{
    return m->c[0] + m->c[1] * x1 + m->c[2] * x2;
}

double lkv_slo_prefill_ns(const lkv_slo_model_t *m, double x1, double x2)
{
    if (x1 <= 0.0) {
        return 0.0;
    }
    return m->alpha * f_raw(m, x1, x2);
}

double lkv_slo_decode_ns(const lkv_slo_model_t *m, int n_seqs,
                         double ctx_tokens)
{
    if (n_seqs <= 0) {
        return 0.0;
    }
    return m->ratio * (m->cfg.dc[0] + m->cfg.dc[1] * n_seqs +
                       m->cfg.dc[2] * ctx_tokens);
}

/* Solve the 3x3 system a x = b (Gaussian elimination, partial pivoting).
 * Returns false when (near) singular. */
static bool solve3(double a[3][3], double b[3], double x[3])
{
    for (int col = 0; col < 3; col++) {
        int    piv = col;
        double best = fabs(a[col][col]);

        for (int r = col + 1; r < 3; r++) {
            if (fabs(a[r][col]) > best) {
                best = fabs(a[r][col]);
                piv  = r;
            }
        }
        if (best < 1e-9) {
            return false;
        }
        if (piv != col) {
            for (int k = 0; k < 3; k++) {
                double t   = a[col][k];
                a[col][k]  = a[piv][k];
                a[piv][k]  = t;
            }
            double t = b[col];
            b[col]   = b[piv];
            b[piv]   = t;
        }
        for (int r = col + 1; r < 3; r++) {
            double f = a[r][col] / a[col][col];

            for (int k = col; k < 3; k++) {
                a[r][k] -= f * a[col][k];
            }
            b[r] -= f * b[col];
        }
    }
    for (int r = 2; r >= 0; r--) {
        double s = b[r];

        for (int k = r + 1; k < 3; k++) {
            s -= a[r][k] * x[k];
        }
        x[r] = s / a[r][r];
    }
    return true;
}

/* Least squares on the window with features scaled to ~1. Keeps the old
 * coefficients when the samples do not determine all three (e.g. every
 * prompt the same length) or when a coefficient comes out negative;
 * alpha then carries the correction alone. */
static void refit(lkv_slo_model_t *m)
{
    double s1 = 1e-30, s2 = 1e-30, a[3][3] = {{0}}, b[3] = {0}, x[3];

    for (int i = 0; i < m->n; i++) {
        s1 = fmax(s1, m->ring[i].x1);
        s2 = fmax(s2, m->ring[i].x2);
    }
    for (int i = 0; i < m->n; i++) {
        double f[3] = {1.0, m->ring[i].x1 / s1, m->ring[i].x2 / s2};

        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 3; k++) {
                a[r][k] += f[r] * f[k];
            }
            b[r] += f[r] * m->ring[i].y;
        }
    }
    /* relative singularity test: normalise by the sample count */
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) {
            a[r][k] /= m->n;
        }
        b[r] /= m->n;
    }
    if (!solve3(a, b, x)) {
        return;
    }
    x[1] /= s1;
    x[2] /= s2;
    if (!(x[0] >= 0.0) || !(x[1] >= 0.0) || !(x[2] >= 0.0) ||
        !isfinite(x[0] + x[1] + x[2])) {
        return;
    }
    m->c[0]  = x[0];
    m->c[1]  = x[1];
    m->c[2]  = x[2];
    m->alpha = 1.0; /* measured against the new f from here on */
    m->fits++;
}

void lkv_slo_observe_prefill(lkv_slo_model_t *m, double x1, double x2,
                             double measured_ns)
{
    double pred;

    if (!m->cfg.adapt || !(x1 > 0.0) || !finite_nonneg(x2) ||
        !finite_nonneg(measured_ns) || !isfinite(x1)) {
        return;
    }
    m->ring[m->next] = (sample_t){x1, x2, measured_ns};
    m->next          = (m->next + 1) % m->cfg.window;
    if (m->n < m->cfg.window) {
        m->n++;
    }
    pred = f_raw(m, x1, x2);
    if (pred > 0.0) {
        double r = measured_ns / pred;

        r        = fmin(fmax(r, 0.05), 20.0);
        m->alpha = (1.0 - m->cfg.ewma) * m->alpha + m->cfg.ewma * r;
    }
    if (++m->since_fit >= REFIT_EVERY && m->n >= 8) {
        m->since_fit = 0;
        refit(m);
    }
}

void lkv_slo_observe_decode(lkv_slo_model_t *m, int n_seqs, double ctx_tokens,
                            double measured_ns)
{
    double pred;

    if (!m->cfg.adapt || n_seqs <= 0 || !finite_nonneg(measured_ns) ||
        !finite_nonneg(ctx_tokens)) {
        return;
    }
    pred = m->cfg.dc[0] + m->cfg.dc[1] * n_seqs + m->cfg.dc[2] * ctx_tokens;
    if (pred > 0.0) {
        double r = fmin(fmax(measured_ns / pred, 0.01), 100.0);

        m->ratio = (1.0 - m->cfg.ewma) * m->ratio + m->cfg.ewma * r;
    }
}

double lkv_slo_tpot_slack_ns(double tpot_slo_ns, double g, double m_hat,
                             double tau_ns, double t_d_ns)
{
    if (!(tpot_slo_ns > 0.0)) {
        return INFINITY;
    }
    return tpot_slo_ns * (g + m_hat) - tau_ns - m_hat * t_d_ns;
}

double lkv_slo_alpha(const lkv_slo_model_t *m)
{
    return m->alpha;
}

void lkv_slo_prefill_coef(const lkv_slo_model_t *m, double out[3])
{
    out[0] = m->c[0];
    out[1] = m->c[1];
    out[2] = m->c[2];
}

double lkv_slo_decode_ratio(const lkv_slo_model_t *m)
{
    return m->ratio;
}

int lkv_slo_fits(const lkv_slo_model_t *m)
{
    return m->fits;
}
