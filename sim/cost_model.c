/* cost_model.c - see cost_model.h. Tables are loaded once; queries are pure
 * arithmetic with binary searches (no allocation). */
#define LKV_LOG_MODULE "sim"
#include "sim/cost_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "sim/csv_table.h"

/* ---- model and GPU catalogue ---- */

static const lkv_sim_model_t models[] = {
    {"llama2-7b", "meta-llama/Llama-2-7b-hf", 32, 4096, 32, 32, 128, 11008,
     32000, 6.74e9, 4096},
    {"llama2-70b", "meta-llama/Llama-2-70b-hf", 80, 8192, 64, 8, 128, 28672,
     32000, 68.98e9, 4096},
    {"llama3-8b", "meta-llama/Meta-Llama-3-8B", 32, 4096, 32, 8, 128, 14336,
     128256, 8.03e9, 8192},
    {"llama3-70b", "meta-llama/Meta-Llama-3-70B", 80, 8192, 64, 8, 128, 28672,
     128256, 70.55e9, 8192},
    {"codellama-34b", "codellama/CodeLlama-34b-Instruct-hf", 48, 8192, 64, 8,
     128, 22016, 32000, 33.74e9, 16384},
    {"qwen-72b", "Qwen/Qwen-72B", 80, 8192, 64, 64, 128, 24576, 152064, 72.29e9,
     32768},
};

const lkv_sim_model_t *lkv_sim_model_find(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof(models) / sizeof(models[0]);
         i++) {
        if (strcmp(models[i].name, name) == 0 ||
            strcmp(models[i].hf_name, name) == 0) {
            return &models[i];
        }
    }
    return NULL;
}

const char *lkv_sim_model_names(void)
{
    return "llama2-7b, llama2-70b, llama3-8b, llama3-70b, codellama-34b, "
           "qwen-72b";
}

typedef struct {
    const char *name;
    double      bw_scale;   /* attention HBM bandwidth relative to A100 */
    double      flop_scale; /* attention (FlashAttention) flops vs A100 */
} gpu_t;

/* H100 SXM vs A100 SXM 80GB: HBM 3.35 / 2.04 TB/s; FlashAttention-2 reaches
 * ~1.8x the A100 rate on H100 (FA2 paper; an assumption, no profile here). */
static const gpu_t gpus[] = {
    {"a100", 1.0, 1.0},
    {"h100", 3.35 / 2.039, 1.8},
};

/* ---- piecewise-linear 1-D tables ---- */

typedef struct {
    int     n;
    double *x; /* ascending */
    double *y;
} pwl_t;

static void pwl_free(pwl_t *p)
{
    free(p->x);
    free(p->y);
    p->x = p->y = NULL;
    p->n        = 0;
}

static int cmp_pair(const void *a, const void *b)
{
    const double *pa = a, *pb = b;
    return (pa[0] > pb[0]) - (pa[0] < pb[0]);
}

/* Build from (x, y) pairs (pairs: 2n doubles; sorted here, duplicates of x
 * keep the first). */
static lkv_status_t pwl_build(pwl_t *p, double *pairs, int n)
{
    qsort(pairs, (size_t)n, 2 * sizeof(double), cmp_pair);
    p->x = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    p->y = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (p->x == NULL || p->y == NULL) {
        pwl_free(p);
        return LKV_ERR_NOMEM;
    }
    p->n = 0;
    for (int i = 0; i < n; i++) {
        if (p->n > 0 && pairs[2 * i] == p->x[p->n - 1]) {
            continue;
        }
        p->x[p->n] = pairs[2 * i];
        p->y[p->n] = pairs[2 * i + 1];
        p->n++;
    }
    return LKV_OK;
}

/* Interpolate; below the grid clamp to the first value, above it extrapolate
 * linearly with the slope between the last point and the one at half its x
 * (the compute-bound regime, where cost is linear in the size). */
