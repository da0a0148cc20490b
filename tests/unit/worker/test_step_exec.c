/* test_step_exec.c - the step executor on stories260K driven by hand-built
 * plans: offload in the prefill step, a decode refused while a layer is on
 * the host, stage (stream) with tail write-back, growth of a streamed layer,
 * reload waited for by the same step's decode, finish and reuse of a
 * sequence id; and plans that do not match the worker's state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "kernels/kernels.h"
#include "kvstore/kv_alloc.h"
#include "worker/model.h"
#include "worker/seq_table.h"
#include "worker/step_exec.h"

#define DEV LKV_KV_TIER_DEVICE
#define HOST LKV_KV_TIER_HOST

typedef struct {
    lkv_kern_backend_t *be;
    lkv_model_file_t   *mf;
    lkv_model_t        *m;
    lkv_step_exec_t    *x;
    size_t              block_bytes;
} fx_t;

static const int32_t tom[7]    = {1, 274, 287, 269, 345, 400, 428};
static const int32_t golden[6] = {432, 392, 412, 444, 432, 263};

static int setup(void **state)
{
    fx_t                  *fx = calloc(1, sizeof(*fx));
    char                   p[4096];
    const char            *src = getenv("LKV_SOURCE_DIR");
    lkv_step_exec_config_t c   = lkv_step_exec_config_default();

    snprintf(p, sizeof(p), "%s/models/stories260K/stories260K.gguf",
             src ? src : ".");
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &kc, &fx->be), LKV_OK);
    assert_int_equal(lkv_model_file_open(p, NULL, &fx->mf), LKV_OK);
    assert_int_equal(lkv_model_create(fx->be, fx->mf, &fx->m), LKV_OK);
    c.block_size           = 4;
    c.n_device_blocks      = 64;
    c.n_host_blocks        = 16;
    c.max_seqs             = 4;
    c.max_batch_tokens     = 32;
    c.max_blocks_per_layer = 8;
    assert_int_equal(lkv_step_exec_create(fx->m, &c, &fx->x), LKV_OK);
    fx->block_bytes = lkv_model_block_bytes(fx->m, 4, LKV_DTYPE_F32);
    *state          = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lkv_step_exec_destroy(&fx->x);
    lkv_model_destroy(&fx->m);
    lkv_model_file_close(&fx->mf);
    lkv_kern_backend_close(&fx->be);
    free(fx);
    return 0;
}

static lkv_plan_seq_t seq(uint64_t id, const int32_t *t, int n, int pos0)
{
    lkv_plan_seq_t s;
    memset(&s, 0, sizeof(s));
    s.seq_id   = id;
    s.tokens   = t;
    s.n_tokens = n;
    s.pos0     = pos0;
    s.sample   = true;
    return s;
}

static bool has(const uint64_t *ids, int n, uint64_t id)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

static void step_exec_offload_stage_reload_roundtrip(void **state)
{
    fx_t             *fx = *state;
    lkv_step_result_t r;
    int32_t           b[5][2];
    lkv_plan_append_t ap[5];
    lkv_plan_seq_t    s;
    lkv_step_plan_t   p;

    /* step 1: prefill 7 tokens (2 blocks per layer), offload layers 1, 3 */
    for (int l = 0; l < 5; l++) {
        b[l][0] = 2 * l;
        b[l][1] = 2 * l + 1;
        ap[l]   = (lkv_plan_append_t){.seq_id = 1, .layer = l, .tier = DEV,
                                      .n_blocks = 2, .blocks = b[l]};
    }
    const int32_t   h1[2] = {0, 1}, h3[2] = {2, 3};
    lkv_plan_move_t mv[2] = {
        {.move_id = 101, .seq_id = 1, .layer = 1, .kind = LKV_PLAN_MOVE_OFFLOAD,
         .src_tier = DEV, .dst_tier = HOST, .n_blocks = 2, .src = b[1],
         .dst = h1},
        {.move_id = 103, .seq_id = 1, .layer = 3, .kind = LKV_PLAN_MOVE_OFFLOAD,
         .src_tier = DEV, .dst_tier = HOST, .n_blocks = 2, .src = b[3],
         .dst = h3},
    };
    s = seq(1, tom, 7, 0);
    p = (lkv_step_plan_t){.step_id = 1, .n_seqs = 1, .seqs = &s,
                          .n_appends = 5, .appends = ap, .n_moves = 2,
                          .moves = mv};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.n_seqs, 1);
    assert_int_equal(r.seqs[0].status, LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[0]);
    assert_int_equal(r.n_moves_done, 2);
    assert_true(has(r.moves_done, 2, 101) && has(r.moves_done, 2, 103));
    assert_int_equal(r.bytes_d2h, (int64_t)(4 * fx->block_bytes));
    assert_true(r.compute_ns > 0 && r.step_ns >= r.compute_ns);

    /* step 2: decode without bringing layers back: refused, step ok */
    s = seq(1, &golden[0], 1, 7);
    p = (lkv_step_plan_t){.step_id = 2, .n_seqs = 1, .seqs = &s};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].status, LKV_ERR_INVALID);
    assert_int_equal(r.seqs[0].token, -1);

    /* step 3: stream layers 1 and 3 (position 7 is in block 1) */
    const int32_t   st1[2] = {20, 21}, st3[2] = {22, 23};
    lkv_plan_move_t sm[2]  = {
        {.move_id = 201, .seq_id = 1, .layer = 1, .kind = LKV_PLAN_MOVE_STAGE,
          .src_tier = HOST, .dst_tier = DEV, .n_blocks = 2, .src = h1,
          .dst = st1},
        {.move_id = 203, .seq_id = 1, .layer = 3, .kind = LKV_PLAN_MOVE_STAGE,
          .src_tier = HOST, .dst_tier = DEV, .n_blocks = 2, .src = h3,
          .dst = st3},
    };
    p = (lkv_step_plan_t){.step_id = 3, .n_seqs = 1, .seqs = &s,
                          .n_moves = 2, .moves = sm};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].status, LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[1]);
    assert_int_equal(r.n_moves_done, 2);
    assert_int_equal(r.bytes_h2d, (int64_t)(4 * fx->block_bytes));
    assert_int_equal(r.bytes_d2h, (int64_t)(2 * fx->block_bytes)); /* tails */

    /* step 4: position 8 needs a new block in every layer; streamed layers
     * grow on the host and stage 3 blocks into staging blocks */
    int32_t           nb[5][1] = {{30}, {4}, {32}, {5}, {34}};
    lkv_plan_append_t ap2[5];
    for (int l = 0; l < 5; l++) {
        ap2[l] = (lkv_plan_append_t){.seq_id = 1, .layer = l,
                                     .tier = (l & 1) ? HOST : DEV,
                                     .n_blocks = 1, .blocks = nb[l]};
    }
    const int32_t   hs1[3] = {0, 1, 4}, hs3[3] = {2, 3, 5};
    const int32_t   ds1[3] = {40, 41, 42}, ds3[3] = {43, 44, 45};
    lkv_plan_move_t sm2[2] = {
        {.move_id = 301, .seq_id = 1, .layer = 1, .kind = LKV_PLAN_MOVE_STAGE,
         .src_tier = HOST, .dst_tier = DEV, .n_blocks = 3, .src = hs1,
         .dst = ds1},
        {.move_id = 303, .seq_id = 1, .layer = 3, .kind = LKV_PLAN_MOVE_STAGE,
         .src_tier = HOST, .dst_tier = DEV, .n_blocks = 3, .src = hs3,
         .dst = ds3},
    };
    s = seq(1, &golden[1], 1, 8);
    p = (lkv_step_plan_t){.step_id = 4, .n_seqs = 1, .seqs = &s,
                          .n_appends = 5, .appends = ap2, .n_moves = 2,
                          .moves = sm2};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[2]);

    /* step 5: reload both layers; the same step's decode waits for them */
    const int32_t   rd1[3] = {50, 51, 52}, rd3[3] = {53, 54, 55};
    lkv_plan_move_t rm[2]  = {
        {.move_id = 401, .seq_id = 1, .layer = 1, .kind = LKV_PLAN_MOVE_RELOAD,
          .src_tier = HOST, .dst_tier = DEV, .n_blocks = 3, .src = hs1,
          .dst = rd1},
        {.move_id = 403, .seq_id = 1, .layer = 3, .kind = LKV_PLAN_MOVE_RELOAD,
          .src_tier = HOST, .dst_tier = DEV, .n_blocks = 3, .src = hs3,
          .dst = rd3},
    };
    s = seq(1, &golden[2], 1, 9);
    p = (lkv_step_plan_t){.step_id = 5, .n_seqs = 1, .seqs = &s,
                          .n_moves = 2, .moves = rm};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[3]);
    int done = r.n_moves_done;
    if (done < 2) {
        assert_int_equal(lkv_step_exec_sync(fx->x), LKV_OK);
    }

    /* step 6: all layers on the device again */
    s = seq(1, &golden[3], 1, 10);
    p = (lkv_step_plan_t){.step_id = 6, .n_seqs = 1, .seqs = &s};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[4]);
    assert_int_equal(done + r.n_moves_done, 2);
    assert_int_equal(lkv_step_exec_moves_in_flight(fx->x), 0);

    /* step 7: finish; step 8: the id starts over from scratch */
    uint64_t fin = 1;
    p = (lkv_step_plan_t){.step_id = 7, .n_finished = 1, .finished = &fin};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    s = seq(1, tom, 7, 0);
    p = (lkv_step_plan_t){.step_id = 8, .n_seqs = 1, .seqs = &s,
                          .n_appends = 5, .appends = ap};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].token, golden[0]);
    p = (lkv_step_plan_t){.step_id = 9, .n_finished = 1, .finished = &fin};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);

    lkv_step_exec_stats_t stats;
    lkv_step_exec_stats(fx->x, &stats);
    assert_int_equal(stats.n_offloads, 2);
    assert_int_equal(stats.n_stages, 4);
    assert_int_equal(stats.n_reloads, 2);
}

