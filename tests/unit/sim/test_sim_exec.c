/* test_sim_exec.c - the simulated worker: step time from the cost model,
 * offload overlapped with later layers (or not, with sync_offload), reloads
 * in the background reported when done, wait steps, bad plans. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "sim/sim_exec.h"

static char            data_dir[1024];
static lkv_sim_cost_t *cost;

static int setup(void **state)
{
    (void)state;
    lkv_sim_cost_config_t c = lkv_sim_cost_config_default();
    c.data_dir              = data_dir;
    c.link_gbps             = 10.0;
    c.link_latency_us       = 10.0;
    return lkv_sim_cost_create(&c, &cost) == LKV_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    lkv_sim_cost_destroy(&cost);
    return 0;
}

static lkv_sim_exec_t *mk(bool sync)
{
    lkv_sim_exec_config_t ec = {
        .cost = cost, .block_size = 16, .sync_offload = sync};
    lkv_sim_exec_t *e = NULL;
    assert_int_equal(lkv_sim_exec_create(&ec, &e), LKV_OK);
    return e;
}

static void exec_prefill_time_is_cost_model(void **state)
{
    (void)state;
    lkv_sim_exec_t *e = mk(false);
    lkv_plan_seq_t  s = {
         .seq_id = 1, .n_tokens = 2048, .pos0 = 0, .sample = true};
    lkv_step_plan_t   p = {.step_id = 5, .n_seqs = 1, .seqs = &s};
    lkv_step_result_t r;
    int64_t           end = 0;
    assert_int_equal(lkv_sim_exec_step(e, &p, 1000, INT64_MAX, &r, &end),
                     LKV_OK);
    lkv_sim_batch_t b = {
        .n_tokens = 2048, .n_prefill = 1, .prefill_c2_sum = 2048.0 * 2048};
    double want = lkv_sim_cost_step_ns(cost, &b);
    assert_true(fabs((double)(end - 1000) - want) < 64);
    assert_int_equal(r.step_id, 5);
    assert_int_equal(r.n_seqs, 1);
    assert_int_equal(r.seqs[0].token, 1);
    assert_int_equal(r.step_ns, end - 1000);
    assert_int_equal(r.compute_ns, r.step_ns);
    assert_int_equal(r.n_moves_done, 0);
    lkv_sim_exec_destroy(&e);
    assert_null(e);
}

/* Offload half the layers of a 4096-token prefill: 256 blocks per layer of
 * 256 KiB = 64 MiB per layer at 10 GB/s = 6.7 ms per copy vs ~10 ms of
 * compute per layer: fully hidden except the last layer's copy. */
static void exec_offload_overlaps_compute(void **state)
{
    (void)state;
    static int32_t blk[256];
    lkv_plan_seq_t s = {
        .seq_id = 1, .n_tokens = 4096, .pos0 = 0, .sample = true};
    lkv_plan_move_t mv[16];
    for (int i = 0; i < 16; i++) {
        mv[i] = (lkv_plan_move_t){.move_id  = 100 + (uint64_t)i,
                                  .seq_id   = 1,
                                  .layer    = 2 * i,
                                  .kind     = LKV_PLAN_MOVE_OFFLOAD,
                                  .src_tier = 0,
                                  .dst_tier = 1,
                                  .n_blocks = 256,
                                  .src      = blk,
                                  .dst      = blk};
    }
    lkv_step_plan_t p = {
        .step_id = 1, .n_seqs = 1, .seqs = &s, .n_moves = 16, .moves = mv};
    lkv_step_result_t r;
    int64_t           end_async = 0, end_sync = 0;
    lkv_sim_exec_t   *a = mk(false), *y = mk(true);
    assert_int_equal(lkv_sim_exec_step(a, &p, 0, INT64_MAX, &r, &end_async),
                     LKV_OK);
    assert_int_equal(r.n_moves_done, 16);
    assert_int_equal(r.bytes_d2h, 16LL * 256 * 262144);
    int64_t compute = r.compute_ns;
    double  copy1   = lkv_sim_cost_copy_ns(cost, 256LL * 262144);
    printf("compute %.1f ms, one copy %.2f ms, async step %.1f ms\n",
           compute / 1e6, copy1 / 1e6, end_async / 1e6);
    assert_true(end_async <= compute + (int64_t)copy1 + 1000);
    assert_int_equal(lkv_sim_exec_step(y, &p, 0, INT64_MAX, &r, &end_sync),
                     LKV_OK);
    printf("sync step %.1f ms\n", end_sync / 1e6);
    assert_true(end_sync >= compute + 16 * (int64_t)copy1 - 1000);
    lkv_sim_exec_stats_t st;
    lkv_sim_exec_stats(y, &st);
    assert_true(st.stall_ns > 0);
    lkv_sim_exec_destroy(&a);
    lkv_sim_exec_destroy(&y);
}