static double pwl_eval(const pwl_t *p, double x)
{
    if (p->n == 0) {
        return 0.0;
    }
    if (x <= p->x[0]) {
        return p->y[0];
    }
    int last = p->n - 1;
    if (x >= p->x[last]) {
        if (last == 0) {
            return p->y[0];
        }
        int    lo = 0, hi = last;
        double half = p->x[last] / 2;
        while (lo < hi) { /* first index with x >= half */
            int mid = (lo + hi) / 2;
            if (p->x[mid] < half) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo >= last) {
            lo = last - 1;
        }
        double slope = (p->y[last] - p->y[lo]) / (p->x[last] - p->x[lo]);
        if (slope < 0) {
            slope = 0;
        }
        return p->y[last] + slope * (x - p->x[last]);
    }
    int lo = 0, hi = last;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (p->x[mid] <= x) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    double f = (x - p->x[lo]) / (p->x[hi] - p->x[lo]);
    return p->y[lo] + f * (p->y[hi] - p->y[lo]);
}

/* ---- the model ---- */

#define DEC_MAX_BATCH 128
#define DEC_MAX_KV 256

struct lkv_sim_cost {
    lkv_sim_cost_config_t  cfg;
    const lkv_sim_model_t *model;
    const gpu_t           *gpu;
    char                   data_dir[512];
    int                    hq_local, hkv_local;
    int64_t                block_bytes;
    int32_t                device_blocks;
    double                 kv_bytes, weights_bytes, act_bytes;
    pwl_t                  token_ops;  /* T -> ms */
    pwl_t                  all_reduce; /* bytes -> ms */
    pwl_t                  send_recv;  /* bytes -> ms */
    pwl_t                  cpu;        /* batch -> ms */
    /* attention table (A100, 32q/4kv/128 per GPU) */
    bool    attn_table; /* shape matches and file loaded */
    int     dec_n_kv;
    double  dec_kv[DEC_MAX_KV];
    double *dec_ms; /* (DEC_MAX_BATCH * dec_n_kv), NAN = hole */
    pwl_t   pf_kv0; /* chunk -> ms, kv = 0 */
    /* fitted roofline, A100 units, profiled shape */
    double dec_t0_ms, dec_bw;  /* bytes/ms */
    double pf_t0_ms, pf_flops; /* flops/ms */
    char   describe[1024];
};

lkv_sim_cost_config_t lkv_sim_cost_config_default(void)
{
    lkv_sim_cost_config_t c = {
        .data_dir         = "data/vidur",
        .model            = "llama2-7b",
        .gpu              = "a100",
        .net_node         = NULL,
        .tp               = 1,
        .pp               = 1,
        .block_size       = 16,
        .mem_gib          = 80.0,
        .mem_util         = 0.9,
        .act_reserve_gib  = -1.0,
        .max_batch_tokens = 8192,
        .link_gbps        = 25.0,
        .link_latency_us  = 10.0,
        .cpu_overheads    = false,
        .attn_scale       = 1.0,
    };
    return c;
}

static lkv_status_t load(const lkv_sim_cost_t *c, const char *rel,
                         lkv_csv_table_t **t_p)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", c->data_dir, rel);
    return lkv_csv_load(path, t_p);
}

