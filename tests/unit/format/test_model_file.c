/* test_model_file.c - model file loaders: llama2.c checkpoint, GGUF,
 * Hugging Face safetensors directories (single file, sharded, bf16, tied,
 * biases) and dummy models; truncated, corrupted and inconsistent files
 * must fail with a clean status (never crash, never leak: run under ASan).
 *
 * Threading: single-threaded cmocka tests; scratch files under /tmp.
 */
#define _GNU_SOURCE /* memmem, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "format/tokenizer.h"

#define BIN    "models/stories260K/stories260K.bin"
#define TOK512 "models/stories260K/tok512.bin"
#define GGUF   "models/stories260K/stories260K.gguf"

/* ---- helpers ---- */

static uint8_t *read_all(const char *path, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *len_p = (size_t)len;
    return buf;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *scratch_dir(void)
{
    char *d = strdup("/tmp/lkv_fmt_test_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static void copy_dir(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cp -r '%s'/. '%s'/", from, to);
    assert_int_equal(system(cmd), 0);
}

/* open path, expect status; the out pointer must stay NULL on failure */
static void expect_open(const char *path, const char *tok, lkv_status_t want)
{
    lkv_model_file_t *mf = NULL;
    lkv_status_t      st = lkv_model_file_open(path, tok, &mf);
    if (st != want) {
        fprintf(stderr, "open %s: got %s, want %s\n", path,
                lkv_status_name(st), lkv_status_name(want));
    }
    assert_int_equal(st, want);
    if (st == LKV_OK) {
        assert_non_null(mf);
        lkv_model_file_close(&mf);
    }
    assert_null(mf);
}

static size_t tensor_bytes(const lkv_tensor_t *t)
{
    return (size_t)(t->rows * t->cols) * lkv_dtype_size(t->dtype);
}

/* ---- llama2.c ---- */

static void llama2c_stories260k_loads(void **state)
{
    lkv_model_file_t *mf = NULL;
    assert_int_equal(lkv_model_file_open(BIN, TOK512, &mf), LKV_OK);
    const lkv_model_config_t *c = lkv_model_file_config(mf);
    assert_string_equal(lkv_model_file_format(mf), "llama2c");
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->rope_dim, 8);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->max_seq_len, 512);
    assert_int_equal(c->rope_style, LKV_ROPE_ADJACENT);
    assert_true(c->tied_output);
    assert_false(c->qkv_bias);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->eos_id, 2);
    assert_int_equal(c->n_stop_ids, 2); /* EOS and BOS */
    assert_true((c->stop_ids[0] == 2 && c->stop_ids[1] == 1));
    const lkv_model_tensors_t *t = lkv_model_file_tensors(mf);
    assert_ptr_equal(t->output.data, t->tok_embd.data);
    assert_int_equal(t->layers[4].w_down.rows, 64);
    assert_int_equal(t->layers[4].w_down.cols, 172);
    assert_int_equal(t->layers[0].wk.rows, 32);
    assert_null(t->layers[0].bq.data);
    assert_null(t->rope_freqs.data);
    /* first embedding value at byte 28 of the file */
    size_t   len;
    uint8_t *raw = read_all(BIN, &len);
    assert_memory_equal(t->tok_embd.data, raw + 28, 64 * 4);
    assert_memory_equal(t->out_norm.data, raw + 1039900, 256);
    free(raw);
    /* 260,032 parameters, tied: 1,040,128 bytes */
    assert_int_equal(lkv_model_file_weight_bytes(mf), 260032 * 4);
    assert_non_null(lkv_model_file_tokenizer(mf));
    lkv_model_file_close(&mf);
    assert_null(mf);
    lkv_model_file_close(&mf); /* NULL is fine */
    lkv_model_file_close(NULL);
}

static void llama2c_finds_sibling_tokenizer(void **state)
{
    expect_open(BIN, NULL, LKV_OK);
    /* a copy without a tokenizer next to it */
    char  *d = scratch_dir();
    char   path[256];
    size_t len;
    snprintf(path, sizeof(path), "%s/model.bin", d);
    uint8_t *raw = read_all(BIN, &len);
    write_all(path, raw, len);
    expect_open(path, NULL, LKV_ERR_NOTFOUND);
    expect_open(path, "/nonexistent/tok.bin", LKV_ERR_NOTFOUND);
    free(raw);
    remove_dir(d);
}

