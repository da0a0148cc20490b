/* test_sched_models.c - the pieces behind the SLO-aware policy: output-length
 * predictor, prefill/decode time models (Eq. 3 fit and alpha), TPOT slack
 * (Eq. 1), the interleaved offload pattern, and the remote tier taking
 * offloads when the host tier is full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>

#include "coordinator/predictor.h"
#include "coordinator/sched_impl.h"
#include "coordinator/slo_model.h"
#include "tests/unit/coordinator/sched_fake.h"

static void predictor_quantile_conditioned_and_clipped(void **state)
{
    lkv_pred_config_t c = lkv_pred_config_default();
    lkv_pred_t       *p = NULL;

    (void)state;
    c.quantile = 0.9f;
    c.window   = 100;
    c.prior    = 50;
    assert_int_equal(lkv_pred_create(&c, &p), LKV_OK);
    /* no history: the prior, clipped */
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 1000), 50);
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 7), 7);
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 0), 0);
    /* outputs 1..100 for prompts in [64, 128): p90 = 90 */
    for (int i = 1; i <= 100; i++) {
        lkv_pred_observe(p, 100, i);
    }
    assert_int_equal(lkv_pred_count(p), 100);
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 1000), 90);
    /* conditioned on having produced 80: p90 of 81..100 = 98 -> 18 left */
    assert_int_equal(lkv_pred_remaining(p, 100, 80, 1000), 18);
    /* longer than anything seen: at least one more token */
    assert_int_equal(lkv_pred_remaining(p, 100, 500, 1000), 50);
    assert_int_equal(lkv_pred_remaining(p, 100, 500, 3), 3);
    /* another bucket with little history borrows from all buckets */
    assert_int_equal(lkv_pred_remaining(p, 3000, 0, 1000), 90);
    for (int i = 0; i < 10; i++) {
        lkv_pred_observe(p, 3000, 1000);
    }
    assert_int_equal(lkv_pred_remaining(p, 3000, 0, 5000), 1000);
    /* the window forgets old samples */
    for (int i = 0; i < 100; i++) {
        lkv_pred_observe(p, 100, 5);
    }
    assert_int_equal(lkv_pred_remaining(p, 100, 0, 1000), 5);
    lkv_pred_observe(p, 0, 5);  /* ignored */
    lkv_pred_observe(p, 10, -1); /* ignored */
    c.quantile = 0.0f;
    lkv_pred_destroy(&p);
    assert_null(p);
    assert_int_equal(lkv_pred_create(&c, &p), LKV_ERR_INVALID);
}

static void prefill_model_fits_quadratic_and_alpha(void **state)
{
    lkv_slo_model_config_t c = lkv_slo_model_config_default();
    lkv_slo_model_t       *m = NULL;
    const double           a0 = 2e6, a1 = 5e4, a2 = 3.0;

    (void)state;
    /* a prior 2x off in every coefficient */
    c.pf[0] = 2 * a0, c.pf[1] = 2 * a1, c.pf[2] = 2 * a2;
    assert_int_equal(lkv_slo_model_create(&c, &m), LKV_OK);
    assert_true(fabs(lkv_slo_prefill_ns(m, 1000, 1e6) -
                     2 * (a0 + a1 * 1000 + a2 * 1e6)) < 1.0);
    assert_true(lkv_slo_prefill_ns(m, 0, 0) == 0.0);
    for (int i = 0; i < 64; i++) {
        double x1 = 64 + (i * 97) % 2000;
        double x2 = x1 * x1;
        lkv_slo_observe_prefill(m, x1, x2, a0 + a1 * x1 + a2 * x2);
    }
    assert_true(lkv_slo_fits(m) > 0);
    for (double x = 100; x < 3000; x += 700) {
        double want = a0 + a1 * x + a2 * x * x;
        assert_true(fabs(lkv_slo_prefill_ns(m, x, x * x) - want) < 0.01 * want);
    }

    /* every prompt the same length: the fit is singular, alpha corrects */
    lkv_slo_model_destroy(&m);
    assert_int_equal(lkv_slo_model_create(&c, &m), LKV_OK);
    for (int i = 0; i < 40; i++) {
        lkv_slo_observe_prefill(m, 512, 512.0 * 512, 0.5 * 2 *
                                (a0 + a1 * 512 + a2 * 512.0 * 512));
    }
    assert_true(fabs(lkv_slo_alpha(m) - 0.5) < 0.01);
    {
        double want = a0 + a1 * 512 + a2 * 512.0 * 512;
        assert_true(fabs(lkv_slo_prefill_ns(m, 512, 512.0 * 512) - want) <
                    0.02 * want);
    }
    /* decode ratio */
    for (int i = 0; i < 40; i++) {
        lkv_slo_observe_decode(m, 4, 1000,
                               3 * (c.dc[0] + 4 * c.dc[1] + 1000 * c.dc[2]));
    }
    assert_true(fabs(lkv_slo_decode_ratio(m) - 3.0) < 0.05);
    assert_true(lkv_slo_decode_ns(m, 0, 0) == 0.0);
    lkv_slo_model_destroy(&m);

    c.window = 2;
    assert_int_equal(lkv_slo_model_create(&c, &m), LKV_ERR_INVALID);
}

