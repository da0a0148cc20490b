/* test_cost_model.c - the simulator's cost model against Vidur's profiles:
 * the reference values of shared/reference/vidur.md section 2.4, capacity as
 * Vidur computes it, monotonicity, the link model, and bad configs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "sim/cost_model.h"

static char data_dir[1024];

static lkv_sim_cost_config_t cfg_for(const char *model, const char *gpu, int tp)
{
    lkv_sim_cost_config_t c = lkv_sim_cost_config_default();
    c.data_dir              = data_dir;
    c.model                 = model;
    c.gpu                   = gpu;
    c.tp                    = tp;
    return c;
}

static double prefill_ms(const lkv_sim_cost_t *c, int T)
{
    lkv_sim_batch_t b = {
        .n_tokens = T, .n_prefill = 1, .prefill_c2_sum = (double)T * T};
    return lkv_sim_cost_step_ns(c, &b) / 1e6;
}

static double decode_ms(const lkv_sim_cost_t *c, int n, int kv)
{
    lkv_sim_batch_t b = {
        .n_tokens = n, .n_decode = n, .decode_kv_sum = (int64_t)n * kv};
    return lkv_sim_cost_step_ns(c, &b) / 1e6;
}

static void cost_codellama_prefill_matches_vidur(void **state)
{
    (void)state;
    lkv_sim_cost_config_t cfg = cfg_for("codellama-34b", "a100", 2);
    lkv_sim_cost_t       *c   = NULL;
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_OK);
    /* vidur.md 2.4: T=512 98.6 ms, 1024 196 ms, 2048 370 ms, 4000 754 ms */
    const int    T[4]   = {512, 1024, 2048, 4000};
    const double ref[4] = {98.6, 196.0, 370.0, 754.0};
    for (int i = 0; i < 4; i++) {
        double ms = prefill_ms(c, T[i]);
        printf("codellama-34b tp2 prefill %d: %.1f ms (vidur %.1f)\n", T[i], ms,
               ref[i]);
        assert_true(fabs(ms - ref[i]) / ref[i] < 0.03);
    }
    lkv_sim_cost_destroy(&c);
    assert_null(c);
}

static void cost_capacity_near_vidur(void **state)
{
    (void)state;
    lkv_sim_cost_config_t cfg = cfg_for("llama2-7b", "a100", 1);
    lkv_sim_cost_t       *c   = NULL;
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_OK);
    /* Vidur: 7,424 all-layer blocks of 16 tokens on 80 GB (vidur.md 3.2) */
    double all_layer = (double)lkv_sim_cost_device_blocks(c) / 32.0;
    printf("llama2-7b a100: %.0f all-layer blocks (vidur 7424)\n", all_layer);
    assert_true(fabs(all_layer - 7424) / 7424 < 0.10);
    assert_int_equal(lkv_sim_cost_block_bytes(c), 2 * 16 * 32 * 128 * 2);
    lkv_sim_cost_destroy(&c);

    cfg = cfg_for("llama2-70b", "a100", 4);
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_OK);
    assert_int_equal(lkv_sim_cost_block_bytes(c), 2 * 16 * 2 * 128 * 2);
    lkv_sim_cost_destroy(&c);
}