static void llama2c_truncated_or_corrupt_fails_cleanly(void **state)
{
    char    *d = scratch_dir();
    char     path[256];
    size_t   len;
    uint8_t *raw = read_all(BIN, &len);
    snprintf(path, sizeof(path), "%s/m.bin", d);
    const size_t cuts[] = {0, 3, 27, 28, 1000, 131100, len / 2, len - 4,
                           len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_all(path, raw, cuts[i]);
        expect_open(path, TOK512, LKV_ERR_FORMAT);
    }
    /* trailing data */
    uint8_t *big = calloc(1, len + 8);
    memcpy(big, raw, len);
    write_all(path, big, len + 8);
    expect_open(path, TOK512, LKV_ERR_FORMAT);
    free(big);
    /* header fields: zero, negative, non-divisible, huge */
    const int32_t bad_vals[][2] = {{0, 0}, {3, 7}, {4, 3}, {0, -64}, {2, 0},
                                   {2, 1 << 30}, {6, -1}};
    for (size_t i = 0; i < sizeof(bad_vals) / sizeof(bad_vals[0]); i++) {
        uint8_t *cp = malloc(len);
        memcpy(cp, raw, len);
        memcpy(cp + 4 * bad_vals[i][0], &bad_vals[i][1], 4);
        write_all(path, cp, len);
        expect_open(path, TOK512, LKV_ERR_FORMAT);
        free(cp);
    }
    /* a version-1 export */
    uint8_t *cp = malloc(len);
    memcpy(cp, raw, len);
    memcpy(cp, "ak42", 4);
    write_all(path, cp, len);
    expect_open(path, TOK512, LKV_ERR_UNSUPPORTED);
    free(cp);
    /* tokenizer smaller than the vocabulary */
    expect_open(BIN, "tests/data/hf/llama2/tokenizer.json", LKV_ERR_FORMAT);
    free(raw);
    remove_dir(d);
}

/* ---- GGUF ---- */

static void gguf_stories260k_matches_llama2c(void **state)
{
    lkv_model_file_t *g = NULL, *b = NULL;
    assert_int_equal(lkv_model_file_open(GGUF, NULL, &g), LKV_OK);
    assert_int_equal(lkv_model_file_open(BIN, TOK512, &b), LKV_OK);
    const lkv_model_config_t *cg = lkv_model_file_config(g);
    const lkv_model_config_t *cb = lkv_model_file_config(b);
    assert_string_equal(lkv_model_file_format(g), "gguf");
    assert_int_equal(cg->dim, cb->dim);
    assert_int_equal(cg->hidden_dim, cb->hidden_dim);
    assert_int_equal(cg->n_layers, cb->n_layers);
    assert_int_equal(cg->n_heads, cb->n_heads);
    assert_int_equal(cg->n_kv_heads, cb->n_kv_heads);
    assert_int_equal(cg->head_dim, cb->head_dim);
    assert_int_equal(cg->rope_dim, 8);
    assert_int_equal(cg->vocab_size, 512);
    assert_int_equal(cg->max_seq_len, 2048); /* what the GGUF says */
    assert_true(cg->norm_eps > 0.99e-5f && cg->norm_eps < 1.01e-5f);
    assert_true(cg->rope_theta == 10000.0f);
    assert_int_equal(cg->rope_style, LKV_ROPE_ADJACENT);
    assert_int_equal(cg->bos_id, 1);
    assert_int_equal(cg->eos_id, 2);
    /* base llama vocab without a chat template: stop on EOS and BOS */
    assert_int_equal(cg->n_stop_ids, 2);
    assert_int_equal(cg->stop_ids[0], 2);
    assert_int_equal(cg->stop_ids[1], 1);
    const lkv_model_tensors_t *tg = lkv_model_file_tensors(g);
    const lkv_model_tensors_t *tb = lkv_model_file_tensors(b);
    /* every tensor is byte-identical (README: Verified) */
    assert_memory_equal(tg->tok_embd.data, tb->tok_embd.data,
                        tensor_bytes(&tb->tok_embd));
    assert_memory_equal(tg->output.data, tb->tok_embd.data,
                        tensor_bytes(&tb->tok_embd));
    assert_memory_equal(tg->out_norm.data, tb->out_norm.data, 256);
    for (int l = 0; l < 5; l++) {
        const lkv_layer_tensors_t *x = &tg->layers[l], *y = &tb->layers[l];
        const lkv_tensor_t *xs[] = {&x->attn_norm, &x->wq, &x->wk, &x->wv,
                                    &x->wo, &x->ffn_norm, &x->w_gate,
                                    &x->w_up, &x->w_down};
        const lkv_tensor_t *ys[] = {&y->attn_norm, &y->wq, &y->wk, &y->wv,
                                    &y->wo, &y->ffn_norm, &y->w_gate,
                                    &y->w_up, &y->w_down};
        for (int i = 0; i < 9; i++) {
            assert_int_equal(xs[i]->rows, ys[i]->rows);
            assert_int_equal(xs[i]->cols, ys[i]->cols);
            assert_int_equal(xs[i]->dtype, LKV_DTYPE_F32);
            assert_memory_equal(xs[i]->data, ys[i]->data, tensor_bytes(ys[i]));
        }
    }
    /* the GGUF keeps output.weight as its own copy */
    assert_false(cg->tied_output);
    assert_int_equal(lkv_model_file_weight_bytes(g), (260032 + 512 * 64) * 4);
    lkv_model_file_close(&g);
    lkv_model_file_close(&b);
}

