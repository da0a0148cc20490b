/* test_engine.c - the offline engine end to end on stories260K: the README's
 * greedy golden (GGUF and llama2.c files), batching exactness (8 prompts of
 * different lengths, chunked prefill mixed with decode, equal to each run
 * alone), layer-wise offload exactness (interleave, all-but-one, random:1..5,
 * each with reload and stream, 16 concurrent sequences, also with a tight
 * device pool) and the engine's refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "format/model_file.h"
#include "format/tokenizer.h"
#include "kernels/kernels.h"
#include "worker/engine.h"
#include "worker/model.h"

#define MAXGEN 64
#define NREQ   16

typedef struct {
    lkv_kern_backend_t *be;
    lkv_model_file_t   *mf;
    lkv_model_t        *m;
} fx_t;

typedef struct {
    int32_t      toks[NREQ][MAXGEN];
    int          n[NREQ];
    lkv_status_t st[NREQ];
    int          ended[NREQ];
} out_t;

static const char *path(const char *rel)
{
    static char buf[2][4096];
    static int  k;
    const char *src = getenv("LKV_SOURCE_DIR");
    k               = !k;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", src ? src : ".", rel);
    return buf[k];
}

static int open_model(fx_t *fx, const char *model, const char *tok)
{
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = 1;
    if (lkv_kern_backend_open("cpu", &kc, &fx->be) != LKV_OK ||
        lkv_model_file_open(model, tok, &fx->mf) != LKV_OK ||
        lkv_model_create(fx->be, fx->mf, &fx->m) != LKV_OK) {
        return -1;
    }
    return 0;
}

static void close_model(fx_t *fx)
{
    lkv_model_destroy(&fx->m);
    lkv_model_file_close(&fx->mf);
    lkv_kern_backend_close(&fx->be);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    assert_int_equal(
        open_model(fx, path("models/stories260K/stories260K.gguf"), NULL), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    close_model(fx);
    free(fx);
    return 0;
}

static void on_tok(void *ctx, int req, int32_t tok, lkv_status_t st)
{
    out_t *o = ctx;
    if (tok >= 0) {
        assert_true(o->n[req] < MAXGEN);
        o->toks[req][o->n[req]++] = tok;
    } else {
        o->st[req] = st;
        o->ended[req]++;
    }
}

static lkv_status_t generate(const lkv_model_t *m,
                             const lkv_engine_config_t *cfg,
                             const lkv_engine_request_t *reqs, int n,
                             out_t *o, lkv_engine_stats_t *stats)
{
    lkv_engine_t *e = NULL;
    lkv_status_t  st;

    memset(o, 0, sizeof(*o));
    assert_int_equal(lkv_engine_create(m, cfg, &e), LKV_OK);
    st = lkv_engine_generate(e, reqs, n, on_tok, o);
    if (stats != NULL) {
        lkv_engine_stats(e, stats);
    }
    lkv_engine_destroy(&e);
    return st;
}

static const int32_t tom[7]     = {1, 274, 287, 269, 345, 400, 428};
static const int32_t golden[40] = {
    432, 392, 412, 444, 432, 263, 415, 414, 397, 396, 322, 261, 370, 270,
    277, 372, 426, 342, 397, 355, 267, 337, 335, 265, 315, 267, 422, 419,
    269, 352, 379, 261, 420, 277, 264, 265, 270, 277, 372, 426};

static lkv_engine_request_t greedy(const int32_t *p, int n, int max_tokens)
{
    lkv_engine_request_t r;
    memset(&r, 0, sizeof(r));
    r.prompt     = p;
    r.n_prompt   = n;
    r.max_tokens = max_tokens;
    return r;
}

static void check_golden(const lkv_model_t *m, lkv_engine_config_t cfg)
{
    lkv_engine_request_t r = greedy(tom, 7, 40);
    out_t               *o = malloc(sizeof(*o));

    assert_int_equal(generate(m, &cfg, &r, 1, o, NULL), LKV_OK);
    assert_int_equal(o->ended[0], 1);
    assert_int_equal(o->st[0], LKV_OK);
    assert_int_equal(o->n[0], 40);
    assert_memory_equal(o->toks[0], golden, sizeof(golden));
    free(o);
}

static void engine_gguf_prints_golden(void **state)
{
    fx_t *fx = *state;
    check_golden(fx->m, lkv_engine_config_default());
}

static void engine_runs_again_after_a_run(void **state)
{
    fx_t                *fx = *state;
    lkv_engine_config_t  cfg = lkv_engine_config_default();
    lkv_engine_request_t r   = greedy(tom, 7, 40);
    lkv_engine_t        *e   = NULL;
    out_t               *o   = malloc(sizeof(*o));

    cfg.offload     = LKV_OFFLOAD_INTERLEAVE;
    cfg.decode_mode = LKV_DECODE_STREAM;
    assert_int_equal(lkv_engine_create(fx->m, &cfg, &e), LKV_OK);
    for (int k = 0; k < 3; k++) {
        memset(o, 0, sizeof(*o));
        assert_int_equal(lkv_engine_generate(e, &r, 1, on_tok, o), LKV_OK);
        assert_int_equal(o->n[0], 40);
        assert_memory_equal(o->toks[0], golden, sizeof(golden));
    }
    lkv_engine_destroy(&e);
    assert_null(e);
    lkv_engine_destroy(&e);
    free(o);
}

static void engine_llama2c_prints_golden(void **state)
{
    fx_t fx2;
    (void)state;
    memset(&fx2, 0, sizeof(fx2));
    assert_int_equal(open_model(&fx2,
                                path("models/stories260K/stories260K.bin"),
                                path("models/stories260K/tok512.bin")),
                     0);
    check_golden(fx2.m, lkv_engine_config_default());
    close_model(&fx2);
}

static void engine_stream_offload_prints_golden(void **state)
{
    fx_t               *fx  = *state;
    lkv_engine_config_t cfg = lkv_engine_config_default();
    cfg.offload             = LKV_OFFLOAD_INTERLEAVE;
    cfg.decode_mode         = LKV_DECODE_STREAM;
    check_golden(fx->m, cfg);
    cfg.decode_mode = LKV_DECODE_RELOAD;
    cfg.offload     = LKV_OFFLOAD_ALL_BUT_ONE;
    check_golden(fx->m, cfg);
    /* a device pool that fits the sequence exactly (47 positions: 3 blocks
     * x 5 layers): the reload needs only the next token's headroom */
    cfg.n_device_blocks = 15;
    cfg.n_host_blocks   = 15;
    check_golden(fx->m, cfg);
    cfg.decode_mode = LKV_DECODE_STREAM;
    check_golden(fx->m, cfg);
}

