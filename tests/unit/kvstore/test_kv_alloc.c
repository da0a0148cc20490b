/* test_kv_alloc.c - the layer-wise KV metadata allocator: unit tests of every
 * operation and error, and a randomized model test (issue 3 item 2) running
 * LKV_MODEL_TEST_OPS operations (default 1,000,000; 200,000 under ASan)
 * against a simple reference model, checking every invariant after each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "kvstore/kv_alloc.h"

static lkv_kv_alloc_t *make(int layers, int bs, int dev, int host, int rem,
                            int max_seqs, int max_bpl)
{
    lkv_kv_alloc_config_t cfg = lkv_kv_alloc_config_default();
    cfg.n_layers              = layers;
    cfg.block_size            = bs;
    cfg.n_blocks[0]           = dev;
    cfg.n_blocks[1]           = host;
    cfg.n_blocks[2]           = rem;
    cfg.max_seqs              = max_seqs;
    cfg.max_blocks_per_layer  = max_bpl;
    lkv_kv_alloc_t *a         = NULL;
    assert_int_equal(lkv_kv_alloc_create(&cfg, &a), LKV_OK);
    assert_non_null(a);
    return a;
}

#define CHECK_OK(a_) assert_int_equal(lkv_kv_alloc_check(a_), LKV_OK)

static void create_bad_config_is_invalid(void **state)
{
    lkv_kv_alloc_config_t cfg = lkv_kv_alloc_config_default();
    lkv_kv_alloc_t       *a   = NULL;

    assert_int_equal(lkv_kv_alloc_create(NULL, &a), LKV_ERR_INVALID);
    cfg.n_layers = 0;
    assert_int_equal(lkv_kv_alloc_create(&cfg, &a), LKV_ERR_INVALID);
    cfg             = lkv_kv_alloc_config_default();
    cfg.block_size  = -1;
    assert_int_equal(lkv_kv_alloc_create(&cfg, &a), LKV_ERR_INVALID);
    cfg             = lkv_kv_alloc_config_default();
    cfg.n_blocks[1] = -5;
    assert_int_equal(lkv_kv_alloc_create(&cfg, &a), LKV_ERR_INVALID);
    assert_null(a);
    lkv_kv_alloc_destroy(&a); /* NULL is fine */
    lkv_kv_alloc_destroy(NULL);
    assert_string_equal(lkv_kv_tier_name(LKV_KV_TIER_HOST), "host");
}

static void seq_add_free_and_errors(void **state)
{
    lkv_kv_alloc_t *a = make(2, 4, 8, 8, 0, 2, 4);

    assert_int_equal(lkv_kv_seq_add(a, 7), LKV_OK);
    assert_int_equal(lkv_kv_seq_add(a, 7), LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_seq_add(a, 8), LKV_OK);
    assert_int_equal(lkv_kv_seq_add(a, 9), LKV_ERR_NOSPACE);
    assert_true(lkv_kv_seq_exists(a, 7));
    assert_false(lkv_kv_seq_exists(a, 9));
    assert_int_equal(lkv_kv_live_seqs(a), 2);
    assert_int_equal(lkv_kv_seq_free(a, 9), LKV_ERR_NOTFOUND);
    assert_int_equal(lkv_kv_seq_free(a, 7), LKV_OK);
    assert_false(lkv_kv_seq_exists(a, 7));
    assert_int_equal(lkv_kv_seq_add(a, 7), LKV_OK); /* id reuse */
    assert_int_equal(lkv_kv_layer_tokens(a, 7, 0), 0);
    assert_int_equal(lkv_kv_layer_tokens(a, 99, 0), -1);
    assert_int_equal(lkv_kv_layer_residency(a, 7, 1), LKV_KV_RES_NONE);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
    assert_null(a);
}