/* The default model is the bundled GGUF built into the binary: the same
 * config, tokenizer and bytes as the file; other builtin: names are a clear
 * NOTFOUND. */
static void builtin_default_is_the_bundled_gguf(void **state)
{
    lkv_model_file_t *g = NULL, *f = NULL;
    (void)state;
#ifdef LKV_EMBED_MODEL
    assert_int_equal(lkv_model_file_open(LKV_DEFAULT_MODEL, NULL, &g), LKV_OK);
    assert_int_equal(lkv_model_file_open(GGUF, NULL, &f), LKV_OK);
    assert_string_equal(lkv_model_file_format(g), "gguf");
    const lkv_model_config_t *cg = lkv_model_file_config(g);
    const lkv_model_config_t *cf = lkv_model_file_config(f);
    assert_int_equal(cg->dim, cf->dim);
    assert_int_equal(cg->n_layers, cf->n_layers);
    assert_int_equal(cg->vocab_size, cf->vocab_size);
    assert_int_equal(cg->max_seq_len, cf->max_seq_len);
    assert_int_equal(cg->n_stop_ids, cf->n_stop_ids);
    assert_int_equal(lkv_model_file_weight_bytes(g),
                     lkv_model_file_weight_bytes(f));
    const lkv_model_tensors_t *tg = lkv_model_file_tensors(g);
    const lkv_model_tensors_t *tf = lkv_model_file_tensors(f);
    assert_memory_equal(tg->tok_embd.data, tf->tok_embd.data,
                        tensor_bytes(&tf->tok_embd));
    assert_memory_equal(tg->output.data, tf->output.data,
                        tensor_bytes(&tf->output));
    for (int l = 0; l < cf->n_layers; l++) {
        assert_memory_equal(tg->layers[l].wq.data, tf->layers[l].wq.data,
                            tensor_bytes(&tf->layers[l].wq));
        assert_memory_equal(tg->layers[l].w_down.data,
                            tf->layers[l].w_down.data,
                            tensor_bytes(&tf->layers[l].w_down));
        /* aligned like an mmap of the file */
        assert_int_equal((uintptr_t)tg->layers[l].wq.data % 32, 0);
    }
    const char *text = "Tom and his dog";
    int32_t     ids_g[64], ids_f[64];
    int         n_g = 0, n_f = 0;
    assert_int_equal(lkv_tok_encode(lkv_model_file_tokenizer(g), text,
                                    strlen(text), true, true, ids_g, 64, &n_g),
                     LKV_OK);
    assert_int_equal(lkv_tok_encode(lkv_model_file_tokenizer(f), text,
                                    strlen(text), true, true, ids_f, 64, &n_f),
                     LKV_OK);
    assert_true(n_g > 1);
    assert_int_equal(n_g, n_f);
    assert_memory_equal(ids_g, ids_f, (size_t)n_g * sizeof(int32_t));
    lkv_model_file_close(&g);
    lkv_model_file_close(&f);
#else
    print_message("built with LKV_EMBED_MODEL=OFF: no built-in model\n");
    expect_open(LKV_DEFAULT_MODEL, NULL, LKV_ERR_NOTFOUND);
#endif
    expect_open("builtin:no-such-model", NULL, LKV_ERR_NOTFOUND);
}