/* 16 prompts of different lengths from the model's tokenizer. */
static const char *texts[NREQ] = {
    "Once upon a time",
    "Lily and Ben went to the park to play with a big red ball",
    "The cat",
    "One day, a little bird saw a shiny",
    "Tom had a toy car. He liked to play with it every day and",
    "Sue",
    "The sun was hot and the children were",
    "Max and his mom baked a cake. It was very",
    "There was a boy named Tim",
    "A big dog",
    "Anna found a box in the garden. She opened it and saw",
    "The little fish swam",
    "Mom said, \"Let's go",
    "It was a rainy day",
    "Ben wanted to fly a kite but the wind",
    "Once there was a tree that could talk. It said"};

static int32_t prompt_ids[NREQ][64];
static int     prompt_len[NREQ];

static void make_requests(const lkv_model_file_t *mf,
                          lkv_engine_request_t *reqs, int n)
{
    const lkv_tokenizer_t *tok = lkv_model_file_tokenizer(mf);
    for (int i = 0; i < n; i++) {
        assert_int_equal(lkv_tok_encode(tok, texts[i], strlen(texts[i]), true,
                                        false, prompt_ids[i], 64,
                                        &prompt_len[i]),
                         LKV_OK);
        assert_true(prompt_len[i] > 0 && prompt_len[i] <= 64);
        reqs[i] = greedy(prompt_ids[i], prompt_len[i], 20 + (i * 7) % 25);
    }
}

