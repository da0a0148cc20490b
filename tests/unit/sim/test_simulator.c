/* test_simulator.c - whole simulations on the real scheduler: physics
 * checks (an idle system's TTFT is the prefill time; TTFT never beats it),
 * conservation (every request finishes with its output length), baseline
 * never offloads, determinism, multi-instance routing, JSON schema, bad
 * configs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sim/simulator.h"

static char data_dir[1024];

static lkv_sim_config_t base_cfg(void)
{
    lkv_sim_config_t c = lkv_sim_config_default();
    c.cost.data_dir    = data_dir;
    c.work.data_dir    = data_dir;
    c.quiet            = true;
    return c;
}

static double prefill_s(const char *model, int tp, int len)
{
    lkv_sim_cost_config_t cc = lkv_sim_cost_config_default();
    cc.data_dir              = data_dir;
    cc.model                 = model;
    cc.tp                    = tp;
    lkv_sim_cost_t *c        = NULL;
    assert_int_equal(lkv_sim_cost_create(&cc, &c), LKV_OK);
    lkv_sim_batch_t b = {
        .n_tokens = len, .n_prefill = 1, .prefill_c2_sum = (double)len * len};
    double s = lkv_sim_cost_step_ns(c, &b) * 1e-9;
    lkv_sim_cost_destroy(&c);
    return s;
}

static void sim_idle_ttft_is_prefill_time(void **state)
{
    (void)state;
    lkv_sim_config_t c = base_cfg();
    c.policy           = LKV_SCHED_POLICY_BASELINE;
    c.work.prompt_len  = 2048;
    c.work.output_len  = 64;
    c.work.rate        = 0.05; /* ~20 s apart: each request runs alone */
    c.work.n_requests  = 30;
    lkv_sim_result_t r;
    assert_int_equal(lkv_sim_run(&c, &r), LKV_OK);
    double pf = prefill_s("llama2-7b", 1, 2048);
    printf("idle: mean TTFT %.4f s, prefill %.4f s, TPOT %.2f ms\n",
           r.mean_ttft_s, pf, r.mean_tpot_s * 1e3);
    assert_int_equal(r.n_completed, 30);
    assert_int_equal(r.output_tokens, 30 * 64);
    assert_true(r.mean_ttft_s >= pf * 0.999);
    assert_true(r.mean_ttft_s < pf * 1.05);
    assert_true(r.mean_queue_s < 0.01);
    assert_true(r.mean_tpot_s > 0.005 && r.mean_tpot_s < 0.02);
    assert_true(r.slo_violation_rate == 0.0);
    assert_true(r.offloaded_bytes == 0);
}

static void sim_pressure_conserves_requests(void **state)
{
    (void)state;
    for (int pol = 0; pol < 2; pol++) {
        lkv_sim_config_t c = base_cfg();
        c.policy = pol ? LKV_SCHED_POLICY_LAYERKV : LKV_SCHED_POLICY_BASELINE;
        c.work.prompt_len = 16384;
        c.work.output_len = 96;
        c.work.rate       = 0.4;
        c.work.n_requests = 40;
        lkv_sim_result_t r;
        assert_int_equal(lkv_sim_run(&c, &r), LKV_OK);
        double pf = prefill_s("llama2-7b", 1, 16384);
        printf("%s: TTFT %.2f s (queue %.2f), %llu offloads, %llu reloads\n",
               pol ? "layerkv" : "baseline", r.mean_ttft_s, r.mean_queue_s,
               (unsigned long long)r.offload_moves,
               (unsigned long long)r.reload_moves);
        assert_int_equal(r.n_completed, 40);
        assert_int_equal(r.n_failed, 0);
        assert_int_equal(r.output_tokens, 40 * 96);
        assert_true(r.mean_ttft_s >= pf * 0.999);
        assert_true(r.p99_ttft_s >= r.p50_ttft_s);
        assert_true(r.throughput_tok_s > 0);
        if (!pol) {
            assert_true(r.offloaded_bytes == 0 && r.offload_moves == 0);
        }
    }
}