static lkv_status_t load_token_ops(lkv_sim_cost_t *c)
{
    char             rel[256];
    lkv_csv_table_t *t = NULL;
    snprintf(rel, sizeof(rel), "profiles/%s/%s.mlp.csv", c->gpu->name,
             c->model->name);
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", c->data_dir, rel);
    if (access(path, R_OK) != 0 && access(c->data_dir, R_OK) == 0) {
        LKV_LOG_ERROR("no %s profile of %s in %s (Vidur has no H100 data for "
                      "the Llama-3 models): pick another --gpu or --model",
                      c->gpu->name, c->model->name, c->data_dir);
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(load(c, rel, &t));
    int ctp = lkv_csv_col(t, "tp"), cn = lkv_csv_col(t, "num_tokens"),
        cms            = lkv_csv_col(t, "ms");
    int64_t      rows  = lkv_csv_rows(t);
    double      *pairs = malloc((size_t)(rows + 1) * 2 * sizeof(double));
    int          n     = 0;
    lkv_status_t st    = LKV_OK;
    if (pairs == NULL || ctp < 0 || cn < 0 || cms < 0) {
        st = pairs == NULL ? LKV_ERR_NOMEM : LKV_ERR_FORMAT;
        goto out;
    }
    for (int64_t r = 0; r < rows; r++) {
        if ((int)lkv_csv_num(t, r, ctp) == c->cfg.tp) {
            pairs[2 * n]     = lkv_csv_num(t, r, cn);
            pairs[2 * n + 1] = lkv_csv_num(t, r, cms);
            n++;
        }
    }
    if (n < 2) {
        LKV_LOG_ERROR("no %s profile for %s at tp %d (profiled: 1, 2, 4, 8)",
                      c->gpu->name, c->model->name, c->cfg.tp);
        st = LKV_ERR_INVALID;
        goto out;
    }
    st = pwl_build(&c->token_ops, pairs, n);
out:
    free(pairs);
    lkv_csv_destroy(&t);
    return st;
}

static lkv_status_t load_network(lkv_sim_cost_t *c, const char *node,
                                 const char *coll, int workers, int per_node,
                                 pwl_t *out)
{
    char             rel[256];
    lkv_csv_table_t *t = NULL;
    snprintf(rel, sizeof(rel), "profiles/network/%s/%s.csv", node, coll);
    LKV_CHECK(load(c, rel, &t));
    int cw = lkv_csv_col(t, "num_workers"),
        cd = lkv_csv_col(t, "devices_per_node"), cb = lkv_csv_col(t, "bytes"),
        cms            = lkv_csv_col(t, "ms");
    int64_t      rows  = lkv_csv_rows(t);
    double      *pairs = malloc((size_t)(rows + 1) * 2 * sizeof(double));
    int          n     = 0;
    lkv_status_t st    = LKV_OK;
    if (pairs == NULL || cw < 0 || cd < 0 || cb < 0 || cms < 0) {
        st = pairs == NULL ? LKV_ERR_NOMEM : LKV_ERR_FORMAT;
        goto out;
    }
    for (int64_t r = 0; r < rows; r++) {
        if ((int)lkv_csv_num(t, r, cw) == workers &&
            (int)lkv_csv_num(t, r, cd) == per_node) {
            pairs[2 * n]     = lkv_csv_num(t, r, cb);
            pairs[2 * n + 1] = lkv_csv_num(t, r, cms);
            n++;
        }
    }
    if (n < 2) {
        LKV_LOG_ERROR("no %s profile for %d workers (%d per node) on %s; pick "
                      "another --tp or --network-node",
                      coll, workers, per_node, node);
        st = LKV_ERR_INVALID;
        goto out;
    }
    st = pwl_build(out, pairs, n);
out:
    free(pairs);
    lkv_csv_destroy(&t);
    return st;
}

static lkv_status_t load_cpu(lkv_sim_cost_t *c)
{
    lkv_csv_table_t *t = NULL;
    LKV_CHECK(load(c, "profiles/a100/cpu_overheads.csv", &t));
    int cm = lkv_csv_col(t, "model"), ctp = lkv_csv_col(t, "tp"),
        cb = lkv_csv_col(t, "batch"), cms = lkv_csv_col(t, "ms");
    int64_t      rows  = lkv_csv_rows(t);
    double      *pairs = malloc((size_t)(rows + 1) * 2 * sizeof(double));
    lkv_status_t st    = LKV_OK;
    if (pairs == NULL || cm < 0 || ctp < 0 || cb < 0 || cms < 0) {
        st = pairs == NULL ? LKV_ERR_NOMEM : LKV_ERR_FORMAT;
        goto out;
    }
    /* exact (model, tp), else the model at any tp, else llama2-7b */
    const char *names[3] = {c->model->name, c->model->name, "llama2-7b"};
    for (int pass = 0; pass < 3; pass++) {
        int n = 0;
        for (int64_t r = 0; r < rows; r++) {
            if (strcmp(lkv_csv_str(t, r, cm), names[pass]) == 0 &&
                (pass != 0 || (int)lkv_csv_num(t, r, ctp) == c->cfg.tp)) {
                pairs[2 * n]     = lkv_csv_num(t, r, cb);
                pairs[2 * n + 1] = lkv_csv_num(t, r, cms);
                n++;
            }
        }
        if (n >= 2) {
            if (pass > 0) {
                LKV_LOG_INFO("cpu overheads: no rows for %s tp %d, using %s",
                             c->model->name, c->cfg.tp, names[pass]);
            }
            st = pwl_build(&c->cpu, pairs, n);
            goto out;
        }
    }
    st = LKV_ERR_FORMAT;
out:
    free(pairs);
    lkv_csv_destroy(&t);
    return st;
}

/* Weighted least squares t = a + b*x with weights 1/t^2 (relative error). */
static void fit_line(const double *x, const double *t, int n, double *a_p,
                     double *b_p)
{
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        double w = 1.0 / (t[i] * t[i]);
        sw += w;
        sx += w * x[i];
        sy += w * t[i];
        sxx += w * x[i] * x[i];
        sxy += w * x[i] * t[i];
    }
    double det = sw * sxx - sx * sx;
    double b   = det != 0 ? (sw * sxy - sx * sy) / det : 0;
    double a   = sw != 0 ? (sy - b * sx) / sw : 0;
    if (a < 0) {
        a = 0;
    }
    *a_p = a;
    *b_p = b;
}

