/* test_forward.c - the batched forward pass on stories260K: logits after BOS
 * and inside a prompt match the README's reference values, the decode path
 * (one token at a time) matches the prefill path, layers with scattered
 * per-layer block tables give the same logits, and bad batches are refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/forward.h"
#include "worker/model.h"

#define BS 16

typedef struct {
    lkv_kern_backend_t *be;
    lkv_model_file_t   *mf;
    lkv_model_t        *m;
    lkv_fwd_t          *f;
    void               *pool;
    int32_t             tables[8][16][8]; /* [seq][layer][block] */
} fx_t;

static char *model_path(const char *rel)
{
    static char buf[4096];
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(buf, sizeof(buf), "%s/%s", src ? src : ".", rel);
    return buf;
}

static int setup(void **state)
{
    fx_t            *fx = calloc(1, sizeof(*fx));
    lkv_fwd_config_t fc = lkv_fwd_config_default();

    assert_non_null(fx);
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &kc, &fx->be), LKV_OK);
    assert_int_equal(lkv_model_file_open(
                         model_path("models/stories260K/stories260K.gguf"),
                         NULL, &fx->mf),
                     LKV_OK);
    assert_int_equal(lkv_model_create(fx->be, fx->mf, &fx->m), LKV_OK);
    fc.max_batch_tokens   = 128;
    fc.max_seqs           = 8;
    fc.max_logit_rows     = 64;
    fc.max_blocks_per_seq = 8;
    fc.block_size         = BS;
    assert_int_equal(lkv_fwd_create(fx->m, &fc, &fx->f), LKV_OK);
    assert_int_equal(LKV_KERN_CALL(fx->be, mem_alloc,
                                   512 * lkv_model_block_bytes(fx->m, BS,
                                                               LKV_DTYPE_F32),
                                   &fx->pool),
                     LKV_OK);
    /* every (seq, layer) gets its own scattered blocks */
    for (int s = 0; s < 8; s++) {
        for (int l = 0; l < 16; l++) {
            for (int b = 0; b < 8; b++) {
                fx->tables[s][l][b] = (int32_t)((b * 61 + l * 7 + s * 13) %
                                                512);
            }
        }
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;

    fx->be->ops->mem_free(fx->be, fx->pool);
    lkv_fwd_destroy(&fx->f);
    lkv_model_destroy(&fx->m);
    lkv_model_file_close(&fx->mf);
    lkv_kern_backend_close(&fx->be);
    free(fx);
    return 0;
}

static lkv_status_t table_fn(void *ctx, int s, int l, const int32_t **b,
                             int *n)
{
    fx_t *fx = ctx;
    *b       = fx->tables[s][l];
    *n       = 8;
    return LKV_OK;
}

static void run(fx_t *fx, const lkv_fwd_seq_t *seqs, int n, int *rows)
{
    lkv_fwd_batch_t b = {.n_seqs = n, .seqs = seqs, .kv_pool = fx->pool,
                         .table = table_fn, .ctx = fx};
    assert_int_equal(lkv_fwd_run(fx->f, &b, rows), LKV_OK);
}

static void check_top5(const float *lg, const int *ids, const double *vals)
{
    float tmp[512];
    memcpy(tmp, lg, sizeof(tmp));
    for (int k = 0; k < 5; k++) {
        int best = 0;
        for (int i = 1; i < 512; i++) {
            if (tmp[i] > tmp[best]) {
                best = i;
            }
        }
        assert_int_equal(best, ids[k]);
        assert_true(fabs((double)tmp[best] - vals[k]) < 1e-4);
        tmp[best] = -INFINITY;
    }
}

static void forward_bos_logits_match_readme(void **state)
{
    fx_t         *fx     = *state;
    int32_t       bos    = 1;
    lkv_fwd_seq_t s      = {.n_tokens = 1, .tokens = &bos, .pos0 = 0,
                            .n_logits = 1};
    int           rows   = 0;
    float         lg[512];
    const int     ids[5] = {403, 385, 410, 317, 407};
    const double  v[5]   = {17.023516, 15.406213, 13.108265, 12.769170,
                            12.418086};
    double        sum    = 0;

    run(fx, &s, 1, &rows);
    assert_int_equal(rows, 1);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 1, lg), LKV_OK);
    check_top5(lg, ids, v);
    assert_true(fabs(lg[0] - -6.222911) < 1e-4);
    assert_true(fabs(lg[1] - 8.404343) < 1e-4);
    assert_true(fabs(lg[2] - -6.223736) < 1e-4);
    for (int i = 0; i < 512; i++) {
        sum += lg[i];
    }
    assert_true(fabs(sum - -1070.1716) < 1e-2);
}