static void append_allocates_per_layer(void **state)
{
    lkv_kv_alloc_t *a = make(3, 4, 8, 8, 4, 4, 4);
    lkv_kv_block_t  nb[8];
    int             n = -1;

    assert_int_equal(lkv_kv_seq_add(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_blocks_needed(a, 1, 0, 5), 2);
    assert_int_equal(lkv_kv_blocks_needed(a, 2, 0, 5), -1);
    assert_int_equal(lkv_kv_append(a, 1, 0, 5, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 2);
    assert_int_not_equal(nb[0], nb[1]);
    assert_int_equal(lkv_kv_layer_tokens(a, 1, 0), 5);
    assert_int_equal(lkv_kv_layer_tokens(a, 1, 1), 0);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 0), LKV_KV_RES_DEVICE);
    /* filling the partial block allocates nothing */
    assert_int_equal(lkv_kv_append(a, 1, 0, 3, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 6);
    assert_int_equal(lkv_kv_used_blocks(a, LKV_KV_TIER_DEVICE), 2);
    assert_int_equal(lkv_kv_total_blocks(a, LKV_KV_TIER_DEVICE), 8);
    assert_int_equal(lkv_kv_layer_used_blocks(a, LKV_KV_TIER_DEVICE, 0), 2);
    assert_int_equal(lkv_kv_layer_used_blocks(a, LKV_KV_TIER_DEVICE, 1), 0);
    /* a layer may start in another tier */
    assert_int_equal(lkv_kv_append(a, 1, 1, 1, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 1), LKV_KV_RES_HOST);
    /* wrong tier, unknown seq, bad layer, negative tokens, small max_new */
    assert_int_equal(lkv_kv_append(a, 1, 1, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append(a, 2, 0, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append(a, 1, 3, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append(a, 1, 0, -1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append(a, 1, 0, 9, LKV_KV_TIER_DEVICE, nb, 1, &n),
                     LKV_ERR_INVALID);
    /* table capacity (4 blocks = 16 tokens) */
    assert_int_equal(lkv_kv_append(a, 1, 0, 9, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_layer_tokens(a, 1, 0), 8);
    /* table contents */
    lkv_kv_tier_t         tier;
    const lkv_kv_block_t *tab;
    int                   cnt;
    assert_int_equal(lkv_kv_layer_blocks(a, 1, 0, &tier, &tab, &cnt), LKV_OK);
    assert_int_equal(tier, LKV_KV_TIER_DEVICE);
    assert_int_equal(cnt, 2);
    assert_int_equal(lkv_kv_layer_blocks(a, 5, 0, &tier, &tab, &cnt),
                     LKV_ERR_NOTFOUND);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

static void full_tier_is_nospace_and_allocates_nothing(void **state)
{
    lkv_kv_alloc_t *a = make(2, 4, 4, 2, 0, 4, 8);
    lkv_kv_block_t  nb[8];
    int             n = 42;

    assert_int_equal(lkv_kv_seq_add(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 1, 0, 12, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 3);
    /* 2 more blocks needed, 1 free */
    n = 42;
    assert_int_equal(lkv_kv_append(a, 1, 1, 8, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_NOSPACE);
    assert_int_equal(n, 42); /* out-param untouched */
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 1);
    assert_int_equal(lkv_kv_layer_tokens(a, 1, 1), 0);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 1), LKV_KV_RES_NONE);
    /* the remote tier has no blocks at all */
    assert_int_equal(lkv_kv_append(a, 1, 1, 1, LKV_KV_TIER_REMOTE, nb, 8, &n),
                     LKV_ERR_NOSPACE);
    /* moving 3 blocks to a 2-block host tier */
    lkv_kv_copy_t c;
    assert_int_equal(lkv_kv_move_begin(a, 1, 0, LKV_KV_TIER_HOST, &c),
                     LKV_ERR_NOSPACE);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 0), LKV_KV_RES_DEVICE);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 2);
    CHECK_OK(a);
    assert_int_equal(lkv_kv_seq_free(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 4);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

static void move_end_and_abort(void **state)
{
    lkv_kv_alloc_t *a = make(2, 4, 8, 8, 8, 4, 8);
    lkv_kv_block_t  nb[8];
    int             n;
    lkv_kv_copy_t   c;

    assert_int_equal(lkv_kv_seq_add(a, 3), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 3, 1, 6, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_move_begin(a, 3, 0, LKV_KV_TIER_HOST, &c),
                     LKV_ERR_INVALID); /* no blocks */
    assert_int_equal(lkv_kv_move_begin(a, 3, 1, LKV_KV_TIER_DEVICE, &c),
                     LKV_ERR_INVALID); /* same tier */
    assert_int_equal(lkv_kv_move_begin(a, 4, 1, LKV_KV_TIER_HOST, &c),
                     LKV_ERR_NOTFOUND);
    assert_int_equal(lkv_kv_move_end(a, 3, 1), LKV_ERR_INVALID); /* none */
    assert_int_equal(lkv_kv_move_begin(a, 3, 1, LKV_KV_TIER_HOST, &c), LKV_OK);
    assert_int_equal(c.seq_id, 3);
    assert_int_equal(c.layer, 1);
    assert_int_equal(c.src_tier, LKV_KV_TIER_DEVICE);
    assert_int_equal(c.dst_tier, LKV_KV_TIER_HOST);
    assert_int_equal(c.n_blocks, 2);
    assert_int_equal(c.src[0], nb[0]);
    assert_int_equal(c.src[1], nb[1]);
    lkv_kv_block_t dst0 = c.dst[0], dst1 = c.dst[1];
    assert_int_equal(lkv_kv_layer_residency(a, 3, 1), LKV_KV_RES_MOVING);
    /* both tiers hold the layer while it moves */
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 6);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 6);
    assert_int_equal(lkv_kv_append(a, 3, 1, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_move_begin(a, 3, 1, LKV_KV_TIER_REMOTE, &c),
                     LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_stage_begin(a, 3, 1, &c), LKV_ERR_BUSY);
    CHECK_OK(a);
    assert_int_equal(lkv_kv_move_end(a, 3, 1), LKV_OK);
    assert_int_equal(lkv_kv_layer_residency(a, 3, 1), LKV_KV_RES_HOST);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 8);
    assert_int_equal(lkv_kv_layer_used_blocks(a, LKV_KV_TIER_HOST, 1), 2);
    lkv_kv_tier_t         tier;
    const lkv_kv_block_t *tab;
    assert_int_equal(lkv_kv_layer_blocks(a, 3, 1, &tier, &tab, &n), LKV_OK);
    assert_int_equal(tier, LKV_KV_TIER_HOST);
    assert_int_equal(n, 2);
    assert_int_equal(tab[0], dst0);
    assert_int_equal(tab[1], dst1);
    /* appends now go to the host tier */
    assert_int_equal(lkv_kv_append(a, 3, 1, 3, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 1);
    /* reload, then abort: back on the host, device untouched */
    assert_int_equal(lkv_kv_move_begin(a, 3, 1, LKV_KV_TIER_DEVICE, &c), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 5);
    assert_int_equal(lkv_kv_move_abort(a, 3, 1), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 8);
    assert_int_equal(lkv_kv_layer_residency(a, 3, 1), LKV_KV_RES_HOST);
    assert_int_equal(lkv_kv_layer_tokens(a, 3, 1), 9);
    assert_int_equal(lkv_kv_move_abort(a, 3, 1), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_move_end(a, 77, 1), LKV_ERR_NOTFOUND);
    assert_int_equal(lkv_kv_move_end(a, 3, 9), LKV_ERR_INVALID);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

static void free_during_move_defers_until_copy_ends(void **state)
{
    lkv_kv_alloc_t *a = make(2, 4, 4, 8, 0, 1, 8);
    lkv_kv_block_t  nb[8];
    int             n;
    lkv_kv_copy_t   c;

    assert_int_equal(lkv_kv_seq_add(a, 5), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 5, 0, 8, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_append(a, 5, 1, 4, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_move_begin(a, 5, 0, LKV_KV_TIER_HOST, &c), LKV_OK);
    lkv_kv_block_t pinned0 = c.src[0], pinned1 = c.src[1];
    assert_int_equal(lkv_kv_seq_free(a, 5), LKV_OK);
    /* layer 1 is freed now; layer 0's source blocks stay pinned */
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 2);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 6);
    assert_false(lkv_kv_seq_exists(a, 5));
    CHECK_OK(a);
    /* the id is reusable at once; max_seqs=1 counts live sequences only */
    assert_int_equal(lkv_kv_seq_add(a, 5), LKV_OK);
    /* the new sequence can't get the pinned blocks */
    assert_int_equal(lkv_kv_append(a, 5, 0, 8, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_not_equal(nb[0], pinned0);
    assert_int_not_equal(nb[0], pinned1);
    assert_int_not_equal(nb[1], pinned0);
    assert_int_not_equal(nb[1], pinned1);
    assert_int_equal(lkv_kv_append(a, 5, 1, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_NOSPACE);
    /* a second move of the new seq's layer 0 */
    assert_int_equal(lkv_kv_move_begin(a, 5, 0, LKV_KV_TIER_HOST, &c), LKV_OK);
    /* move_end resolves to the oldest copy: the freed sequence's */
    assert_int_equal(lkv_kv_move_end(a, 5, 0), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 2);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 6);
    assert_int_equal(lkv_kv_layer_residency(a, 5, 0), LKV_KV_RES_MOVING);
    CHECK_OK(a);
    assert_int_equal(lkv_kv_move_end(a, 5, 0), LKV_OK);
    assert_int_equal(lkv_kv_layer_residency(a, 5, 0), LKV_KV_RES_HOST);
    assert_int_equal(lkv_kv_seq_free(a, 5), LKV_OK);
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        assert_int_equal(lkv_kv_used_blocks(a, (lkv_kv_tier_t)t), 0);
    }
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

static void zombies_hold_slots(void **state)
{
    lkv_kv_alloc_t *a = make(1, 4, 8, 8, 0, 1, 8);
    lkv_kv_block_t  nb[8];
    int             n;
    lkv_kv_copy_t   c;

    /* max_seqs=1: one live + one freed-with-copy fill both slots */
    for (uint64_t id = 1; id <= 2; id++) {
        assert_int_equal(lkv_kv_seq_add(a, id), LKV_OK);
        assert_int_equal(
            lkv_kv_append(a, id, 0, 4, LKV_KV_TIER_DEVICE, nb, 8, &n), LKV_OK);
        assert_int_equal(lkv_kv_move_begin(a, id, 0, LKV_KV_TIER_HOST, &c),
                         LKV_OK);
        assert_int_equal(lkv_kv_seq_free(a, id), LKV_OK);
    }
    assert_int_equal(lkv_kv_seq_add(a, 3), LKV_ERR_NOSPACE);
    assert_int_equal(lkv_kv_move_abort(a, 1, 0), LKV_OK);
    assert_int_equal(lkv_kv_seq_add(a, 3), LKV_OK);
    assert_int_equal(lkv_kv_move_end(a, 2, 0), LKV_OK);
    assert_int_equal(lkv_kv_used_blocks(a, LKV_KV_TIER_DEVICE), 0);
    assert_int_equal(lkv_kv_used_blocks(a, LKV_KV_TIER_HOST), 0);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

static void stage_mirrors_and_appends(void **state)
{
    lkv_kv_alloc_t *a = make(2, 4, 4, 8, 0, 2, 8);
    lkv_kv_block_t  nb[8];
    int             n;
    lkv_kv_copy_t   c;

    assert_int_equal(lkv_kv_seq_add(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 1, 0, 6, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_append(a, 1, 1, 2, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(lkv_kv_stage_begin(a, 1, 1, &c), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_stage_end(a, 1, 0), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_stage_begin(a, 1, 0, &c), LKV_OK);
    assert_int_equal(c.src_tier, LKV_KV_TIER_HOST);
    assert_int_equal(c.dst_tier, LKV_KV_TIER_DEVICE);
    assert_int_equal(c.n_blocks, 2);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 0), LKV_KV_RES_HOST);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 1);
    assert_int_equal(lkv_kv_stage_begin(a, 1, 0, &c), LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_move_begin(a, 1, 0, LKV_KV_TIER_DEVICE, &c),
                     LKV_ERR_BUSY);
    /* append while staged: one host block and one staging block */
    assert_int_equal(lkv_kv_append(a, 1, 0, 3, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 1);
    const lkv_kv_block_t *sb;
    int                   sn;
    assert_int_equal(lkv_kv_stage_blocks(a, 1, 0, &sb, &sn), LKV_OK);
    assert_int_equal(sn, 3);
    assert_int_equal(lkv_kv_stage_blocks(a, 1, 1, &sb, &sn), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 0);
    /* no device block left for the staging mirror */
    assert_int_equal(lkv_kv_append(a, 1, 0, 4, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_ERR_NOSPACE);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 5);
    CHECK_OK(a);
    assert_int_equal(lkv_kv_stage_end(a, 1, 0), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 3);
    assert_int_equal(lkv_kv_layer_tokens(a, 1, 0), 9);
    /* seq_free while staged defers the host and staging blocks */
    assert_int_equal(lkv_kv_stage_begin(a, 1, 0, &c), LKV_OK);
    assert_int_equal(lkv_kv_seq_free(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 1);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 5);
    CHECK_OK(a);
    assert_int_equal(lkv_kv_stage_end(a, 1, 0), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 4);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 8);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
}

/* Set up the same history on a: seq 5 with 4 layers on the host, layer 1
 * staged on its own blocks, layer 2 staged on a ring with room to grow;
 * seq 6 on the device. */
static void twin_setup(lkv_kv_alloc_t *a)
{
    lkv_kv_block_t nb[8];
    lkv_kv_copy_t  c;
    int            n, ring;

    assert_int_equal(lkv_kv_seq_add(a, 5), LKV_OK);
    assert_int_equal(lkv_kv_seq_add(a, 6), LKV_OK);
    for (int l = 0; l < 4; l++) {
        assert_int_equal(lkv_kv_append(a, 5, l, 7 + l, LKV_KV_TIER_HOST, nb,
                                       8, &n),
                         LKV_OK);
        assert_int_equal(lkv_kv_append(a, 6, l, 3 + 2 * l, LKV_KV_TIER_DEVICE,
                                       nb, 8, &n),
                         LKV_OK);
    }
    assert_int_equal(lkv_kv_stage_begin(a, 5, 1, &c), LKV_OK);
    assert_int_equal(lkv_kv_ring_create(a, 6, &ring), LKV_OK);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 5, 2, ring, &c), LKV_OK);
}

/* append_all takes the same blocks, in the same order, with the same
 * staging, as one append per layer; errors change nothing. */
static void append_all_matches_per_layer_appends(void **state)
{
    lkv_kv_alloc_t *a = make(4, 4, 40, 64, 0, 4, 8);
    lkv_kv_alloc_t *b = make(4, 4, 40, 64, 0, 4, 8);
    lkv_kv_block_t  na[32], nb[32];
    int32_t         per[4];
    int             n_all = -1, n, tot;

    (void)state;
    twin_setup(a);
    twin_setup(b);
    for (int round = 0; round < 6; round++) {
        int           add  = round == 2 ? 9 : 1;
        uint64_t      seq  = round % 2 == 0 ? 5 : 6;
        lkv_kv_tier_t tier = seq == 5 ? LKV_KV_TIER_HOST : LKV_KV_TIER_DEVICE;

        assert_int_equal(lkv_kv_append_all(a, seq, add, tier, na, 32, per,
                                           &n_all),
                         LKV_OK);
        tot = 0;
        for (int l = 0; l < 4; l++) {
            assert_int_equal(lkv_kv_append(b, seq, l, add, tier, nb + tot, 8,
                                           &n),
                             LKV_OK);
            assert_int_equal(per[l], n);
            tot += n;
        }
        assert_int_equal(n_all, tot);
        assert_memory_equal(na, nb, (size_t)tot * sizeof(*na));
        for (int l = 0; l < 4; l++) {
            const lkv_kv_block_t *ta, *tb;
            int                   ca, cb;

            assert_int_equal(lkv_kv_layer_tokens(a, seq, l),
                             lkv_kv_layer_tokens(b, seq, l));
            assert_int_equal(lkv_kv_layer_blocks(a, seq, l, NULL, &ta, &ca),
                             LKV_OK);
            assert_int_equal(lkv_kv_layer_blocks(b, seq, l, NULL, &tb, &cb),
                             LKV_OK);
            assert_int_equal(ca, cb);
            assert_memory_equal(ta, tb, (size_t)ca * sizeof(*ta));
            if (seq == 5 && (l == 1 || l == 2)) {
                assert_int_equal(lkv_kv_stage_blocks(a, seq, l, &ta, &ca),
                                 LKV_OK);
                assert_int_equal(lkv_kv_stage_blocks(b, seq, l, &tb, &cb),
                                 LKV_OK);
                assert_memory_equal(ta, tb, (size_t)ca * sizeof(*ta));
            }
        }
        for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
            assert_int_equal(lkv_kv_free_blocks(a, (lkv_kv_tier_t)t),
                             lkv_kv_free_blocks(b, (lkv_kv_tier_t)t));
        }
        CHECK_OK(a);
    }
    /* errors: all or nothing */
    int32_t free_dev = lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE);
    int     tok3     = lkv_kv_layer_tokens(a, 5, 3);
    /* wrong tier for every layer with blocks */
    assert_int_equal(lkv_kv_append_all(a, 5, 1, LKV_KV_TIER_DEVICE, na, 32,
                                       per, &n_all),
                     LKV_ERR_INVALID);
    /* unknown sequence, table capacity (8 blocks of 4), max_new too small */
    assert_int_equal(lkv_kv_append_all(a, 99, 1, LKV_KV_TIER_HOST, na, 32,
                                       per, &n_all),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append_all(a, 5, 40, LKV_KV_TIER_HOST, na, 32,
                                       per, &n_all),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_append_all(a, 5, 8, LKV_KV_TIER_HOST, na, 1, per,
                                       &n_all),
                     LKV_ERR_INVALID);
    /* the ring (6 blocks) is too small for layer 2 past 24 tokens */
    assert_int_equal(lkv_kv_append_all(a, 5, 24 - lkv_kv_layer_tokens(a, 5, 2)
                                                 + 1,
                                       LKV_KV_TIER_HOST, na, 32, per, &n_all),
                     LKV_ERR_NOSPACE);
    /* a moving layer: BUSY */
    lkv_kv_copy_t c;
    assert_int_equal(lkv_kv_move_begin(a, 6, 3, LKV_KV_TIER_HOST, &c), LKV_OK);
    assert_int_equal(lkv_kv_append_all(a, 6, 1, LKV_KV_TIER_DEVICE, na, 32,
                                       per, &n_all),
                     LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_move_abort(a, 6, 3), LKV_OK);
    /* the device cannot hold one more block on every layer */
    lkv_kv_alloc_t *d = make(2, 4, 3, 0, 0, 2, 8);
    assert_int_equal(lkv_kv_seq_add(d, 1), LKV_OK);
    assert_int_equal(lkv_kv_append_all(d, 1, 4, LKV_KV_TIER_DEVICE, na, 32,
                                       per, &n_all),
                     LKV_OK);
    assert_int_equal(n_all, 2);
    assert_int_equal(lkv_kv_append_all(d, 1, 1, LKV_KV_TIER_DEVICE, na, 32,
                                       per, &n_all),
                     LKV_ERR_NOSPACE);
    assert_int_equal(n_all, 2);
    assert_int_equal(lkv_kv_free_blocks(d, LKV_KV_TIER_DEVICE), 1);
    assert_int_equal(lkv_kv_layer_tokens(d, 1, 0), 4);
    assert_int_equal(lkv_kv_layer_tokens(d, 1, 1), 4);
    CHECK_OK(d);
    lkv_kv_alloc_destroy(&d);
    assert_int_equal(lkv_kv_layer_tokens(a, 5, 3), tok3);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), free_dev);
    CHECK_OK(a);
    lkv_kv_alloc_destroy(&a);
    lkv_kv_alloc_destroy(&b);
}

/* ---- randomized model test ------------------------------------------------- */

enum {
    M_LAYERS  = 6,
    M_BS      = 4,
    M_MAXSEQ  = 8,
    M_SLOTS   = 2 * M_MAXSEQ,
    M_MAXB    = 8,
    M_DEV     = 40,
    M_HOST    = 80,
    M_REM     = 64,
    M_IDLE    = 0,
    M_MOVING  = 1,
    M_STAGED  = 2,
    M_FREE    = 0,
    M_LIVE    = 1,
    M_ZOMBIE  = 2,
};

static const int m_cap[3] = {M_DEV, M_HOST, M_REM};

typedef struct {
    int            tokens, nb, tier, state, aux_tier;
    lkv_kv_block_t blocks[M_MAXB];
    lkv_kv_block_t aux[M_MAXB];
} m_layer_t;

typedef struct {
    int       state;
    uint64_t  id, gen;
    m_layer_t l[M_LAYERS];
} m_seq_t;

typedef struct {
    m_seq_t  seq[M_SLOTS];
    /* owner[tier][block]: -1 free, else seq index * M_LAYERS + layer */
    int      owner[3][M_REM > M_HOST ? M_REM : M_HOST];
    int      n_free[3];
    int      layer_used[3][M_LAYERS];
    int      n_live, n_zombie;
    uint64_t next_gen, next_id;
    uint64_t rng;
} model_t;

static uint64_t rnd(model_t *m)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return m->rng;
}

