/* test_kv_geometry.c - layer-block byte sizes and TP sharding of KV heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kvstore/kv_geometry.h"

static lkv_model_config_t llama3_8b(void)
{
    lkv_model_config_t mc;
    memset(&mc, 0, sizeof(mc));
    mc.dim        = 4096;
    mc.n_layers   = 32;
    mc.n_heads    = 32;
    mc.n_kv_heads = 8;
    mc.head_dim   = 128;
    return mc;
}

static void geometry_llama3_8b_f16_block16(void **state)
{
    lkv_model_config_t mc = llama3_8b();
    lkv_kv_geometry_t  g;
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 16, 1, 0, &g),
                     LKV_OK);
    assert_int_equal(g.n_kv_heads_local, 8);
    assert_int_equal(g.block_elems, 2 * 16 * 8 * 128);
    assert_int_equal(g.block_bytes, 65536); /* 2 x 16 x 8 x 128 x 2 */
    assert_int_equal(g.token_bytes, 4096);
    assert_int_equal(g.n_layers, 32);
    assert_int_equal(lkv_kv_geometry_blocks_in(&g, 1 << 20), 16);
    assert_int_equal(lkv_kv_geometry_blocks_for(&g, 17), 2);
    assert_int_equal(lkv_kv_geometry_blocks_for(&g, 16), 1);
    assert_int_equal(lkv_kv_geometry_blocks_for(&g, 0), 0);
    /* f32 doubles it */
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F32, 16, 1, 0, &g),
                     LKV_OK);
    assert_int_equal(g.block_bytes, 131072);
}

static void geometry_tp_shards_kv_heads(void **state)
{
    lkv_model_config_t mc = llama3_8b();
    lkv_kv_geometry_t  g;
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_BF16, 16, 4, 3, &g),
                     LKV_OK);
    assert_int_equal(g.n_kv_heads_local, 2);
    assert_int_equal(g.kv_head_start, 6);
    assert_int_equal(g.block_bytes, 65536 / 4);
    /* tp 16 > 8 kv heads: each head on 2 ranks, one head per rank */
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_BF16, 16, 16, 5, &g),
                     LKV_OK);
    assert_int_equal(g.n_kv_heads_local, 1);
    assert_int_equal(g.kv_head_start, 2);
    assert_int_equal(g.block_bytes, 65536 / 8);
}

static void geometry_rejects_bad_input(void **state)
{
    lkv_model_config_t mc = llama3_8b();
    lkv_kv_geometry_t  g;
    memset(&g, 0x5a, sizeof(g));
    lkv_kv_geometry_t before = g;
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 0, 1, 0, &g),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 16, 3, 0, &g),
                     LKV_ERR_INVALID); /* 3 does not divide 8 */
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 16, 12, 0, &g),
                     LKV_ERR_INVALID); /* 12 not a multiple of 8 */
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 16, 2, 2, &g),
                     LKV_ERR_INVALID); /* rank out of range */
    assert_int_equal(
        lkv_kv_geometry_init(&mc, (lkv_dtype_t)9, 16, 1, 0, &g),
        LKV_ERR_INVALID);
    mc.n_kv_heads = 0;
    assert_int_equal(lkv_kv_geometry_init(&mc, LKV_DTYPE_F16, 16, 1, 0, &g),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_kv_geometry_init(NULL, LKV_DTYPE_F16, 16, 1, 0, &g),
                     LKV_ERR_INVALID);
    assert_memory_equal(&g, &before, sizeof(g)); /* untouched on error */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(geometry_llama3_8b_f16_block16),
        cmocka_unit_test(geometry_tp_shards_kv_heads),
        cmocka_unit_test(geometry_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
