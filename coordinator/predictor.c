/* predictor.c - quantile output-length predictor; see predictor.h. */
#include "coordinator/predictor.h"

#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "pred"
#include "common/log.h"

typedef struct {
    int32_t *ring;   /* (window) output lengths, oldest overwritten */
    int32_t *sorted; /* (window) the n valid ring entries, ascending */
    int      n;      /* valid entries */
    int      next;   /* next slot to write */
} bucket_t;

struct lkv_pred {
    lkv_pred_config_t cfg;
    bucket_t          b[LKV_PRED_BUCKETS];
    int32_t          *all;     /* (window * buckets) ring storage */
    int32_t          *sorted;  /* (window * buckets) per-bucket sorted */
    int32_t          *merged;  /* (window * buckets) all buckets, sorted */
    int               n_merged;
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

/* First index of a value >= x in sorted v[0..n). */
static int lower(const int32_t *v, int n, int32_t x)
{
    int lo = 0, hi = n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;

        if (v[mid] >= x) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* Remove one occurrence of x (present) from sorted v[0..n). */
static void sorted_remove(int32_t *v, int n, int32_t x)
{
    int i = lower(v, n, x);

    memmove(v + i, v + i + 1, (size_t)(n - i - 1) * sizeof(*v));
}

/* Insert x into sorted v[0..n) (room for n + 1). */
static void sorted_insert(int32_t *v, int n, int32_t x)
{
    int i = lower(v, n, x);

    memmove(v + i + 1, v + i, (size_t)(n - i) * sizeof(*v));
    v[i] = x;
}

/* The bucket's and the merged sorted windows are kept in step with the ring
 * (the overwritten sample out, the new one in: O(window) memmove), so a
 * prediction is a binary search and never sorts. */
void lkv_pred_observe(lkv_pred_t *p, int32_t n_prompt, int32_t n_output)
{
    bucket_t *b;

    if (p == NULL || n_prompt < 1 || n_output < 1) {
        return;
    }
    b = &p->b[bucket_of(n_prompt)];
    if (b->n == p->cfg.window) {
        int32_t old = b->ring[b->next];

        sorted_remove(b->sorted, b->n, old);
        sorted_remove(p->merged, p->n_merged, old);
        b->n--;
        p->n_merged--;
    }
    sorted_insert(b->sorted, b->n, n_output);
    sorted_insert(p->merged, p->n_merged, n_output);
    b->n++;
    p->n_merged++;
    b->ring[b->next] = n_output;
    b->next          = (b->next + 1) % p->cfg.window;
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

int32_t lkv_pred_remaining(const lkv_pred_t *p, int32_t n_prompt,
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
        v  = p->b[b].sorted;
        n  = p->b[b].n;
        lo = upper(v, n, n_generated);
    }
    if (n - lo <= 0) {
        v  = p->merged;
        n  = p->n_merged;
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