static int rndn(model_t *m, int n)
{
    return (int)(rnd(m) % (uint64_t)n);
}

static int m_find_live(const model_t *m, uint64_t id)
{
    for (int i = 0; i < M_SLOTS; i++) {
        if (m->seq[i].state == M_LIVE && m->seq[i].id == id) {
            return i;
        }
    }
    return -1;
}

static void m_take(model_t *m, int tier, int s, int l, lkv_kv_block_t b)
{
    assert_true(b >= 0 && b < m_cap[tier]);
    if (m->owner[tier][b] != -1) {
        fail_msg("allocator handed out %s block %d owned by %d",
                 lkv_kv_tier_name((lkv_kv_tier_t)tier), (int)b,
                 m->owner[tier][b]);
    }
    m->owner[tier][b] = s * M_LAYERS + l;
    m->n_free[tier]--;
    m->layer_used[tier][l]++;
}

static void m_give(model_t *m, int tier, int s, int l, const lkv_kv_block_t *b,
                   int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(m->owner[tier][b[i]], s * M_LAYERS + l);
        m->owner[tier][b[i]] = -1;
    }
    m->n_free[tier] += n;
    m->layer_used[tier][l] -= n;
}

static void m_compare_layer(const model_t *m, lkv_kv_alloc_t *a, int s, int l)
{
    const m_seq_t   *q  = &m->seq[s];
    const m_layer_t *ly = &q->l[l];
    assert_int_equal(lkv_kv_layer_tokens(a, q->id, l), ly->tokens);
    lkv_kv_tier_t         tier;
    const lkv_kv_block_t *tab;
    int                   n;
    assert_int_equal(lkv_kv_layer_blocks(a, q->id, l, &tier, &tab, &n), LKV_OK);
    assert_int_equal(n, ly->nb);
    if (n > 0) {
        assert_int_equal(tier, ly->tier);
        assert_memory_equal(tab, ly->blocks, (size_t)n * sizeof(*tab));
    }
    lkv_kv_res_t want = LKV_KV_RES_NONE;
    if (ly->nb > 0) {
        want = ly->state == M_MOVING ? LKV_KV_RES_MOVING
                                     : (lkv_kv_res_t)(LKV_KV_RES_DEVICE +
                                                      ly->tier);
    }
    assert_int_equal(lkv_kv_layer_residency(a, q->id, l), want);
    if (ly->state == M_STAGED) {
        assert_int_equal(lkv_kv_stage_blocks(a, q->id, l, &tab, &n), LKV_OK);
        assert_int_equal(n, ly->nb);
        assert_memory_equal(tab, ly->aux, (size_t)n * sizeof(*tab));
    }
}

