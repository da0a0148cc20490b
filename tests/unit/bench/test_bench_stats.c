/* test_bench_stats.c - `layerkv bench` statistics: percentiles as the
 * simulator computes them, the summary's definitions (completed-only means,
 * TPOT over >= 2 tokens, violations over all requests incl. rejected and
 * failed, makespan throughput), CSV columns, deterministic prompts, and
 * argument checks of lkv_bench_run. Single-threaded, no server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/bench.h"

static void test_pct(void **state)
{
    (void)state;
    double v[] = {1, 2, 3, 4, 5};
    assert_true(lkv_bench_pct(v, 5, 0.0) == 1.0);
    assert_true(lkv_bench_pct(v, 5, 0.5) == 3.0);
    assert_true(lkv_bench_pct(v, 5, 1.0) == 5.0);
    assert_true(lkv_bench_pct(v, 5, 0.99) > 4.95 && lkv_bench_pct(v, 5, 0.99) < 4.97);
    assert_true(lkv_bench_pct(v, 0, 0.5) == 0.0);
    assert_true(lkv_bench_pct(v, 1, 0.99) == 1.0);
}

static lkv_bench_record_t ok_rec(double ttft, double queue, double tpot,
                                 int ntok, double finish)
{
    lkv_bench_record_t r = {.outcome         = LKV_BENCH_OK,
                            .n_prompt_tokens = 10,
                            .n_tokens        = ntok,
                            .ttft_s          = ttft,
                            .queue_s         = queue,
                            .tpot_s          = tpot,
                            .e2e_s           = ttft + tpot * (ntok - 1),
                            .client_ttft_s   = ttft + 0.001,
                            .finish_s        = finish};
    snprintf(r.finish_reason, sizeof r.finish_reason, "length");
    return r;
}

static void test_summary(void **state)
{
    (void)state;
    lkv_bench_req_t reqs[5] = {
        {0, 10, 4}, {1000000000, 10, 4}, {2000000000, 10, 4},
        {3000000000LL, 10, 4}, {4000000000LL, 10, 4}};
    lkv_bench_record_t recs[5];
    recs[0] = ok_rec(1.0, 0.5, 0.10, 4, 2.0);
    recs[1] = ok_rec(3.0, 2.0, 0.30, 4, 5.0); /* violates TPOT 0.2 */
    recs[2] = ok_rec(0.5, 0.0, 0.0, 1, 10.0); /* 1 token: no TPOT sample */
    memset(&recs[3], 0, sizeof recs[3]);
    recs[3].outcome = LKV_BENCH_REJECTED;
    recs[3].status  = LKV_ERR_REJECTED;
    memset(&recs[4], 0, sizeof recs[4]);
    recs[4].outcome = LKV_BENCH_FAILED;
    recs[4].status  = LKV_ERR_TIMEOUT;

    lkv_bench_summary_t s;
    assert_int_equal(lkv_bench_summarise(reqs, recs, 5, 2.5, 0.2, &s), LKV_OK);
    assert_int_equal(s.n_requests, 5);
    assert_int_equal(s.n_completed, 3);
    assert_int_equal(s.n_rejected, 1);
    assert_int_equal(s.n_failed, 1);
    assert_int_equal(s.output_tokens, 9);
    assert_int_equal(s.prompt_tokens, 30);
    assert_true(fabs(s.mean_ttft_s - 1.5) < 1e-12);
    assert_true(fabs(s.mean_queue_s - 2.5 / 3) < 1e-12);
    assert_true(fabs(s.mean_prefill_s - (s.mean_ttft_s - s.mean_queue_s)) < 1e-12);
    assert_true(fabs(s.p50_ttft_s - 1.0) < 1e-12);
    assert_true(fabs(s.mean_tpot_s - 0.2) < 1e-12); /* (0.1 + 0.3) / 2 */
    /* violations: recs[1] (TTFT 3 > 2.5 and TPOT), rejected, failed */
    assert_true(fabs(s.slo_violation_rate - 3.0 / 5) < 1e-12);
    assert_true(fabs(s.ttft_attainment - 2.0 / 3) < 1e-12);
    assert_true(fabs(s.tpot_attainment - 2.0 / 3) < 1e-12);
    /* makespan: first arrival 0 -> last finish 10 s */
    assert_true(fabs(s.makespan_s - 10.0) < 1e-12);
    assert_true(fabs(s.throughput_tok_s - 0.9) < 1e-12);
    assert_true(fabs(s.throughput_req_s - 0.3) < 1e-12);
    assert_true(fabs(s.mean_client_ttft_s - 1.501) < 1e-9);

    /* no SLOs: only non-completed requests violate */
    assert_int_equal(lkv_bench_summarise(reqs, recs, 5, 0, 0, &s), LKV_OK);
    assert_true(fabs(s.slo_violation_rate - 2.0 / 5) < 1e-12);
    assert_true(s.ttft_attainment == 1.0 && s.tpot_attainment == 1.0);

    /* empty and invalid */
    assert_int_equal(lkv_bench_summarise(NULL, NULL, 0, 0, 0, &s), LKV_OK);
    assert_int_equal(s.n_requests, 0);
    assert_true(s.mean_ttft_s == 0 && s.throughput_tok_s == 0);
    assert_int_equal(lkv_bench_summarise(reqs, recs, 5, 0, 0, NULL), LKV_ERR_INVALID);
    assert_int_equal(lkv_bench_summarise(NULL, recs, 5, 0, 0, &s), LKV_ERR_INVALID);
}

