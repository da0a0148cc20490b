/* dummy.c - `dummy:CONFIG.json` and `dummy:NAME`: seeded random weights for
 * any HF-style config, for performance work without downloads.
 *
 * CONFIG.json uses the config.json keys (hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
 * max_position_embeddings, rms_norm_eps, rope_theta, rope_scaling,
 * tie_word_embeddings, torch_dtype float32|bfloat16|float16) plus an
 * optional "seed" (default 0). Built-in names: tiny, 110m, llama2-7b,
 * llama2-13b, llama2-70b, llama3-8b, mistral-7b, qwen2-7b.
 *
 * Weights: uniform with standard deviation 1/sqrt(fan_in) for projections
 * (so activations keep their scale through the layers), uniform in [-1, 1]
 * for the embedding, 1.0 for the norms, 0.02-scale biases. Same seed, same
 * weights. RoPE is rotate-half (as for HF models).
 *
 * Tokenizer: a byte-level stand-in (SPM kind, no merges): ids 0..255 are the
 * bytes <0x00>..<0xFF> (text is encoded byte by byte), id 256 is BOS <s>
 * when the vocabulary has room, the remaining ids are unused pieces
 * "<dummy_N>" that decode to no text. There is no EOS (random weights never
 * finish: cap the tokens), so the stop list is empty.
 *
 * Threading: called once from lkv_model_file_open(); tensors of a million
 * elements or more are filled by up to 32 short-lived threads (the result
 * does not depend on the thread count).
 */
#define LKV_LOG_MODULE "format"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "format/fmt_impl.h"
#include "format/tok_impl.h"

typedef struct {
    const char *name;
    const char *json;
} builtin_t;

static const builtin_t builtins[] = {
    {"tiny", "{\"hidden_size\":64,\"intermediate_size\":172,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,"
             "\"num_key_value_heads\":2,\"vocab_size\":512,"
             "\"max_position_embeddings\":512,\"torch_dtype\":\"float32\"}"},
    {"110m", "{\"hidden_size\":768,\"intermediate_size\":2048,"
             "\"num_hidden_layers\":12,\"num_attention_heads\":12,"
             "\"vocab_size\":32000,\"max_position_embeddings\":1024,"
             "\"torch_dtype\":\"float32\"}"},
    {"llama2-7b", "{\"architectures\":[\"LlamaForCausalLM\"],"
                  "\"hidden_size\":4096,\"intermediate_size\":11008,"
                  "\"num_hidden_layers\":32,\"num_attention_heads\":32,"
                  "\"num_key_value_heads\":32,\"vocab_size\":32000,"
                  "\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,"
                  "\"torch_dtype\":\"bfloat16\"}"},
    {"llama2-13b", "{\"architectures\":[\"LlamaForCausalLM\"],"
                   "\"hidden_size\":5120,\"intermediate_size\":13824,"
                   "\"num_hidden_layers\":40,\"num_attention_heads\":40,"
                   "\"num_key_value_heads\":40,\"vocab_size\":32000,"
                   "\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,"
                   "\"torch_dtype\":\"bfloat16\"}"},
    {"llama2-70b", "{\"architectures\":[\"LlamaForCausalLM\"],"
                   "\"hidden_size\":8192,\"intermediate_size\":28672,"
                   "\"num_hidden_layers\":80,\"num_attention_heads\":64,"
                   "\"num_key_value_heads\":8,\"vocab_size\":32000,"
                   "\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,"
                   "\"torch_dtype\":\"bfloat16\"}"},
    {"llama3-8b", "{\"architectures\":[\"LlamaForCausalLM\"],"
                  "\"hidden_size\":4096,\"intermediate_size\":14336,"
                  "\"num_hidden_layers\":32,\"num_attention_heads\":32,"
                  "\"num_key_value_heads\":8,\"vocab_size\":128256,"
                  "\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-5,"
                  "\"rope_theta\":500000.0,\"torch_dtype\":\"bfloat16\"}"},
    {"mistral-7b", "{\"architectures\":[\"MistralForCausalLM\"],"
                   "\"hidden_size\":4096,\"intermediate_size\":14336,"
                   "\"num_hidden_layers\":32,\"num_attention_heads\":32,"
                   "\"num_key_value_heads\":8,\"vocab_size\":32000,"
                   "\"max_position_embeddings\":32768,\"rms_norm_eps\":1e-5,"
                   "\"rope_theta\":1000000.0,\"torch_dtype\":\"bfloat16\"}"},
    {"qwen2-7b", "{\"architectures\":[\"Qwen2ForCausalLM\"],"
                 "\"hidden_size\":3584,\"intermediate_size\":18944,"
                 "\"num_hidden_layers\":28,\"num_attention_heads\":28,"
                 "\"num_key_value_heads\":4,\"vocab_size\":152064,"
                 "\"max_position_embeddings\":32768,\"rms_norm_eps\":1e-6,"
                 "\"rope_theta\":1000000.0,\"torch_dtype\":\"bfloat16\"}"},
};

#define GOLDEN 0x9E3779B97F4A7C15ULL