static void m_compare_counts(const model_t *m, lkv_kv_alloc_t *a)
{
    for (int t = 0; t < 3; t++) {
        assert_int_equal(lkv_kv_free_blocks(a, (lkv_kv_tier_t)t), m->n_free[t]);
        for (int l = 0; l < M_LAYERS; l++) {
            assert_int_equal(lkv_kv_layer_used_blocks(a, (lkv_kv_tier_t)t, l),
                             m->layer_used[t][l]);
        }
    }
    assert_int_equal(lkv_kv_live_seqs(a), m->n_live);
}

/* Resolve (id, layer, want) as the allocator does: oldest zombie, then live. */
static int m_resolve(const model_t *m, uint64_t id, int l, int want, int *st)
{
    int best = -1;
    for (int i = 0; i < M_SLOTS; i++) {
        const m_seq_t *q = &m->seq[i];
        if (q->state == M_ZOMBIE && q->id == id && q->l[l].state == want &&
            (best < 0 || q->gen < m->seq[best].gen)) {
            best = i;
        }
    }
    if (best >= 0) {
        *st = LKV_OK;
        return best;
    }
    int s = m_find_live(m, id);
    if (s < 0) {
        *st = LKV_ERR_NOTFOUND;
        return -1;
    }
    *st = m->seq[s].l[l].state == want ? LKV_OK : LKV_ERR_INVALID;
    return *st == LKV_OK ? s : -1;
}