static void gguf_truncated_at_many_offsets_fails_cleanly(void **state)
{
    char    *d = scratch_dir();
    char     path[256];
    size_t   len;
    uint8_t *raw = read_all(GGUF, &len);
    snprintf(path, sizeof(path), "%s/m.gguf", d);
    const size_t cuts[] = {0,    3,     4,     8,     16,    23,     24,
                           40,   100,   1000,  5000,  14000, 14175,  14176,
                           14177, 20000, 600000, len - 4, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_all(path, raw, cuts[i]);
        expect_open(path, NULL, LKV_ERR_FORMAT);
    }
    free(raw);
    remove_dir(d);
}

static void gguf_corrupt_header_fails_cleanly(void **state)
{
    char    *d = scratch_dir();
    char     path[256];
    size_t   len;
    uint8_t *raw = read_all(GGUF, &len);
    uint8_t *cp  = malloc(len);
    snprintf(path, sizeof(path), "%s/m.gguf", d);
    struct {
        size_t       off;
        uint64_t     val;
        int          width;
        lkv_status_t want;
    } edits[] = {
        {0, 'X', 1, LKV_ERR_UNSUPPORTED},           /* magic: sniffed by ext */
        {4, 7, 4, LKV_ERR_UNSUPPORTED},             /* version */
        {8, 1ull << 40, 8, LKV_ERR_FORMAT},         /* n_tensors */
        {16, 1ull << 40, 8, LKV_ERR_FORMAT},        /* n_kv */
        {16, 0, 8, LKV_ERR_FORMAT},                 /* no metadata */
        {24, 1ull << 50, 8, LKV_ERR_FORMAT},        /* first key length */
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        memcpy(cp, raw, len);
        memcpy(cp + edits[i].off, &edits[i].val, (size_t)edits[i].width);
        write_all(path, cp, len);
        lkv_model_file_t *mf = NULL;
        lkv_status_t      st = lkv_model_file_open(path, NULL, &mf);
        assert_true(st < 0);
        if (i != 0) {
            assert_int_equal(st, edits[i].want);
        }
        assert_null(mf);
    }
    /* find the first tensor info ("token_embd.weight") and corrupt it */
    const char *name = "token_embd.weight";
    uint8_t    *hit  = memmem(raw, 14176, name, strlen(name));
    assert_non_null(hit);
    size_t   ti = (size_t)(hit - raw) + strlen(name); /* -> n_dims */
    uint32_t u32;
    uint64_t u64;
    memcpy(cp, raw, len); /* ggml type Q4_0 */
    u32 = 2;
    memcpy(cp + ti + 4 + 16, &u32, 4);
    write_all(path, cp, len);
    expect_open(path, NULL, LKV_ERR_UNSUPPORTED);
    memcpy(cp, raw, len); /* n_dims 9 */
    u32 = 9;
    memcpy(cp + ti, &u32, 4);
    write_all(path, cp, len);
    expect_open(path, NULL, LKV_ERR_FORMAT);
    memcpy(cp, raw, len); /* a wrong shape: [64, 511] */
    u64 = 511;
    memcpy(cp + ti + 4 + 8, &u64, 8);
    write_all(path, cp, len);
    expect_open(path, NULL, LKV_ERR_FORMAT);
    memcpy(cp, raw, len); /* offset past the end */
    u64 = (uint64_t)len;
    memcpy(cp + ti + 4 + 16 + 4, &u64, 8);
    write_all(path, cp, len);
    expect_open(path, NULL, LKV_ERR_FORMAT);
    memcpy(cp, raw, len); /* misaligned offset */
    u64 = 4;
    memcpy(cp + ti + 4 + 16 + 4, &u64, 8);
    write_all(path, cp, len);
    expect_open(path, NULL, LKV_ERR_FORMAT);
    /* seeded random byte flips over the header: any status, no crash */
    uint64_t s = 42;
    int      n_ok = 0, n_err = 0;
    for (int i = 0; i < 300; i++) {
        memcpy(cp, raw, len);
        s             = s * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t off    = (size_t)(s >> 33) % 14176;
        cp[off]      ^= (uint8_t)(1u << ((s >> 20) & 7));
        write_all(path, cp, len);
        lkv_model_file_t *mf = NULL;
        lkv_status_t      st = lkv_model_file_open(path, NULL, &mf);
        if (st == LKV_OK) {
            n_ok++;
            lkv_model_file_close(&mf);
        } else {
            n_err++;
            assert_null(mf);
        }
    }
    assert_int_equal(n_ok + n_err, 300);
    assert_true(n_err > 0);
    free(cp);
    free(raw);
    remove_dir(d);
}