static void cost_monotonic_and_gpu_ordering(void **state)
{
    (void)state;
    lkv_sim_cost_config_t ca = cfg_for("llama2-7b", "a100", 1);
    lkv_sim_cost_config_t ch = cfg_for("llama2-7b", "h100", 1);
    lkv_sim_cost_t       *a = NULL, *h = NULL;
    assert_int_equal(lkv_sim_cost_create(&ca, &a), LKV_OK);
    assert_int_equal(lkv_sim_cost_create(&ch, &h), LKV_OK);
    double prev = 0;
    for (int T = 256; T <= 32768; T *= 2) {
        double ms = prefill_ms(a, T);
        assert_true(ms > prev);
        assert_true(prefill_ms(h, T) < ms);
        prev = ms;
    }
    prev = 0;
    for (int kv = 128; kv <= 32768; kv *= 2) {
        double ms = decode_ms(a, 64, kv);
        assert_true(ms >= prev);
        prev = ms;
    }
    /* decode of one sequence is weight-bound: ~10 ms for 7B on A100 */
    double d1 = decode_ms(a, 1, 1024);
    assert_true(d1 > 6.0 && d1 < 20.0);
    /* layer time x layers == step time without extras */
    lkv_sim_batch_t b = {.n_tokens       = 9,
                         .n_decode       = 8,
                         .decode_kv_sum  = 8000,
                         .n_prefill      = 1,
                         .prefill_c2_sum = 1};
    assert_true(fabs(lkv_sim_cost_step_ns(a, &b) -
                     32 * lkv_sim_cost_layer_ns(a, &b)) < 1.0);
    lkv_sim_batch_t empty = {0};
    assert_true(lkv_sim_cost_step_ns(a, &empty) == 0.0);
    lkv_sim_cost_destroy(&a);
    lkv_sim_cost_destroy(&h);
}

static void cost_link_is_latency_plus_bandwidth(void **state)
{
    (void)state;
    lkv_sim_cost_config_t cfg = cfg_for("llama2-7b", "a100", 1);
    cfg.link_gbps             = 20.0;
    cfg.link_latency_us       = 15.0;
    lkv_sim_cost_t *c         = NULL;
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_OK);
    assert_true(fabs(lkv_sim_cost_copy_ns(c, 20000000) - (15000 + 1e6)) < 1);
    assert_true(lkv_sim_cost_copy_ns(c, 0) == 0.0);
    assert_true(lkv_sim_cost_link_bytes_per_s(c) == 20e9);
    lkv_sim_cost_destroy(&c);
}

static void cost_tp_adds_all_reduce(void **state)
{
    (void)state;
    lkv_sim_cost_config_t c1 = cfg_for("llama2-70b", "a100", 2);
    lkv_sim_cost_config_t c4 = cfg_for("llama2-70b", "a100", 4);
    lkv_sim_cost_t       *a = NULL, *b = NULL;
    assert_int_equal(lkv_sim_cost_create(&c1, &a), LKV_OK);
    assert_int_equal(lkv_sim_cost_create(&c4, &b), LKV_OK);
    /* more shards: less per-GPU compute at large T */
    assert_true(prefill_ms(b, 4096) < prefill_ms(a, 4096));
    lkv_sim_cost_destroy(&a);
    lkv_sim_cost_destroy(&b);
}

static void cost_bad_configs_rejected(void **state)
{
    (void)state;
    lkv_sim_cost_t       *c   = NULL;
    lkv_sim_cost_config_t cfg = cfg_for("gpt-5", "a100", 1);
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_INVALID);
    assert_null(c);
    cfg = cfg_for("llama2-7b", "v100", 1);
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_INVALID);
    cfg = cfg_for("llama2-7b", "a100", 3);
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_INVALID);
    cfg           = cfg_for("llama2-7b", "a100", 1);
    cfg.link_gbps = 0;
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_INVALID);
    cfg = cfg_for("llama2-70b", "a100", 1); /* 138 GB of weights */
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_NOSPACE);
    cfg          = cfg_for("llama2-7b", "a100", 1);
    cfg.data_dir = "/nonexistent";
    assert_int_equal(lkv_sim_cost_create(&cfg, &c), LKV_ERR_NOTFOUND);
    assert_int_equal(lkv_sim_cost_create(NULL, &c), LKV_ERR_INVALID);
    assert_null(c);
    assert_null(lkv_sim_model_find("nope"));
    assert_non_null(lkv_sim_model_find("meta-llama/Llama-2-7b-hf"));
}

int main(void)
{
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(data_dir, sizeof(data_dir), "%s/data/vidur", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cost_codellama_prefill_matches_vidur),
        cmocka_unit_test(cost_capacity_near_vidur),
        cmocka_unit_test(cost_monotonic_and_gpu_ordering),
        cmocka_unit_test(cost_link_is_latency_plus_bandwidth),
        cmocka_unit_test(cost_tp_adds_all_reduce),
        cmocka_unit_test(cost_bad_configs_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