static int m_pending(const m_seq_t *q)
{
    int n = 0;
    for (int l = 0; l < M_LAYERS; l++) {
        n += q->l[l].state != M_IDLE;
    }
    return n;
}

static void m_zombie_release(model_t *m, int s)
{
    m_seq_t *q = &m->seq[s];
    if (q->state == M_ZOMBIE && m_pending(q) == 0) {
        q->state = M_FREE;
        m->n_zombie--;
    }
}

/* Pick a random live sequence index, or -1. */
static int m_pick_live(model_t *m)
{
    if (m->n_live == 0) {
        return -1;
    }
    int k = rndn(m, m->n_live);
    for (int i = 0; i < M_SLOTS; i++) {
        if (m->seq[i].state == M_LIVE && k-- == 0) {
            return i;
        }
    }
    return -1;
}

/* Pick a random pending copy in `want` state (any slot): returns its slot. */
static int m_pick_pending(model_t *m, int want, int *layer_p)
{
    int cand[M_SLOTS * M_LAYERS], n = 0;
    for (int i = 0; i < M_SLOTS; i++) {
        if (m->seq[i].state == M_FREE) {
            continue;
        }
        for (int l = 0; l < M_LAYERS; l++) {
            if (m->seq[i].l[l].state == want) {
                cand[n++] = i * M_LAYERS + l;
            }
        }
    }
    if (n == 0) {
        return -1;
    }
    int c    = cand[rndn(m, n)];
    *layer_p = c % M_LAYERS;
    return c / M_LAYERS;
}

static void op_seq_add(model_t *m, lkv_kv_alloc_t *a, int *touched)
{
    uint64_t id;
    int      r = rndn(m, 10);
    int      s;
    if (r < 2 && (s = m_pick_live(m)) >= 0) {
        id = m->seq[s].id; /* duplicate */
    } else if (r < 5 && m->n_zombie > 0) {
        /* reuse the id of a freed sequence with copies in flight */
        int k = rndn(m, m->n_zombie);
        id    = 0;
        for (int i = 0; i < M_SLOTS; i++) {
            if (m->seq[i].state == M_ZOMBIE && k-- == 0) {
                id = m->seq[i].id;
            }
        }
    } else {
        id = m->next_id++;
    }
    int want;
    if (m_find_live(m, id) >= 0) {
        want = LKV_ERR_BUSY;
    } else if (m->n_live >= M_MAXSEQ || m->n_live + m->n_zombie >= M_SLOTS) {
        want = LKV_ERR_NOSPACE;
    } else {
        want = LKV_OK;
    }
    assert_int_equal(lkv_kv_seq_add(a, id), want);
    if (want != LKV_OK) {
        return;
    }
    for (s = 0; m->seq[s].state != M_FREE; s++) {
    }
    memset(&m->seq[s], 0, sizeof(m->seq[s]));
    m->seq[s].state = M_LIVE;
    m->seq[s].id    = id;
    m->n_live++;
    *touched = s;
}