static void step_exec_rejects_mismatched_plans(void **state)
{
    fx_t             *fx = *state;
    lkv_step_result_t r;
    lkv_step_plan_t   p;
    int32_t           blk[2] = {0, 1};
    int32_t           out[1] = {64}; /* past the device pool */
    lkv_plan_append_t a = {.seq_id = 7, .layer = 0, .tier = DEV,
                           .n_blocks = 1, .blocks = out};
    lkv_plan_seq_t    s = seq(7, tom, 7, 0);

    /* append outside the pool: the whole step is refused, nothing applied */
    p = (lkv_step_plan_t){.step_id = 20, .n_seqs = 1, .seqs = &s,
                          .n_appends = 1, .appends = &a};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_ERR_INVALID);
    assert_int_equal(r.status, LKV_ERR_INVALID);
    /* a layer beyond the model */
    a = (lkv_plan_append_t){.seq_id = 7, .layer = 5, .tier = DEV,
                            .n_blocks = 1, .blocks = blk};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_ERR_INVALID);
    /* a sequence with no blocks at all fails alone; the step is fine */
    p = (lkv_step_plan_t){.step_id = 21, .n_seqs = 1, .seqs = &s};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].status, LKV_ERR_INVALID);
    /* device blocks on layer 0, then host blocks appended to it: refused */
    a = (lkv_plan_append_t){.seq_id = 7, .layer = 0, .tier = DEV,
                            .n_blocks = 2, .blocks = blk};
    p = (lkv_step_plan_t){.step_id = 22, .n_appends = 1, .appends = &a};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    a.tier = HOST;
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_ERR_INVALID);
    /* a table too short for the positions: that sequence fails */
    s = seq(7, tom, 7, 0);
    p = (lkv_step_plan_t){.step_id = 23, .n_seqs = 1, .seqs = &s};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.seqs[0].status, LKV_ERR_INVALID);
    /* moves that cannot run are reported failed, the step goes on */
    int32_t         hb[2] = {8, 9}, bad[2] = {8, 99};
    lkv_plan_move_t mv[4] = {
        {.move_id = 900, .seq_id = 7, .layer = 0, .kind = LKV_PLAN_MOVE_OFFLOAD,
         .src_tier = DEV, .dst_tier = HOST, .n_blocks = 2, .src = blk,
         .dst = bad},
        {.move_id = 901, .seq_id = 99, .layer = 0,
         .kind = LKV_PLAN_MOVE_OFFLOAD, .src_tier = DEV, .dst_tier = HOST,
         .n_blocks = 2, .src = blk, .dst = hb},
        {.move_id = 902, .seq_id = 7, .layer = 0, .kind = LKV_PLAN_MOVE_RELOAD,
         .src_tier = DEV, .dst_tier = HOST, .n_blocks = 2, .src = blk,
         .dst = hb},
        {.move_id = 903, .seq_id = 7, .layer = 0, .kind = LKV_PLAN_MOVE_OFFLOAD,
         .src_tier = DEV, .dst_tier = LKV_KV_TIER_REMOTE, .n_blocks = 2,
         .src = blk, .dst = hb},
    };
    p = (lkv_step_plan_t){.step_id = 24, .n_moves = 4, .moves = mv};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.n_moves_failed, 4);
    assert_int_equal(r.n_moves_done, 0);
    /* a valid offload of the same layer still works afterwards */
    p = (lkv_step_plan_t){.step_id = 25, .n_moves = 1, .moves = &mv[1]};
    mv[1].seq_id = 7;
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
    assert_int_equal(r.n_moves_done, 1);
    assert_int_equal(r.moves_done[0], 901);
    /* too many sequences */
    lkv_plan_seq_t many[5];
    for (int i = 0; i < 5; i++) {
        many[i] = seq((uint64_t)(50 + i), tom, 1, 0);
    }
    p = (lkv_step_plan_t){.step_id = 26, .n_seqs = 5, .seqs = many};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_ERR_INVALID);
    uint64_t fin = 7;
    p = (lkv_step_plan_t){.step_id = 27, .n_finished = 1, .finished = &fin};
    assert_int_equal(lkv_step_exec_run(fx->x, &p, &r), LKV_OK);
}

