/* predictor.c - quantile output-length predictor; see predictor.h. */
#include "coordinator/predictor.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "pred"
#include "common/log.h"

typedef struct {
    int32_t *ring;   /* (window) output lengths, oldest overwritten */
    int32_t *sorted; /* (window) ring sorted ascending, valid if !dirty */
    int      n;      /* valid entries */
    int      next;   /* next slot to write */
    bool     dirty;
} bucket_t;

struct lkv_pred {
    lkv_pred_config_t cfg;
    bucket_t          b[LKV_PRED_BUCKETS];
    int32_t          *all;     /* (window * buckets) ring storage */
    int32_t          *sorted;  /* (window * buckets) per-bucket sorted */
    int32_t          *merged;  /* (window * buckets) all buckets, sorted */
    int               n_merged;
    bool              merged_dirty;
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
    p->all    = calloc((size_t)cfg->window * LKV_PRED_BUCKETS, sizeof(int32_t));
    p->sorted = calloc((size_t)cfg->window * LKV_PRED_BUCKETS, sizeof(int32_t));
    p->merged = calloc((size_t)cfg->window * LKV_PRED_BUCKETS, sizeof(int32_t));
    if (p->all == NULL || p->sorted == NULL || p->merged == NULL) {
        free(p->all);
        free(p->sorted);
        free(p->merged);
        free(p);
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < LKV_PRED_BUCKETS; i++) {
        p->b[i].ring   = p->all + (size_t)i * cfg->window;
        p->b[i].sorted = p->sorted + (size_t)i * cfg->window;
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
    free((*p_p)->sorted);
    free((*p_p)->merged);
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
    b->dirty        = true;
    p->merged_dirty = true;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* Sorted samples of bucket b (b < 0: all buckets); sorted lazily once per
 * change, so a prediction is a binary search. */
static const int32_t *sorted_of(lkv_pred_t *p, int b, int *n_p)
{
    if (b < 0) {
        if (p->merged_dirty) {
            p->n_merged = 0;
            for (int i = 0; i < LKV_PRED_BUCKETS; i++) {
                memcpy(p->merged + p->n_merged, p->b[i].ring,
                       (size_t)p->b[i].n * sizeof(int32_t));
                p->n_merged += p->b[i].n;
            }
            qsort(p->merged, (size_t)p->n_merged, sizeof(int32_t), cmp_i32);
            p->merged_dirty = false;
        }
        *n_p = p->n_merged;
        return p->merged;
    }
    if (p->b[b].dirty) {
        memcpy(p->b[b].sorted, p->b[b].ring, (size_t)p->b[b].n * sizeof(int32_t));
        qsort(p->b[b].sorted, (size_t)p->b[b].n, sizeof(int32_t), cmp_i32);
        p->b[b].dirty = false;
    }
    *n_p = p->b[b].n;
    return p->b[b].sorted;
}

/* First index of a value > floor_ in sorted v[0..n). */
static int upper(const int32_t *v, int n, int32_t floor_)
{
    int lo = 0, hi = n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;

        if (v[mid] > floor_) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

int32_t lkv_pred_remaining(lkv_pred_t *p, int32_t n_prompt,
                           int32_t n_generated, int32_t max_remaining)
{
    const int32_t *v;
    int64_t        rem;
    int            n, b, lo, idx;

    if (max_remaining <= 0) {
        return 0;
    }
    if (p == NULL) {
        return 1;
    }
    if (n_generated < 0) {
        n_generated = 0;
    }
    rem = p->cfg.prior;
    b   = bucket_of(n_prompt < 1 ? 1 : n_prompt);
    v   = NULL;
    n   = 0;
    lo  = 0;
    if (p->b[b].n >= p->cfg.min_samples && p->b[b].n > 0) {
        v  = sorted_of(p, b, &n);
        lo = upper(v, n, n_generated);
    }
    if (n - lo <= 0) {
        v  = sorted_of(p, -1, &n);
        lo = upper(v, n, n_generated);
    }
    if (n - lo > 0) {
        /* quantile of the samples longer than what was produced */
        idx = (int)((double)p->cfg.quantile * (n - lo) + 0.999999) - 1;
        idx = idx < 0 ? 0 : (idx >= n - lo ? n - lo - 1 : idx);
        rem = (int64_t)v[lo + idx] - n_generated;
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