static void op_seq_free(model_t *m, lkv_kv_alloc_t *a)
{
    int s = m_pick_live(m);
    if (s < 0 || rndn(m, 50) == 0) {
        assert_int_equal(lkv_kv_seq_free(a, m->next_id + 1000),
                         LKV_ERR_NOTFOUND);
        return;
    }
    m_seq_t *q = &m->seq[s];
    assert_int_equal(lkv_kv_seq_free(a, q->id), LKV_OK);
    for (int l = 0; l < M_LAYERS; l++) {
        m_layer_t *ly = &q->l[l];
        if (ly->state == M_IDLE) {
            m_give(m, ly->tier, s, l, ly->blocks, ly->nb);
            ly->nb     = 0;
            ly->tokens = 0;
        }
    }
    m->n_live--;
    if (m_pending(q) > 0) {
        q->state = M_ZOMBIE;
        q->gen   = m->next_gen++;
        m->n_zombie++;
    } else {
        q->state = M_FREE;
    }
}

static void op_append(model_t *m, lkv_kv_alloc_t *a, int *touched)
{
    int s = m_pick_live(m);
    if (s < 0) {
        return;
    }
    int        l  = rndn(m, M_LAYERS);
    m_layer_t *ly = &m->seq[s].l[l];
    int        n  = rndn(m, 2 * M_BS + 2);
    int        tier;
    if (ly->nb > 0 && rndn(m, 8) != 0) {
        tier = ly->tier;
    } else {
        int r = rndn(m, 10);
        tier  = r < 6 ? 0 : r < 9 ? 1 : 2;
    }
    int want;
    int need = (ly->tokens + n + M_BS - 1) / M_BS - ly->nb;
    if (ly->state == M_MOVING) {
        want = LKV_ERR_BUSY;
    } else if (ly->nb > 0 && ly->tier != tier) {
        want = LKV_ERR_INVALID;
    } else if (ly->nb + need > M_MAXB) {
        want = LKV_ERR_INVALID;
    } else if (need > 0 &&
               (m->n_free[tier] < need ||
                (ly->state == M_STAGED && m->n_free[0] < need))) {
        want = LKV_ERR_NOSPACE;
    } else {
        want = LKV_OK;
    }
    if (want != LKV_ERR_BUSY) {
        assert_int_equal(lkv_kv_blocks_needed(a, m->seq[s].id, l, n), need);
    }
    lkv_kv_block_t nb[M_MAXB];
    int            got = -1;
    assert_int_equal(lkv_kv_append(a, m->seq[s].id, l, n, (lkv_kv_tier_t)tier,
                                   nb, M_MAXB, &got),
                     want);
    *touched = s;
    if (want != LKV_OK) {
        assert_int_equal(got, -1);
        return;
    }
    assert_int_equal(got, need);
    for (int i = 0; i < need; i++) {
        m_take(m, tier, s, l, nb[i]);
        ly->blocks[ly->nb + i] = nb[i];
    }
    if (ly->state == M_STAGED) {
        const lkv_kv_block_t *sb;
        int                   sn;
        assert_int_equal(lkv_kv_stage_blocks(a, m->seq[s].id, l, &sb, &sn),
                         LKV_OK);
        assert_int_equal(sn, ly->nb + need);
        for (int i = 0; i < need; i++) {
            m_take(m, 0, s, l, sb[ly->nb + i]);
            ly->aux[ly->nb + i] = sb[ly->nb + i];
        }
    }
    if (ly->nb == 0 && need > 0) {
        ly->tier = tier;
    }
    ly->nb += need;
    ly->tokens += n;
}

/* lkv_kv_append_all: the per-layer rules of op_append over every layer,
 * BUSY/INVALID of the first such layer before NOSPACE of all together. */
static void op_append_all(model_t *m, lkv_kv_alloc_t *a, int *touched)
{
    int s = m_pick_live(m);
    if (s < 0) {
        return;
    }
    m_seq_t *q    = &m->seq[s];
    int      n    = rndn(m, M_BS + 2);
    int      r    = rndn(m, 10);
    int      tier = r < 6 ? 0 : r < 9 ? 1 : 2;
    int      want = LKV_OK, total = 0, staging = 0;
    int      need[M_LAYERS];
    for (int l = 0; l < M_LAYERS; l++) {
        const m_layer_t *ly = &q->l[l];
        need[l] = (ly->tokens + n + M_BS - 1) / M_BS - ly->nb;
        if (want == LKV_OK && ly->state == M_MOVING) {
            want = LKV_ERR_BUSY;
        } else if (want == LKV_OK &&
                   ((ly->nb > 0 && ly->tier != tier) ||
                    ly->nb + need[l] > M_MAXB)) {
            want = LKV_ERR_INVALID;
        }
        total += need[l];
        staging += ly->state == M_STAGED ? need[l] : 0;
    }
    if (want == LKV_OK &&
        (m->n_free[tier] < total || m->n_free[0] < staging)) {
        want = LKV_ERR_NOSPACE;
    }
    lkv_kv_block_t nb[M_LAYERS * M_MAXB];
    int32_t        per[M_LAYERS];
    int            got = -1;
    assert_int_equal(lkv_kv_append_all(a, q->id, n, (lkv_kv_tier_t)tier, nb,
                                       M_LAYERS * M_MAXB, per, &got),
                     want);
    *touched = s;
    if (want != LKV_OK) {
        assert_int_equal(got, -1);
        return;
    }
    assert_int_equal(got, total);
    total = 0;
    for (int l = 0; l < M_LAYERS; l++) {
        m_layer_t *ly = &q->l[l];
        assert_int_equal(per[l], need[l]);
        for (int i = 0; i < need[l]; i++) {
            m_take(m, tier, s, l, nb[total + i]);
            ly->blocks[ly->nb + i] = nb[total + i];
        }
        total += need[l];
        if (ly->state == M_STAGED) {
            const lkv_kv_block_t *sb;
            int                   sn;
            assert_int_equal(lkv_kv_stage_blocks(a, q->id, l, &sb, &sn),
                             LKV_OK);
            assert_int_equal(sn, ly->nb + need[l]);
            for (int i = 0; i < need[l]; i++) {
                m_take(m, 0, s, l, sb[ly->nb + i]);
                ly->aux[ly->nb + i] = sb[ly->nb + i];
            }
        }
        if (ly->nb == 0 && need[l] > 0) {
            ly->tier = tier;
        }
        ly->nb += need[l];
        ly->tokens += n;
    }
}

