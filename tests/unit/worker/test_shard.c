/* test_shard.c - TP/PP partition (worker/shard.h): head, KV-head (split and
 * replicated) and MLP ranges, even and configured layer ranges, refusals of
 * sizes that do not divide the model; a sharded stories260K model holds
 * exactly its slices (row slices are views, column slices copies) and a
 * KV block shrinks by TP; the communicator of one process is a no-op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/comm.h"
#include "worker/model.h"
#include "worker/shard.h"

static lkv_model_config_t cfg_of(int nl, int nh, int nkv, int hidden)
{
    lkv_model_config_t c;
    memset(&c, 0, sizeof(c));
    c.n_layers   = nl;
    c.n_heads    = nh;
    c.n_kv_heads = nkv;
    c.hidden_dim = hidden;
    c.dim        = 64;
    c.head_dim   = 8;
    return c;
}

static void shard_tp_split_kv_heads(void **state)
{
    lkv_model_config_t c = cfg_of(5, 8, 4, 172);
    lkv_shard_t        s;

    assert_int_equal(lkv_shard_plan(&c, 2, 1, 1, 0, NULL, &s), LKV_OK);
    assert_int_equal(s.q_head0, 4);
    assert_int_equal(s.n_q_heads, 4);
    assert_int_equal(s.kv_head0, 2);
    assert_int_equal(s.n_kv_heads, 2);
    assert_int_equal(s.ff0, 86);
    assert_int_equal(s.n_ff, 86);
    assert_int_equal(s.layer0, 0);
    assert_int_equal(s.layer1, 5);
}

static void shard_tp_beyond_kv_heads_replicates(void **state)
{
    lkv_model_config_t c = cfg_of(2, 8, 2, 64); /* 4 query heads per kv */
    lkv_shard_t        s;

    assert_int_equal(lkv_shard_plan(&c, 8, 5, 1, 0, NULL, &s), LKV_OK);
    assert_int_equal(s.q_head0, 5);
    assert_int_equal(s.n_q_heads, 1);
    assert_int_equal(s.kv_head0, 1); /* heads 4..7 read kv head 1 */
    assert_int_equal(s.n_kv_heads, 1);
    assert_int_equal(lkv_shard_plan(&c, 4, 3, 1, 0, NULL, &s), LKV_OK);
    assert_int_equal(s.q_head0, 6);
    assert_int_equal(s.kv_head0, 1);
}

static void shard_bad_tp_is_refused(void **state)
{
    lkv_model_config_t c = cfg_of(5, 8, 4, 172);
    lkv_shard_t        s;

    memset(&s, 0x5a, sizeof(s));
    assert_int_equal(lkv_shard_plan(&c, 3, 0, 1, 0, NULL, &s),
                     LKV_ERR_INVALID);
    assert_int_equal(s.tp, 0x5a5a5a5a); /* untouched on error */
    c.hidden_dim = 170; /* not divisible by 4 */
    assert_int_equal(lkv_shard_plan(&c, 4, 0, 1, 0, NULL, &s),
                     LKV_ERR_INVALID);
    c = cfg_of(5, 12, 4, 192); /* tp 6: 2 q heads per rank, kv group 3 */
    assert_int_equal(lkv_shard_plan(&c, 6, 0, 1, 0, NULL, &s),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_shard_plan(&c, 2, 2, 1, 0, NULL, &s),
                     LKV_ERR_INVALID); /* rank out of range */
}

static void shard_pp_even_and_configured(void **state)
{
    lkv_model_config_t c      = cfg_of(5, 8, 4, 172);
    lkv_shard_t        s;
    const int          l14[2] = {1, 4}, l22[2] = {2, 2}, l05[2] = {0, 5};

    assert_int_equal(lkv_shard_plan(&c, 1, 0, 2, 0, NULL, &s), LKV_OK);
    assert_int_equal(s.layer0, 0);
    assert_int_equal(s.layer1, 3);
    assert_int_equal(lkv_shard_plan(&c, 1, 0, 2, 1, NULL, &s), LKV_OK);
    assert_int_equal(s.layer0, 3);
    assert_int_equal(s.layer1, 5);
    assert_true(lkv_shard_has_layer(&s, 4));
    assert_false(lkv_shard_has_layer(&s, 2));
    assert_int_equal(lkv_shard_plan(&c, 2, 1, 2, 1, l14, &s), LKV_OK);
    assert_int_equal(s.layer0, 1);
    assert_int_equal(s.layer1, 5);
    assert_int_equal(lkv_shard_plan(&c, 1, 0, 2, 0, l22, &s),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_shard_plan(&c, 1, 0, 2, 0, l05, &s),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_shard_plan(&c, 1, 0, 6, 0, NULL, &s),
                     LKV_ERR_INVALID); /* more stages than layers */
}

static void shard_parse_layers_strict(void **state)
{
    int counts[4], n = 0;

    assert_int_equal(lkv_shard_parse_layers("3,2", counts, 4, &n), LKV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(counts[0], 3);
    assert_int_equal(counts[1], 2);
    const char *bad[] = {"", "3,", ",3", "a", "3,0", "1,2,3,4,5", "2;3",
                         "-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(lkv_shard_parse_layers(bad[i], counts, 4, &n),
                         LKV_ERR_INVALID);
    }
}

static const char *model_path(void)
{
    static char buf[4096];
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(buf, sizeof(buf), "%s/models/stories260K/stories260K.gguf",
             src ? src : ".");
    return buf;
}