/* ---- Hugging Face safetensors ---- */

static void hf_fixtures_load(void **state)
{
    struct {
        const char *name, *arch;
        int         n_kv_heads;
        bool        tied, bias, llama3;
        lkv_dtype_t dtype;
    } fx[] = {
        {"llama2", "llama", 4, false, false, false, LKV_DTYPE_F32},
        {"llama3", "llama", 2, false, false, true, LKV_DTYPE_F32},
        {"mistral", "mistral", 2, false, false, false, LKV_DTYPE_BF16},
        {"qwen2", "qwen2", 2, true, true, false, LKV_DTYPE_F32},
    };
    for (size_t i = 0; i < sizeof(fx) / sizeof(fx[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "tests/data/hf/%s", fx[i].name);
        lkv_model_file_t *mf = NULL;
        assert_int_equal(lkv_model_file_open(path, NULL, &mf), LKV_OK);
        const lkv_model_config_t  *c = lkv_model_file_config(mf);
        const lkv_model_tensors_t *t = lkv_model_file_tensors(mf);
        assert_string_equal(lkv_model_file_format(mf), "safetensors");
        assert_string_equal(c->arch, fx[i].arch);
        assert_int_equal(c->dim, 64);
        assert_int_equal(c->hidden_dim, 160);
        assert_int_equal(c->n_layers, 2);
        assert_int_equal(c->n_heads, 4);
        assert_int_equal(c->n_kv_heads, fx[i].n_kv_heads);
        assert_int_equal(c->head_dim, 16);
        assert_int_equal(c->vocab_size, 600);
        assert_int_equal(c->rope_style, LKV_ROPE_HALVES);
        assert_int_equal(c->tied_output, fx[i].tied);
        assert_int_equal(c->qkv_bias, fx[i].bias);
        assert_int_equal(t->tok_embd.dtype, fx[i].dtype);
        assert_int_equal(t->layers[1].w_down.rows, 64);
        assert_int_equal(t->layers[1].w_down.cols, 160);
        if (fx[i].bias) {
            assert_non_null(t->layers[1].bv.data);
            assert_int_equal(t->layers[1].bv.dtype, LKV_DTYPE_F32);
            assert_int_equal(t->layers[1].bv.cols, 32);
        }
        if (fx[i].tied) {
            assert_ptr_equal(t->output.data, t->tok_embd.data);
        } else {
            assert_ptr_not_equal(t->output.data, t->tok_embd.data);
        }
        if (fx[i].llama3) {
            assert_int_equal(c->rope_scaling.type, LKV_ROPE_SCALING_LLAMA3);
            assert_true(c->rope_scaling.factor == 8.0f);
            assert_true(c->rope_scaling.low_freq_factor == 1.0f);
            assert_true(c->rope_scaling.high_freq_factor == 4.0f);
            assert_int_equal(c->rope_scaling.original_max_pos, 64);
            assert_true(c->rope_theta == 500000.0f);
        } else {
            assert_int_equal(c->rope_scaling.type, LKV_ROPE_SCALING_NONE);
        }
        assert_true(c->n_stop_ids >= 1);
        assert_int_equal(c->stop_ids[0], c->eos_id);
        assert_non_null(lkv_model_file_tokenizer(mf));
        assert_true(lkv_model_file_weight_bytes(mf) > 300000);
        lkv_model_file_close(&mf);
    }
    /* a file inside the directory opens the directory */
    expect_open("tests/data/hf/llama2/config.json", NULL, LKV_OK);
}

static void edit_file(const char *path, const char *from, const char *to)
{
    size_t   len;
    uint8_t *raw = read_all(path, &len);
    raw[len]     = 0;
    char *hit    = strstr((char *)raw, from);
    assert_non_null(hit);
    size_t pre = (size_t)(hit - (char *)raw);
    size_t n   = len - strlen(from) + strlen(to);
    char  *out = malloc(n + 1);
    memcpy(out, raw, pre);
    memcpy(out + pre, to, strlen(to));
    memcpy(out + pre + strlen(to), hit + strlen(from),
           len - pre - strlen(from));
    write_all(path, out, n);
    free(out);
    free(raw);
}

static void hf_truncated_or_inconsistent_fails_cleanly(void **state)
{
    char *d = scratch_dir();
    char  st_path[300], cfg_path[300];
    snprintf(st_path, sizeof(st_path), "%s/model.safetensors", d);
    snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", d);
    size_t   len;
    uint8_t *raw = read_all("tests/data/hf/llama2/model.safetensors", &len);
    copy_dir("tests/data/hf/llama2", d);
    expect_open(d, NULL, LKV_OK);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    const size_t cuts[] = {0, 7, 8, 100, (size_t)hlen + 7, (size_t)hlen + 8,
                           len / 2, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_all(st_path, raw, cuts[i]);
        expect_open(d, NULL, LKV_ERR_FORMAT);
    }
    /* header length past the end, broken header JSON */
    uint8_t *cp = malloc(len);
    memcpy(cp, raw, len);
    uint64_t huge = len;
    memcpy(cp, &huge, 8);
    write_all(st_path, cp, len);
    expect_open(d, NULL, LKV_ERR_FORMAT);
    memcpy(cp, raw, len);
    cp[8] = '[';
    write_all(st_path, cp, len);
    expect_open(d, NULL, LKV_ERR_FORMAT);
    free(cp);
    write_all(st_path, raw, len);
    /* a shape that disagrees with the config */
    edit_file(cfg_path, "\"intermediate_size\": 160", "\"intermediate_size\": 128");
    expect_open(d, NULL, LKV_ERR_FORMAT);
    edit_file(cfg_path, "\"intermediate_size\": 128", "\"intermediate_size\": 160");
    expect_open(d, NULL, LKV_OK);
    /* unsupported architecture, invalid JSON, missing config */
    edit_file(cfg_path, "LlamaForCausalLM", "GPTNeoXForCausalLM");
    expect_open(d, NULL, LKV_ERR_UNSUPPORTED);
    write_all(cfg_path, "{\"hidden_size\": ", 16);
    expect_open(d, NULL, LKV_ERR_FORMAT);
    remove(cfg_path);
    expect_open(d, NULL, LKV_ERR_NOTFOUND);
    free(raw);
    remove_dir(d);

    /* sharded: a missing shard names the file */
    d = scratch_dir();
    copy_dir("tests/data/hf/llama3", d);
    expect_open(d, NULL, LKV_OK);
    char shard[300];
    snprintf(shard, sizeof(shard), "%s/model-00003-of-00005.safetensors", d);
    remove(shard);
    expect_open(d, NULL, LKV_ERR_NOTFOUND);
    remove_dir(d);

    /* untied model without lm_head */
    d = scratch_dir();
    copy_dir("tests/data/hf/qwen2", d);
    snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", d);
    edit_file(cfg_path, "\"tie_word_embeddings\": true",
              "\"tie_word_embeddings\": false");
    expect_open(d, NULL, LKV_ERR_FORMAT);
    remove_dir(d);
}

static void hf_misaligned_data_is_copied_aligned(void **state)
{
    /* grow the header by one space: every tensor lands at an odd address */
    char *d = scratch_dir();
    char  st_path[300];
    copy_dir("tests/data/hf/llama2", d);
    snprintf(st_path, sizeof(st_path), "%s/model.safetensors", d);
    size_t   len;
    uint8_t *raw = read_all("tests/data/hf/llama2/model.safetensors", &len);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    uint8_t *cp  = malloc(len + 1);
    uint64_t nh  = hlen + 1;
    memcpy(cp, &nh, 8);
    memcpy(cp + 8, raw + 8, (size_t)hlen);
    cp[8 + hlen] = ' ';
    memcpy(cp + 9 + hlen, raw + 8 + hlen, len - 8 - (size_t)hlen);
    write_all(st_path, cp, len + 1);
    lkv_model_file_t *a = NULL, *b = NULL;
    assert_int_equal(lkv_model_file_open(d, NULL, &a), LKV_OK);
    assert_int_equal(lkv_model_file_open("tests/data/hf/llama2", NULL, &b),
                     LKV_OK);
    const lkv_model_tensors_t *ta = lkv_model_file_tensors(a);
    const lkv_model_tensors_t *tb = lkv_model_file_tensors(b);
    assert_int_equal((uintptr_t)ta->layers[1].wq.data % 4, 0);
    assert_int_equal((uintptr_t)ta->tok_embd.data % 4, 0);
    assert_memory_equal(ta->layers[1].wq.data, tb->layers[1].wq.data,
                        tensor_bytes(&tb->layers[1].wq));
    assert_memory_equal(ta->output.data, tb->output.data,
                        tensor_bytes(&tb->output));
    lkv_model_file_close(&a);
    lkv_model_file_close(&b);
    free(cp);
    free(raw);
    remove_dir(d);
}

/* ---- dummy ---- */

static void dummy_builtin_and_config_load(void **state)
{
    lkv_model_file_t *a = NULL, *b = NULL;
    assert_int_equal(lkv_model_file_open("dummy:tiny", NULL, &a), LKV_OK);
    assert_int_equal(lkv_model_file_open("dummy:tiny", NULL, &b), LKV_OK);
    const lkv_model_config_t  *c  = lkv_model_file_config(a);
    const lkv_model_tensors_t *ta = lkv_model_file_tensors(a);
    const lkv_model_tensors_t *tb = lkv_model_file_tensors(b);
    assert_string_equal(lkv_model_file_format(a), "dummy");
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_kv_heads, 2);
    assert_int_equal(c->n_stop_ids, 0);
    assert_int_equal(c->rope_style, LKV_ROPE_HALVES);
    /* same seed, same weights; sane scale */
    assert_memory_equal(ta->layers[1].wq.data, tb->layers[1].wq.data,
                        tensor_bytes(&ta->layers[1].wq));
    const float *w   = ta->layers[1].w_gate.data;
    double       ss  = 0;
    size_t       n   = (size_t)(ta->layers[1].w_gate.rows * ta->layers[1].w_gate.cols);
    for (size_t i = 0; i < n; i++) {
        ss += (double)w[i] * w[i];
    }
    double var = ss / (double)n; /* ~ 1/fan_in = 1/64 */
    assert_true(var > 0.5 / 64 && var < 1.5 / 64);
    assert_true(((const float *)ta->out_norm.data)[3] == 1.0f);
    /* stand-in tokenizer: BOS 256, then bytes */
    const lkv_tokenizer_t *tok = lkv_model_file_tokenizer(a);
    int32_t                ids[8];
    int                    k;
    assert_int_equal(lkv_tok_encode(tok, "hé", 3, true, true, ids, 8, &k),
                     LKV_OK);
    assert_int_equal(k, 4);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ids[1], 'h');
    assert_int_equal(ids[2], 0xC3);
    char *text = NULL;
    assert_int_equal(lkv_tok_decode(tok, ids, k, &text), LKV_OK);
    assert_string_equal(text, "hé");
    free(text);
    lkv_model_file_close(&a);
    lkv_model_file_close(&b);

    /* a config file: qwen2 in bf16 with a seed */
    char *d = scratch_dir();
    char  path[300], spec[320];
    snprintf(path, sizeof(path), "%s/cfg.json", d);
    const char *cfg =
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 32, "
        "\"intermediate_size\": 48, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 1, "
        "\"vocab_size\": 300, \"torch_dtype\": \"bfloat16\", \"seed\": 7, "
        "\"tie_word_embeddings\": true, \"rope_scaling\": {\"rope_type\": "
        "\"llama3\", \"factor\": 4.0, \"original_max_position_embeddings\": "
        "128}}";
    write_all(path, cfg, strlen(cfg));
    snprintf(spec, sizeof(spec), "dummy:%s", path);
    assert_int_equal(lkv_model_file_open(spec, NULL, &a), LKV_OK);
    c = lkv_model_file_config(a);
    assert_string_equal(c->arch, "qwen2");
    assert_true(c->qkv_bias && c->tied_output);
    assert_int_equal(c->rope_scaling.type, LKV_ROPE_SCALING_LLAMA3);
    assert_int_equal(c->rope_scaling.original_max_pos, 128);
    ta = lkv_model_file_tensors(a);
    assert_int_equal(ta->layers[0].wq.dtype, LKV_DTYPE_BF16);
    assert_int_equal(ta->layers[0].bk.dtype, LKV_DTYPE_F32);
    assert_int_equal(ta->layers[0].bk.cols, 8);
    lkv_model_file_close(&a);
    /* bad configs */
    const char *bad[] = {"{\"hidden_size\": 32}", "not json",
                         "{\"hidden_size\": 32, \"intermediate_size\": 48, "
                         "\"num_hidden_layers\": 1, \"num_attention_heads\": 3, "
                         "\"vocab_size\": 300}",
                         "{\"hidden_size\": 32, \"intermediate_size\": 48, "
                         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                         "\"vocab_size\": 100}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_all(path, bad[i], strlen(bad[i]));
        expect_open(spec, NULL, LKV_ERR_FORMAT);
    }
    const char *unsup = "{\"hidden_size\": 32, \"intermediate_size\": 48, "
                        "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                        "\"vocab_size\": 300, \"torch_dtype\": \"int8\"}";
    write_all(path, unsup, strlen(unsup));
    expect_open(spec, NULL, LKV_ERR_UNSUPPORTED);
    remove_dir(d);
    expect_open("dummy:no-such-model", NULL, LKV_ERR_NOTFOUND);
}