static void op_begin(model_t *m, lkv_kv_alloc_t *a, bool stage, int *touched)
{
    int s = m_pick_live(m);
    if (s < 0) {
        return;
    }
    int        l   = rndn(m, M_LAYERS);
    m_layer_t *ly  = &m->seq[s].l[l];
    int        dst = stage ? 0 : rndn(m, 3);
    if (!stage && ly->nb > 0 && dst == ly->tier && rndn(m, 4) != 0) {
        dst = (dst + 1 + rndn(m, 2)) % 3; /* mostly a real move */
    }
    int want;
    if (ly->state != M_IDLE) {
        want = LKV_ERR_BUSY;
    } else if (ly->nb == 0 || ly->tier == dst) {
        want = LKV_ERR_INVALID;
    } else if (m->n_free[dst] < ly->nb) {
        want = LKV_ERR_NOSPACE;
    } else {
        want = LKV_OK;
    }
    lkv_kv_copy_t c;
    lkv_status_t  st =
        stage ? lkv_kv_stage_begin(a, m->seq[s].id, l, &c)
              : lkv_kv_move_begin(a, m->seq[s].id, l, (lkv_kv_tier_t)dst, &c);
    assert_int_equal(st, want);
    *touched = s;
    if (want != LKV_OK) {
        return;
    }
    assert_int_equal(c.seq_id, m->seq[s].id);
    assert_int_equal(c.layer, l);
    assert_int_equal(c.src_tier, ly->tier);
    assert_int_equal(c.dst_tier, dst);
    assert_int_equal(c.n_blocks, ly->nb);
    assert_memory_equal(c.src, ly->blocks, (size_t)ly->nb * sizeof(*c.src));
    for (int i = 0; i < ly->nb; i++) {
        m_take(m, dst, s, l, c.dst[i]);
        ly->aux[i] = c.dst[i];
    }
    ly->state    = stage ? M_STAGED : M_MOVING;
    ly->aux_tier = dst;
}

/* kind: 0 move_end, 1 move_abort, 2 stage_end */
static void op_end(model_t *m, lkv_kv_alloc_t *a, int kind, int *touched)
{
    int      want_state = kind == 2 ? M_STAGED : M_MOVING;
    int      l          = 0;
    int      pick       = m_pick_pending(m, want_state, &l);
    uint64_t id;
    if (pick < 0 || rndn(m, 20) == 0) {
        /* a copy that is not in flight */
        int s = m_pick_live(m);
        if (s < 0) {
            return;
        }
        id = m->seq[s].id;
        l  = rndn(m, M_LAYERS);
    } else {
        id = m->seq[pick].id;
    }
    int          want;
    int          s = m_resolve(m, id, l, want_state, &want);
    lkv_status_t st =
        kind == 0   ? lkv_kv_move_end(a, id, l)
        : kind == 1 ? lkv_kv_move_abort(a, id, l)
                    : lkv_kv_stage_end(a, id, l);
    assert_int_equal(st, want);
    if (want != LKV_OK) {
        return;
    }
    m_seq_t   *q  = &m->seq[s];
    m_layer_t *ly = &q->l[l];
    if (kind == 0) {
        m_give(m, ly->tier, s, l, ly->blocks, ly->nb);
        memcpy(ly->blocks, ly->aux, sizeof(ly->blocks));
        ly->tier = ly->aux_tier;
    } else {
        m_give(m, ly->aux_tier, s, l, ly->aux, ly->nb);
    }
    ly->state = M_IDLE;
    if (q->state == M_ZOMBIE) {
        m_give(m, ly->tier, s, l, ly->blocks, ly->nb);
        ly->nb     = 0;
        ly->tokens = 0;
        m_zombie_release(m, s);
    } else {
        *touched = s;
    }
}

static long env_ops(void)
{
    const char *e = getenv("LKV_MODEL_TEST_OPS");
    if (e != NULL && *e != '\0') {
        long v = strtol(e, NULL, 10);
        if (v > 0) {
            return v;
        }
    }
#if defined(__SANITIZE_ADDRESS__)
    return 200000;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 200000;
#endif
#endif
    return 1000000;
}

/* Staging rings: several layers of one step staged on the same ring blocks;
 * the ring owns them, stage_end keeps them with the ring, destroy frees. */