/* splitmix64 output for state z (counter-based: element i of a stream with
 * base b is mix(b + (i + 1) * GOLDEN), so any thread count gives the same
 * weights) */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    lkv_model_file_t *mf;
    lkv_dtype_t       dtype;
    uint64_t          seed;
    uint64_t          counter; /* one stream per tensor */
} gen_t;

typedef struct {
    void       *p;
    size_t      lo, hi;
    uint64_t    base;
    float       scale, constant;
    lkv_dtype_t dtype;
} fill_job_t;

static void *fill_range(void *arg)
{
    const fill_job_t *j = arg;
    for (size_t i = j->lo; i < j->hi; i++) {
        float v = j->constant;
        if (j->scale != 0.0f) {
            uint64_t r = mix(j->base + (uint64_t)(i + 1) * GOLDEN);
            /* uniform in [-1, 1) */
            v = j->scale *
                (float)((double)(r >> 11) * (2.0 / 9007199254740992.0) - 1.0);
        }
        switch (j->dtype) {
        case LKV_DTYPE_F32: ((float *)j->p)[i] = v; break;
        case LKV_DTYPE_F16: ((uint16_t *)j->p)[i] = lkv_f32_to_f16(v); break;
        case LKV_DTYPE_BF16: ((uint16_t *)j->p)[i] = lkv_f32_to_bf16(v); break;
        }
    }
    return NULL;
}

/* a (rows, cols) tensor: value = scale * uniform, or `constant` if scale 0;
 * big tensors are filled by several threads (billions of parameters for
 * the 7B+ presets) */
