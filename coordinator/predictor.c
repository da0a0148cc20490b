/* predictor.c - quantile output-length predictor; see predictor.h. */
#include "coordinator/predictor.h"

#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "pred"
#include "common/log.h"

typedef struct {
    int32_t *ring; /* (window) output lengths, oldest overwritten */
    int      n;    /* valid entries */
    int      next; /* next slot to write */
} bucket_t;

struct lkv_pred {
    lkv_pred_config_t cfg;
    bucket_t          b[LKV_PRED_BUCKETS];
    int32_t          *all;     /* (window * buckets) storage */
    int32_t          *scratch; /* (window * buckets) for quantiles */
};

lkv_pred_config_t lkv_pred_config_default(void)
{
    lkv_pred_config_t c = {
        .quantile = 0.9f, .window = 64, .prior = 128, .min_samples = 4};
    return c;
}

lkv_status_t lkv_pred_create(const lkv_pred_config_t *cfg, lkv_pred_t **p_p)
{
    lkv_pred_t *p;

    if (cfg == NULL || p_p == NULL || !(cfg->quantile > 0.0f) ||
        cfg->quantile > 1.0f || cfg->window < 1 || cfg->window > 1 << 16 ||
        cfg->prior < 1 || cfg->min_samples < 0) {
        LKV_LOG_ERROR("invalid predictor config: quantile must be in (0,1], "
                      "window in [1,65536], prior >= 1");
        return LKV_ERR_INVALID;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return LKV_ERR_NOMEM;
    }
    p->cfg     = *cfg;
    p->all     = calloc((size_t)cfg->window * LKV_PRED_BUCKETS, sizeof(int32_t));
    p->scratch = calloc((size_t)cfg->window * LKV_PRED_BUCKETS, sizeof(int32_t));
    if (p->all == NULL || p->scratch == NULL) {
        free(p->all);
        free(p->scratch);
        free(p);
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < LKV_PRED_BUCKETS; i++) {
        p->b[i].ring = p->all + (size_t)i * cfg->window;
    }
    *p_p = p;
    return LKV_OK;
}

void lkv_pred_destroy(lkv_pred_t **p_p)
{
    if (p_p == NULL || *p_p == NULL) {
        return;
    }
    free((*p_p)->all);
    free((*p_p)->scratch);
    free(*p_p);
    *p_p = NULL;
}

static int bucket_of(int32_t n_prompt)
{
    int b = 0;

    while (n_prompt > 1 && b < LKV_PRED_BUCKETS - 1) {
        n_prompt >>= 1;
        b++;
    }
    return b;
}

void lkv_pred_observe(lkv_pred_t *p, int32_t n_prompt, int32_t n_output)
{
    bucket_t *b;

    if (p == NULL || n_prompt < 1 || n_output < 1) {
        return;
    }
    b                = &p->b[bucket_of(n_prompt)];
    b->ring[b->next] = n_output;
    b->next          = (b->next + 1) % p->cfg.window;
    if (b->n < p->cfg.window) {
        b->n++;
    }
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* Copy samples > floor from bucket b (or all buckets if b < 0). */
static int gather(const lkv_pred_t *p, int b, int32_t floor_, int32_t *out)
{
    int n = 0;

    for (int i = 0; i < LKV_PRED_BUCKETS; i++) {
        if (b >= 0 && i != b) {
            continue;
        }
        for (int j = 0; j < p->b[i].n; j++) {
            if (p->b[i].ring[j] > floor_) {
                out[n++] = p->b[i].ring[j];
            }
        }
    }
    return n;
}

int32_t lkv_pred_remaining(const lkv_pred_t *p, int32_t n_prompt,
                           int32_t n_generated, int32_t max_remaining)
{
    int32_t *buf;
    int64_t  rem;
    int      n, b, idx;

    if (max_remaining <= 0) {
        return 0;
    }
    if (n_generated < 0) {
        n_generated = 0;
    }
    if (p == NULL) {
        return 1;
    }
    rem = p->cfg.prior;
    {
        buf = p->scratch;
        b   = bucket_of(n_prompt < 1 ? 1 : n_prompt);
        n   = p->b[b].n >= p->cfg.min_samples ? gather(p, b, n_generated, buf)
                                              : 0;
        if (n == 0) {
            n = gather(p, -1, n_generated, buf);
        }
        if (n > 0) {
            qsort(buf, (size_t)n, sizeof(*buf), cmp_i32);
            idx = (int)((double)p->cfg.quantile * n + 0.999999) - 1;
            idx = idx < 0 ? 0 : (idx >= n ? n - 1 : idx);
            rem = (int64_t)buf[idx] - n_generated;
        }
    }
    if (rem < 1) {
        rem = 1;
    }
    if (rem > max_remaining) {
        rem = max_remaining;
    }
    return (int32_t)rem;
}

int lkv_pred_count(const lkv_pred_t *p)
{
    int n = 0;

    for (int i = 0; p != NULL && i < LKV_PRED_BUCKETS; i++) {
        n += p->b[i].n;
    }
    return n;
}