static const int32_t prompt[7] = {1, 274, 287, 269, 345, 400, 428};

static void forward_prompt_logits_match_readme(void **state)
{
    fx_t         *fx     = *state;
    lkv_fwd_seq_t s      = {.n_tokens = 7, .tokens = prompt, .pos0 = 0,
                            .n_logits = 7};
    int           rows   = 0;
    float         lg[7 * 512];
    const int     ids[5] = {432, 382, 426, 397, 419};
    const double  v[5]   = {10.953790, 10.325832, 9.233603, 9.051721,
                            8.663521};

    run(fx, &s, 1, &rows);
    assert_int_equal(rows, 7);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 7, lg), LKV_OK);
    check_top5(lg + 6 * 512, ids, v);
    assert_true(fabs(lg[1] - 8.404343) < 1e-4); /* row 0 is after BOS */
}

static void forward_decode_matches_prefill_and_batching(void **state)
{
    fx_t         *fx = *state;
    lkv_fwd_seq_t s  = {.n_tokens = 7, .tokens = prompt, .pos0 = 0,
                        .n_logits = 7};
    int           rows;
    float         ref[7 * 512], lg[3 * 512];

    run(fx, &s, 1, &rows);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 7, ref), LKV_OK);

    /* seq 1: prefill 4 then decode; seq 2: 7-token prefill; seq 0: by one */
    lkv_fwd_seq_t b[3];
    b[0] = (lkv_fwd_seq_t){.n_tokens = 1, .tokens = prompt, .pos0 = 0,
                           .n_logits = 1};
    b[1] = (lkv_fwd_seq_t){.n_tokens = 4, .tokens = prompt, .pos0 = 0,
                           .n_logits = 1};
    b[2] = (lkv_fwd_seq_t){.n_tokens = 7, .tokens = prompt, .pos0 = 0,
                           .n_logits = 1};
    run(fx, b, 3, &rows);
    assert_int_equal(rows, 3);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 3, lg), LKV_OK);
    for (int i = 0; i < 512; i++) {
        assert_true(fabs(lg[i] - ref[i]) < 1e-4);
        assert_true(fabs(lg[512 + i] - ref[3 * 512 + i]) < 1e-4);
        assert_true(fabs(lg[1024 + i] - ref[6 * 512 + i]) < 1e-4);
    }
    for (int p = 1; p < 7; p++) {
        lkv_fwd_seq_t d[2];
        int           nd = 1;
        d[0] = (lkv_fwd_seq_t){.n_tokens = 1, .tokens = prompt + p, .pos0 = p,
                               .n_logits = 1};
        if (p >= 4) {
            d[1] = (lkv_fwd_seq_t){.n_tokens = 1, .tokens = prompt + p,
                                   .pos0 = p, .n_logits = 1};
            nd   = 2;
        }
        /* batch index 1 must be seq 1's tables: run with a shifted view */
        if (nd == 2) {
            run(fx, d, 2, &rows);
        } else {
            run(fx, d, 1, &rows);
        }
        assert_int_equal(lkv_fwd_logits_download(fx->f, 0, nd, lg), LKV_OK);
        for (int r = 0; r < nd; r++) {
            for (int i = 0; i < 512; i++) {
                assert_true(fabs(lg[r * 512 + i] - ref[p * 512 + i]) < 1e-4);
            }
        }
    }
}

static lkv_status_t short_table_fn(void *ctx, int s, int l,
                                   const int32_t **b, int *n)
{
    fx_t *fx = ctx;
    *b       = fx->tables[s][l];
    *n       = 1;
    return LKV_OK;
}