#define PROF_HQ 32
#define PROF_HKV 4
#define PROF_D 128

static int kv_index(const lkv_sim_cost_t *c, double kv)
{
    for (int i = 0; i < c->dec_n_kv; i++) {
        if (c->dec_kv[i] == kv) {
            return i;
        }
    }
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static lkv_status_t load_attention(lkv_sim_cost_t *c)
{
    lkv_csv_table_t *t  = NULL;
    lkv_status_t     st = LKV_OK;
    LKV_CHECK(load(c, "profiles/a100/attention_h8192_q64_kv8_tp2.csv", &t));
    int ck = lkv_csv_col(t, "kind"), cb = lkv_csv_col(t, "batch"),
        cc = lkv_csv_col(t, "chunk"), ckv = lkv_csv_col(t, "kv"),
        cms       = lkv_csv_col(t, "ms");
    int64_t rows  = lkv_csv_rows(t);
    double *x     = calloc((size_t)(rows + 1), sizeof(double));
    double *y     = calloc((size_t)(rows + 1), sizeof(double));
    double *pairs = malloc((size_t)(rows + 1) * 2 * sizeof(double));
    if (x == NULL || y == NULL || pairs == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    if (ck < 0 || cb < 0 || cc < 0 || ckv < 0 || cms < 0) {
        st = LKV_ERR_FORMAT;
        goto out;
    }
    /* decode grid: the distinct kv values, then a dense batch x kv array */
    c->dec_n_kv = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (strcmp(lkv_csv_str(t, r, ck), "decode") == 0) {
            double kv = lkv_csv_num(t, r, ckv);
            if (kv_index(c, kv) < 0 && c->dec_n_kv < DEC_MAX_KV) {
                c->dec_kv[c->dec_n_kv++] = kv;
            }
        }
    }
    qsort(c->dec_kv, (size_t)c->dec_n_kv, sizeof(double), cmp_double);
    c->dec_ms =
        malloc((size_t)(DEC_MAX_BATCH * (c->dec_n_kv + 1)) * sizeof(double));
    if (c->dec_ms == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < DEC_MAX_BATCH * c->dec_n_kv; i++) {
        c->dec_ms[i] = NAN;
    }
    int n_dec = 0, n_pf = 0, n_pf0 = 0;
    for (int64_t r = 0; r < rows; r++) {
        double ms = lkv_csv_num(t, r, cms);
        double kv = lkv_csv_num(t, r, ckv);
        if (!(ms > 0)) {
            continue;
        }
        if (strcmp(lkv_csv_str(t, r, ck), "decode") == 0) {
            int b  = (int)lkv_csv_num(t, r, cb);
            int ki = kv_index(c, kv);
            if (b >= 1 && b <= DEC_MAX_BATCH && ki >= 0) {
                c->dec_ms[(b - 1) * c->dec_n_kv + ki] = ms;
            }
            x[n_dec] = (double)b * kv * 2.0 * PROF_HKV * PROF_D * 2.0;
            y[n_dec] = ms;
            n_dec++;
        }
    }
    fit_line(x, y, n_dec, &c->dec_t0_ms, &c->dec_bw);
    c->dec_bw = c->dec_bw > 0 ? 1.0 / c->dec_bw : 1e9;
    for (int64_t r = 0; r < rows; r++) {
        double ms = lkv_csv_num(t, r, cms);
        double kv = lkv_csv_num(t, r, ckv);
        double ch = lkv_csv_num(t, r, cc);
        if (!(ms > 0) || strcmp(lkv_csv_str(t, r, ck), "prefill") != 0) {
            continue;
        }
        x[n_pf] = 4.0 * PROF_HQ * PROF_D * ch * (kv + ch / 2.0);
        y[n_pf] = ms;
        n_pf++;
        if (kv == 0) {
            pairs[2 * n_pf0]     = ch;
            pairs[2 * n_pf0 + 1] = ms;
            n_pf0++;
        }
    }
    fit_line(x, y, n_pf, &c->pf_t0_ms, &c->pf_flops);
    c->pf_flops = c->pf_flops > 0 ? 1.0 / c->pf_flops : 1e12;
    if (n_dec < 16 || n_pf < 16 || n_pf0 < 2) {
        LKV_LOG_ERROR("attention profile has too few rows (%d decode, %d "
                      "prefill)",
                      n_dec, n_pf);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    st = pwl_build(&c->pf_kv0, pairs, n_pf0);
out:
    free(x);
    free(y);
    free(pairs);
    lkv_csv_destroy(&t);
    return st;
}

static double decode_table(const lkv_sim_cost_t *c, int b, double kv)
{
    /* kv inside [kv0, kvmax] and b in 1..128: interpolate along kv at b */
    if (!c->attn_table || b < 1 || b > DEC_MAX_BATCH || c->dec_n_kv < 2 ||
        kv > c->dec_kv[c->dec_n_kv - 1]) {
        return NAN;
    }
    if (kv < c->dec_kv[0]) {
        kv = c->dec_kv[0];
    }
    int lo = 0, hi = c->dec_n_kv - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (c->dec_kv[mid] <= kv) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    double ylo = c->dec_ms[(b - 1) * c->dec_n_kv + lo];
    double yhi = c->dec_ms[(b - 1) * c->dec_n_kv + hi];
    if (isnan(ylo) || isnan(yhi)) {
        return NAN;
    }
    double f = (kv - c->dec_kv[lo]) / (c->dec_kv[hi] - c->dec_kv[lo]);
    return ylo + f * (yhi - ylo);
}

static double attn_decode_ms(const lkv_sim_cost_t *c, int b, int64_t kv_sum)
{
    if (b <= 0) {
        return 0.0;
    }
    double kv = ceil((double)kv_sum / b / 64.0) * 64.0; /* Vidur rounding */
    double ms = decode_table(c, b, kv);
    if (isnan(ms)) {
        double bytes =
            (double)b * kv * 2.0 * c->hkv_local * c->model->head_dim * 2.0;
        ms = c->dec_t0_ms + bytes / (c->dec_bw * c->gpu->bw_scale);
    }
    if (b > 1 && c->model->n_kv_heads < c->model->n_heads) {
        ms *= 1.1;
    }
    return ms;
}

static double attn_prefill_ms(const lkv_sim_cost_t *c, int n, double c2_sum,
                              int64_t kv_sum)
{
    if (n <= 0 || c2_sum <= 0) {
        return 0.0;
    }
    double ch = sqrt(c2_sum), kv = (double)kv_sum, ms;
    if (c->attn_table && kv_sum == 0 && ch >= c->pf_kv0.x[0] &&
        ch <= c->pf_kv0.x[c->pf_kv0.n - 1]) {
        ms = pwl_eval(&c->pf_kv0, ch);
    } else {
        double flops =
            4.0 * c->hq_local * c->model->head_dim * ch * (kv + ch / 2.0);
        ms = c->pf_t0_ms + flops / (c->pf_flops * c->gpu->flop_scale);
    }
    if (n > 1 && c->model->n_kv_heads < c->model->n_heads) {
        ms *= 1.1;
    }
    return ms;
}

lkv_status_t lkv_sim_cost_create(const lkv_sim_cost_config_t *cfg,
                                 lkv_sim_cost_t             **c_p)
{
    lkv_status_t    st;
    lkv_sim_cost_t *c;

    if (cfg == NULL || c_p == NULL) {
        return LKV_ERR_INVALID;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    c->cfg = *cfg;
    snprintf(c->data_dir, sizeof(c->data_dir), "%s",
             cfg->data_dir != NULL ? cfg->data_dir : "data/vidur");
    c->cfg.data_dir = c->data_dir;
    c->model        = lkv_sim_model_find(cfg->model);
    if (c->model == NULL) {
        LKV_LOG_ERROR("unknown model '%s' (known: %s)",
                      cfg->model != NULL ? cfg->model : "",
                      lkv_sim_model_names());
        st = LKV_ERR_INVALID;
        goto err;
    }
    c->cfg.model = c->model->name;
    for (size_t i = 0; i < sizeof(gpus) / sizeof(gpus[0]); i++) {
        if (cfg->gpu != NULL && strcmp(cfg->gpu, gpus[i].name) == 0) {
            c->gpu = &gpus[i];
        }
    }
    if (c->gpu == NULL) {
        LKV_LOG_ERROR("unknown gpu '%s' (known: a100, h100)",
                      cfg->gpu != NULL ? cfg->gpu : "");
        st = LKV_ERR_INVALID;
        goto err;
    }
    c->cfg.gpu = c->gpu->name;
    if (cfg->tp < 1 || cfg->tp > 8 || (cfg->tp & (cfg->tp - 1)) != 0 ||
        c->model->n_heads % cfg->tp != 0 || cfg->pp < 1 ||
        c->model->n_layers % cfg->pp != 0 || cfg->block_size < 1 ||
        !(cfg->mem_util > 0 && cfg->mem_util <= 1) || !(cfg->link_gbps > 0) ||
        cfg->link_latency_us < 0 || !(cfg->attn_scale > 0)) {
        LKV_LOG_ERROR("invalid cost config: tp %d (1, 2, 4 or 8 dividing %d "
                      "heads), pp %d (dividing %d layers), block size %d, "
                      "memory utilisation %.2f (0..1], link %.1f GB/s (> 0)",
                      cfg->tp, c->model->n_heads, cfg->pp, c->model->n_layers,
                      cfg->block_size, cfg->mem_util, cfg->link_gbps);
        st = LKV_ERR_INVALID;
        goto err;
    }
    c->hq_local  = c->model->n_heads / cfg->tp;
    c->hkv_local = c->model->n_kv_heads / cfg->tp;
    if (c->hkv_local < 1) {
        c->hkv_local = 1; /* kv heads replicated when tp > n_kv_heads */
    }
    LKV_CHECK_GOTO(load_token_ops(c), st, err);
    LKV_CHECK_GOTO(load_attention(c), st, err);
    c->attn_table = strcmp(c->gpu->name, "a100") == 0 &&
                    c->hq_local == PROF_HQ && c->hkv_local == PROF_HKV &&
                    c->model->head_dim == PROF_D;
    char node[64];
    snprintf(node, sizeof(node), "%s_dgx", c->gpu->name);
    const char *net = cfg->net_node != NULL ? cfg->net_node : node;
    if (cfg->tp > 1) {
        LKV_CHECK_GOTO(load_network(c, net, "all_reduce", cfg->tp, cfg->tp,
                                    &c->all_reduce),
                       st, err);
    }
    if (cfg->pp > 1) {
        LKV_CHECK_GOTO(load_network(c, net, "send_recv", 2, 2, &c->send_recv),
                       st, err);
    }
    if (cfg->cpu_overheads) {
        LKV_CHECK_GOTO(load_cpu(c), st, err);
    }
    /* memory: vLLM/Vidur style budget per GPU */
    c->block_bytes =
        2LL * cfg->block_size * c->hkv_local * c->model->head_dim * 2;
    double mem       = (cfg->mem_gib > 0 ? cfg->mem_gib : 80.0) * 1073741824.0;
    c->weights_bytes = c->model->n_params * 2.0 / (cfg->tp * cfg->pp);
    if (cfg->act_reserve_gib >= 0) {
        c->act_bytes = cfg->act_reserve_gib * 1073741824.0;
    } else {
        c->act_bytes =
            1073741824.0 + (double)cfg->max_batch_tokens *
                               (c->model->hidden * 2.0 * 4 +
                                (double)c->model->ffn / cfg->tp * 2.0 * 3);
    }
    c->kv_bytes = mem * cfg->mem_util - c->weights_bytes - c->act_bytes;
    if (c->kv_bytes < (double)c->block_bytes * c->model->n_layers) {
        LKV_LOG_ERROR("%s at tp %d pp %d does not fit %.0f GiB x %.2f (weights "
                      "%.1f GiB per gpu); raise --tp or --mem-util",
                      c->model->name, cfg->tp, cfg->pp, mem / 1073741824.0,
                      cfg->mem_util, c->weights_bytes / 1073741824.0);
        st = LKV_ERR_NOSPACE;
        goto err;
    }
    /* the kv_alloc pool spans all layers of all stages */
    double blocks    = floor(c->kv_bytes / (double)c->block_bytes) * cfg->pp;
    c->device_blocks = blocks > 2e9 ? 2000000000 : (int32_t)blocks;
    snprintf(c->describe, sizeof(c->describe),
             "%s on %s tp %d pp %d: weights %.1f GiB/gpu, kv %.1f GiB/gpu, "
             "layer-block %lld B, %d device layer-blocks (%lld tokens), link "
             "%.1f GB/s + %.0f us/copy, attention %s",
             c->model->name, c->gpu->name, cfg->tp, cfg->pp,
             c->weights_bytes / 1073741824.0, c->kv_bytes / 1073741824.0,
             (long long)c->block_bytes, c->device_blocks,
             (long long)c->device_blocks / c->model->n_layers * cfg->block_size,
             cfg->link_gbps, cfg->link_latency_us,
             c->attn_table ? "vidur table (roofline outside the grid)"
                           : "roofline fitted to the vidur a100 table");
    *c_p = c;
    return LKV_OK;
err:
    lkv_sim_cost_destroy(&c);
    return st;
}

void lkv_sim_cost_destroy(lkv_sim_cost_t **c_p)
{
    if (c_p == NULL || *c_p == NULL) {
        return;
    }
    lkv_sim_cost_t *c = *c_p;
    pwl_free(&c->token_ops);
    pwl_free(&c->all_reduce);
    pwl_free(&c->send_recv);
    pwl_free(&c->cpu);
    pwl_free(&c->pf_kv0);
    free(c->dec_ms);
    free(c);
    *c_p = NULL;
}

static double all_reduce_ms(const lkv_sim_cost_t *c, int32_t T)
{
    if (c->cfg.tp <= 1) {
        return 0.0;
    }
    return pwl_eval(&c->all_reduce, (double)T * c->model->hidden * 2.0) + 0.02;
}

double lkv_sim_cost_layer_ns(const lkv_sim_cost_t *c, const lkv_sim_batch_t *b)
{
    if (b->n_tokens <= 0) {
        return 0.0;
    }
    double T  = ceil(b->n_tokens / 8.0) * 8.0;
    double ms = pwl_eval(&c->token_ops, T);
    ms +=
        c->cfg.attn_scale * (attn_decode_ms(c, b->n_decode, b->decode_kv_sum) +
                             attn_prefill_ms(c, b->n_prefill, b->prefill_c2_sum,
                                             b->prefill_kv_sum));
    ms += 2.0 * all_reduce_ms(c, b->n_tokens);
    return ms * 1e6;
}

double lkv_sim_cost_step_extra_ns(const lkv_sim_cost_t  *c,
                                  const lkv_sim_batch_t *b)
{
    double ms = 0.0;
    if (b->n_tokens <= 0) {
        return 0.0;
    }
    if (c->cfg.pp > 1) {
        ms += (c->cfg.pp - 1) *
              pwl_eval(&c->send_recv,
                       (double)b->n_tokens * c->model->hidden * 2.0);
    }
    if (c->cfg.cpu_overheads) {
        ms += pwl_eval(&c->cpu, (double)(b->n_decode + b->n_prefill));
    }
    return ms * 1e6;
}

double lkv_sim_cost_step_ns(const lkv_sim_cost_t *c, const lkv_sim_batch_t *b)
{
    return c->model->n_layers * lkv_sim_cost_layer_ns(c, b) +
           lkv_sim_cost_step_extra_ns(c, b);
}

double lkv_sim_cost_copy_ns(const lkv_sim_cost_t *c, int64_t bytes)
{
    if (bytes <= 0) {
        return 0.0;
    }
    return c->cfg.link_latency_us * 1e3 + (double)bytes / c->cfg.link_gbps;
}

const lkv_sim_model_t *lkv_sim_cost_model(const lkv_sim_cost_t *c)
{
    return c->model;
}
int64_t lkv_sim_cost_block_bytes(const lkv_sim_cost_t *c)
{
    return c->block_bytes;
}
int32_t lkv_sim_cost_device_blocks(const lkv_sim_cost_t *c)
{
    return c->device_blocks;
}
double lkv_sim_cost_kv_gib(const lkv_sim_cost_t *c)
{
    return c->kv_bytes / 1073741824.0;
}
double lkv_sim_cost_weights_gib(const lkv_sim_cost_t *c)
{
    return c->weights_bytes / 1073741824.0;
}
double lkv_sim_cost_link_bytes_per_s(const lkv_sim_cost_t *c)
{
    return c->cfg.link_gbps * 1e9;
}

void lkv_sim_cost_attn_fit(const lkv_sim_cost_t *c, double *dec_t0_ns,
                           double *dec_bw_bytes_per_s, double *pf_t0_ns,
                           double *pf_flops_per_s)
{
    *dec_t0_ns          = c->dec_t0_ms * 1e6;
    *dec_bw_bytes_per_s = c->dec_bw * 1e3 * c->gpu->bw_scale;
    *pf_t0_ns           = c->pf_t0_ms * 1e6;
    *pf_flops_per_s     = c->pf_flops * 1e3 * c->gpu->flop_scale;
}

const char *lkv_sim_cost_describe(const lkv_sim_cost_t *c)
{
    return c->describe;
}
