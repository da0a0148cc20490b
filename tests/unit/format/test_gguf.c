/* test_gguf.c - GGUF reader on tests/data/gguf/qwen2-tiny.gguf (the qwen2 HF
 * fixture converted by tools/make_hf_fixtures.py): BF16 embedding, F16
 * matrices, F32 norms and biases, qwen2 keys, gpt2 (byte-level BPE)
 * tokenizer with the qwen2 pre-tokenizer; everything must agree with the
 * safetensors directory it came from.
 *
 * Threading: single-threaded cmocka tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "format/model_file.h"
#include "format/tokenizer.h"

#define QGGUF "tests/data/gguf/qwen2-tiny.gguf"
#define QHF   "tests/data/hf/qwen2"

static float elem(const lkv_tensor_t *t, size_t i)
{
    switch (t->dtype) {
    case LKV_DTYPE_F16: return lkv_f16_to_f32(((const uint16_t *)t->data)[i]);
    case LKV_DTYPE_BF16: return lkv_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

/* a (reduced precision) equals b (f32) within the rounding of its dtype */
static void assert_close(const lkv_tensor_t *a, const lkv_tensor_t *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    double rel = a->dtype == LKV_DTYPE_BF16 ? 1.0 / 256
                 : a->dtype == LKV_DTYPE_F16 ? 1.0 / 2048
                                             : 0.0;
    size_t n = (size_t)(a->rows * a->cols);
    for (size_t i = 0; i < n; i++) {
        float x = elem(a, i), y = elem(b, i);
        float d = x > y ? x - y : y - x;
        float m = y < 0 ? -y : y;
        assert_true(d <= rel * m + 1e-7f);
    }
}

static void gguf_qwen2_matches_safetensors(void **state)
{
    lkv_model_file_t *g = NULL, *h = NULL;
    assert_int_equal(lkv_model_file_open(QGGUF, NULL, &g), LKV_OK);
    assert_int_equal(lkv_model_file_open(QHF, NULL, &h), LKV_OK);
    const lkv_model_config_t *cg = lkv_model_file_config(g);
    const lkv_model_config_t *ch = lkv_model_file_config(h);
    assert_string_equal(cg->arch, "qwen2");
    assert_int_equal(cg->dim, ch->dim);
    assert_int_equal(cg->hidden_dim, ch->hidden_dim);
    assert_int_equal(cg->n_layers, ch->n_layers);
    assert_int_equal(cg->n_heads, ch->n_heads);
    assert_int_equal(cg->n_kv_heads, ch->n_kv_heads);
    assert_int_equal(cg->head_dim, ch->head_dim);
    assert_int_equal(cg->vocab_size, ch->vocab_size);
    assert_int_equal(cg->max_seq_len, ch->max_seq_len);
    assert_true(cg->rope_theta == ch->rope_theta);
    assert_true(cg->norm_eps == ch->norm_eps);
    /* llama.cpp rotates qwen2 in NeoX (halves) style, no permutation */
    assert_int_equal(cg->rope_style, LKV_ROPE_HALVES);
    assert_true(cg->qkv_bias);
    assert_true(cg->tied_output); /* no output.weight in the file */
    assert_int_equal(cg->eos_id, ch->eos_id);
    assert_int_equal(cg->bos_id, -1);
    /* a chat template is present: stop on EOS only */
    assert_int_equal(cg->n_stop_ids, 1);
    assert_int_equal(cg->stop_ids[0], cg->eos_id);

    const lkv_model_tensors_t *tg = lkv_model_file_tensors(g);
    const lkv_model_tensors_t *th = lkv_model_file_tensors(h);
    assert_int_equal(tg->tok_embd.dtype, LKV_DTYPE_BF16);
    assert_int_equal(tg->layers[0].wq.dtype, LKV_DTYPE_F16);
    assert_int_equal(tg->layers[0].attn_norm.dtype, LKV_DTYPE_F32);
    assert_int_equal(tg->layers[0].bq.dtype, LKV_DTYPE_F32);
    assert_close(&tg->tok_embd, &th->tok_embd);
    assert_ptr_equal(tg->output.data, tg->tok_embd.data);
    assert_close(&tg->out_norm, &th->out_norm);
    for (int l = 0; l < cg->n_layers; l++) {
        const lkv_layer_tensors_t *a = &tg->layers[l], *b = &th->layers[l];
        assert_close(&a->attn_norm, &b->attn_norm);
        assert_close(&a->wq, &b->wq);
        assert_close(&a->wk, &b->wk);
        assert_close(&a->wv, &b->wv);
        assert_close(&a->bq, &b->bq);
        assert_close(&a->bk, &b->bk);
        assert_close(&a->bv, &b->bv);
        assert_close(&a->wo, &b->wo);
        assert_close(&a->ffn_norm, &b->ffn_norm);
        assert_close(&a->w_gate, &b->w_gate);
        assert_close(&a->w_up, &b->w_up);
        assert_close(&a->w_down, &b->w_down);
    }
    /* half the bytes of the f32 original for the 2-D tensors */
    assert_true(lkv_model_file_weight_bytes(g) <
                lkv_model_file_weight_bytes(h) * 6 / 10);
    lkv_model_file_close(&g);
    lkv_model_file_close(&h);
}

static void gguf_gpt2_tokenizer_matches_hf_ids(void **state)
{
    lkv_model_file_t *g = NULL;
    assert_int_equal(lkv_model_file_open(QGGUF, NULL, &g), LKV_OK);
    const lkv_tokenizer_t *tok = lkv_model_file_tokenizer(g);
    assert_non_null(tok);
    assert_int_equal(lkv_tok_kind(tok), LKV_TOK_BPE);
    assert_false(lkv_tok_add_bos_default(tok));
    FILE *f = fopen(QHF "/expected.json", "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = 0;
    fclose(f);
    cJSON *exp = cJSON_Parse(text);
    free(text);
    int          n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "tokenizer_cases"))
    {
        const char  *s    = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        int32_t      ids[512];
        int          n;
        assert_int_equal(lkv_tok_encode(tok, s, strlen(s), false, true, ids,
                                        512, &n),
                         LKV_OK);
        assert_int_equal(n, cJSON_GetArraySize(want));
        for (int i = 0; i < n; i++) {
            assert_int_equal(ids[i],
                             (int32_t)cJSON_GetArrayItem(want, i)->valuedouble);
        }
        n_cases++;
    }
    assert_true(n_cases >= 50);
    cJSON_Delete(exp);
    lkv_model_file_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gguf_qwen2_matches_safetensors),
        cmocka_unit_test(gguf_gpt2_tokenizer_matches_hf_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