static lkv_status_t gen_tensor(gen_t *g, lkv_tensor_t *t, int64_t rows,
                               int64_t cols, float scale, float constant,
                               lkv_dtype_t dtype)
{
    size_t n     = (size_t)(rows * cols);
    size_t es    = lkv_dtype_size(dtype);
    void  *p     = NULL;
    LKV_CHECK(fmt_mf_alloc(g->mf, n * es, &p));
    size_t bytes = n * es;
    if (bytes >= (8u << 20)) {
        /* fewer page faults: ask for transparent huge pages (best effort) */
        uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
        uintptr_t e = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
        if (e > a) {
            (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
        }
    }
    fill_job_t job = {
        .p        = p,
        .lo       = 0,
        .hi       = n,
        .base     = g->seed * 0x2545F4914F6CDD1DULL + (++g->counter) * 0x9E37ULL,
        .scale    = scale,
        .constant = constant,
        .dtype    = dtype,
    };
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    int  n_thr = n >= (1u << 20) && n_cpu > 1 ? (int)(n_cpu < 32 ? n_cpu : 32)
                                              : 1;
    fill_job_t jobs[32];
    pthread_t  tid[32];
    bool       started[32] = {false};
    for (int k = 0; k < n_thr; k++) {
        jobs[k]    = job;
        jobs[k].lo = n * (size_t)k / (size_t)n_thr;
        jobs[k].hi = n * (size_t)(k + 1) / (size_t)n_thr;
        if (k > 0) {
            started[k] = pthread_create(&tid[k], NULL, fill_range, &jobs[k]) == 0;
        }
    }
    fill_range(&jobs[0]);
    for (int k = 1; k < n_thr; k++) {
        if (started[k]) {
            pthread_join(tid[k], NULL);
        } else {
            fill_range(&jobs[k]); /* no thread: do it here */
        }
    }
    *t = (lkv_tensor_t){.data = p, .dtype = dtype, .rows = rows, .cols = cols};
    return LKV_OK;
}

static lkv_status_t dummy_tokenizer(int vocab, lkv_tokenizer_t **tok_p)
{
    lkv_tokenizer_t *tok = NULL;
    LKV_CHECK(tok_new(LKV_TOK_SPM, vocab, &tok));
    lkv_status_t st = LKV_OK;
    for (int id = 0; id < vocab && st == LKV_OK; id++) {
        char piece[32];
        int  type = TOKT_UNUSED;
        if (id < 256) {
            snprintf(piece, sizeof(piece), "<0x%02X>", id);
            type = TOKT_BYTE;
        } else if (id == 256) {
            snprintf(piece, sizeof(piece), "<s>");
            type = TOKT_CONTROL;
        } else {
            snprintf(piece, sizeof(piece), "<dummy_%d>", id);
        }
        st = tok_set_piece(tok, id, piece, strlen(piece), 0.0f, type);
    }
    if (st == LKV_OK) {
        tok->bos           = vocab > 256 ? 256 : -1;
        tok->add_bos       = tok->bos >= 0;
        tok->prefix        = TOK_PREFIX_NEVER;
        tok->byte_fallback = true;
        st                 = tok_finish(tok);
    }
    if (st != LKV_OK) {
        lkv_tok_destroy(&tok);
        return st;
    }
    *tok_p = tok;
    return LKV_OK;
}

lkv_status_t fmt_open_dummy(lkv_model_file_t *mf, const char *spec,
                            const char *tok_path)
{
    char       *text  = NULL;
    const char *json  = NULL;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(spec, builtins[i].name) == 0) {
            json = builtins[i].json;
        }
    }
    if (json == NULL) {
        if (access(spec, F_OK) != 0) {
            LKV_LOG_ERROR("dummy:%s: not a config file nor a built-in name "
                          "(tiny, 110m, llama2-7b, llama2-13b, llama2-70b, "
                          "llama3-8b, mistral-7b, qwen2-7b)",
                          spec);
            return LKV_ERR_NOTFOUND;
        }
        LKV_CHECK(fmt_read_file(spec, &text, NULL));
        json = text;
    }
    lkv_model_config_t *c     = &mf->cfg;
    lkv_dtype_t         dtype = LKV_DTYPE_F32;
    uint64_t            seed  = 0;
    lkv_status_t        st    = fmt_hf_config_parse(json, spec, c, &dtype, &seed);
    free(text);
    if (st != LKV_OK) {
        return st;
    }
    /* no EOS for random weights; BOS is the stand-in tokenizer's */
    c->n_stop_ids = 0;
    c->eos_id     = -1;
    c->bos_id     = c->vocab_size > 256 ? 256 : -1;
    if (c->vocab_size < 256) {
        LKV_LOG_ERROR("dummy:%s: vocab_size %d is below 256 (the stand-in "
                      "tokenizer needs one id per byte)",
                      spec, c->vocab_size);
        return LKV_ERR_FORMAT;
    }
    if (c->n_layers <= 0 || c->n_layers > 4096 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->dim <= 0) {
        LKV_LOG_ERROR("dummy:%s: invalid layer/head counts", spec);
        return LKV_ERR_FORMAT;
    }
    int64_t head = c->head_dim > 0 ? c->head_dim : c->dim / c->n_heads;
    int64_t q = c->n_heads * head, kv = c->n_kv_heads * head;
    int64_t D = c->dim, H = c->hidden_dim, V = c->vocab_size;
    double  n_params = (double)V * D * (c->tied_output ? 1 : 2) +
                      (double)c->n_layers * (D * q * 2 + D * kv * 2 + 3 * D * H);
    LKV_LOG_INFO("dummy:%s: generating %.0fM random parameters (%s)", spec,
                 n_params / 1e6, lkv_dtype_name(dtype));

    lkv_model_tensors_t *t = &mf->tensors;
    t->layers = calloc((size_t)c->n_layers, sizeof(*t->layers));
    if (t->layers == NULL) {
        return LKV_ERR_NOMEM;
    }
    gen_t g     = {.mf = mf, .dtype = dtype, .seed = seed};
    float s_dim = 1.7320508f / sqrtf((float)D);  /* sqrt(3)/sqrt(fan_in) */
    float s_q   = 1.7320508f / sqrtf((float)q);
    float s_hid = 1.7320508f / sqrtf((float)H);
    LKV_CHECK(gen_tensor(&g, &t->tok_embd, V, D, 1.0f, 0, dtype));
    LKV_CHECK(gen_tensor(&g, &t->out_norm, 1, D, 0, 1.0f, dtype));
    if (!c->tied_output) {
        LKV_CHECK(gen_tensor(&g, &t->output, V, D, s_dim, 0, dtype));
    }
    for (int l = 0; l < c->n_layers; l++) {
        lkv_layer_tensors_t *L = &t->layers[l];
        LKV_CHECK(gen_tensor(&g, &L->attn_norm, 1, D, 0, 1.0f, dtype));
        LKV_CHECK(gen_tensor(&g, &L->wq, q, D, s_dim, 0, dtype));
        LKV_CHECK(gen_tensor(&g, &L->wk, kv, D, s_dim, 0, dtype));
        LKV_CHECK(gen_tensor(&g, &L->wv, kv, D, s_dim, 0, dtype));
        if (c->qkv_bias) {
            LKV_CHECK(gen_tensor(&g, &L->bq, 1, q, 0.02f, 0, LKV_DTYPE_F32));
            LKV_CHECK(gen_tensor(&g, &L->bk, 1, kv, 0.02f, 0, LKV_DTYPE_F32));
            LKV_CHECK(gen_tensor(&g, &L->bv, 1, kv, 0.02f, 0, LKV_DTYPE_F32));
        }
        LKV_CHECK(gen_tensor(&g, &L->wo, D, q, s_q, 0, dtype));
        LKV_CHECK(gen_tensor(&g, &L->ffn_norm, 1, D, 0, 1.0f, dtype));
        LKV_CHECK(gen_tensor(&g, &L->w_gate, H, D, s_dim, 0, dtype));
        LKV_CHECK(gen_tensor(&g, &L->w_up, H, D, s_dim, 0, dtype));
        LKV_CHECK(gen_tensor(&g, &L->w_down, D, H, s_hid, 0, dtype));
    }
    if (tok_path != NULL) {
        return fmt_ends_with(tok_path, ".json")
                   ? lkv_tok_load_hf(tok_path, &mf->tok)
                   : lkv_tok_load_llama2c(tok_path, c->vocab_size, &mf->tok);
    }
    return dummy_tokenizer(c->vocab_size, &mf->tok);
}
