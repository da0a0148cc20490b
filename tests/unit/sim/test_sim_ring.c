/* test_sim_ring.c - simulator timing of the prefill staging window: STAGE
 * moves sharing staging blocks (a ring of W sets) are serialised the way
 * the worker serialises them (layer l+W's copy-in and K/V write wait for
 * layer l's write-back); a first chunk copies nothing in.
 * Threading: single-threaded test.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "sim/sim_exec.h"

static char data_dir[1024];

#define NST 16 /* staged layers: the even ones of 32 */
#define NB  256

static int32_t ring[2][NB];
static int32_t own[NST][NB];
static int32_t home[NB];

static lkv_sim_cost_t *mk_cost(double gbps)
{
    lkv_sim_cost_config_t c = lkv_sim_cost_config_default();
    lkv_sim_cost_t       *cost = NULL;

    c.data_dir        = data_dir;
    c.link_gbps       = gbps;
    c.link_latency_us = 10.0;
    assert_int_equal(lkv_sim_cost_create(&c, &cost), LKV_OK);
    return cost;
}

/* One prefill step of 4096 tokens at pos0 with the even layers staged:
 * on a W = 2 ring (shared) or on their own blocks. */
static int64_t run_step(lkv_sim_cost_t *cost, bool shared, int pos0,
                        lkv_step_result_t *r, lkv_sim_exec_stats_t *st)
{
    lkv_sim_exec_config_t ec = {.cost = cost, .block_size = 16};
    lkv_sim_exec_t       *e  = NULL;
    lkv_plan_seq_t        s  = {
                .seq_id = 1, .n_tokens = 4096, .pos0 = pos0, .sample = true};
    lkv_plan_move_t       mv[NST];
    int64_t               end = 0;

    for (int i = 0; i < NST; i++) {
        mv[i] = (lkv_plan_move_t){.move_id  = 10 + (uint64_t)i,
                                  .seq_id   = 1,
                                  .layer    = 2 * i,
                                  .kind     = LKV_PLAN_MOVE_STAGE,
                                  .src_tier = 1,
                                  .dst_tier = 0,
                                  .n_blocks = NB,
                                  .src      = home,
                                  .dst      = shared ? ring[i % 2] : own[i]};
    }
    lkv_step_plan_t p = {
        .step_id = 1, .n_seqs = 1, .seqs = &s, .n_moves = NST, .moves = mv};
    assert_int_equal(lkv_sim_exec_create(&ec, &e), LKV_OK);
    assert_int_equal(lkv_sim_exec_step(e, &p, 0, INT64_MAX, r, &end), LKV_OK);
    lkv_sim_exec_stats(e, st);
    lkv_sim_exec_destroy(&e);
    return end;
}

static void ring_first_chunk_copies_nothing_in(void **state)
{
    (void)state;
    lkv_sim_cost_t      *cost = mk_cost(10.0);
    lkv_step_result_t    r;
    lkv_sim_exec_stats_t st;
    int64_t              e_ring, e_own;

    e_ring = run_step(cost, true, 0, &r, &st);
    assert_int_equal(r.n_moves_done, NST);
    assert_int_equal(r.bytes_h2d, 0); /* first chunk: nothing to copy in */
    assert_true(r.bytes_d2h > 0);     /* every layer written back home */
    e_own = run_step(cost, false, 0, &r, &st);
    assert_int_equal(r.bytes_h2d, 0);
    /* a 64 MiB write-back (6.7 ms at 10 GB/s) hides behind the next layer:
     * the ring costs nothing over private staging */
    printf("# fast link: ring %.1f ms, private staging %.1f ms\n",
           e_ring / 1e6, e_own / 1e6);
    assert_true(e_ring <= e_own + 1000);
    lkv_sim_cost_destroy(&cost);
}

static void ring_waits_for_previous_write_back(void **state)
{
    (void)state;
    lkv_sim_cost_t      *cost = mk_cost(0.5); /* 134 ms per write-back */
    lkv_step_result_t    r;
    lkv_sim_exec_stats_t st_ring, st_own;
    int64_t              e_ring, e_own;
    double               wb = lkv_sim_cost_copy_ns(cost, (int64_t)NB * 262144);

    e_ring = run_step(cost, true, 0, &r, &st_ring);
    e_own  = run_step(cost, false, 0, &r, &st_own);
    printf("# slow link: ring %.1f ms (stall %.1f ms), private %.1f ms, "
           "write-back %.1f ms\n",
           e_ring / 1e6, st_ring.stall_ns / 1e6, e_own / 1e6, wb / 1e6);
    /* layer l+2 of the ring cannot write before layer l's write-back ends:
     * the compute stalls; private staging never does */
    assert_true(st_ring.stall_ns > 0);
    assert_int_equal(st_own.stall_ns, 0);
    /* the write-backs share one link either way: the last one ends after
     * all NST have run back to back */
    assert_true(e_own >= (int64_t)(NST * wb) - 1000);
    assert_true(e_ring >= e_own - 1000);
    /* a later chunk copies the old blocks in: after the write-back */
    e_ring = run_step(cost, true, 4096, &r, &st_ring);
    assert_int_equal(r.bytes_h2d, (int64_t)NST * NB * 262144);
    assert_true(st_ring.stall_ns > 0);
    lkv_sim_cost_destroy(&cost);
}

int main(void)
{
    const char *src = getenv("LKV_SOURCE_DIR");
    for (int j = 0; j < NB; j++) { /* distinct device block ids */
        ring[0][j] = j;
        ring[1][j] = NB + j;
        for (int i = 0; i < NST; i++) {
            own[i][j] = (2 + i) * NB + j;
        }
        home[j] = j;
    }
    snprintf(data_dir, sizeof(data_dir), "%s/data/vidur", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_first_chunk_copies_nothing_in),
        cmocka_unit_test(ring_waits_for_previous_write_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