static void sim_is_deterministic_and_routes(void **state)
{
    (void)state;
    lkv_sim_config_t c = base_cfg();
    c.work.trace       = "sharegpt";
    c.work.max_total   = 8192;
    c.work.rate        = 4;
    c.work.n_requests  = 200;
    c.instances        = 4;
    char csv[]         = "/tmp/lkv_sim_csv_XXXXXX";
    int  fd            = mkstemp(csv);
    close(fd);
    c.csv_path = csv;
    lkv_sim_result_t a, b;
    assert_int_equal(lkv_sim_run(&c, &a), LKV_OK);
    c.csv_path = NULL;
    assert_int_equal(lkv_sim_run(&c, &b), LKV_OK);
    assert_int_equal(a.n_completed, 200);
    assert_true(a.mean_ttft_s == b.mean_ttft_s && a.steps == b.steps &&
                a.throughput_tok_s == b.throughput_tok_s);
    /* every instance got work */
    FILE *f = fopen(csv, "r");
    char  line[512];
    int   per[4] = {0};
    assert_non_null(fgets(line, sizeof(line), f));
    while (fgets(line, sizeof(line), f) != NULL) {
        int    id, inst, p, o;
        double t;
        assert_int_equal(
            sscanf(line, "%d,%lf,%d,%d,%d", &id, &t, &p, &o, &inst), 5);
        assert_true(inst >= 0 && inst < 4);
        per[inst]++;
    }
    fclose(f);
    unlink(csv);
    for (int i = 0; i < 4; i++) {
        assert_true(per[i] > 20);
    }
    c.route = LKV_SIM_ROUTE_ROUND_ROBIN;
    assert_int_equal(lkv_sim_run(&c, &b), LKV_OK);
    assert_int_equal(b.n_completed, 200);
}

static void sim_json_has_bench_schema(void **state)
{
    (void)state;
    lkv_sim_config_t c = base_cfg();
    c.work.prompt_len  = 512;
    c.work.output_len  = 8;
    c.work.rate        = 1;
    c.work.n_requests  = 5;
    lkv_sim_result_t r;
    assert_int_equal(lkv_sim_run(&c, &r), LKV_OK);
    char  *buf = NULL;
    size_t len = 0;
    FILE  *f   = open_memstream(&buf, &len);
    lkv_sim_result_write_json(&r, &c, f);
    fclose(f);
    const char *keys[] = {"\"mean_ttft_s\"",        "\"p99_ttft_s\"",
                          "\"mean_queue_s\"",       "\"mean_tpot_s\"",
                          "\"slo_violation_rate\"", "\"throughput_tok_s\"",
                          "\"n_requests\": 5"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        assert_non_null(strstr(buf, keys[i]));
    }
    free(buf);
}

static void sim_bad_config_fails_cleanly(void **state)
{
    (void)state;
    lkv_sim_result_t r;
    lkv_sim_config_t c = base_cfg();
    c.instances        = 0;
    assert_int_equal(lkv_sim_run(&c, &r), LKV_ERR_INVALID);
    c            = base_cfg();
    c.cost.model = "nope";
    assert_int_equal(lkv_sim_run(&c, &r), LKV_ERR_INVALID);
    c            = base_cfg();
    c.work.trace = "nope";
    assert_int_equal(lkv_sim_run(&c, &r), LKV_ERR_NOTFOUND);
    /* a prompt that can never fit the device pool is rejected, not hung */
    c                 = base_cfg();
    c.policy          = LKV_SCHED_POLICY_BASELINE;
    c.num_blocks      = 64; /* 1024 tokens */
    c.work.prompt_len = 4096;
    c.work.output_len = 4;
    c.work.n_requests = 3;
    assert_int_equal(lkv_sim_run(&c, &r), LKV_OK);
    assert_int_equal(r.n_completed, 0);
    assert_true(r.slo_violation_rate == 1.0);
}

int main(void)
{
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(data_dir, sizeof(data_dir), "%s/data/vidur", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sim_idle_ttft_is_prefill_time),
        cmocka_unit_test(sim_pressure_conserves_requests),
        cmocka_unit_test(sim_is_deterministic_and_routes),
        cmocka_unit_test(sim_json_has_bench_schema),
        cmocka_unit_test(sim_bad_config_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
