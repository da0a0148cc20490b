/* test_predictor.c - the output-length predictor (incrementally sorted
 * windows) against a simple reference that keeps only the rings and sorts a
 * fresh copy on every query. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/predictor.h"

/* ---- reference: rings only, sorted from scratch per query ----------------- */

#define REF_MAX_WINDOW 128

typedef struct {
    lkv_pred_config_t cfg;
    int32_t           ring[LKV_PRED_BUCKETS][REF_MAX_WINDOW];
    int               n[LKV_PRED_BUCKETS];
    int               next[LKV_PRED_BUCKETS];
} ref_pred_t;

static int ref_bucket(int32_t n_prompt)
{
    int b = 0;

    while (n_prompt > 1 && b < LKV_PRED_BUCKETS - 1) {
        n_prompt >>= 1;
        b++;
    }
    return b;
}

static void ref_observe(ref_pred_t *r, int32_t n_prompt, int32_t n_output)
{
    int b;

    if (n_prompt < 1 || n_output < 1) {
        return;
    }
    b                      = ref_bucket(n_prompt);
    r->ring[b][r->next[b]] = n_output;
    r->next[b]             = (r->next[b] + 1) % r->cfg.window;
    if (r->n[b] < r->cfg.window) {
        r->n[b]++;
    }
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* Samples > floor_ of bucket b (b < 0: all buckets), sorted, into out. */
static int ref_longer(const ref_pred_t *r, int b, int32_t floor_,
                      int32_t *out)
{
    int n = 0;

    for (int i = 0; i < LKV_PRED_BUCKETS; i++) {
        if (b >= 0 && i != b) {
            continue;
        }
        for (int j = 0; j < r->n[i]; j++) {
            if (r->ring[i][j] > floor_) {
                out[n++] = r->ring[i][j];
            }
        }
    }
    qsort(out, (size_t)n, sizeof(*out), cmp_i32);
    return n;
}

static int32_t ref_remaining(const ref_pred_t *r, int32_t n_prompt,
                             int32_t n_generated, int32_t max_remaining)
{
    static int32_t v[LKV_PRED_BUCKETS * REF_MAX_WINDOW];
    int64_t        rem = r->cfg.prior;
    int            b, n = 0, idx;

    if (max_remaining <= 0) {
        return 0;
    }
    if (n_generated < 0) {
        n_generated = 0;
    }
    b = ref_bucket(n_prompt < 1 ? 1 : n_prompt);
    if (r->n[b] >= r->cfg.min_samples && r->n[b] > 0) {
        n = ref_longer(r, b, n_generated, v);
    }
    if (n == 0) {
        n = ref_longer(r, -1, n_generated, v);
    }
    if (n > 0) {
        idx = (int)((double)r->cfg.quantile * n + 0.999999) - 1;
        idx = idx < 0 ? 0 : (idx >= n ? n - 1 : idx);
        rem = (int64_t)v[idx] - n_generated;
    }
    if (rem < 1) {
        rem = 1;
    }
    if (rem > max_remaining) {
        rem = max_remaining;
    }
    return (int32_t)rem;
}

/* ---- tests ---------------------------------------------------------------- */

/* xorshift64*: deterministic across platforms */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static int rnd_in(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static void predictor_random_matches_fresh_sort(void **state)
{
    static ref_pred_t ref;
    uint64_t          seed = 0x9E3779B97F4A7C15ULL;
    long              n_checked = 0;

    (void)state;
    for (int round = 0; round < 60; round++) {
        lkv_pred_config_t c = lkv_pred_config_default();
        lkv_pred_t       *p = NULL;
        int               max_out = rnd_in(&seed, 2, 300);

        c.window      = rnd_in(&seed, 1, REF_MAX_WINDOW);
        c.min_samples = rnd_in(&seed, 0, 8);
        c.prior       = rnd_in(&seed, 1, 200);
        c.quantile    = (float)rnd_in(&seed, 1, 100) / 100.0f;
        assert_int_equal(lkv_pred_create(&c, &p), LKV_OK);
        memset(&ref, 0, sizeof(ref));
        ref.cfg = c;
        for (int op = 0; op < 3000; op++) {
            /* a few prompt lengths so buckets fill unevenly; some ignored */
            int32_t np = rnd_in(&seed, 0, 3) == 0
                             ? rnd_in(&seed, -2, 1 << 20)
                             : (int32_t)(1 << rnd_in(&seed, 0, 4)) +
                                   rnd_in(&seed, 0, 3);

            if (rnd_in(&seed, 0, 2) == 0) {
                /* small value range: many duplicates to remove and insert */
                int32_t no = rnd_in(&seed, -1, max_out);

                lkv_pred_observe(p, np, no);
                ref_observe(&ref, np, no);
                continue;
            }
            int32_t ng = rnd_in(&seed, -3, max_out + 5);
            int32_t mr = rnd_in(&seed, -1, 400);

            assert_int_equal(lkv_pred_remaining(p, np, ng, mr),
                             ref_remaining(&ref, np, ng, mr));
            n_checked++;
        }
        int total = 0;
        for (int b = 0; b < LKV_PRED_BUCKETS; b++) {
            total += ref.n[b];
        }
        assert_int_equal(lkv_pred_count(p), total);
        lkv_pred_destroy(&p);
    }
    assert_true(n_checked > 50000);
}

static void predictor_full_window_replaces_oldest(void **state)
{
    lkv_pred_config_t c = lkv_pred_config_default();
    lkv_pred_t       *p = NULL;

    (void)state;
    c.window      = 3;
    c.quantile    = 1.0f;
    c.min_samples = 1;
    assert_int_equal(lkv_pred_create(&c, &p), LKV_OK);
    lkv_pred_observe(p, 100, 50);
    lkv_pred_observe(p, 100, 10);
    lkv_pred_observe(p, 100, 10);
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 1000), 50);
    /* 50 is the oldest: the fourth sample pushes it out */
    lkv_pred_observe(p, 100, 20);
    assert_int_equal(lkv_pred_count(p), 3);
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 1000), 20);
    /* nothing in the bucket is longer than 20: all buckets (same samples)
     * have nothing either, so the prior */
    assert_int_equal(lkv_pred_remaining(p, 100, 20, 1000), c.prior);
    lkv_pred_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(predictor_random_matches_fresh_sort),
        cmocka_unit_test(predictor_full_window_replaces_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