static void engine_batch_of_8_equals_each_alone(void **state)
{
    fx_t                *fx = *state;
    lkv_engine_request_t reqs[8];
    out_t               *batch = malloc(sizeof(out_t));
    out_t               *alone = malloc(sizeof(out_t));
    lkv_engine_config_t  cfg   = lkv_engine_config_default();

    make_requests(fx->mf, reqs, 8);
    cfg.max_batch_tokens = 12; /* chunked prefill mixed with decode */
    assert_int_equal(generate(fx->m, &cfg, reqs, 8, batch, NULL), LKV_OK);
    cfg = lkv_engine_config_default();
    for (int i = 0; i < 8; i++) {
        assert_int_equal(generate(fx->m, &cfg, &reqs[i], 1, alone, NULL),
                         LKV_OK);
        assert_int_equal(batch->st[i], LKV_OK);
        assert_int_equal(batch->ended[i], 1);
        assert_int_equal(batch->n[i], alone->n[0]);
        assert_true(batch->n[i] > 0);
        assert_memory_equal(batch->toks[i], alone->toks[0],
                            (size_t)alone->n[0] * sizeof(int32_t));
    }
    /* seeded sampling does not depend on batching either */
    for (int i = 0; i < 8; i++) {
        reqs[i].sampling.temperature = 0.9f;
        reqs[i].sampling.top_p       = 0.9f;
        reqs[i].sampling.top_k       = 40;
        reqs[i].sampling.seed        = 1000u + (uint64_t)i;
    }
    cfg                  = lkv_engine_config_default();
    cfg.max_batch_tokens = 12;
    assert_int_equal(generate(fx->m, &cfg, reqs, 8, batch, NULL), LKV_OK);
    cfg = lkv_engine_config_default();
    for (int i = 0; i < 8; i++) {
        assert_int_equal(generate(fx->m, &cfg, &reqs[i], 1, alone, NULL),
                         LKV_OK);
        assert_int_equal(batch->n[i], alone->n[0]);
        assert_memory_equal(batch->toks[i], alone->toks[0],
                            (size_t)alone->n[0] * sizeof(int32_t));
    }
    /* more prompts than sequence slots: they queue and reuse the slots */
    cfg          = lkv_engine_config_default();
    cfg.max_seqs = 3;
    assert_int_equal(generate(fx->m, &cfg, reqs, 8, alone, NULL), LKV_OK);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(alone->n[i], batch->n[i]);
        assert_memory_equal(alone->toks[i], batch->toks[i],
                            (size_t)batch->n[i] * sizeof(int32_t));
    }
    free(batch);
    free(alone);
}