static void forward_bad_batches_are_refused(void **state)
{
    fx_t         *fx  = *state;
    int32_t       bad = 512;
    int32_t       ok[40];
    int           rows;
    lkv_fwd_seq_t s   = {.n_tokens = 1, .tokens = &bad, .pos0 = 0,
                         .n_logits = 1};
    lkv_fwd_batch_t b = {.n_seqs = 1, .seqs = &s, .kv_pool = fx->pool,
                         .table = table_fn, .ctx = fx};

    assert_int_equal(lkv_fwd_run(fx->f, &b, &rows), LKV_ERR_INVALID);
    for (int i = 0; i < 40; i++) {
        ok[i] = 5;
    }
    s = (lkv_fwd_seq_t){.n_tokens = 40, .tokens = ok, .pos0 = 0,
                        .n_logits = 1};
    b.table = short_table_fn; /* 1 block cannot hold 40 positions */
    assert_int_equal(lkv_fwd_run(fx->f, &b, &rows), LKV_ERR_INVALID);
    b.table = table_fn;
    s.pos0  = 8 * BS; /* beyond the table width */
    assert_int_equal(lkv_fwd_run(fx->f, &b, &rows), LKV_ERR_INVALID);
    s.pos0     = 0;
    s.n_logits = 3; /* neither 0, 1 nor n_tokens */
    assert_int_equal(lkv_fwd_run(fx->f, &b, &rows), LKV_ERR_INVALID);
    b.n_seqs = 9; /* over max_seqs */
    assert_int_equal(lkv_fwd_run(fx->f, &b, &rows), LKV_ERR_INVALID);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 1, (float[512]){0}),
                     LKV_ERR_INVALID); /* no rows from a failed pass */
}

static void forward_f16_and_bf16_kv_stay_close(void **state)
{
    fx_t         *fx = *state;
    lkv_fwd_seq_t s  = {.n_tokens = 7, .tokens = prompt, .pos0 = 0,
                        .n_logits = 7};
    int           rows;
    float         ref[7 * 512], lg[7 * 512];

    run(fx, &s, 1, &rows);
    assert_int_equal(lkv_fwd_logits_download(fx->f, 0, 7, ref), LKV_OK);
    for (int d = 0; d < 2; d++) {
        lkv_fwd_config_t fc = *lkv_fwd_config(fx->f);
        lkv_fwd_t       *f2 = NULL;
        void            *pool2;
        double           worst = 0;

        fc.kv_dtype = d == 0 ? LKV_DTYPE_F16 : LKV_DTYPE_BF16;
        assert_int_equal(lkv_fwd_create(fx->m, &fc, &f2), LKV_OK);
        assert_int_equal(LKV_KERN_CALL(fx->be, mem_alloc,
                                       512 * lkv_model_block_bytes(
                                                 fx->m, BS, fc.kv_dtype),
                                       &pool2),
                         LKV_OK);
        lkv_fwd_batch_t b = {.n_seqs = 1, .seqs = &s, .kv_pool = pool2,
                             .table = table_fn, .ctx = fx};
        assert_int_equal(lkv_fwd_run(f2, &b, &rows), LKV_OK);
        assert_int_equal(lkv_fwd_logits_download(f2, 0, 7, lg), LKV_OK);
        for (int i = 0; i < 7 * 512; i++) {
            double e = fabs((double)lg[i] - (double)ref[i]);
            worst    = e > worst ? e : worst;
        }
        /* half-precision K/V: small but nonzero error */
        assert_true(worst < (d == 0 ? 0.02 : 0.15));
        fx->be->ops->mem_free(fx->be, pool2);
        lkv_fwd_destroy(&f2);
    }
}

static void model_rope_llama3_scaling_matches_hf(void **state)
{
    (void)state;
    lkv_model_config_t c;
    float              f[32];

    memset(&c, 0, sizeof(c));
    c.head_dim                          = 64;
    c.rope_dim                          = 64;
    c.rope_theta                        = 500000.0f;
    c.rope_scaling.type                 = LKV_ROPE_SCALING_LLAMA3;
    c.rope_scaling.factor               = 8;
    c.rope_scaling.low_freq_factor      = 1;
    c.rope_scaling.high_freq_factor     = 4;
    c.rope_scaling.original_max_pos     = 8192;
    assert_int_equal(lkv_model_rope_inv_freq(&c, f), LKV_OK);
    /* high frequencies unchanged, low ones divided by factor, values from
     * transformers' _compute_llama3_parameters */
    assert_true(fabs(f[0] - 1.0) < 1e-7);
    assert_true(fabs(f[31] / (1.0 / pow(500000.0, 62.0 / 64.0) / 8) - 1) <
                1e-5);
    for (int i = 1; i < 32; i++) {
        assert_true(f[i] < f[i - 1]);
    }
    c.rope_dim = 7;
    assert_int_equal(lkv_model_rope_inv_freq(&c, f), LKV_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_bos_logits_match_readme),
        cmocka_unit_test(forward_prompt_logits_match_readme),
        cmocka_unit_test(forward_decode_matches_prefill_and_batching),
        cmocka_unit_test(forward_bad_batches_are_refused),
        cmocka_unit_test(forward_f16_and_bf16_kv_stay_close),
        cmocka_unit_test(model_rope_llama3_scaling_matches_hf),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