static void exec_reload_in_background_then_wait_step(void **state)
{
    (void)state;
    static int32_t blk[4096];
    lkv_plan_seq_t s = {
        .seq_id = 2, .n_tokens = 1, .pos0 = 100, .sample = true};
    lkv_plan_move_t mv = {.move_id  = 7,
                          .seq_id   = 3,
                          .layer    = 0,
                          .kind     = LKV_PLAN_MOVE_RELOAD,
                          .src_tier = 1,
                          .dst_tier = 0,
                          .n_blocks = 4096,
                          .src      = blk,
                          .dst      = blk};
    /* 4096 blocks x 256 KiB = 1 GiB at 10 GB/s = 107 ms > one decode step */
    lkv_step_plan_t p = {
        .step_id = 1, .n_seqs = 1, .seqs = &s, .n_moves = 1, .moves = &mv};
    lkv_step_result_t r;
    int64_t           end = 0;
    lkv_sim_exec_t   *e   = mk(false);
    assert_int_equal(lkv_sim_exec_step(e, &p, 0, INT64_MAX, &r, &end), LKV_OK);
    assert_int_equal(r.n_moves_done, 0);
    assert_int_equal(lkv_sim_exec_pending(e), 1);
    assert_true(end < 50000000);
    /* wait step bounded by an earlier arrival */
    lkv_step_plan_t w = {.step_id = 2};
    int64_t         t = end;
    assert_int_equal(lkv_sim_exec_step(e, &w, t, t + 1000, &r, &end), LKV_OK);
    assert_int_equal(end, t + 1000);
    assert_int_equal(r.n_moves_done, 0);
    /* wait step until the reload ends */
    t = end;
    assert_int_equal(lkv_sim_exec_step(e, &w, t, INT64_MAX, &r, &end), LKV_OK);
    double want = lkv_sim_cost_copy_ns(cost, 4096LL * 262144);
    assert_true(fabs((double)end - want) < 10);
    assert_int_equal(r.n_moves_done, 1);
    assert_int_equal(r.moves_done[0], 7);
    assert_int_equal(lkv_sim_exec_pending(e), 0);
    lkv_sim_exec_destroy(&e);
}

static void exec_stage_waits_before_layer(void **state)
{
    (void)state;
    static int32_t blk[64];
    lkv_plan_seq_t s = {
        .seq_id = 4, .n_tokens = 1, .pos0 = 1000, .sample = true};
    lkv_plan_move_t mv = {.move_id  = 9,
                          .seq_id   = 4,
                          .layer    = 31,
                          .kind     = LKV_PLAN_MOVE_STAGE,
                          .src_tier = 1,
                          .dst_tier = 0,
                          .n_blocks = 64,
                          .src      = blk,
                          .dst      = blk};
    lkv_step_plan_t p  = {
         .step_id = 1, .n_seqs = 1, .seqs = &s, .n_moves = 1, .moves = &mv};
    lkv_step_plan_t   p0 = {.step_id = 1, .n_seqs = 1, .seqs = &s};
    lkv_step_result_t r;
    int64_t           e1 = 0, e0 = 0;
    lkv_sim_exec_t   *a = mk(false), *b = mk(false);
    assert_int_equal(lkv_sim_exec_step(a, &p, 0, INT64_MAX, &r, &e1), LKV_OK);
    assert_int_equal(r.n_moves_done, 1);
    assert_int_equal(r.bytes_h2d, 64LL * 262144);
    assert_int_equal(r.bytes_d2h, 1LL * 262144); /* tail block written back */
    assert_int_equal(lkv_sim_exec_step(b, &p0, 0, INT64_MAX, &r, &e0), LKV_OK);
    /* 16 MiB at 10 GB/s = 1.7 ms, hidden behind 31 layers of compute */
    assert_true(e1 - e0 < 200000);
    lkv_sim_exec_destroy(&a);
    lkv_sim_exec_destroy(&b);
}

static void exec_rejects_bad_plan(void **state)
{
    (void)state;
    lkv_sim_exec_t   *e = mk(false);
    lkv_plan_seq_t    s = {.seq_id = 1, .n_tokens = 0};
    lkv_step_plan_t   p = {.step_id = 1, .n_seqs = 1, .seqs = &s};
    lkv_step_result_t r;
    int64_t           end;
    assert_int_equal(lkv_sim_exec_step(e, &p, 0, 0, &r, &end), LKV_ERR_INVALID);
    lkv_plan_move_t mv = {.move_id = 1, .layer = 99, .n_blocks = 1};
    lkv_step_plan_t q  = {.step_id = 1, .n_moves = 1, .moves = &mv};
    assert_int_equal(lkv_sim_exec_step(e, &q, 0, 0, &r, &end), LKV_ERR_INVALID);
    lkv_sim_exec_config_t bad = {.cost = NULL, .block_size = 16};
    lkv_sim_exec_t       *x   = NULL;
    assert_int_equal(lkv_sim_exec_create(&bad, &x), LKV_ERR_INVALID);
    assert_null(x);
    lkv_sim_exec_destroy(&e);
    lkv_sim_exec_destroy(&e);
}

int main(void)
{
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(data_dir, sizeof(data_dir), "%s/data/vidur", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exec_prefill_time_is_cost_model),
        cmocka_unit_test(exec_offload_overlaps_compute),
        cmocka_unit_test(exec_reload_in_background_then_wait_step),
        cmocka_unit_test(exec_stage_waits_before_layer),
        cmocka_unit_test(exec_rejects_bad_plan),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