static void staging_ring_shares_blocks(void **state)
{
    (void)state;
    lkv_kv_alloc_t      *a = make(4, 16, 16, 64, 0, 4, 8);
    lkv_kv_block_t       nb[8];
    const lkv_kv_block_t *rb;
    lkv_kv_copy_t        c0, c2;
    int                  n = 0, ring = -1, ring2 = -1, nr = 0;

    assert_int_equal(lkv_kv_seq_add(a, 7), LKV_OK);
    for (int l = 0; l < 4; l++) {
        lkv_kv_tier_t t = (l % 2 == 0) ? LKV_KV_TIER_HOST : LKV_KV_TIER_DEVICE;
        assert_int_equal(lkv_kv_append(a, 7, l, 40, t, nb, 8, &n), LKV_OK);
        assert_int_equal(n, 3);
    }
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 10);
    assert_int_equal(lkv_kv_ring_create(a, 0, &ring), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_ring_create(a, 9, &ring), LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_ring_create(a, 4, &ring), LKV_OK);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 6);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    assert_int_equal(lkv_kv_ring_blocks(a, ring, &rb, &nr), LKV_OK);
    assert_int_equal(nr, 4);
    /* device layers cannot be staged; host layers 0 and 2 share the ring */
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 1, ring, &c0),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 0, ring + 5, &c0),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 0, ring, &c0), LKV_OK);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 2, ring, &c2), LKV_OK);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 2, ring, &c2),
                     LKV_ERR_BUSY);
    assert_int_equal(c0.n_blocks, 3);
    assert_int_equal(c0.src_tier, LKV_KV_TIER_HOST);
    assert_int_equal(c0.dst_tier, LKV_KV_TIER_DEVICE);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c0.dst[i], rb[i]);
        assert_int_equal(c2.dst[i], rb[i]);
    }
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 6);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    /* append while staged takes staging from the ring, up to its size */
    assert_int_equal(lkv_kv_append(a, 7, 0, 8, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(lkv_kv_append(a, 7, 0, 8, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 7, 0, 16, LKV_KV_TIER_HOST, nb, 8, &n),
                     LKV_ERR_NOSPACE);
    /* a ring in use cannot go */
    assert_int_equal(lkv_kv_ring_destroy(a, ring), LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_stage_end(a, 7, 0), LKV_OK);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    /* a smaller ring cannot hold layer 0's 4 blocks */
    assert_int_equal(lkv_kv_ring_create(a, 2, &ring2), LKV_OK);
    assert_int_not_equal(ring2, ring);
    assert_int_equal(lkv_kv_stage_begin_ring(a, 7, 0, ring2, &c0),
                     LKV_ERR_NOSPACE);
    assert_int_equal(lkv_kv_ring_destroy(a, ring2), LKV_OK);
    assert_int_equal(lkv_kv_ring_destroy(a, ring2), LKV_ERR_INVALID);
    /* freeing the sequence while staged defers until stage_end */
    assert_int_equal(lkv_kv_seq_free(a, 7), LKV_OK);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    assert_int_equal(lkv_kv_ring_destroy(a, ring), LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_stage_end(a, 7, 2), LKV_OK);
    assert_int_equal(lkv_kv_ring_destroy(a, ring), LKV_OK);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(lkv_kv_free_blocks(a, (lkv_kv_tier_t)t),
                         t == 0 ? 16 : 64);
    }
    lkv_kv_alloc_destroy(&a);
}

static void model_test_random_ops_keep_invariants(void **state)
{
    static model_t m; /* large; keep it off the stack */
    memset(&m, 0, sizeof(m));
    m.rng     = 0x9e3779b97f4a7c15ULL;
    m.next_id = 1;
    for (int t = 0; t < 3; t++) {
        m.n_free[t] = m_cap[t];
        for (int b = 0; b < (int)(sizeof(m.owner[t]) / sizeof(int)); b++) {
            m.owner[t][b] = -1;
        }
    }
    lkv_kv_alloc_t *a     = make(M_LAYERS, M_BS, M_DEV, M_HOST, M_REM, M_MAXSEQ,
                                 M_MAXB);
    long            n_ops = env_ops();
    long            stats[10] = {0};
    int64_t         t0        = lkv_now_ns();

    for (long op = 0; op < n_ops; op++) {
        int touched = -1;
        int r       = rndn(&m, 100);
        int kind;
        if (r < 6) {
            kind = 0;
            op_seq_add(&m, a, &touched);
        } else if (r < 10) {
            kind = 1;
            op_seq_free(&m, a);
        } else if (r < 40) {
            kind = 2;
            op_append(&m, a, &touched);
        } else if (r < 45) {
            kind = 8;
            op_append_all(&m, a, &touched);
        } else if (r < 58) {
            kind = 3;
            op_begin(&m, a, false, &touched);
        } else if (r < 68) {
            kind = 4;
            op_end(&m, a, 0, &touched);
        } else if (r < 73) {
            kind = 5;
            op_end(&m, a, 1, &touched);
        } else if (r < 85) {
            kind = 6;
            op_begin(&m, a, true, &touched);
        } else {
            kind = 7;
            op_end(&m, a, 2, &touched);
        }
        stats[kind]++;
        if (lkv_kv_alloc_check(a) != LKV_OK) {
            fail_msg("invariant broken after op %ld (kind %d)", op, kind);
        }
        m_compare_counts(&m, a);
        if (touched >= 0 && m.seq[touched].state == M_LIVE) {
            for (int l = 0; l < M_LAYERS; l++) {
                m_compare_layer(&m, a, touched, l);
            }
        }
        if ((op & 4095) == 0) {
            for (int s = 0; s < M_SLOTS; s++) {
                if (m.seq[s].state == M_LIVE) {
                    for (int l = 0; l < M_LAYERS; l++) {
                        m_compare_layer(&m, a, s, l);
                    }
                }
            }
        }
    }
    /* drain: end every copy, free every sequence: all tiers empty */
    for (int s = 0; s < M_SLOTS; s++) {
        for (int l = 0; l < M_LAYERS; l++) {
            if (m.seq[s].state != M_FREE && m.seq[s].l[l].state == M_MOVING) {
                assert_int_equal(lkv_kv_move_abort(a, m.seq[s].id, l),
                                 LKV_OK);
            } else if (m.seq[s].state != M_FREE &&
                       m.seq[s].l[l].state == M_STAGED) {
                assert_int_equal(lkv_kv_stage_end(a, m.seq[s].id, l), LKV_OK);
            }
        }
    }
    for (int s = 0; s < M_SLOTS; s++) {
        if (m.seq[s].state == M_LIVE) {
            assert_int_equal(lkv_kv_seq_free(a, m.seq[s].id), LKV_OK);
        }
    }
    for (int t = 0; t < 3; t++) {
        assert_int_equal(lkv_kv_free_blocks(a, (lkv_kv_tier_t)t), m_cap[t]);
    }
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    double secs = (double)(lkv_now_ns() - t0) / 1e9;
    print_message("model test: %ld ops in %.2f s (%.0f ops/s, incl. full "
                  "invariant check per op); add %ld free %ld append %ld "
                  "move %ld end %ld abort %ld stage %ld unstage %ld "
                  "append_all %ld\n",
                  n_ops, secs, (double)n_ops / secs, stats[0], stats[1],
                  stats[2], stats[3], stats[4], stats[5], stats[6], stats[7],
                  stats[8]);
    lkv_kv_alloc_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_bad_config_is_invalid),
        cmocka_unit_test(seq_add_free_and_errors),
        cmocka_unit_test(append_allocates_per_layer),
        cmocka_unit_test(full_tier_is_nospace_and_allocates_nothing),
        cmocka_unit_test(move_end_and_abort),
        cmocka_unit_test(free_during_move_defers_until_copy_ends),
        cmocka_unit_test(zombies_hold_slots),
        cmocka_unit_test(stage_mirrors_and_appends),
        cmocka_unit_test(staging_ring_shares_blocks),
        cmocka_unit_test(append_all_matches_per_layer_appends),
        cmocka_unit_test(model_test_random_ops_keep_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