static void seq_table_tracks_layers(void **state)
{
    (void)state;
    lkv_seq_table_t *t = NULL;
    lkv_seq_entry_t *e, *e2;
    int32_t          b[4] = {1, 2, 3, 4};

    assert_int_equal(lkv_seq_table_create(0, 1, 1, &t), LKV_ERR_INVALID);
    assert_int_equal(lkv_seq_table_create(3, 2, 3, &t), LKV_OK);
    assert_int_equal(lkv_seq_table_get(t, 10, &e), LKV_OK);
    assert_int_equal(lkv_seq_table_get(t, 11, &e2), LKV_OK);
    assert_int_equal(lkv_seq_table_get(t, 12, &e2), LKV_ERR_NOSPACE);
    assert_int_equal(lkv_seq_table_append(t, e, 1, DEV, b, 2), LKV_OK);
    assert_int_equal(lkv_seq_table_append(t, e, 1, HOST, b, 1),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_seq_table_append(t, e, 1, DEV, b, 2),
                     LKV_ERR_INVALID); /* capacity 3 */
    assert_int_equal(lkv_seq_table_append(t, e, 3, DEV, b, 1),
                     LKV_ERR_INVALID);
    assert_int_equal(e->layers[1].n_blocks, 2);
    assert_int_equal(lkv_seq_table_set(t, e, 1, HOST, b + 1, 3), LKV_OK);
    assert_int_equal(e->layers[1].tier, HOST);
    assert_int_equal(e->layers[1].blocks[2], 4);
    assert_int_equal(lkv_seq_table_n_live(t), 2);
    assert_int_equal(lkv_seq_table_remove(t, 10), LKV_OK);
    assert_int_equal(lkv_seq_table_remove(t, 10), LKV_ERR_NOTFOUND);
    assert_null(lkv_seq_table_find(t, 10));
    assert_int_equal(lkv_seq_table_get(t, 12, &e2), LKV_OK);
    assert_int_equal(e2->layers[1].n_blocks, 0);
    lkv_seq_table_destroy(&t);
    assert_null(t);
    lkv_seq_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(step_exec_offload_stage_reload_roundtrip),
        cmocka_unit_test(step_exec_rejects_mismatched_plans),
        cmocka_unit_test(seq_table_tracks_layers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