static void tpot_slack_matches_eq1(void **state)
{
    (void)state;
    /* S=50ms, g=10 after the first, m=20 left, tau=400ms, t_d=30ms:
     * 50*(30) - 400 - 20*30 = 500 ms */
    assert_true(fabs(lkv_slo_tpot_slack_ns(50e6, 10, 20, 400e6, 30e6) -
                     500e6) < 1.0);
    /* already late: negative slack */
    assert_true(lkv_slo_tpot_slack_ns(10e6, 10, 20, 400e6, 30e6) < 0);
    assert_true(isinf(lkv_slo_tpot_slack_ns(0, 10, 20, 400e6, 30e6)));
}

static void offloaded_layers_are_interleaved(void **state)
{
    int n;

    (void)state;
    /* the paper's 8-layer example: offload 0,2,4,6 and keep 1,3,5,7 */
    for (int l = 0; l < 8; l++) {
        assert_int_equal(sched_layer_offloaded(l, 4, 8), l % 2 == 0);
    }
    /* exactly k layers for every k */
    for (int L = 1; L <= 80; L++) {
        for (int k = 0; k <= L; k++) {
            n = 0;
            for (int l = 0; l < L; l++) {
                n += sched_layer_offloaded(l, k, L);
            }
            assert_int_equal(n, k);
        }
    }
    /* k = 1 of 32 offloads layer 0; k = 31 keeps exactly one */
    assert_true(sched_layer_offloaded(0, 1, 32));
    assert_false(sched_layer_offloaded(5, 1, 32));
}

static void remote_tier_takes_offloads_when_host_full(void **state)
{
    (void)state;
    for (int v = 0; v < 4; v++) {
        int                none = v & 1;
        lkv_sched_config_t c    = lkv_sched_config_default();
        fx_req_t           reqs[3];
        fx_t              *f    = calloc(1, sizeof(*f));
        fx_run_t           run  = {.max_steps = 2000, .check_every_step = 1};
        lkv_sched_t       *s    = NULL;
        lkv_sched_stats_t  st;

        c.n_layers                     = 8;
        c.block_size                   = 16;
        c.block_bytes                  = 1 << 16;
        c.n_blocks[LKV_KV_TIER_DEVICE] = 70;
        c.n_blocks[LKV_KV_TIER_HOST]   = 0; /* host tier full (empty) */
        c.n_blocks[LKV_KV_TIER_REMOTE] = none ? 0 : 512;
        c.watermark                    = 0.0f;
        c.max_seq_len                  = 1024;
        c.prefill_staging_window       = (v >> 1) * 2; /* W = 0 and 2 */
        c.pf_c0_ns = 5e6, c.pf_c1_ns = 20000, c.pf_c2_ns = 0;
        fx_init(f, 8);
        for (int i = 0; i < 3; i++) {
            memset(&reqs[i], 0, sizeof(reqs[i]));
            reqs[i].id = (uint64_t)i + 1, reqs[i].n_prompt = 60;
            reqs[i].max_tokens = 4;
        }
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        fx_run(s, f, reqs, 3, &run);
        lkv_sched_stats(s, &st);
        assert_int_equal(run.stuck, 0);
        assert_int_equal(run.invariant_failures + run.mirror_failures, 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(reqs[i].n_tokens, 4);
        }
        if (none) {
            /* no host, no remote: back-pressure, nothing offloaded */
            assert_int_equal(st.offload_moves, 0);
        } else if (c.prefill_staging_window == 0) {
            assert_true(st.offload_moves > 0);
            assert_true(st.offloaded_bytes > 0);
        } else {
            /* appended on the remote tier, streamed through the ring */
            int n_off = 0;
            for (int i = 0; i < 3; i++) {
                n_off += reqs[i].timing.n_offloaded_layers;
            }
            assert_true(n_off > 0);
            assert_true(st.stage_moves > 0);
        }
        assert_int_equal(st.blocks_used[LKV_KV_TIER_REMOTE], 0);
        lkv_sched_destroy(&s);
        free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(predictor_quantile_conditioned_and_clipped),
        cmocka_unit_test(prefill_model_fits_quadratic_and_alpha),
        cmocka_unit_test(tpot_slack_matches_eq1),
        cmocka_unit_test(offloaded_layers_are_interleaved),
        cmocka_unit_test(remote_tier_takes_offloads_when_host_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