static void sharded_model_holds_its_slices(void **state)
{
    lkv_kern_backend_t *be = NULL;
    lkv_model_file_t   *mf = NULL;
    lkv_model_t        *full = NULL, *part = NULL;
    lkv_kern_config_t   kc = lkv_kern_config_default();
    lkv_shard_t         s;

    kc.n_threads = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &kc, &be), LKV_OK);
    assert_int_equal(lkv_model_file_open(model_path(), NULL, &mf), LKV_OK);
    assert_int_equal(lkv_model_create(be, mf, &full), LKV_OK);
    const lkv_model_config_t *c = lkv_model_file_config(mf);
    assert_int_equal(lkv_shard_plan(c, 2, 1, 2, 1, NULL, &s), LKV_OK);
    assert_int_equal(lkv_model_create_sharded(be, mf, &s, NULL, &part),
                     LKV_OK);

    assert_int_equal(part->cfg.n_heads, c->n_heads / 2);
    assert_int_equal(part->cfg.n_kv_heads, c->n_kv_heads / 2);
    assert_int_equal(part->cfg.hidden_dim, c->hidden_dim / 2);
    assert_int_equal(part->cfg.n_layers, c->n_layers);
    assert_int_equal(lkv_model_block_bytes(part, 16, LKV_DTYPE_F32) * 2,
                     lkv_model_block_bytes(full, 16, LKV_DTYPE_F32));
    assert_true(part->weight_bytes < full->weight_bytes);
    assert_null(part->layers[0].wq.data); /* stage 0's layer */

    int    l  = s.layer0, hd = c->head_dim, dim = c->dim;
    size_t es = lkv_dtype_size(full->layers[l].wq.dtype);
    const lkv_layer_weights_t *fw = &full->layers[l], *pw = &part->layers[l];
    /* rows: views into the file */
    assert_ptr_equal(pw->wq.data, (const uint8_t *)fw->wq.data +
                                      (size_t)s.q_head0 * hd * dim * es);
    assert_ptr_equal(pw->wk.data, (const uint8_t *)fw->wk.data +
                                      (size_t)s.kv_head0 * hd * dim * es);
    assert_ptr_equal(pw->w_up.data,
                     (const uint8_t *)fw->w_up.data +
                         (size_t)s.ff0 * dim * lkv_dtype_size(fw->w_up.dtype));
    /* columns: copies of the right columns */
    int qd = c->n_heads * hd, nq = s.n_q_heads * hd;
    for (int r = 0; r < dim; r += 7) {
        assert_memory_equal((const uint8_t *)pw->wo.data +
                                (size_t)r * nq * es,
                            (const uint8_t *)fw->wo.data +
                                ((size_t)r * qd + (size_t)s.q_head0 * hd) * es,
                            (size_t)nq * es);
        size_t des = lkv_dtype_size(fw->w_down.dtype);
        assert_memory_equal((const uint8_t *)pw->w_down.data +
                                (size_t)r * s.n_ff * des,
                            (const uint8_t *)fw->w_down.data +
                                ((size_t)r * c->hidden_dim + s.ff0) * des,
                            (size_t)s.n_ff * des);
    }
    lkv_model_destroy(&part);
    lkv_model_destroy(&full);
    lkv_model_file_close(&mf);
    lkv_kern_backend_close(&be);
}

static void comm_single_process_is_noop(void **state)
{
    lkv_comm_t     *c = NULL;
    float           buf[4] = {1, 2, 3, 4};
    lkv_step_plan_t p;
    bool            stop = false;

    if (lkv_comm_launched()) {
        skip(); /* this test is about a process without mpirun */
    }
    assert_int_equal(lkv_comm_create(2, 1, &c), LKV_ERR_INVALID);
    assert_null(c);
    assert_int_equal(lkv_comm_create(0, 1, &c), LKV_ERR_INVALID);
    assert_int_equal(lkv_comm_create(1, 1, &c), LKV_OK);
    assert_int_equal(lkv_comm_world_size(c), 1);
    assert_true(lkv_comm_is_leader(c));
    assert_int_equal(lkv_comm_tp_allreduce(c, buf, 4), LKV_OK);
    assert_true(buf[0] == 1 && buf[3] == 4);
    assert_int_equal(lkv_comm_pp_bcast_from_last(c, buf, 4), LKV_OK);
    assert_int_equal(lkv_comm_pp_send_next(c, buf, 4), LKV_ERR_INVALID);
    assert_int_equal(lkv_comm_pp_recv_prev(c, buf, 4), LKV_ERR_INVALID);
    memset(&p, 0, sizeof(p));
    assert_int_equal(lkv_comm_plan_send(c, &p), LKV_OK);
    assert_int_equal(lkv_comm_plan_stop(c), LKV_OK);
    assert_int_equal(lkv_comm_plan_recv(c, &p, &stop), LKV_ERR_INVALID);
    lkv_comm_destroy(&c);
    assert_null(c);
    lkv_comm_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shard_tp_split_kv_heads),
        cmocka_unit_test(shard_tp_beyond_kv_heads_replicates),
        cmocka_unit_test(shard_bad_tp_is_refused),
        cmocka_unit_test(shard_pp_even_and_configured),
        cmocka_unit_test(shard_parse_layers_strict),
        cmocka_unit_test(sharded_model_holds_its_slices),
        cmocka_unit_test(comm_single_process_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