static void test_json_and_csv(void **state)
{
    (void)state;
    lkv_bench_req_t    reqs[2] = {{0, 7, 3}, {500000000, 9, 3}};
    lkv_bench_record_t recs[2];
    recs[0] = ok_rec(0.2, 0.1, 0.05, 3, 1.0);
    memset(&recs[1], 0, sizeof recs[1]);
    recs[1].outcome = LKV_BENCH_REJECTED;
    recs[1].status  = LKV_ERR_TOOLONG;
    snprintf(recs[1].finish_reason, sizeof recs[1].finish_reason, "error");
    lkv_bench_summary_t s;
    assert_int_equal(lkv_bench_summarise(reqs, recs, 2, 1, 1, &s), LKV_OK);

    char  *buf = NULL;
    size_t len = 0;
    FILE  *f   = open_memstream(&buf, &len);
    assert_non_null(f);
    lkv_bench_summary_write_json(&s, 2, f);
    fclose(f);
    const char *keys[] = {"\"mean_ttft_s\"", "\"p99_ttft_s\"", "\"mean_queue_s\"",
                          "\"mean_tpot_s\"", "\"slo_violation_rate\"",
                          "\"throughput_tok_s\"", "\"n_requests\": 2,"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        assert_non_null(strstr(buf, keys[i]));
    }
    free(buf);

    f = open_memstream(&buf, &len);
    assert_non_null(f);
    lkv_bench_write_csv(reqs, recs, 2, 2.5, 1, 1, true, f);
    fclose(f);
    assert_true(strncmp(buf, "id,arrival_s,prompt_len,output_len,instance,status,"
                             "ttft_s,queue_s,tpot_s,e2e_s,n_generated,"
                             "preemptions,offloaded_layers,slo_violated,",
                        strlen("id,arrival_s,prompt_len,output_len,instance,"
                               "status,ttft_s,queue_s,tpot_s,e2e_s,"
                               "n_generated,preemptions,offloaded_layers,"
                               "slo_violated,")) == 0);
    int lines = 0;
    for (char *p = buf; *p; p++) {
        lines += *p == '\n';
    }
    assert_int_equal(lines, 3);
    assert_non_null(strstr(buf, "\n0,0.000000,7,3,0,ok,"));
    assert_non_null(strstr(buf, "\n1,0.500000,9,3,0,rejected,"));
    assert_non_null(strstr(buf, "LKV_ERR_TOOLONG"));
    free(buf);
}

static void test_prompt_and_args(void **state)
{
    (void)state;
    int32_t a[64], b[64], c[64];
    lkv_bench_make_prompt(7, 3, 64, 300, 310, a);
    lkv_bench_make_prompt(7, 3, 64, 300, 310, b);
    lkv_bench_make_prompt(7, 4, 64, 300, 310, c);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    for (int i = 0; i < 64; i++) {
        assert_true(a[i] >= 300 && a[i] <= 310);
    }
    lkv_bench_make_prompt(1, 0, 8, 5, 5, a);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(a[i], 5);
    }

    lkv_bench_config_t cfg = lkv_bench_config_default();
    lkv_bench_req_t    r   = {0, 4, 4};
    lkv_bench_record_t rec;
    assert_int_equal(lkv_bench_run(NULL, &cfg, &r, 1, &rec, NULL), LKV_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_json_and_csv),
        cmocka_unit_test(test_prompt_and_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