static void engine_offload_policies_are_exact(void **state)
{
    fx_t                *fx = *state;
    lkv_engine_request_t reqs[NREQ];
    out_t               *ref = malloc(sizeof(out_t));
    out_t               *got = malloc(sizeof(out_t));
    lkv_engine_config_t  cfg = lkv_engine_config_default();
    lkv_engine_stats_t   stats;
    const char          *policies[] = {"interleave", "all-but-one",
                                       "random:1",   "random:2",
                                       "random:3",   "random:4",
                                       "random:5"};

    make_requests(fx->mf, reqs, NREQ);
    cfg.max_seqs         = NREQ;
    cfg.max_batch_tokens = 64;
    assert_int_equal(generate(fx->m, &cfg, reqs, NREQ, ref, &stats), LKV_OK);
    assert_int_equal(stats.n_offloads, 0);
    for (size_t pi = 0; pi < sizeof(policies) / sizeof(policies[0]); pi++) {
        for (int mode = 0; mode < 2; mode++) {
            for (int tight = 0; tight < 2; tight++) {
                lkv_engine_config_t c = cfg;
                assert_int_equal(lkv_engine_parse_offload(
                                     policies[pi], &c.offload,
                                     &c.offload_seed),
                                 LKV_OK);
                c.decode_mode = mode ? LKV_DECODE_STREAM : LKV_DECODE_RELOAD;
                if (tight) {
                    /* room for about 3 sequences' full KV at a time */
                    c.n_device_blocks = 60;
                }
                assert_int_equal(generate(fx->m, &c, reqs, NREQ, got, &stats),
                                 LKV_OK);
                assert_true(stats.n_offloads > 0);
                if (mode) {
                    assert_true(stats.n_stages > 0);
                } else {
                    assert_true(stats.n_reloads > 0);
                }
                assert_true(stats.bytes_d2h > 0 && stats.bytes_h2d > 0);
                for (int i = 0; i < NREQ; i++) {
                    assert_int_equal(got->st[i], LKV_OK);
                    assert_int_equal(got->ended[i], 1);
                    assert_int_equal(got->n[i], ref->n[i]);
                    assert_memory_equal(got->toks[i], ref->toks[i],
                                        (size_t)ref->n[i] * sizeof(int32_t));
                }
            }
        }
    }
    free(ref);
    free(got);
}

static void engine_refuses_bad_requests(void **state)
{
    fx_t                *fx  = *state;
    lkv_engine_config_t  cfg = lkv_engine_config_default();
    lkv_engine_request_t r   = greedy(tom, 7, 10);
    out_t               *o   = malloc(sizeof(*o));
    int32_t             *big = calloc(600, sizeof(int32_t));
    lkv_offload_policy_t pol;
    uint64_t             seed;

    /* a prompt longer than the context */
    cfg.max_ctx = 6;
    assert_int_equal(generate(fx->m, &cfg, &r, 1, o, NULL), LKV_ERR_TOOLONG);
    /* the context ends generation early */
    cfg.max_ctx = 10;
    assert_int_equal(generate(fx->m, &cfg, &r, 1, o, NULL), LKV_OK);
    assert_int_equal(o->n[0], 4);
    /* a device pool that cannot hold one prompt */
    cfg                 = lkv_engine_config_default();
    cfg.n_device_blocks = 3;
    assert_int_equal(generate(fx->m, &cfg, &r, 1, o, NULL), LKV_ERR_NOSPACE);
    assert_int_equal(o->ended[0], 1);
    assert_int_equal(o->st[0], LKV_ERR_NOSPACE);
    /* empty prompt, no tokens to generate */
    cfg        = lkv_engine_config_default();
    r.n_prompt = 0;
    assert_int_equal(generate(fx->m, &cfg, &r, 1, o, NULL), LKV_ERR_INVALID);
    r = greedy(tom, 7, 0);
    assert_int_equal(generate(fx->m, &cfg, &r, 1, o, NULL), LKV_ERR_INVALID);
    /* policy strings */
    assert_int_equal(lkv_engine_parse_offload("random:", &pol, &seed),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_engine_parse_offload("random:x1", &pol, &seed),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_engine_parse_offload("everything", &pol, &seed),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_engine_parse_offload("random:17", &pol, &seed),
                     LKV_OK);
    assert_int_equal(pol, LKV_OFFLOAD_RANDOM);
    assert_int_equal(seed, 17);
    free(big);
    free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(engine_gguf_prints_golden),
        cmocka_unit_test(engine_llama2c_prints_golden),
        cmocka_unit_test(engine_runs_again_after_a_run),
        cmocka_unit_test(engine_stream_offload_prints_golden),
        cmocka_unit_test(engine_batch_of_8_equals_each_alone),
        cmocka_unit_test(engine_offload_policies_are_exact),
        cmocka_unit_test(engine_refuses_bad_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