static void open_rejects_bad_paths(void **state)
{
    lkv_model_file_t *mf = NULL;
    assert_int_equal(lkv_model_file_open(NULL, NULL, &mf), LKV_ERR_INVALID);
    assert_int_equal(lkv_model_file_open("", NULL, &mf), LKV_ERR_INVALID);
    assert_int_equal(lkv_model_file_open(GGUF, NULL, NULL), LKV_ERR_INVALID);
    expect_open("/nonexistent/model.gguf", NULL, LKV_ERR_NOTFOUND);
    expect_open("/nonexistent/model.bin", NULL, LKV_ERR_NOTFOUND);
    expect_open("/nonexistent/model.xyz", NULL, LKV_ERR_NOTFOUND);
    expect_open("models/stories260K/LICENSE", NULL, LKV_ERR_UNSUPPORTED);
    expect_open("models/stories260K", NULL, LKV_ERR_NOTFOUND); /* no config */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llama2c_stories260k_loads),
        cmocka_unit_test(llama2c_finds_sibling_tokenizer),
        cmocka_unit_test(llama2c_truncated_or_corrupt_fails_cleanly),
        cmocka_unit_test(gguf_stories260k_matches_llama2c),
        cmocka_unit_test(builtin_default_is_the_bundled_gguf),
        cmocka_unit_test(gguf_truncated_at_many_offsets_fails_cleanly),
        cmocka_unit_test(gguf_corrupt_header_fails_cleanly),
        cmocka_unit_test(hf_fixtures_load),
        cmocka_unit_test(hf_truncated_or_inconsistent_fails_cleanly),
        cmocka_unit_test(hf_misaligned_data_is_copied_aligned),
        cmocka_unit_test(dummy_builtin_and_config_load),
        cmocka_unit_test(open_rejects_bad_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
